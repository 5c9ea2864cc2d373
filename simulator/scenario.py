"""Scenario files: what runs, what it does, what goes wrong, what must hold.

A scenario is TOML, validated at load with errors that name the key::

    name = "village-day"
    seed = 7

    [time]
    mode = "virtual"        # "virtual": as fast as it goes; "real": the clock is the wall clock
    hours = 24.0            # length of the outlet day(s) simulated
    start = 1795881600      # virtual Unix time of hour 0 (virtual mode)
    speed = 1.0             # real mode: virtual seconds per wall second

    [outlet]
    lockers = 4
    compartments = 24
    scanners = 1
    handhelds = 1
    locker_mode = "inprocess"   # or "unixport": firmware processes on the MicroPython unix port
    poll_ms = 10                # lockers' door poll (real ms)

    [workload]
    parcels = 120               # arrivals over the run
    arrivals_by_hour = [0,0,0,0,0,0,1,3,5,6,6,5,4,4,5,6,5,4,3,1,0,0,0,0]
    pickup_rate = 0.8           # share picked up within the run; the rest are no-shows
    pickup_delay_h = [0.5, 20.0]
    deposit_delay_min = [10, 60]
    window_min = 15             # actions within one window run concurrently across lockers
    photos = 3                  # bulletin-board photos the handhelds submit

    [[faults]]
    kind = "wan_down"           # wan_down, broker_restart, gateway_kill, power_cut, clock_skew,
    at_h = 8.0                  # disk_full (the gateway's own tmpfs), mqtt (fault proxy rules)
    for_h = 6.0

    [expect]
    ledger = true               # every event reaches the central side exactly once
    domain = true               # parcel, compartment, door and photo rules hold
    min_central_events = 100
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAULT_KINDS = ("wan_down", "broker_restart", "gateway_kill", "power_cut", "clock_skew", "mqtt", "disk_full",
               "central_lossy", "device_duplicating")  # the last two: sabotage, to prove the checks bite
MQTT_ACTIONS = ("drop", "delay", "duplicate", "reorder")


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class Fault:
    kind: str
    at_h: float
    for_h: float = 0.0
    device: str = ""          # power_cut, clock_skew: which device ("" = the first locker)
    skew_s: int = 0           # clock_skew
    action: str = ""          # mqtt: drop | delay | duplicate | reorder
    packet: str = "PUBLISH"   # mqtt: packet type
    topic: str = ""           # mqtt: topic filter ("" = any)
    p: float = 1.0            # mqtt: probability per matching packet
    delay_ms: int = 0         # mqtt delay
    every: int = 10           # central_lossy: forget every Nth new event

    @property
    def at_s(self) -> float:
        return self.at_h * 3600.0

    @property
    def until_s(self) -> float:
        return (self.at_h + self.for_h) * 3600.0


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    mode: str = "virtual"
    hours: float = 24.0
    start: int = 1795881600
    speed: float = 1.0
    lockers: int = 2
    compartments: int = 24
    scanners: int = 1
    handhelds: int = 0
    locker_mode: str = "inprocess"
    poll_ms: int = 10
    parcels: int = 40
    arrivals_by_hour: tuple[float, ...] = (0, 0, 0, 0, 0, 0, 1, 3, 5, 6, 6, 5,
                                           4, 4, 5, 6, 5, 4, 3, 1, 0, 0, 0, 0)
    pickup_rate: float = 0.8
    pickup_delay_h: tuple[float, float] = (0.5, 20.0)
    deposit_delay_min: tuple[float, float] = (10.0, 60.0)
    window_min: float = 15.0
    photos: int = 0
    faults: tuple[Fault, ...] = ()
    expect: dict[str, Any] = field(default_factory=lambda: {"ledger": True, "domain": True})
    path: str = ""

    @property
    def duration_s(self) -> float:
        return self.hours * 3600.0


_TABLES: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "time": {"mode": (str, None), "hours": ((int, float), (0.01, 24 * 14)), "start": (int, (0, 2**40)),
             "speed": ((int, float), (0.001, 1e6))},
    "outlet": {"lockers": (int, (0, 5000)), "compartments": (int, (1, 64)), "scanners": (int, (0, 64)),
               "handhelds": (int, (0, 64)), "locker_mode": (str, None), "poll_ms": (int, (1, 5000))},
    "workload": {"parcels": (int, (0, 1_000_000)), "arrivals_by_hour": (list, None),
                 "pickup_rate": ((int, float), (0.0, 1.0)), "pickup_delay_h": (list, None),
                 "deposit_delay_min": (list, None), "window_min": ((int, float), (0.1, 1440)),
                 "photos": (int, (0, 10_000))},
}
_EXPECT = {"ledger": bool, "domain": bool, "min_central_events": int, "max_lost": int}


def _check(table: str, key: str, v: Any, kind: type | tuple[type, ...], rng: Any) -> Any:
    where = f"{table}.{key}"
    if isinstance(v, bool) or not isinstance(v, kind):
        raise ScenarioError(f"{where}: wrong type {type(v).__name__}")
    if rng is not None and not rng[0] <= v <= rng[1]:
        raise ScenarioError(f"{where}: {v!r} is outside {rng[0]}..{rng[1]}")
    return v


def _pair(where: str, v: Any) -> tuple[float, float]:
    if not isinstance(v, list) or len(v) != 2 or not all(isinstance(x, int | float) for x in v) \
            or v[0] > v[1] or v[0] < 0:
        raise ScenarioError(f"{where}: must be [low, high] with 0 <= low <= high")
    return float(v[0]), float(v[1])


def parse(doc: dict[str, Any], path: str = "") -> Scenario:
    """A validated Scenario from a TOML document; ScenarioError names the key."""
    known = {"name", "seed", "time", "outlet", "workload", "faults", "expect"}
    for k in doc:
        if k not in known:
            raise ScenarioError(f"{k}: unknown key (known: {', '.join(sorted(known))})")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError("name: required, a string")
    seed = doc.get("seed", 1)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ScenarioError("seed: must be an integer")
    out: dict[str, Any] = {"name": name, "seed": seed, "path": path}
    for table, keys in _TABLES.items():
        t = doc.get(table, {})
        if not isinstance(t, dict):
            raise ScenarioError(f"{table}: must be a table")
        for k, v in t.items():
            if k not in keys:
                raise ScenarioError(f"{table}.{k}: unknown key (known: {', '.join(sorted(keys))})")
            kind, rng = keys[k]
            out[k] = _check(table, k, v, kind, rng)
    if out.get("mode", "virtual") not in ("virtual", "real"):
        raise ScenarioError("time.mode: must be 'virtual' or 'real'")
    if out.get("locker_mode", "inprocess") not in ("inprocess", "unixport"):
        raise ScenarioError("outlet.locker_mode: must be 'inprocess' or 'unixport'")
    if "arrivals_by_hour" in out:
        a = out["arrivals_by_hour"]
        if len(a) != 24 or not all(isinstance(x, int | float) and x >= 0 for x in a) or not sum(a):
            raise ScenarioError("workload.arrivals_by_hour: 24 non-negative weights, not all zero")
        out["arrivals_by_hour"] = tuple(float(x) for x in a)
    for k in ("pickup_delay_h", "deposit_delay_min"):
        if k in out:
            out[k] = _pair(f"workload.{k}", out[k])
    for k in ("hours", "speed", "pickup_rate", "window_min"):
        if k in out:
            out[k] = float(out[k])
    faults = doc.get("faults", [])
    if not isinstance(faults, list):
        raise ScenarioError("faults: must be an array of tables ([[faults]])")
    fs = []
    fields = set(Fault.__dataclass_fields__)
    for i, f in enumerate(faults):
        where = f"faults[{i}]"
        if not isinstance(f, dict):
            raise ScenarioError(f"{where}: must be a table")
        for k in f:
            if k not in fields:
                raise ScenarioError(f"{where}.{k}: unknown key (known: {', '.join(sorted(fields))})")
        if f.get("kind") not in FAULT_KINDS:
            raise ScenarioError(f"{where}.kind: must be one of {', '.join(FAULT_KINDS)}")
        if not isinstance(f.get("at_h"), int | float) or isinstance(f.get("at_h"), bool) or f["at_h"] < 0:
            raise ScenarioError(f"{where}.at_h: required, hours from the start (>= 0)")
        if f["kind"] == "mqtt" and f.get("action") not in MQTT_ACTIONS:
            raise ScenarioError(f"{where}.action: must be one of {', '.join(MQTT_ACTIONS)}")
        kw = dict(f)
        kw["at_h"] = float(kw["at_h"])
        kw["for_h"] = float(kw.get("for_h", 0.0))
        if kw["kind"] in ("wan_down", "mqtt", "disk_full") and kw["for_h"] <= 0:
            raise ScenarioError(f"{where}.for_h: {kw['kind']} needs a duration in hours")
        fs.append(Fault(**kw))
    out["faults"] = tuple(sorted(fs, key=lambda x: x.at_h))
    exp = doc.get("expect", {"ledger": True, "domain": True})
    if not isinstance(exp, dict):
        raise ScenarioError("expect: must be a table")
    for k, v in exp.items():
        if k not in _EXPECT:
            raise ScenarioError(f"expect.{k}: unknown key (known: {', '.join(sorted(_EXPECT))})")
        if isinstance(v, bool) != (_EXPECT[k] is bool) or not isinstance(v, _EXPECT[k]):
            raise ScenarioError(f"expect.{k}: must be {_EXPECT[k].__name__}")
    out["expect"] = exp
    return Scenario(**out)


def load(path: Path | str) -> Scenario:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ScenarioError(f"cannot read {p}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{p}: not valid TOML: {e}") from None
    return parse(doc, str(p))
