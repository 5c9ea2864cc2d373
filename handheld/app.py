"""The courier handheld app: outbox + MQTT link, commands, scans, parcel flows, board jobs, UI.

``HandheldApp(config).start()`` brings up, in this order, the parts that keep data
safe and then the parts that talk to people and peripherals:

1. event ids (``SeqCounter`` over ``FileStorage``: unique forever, across restarts),
   the SQLite outbox, the command replay guard (persisted);
2. the MQTT link (drains the outbox, receives signed commands);
3. the camera feed, the GNSS reader, the serial scan engine (each optional; a missing
   or failing peripheral is a message on the screen, never a crash);
4. the background sync loop (locker command outcomes, photo hand-off to the uploader);
5. the user interface, if one was given (:class:`UiStarter`; ``handheld/main.py``
   passes the local web UI, ``handheld.webui.serve``).

Every courier action is an event built here (:meth:`HandheldApp.emit`) and committed to
the outbox before the UI says "done".

Photo upload. Accepted photos are first recorded in a small hand-off table
(:class:`PhotoHandoff`) and given to the uploader's queue (``handheld/uploader.py``,
imported when first needed); a build without the uploader, or one whose uploader
fails to start, keeps them on the handheld and the sync screen says so.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from common import barcode_words, logs
from common.text import LANGS, Localized
from drivers.storage import FileStorage
from handheld import photo as _photo
from handheld import tls
from handheld.config import HandheldConfig
from handheld.dispatch import Dispatch
from handheld.evidence import EvidenceRefused
from handheld.geolocation import BrowserPosition
from handheld.jobs import Jobs, PhotoSink
from handheld.link import MqttLink
from handheld.nmea import GnssReader
from handheld.outbox import OutboxFull, SqliteOutbox
from handheld.photo_index import PhotoIndex
from handheld.position import GnssConfig
from handheld.scanning import ScanFilter
from handheld.sources import SourceError, VideoSource, load_image
from handheld.text import TEXT, Refused
from handheld.wedge import Wedge
from handheld.workflows import GatewayClient, ParcelFlows
from protocol import barcodes, envelope, scantrace, signing, topics
from protocol.canonical import loads_object
from protocol.errors import OversizedPayload, ProtocolError
from protocol.ids import SeqCounter, format_event_id

log = logs.get(__name__)

#: Job lists and manifests with permits are larger than a locker's 2 KiB commands; the
#: handheld has the RAM, so it parses up to this and then verifies the dict.
MAX_HANDHELD_COMMAND = 64 * 1024
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: The largest browser-camera frame decoded for scanning (the page sends at most
#: 1920 px; a larger one is someone else's upload, and would hold a worker for seconds).
MAX_SCAN_FRAME_PX = 4096
MODES = ("check", "intake", "deposit", "deliver", "collect", "bag", "point")
SCAN_VERDICT = {"duplicate": "duplicate", "invalid_scan": "invalid", "not_parcel": "invalid",
                "wrong_route": "wrong_route", "not_item": "invalid", "bad_bag": "invalid",
                "in_bag": "duplicate", "already_collected": "duplicate", "bare_sscc": "invalid"}


class RunningUi(Protocol):
    """What the app keeps of a started user interface: where it is and how to stop it."""

    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...


#: Starts a user interface for a started app and returns it (``handheld.webui.serve``).
UiStarter = Callable[["HandheldApp"], RunningUi]


class _AckError:
    """A refused command as ``signing.ack`` reports it: a code and a detail."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail


# ---------------------------------------------------------------------- photo hand-off

class PhotoHandoff(PhotoSink):
    """Accepted photos waiting for the uploader's queue; survives restarts (SQLite)."""

    def __init__(self, path: Path, state_dir: Path, base_url: str, username: str, password: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context  # HTTPS to the gateway, trusting the outlet CA alone
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS photos (sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, "
                        "meta TEXT NOT NULL, added REAL NOT NULL, handed INTEGER NOT NULL DEFAULT 0)")
        self.state_dir = state_dir
        self.base_url = base_url
        self.username = username
        self.password = password
        self._lock = threading.Lock()
        self.queue: Any = None
        self.uploader: Any = None
        self.last_error: str | None = None
        self.available = False
        #: Summary of the uploader's queue, refreshed by tick(): PhotoQueue's SQLite
        #: handle belongs to the sync thread, so UI threads never touch it.
        self.queue_summary: dict[str, Any] | None = None

    def add(self, path: Path, meta: dict[str, Any]) -> None:
        sha = str(meta.get("sha256") or meta.get("photo", {}).get("sha256"))
        with self._lock:
            self.db.execute("INSERT OR IGNORE INTO photos(sha256,path,meta,added) VALUES (?,?,?,?)",
                            (sha, str(path), json.dumps(meta, ensure_ascii=False, default=str), time.time()))

    def _ensure_uploader(self) -> bool:
        if self.queue is not None:
            return True
        try:
            mod = importlib.import_module("handheld.uploader")
            self.queue = mod.PhotoQueue(self.state_dir / "upload_queue.db")
            self.uploader = mod.Uploader(self.queue, self.base_url, self.username, self.password,
                                         ssl_context=self.ssl_context)
            self.available = True
            return True
        except ImportError:
            self.available = False
            return False
        except Exception as e:  # noqa: BLE001 - a broken uploader must not stop events
            self.last_error = f"uploader: {e!r}"
            return False

    def tick(self, link_up: bool) -> None:
        """Hand waiting photos to the uploader, then let it send a little."""
        if not self._ensure_uploader():
            return
        with self._lock:
            # The uploader and the gateway take JPEG: evidence photos and drawn signatures
            # (stored as JPEG, handheld/workflows.py). A PNG signature from an older version
            # stays on the handheld (its event names the PNG's hash).
            rows = self.db.execute("SELECT sha256, path, meta FROM photos WHERE handed=0 "
                                   "AND path LIKE '%.jpg' ORDER BY added").fetchall()
        for sha, path, meta in rows:
            try:
                self.queue.add(path, json.loads(meta))
            except Exception as e:  # noqa: BLE001 - keep it here and retry next tick
                self.last_error = f"queue add {sha[:12]}: {e!r}"
                continue
            with self._lock:
                self.db.execute("UPDATE photos SET handed=1 WHERE sha256=?", (sha,))
        if link_up:
            try:
                self.uploader.run_once()
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - the gateway going away is ordinary
                self.last_error = f"upload: {e!r}"[:200]
        try:
            self.queue_summary = summarise_queue(self.queue.status())
        except Exception as e:  # noqa: BLE001
            self.queue_summary = {"error": repr(e)[:200]}

    def status(self) -> dict[str, Any]:
        with self._lock:
            waiting = int(self.db.execute("SELECT COUNT(*) FROM photos WHERE handed=0").fetchone()[0])
            total = int(self.db.execute("SELECT COUNT(*) FROM photos").fetchone()[0])
        return {"local_waiting": waiting, "total": total, "uploader": self.available,
                "queue": self.queue_summary, "last_error": self.last_error}

    def close(self) -> None:
        with self._lock:
            self.db.close()


def summarise_queue(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The uploader's per-photo status folded into what the sync screen shows."""
    todo = [i for i in items if not i.get("done") and not i.get("failed")]
    err = next((i["error"] for i in todo if i.get("error")), None)
    return {"waiting": len(todo), "done": sum(1 for i in items if i.get("done")),
            "failed": sum(1 for i in items if i.get("failed")),
            "chunks_done": sum(int(i.get("confirmed") or 0) for i in todo),
            "chunks_total": sum(int(i.get("chunks") or 0) for i in todo), "error": err}


# ---------------------------------------------------------------------- camera

class CameraFeed:
    """The latest camera frame, a small JPEG of it for the preview and its quality verdict.

    ``spec``: a folder of images (cycled: a test camera, or a phone app dropping frames),
    or anything ``VideoSource`` opens (device index, video file - looped - or URL). A
    camera that disappears drops the frame (a stale picture must never become evidence)
    and shows why; it is reopened every ``retry_s``.
    """

    def __init__(self, spec: str, interval_s: float = 0.5, retry_s: float = 2.0) -> None:
        self.spec = spec
        self.interval_s = interval_s
        self.retry_s = retry_s
        self.frame: np.ndarray | None = None
        self.preview: bytes | None = None
        self.quality: dict[str, Any] | None = None
        self.error: str | None = None
        self.frames = 0
        self._video: VideoSource | None = None
        self._i = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.spec:
            return
        self._thread = threading.Thread(target=self._run, name="hh-camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._video is not None:
            self._video.close()

    def latest(self) -> np.ndarray | None:
        with self._lock:
            return None if self.frame is None else self.frame.copy()

    def _next(self) -> np.ndarray | None:
        p = Path(self.spec)
        if "://" not in self.spec and not self.spec.isdigit() and (p.is_dir() or not p.suffix):
            if not p.is_dir():
                raise SourceError("lost", f"{p}: camera folder is gone")
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXT)
            if not files:
                raise SourceError("lost", f"{p}: no pictures")
            f = files[self._i % len(files)]
            self._i += 1
            return load_image(f)
        if self._video is None:
            self._video = VideoSource(self.spec, max_failures=5, reopen=0)
        img = self._video.read()
        if img is None:  # end of a video file: loop it, as a camera would keep showing the scene
            self._video.close()
            self._video = None
            return None
        return img

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                img = self._next()
            except SourceError as e:
                with self._lock:
                    self.frame = None
                    self.preview = None
                    self.error = f"{e.reason}: {e.detail}"
                if self._video is not None:
                    self._video.close()
                    self._video = None
                if e.reason in ("lost", "open", "missing"):
                    self._stop.wait(self.retry_s)
                else:
                    self._stop.wait(self.interval_s)
                continue
            except Exception as e:  # noqa: BLE001 - a camera driver fault is a message, not a crash
                with self._lock:
                    self.frame = None
                    self.error = f"error: {e!r}"
                self._stop.wait(self.retry_s)
                continue
            if img is None:
                continue
            q = _photo.check_quality(img)
            small = _photo.resize_long_side(img, 640)
            ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])
            with self._lock:
                self.frame = img
                self.preview = bytes(buf) if ok else None
                self.quality = {k: q[k] for k in ("ok", "reasons", "metrics", "messages")}
                self.error = None
                self.frames += 1
            self._stop.wait(self.interval_s)


# ---------------------------------------------------------------------- the app

class HandheldApp:
    """The courier's handheld: its stores, link, peripherals and flows. ``ui``, if given,
    is started last by :meth:`start` and stopped first by :meth:`stop`."""

    def __init__(self, config: HandheldConfig, ui: UiStarter | None = None) -> None:
        self.cfg = config
        self._start_ui = ui
        sd = Path(config.state_dir)
        sd.mkdir(parents=True, exist_ok=True)
        self.state_dir = sd
        self.storage = FileStorage(str(sd / "ids"))
        self.counter = SeqCounter(self.storage)
        self.outbox = SqliteOutbox(sd / "outbox.db", config.outbox_capacity)
        self.guard = signing.ReplayGuard(256)
        raw = self.storage.read("replay")
        if raw:
            try:
                self.guard.restore(json.loads(raw))
            except ValueError:
                log.error("replay window unreadable; starting empty (expired commands still refused)")
        self.t_evt = topics.build(config.outlet, "handheld", config.device, "evt")
        self.t_ack = topics.build(config.outlet, "handheld", config.device, "ack")
        self._emit_lock = threading.Lock()
        self.index = PhotoIndex(sd / "photo_index.db")
        # The outlet CA: MQTT over TLS and the gateway's HTTPS.
        https = tls.context(config.gateway.ca_pem)
        self.photos = PhotoHandoff(sd / "photo_handoff.db", sd, config.gateway.url, config.gateway.username,
                                   config.gateway.password, https)
        self.gateway = GatewayClient(config.gateway.url, username=config.gateway.username,
                                     password=config.gateway.password, ssl_context=https)
        self.scans = ScanFilter(config.same_window_s, config.other_window_s)
        self.wedge = Wedge(config.wedge)
        self.jobs = Jobs(sd, config.device, self.emit, self.delivered, self.index, self.gnss_fix, self.photos,
                         require_position=config.require_position,
                         scope=f"{config.outlet}/{self.counter.incarnation}")
        self.flows = ParcelFlows(sd, config.courier, config.outlet, self.emit, self.scans, self.gateway,
                                 self.photos)
        self.dispatch = Dispatch(sd, config.courier, self.emit)
        self.link = MqttLink(config.device, config.outlet, config.broker.host, config.broker.port,
                             config.broker.username, config.broker.password, self.outbox, self.handle_command,
                             keepalive=config.broker.keepalive, state_doc=self.state_doc,
                             ssl_context=tls.context(config.broker.ca_pem),
                             incarnation=self.counter.incarnation, boot=self.counter.boot)
        self.camera = CameraFeed(config.camera)
        self.gnss: GnssReader | None = None
        if config.gnss:
            self.gnss = GnssReader(config.gnss, baudrate=config.gnss_baud, config=GnssConfig(
                hold_s=config.gnss_hold_s, max_accuracy_m=config.gnss_max_accuracy_m))
        gate = GnssConfig(hold_s=config.gnss_hold_s, max_accuracy_m=config.gnss_max_accuracy_m)
        #: navigator.geolocation fixes the page posts (handheld/geolocation.py), if enabled.
        self.browser_pos = BrowserPosition(gate) if config.geolocation else None
        self.mode = "check"
        self.last_scan: dict[str, Any] | None = None
        self.last_command: dict[str, Any] | None = None
        self.scan_engine_status: str | None = None
        #: the browser camera's vote (made on its first frame: the decoder loads then)
        self._browser_vote: Any = None
        self._browser_vote_lock = threading.Lock()
        self.browser_frames = 0
        self.browser_frames_refused = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.web: RunningUi | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> HandheldApp:
        self.link.start()
        self.camera.start()
        if self.gnss is not None:
            self.gnss.start()
        self._spawn(self._sync_loop, "hh-sync")
        if self.cfg.scan_engine:
            self._spawn(self._engine_loop, "hh-scan-engine")
        if self.cfg.camera and self.cfg.camera_scan:
            self._spawn(self._camera_scan_loop, "hh-camera-scan")
        if self._start_ui is not None:
            self.web = self._start_ui(self)
        log.info("handheld %s started%s", self.cfg.device, f", UI at {self.web.url}" if self.web else "")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.web is not None:
            self.web.stop()
        for t in self._threads:
            t.join(3)
        self.camera.stop()
        if self.gnss is not None:
            self.gnss.stop()
        self.link.stop()
        self.outbox.close()
        self.photos.close()
        self.index.close()

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # ------------------------------------------------------------------ events
    def emit(self, etype: str, cls: str, body: dict[str, Any]) -> tuple[str, int]:
        """Build, encode and durably queue one event; returns (event id, outbox seq).
        Refused("outbox_full") when it cannot be stored: the action must not look done."""
        with self._emit_lock:
            eid = format_event_id(self.cfg.device, self.counter.incarnation, self.counter.next())
            env = envelope.make(eid, int(time.time()), etype, cls, body, self.counter.boot)
            data = envelope.encode(env)
            try:
                seq = self.outbox.append(cls, self.t_evt, data, eid, etype)
            except OutboxFull:
                raise Refused("outbox_full") from None
        self.link.wake()
        return eid, seq

    def delivered(self, seq: int) -> bool:
        return bool(seq) and not self.outbox.contains(seq)

    # ------------------------------------------------------------------ commands
    def handle_command(self, payload: bytes) -> str:
        """Verify a platform-signed command like the locker does, apply it, ack on ``ack``."""
        cmd_id = "?"
        try:
            probe = json.loads(payload)
            if isinstance(probe, dict) and isinstance(probe.get("id"), str):
                cmd_id = probe["id"][:32]
        except ValueError:
            pass
        try:
            if len(payload) > MAX_HANDHELD_COMMAND:
                raise OversizedPayload(f"command is {len(payload)} bytes, limit {MAX_HANDHELD_COMMAND}")
            cmd = signing.verify(loads_object(payload, "command"), self.cfg.keyring, self.cfg.device,
                                 int(time.time()), self.guard)
        except ProtocolError as e:
            log.warning("command %s refused: %s", cmd_id, e)
            self.last_command = {"id": cmd_id, "ok": False, "code": e.code, "at": time.time()}
            self._ack(cmd_id, e)
            return e.code
        # At most once: the replay window is on disk before the command takes effect.
        self.storage.write("replay", json.dumps(self.guard.state()).encode())
        op = cmd["op"]
        try:
            if op == "jobs":
                n = self.jobs.load_list(cmd["args"])
            elif op == "manifest":
                # Outbound points and groups are checked first: a bad manifest changes nothing.
                outbound = self.dispatch.parse_manifest(cmd["args"])
                n = self.flows.load_manifest(cmd["args"]) + self.dispatch.apply_manifest(outbound)
            else:
                raise LookupError(op)
        except LookupError:
            err = _AckError("unknown_op", f"op {op!r} is not for a handheld")
            self.last_command = {"id": cmd["id"], "op": op, "ok": False, "code": err.code, "at": time.time()}
            self._ack(cmd["id"], err)
            return err.code
        except (ValueError, TypeError) as e:
            err = _AckError("bad_args", str(e)[:200])
            self.last_command = {"id": cmd["id"], "op": op, "ok": False, "code": err.code, "at": time.time()}
            self._ack(cmd["id"], err)
            return err.code
        self.last_command = {"id": cmd["id"], "op": op, "ok": True, "at": time.time()}
        self._ack(cmd["id"], None, {"items": n})
        return "ok"

    def _ack(self, cmd_id: str, error: Any = None, result: dict[str, Any] | None = None) -> None:
        try:
            self.outbox.append("audit", self.t_ack, signing.ack(cmd_id, int(time.time()), error, result))
        except OutboxFull:
            log.error("ack for %s lost: outbox full", cmd_id)
        self.link.wake()

    # ------------------------------------------------------------------ scans
    def gnss_fix(self) -> dict[str, Any] | None:
        """The position for evidence: the NMEA receiver's or the browser's, each through
        its own gate (same thresholds); one that passes wins (the more accurate if both
        do), else the receiver's verdict with its reasons, else the browser's."""
        fixes = []
        if self.gnss is not None:
            fixes.append({**self.gnss.fix(), "source": "nmea"})
        if self.browser_pos is not None:
            b = self.browser_pos.fix()
            if b is not None:
                fixes.append(b)
        if not fixes:
            return None
        good = [f for f in fixes if f.get("ok")]
        if good:
            return min(good, key=lambda f: f.get("accuracy_m") or 1e9)
        return fixes[0]

    def scan(self, text: str, mode: str | None = None, source: str = "manual",
             at: float | None = None) -> dict[str, Any]:
        """One read from any source (the UI's field, the serial engine, a keyboard-wedge
        burst, the camera), dispatched by the screen's current use (mode). ``at``: the
        monotonic time it was read, when that was earlier (a wedge scan queued in the page)."""
        mode = mode or self.mode
        if mode not in MODES:
            raise Refused("bad_request", detail=f"mode {mode!r}")
        try:
            if mode == "check":
                route = self.flows.route() or None
                r = self.scans.judge(text, need_parcel=False, route=route, source=source, at=at)
                if r.verdict != "duplicate":
                    # the content only for a parcel id (protocol/scantrace.py)
                    self.emit("handheld.scan", "telemetry",
                              {"kind": "", **scantrace.trace(text, route), "verdict": r.verdict,
                               "reason": r.reason, "source": source})
                txt = TEXT.both("verdict." + r.verdict)
                if r.reason:
                    # A reason this handheld has no words for (e.g. a barcode rule's own
                    # code) is explained by the checker's detail.
                    key = "reason." + r.reason
                    why = TEXT.both(key) if TEXT.has(key) else \
                        {lang: barcode_words.detail_text(r.detail, lang) for lang in LANGS}
                    txt = {k: f"{txt[k]}：{why[k]}" if k == "zh" else f"{txt[k]}: {why[k]}" for k in txt}
                res: dict[str, Any] = {"ok": r.ok, "verdict": r.verdict, "value": r.value, "kind": r.kind,
                                       "reason": r.reason, **txt}
            elif mode == "intake":
                res = {**self.flows.intake(text, source, at), "verdict": "good"}
            elif mode == "deposit":
                res = {**self.flows.deposit(text, source, at), "verdict": "good"}
            elif mode == "collect":
                res = {**self.flows.collect(text, source, at), "verdict": "good"}
            elif mode == "bag":
                res = {**self.dispatch.bag_scan(text), "verdict": "good"}
            elif mode == "point":
                # at a village point: a parcel of the courier's own manifest is left there
                # (the handover list the agent confirms); anything else is collected from it
                if self._on_manifest(text):
                    res = {**self.dispatch.handover_add(self.flows, text), "verdict": "good"}
                else:
                    res = {**self.dispatch.point_collect(text), "verdict": "good"}
            else:  # deliver: check now, confirm with the recipient next
                r = self.scans.judge(text, route=self.flows.route(), source=source, at=at)
                if r.verdict != "good":
                    code = {"duplicate": "duplicate", "wrong_route": "wrong_route"}.get(
                        r.verdict, "not_parcel" if r.reason == "not_parcel" else "invalid_scan")
                    # a wrong-route read is named by flows.shown (its detail repeats the read)
                    detail = "" if r.verdict == "wrong_route" else Localized(
                        {lang: barcode_words.detail_text(r.detail, lang) for lang in LANGS})
                    raise Refused(code, detail=detail, parcel=self.flows.shown(text, r.value))
                res = {"ok": True, "verdict": "good", "parcel": r.value, "confirm": True,
                       **TEXT.both("verdict.good")}
        except Refused as e:
            res = {**e.as_dict(), "verdict": SCAN_VERDICT.get(e.code, "refused")}
        # What the screen (and /api/state) keeps of the read: the read itself only when it
        # is a parcel id or something this handheld accepted, else its length and sha8.
        tr = scantrace.trace(text, self.flows.known())
        accepted = bool(res.get("ok")) and mode in ("bag", "point")
        shown = text[:80] if "code" in tr or accepted else ""
        res.update(mode=mode, text=shown, at=time.time(), source=source)
        if not shown:
            res.update(length=tr["length"], sha8=tr["sha8"])
            if res.get("value") is not None:
                res["value"] = None
        self.last_scan = res
        return res

    # ------------------------------------------------------------------ background
    def _sync_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.flows.poll_commands()
            except Exception:  # noqa: BLE001 - background work never dies
                log.exception("command poll failed")
            try:
                self.photos.tick(self.link.connected)
            except Exception:  # noqa: BLE001
                log.exception("photo hand-off failed")

    def _engine_loop(self) -> None:
        """Serial scan engine (drivers/scanner), if this build has the driver."""
        try:
            from drivers.hal import host
            from drivers.scanner import engine
        except ImportError as e:
            self.scan_engine_status = f"driver missing: {e}"
            return

        async def run() -> None:
            while not self._stop.is_set():
                try:
                    eng = engine.connect(host, self.cfg.scan_engine_family, self.cfg.scan_engine, aim=True)
                except Exception as e:  # noqa: BLE001 - unplugged engine: retry
                    self.scan_engine_status = f"cannot open {self.cfg.scan_engine}: {e}"
                    await asyncio.sleep(2)
                    continue
                self.scan_engine_status = "ok"
                try:
                    while not self._stop.is_set():
                        s = await eng.read_scan(500)
                        if s:
                            text = (s.get("aim") or "") + s.get("text", "")
                            self.scan(text, source="engine")
                except Exception as e:  # noqa: BLE001
                    self.scan_engine_status = f"lost: {e}"
                    await asyncio.sleep(2)

        asyncio.run(run())

    def _on_manifest(self, text: str) -> bool:
        """Whether a read names a parcel of this handheld's manifest (any AIM prefix)."""
        v = barcodes.classify(str(text).strip())
        return bool(v["ok"]) and v["value"] in self.flows.known()

    def _camera_scan_loop(self) -> None:
        """Barcodes from the handheld's own camera: each new frame through
        :meth:`_frame_scans` with this loop's vote."""
        from handheld.voting import Voter

        voter = Voter(window=5, need=2)
        seen = -1
        while not self._stop.wait(0.05):
            if self.camera.frames == seen:
                continue
            seen = self.camera.frames
            img = self.camera.latest()
            if img is None:
                continue
            try:
                self._frame_scans(img, voter)
            except Exception as e:  # noqa: BLE001 - a bad frame is skipped, the loop goes on
                log.warning("camera decode failed: %r", e)

    def camera_frame(self, data: bytes) -> dict[str, Any]:
        """A frame from the browser's camera (the page's camera-scan mode): the same
        decoding and vote as the handheld camera's frames, with a vote of its own.
        ``reads``: codes seen in this frame; ``scan``: the verdict of the read the vote
        accepted with it, if any (what ``/api/scan`` answers)."""
        from handheld.voting import Voter

        try:
            img = _photo.decode_image(data)
            if max(img.shape[:2]) > MAX_SCAN_FRAME_PX:
                raise _photo.PhotoError("too_large", f"{img.shape[1]}x{img.shape[0]} px")
        except _photo.PhotoError as e:
            self.browser_frames_refused += 1
            raise Refused("camera_frame", detail=e.code) from e
        with self._browser_vote_lock:  # one frame at a time: the vote counts frames in order
            if self._browser_vote is None:
                self._browser_vote = Voter(window=5, need=2)
            reads, scans = self._frame_scans(img, self._browser_vote)
        self.browser_frames += 1
        return {"ok": True, "reads": reads, "scan": scans[-1] if scans else None}

    def _frame_scans(self, img: np.ndarray, voter: Any) -> tuple[int, list[dict[str, Any]]]:
        """Decode one frame (handheld/decode.py) and take each read as a scan from the
        ``camera`` source once it passes a check digit or 2 of the last 5 frames agree
        (handheld/voting.py), so a 1D misread from one blurred frame never counts.
        (codes in the frame, the verdicts of the scans taken)."""
        from handheld.decode import decode_image

        codes = decode_image(img)
        out: list[dict[str, Any]] = []
        for acc in voter.feed(codes):
            try:
                # With its AIM identifier, as from the engine: the symbology
                # decides what 13 digits are (protocol/barcodes.py).
                out.append(self.scan(acc.code.symbology + acc.code.text, source="camera"))
            except Refused as e:  # a refused scan is the UI's business: its answer is the verdict
                out.append(e.as_dict())
        return len(codes), out

    # ------------------------------------------------------------------ views
    def photo(self, job: str, step: str, data: bytes | None) -> dict[str, Any]:
        """An evidence photo from uploaded bytes or, with none, the camera's latest frame."""
        image: np.ndarray | bytes | None
        try:
            if data:
                image = data
            else:
                image = self.camera.latest()
                if image is None:
                    raise Refused("no_frame")
            return self.jobs.photo(job, step, image)
        except EvidenceRefused as e:
            out = e.as_dict()
            out["ok"] = False
            out["quality"] = e.detail.get("quality") if isinstance(e.detail, dict) else None
            return out
        except Refused as e:
            lp = self.jobs.last_photo or {}
            return {**e.as_dict(), "quality": lp.get("quality") if lp.get("job") == job else None}

    def state_doc(self) -> dict[str, Any]:
        """Retained ``state`` for the gateway's status page: what waits on this handheld."""
        ob = self.outbox.status()
        ph = self.photos.status()
        return {"v": 1, "ts": int(time.time()), "outbox": {"pending": ob["count"], "used": ob["bytes"],
                                                           "capacity": ob["capacity"]},
                "photos_waiting": ph["local_waiting"], "courier": self.cfg.courier}

    def status(self) -> dict[str, Any]:
        ob = self.outbox.status()
        fix = self.gnss_fix()
        return {
            "device": self.cfg.device, "courier": self.cfg.courier, "outlet": self.cfg.outlet,
            "link": {"connected": self.link.connected, "last_error": self.link.last_error,
                     "last_ack_at": self.link.last_ack_at, "inflight": self.link.inflight},
            "gateway_http": self.gateway.reachable,
            "outbox": ob, "photos": self.photos.status(),
            "camera": {"configured": bool(self.cfg.camera), "error": self.camera.error,
                       "frames": self.camera.frames, "quality": self.camera.quality},
            "gnss": None if fix is None else {k: fix.get(k) for k in ("ok", "lat", "lon", "accuracy_m",
                                                                       "flags", "messages", "source")},
            "geolocation": None if self.browser_pos is None else {
                "fixes": self.browser_pos.fixes, "error": self.browser_pos.error,
                "refused": dict(self.browser_pos.refused)},
            "scan_engine": self.scan_engine_status, "mode": self.mode, "last_scan": self.last_scan,
            "last_command": self.last_command, "last_photo": self.jobs.last_photo,
            "scan_counts": dict(self.scans.counts), "wedge": dict(self.wedge.counts),
            "browser_camera": {"frames": self.browser_frames, "refused": self.browser_frames_refused},
        }
