"""The platform's answer to a revoked device: the gateway cuts a
stolen handheld off at once and reports ``gateway.device_revoked``
(``gateway/revoke.py``); the platform, which alone holds the lockers' keys,
signs a ``revoke`` command for every locker of that outlet
(``protocol/revocation.py``), so the permits the thief still carries are
refused even by a locker that cannot reach the gateway's list. The revoked
device is retired in the registry, so no new permit is signed for it.

Once per report: answered events are kept in ``revocations_answered``,
keyed by (outlet, event id) like the events themselves (an id is made by
a device, and device names repeat from outlet to outlet; see
``central/embedded.py``), so one outlet's answered report never hides
another's. A
report for an outlet with no locker in the registry is answered with
nothing to send, and says so.

It runs on either backend: it asks only for what ``central/duty_store.py``
names (the registry, queueing a command, its table of answers), so the
embedded backend answers from SQLite and the scale-out one from PostgreSQL.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from central.duty_store import Column, DutyStore, DutyTable
from central.keys import KeyService
from common.logs import recorder

record = recorder(__name__)
LIFETIME_S = 7 * 24 * 3600  # as long as a command may wait for a locker that is offline

ANSWERED = DutyTable("revocations_answered", "gateway.device_revoked", (
    Column("event", "text"), Column("outlet", "text"), Column("device", "text"), Column("lockers", "int"),
    Column("at", "real")))


class Revocations:
    def __init__(self, backend: DutyStore, master: bytes, clock: Callable[[], float] = time.time,
                 device_clock: Callable[[str], float] | None = None) -> None:
        """``device_clock``: an outlet's devices' time, which a signed revoke
        carries (default ``clock``: the simulator's virtual outlets differ)."""
        self.b = backend
        self.master = master
        self.clock = clock
        self.device_clock = device_clock or (lambda outlet: clock())
        self.b.duty_table(ANSWERED)

    def run_once(self) -> int:
        """Answer every report not answered yet; the commands queued."""
        queued = 0
        for outlet, eid, body in self.b.undecided(ANSWERED.event_type, ANSWERED.name):
            device = body.get("device")
            if not isinstance(device, str):
                self._answered(eid, outlet, "?", 0)
                continue
            kinds = {d["device"]: d["kind"] for d in self.b.devices(outlet)}
            field = "couriers" if kinds.get(device) not in ("handheld", None) else "handhelds"
            lockers = [d for d, k in kinds.items() if k == "locker"]
            keys = KeyService.registered(self.b, outlet, self.master)
            now = int(self.device_clock(outlet))
            for locker in lockers:
                # one id per (report, locker): a report answered twice after a crash
                # is the same command, which the locker runs once
                cid = "rv" + hashlib.sha256(f"{eid}/{locker}".encode()).hexdigest()[:24]
                cmd = keys.command(locker, "revoke", {field: [device]}, cid, now=now, lifetime_s=LIFETIME_S)
                self.b.push_command(outlet, "locker", cmd)
                queued += 1
            self.b.retire_device(outlet, device)
            self._answered(eid, outlet, device, len(lockers))
            record("revocation_answered", outlet=outlet, device=device, lockers=len(lockers))
        return queued

    def _answered(self, eid: str, outlet: str, device: str, lockers: int) -> None:
        self.b.decide(ANSWERED.name, {"event": eid, "outlet": outlet, "device": device, "lockers": lockers,
                                      "at": self.clock()})

    def answered(self, outlet: str) -> list[dict[str, Any]]:
        """The outlet's answered reports, oldest first: event, device, lockers (how many got a revoke)."""
        return self.b.decided(ANSWERED.name, outlet)
