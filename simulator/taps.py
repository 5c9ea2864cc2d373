"""Where the simulator watches events go by: the ledger's first two hops.

The ``device`` hop is recorded as an event enters a device's flash outbox
(the in-process firmware and the handhelds call :meth:`DeviceTap.emitted`; a
unix-port locker logs its events and the outlet hands them to
:meth:`DeviceTap.logged`); the ``broker`` hop by :class:`BrokerTap`, a
persistent QoS 1 subscriber on the outlet broker that also follows the
devices' presence and retained state. What the taps see, with real times,
is kept in :class:`Observed` for the latency figures, the pickup codes the
workload needs (opened as the platform opens them) and the live dashboard.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from common import clock
from protocol import envelope, presence, topics
from protocol.errors import ProtocolError
from simulator.ledger import Ledger


@dataclass
class Observed:
    """What the taps saw, with real times, for the ledger and latency."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    emitted: dict[str, float] = field(default_factory=dict)
    broker_seen: dict[str, float] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # device-side copy, by id
    codes: dict[str, str] = field(default_factory=dict)  # parcel -> pickup code
    online: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    alarms: list[dict[str, Any]] = field(default_factory=list)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)  # retained state documents


class BrokerTap:
    """A persistent QoS 1 subscriber on the outlet broker: the ledger's
    ``broker`` hop and the devices' presence."""

    def __init__(
        self, port: int, outlet: str, ledger: Ledger, obs: Observed, vt: Callable[[], float],
        devices: list[str] | None = None,
    ) -> None:
        """``devices``: subscribe to these devices' topics only, not every
        device's: a hostile login's flood (``simulator/hostile.py``) would
        otherwise fill this session's queue at the broker, which then drops
        the well-behaved devices' messages for it too, and the ledger would
        blame the broker hop for what only the observer missed."""
        self.ledger = ledger
        self.obs = obs
        self.vt = vt
        self.presence_tags: dict[str, str | None] = {}  # the connection each device's "online" named
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="sim-tap", clean_session=False, protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set("sim-tap", "sim-tap-pw")
        chans = ("evt", "presence", "state")
        subs = [(topics.subscription(outlet, ch), 1) for ch in chans] if devices is None \
            else [(topics.subscription(outlet, ch, device=d), 1) for d in devices for ch in chans]
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(subs)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = clock.now()  # the scenario's clock in a virtual run (common/clock.py), as the gateway's
        if msg.topic.endswith("/state"):
            # What a device process says about itself (a unix-port locker's compartments).
            try:
                doc = json.loads(msg.payload)
            except ValueError:
                return
            with self.obs.lock:
                self.obs.states[msg.topic.split("/")[4]] = doc
            return
        if msg.topic.endswith("/presence"):
            dev = msg.topic.split("/")[4]
            try:
                online, tag = presence.decode(msg.payload)
            except ProtocolError:
                return
            with self.obs.lock:
                spans = self.obs.online[dev]
                known = self.presence_tags.get(dev)
                if online:
                    self.presence_tags[dev] = tag
                    if not spans or spans[-1][1] is not None:
                        spans.append([self.vt(), None])
                elif tag is not None and known is not None and tag != known:
                    pass  # a late Will of an older connection (protocol/presence.py)
                elif spans and spans[-1][1] is None:
                    spans[-1][1] = self.vt()
            return
        try:
            # as the gateway checks it: an event whose id names another
            # device than the topic's login is a forgery, not that device's event
            env, _ = envelope.decode_event(msg.payload, device=msg.topic.split("/")[4])
        except Exception:  # noqa: BLE001 - counted by the ledger as never arriving
            return
        self.ledger.record("broker", env["id"], now)
        with self.obs.lock:
            self.obs.broker_seen.setdefault(env["id"], now)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()



class DeviceTap:
    """The ledger's ``device`` hop: every event as it enters a device's outbox."""

    def __init__(self, ledger: Ledger, obs: Observed, vt: Callable[[], float], start: int,
                 open_code: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.ledger = ledger
        self.obs = obs
        self.vt = vt
        self.start = start
        # The platform's side: a code a locker issued offline arrives sealed
        # (protocol/seal.py), and the workload plays the recipient who got it.
        self.open_code = open_code

    def emitted(self, device: str, topic: str, payload: bytes) -> None:
        """An envelope a device queued (the in-process firmware's and the handhelds' tap)."""
        now = clock.now()  # the scenario's clock in a virtual run (common/clock.py), as the gateway's
        try:
            env = envelope.decode(payload)
        except Exception:  # noqa: BLE001
            return
        self._record(device, env, now)

    def logged(self, device: str, d: dict[str, Any]) -> dict[str, Any]:
        """An event a unix-port locker logged as it entered its outbox; returned as an envelope."""
        now = clock.now()  # the scenario's clock in a virtual run (common/clock.py), as the gateway's
        env = {
            "id": d["id"],
            "type": d["type"],
            "cls": d["cls"],
            "body": d.get("body") or {},
            "ts": int(self.start + self.vt()),
        }
        self._record(device, env, now)
        return env

    def _record(self, device: str, env: dict[str, Any], now: float) -> None:
        self.ledger.record("device", env["id"], now)
        b = env["body"]
        with self.obs.lock:
            self.obs.emitted[env["id"]] = now
            self.obs.events[env["id"]] = env
            if env["type"] == "locker.deposit" and "code_sealed" in b and self.open_code is not None:
                try:
                    self.obs.codes[b["parcel"]] = self.open_code(env)
                except ProtocolError:
                    pass  # a box that does not open: that recipient never hears of the code
            elif env["type"].endswith(".alarm"):
                self.obs.alarms.append({"t": self.vt(), "device": device, **b})
