"""The seeded workload: who does what at which virtual second.

Pure: the same scenario and seed give the same action list, which is the
first half of a reproducible run (the second is the firmware's seeded
randomness, see ``simulator/inproc.py``). Parcels arrive by the hourly
weights, are registered at a counter scanner, deposited by a courier into a
locker a little later, and picked up by the recipient with the code the
locker issued, or not (no-shows stay in the locker).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from protocol.barcodes import s10_check_digit
from simulator.scenario import Scenario

SIZES = (("S", 0.45), ("M", 0.3), ("L", 0.2), ("XL", 0.05))
PREFIXES = ("RB", "RR", "EE", "CP", "LX")


@dataclass(order=True)
class Action:
    t: float  # virtual seconds from the start
    order: int  # tie-break: generation order
    kind: str = field(compare=False)  # intake | deposit | pickup | photo
    device: str = field(compare=False)
    args: dict[str, Any] = field(compare=False, default_factory=dict)


def s10_id(rng: random.Random) -> str:
    serial = f"{rng.randrange(10**8):08d}"
    return f"{rng.choice(PREFIXES)}{serial}{s10_check_digit(serial)}CN"


def _weighted(rng: random.Random, pairs: tuple[tuple[str, float], ...]) -> str:
    x = rng.random() * sum(w for _, w in pairs)
    for v, w in pairs:
        x -= w
        if x <= 0:
            return v
    return pairs[-1][0]


def generate(sc: Scenario) -> list[Action]:
    """Every action of the run, in time order."""
    rng = random.Random(sc.seed)
    lockers = [f"lk{i + 1:02d}" for i in range(sc.lockers)]
    scanners = [f"sc{i + 1:02d}" for i in range(sc.scanners)]
    handhelds = [f"hh{i + 1:02d}" for i in range(sc.handhelds)]
    weights = sc.arrivals_by_hour
    day_s = 86400.0
    out: list[Action] = []
    n = 0

    def add(t: float, kind: str, device: str, **args: Any) -> None:
        nonlocal n
        if t < sc.duration_s:
            out.append(Action(t, n, kind, device, args))
            n += 1

    seen: set[str] = set()
    days = max(1, int(sc.duration_s // day_s + (1 if sc.duration_s % day_s else 0)))
    for _ in range(sc.parcels):
        day = rng.randrange(days)
        hour = int(_weighted(rng, tuple((str(h), w) for h, w in enumerate(weights))))
        t = day * day_s + hour * 3600 + rng.random() * 3600
        parcel = s10_id(rng)
        while parcel in seen:
            parcel = s10_id(rng)
        seen.add(parcel)
        size = _weighted(rng, SIZES)
        if not lockers:
            continue
        locker = rng.choice(lockers)
        if scanners:
            add(t, "intake", rng.choice(scanners), parcel=parcel)
        t_dep = t + rng.uniform(*sc.deposit_delay_min) * 60
        add(t_dep, "deposit", locker, parcel=parcel, size=size, courier="c001")
        if rng.random() < sc.pickup_rate:
            add(t_dep + rng.uniform(*sc.pickup_delay_h) * 3600, "pickup", locker, parcel=parcel)
    for i in range(sc.photos):
        if handhelds:
            add(
                rng.uniform(8, 17) * 3600,
                "photo",
                rng.choice(handhelds),
                job=f"job-{i + 1}",
                site=f"site-{i % 5 + 1}",
                seed=rng.randrange(2**31),
            )
    out.sort()
    return out
