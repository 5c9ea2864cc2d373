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
# - reconnects with exponential backoff and full jitter;
# - leaves durability to the outbox (firmware/outbox.py): publish() returns
#   when the broker has acked, and only then may the caller mark a record
#   delivered.

import asyncio
import os
import struct
import time

from firmware.mqtt import packets as P


class MQTTError(Exception):
    pass



def _jitter(cap_s):
    r = os.urandom(2)
    return cap_s * ((r[0] << 8) | r[1]) / 65536


class _Inflight:
    def __init__(self, packet):
        self.packet = packet
        self.done = asyncio.Event()
        self.sent = False


class AsyncClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=30, timeout=5.0, clean=False, will_topic=None,
                 will_msg=b"offline", max_inflight=16, backoff_min=0.1,
                 backoff_cap=1.0, on_message=None, log=None, ack_timeout=10.0):
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
        self.log = log or (lambda *a, **k: None)
        self.connected = asyncio.Event()
        self._reader = None
        self._writer = None
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
                      "resent": 0, "received": 0, "pings": 0, "bad_packets": 0, "ack_timeouts": 0}

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
        self._last_tx = time.time()

    async def _read_exactly(self, n, timeout):
        try:
            data = await asyncio.wait_for(self._reader.readexactly(n), timeout)
        except asyncio.TimeoutError:
            raise MQTTError("read timed out")
        except (OSError, EOFError) as e:
            raise MQTTError("connection lost: %r" % (e,))
        except Exception as e:  # CPython's IncompleteReadError
            raise MQTTError("connection lost: %r" % (e,))
        if len(data) < n:
            raise MQTTError("connection closed by broker")
        return data

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
            raise MQTTError("packet of %d bytes is too large" % n)
        body = await self._read_exactly(n, self.timeout) if n else b""
        self._last_rx = time.time()
        return first, body

    # ---- connection
    async def _open(self):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
        except asyncio.TimeoutError:
            raise MQTTError("connect to %s:%d timed out" % (self.host, self.port))
        except OSError as e:
            raise MQTTError("cannot reach broker %s:%d: %s" % (self.host, self.port, e))
        self._reader, self._writer = r, w
        try:
            await self._write(P.connect(self.client_id, self.keepalive, self.clean, self.user,
                                        self.password, self.will_topic, self.will_msg))
            first, body = await self._read_packet(self.timeout)
        except MQTTError:
            await self._close_stream()
            raise
        if first != P.CONNACK or len(body) != 2:
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
            await self._write(pkt)

    async def run(self):
        """Keep a connection up for as long as the client runs."""
        self._running = True
        attempt = 0
        while self._running:
            try:
                present = await self._open()
            except MQTTError as e:
                self.stats["connect_failures"] += 1
                attempt += 1
                cap = min(self.backoff_cap, self.backoff_min * (1 << min(attempt, 10)))
                self.log("mqtt_connect_failed", error=str(e))
                await asyncio.sleep(max(0.02, _jitter(cap)))
                continue
            attempt = 0
            self.stats["connects"] += 1
            self.log("mqtt_connected", session_present=present)
            try:
                await self._session_restore(present)
                self.connected.set()
                # Publishes queued while the session was being restored.
                for pid in sorted(self._inflight):
                    inf = self._inflight.get(pid)
                    if inf is not None and not inf.sent:
                        inf.sent = True
                        await self._write(inf.packet)
                pinger = asyncio.create_task(self._pinger())
                try:
                    await self._reader_loop()
                finally:
                    pinger.cancel()
            except MQTTError as e:
                self.log("mqtt_disconnected", error=str(e))
            self.connected.clear()
            self.stats["disconnects"] += 1
            await self._close_stream()
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
            t = first & 0xF0
            if t == P.PUBACK and len(body) >= 2:
                pid = struct.unpack("!H", body[:2])[0]
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
            elif t == P.SUBACK:
                pass
            elif t == P.PINGRESP:
                pass
            else:
                self.stats["bad_packets"] += 1

    # ---- API
    async def publish(self, topic, payload, qos=1, retain=False):
        """QoS 0: send if connected. QoS 1: return once the broker has acked,
        across as many reconnects as that takes."""
        if qos == 0:
            if self.connected.is_set():
                try:
                    await self._write(P.publish(topic, payload, 0, retain))
                except MQTTError:
                    pass
            return 0
        while len(self._inflight) >= self.max_inflight:
            self._window.clear()
            await self._window.wait()
        pid = self._next_pid()
        inf = _Inflight(P.publish(topic, payload, 1, retain, pid))
        self._inflight[pid] = inf
        if self.connected.is_set():
            inf.sent = True
            try:
                await self._write(inf.packet)
            except MQTTError:
                pass  # the reconnect resends it with DUP
        while True:
            try:
                await asyncio.wait_for(inf.done.wait(), self.ack_timeout)
                return pid
            except asyncio.TimeoutError:
                pass
            # MQTT 3.1.1 resends only on a new connection: a broker (or a
            # middlebox) that swallowed the PUBACK while pings still flow
            # would otherwise hold this message, and the window behind it,
            # for ever. Drop the connection; the session resends with DUP.
            if self.connected.is_set() and inf.sent and not inf.done.is_set():
                self.stats["ack_timeouts"] += 1
                self.log("mqtt_ack_timeout", pid=pid)
                await self._close_stream()

    async def subscribe(self, topic, qos=1):
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
