"""The county's HTML report (``postedge sim run --html`` on a ``[fleet]``
scenario, ``simulator/report/fleet_html.py``): the dispatcher's table ranked
as the terminal ranks it, each outlet's faults and failing checks against
that outlet, its backlog and alarm plots, in Chinese and English, escaped as
the single outlet's report is. Checked on a county result made by hand (every
case, fast), in Debian's chromium through Playwright, and on a real county of
three outlets run by the command line. And the live dashboard on a county
(``fleet.county_snapshot``): the single outlet's page, every device named by
its outlet, kept after the run until Ctrl-C."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simulator.report import CSS, SCRIPT, render_fleet_html, write_fleet_html
from simulator.report.html_report import CSP
from tests.simulator.test_sim_report import INJECTED, keep_screenshot, parse

ROOT = Path(__file__).resolve().parents[2]
H = 3600.0


def outlet(oid: str, peak: int, alarms: list[float], faults: list[dict[str, Any]],
           failing: str | None = None) -> dict[str, Any]:
    """One outlet as ``county_result`` gives it: a backlog that rises to
    ``peak`` at 10:00 and drains, alarms at the given hours, its faults."""
    backlog = [[h * H, peak if h == 10 else peak // 2 if 6 <= h <= 14 else 0, 300 * peak] for h in range(25)]
    exps = [{"name": "ledger_ok", "ok": failing != "ledger_ok", "detail": "", "fields": {"hops": []}},
            {"name": "domain_ok", "ok": failing != "domain_ok", "detail": "",
             "fields": {"rules": ["parcel_final_state"] if failing == "domain_ok" else []}}]
    return {"outlet": oid, "ok": failing is None, "failures": [failing] if failing else [], "emitted": 100,
            "held": 104, "lost": 3 if failing == "ledger_ok" else 0, "duplicated": 0,
            "alarms": len(alarms), "last_batch_at": 1_000_000.0 - (7200 if faults else 30),
            "backlog": backlog,
            "backlog_max": peak, "backlog_by_h": [], "alarms_by_h": [], "faults": faults,
            "alarm_events": [{"t": h * H, "device": "lk01", "type": "locker.alarm", "id": f"lk01:x:{i}",
                              "cls": "alarm"} for i, h in enumerate(alarms)],
            "devices": [{"device": "lk01", "kind": "locker", "events": 80, "online": [[0.0, 86400.0]]},
                        {"device": "sc01", "kind": "scanner", "events": 20, "online": [[0.0, 86400.0]]}],
            "expectations": exps}


def county() -> dict[str, Any]:
    """Three outlets, ranked: o002 (its uplink down, the most backlog, a
    fault detail that is markup), o003 (failing its domain rules, two
    alarms), o001 (quiet)."""
    wan = {"t": 6 * H, "until": 16 * H, "kind": "wan_down", "detail": "central " + INJECTED}
    return {"scenario": "county-day", "kind": "fleet", "outlets": 3, "seed": 11, "hours": 24,
            "virtual_s": 86400.0, "up_s": 10.0, "day_s": 20.0, "wall_s": 31.0, "ended_at": 1_000_000.0,
            "events_emitted": 300, "events_held": 312, "lost": 0,
            "dispatcher": [outlet("o002", 80, [], [wan]), outlet("o003", 9, [14.5, 20.0], [], "domain_ok"),
                           outlet("o001", 4, [], [])],
            "verdict": {"ok": False, "failing_outlets": ["o003"]}}


def sections(page: str) -> dict[str, str]:
    """Each outlet's section of the page, by outlet."""
    parts = re.split(r'(?=<section id="outlet-)', page.split('<section id="outlets">', 1)[1])
    return {re.match(r'<section id="outlet-([^"]+)"', s).group(1): s  # type: ignore[union-attr]
            for s in parts if s.startswith('<section id="outlet-')}


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_county_page_ranks_the_outlets_and_puts_each_fault_against_its_own(lang: str) -> None:
    page = render_fleet_html(county(), lang)
    p = parse(page)
    html = p.find("html")[0]
    assert html["data-lang"] == lang and html["lang"] == ("zh-CN" if lang == "zh" else "en")
    text = "".join(p.text)
    # both languages on the page whichever is shown first
    for words in ("结论：未通过（FAIL）", "Verdict: FAIL", "调度员视图", "Dispatcher's view", "外网中断",
                  "WAN down", "未通过的检查：业务规则", "Failing checks: domain rules"):
        assert words in text, words
    # the dispatcher's table: a row per outlet, in the terminal's order, the failing one marked
    rows = [a for a in p.find("tr") if "data-outlet" in a]
    assert [r["data-outlet"] for r in rows] == ["o002", "o003", "o001"]
    assert [r["class"] for r in rows] == ["ok-row", "bad", "ok-row"]
    table = page.split('<table class="dispatcher">', 1)[1].split("</table>", 1)[0]
    cells = {r: table.split(f'data-outlet="{r}"', 1)[1].split("</tr>", 1)[0]
             for r in ("o001", "o002", "o003")}
    assert "WAN down" in cells["o002"] and "6:00:00" in cells["o002"]
    assert "WAN down" not in cells["o001"] + cells["o003"]
    assert ">80<" in cells["o002"] and "2h before the end" in cells["o002"]
    assert "30s before the end" in cells["o001"]
    # a section per outlet, linked from its row, with its own plots and checks
    assert [a["href"] for a in p.find("a") if a.get("href", "").startswith("#outlet-")][1:] == [
        "#outlet-o002", "#outlet-o003", "#outlet-o001"]  # the first: the verdict's failing outlet
    secs = sections(page)
    assert list(secs) == ["o002", "o003", "o001"]
    for oid, sec in secs.items():
        s = parse(sec)
        assert len(s.find("svg", "plot-backlog")) == 1 and len(s.find("svg", "plot-timeline")) == 1, oid
        assert len(s.find("polyline", "count")) == 1, oid
        assert [a["data-device"] for a in s.find("g", "row")] == ["lk01", "sc01"], oid
    assert len(parse(secs["o003"]).find("rect", "ev-alarm")) == 2
    assert not parse(secs["o001"]).find("rect", "ev")
    assert len(parse(secs["o002"]).find("rect", "fault")) == 2  # the outage shaded on both of its plots
    assert not parse(secs["o001"]).find("rect", "fault") and not parse(secs["o003"]).find("rect", "fault")
    assert "Failing checks" in secs["o003"] and "Failing checks" not in secs["o002"] + secs["o001"]
    # the outlet's text is escaped; the page's own script and style only, under their hashes
    assert "<img" not in page and page.count("<script") == 1 and INJECTED in text
    assert p.scripts == [SCRIPT] and p.styles == [CSS]
    csp = next(a["content"] for a in p.find("meta") if a.get("http-equiv") == "Content-Security-Policy")
    assert csp == CSP  # the single report's policy


def test_a_county_saved_before_the_report_still_renders() -> None:
    """A ``--json`` of a county from before this report (no alarm events,
    devices, checks or end time) reads as what it has."""
    old = county()
    for p in old["dispatcher"]:
        for k in ("alarm_events", "devices", "expectations", "duplicated"):
            del p[k]
    del old["ended_at"]
    page = render_fleet_html(old, "en")
    assert len(sections(page)) == 3 and page.count('class="plot plot-backlog"') == 3
    assert "before the end" not in page and "Failing checks: domain rules" in page


def test_the_county_page_in_chromium(chromium: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    path = write_fleet_html(county(), tmp_path / "county.html", lang="zh")
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: (errors.append(d.message), d.dismiss()))
    page.goto(path.as_uri())
    expect(page.locator("#verdict")).to_have_text(re.compile("结论：未通过（FAIL）.*o003"))
    rows = page.locator("table.dispatcher tbody tr")
    expect(rows).to_have_count(3)
    assert [rows.nth(i).get_attribute("data-outlet") for i in range(3)] == ["o002", "o003", "o001"]
    expect(rows.nth(0).locator("td.faults")).to_have_text(re.compile("外网中断"))
    expect(rows.nth(1)).to_contain_text("失败")
    for oid in ("o002", "o003", "o001"):
        for plot in ("backlog", "timeline"):
            box = page.locator(f"#outlet-{oid} svg.plot-{plot}").bounding_box()
            assert box and box["width"] > 600 and box["height"] > 100, (oid, plot, box)
    page.locator('table.dispatcher a[href="#outlet-o003"]').click()
    expect(page.locator("#outlet-o003 .failing")).to_be_in_viewport()
    expect(page.locator("#outlet-o003 .failing .l-zh")).to_have_text("未通过的检查：业务规则")
    expect(page.locator("#outlet-o003 .failing .l-en")).to_be_hidden()
    keep_screenshot(page, tmp_path, "county_report_zh.png")
    page.locator("#lang-switch").click()  # the inline script runs under the CSP's hash
    expect(page.locator("#verdict")).to_have_text(re.compile("Verdict: FAIL"))
    expect(rows.nth(0).locator("td.faults")).to_have_text(re.compile("WAN down"))
    expect(page.locator("#outlet-o003 .failing .l-en")).to_have_text("Failing checks: domain rules")
    expect(page.locator("#outlet-o003 .failing .l-zh")).to_be_hidden()
    expect(page.locator("#outlet-o002 svg.plot-backlog text.l-en", has_text="WAN down").first).to_be_visible()
    assert page.evaluate("window.__pwned") is None and errors == []
    page.close()


SMALL_COUNTY = """name = "small-county"
seed = 5

[time]
mode = "virtual"
hours = 3.0

[outlet]
lockers = 1
scanners = 1
handhelds = 0

[workload]
parcels = 4
arrivals_by_hour = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
pickup_delay_h = [0.1, 0.5]
window_min = 30

[fleet]
outlets = 3

[[fleet.faults]]
outlet = 2
kind = "wan_down"
at_h = 0.5
for_h = 1.5

[[fleet.faults]]
outlet = 3
kind = "device_duplicating"
at_h = 0.0
for_h = 3.0
"""


@pytest.mark.e2e
@pytest.mark.slow
def test_a_real_county_writes_its_report_in_both_languages(chromium: Any, tmp_path: Path) -> None:
    """Three outlets for three virtual hours: outlet 2's uplink down for an
    hour and a half, outlet 3's locker sending twice (its domain rules fail)."""
    from playwright.sync_api import expect

    scenario = tmp_path / "small-county.toml"
    scenario.write_text(SMALL_COUNTY)
    html, res_path = tmp_path / "county.html", tmp_path / "county.json"
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "zh", "sim", "run", str(scenario),
                        "--html", str(html), "--json", str(res_path), "--workdir", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"已写入：{res_path}, {html}" in r.stdout
    res = json.loads(res_path.read_text())
    ranked = [p["outlet"] for p in res["dispatcher"]]
    rank = sorted(res["dispatcher"], key=lambda p: (-p["backlog_max"], -p["alarms"], p["outlet"]))
    assert ranked == [p["outlet"] for p in rank]
    assert res["verdict"]["failing_outlets"] == ["o003"], res["verdict"]
    write_fleet_html(res, tmp_path / "county-en.html", "en")
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    for path, lang in ((html, "zh"), (tmp_path / "county-en.html", "en")):
        page.goto(path.as_uri())
        assert page.get_attribute("html", "data-lang") == lang
        rows = page.locator("table.dispatcher tbody tr")
        expect(rows).to_have_count(3)
        assert [rows.nth(i).get_attribute("data-outlet") for i in range(3)] == ranked
        wan, dup = ("外网中断", "设备重复发送") if lang == "zh" else ("WAN down", "device sends twice")
        row = {oid: page.locator(f'table.dispatcher tr[data-outlet="{oid}"]') for oid in ranked}
        expect(row["o002"].locator("td.faults")).to_contain_text(wan)
        expect(row["o003"].locator("td.faults")).to_contain_text(dup)
        expect(row["o001"].locator("td.faults")).to_have_text("-")
        expect(row["o003"]).to_have_class("bad")
        expect(page.locator("#verdict")).to_contain_text("o003")
        expect(page.locator(f"#outlet-o003 .failing .l-{lang}")).to_contain_text(
            "业务规则" if lang == "zh" else "domain rules")
        expect(page.locator(f"#outlet-o003 .failing .l-{lang}")).to_be_visible()
        assert page.locator("#outlet-o002 svg.plot-backlog rect.fault").count() == 1
        for oid in ranked:
            for plot in ("backlog", "timeline"):
                expect(page.locator(f"#outlet-{oid} svg.plot-{plot}")).to_be_visible()
            expect(page.locator(f"#outlet-{oid} svg.plot-backlog polyline.count")).to_have_count(1)
        keep_screenshot(page, tmp_path, f"county_run_{lang}.png")
    page.close()


# ------------------------------------------------------------------ the county's live dashboard

class Standing:
    """An outlet as ``county_snapshot`` reads it: its name and its snapshot."""

    def __init__(self, outlet_id: str, snap: dict[str, Any]) -> None:
        self.outlet_id = outlet_id
        self._snap = snap

    def snapshot(self) -> dict[str, Any]:
        return self._snap


def county_snap(t: float, progress: float, count: int, alarms: list[dict[str, Any]],
                faults: list[dict[str, Any]]) -> dict[str, Any]:
    """One outlet's live snapshot (``Outlet.snapshot``'s shape)."""
    return {"scenario": "county-day", "t_virtual": t, "progress": progress, "time_mode": "virtual",
            "broker": "mosquitto", "lockers": [{"device": "lk01", "online": True, "compartments": [
                {"id": 1, "size": "M", "state": "free"}]}],
            "devices": [{"device": "sc01", "kind": "scanner", "online": False}],
            "backlog": {"count": count, "bytes": 100 * count, "oldest_age_s": float(count)},
            "alarms": alarms, "faults": faults,
            "ledger": {"device": 10, "broker": 10, "gateway": 9, "central": 8}}


FORCED = {"t": 5000.0, "device": "lk01", "alarm": "door_forced", "compartment": 1}
WAN = {"t": 3600.0, "until": 7200.0, "kind": "wan_down", "detail": "", "active": True}


def test_the_county_dashboard_names_every_device_by_its_outlet() -> None:
    from simulator.dashboard import build_view
    from simulator.fleet import county_snapshot

    s = county_snapshot([Standing("o001", county_snap(6000.0, 0.3, 2, [], [])),
                         Standing("o002", county_snap(4000.0, 0.2, 40, [FORCED], [WAN]))])
    assert s["t_virtual"] == 4000.0 and s["progress"] == 0.2  # the slowest outlet's
    assert [lk["device"] for lk in s["lockers"]] == ["o001/lk01", "o002/lk01"]
    assert [d["device"] for d in s["devices"]] == ["o001/sc01", "o002/sc01"]
    assert s["backlog"] == {"count": 42, "bytes": 4200, "oldest_age_s": 40.0}
    assert s["ledger"] == {"device": 20, "broker": 20, "gateway": 18, "central": 16}
    assert [a["device"] for a in s["alarms"]] == ["o002/lk01"] and s["faults"][0]["detail"] == "o002"
    v = build_view(s, "en", [])  # the single outlet's page reads it as it is
    assert [a["device"] for a in v["alarms"]] == ["o002/lk01"] and v["faults"][0]["detail"] == "o002"
    assert county_snapshot([]) == {}


def test_the_county_dashboard_in_chromium(chromium: Any) -> None:
    from playwright.sync_api import expect

    from simulator.dashboard import Dashboard
    from simulator.fleet import county_snapshot

    fleet = [Standing("o001", county_snap(6000.0, 0.3, 2, [], [])),
             Standing("o002", county_snap(4000.0, 0.2, 40, [FORCED], [WAN]))]
    with Dashboard(lambda: county_snapshot(fleet), lang="zh") as dash:  # type: ignore[arg-type]
        page = chromium.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(dash.url)
        expect(page.locator(".locker")).to_have_count(2)
        expect(page.locator('.locker[data-device="o002/lk01"] .c')).to_have_count(1)
        expect(page.locator("#alarm-list .alarm")).to_have_count(1)
        expect(page.locator("#alarm-list .alarm")).to_contain_text("o002/lk01")
        expect(page.locator("#fault-list .fault")).to_contain_text("外网中断")
        expect(page.locator("#fault-list .fault")).to_contain_text("o002")
        expect(page.locator("#backlog-count")).to_have_text("42")
        scanner = page.locator('#device-list .dev[data-device="o001/sc01"]')
        expect(scanner).to_have_class(re.compile(r"\boff\b"))
        page.close()


@pytest.mark.e2e
@pytest.mark.slow
def test_a_county_run_serves_its_dashboard_until_ctrl_c(tmp_path: Path) -> None:
    import os
    import signal
    import urllib.request

    scenario = tmp_path / "small-county.toml"
    scenario.write_text(SMALL_COUNTY)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "postedge.cli", "--lang", "en", "sim", "run", str(scenario),
                          "--dashboard", "0", "--workdir", str(tmp_path / "w")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert p.stdout is not None
        url = None
        for line in p.stdout:
            m = re.search(r"result at (http://\S+);", line)
            if m:
                url = m.group(1)
                break
        if url is None:
            p.kill()
            _, err = p.communicate(timeout=30)
            raise AssertionError(f"sim run never kept its dashboard (exit {p.returncode}): {err[-3000:]}")
        with urllib.request.urlopen(url.rstrip("/") + "/api/snapshot?lang=en", timeout=5) as r:
            v = json.loads(r.read())["view"]
        assert v["verdict"]["ok"] is False and v["progress"] == 1.0  # outlet 3's domain rules
        assert sorted(lk["device"] for lk in v["lockers"]) == ["o001/lk01", "o002/lk01", "o003/lk01"]
        assert {f["detail"] for f in v["faults"] if f["label"] == "WAN down"} == {"o002"}
        hops = {h["hop"]: h["n"] for h in v["ledger"]}
        assert set(hops) == {"device", "broker", "gateway", "central"} and hops["central"] > 0
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 1
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
