"""The handheld's MQTT link: drains the outbox at QoS 1, receives signed commands, and
deletes each event only when the gateway's confirmation says it is on the gateway's disk.

One paho-mqtt 2.x client with a persistent session (``clean_session=False``, a fixed
client id ``pe-<device>``), so commands the gateway publishes while the courier is out
of Wi-Fi range wait in the broker and arrive on reconnect. The Last Will sets the
retained presence to ``offline``; on every connect the link publishes ``online``
(retained) and re-subscribes to its ``cmd`` and ``conf`` topics.

Presence names the connection (``protocol/presence.py``): every CONNECT
registers the Will ``offline <incarnation>.<boot>.<attempt>`` and the ``online`` that
follows carries the same tag, as the lockers and scanners do. The broker can publish
an old connection's Will long after the handheld reconnected (a half-open socket it
notices late, a broker restart); the gateway keeps the tag of the latest ``online`` and
ignores an ``offline`` naming another connection, so a courier's handheld that is
connected never shows as offline. The Will is set in paho's ``on_pre_connect``, which
runs before each CONNECT (also paho's own reconnects), so no two connections of one
link share a tag; the incarnation and boot are the app's event-id counter's
(``protocol/ids.py``), or a fresh random incarnation when none is given.

Why PUBACK is not enough. A broker's PUBACK means "the broker has it", not "the
gateway committed it": a broker killed before it saved, a gateway session wiped by a
clean-session login under its client id, or a gateway database moved aside all lose
messages the broker had acked. The lockers and scanners (``firmware/sender.py``) keep
their events until the gateway says so; the handheld carries custody events too and
follows the same rules:

- a sender thread publishes outbox records in seq order, at most ``window`` in paho's
  hands at a time, and remembers ``mid -> record seq``;
- an *event* (an ``/evt`` record whose canonical envelope has an id, read with
  ``protocol.confirm.event_key``) stays in the outbox after its PUBACK; it is deleted
  only when a confirmation on ``pe/v1/<outlet>/handheld/<device>/conf``
  (``{"v":1,"stored":{"<incarnation>":[[first,last],...]}}``, parsed with
  ``protocol.canonical``, matched with ``protocol.confirm.contains``) names
  it. At most ``max_awaiting`` events are sent and unconfirmed at once: a gateway that
  is away holds back new sends instead of letting the broker queue everything twice;
- other records (command acks) are deleted on PUBACK, as before: the gateway re-sends
  a command it has no ack for and the handheld answers it again from its replay guard;
- everything unconfirmed is sent again after every new connection (the old session
  may be gone with what it held) and after a confirm timeout that doubles, up to
  ``confirm_timeout_max_s``, while nothing is confirmed, so a gateway that is away
  for hours gets a few copies, not one a minute. The gateway drops copies by event id;
- records paho still holds in flight are not published a second time: paho resends
  them with DUP on reconnect (``_messages_reconnect_reset_out``) and their PUBACK ends
  up where it belongs;
- after an app restart the in-memory state is gone, so the sender starts again at
  the oldest record: everything unconfirmed is resent in order.

Confirmations are QoS 0: a lost one costs a resend, never an event.

A broker that is down is not an error the courier can fix, so it never raises: the
link reports ``connected``/``last_error`` for the status screen and retries with
paho's exponential back-off (1 s to 30 s).
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from common import logs
from handheld.outbox import SqliteOutbox
from protocol import presence, topics
from protocol.canonical import loads_object
from protocol.confirm import (
    CONFIRM_TIMEOUT_MAX_S,
    CONFIRM_TIMEOUT_S,
    MAX_AWAITING,
    contains,
    event_key,
    stored_ranges,
)
from protocol.errors import BadField, MalformedPayload

log = logs.get(__name__)

#: (incarnation, seq) of an event id ``<device>:<incarnation>:<seq>``.
EventKey = tuple[str, int]


class MqttLink:
    """The handheld's one MQTT connection; thread-safe (paho's thread, the sender
    thread and the app's threads all touch it)."""

    def __init__(self, device: str, outlet: str, host: str, port: int, username: str, password: str,
                 outbox: SqliteOutbox, on_command: Callable[[bytes], None], *, keepalive: int = 30,
                 window: int = 16, state_doc: Callable[[], dict[str, Any]] | None = None,
                 confirm: bool = True, confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
                 confirm_timeout_max_s: float = CONFIRM_TIMEOUT_MAX_S, max_awaiting: int = MAX_AWAITING,
                 clock: Callable[[], float] = time.monotonic,
                 ssl_context: ssl.SSLContext | None = None, incarnation: str | None = None,
                 boot: int = 1) -> None:
        """``ssl_context``: MQTT over TLS, trusting the outlet CA alone
        (``handheld/tls.py``); a broker whose certificate does not chain to it,
        or names another host, is refused and reported in ``last_error``.

        ``confirm=False`` falls back to deleting events at their PUBACK (a gateway
        that sends no confirmations would otherwise never let the outbox drain).
        ``clock`` is monotonic on purpose: a wall clock set by GNSS or NTP must not
        fire or starve the resend timer.

        ``incarnation``/``boot`` name this run in the presence tags (the app's
        ``SeqCounter``); without them a random incarnation keeps this run's tags
        apart from every earlier one's."""
        self.device = device
        self.outbox = outbox
        self.on_command = on_command
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.window = window
        self.state_doc = state_doc
        self.confirm = confirm
        self.max_awaiting = max_awaiting
        self.confirm_timeout_max_s = confirm_timeout_max_s
        self._clock = clock
        self.t_presence = topics.build(outlet, "handheld", device, "presence")
        self.t_cmd = topics.build(outlet, "handheld", device, "cmd")
        self.t_conf = topics.build(outlet, "handheld", device, "conf")
        self.t_state = topics.build(outlet, "handheld", device, "state")
        self.connected = False
        if incarnation is None:
            incarnation = os.urandom(4).hex()
        presence.tag(incarnation, boot, 0)  # a bad incarnation fails here, not at CONNECT
        self._incarnation = incarnation
        self._boot = int(boot)
        self._attempts = 0  # CONNECTs sent: the last field of the presence tag
        self._will_tag = presence.tag(incarnation, self._boot, 1)  # the next CONNECT's
        #: The tag of the current connection's "online" and Will.
        self.presence_tag: str | None = None
        #: Set once the broker granted the cmd (and conf) subscription (commands published
        #: before are only kept for us if a persistent session already existed).
        self.subscribed = threading.Event()
        self.last_error: str | None = None
        #: Last time the broker acked or the gateway confirmed something: "last sync".
        self.last_ack_at: float | None = None
        self.last_confirm_at: float | None = None
        self.connected_since: float | None = None
        self.stats = {"published": 0, "acked": 0, "connects": 0, "disconnects": 0, "commands": 0,
                      "confirmed": 0, "confirmations": 0, "confirm_bad": 0, "resends": 0}
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[int, bool]] = {}  # paho mid -> (outbox seq, is an event)
        self._early: set[int] = set()  # PUBACKs that beat publish() returning
        self._other: set[int] = set()  # presence/state mids, not outbox records
        #: Events published on this pass and not yet confirmed: outbox seq -> event key.
        self._awaiting: dict[int, EventKey] = {}
        self._cursor = 0  # highest outbox seq handed to paho on this pass
        self._pass = 0  # bumped by every rewind, so a batch begun before one stops
        self._timeout_base = float(confirm_timeout_s)
        self._timeout = float(confirm_timeout_s)
        self._since: float | None = None  # last send or confirmation while events await one
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pe-{device}", clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(username, password)
        c.on_pre_connect = self._on_pre_connect
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.max_inflight_messages_set(max(window, 20))
        self.tls = ssl_context is not None
        if ssl_context is not None:
            c.tls_set_context(ssl_context)
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
                self.client.publish(self.t_presence, presence.encode(presence.OFFLINE, self.presence_tag),
                                    qos=1, retain=True).wait_for_publish(timeout)
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
        """Records handed to paho and not yet PUBACKed."""
        with self._lock:
            return len(self._inflight)

    @property
    def awaiting(self) -> int:
        """Events sent on this pass that the gateway has not confirmed yet."""
        with self._lock:
            return len(self._awaiting)

    @property
    def confirm_timeout_s(self) -> float:
        """The current resend timeout (doubles while nothing is confirmed)."""
        return self._timeout

    # ------------------------------------------------------------------ paho callbacks
    def _on_pre_connect(self, client: mqtt.Client, userdata: object) -> None:
        """Before every CONNECT (paho's thread): a new tag for the Will it registers."""
        self._attempts += 1
        self._will_tag = presence.tag(self._incarnation, self._boot, self._attempts)
        client.will_set(self.t_presence, presence.encode(presence.OFFLINE, self._will_tag), qos=1,
                        retain=True)

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
        # A new connection: the session that held what we sent may be gone (and the
        # gateway's with it), so whatever is unconfirmed goes again.
        with self._lock:
            self._rewind()
        # "online" names the connection whose Will the broker holds (set just
        # before this CONNECT, in the same paho thread).
        self.presence_tag = self._will_tag
        info = client.publish(self.t_presence, presence.encode(presence.ONLINE, self.presence_tag), qos=1,
                              retain=True)
        with self._lock:
            self._other.add(info.mid)
        # One SUBSCRIBE for both, so ``subscribed`` means both are granted. conf at QoS 0:
        # the gateway publishes it at 0, and a lost one only costs a resend.
        client.subscribe([(self.t_cmd, 1), (self.t_conf, 0)])
        self._publish_state()
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self.last_error = f"cannot reach the broker at {self.host}:{self.port}"
        if self.tls:
            self.last_error += " over TLS (down, or its certificate is not from the outlet CA)"

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
            entry = self._inflight.pop(mid, None)
            if entry is None:
                self._early.add(mid)
                return
        self._acked(*entry)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.t_conf:
            self._on_confirm(bytes(msg.payload))
            return
        if msg.topic != self.t_cmd:
            return
        self.stats["commands"] += 1
        try:
            self.on_command(bytes(msg.payload))
        except Exception:  # noqa: BLE001 - a bad command must never take the link down
            log.exception("command handler failed")
        self._wake.set()

    # ------------------------------------------------------------------ delivery
    def _acked(self, seq: int, is_event: bool) -> None:
        """PUBACK of one outbox record: final for non-events, only "the broker has it"
        for events (they wait for the gateway's confirmation)."""
        self.stats["acked"] += 1
        self.last_ack_at = time.time()
        if not is_event:
            self.outbox.mark_delivered(seq)
        self._wake.set()

    def _on_confirm(self, payload: bytes) -> int:
        """The gateway's confirmation: delete every awaited event it names. Returns how
        many records it released. Events it names that are not awaited (already
        released, or from before a rewind) are simply not there to release."""
        try:
            doc = loads_object(payload, "confirmation")
        except (MalformedPayload, BadField) as e:
            self.stats["confirm_bad"] += 1
            log.warning("bad confirmation: %s", e)
            return 0
        stored = doc.get("stored")
        if not isinstance(stored, dict):
            self.stats["confirm_bad"] += 1
            return 0
        self.stats["confirmations"] += 1
        released: list[int] = []
        with self._lock:
            cache: dict[str, list[list[int]]] = {}
            for seq, (inc, eseq) in list(self._awaiting.items()):
                ranges = cache.get(inc)
                if ranges is None:
                    ranges = cache[inc] = stored_ranges(stored, inc)
                if ranges and contains(ranges, eseq):
                    del self._awaiting[seq]
                    released.append(seq)
            if released:
                # Progress: the gateway is there, so the next wait starts short again.
                self._timeout = self._timeout_base
                self._since = self._clock() if self._awaiting else None
        if released:
            self.outbox.mark_delivered_many(released)
            self.stats["confirmed"] += len(released)
            self.last_confirm_at = self.last_ack_at = time.time()
            self._wake.set()  # the window has room again
        return len(released)

    def _rewind(self) -> None:
        """Send everything unconfirmed again from the oldest record (lock held).

        Records paho still holds in flight are left to paho (it resends them with DUP
        and their PUBACK arrives under their mid); they stay awaited."""
        if self._cursor:
            self.stats["resends"] += 1
        self._cursor = 0
        self._pass += 1
        held = {seq for seq, _ev in self._inflight.values()}
        self._awaiting = {s: k for s, k in self._awaiting.items() if s in held}
        self._since = None

    def _check_timeout(self) -> None:
        """Rewind when nothing was confirmed for the current timeout; double it (capped)."""
        if not self.confirm:
            return
        with self._lock:
            if not self._awaiting:
                self._since = None
                return
            now = self._clock()
            if self._since is None:
                self._since = now
                return
            if now - self._since < self._timeout:
                return
            log.info("no confirmation for %.0f s: resending %d unconfirmed events",
                     self._timeout, len(self._awaiting))
            self._timeout = min(self._timeout * 2, self.confirm_timeout_max_s)
            self._rewind()

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

    def _send_some(self) -> None:
        """Hand the next records after the cursor to paho, within both windows."""
        with self._lock:
            room = self.window - len(self._inflight)
            if self.confirm:
                room = min(room, self.max_awaiting - len(self._awaiting))
            cursor = self._cursor
            this_pass = self._pass
            held = {seq for seq, _ev in self._inflight.values()}
        if room <= 0:
            return
        # Ask for as many more as paho holds: those are skipped, not sent twice.
        for seq, _cls, topic, payload in self.outbox.pending(room + len(held), cursor):
            if room <= 0 or not self.connected or self._stop.is_set():
                break
            with self._lock:
                if self._pass != this_pass:
                    break  # a rewind: start again from the oldest on the next round
                if seq in held:
                    self._cursor = max(self._cursor, seq)
                    continue
            key = event_key(payload) if self.confirm and topic.endswith("/evt") else None
            info = self.client.publish(topic, payload, qos=1)
            self.stats["published"] += 1
            room -= 1
            with self._lock:
                if self._pass == this_pass:
                    self._cursor = max(self._cursor, seq)
                if key is not None:
                    self._awaiting[seq] = key
                    if self._since is None:
                        self._since = self._clock()
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    acked = True
                else:
                    self._inflight[info.mid] = (seq, key is not None)
                    acked = False
            if acked:
                self._acked(seq, key is not None)

    def _run(self) -> None:
        last_state = 0.0
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if not self.connected:
                continue
            self._check_timeout()
            self._send_some()
            now = time.monotonic()
            if now - last_state > 10.0:
                last_state = now
                self._publish_state()
