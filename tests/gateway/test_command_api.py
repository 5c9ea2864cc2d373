"""``GET /v1/commands/<id>``: a handheld learns the locker's answer to a permit it forwarded.

Real pieces throughout: the gateway's own web server on a loopback port, a
Mosquitto password file and ACL written by ``gateway/broker.py`` (hashed by
``mosquitto_passwd``), the SQLite store, and at the end the whole gateway
process with Mosquitto, a handheld forwarding over MQTT, a stand-in locker
acking over MQTT, and the handheld app's own ``GatewayClient`` polling.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from common.ports import free_port
from gateway.broker import Account, Mosquitto, write_config
from gateway.http.server import WebService, start_web
from gateway.ingest.relay import Relay, store_command
from gateway.store.events import EventStore
from gateway.store.own_events import OwnEvents
from handheld.workflows import GatewayClient
from protocol import envelope, topics
from protocol.canonical import dumps
from protocol.ids import format_event_id
from simulator.gateway_process import GatewayProcess
from simulator.gateway_process import write_config as write_gateway_config

PW = {"gw-o1": "gw-secret", "hh01": "hh01-pw", "hh02": "hh02-pw", "lk01": "lk01-pw"}
ACCOUNTS = [Account("gw-o1", PW["gw-o1"], "o1", "gateway"), Account("hh01", PW["hh01"], "o1", "handheld"),
            Account("hh02", PW["hh02"], "o1", "handheld"), Account("lk01", PW["lk01"], "o1", "locker")]


def permit(cid: str, exp_in: int = 600, handheld: str = "hh01") -> dict[str, Any]:
    """A deposit permit's shape (protocol/permits.py); the gateway never
    checks the signature (it holds no keys: the locker does), so a dummy
    one does for these routes."""
    now = int(time.time())
    return {"v": 1, "id": cid, "dev": "lk01", "op": "deposit", "kv": 1, "sig": "0" * 64,
            "args": {"parcel": "RB123456785CN", "size": "M", "courier": "c007", "handheld": handheld},
            "iat": now, "exp": now + exp_in}


class Web:
    """The gateway's web server on a free loopback port, over a migrated store."""

    def __init__(self, root: Path, passwd: Path | None) -> None:
        self.db = root / "gw" / "gateway.db"
        EventStore(self.db).close()  # migrated, as ingest leaves it at start
        web: dict[str, Any] = {"host": "127.0.0.1", "port": 0}
        if passwd is not None:
            web["passwd_file"] = str(passwd)
        self.stop_event = threading.Event()
        self.svc: WebService = start_web(self.db, web, self.stop_event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.svc.port}"

    def request(self, path: str, user: str | None = "hh01", password: str | None = None,
                method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        h = {}
        if user is not None:
            pw = PW[user] if password is None else password
            h["Authorization"] = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        c = http.client.HTTPConnection("127.0.0.1", self.svc.port, timeout=5)
        try:
            c.request(method, path, headers=h)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.svc.join(10)


@pytest.fixture
def passwd(tmp_path: Path) -> Path:
    conf = write_config(tmp_path / "broker", free_port(), ACCOUNTS)
    return conf.parent / "passwd"


@pytest.fixture
def web(tmp_path: Path, passwd: Path) -> Iterator[Web]:
    w = Web(tmp_path, passwd)
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture
def store(web: Web) -> Iterator[EventStore]:
    s = EventStore(web.db)
    try:
        yield s
    finally:
        s.close()


def test_forwarding_handheld_sees_its_command_and_the_ack(web: Web, store: EventStore,
                                                          tmp_path: Path) -> None:
    cid = store_command(store, "o1", "locker", dumps(permit("permit-1")), via="hh01")
    code, headers, body = web.request(f"/v1/commands/{cid}")
    assert code == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"id": "permit-1", "device": "lk01", "op": "deposit", "status": "queued",
                                "ack": None}
    code, headers, body = web.request(f"/v1/commands/{cid}", method="HEAD")
    assert code == 200 and body == b"" and int(headers["content-length"]) > 0
    relay = Relay(store, "o1", OwnEvents(store, "o1", "gw-o1", tmp_path / "own"), lambda t, p: None)
    relay.on_ack("lk01", {"id": cid, "ok": True, "code": "ok", "compartment": 7})
    doc = json.loads(web.request(f"/v1/commands/{cid}")[2])
    assert doc["status"] == "acked" and doc["ack"] == {"id": cid, "ok": True, "code": "ok", "compartment": 7}
    # A refusal carries the device's reason the same way.
    cid2 = store_command(store, "o1", "locker", dumps(permit("permit-2")), via="hh01")
    relay.on_ack("lk01", {"id": cid2, "ok": False, "code": "no_fit", "detail": "no free M compartment"})
    doc = json.loads(web.request(f"/v1/commands/{cid2}")[2])
    assert doc["status"] == "refused" and doc["ack"]["code"] == "no_fit"


def test_other_handhelds_get_the_same_404_as_an_unknown_id(web: Web, store: EventStore) -> None:
    store_command(store, "o1", "locker", dumps(permit("permit-1")), via="hh01")
    store_command(store, "o1", "locker", dumps(permit("from-central")))  # via the platform: no forwarder
    unknown = web.request("/v1/commands/no-such-id", user="hh02")
    other = web.request("/v1/commands/permit-1", user="hh02")
    central = web.request("/v1/commands/from-central", user="hh01")
    for code, headers, _ in (unknown, other, central):
        assert code == 404 and headers["content-type"].startswith("application/json")
    assert unknown[2] == other[2] == central[2]  # byte for byte: nothing tells "exists" from "not yours"
    doc = json.loads(other[2])
    assert doc["error"] == "unknown_command" and doc["message"]["zh"] and doc["message"]["en"]
    assert web.request("/v1/commands/permit-1", user="hh01")[0] == 200


def test_logins_like_the_upload_routes(web: Web, store: EventStore) -> None:
    store_command(store, "o1", "locker", dumps(permit("permit-1")), via="hh01")
    code, headers, body = web.request("/v1/commands/permit-1", user=None)
    assert code == 401 and headers["www-authenticate"].startswith("Basic ")
    assert json.loads(body)["error"] == "unauthorized"
    assert web.request("/v1/commands/permit-1", password="wrong")[0] == 401
    assert web.request("/v1/commands/no-such-id", user=None)[0] == 401  # anonymous: no 404 oracle
    for user in ("lk01", "gw-o1"):  # right password, not a handheld
        code, _, body = web.request("/v1/commands/permit-1", user=user)
        assert code == 403 and json.loads(body)["error"] == "forbidden"
    assert web.request("/v1/commands/permit-1/extra")[0] == 404
    assert web.request("/v1/commands")[0] == 404
    code, _, _ = web.request("/v1/commands/permit-1", method="POST")
    assert code == 405


def test_ids_are_percent_decoded(web: Web, store: EventStore) -> None:
    cid = store_command(store, "o1", "locker", dumps(permit("p:1 ü")), via="hh01")
    quoted = urllib.request.quote(cid, safe="")
    assert json.loads(web.request(f"/v1/commands/{quoted}")[2])["id"] == "p:1 ü"
    assert web.request("/v1/commands/%ff%fe")[0] == 404


def test_without_passwd_file_answers_503(tmp_path: Path) -> None:
    w = Web(tmp_path, None)
    try:
        code, _, body = w.request("/v1/commands/x")
        assert code == 503 and "passwd_file" in json.loads(body)["message"]["en"]
    finally:
        w.stop()


def test_end_to_end_forward_over_mqtt_ack_and_handheld_client(tmp_path: Path) -> None:
    """The real gateway process: hh01 forwards a permit over MQTT, the
    gateway queues it with via=hh01, a stand-in locker (an MQTT client on
    lk01's account) gets it and acks, and the handheld app's GatewayClient
    polls the status to ``acked``. GatewayClient sends no credentials of its
    own, so the handheld's login is supplied through urllib's global opener."""
    broker = Mosquitto(tmp_path / "broker", ACCOUNTS)
    broker.start()
    web_port = free_port()
    cfg = write_gateway_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", PW["gw-o1"])
    with cfg.open("a", encoding="utf-8") as f:
        f.write(f'\n[web]\nhost = "127.0.0.1"\nport = {web_port}\npasswd_file = "broker/passwd"\n')
    gw = GatewayProcess(cfg)
    clients: list[mqtt.Client] = []

    def client(user: str) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv311)
        c.username_pw_set(user, PW[user])
        clients.append(c)
        return c

    url = f"http://127.0.0.1:{web_port}"
    hh = GatewayClient(url, timeout=5)
    try:
        gw.wait_for("gateway_started", timeout=30)
        cmd = permit("permit-e2e")
        hh_mqtt = client("hh01")
        hh_mqtt.connect("127.0.0.1", broker.port)
        hh_mqtt.loop_start()
        eid = format_event_id("hh01", "0c0ffee0", 1)
        ev = envelope.encode(envelope.make(eid, int(time.time()), "handheld.forward_command", "custody",
                                           {"kind": "locker", "cmd": cmd}))
        hh_mqtt.publish(topics.build("o1", "handheld", "hh01", "evt"), ev, qos=1).wait_for_publish(5)
        assert gw.wait_for("forwarded", timeout=20)["command"] == "permit-e2e"

        with pytest.raises(OSError, match="401"):  # the gateway refuses an anonymous poller
            hh.command_status("permit-e2e")
        hh2 = GatewayClient(url, timeout=5, username="hh02", password=PW["hh02"])
        assert hh2.command_status("permit-e2e") is None  # not hh02's: "unknown"
        hh = GatewayClient(url, timeout=5, username="hh01", password=PW["hh01"])
        doc = hh.command_status("permit-e2e")
        assert doc is not None and doc["status"] == "queued" and doc["ack"] is None  # locker offline
        assert hh.command_status("no-such-id") is None

        # The locker comes online, receives the permit on its cmd topic and acks it.
        got = threading.Event()
        lk = client("lk01")

        def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            cid = json.loads(msg.payload)["id"]
            c.publish(topics.build("o1", "locker", "lk01", "ack"),
                      json.dumps({"id": cid, "ok": True, "code": "ok", "compartment": 3}), qos=1)
            got.set()

        lk.on_message = on_message
        lk.on_connect = lambda c, *a: (c.subscribe(topics.build("o1", "locker", "lk01", "cmd"), qos=1),
                                       c.publish(topics.build("o1", "locker", "lk01", "presence"),
                                                 b"online", qos=1, retain=True))
        lk.connect("127.0.0.1", broker.port)
        lk.loop_start()
        assert got.wait(20), "the gateway did not deliver the permit"
        deadline = time.monotonic() + 20
        while doc is not None and doc["status"] in ("queued", "sent") and time.monotonic() < deadline:
            time.sleep(0.1)
            doc = hh.command_status("permit-e2e")
        assert doc == {"id": "permit-e2e", "device": "lk01", "op": "deposit", "status": "acked",
                       "ack": {"id": "permit-e2e", "ok": True, "code": "ok", "compartment": 3}}
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        gw.stop()
        broker.stop()
    st = EventStore(tmp_path / "gateway.db")
    try:
        assert st.db.execute("SELECT id, via, status FROM commands").fetchall() == [
            ("permit-e2e", "hh01", "acked")]
    finally:
        st.close()
