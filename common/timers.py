"""Waiting on the process's clock (``monotonic``, ``wait``, ``sleep``) and
the pace board a simulator reads to move its clock only when the waiting
is done.

Why. A gateway's policy timers mean seconds of the outlet's time: an upload
retried after a backoff, a dead link probed again, a bandwidth cap's pause,
the notifier's tick. In production that is the wall clock. Under a
simulation's clock file (``common/clock.py``) it is the simulated time,
which jumps an action window at a time; a retry of two seconds measured on
the real clock then spans hours of the report's axis (a stall that never
happened), and a backlog drains whenever real seconds allow rather than
when the outlet's time says. So every such wait goes through ``wait``: on
the wall clock it is ``Event.wait``; on a simulated clock it ends once the
simulated time has passed its deadline. Between two sets the simulated
time runs at real speed (``common/clock.py``), never slower, so a real wait
of the seconds still to go never overshoots, and one watcher thread per
process wakes every waiter when the clock jumps (``SLICE_S``).

Not timers: deadlines on a real peer (a modem's answer, an HTTP timeout, a
database lock) measure how long that peer takes and stay on
``time.monotonic``.

Pacing. A jump is only truthful if the gateway has done, before it, what
was due before it: a backlog drained as soon as the link came back, not
whenever a real second let the next probe run. A thread that opts in with
``paced(name)`` (the uplink, the downlink, the photo uploader, the
notifier) publishes in the file ``POSTEDGE_PACE_FILE`` names whether it is
busy or waiting here, until when, and whether something is due at the end
of the wait (a retry, a paced send) or it only looks again for new work (a
poll). The simulator (``simulator/pacing.py``) moves the clock on once every
paced thread waits for a time after the clock's, and steps the clock to the
due times that fall before its next window. Without the variable there is
no board and ``paced`` does nothing.

The board is one file per gateway process: a header (magic, the writer's
pid, the slot count) and ``SLOTS`` fixed records, each written in place
through a shared ``mmap`` by the one thread that owns it and carrying a
CRC, so a reader that catches a record mid-write sees it torn and reads
again (as the clock file's reader does). A reader ignores a board whose
writer has died (a killed gateway); the next gateway process replaces the
file.

Why hand-written: a page of stdlib (mmap, struct, zlib, threading) shared
with the clock file's design; no library paces a separate process by
another's simulated time.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common import clock

ENV = "POSTEDGE_PACE_FILE"
MAGIC = b"PEB1"
SLOTS = 16
#: How long one real wait lasts at most on a simulated clock: how soon a
#: waiting thread sees the clock jump (a simulator waits that long at most
#: per step for each paced thread).
SLICE_S = 0.005
#: The variable that sets ``SLICE_S`` (and ``EVENT_SLICE_S``) for one process:
#: a county of a hundred gateways on two cores looks less often.
SLICE_ENV = "POSTEDGE_TIMER_SLICE_S"
#: How soon a wait on a simulated clock sees its event set (a stop, a wake).
EVENT_SLICE_S = 0.05
_HEAD = struct.Struct("<4sII")  # magic, writer pid, slots
_BODY = struct.Struct("<12sIdd")  # name, state, deadline, due
_REC = _BODY.size + 4  # + crc32
FREE, BUSY, WAITING = 0, 1, 2


def simulated() -> bool:
    """Whether this process's timers run on a simulation's clock."""
    return clock.simulated()


def monotonic() -> float:
    """Seconds on this process's timer axis: ``time.monotonic()`` on the wall
    clock, the simulated time (never backwards) on a simulation's."""
    return clock.now() if clock.simulated() else time.monotonic()


_cond = threading.Condition()
_watching = False


def _slices() -> tuple[float, float]:
    """(watch, event) slices: ``SLICE_S``/``EVENT_SLICE_S``, or both from
    ``POSTEDGE_TIMER_SLICE_S`` (the event one four times it, never shorter than its default)."""
    try:
        v = float(os.environ.get(SLICE_ENV) or 0)
    except ValueError:
        v = 0.0
    return (v, max(4 * v, EVENT_SLICE_S)) if 0 < v <= 1.0 else (SLICE_S, EVENT_SLICE_S)


def _watch() -> None:
    """Wake every waiter when the simulated clock jumps (moves on faster than
    the real time since the last look): one thread per process looks every
    ``SLICE_S``, rather than every waiter on its own."""
    watch_s = _slices()[0]
    t0, r0 = clock.now(), time.monotonic()
    while True:
        time.sleep(watch_s)
        t, r = clock.now(), time.monotonic()
        if t - t0 > (r - r0) + 1e-4:
            with _cond:
                _cond.notify_all()
        t0, r0 = t, r


_event_slice = EVENT_SLICE_S


def _start_watch() -> None:
    global _watching, _event_slice
    with _cond:
        if not _watching:
            _event_slice = _slices()[1]
            threading.Thread(target=_watch, name="postedge-clock-watch", daemon=True).start()
            _watching = True


def wait(event: threading.Event | None, seconds: float, *, due: bool | float = True) -> bool:
    """Wait ``seconds`` of this process's time or until ``event`` is set;
    True if it was. ``due``: something is due when the wait ends (a retry,
    a paced send), so a simulator steps its clock there; False for a poll
    that only looks again for new work, which a simulator's next window
    brings anyway; or the time (``monotonic``) something is due, when the
    wait is a shorter look on the way there. On a simulated clock a set event is seen within
    ``EVENT_SLICE_S``, a jump of the clock at once."""
    if not clock.simulated():
        if event is None:
            time.sleep(max(0.0, seconds))
            return False
        return event.wait(max(0.0, seconds))
    _start_watch()
    deadline = clock.now() + max(0.0, seconds)
    slot = getattr(_local, "slot", None)
    if slot is not None:
        slot.put(WAITING, deadline, deadline if due is True else math.inf if due is False else float(due))
    try:
        with _cond:
            while True:
                if event is not None and event.is_set():
                    return True
                left = deadline - clock.now()
                if left <= 0:
                    return False
                _cond.wait(min(left, _event_slice))
    finally:
        if slot is not None:
            slot.put(BUSY, 0.0, 0.0)


def sleep(seconds: float, *, due: bool | float = True) -> None:
    """``wait`` with nothing to wake it early."""
    wait(None, seconds, due=due)


# ------------------------------------------------------------------ board
def encode_slot(name: str, state: int, deadline: float, due: float) -> bytes:
    body = _BODY.pack(name.encode("ascii", "replace")[:12], state, float(deadline), float(due))
    return body + struct.pack("<I", zlib.crc32(body))


class _Slot:
    """One paced thread's record on the board."""

    def __init__(self, board: _Board, index: int, name: str) -> None:
        self.board = board
        self.index = index
        self.name = name

    def put(self, state: int, deadline: float, due: float) -> None:
        self.board.write(self.index, encode_slot(self.name, state, deadline, due))


class _Board:
    """The writer's side: this process's board file."""

    def __init__(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(_HEAD.pack(MAGIC, os.getpid(), SLOTS)
                        + b"".join(encode_slot("", FREE, 0.0, 0.0) for _ in range(SLOTS)))
        os.replace(tmp, path)  # a gateway started again replaces the dead one's board
        fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, _HEAD.size + SLOTS * _REC)
        finally:
            os.close(fd)
        self.used = [False] * SLOTS
        self.lock = threading.Lock()

    def write(self, index: int, rec: bytes) -> None:
        off = _HEAD.size + index * _REC
        self.map[off:off + _REC] = rec

    def claim(self, name: str) -> _Slot | None:
        with self.lock:
            for i, used in enumerate(self.used):
                if not used:
                    self.used[i] = True
                    slot = _Slot(self, i, name)
                    slot.put(BUSY, 0.0, 0.0)
                    return slot
        return None  # more paced threads than slots: this one is not paced

    def release(self, slot: _Slot) -> None:
        slot.put(FREE, 0.0, 0.0)
        with self.lock:
            self.used[slot.index] = False


_local = threading.local()
_board_lock = threading.Lock()
_board: _Board | None = None
_board_path: str | None = None


def _this_board() -> _Board | None:
    global _board, _board_path
    path = os.environ.get(ENV)
    if not path or not clock.simulated():
        return None
    with _board_lock:
        if _board is None or _board_path != path:
            _board, _board_path = _Board(Path(path)), path
        return _board


@contextmanager
def paced(name: str) -> Iterator[None]:
    """This thread on the pace board while inside (a simulated clock with
    ``POSTEDGE_PACE_FILE`` set); otherwise nothing. Busy unless in ``wait``."""
    board = _this_board()
    slot = board.claim(name) if board is not None else None
    prev = getattr(_local, "slot", None)
    _local.slot = slot
    try:
        yield
    finally:
        _local.slot = prev
        if board is not None and slot is not None:
            board.release(slot)


# ----------------------------------------------------------------- reader
@dataclass(frozen=True)
class Waiter:
    """One paced thread as the board shows it."""

    name: str
    state: int  # BUSY, WAITING, or -1: caught mid-write
    deadline: float
    due: float


def read_board(path: str | os.PathLike[str]) -> list[Waiter] | None:
    """The paced threads of the process whose board is at ``path``; None if
    there is no board, it is not one, or its writer has died."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return None
    if len(raw) < _HEAD.size:
        return None
    magic, pid, n = _HEAD.unpack_from(raw)
    if magic != MAGIC or len(raw) < _HEAD.size + n * _REC or not _alive(pid):
        return None
    out: list[Waiter] = []
    for i in range(n):
        rec = raw[_HEAD.size + i * _REC:_HEAD.size + (i + 1) * _REC]
        body = rec[:_BODY.size]
        if struct.unpack("<I", rec[_BODY.size:])[0] != zlib.crc32(body):
            out.append(Waiter("?", -1, 0.0, 0.0))  # torn: read again
            continue
        name, state, deadline, due = _BODY.unpack(body)
        if state != FREE:
            out.append(Waiter(name.rstrip(b"\0").decode("ascii", "replace"), state, deadline, due))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped by its parent) is dead for pacing
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


def settled(waiters: list[Waiter], now: float) -> bool:
    """Every paced thread waits for a time after ``now`` and has nothing due
    by then: it has done what was due until ``now``. (A due already past is a
    thread about to look again: a job came due while it was busy.)"""
    return all(w.state == WAITING and w.deadline > now and w.due > now for w in waiters)


def next_due(waiters: list[Waiter]) -> float:
    """The earliest time something is due (``math.inf``: nothing is)."""
    return min((w.due for w in waiters if w.state == WAITING), default=math.inf)
