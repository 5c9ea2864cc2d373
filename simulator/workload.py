"""The seeded workload: who does what at which virtual second.

Pure: the same scenario and seed give the same action list, which is the
first half of a reproducible run (the second is the firmware's seeded
randomness, see ``simulator/inproc.py``). Parcels arrive by the hourly
weights, are registered at a counter scanner, deposited by a courier into a
locker a little later, and picked up by the recipient with the code the
locker issued, or not (no-shows stay in the locker).

The outbound day (寄件) from ``outbound_h``: produce in standard
boxes and charity parcels accepted at the counter (``counter_accept``), send
orders booked by the platform (``send_book``) and dropped off at a locker by
their villagers' send codes (``send_dropoff``); two hours later the courier
empties the lockers' retrieval lists (``collect``) and takes the counter's
bag with a handheld (``bag_pickup``). Doors forced open (``door_forced``)
and a pickup-code guesser at a keypad until the lockout (``guess``) raise
alarms the clerk handles in the console (``clerk_alarms``). Returns (退件)
are booked by the platform (``return_book``), dropped off by their return
codes (``return_dropoff``) and retrieved with the courier's collection.
The clerk asks the platform for a remote open (``remote_open``), which the
platform signs and the locker carries out; a supervisor takes a compartment
out of service and back the same way (``compartment_out``,
``compartment_back``). The courier's handheld takes
parcels in at the outlet (``hh_intake``) and hands them over at the door
(``hand_delivery``), and forwards the platform's permits for deposits at
a locker (``permit_deposit``). With ``pickup_days`` the platform shortens
the lockers' pickup window at the start (``set_pickup_days``) and the
courier's daily collection retrieves what expired.

With ``door_left_open_rate`` some of the door cycles (the inbound pickups,
the courier's deposits and retrievals) become ``door_left_open``: the
villager or the courier walks away from the open door, the locker raises
its ``door_left_open`` alarm, the clerk sees it, has the door shut and
resolves it (in real-time runs the platform first shortens those lockers'
alarm delay, ``door_alarm``: the firmware times it on the wall clock
then). The choice has a generator of its own, so every other action of a
seed stays as it was. With
``board_sites`` the courier's handheld takes each site through the 政讯通
lifecycle in the afternoon, between the outlet's own tasks: a survey the
platform approves at ``outbound_h`` (``board_survey``), the install job
1.25 h later (``board_install``) and a maintenance job with a condition
report 3 h after that (``board_maintain``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from protocol.barcodes import s10_check_digit
from protocol.outbound import make_bag
from simulator.scenario import Scenario

SIZES = (("S", 0.45), ("M", 0.3), ("L", 0.2), ("XL", 0.05))
# What villagers send in the catalogue's boxes (simulator/counter_sim.py): box, grams range.
PRODUCE = (("PE-BOX-F5", 2500, 9000), ("PE-BOX-E30", 1500, 2800))
# Recipients' postcodes: the tariff's zones z1 (Guizhou), z2 (Beijing, Shanghai), z3 (the rest).
POSTCODES = ("550001", "100020", "200000", "310000")
CHARITY = (("县爱心基金会", "西江镇中心小学"), ("Lei Shan charity fund", "Xijiang primary school"))
#: The courier who collects outbound items (the badge every locker is given).
COURIER = "c001"
PREFIXES = ("RB", "RR", "EE", "CP", "LX")
#: The door-left-open alarm's delay (s) the platform gives lockers whose doors
#: the workload leaves open in a real-time run (the firmware's ticks are wall time then).
DOOR_ALARM_S = 2


@dataclass(order=True)
class Action:
    t: float  # virtual seconds from the start
    order: int  # tie-break: generation order
    # intake | deposit | pickup | photo | counter_accept | send_book | send_dropoff | collect
    # | bag_pickup | door_forced | clerk_alarms | return_book | return_dropoff | guess | remote_open
    # | compartment_out | compartment_back
    # | hh_intake | hand_delivery | permit_deposit | set_pickup_days
    # | door_alarm | door_left_open | board_survey | board_install | board_maintain
    kind: str = field(compare=False)
    device: str = field(compare=False)
    args: dict[str, Any] = field(compare=False, default_factory=dict)


def s10_id(rng: random.Random) -> str:
    serial = f"{rng.randrange(10**8):08d}"
    return f"{rng.choice(PREFIXES)}{serial}{s10_check_digit(serial)}CN"


def _s10(rng: random.Random, prefix: str) -> str:
    serial = f"{rng.randrange(10**8):08d}"
    return f"{prefix}{serial}{s10_check_digit(serial)}CN"


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
    outbound(sc, rng, lockers, handhelds, add)
    boards(sc, handhelds, add)
    if sc.door_left_open_rate > 0:
        doors_left_open(sc, out, add)
    out.sort()
    return out


#: The door cycles a person may walk away from, and the workload's actions that make them.
LEFT_OPEN_FROM = {"pickup": "pickup", "deposit": "deposit", "retrieve": "collect"}


def doors_left_open(sc: Scenario, out: list[Action], add: Any) -> None:
    """Turn a share of the door cycles into ``door_left_open`` (at least one
    of each kind there is): the villagers' pickups, the courier's deposits
    and retrievals (a collection from a locker something was dropped off
    at: its list is not empty). Drawn with a generator of their own, pickups
    first (so their choice stayed as it was), among those at least an hour
    before the end (the clerk's resolution must reach the platform within
    the run); and the platform's short alarm delay to those lockers at the
    start. A deposit's parcel keeps its villager's contact
    (:func:`inbound_deposits`)."""
    rng = random.Random(sc.seed * 1009 + 18)
    dropped = {a.device for a in out if a.kind in ("send_dropoff", "return_dropoff")}
    chosen: list[int] = []
    for after, kind in LEFT_OPEN_FROM.items():
        cands = [i for i, a in enumerate(out) if a.kind == kind and a.t <= sc.duration_s - 3600
                 and (kind != "collect" or a.device in dropped)]
        if not cands:
            continue
        n = max(1, round(sc.door_left_open_rate * len(cands)))
        for i in sorted(rng.sample(cands, min(n, len(cands)))):
            a = out[i]
            out[i] = Action(a.t, a.order, "door_left_open", a.device, {**a.args, "after": after})
            chosen.append(i)
    if sc.mode == "real":  # in virtual mode the flow moves the locker's clock past the delay
        for locker in sorted({out[i].device for i in chosen}):
            add(0.0, "door_alarm", locker, seconds=DOOR_ALARM_S)


def inbound_deposits(actions: list[Action]) -> list[Action]:
    """The couriers' deposits of inbound parcels, also those whose door is
    left open: the parcels on the platform's manifest for the day."""
    return [a for a in actions
            if a.kind == "deposit" or a.kind == "door_left_open" and a.args.get("after") == "deposit"]


def boards(sc: Scenario, handhelds: list[str], add: Any) -> None:
    """The 政讯通 lifecycle of ``board_sites`` sites on the first handheld
    (see the module docstring): the courier's round in the afternoon."""
    if not handhelds:
        return
    t0 = sc.outbound_h * 3600
    for i in range(sc.board_sites):
        site = {"n": i + 1, "village": "西江村" if i % 2 == 0 else "控拜村"}
        add(t0 + i * 900, "board_survey", handhelds[0], **site)
        add(t0 + 1.25 * 3600 + i * 900, "board_install", handhelds[0], **site)
        add(t0 + 4.25 * 3600 + i * 900, "board_maintain", handhelds[0], **site)


def outbound(sc: Scenario, rng: random.Random, lockers: list[str], handhelds: list[str],
             add: Any) -> None:
    """The outbound day and the clerk's alarms (see the module docstring).
    Drawn after the inbound parcels from the same generator, so adding it
    left the inbound actions of every seed as they were."""
    t0 = sc.outbound_h * 3600
    n_counter = sc.counter_parcels + sc.charity_parcels
    for i in range(n_counter):
        charity = i >= sc.counter_parcels
        box, lo, hi = rng.choice(PRODUCE)
        grams = rng.randrange(lo, hi) if not charity else rng.randrange(600, 2500)
        args: dict[str, Any] = {
            # an S10 id from the outlet's roll: a bag's list takes it (a bare domestic number
            # needs its Code 128 symbology, which a list cannot show)
            "waybill": _s10(rng, "CP"), "box": box, "grams": grams,
            "service": "charity" if charity else "standard", "postcode": rng.choice(POSTCODES),
            "phone": f"139{rng.randrange(10**8):08d}"}
        if charity:
            donor, beneficiary = CHARITY[i % len(CHARITY)]
            args["charity"] = {"donor": donor, "beneficiary": beneficiary}
        add(t0 + i * 300, "counter_accept", "counter", **args)
    dropped: set[str] = set()
    for i in range(sc.send_dropoffs if lockers else 0):
        locker = rng.choice(lockers)
        order = f"SO{sc.start // 86400}-{i + 1:04d}"
        code = f"{rng.randrange(10**6):06d}"
        size = rng.choice(("S", "M"))
        add(t0 - 1800, "send_book", locker, order=order, code=code, size=size)
        add(t0 + 600 + i * 300, "send_dropoff", locker, order=order, code=code)
        dropped.add(locker)
    for i in range(sc.returns if lockers else 0):
        locker = rng.choice(lockers)
        parcel = _s10(rng, "RR")
        code = f"{rng.randrange(10**6):06d}"
        add(t0 - 1800, "return_book", locker, parcel=parcel, code=code, size=rng.choice(("S", "M")))
        add(t0 + 900 + i * 300, "return_dropoff", locker, parcel=parcel, code=code)
        dropped.add(locker)
    t_collect = t0 + 2 * 3600
    for locker in sorted(dropped | (set(lockers) if sc.pickup_days else set())):
        add(t_collect, "collect", locker, courier=COURIER)
    if sc.pickup_days:
        for locker in lockers:
            add(0.0, "set_pickup_days", locker, days=sc.pickup_days)
        day = 1
        while t_collect + day * 86400 < sc.duration_s:
            for locker in lockers:
                add(t_collect + day * 86400, "collect", locker, courier=COURIER)
            day += 1
    if n_counter and handhelds:
        add(t_collect, "bag_pickup", handhelds[0], bag=make_bag(rng.randrange(10**11)), courier=COURIER)
    for i in range(sc.forced_doors if lockers else 0):
        # the last compartment: the one the workload's deposits reach last
        add(t0 + 1800 + i * 600, "door_forced", rng.choice(lockers), compartment=sc.compartments)
    for i in range(sc.guessers if lockers else 0):
        add(t0 + 2.5 * 3600 + i * 600, "guess", rng.choice(lockers), seed=rng.randrange(2**31))
    for i in range(sc.hand_deliveries if handhelds else 0):
        parcel = _s10(rng, "LX")
        add(t0 + 1800 + i * 300, "hh_intake", handhelds[0], parcel=parcel)
        add(t0 + 5400 + i * 300, "hand_delivery", handhelds[0], parcel=parcel, name="王大妈")
    for i in range(sc.permit_deposits if handhelds and lockers else 0):
        add(t0 + 3600 + i * 300, "permit_deposit", handhelds[0], locker=rng.choice(lockers),
            parcel=_s10(rng, "EE"), size=rng.choice(("S", "M")))
    for i in range(sc.remote_opens if lockers else 0):
        add(t0 + 2.75 * 3600 + i * 300, "remote_open", "clerk", locker=rng.choice(lockers),
            compartment=sc.compartments)
    for i in range(sc.out_of_service if lockers else 0):  # a door that does not latch, repaired by noon
        locker = rng.choice(lockers)
        add(t0 + 1.25 * 3600 + i * 300, "compartment_out", "clerk", locker=locker, n=i)
        add(t0 + 4.25 * 3600 + i * 300, "compartment_back", "clerk", locker=locker, n=i)
    if (sc.forced_doors or sc.guessers) and lockers:
        add(t0 + 3 * 3600, "clerk_alarms", "clerk")
