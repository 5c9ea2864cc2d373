"""The platform's answer to a clerk's request.

The gateway holds no locker key, so a supervisor's "open this compartment",
"take it out of service" or "put it back" in the outlet's console
(``gateway/http/clerk.py``) is only a request: a ``gateway.clerk_request``
event that syncs upstream. Here the platform, which alone holds the
lockers' keys, decides and signs the command the relay delivers:

- ``open``: ``open`` with ``args.request`` = the request's event id;
- ``out_of_service`` / ``in_service``: ``service`` with the state asked for
  (the locker refuses to take a compartment holding a parcel out of
  service: ``firmware/locker/app.py``).

The gateway matches the command to its request by ``args.request`` and
shows the stage (``gateway/store/clerks.py``); a refusal goes down as a
``clerk_decision`` message with its reason (``common/uplink_codec.py``), so
the console says "refused by the platform: no note" rather than waiting. Rules, each refusal kept with
its reason in ``clerk_decisions`` (one decision per request: a request seen
again after a crash gets the same command id, which the locker runs once):

- only a supervisor's request (the gateway checks the role too; the
  platform does not trust it to have done so);
- only for a locker registered to that outlet and not retired;
- a remote open must say why (a note), and an outlet gets at most
  ``OPEN_BUDGET`` remote opens in ``OPEN_WINDOW_S``: a door opening without a
  code is the act an insider would abuse, so a burst is refused and left
  to a person at the platform (``docs/security.md``).

It runs on either backend: it asks only for what ``central/duty_store.py``
names (the registry, queueing a command, its table of decisions and the
count the budget needs), answered from SQLite by the embedded backend and
from PostgreSQL by the scale-out one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from central.duty_store import Column, DutyStore, DutyTable
from central.keys import KeyService
from common.logs import recorder
from common.uplink_codec import DOWN_CLERK_DECISION, clerk_refusal

record = recorder(__name__)
KINDS = ("open", "out_of_service", "in_service")
LIFETIME_S = 24 * 3600  # a request answered while the link is down still reaches the locker the next day
OPEN_BUDGET = 6
OPEN_WINDOW_S = 3600.0

DECISIONS = DutyTable("clerk_decisions", "gateway.clerk_request", (
    Column("outlet", "text"), Column("event", "text"), Column("kind", "text"), Column("device", "text"),
    Column("compartment", "int", null=True), Column("by", "text"), Column("verdict", "text"),
    Column("reason", "text"), Column("cmd", "text", null=True), Column("at", "real")))


class ClerkRequests:
    def __init__(self, backend: DutyStore, master: bytes, clock: Callable[[], float] = time.time,
                 device_clock: Callable[[str], float] | None = None) -> None:
        """``device_clock``: an outlet's devices' time, which a signed command
        carries (default ``clock``: the simulator's virtual outlets differ)."""
        self.b = backend
        self.master = master
        self.clock = clock
        self.device_clock = device_clock or (lambda outlet: clock())
        self.b.duty_table(DECISIONS)

    def run_once(self) -> int:
        """Decide every request not decided yet; how many commands were queued."""
        queued = 0
        for outlet, eid, body in self.b.undecided(DECISIONS.event_type, DECISIONS.name):
            why = self._refusal(outlet, body)
            if why is not None:
                self._decide(outlet, eid, body, "refused", why, None)
                # the outlet's console says so instead of "waiting for the platform" forever
                self.b.push_command(outlet, DOWN_CLERK_DECISION, clerk_refusal(eid, why))
                record("clerk_request_refused", outlet=outlet, event=eid, reason=why)
                continue
            kind, device, cid = body["request"], body["device"], body["compartment"]
            # one id per request: decided twice after a crash, it is the same command
            cmd_id = "cr" + hashlib.sha256(f"{outlet}/{eid}".encode()).hexdigest()[:24]
            if kind == "open":
                op, args = "open", {"compartment": cid, "request": eid}
            else:
                op, args = "service", {"compartment": cid, "state": kind, "request": eid}
            keys = KeyService.registered(self.b, outlet, self.master)
            now = int(self.device_clock(outlet))
            cmd = keys.command(device, op, args, cmd_id, now=now, lifetime_s=LIFETIME_S)
            self.b.push_command(outlet, "locker", cmd)
            self._decide(outlet, eid, body, "signed", "ok", cmd_id)
            record("clerk_request_signed", outlet=outlet, event=eid, op=op, device=device, compartment=cid)
            queued += 1
        return queued

    def _refusal(self, outlet: str, body: dict[str, Any]) -> str | None:
        kind, device, cid = body.get("request"), body.get("device"), body.get("compartment")
        if kind not in KINDS or not isinstance(device, str) or not isinstance(cid, int) \
                or isinstance(cid, bool) or not 0 < cid < 1000:
            return "malformed"
        if body.get("role") != "supervisor":
            return "not_supervisor"
        lockers = {d["device"] for d in self.b.devices(outlet) if d["kind"] == "locker" and not d["retired"]}
        if device not in lockers:
            return "unknown_locker"
        if kind == "open":
            if not str(body.get("note", "")).strip():
                return "no_note"
            recent = self.b.count_decided(DECISIONS.name, outlet, self.clock() - OPEN_WINDOW_S,
                                          {"kind": "open", "verdict": "signed"})
            if recent >= OPEN_BUDGET:
                return "too_many_opens"
        return None

    def _decide(self, outlet: str, eid: str, body: dict[str, Any], verdict: str, reason: str,
                cmd: str | None) -> None:
        cid = body.get("compartment")
        self.b.decide(DECISIONS.name, {
            "outlet": outlet, "event": eid, "kind": str(body.get("request", "?"))[:20],
            "device": str(body.get("device", "?"))[:32],
            "compartment": cid if isinstance(cid, int) and not isinstance(cid, bool) else None,
            "by": str(body.get("by", "?"))[:64], "verdict": verdict, "reason": reason, "cmd": cmd,
            "at": self.clock()})

    def decisions(self, outlet: str) -> list[dict[str, Any]]:
        """The outlet's decided requests, oldest first."""
        return self.b.decided(DECISIONS.name, outlet)
