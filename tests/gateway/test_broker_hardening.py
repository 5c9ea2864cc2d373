"""The outlet broker's hardening, against a real
Mosquitto started from the generated config.

- A device login that connects with the gateway's client id and a clean
  session must not wipe the gateway's persistent session
  (``use_username_as_clientid``).
- A publish far over the device protocol's sizes is refused on its header and
  never reaches a subscriber or the broker's memory (``max_packet_size``).
- What the broker queues for an absent session is bounded in bytes.
- ``provision`` and ``deploy/`` carry the same hardened broker and units.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.broker import (
    MIB,
    OUTLET_LIMITS,
    Account,
    Mosquitto,
    OutletLimits,
    systemd_unit,
    write_config,
)
from gateway.provision import provision
from protocol import topics
from tests.conftest import OUTLET, PASSWORDS

ROOT = Path(__file__).resolve().parents[2]
EVT_LK01 = topics.build(OUTLET, "locker", "lk01", "evt")


@pytest.fixture
def broker(tmp_path: Path, accounts: list[Account]) -> Iterator[Mosquitto]:
    """The outlet broker exactly as ``provision`` writes it (conftest's
    ``broker`` leaves the client id rule off; see ``Mosquitto``)."""
    b = Mosquitto(tmp_path / "broker", accounts, limits=OUTLET_LIMITS)
    b.start()
    try:
        yield b
    finally:
        b.kill()


class Session:
    """The gateway's broker session as the real gateway holds it: client id
    ``gw-<outlet>``, clean_session False, QoS 1 on every device's ``evt``."""

    def __init__(self, port: int, user: str = "gw-o1", password: str = PASSWORDS["gw-o1"]) -> None:
        self.port = port
        self.got: list[bytes] = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gw-{OUTLET}",
                             clean_session=False, protocol=mqtt.MQTTv311)
        self.c.username_pw_set(user, password)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.drops = 0  # disconnects this side did not ask for
        self.c.on_disconnect = self._on_disconnect
        self.closing = False

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, rc: object,
                       props: object = None) -> None:
        if not self.closing:
            self.drops += 1

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.got.append(msg.payload)
            self.cond.notify_all()

    def open(self, subscribe: bool = True) -> Session:
        self.subscribed.clear()
        self.closing = False
        self.c.connect("127.0.0.1", self.port)
        self.c.loop_start()
        if subscribe:
            self.c.subscribe(topics.subscription(OUTLET, "evt"), qos=1)
            assert self.subscribed.wait(10), "no SUBACK"
        return self

    def close(self) -> None:
        self.closing = True
        self.c.disconnect()
        self.c.loop_stop()

    def wait_count(self, n: int, timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.got) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True


def device(port: int, user: str, client_id: str | None = None, clean: bool = True,
           protocol: int = mqtt.MQTTv311, password: str | None = None,
           got: list[bytes] | None = None) -> mqtt.Client:
    """A connected paho client for a device login (network loop running);
    payloads it receives go to ``got``."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"pe-{user}",
                    clean_session=clean if protocol != mqtt.MQTTv5 else None, protocol=protocol)
    c.username_pw_set(user, password if password is not None else PASSWORDS[user])
    if got is not None:
        c.on_message = lambda _c, _u, m: got.append(m.payload)
    up = threading.Event()
    c.on_connect = lambda *a: up.set()
    c.connect("127.0.0.1", port, clean_start=clean if protocol == mqtt.MQTTv5 else 3)
    c.loop_start()
    up.wait(10)
    return c


def hijack(port: int, user: str = "lk02", password: str | None = None) -> None:
    """Finding 2's attack: a login connects with the gateway's client id and a
    clean session, then leaves."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gw-{OUTLET}", clean_session=True,
                    protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password if password is not None else PASSWORDS[user])
    done = threading.Event()
    c.on_connect = lambda *a: done.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(5)
    time.sleep(0.05)
    c.disconnect()
    c.loop_stop()


def proc_status(b: Mosquitto) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of the broker process, in bytes."""
    assert b.proc is not None
    out = {}
    for line in Path(f"/proc/{b.proc.pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(val.split()[0]) * 1024
    return out


# ------------------------------------------------------- finding 2: takeover
def test_device_with_gateway_client_id_does_not_wipe_gateway_session(broker: Mosquitto) -> None:
    """200 custody events published while the gateway is away, a hijack by
    lk02 (client id gw-o1, clean session) every 50 of them: the gateway's
    session keeps every one (before: 0 of 200 arrived)."""
    gw = Session(broker.port).open()
    gw.close()  # away; its persistent session queues for it
    lk01 = device(broker.port, "lk01")
    try:
        for i in range(200):
            if i % 50 == 0:
                hijack(broker.port)
            assert lk01.publish(EVT_LK01, b"e%03d" % i, qos=1).wait_for_publish(5) is None
        hijack(broker.port)
    finally:
        lk01.disconnect()
        lk01.loop_stop()
    gw.open(subscribe=False)  # resume the session only: no new SUBSCRIBE to paper over a wipe
    try:
        assert gw.wait_count(200), f"gateway session lost events: got {len(gw.got)} of 200"
        assert gw.got == [b"e%03d" % i for i in range(200)]
    finally:
        gw.close()


def test_repeated_takeover_while_gateway_connected_loses_nothing(broker: Mosquitto) -> None:
    """Finding 2's second run: a hijack every 0.1 s while the gateway is
    connected and events flow; the gateway is never kicked and misses none."""
    gw = Session(broker.port).open()
    stop = threading.Event()

    def storm() -> None:
        while not stop.is_set():
            hijack(broker.port, "lk02")
            time.sleep(0.1)

    t = threading.Thread(target=storm, daemon=True)
    t.start()
    lk01 = device(broker.port, "lk01")
    try:
        for i in range(100):
            lk01.publish(EVT_LK01, b"s%03d" % i, qos=1).wait_for_publish(5)
            time.sleep(0.01)
        assert gw.wait_count(100), f"got {len(gw.got)} of 100"
        assert gw.got == [b"s%03d" % i for i in range(100)]
        assert gw.drops == 0, "the gateway was kicked off by a takeover"
    finally:
        stop.set()
        t.join(5)
        lk01.disconnect()
        lk01.loop_stop()
        gw.close()


def test_wrong_password_under_gateway_name_does_not_touch_its_session(broker: Mosquitto) -> None:
    gw = Session(broker.port).open()
    gw.close()
    lk01 = device(broker.port, "lk01")
    lk01.publish(EVT_LK01, b"kept", qos=1).wait_for_publish(5)
    lk01.disconnect()
    lk01.loop_stop()
    hijack(broker.port, "gw-o1", password="guess")
    gw.open(subscribe=False)
    try:
        assert gw.wait_count(1), "a refused login wiped the gateway's session"
        assert gw.got == [b"kept"]
    finally:
        gw.close()


def test_firmware_style_client_ids_keep_their_sessions(broker: Mosquitto) -> None:
    """Devices connect as ``pe-<device>`` with username ``<device>``: the
    broker keys the session by the username, so it persists across
    reconnects, even under another client id spelling."""
    cmd = topics.build(OUTLET, "handheld", "hh01", "cmd")
    got: list[bytes] = []
    hh = device(broker.port, "hh01", client_id="pe-hh01", clean=False, got=got)
    ready = threading.Event()
    hh.on_subscribe = lambda *a: ready.set()
    hh.subscribe(cmd, qos=1)
    assert ready.wait(10)
    hh.disconnect()
    hh.loop_stop()
    gw = device(broker.port, "gw-o1", client_id="gw-o1")
    gw.publish(cmd, b"while-away", qos=1).wait_for_publish(5)
    gw.disconnect()
    gw.loop_stop()
    hh = device(broker.port, "hh01", client_id="pe-hh01-after-reflash", clean=False, got=got)
    try:
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [b"while-away"]
    finally:
        hh.disconnect()
        hh.loop_stop()


# ----------------------------------------------------- finding 7: broker fill
@pytest.mark.slow
@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_oversized_publish_is_refused_and_broker_stays_small(broker: Mosquitto, protocol: int) -> None:
    """Four 8 MiB publishes from lk01 while the gateway is away: none is
    queued or delivered, the broker's peak RSS stays far below one of them,
    and lk01's next ordinary event still arrives."""
    gw = Session(broker.port).open()
    gw.close()
    before = proc_status(broker)
    big = b"x" * (8 * MIB)
    for _ in range(4):
        c = device(broker.port, "lk01", protocol=protocol)
        try:
            info = c.publish(EVT_LK01, big, qos=1)
            # the broker hangs up on the header; paho may or may not finish writing
            deadline = time.monotonic() + 10
            while c.is_connected() and not info.is_published() and time.monotonic() < deadline:
                time.sleep(0.05)
        except (ValueError, RuntimeError):
            pass  # paho refusing the packet against the MQTT 5 maximum is a refusal too
        finally:
            c.disconnect()
            c.loop_stop()
    ok = device(broker.port, "lk01")
    ok.publish(EVT_LK01, b"ordinary", qos=1).wait_for_publish(5)
    ok.disconnect()
    ok.loop_stop()
    after = proc_status(broker)
    assert broker.proc is not None and broker.proc.poll() is None
    gw.open(subscribe=False)
    try:
        assert gw.wait_count(1)
        time.sleep(0.5)
        assert [len(p) for p in gw.got] == [len(b"ordinary")], "an oversized publish was queued"
        assert gw.got == [b"ordinary"]
    finally:
        gw.close()
    # Before hardening, the 32 MiB were held in the queue (and in the peak).
    assert after["VmHWM"] - before["VmHWM"] < 4 * MIB, (before, after)
    assert after["VmRSS"] < 24 * MIB, after
    assert (broker.directory / "data").exists()


def test_largest_legitimate_state_document_passes(broker: Mosquitto) -> None:
    """16 KiB state documents (the gateway's MAX_STATE) and a little over it
    reach the gateway, which then refuses what is too big with a reason."""
    sub = Session(broker.port)
    sub.c.on_subscribe = lambda *a: sub.subscribed.set()
    sub.open(subscribe=False)
    sub.c.subscribe(topics.subscription(OUTLET, "state"), qos=1)
    assert sub.subscribed.wait(10)
    try:
        lk01 = device(broker.port, "lk01")
        for size in (16 * 1024, 20 * 1024, OUTLET_LIMITS.max_packet // 2):
            lk01.publish(topics.build(OUTLET, "locker", "lk01", "state"), b"{" + b" " * (size - 2) + b"}",
                         qos=1).wait_for_publish(5)
        lk01.disconnect()
        lk01.loop_stop()
        assert sub.wait_count(3)
    finally:
        sub.close()


def test_queue_for_an_absent_session_is_bounded_in_bytes(tmp_path: Path, accounts: list[Account]) -> None:
    """With max_queued_bytes at 1 MiB, 40 publishes of 60 KiB while the
    gateway is away leave at most ~1 MiB queued for it: the cap the generated
    config sets (64 MiB) works the same way, only larger."""
    limits = OutletLimits(max_queued_bytes=1 * MIB)
    b = Mosquitto(tmp_path / "broker", accounts, limits=limits)
    b.start()
    try:
        gw = Session(b.port).open()
        gw.close()
        lk01 = device(b.port, "lk01")
        for i in range(40):
            lk01.publish(EVT_LK01, bytes([i]) * (60 * 1024), qos=1).wait_for_publish(5)
        lk01.disconnect()
        lk01.loop_stop()
        gw.open(subscribe=False)
        try:
            gw.wait_count(40, timeout=3)
            n = len(gw.got)
            assert 10 <= n <= 20, n  # ~17 fit in 1 MiB (plus what was in flight)
            assert [p[0] for p in gw.got] == list(range(n))  # the oldest are kept, in order
        finally:
            gw.close()
    finally:
        b.kill()


# -------------------------------------------------------- what gets written
HARDENING = ("use_username_as_clientid true", f"max_packet_size {OUTLET_LIMITS.max_packet}",
             f"max_queued_messages {OUTLET_LIMITS.max_queued_messages}",
             f"max_queued_bytes {OUTLET_LIMITS.max_queued_bytes}",
             f"max_inflight_messages {OUTLET_LIMITS.max_inflight_messages}",
             f"max_inflight_bytes {OUTLET_LIMITS.max_inflight_bytes}", "persistence true",
             "autosave_on_changes false", f"autosave_interval {OUTLET_LIMITS.autosave_interval_s}")


def test_generated_config_is_hardened_and_listener_option_follows_listener(
        tmp_path: Path, accounts: list[Account]) -> None:
    lines = write_config(tmp_path / "b", 1883, accounts, bind="0.0.0.0").read_text().splitlines()
    for want in HARDENING:
        assert want in lines, want
    assert lines.index("use_username_as_clientid true") > lines.index("listener 1883 0.0.0.0")
    assert "max_queued_messages 0" not in lines


def test_a_broker_of_gateway_logins_only_stays_plain(tmp_path: Path) -> None:
    """The simulator's central broker (several connections per gateway login,
    batches of MiBs) reuses Mosquitto with gateway-kind accounts only."""
    b = Mosquitto(tmp_path / "c", [Account("gw-o1", "x", "o1", "gateway")])
    text = b.conf.read_text()
    assert b.limits is None
    assert "use_username_as_clientid" not in text and "max_packet_size" not in text


def test_test_and_demo_brokers_get_the_limits_and_the_rule_on_request(
        tmp_path: Path, accounts: list[Account]) -> None:
    plain = Mosquitto(tmp_path / "a", accounts).conf.read_text().splitlines()
    assert f"max_packet_size {OUTLET_LIMITS.max_packet}" in plain
    assert "use_username_as_clientid true" not in plain
    ruled = Mosquitto(tmp_path / "b", accounts, username_as_clientid=True).conf.read_text().splitlines()
    assert "use_username_as_clientid true" in ruled


@pytest.fixture
def provisioned(tmp_path: Path) -> Iterator[Path]:
    inv = tmp_path / "outlet.toml"
    inv.write_text('outlet = "o9"\n[[devices]]\nid = "lk01"\nkind = "locker"\n', encoding="utf-8")
    out = tmp_path / "etc"
    provision(inv, out, port=18830)
    yield out


def test_provision_writes_hardened_broker_and_its_unit(provisioned: Path) -> None:
    lines = (provisioned / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    for want in HARDENING:
        assert want in lines, want
    unit = (provisioned / "postedge-mosquitto.service").read_text()
    assert f"-c {provisioned / 'mosquitto' / 'mosquitto.conf'}" in unit
    for want in ("Restart=always", "RestartSec=", "LimitNOFILE=4096", "Type=notify"):
        assert want in unit, want


def test_deploy_units_match_and_carry_limits() -> None:
    broker_unit = (ROOT / "deploy" / "postedge-mosquitto.service").read_text()
    assert broker_unit == systemd_unit(), "regenerate deploy/postedge-mosquitto.service from systemd_unit()"
    gw_unit = (ROOT / "deploy" / "postedge-gateway.service").read_text()
    for want in ("Restart=always", "RestartSec=", "LimitNOFILE=", "postedge-mosquitto.service"):
        assert want in gw_unit, want


# ------------------------------------------ the simulator's amqtt fallback
@pytest.fixture
def amqtt_broker(tmp_path: Path, accounts: list[Account]) -> Iterator[Mosquitto]:
    from simulator.pybroker import AmqttBroker

    b = AmqttBroker(tmp_path / "amqtt", accounts)
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.mark.slow
def test_amqtt_fallback_keys_sessions_by_login_and_caps_packets(amqtt_broker: Mosquitto) -> None:
    """simulator/pybroker.py gives amqtt the same two protections: lk02 with
    client id gw-o1 and a clean session, or a wrong password under the
    gateway's name, leaves the gateway's queue alone; an 8 MiB publish
    closes the sender's connection and reaches nobody."""
    port = amqtt_broker.port
    gw = Session(port).open()
    gw.close()
    lk01 = device(port, "lk01")
    for i in range(20):
        if i % 5 == 0:
            hijack(port)
            hijack(port, "gw-o1", password="guess")
        lk01.publish(EVT_LK01, b"a%02d" % i, qos=1).wait_for_publish(5)
    lk01.disconnect()
    lk01.loop_stop()
    big = device(port, "lk01")
    big.publish(EVT_LK01, b"x" * (8 * MIB), qos=1)
    deadline = time.monotonic() + 10
    while big.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    big.disconnect()
    big.loop_stop()
    gw.open(subscribe=False)
    try:
        assert gw.wait_count(20), f"got {len(gw.got)} of 20"
        time.sleep(0.5)
        assert gw.got == [b"a%02d" % i for i in range(20)]
    finally:
        gw.close()


def test_a_broker_with_more_devices_than_an_outlet_has_room_for_each(tmp_path: Path) -> None:
    """A simulated outlet or a scale benchmark may hold more devices than a real
    outlet's 1024 connections: each account gets its connection (the scale benchmark
    once measured the broker's cap, 1,024 connected of 2,000, as the simulator's)."""
    accounts = [Account(f"lk{i:05d}", "pw", "o1", "locker") for i in range(2000)]
    conf = Mosquitto(tmp_path / "b", accounts).conf.read_text()
    assert "max_connections 2064" in conf, [x for x in conf.splitlines() if "max_conn" in x]
    small = Mosquitto(tmp_path / "s", accounts[:10]).conf.read_text()
    assert "max_connections 1024" in small
