"""A virtual run's clock moved at the gateway's pace.

The gateway's policy timers (retries, probes, a bandwidth cap's pauses, the
notifier's tick) wait on the simulation's clock (``common/timers.py``), and
its paced threads say on a board whether they are busy or waiting, until
when, and for what. ``advance`` is how the runner moves the clock: first it
waits until the gateway has done what was due up to the clock's time (every
paced thread waits for a later time); then it steps the clock to each time
something is due before the target (a retry after a backoff, a batch whose
age is up), each step waited out the same way; then to the target. So a
backlog drains, and a refused upload is retried, when the outlet's time
says, not whenever real seconds let a thread run between two windows.

Bounds, so a run always ends: a gateway busy longer than ``PACE_CAP_S`` of
real time at one step (an upload hanging on a peer until its timeout) is
counted (``pace_cut``) and the clock moves on; at most ``MAX_STEPS``
intermediate steps per advance (``pace_steps_cut`` beyond), the rest of the
way in one jump. Polls (looking again for new events, probing a dead link)
are not stepped to one by one: the next window, or the fault's end, brings
what they look for; but when devices emitted events since the last advance,
the clock first steps just past the end of every short wait (``NUDGE_S``),
so each paced thread looks once at what the window brought (a deposit's
text to hold) and publishes what that makes due. Devices
read the clock in whole seconds; the gateway reads the step as it is
(``SimClock.set``).
"""

from __future__ import annotations

import asyncio
import time

from common.timers import WAITING, Waiter, next_due, read_board, settled
from simulator.assembly import Outlet
from simulator.gateway_process import pace_file

#: Real seconds one step waits at most for the gateway to do what was due.
PACE_CAP_S = 10.0
#: Intermediate steps at most per advance.
MAX_STEPS = 400
#: How far ahead the once-per-advance step reaches to end short waits (polls,
#: a notifier's tick) so every paced thread looks at what the window brought.
NUDGE_S = 5.0


async def pace(outlet: Outlet) -> list[Waiter]:
    """Wait (real time, at most ``PACE_CAP_S``) until every paced thread of
    the gateway waits for a time after the clock's now; the board as last
    read (empty: no board, or no gateway alive to keep one)."""
    writer = outlet.clock.writer
    if writer is None:
        return []
    board = pace_file(outlet.gw_cfg)
    start = time.monotonic()
    nap = 0.0005
    while True:
        waiters = read_board(board)
        if waiters is None or settled(waiters, writer.now()):
            return waiters or []
        if time.monotonic() - start > PACE_CAP_S:
            outlet.stats["pace_cut"] += 1
            outlet.log("pace_cut", busy=[w.name for w in waiters if w.state != WAITING], t=writer.now())
            return waiters
        await asyncio.sleep(nap)
        nap = min(outlet.pace_nap_s, nap * 2)


async def advance(outlet: Outlet, to: float) -> None:
    """Move the clock to ``to`` (virtual Unix seconds), through what the
    gateway has due on the way; in real mode simply set it."""
    writer = outlet.clock.writer
    if writer is None:
        outlet.clock.set(to)
        return
    emitted = len(outlet.obs.emitted)
    if emitted != outlet.paced_emitted:
        # New work (events since the last advance) does not wake a thread that
        # polls for it: step just past every short wait's end so each looks once
        # and says what it has due.
        outlet.paced_emitted = emitted
        waiters = await pace(outlet)
        now = writer.now()
        looks = [w.deadline for w in waiters if w.state == WAITING and w.deadline <= now + NUDGE_S]
        if looks and outlet.clock.filed < max(looks) < to:
            outlet.clock.set(max(looks) + 0.001)
    for _ in range(MAX_STEPS):
        due = next_due(await pace(outlet))
        if due >= to or due <= outlet.clock.filed:
            break
        outlet.clock.set(due)
        outlet.stats["pace_steps"] += 1
    else:
        outlet.stats["pace_steps_cut"] += 1
    outlet.clock.set(to)
