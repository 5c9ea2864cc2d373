"""Upstream sync: the gateway's store drained to the central side in batches.

A thread of its own with its own SQLite connection: WAL lets the ingest
thread keep committing while this one reads, and the only write here,
``mark_synced``, is short. The durability chain's last link is kept strict:
an event is marked synced only when the central side's ack names it, so a
gateway killed between upload and ack (or between ack and commit) resends,
and the central side, which deduplicates by event id and acks ids it already
holds, ends with exactly one copy. Batch ids are derived from the events they
hold, so such a resend is recognisably the same batch.

Scheduling, in order of precedence:

- Two lanes. Alarms and status (``store.FAST_CLASSES``) go first and are sent
  as soon as they are seen (within a quarter second while a backlog
  streams out); the bulk backlog goes oldest first, in batches
  bounded by ``batch_max_events`` and ``batch_max_bytes`` (of stored,
  uncompressed bytes), a partial batch waiting at most ``batch_max_age_s``
  for company. Under a bandwidth cap the batch size also shrinks to about
  two seconds of link time, so an alarm never queues behind a long upload.
- Up to ``max_in_flight`` batches on the wire at once (default 2, each on
  its own connection): the next batch is read, compressed and sent while the
  central side works on the previous one, which hides a round trip per
  batch on a real link. Ids in flight are claimed so no batch repeats them.
- A bandwidth cap (``bandwidth_bytes_per_s``) paces uploads by their
  compressed size plus framing: a token bucket without burst credit, so the
  rate holds over any window longer than one batch, as a metered rural link
  is billed.
- Failure handling. After a failed batch the syncer waits a full-jitter
  exponential backoff (uniform in [0, min(cap, base * 2**failures)]), so
  10,000 outlets that lost the same central side do not come back in step.
  Meanwhile it probes every ``probe_interval_s`` (a TLS handshake plus an
  HTTP HEAD or an MQTT CONNECT: bytes, not batches). Once a probe has failed
  (the link is seen down), the first probe that succeeds ends the wait and
  sync resumes at once, whatever the backoff said; if the central side was
  reached but answered badly (HTTP 5xx, no ack in time) and probes keep
  succeeding, the backoff runs its course so an overloaded platform is not
  hammered. Either way a batch follows a successful probe.
- TLS is verified every time. A verification failure is an ordinary failure:
  it is logged, backed off and retried *with verification*; there is no
  plaintext path to fall back to, and plaintext URLs are refused when the
  config is read.

Log lines (JSON, as ``gateway/ingest.py`` writes them): ``sync_started``,
``sync_batch`` (lane, n, bytes on the wire, raw bytes, acked, newly synced),
``sync_failed`` (reason, error, next retry), ``sync_probe_ok``,
``sync_resumed`` (down_s, failures, after_probe_s), ``sync_rejected``,
``sync_db_busy``, ``sync_error``, ``sync_stopped``. Metrics: the backlog
gauges (count, bytes, oldest age) about once a second, and the synced,
batches-by-outcome and bytes counters; ``last_sync_at`` goes to the store's
kv for the status page.
"""

from __future__ import annotations

import queue
import random
import sqlite3
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from common import timers
from common.clock import now as clock_now
from common.logs import recorder
from common.uplink_codec import Ack, EncodedBatch, encode_batch
from gateway import metrics as M
from gateway.config import ConfigError, UpstreamConfig, parse_upstream
from gateway.store.events import EventStore
from gateway.uplink.https import HttpsTransport
from gateway.uplink.mqtt import MqttTransport
from gateway.uplink.transport import Transport, TransportError, tls_context
from protocol.envelope import MAX_PAYLOAD

record = recorder(__name__)

T = TypeVar("T")

# Seconds between looks at the store when there is nothing to send: the
# latency an alarm can add before its batch leaves.
POLL_S = 0.1
# Under a bandwidth cap, a batch holds about this many seconds of link time.
TARGET_BATCH_S = 2.0
MIN_ADAPTIVE_BYTES = 16 * 1024
GAUGE_EVERY_S = 1.0
# While full bulk batches stream out, look at the fast lane at most this
# often: with no index on the class, an empty fast-lane query walks the whole
# unsynced backlog (19 ms per 100,000 events here), which would otherwise be
# paid before every batch of a drain.
FAST_CHECK_S = 0.25

def make_transport(cfg: UpstreamConfig, outlet: str, index: int = 0) -> Transport:
    """The configured transport; ``index`` > 0 for the extra in-flight
    connections (an MQTT client id must be unique per connection)."""
    try:
        ctx = tls_context(cfg.ca_file, cfg.cert_file, cfg.key_file)
    except (OSError, ValueError) as e:
        raise ConfigError(f"upstream.ca_file/cert_file/key_file: cannot load: {e}") from None
    if cfg.transport == "mqtt":
        client_id = cfg.client_id or f"pe-gw-{outlet}"
        return MqttTransport(cfg.url, outlet, ctx, cfg.timeout_s, cfg.username, cfg.password,
                             client_id if index == 0 else f"{client_id}-{index}", cfg.topic_prefix,
                             channel=index)
    return HttpsTransport(cfg.url, outlet, ctx, cfg.timeout_s, cfg.username, cfg.password)


class UplinkPacer:
    """Pacing on bytes: tokens refill at ``rate`` up to ``burst``, a send may
    drive them negative, and the next send waits until they are back to 0."""

    def __init__(self, rate: float, burst: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.t = timers.monotonic()

    def _refill(self) -> None:
        now = timers.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def delay(self) -> float:
        self._refill()
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def take(self, n: int) -> None:
        self._refill()
        self.tokens -= n


class Pause(NamedTuple):
    """How long the loop waits before looking again, and whether something is
    due then (a batch's age is up) or it only looks for new events (a poll):
    a simulator steps its clock to what is due (``common/timers.py``)."""

    seconds: float
    due: bool


def full_jitter(failures: int, base: float, cap: float, rng: random.Random) -> float:
    return rng.uniform(0.0, min(cap, base * (2 ** min(failures, 40))))


class _Sender(threading.Thread):
    """One connection's worth of uploads: batches in, outcomes out.

    The syncer keeps ``max_in_flight`` of these so the next batch is built,
    compressed and on the wire while the central side still works on the
    previous one; on a link with a real round-trip time that is what keeps
    the pipe full.
    """

    def __init__(self, transport: Transport, results: queue.Queue[Any], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.transport = transport
        self.results = results
        self.jobs: queue.Queue[EncodedBatch | None] = queue.Queue()

    def run(self) -> None:
        while True:
            batch = self.jobs.get()
            if batch is None:
                return
            t0 = time.monotonic()
            try:
                out: Any = self.transport.send(batch)
            except Exception as e:  # noqa: BLE001 - handed to the syncer, which decides
                out = e
            self.results.put((self, batch, out, time.monotonic() - t0))


class Syncer:
    """Drains one gateway database upstream; ``run()`` until ``stop`` is set.

    One thread (``run``) owns the store and every decision; sender threads
    only move bytes. Ids of batches in flight are *claimed* so the next batch
    never repeats them; a failed batch's ids are released and, being the
    oldest, go again first, as the same batch when nothing else changed.
    """

    def __init__(self, db_path: Path | str, outlet: str, upstream: dict[str, Any] | UpstreamConfig,
                 stop: threading.Event | None = None, log: Callable[..., None] = record,
                 transport: Transport | None = None, seed: int | None = None) -> None:
        self.cfg = upstream if isinstance(upstream, UpstreamConfig) else parse_upstream(upstream)
        self.outlet = outlet
        self.stop = stop or threading.Event()
        self.log = log
        self.transports = [transport] if transport is not None else \
            [make_transport(self.cfg, outlet, i) for i in range(self.cfg.max_in_flight)]
        self.rng = random.Random(seed)
        self.store = self._open(db_path)
        self.bucket = (UplinkPacer(float(self.cfg.bandwidth_bytes_per_s))
                       if self.cfg.bandwidth_bytes_per_s else None)
        self.stats: Counter[str] = Counter()
        self.results: queue.Queue[Any] = queue.Queue()
        self.senders = [_Sender(t, self.results, f"postedge-sync-send-{i}")
                        for i, t in enumerate(self.transports)]
        self.free = list(self.senders)
        self.inflight: dict[str, EncodedBatch] = {}
        self.claimed: set[str] = set()
        self.failures = 0
        self.hold = False  # after a failure: no new batches until wait_until_up says so
        self.down_since: float | None = None
        self.link_down = False
        self.retry_at = 0.0
        self.probe_ok_at: float | None = None
        self.ratio = 4.0  # raw/compressed, learned; sizes batches under a cap
        self._gauges_at = 0.0
        self._fast_due = 0.0
        self._busy = False
        self._noted_at = -1e9
        self._synced_since_note = False

    def _open(self, db_path: Path | str) -> EventStore:
        deadline = time.monotonic() + 30
        while True:
            try:
                store = EventStore(db_path)
                # Short SQLite waits, retried here: the loop stays responsive
                # to stop and says in the log that the database was busy.
                store.db.execute("PRAGMA busy_timeout=1000")
                return store
            except sqlite3.OperationalError as e:
                if time.monotonic() > deadline or "locked" not in str(e) and "busy" not in str(e):
                    raise
                time.sleep(0.1)

    # ------------------------------------------------------------- helpers
    def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call, retrying while the ingest side holds the lock."""
        delay = 0.05
        while True:
            try:
                r = fn(*args)
                self._busy = False
                return r
            except sqlite3.OperationalError as e:
                msg = str(e)
                if "locked" not in msg and "busy" not in msg:
                    raise
                self.stats["db_busy"] += 1
                if not self._busy:
                    self._busy = True
                    self.log("sync_db_busy", error=msg, call=getattr(fn, "__name__", "?"))
                if self.stop.wait(delay):
                    raise
                delay = min(1.0, delay * 2)

    def _gauges(self, force: bool = False) -> None:
        now = timers.monotonic()
        if not force and now - self._gauges_at < GAUGE_EVERY_S:
            return
        self._gauges_at = now
        b = self._db(self.store.backlog)
        M.BACKLOG_EVENTS.set(b["count"])
        M.BACKLOG_BYTES.set(b["bytes"])
        M.OLDEST_UNSYNCED.set(b["oldest_age_s"])
        if self._synced_since_note:
            self._note_sync(force=True)

    def _note_sync(self, force: bool = False) -> None:
        """``last_sync_at`` in the store's kv (Unix seconds), which the status
        page and ``postedge gateway status`` show. Written at most once a
        second (each write is a durable commit of its own); a pending note is
        flushed by the next gauge update or at stop."""
        if not force:
            self._synced_since_note = True
        now = timers.monotonic()
        if self._synced_since_note and (force or now - self._noted_at >= 1.0):
            self._db(self.store.put, "last_sync_at", f"{clock_now():.3f}")
            self._noted_at = now
            self._synced_since_note = False

    def _limit_bytes(self) -> int:
        if not self.bucket:
            return self.cfg.batch_max_bytes
        adaptive = int(self.cfg.bandwidth_bytes_per_s * TARGET_BATCH_S * self.ratio)
        return min(self.cfg.batch_max_bytes, max(MIN_ADAPTIVE_BYTES, adaptive))

    def _unclaimed(self, fast: bool, n: int, limit: int) -> list[tuple[str, bytes]]:
        """The lane's oldest unsynced events not already in flight, within
        ``n`` events and ``limit`` bytes (always at least one)."""
        k = len(self.claimed)
        rows = self._db(self.store.unsynced, fast, n + k, limit + k * MAX_PAYLOAD)
        out: list[tuple[str, bytes]] = []
        total = 0
        for eid, _cls, payload in rows:
            if eid in self.claimed:
                continue
            if out and (len(out) >= n or total + len(payload) > limit):
                break
            out.append((eid, payload))
            total += len(payload)
        return out

    # ------------------------------------------------------------ batching
    def try_batch(self) -> EncodedBatch | Pause:
        """The next batch to send, or how long to wait before looking again."""
        n = self.cfg.batch_max_events
        limit = self._limit_bytes()
        rows: list[tuple[str, bytes]] = []
        if timers.monotonic() >= self._fast_due:
            rows = self._unclaimed(True, n, limit)
            if not rows:
                self._fast_due = timers.monotonic() + FAST_CHECK_S
        if rows:
            return encode_batch(self.outlet, "fast", rows)
        rows = self._unclaimed(False, n, limit)
        if not rows:
            self._fast_due = 0.0
            self._gauges()
            return Pause(POLL_S, due=False)  # nothing to send: look again for new events
        total = sum(len(r[1]) for r in rows)
        biggest = max(len(r[1]) for r in rows)
        if len(rows) < n and total + biggest <= limit:
            # A small backlog: cheap to look at the fast lane every time.
            self._fast_due = 0.0
            b = self._db(self.store.backlog)
            more = b["count"] - len(self.claimed) > len(rows)
            age = b["oldest_age_s"]
            if not more and age < self.cfg.batch_max_age_s:
                self._gauges()
                return Pause(min(POLL_S, self.cfg.batch_max_age_s - age), due=True)  # its age is up then
        return encode_batch(self.outlet, "bulk", rows)

    # ---------------------------------------------------------------- send
    def _dispatch(self, batch: EncodedBatch) -> None:
        sender = self.free.pop()
        if self.bucket:
            self.bucket.take(len(batch.body) + sender.transport.overhead)
        self.inflight[batch.id] = batch
        self.claimed.update(batch.ids)
        sender.jobs.put(batch)

    def _collect(self, timeout: float) -> None:
        """Handle finished uploads, waiting up to ``timeout`` for the first."""
        try:
            item = self.results.get(timeout=timeout) if timeout > 0 else self.results.get_nowait()
        except queue.Empty:
            return
        while True:
            sender, batch, out, secs = item
            self.free.append(sender)
            self.inflight.pop(batch.id, None)
            self.claimed.difference_update(batch.ids)
            if isinstance(out, BaseException):
                M.SYNC_BATCHES.labels("failed").inc()
                self._failed(out, batch)
            else:
                self._acked(batch, out, secs)
            try:
                item = self.results.get_nowait()
            except queue.Empty:
                return

    def _acked(self, batch: EncodedBatch, ack: Ack, secs: float) -> None:
        M.SYNC_BYTES.inc(len(batch.body))
        acked = ack.acked_of(batch.ids)
        t0 = time.monotonic()
        new = self._db(self.store.mark_synced, acked) if acked else 0
        ms = (secs + time.monotonic() - t0) * 1000
        M.SYNCED.inc(new)
        M.SYNC_BATCHES.labels("ok" if len(acked) == len(batch.ids) else "partial").inc()
        self._note_sync()
        self.stats["batches"] += 1
        self.stats["events"] += new
        self.stats["bytes"] += len(batch.body)
        self.ratio = 0.8 * self.ratio + 0.2 * (batch.raw_bytes / max(1, len(batch.body)))
        self.log("sync_batch", lane=batch.lane, batch=batch.id, n=len(batch.ids), bytes=len(batch.body),
                 raw=batch.raw_bytes, acked=len(acked), new=new, ms=round(ms, 1), at=round(clock_now(), 3))
        if ack.rejected:
            self.stats["rejected"] += len(ack.rejected)
            self.log("sync_rejected", batch=batch.id, rejected=ack.rejected)
        if len(acked) < len(batch.ids):
            self.log("sync_partial", batch=batch.id, n=len(batch.ids), acked=len(acked))
        if self.failures and not self.hold:
            now = clock_now()
            self.log("sync_resumed", down_s=round(now - (self.down_since or now), 3),
                     failures=self.failures,
                     after_probe_s=None if self.probe_ok_at is None else round(now - self.probe_ok_at, 3))
            self.failures = 0
            self.down_since = None
            self.probe_ok_at = None
        self._gauges()

    def _failed(self, e: BaseException, batch: EncodedBatch | None = None) -> None:
        if isinstance(e, TransportError):
            reason, error, unreachable = e.reason, str(e), e.unreachable
        else:
            reason, error, unreachable = "internal", f"{type(e).__name__}: {e}", False
            if not isinstance(e, sqlite3.Error):
                self.log("sync_error", error=error, trace="".join(
                    traceback.format_exception(type(e), e, e.__traceback__, limit=5))[-1500:])
        self.stats["failures"] += 1
        if self.hold:
            # Another batch of the same episode: one backoff step per episode.
            self.link_down = self.link_down or unreachable
            self.log("sync_failed", reason=reason, error=error[:300], failures=self.failures,
                     batch=batch.id if batch else None, unreachable=unreachable)
            return
        self.hold = True
        self.failures += 1
        if self.down_since is None:
            self.down_since = clock_now()
        self.probe_ok_at = None
        self.link_down = unreachable
        wait = full_jitter(self.failures - 1, self.cfg.backoff_base_s, self.cfg.backoff_cap_s, self.rng)
        self.retry_at = timers.monotonic() + wait
        self.log("sync_failed", reason=reason, error=error[:300], failures=self.failures,
                 batch=batch.id if batch else None, retry_in_s=round(wait, 3), unreachable=unreachable)

    def wait_until_up(self) -> bool:
        """Back off and probe; True when it is time to send again.

        A successful probe ends the wait early only if a probe failed during
        it: the link was seen down and has come back, so the backlog should
        move now. A probe that succeeds straight away says the central side
        was reachable all along (it answered badly, or a send failed for a
        reason probes cannot see), and the jittered backoff runs its course,
        so the exponent, not the probe interval, paces the retries.
        """
        probe = self.transports[0]  # every sender is idle while we hold
        seen_down = False
        now = timers.monotonic()
        next_probe = now + self.cfg.probe_interval_s if self.link_down else self.retry_at
        while not self.stop.is_set():
            now = timers.monotonic()
            if now >= next_probe:
                try:
                    probe.probe()
                except TransportError as e:
                    self.stats["probes_failed"] += 1
                    if not seen_down:
                        self.log("sync_probe_failed", reason=e.reason, error=str(e)[:300])
                    seen_down = self.link_down = True
                    next_probe = timers.monotonic() + self.cfg.probe_interval_s
                    continue
                self.stats["probes_ok"] += 1
                if seen_down or timers.monotonic() >= self.retry_at:
                    self.probe_ok_at = clock_now()
                    self.log("sync_probe_ok", failures=self.failures, link_was_down=seen_down,
                             at=round(self.probe_ok_at, 3))
                    self.link_down = False
                    self.hold = False
                    return True
                next_probe = self.retry_at
                continue
            self._gauges()
            # A probe of a dead link is a poll (the link coming back is what matters, and a
            # simulator brings that as a fault's end); a retry after a backoff is due then.
            timers.wait(self.stop, min(next_probe - now, GAUGE_EVERY_S),
                        due=False if self.link_down else next_probe)
        return False

    # ----------------------------------------------------------------- run
    def _step(self) -> bool:
        """One turn of the loop; False when it is time to stop."""
        self._collect(0)
        if self.hold:
            if self.inflight:
                self._collect(POLL_S)
                return True
            return self.wait_until_up()
        if not self.free:
            self._collect(POLL_S)
            return True
        if self.bucket:
            d = self.bucket.delay()
            if d > 0:
                self._pause(Pause(d, due=True))
                return True
        got = self.try_batch()
        if isinstance(got, Pause):
            self._pause(got)
            return True
        self._dispatch(got)
        return True

    def _pause(self, p: Pause) -> None:
        """Wait before looking again: for an upload in flight (on the real clock:
        it is the link's time), or else on this process's clock."""
        if self.inflight:
            self._collect(min(p.seconds, POLL_S))
        else:
            timers.wait(self.stop, p.seconds, due=p.due)

    def run(self) -> None:
        self.log("sync_started", outlet=self.outlet, transport=self.cfg.transport, url=self.cfg.url,
                 bandwidth_bytes_per_s=self.cfg.bandwidth_bytes_per_s, max_in_flight=len(self.senders))
        for t in self.transports:
            t.cancel = self.stop
        for s in self.senders:
            s.start()
        try:
            with timers.paced("uplink"):
                self._loop()
        finally:
            self._close()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                if not self._step():
                    break
            except sqlite3.OperationalError as e:
                if self.stop.is_set():
                    break
                self._failed(e)
            except Exception as e:  # noqa: BLE001 - a bug must not end sync for good
                self._failed(e)

    def _close(self) -> None:
        for s in self.senders:
            s.jobs.put(None)
        deadline = time.monotonic() + 2.0
        for s in self.senders:
            s.join(max(0.0, deadline - time.monotonic()))
        for t in self.transports:
            t.close()
        try:
            self._collect(0)  # acks that landed while stopping are still worth marking
            self._note_sync(force=True)
            self._gauges(force=True)
        except Exception:  # noqa: BLE001 - closing down; the next start recounts
            pass
        self.store.close()
        self.log("sync_stopped", **dict(self.stats))

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="postedge-sync", daemon=False)
        t.start()
        return t


def start_syncer(db_path: Path | str, outlet: str, upstream: dict[str, Any],
                 stop: threading.Event) -> threading.Thread:
    """Validate ``[upstream]`` (ConfigError names the key), open the store and
    start syncing in a non-daemon thread that ends soon after ``stop`` is set."""
    return Syncer(db_path, outlet, upstream, stop).start()
