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


def test_the_scenarios_own_rules_read_in_both_languages(tmp_path: Path) -> None:
    """What a scenario's validators and pydantic's less common bounds say: in
    the reader's language (they were English in a Chinese line before)."""
    cases = {
        "pickup": ('[workload]\npickup_delay_h = [5.0, 1.0]\n', "workload.pickup_delay_h",
                   "必须是 [下限, 上限]，且 0 ≤ 下限 ≤ 上限，现在是 [5.0, 1.0]",
                   "must be [low, high] with 0 <= low <= high, got [5.0, 1.0]"),
        "hours": ('[workload]\narrivals_by_hour = [1.0, 2.0]\n', "workload.arrivals_by_hour",
                  "必须是 24 个权重（每小时一个），现在有 2 个", "must be 24 weights (one per hour), got 2"),
        "zero": ('[workload]\narrivals_by_hour = [' + ", ".join(["0.0"] * 24) + ']\n',
                 "workload.arrivals_by_hour", "权重都不能小于 0，也不能全为 0",
                 "the weights must be none negative and not all zero"),
        "refused": ('[expect]\nmax_refused_by = { "deposit.full" = -1 }\n',
                    "expect.max_refused_by.deposit.full",
                    "必须是数字，不小于 0，现在是 -1", "must be a number at least 0, got -1"),
    }
    paths = []
    for name, (body, _, _, _) in cases.items():
        p = tmp_path / f"{name}.toml"
        p.write_text('name = "x"\n' + body)
        paths.append(str(p))
    empty = tmp_path / "empty.toml"
    empty.write_text('name = ""\n')
    for lang in ("zh", "en"):
        r = check("--lang", lang, "sim", "check", *paths, str(empty))
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        for line, (name, (_, key, zh, en)) in zip(lines, cases.items(), strict=False):
            prefix = "错误：" if lang == "zh" else "error: "
            assert line == f"{prefix}{tmp_path / name}.toml: {key}: {zh if lang == 'zh' else en}", line
        assert lines[-1].endswith("name: 不能为空" if lang == "zh" else "name: must not be empty"), lines


def test_a_fault_naming_a_device_the_outlet_lacks_is_refused(tmp_path: Path) -> None:
    """A power cut for ``zz`` (or a third locker of two) would fail hours into
    the run; the check names the fault, the device and what the outlet has."""
    base = 'name = "x"\n[outlet]\nlockers = 2\nscanners = 1\n'
    bad = tmp_path / "bad.toml"
    bad.write_text(base + '[[faults]]\nkind = "power_cut"\nat_h = 1.0\nfor_h = 0.5\ndevice = "lk01"\n'
                   '[[faults]]\nkind = "power_cut"\nat_h = 2.0\nfor_h = 0.5\ndevice = "zz"\n')
    r = check("--lang", "en", "sim", "check", str(bad))
    assert r.returncode == 2
    assert "faults[1] names device zz, which the outlet does not have (it has: lk01, lk02, sc01)" in r.stderr
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(base + '[fleet]\noutlets = 2\n[[fleet.faults]]\noutlet = 2\nkind = "clock_skew"\n'
                     'at_h = 1.0\nskew_s = 600\ndevice = "lk03"\n')
    r = check("--lang", "zh", "sim", "check", str(fleet))
    assert r.returncode == 2
    assert "fleet.faults[0] 指的是设备 lk03，而网点没有这台设备（有：lk01, lk02, sc01）" in r.stderr
    good = tmp_path / "good.toml"
    good.write_text(base + '[[faults]]\nkind = "clock_skew"\nat_h = 1.0\nskew_s = 60\ndevice = "sc01"\n')
    assert check("--lang", "en", "sim", "check", str(good)).returncode == 0


def test_an_outbound_day_after_the_end_is_warned_about(tmp_path: Path) -> None:
    """Forced doors in a three-hour run start at 13:30 by default: the run
    would fail its alarm check with nothing said about why."""
    short = tmp_path / "short.toml"
    short.write_text('name = "x"\n[time]\nhours = 3.0\n[workload]\nforced_doors = 1\nreturns = 2\n')
    r = check("--lang", "en", "sim", "check", str(short))
    assert r.returncode == 0
    assert ("the outbound day starts at 13.0 h (workload.outbound_h) but the scenario lasts 3.0 h: "
            "none of returns, forced_doors will happen") in r.stderr, r.stderr
    cut = tmp_path / "cut.toml"
    cut.write_text('name = "x"\n[time]\nhours = 3.0\n[workload]\noutbound_h = 1.0\nboard_sites = 1\n')
    r = check("--lang", "zh", "sim", "check", str(cut))
    assert ("外发日从第 1.0 小时开始，需要约 4.5 小时，而场景只有 3.0 小时："
            "board_sites 中较晚的会被截掉") in r.stderr
    fits = tmp_path / "fits.toml"
    fits.write_text('name = "x"\n[time]\nhours = 6.0\n[workload]\noutbound_h = 1.0\nforced_doors = 1\n')
    r = check("--lang", "en", "sim", "check", str(fits))
    assert r.returncode == 0 and not r.stderr, r.stderr
