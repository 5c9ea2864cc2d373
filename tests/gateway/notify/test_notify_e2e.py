"""Exactly once, end to end: a real gateway process, a real Mosquitto, the
real central service (its notices through the HTTP SMS adapter to a
provider double) behind a link that goes down and comes back, the simulated
modem on a pty, a gateway killed with SIGKILL and started again. Every
deposit is notified once: by the platform (its ``notify.route`` reached the
central side, which texted the villager) or by this outlet's modem (one text
on the simulated phone), never both, never none; and the code is nowhere but
in that one text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.broker import Mosquitto
from protocol import topics
from simulator.central import Certs
from simulator.gateway_process import GatewayProcess
from simulator.modem_sim import ModemSim
from tests.gateway.test_status_page import device_client
from tests.notify_rig import PHONE, contact, deposit, key_file
from tests.uplink_rig import gateway_toml, make_central_uplink
from tests.waiting import until

PARCELS = {"RB100000004CN": "614220", "RB200000003CN": "907315", "RB300000002CN": "338061"}


@pytest.mark.slow
@pytest.mark.e2e
def test_each_deposit_notified_exactly_once(tmp_path: Path, broker: Mosquitto, certs: Certs) -> None:
    up = make_central_uplink(tmp_path, certs, notifier=True)
    sim = ModemSim(tmp_path / "ttyModem")
    keys = key_file(tmp_path / "notify-keys.toml")
    cfg = gateway_toml(tmp_path / "gateway.toml", broker, up.upstream(down_interval_s=0.3))
    with cfg.open("a", encoding="utf-8") as f:
        f.write(f'\n[notify]\nmodem = "{sim.path}"\nkey_file = "{keys}"\nname_zh = "石桥村邮站"\n'
                'delay_s = 2.0\ninterval_s = 0.2\ntimeout_s = 1.0\nsend_timeout_s = 2.0\n')
    central = up.central
    for parcel in PARCELS:  # the platform has every villager's number, and gives it to the gateway
        central.add_contact("o1", parcel, PHONE)
        central.push_command("o1", "notify", json.loads(contact(parcel)))
    stderr = tmp_path / "gateway.err"
    gw = GatewayProcess(cfg, stderr=stderr)
    lk = device_client("lk01", broker.port)
    evt = topics.build("o1", "locker", "lk01", "evt")
    deposits = {}
    try:
        gw.wait_for("notify_started")
        until(lambda: len([d for d in gw.lines if d.get("evt") == "notify_contact"]) == 3, 15, "contacts")
        # 1: the link is up, the platform acks the deposit: the platform's.
        (p1, c1), (p2, c2), (p3, c3) = PARCELS.items()
        d1 = deposit("lk01", 1, p1, c1)
        deposits[d1.id] = p1
        lk.publish(evt, d1.payload, qos=1)
        until(lambda: central.notices("o1").get(d1.id), 15, "the platform's route")
        # 2: the backhaul goes down; after delay_s the modem texts the villager.
        up.link.down()
        d2 = deposit("lk01", 2, p2, c2)
        deposits[d2.id] = p2
        lk.publish(evt, d2.payload, qos=1)
        until(lambda: len(sim.texts()) == 1, 15, "the modem's text")
        # (a kill between the modem's +CMGS and the commit is the in-process
        # test's case: that text is then "uncertain", never sent again)
        gw.wait_for("notify_sent")
        # 3: the gateway is killed and comes back, still offline: nothing twice.
        gw.kill()
        gw = GatewayProcess(cfg, stderr=stderr)
        gw.wait_for("notify_started")
        d3 = deposit("lk01", 3, p3, c3)
        deposits[d3.id] = p3
        lk.publish(evt, d3.payload, qos=1)
        until(lambda: len(sim.texts()) == 2, 15, "the second modem text")
        # 4: the link comes back; the routes reach the platform.
        up.link.up()
        until(lambda: all(central.notices("o1").get(d) for d in deposits), 30, "every route upstream")
        time.sleep(1.0)  # time for a wrong second decision to show itself
        gw.stop()
    finally:
        if gw.proc.poll() is None:
            gw.kill()
        lk.loop_stop()
        sim.close()
        up.link.down()
    # deposit_notified_once, as the platform's rule reads it
    assert central.notices("o1") == {d1.id: ["platform"], d2.id: ["gateway"], d3.id: ["gateway"]}
    texts = sim.texts()
    assert [n for n, _ in texts] == [PHONE, PHONE]
    assert c2 in texts[0][1] and c3 in texts[1][1] and not any(c1 in t for _, t in texts)
    platform_texts = list(central.sms.texts.values())  # what the platform's SMS provider got
    assert [(t["to"], c1 in t["text"]) for t in platform_texts] == [(PHONE, True)]
    sent = [e for e in central.held("o1").values() if e["type"] == "notify.sent"]
    assert sorted(e["body"]["event"] for e in sent) == sorted([d2.id, d3.id])
    # The code nowhere else: not in the gateway's output, not in any event upstream.
    output = json.dumps(gw.lines, ensure_ascii=False) + stderr.read_text(encoding="utf-8", errors="replace")
    upstream = b"".join(row[3] for row in central.backend.events_since(0))
    for code in PARCELS.values():
        assert code not in output and code.encode() not in upstream
    assert all(e["body"].get("code") is None for e in central.held("o1").values())
    central.close()
