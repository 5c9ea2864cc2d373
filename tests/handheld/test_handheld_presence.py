"""The courier handheld's presence cannot lie.

The handheld's retained presence and its Last Will name the connection they
belong to (``protocol/presence.py``), like the lockers' and scanners'. A Will
the broker publishes late for an older connection, or a retained "offline"
left over from one, must not mark a handheld that has reconnected since as
offline. The old link published an untagged ``offline`` Will: the gateway had
to believe it and showed a connected handheld as offline.

Real Mosquitto (``broker`` fixture, account ``hh01`` of kind handheld), the real
gateway process and its SQLite store, the handheld's real outbox and link.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.broker import Mosquitto
from gateway.store.events import EventStore
from handheld.link import MqttLink
from handheld.outbox import SqliteOutbox
from protocol import presence, topics
from simulator.gateway_process import GatewayProcess, write_config
from tests.conftest import PASSWORDS
from tests.waiting import within

DEV = "hh01"
T_PRESENCE = topics.build("o1", "handheld", DEV, "presence")


def online_of(db: Path) -> bool | None:
    s = EventStore(db)
    try:
        return next((bool(d["online"]) for d in s.devices() if d["device"] == DEV), None)
    finally:
        s.close()


class Watcher:
    """Every presence payload the broker delivers for the handheld."""

    def __init__(self, port: int) -> None:
        self.seen: list[bytes] = []
        self.cond = threading.Condition()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-watch")
        c.username_pw_set("gw-o1", PASSWORDS["gw-o1"])
        c.on_message = self._on_message
        c.on_connect = lambda cl, *_a: cl.subscribe(T_PRESENCE, 1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.seen.append(bytes(msg.payload))
            self.cond.notify_all()

    def wait(self, pred: Callable[[bytes], bool], timeout: float = 20.0) -> bytes | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hit = next((p for p in self.seen if pred(p)), None)
                left = deadline - time.monotonic()
                if hit is not None or left <= 0:
                    return hit
                self.cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateway(tmp_path: Path, broker: Mosquitto) -> Iterator[dict]:
    gw = GatewayProcess(write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret"))
    gw.wait_for("gateway_started")
    yield {"gw": gw, "db": tmp_path / "gateway.db"}
    gw.stop()


def replay(port: int, payload: bytes) -> None:
    """The broker delivering a message now: what a late Will looks like to the gateway."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-late-will")
    c.username_pw_set(DEV, PASSWORDS[DEV])
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(T_PRESENCE, payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_a_late_will_of_the_handhelds_old_connection_leaves_it_online(
        tmp_path: Path, broker: Mosquitto, gateway: dict) -> None:
    """The courier's Wi-Fi drops (no DISCONNECT): the broker publishes the
    connection's Will, paho reconnects and says online. Then that old Will
    reaches the gateway again, late (a broker restart, a half-open socket
    noticed after the reconnect): the gateway keeps the handheld online."""
    db = gateway["db"]
    watch = Watcher(broker.port)
    outbox = SqliteOutbox(tmp_path / "outbox.db")
    link = MqttLink(DEV, "o1", "127.0.0.1", broker.port, DEV, PASSWORDS[DEV], outbox, lambda b: None,
                    keepalive=5)
    link.start()
    try:
        assert link.subscribed.wait(10), link.last_error
        first = watch.wait(lambda p: p.startswith(b"online"))
        assert first is not None
        assert presence.decode(first)[1] is not None, first  # the connection is named
        assert within(lambda: online_of(db) is True)

        connects = link.stats["connects"]
        sock = link.client.socket()
        assert sock is not None
        sock.shutdown(2)  # not a clean DISCONNECT: the broker publishes the Will
        will = watch.wait(lambda p: p.startswith(b"offline"))
        assert will is not None
        assert within(lambda: link.stats["connects"] > connects), link.last_error
        second = watch.wait(lambda p: p.startswith(b"online") and p != first)
        assert second is not None, watch.seen
        assert presence.decode(will)[1] == presence.decode(first)[1]  # the Will names its connection
        assert within(lambda: online_of(db) is True)

        replay(broker.port, will)  # the old connection's Will, late
        gateway["gw"].wait_for("presence_stale", timeout=10)
        time.sleep(0.5)
        assert online_of(db) is True

        # The current connection's own goodbye is believed.
        link.stop()
        assert within(lambda: online_of(db) is False)
        bye = watch.wait(lambda p: p.startswith(b"offline") and p != will)
        assert bye is not None and presence.decode(bye)[1] == presence.decode(second)[1]
    finally:
        link.stop()
        outbox.close()
        watch.close()
