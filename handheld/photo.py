"""Photo evidence: camera capture, quality gate, resize + JPEG, content and perceptual hashes.

Couriers photograph village bulletin boards as proof of an install or a maintenance
visit. The photo is useless as evidence if nobody can read the board, so every frame
passes a quality gate *on the handheld*, while the courier still stands in front of
the board and a retake costs ten seconds instead of another trip:

* **sharpness** - variance of the Laplacian, measured on a copy downscaled to a fixed
  long side (:data:`SHARPNESS_LONG_SIDE`). Downscaling first makes the number
  comparable between a 13 MP phone and a 2 MP handheld camera: the raw Laplacian
  variance of a large sharp image is dominated by sensor noise and grows with
  resolution, while at a fixed size it measures edge contrast at the scale a
  reviewer actually looks at.
* **exposure** - fraction of pixels clipped to black or to white. Clipped pixels carry
  no information; a board in deep shade or a poster washed out by the noon sun both
  fail. The mean luma is a second guard for frames that are dark/bright overall
  without hard clipping (a cheap sensor's black level sits above 0).
* **resolution** - the poster's small print must stay legible after the long-side cap.

A failed gate returns reason codes; each code has a courier message in Simplified
Chinese and English (``photo.<code>`` in ``handheld/text.toml``) and the UI offers a
retake.

Accepted frames are resized (long side capped, default 1600 px, enough to read A4
print on a board at 2 m) and JPEG-encoded at quality 80: about 250-500 kB, which
uploads over a weak 2G/3G link in reasonable time and is visually lossless for text.

Hashes: SHA-256 of the stored JPEG bytes catches a file submitted twice; a 64-bit DCT
perceptual hash (pHash) catches the same picture re-encoded, resized, slightly cropped
or brightened (see :mod:`handheld.photo_index` for the refusal rule).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from handheld.text import TEXT

#: Long side, in pixels, of the copy on which sharpness is measured.
SHARPNESS_LONG_SIDE = 640

#: Luma at or below this counts as clipped black; at or above CLIP_HIGH as clipped white.
CLIP_LOW = 8
CLIP_HIGH = 250

def messages(codes: Iterable[str], prefix: str = "photo.") -> list[dict[str, str]]:
    """Both languages for each reason code, in order (``prefix`` + code keys the catalogue):
    the UI shows whichever the courier reads."""
    return [{"code": code, **TEXT.both(prefix + code)} for code in codes]


class PhotoError(Exception):
    """A photo could not be obtained or read; ``code`` keys ``photo.<code>`` in the catalogue.

    Raised for hardware and input faults (no camera, empty frame, corrupt file), which
    differ from a quality verdict: there is no picture to judge at all.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        text = TEXT.both("photo." + code)
        self.zh = text["zh"]
        self.en = text["en"]
        super().__init__(f"{code}: {self.en}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality gate.

    Defaults were set on synthetic boards (tests/handheld/test_handheld_photo.py) and sanity
    checked against the usual field values: a sharp outdoor photo at 640 px long side
    scores several hundred to thousands; hand-shake blur drops it under 100, which is
    also the threshold most Laplacian-variance blur detectors use at that scale.
    """

    min_sharpness: float = 100.0
    #: Detail along one direction below this fraction of the perpendicular one = smeared
    #: one way (camera shake). Sharp boards score 0.85-0.95; a 7-9 px smear at 1600 px
    #: drops under 0.3.
    min_directional_ratio: float = 0.30
    #: More than this fraction of clipped-black (clipped-white) pixels fails the gate.
    max_dark_fraction: float = 0.30
    max_bright_fraction: float = 0.30
    #: Mean luma guards for frames dark/bright overall without hard clipping.
    min_mean_luma: float = 40.0
    max_mean_luma: float = 225.0
    #: 1280x720 (a 720p camera) is the smallest frame on which A4 print on a board is legible.
    min_long_side: int = 1280
    min_short_side: int = 720


DEFAULT_QUALITY = QualityConfig()


def _to_bgr(img: np.ndarray) -> np.ndarray:
    """Normalise gray / BGRA / 16-bit frames to 8-bit BGR so every later step sees one format."""
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            img = np.clip(img * (255.0 if float(np.nanmax(img)) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        else:
            img = cv2.convertScaleAbs(img, alpha=255.0 / max(1.0, float(np.iinfo(img.dtype).max)))
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise PhotoError("not_an_image", f"unsupported array shape {img.shape}")


def is_empty_frame(img: object) -> bool:
    """True for what cameras hand back when they fail: None, a 0-size array, a non-array."""
    return not isinstance(img, np.ndarray) or img.size == 0 or img.ndim < 2 or min(img.shape[:2]) == 0


def decode_image(data: bytes | bytearray | memoryview | str | Path) -> np.ndarray:
    """Decode image bytes (or a file path) to BGR, raising :class:`PhotoError` with a reason code.

    OpenCV's ``imdecode`` returns None for anything it cannot parse, and can return a
    partial picture for a truncated JPEG; both are refused here with ``not_an_image``
    only in the first case - a truncated JPEG that still decodes is judged by the gate.
    """
    if isinstance(data, str | Path):
        try:
            data = Path(data).read_bytes()
        except OSError as exc:
            raise PhotoError("not_an_image", f"cannot read file: {exc}") from exc
    buf = bytes(data)
    if not buf:
        raise PhotoError("empty_file")
    arr = np.frombuffer(buf, dtype=np.uint8)
    try:
        img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # some codecs raise rather than return None
        raise PhotoError("not_an_image", str(exc).strip().splitlines()[-1][:200]) from exc
    if img is None or is_empty_frame(img):
        raise PhotoError("not_an_image", f"{len(buf)} bytes, not a decodable image")
    return img


def capture_frame(
    source: int | str | cv2.VideoCapture,
    *,
    width: int | None = 1920,
    height: int | None = 1080,
    warmup: int = 2,
    retries: int = 3,
) -> np.ndarray:
    """Grab one frame from a camera (device index, URL, file, or an open ``VideoCapture``).

    ``warmup`` frames are dropped first because many webcams and phone sensors deliver
    dark, unexposed frames until auto-exposure settles. A camera that cannot be opened
    raises ``camera_unavailable``; one that opens but keeps returning nothing (USB
    unplugged mid-session, driver stall, end of a file) raises ``empty_frame`` after
    ``retries`` attempts. A capture object passed in is left open; one opened here is
    released.
    """
    own = not isinstance(source, cv2.VideoCapture)
    cap = cv2.VideoCapture(source) if own else source
    try:
        if not cap.isOpened():
            raise PhotoError("camera_unavailable", f"source {source!r} did not open")
        if own and isinstance(source, int):
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        for _ in range(max(0, warmup)):
            if not cap.grab():
                break
        for _ in range(max(1, retries)):
            try:
                ok, frame = cap.read()
            except cv2.error as exc:
                raise PhotoError("empty_frame", str(exc).strip().splitlines()[-1][:200]) from exc
            if ok and not is_empty_frame(frame):
                return _to_bgr(frame)
        raise PhotoError("empty_frame", f"no frame after {retries} reads")
    finally:
        if own:
            cap.release()


def _gray(img: np.ndarray) -> np.ndarray:
    bgr = _to_bgr(img)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def sharpness(img: np.ndarray, long_side: int = SHARPNESS_LONG_SIDE) -> float:
    """Variance of the Laplacian on a copy resized to ``long_side``: a resolution-independent blur score."""
    gray = _gray(img)
    h, w = gray.shape
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(gray, size, interpolation=interp)
    return float(cv2.Laplacian(small, cv2.CV_64F).var())


_DIRECTIONAL_KERNELS = (
    np.array([[0, 0, 0], [1, -2, 1], [0, 0, 0]], np.float32),  # along x
    np.array([[0, 1, 0], [0, -2, 0], [0, 1, 0]], np.float32),  # along y
    np.array([[1, 0, 0], [0, -2, 0], [0, 0, 1]], np.float32),  # along the diagonal
    np.array([[0, 0, 1], [0, -2, 0], [1, 0, 0]], np.float32),  # along the anti-diagonal
)


def directional_sharpness(img: np.ndarray, long_side: int = SHARPNESS_LONG_SIDE) -> tuple[float, float]:
    """(weakest direction's detail, its ratio to the perpendicular direction).

    Detail = variance of the second derivative along 0/90 and 45/135 degrees. The
    Laplacian sums both axes, so a hand shaken sideways keeps a good score from the
    edges parallel to the motion. Motion blur kills detail along one direction only,
    which shows as that direction being weak *next to its perpendicular*; comparing
    perpendicular pairs (not all four) keeps the test fair for scenes that are
    naturally rich in horizontal/vertical edges, like a notice board.
    """
    gray = _gray(img)
    h, w = gray.shape
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    small = small.astype(np.float32)
    xx, yy, d1, d2 = (float(cv2.filter2D(small, cv2.CV_32F, k).var()) for k in _DIRECTIONAL_KERNELS)
    ratios = [min(a, b) / max(a, b) if max(a, b) > 0 else 1.0 for a, b in ((xx, yy), (d1, d2))]
    return min(xx, yy, d1, d2), min(ratios)


def check_quality(img: np.ndarray | None, config: QualityConfig = DEFAULT_QUALITY) -> dict[str, Any]:
    """Judge a frame; returns ``{"ok", "reasons", "metrics", "messages", "retake"}``.

    All checks run even when one fails so the courier gets every problem at once
    (a dark *and* blurry photo says both) instead of retaking twice.
    """
    if img is None or is_empty_frame(img):
        reasons = ["empty_frame"]
        return {"ok": False, "reasons": reasons, "metrics": {}, "messages": messages(reasons), "retake": True}
    gray = _gray(img)
    h, w = gray.shape
    n = float(gray.size)
    metrics: dict[str, Any] = {
        "width": int(w),
        "height": int(h),
        "sharpness": round(sharpness(gray), 2),
        "dark_fraction": round(float(np.count_nonzero(gray <= CLIP_LOW)) / n, 4),
        "bright_fraction": round(float(np.count_nonzero(gray >= CLIP_HIGH)) / n, 4),
        "mean_luma": round(float(gray.mean()), 2),
    }
    reasons: list[str] = []
    if max(w, h) < config.min_long_side or min(w, h) < config.min_short_side:
        reasons.append("low_resolution")
    if metrics["dark_fraction"] > config.max_dark_fraction or metrics["mean_luma"] < config.min_mean_luma:
        reasons.append("too_dark")
    if metrics["bright_fraction"] > config.max_bright_fraction or metrics["mean_luma"] > config.max_mean_luma:
        reasons.append("too_bright")
    weak, ratio = directional_sharpness(gray)
    metrics["directional_min"] = round(weak, 2)
    metrics["directional_ratio"] = round(ratio, 4)
    if metrics["sharpness"] < config.min_sharpness:
        reasons.append("blurry")
    elif metrics["directional_ratio"] < config.min_directional_ratio:
        reasons.append("motion_blur")
    return {
        "ok": not reasons,
        "reasons": reasons,
        "metrics": metrics,
        "thresholds": asdict(config),
        "messages": messages(reasons),
        "retake": bool(reasons),
    }


def resize_long_side(img: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the long side is at most ``max_side``; never upscale (it adds bytes, not detail)."""
    h, w = img.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return img
    scale = max_side / max(h, w)
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def prepare(img: np.ndarray, max_side: int = 1600, quality: int = 80) -> bytes:
    """Resize (long side <= ``max_side``) and encode as baseline JPEG at ``quality``.

    OpenCV writes no EXIF, so nothing the camera stamped (owner names, a wrong clock)
    leaks; the evidence record carries the metadata we trust instead. Encoding is
    deterministic for the same pixels, so the SHA-256 of a re-prepared frame is stable.
    """
    if is_empty_frame(img):
        raise PhotoError("empty_frame")
    bgr = resize_long_side(_to_bgr(img), max_side)
    q = int(min(100, max(1, quality)))
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    if not ok:
        raise PhotoError("encode_failed")
    return buf.tobytes()


def sha256_hex(data: bytes) -> str:
    """SHA-256 of the bytes, lower-case hex: the identity of a stored photo file."""
    return hashlib.sha256(data).hexdigest()


def phash(img: np.ndarray | bytes) -> int:
    """64-bit DCT perceptual hash (pHash), as an unsigned int.

    Grayscale, area-resize to 32x32 (this low-pass removes JPEG artefacts and scale),
    2-D DCT, keep the 8x8 lowest frequencies, one bit per coefficient: above the
    median or not. Brightness shifts move mostly the DC term, re-encoding and resizing
    barely touch the low frequencies, and a few percent of crop moves only a few bits,
    so copies stay within a small Hamming distance while unrelated scenes land near 32.
    """
    if isinstance(img, bytes | bytearray | memoryview):
        img = decode_image(bytes(img))
    if is_empty_frame(img):
        raise PhotoError("empty_frame")
    gray = _gray(img)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    bits = (low > np.median(low)).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def phash_hex(value: int) -> str:
    """16 hex digits: how a pHash is stored (SQLite integers are signed; text keeps all 64 bits)."""
    return f"{value & 0xFFFFFFFFFFFFFFFF:016x}"


def hamming(a: int | str, b: int | str) -> int:
    """Number of differing bits between two 64-bit hashes (ints or hex strings)."""
    ai = int(a, 16) if isinstance(a, str) else a
    bi = int(b, 16) if isinstance(b, str) else b
    return ((ai ^ bi) & 0xFFFFFFFFFFFFFFFF).bit_count()
