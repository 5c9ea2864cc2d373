"""Counter acceptance of one outbound parcel, start to end:

scan the box code → a stable weight from the scale → sender and recipient
→ service (standard, or charity with donor and beneficiary) → scan a
pre-printed waybill → postage from the signed tariff → the label → the
event ``counter.accept``.

Why the steps are where they are:

* The weight comes from the scale only. ``weigh`` reads a stable weight
  and hands the page a one-time ``reading`` token; ``accept`` takes the
  token, never a number, so no client can type in a lighter parcel. A
  token lives ``READING_TTL_S`` and is spent by a successful accept.
* Everything that can refuse is checked before anything is written: the
  form, the box (``unknown_box``), the weight against the box
  (``overweight``) and the tariff (``over_tariff_max``), the waybill
  (``protocol/barcodes.py``: an S10 id or a China Post domestic waybill
  read from Code 128), the waybill not used before (``waybill_reused``)
  and the label printer's status: an empty roll is found before the
  parcel is taken.
* Then one SQLite transaction writes the waybill's row in
  ``counter_waybills`` (its primary key is what makes a waybill
  single-use, even across two clerks racing) and the ``counter.accept``
  event (class ``custody``, never evicted) that the syncer sends upstream
  with the rest. The label is printed after the commit: a record without
  a label is fixed with ``reprint``; a label without a record would be a
  parcel nobody answers for.
* The event cites the catalogue and tariff (kind, version, digest) the
  postage came from, so the platform can recompute it: the gateway cannot
  forge those documents (``common/platform_docs.py``) and the platform can tell.

The gateway's own events come from a sequence of their own (device
``counter_id``, default ``counter``, file ``<counter_id>.seq`` beside the
database), so the counter never shares a counter file with ingest's
``OwnEvents``.

Not checked here (yet): a waybill that some *other* path already knows
(an inbound parcel with the same number); the platform sees both.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from common import platform_docs as signed_docs
from common.box_catalogue import Catalogue
from common.clock import now as clock_now
from common.logs import recorder
from common.tariff import PostageError, Tariff
from common.text import beside
from gateway import metrics as M
from gateway.counter.label import Label, kg, render
from gateway.counter.parcel_form import FormError, ParcelForm, mask_phone, parse
from gateway.counter.printers import Printer, PrinterError
from gateway.counter.receipt import Receipt, pickup_slip, receipt
from gateway.counter.scale import Scale, ScaleError
from gateway.store.events import EventStore
from gateway.store.own_events import OwnEvents
from protocol import aim
from protocol.barcodes import PARCEL_KINDS, classify
from protocol.errors import ProtocolError

record = recorder(__name__)
TEXT = beside(__file__)
ACCEPTS = Counter("postedge_counter_accepts", "Counter acceptances, by result (accepted, or the refusal's "
                  "reason: overweight, unknown_box, invalid_waybill, waybill_reused, ...)", ["result"],
                  registry=M.REGISTRY)

READING_TTL_S = 600
MAX_READINGS = 64
WAYBILL_KINDS = ("s10", "cn_ems", "cn_parcel")
assert set(WAYBILL_KINDS) <= set(PARCEL_KINDS)
SCHEMA = """CREATE TABLE IF NOT EXISTS counter_waybills (
    waybill TEXT PRIMARY KEY, event_id TEXT NOT NULL, at REAL NOT NULL, label TEXT NOT NULL)"""


class Refused(Exception):
    """An accept, weighing or print the counter will not do: ``reason``
    (the JSON API's ``error``), an HTTP status and the catalogue's words."""

    def __init__(self, status: int, reason: str, field: str | None = None, key: str | None = None,
                 **fields: object) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.field = field
        key = key or (f"err.{reason}" if TEXT.has(f"err.{reason}") else "err.form")
        self.message = TEXT.both(key, field=field or "", **fields)

    def doc(self) -> dict[str, Any]:
        d: dict[str, Any] = {"error": self.reason, "message": self.message}
        if self.field:
            d["field"] = self.field
        return d


@dataclass
class _Reading:
    grams: int
    readings: int
    until: float


class CounterDesk:
    """One outlet's counter: its documents, scale and printers, and the
    store its events go to. Thread-safe: the web server calls it from its
    pool; one lock orders accepts (a counter takes parcels one at a time)."""

    def __init__(self, db_path: Path, outlet: str, docs_dir: Path, platform_keys: dict[str, str],
                 scale: Scale | None, label_printer: Printer | None, receipt_printer: Printer | None = None,
                 counter_id: str = "counter", scale_timeout_s: float = 5.0,
                 login_kinds: tuple[str, ...] = ("gateway",)) -> None:
        self.outlet = outlet
        self.login_kinds = login_kinds  # gateway/http/counter.py, until the clerk's login exists
        self.docs_dir = Path(docs_dir)
        self.keys = signed_docs.load_public_keys(platform_keys)
        self.scale = scale
        self.label_printer = label_printer
        self.receipt_printer = receipt_printer
        self.scale_timeout_s = scale_timeout_s
        self.store = EventStore(db_path)
        self.store.db.execute(SCHEMA)
        self.own = OwnEvents(self.store, outlet, counter_id, Path(db_path).parent)
        self.lock = threading.Lock()
        self.scale_lock = threading.Lock()
        self.readings: dict[str, _Reading] = {}
        self.catalogue: Catalogue | None = None
        self.tariff: Tariff | None = None
        self.load_documents()

    def close(self) -> None:
        if self.scale is not None:
            self.scale.close()
        self.store.close()

    # -- platform documents
    def _path(self, kind: str) -> Path:
        return self.docs_dir / f"{kind}.json"

    def load_documents(self) -> None:
        """The installed documents, checked again at every start: a file
        changed on disk is refused (and logged), not trusted."""
        for kind in signed_docs.KINDS:
            p = self._path(kind)
            if not p.exists():
                continue
            try:
                self._adopt(signed_docs.verify(p.read_bytes(), self.keys, kind, self.outlet))
            except signed_docs.DocError as e:
                record("counter_document_refused", kind=kind, reason=e.reason, detail=e.detail, path=str(p))

    def _adopt(self, doc: signed_docs.SignedDoc) -> None:
        if doc.kind == "box_catalogue":
            self.catalogue = Catalogue(doc)
        else:
            self.tariff = Tariff(doc)

    def install(self, data: bytes) -> dict[str, Any]:
        """A document the platform pushed: verified, newer than the one in
        use, parsed, then written (atomically) where ``load_documents``
        finds it after a restart."""
        try:
            head = json.loads(data) if len(data) <= signed_docs.MAX_DOC else None
            kind = head.get("kind") if isinstance(head, dict) else None
            if kind not in signed_docs.KINDS:
                raise signed_docs.DocError("wrong_kind", "kind must be " + " or ".join(signed_docs.KINDS))
            doc = signed_docs.verify(data, self.keys, kind, self.outlet)
            current = self.catalogue if kind == "box_catalogue" else self.tariff
            signed_docs.newer(current.doc if current is not None else None, doc)
            with self.lock:
                self._adopt(doc)
                self.docs_dir.mkdir(parents=True, exist_ok=True)
                tmp = self._path(kind).with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(self._path(kind))
        except (signed_docs.DocError, ValueError, RecursionError) as e:
            reason = e.reason if isinstance(e, signed_docs.DocError) else "malformed"
            record("counter_document_refused", reason=reason, detail=str(e)[:200])
            raise Refused(422, "document", detail=reason) from e
        record("counter_document_installed", kind=doc.kind, version=doc.version, digest=doc.digest[:16])
        return doc.cite()

    # -- weighing
    def weigh(self) -> dict[str, Any]:
        if self.scale is None:
            raise Refused(503, "scale", detail="no scale configured")
        # One weighing at a time, and a second caller is told so at once
        # rather than holding one of the web server's few pool threads.
        if not self.scale_lock.acquire(blocking=False):
            raise Refused(409, "scale", detail="busy")
        try:
            w = self.scale.read_stable(self.scale_timeout_s)
        except ScaleError as e:
            raise Refused(503 if e.reason in ("unplugged", "no_data") else 409, "scale",
                          detail=e.reason) from e
        finally:
            self.scale_lock.release()
        if w.grams <= 0:
            raise Refused(409, "no_weight")
        now = time.monotonic()
        with self.lock:
            for k in [k for k, r in self.readings.items() if r.until < now]:
                del self.readings[k]
            while len(self.readings) >= MAX_READINGS:
                del self.readings[next(iter(self.readings))]
            token = secrets.token_urlsafe(12)
            self.readings[token] = _Reading(w.grams, w.readings, now + READING_TTL_S)
        return {"reading": token, "weight_g": w.grams, "expires_in_s": READING_TTL_S}

    # -- the catalogue and a quote
    def boxes(self) -> list[dict[str, Any]]:
        if self.catalogue is None:
            raise Refused(503, "no_catalogue")
        return [b.doc() for b in self.catalogue.boxes.values()]

    def _checked(self, form: ParcelForm) -> tuple[Any, _Reading, Any, dict[str, Any]]:
        if self.catalogue is None:
            raise Refused(503, "no_catalogue")
        if self.tariff is None:
            raise Refused(503, "no_tariff")
        box = self.catalogue.get(aim.parse(form.box)[2])  # the scanner may prefix "]C0"
        if box is None:
            raise Refused(404, "unknown_box", field="box", box=form.box[:32])
        reading = self.readings.get(form.reading)
        if reading is None or reading.until < time.monotonic():
            raise Refused(409, "unknown_reading", field="reading")
        if reading.grams > box.max_g:
            raise Refused(422, "overweight", field="box", weight=kg(reading.grams), limit=kg(box.max_g))
        try:
            quote = self.tariff.quote(form.service, form.recipient.postcode, reading.grams)
        except PostageError as e:
            raise Refused(422, "postage", field="recipient.postcode" if e.reason == "bad_postcode" else None,
                          detail=e.reason) from e
        v = classify(form.waybill_scan)
        if not v["ok"] or v["kind"] not in WAYBILL_KINDS:
            raise Refused(422, "invalid_waybill", field="waybill",
                          detail=v.get("reason", v.get("kind", "?")))
        return box, reading, quote, v

    # -- acceptance
    def accept(self, doc: object, clerk: str, now: float | None = None) -> dict[str, Any]:
        try:
            out = self._accept(doc, clerk, now)
        except Refused as e:
            ACCEPTS.labels(e.reason).inc()
            raise
        ACCEPTS.labels("accepted").inc()
        return out

    def _accept(self, doc: object, clerk: str, now: float | None) -> dict[str, Any]:
        try:
            form = parse(doc)
        except FormError as e:
            raise Refused(422, e.reason, field=e.field, key="err.form", detail=e.detail) from e
        with self.lock:
            box, reading, quote, verdict = self._checked(form)
            waybill = verdict["value"]
            if self.store.db.execute("SELECT 1 FROM counter_waybills WHERE waybill=?", (waybill,)).fetchone():
                raise Refused(409, "waybill_reused", field="waybill", waybill=waybill)
            svc = TEXT.both(f"service.{form.service}")
            t = time.localtime(clock_now() if now is None else now)
            charity = f"{form.donor} → {form.beneficiary}" if form.service == "charity" else ""
            snd, rcp = form.sender, form.recipient
            label = Label(waybill=waybill, service=f"{svc['zh']} {svc['en']}",
                          sender=f"{snd.name} {mask_phone(snd.phone)} {snd.address}".strip(),
                          recipient_name=rcp.name, recipient_phone=mask_phone(rcp.phone),
                          recipient_address=rcp.address, recipient_postcode=rcp.postcode,
                          weight_g=reading.grams, postage_fen=quote.fen, box=box.code, outlet=self.outlet,
                          date=time.strftime("%Y-%m-%d", t), charity=charity)
            job = render(self.label_printer.language, label) if self.label_printer else b""
            if self.label_printer is not None:
                try:
                    self.label_printer.check()  # an empty roll refuses before the parcel is taken
                except PrinterError as e:
                    raise Refused(503, "printer", detail=e.reason) from e
            body: dict[str, Any] = {
                "waybill": waybill, "waybill_kind": verdict["kind"], "box": box.code,
                "weight_g": reading.grams, "stable_readings": reading.readings, "service": form.service,
                "zone": quote.zone, "postage_fen": quote.fen, "sender": form.sender.doc(),
                "recipient": form.recipient.doc(), "clerk": clerk,
                "catalogue": self.catalogue.doc.cite() if self.catalogue else None,
                "tariff": self.tariff.doc.cite() if self.tariff else None}
            if form.service == "charity":
                body["charity"] = {"donor": form.donor, "beneficiary": form.beneficiary}
            try:
                with self.store.tx():
                    saved = json.dumps(asdict(label), ensure_ascii=False)
                    db = self.store.db
                    db.execute("INSERT INTO counter_waybills(waybill,event_id,at,label) VALUES (?,?,?,?)",
                               (waybill, "", clock_now(), saved))
                    eid = self.own.emit("counter.accept", body, cls="custody")
                    db.execute("UPDATE counter_waybills SET event_id=? WHERE waybill=?", (eid, waybill))
            except sqlite3.IntegrityError as e:
                raise Refused(409, "waybill_reused", field="waybill", waybill=waybill) from e
            except ProtocolError as e:  # the form's limits keep an event far below this; never a 500
                raise Refused(422, "too_long", field="", key="err.form", detail=str(e)[:100]) from e
            except sqlite3.Error as e:
                record("counter_store_error", error=repr(e))
                raise Refused(503, "store") from e
            self.readings.pop(form.reading, None)
        record("counter_accepted", event=eid, waybill=waybill, box=box.code, weight_g=reading.grams,
               service=form.service, postage_fen=quote.fen)  # no names, phones or addresses in logs
        result: dict[str, Any] = {"event": eid, "waybill": waybill, "weight_g": reading.grams,
                                  "postage_fen": quote.fen, "zone": quote.zone, "service": form.service,
                                  "label": self._print_label(job)}
        if self.receipt_printer is not None:
            result["receipt"] = self._print(self.receipt_printer, receipt(Receipt(
                self.outlet, time.strftime("%Y-%m-%d %H:%M", t), waybill, f"{svc['zh']} {svc['en']}",
                f"{form.recipient.name} {form.recipient.address[:12]}", reading.grams, quote.fen, box.code,
                charity)))
        return result

    def _print(self, printer: Printer, job: bytes) -> dict[str, Any]:
        try:
            note = printer.send(job)
        except PrinterError as e:
            return {"printed": False, "error": e.reason}
        return {"printed": True, "note": note} if note else {"printed": True}

    def _print_label(self, job: bytes) -> dict[str, Any]:
        if self.label_printer is None:
            return {"printed": False, "error": "no_printer"}
        return self._print(self.label_printer, job)

    def print_pickup_slip(self, code: str, parcel: str, locker: str, expires: str) -> dict[str, Any]:
        """A pickup slip on the receipt printer, for a villager without a
        phone (the notifier and the clerk's "print a slip" call this). The
        code is printed, never logged or stored here."""
        if self.receipt_printer is None:
            raise Refused(503, "printer", detail="no_printer")
        try:
            job = pickup_slip(code, parcel, locker, expires)
        except ValueError as e:
            raise Refused(422, "bad_code", field="code", key="err.form", detail=str(e)) from e
        return self._print(self.receipt_printer, job)

    def reprint(self, waybill: str, clerk: str) -> dict[str, Any]:
        """The label again (the roll ran out after the accept, a jam):
        audited as ``counter.label_reprint``."""
        if not isinstance(waybill, str) or len(waybill) > 40:
            raise Refused(404, "unknown_waybill", field="waybill")
        with self.lock:
            row = self.store.db.execute("SELECT label FROM counter_waybills WHERE waybill=?",
                                        (waybill,)).fetchone()
            if row is None:
                raise Refused(404, "unknown_waybill", field="waybill")
            if self.label_printer is None:
                raise Refused(503, "printer", detail="no_printer")
            label = Label(**json.loads(row[0]))
            out = self._print_label(render(self.label_printer.language, label))
            self.own.emit("counter.label_reprint", {"waybill": waybill, "clerk": clerk,
                                                    "printed": out["printed"]}, cls="audit")
        return out
