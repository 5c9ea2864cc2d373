"""A small pool of PostgreSQL connections for the front's thread pool.

The front runs backend calls on a handful of threads; each takes a
connection for one transaction and gives it back. A connection that broke
(PostgreSQL restarted) is dropped, not returned, so the next call opens a
fresh one. Small enough not to need psycopg_pool, an extra package.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


class Pool:
    def __init__(self, dsn: str, size: int = 8, connect_timeout: float = 10.0) -> None:
        self.dsn = dsn
        self.size = size
        self.connect_timeout = connect_timeout
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()
        self._closed = False

    def _get(self) -> psycopg.Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            make = self._made < self.size
            if make:
                self._made += 1
        if not make:
            return self._idle.get(timeout=30)
        try:
            return psycopg.connect(self.dsn, autocommit=True, connect_timeout=int(self.connect_timeout))
        except BaseException:
            with self._lock:
                self._made -= 1
            raise

    def _put(self, conn: psycopg.Connection) -> None:
        if conn.closed or conn.broken or self._closed:
            conn.close()
            with self._lock:
                self._made -= 1
            return
        self._idle.put(conn)

    @contextmanager
    def tx(self) -> Iterator[psycopg.Connection]:
        """A connection inside one transaction, committed on a normal exit."""
        conn = self._get()
        try:
            with conn.transaction():
                yield conn
        finally:
            self._put(conn)

    @contextmanager
    def session(self) -> Iterator[psycopg.Connection]:
        """A connection outside any transaction (each statement commits on its
        own), for what cannot run in one: ``CREATE INDEX CONCURRENTLY``."""
        conn = self._get()
        try:
            yield conn
        finally:
            self._put(conn)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
