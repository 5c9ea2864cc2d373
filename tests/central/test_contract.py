"""The contract between a gateway and the platform (docs/central-contract.md,
``central/contract/openapi.json``), run against every implementation in
``conftest.py``: what a gateway sends, what it must get back, and what a
forged or broken request must never achieve. Plain HTTPS from the standard
library, so nothing of the gateway's own client is assumed."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import ssl
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from central import front
from central.embedded import Embedded
from central.front import Front
from central.intake import MAX_BATCH_BYTES
from central.keys import KeyService
from common.uplink_codec import CONTENT_TYPE, decode_ack, decode_down, encode_batch
from protocol import envelope
from protocol.ids import format_event_id
from tests.central.conftest import MASTER, CentralUnderTest

ROOT = Path(__file__).resolve().parents[2]
PW = "o1-secret-pw"


def events(device: str, n: int, start: int = 1, inc: str = "c0ffee01") -> list[tuple[str, bytes]]:
    out = []
    for seq in range(start, start + n):
        eid = format_event_id(device, inc, seq)
        body = {"compartment": seq % 24 + 1, "parcel": "RB123456785CN"}
        out.append((eid, envelope.encode(envelope.make(eid, 1795881163 + seq, "locker.deposit", "custody",
                                                        body, boot=1))))
    return out


class Client:
    def __init__(self, c: CentralUnderTest, outlet: str = "o1", password: str = PW) -> None:
        u = urlsplit(c.url)
        self.path = u.path
        ctx = ssl.create_default_context(cafile=str(c.ca))
        self.conn = http.client.HTTPSConnection(u.hostname or "", u.port, context=ctx, timeout=30)
        self.auth = "Basic " + base64.b64encode(f"{outlet}:{password}".encode()).decode()
        self.outlet = outlet

    def call(self, method: str, path: str | None = None, body: bytes | None = None,
             headers: dict[str, str] | None = None, auth: bool = True) -> tuple[int, bytes, Any]:
        h = {"X-Postedge-Outlet": self.outlet, **(headers or {})}
        if auth:
            h.setdefault("Authorization", self.auth)
        self.conn.request(method, path or self.path, body=body, headers=h)
        r = self.conn.getresponse()
        data = r.read()
        if r.will_close:
            self.conn.close()
        return r.status, data, r.headers

    def batch(self, rows: list[tuple[str, bytes]], outlet: str | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
        b = encode_batch(outlet or self.outlet, "bulk", rows)
        return self.call("POST", body=b.body, headers={
            "Content-Type": CONTENT_TYPE, "Content-Encoding": "deflate", "X-Postedge-Batch": b.id,
            **(headers or {})})


def test_a_batch_is_acked_whole_and_stored_once_even_when_resent(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    cl = Client(central)
    rows = events("lk01", 50)
    status, data, _ = cl.batch(rows)
    assert status == 200, data
    ack = decode_ack(data)
    assert ack.all  # every event of this very batch (its id is a hash of its ids)
    again, data2, _ = cl.batch(rows)  # the ack was lost: the gateway sends the same batch
    assert again == 200 and decode_ack(data2).all
    central.settle()
    assert central.count("o1") == 50


def test_an_invalid_event_is_acked_and_named_the_rest_stored(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    cl = Client(central)
    rows = events("lk01", 3)
    bad_id = format_event_id("lk01", "c0ffee01", 4)
    rows.append((bad_id, json.dumps({"id": bad_id, "v": 1, "ts": "yesterday"}).encode()))
    status, data, _ = cl.batch(rows)
    assert status == 200, data
    ack = decode_ack(data)
    # acked (never resent forever), and named with its reason
    assert (ack.all or ack.covers(bad_id)) and ack.rejected[bad_id].startswith("missing_field")
    central.settle()
    assert central.count("o1") == 3


def test_logins_that_are_wrong_unknown_or_retired_are_refused(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    rows = events("lk01", 2)
    assert Client(central, password="guess").batch(rows)[0] == 401
    assert Client(central, outlet="o9", password=PW).batch(rows, outlet="o9")[0] == 401
    cl = Client(central)
    assert cl.call("POST", auth=False, body=b"x")[0] == 401
    assert cl.call("POST", headers={"Authorization": "Basic !!!"}, body=b"x")[0] == 401
    central.retire_outlet("o1")
    assert cl.batch(rows)[0] == 401
    central.settle()
    assert central.count("o1") == 0


def test_one_outlets_login_never_acts_for_another(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    central.add_outlet("o2", "o2-secret-pw")
    central.push_command("o2", "locker", {"id": "c-o2", "dev": "lk01", "op": "open"})
    cl = Client(central)
    # a forged outlet header
    status, data, _ = cl.batch(events("lk01", 2), headers={"X-Postedge-Outlet": "o2"})
    assert (status, json.loads(data)["error"]) == (403, "outlet_mismatch")
    status, data, _ = cl.call("GET", headers={"X-Postedge-Outlet": "o2", "X-Postedge-After": "0"})
    assert status == 403
    # a body that names another outlet
    status, data, _ = cl.batch(events("lk01", 2), outlet="o2", headers={"X-Postedge-Outlet": "o1"})
    assert status == 400
    # o1 pulls nothing of o2's
    status, data, _ = cl.call("GET", headers={"X-Postedge-After": "0"})
    assert status == 200 and decode_down(data).commands == []
    central.settle()
    assert central.count("o1") == central.count("o2") == 0


def test_malformed_oversized_and_mislabelled_batches_are_refused(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    cl = Client(central)
    hdr = {"Content-Type": CONTENT_TYPE, "Content-Encoding": "deflate"}
    assert cl.call("POST", body=zlib.compress(b"not json"), headers=hdr)[0] == 400
    assert cl.call("POST", body=b"\x00" * 100, headers=hdr)[0] == 400
    assert cl.call("POST", body=zlib.compress(b"{}"), headers={"Content-Type": "text/plain"})[0] == 415
    rows = events("lk01", 3)
    b = encode_batch("o1", "bulk", rows)
    status, _, _ = cl.call("POST", body=b.body, headers={**hdr, "X-Postedge-Batch": "0" * 32})
    assert status == 400  # the id is a hash of the ids: a batch renamed is refused
    # Too large: refused on its Content-Length, before the body is read.
    conn = cl.conn
    conn.putrequest("POST", cl.path)
    for k, v in {**hdr, "Authorization": cl.auth, "X-Postedge-Outlet": "o1",
                 "Content-Length": str(MAX_BATCH_BYTES + 1)}.items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413
    r.read()
    conn.close()
    central.settle()
    assert central.count("o1") == 0


def test_commands_come_down_once_in_order_after_the_cursor(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    cursors = [central.push_command("o1", "locker", {"id": f"c{i}", "dev": "lk01", "op": "open"})
               for i in range(3)]
    cl = Client(central)
    status, data, _ = cl.call("GET", headers={"X-Postedge-After": "0"})
    assert status == 200
    down = decode_down(data)
    got = [(kind, json.loads(cmd)["id"]) for kind, cmd in down.commands]
    assert got == [("locker", f"c{i}") for i in range(3)]
    assert down.cursor == cursors[-1] and not down.more
    status, data, _ = cl.call("GET", headers={"X-Postedge-After": str(down.cursor)})
    assert decode_down(data).commands == []
    assert cl.call("GET", headers={"X-Postedge-After": "-1"})[0] == 400
    assert cl.call("GET", headers={"X-Postedge-After": "9" * 40})[0] == 400


def test_a_photo_arrives_in_chunks_and_a_confirmed_chunk_cannot_be_replaced(
        central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    cl = Client(central)
    photo = bytes(range(256)) * 40  # 10,240 bytes, 3 chunks of 4 KiB
    sha = hashlib.sha256(photo).hexdigest()
    up = "/v1/uploads"
    doc = {"sha256": sha, "size": len(photo), "chunk_size": 4096, "meta": {"job": "j1"}}
    status, data, _ = cl.call("POST", up, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert status == 201 and json.loads(data)["chunks"] == 3
    parts = [photo[i:i + 4096] for i in range(0, len(photo), 4096)]

    def put(i: int, data: bytes) -> tuple[int, Any]:
        s, _, h = cl.call("PUT", f"{up}/{sha}/{i}", data,
                          {"X-Chunk-Sha256": hashlib.sha256(data).hexdigest()})
        return s, h
    assert put(0, parts[0])[0] == 204
    # the same chunk with other bytes of the right size: refused or ignored, never kept
    forged = bytes(4096)
    assert put(0, forged)[0] in (204, 400, 409)
    assert put(5, parts[0])[0] == 400
    assert put(1, parts[1][:100])[0] == 400  # short chunk
    assert put(1, parts[1])[0] == 204
    status, h = put(2, parts[2])
    assert status == 204 and h["X-Upload-Complete"] == "true"
    status, data, _ = cl.call("GET", f"{up}/{sha}")
    st = json.loads(data)
    assert status == 200 and st["complete"] and st["confirmed"] == [0, 1, 2]
    status, data, _ = cl.call("POST", up, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert status == 200 and json.loads(data)["complete"]  # asked again: already there
    assert cl.call("GET", f"{up}/{'0' * 64}")[0] == 404
    bad = {**doc, "size": 0}
    assert cl.call("POST", up, json.dumps(bad).encode(), {"Content-Type": "application/json"})[0] == 400


def test_probe_and_time(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    cl = Client(central)
    assert cl.call("HEAD")[0] == 204
    assert Client(central, password="x").call("HEAD")[0] == 401
    status, data, _ = cl.call("GET", "/v1/time")
    assert status == 200 and abs(json.loads(data)["t"] - time.time()) < 60


def ask_keys(cl: Client, devices: list[tuple[str, str]]) -> tuple[int, Any]:
    body = json.dumps({"devices": [{"id": d, "kind": k} for d, k in devices]}).encode()
    status, data, _ = cl.call("POST", "/v1/keys", body, {"Content-Type": "application/json"})
    return status, json.loads(data)


def test_keys_are_each_devices_own_derived_for_the_logged_in_outlet(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    central.add_outlet("o2", "o2-secret-pw")
    status, doc = ask_keys(Client(central), [("lk01", "locker"), ("sc01", "scanner")])
    assert status == 200, doc
    ks = KeyService("o1", MASTER)  # no notifier key: o1 was not registered with one
    assert doc == {"outlet": "o1", "retired": [],
                   "keys": {"lk01": ks.device_config("lk01"), "sc01": ks.device_config("sc01")}}
    assert "master" not in json.dumps(doc) and MASTER.hex() not in json.dumps(doc)
    assert central.registry.devices("o1") == [
        {"device": "lk01", "kind": "locker", "kv": 1, "retired": False, "prev_until": 0},
        {"device": "sc01", "kind": "scanner", "kv": 1, "retired": False, "prev_until": 0}]
    # the same device name asked for by another outlet's login: that outlet's key, never o1's
    status, doc2 = ask_keys(Client(central, "o2", "o2-secret-pw"), [("lk01", "locker")])
    assert status == 200 and doc2["outlet"] == "o2"
    assert doc2["keys"]["lk01"] == KeyService("o2", MASTER).device_config("lk01") != doc["keys"]["lk01"]
    assert [d["device"] for d in central.registry.devices("o2")] == ["lk01"]


def test_a_retired_device_gets_no_key_and_is_not_brought_back(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    reg = central.registry
    reg.add_device("o1", "lk01", "locker", 2)  # rotated: its key is issued at the version held
    reg.add_device("o1", "hh01", "handheld")
    assert reg.retire_device("o1", "hh01") and not reg.retire_device("o1", "hh01")
    cl = Client(central)
    for _ in range(2):  # asking again changes nothing
        status, doc = ask_keys(cl, [("lk01", "locker"), ("hh01", "handheld")])
        assert status == 200, doc
        assert doc["retired"] == ["hh01"] and list(doc["keys"]) == ["lk01"]
        assert doc["keys"]["lk01"] == KeyService("o1", MASTER, 2).device_config("lk01")
        assert doc["keys"]["lk01"]["kv"] == 2
    assert {d["device"]: d["retired"] for d in reg.devices("o1")} == {"hh01": True, "lk01": False}
    reg.add_device("o1", "hh01", "handheld")  # the operator registers it anew
    assert list(ask_keys(cl, [("hh01", "handheld")])[1]["keys"]) == ["hh01"]


def test_a_rotated_device_gets_its_new_key_and_the_old_one_for_the_grace_period(
        central: CentralUnderTest) -> None:
    """``postedge central device rotate`` on either backend: ``/v1/keys`` answers
    the next version with the previous one until the grace ends, and
    registering the device again (``outlet init`` asks for it) keeps it."""
    from central import keys

    central.add_outlet("o1", PW)
    cl = Client(central)
    assert ask_keys(cl, [("lk01", "locker"), ("lk02", "locker")])[1]["keys"]["lk01"]["kv"] == 1
    until = int(time.time()) + 3600
    sec = keys.rotate(central.registry, MASTER, "o1", "lk01", 3600, now=until - 3600)
    assert sec is not None and sec["kv"] == 2 and sec["prev"]["kv"] == 1 and sec["prev"]["until"] == until
    for _ in range(2):
        status, doc = ask_keys(cl, [("lk01", "locker"), ("lk02", "locker")])
        assert status == 200 and doc["keys"]["lk01"] == sec
        assert doc["keys"]["lk02"] == KeyService("o1", MASTER).device_config("lk02")
    assert keys.rotate(central.registry, MASTER, "o1", "lk02", 0)["kv"] == 2  # a key that got out
    assert "prev" not in ask_keys(cl, [("lk02", "locker")])[1]["keys"]["lk02"]
    assert central.registry.retire_device("o1", "lk02")
    assert keys.rotate(central.registry, MASTER, "o1", "lk02", 0) is None  # retired: nothing to rotate
    assert keys.rotate(central.registry, MASTER, "o1", "nope", 0) is None


def test_the_notifier_key_only_for_an_outlet_registered_with_one(central: CentralUnderTest) -> None:
    central.registry.add_outlet("o1", PW, notifier=True)
    status, doc = ask_keys(Client(central), [("lk01", "locker")])
    assert status == 200 and doc["notifier"] == {"1": KeyService("o1", MASTER).notifier_key(1).hex()}
    central.registry.add_outlet("o1", PW)  # a new password, no notifier any more
    assert "notifier" not in ask_keys(Client(central), [("lk01", "locker")])[1]
    assert central.registry.notifier_outlets() == set()


def test_the_registry_keeps_each_active_outlets_mqtt_login_as_a_hash(central: CentralUnderTest) -> None:
    """What ``central nats-auth`` writes for nats-server: bcrypt hashes of the
    outlets' passwords, never the passwords; a retired outlet left out."""
    import bcrypt

    central.registry.add_outlet("o1", PW)
    central.registry.add_outlet("o2", "o2-secret-pw")
    users = central.registry.mqtt_users()
    assert sorted(users) == ["o1", "o2"] and PW not in str(users)
    assert bcrypt.checkpw(PW.encode(), str(users["o1"]).encode())
    assert not bcrypt.checkpw(PW.encode(), str(users["o2"]).encode())
    central.retire_outlet("o2")
    assert list(central.registry.mqtt_users()) == ["o1"]


def test_keys_need_a_login_and_a_well_formed_list(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    assert ask_keys(Client(central, password="guess"), [("lk01", "locker")])[0] == 401
    cl = Client(central)
    assert ask_keys(cl, [])[0] == 400
    assert ask_keys(cl, [("lk01", "printer")])[0] == 400
    assert ask_keys(cl, [("LK 01", "locker")])[0] == 400
    assert cl.call("POST", "/v1/keys", b"{", {"Content-Type": "application/json"})[0] == 400
    central.retire_outlet("o1")
    assert ask_keys(cl, [("lk01", "locker")])[0] == 401
    assert central.registry.devices("o1") == []


def test_a_front_without_the_master_key_issues_none(tmp_path: Path, central_pki: Any) -> None:
    backend = Embedded(tmp_path / "central")
    backend.add_outlet("o1", PW)
    srv, _ = front.serve(backend, "127.0.0.1", 0, str(central_pki.server.cert), str(central_pki.server.key))
    try:
        c = CentralUnderTest("bare", f"https://127.0.0.1:{srv.address[1]}/v1/batches", central_pki.ca,
                             backend.add_outlet, backend.retire_outlet, backend.push_command, backend.count,
                             lambda: None, lambda o: {}, backend)
        status, doc = ask_keys(Client(c), [("lk01", "locker")])
        assert (status, doc["error"]) == (503, "keys_unavailable")
        assert backend.devices("o1") == []
    finally:
        srv.stop()
        backend.close()


def test_the_openapi_file_lists_exactly_the_routes_the_front_serves() -> None:
    spec = json.loads((ROOT / "central" / "contract" / "openapi.json").read_text())
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops
                  if m in ("get", "post", "put", "head")}
    served = set()
    for route in Front(backend=None).app().router.routes():  # type: ignore[arg-type]
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter", "")
        served.add((route.method, path))
    assert documented == served
