"""The counter's electronic scale over serial (pyserial): a stable weight
in whole grams, or a reason why not, within a deadline. Never hangs.

Stable means both: the scale's own flag says so (for formats that carry
one, ``scale_frames``), and the readings stayed within ``tolerance_g`` of
each other for ``window_s`` with at least ``min_readings`` of them. A scale
flags "stable" after a fraction of a second of quiet; a villager's hand
resting on a box of eggs can fool that, the time window makes the clerk's
reading the weight that stayed put.

Reasons (``ScaleError.reason``), each counted in
``postedge_counter_scale_total{result}``:

``unplugged``  the port vanished or cannot be opened (USB-serial pulled)
``no_data``    nothing readable arrived before the deadline
``unstable``   readings arrived but never settled
``overload`` / ``underload``  the scale said so (the last word before the deadline)
``negative``   a stable negative weight (a tare taken with a box on it)

Garbage (line noise, a wrong baud rate, a frame of another format) is
counted and skipped: it resets nothing but the partial frame. A buffer
that grows past ``MAX_PENDING`` bytes without a frame end is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial
from prometheus_client import Counter

from gateway import metrics as M
from gateway.counter import scale_frames as F
from gateway.counter.scale_frames import FrameError, Reading

MAX_PENDING = 256
SCALE = Counter("postedge_counter_scale", "Scale frames and weighings, by result (frame_ok, garbage, "
                "unit, stable, unplugged, no_data, unstable, overload, underload, negative)",
                ["result"], registry=M.REGISTRY)


class ScaleError(RuntimeError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Weight:
    grams: int
    readings: int  # how many frames agreed


class StableWindow:
    """Consecutive equal readings for a time window (and the scale's flag)."""

    def __init__(self, window_s: float, min_readings: int = 3, tolerance_g: int = 0) -> None:
        self.window_s = window_s
        self.min_readings = min_readings
        self.tolerance_g = tolerance_g
        self.reset()

    def reset(self) -> None:
        self.value: int | None = None
        self.since = 0.0
        self.count = 0

    def feed(self, r: Reading, t: float) -> Weight | None:
        if r.status != F.OK or r.grams is None or r.stable is False:
            self.reset()
            return None
        if self.value is None or abs(r.grams - self.value) > self.tolerance_g:
            self.value, self.since, self.count = r.grams, t, 1
            return None
        self.count += 1
        if t - self.since >= self.window_s and self.count >= self.min_readings:
            return Weight(self.value, self.count)
        return None


Opener = Callable[[], Any]


def serial_opener(url: str, baudrate: int = 9600) -> Opener:
    """A port by device path or pyserial URL (``/dev/ttyUSB0``, ``loop://``,
    ``socket://host:port``) with a short read timeout, so no read blocks
    for longer than 0.1 s."""
    return lambda: serial.serial_for_url(url, baudrate=baudrate, timeout=0.1, write_timeout=1.0)


class Scale:
    """One scale; ``read_stable`` is the only call. Opens the port on
    demand and closes it after an error, so a scale plugged back in works
    at the next weighing without a restart."""

    def __init__(self, opener: Opener, fmt: str, unit: str = "kg", window_s: float = 1.0,
                 min_readings: int = 3, tolerance_g: int = 0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        if fmt not in ("mt-sics", "eq-reversed", "st-gs"):
            raise ValueError(f"unknown scale format {fmt!r}")
        self.opener = opener
        self.fmt = fmt
        self.unit = unit
        self.window = StableWindow(window_s, min_readings, tolerance_g)
        self.clock = clock
        self.port: Any = None
        self.garbage = 0

    def close(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            except Exception:  # noqa: BLE001 - a dead port may fail to close too
                pass
            self.port = None

    def _open(self) -> Any:
        if self.port is None:
            try:
                self.port = self.opener()
            except (serial.SerialException, OSError, ValueError) as e:
                SCALE.labels("unplugged").inc()
                raise ScaleError("unplugged", f"cannot open the scale: {e}") from e
            if self.fmt == "mt-sics":
                try:
                    self.port.write(b"SIR\r\n")  # MT-SICS: send weight immediately and repeat
                except (serial.SerialException, OSError) as e:
                    self.close()
                    SCALE.labels("unplugged").inc()
                    raise ScaleError("unplugged", f"cannot write to the scale: {e}") from e
        return self.port

    def read_stable(self, timeout_s: float = 5.0) -> Weight:
        port = self._open()
        try:
            port.reset_input_buffer()  # old frames are not this parcel's weight
        except (serial.SerialException, OSError):
            pass
        self.window.reset()
        deadline = self.clock() + timeout_s
        pending = b""
        seen = 0
        last_bad: str | None = None
        while self.clock() < deadline:
            try:
                chunk = port.read(64)
            except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                # pyserial raises SerialException on a vanished device; some
                # versions fail with TypeError/AttributeError on a closed fd.
                self.close()
                SCALE.labels("unplugged").inc()
                raise ScaleError("unplugged", f"the scale stopped answering: {e}") from e
            if not chunk:
                continue
            frames, pending = F.split_frames(self.fmt, pending + chunk)
            if len(pending) > MAX_PENDING:
                self.garbage += 1
                SCALE.labels("garbage").inc()
                pending = b""
            for raw in frames:
                try:
                    r = F.parse(self.fmt, raw.decode("ascii"), self.unit)
                except FrameError as e:
                    self.garbage += 1
                    SCALE.labels(e.reason).inc()
                    continue
                except UnicodeDecodeError:
                    self.garbage += 1
                    SCALE.labels("garbage").inc()
                    continue
                SCALE.labels("frame_ok").inc()
                seen += 1
                if r.status in (F.OVERLOAD, F.UNDERLOAD):
                    last_bad = r.status
                elif r.status == F.BUSY:
                    pass
                else:
                    last_bad = None
                w = self.window.feed(r, self.clock())
                if w is not None:
                    if w.grams < 0:
                        SCALE.labels("negative").inc()
                        raise ScaleError("negative", f"the scale reads {w.grams} g: re-zero it")
                    SCALE.labels("stable").inc()
                    return w
        reason = last_bad or ("unstable" if seen else "no_data")
        SCALE.labels(reason).inc()
        raise ScaleError(reason, f"no stable weight in {timeout_s:g} s ({seen} readings)")
