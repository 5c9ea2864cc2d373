"""The simulator's reports (terminal summary, JSON, HTML with SVG plots,
progress bar) and its live dashboard.

The run result is synthetic but made the way the runner makes it: the
ledger and domain parts come from ``simulator.ledger`` judging a small
outlet's trace (two lockers, a scanner; deposits, pickups, an alarm, a WAN
outage, a power cut). The HTML report and the dashboard are opened in
Debian's chromium through Playwright (never a downloaded browser); the
dashboard must follow a run that changes under it without a reload, in
Chinese and in English.

Set POSTEDGE_SCREENSHOT_DIR to keep screenshots for a look.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import math
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from simulator.dashboard import Dashboard, build_view
from simulator.ledger import Ledger, check_domain
from simulator.outlet import compartments
from simulator.report import (
    CSS,
    SCRIPT,
    TIMELINE_MARKS,
    ProgressBar,
    downsample,
    fmt_dur,
    read_json,
    render_html,
    summary,
    time_ticks,
    write_html,
    write_json,
)

INC = "0badc0de"
DAY = 86400.0
INJECTED = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
FAULTS = [
    {"t": 7200.0, "until": 10800.0, "kind": "wan_down", "detail": "central unreachable " + INJECTED},
    {"t": 40000.0, "until": 43000.0, "kind": "power_cut", "detail": "lk02"},
    {"t": 60000.0, "until": None, "kind": "gateway_kill", "detail": "SIGKILL"},
]


# ------------------------------------------------------------------ a small outlet's day

class Trace:
    """Envelopes as the locker firmware emits them, with simulated times."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}
        self.events: list[tuple[float, dict[str, Any]]] = []

    def emit(self, t: float, dev: str, etype: str, cls: str, **body: Any) -> str:
        self.seq[dev] = self.seq.get(dev, 0) + 1
        eid = f"{dev}:{INC}:{self.seq[dev]}"
        self.events.append((t, {"v": 1, "id": eid, "ts": int(t), "type": etype, "cls": cls, "body": body}))
        return eid


def outlet_day(parcels: int = 12, telemetry_every: float = 1800.0) -> Trace:
    tr = Trace()
    for dev in ("lk01", "lk02"):
        tr.emit(10.0, dev, "locker.boot", "status", reason="power_on")
    for p in range(parcels):
        dev = "lk01" if p % 2 == 0 else "lk02"
        cid = p // 2 % 24 + 1
        parcel = f"RB{100000 + p:06d}{p % 10}CN"
        t0 = 3600.0 + p * 4000.0
        tr.emit(t0, dev, "locker.audit", "audit", what="courier_login", result="ok", courier="c007")
        tr.emit(t0 + 5, dev, "locker.door", "custody", door="open", compartment=cid, action="deposit")
        tr.emit(t0 + 30, dev, "locker.deposit", "custody", compartment=cid, parcel=parcel, courier="c007")
        tr.emit(t0 + 40, dev, "locker.audit", "audit", what="courier_logout", result="ok")
        t1 = t0 + 2000.0
        tr.emit(t1, dev, "locker.audit", "audit", what="pickup_attempt", result="ok", compartment=cid)
        tr.emit(t1 + 3, dev, "locker.door", "custody", door="open", compartment=cid, action="pickup")
        if p == 3:
            tr.emit(t1 + 120, dev, "locker.alarm", "alarm", alarm="door_left_open", compartment=cid)
        tr.emit(t1 + 150, dev, "locker.pickup", "custody", compartment=cid, parcel=parcel)
    t = 0.0
    while t < DAY:
        tr.emit(t + 1, "sc01", "scanner.scan", "telemetry", code="4006381333931")
        t += telemetry_every
    tr.events.sort(key=lambda x: x[0])
    return tr


def make_result(drop_at_central: int | None = None, parcels: int = 12,
                telemetry_every: float = 1800.0) -> dict[str, Any]:
    """A run result as the runner would hand it over."""
    tr = outlet_day(parcels, telemetry_every)
    led = Ledger(tolerate={"broker": {"duplicated"}})
    ids = [e["id"] for _, e in tr.events]
    led.record_many("device", ids, t=0)
    led.record_many("broker", ids + ids[5:6], t=0)  # one QoS 1 redelivery: tolerated
    led.record_many("gateway", ids, t=0)
    central = [e for i, e in enumerate(ids) if i != drop_at_central]
    led.record_many("central", central, t=0)
    ledger = led.report()
    domain = check_domain([e for _, e in tr.events], complete=True).as_dict()
    counts = {d: sum(1 for _, e in tr.events if e["id"].startswith(d + ":"))
              for d in ("lk01", "lk02", "sc01")}
    backlog = []
    for k in range(0, int(DAY), 60):
        tv = float(k)
        n = int((tv - 7200) / 60) * 3 if 7200 <= tv < 10800 else max(0, 180 - int((tv - 10800) / 10)) \
            if 10800 <= tv < 12600 else k % 7
        backlog.append([tv, n, n * 310])
    ok = ledger["ok"] and domain["ok"]
    expectations = [{"name": "ledger_ok", "ok": ledger["ok"],
                     "detail": "" if ledger["ok"] else "central lost 1",
                     "fields": {"hops": ledger["failing_hops"]}},
                    {"name": "domain_ok", "ok": domain["ok"], "detail": "", "fields": {"rules": []}}]
    return {
        "scenario": "village-day", "seed": 7, "broker": "mosquitto 2.0.11", "time_mode": "virtual",
        "wall_s": 12.3, "virtual_s": DAY, "trace_hash": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
        "devices": [
            {"device": "lk01", "kind": "locker", "events": counts["lk01"], "online": [[0.0, DAY]]},
            {"device": "lk02", "kind": "locker", "events": counts["lk02"],
             "online": [[0.0, 40000.0], [43050.0, DAY]]},
            {"device": "sc01", "kind": "scanner", "events": counts["sc01"], "online": [[0.0, DAY]]},
        ],
        "timeline": [{"t": t, "device": e["id"].split(":")[0], "type": e["type"], "id": e["id"],
                      "cls": e["cls"]} for t, e in tr.events],
        "backlog": backlog,
        "faults": copy.deepcopy(FAULTS),
        "latency": {"broker": {"n": len(ids), "p50_ms": 3.1, "p99_ms": 20.5},
                    "gateway": {"n": len(ids), "p50_ms": 5.2, "p99_ms": 41.0},
                    "central": {"n": len(central), "p50_ms": 850.0, "p99_ms": 3_400_000.0}},
        "ledger": ledger, "domain": domain, "expectations": expectations,
        "verdict": {"ok": ok, "failures": [e["name"] for e in expectations if not e["ok"]]},
    }


# ------------------------------------------------------------------ HTML inspection

class Tags(HTMLParser):
    """Every start tag with its attributes, and the text, for assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.stack: list[str] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        top = self.stack[-1] if self.stack else ""
        if top == "script":
            self.scripts.append(data)
        elif top == "style":
            self.styles.append(data)
        else:
            self.text.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [a for tg, a in self.tags if tg == tag and (cls is None or cls in a.get("class", "").split())]


def parse(page: str) -> Tags:
    p = Tags()
    p.feed(page)
    p.close()
    return p


# ------------------------------------------------------------------ summary and JSON

def test_summary_leads_with_the_verdict_in_both_languages() -> None:
    r = make_result()
    assert r["ledger"]["ok"] and r["domain"]["ok"], r["domain"]
    events = r["ledger"]["events"]
    zh = summary(r, "zh")
    assert zh.splitlines()[0] == "结论：通过（PASS）"
    assert zh.rstrip().splitlines()[-1] == "结论：通过（PASS）"
    for s in ("场景 village-day，种子 7，虚拟时钟，模拟时长 1d", "消息代理：mosquitto 2.0.11",
              f"轨迹哈希：{r['trace_hash']}", f"来源共 {events} 个事件", "设备 → 消息代理", "端到端",
              "正常（容许：重复）", "每个包裹恰有一个最终状态", "外网中断", "2:00:00 至 3:00:00",
              "网关被强杀（SIGKILL）", "20.5 ms", "56m40s", "✓ 投递账本：每个事件都走完了每一段",
              "包裹 12、仍在格口 0"):
        assert s in zh, s
    assert re.search(rf"^  中心平台 +{events - 0} +850 ms +56m40s$", zh, re.M), zh
    en = summary(r, "en")
    assert en.splitlines()[0] == "Verdict: PASS"
    for s in (f"{events} events at the source", "device -> broker", "gateway -> central", "end to end",
              "ok (tolerated: dup)", "each parcel ends exactly once", "WAN down", "2:00:00 to 3:00:00",
              "gateway kill -9", "broker", "3.1 ms", "Trace hash: " + r["trace_hash"], "seed 7"):
        assert s in en, s
    # the per-hop counts line up: the device hop saw every event once
    dev_line = next(line for line in en.splitlines() if line.startswith("  device "))
    assert dev_line.split()[1:3] == [str(events), str(events)]
    broker_line = next(line for line in en.splitlines() if line.startswith("  device -> broker"))
    assert broker_line.split()[3:5] == [str(events + 1), str(events)]
    with pytest.raises(ValueError, match="lang"):
        summary(r, "fr")


def test_a_lost_event_fails_everywhere_and_names_the_event() -> None:
    r = make_result(drop_at_central=9)
    lost = r["ledger"]["per_hop"][3]["examples"]["lost"][0]
    assert not r["verdict"]["ok"]
    zh, en = summary(r, "zh"), summary(r, "en")
    assert zh.splitlines()[0] == "结论：未通过（FAIL）" and en.splitlines()[0] == "Verdict: FAIL"
    assert "未通过：投递账本" in zh and "Failed: delivery ledger" in en
    assert lost in zh and lost in en
    central = next(line for line in en.splitlines() if line.startswith("  gateway -> central"))
    assert central.split()[-1] == "FAIL" and central.split()[5] == "1"  # lost 1
    assert "✗ delivery ledger: events lost, doubled or out of order at: central" in en
    assert "✗ 投递账本：这些环节有事件丢失、重复或乱序：中心平台" in zh
    old = copy.deepcopy(r)  # a result saved before expectations carried their numbers
    del old["expectations"][0]["fields"]
    assert "✗ delivery ledger: central lost 1" in summary(old, "en")
    p = parse(render_html(r, "en"))
    verdict = p.find("section", "verdict")[0]
    assert verdict["data-ok"] == "false" and "fail" in verdict["class"]
    assert "Verdict: FAIL" in p.text and "结论：未通过（FAIL）" in p.text
    assert [a["data-hop"] for a in p.find("tr", "bad") if "data-hop" in a] == ["central", "end_to_end"]


def test_json_round_trip(tmp_path: Path) -> None:
    r = make_result()
    path = write_json(r, tmp_path / "out" / "result.json")
    assert read_json(path) == json.loads(json.dumps(r))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "{" and lines[1].startswith('"scenario": ') and len(lines) == len(r) + 2
    r["latency"]["central"]["p50_ms"] = math.nan  # no samples: strict JSON has no NaN
    back = read_json(write_json(r, path))
    assert back["latency"]["central"]["p50_ms"] is None
    assert not list(tmp_path.glob("out/.*"))  # no temp file left behind


def test_progress_bar_redraws_on_a_terminal_and_prints_lines_in_a_log() -> None:
    now = [0.0]
    tty = io.StringIO()
    bar = ProgressBar(DAY, stream=tty, lang="en", tty=True, clock=lambda: now[0])
    for k in range(1, 11):
        now[0] = k * 0.0625  # every 62.5 ms: only every other call draws
        bar.update(DAY * k / 10, events=k * 100, faults_active=k % 2)
    bar.close()
    out = tty.getvalue()
    assert out.count("\r") == 6 and out.endswith("\n") and out.count("\n") == 1
    assert "100%  sim time 1d / 1d  events 1000  faults active 0  done in 0.6s" in out
    assert "[############............]  50%" in out

    now[0] = 0.0
    log = io.StringIO()
    with ProgressBar(3600, stream=log, lang="zh", every_s=10, clock=lambda: now[0]) as bar:
        for k in range(0, 60):
            now[0] = k
            bar.update(k * 60, events=k, faults_active=1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 7  # t=0,10,...,50 and the end
    assert "模拟时间 50m / 1h  事件 50  进行中的故障 1" in lines[5]
    assert lines[-1].endswith("完成，用时 59s")


def test_axis_helpers() -> None:
    assert [fmt_dur(s) for s in (0, 45, 90, 3600, 3660, DAY, DAY + 7200, 2.5)] == \
        ["0s", "45s", "1m30s", "1h", "1h01m", "1d", "1d02h", "2.5s"]
    assert time_ticks(DAY) == [i * 10800 for i in range(9)]
    assert len(time_ticks(DAY)) <= 11 and len(time_ticks(37)) <= 11
    pts = [(float(i), float((i * 7919) % 1000)) for i in range(100_000)]
    small = downsample(pts, 0.0, 100_000.0, 500)
    assert len(small) <= 1000 and max(p[1] for p in small) == 999.0 and min(p[1] for p in small) == 0.0
    assert small == sorted(small)


# ------------------------------------------------------------------ HTML report

def test_html_report_has_a_plot_for_each_part_and_a_row_per_device(tmp_path: Path) -> None:
    r = make_result()
    path = write_html(r, tmp_path / "report.html", lang="zh")
    page = path.read_text(encoding="utf-8")
    p = parse(page)
    assert p.find("html")[0]["lang"] == "zh-CN" and p.find("html")[0]["data-lang"] == "zh"
    tl = p.find("svg", "plot-timeline")
    assert len(tl) == 1 and len(p.find("svg", "plot-backlog")) == 1
    assert len(p.find("svg", "plot-latency")) == 1
    rows = p.find("g", "row")
    assert [a["data-device"] for a in rows] == ["lk01", "lk02", "sc01"]
    marks = p.find("rect", "ev")
    assert len(marks) == len(r["timeline"]) <= TIMELINE_MARKS  # one mark each, with a tooltip
    assert len(p.find("rect", "ev-alarm")) == 1 and len(p.find("rect", "ev-telemetry")) == 48
    assert len(p.find("rect", "offline")) == 1  # lk02's power cut
    # fault windows: two spans shaded on both plots, the kill a line
    assert len(p.find("rect", "fault")) == 4 and len(p.find("line", "fault")) == 2
    assert len(p.find("polyline", "count")) == 1 and len(p.find("polyline", "bytes")) == 1
    assert len(p.find("rect", "bar")) == 6
    assert [a["data-hop"] for a in p.find("g", "hop")] == ["broker", "gateway", "central"]
    # tables in both languages; device text escaped, never markup
    assert "结论：通过（PASS）" in p.text and "Verdict: PASS" in p.text
    assert len(p.find("table", "ledger")) == 1 and len(p.find("table", "domain")) == 1
    assert INJECTED in "".join(p.text) and "<img" not in page and page.count("<script") == 1
    # the CSP's hashes are those of our script and style
    csp = next(a["content"] for a in p.find("meta") if a.get("http-equiv") == "Content-Security-Policy")
    for body in (SCRIPT, CSS):
        h = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{h}'" in csp
    assert p.scripts == [SCRIPT] and p.styles == [CSS]
    assert parse(render_html(r, "en")).find("html")[0]["data-lang"] == "en"


@pytest.mark.slow
def test_a_hundred_thousand_events_are_merged_per_pixel() -> None:
    r = make_result(parcels=40, telemetry_every=0.85)
    assert len(r["timeline"]) > 100_000
    t0 = time.monotonic()
    page = render_html(r, "en")
    took = time.monotonic() - t0
    p = parse(page)
    assert len(p.find("g", "row")) == 3 and not p.find("rect", "ev")
    paths = p.find("path", "ev")
    assert {a["class"] for a in paths} == {"ev ev-alarm", "ev ev-custody", "ev ev-audit", "ev ev-status",
                                           "ev ev-telemetry"}
    assert len(p.find("path", "ev-alarm")) == 1  # the single alarm still gets its pixel
    assert "events, merged per pixel column" in "".join(p.text)
    assert len(page) < 600_000, len(page)
    assert took < 10, took


# ------------------------------------------------------------------ browsers


def keep_screenshot(page: Any, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    out = os.environ.get("POSTEDGE_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(out) / name)


def test_html_report_in_chromium(chromium: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    path = write_html(make_result(drop_at_central=9), tmp_path / "report.html", lang="zh")
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: (errors.append(d.message), d.dismiss()))
    page.goto(path.as_uri())
    expect(page.locator("#verdict")).to_have_text(re.compile("结论：未通过（FAIL）"))
    expect(page.locator("#verdict .l-en").first).to_be_hidden()
    for plot in ("timeline", "backlog", "latency"):
        svg = page.locator(f"svg.plot-{plot}")
        expect(svg).to_be_visible()
        box = svg.bounding_box()
        assert box and box["width"] > 600 and box["height"] > 100, (plot, box)
    assert page.locator("svg.plot-timeline g.row").count() == 3
    row = page.locator('svg.plot-timeline g.row[data-device="lk02"]').bounding_box()
    assert row and row["height"] >= 25
    expect(page.locator("svg.plot-timeline text.l-zh", has_text="外网中断").first).to_be_visible()
    bar = page.locator('g.hop[data-hop="central"] rect.p99').bounding_box()
    low = page.locator('g.hop[data-hop="broker"] rect.p50').bounding_box()
    assert bar and low and bar["height"] > 3 * low["height"]  # log scale, still ordered
    keep_screenshot(page, tmp_path, "sim_report_zh.png")
    page.locator("#lang-switch").click()  # the inline script runs under the CSP's hash
    expect(page.locator("#verdict")).to_have_text(re.compile("Verdict: FAIL"))
    assert page.get_attribute("html", "lang") == "en"
    expect(page.locator("svg.plot-timeline text.l-en", has_text="WAN down").first).to_be_visible()
    expect(page.locator("svg.plot-timeline text.l-zh").first).to_be_hidden()
    expect(page.locator("#ledger tr.bad").first).to_contain_text("gateway -> central")
    assert page.evaluate("window.__pwned") is None and errors == []
    page.goto(path.as_uri() + "#en")
    expect(page.locator("#verdict")).to_have_text(re.compile("Verdict: FAIL"))
    keep_screenshot(page, tmp_path, "sim_report_en.png")
    page.close()


class LiveRun:
    """A runner's state that a test thread changes under the dashboard."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fail = False
        comps = [{"id": c["id"], "size": c["size"], "state": "free"} for c in compartments()]
        comps[4]["state"] = "occupied"
        comps[6]["state"] = "return_waiting"
        self.snap: dict[str, Any] = {
            "scenario": "village-day", "t_virtual": 3000.0, "progress": 0.25, "time_mode": "virtual",
            "broker": "mosquitto 2.0.11",
            "lockers": [{"device": "lk01", "online": True, "compartments": comps},
                        {"device": "lk02", "online": True,
                         "compartments": [{"id": i, "size": "M", "state": "free"} for i in range(1, 9)]}],
            "devices": [{"device": "lk01", "kind": "locker", "online": True},
                        {"device": "lk02", "kind": "locker", "online": True},
                        {"device": "sc01", "kind": "scanner", "online": True},
                        {"device": INJECTED, "kind": "handheld", "online": False}],
            "backlog": {"count": 12, "bytes": 3400, "oldest_age_s": 30.0},
            "alarms": [{"t": 2500.0, "device": "lk01", "alarm": "door_forced", "compartment": 2}],
            "faults": [{"t": 6000.0, "until": 9000.0, "kind": "wan_down", "detail": "central",
                        "active": False}],
            "ledger": {"device": 430, "broker": 431, "gateway": 420, "central": 400},
        }

    def __call__(self) -> dict[str, Any]:
        with self.lock:
            if self.fail:
                raise RuntimeError("runner busy")
            return copy.deepcopy(self.snap)

    def step(self, t: float) -> None:
        """Time passes: the WAN goes down, a parcel goes in, a door is left open."""
        with self.lock:
            s = self.snap
            s["t_virtual"] = t
            s["progress"] = t / 12000.0
            s["lockers"][0]["compartments"][2]["state"] = "occupied"
            s["faults"][0]["active"] = True
            s["alarms"].append({"t": t - 10, "device": "lk01", "alarm": "door_left_open", "compartment": 3})
            s["devices"][2]["online"] = False
            s["backlog"] = {"count": 250, "bytes": 77000, "oldest_age_s": t - 6000.0}
            s["ledger"]["device"] += 25


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Security-Policy", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, "", e.read()


def test_dashboard_api_and_failures() -> None:
    run = LiveRun()
    with Dashboard(run, lang="en") as dash:
        code, csp, body = get(dash.url + "api/snapshot")
        snap = json.loads(body)
        assert code == 200 and snap["scenario"] == "village-day" and snap["ledger"]["central"] == 400
        v = snap["view"]
        assert v["clock"] == "Sim time 0:50:00" and v["progress_text"] == "25%"
        assert v["alarms"][0]["text"] == "Compartment 2: door forced open"
        assert v["faults"][0]["state"] == "pending" and v["faults"][0]["label"] == "WAN down"
        assert [h["hop"] for h in v["ledger"]] == ["device", "broker", "gateway", "central"]
        zh = json.loads(get(dash.url + "api/snapshot?lang=zh")[2])["view"]
        assert zh["faults"][0]["label"] == "外网中断"
        assert zh["alarms"][0]["text"] == "2 号格口：柜门被强行打开"
        code, csp, page = get(dash.url)
        nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
        assert code == 200 and nonce and f'nonce="{nonce.group(1)}"'.encode() in page
        assert b'<html lang="en">' in page and b"<img" not in page
        assert get(dash.url + "nowhere")[0] == 404
        run.fail = True
        code, _, body = get(dash.url + "api/snapshot")
        assert code == 503 and b"runner busy" in body
        run.fail = False
        assert get(dash.url + "api/snapshot")[0] == 200
        run.step(7000.0)
        assert get(dash.url + "api/snapshot")[0] == 200
        hist = dash.history()
        assert hist[0] == (3000.0, 12.0) and hist[-1] == (7000.0, 250.0)
    view = build_view({"lockers": "garbage", "faults": [None, {"kind": "meteor"}], "backlog": 3}, "en", [])
    assert view["faults"][0]["label"] == "fault: meteor" and view["lockers"] == []


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_dashboard_follows_the_run_without_reload(chromium: Any, tmp_path: Path, lang: str) -> None:
    from playwright.sync_api import expect

    words = {
        "zh": {"occupied": "有包裹", "free": "空闲", "active": "进行中", "pending": "未开始",
               "alarm": "3 号格口：柜门未关", "forced": "2 号格口：柜门被强行打开", "offline": "离线",
               "wan": "外网中断", "title": "网点模拟", "stale": "连不上模拟器", "clock": "模拟时间 1:56:40"},
        "en": {"occupied": "Parcel", "free": "Free", "active": "active", "pending": "pending",
               "alarm": "Compartment 3: door left open", "forced": "Compartment 2: door forced open",
               "offline": "offline", "wan": "WAN down", "title": "Outlet simulation",
               "stale": "Cannot reach the simulator", "clock": "Sim time 1:56:40"},
    }[lang]
    run = LiveRun()
    with Dashboard(run, lang="zh") as dash:
        page = chromium.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("dialog", lambda d: (errors.append(d.message), d.dismiss()))
        page.goto(dash.url + ("?lang=en" if lang == "en" else ""))
        assert page.get_attribute("html", "lang") == ("zh-CN" if lang == "zh" else "en")
        expect(page).to_have_title(re.compile(words["title"]))
        c3 = page.locator('.locker[data-device="lk01"] .c[data-id="3"]')
        expect(c3).to_have_attribute("data-state", "free")
        expect(c3).to_contain_text(words["free"])
        expect(page.locator('.locker[data-device="lk01"] .c')).to_have_count(24)
        expect(page.locator('.locker[data-device="lk02"] .c')).to_have_count(8)
        expect(page.locator("#fault-list .fault")).to_have_class(re.compile("pending"))
        expect(page.locator("#fault-list")).to_contain_text(words["pending"])
        expect(page.locator("#alarm-list .alarm")).to_have_count(1)
        expect(page.locator("#backlog-count")).to_have_text("12")
        expect(page.locator("#prog-text")).to_have_text("25%")
        expect(page.locator('#device-list .dev[data-device="sc01"]')).to_have_class(re.compile(r"\bon\b"))
        # a device name that is markup stays text
        expect(page.locator("#device-list")).to_contain_text(INJECTED)
        page.evaluate("window.__same_page = 1")
        keep_screenshot(page, tmp_path, f"sim_dashboard_{lang}_before.png")

        threading.Timer(0.3, run.step, args=(7000.0,)).start()  # the runner, in its own thread
        expect(c3).to_have_attribute("data-state", "occupied", timeout=5000)
        expect(c3).to_contain_text(words["occupied"])
        expect(c3).to_have_class(re.compile("st-held"))
        active = page.locator("#fault-list .fault.active")
        expect(active).to_have_count(1)
        expect(active).to_contain_text(words["wan"])
        expect(active).to_contain_text(words["active"])
        expect(page.locator("#fault-svg rect.active")).to_have_count(1)
        alarms = page.locator("#alarm-list .alarm")
        expect(alarms).to_have_count(2)
        expect(alarms.first).to_contain_text(words["alarm"])  # newest first
        expect(alarms.nth(1)).to_contain_text(words["forced"])
        sc = page.locator('#device-list .dev[data-device="sc01"]')
        expect(sc).to_have_class(re.compile(r"\boff\b"))
        expect(sc).to_contain_text(words["offline"])
        expect(page.locator("#backlog-count")).to_have_text("250")
        expect(page.locator("#spark polyline")).to_have_count(1)
        expect(page.locator('#ledger-tiles .tile[data-hop="device"] .num')).to_have_text("455")
        expect(page.locator("#clock")).to_have_text(words["clock"])
        expect(page.locator("#prog-text")).to_have_text("58%")
        assert page.evaluate("window.__same_page") == 1
        keep_screenshot(page, tmp_path, f"sim_dashboard_{lang}_after.png")

        run.fail = True  # the runner stops answering: the last picture stays, with a banner
        expect(page.locator("#stale")).to_be_visible(timeout=5000)
        expect(page.locator("#stale")).to_contain_text(words["stale"])
        expect(c3).to_have_attribute("data-state", "occupied")
        run.fail = False
        expect(page.locator("#stale")).to_be_hidden(timeout=5000)
        assert page.evaluate("window.__pwned") is None
        assert [e for e in errors if "503" not in e] == []
        page.close()
