"""The locker firmware on the MicroPython unix port, end to end: real
Mosquitto with ACLs, the gateway process and its SQLite file, a byte-accurate
simulated lock board and a simulated front panel on sockets."""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest

from common.pki import OutletPki
from firmware.locker import codes as C
from gateway.broker import Mosquitto
from gateway.store.events import EventStore
from simulator import unixport
from simulator.gateway_process import GatewayProcess, write_config
from simulator.lockboard_sim import Sim8ABus
from simulator.outlet import DoorCloser, Platform, stored_events, wait_event
from simulator.panel_sim import SimPanel
from tests.e2e.conftest import lan_gateway, lan_locker
from tests.locker_rig import KEY, PLATFORM

pytestmark = pytest.mark.mpy  # every test runs the MicroPython unix port or mpy-cross
TESTS = Path(__file__).parent.parent  # tests/mpy/publisher_mp_check.py is shared with tests/confirm_rig.py


@pytest.fixture
def outlet(tmp_path: Path, broker: Mosquitto, pki: OutletPki):
    """A unix-port locker and the gateway process, both on the broker's TLS
    listener (the end-to-end runs on TLS, as an outlet is set up)."""
    bus = Sim8ABus(boards=(1,), locks=24)
    bport = bus.serve_tcp()
    panel = SimPanel()
    gw = GatewayProcess(lan_gateway(tmp_path / "gateway.toml", broker, pki))
    gw.wait_for("gateway_started")
    lan_locker(tmp_path, broker, pki, f"socket://127.0.0.1:{bport}", panel.url)
    fw = unixport.popen(["-m", "firmware.locker.main", str(tmp_path / "config.json")],
                        heap=unixport.APP_HEAP, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    platform = Platform(broker.port, "o1", "gw-o1", "gw-secret", KEY)
    d = {"bus": bus, "panel": panel, "gw": gw, "fw": fw, "db": tmp_path / "gateway.db", "platform": platform}
    yield d
    platform.close()
    fw.kill()
    fw.communicate()
    if d["fw"] is not fw:  # a test that power-cycled the locker put its new process here
        d["fw"].kill()
        d["fw"].wait()
    gw.stop()
    panel.close()
    bus.close()


def test_deposit_and_pickup_through_panel_broker_and_gateway(outlet: dict) -> None:
    panel: SimPanel = outlet["panel"]
    platform: Platform = outlet["platform"]
    panel.wait_connected()
    assert panel.wait_display("ready")["zh"] == "请输入取件码或扫码"
    salt = "1234567890abcdef"
    ack = platform.send("lk01", platform.command("lk01", "credential", {
        "courier": "c007", "salt": salt, "hash": C.salted_hash(salt, "s3cret"),
        "exp": int(time.time()) + 3600}, "cred-1"), "cred-1")
    assert ack["ok"] and ack["result"] == {"couriers": 1}
    forged = json.loads(platform.command("lk01", "open", {"compartment": 1}, "forged-1"))
    forged["args"]["compartment"] = 2  # the signature covered compartment 1
    ack = platform.send("lk01", json.dumps(forged).encode(), "forged-1")
    assert ack["code"] == "bad_signature" and not ack["ok"]
    closer = DoorCloser(outlet["bus"])
    try:
        assert panel.do("scan", "PE-C:c007:s3cret")["code"] == "courier_ok"
        assert panel.do("scan", "4006381333931")["code"] == "invalid_parcel"
        shown = panel.do("scan", "]C0RB123456785GB")
        assert shown["code"] == "choose_size" and shown["detail"] == "RB123456785GB"
        assert panel.do("keys", "2")["code"] == "door_open_deposit"
        done = panel.wait_display("deposit_ok")
        cid = int(done["detail"])
        assert panel.do("keys", "0")["code"] == "logged_out"
        dep = wait_event(outlet["db"], "locker.deposit")
        assert dep["body"]["compartment"] == cid and dep["body"]["parcel"] == "RB123456785GB"
        code = PLATFORM.open_code(dep)  # the platform's copy: the body holds only sealed boxes
        assert panel.do("keys", "000000" if code != "000000" else "111111")["code"] == "wrong_code"
        m = panel.mark()
        panel.keys(code)
        opened = panel.wait_display(after=m)
        assert opened["code"] == "door_open_pickup" and int(opened["detail"]) == cid
        assert opened["en"].startswith("Door open") and opened["zh"].startswith("柜门已开")
        shown = panel.wait_display("pickup_ok", after=m)
        assert int(shown["detail"]) == cid
        pick = wait_event(outlet["db"], "locker.pickup")
        assert pick["body"] == {"compartment": cid, "parcel": "RB123456785GB"}
        assert closer.closed == [cid, cid]
    finally:
        closer.stop()
    ids = [e["id"] for e in stored_events(outlet["db"])]
    assert len(ids) == len(set(ids))
    # Panel garbage is counted, answered, and the panel carries on.
    m = panel.mark()
    panel.send_raw(b"\xff\xfe\x00garbage\n")
    first = panel.wait_display("unknown_input", after=m)
    panel.send_raw(b"Z:what\n")
    assert panel.wait_display("unknown_input", after=panel.shown.index(first, m) + 1)
    assert panel.do("keys", "12")["code"] == "wrong_code"
    assert outlet["fw"].poll() is None  # still running


def test_fifty_broker_restarts_lose_nothing_and_never_hang(tmp_path: Path, broker: Mosquitto) -> None:
    gw = GatewayProcess(write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret"))
    gw.wait_for("gateway_started")
    n = 1500
    proc = unixport.popen([str(TESTS / "mpy" / "publisher_mp_check.py"), str(broker.port), str(n),
                           str(tmp_path / "flash")], heap=unixport.SENDER_HEAP, extra_path=[TESTS],
                           stdout=subprocess.PIPE)
    rng = random.Random(20261128)
    try:
        for _ in range(50):
            time.sleep(rng.uniform(0.02, 0.25))
            broker.stop()  # SIGTERM: as systemd restarts it
            time.sleep(rng.uniform(0.0, 0.2))
            broker.start()
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            try:
                lines.append(json.loads(line))
            except ValueError:
                rest = line + "".join(proc.stdout.readline() for _ in range(30))
                raise AssertionError(f"publisher printed:\n{rest}\nafter {lines[-3:]}") from None
            if lines[-1]["evt"] == "drained":
                break
        assert lines and lines[-1]["evt"] == "drained", "publisher hung or died"
        # it really went through the restarts (on a busy machine a restart can
        # fall inside one reconnect backoff, so not one connect each)
        assert lines[-1]["stats"]["connects"] >= 10
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len({e["id"] for e in stored_events(tmp_path / "gateway.db")}) >= n:
                break
            time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait()
        last = gw.stop()
    got = stored_events(tmp_path / "gateway.db")
    missing = sorted(set(range(n)) - {e["body"]["i"] for e in got})
    assert not missing, f"{len(missing)} events never reached the gateway, first {missing[:5]}"
    assert len({e["id"] for e in got}) == n == len(got)  # every one, once
    assert sorted(e["body"]["i"] for e in got) == list(range(n))
    assert last.get("seq_gaps", 0) == 0


def test_power_cut_mid_deposit_on_the_unix_port(outlet: dict, tmp_path: Path) -> None:
    """SIGKILL the firmware while the door stands open; on reboot the cycle
    resumes, and the gateway gets exactly one deposit."""
    panel: SimPanel = outlet["panel"]
    platform: Platform = outlet["platform"]
    bus: Sim8ABus = outlet["bus"]
    panel.wait_connected()
    salt = "1234567890abcdef"
    platform.send("lk01", platform.command("lk01", "credential", {
        "courier": "c9", "salt": salt, "hash": C.salted_hash(salt, "pw"),
        "exp": int(time.time()) + 3600}, "cred-9"), "cred-9")
    assert panel.do("scan", "PE-C:c9:pw")["code"] == "courier_ok"
    assert panel.do("scan", "EA123456785CN")["code"] == "choose_size"
    panel.keys("3")
    deadline = time.monotonic() + 20
    opened = None
    while opened is None and time.monotonic() < deadline:
        opened = next((ch for ch in range(1, 25) if bus.is_open(1, ch)), None)
        time.sleep(0.05)
    assert opened is not None
    time.sleep(0.3)  # the journal says "open"
    outlet["fw"].kill()  # the power goes
    outlet["fw"].wait()
    journal = json.loads((tmp_path / "flash" / "journal").read_text())
    assert journal["step"] == "open" and journal["cid"] == opened
    fw = unixport.popen(["-m", "firmware.locker.main", str(tmp_path / "config.json")],
                        heap=unixport.APP_HEAP, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outlet["fw"] = fw  # the fixture kills this one
    time.sleep(1.5)
    assert bus.is_open(1, opened)  # still waiting for the door, as before the cut
    bus.close_door(1, opened)
    dep = wait_event(outlet["db"], "locker.deposit")
    assert dep["body"]["compartment"] == opened and dep["body"]["parcel"] == "EA123456785CN"
    time.sleep(1.0)
    events = stored_events(outlet["db"])
    assert [e["type"] for e in events].count("locker.deposit") == 1
    boots = [e["body"]["boot"] for e in events if e["type"] == "locker.boot"]
    assert boots == [1, 2]
    assert any(e["type"] == "locker.audit" and e["body"].get("outcome") == "resumed" for e in events)


def _forward_from_handheld(broker: Mosquitto, cmd: dict, seq: int = 1) -> None:
    """hh01 publishes a ``handheld.forward_command`` event carrying ``cmd``."""
    import paho.mqtt.client as mqtt

    from protocol import envelope, topics
    from protocol.ids import format_event_id

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hh01", protocol=mqtt.MQTTv311)
    c.username_pw_set("hh01", "hh01-pw")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        ev = envelope.encode(envelope.make(format_event_id("hh01", "0c0ffee0", seq), int(time.time()),
                                           "handheld.forward_command", "custody",
                                           {"kind": "locker", "cmd": cmd}))
        c.publish(topics.build("o1", "handheld", "hh01", "evt"), ev, qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_attack_a_handheld_key_opens_no_locker(outlet: dict, broker: Mosquitto) -> None:
    """The attack: with the handheld's own key, sign an ``open``
    for lk01 and forward it through the gateway as the handheld. The gateway
    must refuse to forward it, and the locker (the real firmware on the unix
    port) must refuse it even if it arrives on its cmd topic. (Before the
    per-device keys the handheld's ``command_keys`` were the lockers' key:
    the gateway logged ``forwarded`` and door 5 opened.)"""
    from protocol import signing
    from tests.locker_rig import PLATFORM

    platform: Platform = outlet["platform"]
    bus: Sim8ABus = outlet["bus"]
    outlet["panel"].wait_connected()
    handheld_key = PLATFORM.key("hh01")  # the only key provisioning gives hh01
    now = int(time.time())
    forged = signing.sign({"id": "hh-open-1", "dev": "lk01", "op": "open", "args": {"compartment": 5},
                           "iat": now, "exp": now + 300}, handheld_key, kv=1)
    _forward_from_handheld(broker, forged)
    refused = outlet["gw"].wait_for("forward_refused", timeout=10)
    assert refused["event"].startswith("hh01:") and refused["code"] == "not_a_permit"
    # The gateway held nothing for the locker; the locker is online and idle.
    time.sleep(2.0)
    assert bus.board(1).opens[4] == 0
    # Published straight onto lk01's cmd topic (a compromised gateway): refused.
    ack = platform.send("lk01", signing.encode(forged), "hh-open-1")
    assert not ack["ok"] and ack["code"] == "bad_signature"
    assert bus.board(1).opens[4] == 0


def test_permit_forwarded_by_its_handheld_opens_and_a_forged_one_does_not(outlet: dict,
                                                                          broker: Mosquitto) -> None:
    """A deposit permit signed with lk01's key, carried by hh01: the gateway
    forwards it and the firmware on the unix port deposits. The same permit
    with the parcel changed by the handheld is refused by the locker."""
    from protocol import signing
    from tests.locker_rig import PLATFORM

    outlet["panel"].wait_connected()
    closer = DoorCloser(outlet["bus"])
    try:
        good = PLATFORM.permit("lk01", "deposit", "RB123456785GB", "c007", "hh01", "p-e2e-1", size="M")
        tampered = dict(good, id="p-e2e-2", args=dict(good["args"], parcel="EA123456785CN"))
        _forward_from_handheld(broker, tampered, seq=1)
        _forward_from_handheld(broker, good, seq=2)
        assert {outlet["gw"].wait_for("forwarded", timeout=10)["command"] for _ in range(2)} == {
            "p-e2e-1", "p-e2e-2"}
        dep = wait_event(outlet["db"], "locker.deposit")
        assert dep["body"]["parcel"] == "RB123456785GB" and dep["body"]["permit"] == "p-e2e-1"
        assert dep["body"]["courier"] == "c007"
        ack = outlet["platform"].send("lk01", signing.encode(tampered), "p-e2e-2")
        assert ack["code"] == "bad_signature"
    finally:
        closer.stop()
    deposits = [e for e in stored_events(outlet["db"]) if e["type"] == "locker.deposit"]
    assert [e["body"]["parcel"] for e in deposits] == ["RB123456785GB"]


@pytest.mark.slow
def test_presence_after_twenty_broker_restarts_says_online(outlet: dict, broker: Mosquitto) -> None:
    """After broker restarts a working locker showed
    offline for hours (a Will of an older connection, or a reconnect the
    presence task never noticed, had the last word). Restarted 20 times,
    some within the locker's reconnect backoff; at the end it is online."""
    outlet["panel"].wait_connected()
    rng = random.Random(20261203)
    for _ in range(20):
        time.sleep(rng.uniform(0.05, 1.5))
        if rng.random() < 0.5:
            broker.kill()  # SIGKILL: the broker gets no chance to send anything
        else:
            broker.stop()
        time.sleep(rng.uniform(0.0, 0.3))
        broker.start()

    def online_now() -> dict[str, bool]:
        s = EventStore(outlet["db"])
        try:
            return {d["device"]: d["online"] for d in s.devices()}
        finally:
            s.close()

    deadline = time.monotonic() + 30
    online = None
    while time.monotonic() < deadline:
        online = online_now()
        if online.get("lk01"):
            time.sleep(3)  # and stays so once late Wills have had their chance
            online = online_now()
            if online.get("lk01"):
                break
        time.sleep(0.5)
    assert online and online.get("lk01") is True, online
    assert outlet["fw"].poll() is None
