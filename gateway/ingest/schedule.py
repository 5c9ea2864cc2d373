"""Periodic steps of the gateway (the command relay's tick, the disk budget)
and when each is due.

They run on the ingest thread, between two groups, because that thread owns
the store's one writing SQLite connection and the broker client: a second
writer would only add lock waits to the hot path. A step that raises is
counted and logged by the ``guard`` it is given and simply runs again on its
next turn, so a full disk or a bad row never stops the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import timers


@dataclass
class Step:
    name: str
    every_s: float
    run: Callable[[], Any]
    # Skipped (and not counted as run) while this says no: e.g. the relay
    # waits until the broker subscription exists.
    ready: Callable[[], bool]
    # Called with the step's result when it ran without raising.
    then: Callable[[Any], None] | None
    last: float = 0.0


class Schedule:
    def __init__(self, guard: Callable[[str, Callable[[], Any]], Any],
                 clock: Callable[[], float] = timers.monotonic) -> None:
        """``clock``: the process's timer axis (``common/timers.py``), so in a
        simulation the budget pass, the relay's tick and the time beacon come
        every so many seconds of the scenario, not of the host."""
        self.guard = guard
        self.clock = clock
        self.steps: list[Step] = []

    def every(self, name: str, every_s: float, run: Callable[[], Any],
              ready: Callable[[], bool] = lambda: True, then: Callable[[Any], None] | None = None) -> None:
        """Run ``run`` every ``every_s`` seconds (first at the first due check)."""
        self.steps.append(Step(name, every_s, run, ready, then))

    def due_now(self, name: str) -> None:
        """Make ``name`` run at the next check (a device just came online)."""
        for step in self.steps:
            if step.name == name:
                step.last = float("-inf")

    def run_due(self) -> None:
        """Run every step whose time has come; returns quickly when none is due."""
        for step in self.steps:
            now = self.clock()
            if now - step.last < step.every_s or not step.ready():
                continue
            step.last = now
            result = self.guard(step.name, step.run)
            if step.then is not None and result is not None:
                step.then(result)
