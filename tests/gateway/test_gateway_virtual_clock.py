"""The gateway process on a simulation's clock (``common/clock.py``): with a
clock file beside its config (``simulator/gateway_process.py``) it expires
relayed commands, stamps what it stores and its own events, and sends the
devices the time, all by the file's time, whatever the wall clock says; a
clock file it cannot read stops it at start.

Real pieces: Mosquitto, the gateway process, a handheld forwarding a permit
over MQTT and a stand-in locker (an MQTT client on lk01's account)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from common.clock import ENV, ClockWriter
from gateway.broker import Account, Mosquitto
from gateway.config import GatewayConfig
from gateway.service import Enqueuer
from gateway.store.events import EventStore
from protocol import envelope, timesync, topics
from protocol.canonical import dumps
from protocol.ids import format_event_id
from simulator.gateway_process import GatewayProcess, clock_file
from simulator.gateway_process import write_config as write_gateway_config

PW = {"gw-o1": "gw-secret", "hh01": "hh01-pw", "lk01": "lk01-pw"}
ACCOUNTS = [Account("gw-o1", PW["gw-o1"], "o1", "gateway"), Account("hh01", PW["hh01"], "o1", "handheld"),
            Account("lk01", PW["lk01"], "o1", "locker")]
DAY = 86400
ROOT = Path(__file__).resolve().parents[2]


def permit(cid: str, iat: int, exp: int) -> dict[str, Any]:
    """A deposit permit's shape (protocol/permits.py); the gateway never checks
    the signature (the locker does), so a dummy one does here."""
    return {"v": 1, "id": cid, "dev": "lk01", "op": "deposit", "kv": 1, "sig": "0" * 64,
            "args": {"parcel": "RB123456785CN", "size": "M", "courier": "c007", "handheld": "hh01"},
            "iat": iat, "exp": exp}


class Locker:
    """lk01 as the gateway sees it: online, taking commands and the time."""

    def __init__(self, port: int) -> None:
        self.cmds: list[dict[str, Any]] = []
        self.times: list[int] = []
        self.cond = threading.Condition()
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lk01",
                                      protocol=mqtt.MQTTv311)
        c.username_pw_set("lk01", PW["lk01"])
        c.on_message = self._message
        c.on_connect = lambda c, *a: (
            c.subscribe([(topics.build("o1", "locker", "lk01", "cmd"), 1),
                         (topics.build("o1", "locker", "lk01", "time"), 0)]),
            c.publish(topics.build("o1", "locker", "lk01", "presence"), b"online", qos=1, retain=True))
        c.connect("127.0.0.1", port)
        c.loop_start()

    def _message(self, c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            if msg.topic.endswith("/time"):
                self.times.append(timesync.decode(msg.payload))
            else:
                cmd = json.loads(msg.payload)
                self.cmds.append(cmd)
                c.publish(topics.build("o1", "locker", "lk01", "ack"),
                          json.dumps({"id": cmd["id"], "ok": True, "code": "ok"}), qos=1)
            self.cond.notify_all()

    def wait(self, pred: Any, timeout: float = 20) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: pred(self), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def status(db: Path, cid: str) -> str | None:
    st = EventStore(db)
    try:
        row = st.db.execute("SELECT status FROM commands WHERE id=?", (cid,)).fetchone()
        return None if row is None else row[0]
    finally:
        st.close()


def wait_status(db: Path, cid: str, want: str, timeout: float = 20) -> str | None:
    deadline = time.monotonic() + timeout
    got = status(db, cid)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.1)
        got = status(db, cid)
    return got


@pytest.mark.e2e
def test_commands_expire_and_times_are_stamped_by_the_simulations_clock(tmp_path: Path) -> None:
    """Ten days behind the wall clock, a permit whose ``exp`` the wall clock
    has long passed is delivered (its virtual hour is not over); ten days
    ahead of it, one the wall clock would still deliver has expired. What the
    gateway stores, its own events and the time it sends are virtual."""
    wall = int(time.time())
    v1, v2 = wall - 10 * DAY, wall + 10 * DAY
    broker = Mosquitto(tmp_path / "broker", ACCOUNTS)
    broker.start()
    cfg = write_gateway_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", PW["gw-o1"])
    writer = ClockWriter(clock_file(cfg), v1)
    gw = GatewayProcess(cfg)
    lk: Locker | None = None
    hh = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hh01", protocol=mqtt.MQTTv311)
    hh.username_pw_set("hh01", PW["hh01"])
    try:
        assert gw.clock_file == str(clock_file(cfg).resolve())
        assert gw.wait_for("gateway_started", timeout=30)["clock"] == "simulated"
        lk = Locker(broker.port)
        # The time the devices get is the simulation's, sent as lk01 comes online.
        assert lk.wait(lambda x: x.times), "no time beacon"
        assert v1 <= lk.times[0] < v1 + 60

        # Virtual now is v1: a permit for the hour from v1 (the wall clock says it
        # expired ten days ago), forwarded by the handheld, reaches the locker.
        hh.connect("127.0.0.1", broker.port)
        hh.loop_start()
        ev = envelope.encode(envelope.make(format_event_id("hh01", "0c0ffee0", 1), v1,
                                           "handheld.forward_command", "custody",
                                           {"kind": "locker", "cmd": permit("p-now", v1, v1 + 3600)}))
        hh.publish(topics.build("o1", "handheld", "hh01", "evt"), ev, qos=1).wait_for_publish(5)
        delivered = lk.wait(lambda x: any(c["id"] == "p-now" for c in x.cmds))
        assert delivered, f"a permit valid by the gateway's clock: {status(tmp_path / 'gateway.db', 'p-now')}"
        assert wait_status(tmp_path / "gateway.db", "p-now", "acked") == "acked"

        # Virtual now is v2: a permit that ran out an hour ago on this clock (the
        # wall clock gives it ten more days) is expired, never delivered.
        writer.set(v2)
        q = Enqueuer(GatewayConfig.load(cfg))
        try:
            q.enqueue("locker", dumps(permit("p-late", v2 - 2 * 3600, v2 - 3600)))
        finally:
            q.close()
        assert wait_status(tmp_path / "gateway.db", "p-late", "expired") == "expired"
        assert not any(c["id"] == "p-late" for c in lk.cmds)

        st = EventStore(tmp_path / "gateway.db")
        try:
            stored = dict(st.db.execute("SELECT type, received_at FROM events").fetchall())
            own = {t: json.loads(p)["ts"] for t, p in st.db.execute(
                "SELECT type, CAST(payload AS TEXT) FROM events WHERE kind = 'gateway'")}
            created = dict(st.db.execute("SELECT id, created FROM commands").fetchall())
        finally:
            st.close()
        # stored at, command queued at, and the gateway's own events' times
        assert v1 <= stored["handheld.forward_command"] < v1 + 60
        assert v1 <= created["p-now"] < v1 + 60
        assert v1 <= own["gateway.command_acked"] < v1 + 60
        assert v2 <= own["gateway.command_expired"] < v2 + 60
        assert v2 <= stored["gateway.command_expired"] < v2 + 60
    finally:
        if lk is not None:
            lk.close()
        hh.disconnect()
        hh.loop_stop()
        gw.stop()
        broker.stop()
        writer.close()


def test_a_gateway_without_its_clock_file_does_not_start(tmp_path: Path) -> None:
    """A virtual run whose gateway silently fell back to the wall clock would
    judge by the wrong time: a named clock file that is not there stops the
    gateway at once, with the variable and the file in the message."""
    cfg = write_gateway_config(tmp_path / "gateway.toml", "o1", 1, "gw-o1", PW["gw-o1"])
    out = subprocess.run([sys.executable, "-m", "postedge.cli", "gateway", "run", "--config", str(cfg)],
                         env={**os.environ, "PYTHONPATH": str(ROOT), ENV: str(tmp_path / "no-clock")},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert ENV in out.stderr and "no-clock" in out.stderr and "cannot open the clock file" in out.stderr
