"""The gateway's durable event store: one SQLite file in WAL mode.

``synchronous=FULL`` makes each commit durable across power loss, not only
process death; the cost is paid once per *group* commit (every message that
arrived in one network-loop pass shares a transaction), which is why the
ingest side batches. Duplicates are dropped by event id with
``INSERT OR IGNORE`` so a redelivery after a crash is stored exactly once.
Schema changes go through numbered migrations tracked in ``user_version``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
]

REJECT_PAYLOAD_KEEP = 512


@dataclass(frozen=True)
class StoredEvent:
    """One validated event ready to commit."""

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
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for n in range(version, len(MIGRATIONS)):
            self.db.execute("BEGIN IMMEDIATE")
            for stmt in MIGRATIONS[n].split(";"):
                if stmt.strip():
                    self.db.execute(stmt)
            self.db.execute(f"PRAGMA user_version={n + 1}")
            self.db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def commit_events(
        self, events: Iterable[StoredEvent], rejects: Iterable[tuple[str, str, str, bytes]] = ()
    ) -> list[bool]:
        """Commit one group in a single transaction.

        Returns, per event, True if it was new and False if its id was
        already stored (a redelivery).
        """
        now = time.time()
        fresh: list[bool] = []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for e in events:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO events(id,outlet,kind,device,inc,seq,cls,type,ts,"
                    "received_at,payload) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (e.id, e.outlet, e.kind, e.device, e.inc, e.seq, e.cls, e.type, e.ts, now,
                     e.payload),
                )
                fresh.append(bool(cur.rowcount))
            for topic, code, detail, payload in rejects:
                self.db.execute(
                    "INSERT INTO rejected(at,topic,code,detail,payload) VALUES (?,?,?,?,?)",
                    (now, topic, code, detail, payload[:REJECT_PAYLOAD_KEEP]),
                )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return fresh

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

    def close(self) -> None:
        self.db.close()
