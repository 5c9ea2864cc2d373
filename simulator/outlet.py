"""Pieces of a simulated outlet that the demo, tests and benchmarks share:
the locker's config, a person who shuts doors, the platform sending signed
commands through the broker, and reading what the gateway stored."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from gateway.store.events import EventStore
from protocol import envelope, keys, signing, topics
from simulator.platform_keys import PlatformKeys

SIZES = ["S"] * 8 + ["M"] * 8 + ["L"] * 6 + ["XL"] * 2


def compartments(board: int = 1, n: int = 24) -> list[dict[str, Any]]:
    """A common 24-door layout: 8 S, 8 M, 6 L, 2 XL."""
    return [{"id": i, "size": SIZES[(i - 1) % len(SIZES)], "board": board, "lock": i}
            for i in range(1, n + 1)]


def key_section(key: bytes | dict[str, Any]) -> dict[str, Any]:
    """A device config's ``key``: a key section as is, or raw key bytes as version 1."""
    return key if isinstance(key, dict) else keys.config(1, key)


def locker_config(device: str, outlet: str, broker_port: int, password: str, board_url: str,
                  state_dir: Path, key: bytes | dict[str, Any], panel_url: str | None = None,
                  **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "device": device, "outlet": outlet,
        "broker": {"host": "127.0.0.1", "port": broker_port, "user": device, "password": password,
                   "timeout": 2},
        "board": {"driver": "8a", "uart": board_url},
        "compartments": compartments(), "key": key_section(key),
        "state_dir": str(state_dir), "poll_ms": 100,
    }
    if panel_url:
        cfg["panel"] = panel_url
    cfg.update(extra)
    return cfg


def counter_config(device: str, outlet: str, broker_port: int, password: str, engine_url: str,
                   state_dir: Path, key: bytes | dict[str, Any], family: str = "gm65",
                   **extra: Any) -> dict[str, Any]:
    """A counter scanner's config (firmware/counter/config.py) for a simulated engine."""
    cfg: dict[str, Any] = {
        "device": device, "outlet": outlet,
        "broker": {"host": "127.0.0.1", "port": broker_port, "user": device, "password": password,
                   "timeout": 2},
        "scanner": {"family": family, "uart": engine_url, "suffix": "cr", "idle_ms": 50},
        "key": key_section(key), "state_dir": str(state_dir),
    }
    cfg.update(extra)
    return cfg


class DoorCloser:
    """A person at the locker: shuts any door that has been open a moment."""

    def __init__(self, bus: Any, board: int = 1, locks: int = 24, after_s: float = 0.3) -> None:
        self.bus = bus
        self.board = board
        self.locks = locks
        self.after_s = after_s
        self.closed: list[int] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for ch in range(1, self.locks + 1):
                if self.bus.is_open(self.board, ch):
                    time.sleep(self.after_s)
                    self.bus.close_door(self.board, ch)
                    self.closed.append(ch)
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(2)


class Platform:
    """The central side as a locker sees it: signed commands arriving through
    the outlet broker (the gateway's account), acks read back."""

    def __init__(self, broker_port: int, outlet: str, username: str, password: str,
                 key: bytes | PlatformKeys, kv: int = 1) -> None:
        self.outlet = outlet
        # One device's key (bytes) or the platform's keys (each device its own).
        self.key = key
        self.kv = kv
        self.acks: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"platform-{outlet}")
        self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker_port)
        self.client.subscribe(topics.subscription(outlet, "ack"), qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            a = json.loads(msg.payload)
        except ValueError:
            return
        with self._cond:
            self.acks[a.get("id", "?")] = a
            self._cond.notify_all()

    def command(self, device: str, op: str, args: dict[str, Any], cmd_id: str,
                lifetime_s: int = 600) -> bytes:
        now = int(time.time())
        cmd = {"id": cmd_id, "dev": device, "op": op, "args": args, "iat": now, "exp": now + lifetime_s}
        if isinstance(self.key, PlatformKeys):
            return signing.encode(self.key.sign(cmd, self.kv))
        return signing.encode(signing.sign(cmd, self.key, kv=self.kv))

    def send(self, device: str, payload: bytes, cmd_id: str, kind: str = "locker",
             timeout: float = 30) -> dict[str, Any]:
        """Publish until the device acks ``cmd_id`` (it may not have
        subscribed yet); return the ack."""
        topic = topics.build(self.outlet, kind, device, "cmd")
        deadline = time.monotonic() + timeout
        with self._cond:
            while cmd_id not in self.acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{device} never acked {cmd_id}")
                self.client.publish(topic, payload, qos=1)
                self._cond.wait(min(2.0, left))
            return self.acks[cmd_id]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stored_events(db: Path) -> list[dict[str, Any]]:
    """Every event in a gateway database, decoded, in arrival order."""
    if not db.exists():
        return []
    s = EventStore(db)
    try:
        return [envelope.decode(r["payload"]) for r in s.events()]
    finally:
        s.close()


def wait_event(db: Path, etype: str, timeout: float = 30, after: int = 0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in stored_events(db)[after:]:
            if e["type"] == etype:
                return e
        time.sleep(0.2)
    raise TimeoutError(f"{etype} never reached the gateway")
