"""The one loop the simulator's handheld flows take the platform's signed
commands with (the round's manifest, the board job lists): each command of
the flow's op verified with the handheld's key, applied and acknowledged
once; another op's left for its own flow; a forged one counted and never
applied."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from simulator import handheld_commands
from simulator.platform_keys import PlatformKeys
from simulator.refusal import Refused


class Received:
    """What the handheld's MQTT client keeps: raw commands, and the acknowledgements sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.commands: list[bytes] = []
        self.acks: list[tuple[str, dict[str, Any] | None]] = []

    def ack(self, cmd_id: str, result: dict[str, Any] | None = None, error: Any = None) -> None:
        self.acks.append((cmd_id, result))


def _raw(keys: PlatformKeys, device: str, op: str, cid: str, args: dict[str, Any],
         now: float | None = None) -> bytes:
    t = int(time.time() if now is None else now)
    return json.dumps(keys.command(device, op, args, cid, now=t)).encode()


def test_each_command_of_the_op_is_applied_once_others_left_forged_counted() -> None:
    keys = PlatformKeys("o1")
    outlet = SimpleNamespace(keys=keys, stats=Counter(), clock=SimpleNamespace(time=time.time))
    h = Received("hh01")
    forged = json.loads(_raw(PlatformKeys("o1", master=b"\x01" * 32), "hh01", "jobs", "bad", {"jobs": []}))
    h.commands += [_raw(keys, "hh01", "manifest", "m1", {"parcels": [1, 2]}),
                   _raw(keys, "hh01", "jobs", "j1", {"jobs": [{"id": "a"}]}),
                   json.dumps(forged).encode()]
    applied: list[dict[str, Any]] = []

    def apply(args: dict[str, Any]) -> int:
        applied.append(args)
        return len(args.get("jobs", args.get("parcels", [])))

    seen: set[bytes] = set()
    assert handheld_commands.take(outlet, h, "jobs", seen, apply, "x_refused") == 1  # type: ignore[arg-type]
    assert handheld_commands.take(outlet, h, "jobs", seen, apply, "x_refused") == 0  # type: ignore[arg-type]
    assert applied == [{"jobs": [{"id": "a"}]}] and h.acks == [("j1", {"items": 1})]
    assert outlet.stats["x_refused"] == 1  # counted once, though taken twice
    # the manifest was left for the round's flow, with its own memory
    assert handheld_commands.take(outlet, h, "manifest", set(), apply, "y_refused") == 1  # type: ignore[arg-type]
    assert h.acks[-1] == ("m1", {"items": 2})


def test_until_waits_for_what_the_flow_needs_and_refuses_after_the_timeout() -> None:
    keys = PlatformKeys("o1")
    outlet = SimpleNamespace(keys=keys, stats=Counter(), clock=SimpleNamespace(time=time.time))
    h = Received("hh01")
    got: list[int] = []

    async def later() -> None:
        await asyncio.sleep(0.2)
        h.commands.append(_raw(keys, "hh01", "manifest", "m1", {"parcels": [1]}))

    async def run() -> None:
        arrive = asyncio.ensure_future(later())
        await handheld_commands.until(outlet, h, "manifest", set(), lambda a: got.append(1) or 1,  # type: ignore[arg-type]
                                      lambda: bool(got), "no_manifest", "r", timeout=5)
        await arrive

    asyncio.run(run())
    assert got == [1]
    with pytest.raises(Refused) as e:
        asyncio.run(handheld_commands.until(outlet, h, "jobs", set(), lambda a: 0,  # type: ignore[arg-type]
                                            lambda: False, "no_job_list", "r", timeout=0.3))
    assert e.value.reason == "no_job_list"


def test_commands_are_checked_on_the_outlets_clock_not_the_wall() -> None:
    """A virtual outlet a day ahead of the wall: a list signed on its clock is
    taken; one signed on the wall's (ten minutes' life) has expired there."""
    keys = PlatformKeys("o1")
    ahead = time.time() + 86400
    outlet = SimpleNamespace(keys=keys, stats=Counter(), clock=SimpleNamespace(time=lambda: ahead))
    h = Received("hh01")
    h.commands += [_raw(keys, "hh01", "jobs", "on-outlet", {"jobs": []}, now=ahead),
                   _raw(keys, "hh01", "jobs", "on-wall", {"jobs": []})]
    assert handheld_commands.take(outlet, h, "jobs", set(), lambda a: 0, "refused") == 1  # type: ignore[arg-type]
    assert [cid for cid, _ in h.acks] == ["on-outlet"] and outlet.stats["refused"] == 1
