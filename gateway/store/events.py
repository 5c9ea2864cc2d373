"""The gateway's durable event store: one SQLite file in WAL mode.

``synchronous=FULL`` makes each commit durable across power loss, not only
process death; the cost is paid once per *group* commit (every message that
arrived in one network-loop pass shares a transaction), which is why the
ingest side batches. Duplicates are dropped by event id with
``INSERT OR IGNORE`` so a redelivery after a crash is stored exactly once.
Schema changes go through numbered migrations tracked in ``user_version``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

from common.clock import now as clock_now

MIGRATIONS: list[str] = [
    # 1: events and rejected input
    """
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        outlet TEXT NOT NULL,
        kind TEXT NOT NULL,
        device TEXT NOT NULL,
        inc TEXT NOT NULL,
        seq INTEGER NOT NULL,
        cls TEXT NOT NULL,
        type TEXT NOT NULL,
        ts INTEGER NOT NULL,
        received_at REAL NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE INDEX events_device_seq ON events(device, inc, seq);
    CREATE TABLE rejected (
        rowid INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        topic TEXT NOT NULL,
        code TEXT NOT NULL,
        detail TEXT NOT NULL,
        payload BLOB NOT NULL
    );
    """,
    # 2: upstream sync state, devices and presence, the downstream command outbox
    """
    ALTER TABLE events ADD COLUMN synced_at REAL;
    ALTER TABLE events ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    UPDATE events SET size = length(payload);
    CREATE INDEX events_unsynced ON events(received_at) WHERE synced_at IS NULL;
    CREATE TABLE devices (
        device TEXT PRIMARY KEY,
        outlet TEXT NOT NULL,
        kind TEXT NOT NULL,
        online INTEGER NOT NULL DEFAULT 0,
        since REAL NOT NULL,
        last_seen REAL NOT NULL,
        state TEXT
    );
    CREATE TABLE commands (
        id TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        kind TEXT NOT NULL,
        op TEXT NOT NULL,
        payload BLOB NOT NULL,
        exp INTEGER NOT NULL,
        created REAL NOT NULL,
        sent_at REAL,
        acked_at REAL,
        status TEXT NOT NULL DEFAULT 'queued',
        ack TEXT
    );
    CREATE INDEX commands_open ON commands(device, status);
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 3: photo uploads from handhelds (gateway/uploads.py); chunk bytes are
    # files next to the database, only their bookkeeping lives here
    """
    CREATE TABLE uploads (
        sha256 TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        size INTEGER NOT NULL,
        chunk_size INTEGER NOT NULL,
        chunks INTEGER NOT NULL,
        received INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        completed_at REAL,
        synced_at REAL,
        meta TEXT
    );
    CREATE INDEX uploads_unsynced ON uploads(completed_at)
        WHERE completed_at IS NOT NULL AND synced_at IS NULL;
    CREATE INDEX uploads_partial ON uploads(device) WHERE completed_at IS NULL;
    CREATE TABLE upload_chunks (
        sha256 TEXT NOT NULL,
        idx INTEGER NOT NULL,
        size INTEGER NOT NULL,
        sha256_chunk TEXT NOT NULL,
        PRIMARY KEY (sha256, idx)
    );
    """,
    # 4: which handheld forwarded a command (gateway/ingest.py ``_forward``), so
    # GET /v1/commands/<id> (gateway/command_api.py) shows a courier only the
    # permits their own handheld sent; NULL for commands from the central side
    """
    ALTER TABLE commands ADD COLUMN via TEXT;
    """,
    # 5: command ids live in namespaces: '' for the platform's, 'fwd:<handheld>'
    # for what a handheld forwarded, so a forwarded id can never shadow (or be
    # shadowed by) a platform command with the same id (gateway/relay.py)
    """
    CREATE TABLE commands_v5 (
        ns TEXT NOT NULL DEFAULT '',
        id TEXT NOT NULL,
        device TEXT NOT NULL,
        kind TEXT NOT NULL,
        op TEXT NOT NULL,
        payload BLOB NOT NULL,
        exp INTEGER NOT NULL,
        created REAL NOT NULL,
        sent_at REAL,
        acked_at REAL,
        status TEXT NOT NULL DEFAULT 'queued',
        ack TEXT,
        via TEXT,
        PRIMARY KEY (ns, id)
    );
    INSERT INTO commands_v5(ns,id,device,kind,op,payload,exp,created,sent_at,acked_at,status,ack,via)
        SELECT CASE WHEN via IS NULL THEN '' ELSE 'fwd:' || via END,
               id,device,kind,op,payload,exp,created,sent_at,acked_at,status,ack,via FROM commands;
    DROP TABLE commands;
    ALTER TABLE commands_v5 RENAME TO commands;
    CREATE INDEX commands_open ON commands(device, status);
    CREATE INDEX commands_device_id ON commands(device, id);
    """,
    # 6: the connection a device's latest "online" named (protocol/presence.py),
    # so a late Last Will of an older connection is told apart from this one's
    """
    ALTER TABLE devices ADD COLUMN presence_tag TEXT;
    """,
]

def is_storage_error(e: BaseException) -> bool:
    """True for faults of the disk or the database file (full, I/O error,
    locked, damaged): the group waits and is tried again. False for errors a
    message's own content causes (a bad binding, a constraint): that message
    is refused and the others go on."""
    if isinstance(e, OSError | MemoryError):
        return True
    if isinstance(e, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError
                  | sqlite3.DataError | sqlite3.NotSupportedError):
        return False
    return isinstance(e, sqlite3.Error)


class StoreDamaged(RuntimeError):
    """The database file failed its integrity check."""


# Lanes for upstream sync: alarms and fresh status jump the backlog.
FAST_CLASSES = ("alarm", "status")

REJECT_PAYLOAD_KEEP = 512
INSERT_CHUNK = 64  # rows per INSERT statement (12 parameters each; SQLite allows 32766)


@lru_cache(maxsize=INSERT_CHUNK)
def _insert_sql(rows: int) -> str:
    return ("INSERT OR IGNORE INTO events(id,outlet,kind,device,inc,seq,cls,type,ts,received_at,payload,"
            "size) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?)"] * rows))


class StoredEvent(NamedTuple):
    """One validated event ready to commit (a tuple: built once per message)."""

    id: str
    outlet: str
    kind: str
    device: str
    inc: str
    seq: int
    cls: str
    type: str
    ts: int
    payload: bytes


class EventStore:
    def __init__(self, path: Path | str, check: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._depth = 0
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=5000")
            if check:
                verdict = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
                if verdict != "ok":
                    raise StoreDamaged(str(verdict))
            self._migrate()
        except sqlite3.DatabaseError as e:
            self.db.close()
            if type(e) is sqlite3.DatabaseError:  # "file is not a database", "malformed"
                raise StoreDamaged(str(e)) from e
            raise
        except StoreDamaged:
            self.db.close()
            raise

    @classmethod
    def open_checked(cls, path: Path | str) -> tuple[EventStore, Path | None]:
        """Open the gateway's own store after ``PRAGMA quick_check``.

        A damaged file would crash every restart. It is moved aside with its
        WAL (kept for forensics, never deleted) and a fresh store started; the
        second value names where it went, so the caller raises an alarm.
        Devices keep every event the gateway has not confirmed, so they send
        the lost ones again."""
        try:
            return cls(path, check=True), None
        except StoreDamaged:
            p = Path(path)
            # wall: names a file an operator finds on this machine's disk
            aside = p.with_name(f"{p.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(p) + suffix)
                if src.exists():
                    src.rename(str(aside) + suffix)
            return cls(path), aside

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for n in range(version, len(MIGRATIONS)):
            self.db.execute("BEGIN IMMEDIATE")
            for stmt in MIGRATIONS[n].split(";"):
                if stmt.strip():
                    self.db.execute(stmt)
            self.db.execute(f"PRAGMA user_version={n + 1}")
            self.db.execute("COMMIT")

    @contextmanager
    def tx(self) -> Iterator[None]:
        """One write transaction; rolled back on any error (unless SQLite
        already did, as it does itself on a full disk).

        Inside another transaction it is a savepoint: its writes stand or
        fall alone, which is how ingest isolates one message of a group
        commit from the others."""
        if self.db.in_transaction:
            self._depth += 1
            name = f"sp{self._depth}"
            self.db.execute(f"SAVEPOINT {name}")
            try:
                yield
                self.db.execute(f"RELEASE {name}")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute(f"ROLLBACK TO {name}")
                    self.db.execute(f"RELEASE {name}")
                raise
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def commit_events(
        self, events: Iterable[StoredEvent], rejects: Iterable[tuple[str, str, str, bytes]] = (),
        within: Callable[[list[StoredEvent]], None] | None = None,
    ) -> list[bool]:
        """Commit one group in a single transaction.

        Returns, per event, True if it was new and False if its id was
        already stored (a redelivery). ``within`` is called with the new
        events inside the same transaction, for writes that must stand or
        fall with them (a forwarded command queued exactly when its event is).
        """
        now = clock_now()
        events = list(events)
        with self.tx():
            # One lookup for the group instead of a rowcount per insert:
            # executemany is several times faster than row-by-row execute.
            have: set[str] = set()
            ids = [e.id for e in events]
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                have.update(r[0] for r in self.db.execute(
                    f"SELECT id FROM events WHERE id IN ({','.join('?' * len(chunk))})", chunk))
            fresh: list[bool] = []
            rows = []
            for e in events:
                new = e.id not in have
                fresh.append(new)
                if new:
                    have.add(e.id)  # a second copy within the same group is a duplicate too
                    rows.append((e.id, e.outlet, e.kind, e.device, e.inc, e.seq, e.cls, e.type, e.ts, now,
                                 e.payload, len(e.payload)))
            # Many rows per statement: executemany hands the GIL back and forth
            # once per row, and with paho's network thread busy every hand-back
            # is a wait. One step per chunk keeps SQLite's work off the GIL.
            for i in range(0, len(rows), INSERT_CHUNK):
                part = rows[i:i + INSERT_CHUNK]
                self.db.execute(_insert_sql(len(part)), list(chain.from_iterable(part)))
            if within is not None:
                within([e for e, new in zip(events, fresh, strict=True) if new])
            self.insert_rejects(rejects, now)
        return fresh

    def insert_rejects(self, rejects: Iterable[tuple[str, str, str, bytes]], at: float | None = None
                       ) -> None:
        """Refused input, kept (truncated) for the clerk and for forensics."""
        at = clock_now() if at is None else at
        for topic, code, detail, payload in rejects:
            self.db.execute(
                "INSERT INTO rejected(at,topic,code,detail,payload) VALUES (?,?,?,?,?)",
                (at, topic[:300], code, detail[:500], bytes(payload[:REJECT_PAYLOAD_KEEP])),
            )

    def max_seq(self, device: str, inc: str) -> int | None:
        row = self.db.execute("SELECT max(seq) FROM events WHERE device=? AND inc=?",
                              (device, inc)).fetchone()
        return None if row[0] is None else int(row[0])

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM events").fetchone()[0])

    def events(self) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT id, device, seq, cls, type, ts, payload FROM events ORDER BY received_at, rowid"
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def rejected(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT topic, code, detail FROM rejected ORDER BY rowid")
        return [{"topic": t, "code": c, "detail": d} for t, c, d in cur.fetchall()]

    # ---- upstream sync
    def unsynced(self, fast: bool, limit: int, max_bytes: int) -> list[tuple[str, str, bytes]]:
        """Oldest unsynced events of one lane as (id, cls, payload), at most
        ``limit`` of them and about ``max_bytes`` (always at least one)."""
        marks = ",".join("?" * len(FAST_CLASSES))
        op = "IN" if fast else "NOT IN"
        cur = self.db.execute(
            f"SELECT id, cls, payload FROM events WHERE synced_at IS NULL AND cls {op} ({marks}) "
            "ORDER BY received_at, rowid LIMIT ?", (*FAST_CLASSES, limit))
        out: list[tuple[str, str, bytes]] = []
        total = 0
        for row in cur:
            if out and total + len(row[2]) > max_bytes:
                break
            out.append((row[0], row[1], row[2]))
            total += len(row[2])
        return out

    def mark_synced(self, ids: list[str], at: float | None = None) -> int:
        """Record the central side's ack; returns how many were newly synced."""
        at = clock_now() if at is None else at
        n = 0
        with self.tx():
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                cur = self.db.execute(
                    f"UPDATE events SET synced_at=? WHERE synced_at IS NULL AND id IN "
                    f"({','.join('?' * len(chunk))})", (at, *chunk))
                n += cur.rowcount
        return n

    def backlog(self) -> dict[str, float]:
        """Unsynced events: count, bytes, and the age in seconds of the oldest."""
        n, size, oldest = self.db.execute(
            "SELECT count(*), coalesce(sum(size),0), min(received_at) FROM events "
            "WHERE synced_at IS NULL").fetchone()
        return {"count": int(n), "bytes": int(size),
                "oldest_age_s": 0.0 if oldest is None else max(0.0, clock_now() - oldest)}

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO kv(key,value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET "
                        "value=excluded.value", (key, value))

    # ---- devices
    def presence(self, device: str, outlet: str, kind: str, online: bool, at: float,
                 tag: str | None = None) -> bool:
        """Online/offline from the retained presence topic (a Last Will sets
        offline). An "offline" naming another connection than the latest
        "online" is a late Will of an older connection: ignored, and False
        returned. Untagged messages carry nothing to compare and are taken."""
        row = self.db.execute("SELECT online, presence_tag FROM devices WHERE device=?",
                              (device,)).fetchone()
        if row is None:
            self.db.execute("INSERT INTO devices(device,outlet,kind,online,since,last_seen,presence_tag) "
                            "VALUES (?,?,?,?,?,?,?)", (device, outlet, kind, int(online), at, at, tag))
            return True
        was_online, known = bool(row[0]), row[1]
        if not online and tag is not None and known is not None and tag != known:
            return False
        if online:
            known = tag
        if was_online != online:
            self.db.execute("UPDATE devices SET online=?, since=?, last_seen=?, presence_tag=? "
                            "WHERE device=?", (int(online), at, at, known, device))
        else:
            self.db.execute("UPDATE devices SET last_seen=?, presence_tag=? WHERE device=?",
                            (at, known, device))
        return True

    def proof_of_life(self, device: str, outlet: str, kind: str, at: float) -> bool:
        """A device's event arrived after its last presence message: it is
        connected, whatever a Will said. True if that turned an offline
        device online (a device first seen through an event is not counted)."""
        row = self.db.execute("SELECT online FROM devices WHERE device=?", (device,)).fetchone()
        if row is None:
            self.db.execute("INSERT INTO devices(device,outlet,kind,online,since,last_seen) "
                            "VALUES (?,?,?,1,?,?)", (device, outlet, kind, at, at))
            return False
        if row[0]:
            self.db.execute("UPDATE devices SET last_seen=? WHERE device=?", (at, device))
            return False
        self.db.execute("UPDATE devices SET online=1, since=?, last_seen=? WHERE device=?", (at, at, device))
        return True

    def device_state(self, device: str, outlet: str, kind: str, state: str, at: float) -> None:
        self.presence_seen(device, outlet, kind, at)
        self.db.execute("UPDATE devices SET state=? WHERE device=?", (state, device))

    def presence_seen(self, device: str, outlet: str, kind: str, at: float) -> None:
        if self.db.execute("SELECT 1 FROM devices WHERE device=?", (device,)).fetchone() is None:
            self.db.execute("INSERT INTO devices(device,outlet,kind,online,since,last_seen) "
                            "VALUES (?,?,?,1,?,?)", (device, outlet, kind, at, at))
        else:
            self.db.execute("UPDATE devices SET last_seen=? WHERE device=?", (at, device))

    def pending_commands(self) -> int:
        """Commands queued for devices and not yet acknowledged."""
        return int(self.db.execute(
            "SELECT count(*) FROM commands WHERE status IN ('queued','sent')").fetchone()[0])

    def devices(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT device, outlet, kind, online, since, last_seen, state FROM devices "
                              "ORDER BY kind, device")
        now = clock_now()
        out = []
        for device, outlet, kind, online, since, last_seen, state in cur:
            out.append({"device": device, "outlet": outlet, "kind": kind, "online": bool(online),
                        "for_s": max(0.0, now - since), "last_seen": last_seen,
                        "state": json.loads(state) if state else None})
        return out

    def recent(self, cls: str, limit: int = 20) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT id, device, type, ts, received_at, synced_at, payload FROM events "
                              "WHERE cls=? ORDER BY received_at DESC, rowid DESC LIMIT ?", (cls, limit))
        return [{"id": i, "device": d, "type": t, "ts": ts, "received_at": r, "synced_at": sy,
                 "body": json.loads(p).get("body", {})} for i, d, t, ts, r, sy, p in cur]

    def close(self) -> None:
        self.db.close()
