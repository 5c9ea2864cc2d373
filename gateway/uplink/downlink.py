"""Downlink: commands from the central side into the devices' outboxes.

A thread of its own, with its own transport connection and SQLite
connection, so a slow central answer never holds up the upload of events
and the upload never delays a remote open. It pulls (see the wire format in
``gateway/transports.py``): everything after its cursor, committed to the
``commands`` table together with the new cursor in one transaction, so a
gateway killed at any point asks again from the old cursor and the command
ids keep each command queued once. Delivery to the device, resends, expiry
and acks are the relay's work (``gateway/relay.py``), in the ingest thread.

Three kinds are for the gateway itself (``common/uplink_codec.py``): a
recipient's contact for the notifier, the platform's refusal of a clerk's
request, which the console shows, and a signed box catalogue or tariff for
the counter, installed as one posted to the counter API. A command the gateway cannot
address (unknown kind, no device id, a refusal of a request it never made) is
counted, logged and skipped; the cursor still moves past it, or one bad
command would block every command behind it forever.

Log lines: ``down_started``, ``down_received`` (n, queued, invalid, cursor),
``down_invalid``, ``down_clerk_refusal`` (request, reason), ``down_document`` (kind, version),
``down_failed`` (reason, retry_in_s), ``down_stopped``.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import timers
from common.clock import now as clock_now
from common.logs import recorder
from common.uplink_codec import (
    DOWN_CLERK_DECISION,
    DOWN_COUNTER_DOC,
    DOWN_NOTIFY,
    BatchError,
    read_clerk_refusal,
    read_counter_doc,
)
from gateway import metrics as M
from gateway.ingest.relay import store_command
from gateway.notify.state import inbox_put
from gateway.store import clerks
from gateway.store.events import EventStore
from gateway.uplink.sync import UpstreamConfig, full_jitter, make_transport, parse_upstream
from gateway.uplink.transport import Transport, TransportError
from protocol.errors import ProtocolError

record = recorder(__name__)

CURSOR_KEY = "down_cursor"


class Downlink:
    """Pull commands until ``stop`` is set; ``wake()`` pulls at once."""

    def __init__(self, db_path: Path | str, outlet: str, upstream: dict[str, Any] | UpstreamConfig,
                 stop: threading.Event | None = None, log: Callable[..., None] = record,
                 transport: Transport | None = None, seed: int | None = None,
                 documents: Callable[[bytes], dict[str, Any]] | None = None) -> None:
        """``documents``: the counter desk's ``install`` (``gateway/counter/acceptance.py``),
        which verifies and keeps a signed box catalogue or tariff; None at a gateway
        without a counter."""
        self.cfg = upstream if isinstance(upstream, UpstreamConfig) else parse_upstream(upstream)
        self.documents = documents
        self.db_path = db_path
        self.outlet = outlet
        self.stop = stop or threading.Event()
        self.log = log
        # The last channel index is the downlink's own: batch senders use 0..n-1.
        self.transport = transport or make_transport(self.cfg, outlet, index=self.cfg.max_in_flight)
        self.rng = random.Random(seed)
        self.stats: Counter[str] = Counter()
        self._wake = threading.Event()

    def _install_document(self, payload: bytes) -> str | None:
        """Hand a platform document to the counter; why it was refused, or None."""
        if self.documents is None:
            return "no counter at this gateway ([counter] and [web] in gateway.toml)"
        try:
            cite = self.documents(read_counter_doc(payload))
        except Exception as e:  # noqa: BLE001 - the desk's refusal (bad signature, stale, another outlet's)
            words = getattr(e, "message", None)  # the desk's Refused says why in words
            return str(words.get("en") if isinstance(words, dict) else e)[:300]
        self.stats["documents"] += 1
        self.log("down_document", **{k: cite.get(k) for k in ("kind", "version")})
        return None

    def wake(self) -> None:
        self._wake.set()

    def _wait(self, seconds: float, due: bool = False) -> None:
        """Wait on this process's clock (``common/timers.py``) until a wake or a
        stop; ``due``: a retry is due at the end (a poll is not)."""
        self._wake.clear()
        end = timers.monotonic() + seconds
        while not self.stop.is_set() and not self._wake.is_set():
            left = end - timers.monotonic()
            if left <= 0:
                return
            timers.wait(self._wake, min(left, 0.2), due=end if due else False)

    def pull_once(self, store: EventStore) -> bool:
        """One pull and its commit; True if the central side said there is more."""
        cursor = int(store.get(CURSOR_KEY, "0") or 0)
        down = self.transport.pull(cursor)
        queued = invalid = 0
        with store.tx():
            for kind, payload in down.commands:
                if kind == DOWN_NOTIFY:  # a recipient's contact, checked by the notifier (gateway/notify)
                    inbox_put(store.db, payload)
                    self.stats["contacts"] += 1
                    continue
                if kind == DOWN_COUNTER_DOC:  # a signed box catalogue or tariff for the counter
                    why = self._install_document(payload)
                    if why is not None:
                        invalid += 1
                        M.COMMANDS.labels("invalid").inc()
                        self.log("down_invalid", kind=kind, error=why)
                    continue
                if kind == DOWN_CLERK_DECISION:  # the platform refused a clerk's request
                    try:
                        req, reason = read_clerk_refusal(payload)
                        if not clerks.record_refusal(store.db, req, reason, clock_now()):
                            raise BatchError(f"no clerk request {req!r} at this outlet")
                    except BatchError as e:
                        invalid += 1
                        M.COMMANDS.labels("invalid").inc()
                        self.log("down_invalid", kind=kind, error=str(e)[:300])
                        continue
                    self.stats["clerk_decisions"] += 1
                    self.log("down_clerk_refusal", request=req, reason=reason)
                    continue
                try:
                    before = store.db.total_changes
                    cid = store_command(store, self.outlet, kind, payload)
                    queued += store.db.total_changes > before
                except ProtocolError as e:
                    invalid += 1
                    M.COMMANDS.labels("invalid").inc()
                    self.log("down_invalid", kind=kind, error=str(e)[:300])
                    continue
                self.log("down_command", id=cid, kind=kind)
            if down.cursor != cursor:
                store.put(CURSOR_KEY, str(down.cursor))
        self.stats["pulls"] += 1
        self.stats["queued"] += queued
        self.stats["invalid"] += invalid
        if down.commands or down.cursor != cursor:
            self.log("down_received", n=len(down.commands), queued=queued, invalid=invalid,
                     cursor=down.cursor)
        return down.more

    def run(self) -> None:
        self.log("down_started", outlet=self.outlet, interval_s=self.cfg.down_interval_s)
        store = EventStore(self.db_path)
        try:
            with timers.paced("downlink"):
                self._loop(store)
        finally:
            self.transport.close()
            store.close()
            self.log("down_stopped", **dict(self.stats))

    def _loop(self, store: EventStore) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                more = self.pull_once(store)
            except (TransportError, sqlite3.Error) as e:
                failures += 1
                self.stats["failures"] += 1
                c = self.cfg
                wait = max(c.probe_interval_s,
                           full_jitter(failures, c.backoff_base_s, c.backoff_cap_s, self.rng))
                reason = e.reason if isinstance(e, TransportError) else "store"
                self.log("down_failed", reason=reason, error=str(e)[:300], retry_in_s=round(wait, 3))
                self.transport.close()
                # a dead link is polled (its return is what matters); a refusal is retried
                self._wait(wait, due=not (isinstance(e, TransportError) and e.unreachable))
                continue
            failures = 0
            if not more:
                self._wait(self.cfg.down_interval_s)

    def start(self) -> threading.Thread:
        self.transport.cancel = self.stop
        t = threading.Thread(target=self.run, name="postedge-downlink", daemon=False)
        t.start()
        return t
