"""The simulator's pytest plugin, used the way a tester uses it: a test file of their own,
run by pytest in a subprocess that finds the plugin through its entry point (no conftest,
no ``-p``), with the outlet's asyncio loop in the fixture's thread.

One subprocess runs the whole tester file, because each test there brings a full outlet
up (Mosquitto, the gateway process, the real central service, the firmware) and the box has
two shared cores; the outcome of every tester test is then checked by name.
"""

from __future__ import annotations

import os
import textwrap
from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]

TESTER_FILE = textwrap.dedent(
    '''
    import pytest


    def test_deposit_then_pickup_is_green(outlet, locker):
        parcel = outlet.new_parcel()
        cid = locker.deposit(parcel, size="S")
        assert outlet.code(parcel)
        assert outlet.pickup("lk01", parcel) == cid
        assert [c["state"] for c in locker.compartments() if c["id"] == cid] == ["free"]
        assert outlet.intake("sc01", outlet.new_parcel())
        assert outlet.settle(30), outlet.missing()
        assert outlet.ledger()["ok"], outlet.summary()
        assert outlet.domain(complete=True).ok
        assert outlet.verdict() == {"ok": True, "failures": []}


    def test_wan_outage_during_deposits(outlet, faults):
        faults.wan_down()
        for lk in ("lk01", "lk02", "lk01"):
            outlet.deposit(lk, outlet.new_parcel())
        outlet.advance(2)
        assert outlet.wait_for(lambda: len(outlet.events(type="locker.deposit")) == 3)
        assert not outlet.settle(1)          # nothing crosses a WAN that is down
        assert outlet.missing()
        faults.wan_up()
        assert outlet.settle(30), outlet.missing()
        res = outlet.result()
        assert res["verdict"]["ok"], outlet.summary(result=res)
        assert len(outlet.central_events("locker.deposit")) == 3
        assert [(f["kind"], f["t"], f["until"]) for f in res["faults"]] == [("wan_down", 0.0, 7200.0)]


    def test_power_cut_keeps_queued_events(outlet, faults, locker):
        # The locker's publishes never reach the broker, so its deposit events wait in
        # the flash outbox; the power cut loses RAM, and the boot sends them from flash.
        before = {e["id"] for e in locker.events()}  # the boot event may already be through
        with faults.mqtt("drop", packet="PUBLISH", topic="pe/v1/o1/locker/lk01/evt") as rule:
            parcel = outlet.new_parcel()
            locker.deposit(parcel)
            assert outlet.wait_for(lambda: rule.fired > 0)
            queued = {e["id"] for e in locker.events()} - before
            faults.power_cut("lk01", boot=False)
            assert not locker.online
        assert not queued & outlet.central.held("o1").keys()
        outlet.intake("sc01", outlet.new_parcel())   # the rest of the outlet goes on
        outlet.advance(0.5)
        locker.boot()
        outlet.pickup("lk01", parcel)
        assert outlet.settle(30), outlet.missing()
        assert queued <= outlet.central.held("o1").keys()
        assert outlet.verdict()["ok"], outlet.summary()


    @pytest.mark.outlet(proxy=True)
    def test_duplicated_publishes_are_delivered_once(outlet, faults, locker):
        with faults.mqtt("duplicate", packet="PUBLISH", direction="c2s") as rule:
            for _ in range(2):
                locker.deposit()
            # the locker's sender publishes on its own time: the rule stays while it does
            assert outlet.wait_for(lambda: rule.fired > 0)
        assert outlet.settle(30), outlet.missing()
        led = outlet.ledger()
        assert led["ok"] and led["end_to_end"]["duplicated"] == 0, outlet.summary()


    def test_handheld_photo_arrives_once(outlet, handheld):
        sha = handheld.photo(job="job-7", site="site-2")
        assert outlet.settle(30), outlet.missing()
        (ev,) = outlet.central_events("handheld.photo")
        assert ev["body"]["sha256"] == sha
        photo_rule = [c for c in outlet.domain().checks if c.name == "photo_arrives_once"][0]
        assert photo_rule.ok and photo_rule.stats == {"submitted": 1, "arrived": 1}
        assert outlet.verdict()["ok"], outlet.summary()


    @pytest.mark.outlet(lockers=1, scanners=0, compartments=4, seed=5)
    def test_marker_shapes_the_outlet(outlet, locker):
        assert outlet.lockers == ["lk01"] and outlet.scanners == []
        assert len(locker.compartments()) == 4
        assert outlet.sc.seed == 5


    def test_lost_events_fail_the_ledger(outlet, locker):
        locker.deposit()
        assert outlet.settle(30)
        central = outlet.central             # the platform "loses" one event from its store
        eid = next(e for e in central.held("o1") if e.startswith("lk01:"))
        assert central.forget("o1", eid)
        assert outlet.ledger()["end_to_end"]["lost"] == 1
        assert outlet.verdict()["ok"]       # fails, on purpose: the report names the hop


    def test_whole_scenario(sim_scenario, tmp_path):
        path = tmp_path / "tiny.toml"
        path.write_text("""
    name = "tiny"
    seed = 3
    [time]
    hours = 2.0
    [outlet]
    lockers = 1
    scanners = 1
    [workload]
    parcels = 3
    arrivals_by_hour = [1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]
    pickup_delay_h = [0.1, 0.5]
    window_min = 30
    """)
        res = sim_scenario(path)
        assert res["scenario"] == "tiny"
        assert res["verdict"]["ok"], res["verdict"]
        assert res["stats"]["deposit"] == 3 and res["stats"]["pickup"] >= 1
    '''
)


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A subprocess: the fixtures' loop threads, Mosquitto and the gateway process stay out
    # of this pytest process. The plugin comes from its entry point, unless autoloading
    # is switched off in this environment.
    extra = ["-p", "simulator.pytest_plugin"] if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") else []
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers", *extra, *args,
                                         timeout=300)


def test_plugin_is_registered_by_entry_point() -> None:
    eps = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert eps.get("postedge_sim") == "simulator.pytest_plugin"


@pytest.mark.e2e
@pytest.mark.slow
def test_fixtures_in_a_testers_own_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_outlet_day=TESTER_FILE)
    res = _run(pytester, "-rA", "-v")
    out = res.stdout.str()
    res.assert_outcomes(passed=7, failed=1)
    for name in (
        "test_deposit_then_pickup_is_green",
        "test_wan_outage_during_deposits",
        "test_power_cut_keeps_queued_events",
        "test_duplicated_publishes_are_delivered_once",
        "test_handheld_photo_arrives_once",
        "test_marker_shapes_the_outlet",
        "test_whole_scenario",
    ):
        assert f"PASSED test_outlet_day.py::{name}" in out, out
    assert "FAILED test_outlet_day.py::test_lost_events_fail_the_ledger" in out
    # The failing test's report carries the outlet's summary: verdict, the hop, the id.
    res.stdout.fnmatch_lines(
        [
            "*postedge outlet*",
            "Verdict: FAIL",
            "Failed: delivery ledger",
            "*end to end lost: e.g. lk01:*",
            "result: */outlet/result.json",
        ]
    )


def test_marker_with_an_unknown_field_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_typo="""
        import pytest

        @pytest.mark.outlet(lokcers=3)
        def test_x(outlet):
            pass
        """
    )
    res = _run(pytester)
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(["*@pytest.mark.outlet: unknown lokcers*"])
