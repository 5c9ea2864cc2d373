"""What a scan means to the courier: good, duplicate, invalid or wrong route.

Validation and the domain rules come from the shared module
(``protocol.barcodes``), so the handheld, the counter scanner and the
gateway agree on what a parcel id is. This module adds what only the person holding
the scanner needs:

- **Duplicate suppression, two windows.** A serial scan engine in continuous mode or a
  camera held over a label reads the same symbol many times a second; the
  *same-symbol window* (default 3 s, restarted by every read) turns those repeats
  into one ``good`` and then ``duplicate``s that make no event. A trigger pull over a
  label also often catches a *second* symbol next to the first (the product EAN next
  to the waybill); a different symbol within the *different-symbol window* (default
  0.3 s) of the last accepted read is reported as ``duplicate`` with reason
  ``too_soon`` and not acted on - the courier re-aims and scans it on purpose.
- **Verdicts with distinct feedback**: ``good`` (green, one beep), ``duplicate``
  (grey, no event), ``invalid`` (red: not a barcode we know, a failed check digit,
  or a valid code that is not a parcel id where a parcel is expected), ``wrong_route``
  (amber: a valid parcel id that is not on this courier's manifest / the locker's
  retrieval list, the mistake that sends a parcel to the wrong village).

Both windows are configurable (``[scan]`` in the config) because engines differ.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from protocol import barcodes

VERDICTS = ("good", "duplicate", "invalid", "wrong_route")


@dataclass
class ScanResult:
    verdict: str
    text: str
    value: str | None = None
    kind: str | None = None
    reason: str = ""
    detail: str = ""
    source: str = "manual"
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.verdict == "good"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScanFilter:
    """Decides verdicts; thread-safe (camera, serial engine and UI all feed it)."""

    def __init__(self, same_window_s: float = 3.0, other_window_s: float = 0.3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.same_window_s = same_window_s
        self.other_window_s = other_window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}  # symbol -> last time it was read
        self._last_accept: tuple[str, float] | None = None
        self.counts = dict.fromkeys(VERDICTS, 0)

    def judge(self, text: str, *, need_parcel: bool = True, route: Collection[str] | None = None,
              source: str = "manual", at: float | None = None) -> ScanResult:
        """The verdict for one read. ``route``: parcel ids allowed here (None = no route check).
        ``at``: when it was read on ``clock``, if earlier than now (a wedge scan the page
        held while a dialog was open): the windows are measured between reads, not arrivals."""
        text = text if isinstance(text, str) else ""
        key = text.strip()
        now = self.clock() if at is None else at
        with self._lock:
            last = self._seen.get(key)
            self._seen[key] = now if last is None else max(now, last)
            if len(self._seen) > 512:  # forget the oldest: windows are seconds, not hours
                for k, _ in sorted(self._seen.items(), key=lambda kv: kv[1])[:256]:
                    del self._seen[k]
            if key and last is not None and abs(now - last) < self.same_window_s:
                return self._count(ScanResult("duplicate", text, reason="same_symbol", source=source))
            if (key and self._last_accept is not None and self._last_accept[0] != key
                    and abs(now - self._last_accept[1]) < self.other_window_s):
                return self._count(ScanResult("duplicate", text, reason="too_soon", source=source))
        v = barcodes.classify(text)
        if not v["ok"]:
            return self._count(ScanResult("invalid", text, reason=v["reason"], detail=v["detail"],
                                          source=source))
        kind = str(v["kind"])
        value = str(v["value"])
        if need_parcel and kind not in barcodes.PARCEL_KINDS:
            return self._count(ScanResult("invalid", text, value, kind, "not_parcel",
                                          f"{kind} code is not a parcel id", source))
        with self._lock:
            if self._last_accept is None or now >= self._last_accept[1]:
                self._last_accept = (key, now)
        if route is not None and value not in route:
            return self._count(ScanResult("wrong_route", text, value, kind, "not_on_route",
                                          f"{value} is not on this list", source))
        return self._count(ScanResult("good", text, value, kind, source=source))

    def _count(self, r: ScanResult) -> ScanResult:
        self.counts[r.verdict] += 1
        return r

    def forget(self, text: str) -> None:
        """Allow an immediate rescan of ``text`` (after the courier corrected something)."""
        with self._lock:
            self._seen.pop(text.strip(), None)

    @contextmanager
    def confirming(self, text: str) -> Iterator[None]:
        """Judge a confirmation of ``text`` (a form the courier submits, not a trigger
        pull): no same-symbol window for it, and the different-symbol window, which
        catches a second label read by one trigger pull, neither stops it nor is
        restarted by it."""
        with self._lock:
            self._seen.pop(text.strip(), None)
            before = self._last_accept
            self._last_accept = None
        try:
            yield
        finally:
            with self._lock:
                self._last_accept = before
