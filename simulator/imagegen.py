"""Synthetic barcode images: render codes, lay them out on a parcel label in a
camera frame, and degrade the frame the way a courier's phone camera does.

Shared by the decoder tests, ``bench/decode.py`` and the simulator's
virtual camera (parcel labels, village notice boards with a campaign
poster), so everything here is deterministic given a
``numpy.random.Generator`` and returns plain uint8 BGR arrays. Symbols are
drawn by zxing-cpp's own writer, which is an encoder independent of the
decode path's tuning; the degradations are OpenCV image operations.

``degrade(img, kind, level, rng)``: ``level`` is a severity in [0, 1]; 0 is a
barely touched frame, 1 is at or past what a good phone decoder manages.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass

import cv2
import numpy as np
import zxingcpp

from protocol.barcodes import gs1_check_digit, s10_check_digit

FRAME = (1280, 720)  # width, height of a handheld's video frame
KINDS = ("blur", "motion", "noise", "rotation", "perspective", "small", "low_contrast", "jpeg")
MATRIX = ("QRCode", "DataMatrix", "PDF417", "Aztec", "MicroQRCode")


@dataclass(frozen=True)
class Placed:
    """Ground truth for one code drawn into a frame: what a decoder must return."""

    text: str
    fmt: str
    box: tuple[int, int, int, int]  # x, y, w, h in the undegraded frame


def s10_id(rng: np.random.Generator, service: str = "RR", country: str = "CN") -> str:
    """A valid UPU S10 item id, check digit from the shared validator module."""
    serial = "".join(str(d) for d in rng.integers(0, 10, 8))
    return f"{service}{serial}{s10_check_digit(serial)}{country}"


def ean13(rng: np.random.Generator, prefix: str = "690") -> str:
    """A valid EAN-13 (690-699 is China's GS1 prefix range)."""
    body = prefix + "".join(str(d) for d in rng.integers(0, 10, 12 - len(prefix)))
    return body + str(gs1_check_digit(body))


def render_code(text: str, fmt: str, module_px: int = 3, height_px: int | None = None,
                hrt: bool = False) -> np.ndarray:
    """The symbol as a grayscale image with its quiet zone, ``module_px`` pixels per module.

    ``fmt`` is a zxing-cpp BarcodeFormat name ("Code128", "EAN13", "QRCode", ...).
    ``height_px`` stretches a linear symbol's bars (labels print them taller
    than zxing's default of 50 modules' worth of height when space allows).
    """
    bc = zxingcpp.create_barcode(text, getattr(zxingcpp.BarcodeFormat, fmt))
    img = np.asarray(bc.to_image(scale=max(1, int(module_px)), add_hrt=hrt)).copy()
    if height_px and fmt not in MATRIX:
        img = cv2.resize(img, (img.shape[1], int(height_px)), interpolation=cv2.INTER_NEAREST)
    return img


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A desk or parcel-wrap texture: low-frequency blotches plus fine grain, no code-like edges."""
    small = rng.normal(0, 1, (h // 40 + 2, w // 40 + 2)).astype(np.float32)
    low = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.2)
    base = float(rng.uniform(90, 170))
    g = base + 25 * low + 10 * grain
    tint = rng.uniform(0.8, 1.1, 3).astype(np.float32)
    return np.clip(g[..., None] * tint[None, None, :], 0, 255).astype(np.uint8)


def _words(rng: np.random.Generator, n: int) -> str:
    letters = string.ascii_uppercase + string.digits
    return " ".join("".join(rng.choice(list(letters), int(rng.integers(2, 9)))) for _ in range(n))


def text_block(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Grayscale lines of print (address lines, sender): edges a region finder must not mistake for bars."""
    img = np.full((h, w), 255, np.uint8)
    y = 22
    while y < h - 4:
        scale = float(rng.uniform(0.5, 0.8))
        cv2.putText(img, _words(rng, int(rng.integers(3, 7))), (6, y), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, 0, 1 + int(scale > 0.7), cv2.LINE_AA)
        y += int(30 * scale + 8)
    return img


def label_image(codes: list[tuple[str, str]], rng: np.random.Generator, module_px: int = 3,
                size: tuple[int, int] = FRAME, text: bool = True,
                bar_height_px: int | None = None) -> tuple[np.ndarray, list[Placed]]:
    """A BGR camera frame showing a white parcel label with ``codes`` stacked on it.

    Returns the frame and where each code went. The label is centred with a
    little random offset; address-like text fills the rest of the label so
    detectors see the clutter a real label has.
    """
    w, h = size
    frame = _background(rng, w, h)
    symbols = [render_code(t, f, module_px, bar_height_px) for t, f in codes]
    gap = 3 * module_px
    lw = max([s.shape[1] for s in symbols] + [200]) + 40
    lh = sum(s.shape[0] for s in symbols) + gap * (len(symbols) - 1) + 40
    text_h = 110 if text else 0
    lw = min(lw, w - 8)
    lh = min(lh + text_h, h - 8)
    x0 = int(np.clip((w - lw) // 2 + rng.integers(-w // 12, w // 12 + 1), 4, w - lw - 4))
    y0 = int(np.clip((h - lh) // 2 + rng.integers(-h // 12, h // 12 + 1), 4, h - lh - 4))
    label = np.full((lh, lw), 250, np.uint8)
    if text and text_h:
        label[lh - text_h:lh - 5, 10:lw - 10] = text_block(rng, lw - 20, text_h - 5)
    placed = []
    y = 20
    for (t, f), s in zip(codes, symbols, strict=True):
        sh, sw = s.shape
        if y + sh > lh or sw > lw:
            raise ValueError(f"code {t!r} does not fit a {w}x{h} frame at {module_px} px/module")
        x = (lw - sw) // 2
        label[y:y + sh, x:x + sw] = np.minimum(label[y:y + sh, x:x + sw], s)
        placed.append(Placed(t, f, (x0 + x, y0 + y, sw, sh)))
        y += sh + gap
    frame[y0:y0 + lh, x0:x0 + lw] = cv2.cvtColor(label, cv2.COLOR_GRAY2BGR)
    return frame, placed


def no_code_image(rng: np.random.Generator, kind: str, size: tuple[int, int] = FRAME) -> np.ndarray:
    """Frames with nothing to read, made to tempt a decoder into a false read.

    kinds: "texture" (background only), "noise" (heavy sensor noise),
    "stripes" (text-like runs of bars: ruled lines, a printed table, a
    corrugated box edge), "text" (a label with print only).
    """
    w, h = size
    if kind == "texture":
        return _background(rng, w, h)
    if kind == "noise":
        g = rng.normal(128, 60, (h, w)).clip(0, 255).astype(np.uint8)
        return cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    if kind == "stripes":
        img = _background(rng, w, h)
        x = int(rng.integers(100, 400))
        y0, y1 = int(rng.integers(100, 250)), int(rng.integers(400, 650))
        while x < w - 100:  # irregular vertical bars, like a fence or a ruled form
            bw = int(rng.integers(2, 12))
            cv2.rectangle(img, (x, y0), (x + bw, y1), (20, 20, 20), -1)
            x += bw + int(rng.integers(2, 16))
        for _ in range(int(rng.integers(3, 7))):  # and horizontal rules with print between them
            yy = int(rng.integers(20, h - 20))
            cv2.line(img, (0, yy), (w, yy), (30, 30, 30), int(rng.integers(1, 4)))
        return img
    if kind == "text":
        img = _background(rng, w, h)
        block = text_block(rng, 700, 400)
        img[150:550, 250:950] = cv2.cvtColor(block, cv2.COLOR_GRAY2BGR)
        return img
    raise ValueError(f"unknown no-code kind {kind!r}")


def _warp_fill(img: np.ndarray, m: np.ndarray, perspective: bool, rng: np.random.Generator) -> np.ndarray:
    """Warp, filling what came from outside the frame with fresh desk texture.

    Reflected or replicated borders would paint mirrored copies of the label
    (and so extra, readable symbols) or long streaks into the frame.
    """
    h, w = img.shape[:2]
    warp = cv2.warpPerspective if perspective else cv2.warpAffine
    out = warp(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = warp(np.full((h, w), 255, np.uint8), m, (w, h), flags=cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if inside.min() == 255:
        return out
    fill = _background(rng, w, h).astype(np.float32)
    if img.ndim == 2:
        fill = cv2.cvtColor(fill, cv2.COLOR_BGR2GRAY)
    axes = (0, 1)
    fill = fill - fill.mean(axis=axes) + img.mean(axis=axes)  # same tone as the desk it continues
    a = (inside.astype(np.float32) / 255.0).reshape(h, w, *([1] if img.ndim == 3 else []))
    return (out * a + fill * (1 - a)).clip(0, 255).astype(np.uint8)


def degrade(img: np.ndarray, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """One camera defect at severity ``level`` in [0, 1]; returns a new image of the same size.

    - blur: defocus, Gaussian sigma up to 2.7 px
    - motion: hand shake, a linear smear up to 24 px at a random angle
    - noise: sensor noise, sigma up to 55 grey levels (at high ISO in a dim shop)
    - rotation: any angle, more of the circle as level grows (up to +-180 degrees)
    - perspective: the label seen at a slant, tilted 20 to 60 degrees about a random axis
    - small: the label far away, content scaled down to as little as 22 %
    - low_contrast: a faded thermal label in poor light, contrast down to 4 %, with
      uneven illumination and a little noise (a real sensor always adds some)
    - jpeg: compression down to quality 5
    """
    level = float(np.clip(level, 0.0, 1.0))
    h, w = img.shape[:2]
    if kind == "blur":
        return cv2.GaussianBlur(img, (0, 0), 0.3 + 2.4 * level)
    if kind == "motion":
        n = max(2, int(round(2 + 22 * level)))
        k = np.zeros((n, n), np.float32)
        k[n // 2, :] = 1.0 / n
        rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        k = cv2.warpAffine(k, rot, (n, n))
        k /= max(float(k.sum()), 1e-6)
        return cv2.filter2D(img, -1, k)
    if kind == "noise":
        sigma = 6 + 49 * level
        noisy = img.astype(np.float32) + rng.normal(0, sigma, img.shape[:2])[..., None]
        return noisy.clip(0, 255).astype(np.uint8)
    if kind == "rotation":
        angle = float(rng.uniform(-1, 1) * (15 + 165 * level))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        return _warp_fill(img, m, False, rng)
    if kind == "perspective":
        # The label seen at a slant: a 3D tilt about a random in-plane axis through the frame's centre
        # (foreshortening shrinks the modules on the far side), a little in-plane rotation, pinhole camera.
        tilt = math.radians(20 + 40 * level) * float(rng.choice([-1, 1]))
        axis = float(rng.uniform(0, math.pi))
        roll = math.radians(float(rng.uniform(-20, 20)))
        f = 1.1 * w
        k = np.float64([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
        ax = np.float64([math.cos(axis), math.sin(axis), 0.0]) * tilt
        r_tilt, _ = cv2.Rodrigues(ax)
        r_roll, _ = cv2.Rodrigues(np.float64([0, 0, roll]))
        rot = r_roll @ r_tilt
        # Plane point (u - w/2, v - h/2, 0) rotated about the frame's centre, at distance f
        # (so no tilt = identity).
        plane = np.column_stack([rot[:, 0], rot[:, 1], [0.0, 0.0, f]])
        shift = np.float64([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]])
        hom = k @ plane @ shift
        hom /= hom[2, 2]
        return _warp_fill(img, hom, True, rng)
    if kind == "small":
        f = 1.0 - 0.78 * level
        sw, sh = max(8, int(w * f)), max(8, int(h * f))
        shrunk = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
        ring = np.concatenate([shrunk[:4].reshape(-1, shrunk.shape[-1] if shrunk.ndim == 3 else 1),
                               shrunk[-4:].reshape(-1, shrunk.shape[-1] if shrunk.ndim == 3 else 1)])
        blotch = cv2.resize(rng.normal(0, 12, (h // 60 + 2, w // 60 + 2)).astype(np.float32), (w, h))
        fill = ring.mean(axis=0).astype(np.float32)  # the desk around the label, out of focus
        out = (fill[None, None, :] + blotch[..., None]).clip(0, 255).astype(np.uint8).reshape(img.shape)
        x, y = (w - sw) // 2, (h - sh) // 2
        out[y:y + sh, x:x + sw] = shrunk
        return out
    if kind == "low_contrast":
        c = 1.0 - 0.96 * level
        f = img.astype(np.float32)
        mean = float(f.mean())
        ramp = np.linspace(-1, 1, w, dtype=np.float32)[None, :] * float(rng.uniform(10, 40)) * level
        out = mean + (f - mean) * c + ramp[..., None] + rng.normal(0, 3.0, img.shape[:2])[..., None]
        return out.clip(0, 255).astype(np.uint8)
    if kind == "jpeg":
        q = int(round(60 - 55 * level))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        assert ok
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    raise ValueError(f"unknown degradation {kind!r}; one of {KINDS}")


def notice_backdrop(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A village background (a lit wall with random shapes) and an empty
    framed notice board on it; returns the image and the board's box."""
    img = np.zeros((h, w, 3), np.uint8)
    ramp = np.linspace(0, 1, h)[:, None]
    img[:] = (np.array([150, 140, 110]) + ramp * np.array([60, 40, 30]))[:, None, :].astype(np.uint8)
    for _ in range(25):
        color = tuple(int(x) for x in rng.integers(40, 200, 3))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, centre, int(rng.integers(20, 120)), color, -1)
    x0, y0, x1, y1 = w // 5, h // 6, 4 * w // 5, 5 * h // 6
    cv2.rectangle(img, (x0 - 20, y0 - 20), (x1 + 20, y1 + 20), (40, 60, 90), -1)
    cv2.rectangle(img, (x0, y0), (x1, y1), (215, 220, 225), -1)
    return img, (x0, y0, x1, y1)


def board_with_qr(qr_text: str | None, seed: int = 1, w: int = 1600, h: int = 1200) -> np.ndarray:
    """A village notice board with a poster carrying a campaign QR code (or none)."""
    rng = np.random.default_rng(seed)
    img, (x0, y0, x1, y1) = notice_backdrop(rng, w, h)
    cv2.putText(img, "HEALTH CAMPAIGN", (x0 + 30, y0 + 90), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (40, 40, 160), 5,
                cv2.LINE_AA)
    for i in range(8):
        cv2.putText(img, f"Line {i} seed {seed} notice", (x0 + 40, y0 + 170 + i * 55),
                    cv2.FONT_HERSHEY_SIMPLEX, 1.1, (50, 50, 50), 2, cv2.LINE_AA)
    if qr_text:
        qr = np.asarray(zxingcpp.create_barcode(qr_text, zxingcpp.BarcodeFormat.QRCode).to_image(scale=8))
        qh, qw = qr.shape[:2]
        qx, qy = x1 - qw - 40, y1 - qh - 40
        img[qy:qy + qh, qx:qx + qw] = cv2.cvtColor(qr, cv2.COLOR_GRAY2BGR)
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)
