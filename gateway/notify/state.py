"""The notifier's durable state, in the gateway's own SQLite file so that a
routing decision, the own event that tells the platform about it and the
deposit's sync state are read and written in one transaction.

Tables (created on first use, ``IF NOT EXISTS``: the notifier's schema does
not move the event store's ``user_version``):

- ``notify_jobs``: one row per deposit the notifier has seen, with its
  ``notice`` and ``reminder`` routes (NULL: undecided, ``platform``,
  ``gateway``). A route is decided once, in the transaction that emits the
  ``notify.route`` own event, so a restart at any point neither decides
  twice nor forgets to decide.
- ``notify_sms``: each text the modem is to send (notice, reminder, resend)
  and its state ``queued`` → ``sent`` → ``delivered``, or ``failed``
  (refused for good), or ``uncertain`` (the modem took the PDU and then
  went silent, or the gateway died mid-send: it may have gone out, so it is
  never sent again by itself; the clerk can resend).
- ``notify_parts``: each concatenated part, ``new`` → ``sending`` (committed
  before the PDU is written) → ``sent`` with its TP-MR, then the delivery
  report's status. A part found ``sending`` at start is ``uncertain``.
- ``notify_contacts``: the recipient of each parcel, from the platform
  (``contacts.py``); ``notify_inbox``: contacts as the downlink received
  them, checked by the notifier, which holds the key.
- ``notify_requests``: a clerk's resend, written by the HTTP route and
  carried out (and audited) by the notifier thread.

No table holds a pickup code: the code is opened from the deposit event's
sealed box at the moment a text is rendered, and only the text goes to the
modem.
"""

from __future__ import annotations

import sqlite3

from common.clock import now as clock_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_jobs (
    event TEXT PRIMARY KEY,
    parcel TEXT NOT NULL,
    device TEXT NOT NULL,
    compartment INTEGER,
    expires INTEGER,
    code_by TEXT NOT NULL,
    received_at REAL NOT NULL,
    notice TEXT,
    notice_at REAL,
    reminder TEXT,
    reminder_at REAL,
    picked_at REAL
);
CREATE INDEX IF NOT EXISTS notify_jobs_open ON notify_jobs(parcel);
CREATE TABLE IF NOT EXISTS notify_sms (
    id INTEGER PRIMARY KEY,
    event TEXT NOT NULL,
    purpose TEXT NOT NULL,
    phone TEXT NOT NULL,
    lang TEXT NOT NULL,
    state TEXT NOT NULL,
    parts INTEGER NOT NULL DEFAULT 0,
    tries INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created REAL NOT NULL,
    sent_at REAL,
    delivered_at REAL,
    clerk TEXT
);
CREATE INDEX IF NOT EXISTS notify_sms_state ON notify_sms(state, next_try);
CREATE TABLE IF NOT EXISTS notify_parts (
    sms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    mr INTEGER,
    status INTEGER,
    sent_at REAL,
    PRIMARY KEY (sms, seq)
);
CREATE INDEX IF NOT EXISTS notify_parts_mr ON notify_parts(mr) WHERE status IS NULL;
CREATE TABLE IF NOT EXISTS notify_contacts (
    parcel TEXT PRIMARY KEY,
    phone TEXT NOT NULL,
    lang TEXT NOT NULL,
    cid TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notify_inbox (
    id INTEGER PRIMARY KEY,
    payload BLOB NOT NULL,
    received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notify_requests (
    id INTEGER PRIMARY KEY,
    parcel TEXT NOT NULL,
    clerk TEXT NOT NULL,
    at REAL NOT NULL,
    done_at REAL,
    outcome TEXT
);
"""

KV_CURSOR = "notify_cursor"  # the last events rowid the notifier has looked at


def ensure_schema(db: sqlite3.Connection) -> None:
    """Create the notifier's tables if missing (safe inside a transaction:
    each statement alone, no executescript, which would commit)."""
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            db.execute(stmt)


def inbox_put(db: sqlite3.Connection, payload: bytes) -> None:
    """The downlink's side: keep a contact as it came, in the downlink's
    own transaction (its cursor moves with it), for the notifier to check."""
    ensure_schema(db)
    db.execute("INSERT INTO notify_inbox(payload, received) VALUES (?, ?)", (bytes(payload), clock_now()))


def request_resend(db: sqlite3.Connection, parcel: str, clerk: str) -> int:
    """The clerk's side: one resend request; its id."""
    ensure_schema(db)
    cur = db.execute("INSERT INTO notify_requests(parcel, clerk, at) VALUES (?, ?, ?)",
                     (parcel, clerk, clock_now()))
    return int(cur.lastrowid or 0)
