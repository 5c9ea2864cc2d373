"""The handheld's MQTT link: drains the outbox at QoS 1, receives signed commands.

One paho-mqtt 2.x client with a persistent session (``clean_session=False``, a fixed
client id ``pe-<device>``), so commands the gateway publishes while the courier is out
of Wi-Fi range wait in the broker and arrive on reconnect. The Last Will sets the
retained presence to ``offline``; on every connect the link publishes ``online``
(retained) and re-subscribes to its ``cmd`` topic.

Delivery. The outbox is the source of truth, not paho's in-memory queue:

- a sender thread publishes outbox records in seq order, a window of ``window``
  at a time, and remembers ``mid -> seq``;
- on PUBACK (``on_publish``) the record is deleted from the outbox - never before;
- while the link is down paho keeps the in-flight messages and resends them with
  DUP on reconnect (``_messages_reconnect_reset_out``); records not yet handed to
  paho wait in the outbox;
- after an app restart the in-memory state is gone, so the sender starts again at
  the oldest record: everything unacked is resent in order. The gateway drops the
  duplicates a crash between PUBACK and delete can cause, by event id.

A broker that is down is not an error the courier can fix, so it never raises: the
link reports ``connected``/``last_error`` for the status screen and retries with
paho's exponential back-off (1 s to 30 s).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from firmware.protocol import topics
from handheld.outbox import Outbox

log = logging.getLogger(__name__)


class MqttLink:
    def __init__(self, device: str, outlet: str, host: str, port: int, username: str, password: str,
                 outbox: Outbox, on_command: Callable[[bytes], None], *, keepalive: int = 30,
                 window: int = 16, state_doc: Callable[[], dict[str, Any]] | None = None) -> None:
        self.device = device
        self.outbox = outbox
        self.on_command = on_command
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.window = window
        self.state_doc = state_doc
        self.t_presence = topics.build(outlet, "handheld", device, "presence")
        self.t_cmd = topics.build(outlet, "handheld", device, "cmd")
        self.t_state = topics.build(outlet, "handheld", device, "state")
        self.connected = False
        #: Set once the broker granted the cmd subscription (commands published before are
        #: only kept for us if a persistent session already existed).
        self.subscribed = threading.Event()
        self.last_error: str | None = None
        self.last_ack_at: float | None = None
        self.connected_since: float | None = None
        self.stats = {"published": 0, "acked": 0, "connects": 0, "disconnects": 0, "commands": 0}
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._early: set[int] = set()  # PUBACKs that beat publish() returning
        self._other: set[int] = set()  # presence/state mids, not outbox records
        self._cursor = 0  # highest seq handed to paho
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pe-{device}", clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(username, password)
        c.will_set(self.t_presence, b"offline", qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.max_inflight_messages_set(max(window, 20))
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_connect_fail = self._on_connect_fail
        c.on_subscribe = lambda *a: self.subscribed.set()
        self.client = c

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._stop.clear()
        self.client.connect_async(self.host, self.port, self.keepalive)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="hh-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Say ``offline`` (a clean DISCONNECT does not fire the Will) and close."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.connected:
            try:
                self.client.publish(self.t_presence, b"offline", qos=1, retain=True).wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self.connected = False

    def wake(self) -> None:
        """A record was appended: send it now rather than at the next poll."""
        self._wake.set()

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if getattr(rc, "is_failure", False):
            self.last_error = f"broker refused the connection: {rc}"
            log.warning("mqtt connect refused: %s", rc)
            return
        self.connected = True
        self.connected_since = time.time()
        self.last_error = None
        self.stats["connects"] += 1
        info = client.publish(self.t_presence, b"online", qos=1, retain=True)
        with self._lock:
            self._other.add(info.mid)
        client.subscribe(self.t_cmd, qos=1)
        self._publish_state()
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self.last_error = f"cannot reach the broker at {self.host}:{self.port}"

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: Any, rc: Any,
                       props: Any = None) -> None:
        if self.connected:
            self.stats["disconnects"] += 1
        self.connected = False
        self.connected_since = None
        self.subscribed.clear()
        if not self._stop.is_set():
            self.last_error = f"disconnected from the broker ({rc})"

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: Any = None,
                    props: Any = None) -> None:
        with self._lock:
            if mid in self._other:
                self._other.discard(mid)
                return
            seq = self._inflight.pop(mid, None)
            if seq is None:
                self._early.add(mid)
                return
        self._delivered(seq)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != self.t_cmd:
            return
        self.stats["commands"] += 1
        try:
            self.on_command(bytes(msg.payload))
        except Exception:  # noqa: BLE001 - a bad command must never take the link down
            log.exception("command handler failed")
        self._wake.set()

    def _delivered(self, seq: int) -> None:
        self.outbox.mark_delivered(seq)
        self.stats["acked"] += 1
        self.last_ack_at = time.time()
        self._wake.set()

    # ------------------------------------------------------------------ sender
    def _publish_state(self) -> None:
        if self.state_doc is None:
            return
        try:
            doc = json.dumps(self.state_doc(), separators=(",", ":")).encode()
        except Exception:  # noqa: BLE001 - a state doc is a nicety, never a reason to stop
            log.exception("state doc failed")
            return
        info = self.client.publish(self.t_state, doc, qos=1, retain=True)
        with self._lock:
            self._other.add(info.mid)

    def _run(self) -> None:
        last_state = 0.0
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if not self.connected:
                continue
            with self._lock:
                room = self.window - len(self._inflight)
                cursor = self._cursor
            if room > 0:
                for seq, _cls, topic, payload in self.outbox.pending(room, cursor):
                    if not self.connected or self._stop.is_set():
                        break
                    info = self.client.publish(topic, payload, qos=1)
                    self.stats["published"] += 1
                    with self._lock:
                        self._cursor = seq
                        if info.mid in self._early:
                            self._early.discard(info.mid)
                            acked = True
                        else:
                            self._inflight[info.mid] = seq
                            acked = False
                    if acked:
                        self._delivered(seq)
            now = time.monotonic()
            if now - last_state > 10.0:
                last_state = now
                self._publish_state()
