"""One photo of a bulletin board -> one evidence record, or a refusal the courier understands.

:func:`capture_evidence` runs the checks in the order that wastes least of the
courier's time: can we read the picture at all, is it good enough, do we know where
we are, are we at the site (``site=``: its position and tolerance; the platform's
review checks the same distance again), is it a copy. Each refusal is a typed
exception (:class:`EvidenceRefused` and subclasses) with a reason code, the
Simplified-Chinese and English text, and the details (quality metrics, GNSS flags,
matching photos, distance) the UI or a supervisor needs.

Durability ("nothing lost"): nothing is written for a refused photo, so bad input
cannot disturb what is already stored. An accepted photo is written JPEG first,
then its JSON record, then its index row, each file via write-to-temp + fsync +
rename; a power cut at any point leaves either no trace or complete files that a
retry re-indexes (``PhotoIndex.add`` is idempotent for the same bytes, job and step).

The record is the unit the upload queue carries to the gateway; it holds what a
reviewer at the regional centre needs to trust the photo without the handheld:
job/site/step, handheld time and receiver UTC, position with accuracy and its source,
both hashes, quality metrics, duplicate notes, device id.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common import logs
from common.durable import write_durable
from handheld import photo as _photo
from handheld import photo_index as _index
from handheld.photo import DEFAULT_QUALITY, PhotoError, QualityConfig
from handheld.position import NON_BLOCKING
from handheld.text import TEXT

log = logs.get(__name__)

SCHEMA = "postedge.evidence/1"

#: Where a reason code's text is, in the order codes are looked up: this module's
#: own, then the photo, duplicate and position modules'.
SOURCES = ("evidence.", "photo.", "photo_index.", "gnss.")


def _key(code: str) -> str:
    for prefix in SOURCES:
        if TEXT.has(prefix + code):
            return prefix + code
    raise KeyError(code)


def describe(code: str) -> dict[str, str]:
    """Bilingual text for any reason code of the photo, index, GNSS or evidence modules."""
    return {"code": code, **TEXT.both(_key(code), max_m=10)}


class EvidenceRefused(Exception):
    """A photo was not accepted as evidence.

    ``code`` is the headline reason, ``reasons`` every specific reason code, ``zh`` /
    ``en`` the full courier message, ``messages`` the per-reason texts, ``detail``
    the data behind the decision and ``retake`` whether a new photo fixes it (as
    opposed to waiting for a GNSS fix).
    """

    headline = "bad_input"
    retake = True

    def __init__(
        self, code: str, reasons: list[str] | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        self.code = code
        self.reasons = list(reasons) if reasons else [code]
        self.detail = detail or {}
        self.messages = [describe(r) for r in self.reasons]
        head = TEXT.both(_key(code))
        extra_zh = "；".join(m["zh"] for m in self.messages if m["code"] != code)
        extra_en = "; ".join(m["en"] for m in self.messages if m["code"] != code)
        self.zh = head["zh"] + (f"：{extra_zh}" if extra_zh else "")
        self.en = head["en"] + (f": {extra_en}" if extra_en else "")
        super().__init__(f"{code}: {self.en}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form for the UI and the local log."""
        return {
            "refused": type(self).__name__,
            "code": self.code,
            "reasons": self.reasons,
            "zh": self.zh,
            "en": self.en,
            "retake": self.retake,
            "messages": self.messages,
        }


class BadInputRefused(EvidenceRefused):
    """No readable picture: corrupt or non-image file, empty file, empty camera frame."""


class QualityRefused(EvidenceRefused):
    """The picture failed the quality gate (blurry, dark, overexposed, too small)."""


class PositionRefused(EvidenceRefused):
    """No trustworthy GNSS position yet; waiting (not retaking) fixes it."""

    retake = False


class FarRefused(EvidenceRefused):
    """Taken farther from the site than its tolerance: walk to the board and retake."""

    def __init__(self, code: str, reasons: list[str] | None = None,
                 detail: dict[str, Any] | None = None) -> None:
        super().__init__(code, reasons, detail)
        d = TEXT.both("evidence.far_detail", distance=self.detail.get("distance_m", "?"),
                      tolerance=self.detail.get("tolerance_m", "?"))
        self.zh += d["zh"]
        self.en += d["en"]

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "distance_m": self.detail.get("distance_m"),
                "tolerance_m": self.detail.get("tolerance_m")}


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine, mean Earth radius), degrees in."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(a)))


class DuplicateRefused(EvidenceRefused):
    """The photo is a copy of one already indexed (see :mod:`handheld.photo_index`)."""


class _HasFix(Protocol):
    def fix(self) -> dict[str, Any]: ...


def _load(frame_or_jpeg: np.ndarray | bytes | bytearray | str | Path | None) -> tuple[np.ndarray, str | None]:
    """Decoded BGR picture and, for file/bytes input, the SHA-256 of the bytes fed in."""
    if frame_or_jpeg is None or (
        isinstance(frame_or_jpeg, np.ndarray) and _photo.is_empty_frame(frame_or_jpeg)
    ):
        raise BadInputRefused("empty_frame")
    try:
        if isinstance(frame_or_jpeg, np.ndarray):
            return _photo._to_bgr(frame_or_jpeg), None
        if isinstance(frame_or_jpeg, str | Path):
            try:
                data = Path(frame_or_jpeg).read_bytes()
            except OSError as exc:
                raise PhotoError("not_an_image", f"cannot read file: {exc}") from exc
        elif isinstance(frame_or_jpeg, bytes | bytearray | memoryview):
            data = bytes(frame_or_jpeg)
        else:
            raise PhotoError("not_an_image", f"unsupported input {type(frame_or_jpeg).__name__}")
        return _photo.decode_image(data), (_photo.sha256_hex(data) if data else None)
    except PhotoError as exc:
        raise BadInputRefused(exc.code, detail={"detail": exc.detail}) from exc


def capture_evidence(
    frame_or_jpeg: np.ndarray | bytes | bytearray | str | Path | None,
    job: str,
    site: str,
    step: str,
    gnss: _HasFix | dict[str, Any] | None,
    index: _index.PhotoIndex,
    device: str,
    now: float | None = None,
    *,
    quality: QualityConfig = DEFAULT_QUALITY,
    max_side: int = 1600,
    jpeg_quality: int = 80,
    require_position: bool = True,
    store_dir: str | Path | None = None,
    near: tuple[float, float, float, bool] | None = None,
) -> dict[str, Any]:
    """Check, hash, index and describe one evidence photo; raise :class:`EvidenceRefused` if unusable.

    ``frame_or_jpeg``: a camera frame (BGR array), image bytes, or a file path.
    ``gnss``: a :class:`handheld.nmea.GnssReader` (anything with ``fix()``), a fix
    dict already taken, or None. ``now``: handheld UTC epoch seconds (defaults to the
    clock). ``require_position=False`` lets a supervisor-approved fallback through
    when no fix can be had (deep valley): the record then carries
    ``position_unverified`` instead of being refused.

    Returns the record (JSON-safe) plus ``"jpeg"``: the bytes to store and upload.
    With ``store_dir`` the JPEG and record are also written there as
    ``<sha256>.jpg`` / ``<sha256>.json`` before the photo is indexed.
    ``near``: (lat, lon, tolerance in metres, strict) of the site; a fix farther
    away refuses the photo (:class:`FarRefused`, ``far_from_site``) when strict
    (the platform gave the site its tolerance), else flags it ``far_unverified``
    for the review.
    """
    for name, value in (("job", job), ("site", site), ("step", step), ("device", device)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string")
    taken_at = time.time() if now is None else float(now)

    img, source_sha = _load(frame_or_jpeg)

    verdict = _photo.check_quality(img, quality)
    if not verdict["ok"]:
        log.info("evidence refused (quality) job=%s step=%s reasons=%s", job, step, verdict["reasons"])
        raise QualityRefused("photo_quality", verdict["reasons"], {"quality": verdict})

    flags: list[str] = []
    if gnss is None:
        fix: dict[str, Any] | None = None
    elif isinstance(gnss, dict):
        fix = dict(gnss)
    else:
        fix = gnss.fix()
    if fix is None or not fix.get("ok"):
        blocking = (
            ["no_receiver"]
            if fix is None
            else [f for f in fix.get("flags", []) if f not in NON_BLOCKING] or ["no_fix"]
        )
        if require_position:
            log.info("evidence refused (position) job=%s step=%s flags=%s", job, step, blocking)
            raise PositionRefused("position_not_ready", blocking, {"fix": fix})
        flags.append("position_unverified")
    if near is not None and fix is not None and fix.get("ok") and fix.get("lat") is not None:
        dist = distance_m(float(fix["lat"]), float(fix["lon"]), near[0], near[1])
        if dist > near[2] and not near[3]:
            flags.append("far_unverified")
        elif dist > near[2]:
            log.info("evidence refused (far) job=%s step=%s distance=%.0f m", job, step, dist)
            raise FarRefused("far_from_site", ["far_from_site"],
                             {"distance_m": round(dist), "tolerance_m": round(near[2])})

    jpeg = _photo.prepare(img, max_side=max_side, quality=jpeg_quality)
    sha = _photo.sha256_hex(jpeg)
    stored = _photo.decode_image(jpeg)  # hash what is kept, so a reviewer can recompute it
    ph = _photo.phash(stored)
    decision = index.check(sha, ph, job, site, step, taken_at, source_sha256=source_sha)
    if decision["action"] == "refuse":
        log.info("evidence refused (duplicate) job=%s step=%s code=%s", job, step, decision["code"])
        raise DuplicateRefused(decision["code"], [decision["code"]], {"duplicate": decision})
    flags.extend(decision["flags"])

    record_id = f"ev-{sha[:24]}"
    position = None
    if fix is not None:
        position = {
            k: fix.get(k)
            for k in (
                "lat",
                "lon",
                "alt_m",
                "accuracy_m",
                "accuracy_source",
                "estimated",
                "accuracy_held_s",
                "fix_age_s",
                "sats",
                "hdop",
                "fix_type",
                "quality",
                "gnss_utc",
                "clock_skew_s",
                "ok",
            )
        }
        position["flags"] = list(fix.get("flags", []))
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "record_id": record_id,
        "job": job,
        "site": site,
        "step": step,
        "device": device,
        "taken_at": taken_at,
        "taken_at_iso": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(taken_at))
        + f".{int(taken_at % 1 * 1000):03d}Z",
        "position": position,
        "photo": {
            "sha256": sha,
            "phash": _photo.phash_hex(ph),
            "source_sha256": source_sha,
            "width": int(stored.shape[1]),
            "height": int(stored.shape[0]),
            "bytes": len(jpeg),
            "jpeg_quality": jpeg_quality,
            "max_side": max_side,
        },
        "quality": verdict["metrics"],
        "duplicate": {
            "action": decision["action"],
            "flags": decision["flags"],
            "matches": decision["matches"],
        },
        "flags": flags,
        "messages": [describe(f) for f in flags],
    }
    if store_dir is not None:
        folder = Path(store_dir)
        folder.mkdir(parents=True, exist_ok=True)
        write_durable(folder / f"{sha}.jpg", jpeg)
        write_durable(folder / f"{sha}.json", json.dumps(record, ensure_ascii=False, sort_keys=True).encode())
        record["file"] = str(folder / f"{sha}.jpg")
    index.add(
        sha,
        ph,
        job,
        site,
        step,
        taken_at,
        source_sha256=source_sha,
        device=device,
        record_id=record_id,
        flags=flags,
    )
    log.info("evidence accepted %s job=%s site=%s step=%s flags=%s", record_id, job, site, step, flags)
    record["jpeg"] = jpeg
    return record
