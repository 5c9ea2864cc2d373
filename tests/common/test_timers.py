"""``common/timers.py``: waits on the wall clock are ``Event.wait``; on a
simulation's clock they end when the simulated time passes their deadline
(a jump ends them at once, real seconds alone do not stretch them), and
paced threads publish on a board what they wait for, which a simulator
reads to know the gateway has done what was due."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import clock, timers
from tests.waiting import until


def board_when(path: Path, pred: object) -> list[timers.Waiter]:
    """The board once ``pred(waiters)`` holds (the test fails if it never does)."""
    until(lambda: (w := timers.read_board(path)) is not None and pred(w), timeout=5,  # type: ignore[operator]
          what="the board")
    got = timers.read_board(path)
    assert got is not None
    return got

ROOT = Path(__file__).resolve().parents[2]
V = 1_900_000_000.0


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(clock.ENV, raising=False)
    monkeypatch.delenv(timers.ENV, raising=False)
    clock.configure()
    yield
    monkeypatch.delenv(clock.ENV, raising=False)
    monkeypatch.delenv(timers.ENV, raising=False)
    clock.configure()


@pytest.fixture
def simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[clock.ClockWriter]:
    w = clock.ClockWriter(tmp_path / "clk", V)
    monkeypatch.setenv(clock.ENV, str(tmp_path / "clk"))
    monkeypatch.setenv(timers.ENV, str(tmp_path / "pace"))
    clock.configure()
    yield w
    w.close()


def in_thread(fn: object, *args: object, **kw: object) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn(*args, **kw)), daemon=True)  # type: ignore[operator]
    t.start()
    return t, out


def ended_by_its_event(seconds: float) -> list[object]:
    """What a wait of ``seconds`` returned when its event was set a moment in."""
    ev = threading.Event()
    t, out = in_thread(timers.wait, ev, seconds)
    time.sleep(0.05)
    ev.set()
    t.join(2.0)
    return out


def test_on_the_wall_clock_a_wait_is_the_events() -> None:
    assert not timers.simulated()
    assert abs(timers.monotonic() - time.monotonic()) < 0.5
    assert ended_by_its_event(30.0) == [True]
    t0 = time.monotonic()
    assert timers.wait(None, 0.1) is False
    assert time.monotonic() - t0 >= 0.09


def test_a_simulated_hour_ends_when_the_clock_jumps_past_it(simulated: clock.ClockWriter) -> None:
    t, out = in_thread(timers.wait, threading.Event(), 3600.0)
    time.sleep(0.3)
    assert t.is_alive()  # real time alone does not end an hour's wait
    t0 = time.monotonic()
    simulated.set(V + 1800)
    time.sleep(0.1)
    assert t.is_alive()  # half an hour is not an hour
    simulated.set(V + 3601)
    t.join(2.0)
    assert not t.is_alive() and out == [False]
    assert time.monotonic() - t0 < 1.0


def test_a_simulated_wait_still_ends_on_its_event(simulated: clock.ClockWriter) -> None:
    assert ended_by_its_event(3600.0) == [True]
    assert timers.monotonic() >= V  # the simulated axis


def test_a_paced_thread_publishes_what_it_waits_for(simulated: clock.ClockWriter, tmp_path: Path) -> None:
    board = tmp_path / "pace"
    stop = threading.Event()

    def worker() -> None:
        with timers.paced("uplink"):
            timers.wait(stop, 100.0, due=False)  # a poll
            timers.wait(stop, 50.0)  # a retry: due at its end

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    got = board_when(board, lambda w: w and w[0].state == timers.WAITING)
    (w,) = got
    assert w.name == "uplink" and V + 99 < w.deadline < V + 101 and w.due == math.inf
    assert timers.settled(got, V + 1) and not timers.settled(got, V + 101)
    assert timers.next_due(got) == math.inf  # a poll is nothing due
    simulated.set(V + 101)
    got = board_when(board, lambda w: w and w[0].state == timers.WAITING and w[0].due < math.inf)
    assert V + 150 < timers.next_due(got) < V + 152
    stop.set()
    t.join(2.0)
    assert timers.read_board(board) == []  # its slot is free once it leaves ``paced``


def test_a_thread_outside_paced_is_not_on_the_board(simulated: clock.ClockWriter, tmp_path: Path) -> None:
    with timers.paced("notify"):
        pass
    t, _ = in_thread(timers.wait, None, 100.0)
    time.sleep(0.1)
    assert timers.read_board(tmp_path / "pace") == []
    simulated.set(V + 200)
    t.join(2.0)


def test_a_torn_slot_is_not_settled(simulated: clock.ClockWriter, tmp_path: Path) -> None:
    stop = threading.Event()

    def worker() -> None:
        with timers.paced("x"):
            timers.wait(stop, 100.0)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    board = tmp_path / "pace"
    board_when(board, lambda w: w and w[0].state == timers.WAITING)
    raw = bytearray(board.read_bytes())
    raw[12 + 20] ^= 0xFF  # a byte of the first slot's deadline, as a write caught half done
    torn = tmp_path / "torn"
    torn.write_bytes(bytes(raw))
    got = timers.read_board(torn)
    assert got is not None and got[0].state == -1 and not timers.settled(got, V)
    stop.set()
    t.join(2.0)


def test_a_dead_writers_board_is_no_board(tmp_path: Path) -> None:
    """A killed gateway's board says nothing: the simulator must not wait on it."""
    w = clock.ClockWriter(tmp_path / "clk", V)
    code = ("from common import timers\n"
            "with timers.paced('uplink'):\n    timers.wait(None, 0.01)\n"
            "import os; os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30,
                   env={**os.environ, clock.ENV: str(tmp_path / "clk"), timers.ENV: str(tmp_path / "pace"),
                        "PYTHONPATH": str(ROOT)})
    assert (tmp_path / "pace").read_bytes()[:4] == timers.MAGIC
    assert timers.read_board(tmp_path / "pace") is None
    assert timers.read_board(tmp_path / "missing") is None
    w.close()
