"""Waiting, after the workload, for what the devices emitted to reach the platform.

A run is judged on what arrived; judging it while events are still in
flight would report losses that are only delays. So the run waits until the
platform holds every emitted event and submitted photo, or until nothing is
in flight any more (the gateway's backlog is empty and it holds every
event: what the platform lacks then, it lost), or until the timeout.
"""

from __future__ import annotations

import asyncio
import time

from gateway.store.events import EventStore
from simulator.assembly import Outlet
from simulator.sampling import sample_backlog

#: How long the end of a run waits for every device to be online in the
#: gateway again (a unix-port locker rebooting after a power cut late in a
#: virtual run takes seconds of wall time the windows do not give it).
PRESENCE_GRACE_S = 30.0

#: How long, after a device came back online, before the events it sent on
#: the way are counted as emitted: a unix-port locker's log reaches the
#: simulator's tap a moment after the MQTT publish.
QUIET_S = 1.0


async def settle(outlet: Outlet, timeout: float = 120) -> None:
    """Everything emitted reaches the central side (or the timeout); then
    every device online in the gateway (or ``PRESENCE_GRACE_S``), so
    ``devices_back_online`` judges the run's end, not a reconnect in flight;
    then, if a device had to come back, what it emitted on the way."""
    await _settle_events(outlet, timeout)
    if await _settle_presence(outlet):
        # a device that came back (a locker rebooting after a late power cut)
        # sends its boot and recovery events only now: wait for those too
        await _settle_events(outlet, timeout)


async def _settle_presence(outlet: Outlet) -> bool:
    """Wait for every device online; True if one was not at first."""
    watch = outlet.presence_watch
    devices = [*outlet.devices, *outlet.hh]
    if watch is None or not devices:
        return False
    deadline = time.monotonic() + PRESENCE_GRACE_S
    view: dict[str, bool] | None = None
    waited = False
    while time.monotonic() < deadline:
        view = await asyncio.to_thread(watch.read)
        if view is not None and all(view.get(d) for d in devices):
            if waited:
                await asyncio.sleep(QUIET_S)  # its boot events: logged a moment after it connects
            return waited
        waited = True
        await asyncio.sleep(0.2)
    outlet.log("settle_presence_timeout", offline=[d for d in devices if not (view or {}).get(d)])
    return True


async def _settle_events(outlet: Outlet, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with outlet.obs.lock:
            want = set(outlet.obs.emitted)
        have = set(outlet.central.received_at(outlet.outlet_id))
        photos = outlet.central.photos()
        told = _all_told(outlet)
        if want <= have and set(outlet.photos_submitted()) <= photos and told:
            return
        if told and _quiescent(outlet, want):
            # Nothing is in flight any more: the gateway holds every event and the platform
            # acked them all. What the platform lacks now, it lost; waiting will not bring it.
            outlet.log("settle_quiescent", missing=len(want - have))
            return
        for h in outlet.hh.values():  # the uploader retries what the gateway has not confirmed
            if h.queue is not None:
                await asyncio.to_thread(h.upload)
        await asyncio.sleep(0.2)
        sample_backlog(outlet)
    outlet.log("settle_timeout", missing=len(want - have))


def _all_told(outlet: Outlet) -> bool:
    """With the outlet's SMS notifier on, every deposit the platform holds
    has its notice decided and that decision upstream (``notify.route`` or
    the modem's ``notify.sent``): the notifier decides after the platform's
    ack, so its events can trail the devices' by a few passes."""
    if outlet.modem is None:
        return True
    return all(outlet.notices().values())


def _quiescent(outlet: Outlet, want: set[str]) -> bool:
    try:
        s = EventStore(outlet.gw_db)
        try:
            backlog = s.backlog()["count"]
            stored = {r[0] for r in s.db.execute("SELECT id FROM events")}
        finally:
            s.close()
    except Exception:  # noqa: BLE001 - the gateway may be restarting
        return False
    photos_done = set(outlet.photos_submitted()) <= outlet.central.photos()
    # the platform acked it all; on scale-out, also written where it is read
    return backlog == 0 and want <= stored and photos_done and outlet.central.written()


async def window_stored(outlet: Outlet, timeout: float = 3.0, stall: float = 0.5) -> bool:
    """Virtual mode, after each window: wait until the gateway has stored
    every device event emitted so far (each entered its device's outbox
    during the window's actions), so the clock does not move on under events
    still in flight: a hop's latency in simulated time is not a window long
    only because the run was fast, and the gateway's timers (a deposit's text
    held for its delay) start from what the window brought. Gives up after
    ``timeout``, or once the stored count has not grown for ``stall`` (a
    device offline, the gateway down or its disk full: those delays are real
    and stay in the figures); False then."""
    if not outlet.clock.virtual:
        return True
    with outlet.obs.lock:
        want = {e for e in (*outlet.obs.emitted, *outlet.obs.broker_seen) if not e.startswith("gw-")}
    if not want:
        return True
    start = last_move = time.monotonic()
    last = -1
    while True:
        have = await asyncio.to_thread(_stored_count, outlet)
        if have >= len(want):
            return True
        now = time.monotonic()
        if have != last:
            last, last_move = have, now
        if now - start > timeout or now - last_move > stall:
            return False
        await asyncio.sleep(0.01)


def _stored_count(outlet: Outlet) -> int:
    try:
        s = EventStore(outlet.gw_db)
    except Exception:  # noqa: BLE001 - the gateway's store mid-fault: not stored yet
        return 0
    try:
        return int(s.db.execute("SELECT COUNT(*) FROM events WHERE id NOT LIKE 'gw-%'").fetchone()[0])
    finally:
        s.close()
