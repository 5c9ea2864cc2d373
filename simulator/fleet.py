"""A county: many outlets against one central service.

Each outlet is a whole simulated outlet (``simulator/assembly.py``): its own
Mosquitto, its own gateway process with its own SQLite store and WAN link,
its own in-process lockers and counter scanners, its own workload (the
scenario with the outlet's own seed, so parcels, boot ids and event ids
differ from outlet to outlet). All of them upload to one real central
service (``simulator/central.py``: the embedded backend and the HTTPS front,
every outlet with its own login), as a county's outlets upload to the
platform. They run in one asyncio loop, each on its own virtual clock, and
are judged one by one exactly as a single outlet is (``run_result``), so the
county's verdict is the conjunction of every outlet's.

The dispatcher's view is the central service's own (``Embedded.health``:
events held, last upload, alarms per outlet) next to each outlet's backlog
over virtual time, and both by the hour (``backlog_by_h``: the most events
waiting at the outlet's gateway in each hour; ``alarms_by_h``: the alarms
its devices raised, by the hour of their own clock; ``alarms`` is the
platform's count), outlets with the most
backlog first, then the most alarms. A scenario describes a county with
``[fleet]`` (``outlets``, and ``[[fleet.faults]]`` that hit one outlet:
its uplink down for hours, its disk full), and ``postedge sim run`` runs
it here.

Why not one gateway for many outlets: the county's question is whether the
platform keeps up with many independent gateways, each retrying and
batching on its own schedule; a shared gateway would hide exactly that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.timers import SLICE_ENV as TIMER_SLICE_ENV
from simulator.assembly import Outlet
from simulator.central import CentralService, make_certs
from simulator.inproc import restore_gc, tune_gc
from simulator.results import run_result
from simulator.runner import claim_workdir, drive
from simulator.scenario import Scenario
from simulator.snapshot import fault_windows

#: Outlets brought up at once: a gateway process's start is mostly CPU
#: (imports, schema), and a start storm on two cores only makes each slower.
STARTING = 4


#: Each gateway's probe and command pull interval: a hundred gateways pulling
#: twice a second is 200 TLS requests a second at the platform for nothing.
UPLINK_POLL_S = 3.0

#: How often each gateway looks for a jump of the simulated clock
#: (``common/timers.py``): a hundred gateways looking every 5 ms spent a core
#: and a half of two doing nothing else.
TIMER_SLICE_S = 0.05


def outlet_ids(n: int) -> list[str]:
    return [f"o{i + 1:03d}" for i in range(n)]


def outlet_scenario(sc: Scenario, index: int) -> Scenario:
    """The county's scenario as outlet ``index`` (from 0) runs it: its own
    seed, the county's faults for every outlet and its own (``[[fleet.faults]]``)."""
    own = [f for n, f in sc.fleet_faults if n == index + 1]
    return dataclasses.replace(sc, seed=sc.seed * 1000 + index + 1, fleet_outlets=0, fleet_faults=(),
                               faults=tuple(sorted((*sc.faults, *own), key=lambda f: f.at_h)))


def run_fleet(sc: Scenario, outlets: int | None, workdir: Path,
              log: Callable[..., None] | None = None,
              progress: Callable[[float, int, int], None] | None = None,
              broker: str = "auto",
              on_start: Callable[[list[Outlet]], None] | None = None,
              on_end: Callable[[list[Outlet]], None] | None = None,
              central_backend: str = "embedded") -> dict[str, Any]:
    """Run ``sc`` at ``outlets`` outlets (None: the scenario's ``[fleet]``)
    against one central service; the county's result (``result.json`` in
    ``workdir``, which is claimed as ``run_scenario`` claims its own).
    ``progress`` hears the share of the day the slowest outlet has done,
    the events the county's devices emitted so far and the faults active.
    ``on_start`` sees the outlets once all are up, ``on_end`` once every one
    has settled and before they are torn down (as ``run_scenario``'s, for
    the live dashboard: ``county_snapshot``).
    ``central_backend``: the platform's (``embedded``, or ``scaleout``: a
    3-node NATS JetStream cluster, an ingest worker and PostgreSQL)."""
    outlets = sc.fleet_outlets if outlets is None else outlets
    if outlets < 1:
        raise ValueError("a county needs at least one outlet")
    if any(n > outlets for n, _ in sc.fleet_faults):
        raise ValueError(f"a fault names an outlet beyond the county's {outlets}")
    claim_workdir(workdir)
    say = log or (lambda evt, **kw: None)
    wall0 = time.monotonic()
    certs = make_certs(workdir / "pki")
    central = CentralService(workdir / "central", certs.server_cert, certs.server_key, certs.ca,
                             backend=central_backend).up()
    fleet = [Outlet(outlet_scenario(sc, i), workdir / oid, outlet_id=oid, central=central, certs=certs,
                    broker=broker)
             for i, oid in enumerate(outlet_ids(outlets))]
    for o in fleet:
        o.uplink_poll_s = UPLINK_POLL_S
        o.gw_env = {TIMER_SLICE_ENV: str(TIMER_SLICE_S)}
        o.pace_nap_s = 0.02

    async def main() -> dict[str, Any]:
        gate = asyncio.Semaphore(STARTING)
        started: list[Outlet] = []

        async def start(o: Outlet) -> None:
            async with gate:
                await asyncio.to_thread(o.start)
                started.append(o)
                say("fleet_outlet_up", outlet=o.outlet_id, up=len(started))

        gc_old = None
        try:
            await asyncio.gather(*(start(o) for o in fleet))
            up_s = time.monotonic() - wall0
            for o in fleet:  # the devices' tasks live in this loop
                for dev in o.devices.values():
                    dev.boot()
            gc_old = tune_gc()  # once for the county, not once per outlet
            if on_start:
                on_start(fleet)
            t0 = time.monotonic()
            def step(_: Outlet) -> None:
                if progress:
                    progress(min(o.progress for o in fleet), sum(len(o.obs.emitted) for o in fleet),
                             sum(1 for o in fleet for f in o.sc.faults if f.at_s <= o.t_virtual < f.until_s))

            await asyncio.gather(*(drive(o, step) for o in fleet))
            day_s = time.monotonic() - t0
            results = [run_result(o, time.monotonic() - wall0) for o in fleet]
            if on_end:  # settling sampled each backlog last: the picture shows it drained
                on_end(fleet)
            return county_result(sc, fleet, results, central, up_s, day_s, time.monotonic() - wall0)
        finally:
            if gc_old is not None:
                restore_gc(gc_old)
            await asyncio.gather(*(o.close() for o in started), return_exceptions=True)

    try:
        res = asyncio.run(main())
    finally:
        central.close()
    (workdir / "result.json").write_text(json.dumps(res, ensure_ascii=False))
    return res


def county_result(sc: Scenario, fleet: list[Outlet], results: list[dict[str, Any]], central: CentralService,
                  up_s: float, day_s: float, wall_s: float) -> dict[str, Any]:
    """Every outlet's verdict and ledger in short, the dispatcher's view, and
    the county's verdict (every outlet passed)."""
    health = {row["outlet"]: row for row in central.health()}
    per: list[dict[str, Any]] = []
    hours = max(1, math.ceil(sc.duration_s / 3600))
    for o, r in zip(fleet, results, strict=True):
        e2e = r["ledger"].get("end_to_end", {})
        h = health.get(o.outlet_id, {})
        per.append({
            **by_hour(o.backlog, r.get("timeline") or [], hours),
            "faults": fault_windows(o.sc.faults),
            "outlet": o.outlet_id, "ok": r["verdict"]["ok"], "failures": r["verdict"]["failures"],
            "emitted": len(o.obs.emitted), "held": h.get("events", 0), "lost": e2e.get("lost", 0),
            "duplicated": e2e.get("duplicated", 0), "alarms": h.get("alarms", 0),
            "last_batch_at": h.get("last_batch_at"),
            "backlog": o.backlog,  # [virtual s, events waiting, bytes waiting]
            "backlog_max": max((b[1] for b in o.backlog), default=0),
            # for the county's HTML report: each outlet's alarms over its day, its
            # devices' online spans, and every check it was judged by
            "alarm_events": [e for e in r.get("timeline") or [] if e.get("cls") == "alarm"],
            "devices": [{k: d.get(k) for k in ("device", "kind", "events", "online")}
                        for d in r.get("devices") or []],
            "expectations": r.get("expectations") or [],
        })
    failing = [p["outlet"] for p in per if not p["ok"]]
    return {
        "scenario": sc.name, "kind": "fleet", "outlets": len(fleet), "virtual_s": sc.duration_s,
        "central_backend": central.kind,
        "seed": sc.seed, "hours": hours,
        "ended_at": time.time(),  # wall clock, as the platform's last_batch_at
        "up_s": round(up_s, 1), "day_s": round(day_s, 1), "wall_s": round(wall_s, 1),
        "events_emitted": sum(p["emitted"] for p in per), "events_held": sum(p["held"] for p in per),
        "lost": sum(p["lost"] for p in per),
        "dispatcher": sorted(per, key=lambda p: (-p["backlog_max"], -p["alarms"], p["outlet"])),
        "verdict": {"ok": not failing, "failing_outlets": failing},
    }


def by_hour(backlog: list[list[float]], timeline: list[dict[str, Any]], hours: int) -> dict[str, list[int]]:
    """An outlet's hours as the dispatcher reads them: the most events
    waiting at its gateway in each hour of virtual time (0 for an hour with
    no sample), and the alarms (events of class ``alarm``) its devices
    raised, by the hour of their own clock (``timeline``: the run result's,
    every device event in virtual seconds)."""
    def hour(t: float) -> int:  # the last sample (the settled end) counts in the last hour
        return min(hours - 1, max(0, int(t // 3600)))

    peak = [0] * hours
    for t, count, *_ in backlog:
        peak[hour(t)] = max(peak[hour(t)], int(count))
    alarms = [0] * hours
    for ev in timeline:
        if ev.get("cls") == "alarm":
            alarms[hour(float(ev.get("t", 0)))] += 1
    return {"backlog_by_h": peak, "alarms_by_h": alarms}


def county_snapshot(fleet: list[Outlet]) -> dict[str, Any]:
    """The live dashboard's snapshot (``Outlet.snapshot``'s shape) of a whole
    county: every outlet's lockers, devices, alarms and faults, each under
    its outlet's name (``o002/lk01``; a fault's detail starts with its
    outlet), the backlog and the ledger's counts summed, the oldest event
    waiting anywhere, and the clock and progress of the slowest outlet.
    The dashboard's page then shows the county as it shows one outlet, and
    a locker standing open or an uplink down says at which outlet."""
    snaps = [(o.outlet_id, o.snapshot()) for o in fleet]
    if not snaps:
        return {}
    slowest = min((s for _, s in snaps), key=lambda s: s.get("progress", 0.0))
    ledger: dict[str, int] = {}
    for _, s in snaps:
        for hop, n in (s.get("ledger") or {}).items():
            ledger[hop] = ledger.get(hop, 0) + int(n)
    backlogs = [s.get("backlog") or {} for _, s in snaps]
    return {
        "scenario": slowest.get("scenario"), "t_virtual": slowest.get("t_virtual", 0.0),
        "progress": slowest.get("progress", 0.0), "time_mode": slowest.get("time_mode"),
        "broker": slowest.get("broker"),
        "lockers": [{**lk, "device": f"{oid}/{lk.get('device')}"} for oid, s in snaps
                    for lk in s.get("lockers") or []],
        "devices": [{**d, "device": f"{oid}/{d.get('device')}"} for oid, s in snaps
                    for d in s.get("devices") or []],
        "backlog": {"count": sum(b.get("count", 0) for b in backlogs),
                    "bytes": sum(b.get("bytes", 0) for b in backlogs),
                    "oldest_age_s": max((b.get("oldest_age_s", 0.0) for b in backlogs), default=0.0)},
        "alarms": sorted(({**a, "device": f"{oid}/{a.get('device')}"} for oid, s in snaps
                          for a in s.get("alarms") or []), key=lambda a: a.get("t", 0.0), reverse=True),
        "faults": [{**f, "detail": f"{oid} {f.get('detail') or ''}".strip()} for oid, s in snaps
                   for f in s.get("faults") or []],
        "ledger": ledger,
    }
