"""``central/contract/asyncapi.json`` against the code on both ends: the
topics the gateway's MQTT carrier publishes and subscribes (read from
``gateway/uplink/mqtt.py``'s syntax tree and its ``topic`` method), the MQTT
front's names (``central/scaleout/mqtt_topics.py``), the NATS permissions
(``central/scaleout/nats_auth.py``) and the documents each side writes. A
topic added, renamed or turned around on either side fails here until the
spec says the same."""

from __future__ import annotations

import ast
import json
import ssl
from pathlib import Path
from typing import Any

from central.scaleout import mqtt_topics
from central.scaleout.config import ScaleOutConfig
from central.scaleout.mqtt_front import refusal
from central.scaleout.nats_auth import outlet_permissions
from common.uplink_codec import encode_ack, encode_down
from gateway.config import DEFAULT_PREFIX
from gateway.uplink.mqtt import MqttTransport

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "central" / "contract"
SPEC = json.loads((CONTRACT / "asyncapi.json").read_text())


def carrier_topics() -> tuple[dict[str, int], dict[str, int], dict[str, Any]]:
    """({what: qos} published, {what: qos} subscribed, the pull's payload
    literal) from the carrier's source."""
    tree = ast.parse((ROOT / "gateway" / "uplink" / "mqtt.py").read_text())
    pub: dict[str, int] = {}
    sub: dict[str, int] = {}
    pull_doc: dict[str, Any] = {}

    def what_of(node: ast.AST) -> str | None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "topic" \
                and node.args and isinstance(node.args[0], ast.Constant):
            return str(node.args[0].value)
        return None

    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
            continue
        if call.func.attr == "publish" and call.args and (what := what_of(call.args[0])):
            qos = next(k.value for k in call.keywords if k.arg == "qos")
            assert isinstance(qos, ast.Constant)
            pub[what] = int(qos.value)
            for n in ast.walk(call.args[1]):
                if isinstance(n, ast.Dict):
                    pull_doc[what] = [k.value for k in n.keys if isinstance(k, ast.Constant)]
        elif call.func.attr == "subscribe":
            for t in ast.walk(call):
                if isinstance(t, ast.Tuple) and len(t.elts) == 2 and (what := what_of(t.elts[0])):
                    assert isinstance(t.elts[1], ast.Constant)
                    sub[what] = int(t.elts[1].value)
    return pub, sub, pull_doc


def spec_channels() -> dict[str, tuple[str, dict[str, Any]]]:
    """{channel name: (publish | subscribe, operation)}"""
    out = {}
    for name, ch in SPEC["channels"].items():
        ops = [op for op in ("publish", "subscribe") if op in ch]
        assert len(ops) == 1, name
        out[name] = (ops[0], ch[ops[0]])
    return out


def channel_name(what: str) -> str:
    """The channel the carrier's own ``topic`` method makes for ``what``."""
    t = MqttTransport("mqtts://platform.invalid", "{outlet}", ssl.create_default_context(), 1.0,
                      prefix=DEFAULT_PREFIX, channel="{channel}")  # type: ignore[arg-type]
    return t.topic(what, "{id}")


def resolve(ref: str) -> Any:
    file, _, pointer = ref.partition("#")
    doc = json.loads((CONTRACT / file).read_text()) if file else SPEC
    for part in pointer.strip("/").split("/"):
        doc = doc[part]
    return doc


def test_every_topic_of_the_carrier_is_in_the_spec_and_nothing_else() -> None:
    pub, sub, _ = carrier_topics()
    assert pub and sub
    channels = spec_channels()
    want = {channel_name(w): ("publish", q) for w, q in pub.items()} | \
        {channel_name(w): ("subscribe", q) for w, q in sub.items()}
    got = {name: (op, o["bindings"]["mqtt"]["qos"]) for name, (op, o) in channels.items()}
    assert got == want


def test_the_mqtt_front_reads_and_answers_the_spec_topics() -> None:
    channels = spec_channels()
    by_what = {name.split("/")[-3]: (name, op) for name, (op, _) in channels.items()}
    assert {w for w, (_, op) in by_what.items() if op == "publish"} == set(mqtt_topics.TO_PLATFORM)
    assert {w for w, (_, op) in by_what.items() if op == "subscribe"} == set(mqtt_topics.TO_GATEWAY)
    for up, down in mqtt_topics.ANSWER.items():
        assert SPEC["channels"][by_what[up][0]]["x-postedge-answer"] == by_what[down][0]
    assert all(o["bindings"]["mqtt"]["qos"] == mqtt_topics.QOS for _, o in channels.values())
    assert ScaleOutConfig(["nats://x"], "").mqtt_prefix == DEFAULT_PREFIX
    # the subjects the MQTT front parses and answers on are the spec's topics
    for name, (op, _) in channels.items():
        if op != "publish":
            continue
        what = name.split("/")[-3]
        subject = name.replace("/", ".").format(outlet="o1", channel="0", id="abc")
        assert mqtt_topics.parse(DEFAULT_PREFIX, subject) == ("o1", what, "0", "abc")
        answer = SPEC["channels"][name]["x-postedge-answer"]
        assert mqtt_topics.answer(DEFAULT_PREFIX, "o1", what, "0", "abc") == \
            answer.replace("/", ".").format(outlet="o1", channel="0", id="abc")


def test_nats_permissions_are_exactly_the_spec_topics_of_the_login() -> None:
    perms = outlet_permissions(DEFAULT_PREFIX, "o7")
    channels = spec_channels()
    as_subject = {op: {n.replace("/", ".").replace("{outlet}", "o7").rsplit(".", 2)[0] + ".>"
                       for n, (o, _) in channels.items() if o == op} for op in ("publish", "subscribe")}
    assert set(perms["publish"]) == as_subject["publish"]
    # plus nats-server's own delivery subjects for QoS 1 subscriptions
    assert set(perms["subscribe"]) == as_subject["subscribe"] | {"$MQTT.sub.>"}


def test_every_reference_resolves_and_the_documents_match_their_schemas() -> None:
    refs: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            refs.extend(v for k, v in x.items() if k == "$ref")
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(SPEC)
    assert any(r.startswith("openapi.json#") for r in refs)  # the HTTPS documents, not copies
    for r in refs:
        assert resolve(r) is not None, r

    def has_required(doc: dict[str, Any], schema: dict[str, Any]) -> bool:
        parts = [resolve(p["$ref"]) if "$ref" in p else p for p in schema.get("allOf", [schema])]
        return all(set(p.get("required", [])) <= set(doc) for p in parts)

    schemas = SPEC["components"]["schemas"]
    ack = json.loads(encode_ack("a" * 32, [], {}, batch_ids=[]))
    assert has_required(ack, resolve("openapi.json#/components/schemas/Ack"))
    refused = json.loads(refusal("a" * 32, "bad_batch", "why"))
    assert has_required(refused, schemas["Refusal"])
    assert refused["refused"]["code"] in schemas["Refusal"]["allOf"][1]["properties"]["refused"][
        "properties"]["code"]["description"]
    down = json.loads(encode_down(3, [], False))
    assert has_required(down, resolve("openapi.json#/components/schemas/Down"))
    _, _, pull_doc = carrier_topics()
    assert pull_doc == {mqtt_topics.PULL: list(schemas["Pull"]["properties"])}
