"""A code a locker issues offline is never in clear at the gateway: the real
locker application's deposit event goes through a real Mosquitto into a
real gateway process, and the code is in neither its database, nor its logs,
nor the clerk's page and API (both languages). The platform and the outlet's
notifier open the box the gateway stored; a wrong key and a changed box are
refused (docs/security.md, "Sealed codes")."""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.broker import Mosquitto
from protocol import seal, topics
from protocol.errors import BadSeal
from simulator.gateway_process import GatewayProcess, write_config
from simulator.outlet import stored_events
from tests.gateway.test_status_page import device_client
from tests.locker_rig import PLATFORM, Rig

PARCEL = "RB123456785GB"


def clear(code: str, text: str) -> bool:
    """`code` on its own, not inside a run of hex digits (a sealed box)."""
    return re.search(rf"(?<![0-9a-fA-F]){code}(?![0-9a-fA-F])", text) is not None


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def db_text(db: Path) -> str:
    """Every cell of every table, blobs decoded (inflated when compressed),
    and the raw bytes of the database files."""
    out = []
    for f in db.parent.glob(db.name + "*"):
        out.append(f.read_bytes().decode("utf-8", "replace"))
    con = sqlite3.connect(db)
    try:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in con.execute(f'SELECT * FROM "{table}"'):
                for v in row:
                    if isinstance(v, bytes):
                        try:
                            v = zlib.decompress(v)
                        except zlib.error:
                            pass
                        v = v.decode("utf-8", "replace")
                    out.append(str(v))
    finally:
        con.close()
    return "\n".join(out)


@pytest.fixture
def gateway_web(tmp_path: Path, broker: Mosquitto) -> Iterator[dict[str, Any]]:
    cfg = write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")
    with cfg.open("a", encoding="utf-8") as f:
        f.write('\n[web]\nhost = "127.0.0.1"\nport = 0\nlang = "zh"\n')
    err = tmp_path / "gateway.stderr"
    gw = GatewayProcess(cfg, stderr=err)
    try:
        gw.wait_for("gateway_started")
        started = next(d for d in gw.lines if d.get("evt") == "web_started")
        yield {"gw": gw, "base": f"http://127.0.0.1:{started['port']}", "db": tmp_path / "gateway.db",
               "stderr": err, "cfg": cfg}
    finally:
        if gw.proc.poll() is None:
            gw.stop()


def test_offline_code_is_in_no_gateway_db_log_or_page(gateway_web: dict[str, Any], broker: Mosquitto,
                                                      tmp_path: Path) -> None:
    (tmp_path / "locker").mkdir()
    rig = Rig(tmp_path / "locker", log_events=True)
    try:
        lk = rig.locker
        lk.courier_login(rig.provision_courier())
        cid = rig.run(rig.with_person(lk.deposit(PARCEL, "M")))
        lk.courier_logout()
        # The bytes the locker queued, published as the locker would.
        payloads = [p for _, _, t, p in lk.outbox.pending(10_000) if t.endswith("/evt")]
        client = device_client("lk01", broker.port)
        try:
            for p in payloads:
                client.publish(topics.build("o1", "locker", "lk01", "evt"), p, qos=1).wait_for_publish(5)
        finally:
            client.disconnect()
            client.loop_stop()
        db, base = gateway_web["db"], gateway_web["base"]
        deadline = time.monotonic() + 20
        while not [e for e in stored_events(db) if e["type"] == "locker.deposit"]:
            assert time.monotonic() < deadline, "the deposit never reached the gateway's store"
            time.sleep(0.1)
        [dep] = [e for e in stored_events(db) if e["type"] == "locker.deposit"]

        # The platform and the notifier read the code from what the gateway stored ...
        code = PLATFORM.open_code(dep)
        assert seal.open_for_notifier({1: PLATFORM.notifier_key()}, dep) == code
        # ... and it is the code the keypad takes (checked last, below).
        assert "code" not in dep["body"]

        deadline = time.monotonic() + 20
        while "locker.deposit" not in get(base + "/api/status"):
            assert time.monotonic() < deadline, "the page never showed the deposit"
            time.sleep(0.1)
        pages = {"api": get(base + "/api/status"), "zh": get(base + "/?lang=zh"),
                 "en": get(base + "/?lang=en"), "metrics": get(base + "/metrics")}
        # The deposit is on the page (its parcel id only on the clerk console, behind the login).
        assert "快递员投递" in pages["zh"] and "Delivered by courier" in pages["en"]
        for name, text in pages.items():
            assert not clear(code, text), f"the code is on {name}"
        assert not clear(code, db_text(db)), "the code is in the gateway's database"
        gateway_web["gw"].stop()
        logs = json.dumps(gateway_web["gw"].lines) + gateway_web["stderr"].read_text(errors="replace")
        assert "locker.deposit" in logs or gateway_web["gw"].lines  # the gateway did log
        assert not clear(code, logs), "the code is in the gateway's logs"
        # The gateway holds no key that opens the box: not its config, not its store.
        cfg_text = gateway_web["cfg"].read_text()
        assert PLATFORM.key("lk01").hex() not in cfg_text and PLATFORM.notifier_key().hex() not in cfg_text

        # A wrong key, a changed box, a box moved to another parcel: refused.
        with pytest.raises(BadSeal):
            seal.open_box("platform", PLATFORM.key("lk02"), dep)
        with pytest.raises(BadSeal):
            seal.open_for_notifier({1: seal.notifier_key(b"\x02" * 32, "o1", 1)}, dep)
        bad = json.loads(json.dumps(dep))
        box = bad["body"]["code_sealed"]["notifier"]["box"]
        bad["body"]["code_sealed"]["notifier"]["box"] = ("1" if box[0] == "0" else "0") + box[1:]
        with pytest.raises(BadSeal):
            seal.open_for_notifier({1: PLATFORM.notifier_key()}, bad)
        moved = json.loads(json.dumps(dep))
        moved["body"]["parcel"] = "CP000000270CN"
        with pytest.raises(BadSeal):
            PLATFORM.open_code(moved)

        assert rig.run(rig.with_person(lk.pickup(code))) == cid
    finally:
        rig.close()
