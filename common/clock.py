"""What time it is, for every CPython part: ``now()``.

Normally the wall clock (``time.time()``). When the environment variable
``POSTEDGE_CLOCK_FILE`` names a file, the time is the simulation's: the
simulator (``simulator/inproc.py`` ``SimClock``) writes its virtual time
into that file as the scenario advances, and a gateway started with the
variable (``simulator/gateway_process.py``) judges and records time by it,
so expiry, stored-at times, ages and the time beacon live on the same axis
as the simulated lockers.

The file is one fixed 24-byte record, read through a shared ``mmap``::

    magic b"PEC1" | crc32(rest) u32 | virtual_t f64 | mono_at_set f64

Why (virtual time, monotonic time of the set) rather than the virtual time
alone: between two sets the time keeps running at real speed from where the
simulator put it. A frozen clock would stall everything in the gateway that
waits "until N seconds have passed" by ``now()`` (a notifier's delay, a
resend after 30 s) until the simulator happens to move the clock again, and
after the run's last window it never does. ``CLOCK_MONOTONIC`` is one clock
for every process on the host and never steps with NTP, so the reader's
``monotonic() - mono_at_set`` is the real time since the set. Within one
process ``now()`` never runs backwards: a set a little behind the time
already read (the real time of a window outran its virtual length) holds the
clock where it is until the virtual time catches up.

Why a CRC and not a sequence number: Python's mmap slice copy gives no
ordering guarantee against another process writing the same bytes, so a
seqlock's "read the counter, the data, the counter again" is not sound here;
a record whose checksum does not match was torn (or is not a clock file) and
is read again. One ``memcpy``, one ``struct.unpack`` and one ``crc32``: a
read costs about a microsecond, no system call. The writer replaces nothing:
it writes the record in place, so the reader's mapping always sees the
current file (a rename would leave it reading the old inode).

Why hand-written: it is a page of stdlib (mmap, struct, zlib); no
library does exactly this cross-process clock, and the gateway must not
depend on the simulator's packages.

A variable naming a missing, short or corrupt file is an error
(``ClockError``) when the process starts (``configure``), never a silent
fall back to the wall clock: a virtual run with half its parts on the wall
clock is the bug this module exists to prevent.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from common.config import Problem

ENV = "POSTEDGE_CLOCK_FILE"
MAGIC = b"PEC1"
_BODY = struct.Struct("<dd")
SIZE = 4 + 4 + _BODY.size
#: How long a record whose checksum does not match is read again before it
#: counts as corrupt rather than caught mid-write. A write takes well under a
#: microsecond, but a writer the scheduler preempts inside its copy leaves the
#: record torn until it runs again (milliseconds on a busy machine).
TORN_WAIT_S = 0.5


class ClockError(Problem):
    """The clock file named by ``POSTEDGE_CLOCK_FILE`` cannot be used; a
    catalogued problem (``common/text_config.toml``), so the gateway's
    command line says it in the reader's language as a configuration error."""


def encode(virtual_t: float, mono_at_set: float) -> bytes:
    body = _BODY.pack(float(virtual_t), float(mono_at_set))
    return MAGIC + struct.pack("<I", zlib.crc32(body)) + body


def decode(rec: bytes) -> tuple[float, float] | None:
    """``(virtual_t, mono_at_set)``, or None for a record that is torn or not
    a clock record."""
    if len(rec) != SIZE or rec[:4] != MAGIC:
        return None
    body = rec[8:]
    if struct.unpack("<I", rec[4:8])[0] != zlib.crc32(body):
        return None
    return _BODY.unpack(body)


class FileClock:
    """The reader: the simulation's time from a clock file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise ClockError("clock_file_unreadable", path=str(self.path), why=e.strerror) from e
        try:
            size = os.fstat(fd).st_size
            if size != SIZE:
                raise ClockError("clock_file_size", path=str(self.path), size=size, expected=SIZE)
            self._map = mmap.mmap(fd, SIZE, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self._last = float("-inf")
        self.read()  # a corrupt file fails here, at start

    def read(self) -> tuple[float, float]:
        """The last set: ``(virtual_t, mono_at_set)``."""
        got = decode(self._map[:SIZE])
        if got is not None:
            return got
        deadline = time.monotonic() + TORN_WAIT_S
        while time.monotonic() < deadline:
            time.sleep(0.0001)  # let a preempted writer finish its write
            got = decode(self._map[:SIZE])
            if got is not None:
                return got
        raise ClockError("clock_file_corrupt", path=str(self.path))

    def now(self) -> float:
        v, m = self.read()
        t = v + max(0.0, time.monotonic() - m)
        if t < self._last:  # never backwards within this process
            return self._last
        self._last = t
        return t


class ClockWriter:
    """The simulator's side: owns the clock file and sets its time."""

    def __init__(self, path: str | os.PathLike[str], t: float) -> None:
        """Create (or replace) the file at ``path`` holding ``t``. The whole
        record lands at once (a temporary file renamed), so a reader never
        sees a short file."""
        self.path = Path(path)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._t, self._m = float(t), time.monotonic()
        tmp.write_bytes(encode(self._t, self._m))
        os.replace(tmp, self.path)
        fd = os.open(self.path, os.O_RDWR)
        try:
            self._map: mmap.mmap | None = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)

    def set(self, t: float) -> None:
        if self._map is None:
            raise RuntimeError(f"{self.path}: the clock writer is closed")
        self._t, self._m = float(t), time.monotonic()
        self._map[:SIZE] = encode(self._t, self._m)

    def now(self) -> float:
        """The time a reader of the file sees now (the last set plus the real
        time since; a reader's own never-backwards hold aside)."""
        return self._t + max(0.0, time.monotonic() - self._m)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


_lock = threading.Lock()
_now: Callable[[], float] | None = None


def configure() -> Callable[[], float]:
    """Read ``POSTEDGE_CLOCK_FILE`` (again) and return the time source it
    selects; raises ClockError for a file that cannot be used. Processes call
    it once at start so a bad file stops them there."""
    global _now
    path = os.environ.get(ENV)
    src = FileClock(path).now if path else time.time
    with _lock:
        _now = src
    return src


@contextmanager
def following(path: str | os.PathLike[str]) -> Iterator[None]:
    """This process on the clock file at ``path`` while inside, then back to
    what it was: a simulator that reads the store of a gateway it runs on a
    virtual clock (a backlog's age) must read it on that gateway's clock."""
    global _now
    src = FileClock(path).now
    with _lock:
        prev, _now = _now, src
    try:
        yield
    finally:
        with _lock:
            _now = prev


def now() -> float:
    """Seconds since the epoch: the wall clock, or the simulation's."""
    src = _now
    if src is None:
        src = configure()
    return src()


def simulated() -> bool:
    """Whether this process runs on a simulation's clock."""
    return bool(os.environ.get(ENV))
