"""TLS on the outlet LAN: the outlet CA that ``provision``
creates, Mosquitto's TLS listener (TLS 1.2+) with the plaintext one on
loopback only, the firmware client verifying the outlet CA on the unix port
(and refusing a server certificate from another CA), the gateway over TLS,
and a locker on the unix port whose events the gateway stores."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509

from common.pki import OutletPki, make_outlet_pki
from common.ports import free_port
from gateway.broker import Account, Mosquitto, tls_listener
from gateway.config import GatewayConfig
from gateway.provision import provision
from simulator import unixport
from simulator.gateway_process import GatewayProcess, write_config
from simulator.lockboard_sim import Sim8ABus
from simulator.outlet import locker_config, wait_event
from tests.locker_rig import KEY
from tests.waiting import until

FIRMWARE_TESTS = Path(__file__).resolve().parents[1] / "firmware"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> OutletPki:
    return make_outlet_pki(tmp_path_factory.mktemp("outlet-pki"))


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> OutletPki:
    """Right names (localhost, 127.0.0.1), another CA."""
    return make_outlet_pki(tmp_path_factory.mktemp("rogue-pki"), outlet="rogue")


def tls_broker(directory: Path, accounts: list[Account], server: OutletPki,
               bind: str = "127.0.0.1") -> Mosquitto:
    return Mosquitto(directory, accounts, tls=tls_listener(server.ca, server.server.cert, server.server.key,
                                                           bind=bind))


@pytest.fixture
def broker_tls(tmp_path: Path, accounts: list[Account], pki: OutletPki) -> Iterator[Mosquitto]:
    b = tls_broker(tmp_path / "broker", accounts, pki)
    b.start()
    try:
        yield b
    finally:
        b.kill()


def paho_connect(port: int, user: str, password: str, ca: Path | None, host: str = "127.0.0.1",
                 timeout: float = 5) -> bool:
    """True when a paho client gets a successful CONNACK."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    if ca is not None:
        c.tls_set(ca_certs=str(ca))
    ok = threading.Event()
    c.on_connect = lambda cl, ud, fl, rc, pr=None: ok.set() if not rc.is_failure else None
    try:
        c.connect(host, port, keepalive=10)
    except (OSError, ssl.SSLError):
        return False
    c.loop_start()
    try:
        return ok.wait(timeout)
    finally:
        c.disconnect()
        c.loop_stop()


# ------------------------------------------------------------- provision
@pytest.mark.slow
def test_provision_creates_the_outlet_ca_and_a_tls_only_lan(tmp_path: Path) -> None:
    inv = tmp_path / "outlet.toml"
    inv.write_text('outlet = "o-0451"\nbroker_host = "192.168.4.1"\nbroker_names = ["outlet.lan"]\n'
                   '[[devices]]\nid = "lk01"\nkind = "locker"\n', encoding="utf-8")
    out = tmp_path / "etc"
    plain, tls = free_port(), free_port()
    r = provision(inv, out, listen="127.0.0.1", port=plain, tls_port=tls)
    assert (r["plain_port"], r["tls_port"]) == (plain, tls)
    # Keys 0600; every server certificate chains to the outlet CA and names the hosts.
    for key in ("pki/ca.key", "mosquitto/tls/server.key", "web/server.key"):
        assert (out / key).stat().st_mode & 0o777 == 0o600, key
        assert b"PRIVATE KEY" in (out / key).read_bytes()
    ca = x509.load_pem_x509_certificate((out / "pki" / "ca.pem").read_bytes())
    for cert in ("mosquitto/tls/server.pem", "web/server.pem"):
        leaf = x509.load_pem_x509_certificate((out / cert).read_bytes())
        leaf.verify_directly_issued_by(ca)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {"outlet.lan", "localhost"} <= set(san.get_values_for_type(x509.DNSName))
        assert {"192.168.4.1", "127.0.0.1"} <= {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    # The device's file: the TLS port and the CA it verifies the broker with.
    lk = json.loads((out / "devices" / "lk01.json").read_text())
    assert lk["broker"]["port"] == tls and lk["broker"]["host"] == "192.168.4.1"
    assert lk["broker"]["ca"] == (out / "pki" / "ca.pem").read_text()
    # The gateway: plaintext on loopback; HTTPS with the outlet CA's certificate.
    gw = GatewayConfig.load(out / "gateway.toml")
    assert (gw.broker.host, gw.broker.port) == ("127.0.0.1", plain)
    assert gw.web is not None and gw.web.cert_file and Path(gw.web.cert_file).samefile(out / "web/server.pem")
    conf = (out / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert f"listener {plain} 127.0.0.1" in conf and f"listener {tls} 127.0.0.1" in conf
    assert "tls_version tlsv1.2" in conf
    # use_username_as_clientid on both listeners (a listener setting).
    assert conf.count("use_username_as_clientid true") == 2
    # Re-running keeps the CA and the device's file (deployed devices keep working).
    provision(inv, out, listen="127.0.0.1", port=plain, tls_port=tls)
    assert x509.load_pem_x509_certificate((out / "pki" / "ca.pem").read_bytes()) == ca
    assert json.loads((out / "devices" / "lk01.json").read_text()) == lk
    # The written config runs: TLS with the device's CA works, plain MQTT on
    # the TLS port does not, and the gateway logs in on loopback.
    text = "\n".join(conf).replace("user mosquitto", f"user {os.environ.get('USER') or 'root'}")
    (out / "mosquitto" / "mosquitto.conf").write_text(text)
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(out / "mosquitto" / "mosquitto.conf")],
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", tls), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        ca_file = tmp_path / "device-ca.pem"
        ca_file.write_text(lk["broker"]["ca"])
        assert paho_connect(tls, "lk01", lk["broker"]["password"], ca_file)
        assert not paho_connect(tls, "lk01", lk["broker"]["password"], None, timeout=2)
        gw_creds = json.loads((out / "gateway-credentials.json").read_text())["broker"]
        assert paho_connect(plain, gw_creds["user"], gw_creds["password"], None)
    finally:
        proc.terminate()
        proc.wait(5)


# --------------------------------------------------------------- binding
def lan_address() -> str | None:
    """This host's address on its network (not loopback), if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
            addr = str(s.getsockname()[0])
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def listening(port: int) -> set[str]:
    """The IPv4 addresses something listens on at ``port`` (/proc/net/tcp)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        addr, p = f[1].split(":")
        if int(p, 16) == port and f[3] == "0A":  # LISTEN
            out.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


def test_plaintext_listener_is_on_loopback_only(tmp_path: Path, accounts: list[Account],
                                                pki: OutletPki) -> None:
    """TLS listens on every address, plain MQTT on 127.0.0.1 alone: a
    plaintext connection to the box's LAN address is refused."""
    b = tls_broker(tmp_path / "broker", accounts, pki, bind="0.0.0.0")
    b.start()
    try:
        # the TLS listener may come up a moment after the plain one the start waits for
        until(lambda: listening(b.tls_port), 10, "the TLS listener")
        assert listening(b.port) == {"127.0.0.1"}
        assert listening(b.tls_port) == {"0.0.0.0"}
        assert paho_connect(b.port, "gw-o1", "gw-secret", None)  # the gateway, on the box
        lan = lan_address()
        if lan is None:
            pytest.skip("no non-loopback address to connect from")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((lan, b.port), timeout=2)
        assert not paho_connect(b.port, "lk01", "lk01-pw", None, host=lan, timeout=2)
        # The TLS listener is reachable from the LAN, and verifies.
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        with socket.create_connection((lan, b.tls_port), timeout=2) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        b.kill()


# -------------------------------------------------------------- firmware
RUNTIMES = ["cpython", pytest.param("micropython", marks=pytest.mark.mpy)]


def run_tls_check(runtime: str, port: int, ca: Path, host: str, n: int, seconds: float) -> list[dict]:
    args = [str(port), str(ca), host, str(n), str(seconds)]
    script = str(FIRMWARE_TESTS / "tls_mp_check.py")
    if runtime == "micropython":
        p = unixport.run([script, *args], timeout=seconds + 30)
    else:
        env = {**os.environ, "PYTHONPATH": str(unixport.firmware_root())}
        p = subprocess.run([sys.executable, script, *args], env=env, capture_output=True, text=True,
                           timeout=seconds + 30)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_firmware_client_publishes_over_tls_verifying_the_outlet_ca(
        runtime: str, broker_tls: Mosquitto, pki: OutletPki) -> None:
    got = run_tls_check(runtime, broker_tls.tls_port, pki.ca, "localhost", 20, 20)
    assert [x["evt"] for x in got].count("acked") == 20
    assert got[-1]["evt"] == "done" and got[-1]["stats"]["connect_failures"] == 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_firmware_refuses_a_server_certificate_from_another_ca(
        runtime: str, tmp_path: Path, accounts: list[Account], pki: OutletPki, rogue: OutletPki) -> None:
    """A broker whose certificate names the right host but comes from
    another CA: no CONNECT is ever sent, the client backs off and retries."""
    b = tls_broker(tmp_path / "rogue-broker", accounts, rogue)
    b.start()
    try:
        got = run_tls_check(runtime, b.tls_port, pki.ca, "localhost", 1, 3)
    finally:
        b.kill()
    assert got[-1]["evt"] == "gave_up"
    stats = got[-1]["stats"]
    assert stats["connects"] == 0 and stats["connect_failures"] >= 2
    errors = [x["error"] for x in got if x["evt"] == "mqtt_connect_failed"]
    assert errors and all("certif" in e.lower() or "verif" in e.lower() for e in errors), errors
    # Nothing reached the broker's MQTT layer: no login was ever attempted.
    log = b.log_path.read_text()
    assert "pe-lk01" not in log and "lk01" not in log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_firmware_refuses_a_certificate_for_another_name(
        runtime: str, tmp_path: Path, accounts: list[Account], pki: OutletPki) -> None:
    """The outlet CA's certificate for localhost and 127.0.0.1, dialled by
    the box's LAN address, which it does not name: refused."""
    lan = lan_address()
    if lan is None:
        pytest.skip("no non-loopback address")
    b = tls_broker(tmp_path / "broker", accounts, pki, bind="0.0.0.0")
    b.start()
    try:
        got = run_tls_check(runtime, b.tls_port, pki.ca, lan, 1, 3)
    finally:
        b.kill()
    assert got[-1]["evt"] == "gave_up" and got[-1]["stats"]["connects"] == 0
    errors = [x["error"] for x in got if x["evt"] == "mqtt_connect_failed"]
    assert errors and all("match" in e.lower() or "hostname" in e.lower() for e in errors), errors


# ------------------------------------------------------------------- e2e
@pytest.mark.e2e
@pytest.mark.mpy
def test_locker_on_the_unix_port_over_tls_and_the_gateway_stores(
        tmp_path: Path, broker_tls: Mosquitto, pki: OutletPki) -> None:
    """The locker application with a provisioned-style config (broker.ca,
    the TLS port) and the gateway over TLS too (paho, [broker] ca_file):
    the locker's events are stored."""
    cfg_path = write_config(tmp_path / "gateway.toml", "o1", broker_tls.tls_port, "gw-o1", "gw-secret",
                            ca_file=pki.ca, host="localhost")
    gw = GatewayProcess(cfg_path)
    bus = Sim8ABus(boards=(1,), locks=24)
    fw = None
    try:
        gw.wait_for("gateway_started")
        cfg = locker_config("lk01", "o1", broker_tls.tls_port, "lk01-pw",
                            f"socket://127.0.0.1:{bus.serve_tcp()}", tmp_path / "flash", KEY)
        cfg["broker"].update(host="localhost", ca=pki.ca_pem)
        (tmp_path / "lk01.json").write_text(json.dumps(cfg))
        fw = unixport.popen(["-m", "firmware.locker.main", str(tmp_path / "lk01.json")],
                            heap=unixport.APP_HEAP, stdout=subprocess.DEVNULL)
        boot = wait_event(tmp_path / "gateway.db", "locker.boot", timeout=30)
        assert boot["id"].startswith("lk01:")
    finally:
        if fw is not None:
            fw.kill()
            fw.wait()
        bus.close()
        gw.stop()


def test_certificates_hold_for_a_device_whose_clock_reset_to_2000(pki: OutletPki) -> None:
    """A locker whose RTC reset takes its time from the gateway over TLS: a
    certificate not yet valid on its clock would lock it out for good."""
    import datetime as dt

    y2000 = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    for path in (pki.ca, pki.server.cert):
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        assert cert.not_valid_before_utc <= y2000 < cert.not_valid_after_utc
