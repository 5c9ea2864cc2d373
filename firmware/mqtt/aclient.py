# The firmware's MQTT 3.1.1 client on asyncio (MicroPython and CPython).
#
# Why not an existing client: micropython-lib's umqtt.robust hangs when the
# broker restarts mid-publish (micropython-lib#102), writes each packet in
# several small writes that meet Nagle's delay (about 22 msg/s here), and is
# not installable from the registries this project can reach; mqtt_as keeps
# no outbox, so a power cut loses whatever it had not sent. This client:
#
# - puts a deadline on every socket operation (connect, each read, each
#   write): a silent or restarting broker makes a call fail, never hang;
# - writes each packet in one write;
# - connects with a persistent session (clean=False) and a retained Last Will,
#   pings on the keepalive, and treats a missing PINGRESP as a dead link;
# - tracks QoS 1 publishes by packet id with a bounded in-flight window, and
#   after a reconnect resends every unacked one with the same packet id and
#   DUP set, then restores the subscriptions;
# - leaves durability to the outbox (firmware/outbox.py): publish() returns
#   when the broker has acked, and only then may the caller mark a record
#   delivered.
#
# Backoff. Every reconnect, after a failed connect and after a lost
# connection alike, waits a full-jitter delay: uniform in [0, ceiling] with
# ceiling = backoff_min * 2**failures, capped at backoff_cap (20 ms floor).
# `failures` counts connections in a row that did not prove healthy, and
# only a healthy connection sets it back to zero: one on which a PUBACK,
# SUBACK or PINGRESP arrived, or that stayed up for a keepalive period. A
# broker that accepts the CONNECT and then closes the connection (Mosquitto
# does so for a packet over max_packet_size, a malformed topic, a client id
# taken over by a twin) therefore meets a growing backoff; the old loop
# reconnected at once: over 10,000 connections in 6 s in the tests. One case
# needs more than "an ack arrived": when the restored subscription's SUBACK
# comes back and the broker then closes on the resent publish behind it,
# the connection died with publishes it carried still unacked before a
# keepalive period: that counts as a failure on top of the streak the ack
# had cleared, so a poisoned session cannot keep the backoff at zero.
#
# Bad arguments never reach the broker. publish() and subscribe() check
# topic (empty, wildcards in a publish topic, NUL and control characters,
# not UTF-8, over 65535 bytes), payload (bytes, at most max_payload) and
# QoS first and raise PacketError (an MQTTError) without sending anything
# or taking a packet id: a bad publish would otherwise be resent by the
# session after every reconnect and close every connection.
#
# A publish the broker keeps refusing. Serious clients split here: paho and
# Peter Hinch's mqtt_as keep an unacked QoS 1 message and resend it on
# every reconnect for as long as the client lives (paho lets the caller
# stop waiting with wait_for_publish(timeout)); umqtt.robust retries the
# publish in a loop. Resending for ever is right for a dead link, and this
# client does too: with the broker unreachable, publish() waits (with
# backoff) until it is back. It is wrong for a message the broker itself
# refuses, which then blocks the session and everything queued behind it.
# So a publish whose connection closed before its PUBACK max_refusals times
# (default 5: seconds with the device's 1 s backoff cap, and no flapping
# link is that unlucky) is taken out of the session and publish() raises
# PublishRefused. Only connections that got as far as CONNACK and carried
# the message count, so a broker that is down never causes it. Nothing is
# lost: the record stays in the outbox, which may retry it later or set it
# aside. publish(timeout=...) bounds one call the way paho's
# wait_for_publish does: PublishTimeout, and the message leaves the session.
#
# A message too big to hold. The client reads packets of at most
# P.MAX_PACKET (64 KiB, the outlet broker's max_packet_size). A PUBLISH over
# it (a retained document someone published through a broker with a larger
# limit) used to drop the connection; the broker sent it again on the next
# SUBSCRIBE, so the client reconnected for ever. Now its fixed and variable
# header are read, the rest is skipped off the stream in small reads (never
# held), a QoS 1 one is acked so the session does not keep redelivering it,
# and stats["oversized"] counts it (log event mqtt_oversized, with its
# topic). Any other packet type that big is a broken stream: disconnect.
#
# TLS. With ssl= an SSLContext (firmware/mqtt/tls.py
# client_context: the outlet CA, CERT_REQUIRED) the client connects over TLS
# and verifies the server's certificate and host name (server_hostname,
# default host). MicroPython's asyncio does the handshake on the first write
# or read, CPython's in open_connection; either way a failed handshake (a
# certificate from another CA, a wrong name) is a failed connect: counted,
# logged with mbedTLS's reason, and retried after the backoff.

import asyncio
import os
import struct
import time

from firmware.mqtt import packets as P
from firmware.mqtt.packets import MQTTError, PacketError  # noqa: F401 (the client's errors)

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


# Most bytes one read takes off the stream: a few packets (PUBACKs are 4
# bytes, commands at most 2 KiB); bigger bodies are read whole (readexactly).
READ_CHUNK = 512
# Bytes per read while skipping an oversized PUBLISH (see "too big to hold").
SKIP_CHUNK = 2048


class PublishRefused(MQTTError):
    """The broker closed max_refusals connections in a row that carried this
    publish, before acking it: it was taken out of the session."""


class PublishTimeout(MQTTError):
    """publish(timeout=...) ran out before the broker acked."""


def _jitter(cap_s):
    r = os.urandom(2)
    return cap_s * ((r[0] << 8) | r[1]) / 65536


class _Inflight:
    def __init__(self, packet):
        self.packet = packet
        self.done = asyncio.Event()
        self.sent = False
        self.conn = 0  # the connection it was last written on
        self.refusals = 0  # connections that carried it and closed before its PUBACK
        self.error = None  # set when it is given up: publish() raises it


class AsyncClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=30, timeout=5.0, clean=False, will_topic=None,
                 will_msg=b"offline", max_inflight=16, backoff_min=0.1,
                 backoff_cap=1.0, on_message=None, log=None, ack_timeout=10.0,
                 max_payload=P.MAX_PAYLOAD, max_refusals=5, ssl=None, server_hostname=None):
        # Checked now: a bad Will would make the broker refuse every CONNECT.
        # will_msg may be a function called at each CONNECT: a Will that names
        # its own connection (protocol/presence.py).
        if will_topic is not None:
            P.check_topic(will_topic)
            if not callable(will_msg):
                will_msg = P.check_payload(will_msg, 65535)
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.timeout = timeout
        self.clean = clean
        self.will_topic = will_topic
        self.will_msg = will_msg
        self.max_inflight = max_inflight
        self.backoff_min = backoff_min
        self.backoff_cap = backoff_cap
        self.on_message = on_message
        self.ack_timeout = ack_timeout
        self.max_payload = max_payload
        self.max_refusals = max_refusals
        self.ssl = ssl
        self.server_hostname = (server_hostname or host) if ssl is not None else None
        # Connections in a row that did not prove healthy: the backoff's exponent.
        self.failures = 0
        self._saved_failures = 0  # the streak a proof cleared (see _judge)
        self._proved = False  # the current connection got a PUBACK/SUBACK/PINGRESP
        self._conn = 0  # number of the current connection
        self.log = log or (lambda *a, **k: None)
        self.connected = asyncio.Event()
        self._reader = None
        self._writer = None
        self._rbuf = b""  # received, not yet parsed (see _read_exactly)
        self._pid = 0
        self._inflight = {}
        self._window = asyncio.Event()
        self._window.set()
        self._subs = {}
        self._suback = {}
        self._pingresp = None
        self._last_rx = 0
        self._last_tx = 0
        self._running = False
        self._write_lock = asyncio.Lock()
        self._closed_ev = asyncio.Event()
        self.stats = {"connects": 0, "connect_failures": 0, "disconnects": 0, "published": 0,
                      "resent": 0, "received": 0, "pings": 0, "bad_packets": 0, "ack_timeouts": 0,
                      "refused": 0, "publish_timeouts": 0, "oversized": 0}

    # ---- low level, every step with a deadline
    def _next_pid(self):
        while True:
            self._pid = self._pid % 65535 + 1
            if self._pid not in self._inflight:
                return self._pid

    async def _write(self, data):
        w = self._writer
        if w is None:
            raise MQTTError("not connected")
        async with self._write_lock:
            try:
                w.write(data)
                await asyncio.wait_for(w.drain(), self.timeout)
            except asyncio.TimeoutError:
                raise MQTTError("write timed out")
            except OSError as e:
                raise MQTTError("write failed: %s" % e)
            except ValueError as e:  # MicroPython's mbedTLS: handshake refused
                raise MQTTError("tls: %s" % str(e).strip())
        self._last_tx = time.time()

    async def _read_exactly(self, n, timeout):
        # Reads whatever has arrived (up to READ_CHUNK) into a buffer and
        # cuts packets from it: one wait per burst instead of one per header
        # byte. It matters over TLS on MicroPython, where each wait on the TLS
        # stream is polled with 1 ms sleeps: byte-wise reads cost about 1 ms
        # a byte there (126 QoS 1 msg/s with a window of 1, measured).
        # The buffer belongs to this connection: a read still waiting on an
        # old connection when the client reconnects must not leave its bytes
        # in the new connection's buffer.
        reader = self._reader
        buf = self._rbuf
        try:
            while len(buf) < n:
                if n - len(buf) > READ_CHUNK:  # a big body: the rest at once
                    data = await asyncio.wait_for(reader.readexactly(n - len(buf)), timeout)
                else:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
                if not data:
                    raise MQTTError("connection closed by broker")
                buf = buf + data if buf else data
        except asyncio.TimeoutError:
            if self._reader is reader:
                self._rbuf = buf
            raise MQTTError("read timed out")
        except (OSError, EOFError) as e:
            raise MQTTError("connection lost: %r" % (e,))
        except ValueError as e:  # MicroPython's mbedTLS: handshake refused
            raise MQTTError("tls: %s" % str(e).strip())
        except MQTTError:
            raise
        except Exception as e:  # CPython's IncompleteReadError
            raise MQTTError("connection lost: %r" % (e,))
        if self._reader is not reader:
            raise MQTTError("connection replaced")
        if len(buf) == n:
            self._rbuf = b""
            return buf
        self._rbuf = buf[n:]
        return buf[:n]

    async def _read_packet(self, timeout):
        first = (await self._read_exactly(1, timeout))[0]
        n = 0
        shift = 0
        for _ in range(4):
            b = (await self._read_exactly(1, self.timeout))[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        else:
            raise MQTTError("bad remaining length")
        if n > P.MAX_PACKET:
            if first & 0xF0 != P.PUBLISH:
                raise MQTTError("packet of %d bytes is too large" % n)
            await self._skip_publish(first, n)
            self._last_rx = time.time()
            return first, None
        body = await self._read_exactly(n, self.timeout) if n else b""
        self._last_rx = time.time()
        return first, body

    async def _skip_publish(self, first, n):
        # A PUBLISH of n > MAX_PACKET bytes: read its topic and packet id,
        # skip the rest without holding it, ack it at QoS 1 (see "too big to
        # hold" above). Returns once its last byte is off the stream.
        qos = (first >> 1) & 3
        if qos == 3:
            raise MQTTError("PUBLISH with QoS 3")
        tlen = struct.unpack("!H", await self._read_exactly(2, self.timeout))[0]
        used = 2 + tlen + (2 if qos else 0)
        if used > n:
            raise MQTTError("PUBLISH topic runs past the packet")
        topic = None
        if tlen <= 256:  # named in the log; a longer one is skipped unread
            try:
                topic = (await self._read_exactly(tlen, self.timeout)).decode("utf-8")
            except UnicodeError:
                topic = None
        else:
            await self._skip(tlen)
        pid = 0
        if qos:
            pid = struct.unpack("!H", await self._read_exactly(2, self.timeout))[0]
        await self._skip(n - used)
        self.stats["oversized"] += 1
        self.log("mqtt_oversized", topic=topic, size=n, limit=P.MAX_PACKET, qos=qos,
                 retain=bool(first & 1))
        if qos and pid:
            await self._write(P.puback(pid))

    async def _skip(self, n):
        while n > 0:
            k = n if n < SKIP_CHUNK else SKIP_CHUNK
            await self._read_exactly(k, self.timeout)
            n -= k

    # ---- connection
    async def _open(self):
        try:
            if self.ssl is None:
                conn = asyncio.open_connection(self.host, self.port)
            else:
                # Imported only by a TLS client: a plain one (128 KiB heap
                # publishers) does not pay for ssl's code.
                from firmware.mqtt.tls import open_connection as tls_open

                conn = tls_open(self.host, self.port, self.ssl, self.server_hostname)
            r, w = await asyncio.wait_for(conn, self.timeout)
        except asyncio.TimeoutError:
            raise MQTTError("connect to %s:%d timed out" % (self.host, self.port))
        except OSError as e:  # CPython's ssl.SSLError and certificate errors too
            raise MQTTError("cannot reach broker %s:%d: %s" % (self.host, self.port, e))
        except ValueError as e:  # MicroPython's mbedTLS
            raise MQTTError("tls: %s" % str(e).strip())
        self._reader, self._writer = r, w
        self._rbuf = b""
        try:
            will = self.will_msg
            if callable(will):
                will = P.check_payload(will(), 65535)
            await self._write(P.connect(self.client_id, self.keepalive, self.clean, self.user,
                                        self.password, self.will_topic, will))
            first, body = await self._read_packet(self.timeout)
        except MQTTError:
            await self._close_stream()
            raise
        if first != P.CONNACK or body is None or len(body) != 2:
            await self._close_stream()
            raise MQTTError("expected CONNACK")
        if body[1]:
            await self._close_stream()
            raise MQTTError("broker refused: %s" % P.CONNACK_REASONS.get(body[1], body[1]))
        return bool(body[0] & 1)

    async def _close_stream(self):
        w = self._writer
        self._writer = None
        self._reader = None
        self._rbuf = b""
        if w is not None:
            try:
                w.close()
                await asyncio.wait_for(w.wait_closed(), 1)
            except Exception:
                pass

    async def _session_restore(self, session_present):
        # Resubscribe whatever the session says: a broker that lost its state
        # (restart without persistence) has forgotten our subscriptions.
        for topic in self._subs:
            pid = self._next_pid()
            await self._write(P.subscribe(pid, topic, self._subs[topic]))
        # Resend every unacked QoS 1 publish: same packet id, DUP set.
        for pid in sorted(self._inflight):
            inf = self._inflight[pid]
            pkt = inf.packet
            if inf.sent:
                pkt = bytes([pkt[0] | 0x08]) + pkt[1:]
                self.stats["resent"] += 1
            inf.sent = True
            inf.conn = self._conn
            await self._write(pkt)

    def _backoff(self):
        """Seconds to wait before the next connect: full jitter under a
        ceiling that doubles with each failure, up to backoff_cap."""
        ceiling = self.backoff_min * (1 << min(self.failures, 16))
        if ceiling > self.backoff_cap:
            ceiling = self.backoff_cap
        return max(0.02, _jitter(ceiling))

    def _prove(self):
        # An answer from the broker: the connection is healthy, the streak
        # is over. Kept aside in case the connection dies with publishes it
        # carried still unacked (see _judge).
        self._proved = True
        self._saved_failures = self.failures
        self.failures = 0

    def _judge(self, up_ms):
        """After a connection ended: count it against every publish it carried
        unacked (giving up on those refused max_refusals times), and decide
        whether it was healthy (failures back to 0) or a failure (one more)."""
        conn = self._conn
        refused = False
        for pid in list(self._inflight):
            inf = self._inflight[pid]
            if inf.conn != conn:
                continue
            refused = True
            inf.refusals += 1
            if self.max_refusals and inf.refusals >= self.max_refusals:
                del self._inflight[pid]
                self.stats["refused"] += 1
                inf.error = PublishRefused("the broker closed %d connections that carried this "
                                           "publish (pid %d) before acking it" % (inf.refusals, pid))
                inf.done.set()
                self.log("mqtt_publish_refused", pid=pid, connections=inf.refusals)
        if len(self._inflight) < self.max_inflight:
            self._window.set()
        if up_ms >= (self.keepalive or 60) * 1000:
            self.failures = 0  # stayed up a keepalive period: healthy
        elif refused:
            # Died before a keepalive period with publishes unacked: a failure
            # even if an ack came first (the SUBACK of the restored
            # subscription arrives before the broker closes on the resent
            # publish behind it).
            self.failures = (self._saved_failures if self._proved else self.failures) + 1
        elif not self._proved:
            self.failures += 1  # closed right after CONNACK, or never answered

    async def run(self):
        """Keep a connection up for as long as the client runs."""
        self._running = True
        while self._running:
            try:
                present = await self._open()
            except MQTTError as e:
                self.stats["connect_failures"] += 1
                self.failures += 1
                delay = self._backoff()
                self.log("mqtt_connect_failed", error=str(e), retry_in=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            if not self._running:  # disconnect() or abort() while connecting
                await self._close_stream()
                break
            self._conn += 1
            self._proved = False
            t_up = ticks_ms()
            self.stats["connects"] += 1
            self.log("mqtt_connected", session_present=present)
            error = "closed"
            try:
                await self._session_restore(present)
                self.connected.set()
                # Publishes queued while the session was being restored.
                for pid in sorted(self._inflight):
                    inf = self._inflight.get(pid)
                    if inf is not None and not inf.sent:
                        inf.sent = True
                        inf.conn = self._conn
                        await self._write(inf.packet)
                pinger = asyncio.create_task(self._pinger())
                try:
                    await self._reader_loop()
                finally:
                    pinger.cancel()
            except MQTTError as e:
                error = str(e)
            self.connected.clear()
            self.stats["disconnects"] += 1
            await self._close_stream()
            if not self._running:
                break
            self._judge(ticks_diff(ticks_ms(), t_up))
            delay = self._backoff()
            self.log("mqtt_disconnected", error=error, failures=self.failures,
                     retry_in=round(delay, 3))
            await asyncio.sleep(delay)
        self._closed_ev.set()

    async def _pinger(self):
        interval = max(1, self.keepalive // 2)
        while True:
            await asyncio.sleep(interval / 2)
            if time.time() - self._last_tx >= interval:
                try:
                    self.stats["pings"] += 1
                    await self._write(P.pingreq())
                except MQTTError:
                    await self._close_stream()
                    return

    async def _reader_loop(self):
        # No packet for 1.5 keepalives (pings included) means a dead link.
        idle = self.keepalive * 1.5 if self.keepalive else 3600
        while True:
            first, body = await self._read_packet(idle)
            if body is None:
                continue  # an oversized PUBLISH, skipped and counted
            t = first & 0xF0
            if t == P.PUBACK and len(body) >= 2:
                pid = struct.unpack("!H", body[:2])[0]
                if not self._proved:
                    self._prove()
                inf = self._inflight.pop(pid, None)
                if inf is not None:
                    inf.done.set()
                    self.stats["published"] += 1
                    if len(self._inflight) < self.max_inflight:
                        self._window.set()
            elif t == P.PUBLISH:
                try:
                    topic, payload, qos, pid, retain, dup = P.parse_publish(first, body)
                except P.PacketError:
                    self.stats["bad_packets"] += 1
                    continue
                self.stats["received"] += 1
                if self.on_message is not None:
                    try:
                        self.on_message(topic, payload, retain)
                    except Exception as e:
                        self.log("on_message_failed", error=repr(e))
                if qos:
                    await self._write(P.puback(pid))
            elif t == P.SUBACK or t == P.PINGRESP:
                if not self._proved:
                    self._prove()
            else:
                self.stats["bad_packets"] += 1

    # ---- API
    async def publish(self, topic, payload, qos=1, retain=False, timeout=None):
        """QoS 0: send if connected. QoS 1: return the packet id once the
        broker has acked, across as many reconnects as that takes.

        Raises PacketError before sending anything for a bad topic, payload
        or QoS; PublishRefused when the broker closed max_refusals
        connections that carried the message; PublishTimeout when `timeout`
        seconds passed without an ack (the message leaves the session)."""
        # Checked here, before a packet id is taken or the window waited on;
        # P.publish checks again (a cache hit for the topic).
        P.check_topic(topic)
        payload = P.check_payload(payload, self.max_payload)
        P.check_qos(qos)
        if qos == 0:
            if self.connected.is_set():
                try:
                    await self._write(P.publish(topic, payload, 0, retain))
                except MQTTError:
                    pass
            return 0
        t0 = ticks_ms()
        while len(self._inflight) >= self.max_inflight:
            self._window.clear()
            if timeout is None:
                await self._window.wait()
                continue
            left = timeout - ticks_diff(ticks_ms(), t0) / 1000
            if left <= 0:
                self.stats["publish_timeouts"] += 1
                raise PublishTimeout("no room in the in-flight window within %s s" % timeout)
            try:
                await asyncio.wait_for(self._window.wait(), left)
            except asyncio.TimeoutError:
                pass
        pid = self._next_pid()
        inf = _Inflight(P.publish(topic, payload, 1, retain, pid))
        self._inflight[pid] = inf
        if self.connected.is_set():
            inf.sent = True
            inf.conn = self._conn
            try:
                await self._write(inf.packet)
            except MQTTError:
                pass  # the reconnect resends it with DUP
        while True:
            wait = self.ack_timeout
            if timeout is not None:
                left = timeout - ticks_diff(ticks_ms(), t0) / 1000
                if left <= 0 and not inf.done.is_set():
                    if self._inflight.get(pid) is inf:
                        del self._inflight[pid]
                        self._window.set()
                    self.stats["publish_timeouts"] += 1
                    raise PublishTimeout("no PUBACK for pid %d within %s s" % (pid, timeout))
                if left < wait:
                    wait = max(0, left)
            try:
                await asyncio.wait_for(inf.done.wait(), wait)
            except asyncio.TimeoutError:
                if wait < self.ack_timeout:
                    continue  # only the caller's deadline ran out: loop to raise
                # MQTT 3.1.1 resends only on a new connection: a broker (or a
                # middlebox) that swallowed the PUBACK while pings still flow
                # would otherwise hold this message, and the window behind it,
                # for ever. Drop the connection; the session resends with DUP.
                if self.connected.is_set() and inf.sent and not inf.done.is_set():
                    self.stats["ack_timeouts"] += 1
                    self.log("mqtt_ack_timeout", pid=pid)
                    await self._close_stream()
                continue
            if inf.error is not None:
                raise inf.error
            return pid

    async def subscribe(self, topic, qos=1):
        """Subscribe now if connected, and after every reconnect. Raises
        PacketError for a bad topic filter or QoS before sending anything."""
        P.check_filter(topic)
        P.check_qos(qos)
        self._subs[topic] = qos
        if self.connected.is_set():
            try:
                await self._write(P.subscribe(self._next_pid(), topic, qos))
            except MQTTError:
                pass  # restored on reconnect

    @property
    def inflight(self):
        return len(self._inflight)

    async def abort(self):
        """Drop the connection without a DISCONNECT and stop reconnecting: the
        broker publishes the Last Will, as after a power cut."""
        self._running = False
        await self._close_stream()

    async def disconnect(self):
        self._running = False
        if self._writer is not None:
            try:
                await self._write(P.disconnect())
            except MQTTError:
                pass
        await self._close_stream()
