"""Keyboard-emulation ("wedge") scans: what the page sends, made into a scan the app judges.

Most courier terminals' scan engines type each code into whatever field has focus, as
if it were a keyboard, and end it with Enter or Tab (the vendors' "keyboard wedge" or
"keystroke output" mode). The page (``templates/page.js``) tells a scan from a person
typing by timing and posts the burst to ``POST /api/wedge``; this module strips the
configured prefix/suffix and hands the code to ``HandheldApp.scan(..., source="wedge")``,
the same call the serial engine's loop makes, so the verdicts, the barcode rules and
both duplicate windows are the serial engine's, not a second validator.

Why these thresholds (``[wedge]`` in the config):

- ``max_key_gap_ms`` = 50, the *mean* time between the burst's keys (the Enter/Tab
  after the last one included). A wedge engine types a code at 1-10 ms a key (USB
  HID polls every 1-8 ms; Android terminals' scan-to-keyboard services inject the
  key events back to back; vendors' "inter-character delay" settings default to 0
  and go up to ~20-50 ms for slow hosts). People type at 100-300 ms a key; even a
  fast typist's rolled pair rarely comes under 50 ms, and a *run* of ``min_length``
  keys averaging under 50 ms does not happen by hand. A terminal set to a slow
  inter-character delay needs this raised (to 200 at most: above that a fast
  typist passes as a scanner).
- ``burst_break_ms`` = 200: a pause longer than this starts a new burst. The mean,
  not every gap, decides, because one late key must not split a scan in two: a busy
  page or a loaded terminal delivers the odd key late. Measured with Playwright's
  injected keys (2 ms apart) in headless Chromium on the loaded 2-core test machine:
  means 5-30 ms, single gaps of 50-130 ms now and then, once 235 ms; a person typing
  at 150 ms a key: every gap 150-200 ms. (The events' own ``timeStamp`` is used: a
  real engine's keys carry the OS input time, so a busy page does not delay them;
  the browser tests widen the break to 1 s for the harness's stalls.) The price: a
  key a person typed less than 200 ms before pulling the trigger joins the scan
  (the code is then invalid and the courier scans again).
- ``min_length`` = 4: the shortest code the app accepts is longer (an EAN-8 is 8), and
  two or three fast keys happen by hand (a double-tapped key, a chord).
- ``prefix``/``suffix``: what the engine is set to send around each code. When set,
  the page treats a fast burst without them as typing, and the server refuses a burst
  without them (``wedge_affix``, counted): the vendors' way to make wedge scans
  unmistakable.

Timing belongs to the page (only it sees the keystrokes); the server checks what it
can: the affixes, the code's length, and ``age_ms``: a scan queued in the page while a
dialog was open is judged at the time it was read, so two labels scanned a second
apart are not called "too soon" because they reached the server together.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

from handheld.config import WedgeSection
from handheld.text import Refused

#: A queued scan older than this is judged as this old (the windows are seconds).
MAX_AGE_MS = 3_600_000
MAX_RAW = 256


class Wedge:
    """Turns a posted burst into the code to judge and the monotonic time it was read."""

    def __init__(self, cfg: WedgeSection) -> None:
        self.cfg = cfg
        self.counts: Counter[str] = Counter()

    def page_settings(self) -> dict[str, Any]:
        """What the page's script needs to tell scans from typing."""
        c = self.cfg
        return {"prefix": c.prefix, "suffix": c.suffix, "gap": c.max_key_gap_ms, "brk": c.burst_break_ms,
                "min": c.min_length}

    def unwrap(self, doc: dict[str, Any]) -> tuple[str, float]:
        """``(code, read_at)`` from ``{"raw", "age_ms"}``; Refused when it is not a scan."""
        raw = doc.get("raw")
        age = doc.get("age_ms", 0)
        if not isinstance(raw, str) or not raw or len(raw) > MAX_RAW:
            self.counts["bad_request"] += 1
            raise Refused("bad_request", detail=f"raw must be 1-{MAX_RAW} characters")
        if isinstance(age, bool) or not isinstance(age, int | float) or not math.isfinite(age) or age < 0:
            self.counts["bad_request"] += 1
            raise Refused("bad_request", detail="age_ms must be a number >= 0")
        c = self.cfg
        missing = [w for w, a, ok in (("prefix", c.prefix, raw.startswith(c.prefix)),
                                      ("suffix", c.suffix, raw.endswith(c.suffix))) if a and not ok]
        if missing or len(raw) < len(c.prefix) + len(c.suffix) + 1:
            self.counts["wedge_affix"] += 1
            raise Refused("wedge_affix", detail=", ".join(missing) or "empty")
        code = raw[len(c.prefix):len(raw) - len(c.suffix)]
        self.counts["scans"] += 1
        return code, time.monotonic() - min(float(age), MAX_AGE_MS) / 1000.0
