"""The recipient's phone tail (last 4 digits) in the clerk's parcel search.

A villager at the counter says "my number ends 5678"; the clerk searches
those four digits. Events carry ``body.phone_tail`` only where the gateway
itself texted (``notify.sent`` and friends), so a parcel whose contact the
platform pushed (``notify_contacts``, ``gateway/notify/contacts.py``) but
that was never texted from here would not be found. This module adds those
parcels and shows each result's tail. Only the tail ever leaves the store:
the whole number is the notifier's, for texting, and is pruned with the
parcel (``routing.Router.prune``).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable

TAIL = re.compile(r"^[0-9]{4}$")


def parcels_by_tail(db: sqlite3.Connection, tail: str, limit: int) -> list[str]:
    """Parcels whose notification contact ends with ``tail``."""
    try:
        rows = db.execute("SELECT parcel FROM notify_contacts WHERE substr(phone, -4) = ? "
                          "ORDER BY received DESC LIMIT ?", (tail, limit)).fetchall()
    except sqlite3.OperationalError:
        return []  # no notifier on this gateway: no contacts table
    return [r[0] for r in rows]


def tail_of(db: sqlite3.Connection, parcel: str, payloads: Iterable[str]) -> str | None:
    """The parcel's phone tail: its contact's, else the newest an event of
    it carried (``payloads``: its history's JSON, oldest first)."""
    try:
        row = db.execute("SELECT phone FROM notify_contacts WHERE parcel=?", (parcel,)).fetchone()
    except sqlite3.OperationalError:
        row = None
    if row is not None and isinstance(row[0], str) and TAIL.match(row[0][-4:]):
        return row[0][-4:]
    found = None
    for p in payloads:
        try:
            body = json.loads(p).get("body")
        except (ValueError, AttributeError):
            continue
        tail = body.get("phone_tail") if isinstance(body, dict) else None
        if isinstance(tail, str) and TAIL.match(tail):
            found = tail
    return found
