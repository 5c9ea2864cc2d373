"""A virtual run's gateway is on the scenario's clock (``common/clock.py``,
``SimClock.attach``): deposits by permit, which live an hour of the
scenario's time, pass in virtual mode, and everything the gateway stored
carries a time inside the run's virtual range, not the wall clock's, and
the backlog's age the simulator reads from the gateway's store is on the
same clock.

The run is dated a month back: a gateway on the wall clock would expire
every command the platform signs for it (a command lives at most a week),
and its stored-at times would be a month after the run's."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from simulator.gateway_process import CLOCK_FILE
from simulator.runner import run_scenario
from simulator.scenario import day_start, parse

MONTH = 30 * 86400


@pytest.mark.e2e
@pytest.mark.slow
def test_permit_deposits_pass_and_the_gateway_stamps_virtual_time(tmp_path: Path) -> None:
    start = day_start() - MONTH
    sc = parse({"name": "permits-virtual", "seed": 3,
                "time": {"hours": 2.0, "mode": "virtual", "start": start},
                "outlet": {"lockers": 1, "compartments": 24, "scanners": 1, "handhelds": 1},
                "workload": {"parcels": 2, "arrivals_by_hour": [1] * 24, "permit_deposits": 2,
                             "outbound_h": 0.25},
                # an hour without the WAN: a backlog whose age the simulator samples
                "faults": [{"kind": "wan_down", "at_h": 0.5, "for_h": 1.0}]})
    ages: list[float] = []
    t0 = time.monotonic()
    res = run_scenario(sc, tmp_path / "run", progress=lambda o: ages.append(o.live.get("oldest_age_s", 0.0)))
    took = time.monotonic() - t0
    assert res["verdict"]["ok"], res["verdict"]
    [chk] = [x for x in res["expectations"] if x["name"] == "permit_deposits_once"]
    assert chk["ok"] and chk["fields"]["permits"] == chk["fields"]["deposited"] == 2
    assert res["stats"]["permit_deposit"] == 2 and res["refused"] == {}
    assert (tmp_path / "run" / CLOCK_FILE).exists()

    db = sqlite3.connect(tmp_path / "run" / "gateway.db")
    try:
        stored = db.execute("SELECT min(received_at), max(received_at), count(*) FROM events").fetchone()
        kinds = {k for (k,) in db.execute("SELECT DISTINCT kind FROM events")}
        cmds = db.execute("SELECT min(created), max(created), count(*) FROM commands").fetchone()
        expired = db.execute("SELECT count(*) FROM commands WHERE status = 'expired'").fetchone()[0]
    finally:
        db.close()
    # Between hour 0 and the end of the run, plus the real seconds the settling
    # took after the last window (the clock runs at real speed between sets).
    end = start + sc.duration_s + took
    assert stored[2] > 0 and start <= stored[0] and stored[1] <= end, (stored, start, end)
    assert {"locker", "handheld", "gateway"} <= kinds
    assert cmds[2] > 0 and start <= cmds[0] and cmds[1] <= end, (cmds, start, end)
    assert expired == 0
    # The backlog's age the dashboard shows is read on the same clock (not a month).
    assert ages and 0 < max(ages) <= sc.duration_s + took, ages
