"""``postedge central nats-auth``: the outlets' NATS users file, written from
an ``outlet,password`` list and loaded by a real nats-server with its MQTT
listener, where the gateway's own MQTT carrier logs in as its outlet and
only as its outlet. Bad lines are refused with a reason and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.broker import free_port
from gateway.uplink.mqtt import MqttTransport
from gateway.uplink.transport import TransportError, tls_context
from tests.central.rig import NATS_SERVER, _stop, _wait_port

ROOT = Path(__file__).resolve().parents[2]


def nats_auth(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "postedge.cli", "--lang", "en", "central", "nats-auth", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_the_users_file_lets_each_outlet_in_as_itself_only(tmp_path: Path, central_pki: Any) -> None:
    outlets = tmp_path / "outlets.csv"
    outlets.write_text("# outlet,password\no1,first-secret\no2,second-secret\n")
    auth = tmp_path / "auth.conf"
    r = nats_auth(str(auth), "--outlets", str(outlets))
    assert r.returncode == 0, r.stderr
    assert "2 outlets" in r.stdout and auth.stat().st_mode & 0o777 == 0o600
    port, mport = free_port(), free_port()
    conf = tmp_path / "n.conf"
    conf.write_text(f'server_name: "a1"\nlisten: "127.0.0.1:{port}"\n'
                    f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
                    f'mqtt {{ listen: "127.0.0.1:{mport}", tls {{ cert_file: "{central_pki.server.cert}", '
                    f'key_file: "{central_pki.server.key}" }} }}\ninclude "auth.conf"\n')
    with open(tmp_path / "n.log", "wb") as log:
        proc = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(mport, proc, "nats-server mqtt")
        ctx = tls_context(str(central_pki.ca))
        url = f"mqtts://127.0.0.1:{mport}"
        MqttTransport(url, "o1", ctx, 5, "o1", "first-secret").probe()
        with pytest.raises(TransportError, match="subscription refused"):
            MqttTransport(url, "o2", ctx, 5, "o1", "first-secret", client_id="x").probe()
        with pytest.raises(TransportError) as wrong:  # a refused CONNACK, or the socket closed first
            MqttTransport(url, "o1", ctx, 5, "o1", "second-secret", client_id="y").probe()
        assert wrong.value.reason == "connection"
    finally:
        _stop(proc)


@pytest.mark.slow
def test_bad_lines_are_refused_with_a_reason(tmp_path: Path) -> None:
    outlets = tmp_path / "outlets.csv"
    outlets.write_text("o1 first-secret\n")
    r = nats_auth(str(tmp_path / "auth.conf"), "--outlets", str(outlets))
    assert r.returncode == 2 and "outlets.csv:1" in r.stderr
    outlets.write_text("O_1!,pw\n")
    r = nats_auth(str(tmp_path / "auth.conf"), "--outlets", str(outlets))
    assert r.returncode == 2 and "not an outlet id" in r.stderr
    assert not (tmp_path / "auth.conf").exists()
