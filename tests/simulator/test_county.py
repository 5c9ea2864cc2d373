"""A county in a scenario file (``[fleet]``), run with ``postedge sim run``:
outlets against one central service, faults that hit one outlet only (its
uplink down for hours, its disk full), and the dispatcher's view in the
summary (outlets by backlog and alarms, and both over the day), in Chinese
and English."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from common.config import describe
from simulator.fleet import by_hour, outlet_scenario
from simulator.report.fleet_summary import (
    alarm_strip,
    backlog_strip,
    fleet_summary,
    print_fleet_summary,
    ruler,
)
from simulator.scenario import ScenarioError, load, parse

ROOT = Path(__file__).resolve().parents[2]
COUNTY = ROOT / "scenarios" / "county-day.toml"


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "postedge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_a_county_scenario_gives_each_outlet_its_own_seed_and_faults() -> None:
    sc = load(COUNTY)
    assert sc.fleet_outlets == 6
    assert [(n, f.kind) for n, f in sc.fleet_faults] == [(3, "wan_down"), (5, "disk_full")]
    kinds = {i + 1: [f.kind for f in outlet_scenario(sc, i).faults] for i in range(6)}
    assert kinds == {1: [], 2: [], 3: ["wan_down"], 4: [], 5: ["disk_full"], 6: []}
    third = outlet_scenario(sc, 2)
    assert third.seed != outlet_scenario(sc, 3).seed and third.fleet_outlets == 0 and not third.fleet_faults
    # the county's own faults hit every outlet, in time order with the outlet's
    both = parse({"name": "c", "faults": [{"kind": "broker_restart", "at_h": 9.0}],
                  "fleet": {"outlets": 2, "faults": [{"outlet": 2, "kind": "wan_down", "at_h": 1.0,
                                                      "for_h": 2.0}]}})
    assert [f.kind for f in outlet_scenario(both, 0).faults] == ["broker_restart"]
    assert [f.kind for f in outlet_scenario(both, 1).faults] == ["wan_down", "broker_restart"]
    assert parse({"name": "one"}).fleet_outlets == 0  # no [fleet]: one outlet


def test_a_fault_at_an_outlet_the_county_lacks_is_refused_in_both_languages() -> None:
    doc = {"name": "c", "fleet": {"outlets": 2, "faults": [{"outlet": 3, "kind": "wan_down", "at_h": 1.0,
                                                             "for_h": 1.0}]}}
    with pytest.raises(ScenarioError) as e:
        parse(doc)
    assert "fleet.faults" in describe(e.value, "en") and "outlet 3" in describe(e.value, "en")
    assert "第 3 个网点" in describe(e.value, "zh")
    with pytest.raises(ScenarioError):
        parse({"name": "c", "fleet": {"outlets": 0}})
    # the platform's own sabotage is the county's, never one outlet's: the county shares the platform
    with pytest.raises(ScenarioError) as e:
        parse({"name": "c", "fleet": {"outlets": 2, "faults": [{"outlet": 2, "kind": "central_lossy",
                                                                 "at_h": 1.0, "for_h": 1.0}]}})
    en = describe(e.value, "en")
    assert en.startswith("fleet.faults[0].kind: central_lossy is a fault of the platform"), en
    assert "全县共用一个平台" in describe(e.value, "zh")
    assert parse({"name": "c", "faults": [{"kind": "central_lossy", "at_h": 1.0, "for_h": 1.0}],
                  "fleet": {"outlets": 2}}).faults[0].kind == "central_lossy"
    with pytest.raises(ScenarioError):  # a fault needs its outlet
        parse({"name": "c", "fleet": {"outlets": 2, "faults": [{"kind": "broker_restart", "at_h": 1.0}]}})
    late = parse({"name": "c", "time": {"hours": 6.0},
                  "fleet": {"outlets": 2, "faults": [{"outlet": 1, "kind": "wan_down", "at_h": 7.0,
                                                      "for_h": 1.0}]}})
    assert [w.text("en") for w in late.warnings()] == [
        "fleet.faults[0] (wan_down) starts at 7.0 h but the scenario lasts 6.0 h: it will not be injected"]


def test_the_hours_of_an_outlet_take_the_peak_backlog_and_count_alarms() -> None:
    backlog = [[600.0, 3, 10], [3000.0, 7, 20], [3700.0, 2, 5], [7200.0, 9, 30]]  # the last: the settled end
    timeline = [{"t": 10.0, "cls": "alarm"}, {"t": 3599.0, "cls": "alarm"}, {"t": 4000.0, "cls": "custody"},
                {"t": 5000.0, "cls": "alarm"}]
    assert by_hour(backlog, timeline, 2) == {"backlog_by_h": [7, 9], "alarms_by_h": [2, 1]}


def test_the_strips_scale_to_the_county_and_never_hide_a_small_backlog() -> None:
    assert backlog_strip([0, 1, 50, 100], 1, 100) == " ▁▄█"
    assert backlog_strip([0, 0, 0], 1, 0) == "   "
    assert backlog_strip([1, 0, 0, 100], 2, 100) == "▁█"  # two hours a cell: the cell's peak
    assert alarm_strip([0, 2, 0, 12], 1) == "·2·+"
    assert alarm_strip([1, 2, 0, 0], 2) == "3·"
    assert ruler(24, 1) == "0h    6h    12h   18h   "


def county_result() -> dict[str, Any]:
    def outlet(oid: str, ok: bool, peak: int, alarms: list[int],
               faults: list[dict[str, Any]]) -> dict[str, Any]:
        backlog = [0] * 24
        backlog[8:12] = [peak // 4, peak // 2, peak, peak // 2]
        return {"outlet": oid, "ok": ok, "failures": [] if ok else ["ledger_ok"], "emitted": 100, "held": 104,
                "lost": 0 if ok else 3, "alarms": sum(alarms), "backlog": [], "backlog_max": peak,
                "backlog_by_h": backlog, "alarms_by_h": alarms, "faults": faults}

    quiet = [0] * 24
    two = [0] * 24
    two[14], two[20] = 1, 1
    return {"scenario": "county-day", "kind": "fleet", "outlets": 2, "seed": 11, "hours": 24,
            "virtual_s": 86400.0, "up_s": 10.0, "day_s": 20.0, "wall_s": 31.0, "events_emitted": 200,
            "events_held": 208, "lost": 3,
            "dispatcher": [outlet("o002", False, 80, quiet,
                                  [{"t": 21600.0, "until": 57600.0, "kind": "wan_down", "detail": ""}]),
                           outlet("o001", True, 4, two, [])],
            "verdict": {"ok": False, "failing_outlets": ["o002"]}}


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_dispatchers_view_reads_in_both_languages(lang: str) -> None:
    text = fleet_summary(county_result(), lang)
    lines = text.splitlines()
    assert "FAIL" in lines[0] and "FAIL" in lines[-1]
    words = {"zh": ("未通过的网点：o002", "调度员视图", "积压随时间", "警报随时间", "外网中断"),
             "en": ("Outlets that failed: o002", "Dispatcher's view", "Backlog over time", "Alarms over time",
                    "WAN down")}[lang]
    for w in words:
        assert w in text, (w, text)
    rows = [x for x in lines if x.startswith("  o00")]
    # the table (most backlog first), then each outlet's backlog and alarm strips, in that order
    assert [r.split()[0] for r in rows] == ["o002", "o001"] * 3
    assert "6:00:00" in rows[0] and rows[1].split()[-1] == "-"
    assert rows[2].split()[1] == "▂▄█▄" and rows[2].endswith("  80")  # 8:00 to 12:00, against o002's 80
    assert rows[3].split()[1] == "▁▁▁▁" and rows[3].endswith("  4")  # small, never hidden
    assert rows[5].split()[1] == "··············1·····1···" and rows[5].endswith("  2")


def test_a_county_prints_as_the_dispatchers_view_coloured_on_a_terminal() -> None:
    import io

    out = io.StringIO()
    print_fleet_summary(county_result(), "en", out, colour=False)
    assert out.getvalue() == fleet_summary(county_result(), "en") + "\n"
    out = io.StringIO()
    print_fleet_summary(county_result(), "en", out, colour=True)
    assert "\x1b[1;31mVerdict: FAIL" in out.getvalue() and "Dispatcher's view" in out.getvalue()


def test_the_cli_refuses_what_a_county_cannot_do_before_it_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:  # the dashboard's port: the machine, not the county
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        r = cli("--lang", "en", "sim", "run", str(COUNTY), "--dashboard", port,
                "--workdir", str(tmp_path / "w"))
        assert r.returncode == 3 and f"port {port}" in r.stderr, r.stderr
    r = cli("--lang", "en", "sim", "run", str(COUNTY), "--outlets", "4")  # outlet 5's disk fault
    assert r.returncode == 2 and "names outlet 5, but the county has 4" in r.stderr, r.stderr
    r = cli("--lang", "zh", "sim", "run", str(COUNTY), "--outlets", "0")
    assert r.returncode == 2 and "至少要有 1 个网点" in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())
    r = cli("--lang", "zh", "sim", "run", "--help")
    assert "--outlets N" in r.stdout and "县" in r.stdout
    r = cli("--lang", "en", "sim", "check", str(COUNTY))
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert "0 faults, a county of 6 outlets with 2 more faults at one outlet each" in r.stdout
    zh = cli("--lang", "zh", "sim", "check", str(COUNTY)).stdout
    assert "县里 6 个网点，另有 2 个故障各只在一个网点" in zh


@pytest.mark.e2e
@pytest.mark.slow
def test_the_shipped_county_runs_with_its_faults_and_the_dispatchers_view(tmp_path: Path) -> None:
    """``--outlets 5``: the county's size from the command line (outlet 5's disk still fills)."""
    out = tmp_path / "county.json"
    r = cli("--lang", "en", "sim", "run", str(COUNTY), "--outlets", "5", "--json", str(out),
            "--workdir", str(tmp_path / "work"), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["kind"] == "fleet" and res["outlets"] == 5 and res["verdict"]["ok"] and res["lost"] == 0
    by = {p["outlet"]: p for p in res["dispatcher"]}
    assert sorted(by) == [f"o00{i}" for i in range(1, 6)]
    assert [f["kind"] for f in by["o003"]["faults"]] == ["wan_down"]
    assert [f["kind"] for f in by["o005"]["faults"]] == ["disk_full"]
    assert not by["o001"]["faults"]
    # the outlet whose uplink was down for ten hours leads the dispatcher's view,
    # its backlog growing through the outage and drained after it
    assert res["dispatcher"][0]["outlet"] == "o003"
    hours = by["o003"]["backlog_by_h"]
    # (the 16:00 sample: the link just back, the backlog not yet gone)
    assert len(hours) == 24 and max(hours[6:17]) == by["o003"]["backlog_max"] > max(hours[18:])
    others = [p["backlog_max"] for o, p in by.items() if o not in ("o003", "o005")]
    assert by["o003"]["backlog_max"] > max(others)
    # each outlet's forced door in the afternoon, at the platform and in its hour
    for p in by.values():
        assert p["alarms"] == sum(p["alarms_by_h"]) >= 1 and p["alarms_by_h"][14] >= 1, p
    lines = r.stdout.splitlines()
    assert "PASS" in lines[0] and "PASS" in lines[-2] + lines[-1]
    assert "Dispatcher's view" in r.stdout and "Backlog over time" in r.stdout
    assert (tmp_path / "work" / "result.json").is_file()


SCALEOUT_COUNTY = """
name = "county-scaleout"
seed = 11
[time]
hours = 6.0
[outlet]
lockers = 1
handhelds = 1
[workload]
parcels = 12
arrivals_by_hour = [1.0, 1.0, 1.0, 1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
pickup_delay_h = [0.5, 1.0]
outbound_h = 0.5
forced_doors = 1
board_sites = 1
[fleet]
outlets = 2
[[fleet.faults]]
outlet = 2
kind = "wan_down"
at_h = 2.5
for_h = 1.0
"""


@pytest.mark.e2e
@pytest.mark.slow
def test_a_county_runs_against_the_scale_out_backend(tmp_path: Path) -> None:
    """``--central scaleout``: the county's gateways upload to a front whose
    batches go through a 3-node NATS JetStream cluster and an ingest worker
    into PostgreSQL, where the duties review the boards and answer the
    alarms' clerk, and the ledger reads what PostgreSQL holds."""
    sc = tmp_path / "county.toml"
    sc.write_text(SCALEOUT_COUNTY, encoding="utf-8")
    out = tmp_path / "county.json"
    r = cli("--lang", "en", "sim", "run", str(sc), "--central", "scaleout", "--json", str(out),
            "--workdir", str(tmp_path / "work"), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["central_backend"] == "scaleout" and res["verdict"]["ok"] and res["lost"] == 0, res["verdict"]
    by = {p["outlet"]: p for p in res["dispatcher"]}
    assert sorted(by) == ["o001", "o002"] and [f["kind"] for f in by["o002"]["faults"]] == ["wan_down"]
    for p in res["dispatcher"]:
        checks = {x["name"]: x for x in p["expectations"]}
        assert checks["board_jobs_reviewed"]["ok"], checks["board_jobs_reviewed"]
        assert p["held"] > 0 and p["alarms"] >= 1, p
    # refused before it starts: a sabotage of the embedded store
    lossy = tmp_path / "lossy.toml"
    lossy.write_text('name = "x"\n[[faults]]\nkind = "central_lossy"\nat_h = 1.0\nfor_h = 1.0\n',
                     encoding="utf-8")
    r = cli("--lang", "zh", "sim", "run", str(lossy), "--central", "scaleout", timeout=60)
    assert r.returncode == 2 and "扩展后端上不能注入" in r.stderr, r.stderr
