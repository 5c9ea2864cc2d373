"""The store as the HTTP routes read it: a read-only SQLite connection, so
a page view can never write, lock out the ingest loop, or migrate."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.store.events import EventStore


class StoreUnavailable(RuntimeError):
    """The database is missing, unreadable or not yet migrated."""


class ReadOnlyStore(EventStore):
    """The gateway's store through a read-only connection.

    Subclassed rather than re-queried so the page reads exactly what
    ``EventStore`` means by devices, backlog and recent events; only the
    connection differs (``mode=ro``, ``query_only``, no migrations)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).resolve()
        if not self.path.exists():
            raise StoreUnavailable(f"{self.path} does not exist")
        try:
            self.db = sqlite3.connect(self.path.as_uri() + "?mode=ro", uri=True,
                                      isolation_level=None, check_same_thread=False, timeout=5)
        except sqlite3.Error as e:
            raise StoreUnavailable(str(e)) from e
        try:
            self.db.execute("PRAGMA query_only=1")
            self.db.execute("PRAGMA busy_timeout=5000")
            version = self.schema_version
        except sqlite3.Error as e:
            self.db.close()
            raise StoreUnavailable(str(e)) from e
        if version < 2:
            self.db.close()
            raise StoreUnavailable(f"schema version {version}, the gateway has not migrated it yet")
