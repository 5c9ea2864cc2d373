"""A courier handheld in the simulator: the app's own SQLite outbox and MQTT
link (``handheld/outbox.py``, ``handheld/link.py``) and its photo uploader
(``handheld/uploader.py``), with a virtual camera instead of a real one.

A photo is a rendered village notice board with the campaign's poster and QR
code (``simulator/imagegen.py``), JPEG-encoded; the handheld reads the QR back
with the real decoder (``handheld/decode.py``) as the app does before it
accepts the photo, queues a ``handheld.photo`` event (custody of the
evidence: job, site, step, campaign, SHA-256) and uploads the JPEG to the
gateway in resumable chunks. The gateway syncs it to the platform when the
event backlog is empty, so the simulator can check that every photo
submitted arrives, once.

The 政讯通 job flows (``simulator/board_flows.py``) run the app's own
``handheld/jobs.py`` on this device: its evidence photos go to the same
upload queue (:meth:`queue_photo`), and the platform's signed job lists
arrive in ``commands`` and are acknowledged as the app does (:meth:`ack`).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from drivers.storage import FileStorage
from handheld.link import MqttLink
from handheld.outbox import SqliteOutbox
from handheld.uploader import PhotoQueue, Uploader
from protocol import envelope, signing, topics
from protocol.ids import SeqCounter, format_event_id

Tap = Callable[[str, str, bytes], None]


def board_photo(campaign: str, seed: int) -> bytes:
    """The virtual camera: a poster on a notice board, as a JPEG."""
    import cv2

    from simulator.imagegen import board_with_qr

    img = board_with_qr(campaign, seed=seed, w=1600, h=1200)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(buf)


class SimHandheld:
    """One handheld device; thread-safe ``emit``; ``photo`` does the whole
    evidence step (render, check the campaign QR, event, upload)."""

    def __init__(self, name: str, outlet: str, state_dir: Path, host: str, port: int, password: str,
                 now: Callable[[], int], tap: Tap | None = None, gateway_url: str | None = None,
                 on_command: Callable[[bytes], None] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``: MQTT over TLS and HTTPS uploads, trusting the
        outlet CA alone (``handheld/tls.py``), as the real handheld."""
        self.name = name
        self.outlet = outlet
        self.now = now
        self.tap = tap
        state_dir.mkdir(parents=True, exist_ok=True)
        self.counter = SeqCounter(FileStorage(str(state_dir / "ids")))
        self.outbox = SqliteOutbox(state_dir / "outbox.db")
        self.t_evt = topics.build(outlet, "handheld", name, "evt")
        self.t_ack = topics.build(outlet, "handheld", name, "ack")
        self.commands: list[bytes] = []
        self.submitted: list[str] = []
        self.stats: dict[str, int] = {"photos": 0, "campaign_unread": 0, "uploaded": 0, "upload_errors": 0}
        self._lock = threading.Lock()
        self.ssl_context = ssl_context
        self.link = MqttLink(name, outlet, host, port, name, password, self.outbox,
                             on_command or self.commands.append, ssl_context=ssl_context)
        self.link.start()
        self.gateway_url = gateway_url
        self.password = password
        # The photo queue's SQLite connection belongs to one thread, as on the handheld: every
        # queue operation runs on this one worker.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-photos")
        self.queue: PhotoQueue | None = None
        if gateway_url:
            q = self._worker.submit(PhotoQueue, state_dir / "photos.db", state_dir / "photos")
            self.queue = q.result()

    @property
    def connected(self) -> bool:
        return bool(self.link.connected)

    def emit(self, etype: str, cls: str, body: dict[str, Any]) -> str:
        """Queue one event durably, as ``HandheldApp.emit`` does; returns its id."""
        with self._lock:
            eid = format_event_id(self.name, self.counter.incarnation, self.counter.next())
            data = envelope.encode(envelope.make(eid, int(self.now()), etype, cls, body, self.counter.boot))
            if self.tap is not None:  # recorded before the append: the link may publish it at once
                self.tap(self.name, self.t_evt, data)
            self.outbox.append(cls, self.t_evt, data, eid, etype)
        self.link.wake()
        return eid

    def photo(self, job: str, site: str, campaign: str, seed: int, step: str = "photo",
              data: bytes | None = None) -> str:
        """Render (or take ``data``), check the campaign, queue the event and
        the upload; returns the photo's SHA-256."""
        import hashlib

        import cv2
        import numpy as np

        from handheld.decode import decode_image

        jpeg = data if data is not None else board_photo(campaign, seed)
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        read = {c.text for c in decode_image(img)} if img is not None else set()
        if campaign not in read:
            self.stats["campaign_unread"] += 1
        sha = hashlib.sha256(jpeg).hexdigest()
        self.emit("handheld.photo", "audit", {"job": job, "site": site, "step": step, "sha256": sha,
                                              "campaign": campaign, "campaign_ok": campaign in read})
        self.submitted.append(sha)
        self.stats["photos"] += 1
        if self.queue is not None:
            self._worker.submit(self.queue.add, jpeg, {"job": job, "site": site, "step": step}).result()
        return sha

    def queue_photo(self, jpeg: bytes, meta: dict[str, Any]) -> str:
        """An evidence photo the job flow accepted (its event already queued):
        into the upload queue, and counted as submitted; its SHA-256."""
        import hashlib

        sha = hashlib.sha256(jpeg).hexdigest()
        if self.queue is not None:
            self._worker.submit(self.queue.add, jpeg, meta).result()
        self.submitted.append(sha)
        self.stats["photos"] += 1
        return sha

    def ack(self, cmd_id: str, result: dict[str, Any] | None = None, error: Any = None) -> None:
        """Acknowledge a platform command on the ack topic, as ``HandheldApp._ack`` does
        (the gateway stops resending it)."""
        self.outbox.append("audit", self.t_ack, signing.ack(cmd_id, int(self.now()), error, result))
        self.link.wake()

    def upload(self) -> int:
        """One pass of the uploader (blocking; run it off the event loop).
        Returns how many photos are still waiting."""
        if self.queue is None or self.gateway_url is None:
            return 0
        up = Uploader(self.queue, self.gateway_url, self.name, self.password, ssl_context=self.ssl_context)
        r = self._worker.submit(up.run_once).result()
        self.stats["uploaded"] += len(r.done)
        if r.error:
            self.stats["upload_errors"] += 1
        return r.pending

    @property
    def pending(self) -> int:
        """Events the gateway has not confirmed yet (and records not yet PUBACKed)."""
        return self.outbox.count()

    def close(self) -> None:
        self.link.stop()
        self.outbox.close()
        if self.queue is not None:
            self._worker.submit(self.queue.close).result()
        self._worker.shutdown()
