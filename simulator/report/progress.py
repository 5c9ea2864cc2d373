"""The one line a run shows on stderr while it goes.

A day of simulated time can take minutes of wall time; a tester at a
terminal wants to see it move, and a CI log wants a few plain lines it can
keep, not a redraw per window. The line is redrawn in place on a terminal
and printed every few seconds elsewhere (see :class:`ProgressBar`). On a
terminal it is fitted to the width at every redraw: a line wider than the
terminal wraps, and each ``\\r`` then redraws only its last row, leaving
copies behind.

Written by hand, not with rich's ``Progress`` (rich lays out the summary's
tables, see ``summary.py``): rich draws a live display from its own refresh
thread on its own clock, with cursor-control sequences, and in a log it
prints nothing until the end. A run needs the opposite on both counts: a
``\\r`` redraw no more often than ``redraw_s`` of the caller's clock on a
terminal, and a plain line every ``every_s`` in a CI log, which the tests
check line by line. A bar of ``#`` and ``.`` in one formatted string is
shorter than bending rich to that.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

from simulator.report.formatting import cells, fmt_dur
from simulator.report.text import check_lang, t


class ProgressBar:
    """One line on stderr while a run goes: simulated time, % done, events,
    faults active.

    On a terminal the line is redrawn in place with ``\\r`` (at most every
    ``redraw_s``); in a CI log, where ``\\r`` turns into one enormous line, a
    plain line is printed every ``every_s`` of wall time instead, plus one at
    the end. The runner calls ``update`` as often as it likes: it is cheap
    when nothing is drawn.
    """

    def __init__(self, total_s: float, *, stream: TextIO | None = None, lang: str = "zh",
                 tty: bool | None = None, every_s: float = 10.0, redraw_s: float = 0.1,
                 width: int = 24, clock: Callable[[], float] = time.monotonic,
                 columns: Callable[[], int] | None = None) -> None:
        self.total_s = max(float(total_s), 1e-9)
        self.stream = stream if stream is not None else sys.stderr
        self.lang = check_lang(lang)
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.every_s = every_s
        self.redraw_s = redraw_s
        self.width = width
        self.clock = clock
        # The terminal's width, asked at every redraw (a window can be
        # resized mid-run); a log line has no width to fit.
        self.columns = columns if columns is not None else (self._terminal_columns if tty else None)
        self.started = clock()
        self._last_draw = -math.inf
        self._last_len = 0
        self._state = (0.0, 0, 0)
        self.closed = False

    def line(self, t_virtual: float, events: int, faults_active: int, tail: str = "") -> str:
        """The line, fitted to the terminal: a redrawn line longer than the
        terminal wraps, and every ``\\r`` then leaves a copy behind. The bar
        gives way first, then the line is cut with "…"."""
        room = self.columns() - 1 if self.columns is not None else None
        width = self.width
        while True:
            text = self._text(t_virtual, events, faults_active, width) + tail
            over = cells(text) - room if room is not None else 0
            if over <= 0:
                return text
            if width > 8:
                width = max(8, width - over)
                continue
            if width > 0:
                width = 0
                continue
            if room - cells(tail) >= 10:  # the end of a run ("done in 3m") is worth keeping whole
                return _cut(text[:len(text) - len(tail)], room - cells(tail)) + tail
            return _cut(text, room)

    def _terminal_columns(self) -> int:
        """The width of the terminal this line goes to (stderr, while
        stdout may be a file): COLUMNS if set, else the stream's own."""
        if os.environ.get("COLUMNS", "").isdigit():
            return int(os.environ["COLUMNS"])
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return shutil.get_terminal_size().columns

    def _text(self, t_virtual: float, events: int, faults_active: int, width: int) -> str:
        frac = min(1.0, max(0.0, t_virtual / self.total_s))
        filled = int(frac * width)
        bar = "[" + "#" * filled + "." * (width - filled) + "]" if width else ""
        return t("progress", self.lang, bar=bar, pct=int(frac * 100), t=fmt_dur(t_virtual),
                 total=fmt_dur(self.total_s), events=events, faults=faults_active).lstrip()

    def update(self, t_virtual: float, events: int = 0, faults_active: int = 0, force: bool = False) -> None:
        self._state = (t_virtual, events, faults_active)
        now = self.clock()
        gap = self.redraw_s if self.tty else self.every_s
        if self.closed or (not force and now - self._last_draw < gap):
            return
        self._last_draw = now
        self._draw(self.line(t_virtual, events, faults_active))

    def _draw(self, text: str) -> None:
        if self.tty:
            w = cells(text)
            self.stream.write("\r" + text + " " * max(0, self._last_len - w))
            self._last_len = w
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self, complete: bool = False) -> None:
        """The last state once more, then the wall time; ends the line.
        ``complete``: the run reached its end, so the line says 100 % even
        when the last update came a little before it."""
        if self.closed:
            return
        tv, ev, fa = self._state
        if complete:
            tv = max(tv, self.total_s)
        wall = t("progress.done", self.lang, wall=fmt_dur(self.clock() - self.started))
        self._draw(self.line(tv, ev, fa, "  " + wall))
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self.closed = True

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def _cut(text: str, room: int) -> str:
    """``text`` in at most ``room`` terminal columns, "…" where it was cut."""
    if cells(text) <= room:
        return text
    out = ""
    for c in text:
        if cells(out + c) > room - 1:
            break
        out += c
    return out + "…"
