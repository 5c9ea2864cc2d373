"""``postedge central campaign|site|job|review``: the dispatcher's 政讯通
commands on a real central folder (its SQLite file), run as a person runs
them, in English and in Chinese."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from central.boards import Boards
from central.embedded import Embedded


def pe(*args: str, lang: str = "en", check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", lang, "central", *args],
                       capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    if check:
        assert r.returncode == 0, r.stderr + r.stdout
    return r


@pytest.mark.slow
def test_campaign_site_job_and_review_from_the_command_line(tmp_path: Path) -> None:
    d = str(tmp_path / "central")
    pe("init", d)
    pe("outlet", "add", d, "o1")
    out = pe("campaign", "add", d, "health-2026", "--poster", "Health check", "--qr", "PE-CAMP:health-2026",
             "--start", "2026-01-01", "--end", "2099-12-31").stdout
    assert "health-2026" in out and "PE-CAMP:health-2026" in pe("campaign", "list", d).stdout
    pe("site", "add", d, "s-01", "o1", "--village", "Xiakou", "--lat", "27.5", "--lon", "109.9")
    # a courier's proposal, as the review pass would record it
    b = Embedded(Path(d) / "data")
    Boards(b).add_site("sv-1", "o1", "Shangpo", 275_100_000, 1_099_100_000, status="proposed")
    b.close()
    listed = pe("site", "list", d).stdout
    assert "s-01  Xiakou  27.500000,109.900000  approved" in listed and "waiting for approval" in listed
    assert "待批准" in pe("site", "list", d, lang="zh").stdout
    r = pe("job", "add", d, "o1", "hh01", "--kind", "install", "--site", "sv-1", "--campaign", "health-2026",
           check=False)
    assert r.returncode == 2 and "status does not allow" in r.stderr
    pe("site", "approve", d, "sv-1")
    out = pe("job", "add", d, "o1", "hh01", "--kind", "install", "--site", "sv-1", "--campaign",
             "health-2026").stdout
    assert "1 jobs signed for hh01" in out
    assert "install a board  sv-1  hh01  sent" in pe("job", "list", d).stdout
    r = pe("job", "add", d, "o1", "hh01", "--kind", "install", "--site", "s-01", "--campaign", "nope",
           check=False, lang="zh")
    assert r.returncode == 2 and "没有这个宣传活动" in r.stderr
    assert pe("review", "list", d).stdout == ""
