"""The gateway's timers on the simulation's clock (``common/timers.py``,
``simulator/pacing.py``): a virtual run's report tells when the outlet's
time says things happened, not when real seconds let a thread run.

An outage ends at 13:00; the gateway's next probe, the drain and the
retries after it fall in that same hour of the scenario, so the backlog is
gone by the next window. It once stalled for hours of the report's axis:
the probe of the dead link waited half a real second, which a fast virtual
run spent on several hour-long windows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from simulator.runner import run_scenario
from simulator.scenario import parse

HOUR = 3600


@pytest.mark.e2e
@pytest.mark.slow
def test_the_backlog_drains_in_the_hour_the_link_comes_back(tmp_path: Path) -> None:
    sc = parse({
        "name": "drain-on-time", "seed": 3, "time": {"hours": 16.0, "start": int(time.time()) - 86400},
        "outlet": {"lockers": 1, "compartments": 24, "scanners": 1},
        "workload": {"parcels": 40, "pickup_rate": 0.5, "pickup_delay_h": [0.5, 2.0], "window_min": 60},
        "faults": [{"kind": "wan_down", "at_h": 9.0, "for_h": 4.0}],
    })
    res = run_scenario(sc, tmp_path / "run")
    assert res["verdict"]["ok"], res["verdict"]
    at = {round(t / HOUR, 3): n for t, n, _ in res["backlog"]}
    assert max(at[11.0], at[12.0]) > 40, sorted(at.items())  # the outage held the day's events back
    # The link is back at 13:00: by the sample of that window only its own
    # new events may wait (the sample follows its actions, and on a loaded
    # box the uplink may not have sent them yet: a window brings 10 to 25
    # here), not the outage's (the stalled drain left over 80).
    assert at[13.0] <= 35, sorted(at.items())
    assert res["stats"].get("pace_cut", 0) == 0, res["stats"]


@pytest.mark.e2e
@pytest.mark.mpy
@pytest.mark.slow
def test_unix_port_lockers_live_on_the_scenario_clock_and_repeat_their_trace(tmp_path: Path) -> None:
    """A locker on the MicroPython unix port reads the scenario's time
    (``drivers/hal/unix.py``, ``SimClock.attach_devices``) and draws its random
    bytes from the run's seed: its events carry the scenario's times, and two
    runs of one seed have one trace hash. It once ran on the host's clock
    (events two days off the scenario's axis here) and drew codes from
    ``os.urandom``, so no two runs matched."""
    hours = [0.0] * 24
    hours[6] = 1.0
    doc = {"name": "unix-clock", "seed": 4, "time": {"hours": 8.0, "start": int(time.time()) - 2 * 86400},
           "outlet": {"lockers": 1, "scanners": 0, "locker_mode": "unixport"},
           "workload": {"parcels": 3, "arrivals_by_hour": hours, "pickup_delay_h": [0.2, 0.5],
                        "pickup_rate": 1.0}}
    runs = [run_scenario(parse(doc), tmp_path / f"run{i}") for i in range(2)]
    for res in runs:
        assert res["verdict"]["ok"], (res["verdict"], res["stats"])
        assert res["stats"]["deposit"] == 3 and res["stats"]["pickup"] == 3, res["stats"]
        deposits = [e["t"] for e in res["timeline"] if e["type"] == "locker.deposit"]
        assert len(deposits) == 3 and all(6 * HOUR <= t < 8 * HOUR for t in deposits), deposits
    assert runs[0]["trace_hash"] == runs[1]["trace_hash"]
