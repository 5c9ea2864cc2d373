"""Shared fixtures: a real Mosquitto per test on a free loopback port, with
passwords and an ACL generated for one outlet, and helpers for real paho
clients and the MicroPython unix port.

The tests mirror the source (tests/protocol, drivers, firmware, gateway,
handheld, simulator, cli) and tests/e2e runs real parts together. Markers
(pyproject.toml): ``e2e`` (everything in tests/e2e, and real broker + gateway +
firmware elsewhere), ``mpy`` (MicroPython binaries), ``browser`` (set here for
every test that uses the ``chromium`` fixture of the simulator's pytest plugin),
``slow`` (> ~20 s). The quick loop::

    scripts/test -m "not slow and not e2e and not browser"
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.broker import Account, Mosquitto
from simulator.central import Certs, make_certs
from tests.uplink_rig import Uplink, make_uplink

OUTLET = "o1"
PASSWORDS = {"gw-o1": "gw-secret", "lk01": "lk01-pw", "lk02": "lk02-pw", "sc01": "sc01-pw",
             "hh01": "hh01-pw"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.fixture
def accounts() -> list[Account]:
    return [
        Account("gw-o1", PASSWORDS["gw-o1"], OUTLET, "gateway"),
        Account("lk01", PASSWORDS["lk01"], OUTLET, "locker"),
        Account("lk02", PASSWORDS["lk02"], OUTLET, "locker"),
        Account("sc01", PASSWORDS["sc01"], OUTLET, "scanner"),
        Account("hh01", PASSWORDS["hh01"], OUTLET, "handheld"),
    ]


@pytest.fixture
def broker(tmp_path: Path, accounts: list[Account]) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker", accounts)
    b.start()
    try:
        yield b
    finally:
        b.kill()


class Recorder:
    """A connected paho client that records what it receives."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.messages: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition()

    def on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 10) -> None:
        """Subscribe and wait for the broker's SUBACK: a publish sent before
        it is answered "no matching subscribers" (MQTT 5: 0x10) and never
        delivered here."""
        acked = threading.Event()
        self.client.on_subscribe = lambda *args: acked.set()
        rc, _ = self.client.subscribe(topic, qos=qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS and acked.wait(timeout), f"no SUBACK for {topic}"

    def wait_for(self, pred: Callable[[list[mqtt.MQTTMessage]], bool], timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True


@pytest.fixture
def connect(broker: Mosquitto) -> Iterator[Callable[..., Recorder]]:
    """connect(user, protocol=MQTTv5) -> Recorder with its network loop running."""
    made: list[mqtt.Client] = []

    def _connect(user: str, password: str | None = None,
                 protocol: int = mqtt.MQTTv5) -> Recorder:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{len(made)}",
                        protocol=protocol)
        c.username_pw_set(user, password if password is not None else PASSWORDS[user])
        rec = Recorder(c)
        c.on_message = rec.on_message
        connected = threading.Event()
        result: list[object] = []

        def on_connect(client: mqtt.Client, userdata: object, flags: object, rc: object,
                       props: object = None) -> None:
            result.append(rc)
            connected.set()

        c.on_connect = on_connect
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        made.append(c)
        assert connected.wait(10), "no CONNACK"
        rc = result[0]
        if getattr(rc, "is_failure", False):
            raise ConnectionRefusedError(str(rc))
        return rec

    yield _connect
    for c in made:
        # disconnect first: a client the broker dropped is in paho's
        # reconnect wait, which loop_stop() would sit out (seconds per test)
        c.disconnect()
        c.loop_stop()


# ------------------------------------------------------- the central side
@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=["https", "mqtt"])
def uplink(request: pytest.FixtureRequest, tmp_path: Path, certs: Certs) -> Iterator[Uplink]:
    u = make_uplink(request.param, tmp_path, certs)
    try:
        yield u
    finally:
        u.close()


@pytest.fixture
def https_uplink(tmp_path: Path, certs: Certs) -> Iterator[Uplink]:
    u = make_uplink("https", tmp_path, certs)
    try:
        yield u
    finally:
        u.close()
