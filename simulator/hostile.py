"""A hostile device login, as faults for the simulator and load for the
hostile-device benchmark (``bench/hostile_device.py``).

What one ordinary device login can send: junk as fast
as the broker reads it (``Flood``), poison messages that once stopped the
gateway for good (``poison``), and connections that claim the gateway's
client id to take its session over (``Takeover``), and commands forged
without the platform's key (``forged_commands``), sent to the lockers both
from that login and through the platform's downlink queue. Run against an
outlet, a tester shows that the ledger of every well-behaved device stays
whole and that no forged command opens a door.

The flood writes pre-encoded MQTT 3.1.1 PUBLISH packets (QoS 0) straight to a
TCP socket, so it is limited by the broker, not by a client library.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from central.keys import KeyService
from protocol import envelope, topics
from protocol.errors import ProtocolError
from protocol.ids import format_event_id

ATTACK_INC = "0badc0de"
OVERSIZE = 70 * 1024  # over an outlet broker's 64 KiB max_packet_size
LIFETIME_S = 24 * 3600  # long enough that the gateway holds them to deliver, not as expired
# The forger's own "master": every key derived from it is wrong for every locker.
FORGER_MASTER = hashlib.sha256(b"not the platform's master key").digest()


def junk_pool(device: str, others: list[str], rng: random.Random, refused_only: bool = False
              ) -> list[tuple[str, bytes]]:
    """(channel, payload) pairs a broken or hostile ``device`` sends: bad
    bytes, truncated and non-UTF-8 JSON, boundary integers in every field,
    other devices' event ids, junk on the state, presence and ack channels.
    ``refused_only`` keeps only events the shared protocol module refuses
    (so none of them is a valid event that would reach the platform)."""

    def env(seq: int, **over: object) -> bytes:
        e = envelope.make(format_event_id(device, ATTACK_INC, seq), 1795881163, "locker.door", "custody",
                          {"door": 1}, boot=1)
        e.update(over)
        return json.dumps(e, separators=(",", ":")).encode()

    pool: list[tuple[str, bytes]] = []
    bounds: list[object] = [2**53 - 1, 2**53, -(2**53), 2**63, -(2**63), 2**64, 10**20, True, 1.5,
                            [1], {"a": 1}, "x" * 3000]
    for i, b in enumerate(bounds):
        for f in ("ts", "boot", "v", "id", "body", "cls", "type"):
            pool.append(("evt", env(i + 1, **{f: b})))
        pool.append(("evt", env(i + 1, body={"door": b})))
        pool.append(("ack", json.dumps({"id": b, "ok": True}).encode()))
        pool.append(("state", json.dumps({"v": 1, "ts": b}).encode()))
    if others:
        for seq in range(1, 50):  # other devices' ids: refused, never shadowing them
            pool.append(("evt", env(seq, id=format_event_id(rng.choice(others), "600d0001", seq))))
    for _ in range(100):
        good = env(rng.randrange(1, 10**6))
        cut = rng.randrange(len(good))
        pool.append(("evt", good[:cut]))
        pool.append(("evt", good[:cut] + b"\xc3\x28" + good[cut:]))
        pool.append(("evt", rng.randbytes(rng.randrange(0, 400))))
    pool += [("evt", b""), ("evt", b"NaN"), ("evt", b'{"a":NaN}'), ("evt", b"[" * 3000),
             ("evt", b"x" * 5000), ("state", b"x" * 17000), ("presence", b"\xff"), ("presence", b""),
             ("presence", b"ONLINE"), ("ack", b'{"id":[1]}'), ("ack", b"NaN"), ("state", b"[1,2]")]
    if refused_only:
        pool = [(ch, p) for ch, p in pool if ch != "evt" or not _valid_event(p, device)]
    rng.shuffle(pool)
    return pool


def _valid_event(payload: bytes, device: str) -> bool:
    try:
        envelope.decode_event(payload, device=device)
    except (ProtocolError, ValueError, TypeError, RecursionError):
        return False
    return True


# ------------------------------------------------------------- raw MQTT
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, d = n >> 7, n & 0x7F
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def connect_packet(client_id: str, user: str, password: str) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, keepalive 60 s."""
    var = _s(b"MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big")
    body = var + _s(client_id.encode()) + _s(user.encode()) + _s(password.encode())
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes) -> bytes:
    """MQTT 3.1.1 PUBLISH at QoS 0 (no packet id, nothing to wait for)."""
    body = _s(topic.encode()) + payload
    return b"\x30" + _varint(len(body)) + body


def raw_connection(host: str, port: int, user: str, password: str) -> socket.socket:
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(connect_packet("attacker", user, password))
    ack = s.recv(4)
    if ack[:1] != b"\x20" or ack[3:4] != b"\x00":
        s.close()
        raise ConnectionRefusedError(f"CONNACK {ack!r}")
    s.settimeout(None)
    return s


class Flood:
    """Junk from one login as fast as the broker takes it, in a thread,
    until ``stop()``; reconnects when the broker (or a takeover of its own
    id) drops it. ``sent`` counts messages written."""

    def __init__(self, host: str, port: int, outlet: str, device: str, password: str,
                 pool: list[tuple[str, bytes]], kind: str = "locker") -> None:
        self.addr = (host, port)
        self.user, self.password = device, password
        self.blob = b"".join(publish_packet(topics.build(outlet, kind, device, ch), p) for ch, p in pool)
        self.per_blob = len(pool)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"flood-{device}", daemon=True)

    def start(self) -> Flood:
        self._thread.start()
        return self

    def _run(self) -> None:
        conn: socket.socket | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = raw_connection(*self.addr, self.user, self.password)
                conn.sendall(self.blob)
                self.sent += self.per_blob
            except OSError:
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.01)
        if conn is not None:
            conn.close()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.sent


def publish_each(host: str, port: int, device: str, password: str, client_id: str,
                 messages: list[tuple[str, bytes]]) -> int:
    """Each (topic, payload) once at QoS 1 from the device's login; how many
    the broker acknowledged."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.username_pw_set(device, password)
    c.connect(host, port)
    c.loop_start()
    n = 0
    try:
        for topic, payload in messages:
            info = c.publish(topic, payload, qos=1)
            info.wait_for_publish(10)
            n += int(info.is_published())
    finally:
        c.disconnect()
        c.loop_stop()
    return n


def poison(host: str, port: int, outlet: str, device: str, password: str,
           pool: list[tuple[str, bytes]], kind: str = "locker") -> int:
    """Every message of ``pool`` once, at QoS 1 (the broker acks each): what
    once stopped the gateway for good. Returns how many the broker took."""
    msgs = [(topics.build(outlet, kind, device, ch), p) for ch, p in pool if len(p) <= 60 * 1024]
    return publish_each(host, port, device, password, f"{device}-poison", msgs)


class Takeover:
    """Every ``period_s``: a connection from the device's login that claims
    the gateway's client id with a clean session, then publishes over the
    broker's packet cap (so the broker drops it). With
    ``use_username_as_clientid`` the broker turns the id into the login's own."""

    def __init__(self, host: str, port: int, gateway_client_id: str, device: str, password: str,
                 topic: str, period_s: float = 0.5) -> None:
        self.args = (host, port)
        self.client_id, self.device, self.password, self.topic = gateway_client_id, device, password, topic
        self.period_s = period_s
        self.attempts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"takeover-{device}", daemon=True)

    def start(self) -> Takeover:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            t = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                            protocol=mqtt.MQTTv311)
            t.username_pw_set(self.device, self.password)
            try:
                t.connect(*self.args)
                t.loop_start()
                time.sleep(0.05)
                t.publish(self.topic, b"\x00" * OVERSIZE, qos=0)
                time.sleep(0.05)
                self.attempts += 1
            except OSError:
                pass
            finally:
                t.disconnect()
                t.loop_stop()
            self._stop.wait(self.period_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.attempts


def describe(pool: list[tuple[str, bytes]]) -> dict[str, Any]:
    """How many of each channel a pool holds (for logs and reports)."""
    out: dict[str, int] = {}
    for ch, _ in pool:
        out[ch] = out.get(ch, 0) + 1
    return out


def forged_commands(outlet: str, lockers: list[str], now: int) -> list[tuple[str, dict[str, Any]]]:
    """(locker, command) pairs a forger can make without the platform's
    master key, each an ``open`` (a door without a code): signed with a key
    from another master; the same claiming a newer key version; signed for
    the locker next door and sent to this one; no signature at all. Ids start
    ``forged-`` so a report can tell them apart."""
    ks, newer = KeyService(outlet, FORGER_MASTER), KeyService(outlet, FORGER_MASTER, kv=9)
    out: list[tuple[str, dict[str, Any]]] = []
    for n, lk in enumerate(lockers):
        other = lockers[(n + 1) % len(lockers)] if len(lockers) > 1 else lk + "x"
        args = {"compartment": 1}
        life = {"now": now, "lifetime_s": LIFETIME_S}
        out += [(lk, ks.command(lk, "open", args, f"forged-{lk}-key", **life)),
                (lk, newer.command(lk, "open", args, f"forged-{lk}-kv", **life)),
                (lk, ks.command(other, "open", args, f"forged-{lk}-dev", **life)),
                (lk, {"v": 1, "id": f"forged-{lk}-bare", "dev": lk, "op": "open", "args": args, "iat": now,
                      "exp": now + LIFETIME_S})]
    return out


def publish_commands(host: str, port: int, outlet: str, device: str, password: str,
                     cmds: list[tuple[str, dict[str, Any]]]) -> int:
    """Each command straight onto its locker's ``cmd`` topic from a device
    login, at QoS 1; how many the broker acknowledged (its ACL refuses to
    deliver a device's write to another device's topic, acked or not)."""
    msgs = [(topics.build(outlet, "locker", lk, "cmd"), json.dumps(cmd).encode()) for lk, cmd in cmds]
    return publish_each(host, port, device, password, f"{device}-forger", msgs)
