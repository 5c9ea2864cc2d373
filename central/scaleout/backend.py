"""The scale-out backend (``central.backend.Backend``): batches go to the
replicated JetStream log and are acked to the gateway on the PubAck; the
ingest workers (``central/scaleout/worker.py``) write them into PostgreSQL.
The registry, commands and photos are read and written in PostgreSQL
directly: they are small, and a command queued or an outlet retired must be
seen by the very next request, on any front.

``store`` therefore returns ``Stored(None, None)`` for a batch the log took
new (the workers sort new events from held ones later), and
``Stored(0, n)`` when JetStream recognised the batch as a resend.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.client import JetStreamContext
from psycopg import sql

from central.backend import PhotoError, PhotoState, Stored, carriable
from central.dispatch_reads import KNOWN_TIME, claim, lag_batches, review_rows, unresolved
from central.duty_store import DutyTable, body_of, event_type_name, index_name
from central.intake import Checked
from central.registry import device_row, mqtt_hash, outlet_row
from central.scaleout import log as jlog
from central.scaleout import record
from central.scaleout.bridge import LoopThread
from central.scaleout.config import ScaleOutConfig
from central.scaleout.pg import Pool
from central.scaleout.schema import (
    DUTIES_LOCK,
    INDEX_LOCK,
    INDEX_STATES,
    INDEXES,
    MIGRATE,
    PG_TYPES,
    SCHEMA,
    SCHEMA_LOCK,
    Index,
)
from common.logs import get
from common.session import PasswordCache, hash_password, verify_password

# The operator's log (stderr): a front's stdout starts with its "running" line.
log = get(__name__)

# How far behind the newest event ``events_after`` reads again. A worker
# stamps ``received_at`` on its own clock before its transaction, and
# several workers commit at once, so a row can become visible after a
# newer-stamped one was read: by up to a write transaction's time plus the
# workers' clock skew, which this bounds with a wide margin. The re-read
# rows are few (a window's worth) and the duty skips those it handled.
LATE_S = 120.0


def events_after_query(event_type: str, after: float) -> sql.Composed:
    """``events_after``'s query: the type and the bound as literals, so the
    planner sees the narrow range and the type's partial index serves it
    (``PgStore.duty_table``: ``event_type`` or ``reads``)."""
    event_type_name(event_type)
    return sql.SQL("SELECT received_at, outlet, id, payload FROM events WHERE type = {} AND received_at > {} "
                   "ORDER BY received_at, ctid").format(sql.Literal(event_type), sql.Literal(after))


def rows_query(table: str, where: dict[str, Any], unlike: dict[str, Any] | None = None,
               newest: int | None = None) -> tuple[sql.Composed, tuple[Any, ...]]:
    """``rows``' query and its parameters (a function of its own, so a test
    can ask PostgreSQL how it plans it: ``DutyTable.indexes``)."""
    unlike = unlike or {}
    conds = [sql.SQL("{} = %s").format(sql.Identifier(k)) for k in where] + [
        sql.SQL("{} IS DISTINCT FROM %s").format(sql.Identifier(k)) for k in unlike]
    q = sql.SQL("SELECT * FROM {} WHERE ").format(sql.Identifier(table)) + (
        sql.SQL(" AND ").join(conds) if conds else sql.SQL("true"))
    args: tuple[Any, ...] = (*where.values(), *unlike.values())
    if newest is not None:  # ctid: the order rows were written in, as rowid on SQLite
        q += sql.SQL(" ORDER BY at DESC, ctid DESC LIMIT %s")
        args += (int(newest),)
    return q, args


def _tables(c: Any, names: set[str]) -> set[str]:
    """Which of the tables ``names`` are there."""
    return {n for n in names if c.execute("SELECT to_regclass(%s)", (n,)).fetchone()[0] is not None}


def _index_states(c: Any, names: list[str]) -> dict[str, bool]:
    """The indexes among ``names`` that are there: whether each is valid."""
    return {name: bool(valid) for name, valid in c.execute(INDEX_STATES, (names,)).fetchall()}


def _indexes(c: Any, indexes: list[Index] | tuple[Index, ...], there: set[str]) -> list[Index]:
    """Make, in the schema's transaction, the indexes of tables that were
    not ``there`` before it (just created, empty: nothing waits); return
    those of the tables that were, and that are missing or invalid, for
    ``build_concurrently``. Every index there and valid: nothing to do."""
    states = _index_states(c, [ix.name for ix in indexes])
    later = []
    for ix in indexes:
        if ix.table not in there:
            c.execute(ix.create())
        elif not states.get(ix.name):
            later.append(ix)
    return later


class PgStore:
    """The scale-out backend's PostgreSQL side: the registry
    (``central.registry.Registry``), commands, photos, what the workers
    wrote and the platform duties' answers (``central.duty_store.DutyStore``).
    Alone it is what the operator's commands open (``postedge central
    outlet|device|sign``): they need no NATS cluster."""

    def __init__(self, cfg: ScaleOutConfig, pool_size: int = 8) -> None:
        self.cfg = cfg
        self.pool = Pool(cfg.pg, pool_size)
        with self.pool.tx() as c:
            # One schema creator at a time (several fronts may start together).
            c.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            there = _tables(c, {ix.table for ix in INDEXES})
            c.execute(SCHEMA)
            c.execute(MIGRATE)  # a database from before events were keyed by (outlet, id)
            later = _indexes(c, INDEXES, there)
        self.build_concurrently(later)
        self._logins = PasswordCache()

    def build_concurrently(self, indexes: list[Index]) -> None:
        """Build ``indexes``, on tables that were there already, with
        ``CREATE INDEX CONCURRENTLY``: a plain build holds a lock that stops
        every insert into the table until it is done, and the table may be
        the event log of a county; a concurrent one lets the workers write
        meanwhile. It cannot run inside a transaction, so it runs on a
        connection of its own, one build at a time across processes
        (``INDEX_LOCK``, held by the session). Waiting for that lock is
        polled, not a blocking call: a concurrent build waits for every
        transaction whose snapshot is older than its own, and a blocked
        statement holds one, which would wait on the build in turn.
        An index found invalid was left by a build that was interrupted (the
        process killed, the statement cancelled): it is dropped and built again."""
        if not indexes:
            return
        with self.pool.session() as c:
            while not (c.execute("SELECT pg_try_advisory_lock(%s)", (INDEX_LOCK,)).fetchone() or [False])[0]:
                time.sleep(0.2)
            try:
                states = _index_states(c, [ix.name for ix in indexes])
                for ix in indexes:
                    if states.get(ix.name):
                        continue  # another process built it while this one waited
                    if ix.name in states:
                        c.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                            sql.Identifier(ix.name)))
                    started = time.monotonic()
                    c.execute(ix.create(concurrently=True))
                    log.info("index %s on %s %s concurrently in %.3f s", ix.name, ix.table,
                             "rebuilt (an interrupted build had left it invalid)" if ix.name in states
                             else "built", time.monotonic() - started)
            finally:
                if not c.broken:
                    c.execute("SELECT pg_advisory_unlock(%s)", (INDEX_LOCK,))

    # ---------------------------------------------------------- registry
    # ``central.registry.Registry``, in PostgreSQL: every front process reads
    # the same rows, so a device retired through one is refused by all.
    def add_outlet(self, outlet: str, password: str, notifier: bool = False) -> None:
        with self.pool.tx() as c:
            c.execute("INSERT INTO outlets (id, pw_hash, created_at, notifier, mqtt_hash) "
                      "VALUES (%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE SET pw_hash=excluded.pw_hash, "
                      "retired_at=NULL, notifier=excluded.notifier, mqtt_hash=excluded.mqtt_hash",
                      (outlet, hash_password(password), time.time(), notifier, mqtt_hash(password)))

    def add_dispatcher(self, name: str, password: str) -> None:
        with self.pool.tx() as c:
            c.execute("INSERT INTO dispatchers (name, pw_hash, created_at) VALUES (%s,%s,%s) "
                      "ON CONFLICT (name) DO UPDATE SET pw_hash=excluded.pw_hash, disabled_at=NULL",
                      (name, hash_password(password), time.time()))

    def dispatcher_login(self, name: str, password: str) -> bool:
        with self.pool.tx() as c:
            row = c.execute("SELECT pw_hash FROM dispatchers WHERE name=%s AND disabled_at IS NULL",
                            (name,)).fetchone()
        return verify_password(password, row[0] if row else None)

    def retire_outlet(self, outlet: str) -> bool:
        with self.pool.tx() as c:
            cur = c.execute("UPDATE outlets SET retired_at=%s WHERE id=%s AND retired_at IS NULL",
                            (time.time(), outlet))
        return cur.rowcount == 1

    def outlet_login(self, outlet: str, password: str) -> bool:
        # The row is read on every request (a retirement anywhere counts at
        # once); only the scrypt check is remembered, keyed by the stored hash.
        with self.pool.tx() as c:
            row = c.execute("SELECT pw_hash FROM outlets WHERE id=%s AND retired_at IS NULL",
                            (outlet,)).fetchone()
        if row is None:
            return False
        return self._logins.check(outlet, password, row[0])

    def notifier_outlets(self) -> set[str]:
        with self.pool.tx() as c:
            return {r[0] for r in c.execute("SELECT id FROM outlets WHERE notifier")}

    def mqtt_users(self) -> dict[str, str | None]:
        with self.pool.tx() as c:
            return {o: h for o, h in c.execute("SELECT id, mqtt_hash FROM outlets WHERE retired_at IS NULL "
                                               "ORDER BY id")}

    def outlets(self) -> list[dict[str, Any]]:
        with self.pool.tx() as c:
            rows = c.execute("SELECT id, created_at, retired_at FROM outlets ORDER BY id").fetchall()
        return [outlet_row(o, at, r) for o, at, r in rows]

    def add_device(self, outlet: str, device: str, kind: str, kv: int | None = None) -> None:
        with self.pool.tx() as c:
            c.execute("INSERT INTO devices (id, outlet, kind, kv, created_at) VALUES (%s,%s,%s,%s,%s) "
                      "ON CONFLICT (outlet, id) DO UPDATE SET kind=excluded.kind, retired_at=NULL, "
                      "kv=CASE WHEN %s::integer IS NULL THEN devices.kv ELSE excluded.kv END",
                      (device, outlet, kind, kv or 1, time.time(), kv))

    def rotate_device(self, outlet: str, device: str, prev_until: int) -> int | None:
        with self.pool.tx() as c:
            row = c.execute("UPDATE devices SET kv=kv+1, prev_until=%s WHERE outlet=%s AND id=%s "
                            "AND retired_at IS NULL RETURNING kv", (prev_until, outlet, device)).fetchone()
        return None if row is None else int(row[0])

    def retire_device(self, outlet: str, device: str) -> bool:
        with self.pool.tx() as c:
            cur = c.execute("UPDATE devices SET retired_at=%s WHERE outlet=%s AND id=%s "
                            "AND retired_at IS NULL", (time.time(), outlet, device))
        return cur.rowcount == 1

    def devices(self, outlet: str) -> list[dict[str, Any]]:
        with self.pool.tx() as c:
            rows = c.execute("SELECT id, kind, kv, retired_at, prev_until FROM devices WHERE outlet=%s "
                             "ORDER BY id", (outlet,)).fetchall()
        return [device_row(d, k, kv, r, pu) for d, k, kv, r, pu in rows]

    def save_badge(self, outlet: str, courier: str, lockers: list[str], exp: int, at: float) -> None:
        with self.pool.tx() as c:
            c.execute("INSERT INTO courier_badges VALUES (%s,%s,%s,%s,%s,NULL) ON CONFLICT (outlet, courier) "
                      "DO UPDATE SET lockers=excluded.lockers, exp=excluded.exp, "
                      "issued_at=excluded.issued_at, revoked_at=NULL",
                      (outlet, courier, json.dumps(lockers), exp, at))

    def revoke_badge(self, outlet: str, courier: str, lockers: list[str], at: float) -> bool:
        with self.pool.tx() as c:
            known = c.execute("UPDATE courier_badges SET revoked_at=%s WHERE outlet=%s AND courier=%s",
                              (at, outlet, courier)).rowcount == 1
            if not known:
                c.execute("INSERT INTO courier_badges VALUES (%s,%s,%s,0,%s,%s)",
                          (outlet, courier, json.dumps(lockers), at, at))
        return known

    def badges(self, outlet: str) -> list[tuple[str, list[str], int, float, float | None]]:
        with self.pool.tx() as c:
            rows = c.execute("SELECT courier, lockers, exp, issued_at, revoked_at FROM courier_badges "
                             "WHERE outlet=%s ORDER BY courier", (outlet,)).fetchall()
        return [(co, json.loads(lk), exp, at, rv) for co, lk, exp, at, rv in rows]

    def health(self, alarms: bool = True) -> list[dict[str, Any]]:
        """Per outlet: events held, the last batch logged and (``alarms``)
        every alarm event held, for ``postedge central outlet list`` and the
        dispatcher's page (which counts the open ones, ``open_alarms``, and
        asks without); a resent batch is dropped by the log, so none is counted."""
        every_alarm = ("(SELECT count(*) FROM events e WHERE e.outlet=o.id AND e.cls='alarm')" if alarms
                       else "0")
        with self.pool.tx() as c:
            rows = c.execute(
                "SELECT o.id, o.retired_at, (SELECT count(*) FROM events e WHERE e.outlet=o.id), "
                f"(SELECT max(first_at) FROM batches b WHERE b.outlet=o.id), {every_alarm} "
                "FROM outlets o ORDER BY o.id").fetchall()
        return [{"outlet": o, "retired": r is not None, "events": int(n), "last_batch_at": last,
                 "resent_batches": 0, "alarms": int(a)} for o, r, n, last, a in rows]

    def open_alarms(self, limit: int = 200) -> list[dict[str, Any]]:
        """As the embedded backend's (``central/dispatch_reads.py``), through
        the partial indexes of alarms and resolutions."""
        with self.pool.tx() as c:
            resolutions = [(o, bytes(p)) for o, p in c.execute(
                "SELECT outlet, payload FROM events WHERE type='gateway.alarm_resolved'")]
            alarms = [(o, i, d, ts, at, bytes(p)) for o, i, d, ts, at, p in c.execute(
                "SELECT outlet, id, device, ts, received_at, payload FROM events WHERE cls='alarm' "
                "ORDER BY ts, received_at, ctid")]
        return unresolved(resolutions, alarms, limit)

    def upload_lag(self) -> dict[str, float]:
        """As the embedded backend's. The log drops a resent batch, so every
        batch logged brought events; one whose events were all held already
        left no row naming it, and is passed over."""
        out: dict[str, float] = {}
        with self.pool.tx() as c:
            rows = c.execute(
                "SELECT DISTINCT ON (b.outlet, b.lane) b.outlet, b.lane, b.id, b.first_at FROM batches b "
                "WHERE EXISTS (SELECT 1 FROM events e WHERE e.outlet=b.outlet AND e.batch=b.id) "
                "ORDER BY b.outlet, b.lane, b.first_at DESC").fetchall()
            for outlet, (bid, at) in lag_batches(rows).items():
                row = c.execute("SELECT min(ts) FROM events WHERE outlet=%s AND batch=%s AND ts >= %s",
                                (outlet, bid, KNOWN_TIME)).fetchone()
                if row and row[0] is not None:
                    out[outlet] = max(0.0, at - row[0])
        return out

    def photos_for_review(self, limit: int = 200) -> list[dict[str, Any]]:
        """As the embedded backend's: complete photos, unreviewed first, with their claims."""
        with self.pool.tx() as c:
            rows = c.execute(
                "SELECT p.sha, p.size, p.created_at, r.verdict, r.reason, r.\"by\" FROM photos p "
                "LEFT JOIN photo_reviews r ON r.sha = p.sha WHERE p.complete "
                "ORDER BY r.verdict IS NOT NULL, p.created_at DESC LIMIT %s", (limit,)).fetchall()
            claims: dict[str, list[dict[str, Any]]] = {}
            for sha, outlet, meta in c.execute(
                    "SELECT sha, outlet, meta FROM photo_claims WHERE sha = ANY(%s) ORDER BY at",
                    ([r[0] for r in rows],)):
                claims.setdefault(sha, []).append(claim(outlet, meta))
        return review_rows(rows, claims)

    def review_photo(self, sha256: str, verdict: str, reason: str, by: str) -> bool:
        """A dispatcher's verdict on a complete photo; False if there is none."""
        if verdict not in ("accepted", "rejected"):
            raise ValueError(f"verdict must be accepted or rejected, not {verdict!r}")
        with self.pool.tx() as c:
            if c.execute("SELECT 1 FROM photos WHERE sha=%s AND complete", (sha256,)).fetchone() is None:
                return False
            c.execute('INSERT INTO photo_reviews (sha, verdict, reason, "by", at) VALUES (%s,%s,%s,%s,%s) '
                      'ON CONFLICT (sha) DO UPDATE SET verdict=excluded.verdict, reason=excluded.reason, '
                      '"by"=excluded."by", at=excluded.at', (sha256, verdict, reason[:300], by, time.time()))
        return True

    def complete_photos(self) -> set[str]:
        """Content hashes of every photo held whole."""
        with self.pool.tx() as c:
            return {r[0] for r in c.execute("SELECT sha FROM photos WHERE complete")}

    def outlet_active(self, outlet: str) -> bool:
        """Registered and not retired (the MQTT front's check: there the
        login is nats-server's, and its user list may lag the registry)."""
        with self.pool.tx() as c:
            row = c.execute("SELECT 1 FROM outlets WHERE id=%s AND retired_at IS NULL", (outlet,)).fetchone()
        return row is not None

    def count(self, outlet: str | None = None) -> int:
        with self.pool.tx() as c:
            if outlet is None:
                row = c.execute("SELECT count(*) FROM events").fetchone()
            else:
                row = c.execute("SELECT count(*) FROM events WHERE outlet=%s", (outlet,)).fetchone()
        return int(row[0]) if row else 0

    def outlet_events(self, outlet: str, cursor: float | None
                      ) -> tuple[list[tuple[str, bytes, float]], float]:
        """As the embedded backend's, by ``received_at`` through the
        outlet's index, re-reading ``LATE_S`` behind the newest row read as
        ``events_after`` does (several workers commit out of order): an
        event may be answered again, never skipped."""
        after = 0.0 if cursor is None else cursor
        with self.pool.tx() as c:
            rows = c.execute("SELECT received_at, id, payload FROM events WHERE outlet=%s "
                             "AND received_at > %s ORDER BY received_at, ctid", (outlet, after)).fetchall()
        if rows:
            after = max(after, min(float(rows[-1][0]), time.time()) - LATE_S)
        return [(eid, bytes(p), float(at)) for at, eid, p in rows], after

    def event(self, outlet: str, event_id: str) -> bytes | None:
        """One stored event's payload, by the outlet that sent it and its id."""
        with self.pool.tx() as c:
            row = c.execute("SELECT payload FROM events WHERE outlet=%s AND id=%s",
                            (outlet, event_id)).fetchone()
        return bytes(row[0]) if row else None

    # ------------------------------------ the duties' answers (DutyStore)
    # The embedded backend's in PostgreSQL; a table name is never a
    # parameter, so every one is quoted as an identifier (``sql``).
    def duty_table(self, table: DutyTable) -> None:
        """The table, its own indexes (``DutyTable.indexes``), and a partial
        index of the events it answers: a duty's pass then reads only
        those, not the whole event log, which is what a scale-out store
        holds a lot of (and the workers' inserts of other events do not
        touch the index). The event log is always there already, and so is
        the table on every start but the first: their indexes are built
        concurrently (``build_concurrently``), so that the first start of a
        new version on a large store does not stop the workers' inserts."""
        cols = sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(sql.Identifier(c.name), sql.SQL(PG_TYPES[c.type]),
                                      sql.SQL("" if c.null else " NOT NULL")) for c in table.columns)
        key = sql.SQL(", ").join(map(sql.Identifier, table.key))
        indexes = [Index(index_name(table, on), table.name, sql.SQL(", ").join(map(sql.Identifier, on)))
                   for on in table.indexes]
        partial = [(f"events_{table.name}", table.event_type)] if table.event_type else []
        # the table's own type has its index already: the same, under the table's name
        partial += [(f"events_type_{event_type_name(t)}", t) for t in table.reads if t != table.event_type]
        indexes += [Index(name, "events", sql.SQL("received_at"), sql.SQL("type = {}").format(sql.Literal(t)))
                    for name, t in partial]
        with self.pool.tx() as c:
            c.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")  # one schema creator at a time
            there = _tables(c, {table.name, "events"})
            c.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
                sql.Identifier(table.name), cols, key))
            have = {r[0] for r in c.execute("SELECT column_name FROM information_schema.columns "
                                            "WHERE table_name = %s AND table_schema = current_schema()",
                                            (table.name,))}
            for col in table.columns:  # a nullable column added since the table was made
                if col.null and col.name not in have:
                    c.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        sql.Identifier(table.name), sql.Identifier(col.name), sql.SQL(PG_TYPES[col.type])))
            later = _indexes(c, indexes, there)
        self.build_concurrently(later)

    def upsert(self, table: DutyTable, row: dict[str, Any], add: tuple[str, ...] = ()) -> None:
        t = sql.Identifier(table.name)
        sets = [sql.SQL("{c} = {t}.{c} + excluded.{c}" if k in add else "{c} = excluded.{c}").format(
            c=sql.Identifier(k), t=t) for k in row if k not in table.key]
        on = (sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(sets)) if sets else sql.SQL("DO NOTHING")
        q = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) ").format(
            t, sql.SQL(", ").join(map(sql.Identifier, row)), sql.SQL(", ").join(sql.Placeholder() * len(row)),
            sql.SQL(", ").join(map(sql.Identifier, table.key))) + on
        with self.pool.tx() as c:
            c.execute(q, tuple(row.values()))

    def rows(self, table: str, where: dict[str, Any], unlike: dict[str, Any] | None = None,
             newest: int | None = None) -> list[dict[str, Any]]:
        q, args = rows_query(table, where, unlike, newest)
        with self.pool.tx() as c:
            cur = c.execute(q, args)
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def delete(self, table: DutyTable, key: dict[str, Any]) -> None:
        if set(key) != set(table.key):
            raise ValueError(f"{table.name}: a key is {table.key}")
        match = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in key)
        with self.pool.tx() as c:
            c.execute(sql.SQL("DELETE FROM {} WHERE ").format(sql.Identifier(table.name)) + match,
                      tuple(key.values()))

    def update(self, table: DutyTable, key: dict[str, Any], values: dict[str, Any],
               only_if: dict[str, tuple[Any, ...]] | None = None) -> bool:
        if set(key) != set(table.key):
            raise ValueError(f"{table.name}: a key is {table.key}")
        only_if = only_if or {}
        conds = [sql.SQL("{} = %s").format(sql.Identifier(k)) for k in key]
        args: list[Any] = [*values.values(), *key.values()]
        for k, allowed in only_if.items():
            conds.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(k)))
            args.append(list(allowed))
        sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values)
        q = sql.SQL("UPDATE {} SET {} WHERE ").format(sql.Identifier(table.name), sets) + sql.SQL(
            " AND ").join(conds)
        with self.pool.tx() as c:
            return c.execute(q, tuple(args)).rowcount == 1

    def events_after(self, event_type: str, cursor: float | None
                     ) -> tuple[list[tuple[str, str, dict[str, Any]]], float]:
        """The cursor is a ``received_at`` below which every row is taken to
        be visible: the newest read (or now, if the workers' clocks run
        ahead) less ``LATE_S``, so the next call reads that window again
        and finds a row committed after newer ones were read."""
        after = 0.0 if cursor is None else cursor
        with self.pool.tx() as c:
            rows = c.execute(events_after_query(event_type, after)).fetchall()
        if rows:
            after = max(after, min(float(rows[-1][0]), time.time()) - LATE_S)
        return [(outlet, eid, body_of(bytes(payload))) for _, outlet, eid, payload in rows], after

    def events_of(self, event_type: str) -> list[tuple[str, str, dict[str, Any]]]:
        # a literal, as in ``undecided``: a duty table's partial index of the type may serve it
        q = sql.SQL("SELECT outlet, id, payload FROM events WHERE type = {} "
                    "ORDER BY received_at, ctid").format(sql.Literal(event_type))
        with self.pool.tx() as c:
            rows = c.execute(q).fetchall()
        return [(outlet, eid, body_of(bytes(payload))) for outlet, eid, payload in rows]

    def undecided(self, event_type: str, decisions: str) -> list[tuple[str, str, dict[str, Any]]]:
        # the type as a literal, not a parameter: a plan made for any type could not use the partial index
        q = sql.SQL("SELECT e.outlet, e.id, e.payload FROM events e WHERE e.type = {} AND NOT EXISTS "
                    "(SELECT 1 FROM {} d WHERE d.outlet=e.outlet AND d.event=e.id) "
                    "ORDER BY e.received_at, e.ctid").format(sql.Literal(event_type),
                                                             sql.Identifier(decisions))
        with self.pool.tx() as c:
            rows = c.execute(q).fetchall()
        return [(outlet, eid, body_of(bytes(payload))) for outlet, eid, payload in rows]

    def decide(self, table: str, row: dict[str, Any]) -> bool:
        # no conflict target: whatever the table's key, a row already there wins
        q = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row)))
        with self.pool.tx() as c:
            return c.execute(q, tuple(row.values())).rowcount == 1

    def count_decided(self, table: str, outlet: str, since: float, where: dict[str, Any]) -> int:
        match = sql.SQL("").join(sql.SQL(" AND {} = %s").format(sql.Identifier(k)) for k in where)
        q = sql.SQL("SELECT count(*) FROM {} WHERE outlet = %s AND at > %s").format(sql.Identifier(table))
        with self.pool.tx() as c:
            row = c.execute(q + match, (outlet, since, *where.values())).fetchone()
        return int(row[0]) if row else 0

    def decided(self, table: str, outlet: str) -> list[dict[str, Any]]:
        q = sql.SQL("SELECT * FROM {} WHERE outlet = %s ORDER BY at, event").format(sql.Identifier(table))
        with self.pool.tx() as c:
            cur = c.execute(q, (outlet,))
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    @contextmanager
    def duties_turn(self) -> Iterator[bool]:
        """Several front processes may run the duties; a transaction-scoped
        advisory lock lets one pass run at a time across all of them (the
        others skip the tick), and is let go by the database if this
        process dies mid-pass. Holds one pooled connection meanwhile: the
        pass itself needs another (a pool of two or more)."""
        with self.pool.tx() as c:
            row = c.execute("SELECT pg_try_advisory_xact_lock(%s)", (DUTIES_LOCK,)).fetchone()
            yield bool(row and row[0])

    # ---------------------------------------------------------- commands
    def push_command(self, outlet: str, kind: str, cmd: dict[str, Any]) -> int:
        with self.pool.tx() as c:
            row = c.execute("INSERT INTO commands (outlet, kind, cmd, created_at) VALUES (%s,%s,%s,%s) "
                            "RETURNING cursor", (outlet, kind, carriable(kind, cmd), time.time())
                            ).fetchone()
        assert row is not None
        return int(row[0])

    def pull(self, outlet: str, after: int, page: int) -> tuple[int, list[tuple[str, dict[str, Any]]], bool]:
        with self.pool.tx() as c:
            c.execute("INSERT INTO pulled (outlet, after, at) VALUES (%s,%s,%s) ON CONFLICT (outlet) "
                      "DO UPDATE SET after=greatest(pulled.after, excluded.after), at=excluded.at",
                      (outlet, after, time.time()))
            rows = c.execute("SELECT cursor, kind, cmd FROM commands WHERE outlet=%s AND cursor>%s "
                             "ORDER BY cursor LIMIT %s", (outlet, after, page + 1)).fetchall()
        more = len(rows) > page
        rows = rows[:page]
        cursor = rows[-1][0] if rows else after
        return int(cursor), [(k, json.loads(c)) for _, k, c in rows], more

    # ------------------------------------------------------------ photos
    @staticmethod
    def _state(c: Any, sha: str, lock: bool = False) -> PhotoState | None:
        row = c.execute("SELECT size, chunk_size, chunks, complete FROM photos WHERE sha=%s"
                        + (" FOR UPDATE" if lock else ""), (sha,)).fetchone()
        if row is None:
            return None
        size, cs, n, complete = row
        if complete:
            return PhotoState(sha, size, cs, n, tuple(range(n)), True)
        parts = tuple(r[0] for r in c.execute("SELECT idx FROM photo_parts WHERE sha=%s ORDER BY idx",
                                              (sha,)))
        return PhotoState(sha, size, cs, n, parts, False)

    def photo_state(self, sha256: str) -> PhotoState | None:
        with self.pool.tx() as c:
            return self._state(c, sha256)

    def photo_begin(self, outlet: str, sha256: str, size: int, chunk_size: int,
                    meta: Any) -> tuple[bool, PhotoState]:
        with self.pool.tx() as c:
            c.execute("INSERT INTO photo_claims (sha, outlet, meta, at) VALUES (%s,%s,%s,%s)",
                      (sha256, outlet, json.dumps(meta)[:4096], time.time()))
            cur = c.execute("INSERT INTO photos (sha, size, chunk_size, chunks, created_at) "
                            "VALUES (%s,%s,%s,%s,%s) ON CONFLICT (sha) DO NOTHING",
                            (sha256, size, chunk_size, -(-size // chunk_size), time.time()))
            st = self._state(c, sha256)
        assert st is not None
        return cur.rowcount == 1, st

    def photo_chunk(self, sha256: str, idx: int, data: bytes, chunk_sha256: str) -> bool:
        mismatch = False
        with self.pool.tx() as c:
            st = self._state(c, sha256, lock=True)  # the row lock orders chunks of one photo
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
            c.execute("INSERT INTO photo_parts (sha, idx, data) VALUES (%s,%s,%s)", (sha256, idx, data))
            if len(st.confirmed) + 1 < st.chunks:
                return False
            whole = b"".join(bytes(r[0]) for r in c.execute(
                "SELECT data FROM photo_parts WHERE sha=%s ORDER BY idx", (sha256,)))
            if hashlib.sha256(whole).hexdigest() != sha256:
                c.execute("DELETE FROM photo_parts WHERE sha=%s", (sha256,))
                mismatch = True  # committed: the parts go, then the refusal
            else:
                c.execute("UPDATE photos SET complete=true, data=%s WHERE sha=%s", (whole, sha256))
                c.execute("DELETE FROM photo_parts WHERE sha=%s", (sha256,))
        if mismatch:
            raise PhotoError(409, "file_hash")
        return True

    def photo_bytes(self, sha256: str) -> bytes | None:
        with self.pool.tx() as c:
            row = c.execute("SELECT data FROM photos WHERE sha=%s AND complete", (sha256,)).fetchone()
        return bytes(row[0]) if row else None

    def close(self) -> None:
        self.pool.close()


class ScaleOut(PgStore):
    """The scale-out backend (``central.backend.Backend``,
    ``central.registry.Registry``): the store and the replicated log."""

    def __init__(self, cfg: ScaleOutConfig, pool_size: int = 8) -> None:
        super().__init__(cfg, pool_size)
        self.bridge = LoopThread("central-nats")
        try:
            self.nc: Client = self.bridge.run(jlog.connect(cfg, "central-front"), 30)
            self.js: JetStreamContext = self.nc.jetstream(timeout=5)
            self.bridge.run(jlog.ensure(self.js, cfg), 60)
        except BaseException:
            self.bridge.stop()
            self.pool.close()
            raise

    # ----------------------------------------------------------- batches
    def store(self, outlet: str, checked: Checked) -> Stored:
        parts = record.pack(outlet, checked)
        subject = self.cfg.subject(outlet)
        bid = checked.batch.id

        async def publish_all() -> list[Any]:
            return await asyncio.gather(*[
                jlog.publish(self.js, subject, data, f"{outlet}/{bid}/{i}", self.cfg.publish_deadline_s)
                for i, data in enumerate(parts)])

        acks = self.bridge.run(publish_all(), self.cfg.publish_deadline_s + 5)
        if all(a.duplicate for a in acks):
            return Stored(0, len(checked.good))
        return Stored(None, None)

    def backlog(self) -> dict[str, Any]:
        return self.bridge.run(jlog.backlog(self.js, self.cfg), 10)

    def written(self) -> bool:
        """Whether the workers have written everything the fronts logged (a
        reader that must not take "not yet written" for "lost" asks first)."""
        try:
            self.wait_written(0.0)
        except TimeoutError:
            return False
        return True

    def wait_written(self, timeout: float = 30.0) -> None:
        """Until the workers have written (and acked) everything logged so far.

        Judged by sequence, not by the consumer's pending counts: in a
        replicated stream the consumer's leader may not have heard of a
        message the stream has just acked, and for that moment its counts
        say zero with the message still unwritten."""
        end = time.monotonic() + timeout
        b: dict[str, Any] | str = "unknown"
        target: int | None = None
        while True:
            try:
                if target is None:
                    target = self.bridge.run(jlog.logged_to(self.js, self.cfg), 10)
                b = self.backlog()
                if b["acked_to"] >= target and b["ack_pending"] == 0:
                    return
            except (nats.errors.Error, TimeoutError) as e:  # the consumer's leader is moving
                b = repr(e)
            if time.monotonic() > end:
                raise TimeoutError(f"ingest backlog after {timeout}s: {b}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.bridge.run(self.nc.close(), 10)
        except Exception:  # closing a connection to a cluster that is gone
            pass
        self.bridge.stop()
        super().close()
