"""The notifier in a simulated outlet: a day with a backhaul outage, where
the outlet's modem texts the villagers the platform cannot reach, and every
deposit is told exactly once (``deposit_notified_once``)."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

from simulator.assembly import Outlet
from simulator.runner import run_scenario
from simulator.scenario import parse


@pytest.mark.e2e
@pytest.mark.slow
def test_outage_day_notifies_each_deposit_once_and_the_modem_speaks(tmp_path: Path) -> None:
    sc = parse({
        # Real time at 1 h a second: the 10 h outage lasts 10 s on the wall
        # clock, which the gateway's delay_s is measured on.
        "name": "notify-outage", "seed": 5, "time": {"hours": 20.0, "mode": "real", "speed": 3600.0},
        "outlet": {"lockers": 1, "compartments": 24, "scanners": 1},
        "workload": {"parcels": 30, "pickup_rate": 0.5, "pickup_delay_h": [1.0, 3.0], "window_min": 30},
        "faults": [{"kind": "wan_down", "at_h": 8.0, "for_h": 10.0}],
        "notify": {"enabled": True, "delay_s": 1.0, "contacts": 0.8},
    })
    seen: list[Outlet] = []
    res = run_scenario(sc, tmp_path / "run", on_start=seen.append)
    exp = {x["name"]: x for x in res["expectations"]}
    assert exp["deposit_notified_once"]["ok"], exp["deposit_notified_once"]
    assert res["verdict"]["ok"], res["verdict"]
    st = res["stats"]
    assert st["notices_modem"] > 0 and st["modem_texts"] == st["notices_modem"]
    assert st["notices_platform"] > 0
    assert st["notices_platform"] + st["notices_modem"] + st.get("notices_none_picked_up", 0) == st["deposit"]
    # The codes went out by SMS only: not in the gateway's database or output.
    outlet = seen[0]
    assert outlet.modem is not None
    codes = [m for _, text in outlet.modem.texts() for m in re.findall(r"取件码(\d{6})", text)]
    assert len(codes) == st["modem_texts"]
    db = b"".join(p.read_bytes() for p in (tmp_path / "run").glob("gateway.db*"))
    out = json.dumps(outlet.gw.lines, ensure_ascii=False)
    for code in codes:
        assert code in outlet.obs.codes.values()  # the code the locker issued
        assert not re.search(rb"(?<![0-9])" + code.encode() + rb"(?![0-9])", db)
        assert not re.search(r"(?<![0-9])" + code + r"(?![0-9])", out)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_virtual_outage_day_texts_through_the_modem_on_the_simulated_clock(tmp_path: Path) -> None:
    """Virtual time, the day a day behind the wall: the gateway's notifier
    waits its delay on the simulated clock (``common/timers.py``), and the
    contacts the platform pushes are signed on the outlet's clock, so the
    modem texts the deposits of the outage, each when its delay is out. It
    once texted none: every
    contact was refused as issued in the future (signed on the wall clock),
    and each deposit then counted as told by "none" once picked up."""
    sc = parse({
        "name": "notify-virtual", "seed": 5,
        "time": {"hours": 20.0, "start": int(time.time()) - 2 * 86400},
        "outlet": {"lockers": 1, "compartments": 24, "scanners": 1},
        "workload": {"parcels": 30, "pickup_rate": 0.5, "pickup_delay_h": [1.0, 3.0], "window_min": 30},
        "faults": [{"kind": "wan_down", "at_h": 8.0, "for_h": 10.0}],
        "notify": {"enabled": True, "delay_s": 60.0, "contacts": 1.0},
    })
    res = run_scenario(sc, tmp_path / "run")
    exp = {x["name"]: x for x in res["expectations"]}
    assert exp["deposit_notified_once"]["ok"], exp["deposit_notified_once"]
    assert res["verdict"]["ok"], res["verdict"]
    st = res["stats"]
    assert not st.get("gateway_contacts_refused"), st
    assert st["notices_modem"] > 0 and st["modem_texts"] == st["notices_modem"], st
    # Each text left when its delay was out, not at the next half-hour window:
    # the notifier says when it is due and the simulator steps its clock there.
    with sqlite3.connect(tmp_path / "run" / "gateway.db") as db:
        waited = [(r[0], round((r[1] - sc.start) / 3600, 2)) for r in db.execute(
            "SELECT s.sent_at - j.received_at, j.received_at FROM notify_sms s "
            "JOIN notify_jobs j ON j.event = s.event WHERE s.purpose = 'notice' AND s.sent_at IS NOT NULL")]
    late = [w for w in waited if not 60 <= w[0] < 90]
    assert waited and not late, (late, st)


def test_the_outage_scenario_ships_with_the_notifier_on() -> None:
    """The 3-day outage is where the modem matters: its scenario runs the
    notifier (tests/simulator/test_simulator.py runs every shipped scenario
    green, deposit_notified_once included)."""
    from simulator.scenario import load

    sc = load(Path(__file__).parents[2] / "scenarios" / "backhaul-outage-3d.toml")
    assert sc.notify["enabled"] and sc.notify["contacts"] > 0
    assert any(f.kind == "wan_down" and f.for_h >= 24 for f in sc.faults)
