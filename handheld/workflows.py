"""Parcel workflows on the handheld: intake, locker deposit, hand delivery, collection.

Every step is a ``custody`` event queued in the outbox first, so it is recorded even
with no gateway in reach and sent when the link comes back.

The manifest arrives as a platform-signed command (op ``manifest``)::

    {"round": "r-0501",
     "parcels": [{"parcel": "RB123456785GB", "to": "Li Wei, Xiakou 3", "size": "M",
                  "locker": "lk01", "permit": {<deposit permit, signed with lk01's key>},
                  "token_salt": "<hex>", "token_hash": "<hex>"}],
     "retrieval": [{"parcel": "...", "locker": "lk01", "reason": "overdue",
                    "permit": {<retrieve permit, signed with lk01's key>}}]}

**Locker deposit through the gateway.** The handheld holds no key any locker accepts
(only its own, for commands to itself); the platform issues *permits* in advance
(``protocol/permits.py``: signed with the one locker's own key, bound to one parcel,
courier and this handheld, valid for hours).
Scanning a manifest parcel at the locker queues ``handheld.deposit_requested`` and
``handheld.forward_command`` (``{"kind": "locker", "cmd": <permit>}``); the gateway
enqueues the embedded permit for the locker (it forwards nothing from a handheld but
permits it carries), which verifies the signature with its own key, opens a fitting
compartment and registers the deposit when the door closes. The handheld learns the
outcome by polling ``GET /v1/commands/<id>`` on the gateway (:class:`GatewayClient`);
a 404 means "not there yet" (the forward event may still be in the outbox, or the
gateway may predate the API), never a failure.

**Hand delivery** needs the recipient's confirmation: the delivery token from their
notice (``PE-H:XXXX-XXXX-XXXX-XXXX``, shown as a QR code; 80 random bits, checked
offline against the salted hash in the manifest, never recorded in plain), the
recipient's name, or a signature drawn on the page's pad (its PNG stored as a JPEG on
white, queued for upload like an evidence photo; the event names the JPEG's SHA-256,
so the platform links the two). The handheld never holds anything of the 6-digit locker
pickup code: its salted hash would give the code back in seconds to whoever holds the
handheld (``code_salt``/``code_hash`` from an older platform are dropped on arrival and
from an older ``parcels.json``; docs/security.md, bench/code_secrecy.py).

**Village points.** A manifest parcel may name the village point it goes to
(``"point": "vp-xiakou"``); the courier leaves it there in a handover the point's agent
confirms (``handheld/dispatch.py``). It is then ``at_point``: never handed over, delivered
or deposited again (:meth:`ParcelFlows.leave_at_point`).

**Collection** of returns and overdue parcels follows the locker's retrieval list as
the platform sent it; a parcel not on it is a wrong-route scan.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common import logs
from common.durable import write_durable
from common.text import Localized
from handheld.jobs import PhotoSink, atomic_json, read_json
from handheld.scanning import ScanFilter, ScanResult
from handheld.text import TEXT, Refused
from protocol import barcodes, scantrace
from protocol.codes import matches as code_matches
from protocol.codes import normalize_token

log = logs.get(__name__)

Emit = Callable[[str, str, dict[str, Any]], tuple[str, int]]
CODE_TRIES = 5
# Verifiers of the 6-digit locker code: a handheld must not keep them (see above).
WEAK_FIELDS = ("code", "code_salt", "code_hash")


def _state(state: str) -> Localized:
    """A parcel's state as the courier reads it ("已入柜"), in each language,
    for a sentence that names it; a state this version has no word for, as it is."""
    key = f"pstate.{state}"
    return Localized(TEXT.both(key) if TEXT.has(key) else {"zh": state, "en": state})


def _without_weak(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in WEAK_FIELDS}
FINAL = ("acked", "refused", "expired")
#: States in which a manifest parcel is still the courier's to hand over at a village point.
HANDABLE = ("on_route", "deposit_refused")


class GatewayClient:
    """The gateway's HTTP API, as far as the handheld needs it. Short timeouts: the courier waits."""

    def __init__(self, base_url: str, timeout: float = 3.0, username: str = "", password: str = "",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``: HTTPS trusting the outlet CA alone (``handheld/tls.py``)."""
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.ssl_context = ssl_context
        # The gateway answers only the handheld that forwarded the command (HTTP Basic, broker login).
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.auth = f"Basic {token}" if username else ""
        self.reachable: bool | None = None
        self.last_error: str | None = None

    def command_status(self, cmd_id: str) -> dict[str, Any] | None:
        """The command's record, or None if the gateway does not know it (404). Raises OSError if
        the gateway cannot be reached."""
        url = f"{self.base}/v1/commands/{urllib.request.quote(cmd_id, safe='')}"
        try:
            req = urllib.request.Request(url, headers={"Authorization": self.auth} if self.auth else {})
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl_context) as r:
                doc = json.loads(r.read().decode("utf-8"))
            self.reachable = True
            return doc if isinstance(doc, dict) else None
        except urllib.error.HTTPError as e:
            self.reachable = True
            if e.code == 404:
                return None
            raise OSError(f"gateway answered {e.code} for {url}") from None
        except (urllib.error.URLError, TimeoutError, ValueError, OSError) as e:
            self.reachable = False
            self.last_error = str(e)
            raise OSError(f"gateway unreachable: {e}") from None


class ParcelFlows:
    def __init__(self, state_dir: Path, courier: str, outlet: str, emit: Emit, scans: ScanFilter,
                 gateway: GatewayClient, photos: PhotoSink, now: Callable[[], float] = time.time) -> None:
        self.path = state_dir / "parcels.json"
        self.sig_dir = state_dir / "signatures"
        self.courier = courier
        self.outlet = outlet
        self.emit = emit
        self.scans = scans
        self.gateway = gateway
        self.photos = photos
        self.now = now
        self._lock = threading.RLock()
        self.state: dict[str, Any] = read_json(self.path, {"round": None, "parcels": {}, "order": [],
                                                            "retrieval": {}, "commands": {},
                                                            "intake": [], "tries": {}})
        dropped = [k for k, p in self.state["parcels"].items()
                   if isinstance(p.get("def"), dict) and set(WEAK_FIELDS) & set(p["def"])]
        if dropped:
            for k in dropped:
                self.state["parcels"][k]["def"] = _without_weak(self.state["parcels"][k]["def"])
            self._save()
            log.warning("dropped locker-code verifiers of %d parcels from parcels.json", len(dropped))

    def _save(self) -> None:
        atomic_json(self.path, self.state)

    # ------------------------------------------------------------------ manifest
    def load_manifest(self, args: dict[str, Any]) -> int:
        parcels = args.get("parcels", [])
        retrieval = args.get("retrieval", [])
        if not isinstance(parcels, list) or not isinstance(retrieval, list):
            raise ValueError("args.parcels and args.retrieval must be lists")
        with self._lock:
            old = self.state["parcels"]
            new: dict[str, Any] = {}
            for p in parcels:
                if not isinstance(p, dict) or not isinstance(p.get("parcel"), str):
                    raise ValueError("each manifest entry needs a parcel id")
                prev = old.get(p["parcel"])
                if set(WEAK_FIELDS) & set(p):
                    log.warning("manifest carries a locker-code verifier for %s: dropped", p["parcel"])
                new[p["parcel"]] = {"def": _without_weak(p), "state": prev["state"] if prev else "on_route"}
            ret: dict[str, Any] = {}
            for r in retrieval:
                if not isinstance(r, dict) or not isinstance(r.get("parcel"), str):
                    raise ValueError("each retrieval entry needs a parcel id")
                prev = self.state["retrieval"].get(r["parcel"])
                ret[r["parcel"]] = {"def": r, "state": prev["state"] if prev else "waiting"}
            # when the permits arrived: the UI says how old they are (a courier out of reach for days)
            self.state.update(round=args.get("round"), parcels=new, order=list(new), retrieval=ret,
                              received=int(self.now()))
            self._save()
            return len(new) + len(ret)

    def route(self) -> set[str]:
        return set(self.state["parcels"])

    def _scan(self, text: str, route: set[str] | None, source: str, at: float | None = None) -> ScanResult:
        r = self.scans.judge(text, route=route, source=source, at=at)
        if r.verdict == "good" and route is None and not scantrace.keeps_content(text):
            # Taken into custody with no list to check against (intake), the id is recorded:
            # 18 bare digits called an SSCC are as likely a payment code or an ID number
            # (protocol/scantrace.py), so only an SSCC with its AI (00) is taken.
            self.emit("handheld.scan", "telemetry", {"kind": r.kind or "", **scantrace.trace(text),
                                                     "verdict": "invalid", "reason": "bare_sscc",
                                                     "source": source})
            raise Refused("bare_sscc")
        if r.verdict == "good":
            self.emit("handheld.scan", "telemetry", {"kind": r.kind or "",
                                                     **scantrace.trace(text, self.known()),
                                                     "verdict": r.verdict, "source": source})
            return r
        if r.verdict == "duplicate":
            raise Refused("duplicate")
        # Not a parcel id for here: the content only if it is a parcel id at all (a payment
        # code, an ID number scanned by mistake leave their length and sha8 alone:
        # protocol/scantrace.py).
        self.emit("handheld.scan", "telemetry", {"kind": "", **scantrace.trace(text, self.known()),
                                                 "verdict": r.verdict, "reason": r.reason, "source": source})
        if r.verdict == "invalid":
            if r.reason == "not_parcel":
                raise Refused("not_parcel")
            raise Refused("invalid_scan", detail=r.detail)
        raise Refused("wrong_route", parcel=self.shown(text, r.value))

    def known(self) -> set[str]:
        """The ids the platform named for this handheld: its manifest and retrieval list."""
        with self._lock:
            return set(self.state["parcels"]) | set(self.state["retrieval"])

    def shown(self, text: str, value: str | None) -> str:
        """A refused read as the screen may name it: the id if it is a parcel id, else
        ``#`` and its sha8 (the courier sees which read it was; its content stays here)."""
        tr = scantrace.trace(text, self.known())
        return str(tr["code"]) if "code" in tr else "#" + str(tr["sha8"])

    # ------------------------------------------------------------------ flows
    def intake(self, text: str, source: str = "manual", at: float | None = None) -> dict[str, Any]:
        """A parcel taken into custody at the outlet (no route check: it has just arrived)."""
        with self._lock:
            r = self._scan(text, None, source, at)
            eid, _ = self.emit("handheld.intake", "custody", {"parcel": r.value, "kind": r.kind,
                                                              "outlet": self.outlet, "courier": self.courier})
            self.state["intake"] = (self.state["intake"] + [{"parcel": r.value, "at": int(self.now()),
                                                              "event": eid}])[-50:]
            self._save()
            return {"ok": True, "parcel": r.value, **TEXT.both("ok.intake", parcel=r.value)}

    def deposit(self, text: str, source: str = "manual", at: float | None = None) -> dict[str, Any]:
        with self._lock:
            r = self._scan(text, self.route(), source, at)
            p = self.state["parcels"][r.value]
            if p["state"] not in ("on_route", "deposit_refused"):
                raise Refused("already_done", parcel=r.value, state=_state(p["state"]))
            permit = p["def"].get("permit")
            if not isinstance(permit, dict) or not isinstance(permit.get("id"), str):
                raise Refused("no_permit", parcel=r.value)
            if isinstance(permit.get("exp"), int) and permit["exp"] <= self.now():
                raise Refused("permit_expired")
            locker = str(permit.get("dev", p["def"].get("locker", "")))
            size = str(permit.get("args", {}).get("size", p["def"].get("size", "")))
            self.emit("handheld.deposit_requested", "custody",
                      {"parcel": r.value, "locker": locker, "size": size, "cmd": permit["id"],
                       "courier": self.courier})
            self.emit("handheld.forward_command", "custody", {"kind": "locker", "cmd": permit})
            p["state"] = "deposit_requested"
            p["cmd"] = permit["id"]
            self.state["commands"][permit["id"]] = {"parcel": r.value, "locker": locker, "status": "queued",
                                                    "for": "deposit", "at": int(self.now())}
            self._save()
            return {"ok": True, "parcel": r.value, "cmd": permit["id"],
                    **TEXT.both("ok.deposit", parcel=r.value, locker=locker, size=size)}

    def hand_delivery(self, text: str, method: str, value: str, source: str = "manual") -> dict[str, Any]:
        with self._lock:
            if method not in ("code", "name", "signature"):
                raise Refused("bad_method")
            # Scan check without the duplicate windows: the courier scanned it a moment
            # ago and is now confirming, so the same symbol again is expected.
            with self.scans.confirming(text):
                r = self._scan(text, self.route(), source)
            p = self.state["parcels"][r.value]
            if p["state"] in ("delivered", "deposited", "deposit_requested", "at_point"):
                raise Refused("already_done", parcel=r.value, state=_state(p["state"]))
            body: dict[str, Any] = {"parcel": r.value, "method": method, "courier": self.courier}
            if method == "code":
                salt, h = p["def"].get("token_salt"), p["def"].get("token_hash")
                if not salt or not h:
                    raise Refused("no_code_on_file")
                tries = self.state["tries"].get(r.value, 0)
                if tries >= CODE_TRIES:
                    raise Refused("too_many_tries")
                token = normalize_token(str(value))
                if token is None:
                    # Not a guess at the token, so no try is counted.
                    typed = str(value).strip()
                    if len(typed) == 6 and typed.isdigit():
                        raise Refused("locker_code_given")
                    raise Refused("not_a_token")
                if not code_matches(salt, h, token):
                    self.state["tries"][r.value] = tries + 1
                    self._save()
                    left = CODE_TRIES - tries - 1
                    if left <= 0:
                        raise Refused("too_many_tries")
                    raise Refused("wrong_code", left=left)
                body["verified"] = True
            elif method == "name":
                name = str(value).strip()
                if not 0 < len(name) <= 40:
                    raise Refused("bad_name")
                body["name"] = name
            else:
                sig = self.store_signature(value)
                body["signature_sha256"] = sig["sha256"]
            eid, _ = self.emit("handheld.hand_delivery", "custody", body)
            if method == "signature":
                self.queue_signature(sig, eid, parcel=r.value)
            p["state"] = "delivered"
            p["event"] = eid
            self._save()
            return {"ok": True, "parcel": r.value, **TEXT.both("ok.delivered", parcel=r.value)}

    def collect(self, text: str, source: str = "manual", at: float | None = None) -> dict[str, Any]:
        with self._lock:
            r = self._scan(text, set(self.state["retrieval"]), source, at)
            entry = self.state["retrieval"][r.value]
            if entry["state"] == "collected":
                raise Refused("already_done", parcel=r.value, state=_state("collected"))
            d = entry["def"]
            body = {"parcel": r.value, "locker": d.get("locker", ""), "reason": d.get("reason", ""),
                    "courier": self.courier}
            permit = d.get("permit")
            if isinstance(permit, dict) and isinstance(permit.get("id"), str):
                body["cmd"] = permit["id"]
                self.emit("handheld.forward_command", "custody", {"kind": "locker", "cmd": permit})
                self.state["commands"][permit["id"]] = {"parcel": r.value, "locker": d.get("locker", ""),
                                                        "status": "queued", "for": "collect",
                                                        "at": int(self.now())}
            self.emit("handheld.collect", "custody", body)
            entry["state"] = "collected"
            self._save()
            return {"ok": True, "parcel": r.value, **TEXT.both("ok.collected", parcel=r.value)}

    # ------------------------------------------------------------------ signatures
    def store_signature(self, value: str) -> dict[str, Any]:
        """The pad's PNG as a JPEG on white (the photos' format: the uploader and the
        gateway take JPEG alone), on disk before the event that names it."""
        jpeg, w, h = signature_jpeg(value)
        sha = hashlib.sha256(jpeg).hexdigest()
        self.sig_dir.mkdir(parents=True, exist_ok=True)
        path = self.sig_dir / f"{sha}.jpg"
        write_durable(path, jpeg)
        return {"path": path, "sha256": sha, "w": w, "h": h, "bytes": len(jpeg)}

    def queue_signature(self, sig: dict[str, Any], event_id: str, **about: Any) -> None:
        """Queued for upload like an evidence photo; the platform links the two by sha256."""
        self.photos.add(sig["path"], {"kind": "signature", **about, "sha256": sig["sha256"],
                                      "event_id": event_id, "courier": self.courier, "w": sig["w"],
                                      "h": sig["h"], "bytes": sig["bytes"], "taken_at": int(self.now())})

    # ------------------------------------------------------------------ village points
    def for_point(self, text: str) -> str:
        """The manifest parcel a scan (or a tap on the list) names, if it can still be
        left at a village point: on the courier's list and not delivered, in a locker
        or at a point already. Refused otherwise."""
        t = str(text).strip()
        v = barcodes.classify(t)
        pid = v["value"] if v["ok"] and v["kind"] in barcodes.PARCEL_KINDS else t
        with self._lock:
            p = self.state["parcels"].get(pid)
            if p is None:
                raise Refused("wrong_route", parcel=self.shown(t, pid if v["ok"] else None))
            if p["state"] not in HANDABLE:
                raise Refused("already_done", parcel=pid, state=_state(p["state"]))
            return pid

    def point_bound(self, point: str) -> list[str]:
        """Manifest parcels the platform routed to ``point`` (their ``point`` field) that
        are still with the courier."""
        with self._lock:
            return [pid for pid in self.state["order"]
                    if self.state["parcels"][pid]["def"].get("point") == point
                    and self.state["parcels"][pid]["state"] in HANDABLE]

    def leave_at_point(self, parcels: list[str], point: str, event_id: str) -> None:
        """The parcels are the point's now (its agent confirmed): off the courier's list of
        things to hand over or deliver. Every one is checked before any changes."""
        with self._lock:
            for pid in parcels:
                self.for_point(pid)
            for pid in parcels:
                p = self.state["parcels"][pid]
                p.update(state="at_point", point=point, event=event_id)
            self._save()

    # ------------------------------------------------------------------ outcomes
    def poll_commands(self) -> int:
        """Ask the gateway about forwarded commands not yet final; returns how many changed.
        Unreachable gateway: nothing changes, the caller retries later."""
        with self._lock:
            todo = [cid for cid, c in self.state["commands"].items() if c["status"] not in FINAL]
        changed = 0
        for cid in todo:
            try:
                doc = self.gateway.command_status(cid)
            except OSError:
                return changed
            status = "unknown" if doc is None else str(doc.get("status", "unknown"))
            with self._lock:
                c = self.state["commands"][cid]
                if status == c["status"]:
                    continue
                c["status"] = status
                changed += 1
                p = self.state["parcels"].get(c["parcel"])
                if status in FINAL:
                    ack = (doc or {}).get("ack") or {}
                    self.emit("handheld.command_result", "audit",
                              {"cmd": cid, "parcel": c["parcel"], "locker": c["locker"], "status": status,
                               "code": str(ack.get("code", ""))[:32]})
                    if p is not None and c["for"] == "deposit":
                        p["state"] = "deposited" if status == "acked" else "deposit_refused"
                    # the locker's answer names the compartment it opened (firmware/locker)
                    res = ack.get("result") if isinstance(ack.get("result"), dict) else {}
                    if status == "acked" and isinstance(res.get("compartment"), int):
                        c["compartment"] = res["compartment"]
                self._save()
        return changed

    def view(self) -> dict[str, Any]:
        with self._lock:
            cmds = self.state["commands"]
            parcels = []
            for pid in self.state["order"]:
                p = self.state["parcels"][pid]
                d = p["def"]
                parcels.append({"parcel": pid, "to": d.get("to", ""), "size": d.get("size", ""),
                                "locker": d.get("locker", ""), "state": p["state"],
                                "permit": isinstance(d.get("permit"), dict),
                                "cmd_status": cmds.get(p.get("cmd", ""), {}).get("status"),
                                "compartment": cmds.get(p.get("cmd", ""), {}).get("compartment")})
            retrieval = [{"parcel": k, "locker": v["def"].get("locker", ""),
                          "reason": v["def"].get("reason", ""), "state": v["state"]}
                         for k, v in self.state["retrieval"].items()]
            return {"round": self.state["round"], "parcels": parcels, "retrieval": retrieval,
                    "intake": list(self.state["intake"][-10:]), "received": self.state.get("received")}


#: A pad with less ink than this (dark pixels, as a share of the pad) is empty: a tap,
#: a slip of the glove. A short name written across a 340x180 pad is 1-3 %.
MIN_INK = 0.002
#: The long side of the stored JPEG: a pad on a 3x screen is ~1000 px; more says nothing.
MAX_SIDE = 1200
#: The gateway takes photos from 64 px on a side (gateway/http/uploads.py).
MIN_SIDE = 64


def _signature_png(value: str) -> bytes:
    """A drawn signature from the page's canvas: a ``data:image/png;base64,...`` URL."""
    if not isinstance(value, str) or not value.startswith("data:image/png;base64,"):
        raise Refused("bad_signature")
    try:
        png = base64.b64decode(value.split(",", 1)[1], validate=True)
    except (ValueError, base64.binascii.Error):
        raise Refused("bad_signature") from None
    if not png.startswith(b"\x89PNG\r\n\x1a\n") or not 100 <= len(png) <= 512 * 1024:
        raise Refused("bad_signature")
    return png


def signature_jpeg(value: str, quality: int = 85) -> tuple[bytes, int, int]:
    """The page's signature PNG as ``(jpeg, width, height)``: transparency composed onto
    white (a canvas left transparent would turn black in a JPEG), the long side at most
    ``MAX_SIDE``, encoded with OpenCV like the evidence photos (handheld/photo.py).
    Refused("bad_signature") for what is not a pad's PNG, ("empty_signature") for a pad
    with almost no ink."""
    png = _signature_png(value)
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim not in (2, 3) or min(img.shape[:2]) < MIN_SIDE:
        raise Refused("bad_signature")
    if img.dtype != np.uint8:
        img = (img / 257).astype(np.uint8) if img.dtype == np.uint16 else None
        if img is None:
            raise Refused("bad_signature")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        img = (img[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    elif img.shape[2] != 3:
        raise Refused("bad_signature")
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if float(np.count_nonzero(gray < 128)) / gray.size < MIN_INK:
        raise Refused("empty_signature")
    h, w = img.shape[:2]
    if max(h, w) > MAX_SIDE:
        k = MAX_SIDE / max(h, w)
        img = cv2.resize(img, (max(MIN_SIDE, round(w * k)), max(MIN_SIDE, round(h * k))),
                         interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise Refused("bad_signature")
    return bytes(buf), w, h
