"""The embedded backend: one SQLite file and a photo folder, in-process.

For ``./scripts/demo`` and a county pilot: nothing to install beside
Python. One writer connection under a lock (SQLite serialises writers
anyway); WAL with ``synchronous=FULL`` so a committed batch survives a power
cut, which is what the gateway's ack promises. Idempotent on (outlet,
event id) (``INSERT OR IGNORE``) and on (outlet, batch id) (the receipt
table), so a batch resent after a lost ack changes nothing.

Events and quarantined events are keyed by (outlet, event id), never by the
id alone: ids are made by devices (``lk01:<incarnation>:<seq>``) and device
names repeat in every outlet, so two outlets' lockers can make the same id;
keyed by id alone the second outlet's event was taken for a resend and lost,
acked but never stored. Every read by id names the outlet too. A
file made before that key is upgraded in place on open (``rekey``: the
table rebuilt under the new key in one transaction, every row kept, as
SQLite cannot change a primary key in place); the tables other modules key
by an event id (revocations, boards, notices) use the same helper.

Outlet passwords are stored as scrypt hashes (``common/session.py``, the
clerks' scheme); a verified password is remembered by its SHA-256 so the
scrypt cost is paid once per login, not per batch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from central.backend import PhotoError, PhotoState, Stored, carriable
from central.dispatch_reads import KNOWN_TIME, claim, lag_batches, review_rows, unresolved
from central.duty_store import DutyTable, body_of, columns_of, event_type_name, identifier, index_name
from central.intake import Checked
from central.registry import device_row, mqtt_hash, outlet_row
from common import clock
from common.durable import write_durable
from common.session import PasswordCache, hash_password, verify_password

# The tables keyed by (outlet, event id); ``{t}`` is the table's name (``rekey``).
EVENTS = """CREATE TABLE IF NOT EXISTS {t} (
    id TEXT NOT NULL, outlet TEXT NOT NULL, device TEXT NOT NULL, type TEXT NOT NULL,
    cls TEXT NOT NULL, ts INTEGER NOT NULL, payload BLOB NOT NULL, batch TEXT NOT NULL,
    received_at REAL NOT NULL, PRIMARY KEY (outlet, id));"""
QUARANTINE = """CREATE TABLE IF NOT EXISTS {t} (
    id TEXT NOT NULL, outlet TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL,
    received_at REAL NOT NULL, PRIMARY KEY (outlet, id));"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS outlets (
    id TEXT PRIMARY KEY, pw_hash TEXT NOT NULL, created_at REAL NOT NULL, retired_at REAL,
    notifier INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT NOT NULL, outlet TEXT NOT NULL, kind TEXT NOT NULL, kv INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL, retired_at REAL, prev_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (outlet, id));
CREATE TABLE IF NOT EXISTS courier_badges (
    outlet TEXT NOT NULL, courier TEXT NOT NULL, lockers TEXT NOT NULL, exp INTEGER NOT NULL,
    issued_at REAL NOT NULL, revoked_at REAL, PRIMARY KEY (outlet, courier));
{events}
CREATE INDEX IF NOT EXISTS events_outlet ON events (outlet, received_at);
{quarantine}
CREATE TABLE IF NOT EXISTS batches (
    id TEXT NOT NULL, outlet TEXT NOT NULL, lane TEXT NOT NULL, n INTEGER NOT NULL,
    new INTEGER NOT NULL, dup INTEGER NOT NULL, wire_bytes INTEGER NOT NULL, first_at REAL NOT NULL,
    receipts INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (outlet, id));
CREATE TABLE IF NOT EXISTS commands (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT, outlet TEXT NOT NULL, kind TEXT NOT NULL,
    cmd TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pulled (outlet TEXT PRIMARY KEY, after INTEGER NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    sha TEXT PRIMARY KEY, size INTEGER NOT NULL, chunk_size INTEGER NOT NULL,
    chunks INTEGER NOT NULL, complete INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS photo_parts (
    sha TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (sha, idx));
CREATE TABLE IF NOT EXISTS photo_claims (
    sha TEXT NOT NULL, outlet TEXT NOT NULL, meta TEXT, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dispatchers (
    name TEXT PRIMARY KEY, pw_hash TEXT NOT NULL, created_at REAL NOT NULL, disabled_at REAL);
CREATE TABLE IF NOT EXISTS photo_reviews (
    sha TEXT PRIMARY KEY, verdict TEXT NOT NULL, reason TEXT NOT NULL, by TEXT NOT NULL, at REAL NOT NULL);
""".replace("{events}", EVENTS.format(t="events")).replace("{quarantine}", QUARANTINE.format(t="quarantine"))


SQLITE_TYPES = {"text": "TEXT", "int": "INTEGER", "real": "REAL"}  # a DutyTable's columns


def type_index(event_type: str) -> str:
    """A partial index of one type's events in the order stored (the rowid
    is every index's last column), which ``events_after`` reads by; other
    events' inserts do not touch it."""
    return (f"CREATE INDEX IF NOT EXISTS events_type_{event_type_name(event_type)} ON events (type) "
            f"WHERE type = '{event_type}'")


def events_after_sql(event_type: str) -> str:
    """``events_after``'s query (one parameter: the rowid after which), the
    type a literal so that its partial index (``type_index``) serves it."""
    event_type_name(event_type)  # a plain event type, safe as a literal
    return (f"SELECT rowid, outlet, id, payload FROM events WHERE type = '{event_type}' AND rowid > ? "
            "ORDER BY rowid")


def rows_sql(table: str, where: dict[str, Any], unlike: dict[str, Any] | None = None,
             newest: int | None = None) -> tuple[str, tuple[Any, ...]]:
    """``rows``' query and its parameters (a function of its own, so a test
    can ask SQLite how it plans it: ``DutyTable.indexes``)."""
    unlike = unlike or {}
    match = " AND ".join([f"{c}=?" for c in columns_of(where)]
                         + [f"{c} IS NOT ?" for c in columns_of(unlike)]) or "1"
    args: tuple[Any, ...] = (*where.values(), *unlike.values())
    if newest is not None:
        match += " ORDER BY at DESC, rowid DESC LIMIT ?"
        args += (int(newest),)
    return f"SELECT * FROM {identifier(table)} WHERE {match}", args


def primary_key(db: sqlite3.Connection, table: str) -> list[str]:
    """The columns of ``table``'s primary key, in key order ([] if none or no table)."""
    cols = [(pk, name) for _, name, _, _, _, pk in db.execute(f"PRAGMA table_info({table})") if pk]
    return [name for _, name in sorted(cols)]


def rekey(db: sqlite3.Connection, table: str, create: str, key: list[str]) -> bool:
    """Rebuild ``table`` under the primary key ``key`` if it has another one
    (a file made by an older version); True if it did. ``create`` is the new
    table's CREATE statement with ``{t}`` for its name. One transaction:
    create the new table, copy every row, drop the old, rename the new; the
    caller recreates the table's indexes (its ``CREATE INDEX IF NOT
    EXISTS``). Rows are copied with their rowids and by column name, so the
    columns must be the same; the new key must be no stricter than the old
    (here it adds the outlet to an event id, which the old key already made
    unique)."""
    have = primary_key(db, table)
    if not have or have == key:
        return False
    tmp = f"{table}__rekey"
    db.execute("BEGIN IMMEDIATE")
    try:
        if primary_key(db, table) == key:  # another connection did it meanwhile
            db.execute("ROLLBACK")
            return False
        db.execute(f"DROP TABLE IF EXISTS {tmp}")
        db.execute(create.format(t=tmp))
        cols = ", ".join(r[1] for r in db.execute(f"PRAGMA table_info({table})"))
        # rowids kept: readers page through ``events`` by rowid (a board
        # review's cursor, the simulator's ledger) and must find their place again
        db.execute(f"INSERT INTO {tmp} (rowid, {cols}) SELECT rowid, {cols} FROM {table} ORDER BY rowid")
        db.execute(f"DROP TABLE {table}")
        db.execute(f"ALTER TABLE {tmp} RENAME TO {table}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return True


class Embedded:
    """The embedded backend (``central.backend.Backend``, ``central.registry.Registry``,
    ``central.duty_store.DutyStore``)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "photos").mkdir(exist_ok=True)
        self.db = sqlite3.connect(self.dir / "central.db", check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=10000")
        rekey(self.db, "events", EVENTS, ["outlet", "id"])
        rekey(self.db, "quarantine", QUARANTINE, ["outlet", "id"])
        self.db.executescript(SCHEMA)
        if "mqtt_hash" not in {r[1] for r in self.db.execute("PRAGMA table_info(outlets)")}:
            # a file from before the registry kept MQTT logins: none until the outlet is added again
            self.db.execute("ALTER TABLE outlets ADD COLUMN mqtt_hash TEXT")
        if "prev_until" not in {r[1] for r in self.db.execute("PRAGMA table_info(devices)")}:
            # a file from before key rotation: every device on its first key, none in a grace period
            self.db.execute("ALTER TABLE devices ADD COLUMN prev_until INTEGER NOT NULL DEFAULT 0")
        # reentrant: a reader that holds it for a consistent view (the simulator's
        # ledger) may call a method that takes it too (``rows``, for the notices' states)
        self.lock = threading.RLock()
        self._duties = threading.Lock()  # one duty pass at a time (``duties_turn``)
        self._logins = PasswordCache()

    # ---------------------------------------------------------- registry
    def add_outlet(self, outlet: str, password: str, notifier: bool = False) -> None:
        """Register an outlet (or give it a new password). ``notifier``: the
        outlet's gateway texts villagers itself while the backhaul is down
        (the platform then sends only what the gateway routes to it)."""
        with self.lock:
            self.db.execute("INSERT INTO outlets (id, pw_hash, created_at, notifier, mqtt_hash) "
                            "VALUES (?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET pw_hash=excluded.pw_hash, "
                            "retired_at=NULL, notifier=excluded.notifier, mqtt_hash=excluded.mqtt_hash",
                            (outlet, hash_password(password), time.time(), int(notifier),
                             mqtt_hash(password)))

    def retire_outlet(self, outlet: str) -> bool:
        with self.lock:
            cur = self.db.execute("UPDATE outlets SET retired_at=? WHERE id=? AND retired_at IS NULL",
                                  (time.time(), outlet))
            return cur.rowcount == 1

    def notifier_outlets(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM outlets WHERE notifier=1")}

    def mqtt_users(self) -> dict[str, str | None]:
        return dict(self.db.execute("SELECT id, mqtt_hash FROM outlets WHERE retired_at IS NULL ORDER BY id"))

    def outlets(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT id, created_at, retired_at FROM outlets ORDER BY id")
        return [outlet_row(o, c, r) for o, c, r in cur]

    def outlet_login(self, outlet: str, password: str) -> bool:
        row = self.db.execute("SELECT pw_hash FROM outlets WHERE id=? AND retired_at IS NULL",
                              (outlet,)).fetchone()
        if row is None:
            return False
        return self._logins.check(outlet, password, row[0])

    def add_device(self, outlet: str, device: str, kind: str, kv: int | None = None) -> None:
        """Register a device (or change its kind). ``kv``: its key version; by
        default a new device's is 1 and a registered one keeps its own, so
        registering it again never undoes a rotation (``rotate_device``)."""
        with self.lock:
            self.db.execute("INSERT INTO devices (id, outlet, kind, kv, created_at) VALUES (?,?,?,?,?) "
                            "ON CONFLICT(outlet, id) DO UPDATE SET kind=excluded.kind, "
                            "kv=CASE WHEN ? IS NULL THEN devices.kv ELSE excluded.kv END, retired_at=NULL",
                            (device, outlet, kind, kv or 1, time.time(), kv))

    def rotate_device(self, outlet: str, device: str, prev_until: int) -> int | None:
        """Move a registered, unretired device to its next key version; the
        previous one stays in its key section until ``prev_until`` (0: not at
        all). The new version, or None for no such device."""
        with self.lock:
            cur = self.db.execute("UPDATE devices SET kv=kv+1, prev_until=? WHERE outlet=? AND id=? "
                                  "AND retired_at IS NULL", (prev_until, outlet, device))
            if cur.rowcount != 1:
                return None
            return int(self.db.execute("SELECT kv FROM devices WHERE outlet=? AND id=?",
                                       (outlet, device)).fetchone()[0])

    def retire_device(self, outlet: str, device: str) -> bool:
        with self.lock:
            cur = self.db.execute("UPDATE devices SET retired_at=? WHERE outlet=? AND id=? "
                                  "AND retired_at IS NULL", (time.time(), outlet, device))
            return cur.rowcount == 1

    def devices(self, outlet: str) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT id, kind, kv, retired_at, prev_until FROM devices WHERE outlet=? "
                              "ORDER BY id", (outlet,))
        return [device_row(d, k, kv, r, pu) for d, k, kv, r, pu in cur]

    def save_badge(self, outlet: str, courier: str, lockers: list[str], exp: int, at: float) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO courier_badges VALUES (?,?,?,?,?,NULL) ON CONFLICT(outlet, courier) DO UPDATE "
                "SET lockers=excluded.lockers, exp=excluded.exp, issued_at=excluded.issued_at, "
                "revoked_at=NULL", (outlet, courier, json.dumps(lockers), exp, at))

    def revoke_badge(self, outlet: str, courier: str, lockers: list[str], at: float) -> bool:
        with self.lock:
            known = self.db.execute("UPDATE courier_badges SET revoked_at=? WHERE outlet=? AND courier=?",
                                    (at, outlet, courier)).rowcount == 1
            if not known:
                self.db.execute("INSERT INTO courier_badges VALUES (?,?,?,0,?,?)",
                                (outlet, courier, json.dumps(lockers), at, at))
        return known

    def badges(self, outlet: str) -> list[tuple[str, list[str], int, float, float | None]]:
        rows = self.db.execute("SELECT courier, lockers, exp, issued_at, revoked_at FROM courier_badges "
                               "WHERE outlet=? ORDER BY courier", (outlet,)).fetchall()
        return [(c, json.loads(lk), exp, at, rv) for c, lk, exp, at, rv in rows]

    # ------------------------------------------------------- dispatchers
    def add_dispatcher(self, name: str, password: str) -> None:
        """A dispatcher's login for the review page (or a new password)."""
        with self.lock:
            self.db.execute("INSERT INTO dispatchers (name, pw_hash, created_at) VALUES (?,?,?) "
                            "ON CONFLICT(name) DO UPDATE SET pw_hash=excluded.pw_hash, disabled_at=NULL",
                            (name, hash_password(password), time.time()))

    def dispatcher_login(self, name: str, password: str) -> bool:
        row = self.db.execute("SELECT pw_hash FROM dispatchers WHERE name=? AND disabled_at IS NULL",
                              (name,)).fetchone()
        # an unknown name costs a hash too, so it answers as slowly as a wrong password
        return verify_password(password, row[0] if row else None)

    def photos_for_review(self, limit: int = 200) -> list[dict[str, Any]]:
        """Complete photos, unreviewed first, with every claim made for them
        (one photo claimed for two jobs or sites is a duplicate to look at)."""
        rows = self.db.execute(
            "SELECT p.sha, p.size, p.created_at, r.verdict, r.reason, r.by FROM photos p "
            "LEFT JOIN photo_reviews r ON r.sha = p.sha WHERE p.complete = 1 "
            "ORDER BY r.verdict IS NOT NULL, p.created_at DESC LIMIT ?", (limit,)).fetchall()
        claims = {sha: [claim(outlet, meta) for outlet, meta in self.db.execute(
            "SELECT outlet, meta FROM photo_claims WHERE sha=? ORDER BY at", (sha,))] for sha, *_ in rows}
        return review_rows(rows, claims)

    def review_photo(self, sha256: str, verdict: str, reason: str, by: str) -> bool:
        """Record a dispatcher's verdict on a complete photo; False if there is none."""
        if verdict not in ("accepted", "rejected"):
            raise ValueError(f"verdict must be accepted or rejected, not {verdict!r}")
        with self.lock:
            found = self.db.execute("SELECT 1 FROM photos WHERE sha=? AND complete=1", (sha256,)).fetchone()
            if found is None:
                return False
            self.db.execute("INSERT INTO photo_reviews (sha, verdict, reason, by, at) VALUES (?,?,?,?,?) "
                            "ON CONFLICT(sha) DO UPDATE SET verdict=excluded.verdict, "
                            "reason=excluded.reason, by=excluded.by, at=excluded.at",
                            (sha256, verdict, reason[:300], by, time.time()))
            return True

    # ----------------------------------------------------------- batches
    def store(self, outlet: str, checked: Checked) -> Stored:
        now = clock.now()  # the wall's, or a simulation's whose gateways run on it (common/clock.py)
        b = checked.batch
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                before = self.db.total_changes
                self.db.executemany(
                    "INSERT OR IGNORE INTO events (id, outlet, device, type, cls, ts, payload, batch, "
                    "received_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    [(e.id, outlet, e.device, e.type, e.cls, e.ts, e.payload, b.id, now)
                     for e in checked.good])
                new = self.db.total_changes - before
                self.db.executemany(
                    "INSERT OR IGNORE INTO quarantine (id, outlet, reason, payload, received_at) "
                    "VALUES (?,?,?,?,?)", [(i, outlet, r, p, now) for i, p, r in checked.quarantined])
                dup = len(checked.good) - new
                self.db.execute(
                    "INSERT INTO batches (id, outlet, lane, n, new, dup, wire_bytes, first_at) "
                    "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(outlet, id) DO UPDATE SET receipts=receipts+1",
                    (b.id, outlet, b.lane, len(b.events), new, dup, checked.wire_bytes, now))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return Stored(new, dup)

    def count(self, outlet: str | None = None) -> int:
        if outlet is None:
            return self.db.execute("SELECT count(*) FROM events").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM events WHERE outlet=?", (outlet,)).fetchone()[0]

    def events_since(self, after: int = 0, outlet: str | None = None,
                     limit: int = 10000) -> list[tuple[int, str, str, bytes, float]]:
        """Events held, in the order they were stored, after row ``after``:
        (row, outlet, id, payload, received_at). A reader (the simulator's
        ledger, a report) pages through with the last row it saw, so it reads
        each event once however often it asks."""
        q = "SELECT rowid, outlet, id, payload, received_at FROM events WHERE rowid > ?"
        args: tuple[Any, ...] = (after,)
        if outlet is not None:
            q += " AND outlet = ?"
            args += (outlet,)
        return self.db.execute(q + " ORDER BY rowid LIMIT ?", (*args, limit)).fetchall()

    def outlet_events(self, outlet: str, cursor: float | None
                      ) -> tuple[list[tuple[str, bytes, float]], float]:
        """Events held from ``outlet`` stored after ``cursor`` (None: from
        the first), in the order stored, as (id, payload, received_at), and
        the cursor to ask with next: what a reader that keeps up with one
        outlet (the simulator's ledger, a county's report) pages through.
        The cursor is the last rowid read (one writer, rows visible in
        rowid order)."""
        after = 0 if cursor is None else int(cursor)
        with self.lock:
            rows = self.db.execute("SELECT rowid, id, payload, received_at FROM events WHERE outlet=? "
                                   "AND rowid > ? ORDER BY rowid", (outlet, after)).fetchall()
        return [(eid, bytes(p), at) for _, eid, p, at in rows], float(rows[-1][0] if rows else after)

    def event(self, outlet: str, event_id: str) -> bytes | None:
        """One stored event's payload, by the outlet that sent it and its id."""
        row = self.db.execute("SELECT payload FROM events WHERE outlet=? AND id=?",
                              (outlet, event_id)).fetchone()
        return bytes(row[0]) if row else None

    def undecided(self, event_type: str, decisions: str) -> list[tuple[str, str, dict[str, Any]]]:
        """Events of ``event_type`` that no row of the duty's ``decisions``
        table (keyed by ``outlet`` and ``event``) answers yet, oldest first:
        (outlet, event id, body; ``{}`` when the body is not an object).

        Each platform duty that decides events once (the postage audit, the
        clerks' requests) keeps its verdicts in its own table and asks here
        for what is left, so a duty restarted after a crash resumes where it
        stopped and never decides an event twice."""
        if not decisions.isidentifier():
            raise ValueError(f"not a table name: {decisions!r}")
        with self.lock:
            rows = self.db.execute(
                f"SELECT e.outlet, e.id, e.payload FROM events e WHERE e.type=? AND NOT EXISTS "
                f"(SELECT 1 FROM {decisions} d WHERE d.outlet=e.outlet AND d.event=e.id) "
                "ORDER BY e.received_at, e.rowid", (event_type,)).fetchall()
        return [(outlet, eid, body_of(payload)) for outlet, eid, payload in rows]

    # ------------------------------------ the duties' answers (DutyStore)
    def duty_table(self, table: DutyTable) -> None:
        cols = ", ".join(f"{identifier(c.name)} {SQLITE_TYPES[c.type]}{'' if c.null else ' NOT NULL'}"
                         for c in table.columns)
        create = "CREATE TABLE IF NOT EXISTS {t} (" + cols + f", PRIMARY KEY ({', '.join(table.key)}));"
        with self.lock:
            rekey(self.db, table.name, create, list(table.key))  # a file from before that key
            self.db.executescript(create.format(t=table.name))
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({identifier(table.name)})")}
            for c in table.columns:
                if c.name not in have and c.null:  # a column added since the file's table was made
                    self.db.execute(f"ALTER TABLE {identifier(table.name)} ADD COLUMN {identifier(c.name)} "
                                    f"{SQLITE_TYPES[c.type]}")
            for t in table.reads:
                self.db.execute(type_index(t))
            for cols in table.indexes:  # SQLite's one writer: no concurrent build to ask for
                self.db.execute(f"CREATE INDEX IF NOT EXISTS {identifier(index_name(table, cols))} ON "
                                f"{identifier(table.name)} ({', '.join(map(identifier, cols))})")

    def upsert(self, table: DutyTable, row: dict[str, Any], add: tuple[str, ...] = ()) -> None:
        cols = columns_of(row)
        t = identifier(table.name)
        sets = [f"{c}={t}.{c}+excluded.{c}" if k in add else f"{c}=excluded.{c}"
                for k, c in zip(row, cols, strict=True) if k not in table.key]
        on = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
        with self.lock:
            self.db.execute(f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                            f"ON CONFLICT({', '.join(map(identifier, table.key))}) {on}", tuple(row.values()))

    def rows(self, table: str, where: dict[str, Any], unlike: dict[str, Any] | None = None,
             newest: int | None = None) -> list[dict[str, Any]]:
        q, args = rows_sql(table, where, unlike, newest)
        with self.lock:
            cur = self.db.execute(q, args)
            names = [c[0] for c in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def delete(self, table: DutyTable, key: dict[str, Any]) -> None:
        if set(key) != set(table.key):
            raise ValueError(f"{table.name}: a key is {table.key}")
        match = " AND ".join(f"{c}=?" for c in columns_of(key))
        with self.lock:
            self.db.execute(f"DELETE FROM {identifier(table.name)} WHERE {match}", tuple(key.values()))

    def update(self, table: DutyTable, key: dict[str, Any], values: dict[str, Any],
               only_if: dict[str, tuple[Any, ...]] | None = None) -> bool:
        if set(key) != set(table.key):
            raise ValueError(f"{table.name}: a key is {table.key}")
        only_if = only_if or {}
        match = [f"{c}=?" for c in columns_of(key)]
        args: list[Any] = [*values.values(), *key.values()]
        for c, allowed in zip(columns_of(only_if), only_if.values(), strict=True):
            match.append(f"{c} IN ({','.join('?' * len(allowed))})" if allowed else "0")
            args += list(allowed)
        sets = ", ".join(f"{c}=?" for c in columns_of(values))
        with self.lock:
            cur = self.db.execute(f"UPDATE {identifier(table.name)} SET {sets} WHERE {' AND '.join(match)}",
                                  tuple(args))
            return cur.rowcount == 1

    def events_after(self, event_type: str, cursor: float | None
                     ) -> tuple[list[tuple[str, str, dict[str, Any]]], float]:
        """The cursor is the last rowid read: one writer connection, under
        the lock until it commits, so rows become visible in rowid order
        and none can appear behind the cursor."""
        after = 0 if cursor is None else int(cursor)
        with self.lock:
            rows = self.db.execute(events_after_sql(event_type), (after,)).fetchall()
        return ([(outlet, eid, body_of(payload)) for _, outlet, eid, payload in rows],
                float(rows[-1][0] if rows else after))

    def events_of(self, event_type: str) -> list[tuple[str, str, dict[str, Any]]]:
        with self.lock:
            rows = self.db.execute("SELECT outlet, id, payload FROM events WHERE type=? "
                                   "ORDER BY received_at, rowid", (event_type,)).fetchall()
        return [(outlet, eid, body_of(payload)) for outlet, eid, payload in rows]

    def decide(self, table: str, row: dict[str, Any]) -> bool:
        cols = columns_of(row)
        with self.lock:
            cur = self.db.execute(f"INSERT OR IGNORE INTO {identifier(table)} ({', '.join(cols)}) "
                                  f"VALUES ({', '.join('?' * len(cols))})", tuple(row.values()))
            return cur.rowcount == 1

    def count_decided(self, table: str, outlet: str, since: float, where: dict[str, Any]) -> int:
        match = "".join(f" AND {c}=?" for c in columns_of(where))
        with self.lock:
            (n,) = self.db.execute(f"SELECT count(*) FROM {identifier(table)} WHERE outlet=? AND at > ?"
                                   + match, (outlet, since, *where.values())).fetchone()
        return int(n)

    def decided(self, table: str, outlet: str) -> list[dict[str, Any]]:
        with self.lock:
            cur = self.db.execute(f"SELECT * FROM {identifier(table)} WHERE outlet=? ORDER BY at, event",
                                  (outlet,))
            names = [c[0] for c in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    @contextmanager
    def duties_turn(self) -> Iterator[bool]:
        """One file has one writer process; this keeps two duty loops in it
        (the service's, a caller's) from running a pass at the same time. It
        waits for the other pass rather than skipping: a caller that runs a
        pass by hand expects it done when it returns."""
        with self._duties:
            yield True

    def forget(self, outlet: str, event_id: str) -> bool:
        """Delete one stored event (a test's failing disk); True if it was held."""
        with self.lock:
            return self.db.execute("DELETE FROM events WHERE outlet=? AND id=?",
                                   (outlet, event_id)).rowcount == 1

    def complete_photos(self) -> set[str]:
        """Content hashes of every photo held whole."""
        return {r[0] for r in self.db.execute("SELECT sha FROM photos WHERE complete=1")}

    def health(self, alarms: bool = True) -> list[dict[str, Any]]:
        """Per outlet: events held, last batch, batches received twice, and
        (``alarms``) every alarm event ever held, which reads each of the
        outlet's events; the dispatcher's page counts the open ones instead
        (:meth:`open_alarms`) and asks without."""
        every_alarm = ("(SELECT count(*) FROM events e WHERE e.outlet=o.id AND e.cls='alarm')" if alarms
                       else "0")
        cur = self.db.execute(
            "SELECT o.id, o.retired_at, (SELECT count(*) FROM events e WHERE e.outlet=o.id), "
            "(SELECT max(first_at) FROM batches b WHERE b.outlet=o.id), "
            "(SELECT coalesce(sum(receipts-1),0) FROM batches b WHERE b.outlet=o.id), "
            f"{every_alarm} FROM outlets o ORDER BY o.id")
        return [{"outlet": o, "retired": r is not None, "events": n, "last_batch_at": last,
                 "resent_batches": again, "alarms": alarms} for o, r, n, last, again, alarms in cur]

    def open_alarms(self, limit: int = 200) -> list[dict[str, Any]]:
        """Alarms no clerk has resolved yet, oldest first: every event of class
        ``alarm`` whose id no ``gateway.alarm_resolved`` from the same outlet
        names (``body.alarm_id``, what the clerk console sends,
        ``gateway/http/clerk.py``). An acknowledged alarm is still open. Each:
        outlet, id, device, alarm kind, ts (the device's clock), received_at.
        Reads every alarm and resolution held: a county's worth is small."""
        return unresolved(
            self.db.execute("SELECT outlet, CAST(payload AS TEXT) FROM events "
                            "WHERE type='gateway.alarm_resolved'").fetchall(),
            self.db.execute("SELECT outlet, id, device, ts, received_at, CAST(payload AS TEXT) FROM events "
                            "WHERE cls='alarm' ORDER BY ts, rowid"), limit)

    def upload_lag(self) -> dict[str, float]:
        """Per outlet, how far behind its gateway was at its last upload: the
        newest batch that brought new events (the bulk lane, which drains
        oldest first, when there is one), received_at minus the ``ts`` of the
        oldest event in it. The gateway reports no backlog of its own
        upstream, so this is the platform's own measure of it. ``ts`` is the
        device's clock: events stamped before a device knew the time
        (``ts`` before 2001) are left out."""
        out: dict[str, float] = {}
        # one pass over the batches (SQLite takes the bare columns from the row with the max)
        newest = lag_batches(self.db.execute(
            "SELECT outlet, lane, id, max(first_at) FROM batches WHERE new > 0 GROUP BY outlet, lane"))
        for outlet, (bid, at) in newest.items():
            oldest = self.db.execute("SELECT min(ts) FROM events WHERE outlet=? AND received_at=? "
                                     "AND batch=? AND ts >= ?", (outlet, at, bid, KNOWN_TIME)).fetchone()[0]
            if oldest is not None:
                out[outlet] = max(0.0, at - oldest)
        return out

    # ---------------------------------------------------------- commands
    def push_command(self, outlet: str, kind: str, cmd: dict[str, Any]) -> int:
        with self.lock:
            cur = self.db.execute("INSERT INTO commands (outlet, kind, cmd, created_at) VALUES (?,?,?,?)",
                                  (outlet, kind, carriable(kind, cmd),
                                   time.time()))
            return int(cur.lastrowid or 0)

    def pull(self, outlet: str, after: int, page: int) -> tuple[int, list[tuple[str, dict[str, Any]]], bool]:
        with self.lock:
            self.db.execute("INSERT INTO pulled (outlet, after, at) VALUES (?,?,?) ON CONFLICT(outlet) "
                            "DO UPDATE SET after=max(after, excluded.after), at=excluded.at",
                            (outlet, after, time.time()))
            rows = self.db.execute("SELECT cursor, kind, cmd FROM commands WHERE outlet=? AND cursor>? "
                                   "ORDER BY cursor LIMIT ?", (outlet, after, page + 1)).fetchall()
        more = len(rows) > page
        rows = rows[:page]
        cursor = rows[-1][0] if rows else after
        return cursor, [(k, json.loads(c)) for _, k, c in rows], more

    # ------------------------------------------------------------ photos
    def _state(self, sha: str) -> PhotoState | None:
        row = self.db.execute("SELECT size, chunk_size, chunks, complete FROM photos WHERE sha=?",
                              (sha,)).fetchone()
        if row is None:
            return None
        size, cs, n, complete = row
        if complete:
            return PhotoState(sha, size, cs, n, tuple(range(n)), True)
        parts = tuple(r[0] for r in self.db.execute(
            "SELECT idx FROM photo_parts WHERE sha=? ORDER BY idx", (sha,)))
        return PhotoState(sha, size, cs, n, parts, False)

    def photo_state(self, sha256: str) -> PhotoState | None:
        with self.lock:
            return self._state(sha256)

    def photo_begin(self, outlet: str, sha256: str, size: int, chunk_size: int,
                    meta: Any) -> tuple[bool, PhotoState]:
        with self.lock:
            self.db.execute("INSERT INTO photo_claims (sha, outlet, meta, at) VALUES (?,?,?,?)",
                            (sha256, outlet, json.dumps(meta)[:4096], time.time()))
            st = self._state(sha256)
            if st is not None:
                return False, st
            self.db.execute("INSERT INTO photos (sha, size, chunk_size, chunks, created_at) "
                            "VALUES (?,?,?,?,?)", (sha256, size, chunk_size, -(-size // chunk_size),
                                                   time.time()))
            st = self._state(sha256)
            assert st is not None
            return True, st

    def photo_chunk(self, sha256: str, idx: int, data: bytes, chunk_sha256: str) -> bool:
        with self.lock:
            st = self._state(sha256)
            if st is None:
                raise PhotoError(404, "unknown_upload")
            if st.complete:
                return True
            if idx >= st.chunks:
                raise PhotoError(400, "bad_chunk_index")
            want = st.chunk_size if idx < st.chunks - 1 else st.size - st.chunk_size * idx
            if len(data) != want or not hmac.compare_digest(hashlib.sha256(data).hexdigest(),
                                                             chunk_sha256):
                raise PhotoError(400, "bad_chunk")
            if idx in st.confirmed:
                return False  # a confirmed chunk is immutable: the first copy stays
            self.db.execute("INSERT INTO photo_parts (sha, idx, data) VALUES (?,?,?)", (sha256, idx, data))
            if len(st.confirmed) + 1 < st.chunks:
                return False
            parts = [r[0] for r in self.db.execute(
                "SELECT data FROM photo_parts WHERE sha=? ORDER BY idx", (sha256,))]
            whole = b"".join(parts)
            if hashlib.sha256(whole).hexdigest() != sha256:
                self.db.execute("DELETE FROM photo_parts WHERE sha=?", (sha256,))
                raise PhotoError(409, "file_hash")
            write_durable(self.photo_path(sha256), whole)
            self.db.execute("UPDATE photos SET complete=1 WHERE sha=?", (sha256,))
            self.db.execute("DELETE FROM photo_parts WHERE sha=?", (sha256,))
            return True

    def photo_path(self, sha256: str) -> Path:
        return self.dir / "photos" / sha256

    def close(self) -> None:
        with self.lock:
            self.db.close()


def open_embedded(directory: Path) -> Embedded:
    """The embedded backend in ``directory`` (created if missing, 0700)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return Embedded(d)
