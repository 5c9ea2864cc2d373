"""The clerk console's "print a slip": a pickup slip on the
counter's ESC/POS receipt printer for a villager without a phone, for a
parcel that is in a locker now.

What it prints is ``gateway/counter/slip.py``; this module finds the parcel
and decides whether the slip may carry the pickup code:

* the parcel's last locker event (deposit, pickup, retrieval) must be a
  deposit: a parcel already collected or taken back gets no slip (404);
* the code is printed only when the gateway can open the box the locker
  sealed for the outlet notifier (``protocol/seal.py``) with the notifier
  key file (``[notify] key_file``, read by ``gateway/notify/keys.py``, the
  notifier's own reader). A platform-coded deposit, a gateway without the
  key, a key version it does not hold or a box that does not verify: the
  slip says the code comes by SMS or through the platform, and the clerk's
  page says why (``why``). The deposit event may be gone after sync; the
  notifier's ``notify_jobs`` row still names the locker, so the slip is
  printed without a code.

The code exists only inside ``print_slip`` and the printer's bytes: it is
never returned, logged or put in an event. The console audits the action
(``gateway.clerk_slip``: parcel, locker, with or without code, printed or
the printer's reason) and counts it.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import ConfigError
from gateway.counter.printers import Printer, PrinterError
from gateway.counter.slip import LockerSlip, locker_slip
from gateway.notify.keys import load_keys
from gateway.notify.texts import when
from gateway.store.readonly import ReadOnlyStore
from protocol import envelope, seal
from protocol.errors import ProtocolError

PARCEL = re.compile(r"^[A-Z0-9]{8,40}$")
LOCKER_TYPES = ("locker.deposit", "locker.pickup", "locker.retrieve")


class NoSlip(Exception):
    """Why no slip: ``bad_parcel``, ``not_in_locker`` or ``no_printer``."""


@dataclass(frozen=True)
class Deposit:
    parcel: str
    device: str
    compartment: object
    expires: int | None
    event: dict[str, Any] | None  # the decoded deposit event, None once it was pruned after sync


class SlipDesk:
    """Finds a parcel in a locker, opens its code if it may, prints."""

    def __init__(self, db_path: Path, printer: Printer | None, key_file: str | Path | None,
                 tz_offset_h: float = 8.0) -> None:
        self.db_path = Path(db_path)
        self.printer = printer
        self.key_file = key_file
        self.tz_offset_h = tz_offset_h

    def deposit(self, parcel: str) -> Deposit:
        if not PARCEL.match(parcel):
            raise NoSlip("bad_parcel")
        store = ReadOnlyStore(self.db_path)
        try:
            marks = ",".join("?" * len(LOCKER_TYPES))
            row = store.db.execute(
                "SELECT type, device, payload FROM events WHERE type IN (" + marks + ") AND "
                "json_extract(CAST(payload AS TEXT), '$.body.parcel') = ? "
                "ORDER BY received_at DESC, rowid DESC LIMIT 1", (*LOCKER_TYPES, parcel)).fetchone()
            if row is not None:
                if row[0] != "locker.deposit":
                    raise NoSlip("not_in_locker")
                try:
                    ev = envelope.decode(bytes(row[2]))
                except ProtocolError:
                    raise NoSlip("not_in_locker") from None
                body = ev["body"]
                exp = body.get("expires")
                comp = body.get("compartment")
                return Deposit(parcel, row[1], comp if isinstance(comp, int) else "?",
                               exp if isinstance(exp, int) and not isinstance(exp, bool) else None, ev)
            try:  # the deposit was synced and pruned: the notifier's job still knows the locker
                job = store.db.execute("SELECT device, compartment, expires FROM notify_jobs WHERE parcel=? "
                                       "AND picked_at IS NULL ORDER BY received_at DESC LIMIT 1",
                                       (parcel,)).fetchone()
            except sqlite3.OperationalError:
                job = None  # no notifier on this gateway
        finally:
            store.close()
        if job is None:
            raise NoSlip("not_in_locker")
        return Deposit(parcel, job[0], job[1] if job[1] is not None else "?", job[2], None)

    def open_code(self, dep: Deposit) -> tuple[str | None, str]:
        """(code or None, why): ``opened``, ``event_gone``, ``platform_code``
        (sealed for the platform only), ``no_key`` (no readable key file),
        ``cannot_open`` (a key version not held, or a box that fails)."""
        if dep.event is None:
            return None, "event_gone"
        sealed = dep.event["body"].get("code_sealed")
        if dep.event["body"].get("code_by") != "locker" or not isinstance(sealed, dict) \
                or "notifier" not in sealed:
            return None, "platform_code"
        if self.key_file is None:
            return None, "no_key"
        try:
            keys = load_keys(self.key_file)
        except ConfigError:
            return None, "no_key"
        try:
            return seal.open_for_notifier(keys, dep.event), "opened"
        except ProtocolError:
            return None, "cannot_open"

    def print_slip(self, parcel: str) -> dict[str, Any]:
        """Print; what happened, without the code: {parcel, device,
        compartment, with_code, why, printed, error?}."""
        if self.printer is None:
            raise NoSlip("no_printer")
        dep = self.deposit(parcel)
        code, why = self.open_code(dep)
        expires = {lang: when(dep.expires, lang, self.tz_offset_h) for lang in ("zh", "en")}
        job = locker_slip(LockerSlip(dep.device, dep.compartment, parcel, expires, code))
        del code
        out: dict[str, Any] = {"parcel": parcel, "device": dep.device, "compartment": dep.compartment,
                               "with_code": why == "opened", "why": why}
        try:
            note = self.printer.send(job)
        except PrinterError as e:
            return {**out, "printed": False, "error": e.reason}
        return {**out, "printed": True, **({"note": note} if note else {})}
