"""Finished photos from the gateway up to the central side, at low priority.

Custody, alarm and status events are what the platform runs on; a photo of
a bulletin board can wait. So this thread sends a photo only while the
event backlog is empty (``EventStore.backlog()["count"] == 0``) and asks
again before every chunk: an event arriving mid-photo pauses the photo
within one chunk's link time, and the event syncer has the link to itself.
Under an ``upstream.bandwidth_bytes_per_s`` cap, chunks are paced on the
same rate and sized to about two seconds of link time.

Same protocol as the handheld to the gateway (``gateway/uploads.py``, client
``common.upload_client.upload_bytes``): ``POST`` by SHA-256, ``PUT`` only the
chunks the central side does not confirm, so a WAN cut or a gateway restart
mid-photo resumes where it stopped, and a photo the platform already holds
(the same picture through another outlet) costs one request. A photo is
marked ``synced_at`` only when the central side says it is complete, and
``mark_photo_synced`` then deletes the gateway's copy: the platform holds it,
and months of photos must not fill the outlet box (the disk budget counts
photos until then and never evicts an unsynced one). The
upload URL is the batch URL's sibling: ``https://central/v1/batches`` ->
``https://central/v1/uploads``. HTTP Basic with the upstream credentials,
TLS verified as for batches, and ``X-Postedge-Outlet`` on every request.

MQTT uplinks skip photos for now (logged once as ``photo_sync_skipped``):
photos stay on the gateway, complete and listed as unsynced, until the
uplink is HTTPS or photo chunks over MQTT are built.

Log lines: ``photo_sync_started``, ``photo_sync_waiting`` (events first),
``photo_synced`` (sha256, chunks sent), ``photo_sync_paused``,
``photo_sync_failed`` (error, retry in), ``photo_sync_skipped``,
``photo_sync_stopped``.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common import timers
from common.logs import recorder
from common.upload_client import UploadClient, upload_bytes
from gateway import metrics as M
from gateway.store.events import EventStore
from gateway.store.photos import completed_unsynced, mark_photo_synced, photo_path
from gateway.uplink.sync import UplinkPacer, UpstreamConfig, full_jitter, parse_upstream
from gateway.uplink.transport import tls_context

record = recorder(__name__)

CHUNK = 256 * 1024
MIN_CHUNK = 16 * 1024


def uploads_url(batch_url: str) -> str:
    """The central upload endpoint beside the batch endpoint."""
    u = urlsplit(batch_url)
    parent = u.path.rstrip("/").rsplit("/", 1)[0] if "/" in u.path.strip("/") else ""
    return f"https://{u.netloc}{parent}/uploads" if parent else f"https://{u.netloc}/v1/uploads"


class PhotoSync(threading.Thread):
    """One thread, its own SQLite connection (WAL), until ``stop`` is set."""

    def __init__(self, db_path: Path | str, outlet: str, upstream: dict[str, Any] | UpstreamConfig,
                 stop: threading.Event, log: Callable[..., None] = record, poll_s: float = 1.0,
                 chunk_size: int | None = None, seed: int | None = None) -> None:
        super().__init__(name="postedge-photo-sync", daemon=True)
        self.db_path = Path(db_path)
        self.outlet = outlet
        self.cfg = upstream if isinstance(upstream, UpstreamConfig) else parse_upstream(upstream)
        self.stop_event = stop
        self.log = log
        self.poll_s = poll_s
        rate = self.cfg.bandwidth_bytes_per_s
        self.chunk_size = chunk_size or (min(CHUNK, max(MIN_CHUNK, 2 * rate)) if rate else CHUNK)
        self.bucket = UplinkPacer(float(rate)) if rate else None
        self.rng = random.Random(seed)
        self.synced = 0
        # Photos the central side refuses for good (413/415): not retried
        # until a restart, so one bad photo does not block the rest.
        self.refused: set[str] = set()
        self._noted_at = -1e9

    def run(self) -> None:
        if self.cfg.transport != "https":
            self.log("photo_sync_skipped", reason="MQTT uplink: photos stay on the gateway until the uplink "
                     "is HTTPS (photo chunks over MQTT are not built yet)")
            return
        try:
            ctx = tls_context(self.cfg.ca_file, self.cfg.cert_file, self.cfg.key_file)
        except (OSError, ValueError) as e:
            self.log("photo_sync_failed", error=f"upstream.ca_file/cert_file/key_file: cannot load: {e}")
            return
        store = EventStore(self.db_path)
        client = UploadClient(uploads_url(self.cfg.url), self.cfg.username, self.cfg.password,
                              self.cfg.timeout_s, ctx, headers={"X-Postedge-Outlet": self.outlet})
        self.log("photo_sync_started", url=uploads_url(self.cfg.url), chunk_size=self.chunk_size)
        failures = 0
        waiting = False
        try:
            with timers.paced("photos"):
                while not self.stop_event.is_set():
                    try:
                        failures, waiting = self._step(store, client, failures, waiting)
                    except Exception as e:  # noqa: BLE001 - a busy database or a bug must not end photo sync
                        self.log("photo_sync_error", error=repr(e), trace=traceback.format_exc(limit=5))
                        timers.wait(self.stop_event, max(self.poll_s, 1.0), due=False)
        finally:
            client.close()
            store.close()
            self.log("photo_sync_stopped", synced=self.synced)

    def _step(self, store: EventStore, client: UploadClient, failures: int, waiting: bool
              ) -> tuple[int, bool]:
        """One look at the store: wait, or send one photo. Returns the
        updated (failures, waiting)."""
        if store.backlog()["count"]:
            # Logged at most once a minute: a busy outlet empties and refills
            # its backlog many times while a photo waits.
            if not waiting and timers.monotonic() - self._noted_at > 60 and completed_unsynced(store, 1):
                self.log("photo_sync_waiting", events=store.backlog()["count"])
                self._noted_at = timers.monotonic()
                waiting = True
            timers.wait(self.stop_event, self.poll_s, due=False)
            return failures, waiting
        todo = [p for p in completed_unsynced(store, 20) if p["sha256"] not in self.refused]
        if not todo:
            timers.wait(self.stop_event, self.poll_s, due=False)
            return failures, False
        ok = self._one(store, client, todo[0])
        if ok is None:  # paused for events, or stopping
            return failures, False
        if ok:
            return 0, False
        failures += 1
        delay = full_jitter(failures, self.cfg.backoff_base_s, self.cfg.backoff_cap_s, self.rng)
        timers.wait(self.stop_event, max(delay, self.cfg.probe_interval_s), due=False)
        return failures, False

    def _between(self, store: EventStore) -> bool:
        """Before each chunk: events first, then the bandwidth cap."""
        if self.stop_event.is_set() or store.backlog()["count"]:
            return False
        if self.bucket is not None:
            timers.wait(self.stop_event, self.bucket.delay())
            self.bucket.take(self.chunk_size + 300)
        return not self.stop_event.is_set()

    def _one(self, store: EventStore, client: UploadClient, photo: dict[str, Any]) -> bool | None:
        sha = photo["sha256"]
        try:
            data = photo_path(self.db_path, sha).read_bytes()
        except OSError as e:
            self.log("photo_sync_failed", sha256=sha, error=f"cannot read the photo: {e}")
            return False
        meta = {"meta": photo["meta"], "device": photo["device"], "outlet": self.outlet}
        t0 = time.monotonic()
        out = upload_bytes(client, data, sha, meta, self.chunk_size, between=lambda: self._between(store))
        if out.sent:
            M.PHOTO_SYNC_BYTES.inc(min(len(data), out.sent * self.chunk_size))
        if out.state == "done":
            mark_photo_synced(store, sha)
            self.synced += 1
            M.PHOTOS.labels("synced").inc()
            self.log("photo_synced", sha256=sha, size=len(data), chunks_sent=out.sent,
                     seconds=round(time.monotonic() - t0, 3))
            return True
        if out.error is None:
            self.log("photo_sync_paused", sha256=sha, chunks_sent=out.sent)
            return None
        if out.state == "failed":
            self.refused.add(sha)
        self.log("photo_sync_failed", sha256=sha, error=out.error, detail=out.detail, chunks_sent=out.sent)
        return False


def start_photo_sync(db_path: Path | str, outlet: str, upstream: dict[str, Any], stop: threading.Event
                     ) -> PhotoSync:
    ps = PhotoSync(db_path, outlet, upstream, stop)
    ps.start()
    return ps
