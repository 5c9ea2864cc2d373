"""The notifier as one gateway thread: every ``interval_s`` it takes in new
deposits and pickups, checks contacts the downlink brought, routes notices,
reminders and clerks' resends (``routing.py``), sends what is queued for the
modem (``sender.py``) and reads delivery reports. Its own SQLite connection
and its own event sequence (device ``<gateway>-sms``), so it never shares a
counter or a transaction with ingest. Each step is guarded: an error is
logged and counted, and the next tick runs.

Started by ``gateway.service.run`` only when ``[notify] modem`` is set.
Log lines: ``notify_started``, ``notify_route``, ``notify_sent``,
``notify_retry``, ``notify_failed``, ``notify_uncertain``,
``notify_delivered``, ``notify_modem_down``/``up``, ``notify_contact``,
``notify_contact_refused``, ``notify_error``, ``notify_stopped``. None of
them carries a code, a text or a whole phone number.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from common import timers
from common.clock import now as clock_now
from common.logs import recorder
from gateway.config import GatewayConfig
from gateway.notify import contacts
from gateway.notify.keys import load_keys
from gateway.notify.modem import Modem
from gateway.notify.routing import Router
from gateway.notify.sender import Sender
from gateway.store.events import EventStore
from gateway.store.own_events import OwnEvents
from protocol.errors import ProtocolError

record = recorder(__name__)


def notifier_id(gateway_id: str) -> str:
    return f"{gateway_id[:28]}-sms"


class Notifier:
    def __init__(self, cfg: GatewayConfig, stop: threading.Event | None = None,
                 log: Callable[..., None] = record, modem: Modem | None = None,
                 clock: Callable[[], float] = clock_now) -> None:
        n = cfg.notify
        assert n.modem is not None and n.key_file is not None
        self.cfg = cfg
        self.stop = stop or threading.Event()
        self.log = log
        self.clock = clock
        self.keys = load_keys(n.key_file)
        self.store = EventStore(cfg.db)
        self.own = OwnEvents(self.store, cfg.outlet, notifier_id(cfg.broker.client_id), Path(cfg.db).parent)
        self.router = Router(self.store, self.own, n, cfg.upstream is not None, log, clock)
        self.modem = modem or Modem(n.modem, n.baud, n.timeout_s, n.send_timeout_s)
        names = {"zh": n.name_zh or cfg.outlet, "en": n.name_en or n.name_zh or cfg.outlet}
        self.sender = Sender(self.store, self.own, n, self.modem, self.keys, names, log, clock)
        self.errors = 0
        self.sender.recover()

    def absorb_contacts(self) -> None:
        """Contacts the downlink stored: checked with the notifier key, kept or refused."""
        rows = self.store.db.execute("SELECT id, payload FROM notify_inbox ORDER BY id LIMIT 200").fetchall()
        for rid, payload in rows:
            with self.store.tx():
                try:
                    c = contacts.check(bytes(payload), self.keys, int(self.clock()))
                except ProtocolError as e:
                    self.router.stats["contact_refused"] += 1
                    self.log("notify_contact_refused", code=e.code, detail=str(e.detail)[:200])
                else:
                    self.store.db.execute(
                        "INSERT INTO notify_contacts(parcel, phone, lang, cid, received) VALUES (?,?,?,?,?) "
                        "ON CONFLICT(parcel) DO UPDATE SET phone=excluded.phone, lang=excluded.lang, "
                        "cid=excluded.cid, received=excluded.received",
                        (c["parcel"], c["phone"], c["lang"], c["cid"], self.clock()))
                    self.log("notify_contact", parcel=c["parcel"], cid=c["cid"])
                self.store.db.execute("DELETE FROM notify_inbox WHERE id=?", (rid,))

    def tick(self) -> None:
        for step in (self.router.intake, self.absorb_contacts, self.router.route_notices,
                     self.router.route_reminders, self.router.requests, self.router.hand_back,
                     self.sender.send_due, self._poll, self.router.prune):
            if self.stop.is_set():
                return
            try:
                step()
            except Exception as e:  # noqa: BLE001 - one step's bug must not stop the notifier
                self.errors += 1
                where = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=3))[-800:]
                name = getattr(step, "__name__", "?")
                self.log("notify_error", step=name, error=repr(e)[:300], where=where)

    def _poll(self) -> None:
        if not self.modem.is_open and self.sender.awaiting_reports():
            self.sender.ensure_open()  # reports wait in the modem's line for us
        if self.modem.is_open:
            try:
                self.modem.poll(0.0)
            except Exception:  # noqa: BLE001 - ModemError closes the port; it reopens when needed
                self.modem.close()

    def next_due(self) -> float | bool:
        """When the next thing the notifier decides by the clock comes due: a
        deposit's text once its delay is out (a locker-coded parcel with a
        contact, not yet told or picked up), or a text's retry; False if
        nothing is. Only a simulation reads it (``common/timers.py``): its
        clock is stepped there, so the text leaves at its time and not at the
        next action window."""
        if not timers.simulated():
            return False
        now = self.clock()
        delay = self.cfg.notify.delay_s
        # Such a job is routed by the first tick after its delay, so one due
        # already (it came due while this tick ran) means: tick again now.
        held = self.store.db.execute(
            "SELECT min(received_at) FROM notify_jobs j WHERE notice IS NULL AND picked_at IS NULL "
            "AND code_by='locker' AND EXISTS (SELECT 1 FROM notify_contacts c WHERE c.parcel = j.parcel)"
        ).fetchone()[0]
        retry = self.store.db.execute("SELECT min(next_try) FROM notify_sms WHERE state='queued' "
                                      "AND next_try > ?", (now,)).fetchone()[0]
        due = [t for t in (None if held is None else held + delay, retry) if t is not None]
        return min(due) if due else False

    def run(self) -> None:
        self.log("notify_started", modem=self.cfg.notify.modem, delay_s=self.cfg.notify.delay_s)
        try:
            with timers.paced("notify"):
                while not self.stop.is_set():
                    self.tick()
                    due = self.next_due()
                    wait_s = self.cfg.notify.interval_s if due is False else \
                        max(0.01, min(self.cfg.notify.interval_s, due - self.clock()))
                    timers.wait(self.stop, wait_s, due=due)
        finally:
            self.modem.close()
            self.store.close()
            self.log("notify_stopped", errors=self.errors, **dict(self.router.stats + self.sender.stats))

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="postedge-notify", daemon=False)
        t.start()
        return t
