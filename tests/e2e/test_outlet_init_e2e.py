"""``postedge outlet init`` from a fresh folder to a serving outlet (issue
20): the description of one outlet with two lockers, a counter scanner and
a handheld; Mosquitto and the gateway started from exactly what init wrote
(the commands it prints); locker lk01 on the MicroPython unix port with its
generated config.json against a simulated lock board and panel; a courier's
badge from ``outlet courier`` (its credential reaches lk01 through the
gateway), a deposit and a pickup; a second init that changes nothing;
add-device bringing a third locker online; retire-device taking it out.

And with a central service: ``outlet init`` asks a running embedded central
(``postedge central run``) for every device's key over HTTPS; the keys are
the ones the platform derives from its master key, which never leaves it;
a courier's badge from ``central courier add`` reaches lk01 through the
gateway; a device the platform retired gets no key and init says so."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from central.embedded import Embedded
from central.keys import KeyService
from common.ports import free_port
from gateway.broker import find_mosquitto
from handheld.app import HandheldApp
from handheld.config import load_config as load_handheld
from protocol import keys, seal
from protocol.envelope import device_of
from simulator import unixport
from simulator.gateway_process import GatewayProcess
from simulator.lockboard_sim import Sim8ABus
from simulator.outlet import DoorCloser, stored_events, wait_event
from simulator.panel_sim import SimPanel
from simulator.scan_engine_sim import SimScanEngine

pytestmark = [pytest.mark.mpy, pytest.mark.slow]


def postedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "en", *args],
                          capture_output=True, text=True, timeout=120)


def snapshot(out: Path) -> dict[str, str]:
    skip = ("data/", "mosquitto/data/", "mosquitto/mosquitto.log")
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()
            and not p.relative_to(out).as_posix().startswith(skip)}


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing on port {port}")


def wait_device_event(db: Path, device: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in stored_events(db):
            if device_of(e) == device:
                return e
        time.sleep(0.2)
    raise TimeoutError(f"no event of {device} stored")


def test_outlet_init_to_a_serving_outlet(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # Run as root, Mosquitto drops to its own account (the conf's `user`):
        # it must be able to reach the folder, as it reaches /etc/postedge.
        for p in [tmp_path, *tmp_path.parents]:
            p.chmod(p.stat().st_mode | 0o001)
    port, tls_port, web_port = free_port(), free_port(), free_port()
    bus1, bus2, bus3 = (Sim8ABus(boards=(1,), locks=24) for _ in range(3))
    panel = SimPanel()
    engine = SimScanEngine("gm65", suffix="cr", aim=True, continuous=True)
    spec = tmp_path / "outlet.toml"
    spec.write_text(f"""
outlet = "o1"
address = "127.0.0.1"

[central]
url = "https://central.invalid/pe"

[broker]
port = {port}
tls_port = {tls_port}
listen = "127.0.0.1"

[web]
port = {web_port}

[[lockers]]
id = "lk01"
board = {{ uart = "socket://127.0.0.1:{bus1.serve_tcp()}" }}
panel = "{panel.url}"
state_dir = "{tmp_path / 'lk01-flash'}"
compartments = [{{ size = "S", count = 8 }}, {{ size = "M", count = 8 }}, {{ size = "L", count = 8 }}]

[[lockers]]
id = "lk02"
board = {{ uart = "socket://127.0.0.1:{bus2.serve_tcp()}" }}
state_dir = "{tmp_path / 'lk02-flash'}"

[[scanners]]
id = "sc01"
uart = "socket://127.0.0.1:{engine.serve_tcp()}"
state_dir = "{tmp_path / 'sc01-flash'}"

[[handhelds]]
id = "hh01"
""")
    out = tmp_path / "etc"
    r = postedge("outlet", "init", str(spec), "--out", str(out), "--no-install")
    assert r.returncode == 0, r.stderr
    assert f"The clerk opens: https://127.0.0.1:{web_port}/" in r.stdout
    assert "0.0.0.0" not in r.stdout
    assert "added  devices/lk01.json" in r.stdout
    cfg = json.loads((out / "devices" / "lk01.json").read_text())
    assert [c["size"] for c in cfg["compartments"]] == ["S"] * 8 + ["M"] * 8 + ["L"] * 8
    assert cfg["broker"]["port"] == tls_port and cfg["broker"]["ca"].startswith("-----BEGIN")
    assert "[upstream]" in (out / "gateway.toml").read_text()
    assert str(tmp_path) not in (out / "mosquitto" / "mosquitto.conf").read_text()  # relative paths
    for dev in ("lk02", "sc01", "hh01"):
        assert (out / "devices" / f"{dev}.json").exists()
    assert (out / "devices" / "hh01.toml").exists()

    broker = subprocess.Popen([find_mosquitto(), "-c", "mosquitto/mosquitto.conf"], cwd=out,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    gw = fw = fw2 = fw3 = closer = hh = sc = None
    try:
        wait_port(port)
        wait_port(tls_port)
        gw = GatewayProcess(out / "gateway.toml")
        gw.wait_for("gateway_started")
        started = next(d for d in gw.lines if d.get("evt") == "web_started")
        assert started["url"].startswith("https://") and "0.0.0.0" not in started["url"]
        db = out / "data" / "gateway.db"
        fw = unixport.popen(["-m", "firmware.locker.main", str(out / "devices" / "lk01.json")],
                            heap=unixport.APP_HEAP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        boot = wait_event(db, "locker.boot")
        assert device_of(boot) == "lk01"
        # the second locker of the description, from its own file, beside the first
        fw2 = unixport.popen(["-m", "firmware.locker.main", str(out / "devices" / "lk02.json")],
                             heap=unixport.APP_HEAP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_device_event(db, "lk02")["type"] == "locker.boot"
        panel.wait_connected()
        assert panel.wait_display("ready")["code"] == "ready"

        # A courier's badge from the pilot's embedded backend; its credential
        # reaches the locker through the gateway, with no hand-written code.
        r = postedge("outlet", "courier", str(spec), "c007", "--out", str(out))
        assert r.returncode == 0, r.stderr
        badge = next(w for w in r.stdout.split() if w.startswith("PE-C:c007:"))
        master = bytes.fromhex((out / "pilot" / "master.key").read_text().strip())
        key = keys.device_key(master, keys.fleet_id("o1", "lk01"), 1)  # the platform's copy of the code
        closer = DoorCloser(bus1)
        deadline = time.monotonic() + 30
        while panel.do("scan", badge)["code"] != "courier_ok":
            assert time.monotonic() < deadline, "the credential never reached lk01"
            time.sleep(1)
        assert panel.do("scan", "]C0RB123456785GB")["code"] == "choose_size"
        assert panel.do("keys", "2")["code"] == "door_open_deposit"
        panel.wait_display("deposit_ok")
        panel.do("keys", "0")
        dep = wait_event(db, "locker.deposit")
        code = seal.open_box("platform", key, dep)
        panel.keys(code)
        panel.wait_display("pickup_ok")
        assert wait_event(db, "locker.pickup")["body"]["parcel"] == "RB123456785GB"

        # The courier's handheld from the file init wrote, copied to it untouched (the
        # outlet CA is inside): MQTT over TLS with its own login; what it records
        # reaches the gateway.
        (tmp_path / "hh01").mkdir()
        copy = tmp_path / "hh01" / "handheld.toml"
        copy.write_bytes((out / "devices" / "hh01.toml").read_bytes())
        hh = HandheldApp(load_handheld(copy))
        hh.start()
        assert hh.link.subscribed.wait(20), hh.link.last_error
        assert hh.scan("RB123456785GB")["ok"]
        got = wait_event(db, "handheld.scan")
        assert device_of(got) == "hh01" and got["body"]["code"] == "RB123456785GB", got

        # The counter's scanner from its file, on the MicroPython unix port: a label
        # under its scan engine is registered at the gateway.
        sc = unixport.popen(["-m", "firmware.counter.main", str(out / "devices" / "sc01.json")],
                            heap=unixport.APP_HEAP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_device_event(db, "sc01")["type"] == "scanner.boot"
        time.sleep(1.0)
        engine.present("EA000000005CN")
        intake = wait_event(db, "scanner.intake")
        assert device_of(intake) == "sc01" and intake["body"]["parcel"] == "EA000000005CN", intake

        # Again: nothing changes, and it says so.
        before = snapshot(out)
        r = postedge("outlet", "init", str(spec), "--out", str(out), "--no-install")
        assert r.returncode == 0, r.stderr
        assert "nothing changed" in r.stdout
        assert snapshot(out) == before
        r = postedge("outlet", "check", str(spec), "--out", str(out))
        assert r.returncode == 0, r.stdout + r.stderr

        # A third locker arrives: only its files and the broker's accounts change.
        r = postedge("outlet", "add-device", str(spec), "lk03", "--kind", "locker", "--like", "lk01",
                     "--uart", f"socket://127.0.0.1:{bus3.serve_tcp()}", "--out", str(out), "--no-install")
        assert r.returncode == 0, r.stderr
        changed = {line.split()[-1] for line in r.stdout.splitlines() if line.startswith("  ")
                   and line.split()[0] in ("added", "changed")}
        assert changed == {"devices/lk03.json", "inventory.toml", "mosquitto/acl", "mosquitto/passwd"}
        cfg3 = json.loads((out / "devices" / "lk03.json").read_text())
        assert cfg3["compartments"] == cfg["compartments"] and cfg3["key"] != cfg["key"]
        broker.send_signal(signal.SIGHUP)  # re-read passwd and acl, as retire-device does
        (tmp_path / "lk03").mkdir()
        fw3 = unixport.popen(["-m", "firmware.locker.main", str(out / "devices" / "lk03.json")],
                             heap=unixport.APP_HEAP, cwd=tmp_path / "lk03",
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_device_event(db, "lk03")["type"] == "locker.boot"

        # lk03 leaves: its login goes (gateway/revoke.py), and init keeps it out.
        r = postedge("outlet", "retire-device", "lk03", "--out", str(out), "--broker-pid", str(broker.pid))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "lk03 retired" in r.stdout
        assert "lk03:" not in (out / "mosquitto" / "passwd").read_text()
        r = postedge("outlet", "init", str(spec), "--out", str(out), "--no-install")
        assert r.returncode == 0 and "retired devices, left out: lk03" in r.stdout, r.stdout + r.stderr
        assert not (out / "devices" / "lk03.json").exists()
    finally:
        if hh is not None:
            hh.stop()
        if closer is not None:
            closer.stop()
        for p in (fw, fw2, fw3, sc):
            if p is not None:
                p.kill()
                p.wait()
        if gw is not None:
            gw.stop()
        broker.terminate()
        broker.wait(10)
        panel.close()
        bus1.close()
        bus2.close()
        bus3.close()
        engine.close()


def test_outlet_init_takes_its_keys_from_the_central_service(tmp_path: Path) -> None:
    central = tmp_path / "central"
    cport = free_port()
    r = postedge("central", "init", str(central), "--host", "127.0.0.1", "--port", str(cport))
    assert r.returncode == 0, r.stderr
    r = postedge("central", "outlet", "add", str(central), "o2")
    assert r.returncode == 0, r.stderr
    password = r.stdout.strip().split()[-1]
    srv = subprocess.Popen([sys.executable, "-m", "postedge.cli", "--lang", "en", "central", "run",
                            str(central)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port, tls_port = free_port(), free_port()
    bus, panel = Sim8ABus(boards=(1,), locks=24), SimPanel()
    broker = gw = fw = closer = None
    try:
        wait_port(cport, 20)
        spec = tmp_path / "outlet.toml"
        body = f"""
outlet = "o2"
address = "127.0.0.1"

[central]
url = "https://127.0.0.1:{cport}/v1/batches"
username = "o2"
password = "{{password}}"
ca_file = "{central / 'pki' / 'ca.pem'}"

[broker]
port = {port}
tls_port = {tls_port}
listen = "127.0.0.1"

[web]
port = {free_port()}

[[lockers]]
id = "lk01"
board = {{ uart = "socket://127.0.0.1:{bus.serve_tcp()}" }}
panel = "{panel.url}"
state_dir = "{tmp_path / 'lk01-flash'}"

[[lockers]]
id = "lk02"

[[handhelds]]
id = "hh01"
"""
        spec.write_text(body.replace("{password}", "wrong-password"))
        out = tmp_path / "etc"
        r = postedge("outlet", "init", str(spec), "--out", str(out), "--no-install")
        assert r.returncode == 2 and "HTTP 401" in r.stderr, r.stdout + r.stderr
        assert not (out / "devices").exists()

        spec.write_text(body.replace("{password}", password))
        r = postedge("outlet", "init", str(spec), "--out", str(out), "--no-install")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "device keys: issued by the central service" in r.stdout
        assert not (out / "pilot").exists()  # no master key on this box
        platform = KeyService("o2", (central / "master.key").read_bytes())
        for dev in ("lk01", "lk02", "hh01"):
            assert json.loads((out / "devices" / f"{dev}.json").read_text())["key"] == \
                platform.device_config(dev)
        assert f'secret = "{platform.key("hh01").hex()}"' in (out / "devices" / "hh01.toml").read_text()
        backend = Embedded(central / "data")
        try:
            assert {d["device"]: d["kind"] for d in backend.devices("o2")} == \
                {"lk01": "locker", "lk02": "locker", "hh01": "handheld"}
        finally:
            backend.close()

        # The outlet runs; a courier's badge from the central service reaches
        # lk01 through the gateway (pulled from central, relayed over MQTT).
        broker = subprocess.Popen([find_mosquitto(), "-c", "mosquitto/mosquitto.conf"], cwd=out,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        wait_port(tls_port)
        gw = GatewayProcess(out / "gateway.toml")
        gw.wait_for("gateway_started")
        fw = unixport.popen(["-m", "firmware.locker.main", str(out / "devices" / "lk01.json")],
                            heap=unixport.APP_HEAP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        panel.wait_connected()
        panel.wait_display("ready")
        r = postedge("central", "courier", "add", str(central), "o2", "c009", "--days", "7")
        assert r.returncode == 0 and "lk01, lk02" in r.stdout, r.stdout + r.stderr
        badge = r.stdout.split()[-1]
        assert badge.startswith("PE-C:c009:")
        closer = DoorCloser(bus)
        deadline = time.monotonic() + 40
        while panel.do("scan", badge)["code"] != "courier_ok":
            assert time.monotonic() < deadline, "the credential from central never reached lk01"
            time.sleep(1)
        assert panel.do("scan", "]C0RB123456785GB")["code"] == "choose_size"
        assert panel.do("keys", "2")["code"] == "door_open_deposit"
        panel.wait_display("deposit_ok")
        r = postedge("outlet", "courier", str(spec), "c010", "--out", str(out))
        assert r.returncode == 2 and "postedge central courier add" in r.stderr, r.stdout + r.stderr

        backend = Embedded(central / "data")
        try:
            # Again: the same keys, nothing changes.
            before = snapshot(out)
            r = postedge("outlet", "init", str(spec), "--out", str(out), "--no-install")
            assert r.returncode == 0 and "nothing changed" in r.stdout, r.stdout + r.stderr
            assert snapshot(out) == before

            # The platform retires lk02: no key for it any more, and init says so.
            assert backend.retire_device("o2", "lk02")
        finally:
            backend.close()
        r = postedge("outlet", "init", str(spec), "--out", str(out), "--no-install")
        assert r.returncode == 2 and "retired lk02" in r.stderr, r.stdout + r.stderr
        assert snapshot(out) == before
        r = postedge("outlet", "retire-device", "lk02", "--out", str(out), "--broker-pid", str(broker.pid))
        assert r.returncode == 0 and "lk02 retired" in r.stdout, r.stdout + r.stderr
        r = postedge("outlet", "init", str(spec), "--out", str(out), "--no-install")
        assert r.returncode == 0 and "retired devices, left out: lk02" in r.stdout, r.stdout + r.stderr
        assert not (out / "devices" / "lk02.json").exists()
        lk01 = json.loads((out / "devices" / "lk01.json").read_text())
        assert lk01["key"] == platform.device_config("lk01")
    finally:
        if closer is not None:
            closer.stop()
        if fw is not None:
            fw.kill()
            fw.wait()
        if gw is not None:
            gw.stop()
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        srv.terminate()
        srv.wait(10)
        panel.close()
        bus.close()
