"""Trusted time end to end: the locker firmware on the MicroPython unix port
with its clock reset to 2000 (PE_CLOCK_OFFSET_S, drivers/hal/unix.py), real
Mosquitto with the outlet ACL, the real gateway process, a simulated lock
board and front panel. Before the gateway's time the locker refuses every
time-based decision; once the gateway is up it takes the gateway's time,
raises clock_skew, and decides by that time."""

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
from simulator.outlet import Platform, wait_event
from simulator.panel_sim import SimPanel
from tests.e2e.conftest import lan_gateway, lan_locker
from tests.locker_rig import KEY

pytestmark = pytest.mark.mpy

Y2000 = 946684800
SALT = "00112233445566ff"


def test_clock_reset_to_2000_refuses_expired_badge_and_recovers_after_sync(
        tmp_path: Path, broker: Mosquitto, pki: OutletPki) -> None:
    real = int(time.time())
    flash = tmp_path / "flash"
    flash.mkdir()
    # Provisioned before the RTC forgot: one credential has expired since, one is valid.
    (flash / "couriers").write_text(json.dumps({
        "c-old": {"salt": SALT, "hash": C.salted_hash(SALT, "old-pw"), "exp": real - 3600},
        "c-new": {"salt": SALT, "hash": C.salted_hash(SALT, "new-pw"), "exp": real + 3600}}))
    bus = Sim8ABus(boards=(1,), locks=24)
    panel = SimPanel()
    lan_locker(tmp_path, broker, pki, f"socket://127.0.0.1:{bus.serve_tcp()}", panel.url, time_wait_s=2)
    log = open(tmp_path / "fw.log", "w")  # noqa: SIM115
    fw = unixport.popen(["-m", "firmware.locker.main", str(tmp_path / "config.json")],
                        heap=unixport.APP_HEAP, extra_env={"PE_CLOCK_OFFSET_S": str(Y2000 - real)},
                        stdout=log, stderr=subprocess.STDOUT)
    platform = Platform(broker.port, "o1", "gw-o1", "gw-secret", KEY)
    gw: GatewayProcess | None = None
    try:
        panel.wait_connected()
        panel.wait_display("ready")
        # No gateway yet, so no time: the expired badge is not let in (today's
        # bug: courier_ok), and neither is the valid one.
        assert panel.do("scan", "PE-C:c-old:old-pw")["code"] == "time_not_synced"
        assert panel.do("scan", "PE-C:c-new:new-pw")["code"] == "time_not_synced"
        # A fresh platform command: "not synced", not not_yet_valid.
        ack = platform.send("lk01", platform.command("lk01", "config", {"pickup_days": 5}, "cfg-1"), "cfg-1")
        assert not ack["ok"] and ack["code"] == "time_not_synced"
        # The gateway comes up, sees the locker online and sends its time.
        gw = GatewayProcess(lan_gateway(tmp_path / "gateway.toml", broker, pki))
        gw.wait_for("gateway_started")
        alarm = wait_event(tmp_path / "gateway.db", "locker.alarm")
        assert alarm["body"]["alarm"] == "clock_skew" and alarm["body"]["skew"] > 20 * 365 * 86400
        assert abs(alarm["ts"] - int(time.time())) <= 5  # stamped with the gateway's time
        # Decided by the gateway's time now.
        assert panel.do("scan", "PE-C:c-old:old-pw")["code"] == "bad_badge"
        assert panel.do("scan", "PE-C:c-new:new-pw")["code"] == "courier_ok"
        ack = platform.send("lk01", platform.command("lk01", "config", {"pickup_days": 5}, "cfg-2"), "cfg-2")
        assert ack["ok"], ack
        synced = [e for e in _events(tmp_path) if e["type"] == "locker.audit"
                  and e["body"].get("what") == "time_synced"]
        assert len(synced) == 1 and abs(synced[0]["body"]["offset"] - (real - Y2000)) <= 5
        assert fw.poll() is None
    finally:
        platform.close()
        fw.kill()
        fw.wait()
        log.close()
        if gw is not None:
            gw.stop()
        panel.close()
        bus.close()


def _events(tmp_path: Path) -> list[dict]:
    from simulator.outlet import stored_events

    deadline = time.monotonic() + 10
    while True:
        got = stored_events(tmp_path / "gateway.db")
        if any(e["body"].get("what") == "time_synced" for e in got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)
