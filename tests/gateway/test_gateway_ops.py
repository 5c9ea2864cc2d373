"""Gateway operations: provisioning an outlet, the downstream command relay
to real locker firmware, command expiry, status and devices for the clerk,
and the systemd unit."""

from __future__ import annotations

import configparser
import grp
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from firmware.locker import codes as C
from gateway.broker import Mosquitto
from gateway.store.events import EventStore
from protocol import signing, topics
from simulator import unixport
from simulator.gateway_process import GatewayProcess, write_config
from simulator.lockboard_sim import Sim8ABus
from simulator.outlet import locker_config, stored_events, wait_event
from tests.locker_rig import KEY

ROOT = Path(__file__).resolve().parents[2]


def postedge(*args: str, lang: str = "en") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", lang, *args],
                          capture_output=True, text=True, timeout=60)


def signed(op: str, args: dict, cmd_id: str, exp_in: int = 600, dev: str = "lk01") -> bytes:
    now = int(time.time())
    return signing.encode(signing.sign({"id": cmd_id, "dev": dev, "op": op, "args": args, "iat": now,
                                        "exp": now + exp_in}, KEY, kv=1))


def test_provision_writes_working_broker_config_and_credentials(tmp_path: Path) -> None:
    inv = tmp_path / "outlet.toml"
    inv.write_text('outlet = "o-0451"\nbroker_host = "192.168.4.1"\n'
                   '[[devices]]\nid = "lk01"\nkind = "locker"\n'
                   '[[devices]]\nid = "sc01"\nkind = "scanner"\n')
    out = tmp_path / "prov"
    r = postedge("gateway", "provision", str(inv), "--out", str(out), "--listen", "127.0.0.1",
                 "--port", "18830", lang="zh")
    assert r.returncode == 0, r.stderr
    assert "2 台设备" in r.stdout
    # What it could not hand to the service accounts is said, not dropped.
    try:
        grp.getgrnam("postedge")
    except KeyError:
        assert ("not root" if os.geteuid() else "no group 'postedge'") in r.stderr
    lk = json.loads((out / "devices" / "lk01.json").read_text())
    assert lk["broker"]["host"] == "192.168.4.1" and lk["broker"]["user"] == "lk01"
    passwd = (out / "mosquitto" / "passwd").read_text()
    assert lk["broker"]["password"] not in passwd and "lk01:$7$" in passwd  # hashed
    acl = (out / "mosquitto" / "acl").read_text()
    assert "topic write pe/v1/o-0451/locker/lk01/evt" in acl
    assert "topic read pe/v1/o-0451/scanner/sc01/cmd" in acl
    assert (out / "devices" / "lk01.json").stat().st_mode & 0o777 == 0o600
    # [web] logs handhelds in (uploads, command status) with the broker's password file, out of the box.
    from gateway.config import GatewayConfig
    web = GatewayConfig.load(out / "gateway.toml").web
    assert web is not None and web.passwd_file is not None
    assert Path(web.passwd_file).samefile(out / "mosquitto" / "passwd")  # samefile: it exists
    # Re-running keeps deployed devices' passwords.
    postedge("gateway", "provision", str(inv), "--out", str(out), "--listen", "127.0.0.1", "--port", "18830")
    assert json.loads((out / "devices" / "lk01.json").read_text()) == lk
    # The written config runs, and the credentials work (and only for their own topics).
    conf = (out / "mosquitto" / "mosquitto.conf").read_text().replace("user mosquitto", "user root")
    (out / "mosquitto" / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(out / "mosquitto" / "mosquitto.conf")])
    try:
        time.sleep(0.5)
        ok = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lk01")
        c.username_pw_set("lk01", lk["broker"]["password"])
        c.on_connect = lambda *a: ok.set() if not a[3].is_failure else None
        c.connect("127.0.0.1", 18830)
        c.loop_start()
        assert ok.wait(5)
        c.disconnect()
        c.loop_stop()
    finally:
        proc.terminate()
        proc.wait(5)


def test_provision_refuses_bad_inventory_naming_the_key(tmp_path: Path) -> None:
    inv = tmp_path / "outlet.toml"
    inv.write_text('outlet = "o1"\n[[devices]]\nid = "LK 01"\nkind = "locker"\n')
    r = postedge("gateway", "provision", str(inv), "--out", str(tmp_path / "p"))
    assert r.returncode == 2
    assert r.stderr.strip() == "error: inventory: devices[0].id must be 1-32 of a-z 0-9 _ -"


@pytest.fixture
def gateway(tmp_path: Path, broker: Mosquitto):
    cfg = write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")
    gw = GatewayProcess(cfg)
    gw.wait_for("gateway_started")
    yield {"cfg": cfg, "gw": gw, "db": tmp_path / "gateway.db"}
    gw.stop()


@pytest.mark.e2e
@pytest.mark.mpy
def test_commands_wait_for_the_locker_and_are_acked(tmp_path: Path, broker: Mosquitto, gateway: dict) -> None:
    """Queued while the locker is off; delivered when it comes online."""
    salt = "00aa11bb22cc33dd"
    cmds = [("cred-1", signed("credential", {"courier": "c1", "salt": salt, "exp": int(time.time()) + 600,
                                             "hash": C.salted_hash(salt, "pw")}, "cred-1")),
            ("bad-1", signed("open", {"compartment": 1}, "bad-1").replace(b'"compartment":1',
                                                                          b'"compartment":2'))]
    files = []
    for cid, payload in cmds:
        f = tmp_path / f"{cid}.json"
        f.write_bytes(payload)
        files.append(str(f))
    r = postedge("gateway", "enqueue", "--config", str(gateway["cfg"]), "--kind", "locker", *files)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["queued: cred-1", "queued: bad-1"]
    time.sleep(1.5)
    st = EventStore(gateway["db"])
    queued = st.db.execute("SELECT status FROM commands").fetchall()
    st.close()
    assert queued == [("queued",), ("queued",)]  # nobody to send them to yet
    bus = Sim8ABus(boards=(1,), locks=24)
    cfg = locker_config("lk01", "o1", broker.port, "lk01-pw", f"socket://127.0.0.1:{bus.serve_tcp()}",
                        tmp_path / "flash", KEY)
    (tmp_path / "lk01.json").write_text(json.dumps(cfg))
    fw = unixport.popen(["-m", "firmware.locker.main", str(tmp_path / "lk01.json")],
                        heap=unixport.APP_HEAP, stdout=subprocess.DEVNULL)
    try:
        acked = wait_event(gateway["db"], "gateway.command_acked", timeout=30)
        refused = wait_event(gateway["db"], "gateway.command_refused", timeout=30)
    finally:
        fw.kill()
        fw.wait()
        bus.close()
    assert acked["body"]["id"] == "cred-1" and acked["body"]["device"] == "lk01"
    assert refused["body"]["id"] == "bad-1" and refused["body"]["code"] == "bad_signature"
    assert acked["cls"] == "audit" and acked["id"].startswith("gw-o1:")
    st = EventStore(gateway["db"])
    rows = dict(st.db.execute("SELECT id, status FROM commands").fetchall())
    st.close()
    assert rows == {"cred-1": "acked", "bad-1": "refused"}


def test_expired_commands_are_reported_upstream(tmp_path: Path, gateway: dict) -> None:
    f = tmp_path / "c.json"
    f.write_bytes(signed("open", {"compartment": 1}, "late-1", exp_in=2, dev="lk02"))
    assert postedge("gateway", "enqueue", "--config", str(gateway["cfg"]), "--kind", "locker",
                    str(f)).returncode == 0
    expired = wait_event(gateway["db"], "gateway.command_expired", timeout=15)
    assert expired["body"] == {"id": "late-1", "device": "lk02", "op": "open"}


def test_enqueue_refuses_garbage(tmp_path: Path, gateway: dict) -> None:
    f = tmp_path / "junk.json"
    f.write_bytes(b"\x00not json")
    r = postedge("gateway", "enqueue", "--config", str(gateway["cfg"]), "--kind", "locker", str(f))
    assert r.returncode == 1 and "command is not" in r.stderr


@pytest.mark.slow
def test_status_and_devices_for_the_clerk(tmp_path: Path, broker: Mosquitto, gateway: dict) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sc01")
    c.username_pw_set("sc01", "sc01-pw")
    c.will_set(topics.build("o1", "scanner", "sc01", "presence"), b"offline", qos=1, retain=True)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    presence = topics.build("o1", "scanner", "sc01", "presence")
    c.publish(presence, b"online", qos=1, retain=True).wait_for_publish(5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = postedge("gateway", "devices", "--config", str(gateway["cfg"]), "--json")
        if r.stdout.strip() not in ("", "[]"):
            break
        time.sleep(0.3)
    devices = json.loads(r.stdout)
    assert [(d["device"], d["kind"], d["online"]) for d in devices] == [("sc01", "scanner", True)]
    zh = postedge("gateway", "devices", "--config", str(gateway["cfg"]), lang="zh").stdout
    assert zh.startswith("sc01") and "在线" in zh and "秒前" in zh
    sock = c.socket()
    c.loop_stop()
    assert sock is not None
    sock.close()  # vanish without DISCONNECT: the Last Will says offline
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        devices = json.loads(postedge("gateway", "devices", "--config", str(gateway["cfg"]), "--json").stdout)
        if not devices[0]["online"]:
            break
        time.sleep(1)
    assert not devices[0]["online"]
    st = postedge("gateway", "status", "--config", str(gateway["cfg"]), "--json")
    doc = json.loads(st.stdout)
    assert doc["devices_online"] == 0 and doc["devices"] == 1 and doc["last_sync_at"] is None
    text = postedge("gateway", "status", "--config", str(gateway["cfg"]), lang="zh").stdout
    assert "设备在线：0/1" in text and "上次同步：从未" in text
    assert stored_events(gateway["db"]) == []  # presence is not an event


def test_systemd_unit_runs_a_real_command() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "deploy" / "postedge-gateway.service")
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0].endswith("/postedge") and argv[1:4] == ["gateway", "run", "--config"]
    r = postedge(*argv[1:3], "--help")
    assert r.returncode == 0 and "--config" in r.stdout
    assert unit["Service"]["KillSignal"] == "SIGTERM" and unit["Service"]["Restart"] == "always"


@pytest.mark.slow
def test_status_says_when_the_gateway_is_not_running_and_a_second_one_is_refused(
        tmp_path: Path, broker: Mosquitto) -> None:
    """With the gateway stopped, `gateway status` printed
    its last figures ("devices online: 1/2") and exited 0."""
    cfg = write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")
    gw = GatewayProcess(cfg)
    try:
        gw.wait_for("gateway_started")
        live = postedge("gateway", "status", "--config", str(cfg), "--json")
        assert live.returncode == 0 and json.loads(live.stdout)["running"] is True
        # the gateway's own broker link, as its ingest keeps it (written within a second)
        deadline = time.monotonic() + 10
        while "消息代理：已连接" not in (text := postedge("gateway", "status", "--config", str(cfg),
                                                        lang="zh").stdout):
            assert time.monotonic() < deadline, text
            time.sleep(0.3)
        second = postedge("gateway", "run", "--config", str(cfg), lang="zh")
        assert second.returncode == 3 and "另一个网关已在使用数据库" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        gw.proc.kill()  # however it ends, the lock goes with the process
        gw.proc.wait()
    dead = postedge("gateway", "status", "--config", str(cfg), "--json")
    assert dead.returncode == 3 and json.loads(dead.stdout)["running"] is False
    zh = postedge("gateway", "status", "--config", str(cfg), lang="zh")
    assert zh.returncode == 3 and "网关未运行" in zh.stdout
    en = postedge("gateway", "status", "--config", str(cfg))
    assert "the gateway is not running" in en.stdout


def test_a_taken_web_port_is_one_line_and_exit_3(tmp_path: Path) -> None:
    """A busy web port printed a traceback around the message."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(f'outlet = "o1"\ndb = "gw.db"\n[broker]\nport = 1\n[web]\nport = {port}\n',
                       encoding="utf-8")
        r = postedge("gateway", "run", "--config", str(cfg), lang="zh")
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == (f"错误：网关的网页端口 127.0.0.1:{port} 已被占用"
                                "（gateway.toml 的 [web] host/port）")
