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
  as soon as they are seen; the bulk backlog goes oldest first, in batches
  bounded by ``batch_max_events`` and ``batch_max_bytes`` (of stored,
  uncompressed bytes), a partial batch waiting at most ``batch_max_age_s``
  for company. Under a bandwidth cap the batch size also shrinks to about
  two seconds of link time, so an alarm never queues behind a long upload.
- A bandwidth cap (``bandwidth_bytes_per_s``) paces uploads by their
  compressed size plus framing: a token bucket without burst credit, so the
  rate holds over any window longer than one batch, as a metered rural link
  is billed.
- Failure handling. After a failed batch the syncer waits a full-jitter
  exponential backoff (uniform in [0, min(cap, base * 2**failures)]), so
  10,000 outlets that lost the same central side do not come back in step.
  Meanwhile it probes every ``probe_interval_s`` (a TLS handshake plus an
  HTTP HEAD or an MQTT CONNECT: bytes, not batches). If the central side was
  *unreachable* (refused, reset, timed out, TLS failure), the first
  successful probe ends the wait and sync resumes at once; if it was reached
  but answered badly (HTTP 5xx, no ack in time), the backoff runs its course
  so an overloaded platform is not hammered, and the next batch is sent only
  after a successful probe.
- TLS is verified every time. A verification failure is an ordinary failure:
  it is logged, backed off and retried *with verification*; there is no
  plaintext path to fall back to, and plaintext URLs are refused when the
  config is read.

Log lines (JSON, as ``gateway/ingest.py`` writes them): ``sync_started``,
``sync_batch`` (lane, n, bytes on the wire, raw bytes, acked, newly synced),
``sync_failed`` (reason, error, next retry), ``sync_probe_ok``,
``sync_resumed`` (down_s, failures, after_probe_s), ``sync_rejected``,
``sync_db_busy``, ``sync_error``, ``sync_stopped``.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gateway import metrics as M
from gateway.config import ConfigError
from gateway.ingest import emit
from gateway.store import EventStore
from gateway.transports import (
    DEFAULT_PREFIX,
    EncodedBatch,
    HttpsTransport,
    MqttTransport,
    Transport,
    TransportError,
    encode_batch,
    tls_context,
)

T = TypeVar("T")

# Seconds between looks at the store when there is nothing to send: the
# latency an alarm can add before its batch leaves.
POLL_S = 0.1
# Under a bandwidth cap, a batch holds about this many seconds of link time.
TARGET_BATCH_S = 2.0
MIN_ADAPTIVE_BYTES = 16 * 1024
GAUGE_EVERY_S = 1.0

PLAINTEXT = {"mqtt": "mqtts", "http": "https", "tcp": "mqtts", "ws": "https"}


@dataclass(frozen=True)
class UpstreamConfig:
    """The ``[upstream]`` table. Sizes are bytes, times seconds."""

    transport: str
    url: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str = ""
    password: str = ""
    client_id: str = ""
    topic_prefix: str = DEFAULT_PREFIX
    batch_max_events: int = 1000
    batch_max_bytes: int = 256 * 1024
    batch_max_age_s: float = 2.0
    bandwidth_bytes_per_s: int = 0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    # A probe of a dead link costs a SYN; of a live one, a HEAD or CONNECT on
    # a kept connection. Half a second keeps "link back -> first acked batch"
    # under a second.
    probe_interval_s: float = 0.5
    timeout_s: float = 10.0


_INTS = {"batch_max_events": (1, 100_000), "batch_max_bytes": (1024, 16 * 1024 * 1024),
         "bandwidth_bytes_per_s": (0, 10**10)}
_FLOATS = {"batch_max_age_s": (0.0, 3600.0), "backoff_base_s": (0.001, 3600.0),
           "backoff_cap_s": (0.001, 86400.0), "probe_interval_s": (0.01, 3600.0),
           "timeout_s": (0.1, 600.0)}
_STRS = ("url", "transport", "ca_file", "cert_file", "key_file", "username", "password",
         "client_id", "topic_prefix")


def parse_upstream(d: dict[str, Any]) -> UpstreamConfig:
    """Validate the raw ``[upstream]`` table; errors name the key."""
    if not isinstance(d, dict):
        raise ConfigError("upstream: must be a table")
    known = set(UpstreamConfig.__dataclass_fields__)
    for k in d:
        if k not in known:
            raise ConfigError(f"upstream.{k}: unknown key (known: {', '.join(sorted(known))})")
    out: dict[str, Any] = {}
    for k in _STRS:
        if k in d:
            if not isinstance(d[k], str):
                raise ConfigError(f"upstream.{k}: must be a string")
            out[k] = d[k]
    for k, (lo, hi) in _INTS.items():
        if k in d:
            v = d[k]
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"upstream.{k}: must be an integer from {lo} to {hi}, got {v!r}")
            out[k] = v
    for k, (lo, hi) in _FLOATS.items():
        if k in d:
            v = d[k]
            if not isinstance(v, int | float) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"upstream.{k}: must be a number from {lo} to {hi}, got {v!r}")
            out[k] = float(v)
    url = out.get("url")
    if not url:
        raise ConfigError("upstream.url: required (mqtts://host:port or https://host/path)")
    u = urlsplit(url)
    scheme = u.scheme.lower()
    if scheme in PLAINTEXT:
        raise ConfigError(f"upstream.url: {scheme}:// is plaintext and refused; the uplink is TLS only "
                          f"(use {PLAINTEXT[scheme]}://)")
    if scheme not in ("mqtts", "https"):
        raise ConfigError(f"upstream.url: scheme must be mqtts or https, got {url!r}")
    try:
        host, _port = u.hostname, u.port
    except ValueError as e:
        raise ConfigError(f"upstream.url: {e}") from None
    if not host:
        raise ConfigError(f"upstream.url: no host in {url!r}")
    if u.username or u.password:
        raise ConfigError("upstream.url: put credentials in upstream.username/password, not the URL")
    implied = "mqtt" if scheme == "mqtts" else "https"
    transport = out.get("transport", implied)
    if transport not in ("mqtt", "https"):
        raise ConfigError(f"upstream.transport: must be 'mqtt' or 'https', got {transport!r}")
    if transport != implied:
        raise ConfigError(f"upstream.transport: {transport!r} does not match the {scheme}:// url")
    out["transport"] = transport
    for k in ("ca_file", "cert_file", "key_file"):
        if out.get(k) and not Path(out[k]).is_file():
            raise ConfigError(f"upstream.{k}: no such file: {out[k]}")
    if out.get("key_file") and not out.get("cert_file"):
        raise ConfigError("upstream.key_file: given without upstream.cert_file")
    if out.get("password") and not out.get("username"):
        raise ConfigError("upstream.password: given without upstream.username")
    if out.get("backoff_cap_s", 60.0) < out.get("backoff_base_s", 0.5):
        raise ConfigError("upstream.backoff_cap_s: must not be below upstream.backoff_base_s")
    prefix = out.get("topic_prefix", DEFAULT_PREFIX)
    if not prefix or any(c in prefix for c in "+#") or prefix.startswith("/"):
        raise ConfigError(f"upstream.topic_prefix: not a plain topic prefix: {prefix!r}")
    return UpstreamConfig(**out)


def make_transport(cfg: UpstreamConfig, outlet: str) -> Transport:
    try:
        ctx = tls_context(cfg.ca_file, cfg.cert_file, cfg.key_file)
    except (OSError, ValueError) as e:
        raise ConfigError(f"upstream.ca_file/cert_file/key_file: cannot load: {e}") from None
    if cfg.transport == "mqtt":
        return MqttTransport(cfg.url, outlet, ctx, cfg.timeout_s, cfg.username, cfg.password,
                             cfg.client_id, cfg.topic_prefix)
    return HttpsTransport(cfg.url, outlet, ctx, cfg.timeout_s, cfg.username, cfg.password)


class TokenBucket:
    """Pacing on bytes: tokens refill at ``rate`` up to ``burst``, a send may
    drive them negative, and the next send waits until they are back to 0."""

    def __init__(self, rate: float, burst: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.t = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def delay(self) -> float:
        self._refill()
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def take(self, n: int) -> None:
        self._refill()
        self.tokens -= n


def full_jitter(failures: int, base: float, cap: float, rng: random.Random) -> float:
    return rng.uniform(0.0, min(cap, base * (2 ** min(failures, 40))))


class Syncer:
    """Drains one gateway database upstream; ``run()`` until ``stop`` is set."""

    def __init__(self, db_path: Path | str, outlet: str, upstream: dict[str, Any] | UpstreamConfig,
                 stop: threading.Event | None = None, log: Callable[..., None] = emit,
                 transport: Transport | None = None, seed: int | None = None) -> None:
        self.cfg = upstream if isinstance(upstream, UpstreamConfig) else parse_upstream(upstream)
        self.outlet = outlet
        self.stop = stop or threading.Event()
        self.log = log
        self.transport = transport or make_transport(self.cfg, outlet)
        self.rng = random.Random(seed)
        self.store = self._open(db_path)
        self.bucket = (TokenBucket(float(self.cfg.bandwidth_bytes_per_s))
                       if self.cfg.bandwidth_bytes_per_s else None)
        self.stats: Counter[str] = Counter()
        self.failures = 0
        self.down_since: float | None = None
        self.link_down = False
        self.retry_at = 0.0
        self.probe_ok_at: float | None = None
        self.ratio = 4.0  # raw/compressed, learned; sizes batches under a cap
        self._gauges_at = 0.0
        self._busy = False

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
        now = time.monotonic()
        if not force and now - self._gauges_at < GAUGE_EVERY_S:
            return
        self._gauges_at = now
        b = self._db(self.store.backlog)
        M.BACKLOG_EVENTS.set(b["count"])
        M.BACKLOG_BYTES.set(b["bytes"])
        M.OLDEST_UNSYNCED.set(b["oldest_age_s"])

    def _limit_bytes(self) -> int:
        if not self.bucket:
            return self.cfg.batch_max_bytes
        adaptive = int(self.cfg.bandwidth_bytes_per_s * TARGET_BATCH_S * self.ratio)
        return min(self.cfg.batch_max_bytes, max(MIN_ADAPTIVE_BYTES, adaptive))

    # ------------------------------------------------------------ batching
    def next_batch(self) -> EncodedBatch | None:
        """The next batch to send, waiting for age or events; None on stop."""
        n = self.cfg.batch_max_events
        while not self.stop.is_set():
            limit = self._limit_bytes()
            rows = self._db(self.store.unsynced, True, n, limit)
            lane = "fast"
            if not rows:
                lane = "bulk"
                rows = self._db(self.store.unsynced, False, n, limit)
                if not rows:
                    self._gauges()
                    self.stop.wait(POLL_S)
                    continue
                total = sum(len(r[2]) for r in rows)
                biggest = max(len(r[2]) for r in rows)
                full = len(rows) >= n or total + biggest > limit
                if not full:
                    b = self._db(self.store.backlog)
                    full = b["count"] > len(rows)
                    age = b["oldest_age_s"]
                    if not full and age < self.cfg.batch_max_age_s:
                        self._gauges()
                        self.stop.wait(min(POLL_S, self.cfg.batch_max_age_s - age))
                        continue
            return encode_batch(self.outlet, lane, [(r[0], r[2]) for r in rows])
        return None

    # ---------------------------------------------------------------- send
    def send(self, batch: EncodedBatch) -> None:
        wire = len(batch.body) + self.transport.overhead
        if self.bucket:
            self.bucket.take(wire)
        t0 = time.monotonic()
        try:
            ack = self.transport.send(batch)
        except TransportError:
            M.SYNC_BATCHES.labels("failed").inc()
            raise
        M.SYNC_BYTES.inc(len(batch.body))
        acked = ack.acked_of(batch.ids)
        new = self._db(self.store.mark_synced, acked) if acked else 0
        ms = (time.monotonic() - t0) * 1000
        M.SYNCED.inc(new)
        M.SYNC_BATCHES.labels("ok" if len(acked) == len(batch.ids) else "partial").inc()
        self.stats["batches"] += 1
        self.stats["events"] += new
        self.stats["bytes"] += len(batch.body)
        self.ratio = 0.8 * self.ratio + 0.2 * (batch.raw_bytes / max(1, len(batch.body)))
        self.log("sync_batch", lane=batch.lane, batch=batch.id, n=len(batch.ids), bytes=len(batch.body),
                 raw=batch.raw_bytes, acked=len(acked), new=new, ms=round(ms, 1), at=round(time.time(), 3))
        if ack.rejected:
            self.stats["rejected"] += len(ack.rejected)
            self.log("sync_rejected", batch=batch.id, rejected=ack.rejected)
        if len(acked) < len(batch.ids):
            self.log("sync_partial", batch=batch.id, n=len(batch.ids), acked=len(acked))
        if self.failures:
            now = time.time()
            self.log("sync_resumed", down_s=round(now - (self.down_since or now), 3),
                     failures=self.failures,
                     after_probe_s=None if self.probe_ok_at is None else round(now - self.probe_ok_at, 3))
            self.failures = 0
            self.down_since = None
            self.probe_ok_at = None
        self._gauges()

    def _failed(self, e: BaseException) -> None:
        self.failures += 1
        self.stats["failures"] += 1
        if self.down_since is None:
            self.down_since = time.time()
        self.probe_ok_at = None
        if isinstance(e, TransportError):
            self.link_down = e.unreachable
            reason, error = e.reason, str(e)
        else:
            self.link_down = False
            reason, error = "internal", f"{type(e).__name__}: {e}"
        wait = full_jitter(self.failures - 1, self.cfg.backoff_base_s, self.cfg.backoff_cap_s, self.rng)
        self.retry_at = time.monotonic() + wait
        self.log("sync_failed", reason=reason, error=error[:300], failures=self.failures,
                 retry_in_s=round(wait, 3), unreachable=self.link_down)

    def wait_until_up(self) -> bool:
        """Back off and probe; True when it is time to send again.

        A successful probe ends the wait early only if a probe failed during
        it: the link was seen down and has come back, so the backlog should
        move now. A probe that succeeds straight away says the central side
        was reachable all along (it answered badly, or a send failed for a
        reason probes cannot see), and the jittered backoff runs its course,
        so the exponent, not the probe interval, paces the retries.
        """
        seen_down = False
        now = time.monotonic()
        next_probe = now + self.cfg.probe_interval_s if self.link_down else self.retry_at
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_probe:
                try:
                    self.transport.probe()
                except TransportError as e:
                    self.stats["probes_failed"] += 1
                    if not seen_down:
                        self.log("sync_probe_failed", reason=e.reason, error=str(e)[:300])
                    seen_down = self.link_down = True
                    next_probe = time.monotonic() + self.cfg.probe_interval_s
                    continue
                self.stats["probes_ok"] += 1
                if seen_down or time.monotonic() >= self.retry_at:
                    self.probe_ok_at = time.time()
                    self.log("sync_probe_ok", failures=self.failures, link_was_down=seen_down,
                             at=round(self.probe_ok_at, 3))
                    self.link_down = False
                    return True
                next_probe = self.retry_at
                continue
            self._gauges()
            self.stop.wait(min(next_probe - now, GAUGE_EVERY_S))
        return False

    # ----------------------------------------------------------------- run
    def run(self) -> None:
        self.log("sync_started", outlet=self.outlet, transport=self.cfg.transport, url=self.cfg.url,
                 bandwidth_bytes_per_s=self.cfg.bandwidth_bytes_per_s)
        self.transport.cancel = self.stop
        try:
            while not self.stop.is_set():
                try:
                    if self.failures and not self.wait_until_up():
                        break
                    if self.bucket:
                        d = self.bucket.delay()
                        if d > 0 and self.stop.wait(d):
                            break
                    batch = self.next_batch()
                    if batch is None:
                        break
                    self.send(batch)
                except TransportError as e:
                    self._failed(e)
                except sqlite3.OperationalError as e:
                    if self.stop.is_set():
                        break
                    self._failed(e)
                except Exception as e:  # noqa: BLE001 - a bug must not end sync for good
                    self.log("sync_error", error=f"{type(e).__name__}: {e}",
                             trace=traceback.format_exc(limit=5)[-1500:])
                    self._failed(e)
        finally:
            self.transport.close()
            try:
                self._gauges(force=True)
            except sqlite3.Error:
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
