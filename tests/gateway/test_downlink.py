"""The downlink: commands from the central platform through
the gateway to a device and the outcome back up.

Real parts throughout: the uplink double (simulator/uplink_double.py) over HTTPS and over TLS Mosquitto,
the gateway process, the outlet's Mosquitto, the locker firmware on the
MicroPython unix port with a simulated lock board.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.broker import Mosquitto
from gateway.store.events import EventStore
from gateway.uplink.downlink import CURSOR_KEY, Downlink
from protocol import envelope, signing, topics
from protocol.ids import format_event_id
from simulator import unixport
from simulator.gateway_process import GatewayProcess, write_config
from simulator.lockboard_sim import Sim8ABus
from simulator.outlet import locker_config, wait_event
from tests.locker_rig import KEY
from tests.uplink_rig import Log, Uplink, gateway_toml


def command(op: str, args: dict[str, Any], cmd_id: str, exp_in: int = 600, dev: str = "lk01"
            ) -> dict[str, Any]:
    now = int(time.time())
    return signing.sign({"id": cmd_id, "dev": dev, "op": op, "args": args, "iat": now, "exp": now + exp_in},
                        KEY, kv=1)


def central_types(uplink: Uplink) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with uplink.central.lock:
        for env in uplink.central.events.values():
            out.setdefault(env["type"], []).append(env)
    return out


@pytest.mark.e2e
@pytest.mark.mpy
def test_remote_open_from_the_platform_reaches_the_locker_and_the_outcome_comes_back(
        tmp_path: Path, broker: Mosquitto, uplink: Uplink) -> None:
    """Platform -> gateway -> locker firmware -> door opens -> events and the
    command's outcome synced back up, over either transport."""
    cfg = gateway_toml(tmp_path / "gw.toml", broker, uplink.upstream(down_interval_s=0.3))
    gw = GatewayProcess(cfg)
    bus = Sim8ABus(boards=(1,), locks=24)
    lk = locker_config("lk01", "o1", broker.port, "lk01-pw", f"socket://127.0.0.1:{bus.serve_tcp()}",
                       tmp_path / "flash", KEY)
    (tmp_path / "lk01.json").write_text(json.dumps(lk))
    fw = None
    try:
        gw.wait_for("gateway_started", timeout=30)
        fw = unixport.popen(["-m", "firmware.locker.main", str(tmp_path / "lk01.json")],
                            heap=unixport.APP_HEAP, stdout=subprocess.DEVNULL)
        uplink.central.push_command("o1", "locker", command("open", {"compartment": 3}, "open-3"))
        forged = command("open", {"compartment": 4}, "open-4")
        forged["args"] = {"compartment": 5}  # tampered after signing
        uplink.central.push_command("o1", "locker", forged)
        outcomes = {"gateway.command_acked", "gateway.command_refused"}
        assert uplink.central.wait_for(lambda c: outcomes <= {e["type"] for e in c.events.values()},
                                       timeout=60), central_types(uplink).keys()
        types = central_types(uplink)
        acked = types["gateway.command_acked"][0]["body"]
        refused = types["gateway.command_refused"][0]["body"]
        assert (acked["id"], acked["device"], acked["op"]) == ("open-3", "lk01", "open")
        assert (refused["id"], refused["code"]) == ("open-4", "bad_signature")
        deadline = time.monotonic() + 10
        while not bus.is_open(1, 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        bus.close_door(1, 3)  # the clerk shuts it: the door cycle ends and is reported
        assert uplink.central.wait_for(lambda c: any(e["type"] == "locker.remote_open"
                                                     for e in c.events.values()), timeout=30)
        opened = [e["body"] for e in central_types(uplink)["locker.remote_open"]]
        assert [b["cmd"] for b in opened] == ["open-3"]
        opens = bus.board(1).opens
        assert opens[2] == 1 and sum(opens) == 1  # lock 3, once; the forged one never reached the board
        # The cursor acked both commands: the platform holds nothing more for o1.
        assert uplink.central.wait_for(lambda c: not c.down.get("o1"), timeout=10)
    finally:
        if fw is not None:
            fw.kill()
            fw.wait()
        gw.stop()
        bus.close()
    st = EventStore(tmp_path / "gateway.db")
    try:
        rows = dict(st.db.execute("SELECT id, status FROM commands").fetchall())
        assert rows == {"open-3": "acked", "open-4": "refused"}
    finally:
        st.close()


def run_downlink(db: Path, uplink: Uplink, **kw: Any) -> tuple[Downlink, Log, threading.Thread]:
    log = Log()
    d = Downlink(db, "o1", uplink.upstream(down_interval_s=0.2, **kw), log=log, seed=3)
    return d, log, d.start()


def test_paging_invalid_commands_and_redelivery_queue_each_once(tmp_path: Path, https_uplink: Uplink) -> None:
    central = https_uplink.central
    central.down_page = 100
    for i in range(250):
        dev = f"lk{i % 3 + 1:02d}"
        central.push_command("o1", "locker", command("config", {"n": i}, f"cfg-{i}", dev=dev))
    central.push_command("o1", "toaster", command("open", {}, "bad-kind"))
    central.push_command("o1", "locker", {"id": "no-dev", "op": "open", "exp": 1})
    central.push_command("o1", "locker", command("open", {"compartment": 1}, "last"))
    db = tmp_path / "gw.db"
    d, log, t = run_downlink(db, https_uplink)
    try:
        log.wait("down_received", 20, lambda x: x["cursor"] == 253)
        assert sum(x["n"] for x in log.of("down_received")) == 253
        assert len(log.of("down_invalid")) == 2
        assert {x["kind"] for x in log.of("down_invalid")} == {"toaster", "locker"}
    finally:
        d.stop.set()
        t.join(10)
    st = EventStore(db)
    try:
        assert st.db.execute("SELECT count(*), count(DISTINCT id) FROM commands").fetchone() == (251, 251)
        assert st.get(CURSOR_KEY) == "253"
        assert st.db.execute("SELECT device FROM commands WHERE id='cfg-4'").fetchone() == ("lk02",)
        # A gateway whose cursor never reached the platform asks again from 0
        # and the platform (here: told nothing was acked) sends everything
        # again: nothing is queued twice.
        central.down["o1"] = [(n, "locker", command("config", {"n": n}, f"cfg-{n - 1}")) for n in range(1, 4)]
        st.put(CURSOR_KEY, "0")
    finally:
        st.close()
    d, log, t = run_downlink(db, https_uplink)
    try:
        got = log.wait("down_received", 20)
        assert (got["n"], got["queued"], got["cursor"]) == (3, 0, 3)
    finally:
        d.stop.set()
        t.join(10)
    st = EventStore(db)
    try:
        assert st.db.execute("SELECT count(*) FROM commands").fetchone() == (251,)
        assert st.get(CURSOR_KEY) == "3"
    finally:
        st.close()


def test_platform_down_then_back_the_downlink_recovers(tmp_path: Path, uplink: Uplink) -> None:
    uplink.link.down()
    d, log, t = run_downlink(tmp_path / "gw.db", uplink)
    try:
        log.wait("down_failed", 20)
        uplink.central.push_command("o1", "locker", command("open", {"compartment": 2}, "after-outage"))
        time.sleep(0.5)
        assert not log.of("down_received")
        uplink.link.up()
        got = log.wait("down_received", 20)
        assert got["queued"] == 1
    finally:
        d.stop.set()
        t.join(10)
        assert not t.is_alive()
    st = EventStore(tmp_path / "gw.db")
    try:
        assert st.db.execute("SELECT id, status FROM commands").fetchall() == [("after-outage", "queued")]
    finally:
        st.close()


def forward_event(seq: int, kind: str, cmd: dict[str, Any]) -> bytes:
    eid = format_event_id("hh01", "0c0ffee0", seq)
    return envelope.encode(envelope.make(eid, int(time.time()), "handheld.forward_command", "custody",
                                         {"kind": kind, "cmd": cmd}))


@pytest.mark.e2e
@pytest.mark.mpy
def test_deposit_permit_forwarded_by_a_handheld_opens_the_locker(tmp_path: Path, broker: Mosquitto) -> None:
    """A platform-signed deposit permit, carried offline by the courier's
    handheld and forwarded through the gateway: the locker checks the
    platform's signature, opens a fitting compartment and registers the
    deposit when the door closes. Bad forwards are refused and counted; a
    redelivered forward queues nothing twice."""
    cfg = write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")
    gw = GatewayProcess(cfg)
    db = tmp_path / "gateway.db"
    bus = Sim8ABus(boards=(1,), locks=24)
    lk = locker_config("lk01", "o1", broker.port, "lk01-pw", f"socket://127.0.0.1:{bus.serve_tcp()}",
                       tmp_path / "flash", KEY)
    (tmp_path / "lk01.json").write_text(json.dumps(lk))
    fw = None
    hh = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hh01", protocol=mqtt.MQTTv311)
    hh.username_pw_set("hh01", "hh01-pw")
    try:
        gw.wait_for("gateway_started", timeout=30)
        fw = unixport.popen(["-m", "firmware.locker.main", str(tmp_path / "lk01.json")],
                            heap=unixport.APP_HEAP, stdout=subprocess.DEVNULL)
        permit = command("deposit", {"parcel": "RB123456785CN", "size": "M", "courier": "c007",
                                     "handheld": "hh01"}, "permit-1")
        hh.connect("127.0.0.1", broker.port)
        hh.loop_start()
        t = topics.build("o1", "handheld", "hh01", "evt")
        for payload in (forward_event(1, "locker", permit),
                        forward_event(2, "toaster", permit),       # unknown device kind: refused
                        forward_event(1, "locker", permit)):       # redelivery of seq 1
            hh.publish(t, payload, qos=1).wait_for_publish(5)
        gw.wait_for("forward_refused", timeout=20)
        deadline = time.monotonic() + 30
        opened = []
        while not opened and time.monotonic() < deadline:
            opened = [n + 1 for n in range(24) if bus.is_open(1, n + 1)]
            time.sleep(0.05)
        assert len(opened) == 1, "the permit opened no door"
        bus.close_door(1, opened[0])
        dep = wait_event(db, "locker.deposit", timeout=30)
        assert dep["body"]["parcel"] == "RB123456785CN" and dep["body"]["permit"] == "permit-1"
        assert dep["body"]["courier"] == "c007" and dep["body"]["compartment"] == opened[0]
        acked = wait_event(db, "gateway.command_acked", timeout=30)
        assert acked["body"]["id"] == "permit-1"
    finally:
        hh.disconnect()
        hh.loop_stop()
        if fw is not None:
            fw.kill()
            fw.wait()
        gw.stop()
        bus.close()
    forwards = [x for x in gw.lines if x.get("evt") == "forwarded"]
    assert [x["command"] for x in forwards] == ["permit-1"]
    st = EventStore(db)
    try:
        assert st.db.execute("SELECT id, status FROM commands").fetchall() == [("permit-1", "acked")]
    finally:
        st.close()
