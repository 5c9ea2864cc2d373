"""``postedge sim check``: every file named on each line, text for people and
JSON on request, and warnings for faults a run would never inject."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

SIX_HOURS = ('name = "x"\nseed = 1\n[time]\nhours = 6.0\n'
             '[[faults]]\nkind = "wan_down"\nat_h = {at}\nfor_h = {dur}\n')


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "postedge.cli", *args], capture_output=True, text=True,
                          timeout=60)


def test_each_error_names_its_file_and_text_stays_off_stdout(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(SIX_HOURS.format(at=1.0, dur=1.0))
    typo = tmp_path / "typo.toml"
    typo.write_text('name = "y"\n[workload]\nparcls = 3\n')
    missing = tmp_path / "missing.toml"
    r = check("--lang", "zh", "sim", "check", str(good), str(typo), str(missing))
    assert r.returncode == 2
    assert r.stdout.strip() == f"✓ {good}：场景 x，6.0 小时，1 个故障"
    errors = r.stderr.strip().splitlines()
    assert errors[0].startswith(f"错误：{typo}: workload.parcls: 没有这个键，是不是 'parcels'？"), errors
    assert errors[1].startswith(f"错误：无法读取 {missing}："), errors
    assert "{" not in r.stdout


def test_json_on_request_one_object_per_file(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(SIX_HOURS.format(at=1.0, dur=1.0))
    typo = tmp_path / "typo.toml"
    typo.write_text('name = "y"\n[workload]\nparcls = 3\n')
    r = check("--lang", "en", "sim", "check", "--json", str(good), str(typo))
    assert r.returncode == 2 and r.stderr == ""
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[0] == {"file": str(good), "name": "x", "ok": True, "warnings": []}
    assert rows[1]["ok"] is False and rows[1]["error"].startswith(f"{typo}: workload.parcls: unknown key")


def test_faults_outside_the_run_are_warned_about(tmp_path: Path) -> None:
    late = tmp_path / "late.toml"
    late.write_text(SIX_HOURS.format(at=8.0, dur=1.0))
    r = check("--lang", "zh", "sim", "check", str(late))
    assert r.returncode == 0
    want = f"警告：{late}: faults[0]（wan_down）在第 8.0 小时开始，而场景只有 6.0 小时：不会注入"
    assert r.stderr.strip() == want
    long = tmp_path / "long.toml"
    long.write_text(SIX_HOURS.format(at=5.0, dur=3.0))
    r = check("--lang", "en", "sim", "check", "--json", str(long))
    assert json.loads(r.stdout)["warnings"] == [
        f"{long}: faults[0] (wan_down) lasts until 8.0 h but the scenario ends at 6.0 h: it is cut there"]


def test_a_virtual_run_starts_today_unless_told() -> None:
    from simulator.scenario import Scenario, day_start, parse

    now = time.time()
    sc = parse({"name": "today", "seed": 1})
    assert sc.start == day_start(now) and now - 86400 < sc.start <= now
    assert (sc.start + 8 * 3600) % 86400 == 0  # 00:00 in China
    assert Scenario(name="in-code", seed=1).start == sc.start  # built in code (the pytest plugin) too
    assert parse({"name": "told", "seed": 1, "time": {"start": 1795881600}}).start == 1795881600
