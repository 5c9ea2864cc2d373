"""The gateway's ingest checks for the outbound custody events (寄件): good
bodies are stored, malformed ones refused with their code, counted, kept in
``rejected``, and never stop the good events around them. Real Mosquitto,
the gateway process and its SQLite file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gateway.broker import Mosquitto
from gateway.store.events import EventStore
from protocol import envelope, topics
from protocol.outbound import make_bag
from simulator.gateway_process import GatewayProcess, write_config

BAG = make_bag(20261203001)
DROP = {"compartment": 3, "order": "SO20261203-0042", "size": "M", "booked": "M", "via": "keypad"}
PICKUP = {"bag": BAG, "items": ["SO20261203-0042", "RB123456785GB"], "courier": "c007"}


def event(dev: str, seq: int, etype: str, body: Any, cls: str = "custody") -> bytes:
    env = {"v": 1, "id": f"{dev}:0badc0de:{seq}", "ts": 1795881163, "type": etype, "cls": cls, "body": body}
    if not isinstance(body, dict):
        return json.dumps(env, separators=(",", ":"), sort_keys=True).encode()
    return envelope.encode(envelope.make(env["id"], env["ts"], etype, cls, body))


def test_outbound_events_are_checked_at_ingest(tmp_path: Path, broker: Mosquitto, connect) -> None:
    gw = GatewayProcess(write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret"))
    gw.wait_for("gateway_started")
    lk, hh = connect("lk01"), connect("hh01")
    lk_evt = topics.build("o1", "locker", "lk01", "evt")
    hh_evt = topics.build("o1", "handheld", "hh01", "evt")
    sends = [
        (lk, lk_evt, event("lk01", 1, "locker.send_dropoff", DROP)),
        (lk, lk_evt, event("lk01", 2, "locker.send_dropoff", dict(DROP, code="418263"))),  # a secret
        (lk, lk_evt, event("lk01", 3, "locker.send_dropoff", dict(DROP, order="so-1"))),
        (lk, lk_evt, event("lk01", 4, "locker.send_dropoff", {k: v for k, v in DROP.items() if k != "via"})),
        (lk, lk_evt, event("lk01", 5, "locker.send_dropoff", DROP, cls="status")),  # evictable: no
        (lk, lk_evt, event("lk01", 6, "locker.send_collected", {"compartment": 3, "order": DROP["order"],
                                                                "courier": "c007"})),
        (lk, lk_evt, event("lk01", 7, "locker.send_collected", {"compartment": True, "order": DROP["order"],
                                                                "courier": "c007"})),
        (lk, lk_evt, event("lk01", 8, "handheld.bag_pickup", PICKUP)),  # a locker posing as a handheld
        (hh, hh_evt, event("hh01", 1, "handheld.bag_pickup", PICKUP)),
        (hh, hh_evt, event("hh01", 2, "handheld.bag_pickup", dict(PICKUP, bag=BAG[:-1] + str(
            (int(BAG[-1]) + 1) % 10)))),
        (hh, hh_evt, event("hh01", 3, "handheld.bag_pickup", dict(PICKUP, items=PICKUP["items"] * 2))),
        (hh, hh_evt, event("hh01", 4, "handheld.bag_pickup", dict(PICKUP, items=[]))),
        (hh, hh_evt, event("hh01", 5, "handheld.bag_pickup", dict(PICKUP, items=["RB123456784GB"]))),
        (hh, hh_evt, event("hh01", 6, "handheld.group_handout", {
            "group": "GO20261203-7", "point": "vp-xiakou", "shares": 3, "share": 2, "qty": 4,
            "confirm": "name", "courier": "c007"})),
        (hh, hh_evt, event("hh01", 7, "handheld.group_handout", {
            "group": "GO20261203-7", "point": "vp-xiakou", "shares": 3, "share": 4, "qty": 4,
            "confirm": "name", "courier": "c007"})),
        (hh, hh_evt, event("hh01", 8, "handheld.point_collect", "not an object")),
        (hh, hh_evt, event("hh01", 9, "handheld.point_collect", {
            "point": "vp-xiakou", "item": "EA123456785CN", "courier": "c007"})),
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
    finally:
        last = gw.stop()
    s = EventStore(tmp_path / "gateway.db")
    ids = [r["id"] for r in s.events()]
    rejected = [(r["code"], r["detail"]) for r in s.rejected()]
    s.close()
    assert sorted(ids) == sorted(["lk01:0badc0de:1", "lk01:0badc0de:6", "hh01:0badc0de:1",
                                  "hh01:0badc0de:6", "hh01:0badc0de:9"])
    codes = [c for c, _ in rejected]
    assert codes.count("bad_field") == 11 and codes.count("missing_field") == 1, rejected
    details = " ".join(d for _, d in rejected)
    for why in ("secrets never travel in clear", "not an order id", "class custody",
                "not an event a locker sends", "bag_check_digit",
                "listed twice", "share must be an integer 1..3", "body must be an object"):
        assert why in details, why
    assert last["rejected_bad_field"] == 11 and last["rejected_missing_field"] == 1
    assert "418263" not in str(ids)


def test_the_status_page_shows_outbound_compartments_and_events(tmp_path: Path) -> None:
    from gateway.http.page import render_main
    from gateway.http.status import snapshot
    from gateway.store.events import StoredEvent

    store = EventStore(tmp_path / "gateway.db")
    now = time.time()
    store.device_state("lk01", "o1", "locker", json.dumps({
        "v": 1, "ts": int(now), "compartments": [{"id": 2, "size": "M", "state": "send_waiting"}],
        "retrieval": [2], "outbound": [{"compartment": 2, "order": DROP["order"]}]}), now)
    rows = [("locker.send_dropoff", dict(DROP, compartment=2)),
            ("locker.send_collected", {"compartment": 2, "order": DROP["order"], "courier": "c007"})]
    store.commit_events([
        StoredEvent(f"lk01:0badc0de:{i}", "o1", "locker", "lk01", "0badc0de", i, "custody", t, int(now),
                    event("lk01", i, t, b)) for i, (t, b) in enumerate(rows, start=1)])
    snap = snapshot(store, now)
    store.close()
    zh, en = render_main(snap, "zh", 5), render_main(snap, "en", 5)
    assert "待揽收寄件" in zh and "Outbound" in en and "st-send_waiting" in en
    assert "寄件已投入" in zh and "Outbound parcel collected by courier" in en
    assert DROP["order"] in en and "c007" not in json.dumps(snap["parcels"])  # shown fields only
