"""The outlet's own jobs in the workload: the outbound day and the clerk.

Each flow goes through the real part a person would use: the counter's
acceptance API on the gateway (the scale on a pty, the platform's signed
documents installed once), a send code typed on the locker's keypad after
the platform booked it by a signed ``provision_send`` command, the
courier's badge and ``9#`` retrieval, the courier's handheld recording the
counter bag's pickup, a door forced on the lock board, and the clerk
(a supervisor) signing in to the console and acknowledging and resolving
each alarm with a note, and the handheld app's own parcel flows (intake at
the outlet, hand delivery at the door). A door left open after a pickup,
a deposit or a courier's retrieval (the person walks away): the lock board
holds it open (``leave_open``), the locker raises
``door_left_open``, the clerk sees it in the console, the door is shut and
the clerk resolves the alarm. What the flows did goes to ``outlet.stats``; what
they must remember between actions (accepted waybills) to ``outlet.flows``.
A refused step raises :class:`Refused` with its reason, which the caller
counts as ``<action>_refused_<reason>``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from firmware.device import FlowError
from firmware.locker import codes as C
from handheld.jobs import PhotoSink
from handheld.scanning import ScanFilter
from handheld.text import Refused as HandheldRefused
from handheld.workflows import GatewayClient, ParcelFlows
from protocol.custody import RESERVED
from simulator import handheld_commands
from simulator.assembly import BADGE_SECRET, Outlet
from simulator.board_flows import BOARD_FLOWS
from simulator.counter_sim import WebClient, documents
from simulator.inproc import SimLocker
from simulator.refusal import Refused  # also simulator/actions.py's, from here
from simulator.workload import COURIER, Action

#: The clerk who handles alarms: a supervisor (a forced door is a critical alarm).
CLERK = ("anna", "sim-clerk-pass-2026")
GATEWAY_LOGIN = ("gw-o1", "gw-secret")  # the counter API's Basic login (the gateway's own account)
DAY = 86400
#: Virtual seconds a door left open moves its locker's clock on, per step, until the alarm.
LEFT_OPEN_STEP_S = 30
#: The door cycles a person may walk away from, by the action they are part of (its stat).
LEFT_OPEN_AFTER = {"pickup": "pickup", "deposit": "deposit", "retrieve": "collect"}


def _client(outlet: Outlet) -> WebClient:
    if not outlet.web_port:
        raise Refused("no_web")
    return WebClient(outlet.web_port, outlet.web_ca)


def _locker(outlet: Outlet, a: Action) -> SimLocker:
    dev = outlet.devices.get(a.device)
    if not isinstance(dev, SimLocker) or dev.app is None or dev.task is None:
        raise Refused("device_down")  # unix-port lockers: not driven by these flows yet
    return dev


# ------------------------------------------------------------------ counter
def _counter_ready(outlet: Outlet, web: WebClient) -> None:
    """The platform's catalogue and tariff installed through the API, once."""
    if outlet.flows.get("counter_docs"):
        return
    from protocol.canonical import dumps

    for doc in documents(outlet.outlet_id, int(time.time()) - 60):
        code, out = web.json("PUT", "/v1/counter/documents", raw=dumps(doc), user=GATEWAY_LOGIN)
        if code != 200:
            raise Refused(f"documents_{(out or {}).get('error', code)}")
    outlet.flows["counter_docs"] = True


def _accept(outlet: Outlet, args: dict[str, Any]) -> str:
    web = _client(outlet)
    _counter_ready(outlet, web)
    if outlet.scale is None:
        raise Refused("no_scale")
    outlet.scale.put(int(args["grams"]))
    time.sleep(0.3)  # the parcel settles on the pan: the desk waits for a stable window
    code, out = web.json("POST", "/v1/counter/weigh", raw=b"", user=GATEWAY_LOGIN)
    if code != 200:
        raise Refused(str((out or {}).get("error", code)))
    form: dict[str, Any] = {
        "box": args["box"], "reading": out["reading"], "service": args["service"], "waybill": args["waybill"],
        "sender": {"name": "村民", "phone": "13900000000", "address": "贵州省黔东南州雷山县西江镇"},
        "recipient": {"name": "收件人", "phone": args["phone"], "address": "城市路 1 号",
                      "postcode": args["postcode"]}}
    if "charity" in args:
        form["charity"] = args["charity"]
    code, out = web.json("POST", "/v1/counter/accept", form, user=GATEWAY_LOGIN)
    if code != 200:
        raise Refused(str((out or {}).get("error", code)))
    return str(out["waybill"])


async def counter_accept(outlet: Outlet, a: Action) -> None:
    """A parcel accepted at the counter: weighed, the form, the label, ``counter.accept``."""
    waybill = await asyncio.to_thread(_accept, outlet, a.args)
    outlet.flows.setdefault("accepted", []).append(waybill)
    outlet.stats["counter_accept"] += 1
    if a.args["service"] == "charity":
        outlet.stats["counter_accept_charity"] += 1


# ------------------------------------------------------------------ lockers
async def send_book(outlet: Outlet, a: Action) -> None:
    """The platform books a send order: a signed ``provision_send`` to the locker."""
    salt = "5e4d" * 4
    args = {"order": a.args["order"], "salt": salt, "hash": C.salted_hash(salt, a.args["code"]),
            "exp": outlet.clock.time() + DAY, "size": a.args["size"]}
    cmd = outlet.command(a.device, "provision_send", args, f"send-{a.args['order'].lower()}")
    outlet.central.push_command(outlet.outlet_id, "locker", cmd)
    outlet.stats["send_book"] += 1


async def send_dropoff(outlet: Outlet, a: Action) -> None:
    """The villager types the send code; a compartment opens for the parcel."""
    dev = _locker(outlet, a)
    deadline = time.monotonic() + 15
    while a.args["order"] not in dev.app.sends:  # the booking's way down: central, gateway, locker
        if time.monotonic() > deadline:
            raise Refused("not_booked")
        await asyncio.sleep(0.05)
    try:
        shown, _ = await asyncio.wait_for(dev.app.enter_code(a.args["code"], via="keypad"), 20)
    except FlowError as e:
        raise Refused(e.code) from None
    if shown != "send_ok":
        raise Refused(shown)
    outlet.stats["send_dropoff"] += 1


async def return_book(outlet: Outlet, a: Action) -> None:
    """The platform books a return (退件): a signed ``provision_return`` with the code."""
    salt = "7e7d" * 4
    args = {"parcel": a.args["parcel"], "salt": salt, "hash": C.salted_hash(salt, a.args["code"]),
            "exp": outlet.clock.time() + DAY, "size": a.args["size"]}
    cmd = outlet.command(a.device, "provision_return", args, f"ret-{a.args['parcel'].lower()}")
    outlet.central.push_command(outlet.outlet_id, "locker", cmd)
    outlet.stats["return_book"] += 1


async def return_dropoff(outlet: Outlet, a: Action) -> None:
    """The villager types the return code; the parcel waits for the courier."""
    dev = _locker(outlet, a)
    deadline = time.monotonic() + 15
    while a.args["parcel"] not in dev.app.codes:
        if time.monotonic() > deadline:
            raise Refused("not_booked")
        await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(dev.app.enter_code(a.args["code"], via="keypad"), 20)
    except FlowError as e:
        raise Refused(e.code) from None
    outlet.stats["return_dropoff"] += 1


async def guess(outlet: Outlet, a: Action) -> None:
    """Someone types random pickup codes at the keypad until the locker locks them out."""
    import random

    dev = _locker(outlet, a)
    rng = random.Random(a.args["seed"])
    for _ in range(50):
        try:
            await asyncio.wait_for(dev.app.enter_code(f"{rng.randrange(10**6):06d}", via="keypad"), 20)
        except FlowError as e:
            if e.code == "locked_out":
                outlet.stats["guess"] += 1
                raise Refused("locked_out") from None
            outlet.stats["guess_wrong"] += 1
            continue
        outlet.stats["guess_opened"] += 1  # a guess hit a live code: the check shows it
        return
    raise Refused("never_locked_out")


async def set_pickup_days(outlet: Outlet, a: Action) -> None:
    """The platform shortens a locker's pickup window: a signed ``config``."""
    dev = _locker(outlet, a)
    days = int(a.args["days"])
    outlet.central.push_command(outlet.outlet_id, "locker", outlet.command(
        a.device, "config", {"pickup_days": days}, f"cfg-days-{a.device}"))
    deadline = time.monotonic() + 15
    while dev.app.cfg.get("pickup_days") != days:
        if time.monotonic() > deadline:
            raise Refused("not_applied")
        await asyncio.sleep(0.05)
    outlet.stats["set_pickup_days"] += 1


async def collect(outlet: Outlet, a: Action) -> None:
    """The courier badges in and empties the retrieval list (outbound items among it)."""
    dev = _locker(outlet, a)
    lk = dev.app
    try:
        lk.courier_login(f"PE-C:{a.args['courier']}:{BADGE_SECRET}")
        try:
            done = await asyncio.wait_for(lk.retrieve_all(), 30)
        finally:
            lk.courier_logout()
    except FlowError as e:
        raise Refused(e.code) from None
    outlet.stats["collect"] += 1
    outlet.stats["collect_compartments"] += len(done)


async def bag_pickup(outlet: Outlet, a: Action) -> None:
    """The courier takes the counter's bag: its items on the handheld's manifest."""
    h = outlet.hh.get(a.device)
    if h is None:
        raise Refused("device_down")
    items = list(outlet.flows.get("accepted", []))
    if not items:
        raise Refused("empty")
    await asyncio.to_thread(h.emit, "handheld.bag_pickup", "custody",
                            {"bag": a.args["bag"], "items": items, "courier": a.args["courier"]})
    outlet.flows["accepted"] = []
    outlet.stats["bag_pickup"] += 1
    outlet.stats["bag_items"] += len(items)


async def door_forced(outlet: Outlet, a: Action) -> None:
    """A door pried open with no command: the locker raises ``door_forced``; then it is shut."""
    dev = _locker(outlet, a)
    cid = int(a.args["compartment"])

    def raised() -> int:
        with outlet.obs.lock:
            return sum(1 for e in outlet.obs.events.values()
                       if e["id"].startswith(a.device + ":") and e["type"] == "locker.alarm"
                       and e["body"].get("alarm") == "door_forced" and e["body"].get("compartment") == cid)

    before = raised()
    dev.bus.force_open(1, cid, True)
    try:
        deadline = time.monotonic() + 10
        while raised() == before:
            if time.monotonic() > deadline:
                raise Refused("no_alarm")
            await asyncio.sleep(0.02)
    finally:
        dev.bus.close_door(1, cid)
    outlet.stats["door_forced"] += 1


async def door_alarm(outlet: Outlet, a: Action) -> None:
    """The platform sets a locker's door-left-open alarm delay: a signed ``config``."""
    dev = _locker(outlet, a)
    secs = int(a.args["seconds"])
    outlet.central.push_command(outlet.outlet_id, "locker", outlet.command(
        a.device, "config", {"door_open_alarm_s": secs}, f"cfg-door-{a.device}"))
    deadline = time.monotonic() + 15
    while dev.app.cfg.get("door_open_alarm_s") != secs:
        if time.monotonic() > deadline:
            raise Refused("not_applied")
        await asyncio.sleep(0.05)
    outlet.stats["door_alarm"] += 1


def _alarms_of(outlet: Outlet, device: str, kind: str, cid: int) -> list[str]:
    with outlet.obs.lock:
        return sorted(e["id"] for e in outlet.obs.events.values()
                      if e["id"].startswith(device + ":") and e["type"] == "locker.alarm"
                      and e["body"].get("alarm") == kind and e["body"].get("compartment") == cid)


async def door_left_open(outlet: Outlet, a: Action) -> None:
    """A door cycle (``after``: a villager's pickup, a courier's deposit or
    retrieval) whose door the person walks away from:
    the board holds it open, the locker raises ``door_left_open`` once its
    delay has passed (in virtual mode the locker's clock moves on while
    the door stands open), the clerk sees the alarm in the console, the
    door is shut, the cycle ends as usual and the clerk resolves the alarm.
    Remembered in ``outlet.flows["doors_left_open"]`` for the check."""
    dev = _locker(outlet, a)
    lk = dev.app
    after = a.args["after"]
    virtual = outlet.sc.mode == "virtual"
    delay = int(lk.cfg.get("door_open_alarm_s", 120))
    if not virtual and delay > 10:
        raise Refused("alarm_slow")  # the platform's short delay did not arrive: minutes of real time
    pin = outlet.sc.start + int(a.t)
    if virtual:
        dev.hal.clock.pin = pin
    try:
        cid, item, cycle = _left_open_cycle(outlet, lk, a)
        before = _alarms_of(outlet, a.device, "door_left_open", cid)
        dev.bus.leave_open(1, cid)
        task = asyncio.ensure_future(cycle)
        try:
            alarm = await _left_open_alarm(outlet, dev, task, a.device, cid, before, pin, delay)
            outlet.flows.setdefault("doors_left_open", []).append(
                {"device": a.device, "compartment": cid, **item, "after": after, "alarm": alarm})
            listed = await asyncio.to_thread(_console_lists, outlet, alarm)
        finally:
            dev.bus.shut_left_open(1, cid)  # someone comes back and shuts it
            try:
                done = await asyncio.wait_for(task, 20)
            except FlowError as e:
                raise Refused(e.code) from None
            finally:
                if after != "pickup":
                    lk.courier_logout()
    finally:
        if virtual:
            dev.hal.clock.pin = None
    # the cycle itself happened: counted as its own action too
    outlet.stats[LEFT_OPEN_AFTER[after]] += 1
    if after == "retrieve":
        outlet.stats["collect_compartments"] += len(done)
    if not listed:
        raise Refused("not_listed")
    resolved = await asyncio.to_thread(_resolve, outlet, alarm, "door shut, parcel checked")
    outlet.stats["door_left_open"] += 1
    outlet.stats[f"door_left_open_after_{after}"] += 1
    outlet.stats["door_left_open_resolved"] += resolved
    if not _wan_down(outlet, a.t):
        if not await asyncio.to_thread(_own_synced, outlet, ("gateway.alarm_resolved",)):
            outlet.stats["clerk_alarms_unsynced"] += 1


def _left_open_cycle(outlet: Outlet, lk: Any, a: Action) -> tuple[int, dict[str, str], Awaitable[Any]]:
    """The compartment whose door will open for ``a``'s cycle, what it holds
    (``parcel``, or a send ``order`` for a retrieval) and the cycle not yet
    started. The compartment is chosen as the firmware chooses it, before
    the cycle starts (nothing else runs on the locker in between): a pickup
    the parcel's, a deposit a reserved or the smallest free one that fits,
    a retrieval the first of the courier's list. A courier's cycle logs the
    courier in; the caller logs them out."""
    after = a.args["after"]
    if after == "pickup":
        code = outlet.obs.codes.get(a.args["parcel"])
        c = lk.comps.find_parcel(a.args["parcel"])
        if code is None or c is None:
            raise Refused("no_code" if code is None else "not_in_locker")
        return int(c["id"]), {"parcel": a.args["parcel"]}, lk.pickup(code)
    try:
        lk.courier_login(f"PE-C:{a.args['courier']}:{BADGE_SECRET}")
    except FlowError as e:
        raise Refused(e.code) from None
    if after == "deposit":
        held = lk.comps.find_parcel(a.args["parcel"])
        c = held if held is not None and held["state"] == RESERVED else lk.comps.pick_free(a.args["size"])
        if c is None or held is not None and held["state"] != RESERVED:
            lk.courier_logout()
            raise Refused("full" if c is None else "already_in_locker")
        return int(c["id"]), {"parcel": a.args["parcel"]}, lk.deposit(a.args["parcel"], a.args["size"])
    listed = lk.comps.retrieval_list()
    if not listed:
        lk.courier_logout()
        raise Refused("nothing_to_retrieve")
    c = lk.comps.get(listed[0])
    item = {"order": str(c["order"])} if c.get("order") else {"parcel": str(c.get("parcel"))}
    return int(c["id"]), item, lk.retrieve_all()


async def _left_open_alarm(outlet: Outlet, dev: SimLocker, task: asyncio.Future[Any], device: str, cid: int,
                           before: list[str], pin: int, delay: int) -> str:
    """Wait for the new ``door_left_open`` alarm of ``cid``; in virtual mode
    move the locker's clock on a step at a time meanwhile (the firmware
    times the open door on its ticks, which follow the pin)."""
    deadline = time.monotonic() + delay + 20 if outlet.sc.mode != "virtual" else time.monotonic() + 20
    moved = 0
    while True:
        new = [x for x in _alarms_of(outlet, device, "door_left_open", cid) if x not in before]
        if new:
            return new[0]
        if task.done():  # refused, or the door shut after all
            exc = task.exception()
            raise Refused(exc.code if isinstance(exc, FlowError) else "no_alarm")
        if time.monotonic() > deadline:
            raise Refused("no_alarm")
        if outlet.sc.mode == "virtual" and dev.bus.is_open(1, cid) and moved < delay + 30 * 60:
            moved += LEFT_OPEN_STEP_S
            dev.hal.clock.pin = pin + moved
        await asyncio.sleep(0.02)


def _console_lists(outlet: Outlet, alarm: str) -> bool:
    """The clerk's console lists ``alarm`` (it reaches the gateway's store through the broker)."""
    web = _clerk(outlet)
    deadline = time.monotonic() + 20
    while True:
        _, listed = web.console()
        if alarm in listed:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _resolve(outlet: Outlet, alarm: str, note: str) -> int:
    """The clerk acknowledges ``alarm`` and resolves it with ``note``; 1 if resolved."""
    web = _clerk(outlet)
    csrf, _ = web.console()
    web.form("/clerk/alarm", {"csrf": csrf, "alarm": alarm, "action": "acknowledge", "note": "on my way"})
    code, _ = web.form("/clerk/alarm", {"csrf": csrf, "alarm": alarm, "action": "resolve", "note": note})
    if code != 303:
        raise Refused(f"console_{code}")
    outlet.flows.setdefault("resolved_alarms", set()).add(alarm)
    return 1


def _wan_down(outlet: Outlet, t: float) -> bool:
    """The scenario's WAN is down at virtual second ``t``: the clerk's audit cannot go up yet."""
    return any(f.kind == "wan_down" and f.at_s <= t < f.until_s for f in outlet.sc.faults)


# ------------------------------------------------------------------ the handheld
class _NoPhotos(PhotoSink):
    def add(self, path: Any, meta: dict[str, Any]) -> None:  # hand deliveries here confirm by name
        raise Refused("no_photos")


def _parcel_flows(outlet: Outlet, name: str) -> ParcelFlows:
    """The handheld app's parcel flows (``handheld/workflows.py``) on a
    simulated handheld: its events go out through the handheld's outbox."""
    pf: dict[str, ParcelFlows] = outlet.flows.setdefault("parcel_flows", {})
    if name not in pf:
        h = outlet.hh[name]
        state = outlet.dir / "handheld" / name / "flows"
        state.mkdir(parents=True, exist_ok=True)
        pf[name] = ParcelFlows(state, COURIER, outlet.outlet_id, lambda t, c, b: (h.emit(t, c, b), 0),
                               # a simulated reader never reads a neighbour's label by mistake
                               ScanFilter(other_window_s=0.0),
                               GatewayClient(h.gateway_url or "http://127.0.0.1:9"), _NoPhotos(),
                               now=lambda: float(outlet.clock.time()))
    return pf[name]


def _handheld(outlet: Outlet, a: Action) -> ParcelFlows:
    if a.device not in outlet.hh:
        raise Refused("device_down")
    return _parcel_flows(outlet, a.device)


async def hh_intake(outlet: Outlet, a: Action) -> None:
    """The courier scans a parcel into custody at the outlet with the handheld."""
    pf = _handheld(outlet, a)
    try:
        await asyncio.to_thread(pf.intake, a.args["parcel"], "camera")
    except HandheldRefused as e:
        raise Refused(e.code) from None
    outlet.flows.setdefault("hand_route", []).append(a.args["parcel"])
    outlet.stats["hh_intake"] += 1


async def hand_delivery(outlet: Outlet, a: Action) -> None:
    """The parcel on the courier's round, handed over at the door and confirmed by the
    delivery code the villager was sent (by name when the platform made none). The
    round's manifest is the platform's (``Outlet.push_round``), taken from the commands
    the handheld received."""
    pf = _handheld(outlet, a)
    await _until_round(outlet, a.device, pf)
    token = outlet.flows.get("round_tokens", {}).get(a.args["parcel"])
    method, value = ("code", token) if token else ("name", a.args["name"])
    try:
        await asyncio.to_thread(pf.hand_delivery, a.args["parcel"], method, value)
    except HandheldRefused as e:
        raise Refused(e.code) from None
    outlet.stats["hand_delivery"] += 1
    outlet.stats[f"hand_delivery_by_{method}"] += 1


async def _until_round(outlet: Outlet, name: str, pf: ParcelFlows, timeout: float = 20.0) -> None:
    """Take the platform's round manifest from the handheld's commands, as the app
    does: verified with the handheld's own key, applied, acknowledged. Refused
    ``no_manifest`` when none came (the link was down from the start)."""
    taken: set[bytes] = outlet.flows.setdefault("round_taken", set())
    await handheld_commands.until(outlet, outlet.hh[name], "manifest", taken, pf.load_manifest,
                                  lambda: pf.state.get("round") is not None, "no_manifest",
                                  "round_commands_refused", timeout)


async def permit_deposit(outlet: Outlet, a: Action) -> None:
    """The platform signs a deposit permit (one parcel, courier, handheld,
    an hour) with the locker's own key; the handheld forwards it
    (``handheld.forward_command``), the gateway queues it, the locker
    checks it and opens a compartment; the courier puts the parcel in."""
    h = outlet.hh.get(a.device)
    if h is None:
        raise Refused("device_down")
    device = a.args["locker"]
    if not isinstance(outlet.devices.get(device), SimLocker):
        raise Refused("device_down")
    n = outlet.flows["permits"] = int(outlet.flows.get("permits", 0)) + 1
    permit = outlet.keys.permit(device, "deposit", a.args["parcel"], COURIER, a.device, f"permit-{n}",
                         now=outlet.clock.time(), size=a.args["size"])
    await asyncio.to_thread(h.emit, "handheld.forward_command", "custody", {"kind": "locker", "cmd": permit})
    deadline = time.monotonic() + 20
    while True:
        with outlet.obs.lock:
            done = any(e["type"] == "locker.deposit" and e["body"].get("permit") == permit["id"]
                       for e in outlet.obs.events.values())
        if done:
            break
        if time.monotonic() > deadline:
            raise Refused("not_deposited")
        await asyncio.sleep(0.05)
    outlet.stats["permit_deposit"] += 1


# ------------------------------------------------------------------ the clerk
def _clerk_account(outlet: Outlet) -> None:
    """The supervisor's console account, made as the operator does (``postedge gateway clerk add``)."""
    if outlet.flows.get("clerk"):
        return
    from gateway import clerk_accounts
    from gateway.config import GatewayConfig

    clerk_accounts.add(GatewayConfig.load(outlet.gw_cfg), CLERK[0], "supervisor", CLERK[1])
    outlet.flows["clerk"] = True


def _handle_alarms(outlet: Outlet, wanted: set[str]) -> tuple[int, int]:
    """Sign in, and acknowledge then resolve (with a note) every alarm the
    console lists; returns (acknowledged, resolved)."""
    web = _clerk(outlet)
    deadline = time.monotonic() + 20
    while True:  # the alarms reach the gateway's store through the broker
        csrf, listed = web.console()
        if wanted <= set(listed) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    acked = resolved = 0
    for aid in listed:
        code, _ = web.form("/clerk/alarm", {"csrf": csrf, "alarm": aid, "action": "acknowledge",
                                            "note": "checking the locker"})
        acked += code == 303
        code, _ = web.form("/clerk/alarm", {"csrf": csrf, "alarm": aid, "action": "resolve",
                                            "note": "door shut, contents checked"})
        resolved += code == 303
    missing = wanted - set(listed)
    if missing:
        outlet.stats["clerk_alarms_not_listed"] += len(missing)
    if not _own_synced(outlet, ("gateway.alarm_acknowledged", "gateway.alarm_resolved")):
        outlet.stats["clerk_alarms_unsynced"] += 1
    return acked, resolved


def _own_synced(outlet: Outlet, types: tuple[str, ...], timeout: float = 15.0) -> bool:
    """Wait until the gateway's own events of ``types`` reached the platform.
    The run settles on the devices' events (the ledger's), not the
    gateway's own: a clerk acting late in a short run would otherwise be
    judged before the audit of it went up."""
    from gateway.store.events import EventStore

    marks = ",".join("?" * len(types))
    deadline = time.monotonic() + timeout
    while True:
        s = EventStore(outlet.gw_db)
        try:
            left = s.db.execute(f"SELECT count(*) FROM events WHERE synced_at IS NULL AND type IN ({marks})",
                                types).fetchone()[0]
        finally:
            s.close()
        if not left:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _clerk(outlet: Outlet) -> WebClient:
    """The supervisor at the console, signed in once for the day (a
    login is a memory-hard password check: seconds on a busy machine);
    signed in again if the session is gone (a gateway restart)."""
    web: WebClient | None = outlet.flows.get("clerk_web")
    if web is not None and web.request("GET", "/clerk?lang=en")[0] == 200:
        return web
    _clerk_account(outlet)
    web = _client(outlet)
    if not web.login(*CLERK):
        raise Refused("login")
    outlet.flows["clerk_web"] = web
    return web


def _request(outlet: Outlet, kind: str, device: str, cid: int, note: str) -> str:
    """A supervisor's request in the console (``open``, ``out_of_service``,
    ``in_service``); its request id as the platform sees it (the
    ``gateway.clerk_request`` event)."""
    web = _clerk(outlet)
    csrf, _ = web.console()
    code, _ = web.form("/clerk/compartment", {"csrf": csrf, "device": device, "compartment": str(cid),
                                              "action": kind, "note": note})
    if code != 303:
        raise Refused(f"console_{code}")
    seen: set[str] = outlet.flows.setdefault("requests_seen", set())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the request goes up with the gateway's own events
        for ev in platform_requests(outlet):
            b = ev["body"]
            if (b.get("request") == kind and b.get("device") == device and b.get("compartment") == cid
                    and ev["id"] not in seen):
                seen.add(ev["id"])
                return str(ev["id"])
        time.sleep(0.1)
    raise Refused("not_at_platform")


async def _decided(outlet: Outlet, rid: str) -> str:
    """The id of the command the platform signed for request ``rid``
    (``central/clerk_requests.py``); Refused with its reason if it refused."""
    deadline = time.monotonic() + 20
    while True:
        for d in outlet.central.duties.clerk_requests.decisions(outlet.outlet_id):
            if d["event"] == rid:
                if d["verdict"] != "signed":
                    raise Refused(f"platform_{d['reason']}")
                return str(d["cmd"])
        if time.monotonic() > deadline:
            raise Refused("not_decided")
        await asyncio.sleep(0.05)


async def _device_reported(outlet: Outlet, device: str, etype: str, cmd_id: str) -> None:
    """Wait until ``device`` reports ``etype`` for command ``cmd_id``."""
    deadline = time.monotonic() + 20
    while True:
        with outlet.obs.lock:
            done = any(e["type"] == etype and e["body"].get("cmd") == cmd_id
                       and e["id"].startswith(device + ":") for e in outlet.obs.events.values())
        if done:
            return
        if time.monotonic() > deadline:
            raise Refused("not_applied")
        await asyncio.sleep(0.05)


def platform_requests(outlet: Outlet) -> list[dict[str, Any]]:
    """The clerks' requests the platform holds (a central-side fact: re-point it here)."""
    held = outlet.central.held(outlet.outlet_id)
    return [e for e in held.values() if e.get("type") == "gateway.clerk_request"]


async def remote_open(outlet: Outlet, a: Action) -> None:
    """The clerk asks for a remote open in the console; the central service
    decides (``central/clerk_requests.py``) and signs an ``open`` command
    naming the request (``args.request``); the locker opens the door and
    reports it."""
    device, cid = a.args["locker"], int(a.args["compartment"])
    if not isinstance(outlet.devices.get(device), SimLocker):
        raise Refused("device_down")
    note = "villager's parcel stuck behind the door"
    rid = await asyncio.to_thread(_request, outlet, "open", device, cid, note)
    cmd_id = await _decided(outlet, rid)
    await _device_reported(outlet, device, "locker.remote_open", cmd_id)
    outlet.stats["remote_open"] += 1


async def compartment_out(outlet: Outlet, a: Action) -> None:
    """The supervisor takes a faulty compartment out of service: the
    largest-numbered free one of the locker that is not the last free one of
    its size; the platform signs ``service``, the locker
    stops offering it. Remembered for ``compartment_back``."""
    device = a.args["locker"]
    dev = outlet.devices.get(device)
    if not isinstance(dev, SimLocker):
        raise Refused("device_down")
    free = [c for c in dev.app.comps.all() if c["state"] == "free"]
    spare = [c["id"] for c in free if sum(1 for o in free if o["size"] == c["size"]) > 1]
    if not spare:  # never the last free one of a size: the day's deposits would meet "full"
        raise Refused("no_free_compartment")
    cid = max(spare)
    rid = await asyncio.to_thread(_request, outlet, "out_of_service", device, cid, "door does not latch")
    await _device_reported(outlet, device, "locker.service", await _decided(outlet, rid))
    outlet.flows.setdefault("out_of_service", {})[a.args["n"]] = (device, cid)
    outlet.stats["compartment_out"] += 1


async def compartment_back(outlet: Outlet, a: Action) -> None:
    """The repaired compartment back in service, the same way."""
    taken = outlet.flows.get("out_of_service", {}).pop(a.args["n"], None)
    if taken is None:
        raise Refused("none_out")
    device, cid = taken
    rid = await asyncio.to_thread(_request, outlet, "in_service", device, cid, "latch replaced")
    await _device_reported(outlet, device, "locker.service", await _decided(outlet, rid))
    outlet.stats["compartment_back"] += 1


async def clerk_alarms(outlet: Outlet, a: Action) -> None:
    done = outlet.flows.get("resolved_alarms", set())  # doors left open: resolved as they were shut
    with outlet.obs.lock:
        wanted = {e["id"] for e in outlet.obs.events.values() if e["type"].endswith(".alarm")} - done
    acked, resolved = await asyncio.to_thread(_handle_alarms, outlet, wanted)
    outlet.stats["clerk_alarms"] += 1
    outlet.stats["clerk_acknowledged"] += acked
    outlet.stats["clerk_resolved"] += resolved


OUTLET_FLOWS: dict[str, Callable[[Outlet, Action], Awaitable[None]]] = {
    "counter_accept": counter_accept, "send_book": send_book, "send_dropoff": send_dropoff,
    "collect": collect, "bag_pickup": bag_pickup, "door_forced": door_forced, "clerk_alarms": clerk_alarms,
    "return_book": return_book, "return_dropoff": return_dropoff, "guess": guess, "remote_open": remote_open,
    "compartment_out": compartment_out, "compartment_back": compartment_back,
    "hh_intake": hh_intake, "hand_delivery": hand_delivery, "permit_deposit": permit_deposit,
    "set_pickup_days": set_pickup_days, "door_alarm": door_alarm, "door_left_open": door_left_open,
    **BOARD_FLOWS,
}
