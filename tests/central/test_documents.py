"""The counters' box catalogue and tariff, issued by the platform
(``central/documents.py``): signed with a key only the platform holds, read
first by the same parsers the counters price with, versions that only grow,
and delivered down the real gateway's downlink into its counter, where a
forged, stale or misdirected document changes nothing."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.documents import KEY_FILE, DocumentRefused, Documents
from central.embedded import Embedded
from common import platform_docs as pd
from common.uplink_codec import DOWN_COUNTER_DOC, counter_doc, read_counter_doc
from gateway.broker import Mosquitto
from protocol import canonical
from simulator.counter_sim import BOXES, RATES, ZONES
from simulator.gateway_process import GatewayProcess
from tests.uplink_rig import Certs, gateway_toml, make_central_uplink
from tests.waiting import until

TARIFF = {"zones": ZONES, "services": RATES}
CATALOGUE = {"boxes": BOXES}


@pytest.fixture
def platform(tmp_path: Path) -> Embedded:
    b = Embedded(tmp_path / "central")
    for o in ("o1", "o2", "o3"):
        b.add_outlet(o, f"password-of-{o}")
    b.retire_outlet("o3")
    return b


def sent(b: Embedded, outlet: str) -> list[dict[str, Any]]:
    """The documents queued down to ``outlet``, as the gateway reads them off the wire."""
    return [json.loads(read_counter_doc(canonical.dumps(cmd)))
            for kind, cmd in b.pull(outlet, 0, 100)[1] if kind == DOWN_COUNTER_DOC]


def test_versions_grow_and_go_to_the_outlets_named(platform: Embedded) -> None:
    docs = Documents(platform, clock=lambda: 1_795_881_000)
    t1 = docs.publish("tariff", TARIFF)  # every outlet still open
    c1 = docs.publish("box_catalogue", CATALOGUE, ["o2"])
    t2 = docs.publish("tariff", TARIFF, ["o1"])
    assert (t1["version"], c1["version"], t2["version"]) == (1, 1, 2)
    assert [(d["kind"], d["version"]) for d in sent(platform, "o1")] == [("tariff", 1), ("tariff", 2)]
    assert [(d["kind"], d["version"]) for d in sent(platform, "o2")] == [("tariff", 1), ("box_catalogue", 1)]
    assert sent(platform, "o3") == []  # retired
    keys = pd.load_public_keys(docs.public_keys())
    for d in sent(platform, "o1"):  # what a gateway checks: the platform's key, its outlet
        assert pd.verify(json.dumps(d).encode(), keys, d["kind"], "o1").body == TARIFF
    with pytest.raises(pd.DocError, match="wrong_outlet"):
        pd.verify(c1, keys, "box_catalogue", "o1")
    # an outlet registered later gets the latest of each kind meant for it
    platform.add_outlet("o4", "password-of-o4")
    assert docs.resend("o4") == 1 and [(d["kind"], d["version"]) for d in sent(platform, "o4")] == [
        ("tariff", 1)]
    assert [(d["kind"], d["version"]) for d in docs.latest()] == [("box_catalogue", 1), ("tariff", 2)]


def test_what_the_counters_would_refuse_is_never_signed(platform: Embedded) -> None:
    docs = Documents(platform)
    bad = {
        "no services": {"zones": ZONES, "services": {}},
        "a float price": {"zones": ZONES, "services": {**RATES, "standard": {**RATES["standard"],
                                                                            "step_fen": {"z1": 1.5}}}},
    }
    for why, body in bad.items():
        with pytest.raises(DocumentRefused):
            docs.publish("tariff", body)
        assert docs.latest() == [], why
    with pytest.raises(DocumentRefused):
        docs.publish("box_catalogue", {"boxes": [{"code": "X"}]})
    with pytest.raises(DocumentRefused):
        docs.publish("tariff", TARIFF, ["o1", "../o2"])
    with pytest.raises(DocumentRefused):
        docs.publish("receipt", TARIFF)
    assert sent(platform, "o1") == [] and docs.latest() == []


def test_a_command_the_downlink_cannot_carry_is_refused_at_the_door(platform: Embedded) -> None:
    """Queued, a command nested past the wire's depth (or holding a float) would make
    every later pull of that outlet fail: it is refused when pushed, the rest flows."""
    deep: dict[str, Any] = {"x": 1}
    for k in "abcdefgh":
        deep = {k: deep}
    for bad in (deep, {"op": "open", "t": 1.5}):
        with pytest.raises(ValueError, match="cannot carry"):
            platform.push_command("o1", "locker", bad)
    cursor = platform.push_command("o1", "locker", {"op": "open"})
    assert platform.pull("o1", 0, 10)[:2] == (cursor, [("locker", {"op": "open"})])


def test_the_key_is_made_once_and_kept_private(platform: Embedded) -> None:
    first = Documents(platform).public_keys()
    assert Documents(platform).public_keys() == first
    mode = stat.S_IMODE((platform.dir / KEY_FILE).stat().st_mode)
    assert mode == 0o600, oct(mode)


@pytest.mark.slow
@pytest.mark.e2e
def test_documents_reach_a_real_gateways_counter_and_forgeries_do_not(tmp_path: Path, broker: Mosquitto,
                                                                      certs: Certs) -> None:
    up = make_central_uplink(tmp_path, certs)
    docs = Documents(up.central.backend)
    cfg = gateway_toml(tmp_path / "gateway.toml", broker, up.upstream(down_interval_s=0.3))
    keys = ", ".join(f'{k} = "{v}"' for k, v in docs.public_keys().items())
    with cfg.open("a", encoding="utf-8") as f:
        f.write(f'\n[web]\nhost = "127.0.0.1"\nport = 0\n\n[counter]\nplatform_keys = {{ {keys} }}\n')
    installed = tmp_path / "counter"
    gw = GatewayProcess(cfg)
    try:
        gw.wait_for("gateway_started")
        tariff = docs.publish("tariff", TARIFF, ["o1"])
        catalogue = docs.publish("box_catalogue", CATALOGUE)
        until(lambda: (installed / "tariff.json").exists() and (installed / "box_catalogue.json").exists())
        assert json.loads((installed / "tariff.json").read_text()) == tariff
        assert json.loads((installed / "box_catalogue.json").read_text()) == catalogue
        # a document signed by anyone else, an old version again, another outlet's: refused, counted
        rogue = pd.sign({"v": 1, "kind": "tariff", "version": 9, "outlets": ["o1"], "iat": 1,
                         "body": TARIFF}, Ed25519PrivateKey.generate(), "p1")
        other = Documents(up.central.backend).publish("tariff", TARIFF, ["o2"])
        for d in (rogue, tariff, other):
            up.central.backend.push_command("o1", DOWN_COUNTER_DOC, counter_doc(d))

        def refused() -> list[dict[str, Any]]:
            return [d for d in gw.lines
                    if d.get("evt") == "down_invalid" and d.get("kind") == DOWN_COUNTER_DOC]

        until(lambda: len(refused()) == 3)
        why = " ".join(d["error"] for d in refused())
        assert "bad_signature" in why and "stale_version" in why and "wrong_outlet" in why, why
        assert json.loads((installed / "tariff.json").read_text()) == tariff
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        up.close()


