"""The browser's location as a position source beside the NMEA receiver.

A courier's terminal has its GNSS chip behind Android's location service, reachable
from the page as ``navigator.geolocation`` and nowhere else. The page (``page.js``, when
``geolocation = true`` in the config) asks for a fresh fix every second and posts it to
``POST /api/position``; this module checks it and feeds it into a
:class:`handheld.position.FixGate` with the same thresholds as the NMEA reader's
(``[gnss_gate]``), so accuracy, the hold time, jumps and stale fixes are judged by the
same code. It keeps its own gate rather than sharing the receiver's: two sources a few
metres apart fed into one gate would look like movement, and one source's accuracy
must not vouch for the other's position. ``HandheldApp.gnss_fix`` takes whichever
source's fix passes its gate (the more accurate if both do); evidence records say
which (``accuracy_source`` / ``pos_src`` ``browser``).

Why ``getCurrentPosition`` (``maximumAge: 0``) every second and not ``watchPosition``: a
watch fires only when the position changes, so a courier standing at the board would
look stale to the gate, which calls a fix stale when the provider's own timestamp has
not moved for ``frozen_after_s`` (3 s) or the fix is older than ``max_fix_age_s`` (5 s):
a browser handing back a cached position is a receiver repeating itself. (The cost is
the location service kept busy while the page is open; the page is closed between jobs.)

A browser that refuses (permission denied, no position, timeout) posts the error's
code; the sync screen says it in the courier's words (``geo.*``).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Any

from handheld.position import FixGate, GnssConfig
from handheld.text import TEXT, Refused

#: The Geolocation API's PositionError codes.
ERRORS = {1: "denied", 2: "unavailable", 3: "timeout"}
MAX_AGE_MS = 86_400_000


def _num(doc: dict[str, Any], key: str, lo: float, hi: float, required: bool = True) -> float | None:
    v = doc.get(key)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{key} must be a number from {lo:g} to {hi:g}, got {v!r}"[:120])
    return float(v)


class BrowserPosition:
    """Fixes the page posts, through their own :class:`FixGate`; thread-safe."""

    def __init__(self, config: GnssConfig) -> None:
        self.gate = FixGate(config)
        self._lock = threading.Lock()
        self.fixes = 0
        self.error: str | None = None
        self.refused: Counter[str] = Counter()

    def post(self, doc: dict[str, Any]) -> dict[str, Any]:
        """One posted fix ``{"lat", "lon", "accuracy_m", "age_ms"[, "alt_m", "stamp"]}`` or
        ``{"error": 1|2|3}``; answers the gate's verdict. Bad input: Refused, counted."""
        try:
            if "error" in doc:
                code = doc["error"]
                if isinstance(code, bool) or code not in ERRORS:
                    raise ValueError(f"error must be 1, 2 or 3, got {code!r}"[:80])
                with self._lock:
                    self.error = ERRORS[code]
                    self.gate.receiver_lost()
                return {"ok": False, "error": self.error, **TEXT.both("geo." + self.error)}
            lat = _num(doc, "lat", -90, 90)
            lon = _num(doc, "lon", -180, 180)
            acc = _num(doc, "accuracy_m", 0.01, 100_000)
            age = _num(doc, "age_ms", 0, MAX_AGE_MS)
            alt = _num(doc, "alt_m", -1000, 20_000, required=False)
            stamp = _num(doc, "stamp", 0, 1e14, required=False)
        except ValueError as e:
            self.refused["bad_position"] += 1
            raise Refused("bad_position", detail=str(e)) from None
        assert lat is not None and lon is not None and acc is not None and age is not None
        with self._lock:
            self.gate.apply_position(lat, lon, acc, age_s=age / 1000.0, alt_m=alt, stamp=stamp)
            self.error = None
            self.fixes += 1
            fix = self.gate.fix()
        return {"ok": True, "gate": fix["ok"], "flags": fix["flags"]}

    def fix(self) -> dict[str, Any] | None:
        """The gate's current fix, or None before the page has posted anything."""
        with self._lock:
            if not self.fixes and self.error is None:
                return None
            return {**self.gate.fix(), "source": "browser"}
