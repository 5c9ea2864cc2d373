"""Hostile-device suite: property-based
fuzzing of every channel a device login can write, against ONE running
gateway and a real Mosquitto.

Why one gateway for the whole module: the promise under test is that *no
sequence* of hostile messages stops the gateway or costs another device an
event, so the attacks accumulate in one process and one database, exactly as
they would on site; it also keeps the run short (starting Mosquitto and the
gateway per hypothesis example would take minutes).

Each test interleaves every hostile message with a well-formed event from
another locker (``lk02``/``lk03``) and then checks, once the gateway has
processed (committed and acked) everything that was published:

* the gateway process is alive;
* every well-formed event of the other devices is stored exactly once, with
  the very bytes its device sent (so an attacker claiming another device's
  *future* event id cannot shadow it);
* refusals are counted: the ``rejected`` table grows, and at the end the
  gateway's final metrics line has the matching ``rejected_*`` counters;
* no storage fault was reported (``store_failed``) for what are content
  problems.

Messages that the gateway refused only because an unexpected exception was
isolated (code ``unprocessable``) are collected and reported by the last
test: the issue asks that types be checked before SQL, so such a refusal is
a gap in validation even though the gateway survived it.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.broker import Account, Mosquitto
from protocol import envelope, topics
from protocol.ids import format_event_id
from simulator.gateway_process import GatewayProcess, write_config

pytestmark = [pytest.mark.hostile, pytest.mark.serial]  # a flood takes the CPU from its neighbours

OUTLET = "o1"
GOOD = ("lk02", "lk03")
GOOD_INC = "600d0001"
ATTACK_INC = "0badc0de"
PASSWORDS = {"gw-o1": "gw-secret", "lk01": "lk01-pw", "lk02": "lk02-pw", "lk03": "lk03-pw",
             "lk09": "lk09-pw", "hh01": "hh01-pw"}
KINDS = {"gw-o1": "gateway", "lk01": "locker", "lk02": "locker", "lk03": "locker",
         "lk09": "locker", "hh01": "handheld"}
FUZZ_MAX_BYTES = 60 * 1024  # the broker's max_packet_size is 64 KiB
FUZZ = settings(max_examples=100, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])


# ---------------------------------------------------------------- the rig
class Device:
    """A paho login with its loop running, publishing QoS 1 and waiting for
    the broker's PUBACK so every counted message really reached the broker."""

    def __init__(self, port: int, user: str, client_id: str | None = None) -> None:
        self.user = user
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"fz-{user}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, PASSWORDS[user])
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.wait(10), f"{user}: no CONNACK"

    def publish(self, channel: str, payload: bytes) -> None:
        topic = topics.build(OUTLET, KINDS[self.user], self.user, channel)
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Rig:
    """One Mosquitto (provisioned config: client id = username) and one
    gateway for the module, plus the attacking and the well-behaved logins."""

    broker: Mosquitto
    gw: GatewayProcess
    db: Path
    devices: dict[str, Device]
    published: int = 0  # messages on device channels that the broker acked
    good: dict[str, bytes] = field(default_factory=dict)  # event id -> the bytes sent
    good_seq: int = 0
    attacks: int = 0

    def attack(self, user: str, channel: str, payload: bytes) -> None:
        # Over the broker's packet cap the *broker* disconnects the sender and
        # the gateway never sees it: that is test_connection_level_attacks'
        # subject. Here the payload is cut below the cap so it reaches the gateway.
        payload = payload[:FUZZ_MAX_BYTES]
        self.devices[user].publish(channel, payload)
        self.published += 1
        self.attacks += 1

    def send_good(self) -> None:
        """One well-formed custody event from the next well-behaved locker."""
        self.good_seq += 1
        dev = GOOD[self.good_seq % len(GOOD)]
        eid = format_event_id(dev, GOOD_INC, self.good_seq)
        data = envelope.encode(envelope.make(eid, 1795881163, "locker.deposit", "custody",
                                             {"door": self.good_seq % 40, "parcel": "RB123456785GB"},
                                             boot=1))
        self.devices[dev].publish("evt", data)
        self.good[eid] = data
        self.published += 1

    def processed(self) -> int:
        """Messages the gateway has committed and acked (its ``committed`` lines)."""
        return sum(int(d.get("n", 0)) for d in list(self.gw.lines) if d.get("evt") == "committed")

    def rejected_rows(self) -> list[tuple[str, str, str]]:
        with sqlite3.connect(self.db, timeout=10) as con:
            return con.execute("SELECT topic, code, detail FROM rejected ORDER BY rowid").fetchall()

    def settle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.processed() < self.published:
            assert self.gw.proc.poll() is None, f"the gateway exited ({self.gw.proc.returncode})"
            assert time.monotonic() < deadline, \
                f"gateway processed {self.processed()} of {self.published} messages"
            time.sleep(0.05)

    def check(self, rejected_before: int, min_new_rejects: int = 1) -> None:
        """The three promises, after everything published so far is processed."""
        self.settle()
        assert self.gw.proc.poll() is None, "the gateway exited"
        with sqlite3.connect(self.db, timeout=10) as con:
            rows = con.execute(
                "SELECT id, payload FROM events WHERE device IN (?, ?)", GOOD).fetchall()
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids)), "a well-formed event was stored twice"
        stored = {r[0]: bytes(r[1]) for r in rows}
        missing = sorted(set(self.good) - set(stored))
        assert not missing, f"{len(missing)} well-formed events lost, e.g. {missing[:5]}"
        shadowed = [i for i in self.good if stored[i] != self.good[i]]
        assert not shadowed, f"events stored with another sender's bytes: {shadowed[:5]}"
        assert set(stored) == set(self.good), "events stored under a well-behaved device's name " \
                                              "that it never sent"
        assert len(self.rejected_rows()) >= rejected_before + min_new_rejects, "refusals not counted"
        failed = [d for d in self.gw.lines if d.get("evt") == "store_failed"]
        assert not failed, f"content reported as a storage fault: {failed[:3]}"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """Started once per module: the fuzzing shares it (see the module docstring)."""
    tmp = tmp_path_factory.mktemp("hostile")
    accounts = [Account(u, PASSWORDS[u], OUTLET, KINDS[u]) for u in PASSWORDS]
    broker = Mosquitto(tmp / "broker", accounts, username_as_clientid=True)
    broker.start()
    conf = write_config(tmp / "gateway.toml", OUTLET, broker.port, "gw-o1", "gw-secret")
    # Every hostile message must reach the gateway's checks here, so a
    # fuzzing login is never held for flooding (that has its own tests).
    with conf.open("a", encoding="utf-8") as f:
        f.write("\n[quarantine]\nmin_refused = 1000000000\n")
    gw = GatewayProcess(conf)
    devices: dict[str, Device] = {}
    try:
        gw.wait_for("gateway_started")
        for user in ("lk01", "lk02", "lk03", "hh01"):
            devices[user] = Device(broker.port, user)
        yield Rig(broker, gw, tmp / "gateway.db", devices)
    finally:
        for d in devices.values():
            d.close()
        if gw.proc.poll() is None:
            gw.stop()
        broker.kill()


# ---------------------------------------------------------- strategies
BOUNDARY_INTS = [2**53 - 1, -(2**53 - 1), 2**53, -(2**53), 2**53 + 1, 2**63 - 1, 2**63, -(2**63),
                 -(2**63) - 1, 2**64, 10**20, -(10**20), 10**400, 0, -1, 1]
HUGE = [4000, 4097, 17000, 40000]  # below the broker's 64 KiB packet cap: the gateway must refuse


def nest(depth: int, leaf: Any = 1) -> Any:
    v = leaf
    for i in range(depth):
        v = [v] if i % 2 else {"n": v}
    return v


scalars = st.one_of(
    st.sampled_from(BOUNDARY_INTS),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(),  # NaN and +-Infinity are written as the bare tokens json emits
    st.text(max_size=20),
    st.sampled_from(HUGE).map(lambda n: "x" * n),
    st.integers(1, 40).map(nest),
)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                      | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=8)


def to_json(obj: Any) -> bytes:
    """Plain json (not the canonical encoder, which would refuse most of this)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


RAW = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"NaN", b"-Infinity", b"1e400", b"-0", b"null", b"[]", b"{}", b"\xff\xfe",
                     b'{"a":NaN}', b'{"a":1e999}', b'{"a":1,"a":2}', b"\xef\xbb\xbf{}",
                     b'{"a":"\\ud800"}', b"{" * 5000, b"[" * 100 + b"]" * 100,
                     b'{"v":1,"id":"lk01:0badc0de:1"' + b" " * 5000 + b"}"]),
    st.sampled_from(HUGE).map(lambda n: b"\x80" * n),
)


def mangled(doc: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """A JSON document, sometimes truncated or with a byte that is not UTF-8."""
    def mangle(data: bytes, how: int, at: int) -> bytes:
        at = at % (len(data) + 1)
        if how == 1:
            return data[:at]
        if how == 2:
            return data[:at] + b"\xc3\x28" + data[at:]
        return data
    return st.builds(mangle, doc.map(to_json), st.sampled_from([0, 0, 0, 1, 2]), st.integers(0, 10**6))


def event_ids(dev: str) -> st.SearchStrategy[Any]:
    """Ids an attacker ``dev`` might try: its own, another device's (also the
    well-behaved lockers' *next* ids, to try to shadow them), badly formed."""
    return st.one_of(
        st.integers(1, 10**6).map(lambda s: format_event_id(dev, ATTACK_INC, s)),
        st.tuples(st.sampled_from(GOOD), st.integers(1, 600)).map(
            lambda t: format_event_id(t[0], GOOD_INC, t[1])),
        st.sampled_from([f"{dev}:{ATTACK_INC}:{2**53}", f"{dev}:{ATTACK_INC}:{10**20}",
                         f"{dev}:{ATTACK_INC}:-1", f"{dev}:{ATTACK_INC}:0", f"{dev}::1", f"{dev}:ZZZZZZZZ:1",
                         f"{dev}:{ATTACK_INC}:1:2", f"{dev}:{ATTACK_INC}:١٢", dev, "", ":::",
                         f"{dev}:{ATTACK_INC}: 1", f"{dev}:0BADC0DE:1", "gw-o1:00000000:1"]),
        values,
    )


ENV_FIELDS = ["v", "id", "ts", "type", "cls", "body", "boot", "extra"]


@st.composite
def envelopes(draw: st.DrawFn, dev: str, body: st.SearchStrategy[Any] | None = None,
              etype: str = "locker.door") -> dict[str, Any]:
    """A valid envelope with some of its fields replaced by hostile values or removed."""
    env = envelope.make(format_event_id(dev, ATTACK_INC, draw(st.integers(1, 10**6))), 1795881163,
                        etype, "custody", draw(body) if body is not None else {"door": 1}, boot=1)
    env["id"] = draw(event_ids(dev))
    for f in draw(st.lists(st.sampled_from(ENV_FIELDS), max_size=3, unique=True)):
        if draw(st.integers(0, 5)) == 0:
            env.pop(f, None)
        else:
            env[f] = draw(values)
    return env


def evt_payloads(dev: str) -> st.SearchStrategy[bytes]:
    return st.one_of(mangled(envelopes(dev)), RAW)


commands = st.fixed_dictionaries(
    {},
    optional={"id": st.one_of(st.text(max_size=12), values), "dev": st.one_of(st.sampled_from(
        ["lk01", "lk02", "lk03", "gw-o1", ""]), values), "op": st.one_of(st.just("open"), values),
        "exp": st.one_of(st.sampled_from(BOUNDARY_INTS), values), "args": values, "sig": values},
)
forward_bodies = st.fixed_dictionaries(
    {"kind": st.one_of(st.sampled_from(["locker", "handheld", "gateway", ""]), values),
     "cmd": st.one_of(commands, values)})


# ---------------------------------------------------------------- tests
def fuzz(rig: Rig, user: str, channel: str, payloads: st.SearchStrategy[bytes],
         known_bad: list[bytes], min_new_rejects: int) -> None:
    """Publish each generated payload on ``user``'s ``channel``, each followed
    by a well-formed event from another device; then check the promises."""
    before = len(rig.rejected_rows())

    @FUZZ
    @given(payload=payloads)
    def run(payload: bytes) -> None:
        rig.attack(user, channel, payload)
        rig.send_good()

    for bad in known_bad:  # explicit boundary cases, always sent whatever hypothesis draws
        run = example(payload=bad)(run)
    run()
    rig.check(before, min_new_rejects)


def raw_env(dev: str, seq: int, **over: Any) -> bytes:
    env = envelope.make(format_event_id(dev, ATTACK_INC, seq), 1795881163, "locker.door", "custody",
                        {"door": 1}, boot=1)
    env.update(over)
    return to_json(env)


EVT_BAD = [
    raw_env("lk01", 1, ts=10**20), raw_env("lk01", 2, ts=2**53), raw_env("lk01", 3, ts=True),
    raw_env("lk01", 4, body={"door": 2**64}), raw_env("lk01", 5, boot=-(2**70)),
    raw_env("lk01", 6, ts=2**63), raw_env("lk01", 7, ts=-(2**63)), raw_env("lk01", 8, v=True),
    raw_env("lk01", 9, ts=1.5), raw_env("lk01", 10, body={"x": float("nan")}),
    raw_env("lk01", 11, type=["locker.door"]), raw_env("lk01", 12, cls={"a": 1}),
    raw_env("lk01", 13, body={"s": "x" * 5000}), raw_env("lk01", 14, body=nest(30)),
    raw_env("lk01", 15, id=f"lk02:{GOOD_INC}:3"), raw_env("lk01", 16, id="lk01:0badc0de"),
    raw_env("lk01", 17, id=f"lk01:{ATTACK_INC}:{2**64}"), raw_env("lk01", 18, id=[1]),
    b"", b"\xff\xfe\x00", b"NaN",
]


def test_locker_evt_fuzz(rig: Rig) -> None:
    fuzz(rig, "lk01", "evt", evt_payloads("lk01"), EVT_BAD, len(EVT_BAD))


STATE_BAD = [b'{"v":1,"ts":100000000000000000000}', b'{"v":1,"ts":9007199254740992}', b"[1,2]",
             b"", b"\xff", b"NaN", b'{"a":NaN}', to_json({"s": "x" * 17000}), to_json(nest(40)),
             b'{"v":true,"ts":-9223372036854775808}']


def test_locker_state_fuzz(rig: Rig) -> None:
    docs = st.one_of(values, st.dictionaries(st.sampled_from(["v", "ts", "doors", "fw", "lang"]),
                                             values, max_size=5))
    fuzz(rig, "lk01", "state", st.one_of(mangled(docs), RAW), STATE_BAD, 6)


PRESENCE_BAD = [b"", b"\xff\xfe", b"ONLINE", b"online\x00", b"online" * 3000, b'"online"', b"1", b"NaN"]


def test_locker_presence_fuzz(rig: Rig) -> None:
    payloads = st.one_of(st.sampled_from([b"online", b"offline"]), mangled(values), RAW,
                         st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")))
    fuzz(rig, "lk01", "presence", payloads, PRESENCE_BAD, len(PRESENCE_BAD))


ACK_BAD = [b'{"id":[1]}', b'{"id":{"a":1},"ok":true}', b'{"id":"c1","code":7,"ok":"yes"}',
           b'{"id":"c1","ts":100000000000000000000}', b'{"id":9223372036854775808}',
           b'{"id":true}', b'{"id":"c1","ok":NaN}', b"", b"\xff", b"[]", to_json({"id": "x" * 17000})]


def test_locker_ack_fuzz(rig: Rig) -> None:
    acks = st.fixed_dictionaries({}, optional={
        "id": st.one_of(st.text(max_size=10), values), "ok": st.one_of(st.booleans(), values),
        "code": values, "ts": st.one_of(st.sampled_from(BOUNDARY_INTS), values),
        "detail": values, "v": values})
    fuzz(rig, "lk01", "ack", st.one_of(mangled(acks), RAW), ACK_BAD, 6)


def forward(seq: int, body: Any) -> bytes:
    env = envelope.make(format_event_id("hh01", ATTACK_INC, seq), 1795881163,
                        "handheld.forward_command", "custody", body, boot=1)
    return to_json(env)


FORWARD_BAD = [
    forward(1, {"kind": "locker", "cmd": {"id": "f1", "dev": "lk01", "op": "open", "exp": 2**64}}),
    forward(2, {"kind": "locker", "cmd": {"id": ["x"], "dev": "lk01", "op": "open", "exp": 1}}),
    forward(3, {"kind": [1], "cmd": {"id": "f3", "dev": "lk01", "op": "open", "exp": 1}}),
    forward(4, {"kind": "locker", "cmd": {"id": "f4", "dev": "lk01", "op": "open", "exp": 10**20}}),
    forward(5, {"kind": "locker", "cmd": {"id": "f5", "dev": "lk01", "op": "open", "exp": True}}),
    forward(6, {"kind": "locker", "cmd": "open"}),
    forward(7, {"kind": "locker", "cmd": {"id": "f7", "dev": {"x": 1}, "op": [], "exp": 2**53}}),
]


def test_handheld_forward_fuzz(rig: Rig) -> None:
    """Forwarded commands: the event may be kept, its command refused; either
    way the gateway stays up and the lockers' events are stored."""
    forward_before = sum(1 for d in rig.gw.lines if d.get("evt") in ("forward_refused", "forwarded"))
    payloads = st.one_of(
        mangled(envelopes("hh01", body=forward_bodies, etype="handheld.forward_command")),
        st.builds(lambda s, b: forward(s, b), st.integers(1, 10**6), forward_bodies).map(bytes),
        RAW)
    # Refusals here land partly in `rejected` (whole event) and partly in
    # forward_refused (event kept, command refused): count both below.
    fuzz(rig, "hh01", "evt", payloads, FORWARD_BAD, 1)
    outcomes = [d for d in rig.gw.lines if d.get("evt") in ("forward_refused", "forwarded")]
    assert len(outcomes) > forward_before
    assert any(d["evt"] == "forward_refused" for d in outcomes[forward_before:])


@pytest.mark.slow
def test_connection_level_attacks(rig: Rig) -> None:
    """A packet over the broker's max_packet_size and client-id takeovers of
    the gateway's and another locker's id: the broker absorbs them (the
    attacker is disconnected, the client id is the login), so the gateway
    keeps its session and nothing the others send is lost."""
    before = len(rig.rejected_rows())
    for i in range(5):
        rig.send_good()
        big = Device(rig.broker.port, "lk09")
        big.client.publish(topics.build(OUTLET, "locker", "lk09", "evt"), b"x" * (70 * 1024), qos=0)
        time.sleep(0.05)
        big.close()
        for victim in ("gw-o1", "lk02", f"fz-lk0{2 + i % 2}"):
            thief = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=victim,
                                protocol=mqtt.MQTTv5)
            thief.username_pw_set("lk09", PASSWORDS["lk09"])
            thief.connect("127.0.0.1", rig.broker.port, clean_start=True)
            thief.loop_start()
            time.sleep(0.05)
            thief.disconnect()
            thief.loop_stop()
            rig.send_good()
    rig.check(before, 0)


def _mqtt_str(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def _packet(first: int, body: bytes) -> bytes:
    n, out = len(body), bytearray([first])
    while True:
        n, d = n >> 7, n & 0x7F
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out) + body


def raw_flood(port: int, user: str, seconds: float) -> int:
    """QoS 0 junk written straight to a TCP socket from one login, as fast as
    the broker reads it (a client library would be the bottleneck)."""
    topic = topics.build(OUTLET, "locker", user, "evt").encode()
    junk = [b"junk", raw_env(user, 1, ts=10**20), b"\xff\xfe", b"{" * 200, raw_env(user, 2, id=[1])]
    blob = b"".join(_packet(0x30, _mqtt_str(topic) + j) for j in junk) * 200
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    connect = _mqtt_str(b"MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big")
    connect += _mqtt_str(b"flood") + _mqtt_str(user.encode()) + _mqtt_str(PASSWORDS[user].encode())
    sock.sendall(_packet(0x10, connect))
    assert sock.recv(4)[3:4] == b"\x00", "flood login refused"
    sent, until = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < until:
            sock.sendall(blob)
            sent += 5 * 200
    finally:
        sock.close()
    return sent


def test_a_junk_flood_from_one_login_costs_no_other_device_an_event(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Plain paho devices that do not re-send: every event the broker
    PUBACKed must be stored. Before the quarantine, the flood filled the
    gateway's session queue at Mosquitto and Mosquitto dropped events it had
    already acked to lk02 (0 of them survived some runs). The gateway now
    holds the flooding login off its subscriptions and says so in an alarm.
    Own broker and gateway: a flood would make the shared rig's checks
    meaningless."""
    tmp = tmp_path_factory.mktemp("flood")
    accounts = [Account(u, PASSWORDS[u], OUTLET, KINDS[u]) for u in PASSWORDS]
    broker = Mosquitto(tmp / "broker", accounts, username_as_clientid=True)
    broker.start()
    gw = GatewayProcess(write_config(tmp / "gateway.toml", OUTLET, broker.port, "gw-o1", "gw-secret",
                                     acl_file=broker.directory / "acl"))
    good = None
    try:
        gw.wait_for("gateway_started")
        good = Device(broker.port, "lk02")
        acked: list[str] = []
        stop = threading.Event()

        def steady() -> None:  # 200 events/s, each PUBACKed by the broker
            seq = 0
            while not stop.is_set():
                seq += 1
                eid = format_event_id("lk02", GOOD_INC, seq)
                good.publish("evt", envelope.encode(envelope.make(
                    eid, 1795881163, "locker.deposit", "custody", {"door": 1}, boot=1)))
                acked.append(eid)
                time.sleep(0.005)

        th = threading.Thread(target=steady)
        th.start()
        try:
            raw_flood(broker.port, "lk09", 4.0)
        finally:
            stop.set()
            th.join(15)
        # Settled when everything is stored, or the gateway has committed
        # nothing for 3 s (the broker has nothing more for it).
        deadline = time.monotonic() + 60
        stored: set[str] = set()
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with sqlite3.connect(tmp / "gateway.db", timeout=10) as con:
                stored = {r[0] for r in con.execute("SELECT id FROM events WHERE device = 'lk02'")}
            if set(acked) <= stored:
                break
            commits = sum(1 for d in list(gw.lines) if d.get("evt") == "committed")
            if commits != seen:
                seen, quiet_since = commits, time.monotonic()
            elif time.monotonic() - quiet_since > 3:
                break
            time.sleep(0.25)
        assert gw.proc.poll() is None, "the gateway exited"
        lost = sorted(set(acked) - stored)
        assert not lost, f"{len(lost)} of {len(acked)} broker-acked events never stored"
        held = [d for d in list(gw.lines) if d.get("evt") == "device_quarantined"]
        assert [d["device"] for d in held] == ["lk09"], held
        with sqlite3.connect(tmp / "gateway.db", timeout=10) as con:
            alarms = [json.loads(p)["body"] for (p,) in con.execute(
                "SELECT payload FROM events WHERE type = 'gateway.device_quarantined'")]
        assert [(a["device"], a["alarm"]) for a in alarms] == [("lk09", "device_quarantined")]
        assert alarms[0]["refused"] >= 200 and alarms[0]["for_s"] == 30
    finally:
        if good is not None:
            good.close()
        gw.kill()
        broker.kill()


def test_refusals_are_counted_in_the_final_metrics(rig: Rig) -> None:
    """Last in the module: stop the gateway and compare its final metrics
    line with the ``rejected`` table; report isolated unexpected exceptions."""
    rig.settle()
    rows = rig.rejected_rows()
    last = rig.gw.stop()
    by_code: dict[str, int] = {}
    for _, code, _ in rows:
        by_code[code] = by_code.get(code, 0) + 1
    counted = {k.removeprefix("rejected_"): v for k, v in last.items() if k.startswith("rejected_")}
    assert counted == by_code
    assert last.get("received", 0) >= rig.published
    assert last.get("stored", 0) >= len(rig.good)
    unexpected = [(t, d) for t, c, d in rows if c == "unprocessable"]
    assert not unexpected, ("messages refused only because an unexpected exception was isolated "
                            f"(validation gap): {unexpected[:10]}")



@pytest.mark.mpy
@pytest.mark.hostile
def test_a_junk_flood_costs_confirming_devices_no_event(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same raw flood, against devices that speak the protocol: the
    firmware's sender on the unix port keeps every event until the gateway
    confirms it. Whatever the broker drops under the flood is sent again, so
    every event is stored exactly once, end to end."""
    from tests.confirm_rig import assert_each_once, drained, publishers

    tmp = tmp_path_factory.mktemp("flood_confirm")
    accounts = [Account(u, PASSWORDS[u], OUTLET, KINDS[u]) for u in PASSWORDS]
    broker = Mosquitto(tmp / "broker", accounts, username_as_clientid=True)
    broker.start()
    gw = GatewayProcess(write_config(tmp / "gateway.toml", OUTLET, broker.port, "gw-o1", "gw-secret"))
    procs: list = []
    try:
        gw.wait_for("gateway_started")
        devices, n = list(GOOD), 300
        procs = publishers(tmp, broker.port, devices, n, spacing_ms=5)
        junk = raw_flood(broker.port, "lk09", 4.0)
        results = drained(procs, 120)
        assert all(r.get("evt") == "drained" for r in results), results
        assert gw.proc.poll() is None, "the gateway exited"
    finally:
        for p in procs:
            p.kill()
            p.wait()
        gw.kill()
        broker.kill()
    assert junk > 10000  # the flood really happened
    assert_each_once(tmp / "gateway.db", devices, n)


# ------------------------------------------------------------- quarantine
def _quarantine_rig(tmp: Path, hold_s: int, acl: bool = True) -> tuple[Mosquitto, Path]:
    accounts = [Account(u, PASSWORDS[u], OUTLET, KINDS[u]) for u in PASSWORDS]
    broker = Mosquitto(tmp / "broker", accounts, username_as_clientid=True)
    broker.start()
    conf = write_config(tmp / "gateway.toml", OUTLET, broker.port, "gw-o1", "gw-secret",
                        acl_file=broker.directory / "acl" if acl else None)
    with conf.open("a", encoding="utf-8") as f:
        f.write(f"\n[quarantine]\nfirst_s = {hold_s}\nmax_s = {hold_s * 4}\n")
    return broker, conf


def _good_event(dev: str, seq: int) -> tuple[str, bytes]:
    eid = format_event_id(dev, GOOD_INC, seq)
    return eid, envelope.encode(envelope.make(eid, 1795881163, "locker.deposit", "custody",
                                              {"door": seq % 40}, boot=1))


def _stored(db: Path, ids: list[str], timeout: float = 20) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db, timeout=10) as con:
            have = {r[0] for r in con.execute(
                f"SELECT id FROM events WHERE id IN ({','.join('?' * len(ids))})", ids)}
        if have == set(ids) or time.monotonic() > deadline:
            return have
        time.sleep(0.1)


def test_a_held_device_is_let_back_in_and_held_again_longer(tmp_path: Path) -> None:
    """While held, the flooding login's own valid events do not reach the
    gateway (it keeps them until confirmed); after the hold its events are
    stored again, and a second flood earns a hold twice as long."""
    broker, conf = _quarantine_rig(tmp_path, 2)
    gw = GatewayProcess(conf)
    lk09 = lk02 = None
    try:
        gw.wait_for("gateway_started")
        raw_flood(broker.port, "lk09", 1.0)
        first = gw.wait_for("device_quarantined")
        assert (first["device"], first["for_s"], first["strikes"]) == ("lk09", 2, 1)
        lk09, lk02 = Device(broker.port, "lk09"), Device(broker.port, "lk02")
        held_id, held_data = _good_event("lk09", 1)
        lk09.publish("evt", held_data)  # the broker acks it and has nobody to give it to
        other_id, other_data = _good_event("lk02", 1)
        lk02.publish("evt", other_data)
        assert _stored(tmp_path / "gateway.db", [other_id]) == {other_id}
        gw.wait_for("device_released", timeout=10)
        assert _stored(tmp_path / "gateway.db", [held_id], timeout=1) == set()
        again_id, again_data = _good_event("lk09", 2)
        lk09.publish("evt", again_data)
        assert _stored(tmp_path / "gateway.db", [again_id]) == {again_id}
        lk09.close()  # one login, one connection (client id = username)
        lk09 = None
        raw_flood(broker.port, "lk09", 1.0)
        second = gw.wait_for("device_quarantined")
        assert (second["device"], second["strikes"]) == ("lk09", 2)
        assert second["for_s"] == 4
    finally:
        for d in (lk09, lk02):
            if d is not None:
                d.close()
        gw.kill()
        broker.kill()


def test_a_gateway_restarted_while_a_device_is_held_hears_every_device(tmp_path: Path) -> None:
    """The hold lives in the gateway process; the per-device filters it left
    in its persistent broker session do not. After a restart the gateway
    takes the outlet-wide filters back and drops the per-device ones, so the
    held device and devices it never heard of (no ACL here) are heard."""
    broker, conf = _quarantine_rig(tmp_path, 60, acl=False)
    gw = GatewayProcess(conf)
    devices: list[Device] = []
    try:
        gw.wait_for("gateway_started")
        lk02 = Device(broker.port, "lk02")
        devices.append(lk02)
        lk02.publish("evt", _good_event("lk02", 1)[1])
        raw_flood(broker.port, "lk09", 1.0)
        gw.wait_for("device_quarantined")
        gw.kill()
        gw = GatewayProcess(conf)
        gw.wait_for("gateway_started")
        ids = []
        for dev in ("lk09", "lk03", "lk02"):
            d = Device(broker.port, dev)
            devices.append(d)
            eid, data = _good_event(dev, 2)
            d.publish("evt", data)
            ids.append(eid)
        assert _stored(tmp_path / "gateway.db", ids) == set(ids)
        # exactly one copy each: no overlap of filters left behind
        with sqlite3.connect(tmp_path / "gateway.db", timeout=10) as con:
            assert con.execute("SELECT count(*) FROM events WHERE id = ?", (ids[0],)).fetchone()[0] == 1
        assert not [d for d in gw.lines if d.get("evt") == "device_quarantined"]
    finally:
        for d in devices:
            d.close()
        gw.kill()
        broker.kill()


def test_a_backlog_of_valid_events_is_never_held(tmp_path: Path) -> None:
    """A locker emptying its outbox after the gateway was away sends
    thousands of valid events at once: that is never a flood. The events
    queue at the broker while the gateway is down and arrive in one rush."""
    broker, conf = _quarantine_rig(tmp_path, 30)
    gw = GatewayProcess(conf)
    gw.wait_for("gateway_started")
    gw.stop()  # the session (and its queue) stays at the broker
    lk02 = Device(broker.port, "lk02")
    try:
        ids = []
        for seq in range(1, 3001):
            eid, data = _good_event("lk02", seq)
            lk02.client.publish(topics.build(OUTLET, "locker", "lk02", "evt"), data, qos=1)
            ids.append(eid)
        lk02.publish("evt", _good_event("lk02", 3001)[1])  # and wait for the last PUBACK
        gw = GatewayProcess(conf)
        gw.wait_for("gateway_started")
        assert _stored(tmp_path / "gateway.db", ids, timeout=60) == set(ids)
        assert not [d for d in gw.lines if d.get("evt") == "device_quarantined"]
    finally:
        lk02.close()
        gw.kill()
        broker.kill()
