"""Shared by the handheld tests: a real Mosquitto with a handheld account (the root
conftest's broker has none) and a paho client playing the gateway."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.broker import Account, Mosquitto
from protocol import canonical, envelope, topics

OUTLET = "o1"
DEV = "hh01"


class Gateway:
    """A paho client on the gateway account: records the handheld's topics, publishes commands."""

    def __init__(self, port: int) -> None:
        self.msgs: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-test", protocol=mqtt.MQTTv311)
        c.username_pw_set("gw-o1", "gw-secret")
        ready = threading.Event()
        c.on_connect = lambda *a: (c.subscribe(f"pe/v1/{OUTLET}/handheld/#", qos=1), ready.set())
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert ready.wait(10)
        time.sleep(0.2)
        self.c = c

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.msgs.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()
        if msg.topic.endswith("/evt"):
            # Confirm it as the real gateway does after its commit (gateway/ingest.py): the
            # handheld deletes an event only when the gateway's confirmation names it.
            _dev, inc, seq = envelope.decode(bytes(msg.payload))["id"].split(":")
            client.publish(msg.topic[: -len("evt")] + "conf",
                           canonical.dumps({"v": 1, "stored": {inc: [[int(seq), int(seq)]]}}), qos=0)

    def events(self) -> list[dict[str, Any]]:
        with self.cond:
            return [envelope.decode(p) for t, p in self.msgs if t.endswith("/evt")]

    def acks(self) -> list[dict[str, Any]]:
        with self.cond:
            return [json.loads(p) for t, p in self.msgs if t.endswith("/ack")]

    def wait(self, pred: Any, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return bool(pred())

    def command(self, cmd: dict[str, Any] | bytes) -> None:
        payload = cmd if isinstance(cmd, bytes) else canonical.dumps(cmd)
        self.c.publish(topics.build(OUTLET, "handheld", DEV, "cmd"), payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


ACCOUNTS = [Account("gw-o1", "gw-secret", OUTLET, "gateway"), Account(DEV, "hh01-pw", OUTLET, "handheld")]


@pytest.fixture
def hbroker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker", ACCOUNTS)
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
def gw(hbroker: Mosquitto) -> Iterator[Gateway]:
    g = Gateway(hbroker.port)
    try:
        yield g
    finally:
        g.close()
