"""The MQTT fault proxy: framing on plain bytes, then every fault against a
real Mosquitto with real paho clients connected through the proxy."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.mqtt import packets as P
from gateway.broker import Mosquitto
from simulator.faultproxy import C2S, S2C, FaultProxy, MqttStream, Packet, Raw, Rule, topic_matches
from tests.conftest import PASSWORDS, Recorder

TOPIC = "pe/v1/o1/locker/lk01/evt"


# ---- pure framing

def _v5_connect() -> bytes:
    body = P._str("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60) + b"\x00" + P._str("c5")
    return P.packet(P.CONNECT, body)


def _v5_publish(topic: str, payload: bytes, qos: int, pid: int, alias: int | None) -> bytes:
    props = b"\x01\x01"  # payload format indicator
    if alias is not None:
        props += b"\x23" + struct.pack("!H", alias)
    props += b"\x26" + P._str("k") + P._str("v")  # a user property to walk past
    body = P._str(topic) + (struct.pack("!H", pid) if qos else b"") + bytes([len(props)]) + props
    return P.packet(P.PUBLISH | (qos << 1), body + payload)


def test_stream_decodes_v311_one_byte_at_a_time() -> None:
    s = MqttStream()
    data = (P.connect("c1", user="u", password="p") + P.publish(TOPIC, b"x" * 300, qos=1, pid=7, dup=True)
            + P.pingreq())
    got: list[Packet | Raw] = []
    for i in range(len(data)):
        got += s.feed(C2S, data[i:i + 1])
    assert [p.kind for p in got if isinstance(p, Packet)] == ["CONNECT", "PUBLISH", "PINGREQ"]
    pub = got[1]
    assert isinstance(pub, Packet)
    assert (pub.topic, pub.qos, pub.pid, pub.dup) == (TOPIC, 1, 7, True)
    assert b"".join(p.raw for p in got if isinstance(p, Packet)) == data
    ack = s.feed(S2C, P.puback(7))[0]
    assert isinstance(ack, Packet) and (ack.kind, ack.pid, ack.topic) == ("PUBACK", 7, TOPIC)


def test_stream_follows_v5_properties_and_topic_aliases() -> None:
    s = MqttStream()
    s.feed(C2S, _v5_connect())
    assert s.level == 5
    data = _v5_publish(TOPIC, b"a", 1, 9, alias=3) + _v5_publish("", b"b", 0, 0, alias=3)
    first, second = s.feed(S2C, data)
    assert isinstance(first, Packet) and isinstance(second, Packet)
    assert (first.topic, first.pid) == (TOPIC, 9)
    assert (second.topic, second.pid) == (TOPIC, None)


def test_duplicate_of_qos1_publish_carries_dup() -> None:
    pkt = MqttStream().feed(C2S, P.publish(TOPIC, b"x", qos=1, pid=1))[0]
    assert isinstance(pkt, Packet) and not pkt.dup
    again = MqttStream().feed(C2S, pkt.with_dup())[0]
    assert isinstance(again, Packet) and again.dup and again.pid == 1


def test_malformed_stream_turns_raw_and_keeps_every_byte() -> None:
    s = MqttStream()
    good = P.pingreq()
    out = s.feed(C2S, good + b"\x00garbage") + s.feed(C2S, b"more")
    assert isinstance(out[0], Packet)
    assert isinstance(out[1], Raw) and out[1].reason
    assert b"".join(o.raw if isinstance(o, Packet) else o.data for o in out) == good + b"\x00garbagemore"
    assert s.is_raw(C2S) and not s.is_raw(S2C)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6))
def test_stream_never_raises_and_loses_no_byte(data: bytes, cuts: list[int]) -> None:
    s = MqttStream(max_packet=256)
    points = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    out: list[Packet | Raw] = []
    for a, b in zip(points, points[1:], strict=False):
        out += s.feed(C2S, data[a:b])
    passed = b"".join(o.raw if isinstance(o, Packet) else o.data for o in out)
    assert data.startswith(passed)
    assert passed + bytes(s._buf[C2S]) == data


@pytest.mark.parametrize(("flt", "topic", "hit"), [
    ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False), ("a/#", "a", True),
    ("a/#", "a/b/c", True), ("#", "$SYS/x", False), ("+/b", "a/b", True), ("a/+/c", "a/x/d", False),
])
def test_topic_filters(flt: str, topic: str, hit: bool) -> None:
    assert topic_matches(flt, topic) is hit


def test_rules_fire_every_nth_and_with_seeded_probability() -> None:
    pkt = Packet(C2S, "PUBLISH", b"", topic=TOPIC)
    every = Rule("drop", kinds="PUBLISH", every=5)
    assert [every.decide(pkt) for _ in range(10)] == [False] * 4 + [True] + [False] * 4 + [True]
    a, b = Rule("drop", p=0.3, seed=4), Rule("drop", p=0.3, seed=4)
    assert [a.decide(pkt) for _ in range(50)] == [b.decide(pkt) for _ in range(50)]
    assert 0 < a.fired < 50
    assert not Rule("drop", direction=S2C).decide(pkt)
    assert not Rule("drop", topic="pe/+/o2/#").decide(pkt)
    with pytest.raises(ValueError):
        Rule("explode")


# ---- against a real broker

class Client(Recorder):
    """A paho client through the proxy that also records connects and disconnects."""

    def __init__(self, port: int, name: str, protocol: int) -> None:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol)
        super().__init__(c)
        c.username_pw_set("gw-o1", PASSWORDS["gw-o1"])
        c.reconnect_delay_set(1, 1)
        self.connects = 0
        self.disconnects = 0
        self.acked: list[int] = []
        self.connected = threading.Event()
        c.on_message = self.on_message
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        assert self.connected.wait(10), "no CONNACK through the proxy"

    def _on_connect(self, *args: object) -> None:
        with self.cond:
            self.connects += 1
            self.cond.notify_all()
        self.connected.set()

    def _on_disconnect(self, *args: object) -> None:
        with self.cond:
            self.disconnects += 1
            self.cond.notify_all()

    def _on_publish(self, client: object, userdata: object, mid: int, *rest: object) -> None:
        with self.cond:
            self.acked.append(mid)
            self.cond.notify_all()

    def until(self, pred: object, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():  # type: ignore[operator]
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def subscribe(self, topic: str = TOPIC, qos: int = 1) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos)
        assert done.wait(10)

    def close(self) -> None:
        self.client.disconnect()  # first, so the network thread ends at once
        self.client.loop_stop()


@pytest.fixture
def proxy(broker: Mosquitto) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", broker.port) as p:
        yield p


@pytest.fixture
def clients(proxy: FaultProxy, broker: Mosquitto) -> Iterator[object]:
    made: list[Client] = []

    def make(name: str, protocol: int = mqtt.MQTTv311, direct: bool = False) -> Client:
        c = Client(broker.port if direct else proxy.port, name, protocol)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def payloads(rec: Recorder) -> list[bytes]:
    with rec.cond:
        return [m.payload for m in rec.messages]


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_pass_through_qos0_and_qos1_both_directions(proxy: FaultProxy, clients: object,
                                                    protocol: int) -> None:
    sub = clients("sub", protocol)  # type: ignore[operator]
    sub.subscribe()
    pub = clients("pub", protocol)  # type: ignore[operator]
    pub.client.publish(TOPIC, b"q0", qos=0)
    pub.client.publish(TOPIC, b"q1", qos=1)
    assert sub.wait_for(lambda m: len(m) == 2)
    assert sorted(payloads(sub)) == [b"q0", b"q1"]
    assert pub.until(lambda: len(pub.acked) == 2)
    assert proxy.wait_log(lambda e: e.kind == "PUBACK" and e.direction == C2S)  # the subscriber's ack
    log = proxy.log()
    pubs = [(e.direction, e.qos) for e in log if e.kind == "PUBLISH"]
    assert sorted(pubs) == [(C2S, 0), (C2S, 1), (S2C, 0), (S2C, 1)]
    assert all(e.topic == TOPIC for e in log if e.kind in ("PUBLISH", "PUBACK"))
    assert {e.direction for e in log if e.kind == "PUBACK"} == {C2S, S2C}
    c = proxy.counters()
    assert c["connections"] == 2 and c.get("drop", 0) == 0 and c.get("malformed", 0) == 0


def test_dropped_puback_makes_the_client_resend_with_dup(proxy: FaultProxy, clients: object) -> None:
    sub = clients("sub", direct=True)  # type: ignore[operator]
    sub.subscribe()
    rule = proxy.add_rule(Rule("drop", direction=S2C, kinds="PUBACK", topic="pe/v1/+/locker/#", limit=1))
    pub = clients("pub")  # type: ignore[operator]
    mid = pub.client.publish(TOPIC, b"once", qos=1).mid
    assert proxy.wait_log(lambda e: e.kind == "PUBACK" and e.action == "drop")
    time.sleep(0.3)
    assert pub.acked == []  # the client never heard the ack
    proxy.cut()  # a paho client resends only on reconnect (MQTT 3.1.1 section 4.4)
    resent = proxy.wait_log(lambda e: e.kind == "PUBLISH" and e.direction == C2S and e.dup)
    assert resent is not None and resent.topic == TOPIC
    first = next(e for e in proxy.log() if e.kind == "PUBLISH" and e.direction == C2S)
    assert resent.pid == first.pid and not first.dup
    assert pub.until(lambda: pub.acked == [mid])
    assert rule.fired == 1 and proxy.counters()["drop"] == 1
    assert sub.wait_for(lambda m: len(m) >= 2)  # QoS 1 is at least once: the broker delivered both


def test_duplicated_publish_reaches_the_subscriber_twice(proxy: FaultProxy, clients: object) -> None:
    sub = clients("sub")  # type: ignore[operator]
    sub.subscribe(qos=0)
    proxy.add_rule(Rule("duplicate", direction=S2C, kinds="PUBLISH", topic=TOPIC))
    pub = clients("pub", direct=True)  # type: ignore[operator]
    pub.client.publish(TOPIC, b"twice", qos=0)
    assert sub.wait_for(lambda m: len(m) == 2)
    time.sleep(0.2)
    assert payloads(sub) == [b"twice", b"twice"]
    assert proxy.counters()["duplicate"] == 1


def test_delay_and_latency_are_measurable(proxy: FaultProxy, clients: object) -> None:
    sub = clients("sub", direct=True)  # type: ignore[operator]
    sub.subscribe(qos=0)
    pub = clients("pub")  # type: ignore[operator]

    def trip(body: bytes) -> float:
        t0 = time.monotonic()
        pub.client.publish(TOPIC, body, qos=0)
        assert sub.wait_for(lambda m: any(x.payload == body for x in m))
        return time.monotonic() - t0

    base = trip(b"base")
    assert base < 0.2
    proxy.add_rule(Rule("delay", direction=C2S, kinds="PUBLISH", delay_ms=300))
    delayed = trip(b"delayed")
    assert 0.29 <= delayed < 1.0
    proxy.clear_rules()
    proxy.set_latency(150, C2S)
    slow = trip(b"latency")
    assert 0.14 <= slow < 0.8


def test_reorder_swaps_a_packet_with_the_next(proxy: FaultProxy, clients: object) -> None:
    sub = clients("sub", direct=True)  # type: ignore[operator]
    sub.subscribe(qos=0)
    proxy.add_rule(Rule("reorder", direction=C2S, kinds="PUBLISH", limit=1))
    pub = clients("pub")  # type: ignore[operator]
    for body in (b"1", b"2", b"3"):
        pub.client.publish(TOPIC, body, qos=0)
    assert sub.wait_for(lambda m: len(m) == 3)
    assert payloads(sub) == [b"2", b"1", b"3"]
    assert proxy.counters()["reorder"] == 1


def test_held_packet_goes_anyway_when_nothing_follows(proxy: FaultProxy, clients: object) -> None:
    sub = clients("sub", direct=True)  # type: ignore[operator]
    sub.subscribe(qos=0)
    proxy.add_rule(Rule("reorder", direction=C2S, kinds="PUBLISH", hold_ms=200))
    pub = clients("pub")  # type: ignore[operator]
    t0 = time.monotonic()
    pub.client.publish(TOPIC, b"alone", qos=0)
    assert sub.wait_for(lambda m: len(m) == 1)
    assert time.monotonic() - t0 >= 0.19


def test_cut_closes_the_connection_and_qos1_survives(proxy: FaultProxy, clients: object) -> None:
    sub = clients("sub", direct=True)  # type: ignore[operator]
    sub.subscribe()
    proxy.add_rule(Rule("cut", direction=C2S, kinds="PUBLISH", topic=TOPIC, limit=1))
    pub = clients("pub")  # type: ignore[operator]
    pub.client.publish(TOPIC, b"cut", qos=1)
    assert pub.until(lambda: pub.disconnects >= 1)
    assert proxy.counters()["cut"] == 1
    assert pub.until(lambda: pub.connects >= 2 and len(pub.acked) == 1)  # resent after reconnect
    assert sub.wait_for(lambda m: [x.payload for x in m] == [b"cut"])


def test_down_refuses_and_up_lets_clients_back(proxy: FaultProxy, clients: object) -> None:
    pub = clients("pub")  # type: ignore[operator]
    proxy.down()
    assert pub.until(lambda: pub.disconnects >= 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
    assert proxy.state == "refuse"
    proxy.up()
    assert pub.until(lambda: pub.connects >= 2, timeout=5)
    assert proxy.counters()["down"] == 1


def test_blackhole_holds_bytes_until_up(proxy: FaultProxy, clients: object) -> None:
    sub = clients("sub", direct=True)  # type: ignore[operator]
    sub.subscribe(qos=0)
    pub = clients("pub")  # type: ignore[operator]
    proxy.down("blackhole")
    pub.client.publish(TOPIC, b"held", qos=0)
    assert not sub.wait_for(lambda m: len(m) > 0, timeout=0.5)
    proxy.up()
    assert sub.wait_for(lambda m: len(m) == 1)


def test_flap_goes_down_and_up_repeatedly(proxy: FaultProxy) -> None:
    proxy.flap(200, duty=0.5)
    time.sleep(0.75)
    proxy.up()
    c = proxy.counters()
    assert c["down"] >= 3 and c["up"] >= 3
    socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()


def test_bandwidth_cap_is_roughly_kept(proxy: FaultProxy, clients: object) -> None:
    sub = clients("sub", direct=True)  # type: ignore[operator]
    sub.subscribe(qos=0)
    pub = clients("pub")  # type: ignore[operator]
    proxy.set_bandwidth(10_000, C2S)
    t0 = time.monotonic()
    for i in range(15):
        pub.client.publish(TOPIC, bytes([i]) * 1000, qos=0)
    assert sub.wait_for(lambda m: len(m) == 15)
    took = time.monotonic() - t0
    assert 1.2 <= took <= 4.0, took  # 15 kB at 10 kB/s, less a 1 kB burst


def test_garbage_bytes_do_not_crash_the_proxy(proxy: FaultProxy, clients: object) -> None:
    for junk in (b"\x00\x01\x02garbage", b"\x30\xff\xff\xff\xff\x7f", b"\x10" + b"\xff" * 5000):
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        s.sendall(junk)
        s.settimeout(2)
        try:
            while s.recv(1024):
                pass
        except OSError:
            pass
        s.close()
    deadline = time.monotonic() + 5
    while proxy.counters().get("malformed", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.counters()["malformed"] >= 3
    assert any(e.kind == "MALFORMED" for e in proxy.log())
    sub = clients("sub")  # type: ignore[operator]
    sub.subscribe(qos=0)
    pub = clients("pub")  # type: ignore[operator]
    pub.client.publish(TOPIC, b"still here", qos=0)
    assert sub.wait_for(lambda m: len(m) == 1)
