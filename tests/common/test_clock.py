"""``common/clock.py``: the wall clock by default; with ``POSTEDGE_CLOCK_FILE``
the simulation's time from the file, in this process and in another one,
never torn, never backwards, and a file that cannot be used is an error at
start rather than a quiet fall back to the wall clock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import clock
from common.config import describe

ROOT = Path(__file__).resolve().parents[2]
V = 1_900_000_000.0  # 2030: far from any wall clock this runs under


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test chooses its own source; the module's choice is reset after."""
    monkeypatch.delenv(clock.ENV, raising=False)
    clock.configure()
    yield
    monkeypatch.delenv(clock.ENV, raising=False)
    clock.configure()


def test_default_is_the_wall_clock() -> None:
    assert not clock.simulated()
    assert abs(clock.now() - time.time()) < 1.0


def test_the_file_sets_the_time_and_it_runs_at_real_speed_between_sets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = clock.ClockWriter(tmp_path / "clk", V)
    monkeypatch.setenv(clock.ENV, str(tmp_path / "clk"))
    clock.configure()
    assert clock.simulated()
    t0 = clock.now()
    assert V <= t0 < V + 1.0
    time.sleep(0.2)
    assert V + 0.15 < clock.now() < V + 2.0  # not frozen between two sets
    w.set(V + 86400)
    assert V + 86400 <= clock.now() < V + 86401  # a jump, as a virtual run's windows make
    w.close()


def test_another_process_reads_the_same_time(tmp_path: Path) -> None:
    """The gateway is a separate process: the file is its only link."""
    w = clock.ClockWriter(tmp_path / "clk", V)
    w.set(V + 3 * 86400)
    out = subprocess.run([sys.executable, "-c", "from common import clock; print(clock.now())"],
                         env={**os.environ, clock.ENV: str(tmp_path / "clk"), "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=30, check=True)
    assert V + 3 * 86400 <= float(out.stdout) < V + 3 * 86400 + 10
    w.close()


def test_never_backwards_within_a_process(tmp_path: Path) -> None:
    w = clock.ClockWriter(tmp_path / "clk", V + 100)
    r = clock.FileClock(tmp_path / "clk")
    assert r.now() >= V + 100
    w.set(V)  # behind what was read: held, not followed
    assert r.now() >= V + 100
    w.set(V + 200)
    assert r.now() >= V + 200
    w.close()


def test_a_missing_file_is_an_error_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(clock.ENV, str(tmp_path / "nope"))
    with pytest.raises(clock.ClockError, match="cannot open the clock file") as e:
        clock.configure()
    assert "无法打开时钟文件" in describe(e.value, "zh")


@pytest.mark.parametrize("content, match", [
    (b"", "0 bytes"),
    (b"PEC1" + b"\0" * 4, "8 bytes"),
    (b"x" * clock.SIZE, "not a postedge clock record"),
    (clock.encode(V, 1.0)[:-1] + b"\xff", "not a postedge clock record"),  # checksum does not match
])
def test_a_short_or_corrupt_file_is_an_error_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      content: bytes, match: str) -> None:
    (tmp_path / "clk").write_bytes(content)
    monkeypatch.setenv(clock.ENV, str(tmp_path / "clk"))
    with pytest.raises(clock.ClockError, match=match):
        clock.configure()


@pytest.mark.slow
def test_reads_are_never_torn(tmp_path: Path) -> None:
    """Another process rewrites the record as fast as it can, each time with
    a pair that belongs together (virtual = -mono); every read this side
    makes is one whole record, never half of two."""
    path = tmp_path / "clk"
    clock.ClockWriter(path, 0.0).close()
    writer = subprocess.Popen([sys.executable, "-c", f"""
import mmap, os, sys
from common import clock
fd = os.open({str(path)!r}, os.O_RDWR)
m = mmap.mmap(fd, clock.SIZE)
recs = [clock.encode(float(k), -float(k)) for k in range(1, 4097)]
m[:clock.SIZE] = recs[0]
print("go", flush=True)
while True:
    for r in recs:
        m[:clock.SIZE] = r
"""], env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "go"
        r = clock.FileClock(path)
        seen = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for _ in range(1000):
                v, m = r.read()
                assert v == -m, (v, m)
                seen.add(v)
        assert len(seen) > 100  # the writer really was writing while we read
    finally:
        writer.kill()
        writer.wait()


def test_the_reader_sees_the_writers_sets_without_reopening(tmp_path: Path) -> None:
    """The writer changes the record in place: a reader's mapping follows it
    (a rename would leave the reader on the old file)."""
    w = clock.ClockWriter(tmp_path / "clk", V)
    r = clock.FileClock(tmp_path / "clk")
    for k in range(1, 50):
        w.set(V + k * 3600)
        assert r.read()[0] == V + k * 3600
    w.close()


def test_following_a_clock_file_and_back(tmp_path: Path) -> None:
    """The simulator reads its gateway's store on that gateway's clock, then
    returns to its own."""
    w = clock.ClockWriter(tmp_path / "clk", V)
    with clock.following(tmp_path / "clk"):
        assert V <= clock.now() < V + 1
    assert abs(clock.now() - time.time()) < 1.0
    w.close()
    with pytest.raises(clock.ClockError):
        with clock.following(tmp_path / "nope"):
            pass
