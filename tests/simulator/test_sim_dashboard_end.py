"""The dashboard after a run: the last picture with its verdict and the
reports' paths, every hop of the ledger, time marks under the faults, until
the tester stops ``sim run``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from simulator.dashboard import Dashboard, _ticks, build_view

TINY = """name = "tiny"
seed = 3
[time]
mode = "virtual"
hours = 2.0
[outlet]
lockers = 1
scanners = 1
handhelds = 0
[workload]
parcels = 4
photos = 0
window_min = 10.0
[[faults]]
kind = "wan_down"
at_h = 0.5
for_h = 0.5
"""


def test_ticks_are_hour_marks_that_fit() -> None:
    marks = _ticks(24 * 3600.0)
    assert [m["label"] for m in marks] == ["0:00", "3:00", "6:00", "9:00", "12:00", "15:00", "18:00",
                                           "21:00", "24:00"]
    assert marks[0]["x"] == 0.0 and marks[-1]["x"] == pytest.approx(1.0)
    assert 2 <= len(_ticks(3 * 24 * 3600.0)) <= 9
    assert len(_ticks(1800.0)) == 1  # half an hour: only the start


def test_a_frozen_picture_carries_the_verdict_and_is_served_after_the_run() -> None:
    calls: list[int] = []

    def snap() -> dict[str, Any]:
        calls.append(1)
        return {"scenario": "s", "t_virtual": 3600.0, "progress": 0.97,
                "ledger": {"device": 5, "broker": 5, "gateway": 5, "central": 4},
                "backlog": {"count": 1, "bytes": 200, "oldest_age_s": 42.0}}

    dash = Dashboard(snap, lang="zh").start()
    try:
        dash.freeze()
        n = len(calls)
        dash.finish(False, ["/tmp/r.json"])
        with urllib.request.urlopen(dash.url.rstrip("/") + "/api/snapshot?lang=zh", timeout=5) as r:
            body = json.loads(r.read())
        assert len(calls) == n, "a frozen dashboard must not ask the (torn down) outlet again"
        v = body["view"]
        assert v["verdict"]["ok"] is False and "未通过" in v["verdict"]["text"]
        assert "/tmp/r.json" in v["verdict"]["reports"] and "Ctrl-C" in v["verdict"]["stop"]
        assert v["progress"] == 1.0
        assert [h["hop"] for h in v["ledger"]] == ["device", "broker", "gateway", "central"]
        assert "42" in v["backlog"]["detail"]
    finally:
        dash.stop()
    assert build_view({}, "en", [])["verdict"] is None


@pytest.mark.slow
def test_sim_run_keeps_the_dashboard_until_ctrl_c(tmp_path: Path) -> None:
    scen = tmp_path / "tiny.toml"
    scen.write_text(TINY)
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "postedge.cli", "--lang", "en", "sim", "run", str(scen),
                          "--dashboard", "0", "--json", str(out), "--workdir", str(tmp_path / "w")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        deadline = time.monotonic() + 240
        assert p.stdout is not None
        for line in p.stdout:
            m = re.search(r"result at (http://\S+);", line)
            if m:
                url = m.group(1)
                break
            assert time.monotonic() < deadline
        if url is None:  # it ended instead: say how
            p.kill()
            _, err = p.communicate(timeout=30)
            raise AssertionError(f"sim run never said the dashboard stays (exit {p.returncode}): "
                                 f"{err[-3000:]}")
        assert p.poll() is None, "sim run exited instead of keeping the dashboard"
        with urllib.request.urlopen(url.rstrip("/") + "/api/snapshot?lang=en", timeout=5) as r:
            v = json.loads(r.read())["view"]
        assert v["verdict"]["ok"] is True and v["verdict"]["text"] == "Verdict: PASS"
        assert str(out.resolve()) in v["verdict"]["reports"]
        hops = {h["hop"]: h["n"] for h in v["ledger"]}
        assert set(hops) == {"device", "broker", "gateway", "central"} and hops["central"] > 0
        assert v["ticks"] and [k["label"] for k in v["ticks"]] == ["0:00", "1:00", "2:00"]
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
