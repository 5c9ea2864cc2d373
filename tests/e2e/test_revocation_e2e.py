"""Revocation end to end (a revoked handheld's permit is refused): the
locker firmware on the MicroPython unix port, real Mosquitto
with ACLs and the gateway process. The platform signs a ``revoke`` for the
locker; a permit the stolen handheld carried, forwarded through the gateway,
is refused by the locker, before and after the locker restarts, while
another handheld's permit still deposits. Then the gateway's half: the
handheld's broker login is gone, and the other handheld and the locker
carry on."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from common.pki import OutletPki
from gateway.broker import Account, Mosquitto
from gateway.revoke import reload_broker, revoke
from protocol import envelope, signing, topics
from protocol.ids import format_event_id
from simulator import unixport
from simulator.gateway_process import GatewayProcess
from simulator.lockboard_sim import Sim8ABus
from simulator.outlet import DoorCloser, Platform, wait_event
from simulator.panel_sim import SimPanel
from tests.conftest import PASSWORDS
from tests.e2e.conftest import lan_gateway, lan_locker
from tests.locker_rig import KEY, PLATFORM

pytestmark = pytest.mark.mpy


@pytest.fixture
def accounts() -> list[Account]:
    return [Account("gw-o1", PASSWORDS["gw-o1"], "o1", "gateway"),
            Account("lk01", PASSWORDS["lk01"], "o1", "locker"),
            Account("hh01", "hh01-pw", "o1", "handheld"),
            Account("hh02", "hh02-pw", "o1", "handheld")]


def _start_locker(tmp: Path) -> subprocess.Popen[str]:
    return unixport.popen(["-m", "firmware.locker.main", str(tmp / "config.json")], heap=unixport.APP_HEAP,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _forward(broker: Mosquitto, handheld: str, cmd: dict, seq: int) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=handheld, protocol=mqtt.MQTTv311)
    c.username_pw_set(handheld, f"{handheld}-pw")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        ev = envelope.encode(envelope.make(format_event_id(handheld, "0c0ffee0", seq), int(time.time()),
                                           "handheld.forward_command", "custody",
                                           {"kind": "locker", "cmd": cmd}))
        c.publish(topics.build("o1", "handheld", handheld, "evt"), ev, qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def _logs_in(broker: Mosquitto, user: str, password: str) -> bool:
    import threading

    import paho.mqtt.client as mqtt

    ok, answered = threading.Event(), threading.Event()

    def on_connect(cl: mqtt.Client, ud: object, fl: object, rc: mqtt.ReasonCode, pr: object = None) -> None:
        if not rc.is_failure:
            ok.set()
        answered.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{user}", protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    c.on_connect = on_connect
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        assert answered.wait(5)
        return ok.is_set()
    finally:
        c.disconnect()
        c.loop_stop()


def _outcome(db: Path, cid: str, timeout: float = 30) -> tuple[str, dict]:
    """The gateway's record of a forwarded command once the locker answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            conn = sqlite3.connect(db, timeout=10)
            try:
                row = conn.execute("SELECT status, ack FROM commands WHERE id=?", (cid,)).fetchone()
            except sqlite3.OperationalError:
                row = None
            finally:
                conn.close()
            if row is not None and row[0] in ("acked", "refused"):
                return row[0], json.loads(row[1])
        time.sleep(0.2)
    raise TimeoutError(f"no answer to {cid}")


@pytest.mark.slow
def test_a_revoked_handhelds_permit_is_refused_by_the_locker_across_a_restart(
        tmp_path: Path, broker: Mosquitto, pki: OutletPki) -> None:
    bus = Sim8ABus(boards=(1,), locks=24)
    bport = bus.serve_tcp()
    panel = SimPanel()
    gw = GatewayProcess(lan_gateway(tmp_path / "gateway.toml", broker, pki))
    gw.wait_for("gateway_started")
    lan_locker(tmp_path, broker, pki, f"socket://127.0.0.1:{bport}", panel.url)
    fw = _start_locker(tmp_path)
    platform = Platform(broker.port, "o1", "gw-o1", "gw-secret", KEY)
    closer = DoorCloser(bus)
    db = tmp_path / "gateway.db"
    try:
        panel.wait_connected()
        issued = int(time.time()) - 120  # the permits were on the handhelds before the theft
        carried = [PLATFORM.permit("lk01", "deposit", p, "c007", "hh01", f"p-hh01-{i}", now=issued, size="M")
                   for i, p in enumerate(("RB123456785GB", "EA123456785CN"))]
        other = PLATFORM.permit("lk01", "deposit", "RR123456785CN", "c008", "hh02", "p-hh02", now=issued,
                                size="M")
        rv = PLATFORM.command("lk01", "revoke", {"handhelds": ["hh01"]}, "rv-hh01")
        ack = platform.send("lk01", signing.encode(rv), "rv-hh01")
        assert ack["ok"], ack
        _forward(broker, "hh01", carried[0], 1)
        status, a = _outcome(db, "p-hh01-0")
        assert (status, a["code"]) == ("refused", "revoked")
        _forward(broker, "hh02", other, 1)
        assert _outcome(db, "p-hh02")[0] == "acked"
        dep = wait_event(db, "locker.deposit")
        assert dep["body"]["permit"] == "p-hh02"
        # A power cut and a reboot: the list is on flash.
        fw.kill()
        fw.wait()
        fw = _start_locker(tmp_path)
        _forward(broker, "hh01", carried[1], 2)
        status, a = _outcome(db, "p-hh01-1", timeout=60)
        assert (status, a["code"]) == ("refused", "revoked")
        assert sum(bus.board(1).opens) == 1  # only hh02's deposit
        # The gateway's half (postedge gateway revoke): hh01's login goes;
        # hh02 and the locker carry on. (Its survival across a broker restart
        # is gateway/test_revoke.py's, on a provisioned TLS broker.)
        r = revoke(tmp_path, broker.directory / "passwd", broker.directory / "acl", "hh01", db, "gw-o1",
                   outlet="o1")
        assert r["login_removed"] and r["reported"]
        assert broker.proc is not None
        reload_broker(broker.proc.pid)
        assert not _logs_in(broker, "hh01", "hh01-pw")
        assert _logs_in(broker, "hh02", "hh02-pw")
        later = PLATFORM.permit("lk01", "deposit", "CP123456785CN", "c008", "hh02", "p-hh02-b", now=issued,
                                size="M")
        _forward(broker, "hh02", later, 2)
        assert _outcome(db, "p-hh02-b", timeout=60)[0] == "acked"
    finally:
        closer.stop()
        platform.close()
        fw.kill()
        fw.wait()
        gw.stop()
        panel.close()
        bus.close()
