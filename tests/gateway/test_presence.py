"""Presence that cannot lie: a Will the broker publishes
late for an older connection does not mark a connected device offline, and
any event proves its device is connected. Real Mosquitto, the gateway
process, its SQLite file; the payload codec also on the MicroPython unix port."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.broker import Mosquitto
from gateway.store.events import EventStore
from protocol import envelope, presence, topics
from protocol.errors import BadField
from protocol.ids import format_event_id
from simulator import unixport
from simulator.gateway_process import GatewayProcess, write_config
from tests.conftest import PASSWORDS

INC = "0a1b2c3d"
T1 = presence.tag(INC, 3, 1)
T2 = presence.tag(INC, 3, 2)


@pytest.fixture
def gateway(tmp_path: Path, broker: Mosquitto) -> Iterator[dict]:
    cfg = write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")
    gw = GatewayProcess(cfg)
    gw.wait_for("gateway_started")
    yield {"gw": gw, "db": tmp_path / "gateway.db"}
    gw.stop()


def device_client(broker: Mosquitto, user: str = "lk01", will: str | None = None) -> mqtt.Client:
    """A device's MQTT session; ``will``: its presence topic, whose Last Will
    says offline (set before connecting, as a device does)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user)
    c.username_pw_set(user, PASSWORDS[user])
    if will is not None:
        c.will_set(will, b"offline", qos=1, retain=True)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    return c


def online_of(db: Path, device: str) -> bool | None:
    s = EventStore(db)
    try:
        for d in s.devices():
            if d["device"] == device:
                return bool(d["online"])
        return None
    finally:
        s.close()


def wait_online(db: Path, device: str, want: bool, timeout: float = 10) -> bool | None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = online_of(db, device)
        if got is want:
            return got
        time.sleep(0.1)
    return got


def test_payloads_round_trip_and_junk_is_refused() -> None:
    assert presence.decode(presence.encode(presence.ONLINE, T2)) == (True, T2)
    assert presence.decode(b"offline") == (False, None)
    for bad in (b"", b"on", b"onlinex", b"online ", b"online 1.2", b"online zzzzzzzz.1.2",
                b"online 0a1b2c3d.1.", b"online 0a1b2c3d.1.2 x", b"\xff\xfe", b"online " + b"1" * 80,
                b"offline 0A1B2C3D.1.2", b"online 0a1b2c3d.-1.2"):
        with pytest.raises(BadField):
            presence.decode(bad)


@pytest.mark.mpy
def test_the_codec_runs_on_the_unix_port() -> None:
    script = ("from protocol import presence as P\n"
              "t = P.tag('0a1b2c3d', 3, 2)\n"
              "print(P.encode(P.OFFLINE, t), P.decode(P.encode(P.ONLINE, t)), P.decode(b'offline'))\n"
              "try:\n    P.decode(b'online 1.2')\nexcept Exception as e:\n    print(type(e).__name__)\n")
    r = unixport.run(["-c", script])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["b'offline 0a1b2c3d.3.2' (True, '0a1b2c3d.3.2') (False, None)",
                                        "BadField"]


def test_a_late_will_of_an_older_connection_is_ignored(broker: Mosquitto, gateway: dict) -> None:
    """Connection 2 says online; then the broker publishes connection 1's
    Will. The old gateway took the Will: the locker showed offline for hours
    while it kept sending."""
    t = topics.build("o1", "locker", "lk01", "presence")
    c = device_client(broker)
    try:
        c.publish(t, presence.encode(presence.ONLINE, T2), qos=1, retain=True).wait_for_publish(5)
        assert wait_online(gateway["db"], "lk01", True)
        c.publish(t, presence.encode(presence.OFFLINE, T1), qos=1, retain=True).wait_for_publish(5)
        gateway["gw"].wait_for("presence_stale", timeout=10)
        assert online_of(gateway["db"], "lk01") is True
        # The current connection's own Will is believed.
        c.publish(t, presence.encode(presence.OFFLINE, T2), qos=1, retain=True).wait_for_publish(5)
        assert wait_online(gateway["db"], "lk01", False) is False
    finally:
        c.disconnect()
        c.loop_stop()


def test_an_event_after_offline_proves_the_device_is_connected(broker: Mosquitto, gateway: dict) -> None:
    t = topics.build("o1", "locker", "lk02", "presence")
    c = device_client(broker, "lk02")
    try:
        c.publish(t, b"offline", qos=1, retain=True).wait_for_publish(5)
        assert wait_online(gateway["db"], "lk02", False) is False
        env = envelope.make(format_event_id("lk02", INC, 1), int(time.time()), "locker.audit", "audit",
                            {"note": "still here"}, boot=1)
        evt = topics.build("o1", "locker", "lk02", "evt")
        c.publish(evt, envelope.encode(env), qos=1).wait_for_publish(5)
        assert wait_online(gateway["db"], "lk02", True) is True
        revived = gateway["gw"].wait_for("presence_revived", timeout=10)
        assert revived["device"] == "lk02"
    finally:
        c.disconnect()
        c.loop_stop()


def test_an_event_before_the_will_does_not_revive_the_device(broker: Mosquitto, gateway: dict) -> None:
    """Order is what counts: an event sent before the device vanished and the
    Will after it, even when both land in one group commit, leave it offline."""
    c = device_client(broker, "lk02", will=topics.build("o1", "locker", "lk02", "presence"))
    env = envelope.make(format_event_id("lk02", INC, 7), int(time.time()), "locker.audit", "audit",
                        {"note": "last words"}, boot=1)
    c.publish(topics.build("o1", "locker", "lk02", "evt"), envelope.encode(env), qos=1).wait_for_publish(5)
    sock = c.socket()
    c.loop_stop()
    assert sock is not None  # still connected: the publish above was acknowledged on it
    sock.close()  # vanish without DISCONNECT: the broker publishes the Will
    gateway["gw"].wait_for("committed", timeout=10)
    assert wait_online(gateway["db"], "lk02", False, timeout=20) is False
    time.sleep(1)
    assert online_of(gateway["db"], "lk02") is False
    assert json.dumps(gateway["gw"].lines).count("presence_revived") == 0
