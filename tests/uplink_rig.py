"""The central side behind a WAN link, for tests of the gateway's uplink and
downlink: the uplink double over HTTPS or TLS Mosquitto (simulator/uplink_double.py)
behind a Link where a test needs the platform's faults, the real central
service (simulator/central.py) behind a Link where it needs the platform's
own rules, the syncer's log collector, and a gateway TOML writer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.broker import Mosquitto
from simulator.central import CentralService, Certs, Link
from simulator.uplink_double import CentralBroker, CentralMqtt, UplinkDouble, UplinkDoubleHttps

GW_USER, GW_PASS = "gw-o1", "gw-up-secret"


class Log:
    """Collects the syncer's log lines, with their time."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.cond = threading.Condition()

    def __call__(self, evt: str, **kw: Any) -> None:
        with self.cond:
            self.lines.append({"evt": evt, "t": time.time(), **kw})
            self.cond.notify_all()

    def of(self, evt: str) -> list[dict[str, Any]]:
        with self.cond:
            return [x for x in self.lines if x["evt"] == evt]

    def wait(self, evt: str, timeout: float, pred: Callable[[dict[str, Any]], bool] = lambda x: True,
             ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for x in self.lines:
                    if x["evt"] == evt and pred(x):
                        return x
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [x["evt"] for x in self.lines][-20:]
                    raise TimeoutError(f"no {evt} within {timeout}s; saw {seen}")
                self.cond.wait(left)


FAST = {"backoff_base_s": 0.05, "backoff_cap_s": 0.5, "probe_interval_s": 0.2, "timeout_s": 2.0,
        "batch_max_age_s": 0.1}


@dataclass
class Uplink:
    """The central side behind a WAN link, over one transport."""

    kind: str
    central: UplinkDouble
    link: Link
    certs: Certs
    https: UplinkDoubleHttps | None = None
    broker: CentralBroker | None = None
    acker: CentralMqtt | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def upstream(self, **kw: Any) -> dict[str, Any]:
        scheme = "https" if self.kind == "https" else "mqtts"
        path = "/v1/batches" if self.kind == "https" else ""
        return {"url": f"{scheme}://127.0.0.1:{self.link.port}{path}", "ca_file": str(self.certs.ca),
                **self.extra, **FAST, **kw}

    def close(self) -> None:
        self.link.down()
        if self.https:
            self.https.down()
        if self.acker:
            self.acker.stop()
        if self.broker:
            self.broker.kill()


def make_uplink(kind: str, tmp: Path, certs: Certs) -> Uplink:
    central = UplinkDouble()
    if kind == "https":
        https = UplinkDoubleHttps(central, certs.server_cert, certs.server_key).up()
        return Uplink(kind, central, Link(https.port).up(), certs, https=https)
    broker = CentralBroker(tmp / "central-broker", certs, [(GW_USER, GW_PASS, "o1")])
    broker.start()
    acker = CentralMqtt(central, broker.port, certs.ca, *broker.acker).start()
    return Uplink(kind, central, Link(broker.port).up(), certs, broker=broker, acker=acker,
                  extra={"username": GW_USER, "password": GW_PASS})


@dataclass
class CentralUplink:
    """The real central service (embedded backend, HTTPS front) behind a WAN
    link, outlet ``o1`` registered and its gateway's login in ``upstream``."""

    central: CentralService
    link: Link
    certs: Certs
    password: str

    def upstream(self, **kw: Any) -> dict[str, Any]:
        return {"url": f"https://127.0.0.1:{self.link.port}/v1/batches", "ca_file": str(self.certs.ca),
                "username": "o1", "password": self.password, **FAST, **kw}

    def close(self) -> None:
        self.link.down()
        self.central.close()


def make_central_uplink(tmp: Path, certs: Certs, notifier: bool = False) -> CentralUplink:
    """``notifier``: the outlet's gateway has its own SMS modem (the platform
    then texts only what the gateway routes to it)."""
    central = CentralService(tmp / "central", certs.server_cert, certs.server_key, certs.ca).up()
    password = central.add_outlet("o1", notifier=notifier)
    return CentralUplink(central, Link(central.port).up(), certs, password)


def gateway_toml(path: Path, broker: Mosquitto, up: dict[str, Any]) -> Path:
    lines = ['outlet = "o1"', 'db = "gateway.db"', "", "[broker]", 'host = "127.0.0.1"',
             f"port = {broker.port}", 'username = "gw-o1"', 'password = "gw-secret"', "", "[upstream]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in up.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
