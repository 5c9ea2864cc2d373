"""The locker firmware on the MicroPython unix port (128 KiB heap), end to
end: real Mosquitto with ACLs, the gateway process and its SQLite file, a
byte-accurate simulated lock board and a simulated front panel on sockets."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from firmware.locker import codes as C
from firmware.protocol import envelope, signing, topics
from gateway.broker import Mosquitto
from gateway.process import GatewayProcess, write_config
from gateway.store import EventStore
from postedge import unixport
from simulator.lockboard_sim import Sim8ABus
from simulator.panel_sim import SimPanel
from tests.locker_rig import KEY, layout

TESTS = Path(__file__).parent
CMD = topics.build("o1", "locker", "lk01", "cmd")
ACK = topics.build("o1", "locker", "lk01", "ack")


def stored_events(db: Path) -> list[dict]:
    s = EventStore(db)
    try:
        return [envelope.decode(r["payload"]) for r in s.events()]
    finally:
        s.close()


def wait_event(db: Path, etype: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in stored_events(db):
            if e["type"] == etype:
                return e
        time.sleep(0.2)
    raise TimeoutError(f"{etype} never reached the gateway; got {[e['type'] for e in stored_events(db)]}")


class DoorCloser:
    """A person at the locker: shuts any door the firmware opened."""

    def __init__(self, bus: Sim8ABus) -> None:
        self.bus = bus
        self.stop = threading.Event()
        self.closed: list[int] = []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self) -> None:
        while not self.stop.is_set():
            for ch in range(1, 25):
                if self.bus.is_open(1, ch):
                    time.sleep(0.3)
                    self.bus.close_door(1, ch)
                    self.closed.append(ch)
            time.sleep(0.05)


@pytest.fixture
def outlet(tmp_path: Path, broker: Mosquitto):
    bus = Sim8ABus(boards=(1,), locks=24)
    bport = bus.serve_tcp()
    panel = SimPanel()
    gwcfg = write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")
    gw = GatewayProcess(gwcfg)
    gw.wait_for("gateway_started")
    cfg = {
        "device": "lk01", "outlet": "o1",
        "broker": {"host": "127.0.0.1", "port": broker.port, "user": "lk01", "password": "lk01-pw",
                   "timeout": 2},
        "board": {"driver": "8a", "uart": f"socket://127.0.0.1:{bport}"},
        "compartments": layout(), "keys": {"k1": KEY.hex()},
        "state_dir": str(tmp_path / "flash"), "panel": panel.url, "poll_ms": 100,
    }
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    fw = unixport.popen(["-m", "firmware.locker.main", str(cfg_path)], heap=unixport.APP_HEAP,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    yield {"bus": bus, "panel": panel, "gw": gw, "fw": fw, "db": tmp_path / "gateway.db"}
    fw.kill()
    out, err = fw.communicate()
    gw.stop()
    panel.close()
    bus.close()
    if fw.returncode not in (-9, None):
        print(out[-3000:], err[-3000:])


def command(op: str, args: dict, cmd_id: str) -> bytes:
    now = int(time.time())
    return signing.encode(signing.sign({"id": cmd_id, "dev": "lk01", "op": op, "args": args,
                                        "iat": now, "exp": now + 600}, KEY, kid="k1"))


def send_command(broker: Mosquitto, payload: bytes, cmd_id: str, timeout: float = 30) -> dict:
    """Publish as the gateway until the locker acks this command id."""
    got: list[dict] = []
    ev = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-cmd-{cmd_id}")
    c.username_pw_set("gw-o1", "gw-secret")

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        a = json.loads(msg.payload)
        if a["id"] == cmd_id:
            got.append(a)
            ev.set()

    c.on_message = on_message
    c.connect("127.0.0.1", broker.port)
    c.subscribe(ACK, qos=1)
    c.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while not ev.is_set() and time.monotonic() < deadline:
            c.publish(CMD, payload, qos=1)  # again until the locker is subscribed
            ev.wait(2)
        assert got, f"no ack for {cmd_id}"
        return got[0]
    finally:
        c.loop_stop()
        c.disconnect()


def test_deposit_and_pickup_through_panel_broker_and_gateway(outlet: dict, broker: Mosquitto) -> None:
    panel: SimPanel = outlet["panel"]
    panel.wait_connected()
    assert panel.wait_display("ready")["zh"] == "请输入取件码或扫码"
    salt = "1234567890abcdef"
    ack = send_command(broker, command("credential", {"courier": "c007", "salt": salt,
                                                      "hash": C.salted_hash(salt, "s3cret"),
                                                      "exp": int(time.time()) + 3600}, "cred-1"), "cred-1")
    assert ack["ok"] and ack["result"] == {"couriers": 1}
    forged = json.loads(command("open", {"compartment": 1}, "forged-1"))
    forged["args"]["compartment"] = 2  # the signature covered compartment 1
    bad = json.dumps(forged).encode()
    assert send_command(broker, bad, "forged-1")["code"] == "bad_signature"
    closer = DoorCloser(outlet["bus"])
    try:
        assert panel.do("scan", "PE-C:c007:s3cret")["code"] == "courier_ok"
        assert panel.do("scan", "4006381333931")["code"] == "invalid_parcel"
        shown = panel.do("scan", "]C0RB123456785GB")
        assert shown["code"] == "choose_size" and shown["detail"] == "RB123456785GB"
        done = panel.do("keys", "2")
        assert done["code"] == "deposit_ok", done
        cid = int(done["detail"])
        assert panel.do("keys", "0")["code"] == "logged_out"
        dep = wait_event(outlet["db"], "locker.deposit")
        assert dep["body"]["compartment"] == cid and dep["body"]["parcel"] == "RB123456785GB"
        code = dep["body"]["code"]
        assert panel.do("keys", "000000" if code != "000000" else "111111")["code"] == "wrong_code"
        shown = panel.do("keys", code)
        assert shown["code"] == "pickup_ok" and int(shown["detail"]) == cid
        assert shown["en"].startswith("Door open")
        pick = wait_event(outlet["db"], "locker.pickup")
        assert pick["body"] == {"compartment": cid, "parcel": "RB123456785GB"}
        assert closer.closed == [cid, cid]
    finally:
        closer.stop.set()
    events = stored_events(outlet["db"])
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    # Panel garbage is counted, answered, and the panel carries on.
    m = panel.mark()
    panel.send_raw(b"\xff\xfe\x00garbage\n")
    first = panel.wait_display("unknown_input", after=m)
    panel.send_raw(b"Z:what\n")
    assert panel.wait_display("unknown_input", after=panel.shown.index(first, m) + 1)
    assert panel.do("keys", "12")["code"] == "wrong_code"
    assert outlet["fw"].poll() is None  # still running, within 128 KiB


def test_fifty_broker_restarts_lose_nothing_and_never_hang(tmp_path: Path, broker: Mosquitto) -> None:
    gwcfg = write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")
    gw = GatewayProcess(gwcfg)
    gw.wait_for("gateway_started")
    n = 1500
    proc = unixport.popen([str(TESTS / "publisher_mp_check.py"), str(broker.port), str(n),
                           str(tmp_path / "flash")], extra_path=[TESTS], stdout=subprocess.PIPE)
    rng = random.Random(20261128)
    try:
        for _ in range(50):
            time.sleep(rng.uniform(0.02, 0.25))
            broker.stop()  # SIGTERM: as systemd restarts it
            time.sleep(rng.uniform(0.0, 0.2))
            broker.start()
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(json.loads(line))
            if lines[-1]["evt"] == "drained":
                break
        assert lines and lines[-1]["evt"] == "drained", "publisher hung or died"
        stats = lines[-1]["stats"]
        assert stats["connects"] >= 25  # it really went through the restarts
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = stored_events(tmp_path / "gateway.db")
            if len({e["id"] for e in got}) >= n:
                break
            time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait()
        last = gw.stop()
    got = stored_events(tmp_path / "gateway.db")
    ids = {e["id"] for e in got}
    assert len(ids) == n == len(got)  # every one, once
    assert sorted(e["body"]["i"] for e in got) == list(range(n))
    assert last.get("seq_gaps", 0) == 0
