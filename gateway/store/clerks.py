"""Clerk accounts, sessions, login throttling and the clerk's requests to the
platform, in the gateway's own SQLite file (the clerk console).

Why these tables are created here (``CREATE TABLE IF NOT EXISTS``) and not
as a numbered migration in ``events.py``: other branches add migrations at
the same time, and two branches that both take number 6 cannot both be
merged. None of these tables is read by ingest or sync, so they need no
ordering against the event schema; ``ensure`` is idempotent and runs on
every writable open by the console and by ``postedge gateway clerk``.

What is kept, and why in this shape:

- ``clerks``: the password only as an scrypt hash (``common/session.py``
  says why scrypt and which parameters).
- ``clerk_sessions``: the SHA-256 of the session token, never the token, so
  a copy of the database (a backup, a swapped SD card) holds no live
  session; the CSRF token that belongs to the session; an absolute and an
  idle expiry.
- ``clerk_throttle``: failed logins per account and per address, so a
  guesser is slowed whether they try many passwords on one account or one
  password on many.
- ``clerk_requests``: what the clerk asked the platform to do to a locker
  (out of service, back, a remote open). The request itself is an own
  event (``gateway.clerk_request``) that syncs upstream; this row lets the
  page say whether it is still waiting for the link or for the platform.
- ``clerk_refusals``: the platform's refusal of a request, with its reason
  (it came down the downlink: ``gateway/uplink/downlink.py``).
- ``alarm_acks`` is in ``alarms_ack.py`` (the read-only status page reads it).
网点职员账号、会话、登录限速和职员向平台提出的请求。
"""

from __future__ import annotations

import sqlite3
from typing import Any

from common.clock import now as clock_now
from gateway.store import alarms_ack

SCHEMA = """
CREATE TABLE IF NOT EXISTS clerks (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('clerk','supervisor')),
    pw TEXT NOT NULL,
    created REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS clerk_sessions (
    token_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL,
    expires REAL NOT NULL,
    addr TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clerk_throttle (
    key TEXT PRIMARY KEY,
    fails INTEGER NOT NULL,
    first_at REAL NOT NULL,
    locked_until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS clerk_requests (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    compartment INTEGER NOT NULL,
    by TEXT NOT NULL,
    note TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS clerk_refusals (
    id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""

ROLES = ("clerk", "supervisor")


def ensure(db: sqlite3.Connection) -> None:
    """Create the console's tables if they are missing (idempotent)."""
    for stmt in (SCHEMA + alarms_ack.SCHEMA).split(";"):
        if stmt.strip():
            db.execute(stmt)


def has_tables(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='clerks'").fetchone()
    return row is not None


# ---------------------------------------------------------------- accounts

def add_clerk(db: sqlite3.Connection, name: str, role: str, pw_hash: str) -> bool:
    """True if new; an existing name gets the new password and role (a reset)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    new = db.execute("SELECT 1 FROM clerks WHERE name=?", (name,)).fetchone() is None
    db.execute("INSERT INTO clerks(name, role, pw, created) VALUES (?,?,?,?) ON CONFLICT(name) DO UPDATE "
               "SET role=excluded.role, pw=excluded.pw, disabled=0", (name, role, pw_hash, clock_now()))
    # A password reset ends every session of that account.
    db.execute("DELETE FROM clerk_sessions WHERE name=?", (name,))
    return new


def disable(db: sqlite3.Connection, name: str) -> bool:
    """Lock an account out and end its sessions at once; False if unknown.
    ``add_clerk`` for the same name enables it again (with a new password)."""
    cur = db.execute("UPDATE clerks SET disabled=1 WHERE name=?", (name,))
    db.execute("DELETE FROM clerk_sessions WHERE name=?", (name,))
    return cur.rowcount > 0


def clerk(db: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    row = db.execute("SELECT name, role, pw, disabled FROM clerks WHERE name=?", (name,)).fetchone()
    if row is None:
        return None
    return {"name": row[0], "role": row[1], "pw": row[2], "disabled": bool(row[3])}


def clerks(db: sqlite3.Connection) -> list[dict[str, Any]]:
    return [{"name": n, "role": r, "disabled": bool(d)}
            for n, r, d in db.execute("SELECT name, role, disabled FROM clerks ORDER BY name")]


# ---------------------------------------------------------------- sessions

def new_session(db: sqlite3.Connection, token_hash: str, name: str, csrf: str, addr: str,
                now: float, expires: float) -> None:
    db.execute("INSERT INTO clerk_sessions(token_hash, name, csrf, created, last_seen, expires, addr) "
               "VALUES (?,?,?,?,?,?,?)", (token_hash, name, csrf, now, now, expires, addr))
    # Old rows go when anyone logs in: the table never grows without bound.
    db.execute("DELETE FROM clerk_sessions WHERE expires < ?", (now,))


def session(db: sqlite3.Connection, token_hash: str) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT s.name, s.csrf, s.created, s.last_seen, s.expires, c.role, c.disabled FROM clerk_sessions s "
        "JOIN clerks c ON c.name = s.name WHERE s.token_hash=?", (token_hash,)).fetchone()
    if row is None:
        return None
    return {"name": row[0], "csrf": row[1], "created": row[2], "last_seen": row[3], "expires": row[4],
            "role": row[5], "disabled": bool(row[6])}


def touch_session(db: sqlite3.Connection, token_hash: str, now: float) -> None:
    db.execute("UPDATE clerk_sessions SET last_seen=? WHERE token_hash=?", (now, token_hash))


def end_session(db: sqlite3.Connection, token_hash: str) -> None:
    db.execute("DELETE FROM clerk_sessions WHERE token_hash=?", (token_hash,))


# ---------------------------------------------------------------- throttle

def throttle_get(db: sqlite3.Connection, key: str) -> tuple[int, float, float]:
    row = db.execute("SELECT fails, first_at, locked_until FROM clerk_throttle WHERE key=?",
                     (key,)).fetchone()
    return (0, 0.0, 0.0) if row is None else (int(row[0]), float(row[1]), float(row[2]))


def throttle_put(db: sqlite3.Connection, key: str, fails: int, first_at: float, locked_until: float) -> None:
    db.execute("INSERT INTO clerk_throttle(key, fails, first_at, locked_until) VALUES (?,?,?,?) "
               "ON CONFLICT(key) DO UPDATE SET fails=excluded.fails, first_at=excluded.first_at, "
               "locked_until=excluded.locked_until", (key, fails, first_at, locked_until))


def throttle_prune(db: sqlite3.Connection, now: float, forget_s: float) -> None:
    """Drop keys no longer locked whose failures are forgotten anyway, so
    guesses under many names or addresses cannot grow the table for ever."""
    db.execute("DELETE FROM clerk_throttle WHERE locked_until < ? AND first_at < ?", (now, now - forget_s))


def throttle_clear(db: sqlite3.Connection, key: str) -> None:
    db.execute("DELETE FROM clerk_throttle WHERE key=?", (key,))


# ---------------------------------------------------------------- requests

def add_request(db: sqlite3.Connection, eid: str, kind: str, device: str, compartment: int, by: str,
                note: str, at: float) -> None:
    db.execute("INSERT INTO clerk_requests(id, kind, device, compartment, by, note, at) "
               "VALUES (?,?,?,?,?,?,?)",
               (eid, kind, device, compartment, by, note, at))


def record_refusal(db: sqlite3.Connection, request: str, reason: str, at: float) -> bool:
    """Keep the platform's refusal of one of this outlet's requests; False
    if no such request was made here (nothing is kept then)."""
    ensure(db)
    if db.execute("SELECT 1 FROM clerk_requests WHERE id=?", (request,)).fetchone() is None:
        return False
    db.execute("INSERT OR IGNORE INTO clerk_refusals(id, reason, at) VALUES (?,?,?)", (request, reason, at))
    return True


def requests(db: sqlite3.Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The latest requests with where each stands: ``waiting_link`` (its
    event has not reached the platform), ``sent`` (the platform has it, no
    answer yet), ``platform_refused`` (with ``reason``), or the state of the
    command the platform signed for it (matched by ``args.request``, the
    contract in docs/gateway.md)."""
    if not has_tables(db):
        return []
    has_refusals = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='clerk_refusals'").fetchone() is not None
    rows = db.execute(
        "SELECT r.id, r.kind, r.device, r.compartment, r.by, r.note, r.at, e.synced_at FROM clerk_requests r "
        "LEFT JOIN events e ON e.id = r.id ORDER BY r.at DESC LIMIT ?", (limit,)).fetchall()
    out = []
    for rid, kind, device, cid, by, note, at, synced in rows:
        cmd = db.execute(
            "SELECT status FROM commands WHERE device=? "
            "AND json_extract(CAST(payload AS TEXT), '$.args.request')=? "
            "ORDER BY created DESC LIMIT 1", (device, rid)).fetchone()
        refused = db.execute("SELECT reason FROM clerk_refusals WHERE id=?", (rid,)).fetchone() \
            if has_refusals else None
        reason = None
        if cmd is not None:
            stage = f"cmd_{cmd[0]}"
        elif refused is not None:
            stage, reason = "platform_refused", refused[0]
        else:
            stage = "sent" if synced is not None else "waiting_link"
        out.append({"id": rid, "kind": kind, "device": device, "compartment": cid, "by": by, "note": note,
                    "at": at, "stage": stage, "reason": reason})
    return out
