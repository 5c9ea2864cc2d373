"""Faults, injected into the running outlet and taken back.

A scenario's faults (``simulator/scenario.py``) and a test's (the pytest
plugin's ``faults`` fixture) both come here: the WAN link goes down, the
broker restarts, the gateway is killed with SIGKILL, a device loses power or
its clock, the gateway's disk fills, the platform forgets events, a device
sends twice, the MQTT fault proxy drops or delays packets. Each edge (start
or end) is logged in the outlet's ``faults_log`` and its log.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterable

from protocol import topics
from simulator.assembly import Outlet
from simulator.faultproxy import Rule
from simulator.gateway_process import GatewayProcess
from simulator.hostile import Flood, Takeover, forged_commands, junk_pool, poison, publish_commands
from simulator.scenario import HOSTILE_KINDS, Fault
from simulator.unix_locker import UnixLocker

#: Faults that end on their own clock even when given no duration.
LASTING = ("wan_down", "mqtt", "clock_skew", "disk_full", "flood", "takeover")


def fault_edges(faults: Iterable[Fault]) -> list[tuple[float, Fault, bool]]:
    """``(virtual second, fault, starting)`` for every start and end, in time order."""
    edges: list[tuple[float, Fault, bool]] = []
    for f in faults:
        edges.append((f.at_s, f, True))
        if f.for_h > 0 or f.kind in LASTING:
            edges.append((f.until_s, f, False))
    edges.sort(key=lambda e: e[0])
    return edges


async def inject(outlet: Outlet, f: Fault, starting: bool) -> None:
    """Start (``starting``) or end one fault, now."""
    rec = {
        "t": f.at_s if starting else f.until_s,
        "kind": f.kind,
        "start": starting,
        "detail": f.device or f.action or "",
    }
    target = f.device or next((n for n in outlet.devices if n.startswith("lk")), "")
    if f.kind == "wan_down":
        (outlet.link.down if starting else outlet.link.up)()
    elif f.kind == "broker_restart" and starting:
        await asyncio.to_thread(outlet.broker.stop)
        await asyncio.to_thread(outlet.broker.start)
    elif f.kind == "gateway_kill" and starting:
        outlet.gw.proc.kill()
        outlet.gw.proc.wait()
        outlet.gw = GatewayProcess(outlet.gw_cfg, extra_env=outlet.gw_env)
        await asyncio.to_thread(outlet.gw.wait_for, "gateway_started", 60)
    elif f.kind == "power_cut":
        dev = outlet.devices[target]
        if starting:
            await dev.power_cut()
            if f.for_h <= 0:
                dev.boot()
        elif f.for_h > 0:
            dev.boot()
    elif f.kind == "clock_skew":
        dev = outlet.devices[target]
        if isinstance(dev, UnixLocker):  # its RTC is the host's: nothing to skew from here
            outlet.stats["clock_skew_unsupported"] += 1
        else:
            dev.dclock.offset = f.skew_s if starting else 0
    elif f.kind == "disk_full":
        if starting:  # what is there now, and a few pages: the next group commit fails
            await asyncio.to_thread(_fill, outlet)
        else:
            await asyncio.to_thread(_remount, outlet, outlet.DISK_ROOM)
    elif f.kind == "central_lossy":
        outlet.central.lose_every = f.every if starting else 0
    elif f.kind == "device_duplicating":
        outlet.devices[target].duplicating = starting
    elif f.kind in HOSTILE_KINDS:
        rec["detail"] = await _hostile(outlet, f, starting)
    elif f.kind == "mqtt" and outlet.proxy is not None:
        if starting:
            rule = Rule(
                f.action,
                kinds=f.packet,
                topic=f.topic or None,
                p=f.p,
                delay_ms=f.delay_ms,
                seed=outlet.sc.seed,
            )
            outlet.proxy.add_rule(rule)
            outlet.mqtt_rules[id(f)] = rule
        else:
            outlet.proxy.remove_rule(outlet.mqtt_rules.pop(id(f)))
    outlet.faults_log.append(rec)
    outlet.log("fault", **rec)


async def _hostile(outlet: Outlet, f: Fault, starting: bool) -> str:
    """A hostile login (``Outlet.ROGUE``) floods junk, sends poison once or
    tries to take the gateway's session over; returns what it did, for the log."""
    host, port, name, pw = "127.0.0.1", outlet.broker.port, outlet.ROGUE, f"{outlet.ROGUE}-pw"
    if f.kind == "poison" and starting:
        pool = junk_pool(name, [n for n in outlet.devices], random.Random(outlet.sc.seed), refused_only=True)
        n = await asyncio.to_thread(poison, host, port, outlet.outlet_id, name, pw, pool)
        outlet.stats["hostile_poison_sent"] += n
        return f"{n} messages"
    if f.kind == "forged":
        if not starting:
            return ""
        lockers = sorted(d for d in outlet.devices if d.startswith("lk"))
        cmds = forged_commands(outlet.outlet_id, lockers, int(outlet.clock.time()))
        n = await asyncio.to_thread(publish_commands, host, port, outlet.outlet_id, name, pw, cmds)
        for _, cmd in cmds:  # and as if the platform's downlink queue had been tampered with
            outlet.central.push_command(outlet.outlet_id, "locker", cmd)
        outlet.stats["hostile_forged_sent"] += len(cmds)
        # each one a locker got must come back refused (its outcome goes upstream)
        ids = {c["id"] for _, c in cmds if c["dev"] in outlet.devices}
        outcome: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(outcome) < len(ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            for e in outlet.central.held(outlet.outlet_id).values():
                b = e.get("body") if isinstance(e.get("body"), dict) else {}
                if e.get("type", "").startswith("gateway.command_") and b.get("id") in ids:
                    outcome[str(b["id"])] = e["type"].removeprefix("gateway.command_")
        for status in outcome.values():
            outlet.stats[f"hostile_forged_{status}"] += 1
        return f"{len(cmds)} forged commands ({n} acked by the broker), each in the downlink too: " + \
            ", ".join(f"{v} {k}" for k, v in sorted(Counter(outcome.values()).items()))
    if f.kind == "flood":
        if starting:
            pool = junk_pool(name, list(outlet.devices), random.Random(outlet.sc.seed), refused_only=True)
            outlet.hostile[id(f)] = Flood(host, port, outlet.outlet_id, name, pw, pool).start()
            return ""
        sent = await asyncio.to_thread(outlet.hostile.pop(id(f)).stop)
        outlet.stats["hostile_flood_sent"] += sent
        return f"{sent} messages"
    if starting:
        outlet.hostile[id(f)] = Takeover(host, port, outlet.gw_user, name, pw,
                                          topics.build(outlet.outlet_id, "locker", name, "evt")).start()
        return ""
    tries = await asyncio.to_thread(outlet.hostile.pop(id(f)).stop)
    outlet.stats["hostile_takeover_tries"] += tries
    return f"{tries} tries"


def _fill(outlet: Outlet) -> None:
    """Shrink the gateway's tmpfs to what it holds now plus a few pages. A
    tmpfs cannot shrink below its use, and the gateway keeps writing between
    the measure and the remount: measure again and retry."""
    for attempt in range(10):
        used = shutil.disk_usage(outlet.disk).used
        try:
            _remount(outlet, str(max(used + 32 * 1024 * (attempt + 1), 256 * 1024)))
            return
        except subprocess.CalledProcessError:
            time.sleep(0.05)
    _remount(outlet, str(shutil.disk_usage(outlet.disk).used + 1024 * 1024))


def _remount(outlet: Outlet, size: str) -> None:
    subprocess.run(
        ["mount", "-o", f"remount,size={size}", str(outlet.disk)], check=True, capture_output=True
    )
