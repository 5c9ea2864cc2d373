"""The platform's signed commands to a simulated handheld, taken as the app takes them.

The handheld's MQTT client collects raw commands (``SimHandheld.commands``);
a flow that waits for one kind (the round's ``manifest``, the board
``jobs`` list) verifies each with the handheld's own key, applies it and
acknowledges it with the number of items, and polls until what it needs
has arrived. One loop for every such flow, so they all verify, remember
and acknowledge the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from protocol import signing
from protocol.errors import ProtocolError
from simulator.assembly import Outlet
from simulator.handheld_sim import SimHandheld
from simulator.refusal import Refused

#: Applies one command's args to the app's state; the number of items (the acknowledgement's).
Apply = Callable[[dict[str, Any]], int]


def take(outlet: Outlet, h: SimHandheld, op: str, seen: set[bytes], apply: Apply,
         refused_stat: str) -> int:
    """Apply and acknowledge every new ``op`` command ``h`` received (blocking:
    ``apply`` may write the app's state); how many. A command that does not
    verify is counted in ``refused_stat`` once and never applied. ``seen``
    remembers what this flow took; commands of other ops stay for theirs."""
    key = {outlet.keys.kv: outlet.keys.key(h.name)}
    n = 0
    for raw in list(h.commands):
        if raw in seen:
            continue
        try:
            cmd = signing.verify(json.loads(raw), key, h.name, int(outlet.clock.time()))  # the outlet's time
        except (ProtocolError, ValueError):
            seen.add(raw)
            outlet.stats[refused_stat] += 1
            continue
        if cmd.get("op") != op:
            continue
        seen.add(raw)
        h.ack(cmd["id"], {"items": apply(cmd["args"])})
        n += 1
    return n


async def until(outlet: Outlet, h: SimHandheld, op: str, seen: set[bytes], apply: Apply,
                done: Callable[[], bool], reason: str, refused_stat: str, timeout: float = 20.0) -> None:
    """Take ``op`` commands (:func:`take`, off the event loop) until ``done()``;
    Refused(``reason``) after ``timeout`` wall seconds (the link was down)."""
    deadline = time.monotonic() + timeout
    while True:
        await asyncio.to_thread(take, outlet, h, op, seen, apply, refused_stat)
        if done():
            return
        if time.monotonic() > deadline:
            raise Refused(reason)
        await asyncio.sleep(0.1)
