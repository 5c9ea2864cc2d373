"""``postedge sim new``: a commented scenario a tester edits, which loads and
runs as written; ``sim run --help`` names the shipped scenarios and the exit
codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from simulator.scenario import load

ROOT = Path(__file__).resolve().parents[2]


def pe(*args: str, lang: str = "en") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", lang, "sim", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_new_writes_a_scenario_that_loads_with_the_defaults(tmp_path: Path) -> None:
    r = pe("new", "my-day", "--out", str(tmp_path))
    assert r.returncode == 0 and "my-day.toml" in r.stdout
    text = (tmp_path / "my-day.toml").read_text(encoding="utf-8")
    assert "快递柜数" in text and "lockers" in text  # both languages in the comments
    sc = load(tmp_path / "my-day.toml")
    assert (sc.name, sc.lockers, sc.parcels, sc.faults) == ("my-day", 2, 40, ())
    again = pe("new", "my-day", "--out", str(tmp_path), lang="zh")
    assert again.returncode == 2 and "已存在" in again.stderr
    assert pe("new", "My Day!", "--out", str(tmp_path)).returncode == 2


def test_run_help_lists_the_shipped_scenarios_and_exit_codes() -> None:
    out = pe("run", "--help", lang="zh").stdout
    for p in sorted((ROOT / "scenarios").glob("*.toml")):
        assert f"  {p.stem}\n" in out
    assert "退出码：0 通过，1 有预期未满足" in out
    assert "Exit status: 0 pass" in pe("run", "--help").stdout
