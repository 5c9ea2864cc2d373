"""The handheld on the outlet TLS: provisioning gives it the
outlet CA in its config; its MQTT link connects to Mosquitto's TLS listener
(8883 on an outlet) and its HTTPS calls (command status, photo uploads)
reach the gateway, each verifying the outlet CA; a broker or gateway whose
certificate comes from another CA is refused before any password is sent.

Real Mosquitto from the provisioned config, the real gateway process on the
loopback listener, the gateway's real HTTPS server, the real handheld app."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from common.config import ConfigError
from common.pki import OutletPki, make_outlet_pki
from common.ports import free_port
from gateway.broker import Account, Mosquitto, tls_listener
from gateway.http.server import WebService, start_web
from gateway.store.events import EventStore
from handheld import tls
from handheld.app import HandheldApp
from handheld.config import load_config, parse_config
from handheld.link import MqttLink
from handheld.outbox import SqliteOutbox
from handheld.uploader import PhotoQueue, Uploader
from handheld.workflows import GatewayClient
from simulator.gateway_process import GatewayProcess, write_config
from simulator.outlet import stored_events
from tests.locker_rig import PLATFORM
from tests.provisioned_rig import Outlet


def _key_file(tmp: Path) -> Path:
    p = tmp / "platform-keys.json"
    p.write_text(json.dumps(PLATFORM.issue(["lk01", "hh01", "hh02"])))
    return p


@pytest.fixture
def outlet(tmp_path: Path) -> Iterator[Outlet]:
    o = Outlet(tmp_path, key_file=_key_file(tmp_path))
    o.start()
    try:
        yield o
    finally:
        o.stop()


class Web:
    """The gateway's HTTPS server with a given certificate and the outlet's logins."""

    def __init__(self, db: Path, cert: Path, key: Path, passwd: Path) -> None:
        EventStore(db).close()
        self.stop_event = threading.Event()
        web = {"host": "127.0.0.1", "port": free_port(), "cert_file": str(cert), "key_file": str(key),
               "passwd_file": str(passwd)}
        self.svc: WebService = start_web(db, web, self.stop_event)
        self.url = f"https://127.0.0.1:{self.svc.port}"

    def close(self) -> None:
        self.stop_event.set()
        self.svc.join(10)


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> OutletPki:
    """The right names (localhost, 127.0.0.1), another CA: a rogue access point."""
    return make_outlet_pki(tmp_path_factory.mktemp("rogue"), outlet="rogue")


def _jpeg() -> bytes:
    img = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def _handheld_config(outlet: Outlet, web: Web) -> Path:
    """The provisioned handheld file, pointed at this test's gateway port."""
    text = (outlet.out / "devices" / "hh01.toml").read_text()
    assert 'url = "https://127.0.0.1:8080"' in text
    cfg = outlet.tmp / "hh01.toml"
    cfg.write_text(text.replace("https://127.0.0.1:8080", web.url)
                   + '\n[web]\nhost = "127.0.0.1"\nport = 0\n')
    return cfg


def test_provisioned_handheld_speaks_tls_to_broker_and_gateway(outlet: Outlet) -> None:
    gw_pw = json.loads((outlet.out / "gateway-credentials.json").read_text())["broker"]["password"]
    gw = GatewayProcess(write_config(outlet.tmp / "gw.toml", "o1", outlet.plain, "gw-o1", gw_pw))
    web = Web(outlet.tmp / "gateway.db", outlet.out / "web" / "server.pem", outlet.out / "web" / "server.key",
              outlet.out / "mosquitto" / "passwd")
    app: HandheldApp | None = None
    try:
        gw.wait_for("gateway_started")
        cfg = load_config(_handheld_config(outlet, web))
        assert cfg.broker.port == outlet.tls and cfg.broker.ca_pem == outlet.ca.read_text()
        assert cfg.gateway.ca_pem == cfg.broker.ca_pem and cfg.gateway.url.startswith("https://")
        app = HandheldApp(cfg).start()
        assert app.link.tls
        assert app.link.subscribed.wait(15), app.link.last_error
        # A custody event over MQTT/TLS reaches the gateway, which confirms it.
        eid, _ = app.emit("handheld.intake", "custody", {"parcel": "RB123456785GB"})
        def stored() -> set[str]:
            return {e["id"] for e in stored_events(outlet.tmp / "gateway.db")}

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and eid not in stored():
            time.sleep(0.2)
        assert eid in stored()
        # HTTPS: the command status API answers (404 for an unknown id, after the login).
        assert app.gateway.command_status("no-such-command") is None and app.gateway.reachable
        # A photo upload over HTTPS, with the same context the app built.
        q = PhotoQueue(outlet.tmp / "q.db", outlet.tmp / "q")
        try:
            q.add(_jpeg(), {})
            res = Uploader(q, cfg.gateway.url, "hh01", cfg.gateway.password,
                           ssl_context=app.photos.ssl_context).run_once()
            assert len(res.done) == 1 and res.error is None, res
        finally:
            q.close()
    finally:
        if app is not None:
            app.stop()
        web.close()
        gw.stop()


@pytest.mark.slow
def test_a_broker_certificate_from_another_ca_is_refused(tmp_path: Path, outlet: Outlet,
                                                          rogue: OutletPki) -> None:
    b = Mosquitto(tmp_path / "rogue-broker", [Account("hh01", "hh01-pw", "o1", "handheld")],
                  tls=tls_listener(rogue.ca, rogue.server.cert, rogue.server.key))
    b.start()
    outbox = SqliteOutbox(tmp_path / "outbox.db")
    link = MqttLink("hh01", "o1", "127.0.0.1", b.tls_port, "hh01", "hh01-pw", outbox, lambda _: None,
                    ssl_context=tls.context(outlet.ca.read_text()))
    try:
        link.start()
        assert not link.subscribed.wait(4)
        assert not link.connected
        assert link.last_error is not None and "TLS" in link.last_error
    finally:
        link.stop()
        outbox.close()
        b.kill()
    # No login reached the rogue broker's MQTT layer.
    assert "hh01" not in b.log_path.read_text()
    # The same link with the rogue's CA does connect: the refusal is the CA's doing.
    b.start()
    outbox = SqliteOutbox(tmp_path / "outbox2.db")
    ok = MqttLink("hh01", "o1", "127.0.0.1", b.tls_port, "hh01", "hh01-pw", outbox, lambda _: None,
                  ssl_context=tls.context(rogue.ca_pem))
    try:
        ok.start()
        assert ok.subscribed.wait(10), ok.last_error
    finally:
        ok.stop()
        outbox.close()
        b.kill()


def test_a_gateway_certificate_from_another_ca_is_refused(tmp_path: Path, outlet: Outlet,
                                                           rogue: OutletPki) -> None:
    passwd = outlet.out / "mosquitto" / "passwd"
    web = Web(tmp_path / "rogue-gw.db", rogue.server.cert, rogue.server.key, passwd)
    try:
        client = GatewayClient(web.url, username="hh01", password=outlet.creds("hh01")["broker"]["password"],
                               ssl_context=tls.context(outlet.ca.read_text()))
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            client.command_status("x")
        assert client.reachable is False
        q = PhotoQueue(tmp_path / "q.db", tmp_path / "q")
        try:
            q.add(_jpeg(), {})
            res = Uploader(q, web.url, "hh01", "pw", timeout_s=3,
                           ssl_context=tls.context(outlet.ca.read_text())).run_once()
            assert not res.done and len(q.pending()) == 1  # kept for the real gateway
        finally:
            q.close()
    finally:
        web.close()


def _config(tmp: Path, broker: dict[str, Any], gateway: dict[str, Any]) -> Any:
    return parse_config({"device": "hh01", "outlet": "o1", "key": PLATFORM.device_config("hh01"),
                         "broker": broker, "gateway": gateway}, tmp)


def test_config_takes_the_outlet_ca_and_refuses_what_would_leak(tmp_path: Path, outlet: Outlet) -> None:
    pem = outlet.ca.read_text()
    (tmp_path / "ca.pem").write_text(pem)
    c = _config(tmp_path, {"ca_file": "ca.pem", "port": 8883}, {"url": "https://gw:8080"})
    assert c.broker.ca_pem == pem and c.gateway.ca_pem == pem
    assert _config(tmp_path, {"ca": pem}, {"url": "https://gw"}).broker.ca_pem == pem
    plain = _config(tmp_path, {}, {"url": "http://gw"})
    assert plain.broker.ca_pem == "" and tls.context(plain.broker.ca_pem) is None
    bad: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"ca": pem}, {"url": "http://gw:8080"}, "gateway.url"),
        ({"ca": pem, "ca_file": "ca.pem"}, {"url": "https://gw"}, "broker.ca"),
        ({"ca": "not a certificate"}, {"url": "https://gw"}, "broker.ca"),
        ({"ca": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, {"url": "https://gw"},
         "broker.ca"),
        ({"ca_file": "missing.pem"}, {"url": "https://gw"}, "broker.ca_file"),
        ({}, {"url": "https://gw", "ca_file": "missing.pem"}, "gateway.ca_file"),
    ]
    (tmp_path / "junk.pem").write_bytes(b"\xff\xfe junk")
    bad.append(({"ca_file": "junk.pem"}, {"url": "https://gw"}, "broker.ca_file"))
    for broker, gateway, key in bad:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            _config(tmp_path, broker, gateway)


def test_provision_writes_each_handheld_its_config_and_only_handhelds(outlet: Outlet) -> None:
    for dev in ("hh01", "hh02"):
        path = outlet.out / "devices" / f"{dev}.toml"
        assert path.stat().st_mode & 0o777 == 0o600
        cfg = load_config(path)
        assert cfg.device == dev and cfg.keyring.secret == PLATFORM.key(dev)
        assert cfg.broker.password == outlet.creds(dev)["broker"]["password"]
    assert not (outlet.out / "devices" / "lk01.toml").exists()
