"""Numbers as the reports print them: durations, clock times, latencies, sizes.

Shared by the summary, the progress bar, the SVG charts, the HTML report and
the live dashboard, so a duration reads the same everywhere a tester looks.
Also the two small readers every part needs: terminal width of a string
(CJK characters take two columns) and a number read defensively from a run
result that may have been saved by another version of the runner.
"""

from __future__ import annotations

import math
from typing import Any

from common.text import cells

__all__ = ["cells", "fmt_clock", "fmt_dur", "fmt_ms", "num", "size_text"]


def fmt_dur(s: float | None) -> str:
    """A compact duration for axes and tables: 45s, 12m30s, 3h05m, 2d04h.
    Short enough for a tick label, unambiguous in both languages."""
    if s is None or not math.isfinite(s):
        return "?"
    neg = "-" if s < 0 else ""
    s = abs(s)
    if s < 10 and s != int(s):
        return f"{neg}{s:.1f}s"
    n = int(round(s))
    if n < 60:
        return f"{neg}{n}s"
    if n < 3600:
        return f"{neg}{n // 60}m" + (f"{n % 60:02d}s" if n % 60 else "")
    if n < 86400:
        return f"{neg}{n // 3600}h" + (f"{n % 3600 // 60:02d}m" if n % 3600 // 60 else "")
    return f"{neg}{n // 86400}d" + (f"{n % 86400 // 3600:02d}h" if n % 86400 // 3600 else "")


def fmt_clock(s: float) -> str:
    """Simulated time of day as H:MM:SS (hours run past 24 on long runs)."""
    n = max(0, int(s))
    return f"{n // 3600}:{n % 3600 // 60:02d}:{n % 60:02d}"


def fmt_ms(ms: float | None) -> str:
    """Latencies span milliseconds (LAN) to hours (a WAN outage)."""
    if ms is None or not isinstance(ms, (int, float)) or not math.isfinite(ms):
        return "-"
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 100:
        return f"{ms:.1f} ms"
    if ms < 10_000:
        return f"{ms:.0f} ms"
    return fmt_dur(ms / 1000)


def size_text(n: float) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"




def num(v: Any, default: float = 0.0) -> float:
    """A finite number from the result, or ``default`` for anything else (None, NaN, text)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
        else default

