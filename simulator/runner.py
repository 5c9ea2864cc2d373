"""``postedge sim run``: one outlet, from a scenario, with faults, checked.

The driver: it brings the outlet up (``simulator/assembly.py``), walks the
scenario's clock window by window doing the workload's actions
(``actions``) and the faults' edges (``injection``), samples the gateway's
backlog (``sampling``), waits for the platform to catch up (``settling``),
and returns the judged run result (``results``).

Time. In virtual mode the scenario's clock jumps from one action window to
the next (``window_min``), and every device reads its wall time from it (the
gateway process through the clock file ``SimClock.attach`` writes), so a day
takes seconds; the gateway's timers wait on that clock too, and each jump
waits for what the gateway had due before it (``simulator/pacing.py``);
actions in one window run concurrently across devices and in order on each
device. In real mode the windows are paced by the wall
clock (``speed``).

The ledger follows every event id hop by hop: ``device`` (as it enters the
device's flash outbox), ``broker`` (a persistent QoS 1 subscriber on the
outlet broker), ``gateway`` (its SQLite store) and ``central`` (what the
platform received, duplicates included). The domain rules run over what the
central side holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import clock
from simulator.actions import run_window
from simulator.assembly import Outlet
from simulator.gateway_process import clock_file
from simulator.injection import fault_edges, inject
from simulator.pacing import advance
from simulator.results import run_result
from simulator.sampling import sample_backlog
from simulator.scenario import Scenario
from simulator.settling import settle, window_stored
from simulator.workload import generate

__all__ = ["Outlet", "drive", "run_scenario"]


async def drive(outlet: Outlet, progress: Callable[[Outlet], None] | None = None) -> None:
    """The scenario from its first window to its end, then settled. ``progress`` is
    called with the outlet after every window."""
    sc = outlet.sc
    await outlet.provision()
    actions = generate(sc)
    win = sc.window_min * 60
    edges = fault_edges(sc.faults)
    t = 0.0
    i = 0
    real0 = time.monotonic()
    while t < sc.duration_s:
        end = min(t + win, sc.duration_s)
        while edges and edges[0][0] < end:
            ft, f, starting = edges.pop(0)
            await advance(outlet, sc.start + ft)
            outlet.t_virtual = ft
            await inject(outlet, f, starting)
        await advance(outlet, sc.start + t)
        outlet.t_virtual = t
        batch = []
        while i < len(actions) and actions[i].t < end:
            batch.append(actions[i])
            i += 1
        if sc.mode == "real":
            wait = t / sc.speed - (time.monotonic() - real0)
            if wait > 0:
                await asyncio.sleep(wait)
        await run_window(outlet, batch)
        await asyncio.sleep(0.005)  # let the devices' own tasks breathe
        await window_stored(outlet)
        sample_backlog(outlet)
        t = end
        outlet.progress = t / sc.duration_s
        if progress:
            progress(outlet)
    for _, f, starting in edges:  # faults still open at the end are closed
        if not starting:
            await inject(outlet, f, False)
    await advance(outlet, sc.start + sc.duration_s)
    outlet.t_virtual = sc.duration_s
    await settle(outlet)
    if outlet.modem is not None:  # the notifier's last routes reach the platform after the events
        await asyncio.to_thread(outlet.notices_settled)


def claim_workdir(workdir: Path) -> None:
    """An empty work folder for a run, marked as the simulator's: a folder
    an earlier run made is emptied, any other that is not empty refused
    (ValueError), never wiped."""
    marker = workdir / ".postedge-sim"
    if workdir.exists() and any(workdir.iterdir()):
        if not marker.exists():  # never wipe a folder the simulator did not make
            raise ValueError(f"{workdir} is not empty and is not a simulator work folder")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by postedge sim run; the next run in this folder replaces it\n")


def run_scenario(
    sc: Scenario,
    workdir: Path,
    progress: Callable[[Outlet], None] | None = None,
    on_start: Callable[[Outlet], None] | None = None,
    log: Callable[..., None] | None = None,
    broker: str = "auto",
    on_end: Callable[[Outlet], None] | None = None,
    central_backend: str = "embedded",
) -> dict[str, Any]:
    """Run one scenario to the end and return the result dict. The work folder is kept,
    with ``result.json`` in it, for inspection; the next run in it replaces it.
    ``on_start`` sees the outlet once it is up, ``on_end`` once it has settled and
    before it is torn down (the dashboard keeps its last picture from there).
    ``central_backend``: the platform's backend (``embedded`` or ``scaleout``)."""
    claim_workdir(workdir)
    wall0 = time.monotonic()
    outlet = Outlet(sc, workdir, log, broker=broker, central_backend=central_backend)
    # In virtual mode the gateway process runs on the scenario's clock too, and so
    # does what this process reads from its store (the backlog's age).
    on_clock = (clock.following(outlet.clock.attach(clock_file(workdir / "gateway.toml")))
                if outlet.clock.virtual else contextlib.nullcontext())

    async def main() -> dict[str, Any]:
        try:
            await asyncio.to_thread(outlet.start)
            outlet.boot_all()
            if on_start:
                on_start(outlet)
            await drive(outlet, progress)
            res = run_result(outlet, time.monotonic() - wall0)
            if on_end:
                sample_backlog(outlet)
                on_end(outlet)
            return res
        finally:
            await outlet.close()
            outlet.clock.detach()

    with on_clock:
        res = asyncio.run(main())
    (workdir / "result.json").write_text(json.dumps(res, ensure_ascii=False))
    return res
