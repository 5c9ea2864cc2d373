"""Outbound drop-off (寄件) on the MicroPython unix port, end to end: real
Mosquitto, the gateway process and its SQLite file, the locker firmware with
a simulated front panel and lock board. Send codes arrive as signed platform
commands; the villager types or scans them; the courier's 9# collects."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from common.pki import OutletPki
from firmware.locker import codes as C
from gateway.broker import Mosquitto
from simulator import unixport
from simulator.gateway_process import GatewayProcess
from simulator.lockboard_sim import Sim8ABus
from simulator.outlet import DoorCloser, Platform, stored_events, wait_event
from simulator.panel_sim import SimPanel
from tests.e2e.conftest import lan_gateway, lan_locker
from tests.locker_rig import KEY

pytestmark = [pytest.mark.mpy, pytest.mark.slow]
SALT = "5a17c0de5a17c0de"
# Four doors, one of each size: S 1, M 2, L 3, XL 4.
CODES = {"SO20261203-0001": ("418263", "M"), "SO20261203-0002": ("550119", "XL"),
         "SO20261203-0003": ("702934", "XL")}


@pytest.fixture
def outlet(tmp_path: Path, broker: Mosquitto, pki: OutletPki):
    bus = Sim8ABus(boards=(1,), locks=24)
    bport = bus.serve_tcp()
    panel = SimPanel()
    gw = GatewayProcess(lan_gateway(tmp_path / "gateway.toml", broker, pki))
    gw.wait_for("gateway_started")
    lan_locker(tmp_path, broker, pki, f"socket://127.0.0.1:{bport}", panel.url, compartments=[
        {"id": i, "size": size, "board": 1, "lock": i}
        for i, size in enumerate(("S", "M", "L", "XL"), start=1)])
    fw = boot(tmp_path)
    platform = Platform(broker.port, "o1", "gw-o1", "gw-secret", KEY)
    d = {"bus": bus, "panel": panel, "gw": gw, "fw": fw, "db": tmp_path / "gateway.db", "platform": platform,
         "tmp": tmp_path}
    yield d
    platform.close()
    d["fw"].kill()
    d["fw"].communicate()
    gw.stop()
    panel.close()
    bus.close()


def boot(tmp: Path) -> subprocess.Popen:
    return unixport.popen(["-m", "firmware.locker.main", str(tmp / "config.json")],
                          heap=unixport.APP_HEAP, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def provision(outlet: dict) -> None:
    platform: Platform = outlet["platform"]
    for order, (code, size) in CODES.items():
        cid = "s-" + order.lower()
        ack = platform.send("lk01", platform.command("lk01", "provision_send", {
            "order": order, "salt": SALT, "hash": C.salted_hash(SALT, code), "size": size,
            "exp": int(time.time()) + 86400}, cid), cid)
        assert ack["ok"] and ack["result"] == {"stored": order}, ack


def enter(panel: SimPanel, action: str, arg: str) -> dict[str, str]:
    """Type or scan, waiting out the first seconds before the locker has the gateway's time."""
    deadline = time.monotonic() + 20
    while True:
        shown = panel.do(action, arg)
        if shown["code"] != "time_not_synced" or time.monotonic() > deadline:
            return shown
        time.sleep(0.5)


def test_send_dropoff_replay_full_guesser_and_collection(outlet: dict) -> None:
    panel: SimPanel = outlet["panel"]
    panel.wait_connected()
    provision(outlet)
    closer = DoorCloser(outlet["bus"], locks=4)
    try:
        # A villager types the code: the M door opens, closes, the parcel is in.
        shown = enter(panel, "keys", "418263")
        assert shown["code"] == "door_open_send" and shown["detail"] == "2"
        assert shown["zh"].startswith("柜门已开")
        done = panel.wait_display("send_ok")
        assert done["detail"] == "2" and "courier" in done["en"]
        drop = wait_event(outlet["db"], "locker.send_dropoff")
        assert drop["cls"] == "custody" and drop["body"] == {
            "compartment": 2, "order": "SO20261203-0001", "size": "M", "booked": "M", "via": "keypad"}
        # Replayed, by keypad and by QR: used, nothing opens, no guess counted.
        assert panel.do("keys", "418263")["code"] == "code_used"
        assert panel.do("scan", "PE-S:418263")["code"] == "code_used"
        # The XL one by QR; the second XL finds no free XL door and keeps its code.
        m = panel.mark()
        assert panel.do("scan", "PE-S:550119")["code"] == "door_open_send"
        assert panel.wait_display("send_ok", after=m)["detail"] == "4"
        full = panel.do("keys", "702934")
        assert full["code"] == "full" and full["detail"] == "XL"
        assert panel.do("scan", "PE-S:not-digits")["code"] == "bad_code"
        # A guesser at the keypad: the pickup lockout holds for send codes too.
        for _ in range(5):
            assert panel.do("keys", "000000")["code"] == "wrong_code"
        assert panel.do("keys", "702934")["code"] == "locked_out"
        # The courier collects both outbound parcels with 9#.
        salt = "1234567890abcdef"
        platform: Platform = outlet["platform"]
        platform.send("lk01", platform.command("lk01", "credential", {
            "courier": "c007", "salt": salt, "hash": C.salted_hash(salt, "s3cret"),
            "exp": int(time.time()) + 3600}, "cred-1"), "cred-1")
        assert panel.do("scan", "PE-C:c007:s3cret")["code"] == "courier_ok"
        m = panel.mark()
        panel.keys("9")
        assert panel.wait_display("door_open_collect", after=m)["zh"].startswith("柜门已开")
        assert panel.wait_display("retrieved", after=m, timeout=30)["detail"] == "2"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = [e for e in stored_events(outlet["db"]) if e["type"] == "locker.send_collected"]
            if len(got) == 2:
                break
            time.sleep(0.3)
        assert sorted((e["body"]["compartment"], e["body"]["order"], e["body"]["courier"]) for e in got) == [
            (2, "SO20261203-0001", "c007"), (4, "SO20261203-0002", "c007")]
    finally:
        closer.stop()
    events = stored_events(outlet["db"])
    assert [e["type"] for e in events].count("locker.send_dropoff") == 2
    alarms = [e["body"]["alarm"] for e in events if e["type"] == "locker.alarm"]
    assert "code_guessing" in alarms and "lockout" in alarms
    results = [e["body"]["result"] for e in events
               if e["type"] == "locker.audit" and e["body"]["what"] == "send_attempt"]
    assert results.count("used") == 2 and results.count("full") == 1 and results.count("ok") == 2
    raw = json.dumps(events)
    for code, _ in CODES.values():
        assert code not in raw  # never a send code in clear, in any event
    assert outlet["fw"].poll() is None


def test_power_cut_mid_dropoff_on_the_unix_port(outlet: dict) -> None:
    """SIGKILL the firmware while the send door stands open; on reboot the
    cycle resumes and the gateway gets exactly one drop-off; the code is used."""
    panel: SimPanel = outlet["panel"]
    bus: Sim8ABus = outlet["bus"]
    tmp: Path = outlet["tmp"]
    panel.wait_connected()
    provision(outlet)
    shown = enter(panel, "keys", "418263")
    assert shown["code"] == "door_open_send", (shown, panel.shown)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        raw = (tmp / "flash" / "journal").read_text() if (tmp / "flash" / "journal").exists() else ""
        if raw and json.loads(raw).get("step") == "open":
            break
        time.sleep(0.05)
    outlet["fw"].kill()  # the power goes with the door open
    outlet["fw"].wait()
    journal = json.loads((tmp / "flash" / "journal").read_text())
    assert journal["step"] == "open" and journal["action"] == "send" and journal["cid"] == 2
    assert "418263" not in json.dumps(journal)
    outlet["fw"] = boot(tmp)
    time.sleep(2.0)
    assert bus.is_open(1, 2)  # the cycle waits for its door, as before the cut
    # The same code typed again while the door stands open opens nothing else.
    shown = enter(panel, "keys", "418263")
    assert shown["code"] == "busy", shown
    bus.close_door(1, 2)
    drop = wait_event(outlet["db"], "locker.send_dropoff")
    assert drop["body"]["compartment"] == 2 and drop["body"]["order"] == "SO20261203-0001"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and panel.do("keys", "418263")["code"] != "code_used":
        time.sleep(0.3)
    assert panel.do("keys", "418263")["code"] == "code_used"
    events = stored_events(outlet["db"])
    assert [e["type"] for e in events].count("locker.send_dropoff") == 1
    assert [e["body"]["boot"] for e in events if e["type"] == "locker.boot"] == [1, 2]
    assert sum(bus.board(1).opens) == 1
