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
    assert at[12.0] > 40, at  # the outage held the day's events back
    # The link is back at 13:00: by the sample of that window only its own
    # new events may wait (the sample follows its actions).
    assert at[13.0] <= 15, at
    assert res["stats"].get("pace_cut", 0) == 0, res["stats"]
