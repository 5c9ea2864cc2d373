"""A real gateway process syncing to the real central service: device events
published to Mosquitto reach the embedded central store once each, and a
command the platform signs and queues reaches the locker's command topic."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from central import front
from central.embedded import Embedded
from central.keys import KeyService
from common.pki import make_outlet_pki
from gateway.broker import Mosquitto
from protocol import topics
from simulator.gateway_process import GatewayProcess, write_config
from tests.central.test_contract import events
from tests.conftest import PASSWORDS

pytestmark = pytest.mark.e2e


def test_events_reach_the_central_store_once_and_a_signed_command_comes_down(
        tmp_path: Path, broker: Mosquitto) -> None:
    pki = make_outlet_pki(tmp_path / "pki", "central")
    backend = Embedded(tmp_path / "central")
    backend.add_outlet("o1", "o1-uplink-password")
    srv, _ = front.serve(backend, "127.0.0.1", 0, str(pki.server.cert), str(pki.server.key))
    conf = write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", PASSWORDS["gw-o1"],
                        db=str(tmp_path / "gateway.db"))
    with conf.open("a", encoding="utf-8") as f:
        f.write(f'\n[upstream]\nurl = "https://127.0.0.1:{srv.address[1]}/v1/batches"\n'
                f'ca_file = "{pki.ca}"\nusername = "o1"\npassword = "o1-uplink-password"\n'
                "batch_max_age_s = 0.2\nprobe_interval_s = 0.5\ndown_interval_s = 0.5\n")
    gw = GatewayProcess(conf)
    got: list[bytes] = []
    arrived = threading.Event()
    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lk01", protocol=mqtt.MQTTv311)
    dev.username_pw_set("lk01", PASSWORDS["lk01"])
    dev.on_message = lambda c, u, m: (got.append(m.payload), arrived.set())
    try:
        gw.wait_for("gateway_started")
        dev.connect("127.0.0.1", broker.port)
        dev.loop_start()
        dev.subscribe(topics.build("o1", "locker", "lk01", "cmd"), qos=1)
        rows = events("lk01", 30)
        for _, payload in rows:
            dev.publish(topics.build("o1", "locker", "lk01", "evt"), payload, qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 30
        while backend.count("o1") < 30 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert backend.count("o1") == 30
        held = {r[0] for r in backend.db.execute("SELECT id FROM events WHERE outlet='o1'")}
        assert held == {eid for eid, _ in rows}
        cmd = KeyService("o1", bytes(range(32))).command("lk01", "open", {"compartment": 4}, "cmd-e2e")
        backend.push_command("o1", "locker", cmd)
        assert arrived.wait(30), "the signed command never reached the locker's topic"
        assert json.loads(got[0])["id"] == "cmd-e2e"
    finally:
        dev.disconnect()
        dev.loop_stop()
        gw.stop()
        srv.stop()
        backend.close()
