"""The MQTT carrier: publish a batch at QoS 1 to the central broker and wait
for its ack on the connection's own reply channel."""

from __future__ import annotations

import ssl
import threading
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from common.uplink_codec import Ack, Down, EncodedBatch
from gateway.config import DEFAULT_PREFIX
from gateway.uplink.transport import Transport, TransportError, ack_for, down_of, tls_reason
from protocol import canonical


class MqttTransport(Transport):
    """Batches as QoS 1 messages to a central MQTT broker, acks on a reply topic.

    One connection (clean session, no automatic reconnect: the syncer owns
    retry policy). The ack subscription is confirmed (SUBACK) before the first
    publish, so an ack cannot be published before anyone listens for it. An
    ack that arrives after its wait timed out is kept (bounded), so the
    resend of that same batch id is answered at once without a second upload.
    """

    overhead = 60  # PUBLISH fixed header, topic, packet id; PUBACK

    KEEP_LATE_ACKS = 256

    def __init__(self, url: str, outlet: str, ctx: ssl.SSLContext, timeout_s: float,
                 username: str = "", password: str = "", client_id: str = "",
                 prefix: str = DEFAULT_PREFIX, keepalive: int = 30, channel: int = 0) -> None:
        u = urlsplit(url)
        if u.scheme != "mqtts" or not u.hostname:
            raise ValueError(f"not an mqtts URL: {url!r}")
        self.host = u.hostname
        self.port = u.port or 8883
        self.outlet = outlet
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.username = username
        self.password = password
        self.client_id = client_id or f"pe-gw-{outlet}"
        self.prefix = prefix.rstrip("/")
        self.keepalive = keepalive
        self.channel = channel
        self.client: mqtt.Client | None = None
        self._cond = threading.Condition()
        self._acks: OrderedDict[str, bytes] = OrderedDict()
        self._downs: dict[str, bytes] = {}
        self._pulls = 0
        self._state = "down"  # down | connecting | up | lost
        self._why = ""

    def topic(self, what: str, bid: str = "+") -> str:
        return f"{self.prefix}/{self.outlet}/{what}/{self.channel}/{bid}"

    # paho callbacks (its network thread)
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        with self._cond:
            if rc.is_failure:
                self._state, self._why = "lost", f"connack: {rc}"
            else:
                client.subscribe([(self.topic("ack"), 1), (self.topic("down"), 1)])
            self._cond.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any,
                      props: Any = None) -> None:
        with self._cond:
            if any(rc.is_failure for rc in rcs):
                self._state, self._why = "lost", f"ack subscription refused: {rcs}"
            else:
                self._state = "up"
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        with self._cond:
            self._state, self._why = "lost", f"disconnected: {rc}"
            self._cond.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any,
                    props: Any = None) -> None:
        with self._cond:
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.rsplit("/", 3)  # [..., what, channel, id]
        bid = parts[-1]
        with self._cond:
            if parts[-3] == "down":
                if len(self._downs) < self.KEEP_LATE_ACKS:
                    self._downs[bid] = msg.payload
                self._cond.notify_all()
                return
            self._acks[bid] = msg.payload
            while len(self._acks) > self.KEEP_LATE_ACKS:
                self._acks.popitem(last=False)
            self._cond.notify_all()

    def _wait(self, pred: Any, deadline: float, what: str) -> None:
        with self._cond:
            while not pred():
                if self._state == "lost":
                    raise TransportError("connection", f"{self._why} while {what}")
                if self.cancel is not None and self.cancel.is_set():
                    raise TransportError("stopped", what, unreachable=False)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError("timeout", what, unreachable=False)
                self._cond.wait(min(left, 0.5))

    def _connect(self) -> mqtt.Client:
        if self.client is not None and self._state == "up":
            return self.client
        self.close()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                        protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        c.tls_set_context(self.ctx)
        c.connect_timeout = self.timeout_s
        if self.username:
            c.username_pw_set(self.username, self.password)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        with self._cond:
            self._state, self._why = "connecting", ""
        try:
            c.connect(self.host, self.port, keepalive=self.keepalive)
        except (OSError, ssl.SSLError) as e:
            raise tls_reason(e) from e
        self.client = c
        c.loop_start()
        try:
            self._wait(lambda: self._state == "up", time.monotonic() + self.timeout_s,
                       "waiting for CONNACK and SUBACK")
        except TransportError as e:
            self.close()
            if e.reason == "timeout":
                raise TransportError("timeout", e.detail) from e
            raise
        return c

    def send(self, batch: EncodedBatch) -> Ack:
        c = self._connect()
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            late = self._acks.pop(batch.id, None)
        if late is None:
            info = c.publish(self.topic("batch", batch.id), batch.body, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self.close()
                raise TransportError("connection", f"publish: {mqtt.error_string(info.rc)}")
            self._wait(lambda: info.is_published(), deadline, "waiting for PUBACK")
            self._wait(lambda: batch.id in self._acks, deadline, "waiting for the central ack")
            with self._cond:
                late = self._acks.pop(batch.id)
        return ack_for(late, batch)

    def probe(self) -> None:
        """A connection with CONNACK and SUBACK: reachable, TLS good, credentials good."""
        self._connect()

    def pull(self, after: int) -> Down:
        c = self._connect()
        deadline = time.monotonic() + self.timeout_s
        self._pulls += 1
        # unique across restarts of this id; the wall clock on purpose: a nonce, not a time
        nonce = f"{int(time.time() * 1000):x}{self._pulls:x}"
        with self._cond:
            self._downs.clear()  # answers to pulls that timed out are stale
        info = c.publish(self.topic("pull", nonce), canonical.dumps({"after": after}), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.close()
            raise TransportError("connection", f"publish: {mqtt.error_string(info.rc)}")
        self._wait(lambda: nonce in self._downs, deadline, "waiting for the downlink answer")
        with self._cond:
            data = self._downs.pop(nonce)
        return down_of(data)

    def close(self) -> None:
        c, self.client = self.client, None
        if c is not None:
            try:
                c.disconnect()
            except Exception:  # noqa: BLE001 - closing a broken socket must not raise
                pass
            c.loop_stop()
        with self._cond:
            self._state = "down"
