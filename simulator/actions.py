"""The workload carried out: each action of ``simulator/workload.py`` done on a device.

``workload.generate`` says who does what at which virtual second; this
module makes it happen on the running outlet: a counter scanner sees a
parcel, a courier badges in and deposits, a recipient types the pickup code,
a handheld photographs a bulletin board and uploads the photo; the outlet's
own flows (the outbound day, returns, a code guesser, the clerk at the
console, the handheld's hand deliveries) are in ``simulator/outlet_flows.py``
and dispatched from here. Actions of
one window run concurrently across devices and in order on each device.
What happened (and what was refused or timed out) is counted in the
outlet's ``stats``.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from firmware.device import FlowError
from simulator.assembly import BADGE_SECRET, Outlet
from simulator.inproc import SimCounter
from simulator.outlet_flows import OUTLET_FLOWS, Refused
from simulator.unix_locker import FlowRefused, UnixLocker
from simulator.workload import Action


async def perform(outlet: Outlet, a: Action) -> None:
    """One action on its device; a device that is down counts as ``<kind>_device_down``."""
    if a.kind == "photo":
        await photo(outlet, a)
        return
    if a.kind in OUTLET_FLOWS:
        try:
            await OUTLET_FLOWS[a.kind](outlet, a)
        except Refused as e:
            outlet.stats[f"{a.kind}_refused_{e.reason}"] += 1
        except TimeoutError:
            outlet.stats[f"{a.kind}_timeout"] += 1
        return
    dev = outlet.devices.get(a.device)
    if dev is None or dev.app is None or dev.task is None:
        outlet.stats[f"{a.kind}_device_down"] += 1
        return
    if dev.hal is not None:  # an in-process device reads the scenario's clock
        dev.hal.clock.pin = outlet.sc.start + int(a.t) if outlet.sc.mode == "virtual" else None
    try:
        if a.kind == "intake":
            assert isinstance(dev, SimCounter)
            before = sum(dev.app.counts.values())
            dev.engine.present(a.args["parcel"], "code128")
            deadline = time.monotonic() + 5
            while sum(dev.app.counts.values()) == before and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if sum(dev.app.counts.values()) == before:
                outlet.stats["intake_unanswered"] += 1
            else:  # what the clerk heard: good, duplicate, invalid, wrong_outlet or suppressed
                outlet.stats["intake_" + (dev.app.last or {}).get("verdict", "suppressed")] += 1
            outlet.stats["intake"] += 1
        elif a.kind == "deposit" and isinstance(dev, UnixLocker):
            await dev.deposit(
                f"PE-C:{a.args['courier']}:{BADGE_SECRET}", a.args["parcel"], a.args["size"]
            )
            outlet.stats["deposit"] += 1
        elif a.kind == "pickup" and isinstance(dev, UnixLocker):
            code = outlet.obs.codes.get(a.args["parcel"])
            if code is None:
                outlet.stats["pickup_no_code"] += 1
                return
            await dev.pickup(code)
            outlet.stats["pickup"] += 1
        elif a.kind == "deposit":
            lk = dev.app
            lk.courier_login(f"PE-C:{a.args['courier']}:{BADGE_SECRET}")
            try:
                await asyncio.wait_for(lk.deposit(a.args["parcel"], a.args["size"]), 20)
                outlet.stats["deposit"] += 1
            finally:
                lk.courier_logout()
        elif a.kind == "pickup":
            code = outlet.obs.codes.get(a.args["parcel"])
            if code is None:
                outlet.stats["pickup_no_code"] += 1
                return
            await asyncio.wait_for(dev.app.pickup(code), 20)
            outlet.stats["pickup"] += 1
    except (FlowError, FlowRefused) as e:
        outlet.stats[f"{a.kind}_refused_{e.code}"] += 1
    except TimeoutError:
        outlet.stats[f"{a.kind}_timeout"] += 1
    finally:
        if dev.hal is not None:
            dev.hal.clock.pin = None


async def photo(outlet: Outlet, a: Action) -> None:
    """A bulletin-board evidence photo: rendered, QR checked, event queued, uploaded."""
    h = outlet.hh.get(a.device)
    if h is None:
        outlet.stats["photo_device_down"] += 1
        return
    job = a.args["job"]
    await asyncio.to_thread(h.photo, job, a.args["site"], f"PE-CAMP:{job}", a.args["seed"])
    outlet.stats["photo"] += 1
    await asyncio.to_thread(h.upload)


async def run_window(outlet: Outlet, actions: list[Action]) -> None:
    """A window's actions: concurrent across devices, in order on each."""
    per: dict[str, list[Action]] = defaultdict(list)
    for a in actions:
        per[a.device].append(a)

    async def chain(items: list[Action]) -> None:
        for a in items:
            await perform(outlet, a)

    await asyncio.gather(*(chain(v) for v in per.values()))
