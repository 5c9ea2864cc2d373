"""``postedge central nats-auth``: the outlets' NATS users file, written from
the registry (the bcrypt hash ``outlet add`` keeps of each outlet's
password) and loaded by a real nats-server with its MQTT listener, where the
gateway's own MQTT carrier logs in as its outlet and only as its outlet; a
retired outlet is left out, so its login stops at the next reload."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from central.scaleout.local import NATS_SERVER, stop_process, wait_port
from common.ports import free_port
from gateway.uplink.mqtt import MqttTransport
from gateway.uplink.transport import TransportError, tls_context

ROOT = Path(__file__).resolve().parents[2]


def central(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "postedge.cli", "--lang", "en", "central", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT, input=stdin)


def added(d: Path, outlet: str) -> str:
    """``central outlet add``: the password it prints."""
    r = central("outlet", "add", str(d), outlet)
    assert r.returncode == 0, r.stderr
    return r.stdout.split("(shown only now): ")[1].split()[0]


def start_nats(tmp_path: Path, central_pki: Any) -> tuple[subprocess.Popen[bytes], str]:
    port, mport = free_port(), free_port()
    conf = tmp_path / "n.conf"
    conf.write_text(f'server_name: "a1"\nlisten: "127.0.0.1:{port}"\n'
                    f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
                    f'mqtt {{ listen: "127.0.0.1:{mport}", tls {{ cert_file: "{central_pki.server.cert}", '
                    f'key_file: "{central_pki.server.key}" }} }}\ninclude "auth.conf"\n')
    with open(tmp_path / "n.log", "wb") as log:
        proc = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    wait_port(mport, proc, "nats-server mqtt")
    return proc, f"mqtts://127.0.0.1:{mport}"


@pytest.mark.slow
def test_the_users_file_lets_each_active_outlet_in_as_itself_only(tmp_path: Path, central_pki: Any) -> None:
    d = tmp_path / "central"
    assert central("init", str(d), "--host", "127.0.0.1", "--port", str(free_port())).returncode == 0
    pw1, pw2 = added(d, "o1"), added(d, "o2")
    auth = tmp_path / "auth.conf"
    r = central("nats-auth", str(d), str(auth))
    assert r.returncode == 0, r.stderr
    assert "2 outlets" in r.stdout and auth.stat().st_mode & 0o777 == 0o600
    text = auth.read_text()
    assert pw1 not in text and pw2 not in text and text.count('"password": "$2b$') == 2  # hashes only
    proc, url = start_nats(tmp_path, central_pki)
    try:
        ctx = tls_context(str(central_pki.ca))
        MqttTransport(url, "o1", ctx, 5, "o1", pw1).probe()
        MqttTransport(url, "o2", ctx, 5, "o2", pw2, client_id="o2a").probe()
        with pytest.raises(TransportError, match="subscription refused"):
            MqttTransport(url, "o2", ctx, 5, "o1", pw1, client_id="x").probe()
        with pytest.raises(TransportError) as wrong:  # a refused CONNACK, or the socket closed first
            MqttTransport(url, "o1", ctx, 5, "o1", pw2, client_id="y").probe()
        assert wrong.value.reason == "connection"
        # o2 retired: rewritten without it, reloaded, and its login stops
        assert central("outlet", "retire", str(d), "o2").returncode == 0
        r = central("nats-auth", str(d), str(auth))
        assert r.returncode == 0 and "1 outlets" in r.stdout and '"user": "o2"' not in auth.read_text()
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                MqttTransport(url, "o2", ctx, 2, "o2", pw2, client_id=f"o2-{time.monotonic()}").probe()
                time.sleep(0.2)
            except TransportError:
                break
        else:
            raise AssertionError("a retired outlet still logs in after the reload")
        MqttTransport(url, "o1", ctx, 5, "o1", pw1, client_id="o1b").probe()
    finally:
        stop_process(proc)


@pytest.mark.slow
def test_an_outlet_without_a_kept_login_is_named_and_a_bad_folder_refused(tmp_path: Path) -> None:
    d = tmp_path / "central"
    assert central("init", str(d), "--host", "127.0.0.1", "--port", str(free_port())).returncode == 0
    added(d, "o1")
    added(d, "o2")
    db = sqlite3.connect(d / "data" / "central.db")  # as a database from before the registry kept them
    db.execute("UPDATE outlets SET mqtt_hash=NULL WHERE id='o2'")
    db.commit()
    db.close()
    r = central("nats-auth", str(d), str(tmp_path / "auth.conf"))
    assert r.returncode == 0 and "1 outlets" in r.stdout and "o2" in r.stderr and "outlet add" in r.stderr
    r = central("nats-auth", str(tmp_path / "nowhere"), str(tmp_path / "auth2.conf"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not (tmp_path / "auth2.conf").exists()
