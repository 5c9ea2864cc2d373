"""The running outlet as the live dashboard shows it, and its faults as time windows.

The dashboard polls a snapshot while a run goes (``simulator/dashboard.py``);
it is made here from the parts of the outlet it reads, so the page never
holds a reference to the outlet itself. :func:`fault_windows` is the
scenario's faults on the time axis, shared with the run result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from simulator.inproc import SimDevice, SimLocker
from simulator.ledger import Ledger
from simulator.scenario import Fault, Scenario
from simulator.taps import Observed
from simulator.unix_locker import UnixLocker


def fault_windows(faults: Iterable[Fault]) -> list[dict[str, Any]]:
    """One window per fault; an instant fault (a kill, a restart) ends where it starts."""
    out = []
    for f in faults:
        out.append(
            {
                "t": f.at_s,
                "until": f.until_s if f.for_h > 0 else f.at_s,
                "kind": f.kind,
                "detail": f.device or f.action or "",
            }
        )
    return out


def live_view(
    sc: Scenario,
    *,
    t_virtual: float,
    progress: float,
    broker: str,
    obs: Observed,
    devices: Mapping[str, SimDevice],
    handhelds: Iterable[str],
    backlog: list[list[float]],
    ledger: Ledger,
    live: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The snapshot ``simulator/dashboard.py`` renders: lockers with their compartments,
    other devices, backlog, newest alarms first, faults active now, ledger counts.

    ``live`` is what the backlog sampler last read from the gateway's and the
    platform's stores (``simulator/sampling.py``): events each has stored, and
    the real (wall-clock) age of the oldest event waiting for upload. The
    device and broker hops are counted as events pass the taps."""
    live = live or {}
    lockers = []
    others = []
    with obs.lock:
        online = {n: bool(s and s[-1][1] is None) for n, s in obs.online.items()}
        alarms = list(obs.alarms[-50:])
    for n, d in devices.items():
        if isinstance(d, SimLocker) and d.app is not None:
            lockers.append(
                {
                    "device": n,
                    "online": online.get(n, False),
                    "compartments": [
                        {"id": c["id"], "size": c["size"], "state": c["state"]} for c in d.app.comps.all()
                    ],
                }
            )
        elif isinstance(d, UnixLocker):
            with obs.lock:
                doc = obs.states.get(n) or {}
            comps = doc.get("compartments") if isinstance(doc.get("compartments"), list) else []
            lockers.append(
                {
                    "device": n,
                    "online": online.get(n, False),
                    "compartments": [
                        {"id": c.get("id"), "size": c.get("size"), "state": c.get("state")}
                        for c in comps
                        if isinstance(c, dict)
                    ],
                }
            )
        else:
            others.append({"device": n, "kind": d.kind, "online": online.get(n, False)})
    for n in handhelds:
        others.append({"device": n, "kind": "handheld", "online": online.get(n, False)})
    b = backlog[-1] if backlog else [0, 0, 0]
    faults = [{**w, "active": w["t"] <= t_virtual < w["until"]} for w in fault_windows(sc.faults)]
    return {
        "scenario": sc.name,
        "t_virtual": t_virtual,
        "progress": progress,
        "time_mode": sc.mode,
        "broker": broker,
        "lockers": lockers,
        "devices": others,
        "backlog": {"count": b[1], "bytes": b[2], "oldest_age_s": float(live.get("oldest_age_s", 0.0))},
        "alarms": alarms[::-1],
        "faults": faults,
        "ledger": {**{h: len(ledger.seen(h)) for h in ("device", "broker")},
                   **{h: int(live[h]) for h in ("gateway", "central") if h in live}},
    }

