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
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from central.embedded import Embedded, rekey
from central.keys import KeyService
from common.logs import recorder

record = recorder(__name__)
LIFETIME_S = 7 * 24 * 3600  # as long as a command may wait for a locker that is offline

ANSWERED = """CREATE TABLE IF NOT EXISTS {t} (
    event TEXT NOT NULL, outlet TEXT NOT NULL, device TEXT NOT NULL, lockers INTEGER NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (outlet, event));"""


class Revocations:
    def __init__(self, backend: Embedded, master: bytes, clock: Callable[[], float] = time.time) -> None:
        self.b = backend
        self.master = master
        self.clock = clock
        with self.b.lock:
            rekey(self.b.db, "revocations_answered", ANSWERED, ["outlet", "event"])  # an older file
            self.b.db.executescript(ANSWERED.format(t="revocations_answered"))

    def run_once(self) -> int:
        """Answer every report not answered yet; the commands queued."""
        queued = 0
        rows = self.b.db.execute(
            "SELECT e.id, e.outlet, e.payload FROM events e WHERE e.type='gateway.device_revoked' "
            "AND NOT EXISTS (SELECT 1 FROM revocations_answered a WHERE a.outlet=e.outlet AND a.event=e.id) "
            "ORDER BY e.received_at").fetchall()
        for eid, outlet, payload in rows:
            body = json.loads(payload).get("body", {})
            device = body.get("device")
            if not isinstance(device, str):
                self._answered(eid, outlet, "?", 0)
                continue
            kinds = {d["device"]: d["kind"] for d in self.b.devices(outlet)}
            field = "couriers" if kinds.get(device) not in ("handheld", None) else "handhelds"
            lockers = [d for d, k in kinds.items() if k == "locker"]
            keys = KeyService.registered(self.b, outlet, self.master)
            now = int(self.clock())
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
        with self.b.lock:
            self.b.db.execute("INSERT OR IGNORE INTO revocations_answered (event, outlet, device, lockers, "
                              "at) VALUES (?,?,?,?,?)", (eid, outlet, device, lockers, self.clock()))
