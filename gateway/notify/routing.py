"""Who tells the villager: each deposit's notice (and its reminder) is
routed once, to the platform or to this outlet's modem, and the route is an
own event (``notify.route``) committed in the same transaction as the
decision.

The rule, per deposit (docs/gateway.md, "Notifications"):

- **platform** as soon as the platform has acknowledged the deposit event
  (its row is marked synced, or was deleted after sync): the platform has
  the sealed code, the event, and the contact, and sends for free;
- **gateway** when the deposit has waited ``delay_s`` unacknowledged (the
  backhaul is down, or this outlet has no uplink), the locker sealed the
  code for the notifier (``code_by: "locker"``) and a contact is known: the
  text is queued for the modem in the same transaction;
- ``none`` if the parcel was picked up before either (the villager has
  it; the platform, waiting for a route, closes the deposit);
- otherwise undecided, and looked at again next tick (a platform-coded
  deposit waits for the link: only the platform can read that code).

The platform sends a notice only on a ``notify.route`` with ``by:
"platform"``, never on the deposit alone, because a deposit can reach the
platform while its ack is lost and the gateway, seeing no ack, texts the
villager after ``delay_s``: one decision in one place makes a second text
impossible rather than unlikely. An outlet without a notifier key never
emits routes, and the platform, which issued (or did not issue) that key,
knows to send on the deposit there.

Reminders go the same way, decided once when the reminder is due: to the
platform if the backhaul is up (nothing unsynced older than ``delay_s``),
else to the modem. A parcel picked up or retrieved gets neither.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from common.clock import now as clock_now
from gateway import metrics as M
from gateway.config import NotifyConfig
from gateway.notify.state import KV_CURSOR, ensure_schema
from gateway.store.events import EventStore
from gateway.store.own_events import OwnEvents
from protocol import envelope
from protocol.errors import ProtocolError

INTAKE_TYPES = ("locker.deposit", "locker.pickup", "locker.retrieve")
INTAKE_BATCH = 500
PRUNE_AFTER_S = 7 * 86400


class Router:
    def __init__(self, store: EventStore, own: OwnEvents, cfg: NotifyConfig, uplink: bool,
                 log: Callable[..., None], clock: Callable[[], float] = clock_now) -> None:
        self.store = store
        self.db = store.db
        self.sql = store.db.execute
        self.own = own
        self.cfg = cfg
        self.uplink = uplink
        self.log = log
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self._next_prune = 0.0
        with store.tx():
            ensure_schema(self.db)

    # ---- what happened at the lockers

    def intake(self) -> int:
        """New deposits become jobs; pickups and retrievals close them."""
        cursor = int(self.store.get(KV_CURSOR, "0") or 0)
        marks = ",".join("?" * len(INTAKE_TYPES))
        rows = self.sql(
            f"SELECT rowid, id, type, payload, received_at FROM events WHERE rowid > ? AND type IN ({marks}) "
            "ORDER BY rowid LIMIT ?", (cursor, *INTAKE_TYPES, INTAKE_BATCH)).fetchall()
        if not rows:
            return 0
        with self.store.tx():
            for rowid, eid, etype, payload, received_at in rows:
                cursor = max(cursor, rowid)
                try:
                    body = envelope.decode(bytes(payload))["body"]
                except ProtocolError:
                    self.stats["undecodable"] += 1
                    continue
                parcel = body.get("parcel")
                if not isinstance(parcel, str) or not parcel:
                    self.stats["no_parcel"] += 1
                    continue
                if etype == "locker.deposit":
                    expires = body.get("expires")
                    comp = body.get("compartment")
                    self.sql(
                        "INSERT OR IGNORE INTO notify_jobs(event, parcel, device, compartment, expires, "
                        "code_by, received_at) VALUES (?,?,?,?,?,?,?)",
                        (eid, parcel, eid.split(":", 1)[0], comp if isinstance(comp, int) else None,
                         expires if isinstance(expires, int) and not isinstance(expires, bool) else None,
                         str(body.get("code_by") or "platform")[:16], received_at))
                    self.stats["deposits"] += 1
                else:
                    # The parcel left the locker: the deposits of it at that locker are done.
                    self.sql("UPDATE notify_jobs SET picked_at=? WHERE parcel=? AND device=? "
                                    "AND picked_at IS NULL", (self.clock(), parcel, eid.split(":", 1)[0]))
                    self.cancel_picked(parcel)
            self.store.put(KV_CURSOR, str(cursor))
        return len(rows)

    def cancel_picked(self, parcel: str) -> None:
        """Texts still queued for a parcel now picked up are cancelled (a
        resend a clerk asked for stays). One routed to the modem that never
        got a part out is re-routed to ``none`` in the same transaction: the
        platform, which sends nothing on a ``gateway`` route and waits for
        ``notify.sent``, would otherwise hold the deposit as never told.
        (A slow modem queue, or a villager quicker than ``delay_s``, made
        this happen: the deposit stayed undecided at the platform.) A text
        with a part already out is cancelled without a new route: the
        villager may have part of it."""
        rows = self.sql(
            "SELECT s.id, s.event, s.purpose, NOT EXISTS (SELECT 1 FROM notify_parts p WHERE p.sms=s.id "
            "AND p.state!='new') FROM notify_sms s WHERE s.state='queued' AND s.purpose!='resend' "
            "AND s.event IN (SELECT event FROM notify_jobs WHERE parcel=? AND picked_at IS NOT NULL)",
            (parcel,)).fetchall()
        for sms_id, event, purpose, untouched in rows:
            self.sql("UPDATE notify_sms SET state='cancelled' WHERE id=?", (sms_id,))
            jobs = self._jobs("event=?", event)
            if untouched and jobs:
                self._route(jobs[0], purpose, "none")
                self.stats["cancelled_picked_up"] += 1

    # ---- the link

    def acked(self, event: str) -> bool:
        """The platform has the event: synced, or deleted (only after sync)."""
        row = self.sql("SELECT synced_at FROM events WHERE id=?", (event,)).fetchone()
        return row is None or row[0] is not None

    def backhaul_up(self) -> bool:
        if not self.uplink:
            return False
        oldest = self.sql("SELECT min(received_at) FROM events WHERE synced_at IS NULL").fetchone()[0]
        return oldest is None or self.clock() - oldest < self.cfg.delay_s

    def contact(self, parcel: str) -> tuple[str, str] | None:
        row = self.sql("SELECT phone, lang FROM notify_contacts WHERE parcel=?", (parcel,)).fetchone()
        return None if row is None else (row[0], row[1])

    # ---- decisions

    def _route(self, job: dict[str, Any], purpose: str, by: str, clerk: str | None = None) -> None:
        """Record one decision and tell the platform, in the caller's transaction."""
        now = self.clock()
        if purpose in ("notice", "reminder"):
            self.sql(f"UPDATE notify_jobs SET {purpose}=?, {purpose}_at=? WHERE event=?",
                            (by, now, job["event"]))
        body: dict[str, Any] = {"event": job["event"], "parcel": job["parcel"], "purpose": purpose, "by": by}
        if clerk is not None:
            body["clerk"] = clerk
        self.own.emit("notify.route", body)
        if by == "gateway":
            contact = self.contact(job["parcel"])
            assert contact is not None
            self.sql("INSERT INTO notify_sms(event, purpose, phone, lang, state, created, clerk) "
                            "VALUES (?,?,?,?,'queued',?,?)", (job["event"], purpose, contact[0], contact[1],
                                                              now, clerk))
        self.stats[f"{purpose}_{by}"] += 1
        M.NOTIFY_ROUTES.labels(purpose, by).inc()
        self.log("notify_route", event=job["event"], purpose=purpose, by=by)

    def _can_send(self, job: dict[str, Any]) -> bool:
        return job["code_by"] == "locker" and self.contact(job["parcel"]) is not None

    def _jobs(self, where: str, *args: Any) -> list[dict[str, Any]]:
        cur = self.sql(f"SELECT * FROM notify_jobs WHERE {where}", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def _notice_by(self, job: dict[str, Any], now: float) -> str | None:
        if job["picked_at"] is not None:
            # Picked up before anyone told the villager: say so, so the
            # platform, waiting for a route, closes the deposit.
            return "none"
        if self.acked(job["event"]):
            return "platform"
        if now - job["received_at"] >= self.cfg.delay_s and self._can_send(job):
            return "gateway"
        return None

    def route_notices(self) -> None:
        """Every undecided deposit is looked at (read-only); a write
        transaction is opened only for one that can be decided, and the
        decision is taken again inside it, so what it rests on and the
        decision are one. Waiting deposits (a platform-coded one through a
        three-day outage) cost a read each, never a write lock that ingest
        would wait on."""
        now = self.clock()
        for job in self._jobs("notice IS NULL ORDER BY received_at"):
            if self._notice_by(job, now) is None:
                self.stats["notice_waiting"] += 1
                continue
            with self.store.tx():
                fresh = self._jobs("event=? AND notice IS NULL", job["event"])
                by = self._notice_by(fresh[0], now) if fresh else None
                if by is not None:
                    self._route(fresh[0], "notice", by)

    def _reminder_by(self, job: dict[str, Any], now: float, lead: float) -> str | None:
        if now >= job["expires"] or job["notice_at"] >= job["expires"] - lead:
            return "skip"  # expired already, or the notice itself came inside the reminder window
        if self.backhaul_up() and self.acked(job["event"]):
            return "platform"
        if self._can_send(job):
            return "gateway"
        return None

    def route_reminders(self) -> None:
        if not self.cfg.remind_hours:
            return
        now = self.clock()
        lead = self.cfg.remind_hours * 3600
        where = ("reminder IS NULL AND notice IS NOT NULL AND notice != 'none' AND picked_at IS NULL "
                 "AND expires IS NOT NULL AND expires - ? <= ?")
        for job in self._jobs(where, lead, now):
            if self._reminder_by(job, now, lead) is None:
                self.stats["reminder_waiting"] += 1
                continue
            with self.store.tx():
                fresh = self._jobs(f"event=? AND {where}", job["event"], lead, now)
                by = self._reminder_by(fresh[0], now, lead) if fresh else None
                if by == "skip":
                    self.sql("UPDATE notify_jobs SET reminder='none', reminder_at=? WHERE event=?",
                             (now, job["event"]))
                elif by is not None:
                    self._route(fresh[0], "reminder", by)

    def hand_back(self) -> None:
        """A text the modem failed for good goes to the platform at once; one
        routed to the modem that never got a part out (the modem is missing
        or refusing) while the backhaul came back, too: cancelled and
        re-routed in one transaction, and only while every part is still
        ``new`` (nothing was written to the modem), so the villager still
        gets it once."""
        now = self.clock()
        # A text the modem failed for good (a refused number, an unreadable
        # box, retries used up): the platform may still reach the villager.
        failed = self.sql("SELECT id, event, purpose, clerk FROM notify_sms WHERE state='failed' LIMIT 50")
        for sms_id, event, purpose, clerk in failed.fetchall():
            with self.store.tx():
                self.sql("UPDATE notify_sms SET state='failed_handed_back' WHERE id=?", (sms_id,))
                jobs = self._jobs("event=?", event)
                if jobs and jobs[0]["picked_at"] is None:
                    self._route(jobs[0], purpose, "platform", clerk)
                    self.stats["failed_handed_back"] += 1
        rows = self.sql(
            "SELECT s.id, s.event, s.purpose, s.clerk FROM notify_sms s "
            "WHERE s.state='queued' AND s.created <= ? AND NOT EXISTS "
            "(SELECT 1 FROM notify_parts p WHERE p.sms=s.id AND p.state!='new') "
            "ORDER BY s.id LIMIT 50", (now - self.cfg.delay_s,)).fetchall()
        if not rows or not self.backhaul_up():
            return
        for sms_id, event, purpose, clerk in rows:
            if not self.acked(event):
                continue
            with self.store.tx():
                cur = self.sql("UPDATE notify_sms SET state='handed_back' WHERE id=? AND state='queued'",
                               (sms_id,))
                jobs = self._jobs("event=?", event)
                if not cur.rowcount or not jobs:
                    continue
                self._route(jobs[0], purpose, "platform", clerk)
                self.stats["handed_back"] += 1

    def prune(self) -> None:
        """Villagers' phone numbers are kept only while they are needed: a
        contact goes PRUNE_AFTER_S after its parcel left the locker (or
        after it came, for a parcel never deposited here), and a sent
        text's number is cut to its last four digits after the same time."""
        now = self.clock()
        if now < self._next_prune:
            return
        self._next_prune = now + 3600
        cut = now - PRUNE_AFTER_S
        with self.store.tx():
            n = self.sql("DELETE FROM notify_contacts WHERE received < ? AND parcel NOT IN "
                         "(SELECT parcel FROM notify_jobs WHERE picked_at IS NULL OR picked_at > ?)",
                         (cut, cut)).rowcount
            m = self.sql("UPDATE notify_sms SET phone='…' || substr(phone, -4) WHERE created < ? "
                         "AND state NOT IN ('queued') AND phone NOT LIKE '…%'", (cut,)).rowcount
        if n or m:
            self.log("notify_pruned", contacts=n, texts=m)

    def resend(self, request_id: int, parcel: str, clerk: str) -> str:
        """Carry out a clerk's resend (audited by its route event); the outcome."""
        now = self.clock()
        with self.store.tx():
            jobs = self._jobs("parcel=? ORDER BY received_at DESC LIMIT 1", parcel)
            if not jobs:
                outcome = "unknown_parcel"
            elif jobs[0]["picked_at"] is not None:
                outcome = "picked_up"
            elif (not self.backhaul_up() or not self.acked(jobs[0]["event"])) and self._can_send(jobs[0]):
                self._route(jobs[0], "resend", "gateway", clerk)
                outcome = "gateway"
            else:
                self._route(jobs[0], "resend", "platform", clerk)
                outcome = "platform"
            if outcome in ("unknown_parcel", "picked_up"):
                self.own.emit("notify.resend_refused", {"parcel": parcel, "clerk": clerk, "reason": outcome})
            self.sql("UPDATE notify_requests SET done_at=?, outcome=? WHERE id=?",
                     (now, outcome, request_id))
        return outcome

    def requests(self) -> None:
        for rid, parcel, clerk in self.sql(
                "SELECT id, parcel, clerk FROM notify_requests WHERE done_at IS NULL ORDER BY id LIMIT 50"
        ).fetchall():
            self.resend(rid, parcel, clerk)
