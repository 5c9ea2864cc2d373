"""An MQTT-aware TCP fault proxy for the simulator and tests.

Put it between any two parts (device and broker, gateway and broker, ...) and
it drops, delays, duplicates or reorders individual MQTT control packets,
chosen by direction, packet type and topic filter; it cuts connections, caps
bandwidth, adds latency, goes down and flaps.

Why not the usual tools: the kernel's netem is not available in the
containers this runs in, and Toxiproxy works on byte streams, below MQTT
framing, so it cannot say "lose the third PUBACK" or "send this PUBLISH
twice". Faults at packet granularity are what reach the interesting code
paths (a QoS 1 resend with DUP, a broker redelivery, an out-of-order event).

Packets are framed by the fixed header and remaining length. PUBLISH topic,
QoS, packet id and DUP come from `firmware.mqtt.packets.parse_publish` (the
same decoder the firmware uses); MQTT 5 adds a property block after the
packet id, which is walked only to follow topic aliases, so the proxy learns
each connection's protocol level from its CONNECT. Acknowledgements
(PUBACK, PUBREC, PUBREL, PUBCOMP) carry the topic of the PUBLISH they answer,
so a rule can say "drop the PUBACKs of event topics".

A malformed stream (reserved packet type 0, a remaining length longer than
four bytes, or a packet larger than `max_packet`) is not the proxy's business
to judge: that direction of that connection switches to raw pass-through for
the rest of its life (connection-level faults still apply), the event is
counted as `malformed` and logged, and the endpoints decide what to do with
the garbage (Mosquitto closes the connection). A packet that frames correctly
but whose content does not decode (a PUBLISH topic that is not UTF-8, say)
is forwarded unchanged, counted as `undecodable`, and matches no topic rule.

Threads: the proxy runs on an asyncio loop, either its own in a background
thread (`start()`/`stop()`, for synchronous test code) or the caller's
(`await serve()`/`await aclose()`). Rules, latency and bandwidth can be
changed from any thread at any time. State changes that touch sockets have a
synchronous form for other threads (`down()`, `up()`, `flap()`, `cut()`) and
an async form for code on the proxy's loop (`adown()`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from firmware.mqtt import packets as P

C2S = "c2s"  # client to server (upstream)
S2C = "s2c"  # server to client (downstream)
DIRECTIONS = (C2S, S2C)

PACKET_TYPES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP",
    8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
    14: "DISCONNECT", 15: "AUTH",
}
KINDS = frozenset(PACKET_TYPES.values())
ACTIONS = ("drop", "delay", "duplicate", "reorder", "cut")

# Packets whose body starts with a packet id.
_WITH_PID = frozenset({"PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK",
                       "UNSUBSCRIBE", "UNSUBACK"})

# MQTT 5 property identifiers by value type (MQTT 5.0 section 2.2.2.2).
_PROP_BYTE = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
_PROP_U16 = frozenset({0x13, 0x21, 0x22, 0x23})
_PROP_U32 = frozenset({0x02, 0x11, 0x18, 0x27})
_PROP_VARINT = frozenset({0x0B})
_PROP_STR = frozenset({0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F})  # strings and binary
_PROP_PAIR = frozenset({0x26})
_TOPIC_ALIAS = 0x23


class MalformedStream(Exception):
    """The byte stream cannot be framed as MQTT control packets."""


def decode_varint(buf: bytes | bytearray, i: int) -> tuple[int, int] | None:
    """Decode an MQTT variable byte integer at buf[i]: (value, next index), or
    None if the buffer ends first. More than four bytes is malformed."""
    value = 0
    for k in range(4):
        if i + k >= len(buf):
            return None
        b = buf[i + k]
        value |= (b & 0x7F) << (7 * k)
        if not b & 0x80:
            return value, i + k + 1
    raise MalformedStream("variable byte integer longer than four bytes")


def topic_matches(flt: str, topic: str) -> bool:
    """MQTT topic filter matching: `+` is one level, `#` the rest (and the
    parent level itself); wildcards at the first level skip `$` topics."""
    if flt == topic:
        return True
    if topic.startswith("$") and flt[:1] in ("+", "#"):
        return False
    f = flt.split("/")
    t = topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t):
            return False
        if part != "+" and part != t[i]:
            return False
    return len(f) == len(t)


@dataclass(frozen=True)
class Packet:
    """One MQTT control packet as it crossed the proxy."""

    direction: str
    kind: str
    raw: bytes
    topic: str | None = None
    qos: int = 0
    pid: int | None = None
    dup: bool = False
    retain: bool = False

    def with_dup(self) -> bytes:
        """The raw bytes with DUP set, as a resend of a QoS>0 PUBLISH carries."""
        if self.kind != "PUBLISH" or not self.qos:
            return self.raw
        return bytes([self.raw[0] | 0x08]) + self.raw[1:]


@dataclass(frozen=True)
class Raw:
    """Bytes forwarded without framing, after the stream turned out malformed."""

    direction: str
    data: bytes
    reason: str = ""  # set on the chunk where the stream first went bad


class MqttStream:
    """Frames and decodes both directions of one MQTT connection.

    Pure bytes, no sockets: the proxy feeds it what it reads, and tests can
    feed it anything. It keeps what decoding needs across packets: the
    protocol level from CONNECT, MQTT 5 topic aliases per direction, and the
    topics of unacknowledged PUBLISH packet ids so acks can be matched by
    topic.
    """

    def __init__(self, max_packet: int = 1 << 20) -> None:
        self.max_packet = max_packet
        self.level = 4
        self.undecodable = 0
        self._buf = {C2S: bytearray(), S2C: bytearray()}
        self._raw = {C2S: False, S2C: False}
        self._aliases: dict[str, dict[int, str]] = {C2S: {}, S2C: {}}
        self._inflight: dict[tuple[str, int], str] = {}

    def is_raw(self, direction: str) -> bool:
        return self._raw[direction]

    def feed(self, direction: str, data: bytes) -> list[Packet | Raw]:
        """Complete packets in `data` (plus what was buffered); a partial
        packet stays buffered. Never raises on bad input."""
        if self._raw[direction]:
            return [Raw(direction, bytes(data))] if data else []
        buf = self._buf[direction]
        buf += data
        out: list[Packet | Raw] = []
        i = 0
        try:
            while i < len(buf):
                first = buf[i]
                if first >> 4 == 0:
                    raise MalformedStream("reserved packet type 0")
                rl = decode_varint(buf, i + 1)
                if rl is None:
                    break
                length, start = rl
                if start - i + length > self.max_packet:
                    raise MalformedStream(f"packet of {length} bytes exceeds {self.max_packet}")
                end = start + length
                if end > len(buf):
                    break
                out.append(self._decode(direction, first, bytes(buf[start:end]), bytes(buf[i:end])))
                i = end
        except MalformedStream as e:
            self._raw[direction] = True
            rest = bytes(buf[i:])
            buf.clear()
            out.append(Raw(direction, rest, str(e)))
            return out
        del buf[:i]
        return out

    def _decode(self, direction: str, first: int, body: bytes, raw: bytes) -> Packet:
        kind = PACKET_TYPES[first >> 4]
        try:
            if kind == "PUBLISH":
                return self._publish(direction, first, body, raw)
            if kind == "CONNECT":
                self._connect(body)
                return Packet(direction, kind, raw)
            pid = struct.unpack("!H", body[:2])[0] if kind in _WITH_PID and len(body) >= 2 else None
            topic = None
            if pid is not None and kind in ("PUBACK", "PUBREC", "PUBREL", "PUBCOMP"):
                # PUBREL travels the way its PUBLISH did; the others answer it.
                other = S2C if direction == C2S else C2S
                src = direction if kind == "PUBREL" else other
                topic = self._inflight.get((src, pid))
                if kind in ("PUBACK", "PUBCOMP"):
                    self._inflight.pop((src, pid), None)
            return Packet(direction, kind, raw, topic=topic, pid=pid)
        except (P.PacketError, MalformedStream, IndexError, struct.error, UnicodeDecodeError):
            self.undecodable += 1
            return Packet(direction, kind, raw)

    def _connect(self, body: bytes) -> None:
        n = struct.unpack("!H", body[:2])[0]
        level = body[2 + n]
        if level in (3, 4, 5):
            self.level = level

    def _publish(self, direction: str, first: int, body: bytes, raw: bytes) -> Packet:
        topic, rest, qos, pid, retain, dup = P.parse_publish(first, body)
        if self.level == 5:
            alias = _topic_alias(rest)
            if alias is not None:
                table = self._aliases[direction]
                if topic:
                    table[alias] = topic
                else:
                    topic = table.get(alias, "")
        if qos:
            self._inflight[(direction, pid)] = topic
        return Packet(direction, "PUBLISH", raw, topic=topic, qos=qos, pid=pid if qos else None,
                      dup=dup, retain=retain)


def _topic_alias(props: bytes) -> int | None:
    """The topic alias in an MQTT 5 PUBLISH property block (which starts
    `props`), walking every property so unknown ones are not misread."""
    r = decode_varint(props, 0)
    if r is None:
        raise MalformedStream("PUBLISH property length runs past the packet")
    length, i = r
    end = i + length
    if end > len(props):
        raise MalformedStream("PUBLISH properties run past the packet")
    alias = None
    while i < end:
        pid = props[i]
        i += 1
        if pid in _PROP_BYTE:
            i += 1
        elif pid in _PROP_U16:
            if pid == _TOPIC_ALIAS:
                alias = struct.unpack("!H", props[i:i + 2])[0]
            i += 2
        elif pid in _PROP_U32:
            i += 4
        elif pid in _PROP_VARINT:
            r = decode_varint(props, i)
            if r is None:
                raise MalformedStream("truncated property")
            i = r[1]
        elif pid in _PROP_STR:
            i += 2 + struct.unpack("!H", props[i:i + 2])[0]
        elif pid in _PROP_PAIR:
            i += 2 + struct.unpack("!H", props[i:i + 2])[0]
            i += 2 + struct.unpack("!H", props[i:i + 2])[0]
        else:
            raise MalformedStream(f"unknown property 0x{pid:02x}")
    if i != end:
        raise MalformedStream("property block length mismatch")
    return alias


@dataclass(eq=False)
class Rule:
    """Which packets to hit and what to do to them.

    A packet matches when its direction, kind and topic match (None means
    any). A match fires when it is the `every`-th match (if set), the seeded
    coin comes up below `p`, and fewer than `limit` firings happened. Every
    rule that fires applies: `cut` wins over everything, `drop` over the
    rest; delays add up; `duplicate` and `reorder` combine. Each rule has its
    own RNG so adding a rule does not change another rule's choices.
    """

    action: str
    direction: str | None = None
    kinds: tuple[str, ...] | str | None = None
    topic: str | None = None
    p: float = 1.0
    every: int | None = None
    limit: int | None = None
    delay_ms: float = 0.0
    hold_ms: float = 500.0  # reorder: a held packet goes anyway after this long
    seed: int = 0
    name: str = ""
    matched: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action {self.action!r} is not one of {', '.join(ACTIONS)}")
        if self.direction not in (None, C2S, S2C):
            raise ValueError("direction must be 'c2s', 's2c' or None")
        if isinstance(self.kinds, str):
            self.kinds = (self.kinds,)
        if self.kinds is not None:
            self.kinds = tuple(k.upper() for k in self.kinds)
            bad = [k for k in self.kinds if k not in KINDS]
            if bad:
                raise ValueError(f"unknown packet kinds {bad}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError("p must be within [0, 1]")
        if self.every is not None and self.every < 1:
            raise ValueError("every must be >= 1")
        if not self.name:
            kinds = ",".join(self.kinds or ("*",))
            self.name = f"{self.action}:{self.direction or '*'}:{kinds}:{self.topic or '*'}"
        self._rng = random.Random(self.seed)

    def matches(self, pkt: Packet) -> bool:
        if self.direction is not None and pkt.direction != self.direction:
            return False
        if self.kinds is not None and pkt.kind not in self.kinds:
            return False
        if self.topic is not None and (pkt.topic is None or not topic_matches(self.topic, pkt.topic)):
            return False
        return True

    def decide(self, pkt: Packet) -> bool:
        """Count a match and say whether the action fires (proxy lock held)."""
        if not self.matches(pkt):
            return False
        self.matched += 1
        if self.every is not None and self.matched % self.every:
            return False
        if self.limit is not None and self.fired >= self.limit:
            return False
        if self.p < 1.0 and self._rng.random() >= self.p:
            return False
        self.fired += 1
        return True


@dataclass(frozen=True)
class LogEntry:
    """One packet (or connection event) and what the proxy did with it."""

    t: float  # time.monotonic()
    conn: int
    direction: str
    kind: str  # packet kind, or MALFORMED / RAW / CONNECT_REFUSED ...
    topic: str | None
    action: str  # pass, drop, cut, delay, duplicate, reorder, combinations joined by "+"
    qos: int = 0
    pid: int | None = None
    dup: bool = False
    rules: tuple[str, ...] = ()
    size: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.t, "conn": self.conn, "direction": self.direction, "kind": self.kind,
                "topic": self.topic, "action": self.action, "qos": self.qos, "pid": self.pid,
                "dup": self.dup, "rules": list(self.rules), "size": self.size}


class TokenBucket:
    """A bandwidth cap for one direction of the link, shared by all connections
    (it models the link, not a socket). Writers queue on a lock, so a large
    packet waits its turn like bytes on a wire."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self.burst = 0.0
        self._tokens = 0.0
        self._t = time.monotonic()
        self._lock: asyncio.Lock | None = None

    def configure(self, rate: float | None, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else (rate / 10 if rate else 0.0)
        self._tokens = min(self._tokens, self.burst)

    def _refill(self) -> None:
        now = time.monotonic()
        if self.rate:
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now

    async def take(self, n: int) -> None:
        if not self.rate:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            self._refill()
            want = min(float(n), max(self.burst, 1.0))
            while self.rate and self._tokens < want:
                await asyncio.sleep((want - self._tokens) / self.rate)
                self._refill()
            self._tokens -= n  # may go negative: a big packet borrows from the future


class _Conn:
    """One proxied connection: two sockets, two queues, the decoder."""

    def __init__(self, cid: int, cw: asyncio.StreamWriter, sw: asyncio.StreamWriter,
                 max_packet: int) -> None:
        self.id = cid
        self.writers = {S2C: cw, C2S: sw}  # direction -> where its bytes go
        self.stream = MqttStream(max_packet)
        self.queues: dict[str, asyncio.Queue[tuple[float, bytes | None]]] = {
            C2S: asyncio.Queue(), S2C: asyncio.Queue()}
        self.last_release = {C2S: 0.0, S2C: 0.0}
        self.held: dict[str, list[tuple[list[bytes], float]]] = {C2S: [], S2C: []}
        self.closed = False

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for d in DIRECTIONS:
            self.writers[d].transport.abort()
            self.queues[d].put_nowait((0.0, None))


class FaultProxy:
    """A TCP proxy that applies fault rules to MQTT packets. See the module doc."""

    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1",
                 port: int = 0, rules: Iterable[Rule] = (), log_size: int = 100_000,
                 max_packet: int = 1 << 20, connect_timeout: float = 5.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self.max_packet = max_packet
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._rules: tuple[Rule, ...] = tuple(rules)
        self._latency = {C2S: 0.0, S2C: 0.0}
        self._buckets = {C2S: TokenBucket(), S2C: TokenBucket()}
        self._counters: Counter[str] = Counter()
        self._log: deque[LogEntry] = deque(maxlen=log_size)
        self._ids = itertools.count(1)
        self._conns: dict[int, _Conn] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._state = "up"  # up, refuse, blackhole
        self._passing: asyncio.Event | None = None  # cleared while blackholed
        self._flap_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- lifecycle
    async def serve(self) -> FaultProxy:
        """Listen on the running loop (async API). Returns self."""
        self._loop = asyncio.get_running_loop()
        self._passing = asyncio.Event()
        self._passing.set()
        await self._listen()
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop listening and drop every connection."""
        self._cancel_flap()
        if self._server is not None:
            self._server.close()
            self._server = None
        self._state = "refuse"
        if self._passing is not None:
            self._passing.set()  # let blackholed handlers see the state and leave
        for c in list(self._conns.values()):
            c.abort()
        # Aborted connections end their handlers on their own; cancelling a
        # handler would make asyncio's stream callback log a spurious error.
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=2)
            for t in late:
                t.cancel()

    def start(self) -> FaultProxy:
        """Run the proxy's own loop in a daemon thread (for synchronous code)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve())
            except BaseException as e:  # reported to start()'s caller
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close everything and end the background thread started by start()."""
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self.aclose(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _sync(self, coro_fn: Callable[..., Any], *args: Any) -> Any:
        """Run an async control on the proxy's loop from another thread."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("proxy not started")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("called from the proxy's own loop: use the async form (await proxy.a...())")
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), loop).result(10)

    # ---- rules and link shape: safe from any thread
    def add_rule(self, rule: Rule | None = None, **kw: Any) -> Rule:
        """Add a rule (or build one from keyword arguments); returns it."""
        r = rule if rule is not None else Rule(**kw)
        with self._lock:
            self._rules = self._rules + (r,)
        return r

    def remove_rule(self, rule: Rule) -> None:
        with self._lock:
            self._rules = tuple(r for r in self._rules if r is not rule)

    def clear_rules(self) -> None:
        with self._lock:
            self._rules = ()

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def set_latency(self, ms: float, direction: str | None = None) -> None:
        """Added one-way latency for every packet (order kept, like a long wire)."""
        for d in (direction,) if direction else DIRECTIONS:
            self._latency[d] = ms / 1000.0

    def set_bandwidth(self, bytes_per_s: float | None, direction: str | None = None,
                      burst: float | None = None) -> None:
        """Cap a direction (or both) to bytes_per_s; None lifts the cap."""
        for d in (direction,) if direction else DIRECTIONS:
            self._buckets[d].configure(bytes_per_s, burst)

    # ---- connection state
    def down(self, mode: str = "refuse") -> None:
        """Go down: 'refuse' closes every connection and the listener (new
        connects are refused); 'blackhole' keeps sockets open but moves no
        bytes, like a partition, until up()."""
        self._sync(self.adown, mode)

    def up(self) -> None:
        self._sync(self.aup)

    def flap(self, period_ms: float, duty: float = 0.5, mode: str = "refuse") -> None:
        """Alternate up for duty*period and down for the rest, until up()."""
        self._sync(self.aflap, period_ms, duty, mode)

    def cut(self) -> int:
        """Close every current connection now (the listener stays up)."""
        return self._sync(self.acut)

    async def adown(self, mode: str = "refuse") -> None:
        self._cancel_flap()
        await self._go_down(mode)

    async def aup(self) -> None:
        self._cancel_flap()
        await self._go_up()

    async def aflap(self, period_ms: float, duty: float = 0.5, mode: str = "refuse") -> None:
        if not 0.0 < duty < 1.0 or period_ms <= 0:
            raise ValueError("flap needs period_ms > 0 and 0 < duty < 1")
        self._cancel_flap()
        self._flap_task = asyncio.create_task(self._flapper(period_ms / 1000.0, duty, mode))

    async def acut(self) -> int:
        conns = list(self._conns.values())
        for c in conns:
            self._note(c.id, C2S, "CONNECTION", None, "cut")
            c.abort()
        return len(conns)

    @property
    def state(self) -> str:
        return self._state

    async def _go_down(self, mode: str) -> None:
        if mode not in ("refuse", "blackhole"):
            raise ValueError("mode must be 'refuse' or 'blackhole'")
        if self._state == mode:
            return
        self._count("down")
        if mode == "refuse":
            if self._server is not None:
                self._server.close()
                self._server = None
            for c in list(self._conns.values()):
                c.abort()
            assert self._passing is not None
            self._passing.set()  # nothing is left to hold back
        else:
            assert self._passing is not None
            self._passing.clear()
        self._state = mode

    async def _go_up(self) -> None:
        if self._state == "up":
            return
        if self._server is None:
            await self._listen()
        assert self._passing is not None
        self._passing.set()
        self._state = "up"
        self._count("up")

    async def _flapper(self, period: float, duty: float, mode: str) -> None:
        while True:
            await self._go_up()
            await asyncio.sleep(period * duty)
            await self._go_down(mode)
            await asyncio.sleep(period * (1 - duty))

    def _cancel_flap(self) -> None:
        t = self._flap_task
        self._flap_task = None
        if t is not None and t is not asyncio.current_task():
            t.cancel()

    # ---- observation
    def counters(self) -> dict[str, int]:
        """Totals: packets, bytes per direction, each action, malformed,
        undecodable, connections, refused, upstream_failed, down/up."""
        with self._lock:
            return dict(self._counters)

    def rule_counters(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"name": r.name, "action": r.action, "matched": r.matched, "fired": r.fired}
                    for r in self._rules]

    def log(self) -> list[LogEntry]:
        with self._lock:
            return list(self._log)

    def wait_log(self, pred: Callable[[LogEntry], bool], timeout: float = 10.0) -> LogEntry | None:
        """The first log entry satisfying pred, waiting up to timeout (sync code)."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.log():
                if pred(e):
                    return e
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    def _note(self, conn: int, direction: str, kind: str, topic: str | None, action: str,
              pkt: Packet | None = None, rules: tuple[str, ...] = (), size: int = 0) -> None:
        e = LogEntry(time.monotonic(), conn, direction, kind, topic, action,
                     pkt.qos if pkt else 0, pkt.pid if pkt else None, pkt.dup if pkt else False,
                     rules, size)
        with self._lock:
            self._log.append(e)

    # ---- the data path
    async def _on_client(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._proxy_one(next(self._ids), creader, cwriter)
        finally:
            self._tasks.discard(task)

    async def _proxy_one(self, cid: int, creader: asyncio.StreamReader,
                         cwriter: asyncio.StreamWriter) -> None:
        if self._state == "refuse":
            self._count("refused")
            self._note(cid, C2S, "CONNECTION", None, "refused")
            cwriter.transport.abort()
            return
        assert self._passing is not None
        await self._passing.wait()
        if self._state == "refuse":  # closed while blackholed
            cwriter.transport.abort()
            return
        try:
            sreader, swriter = await asyncio.wait_for(asyncio.open_connection(*self.upstream),
                                                      self.connect_timeout)
        except (OSError, TimeoutError):
            self._count("upstream_failed")
            self._note(cid, C2S, "CONNECTION", None, "upstream_failed")
            cwriter.transport.abort()
            return
        if self._state == "refuse":  # went down while connecting
            swriter.transport.abort()
            cwriter.transport.abort()
            return
        conn = _Conn(cid, cwriter, swriter, self.max_packet)
        self._conns[cid] = conn
        self._count("connections")
        self._note(cid, C2S, "CONNECTION", None, "open")
        try:
            await asyncio.gather(self._pump(conn, C2S, creader), self._pump(conn, S2C, sreader),
                                 self._writer(conn, C2S), self._writer(conn, S2C),
                                 return_exceptions=True)
        finally:
            conn.abort()
            self._conns.pop(cid, None)
            self._note(cid, C2S, "CONNECTION", None, "closed")

    async def _pump(self, conn: _Conn, d: str, reader: asyncio.StreamReader) -> None:
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data:
                    break
                with self._lock:
                    self._counters["bytes_" + d] += len(data)
                for item in conn.stream.feed(d, data):
                    if conn.closed:
                        return
                    if isinstance(item, Raw):
                        self._raw(conn, item)
                    else:
                        self._packet(conn, item)
        except (OSError, asyncio.IncompleteReadError):
            conn.abort()
            return
        # Orderly end of this direction: release held packets, then let the
        # writer close the other side once its queue is flushed.
        self._release_held(conn, d)
        conn.queues[d].put_nowait((0.0, None))

    def _raw(self, conn: _Conn, item: Raw) -> None:
        if item.reason:
            self._count("malformed")
            self._note(conn.id, item.direction, "MALFORMED", item.reason, "raw", size=len(item.data))
        if item.data:
            self._enqueue(conn, item.direction, [item.data], 0.0)

    def _packet(self, conn: _Conn, pkt: Packet) -> None:
        fired: list[Rule] = []
        with self._lock:
            self._counters["packets"] += 1
            if conn.stream.undecodable:
                self._counters["undecodable"] += conn.stream.undecodable
                conn.stream.undecodable = 0
            for r in self._rules:
                if r.decide(pkt):
                    fired.append(r)
        names = tuple(r.name for r in fired)
        actions = {r.action for r in fired}
        d = pkt.direction
        if "cut" in actions:
            self._count("cut")
            self._note(conn.id, d, pkt.kind, pkt.topic, "cut", pkt, names, len(pkt.raw))
            conn.abort()
            return
        if "drop" in actions:
            self._count("drop")
            self._note(conn.id, d, pkt.kind, pkt.topic, "drop", pkt, names, len(pkt.raw))
            return
        delay = sum(r.delay_ms for r in fired if r.action == "delay") / 1000.0
        copies = [pkt.raw]
        if "duplicate" in actions:
            copies.append(pkt.with_dup())
        applied = [a for a in ("delay", "duplicate", "reorder") if a in actions]
        for a in applied:
            self._count(a)
        if not applied:
            self._count("pass")
        self._note(conn.id, d, pkt.kind, pkt.topic, "+".join(applied) or "pass", pkt, names,
                   len(pkt.raw))
        if "reorder" in actions:
            hold = max(r.hold_ms for r in fired if r.action == "reorder") / 1000.0
            conn.held[d].append((copies, delay))
            assert self._loop is not None
            self._loop.call_later(hold, self._release_held, conn, d)
            return
        self._enqueue(conn, d, copies, delay)
        self._release_held(conn, d)

    def _release_held(self, conn: _Conn, d: str) -> None:
        held = conn.held[d]
        conn.held[d] = []
        for copies, delay in held:
            self._enqueue(conn, d, copies, delay)

    def _enqueue(self, conn: _Conn, d: str, chunks: list[bytes], delay: float) -> None:
        if conn.closed:
            return
        # FIFO per direction: a delayed packet holds back the ones behind it,
        # as on a slow link; reordering is its own action.
        release = max(conn.last_release[d], time.monotonic() + self._latency[d] + delay)
        conn.last_release[d] = release
        for c in chunks:
            conn.queues[d].put_nowait((release, c))

    async def _writer(self, conn: _Conn, d: str) -> None:
        q = conn.queues[d]
        w = conn.writers[d]
        assert self._passing is not None
        try:
            while True:
                release, data = await q.get()
                if data is None or conn.closed:
                    break
                wait = release - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                while not self._passing.is_set() and not conn.closed:
                    # Blackholed: hold the bytes, but notice an abort.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._passing.wait(), 0.05)
                await self._buckets[d].take(len(data))
                if conn.closed:
                    break
                w.write(data)
                await w.drain()
        except (OSError, RuntimeError):
            conn.abort()
            return
        if not conn.closed:
            with contextlib.suppress(OSError, RuntimeError):
                w.close()
