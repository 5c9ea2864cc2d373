"""Texts out through the modem, each part at most once.

A part is marked ``sending`` and committed *before* its PDU is written, and
``sent`` with its TP-MR after ``+CMGS``. So after a crash, a power cut or a
modem that took the PDU and went silent, a part is either known unsent
(``new``: sent on the next try) or possibly sent (``sending`` found at start,
or ``ModemError.sent_maybe``): that text becomes ``uncertain`` and is never
sent again by itself, since a second copy of a pickup code is worse than a
clerk's resend. ``+CMS ERROR``s the network may get over are retried with
exponential backoff up to ``retries``; a permanent one (a bad number, no
SIM) fails the text at once. A modem that is missing, unplugged or silent
is closed and opened again with the same backoff; nothing here stops the
gateway.

The code is opened from the deposit's sealed box (``protocol.seal``) and the
text rendered just before the parts are built; neither is stored or logged.
Every outcome is an own event: ``notify.sent`` (parts), ``notify.failed``
(reason), ``notify.uncertain``, ``notify.delivered`` / ``notify.undelivered``
(from the delivery reports), each naming the deposit event and the purpose,
with the phone's last four digits for the clerk, never the whole number.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from common.clock import now as clock_now
from gateway import metrics as M
from gateway.config import NotifyConfig
from gateway.notify import texts
from gateway.notify.modem import Modem, ModemError
from gateway.notify.pdu import PduError, StatusReport, encode_submit
from gateway.store.events import EventStore
from gateway.store.own_events import OwnEvents
from protocol import envelope, seal
from protocol.errors import ProtocolError

# How long a delivery report is worth waiting for (a phone that is off for
# days gets its text when it comes back; the report comes then too).
REPORT_WAIT_S = 3 * 86400


class Sender:
    def __init__(self, store: EventStore, own: OwnEvents, cfg: NotifyConfig, modem: Modem,
                 keys: dict[int, bytes], outlet_names: dict[str, str], log: Callable[..., None],
                 clock: Callable[[], float] = clock_now, seed: int | None = None) -> None:
        self.store = store
        self.db = store.db
        self.sql = store.db.execute
        self.own = own
        self.cfg = cfg
        self.modem = modem
        self.keys = keys
        self.names = outlet_names
        self.log = log
        self.clock = clock
        self.rng = random.Random(seed)
        self.stats: Counter[str] = Counter()
        self.modem_failures = 0
        self.modem_next = 0.0
        modem.on_report = self.on_report

    def backoff(self, n: int) -> float:
        cap = min(self.cfg.backoff_cap_s, self.cfg.backoff_base_s * 2 ** max(0, n - 1))
        return cap * (0.5 + 0.5 * self.rng.random())

    def recover(self) -> None:
        """At start: a part left ``sending`` may have gone out."""
        with self.store.tx():
            rows = self.sql("SELECT DISTINCT sms FROM notify_parts WHERE state='sending'").fetchall()
            for (sms,) in rows:
                self.sql("UPDATE notify_parts SET state='uncertain' WHERE sms=? AND state='sending'", (sms,))
                self._finish(sms, "uncertain", {"reason": "interrupted"})

    def _sms(self, sms_id: int) -> dict[str, Any]:
        cur = self.sql("SELECT s.*, j.parcel, j.compartment, j.expires, j.picked_at FROM notify_sms s "
                              "JOIN notify_jobs j ON j.event = s.event WHERE s.id=?", (sms_id,))
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))

    def _finish(self, sms_id: int, state: str, extra: dict[str, Any]) -> None:
        """Set a text's final state and tell the platform (caller's transaction)."""
        s = self._sms(sms_id)
        col = {"sent": "sent_at", "delivered": "delivered_at"}.get(state)
        self.sql(f"UPDATE notify_sms SET state=?{', ' + col + '=?' if col else ''} WHERE id=?",
                        (state, self.clock(), sms_id) if col else (state, sms_id))
        self.own.emit(f"notify.{state}", {"event": s["event"], "parcel": s["parcel"], "purpose": s["purpose"],
                                          "sms": sms_id, "phone_tail": s["phone"][-4:], **extra})
        self.stats[state] += 1
        M.NOTIFY_SMS.labels(state).inc()
        self.log(f"notify_{state}", sms=sms_id, event=s["event"], purpose=s["purpose"], **extra)

    def _text(self, s: dict[str, Any]) -> str:
        row = self.sql("SELECT payload FROM events WHERE id=?", (s["event"],)).fetchone()
        if row is None:
            raise ProtocolError("the deposit event is no longer held")
        ev = envelope.decode(bytes(row[0]))
        code = seal.open_for_notifier(self.keys, ev)
        return texts.render(s["purpose"], s["lang"], parcel=s["parcel"], outlet=self.names.get(s["lang"], ""),
                            compartment=s["compartment"] if s["compartment"] is not None else "?", code=code,
                            expires=s["expires"], tz_offset_h=self.cfg.tz_offset_h)

    def ensure_open(self) -> bool:
        if self.modem.is_open:
            return True
        if self.clock() < self.modem_next:
            return False
        try:
            self.modem.open()
        except ModemError as e:
            self.modem_failures += 1
            self.modem_next = self.clock() + self.backoff(self.modem_failures)
            self.stats["modem_down"] += 1
            M.NOTIFY_MODEM_DOWN.inc()
            if self.modem_failures == 1:
                self.log("notify_modem_down", kind=e.kind, error=str(e)[:200])
            return False
        if self.modem_failures:
            self.log("notify_modem_up", after=self.modem_failures)
        self.modem_failures = 0
        return True

    def awaiting_reports(self) -> bool:
        """Parts sent within REPORT_WAIT_S whose delivery report has not come."""
        return self.sql("SELECT 1 FROM notify_parts WHERE status IS NULL AND state='sent' AND sent_at > ? "
                        "LIMIT 1", (self.clock() - REPORT_WAIT_S,)).fetchone() is not None

    def send_due(self, limit: int = 5) -> int:
        """Send up to ``limit`` queued texts whose time has come."""
        done = 0
        for (sms_id,) in self.sql(
                "SELECT id FROM notify_sms WHERE state='queued' AND next_try <= ? ORDER BY id LIMIT ?",
                (self.clock(), limit)).fetchall():
            if not self.ensure_open():
                break
            self.send_one(sms_id)
            done += 1
        return done

    def send_one(self, sms_id: int) -> None:
        s = self._sms(sms_id)
        if s["state"] != "queued":
            return
        if s["picked_at"] is not None and s["purpose"] != "resend":
            with self.store.tx():
                self.sql("UPDATE notify_sms SET state='cancelled' WHERE id=?", (sms_id,))
            return
        try:
            parts = encode_submit(s["phone"], self._text(s), ref=sms_id & 0xFF)
        except (ProtocolError, PduError) as e:
            with self.store.tx():
                self._finish(sms_id, "failed", {"reason": getattr(e, "code", "bad_pdu")})
            return
        with self.store.tx():
            if s["parts"] == 0:
                self.sql("UPDATE notify_sms SET parts=? WHERE id=?", (len(parts), sms_id))
                self.db.executemany("INSERT OR IGNORE INTO notify_parts(sms, seq, state) VALUES (?,?,'new')",
                                    [(sms_id, i) for i in range(1, len(parts) + 1)])
        states = dict(self.sql("SELECT seq, state FROM notify_parts WHERE sms=?", (sms_id,)).fetchall())
        for seq, part in enumerate(parts, 1):
            if states.get(seq) != "new":
                continue
            with self.store.tx():
                self.sql("UPDATE notify_parts SET state='sending' WHERE sms=? AND seq=?", (sms_id, seq))
            try:
                mr = self.modem.send_part(part)
            except ModemError as e:
                self._part_failed(sms_id, seq, e)
                return
            with self.store.tx():
                self.sql("UPDATE notify_parts SET state='sent', mr=?, sent_at=? WHERE sms=? AND seq=?",
                                (mr, self.clock(), sms_id, seq))
        with self.store.tx():
            self._finish(sms_id, "sent", {"parts": len(parts)})

    def _part_failed(self, sms_id: int, seq: int, e: ModemError) -> None:
        if e.kind in ("timeout", "unplugged", "garbage"):
            self.modem.close()  # open again (and re-initialise) next time
        with self.store.tx():
            if e.sent_maybe:
                self.sql("UPDATE notify_parts SET state='uncertain' WHERE sms=? AND seq=?", (sms_id, seq))
                self._finish(sms_id, "uncertain", {"reason": e.kind})
                return
            self.sql("UPDATE notify_parts SET state='new' WHERE sms=? AND seq=?", (sms_id, seq))
            tries = 1 + int(self.sql("SELECT tries FROM notify_sms WHERE id=?", (sms_id,)).fetchone()[0])
            reason = f"cms_{e.code}" if e.kind == "cms" else e.kind
            if not e.transient or tries >= self.cfg.retries:
                self.sql("UPDATE notify_sms SET tries=?, last_error=? WHERE id=?", (tries, reason, sms_id))
                self._finish(sms_id, "failed", {"reason": reason, "tries": tries})
                return
            wait = self.backoff(tries)
            self.sql("UPDATE notify_sms SET tries=?, last_error=?, next_try=? WHERE id=?",
                            (tries, reason, self.clock() + wait, sms_id))
        self.stats["retries"] += 1
        M.NOTIFY_SMS.labels("retry").inc()
        self.log("notify_retry", sms=sms_id, reason=reason, tries=tries, retry_in_s=round(wait, 2))

    def on_report(self, r: StatusReport) -> None:
        """A delivery report: the newest sent part with that TP-MR and no report yet."""
        if not r.final:
            return
        with self.store.tx():
            row = self.sql("SELECT sms, seq FROM notify_parts WHERE mr=? AND status IS NULL AND state='sent' "
                                  "ORDER BY sent_at DESC LIMIT 1", (r.mr,)).fetchone()
            if row is None:
                self.stats["report_unmatched"] += 1
                return
            sms_id = row[0]
            self.sql("UPDATE notify_parts SET status=? WHERE sms=? AND seq=?", (r.status, sms_id, row[1]))
            statuses = [x for (x,) in self.sql("SELECT status FROM notify_parts WHERE sms=?", (sms_id,))]
            state = self.sql("SELECT state FROM notify_sms WHERE id=?", (sms_id,)).fetchone()[0]
            if state != "sent" or any(x is None for x in statuses):
                return
            if all(x < 0x20 for x in statuses):
                self._finish(sms_id, "delivered", {})
            else:
                self._finish(sms_id, "undelivered", {"status": max(statuses)})
