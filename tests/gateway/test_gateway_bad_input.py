"""Bad input at the gateway: every kind is rejected with its own error code,
counted, kept for inspection, and never blocks or loses the good events
around it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.broker import Mosquitto
from gateway.store.events import EventStore
from protocol import envelope, topics
from simulator.gateway_process import GatewayProcess, write_config


def event(dev: str, seq: int, **over: object) -> bytes:
    env = envelope.make(f"{dev}:0badc0de:{seq}", 1795881163, "locker.door", "status", {"door": 1})
    env.update(over)
    # Plain json, not the canonical encoder, so a float can be sent at all.
    return json.dumps(env, separators=(",", ":")).encode()


def test_bad_input_is_counted_and_good_events_survive(tmp_path: Path, broker: Mosquitto,
                                                       connect) -> None:
    cfg = write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")
    gw = GatewayProcess(cfg)
    gw.wait_for("gateway_started")
    lk01 = connect("lk01")
    gwc = connect("gw-o1")
    evt = topics.build("o1", "locker", "lk01", "evt")
    sends = [
        (lk01, evt, event("lk01", 1)),
        (lk01, evt, b"\x00\xff\x13\x37 garbage"),
        (lk01, evt, b'{"v":1,"id":'),
        (lk01, evt, event("lk01", 2, body={"pad": "x" * 5000})),
        (lk01, evt, event("lk02", 3)),  # id names another device
        (lk01, evt, event("lk01", 4, body={"t": 21.5})),
        (lk01, evt, event("lk01", 5, v=2)),
        (gwc, "pe/v1/o1/fridge/f1/evt", event("f1", 6)),
        (lk01, evt, event("lk01", 7)),
    ]
    try:
        for client, topic, payload in sends:
            client.client.publish(topic, payload, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            s = EventStore(tmp_path / "gateway.db")
            n = s.count() + len(s.rejected())
            s.close()
            if n >= len(sends):
                break
            time.sleep(0.1)
        # The gateway is still up and still stores.
        lk01.client.publish(evt, event("lk01", 8), qos=1).wait_for_publish(5)
        time.sleep(1.0)
    finally:
        last = gw.stop()
    s = EventStore(tmp_path / "gateway.db")
    ids = [r["id"] for r in s.events()]
    codes = [r["code"] for r in s.rejected()]
    s.close()
    assert ids == ["lk01:0badc0de:1", "lk01:0badc0de:7", "lk01:0badc0de:8"]
    assert codes == ["malformed", "malformed", "oversized", "bad_field", "bad_field",
                     "bad_version", "unknown_topic"]
    assert last["rejected_malformed"] == 2
    assert last["rejected_bad_field"] == 2
    assert last["rejected_oversized"] == 1
    assert last["rejected_unknown_topic"] == 1
    assert last["seq_gaps"] == 1  # 1 -> 7 is reported, not hidden; 7 -> 8 is in order
    rejected_lines = [d for d in gw.lines if d.get("evt") == "rejected"]
    assert all(d["detail"] for d in rejected_lines)
    assert json.dumps(rejected_lines, ensure_ascii=False)
