"""A county (simulator/fleet.py): outlets with their own broker, gateway
process and devices, all uploading to one real central service, each judged
as a single outlet is and each kept apart at the platform."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from simulator.fleet import run_fleet
from simulator.scenario import parse

COUNTY = {
    "name": "county",
    "seed": 4,
    "time": {"mode": "virtual", "hours": 3.0},
    "outlet": {"lockers": 1, "scanners": 1, "handhelds": 0},
    "workload": {"parcels": 4, "arrivals_by_hour": [1] * 24, "pickup_delay_h": [0.1, 0.5], "window_min": 30},
    "expect": {"ledger": True, "domain": True},
}


@pytest.mark.e2e
@pytest.mark.slow
def test_three_outlets_one_central_service_each_outlet_whole_and_apart(tmp_path: Path) -> None:
    res = run_fleet(parse(COUNTY), 3, tmp_path / "county")
    assert res["verdict"] == {"ok": True, "failing_outlets": []}, res["dispatcher"]
    assert res["kind"] == "fleet" and res["outlets"] == 3 and res["lost"] == 0
    by = {p["outlet"]: p for p in res["dispatcher"]}
    assert sorted(by) == ["o001", "o002", "o003"]
    for p in by.values():
        # the platform holds each outlet's device events under that outlet's login
        # (plus its gateway's own heartbeats), and none of another outlet's
        assert p["emitted"] > 0 and p["held"] >= p["emitted"] and p["lost"] == 0, p
        assert p["backlog"], "the dispatcher's view has the outlet's backlog over time"
    assert (tmp_path / "county" / "result.json").is_file()
    # in the central service's own store: three outlets, and each device boot (its
    # own seed per outlet) under exactly one of them
    db = sqlite3.connect(tmp_path / "county" / "central" / "central.db")
    rows = db.execute("SELECT outlet, id FROM events WHERE id NOT LIKE 'gw-%'").fetchall()
    assert {o for o, _ in rows} == {"o001", "o002", "o003"}
    boots: dict[str, set[str]] = {}
    for outlet, eid in rows:
        boots.setdefault(":".join(eid.split(":")[:2]), set()).add(outlet)
    assert all(len(o) == 1 for o in boots.values()), boots
    assert len(rows) == sum(p["emitted"] for p in by.values())
