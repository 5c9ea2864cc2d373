"""The handheld's durable outbox: encoded envelopes wait in SQLite until they are delivered:
an event until the gateway confirms it has committed it, anything else until the broker's PUBACK.

Same rules as the firmware's flash outbox (``firmware/outbox.py``), on a device that
has a real filesystem and SQLite, so the implementation is a table instead of
segment files:

- A record is committed (``synchronous=FULL``, WAL) before :meth:`SqliteOutbox.append`
  returns: the courier's "deposit requested" survives the battery dropping out a
  second later.
- A record is deleted only by :meth:`mark_delivered` / :meth:`mark_delivered_many`,
  which the MQTT link (``handheld/link.py``) calls when the gateway's confirmation
  names an event, or on PUBACK for a record that is not an event (a command ack). A
  PUBACK alone does not delete an event: the broker having it is not the gateway
  having it (a broker that lost its state or a wiped gateway session loses acked
  messages). Nothing else deletes: a restart, a broker that is down for a day, a
  gateway that went away all leave the records where they are, and
  :meth:`pending` hands them out again oldest first, so on reconnect everything
  unconfirmed is resent in order (the gateway drops duplicates by event id).
- Capacity is bounded (``capacity_bytes`` of payload). When full, ``status`` and
  ``telemetry`` records (raw scans) are evicted oldest first; ``custody``,
  ``alarm`` and ``audit`` are never evicted. If the new record still does not fit,
  :class:`OutboxFull` is raised and nothing is stored or evicted for it - the
  caller must tell the courier (a custody step that cannot be recorded must not
  look recorded).

Why SQLite rather than the firmware outbox: the handheld is CPython on a phone-class
board with a journaling filesystem; SQLite gives atomic commit, an index by seq and
cheap counting by class for the status screen, with no code of our own to get wrong.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

CLASSES = ("custody", "alarm", "audit", "status", "telemetry")
EVICTABLE = ("status", "telemetry")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cls TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    event_id TEXT,
    type TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_stats (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
"""


class OutboxFull(Exception):
    """The record could not be stored even after evicting every status/telemetry record."""


class SqliteOutbox:
    """Thread-safe: the UI, the command handler and the MQTT sender share one instance."""

    def __init__(self, path: str | Path, capacity_bytes: int = 8_000_000) -> None:
        self.path = str(path)
        self.capacity = capacity_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._bytes = int(self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(payload)),0) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _bump(self, key: str, n: int = 1) -> None:
        self._db.execute("INSERT INTO outbox_stats(k,v) VALUES(?,?) ON CONFLICT(k) DO UPDATE SET v=v+?",
                         (key, n, n))

    def append(self, cls: str, topic: str, payload: bytes, event_id: str | None = None,
               etype: str | None = None) -> int:
        """Store one record durably; return its seq. Raises OutboxFull or ValueError."""
        if cls not in CLASSES:
            raise ValueError(f"unknown class {cls!r}")
        size = len(payload)
        if size > self.capacity:
            raise ValueError(f"record of {size} bytes exceeds the outbox capacity")
        with self._lock:
            if self._bytes + size > self.capacity:
                spare = int(self._db.execute(
                    "SELECT COALESCE(SUM(LENGTH(payload)),0) FROM outbox WHERE cls IN (?,?)",
                    EVICTABLE).fetchone()[0])
                if self._bytes - spare + size > self.capacity:
                    # Refuse without evicting anything for a record that cannot fit anyway.
                    self._bump("refused")
                    raise OutboxFull(f"outbox full: {self._bytes} of {self.capacity} bytes, of which "
                                     f"{self._bytes - spare} are never evicted")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                evicted = 0
                while self._bytes + size > self.capacity:
                    row = self._db.execute(
                        "SELECT seq, LENGTH(payload) FROM outbox WHERE cls IN (?,?) ORDER BY seq LIMIT 1",
                        EVICTABLE).fetchone()
                    self._db.execute("DELETE FROM outbox WHERE seq=?", (row[0],))
                    self._bytes -= int(row[1])
                    evicted += 1
                if evicted:
                    self._bump("evicted", evicted)
                cur = self._db.execute(
                    "INSERT INTO outbox(cls,topic,payload,event_id,type,created) VALUES (?,?,?,?,?,?)",
                    (cls, topic, bytes(payload), event_id, etype, time.time()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._bytes = int(self._db.execute(
                    "SELECT COALESCE(SUM(LENGTH(payload)),0) FROM outbox").fetchone()[0])
                raise
            self._bytes += size
            return int(cur.lastrowid or 0)

    def pending(self, limit: int = 100, after: int = 0) -> list[tuple[int, str, str, bytes]]:
        """Undelivered records with seq > ``after``, oldest first: (seq, cls, topic, payload)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, cls, topic, payload FROM outbox WHERE seq > ? "
                                    "ORDER BY seq LIMIT ?", (after, limit)).fetchall()
        return [(int(s), c, t, bytes(p)) for s, c, t, p in rows]

    def mark_delivered(self, seq: int) -> None:
        """The record is delivered (an event confirmed by the gateway, another record
        acked by the broker): only now is it deleted. A seq already gone is a no-op."""
        self.mark_delivered_many([seq])

    def mark_delivered_many(self, seqs: list[int]) -> int:
        """Delete several delivered records in one transaction; returns how many were there.

        One confirmation can release a whole window of events: one commit (one fsync
        with ``synchronous=FULL``) for all of them, not one each."""
        if not seqs:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = 0
                for seq in seqs:
                    # fetchall: a RETURNING statement left unfinished would block the COMMIT
                    gone = self._db.execute("DELETE FROM outbox WHERE seq=? RETURNING LENGTH(payload)",
                                            (int(seq),)).fetchall()
                    for (size,) in gone:
                        self._bytes -= int(size)
                        n += 1
                if n:
                    self._bump("delivered", n)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._bytes = int(self._db.execute(
                    "SELECT COALESCE(SUM(LENGTH(payload)),0) FROM outbox").fetchone()[0])
                raise
            return n

    def contains(self, seq: int) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM outbox WHERE seq=?", (seq,)).fetchone() is not None

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    @property
    def used_bytes(self) -> int:
        return self._bytes

    def status(self) -> dict[str, Any]:
        """Counts by class, bytes, the oldest record's age and lifetime counters, for the sync screen."""
        with self._lock:
            by_cls = dict(self._db.execute("SELECT cls, COUNT(*) FROM outbox GROUP BY cls").fetchall())
            oldest = self._db.execute("SELECT MIN(created) FROM outbox").fetchone()[0]
            stats = dict(self._db.execute("SELECT k, v FROM outbox_stats").fetchall())
        return {"count": sum(by_cls.values()), "by_class": by_cls, "bytes": self._bytes,
                "capacity": self.capacity,
                "oldest_age_s": None if oldest is None else max(0.0, time.time() - oldest),
                "delivered": stats.get("delivered", 0), "evicted": stats.get("evicted", 0),
                "refused": stats.get("refused", 0)}
