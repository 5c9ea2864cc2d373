"""End to end: several real parts together (Mosquitto, the gateway process, the
firmware on the MicroPython unix port, hostile device logins). Every test here is
marked ``e2e``, so the quick loop (``-m "not slow and not e2e and not browser"``)
leaves them to the full run.

The broker here is the outlet's as ``provision`` sets it up: a TLS listener
for the LAN with the outlet CA, and plaintext on loopback only. Lockers and
the gateway in these runs go through TLS (``lan_gateway``, ``lan_locker``); the
platform's stand-in and raw attackers use the loopback listener."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.pki import OutletPki, make_outlet_pki
from gateway.broker import Account, Mosquitto, tls_listener
from simulator.gateway_process import write_config
from simulator.outlet import locker_config
from tests.locker_rig import KEY

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> OutletPki:
    return make_outlet_pki(tmp_path_factory.mktemp("outlet-pki"))


@pytest.fixture
def broker(tmp_path: Path, accounts: list[Account], pki: OutletPki) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker", accounts,
                  tls=tls_listener(pki.ca, pki.server.cert, pki.server.key, bind="127.0.0.1"))
    b.start()
    try:
        yield b
    finally:
        b.kill()


def lan_gateway(path: Path, broker: Mosquitto, pki: OutletPki) -> Path:
    """The gateway's config, connecting over TLS and verifying the outlet CA."""
    return write_config(path, "o1", broker.tls_port, "gw-o1", "gw-secret", ca_file=pki.ca, host="localhost")


def lan_locker(tmp_path: Path, broker: Mosquitto, pki: OutletPki, board_url: str,
               panel_url: str | None = None, **extra: Any) -> Path:
    """Locker lk01's config on the TLS listener with the outlet CA, written to
    ``tmp_path/config.json`` (its flash in ``tmp_path/flash``); the path."""
    cfg = locker_config("lk01", "o1", broker.tls_port, "lk01-pw", board_url, tmp_path / "flash", KEY,
                        panel_url, **extra)
    cfg["broker"].update(host="localhost", ca=pki.ca_pem)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path
