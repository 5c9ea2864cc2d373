"""Scenario files: what runs, what it does, what goes wrong, what must hold.

A scenario is TOML, declared with pydantic (common/config.py) and validated
at load with errors that name the key::

    name = "village-day"
    seed = 7

    [time]
    mode = "virtual"        # "virtual": as fast as it goes; "real": the clock is the wall clock
    hours = 24.0            # length of the outlet day(s) simulated
    start = 1795881600      # virtual Unix time of hour 0 (virtual mode; default: today's 00:00 in China)
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
    counter_parcels = 3         # outbound (寄件): produce in standard boxes accepted at the counter
    charity_parcels = 1         # ... and charity parcels (公益包裹)
    send_dropoffs = 1           # villagers' locker drop-offs by send code
    outbound_h = 13.0           # hour the outbound day starts; the courier collects 2 h later
    forced_doors = 1            # doors forced open (alarm door_forced); the clerk resolves each alarm
    returns = 1                 # returns booked by the platform, dropped off by return code, retrieved
    guessers = 1                # someone typing pickup codes at random until the lockout stops them
    remote_opens = 1            # the clerk asks the platform for a remote open; the platform signs it
    out_of_service = 1          # a supervisor takes a compartment out of service and, later, back
    hand_deliveries = 1         # parcels the courier's handheld takes in and hands to the villager
    permit_deposits = 1         # deposits under a platform-signed permit the handheld forwards
    pickup_days = 1             # parcels expire after this many days (0: the locker's own, 7); the courier
                                # retrieves what expired at outbound_h + 2 every day
    door_left_open_rate = 0.02  # share of pickups, deposits and retrievals after which the door is
                                # left open (at least one of each if > 0): the locker's
                                # door_left_open alarm, the clerk resolves it
    board_sites = 1             # 政讯通 sites a courier's handheld takes through the lifecycle: survey,
                                # approval, install, maintenance with a condition report, review

    [[faults]]
    kind = "wan_down"           # wan_down, broker_restart, gateway_kill, power_cut, clock_skew,
    at_h = 8.0                  # disk_full (the gateway's own tmpfs), mqtt (fault proxy rules)
    for_h = 6.0

    [fleet]                     # a county (simulator/fleet.py): this many outlets, one central service
    outlets = 6
    [[fleet.faults]]            # a fault at one outlet only: the keys of [[faults]], and
    outlet = 3                  # which outlet (from 1)
    kind = "wan_down"
    at_h = 6.0
    for_h = 10.0

    [expect]
    ledger = true               # every event reaches the central side exactly once
    domain = true               # parcel, compartment, door and photo rules hold
    min_central_events = 100
    max_refused = 20            # actions refused or not done (locker full, lockout, device down...)
    max_refused_by = { "deposit.full" = 10 }   # ... and per reason, as the result counts them
    online_within_min = 10      # every device online in the gateway again within this many
                                # wall-clock minutes of each fault's end (default 10)
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from common import config
from common.config import KeyProblem, Problem, Section

FAULT_KINDS = ("wan_down", "broker_restart", "gateway_kill", "power_cut", "clock_skew", "mqtt", "disk_full",
               "central_lossy", "device_duplicating",  # these two: sabotage, to prove the checks bite
               "flood", "poison", "takeover", "forged")  # a hostile device login (simulator/hostile.py)
#: Faults by a hostile device login: the outlet gets one extra locker login for them.
HOSTILE_KINDS = ("flood", "poison", "takeover", "forged")
MQTT_ACTIONS = ("drop", "delay", "duplicate", "reorder")


#: The commented scenario ``postedge sim new`` writes (every key, both languages).
TEMPLATE = Path(__file__).with_name("scenario_template.toml")


class ScenarioError(config.ConfigError):
    """A scenario file that cannot be run; names the file and the key."""


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


CHINA_UTC_OFFSET_S = 8 * 3600


def day_start(now: float | None = None) -> int:
    """Hour 0 of a virtual run by default: the latest midnight in China
    (UTC+8) at or before ``now``. Not a fixed date: what the simulator does
    not run on the scenario's clock (the central service's time and pickup
    notices, the certificates' validity) stays on the wall's, and a run dated
    today keeps the two within a day of each other; a report's times then
    read like the day it ran."""
    t = int(time.time() if now is None else now)
    return (t + CHINA_UTC_OFFSET_S) // 86400 * 86400 - CHINA_UTC_OFFSET_S


#: The workload's counts whose actions are timed from ``outbound_h`` (simulator/workload.py
#: ``outbound`` and ``boards``), and the hours the last of them needs after it (a board's
#: maintenance, four and a quarter hours in, and the clerk's repairs).
OUTBOUND_DAY = ("counter_parcels", "charity_parcels", "send_dropoffs", "returns", "forced_doors", "guessers",
                "hand_deliveries", "permit_deposits", "remote_opens", "out_of_service", "board_sites")
OUTBOUND_DAY_H = 4.5


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    mode: str = "virtual"
    hours: float = 24.0
    start: int = field(default_factory=lambda: day_start())  # hour 0: today's 00:00 in China unless set
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
    counter_parcels: int = 0
    charity_parcels: int = 0
    send_dropoffs: int = 0
    outbound_h: float = 13.0
    forced_doors: int = 0
    returns: int = 0
    guessers: int = 0
    remote_opens: int = 0
    out_of_service: int = 0
    hand_deliveries: int = 0
    permit_deposits: int = 0
    pickup_days: int = 0
    door_left_open_rate: float = 0.0
    board_sites: int = 0
    faults: tuple[Fault, ...] = ()
    # A county (``[fleet]``): this many outlets against one central service
    # (0: one outlet, no county), and faults at one outlet only (1-based).
    fleet_outlets: int = 0
    fleet_faults: tuple[tuple[int, Fault], ...] = ()
    expect: dict[str, Any] = field(default_factory=lambda: {"ledger": True, "domain": True})
    notify: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def duration_s(self) -> float:
        return self.hours * 3600.0

    def warnings(self) -> list[config.Problem]:
        """What is valid but will not do what the author meant: a fault that
        starts after the run ends is never injected, one that outlasts the
        run is cut at its end. Shown before a run and by ``sim check``."""
        out = []
        listed = [("", i, f) for i, f in enumerate(self.faults)]
        listed += [("fleet_", i, f) for i, (_, f) in enumerate(self.fleet_faults)]
        for pre, i, f in listed:
            if f.at_h >= self.hours:
                out.append(config.Problem(f"{pre}fault_after_end", i=i, kind=f.kind, at_h=f.at_h,
                                          hours=self.hours))
            elif f.at_h + f.for_h > self.hours:
                out.append(config.Problem(f"{pre}fault_cut", i=i, kind=f.kind, until_h=f.at_h + f.for_h,
                                          hours=self.hours))
        asked = [k for k in OUTBOUND_DAY if getattr(self, k)]
        if asked and self.outbound_h >= self.hours:
            out.append(config.Problem("outbound_after_end", at_h=self.outbound_h, hours=self.hours,
                                      keys=", ".join(asked)))
        elif asked and self.outbound_h + OUTBOUND_DAY_H > self.hours:
            out.append(config.Problem("outbound_cut", at_h=self.outbound_h, need_h=OUTBOUND_DAY_H,
                                      hours=self.hours, keys=", ".join(asked)))
        return out

    @property
    def counter_desk(self) -> bool:
        """The outlet runs the counter's acceptance desk (scale, label printer)."""
        return self.counter_parcels + self.charity_parcels > 0

    @property
    def web(self) -> bool:
        """The gateway's web server is needed (uploads, the counter API, the clerk console)."""
        return self.handhelds > 0 or self.counter_desk or self.clerk

    @property
    def clerk(self) -> bool:
        """A clerk handles the day's alarms in the console (a forced door, a guesser's lockout)."""
        return (self.forced_doors + self.guessers + self.remote_opens + self.out_of_service > 0
                or self.door_left_open_rate > 0)


# The file's shape, declared (common/config.py): each table a section whose
# bounds are in its fields; ``parse`` flattens them into the Scenario a run uses.

Hours = Annotated[float, Field(ge=0.0)]


class TimeSection(Section):
    mode: Literal["virtual", "real"] = "virtual"
    hours: Annotated[float, Field(ge=0.01, le=24 * 14)] = 24.0
    start: Annotated[int, Field(ge=0, le=2**40)] | None = None
    speed: Annotated[float, Field(ge=0.001, le=1e6)] = 1.0


class OutletSection(Section):
    lockers: Annotated[int, Field(ge=0, le=5000)] = 2
    compartments: Annotated[int, Field(ge=1, le=64)] = 24
    scanners: Annotated[int, Field(ge=0, le=64)] = 1
    handhelds: Annotated[int, Field(ge=0, le=64)] = 0
    locker_mode: Literal["inprocess", "unixport"] = "inprocess"
    poll_ms: Annotated[int, Field(ge=1, le=5000)] = 10


def _range(v: list[float]) -> list[float]:
    if len(v) != 2 or v[0] > v[1] or v[0] < 0:
        raise Problem("low_high", got=v)
    return v


class WorkloadSection(Section):
    parcels: Annotated[int, Field(ge=0, le=1_000_000)] = 40
    arrivals_by_hour: list[float] = list(Scenario.arrivals_by_hour)
    pickup_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.8
    pickup_delay_h: list[float] = [0.5, 20.0]
    deposit_delay_min: list[float] = [10.0, 60.0]
    window_min: Annotated[float, Field(ge=0.1, le=1440)] = 15.0
    photos: Annotated[int, Field(ge=0, le=10_000)] = 0
    # Outbound (寄件): counter acceptances, charity parcels, locker
    # drop-offs by send code, from ``outbound_h``; the courier collects 2 h later.
    counter_parcels: Annotated[int, Field(ge=0, le=500)] = 0
    charity_parcels: Annotated[int, Field(ge=0, le=500)] = 0
    send_dropoffs: Annotated[int, Field(ge=0, le=500)] = 0
    outbound_h: Annotated[float, Field(ge=0.0, le=24 * 14)] = 13.0
    # Doors forced open (alarm door_forced), each resolved by the clerk in the console.
    forced_doors: Annotated[int, Field(ge=0, le=100)] = 0
    # Returns (退件) booked by the platform, dropped off by their return codes
    # and retrieved by the courier with the outbound collection.
    returns: Annotated[int, Field(ge=0, le=500)] = 0
    # Pickup-code guessers at a locker's keypad, each until the lockout.
    guessers: Annotated[int, Field(ge=0, le=100)] = 0
    # Remote opens the clerk (a supervisor) requests in the console; the
    # platform signs each as an ``open`` command naming the request.
    remote_opens: Annotated[int, Field(ge=0, le=100)] = 0
    out_of_service: Annotated[int, Field(ge=0, le=20)] = 0
    # Parcels the courier's handheld takes in at the outlet and hands over at
    # the door (confirmed by name): the handheld app's own parcel flows.
    hand_deliveries: Annotated[int, Field(ge=0, le=500)] = 0
    # Deposits under a permit the platform signs for one parcel, courier and
    # handheld, forwarded by that handheld through the gateway to the locker.
    # A permit lives an hour of the scenario's time: in virtual mode the
    # gateway expires it by the scenario's clock too (common/clock.py).
    permit_deposits: Annotated[int, Field(ge=0, le=500)] = 0
    # Parcels expire after this many days (a signed ``config`` to every
    # locker at the start; 0 leaves the locker's own 7); the courier then
    # retrieves the expired ones at ``outbound_h`` + 2 every day.
    pickup_days: Annotated[int, Field(ge=0, le=60)] = 0
    # The share of the door cycles (inbound pickups, the courier's deposits
    # and retrievals) after which the person walks away from the open door
    # (at least one of each kind when above 0): the locker raises
    # ``door_left_open``; the clerk sees it in the console, has the door
    # shut and resolves it. In virtual mode the locker's clock moves on
    # while the door stands open; in real mode the platform first gives
    # those lockers a short alarm delay (a signed ``config``).
    door_left_open_rate: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0
    # 政讯通 bulletin-board sites a courier's handheld takes through the
    # lifecycle (handheld/jobs.py against central/boards.py): a survey the
    # platform approves, an install job, a maintenance job with a condition
    # report and a photo first taken too far from the board, a poster job
    # not done; each job reviewed by the platform.
    board_sites: Annotated[int, Field(ge=0, le=20)] = 0

    _pairs = field_validator("pickup_delay_h", "deposit_delay_min")(_range)

    @field_validator("arrivals_by_hour")
    @classmethod
    def _day(cls, v: list[float]) -> list[float]:
        if len(v) != 24:
            raise Problem("day_hours", n=len(v))
        if any(x < 0 for x in v) or not sum(v):
            raise Problem("day_weights")
        return v


class FaultSection(Section):
    kind: Literal[FAULT_KINDS]  # type: ignore[valid-type]
    at_h: Hours
    for_h: Hours = 0.0
    device: str = ""
    skew_s: int = 0
    action: Literal[("", *MQTT_ACTIONS)] = ""  # type: ignore[valid-type]
    packet: str = "PUBLISH"
    topic: str = ""
    p: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    delay_ms: Annotated[int, Field(ge=0)] = 0
    every: Annotated[int, Field(ge=1)] = 10

    @model_validator(mode="after")
    def _complete(self) -> FaultSection:
        if self.kind == "mqtt" and not self.action:
            raise KeyProblem("action", Problem("one_of", choices=", ".join(MQTT_ACTIONS), got="''"))
        if self.kind in ("wan_down", "mqtt", "disk_full", "flood", "takeover") and self.for_h <= 0:
            raise KeyProblem("for_h", Problem("fault_needs_hours", kind=self.kind))
        return self


class FleetFaultSection(FaultSection):
    """``[[fleet.faults]]``: a fault at one outlet of the county only. Not a
    fault of the platform (``central_lossy``): the county shares one central
    service, so it would lose every outlet's events, not the one named."""

    outlet: Annotated[int, Field(ge=1, le=500)]

    @model_validator(mode="after")
    def _at_the_outlet(self) -> FleetFaultSection:
        if self.kind == "central_lossy":
            raise KeyProblem("kind", Problem("fleet_fault_central", kind=self.kind))
        return self


class FleetSection(Section):
    """``[fleet]``: the scenario run at ``outlets`` outlets against one
    central service (simulator/fleet.py), each with its own seed; the
    county's own faults each hit one outlet (``outlet``, counted from 1)."""

    outlets: Annotated[int, Field(ge=1, le=500)] = 1
    faults: list[FleetFaultSection] = []

    @model_validator(mode="after")
    def _outlets_exist(self) -> FleetSection:
        for i, f in enumerate(self.faults):
            if f.outlet > self.outlets:
                raise KeyProblem("faults", Problem("fleet_no_such_outlet", i=i, outlet=f.outlet,
                                                               outlets=self.outlets))
        return self


class ExpectSection(Section):
    ledger: bool = True
    domain: bool = True
    min_central_events: int | None = None
    max_lost: int | None = None
    # Refused actions (locker full, lockout, a device down...): at most this
    # many in all, and per reason ("deposit.full"), as the result counts them.
    max_refused: Annotated[int, Field(ge=0)] | None = None
    max_refused_by: dict[str, Annotated[int, Field(ge=0)]] = {}
    # Every device online in the gateway again within this many wall-clock
    # minutes of each fault's end, and all online at the end
    # (``devices_back_online``, simulator/results.py; wall time because
    # reconnecting runs on the wall clock in virtual runs too).
    online_within_min: Annotated[float, Field(gt=0.0, le=1440.0)] = 10.0


class NotifySection(Section):
    """``[notify]``: the gateway's SMS notifier on a simulated modem
    (``simulator/modem_sim.py``). ``delay_s`` is wall-clock seconds (the
    gateway runs on the wall clock); ``contacts`` the share of parcels the
    platform has a phone number for."""

    enabled: bool = False
    delay_s: Annotated[float, Field(ge=0.0, le=3600.0)] = 3.0
    contacts: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0


class ScenarioFile(Section):
    name: Annotated[str, Field(min_length=1)]
    seed: int = 1
    time: TimeSection = TimeSection()
    outlet: OutletSection = OutletSection()
    workload: WorkloadSection = WorkloadSection()
    faults: list[FaultSection] = []
    fleet: FleetSection | None = None
    expect: ExpectSection = ExpectSection()
    notify: NotifySection = NotifySection()

    @model_validator(mode="after")
    def _devices_exist(self) -> ScenarioFile:
        """A fault that names a device names one the outlet has (a locker or
        a scanner: the devices a power cut, a clock skew or a duplicating
        sender can hit); caught here rather than when the run reaches it."""
        have = devices_of(self.outlet.lockers, self.outlet.scanners)
        named = [("faults", i, f) for i, f in enumerate(self.faults)]
        named += [("fleet", i, f) for i, f in enumerate(self.fleet.faults if self.fleet else [])]
        for key, i, f in named:
            if f.device and f.device not in have:
                where = "faults" if key == "faults" else "fleet.faults"
                raise KeyProblem(key, Problem("fault_no_such_device", where=where, i=i, device=f.device,
                                              have=", ".join(have)))
        return self


def devices_of(lockers: int, scanners: int) -> list[str]:
    """The outlet's simulated device names: lockers ``lk01``.., then scanners ``sc01``.."""
    return [f"lk{i + 1:02d}" for i in range(lockers)] + [f"sc{i + 1:02d}" for i in range(scanners)]


def parse(doc: dict[str, Any], path: str = "") -> Scenario:
    """A validated Scenario from a TOML document; ScenarioError names the key."""
    try:
        f = config.parse(ScenarioFile, doc, "scenario")
    except config.ConfigError as e:
        where = tuple(w.removeprefix("scenario.") for w in e.where)
        raise ScenarioError(where=where, problem=e.problem) from None
    w = f.workload
    clock = f.time.model_dump()
    if clock["start"] is None:
        clock["start"] = day_start()
    return Scenario(
        name=f.name, seed=f.seed, path=path, **clock, **f.outlet.model_dump(),
        parcels=w.parcels, arrivals_by_hour=tuple(w.arrivals_by_hour), pickup_rate=w.pickup_rate,
        pickup_delay_h=(w.pickup_delay_h[0], w.pickup_delay_h[1]),
        deposit_delay_min=(w.deposit_delay_min[0], w.deposit_delay_min[1]),
        window_min=w.window_min, photos=w.photos, counter_parcels=w.counter_parcels,
        charity_parcels=w.charity_parcels, send_dropoffs=w.send_dropoffs, outbound_h=w.outbound_h,
        forced_doors=w.forced_doors, returns=w.returns, guessers=w.guessers,
        remote_opens=w.remote_opens, out_of_service=w.out_of_service, hand_deliveries=w.hand_deliveries,
        permit_deposits=w.permit_deposits, pickup_days=w.pickup_days,
        door_left_open_rate=w.door_left_open_rate, board_sites=w.board_sites,
        faults=tuple(sorted((Fault(**x.model_dump()) for x in f.faults), key=lambda x: x.at_h)),
        fleet_outlets=f.fleet.outlets if f.fleet else 0,
        fleet_faults=tuple((x.outlet, Fault(**x.model_dump(exclude={"outlet"})))
                           for x in (f.fleet.faults if f.fleet else [])),
        expect=f.expect.model_dump(exclude_none=True), notify=f.notify.model_dump())


def load(path: Path | str) -> Scenario:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ScenarioError(problem=config.Problem("cannot_read", path=p, why=e.strerror or e)) from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError.at(str(p), config.Problem("not_toml", why=e)) from None
    try:
        return parse(doc, str(p))
    except ScenarioError as e:
        raise e.within(p) from None  # the file's name on every error, as `sim check a b c` lists them
