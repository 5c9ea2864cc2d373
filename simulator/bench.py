"""``postedge sim serve-board``: the simulated hardware the tests use, for a
tester without Python: lock board(s) on a TCP port (``socket://``) or a pty,
and a front panel on a TCP port, driven by typed lines.

A locker run from its generated config (``outlet init``: put the printed
URLs in the description's ``board`` and ``panel``) talks to these as it
would to the real board and panel. The tester types ``keys 1234``, ``scan
TEXT``, ``close B L`` (shut a door), ``doors`` (which are open) or
``quit``; every line the locker puts on the display is printed as it
arrives."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from simulator.lockboard_sim import Sim8ABus, SimKerong
from simulator.outlet import DoorCloser
from simulator.panel_sim import SimPanel


class Bench:
    def __init__(self, driver: str = "8a", boards: int = 1, locks: int = 24, pty: bool = False,
                 auto_close_s: float | None = None) -> None:
        cls = Sim8ABus if driver == "8a" else SimKerong
        first = cls.FIRST_BOARD
        self.boards = list(range(first, first + boards))
        self.bus = cls(boards=self.boards, locks=locks)
        self.locks = locks
        self.board_url = self.bus.serve_pty() if pty else f"socket://127.0.0.1:{self.bus.serve_tcp()}"
        self.panel = SimPanel()
        self.closers = [] if auto_close_s is None else [
            DoorCloser(self.bus, board=b, locks=locks, after_s=auto_close_s) for b in self.boards]
        self._stop = threading.Event()

    def watch(self, say: Callable[[dict[str, str]], None]) -> None:
        """Call ``say`` with each display line, in a thread, until close."""
        def run() -> None:
            seen = 0
            while not self._stop.is_set():
                shown = self.panel.shown
                while seen < len(shown):
                    say(shown[seen])
                    seen += 1
                time.sleep(0.05)
        threading.Thread(target=run, daemon=True).start()

    def open_doors(self) -> list[tuple[int, int]]:
        return [(b, ch) for b in self.boards for ch in range(1, self.locks + 1) if self.bus.is_open(b, ch)]

    def command(self, line: str) -> tuple[str, Any]:
        """One typed line -> (what, value): ("sent", None), ("no_locker", None),
        ("closed", (b, l)), ("doors", [...]), ("quit", None) or ("unknown", line)."""
        word, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if word in ("keys", "scan") and rest:
            if not self.panel.connected:
                return "no_locker", None
            (self.panel.keys if word == "keys" else self.panel.scan)(rest)
            return "sent", None
        if word == "close":
            nums = [int(x) for x in rest.split() if x.isdigit()]
            if len(nums) == 1:
                nums = [self.boards[0], nums[0]]
            if len(nums) == 2 and nums[0] in self.boards and 1 <= nums[1] <= self.locks:
                self.bus.close_door(nums[0], nums[1])
                return "closed", (nums[0], nums[1])
        if word == "doors":
            return "doors", self.open_doors()
        if word in ("quit", "exit"):
            return "quit", None
        return "unknown", line.strip()

    def close(self) -> None:
        self._stop.set()
        for c in self.closers:
            c.stop()
        self.panel.close()
        self.bus.close()

