"""The clerk console in a real gateway process (``postedge gateway run`` with
``[web]`` and ``[upstream]``), a real Mosquitto and the uplink double behind
a link that is down, then up: the clerk's acknowledgement and request wait
on the gateway ("waiting for the platform") and reach the platform once the
link returns, with the device events, each exactly once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.uplink_codec import DOWN_CLERK_DECISION, clerk_refusal
from gateway.broker import Mosquitto
from protocol import topics
from simulator.gateway_process import GatewayProcess
from tests.gateway.clerk_rig import Client, locker_state
from tests.gateway.test_status_page import device_client, event
from tests.uplink_rig import Uplink, gateway_toml
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_requests_wait_while_the_link_is_down_and_reach_the_platform_once(
        tmp_path: Path, broker: Mosquitto, https_uplink: Uplink) -> None:
    up = https_uplink
    up.link.down()
    cfg = gateway_toml(tmp_path / "gateway.toml", broker, up.upstream())
    with cfg.open("a", encoding="utf-8") as f:
        f.write('\n[web]\nhost = "127.0.0.1"\nport = 0\nlang = "en"\n')
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "gateway", "clerk", "add", "mei", "--role",
                        "supervisor", "--config", str(cfg)], input="mei-password-1\n", capture_output=True,
                       text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 0, r.stderr
    gw = GatewayProcess(cfg)
    lk = None
    try:
        gw.wait_for("gateway_started")
        port = next(d for d in gw.lines if d.get("evt") == "web_started")["port"]
        lk = device_client("lk01", broker.port)
        lk.publish(topics.build("o1", "locker", "lk01", "presence"), b"online", qos=1, retain=True)
        lk.publish(topics.build("o1", "locker", "lk01", "state"), json.dumps(locker_state()).encode(),
                   qos=1, retain=True).wait_for_publish(5)
        lk.publish(topics.build("o1", "locker", "lk01", "evt"),
                   event("lk01", 1, "locker.alarm", "alarm", {"alarm": "door_left_open", "compartment": 2}),
                   qos=1).wait_for_publish(5)
        c = Client(port)
        until(lambda: "door left open" in c.get("/?lang=en")[2], what="the alarm on the page")
        assert c.login("mei", "mei-password-1") == 303
        _, _, html = c.get("/clerk?lang=en")
        csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        alarm_id = re.search(r'data-alarm="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        assert c.post("/clerk/alarm", {"csrf": csrf, "alarm": alarm_id, "action": "acknowledge",
                                       "note": "shut it"})[0] == 303
        req = {"csrf": csrf, "device": "lk01", "compartment": "2", "action": "out_of_service",
               "note": "door will not latch"}
        assert c.post("/clerk/compartment", req)[0] == 303
        _, _, html = c.get("/clerk?lang=en")
        assert 'id="waiting"' in html and 'data-stage="waiting_link"' in html
        assert not up.central.events

        up.link.up()

        def arrived() -> list[str]:
            return sorted(e["type"] for e in up.central.events.values())

        # batches of the two lanes arrive in either order: wait for every one
        wanted = {"gateway.clerk_request", "gateway.alarm_acknowledged", "gateway.clerk_login",
                  "gateway.clerk_added", "locker.alarm"}
        until(lambda: wanted <= set(arrived()), 30, "the clerk's events at the platform")
        reqs = [e for e in up.central.events.values() if e["type"] == "gateway.clerk_request"]
        assert [(e["body"]["request"], e["body"]["compartment"], e["body"]["by"]) for e in reqs] == [
            ("out_of_service", 2, "mei")]
        assert reqs[0]["id"].startswith("gw-o1-clerk:") and not up.central.quarantine
        assert {"gateway.clerk_login", "gateway.clerk_added", "locker.alarm"} <= set(arrived())
        until(lambda: 'data-stage="sent"' in c.get("/clerk?lang=en")[2], 20, "the request's stage")
        assert 'id="waiting"' not in c.get("/clerk?lang=en")[2]

        # the platform refuses it (central/clerk_requests.py sends this): the page says so and why;
        # a refusal of a request this outlet never made, or with a reason the platform never gives,
        # is counted and changes nothing
        stranger = clerk_refusal("gw-o1-clerk:00000000:99", "no_note")
        up.central.push_command("o1", DOWN_CLERK_DECISION, stranger)
        up.central.push_command("o1", DOWN_CLERK_DECISION, {**clerk_refusal(reqs[0]["id"], "no_note"),
                                                            "reason": "because"})
        up.central.push_command("o1", DOWN_CLERK_DECISION, clerk_refusal(reqs[0]["id"], "unknown_locker"))
        until(lambda: 'data-stage="platform_refused"' in c.get("/clerk?lang=en")[2], 30, "the refusal")
        html = c.get("/clerk?lang=en")[2]
        assert "Refused by the platform: the platform has no such locker for this outlet" in html
        assert "平台拒绝：平台没有登记这台柜机" in c.get("/clerk?lang=zh")[2]
        invalid = [d for d in gw.lines
                   if d.get("evt") == "down_invalid" and d.get("kind") == DOWN_CLERK_DECISION]
        assert len(invalid) == 2, invalid
        assert gw.proc.poll() is None
    finally:
        if lk is not None:
            lk.disconnect()
            lk.loop_stop()
        if gw.proc.poll() is None:
            gw.stop()
