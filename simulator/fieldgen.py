"""Field-like photographs of labels, for judging the decoder on images it was not tuned on.

``simulator/imagegen.py`` made the frames ``handheld/decode.py`` was tuned
on: a flat label pasted into the frame, then one OpenCV degradation. This
module is deliberately built another way, so that passing here is evidence
of something other than fitting that generator:

- **Scene, not paste.** A flat label canvas (ink on paper, reflectance in
  [0, 1], symbols drawn by zxing-cpp's writer at one bit per module and
  expanded with ``np.repeat``, with bar growth or shrink as a thermal or
  ink-jet printer gives) is *mapped* onto the camera through a geometric
  model: a pinhole camera looking at a tilted plane, a label wrapped round a
  cylinder (a tube, a bottle, a rolled parcel), or a crumpled sheet (a smooth
  random displacement field plus creases). Every frame pixel looks its label
  point up through that model (``cv2.remap``), after the canvas is low-passed
  to the camera's sampling rate, so module sizes are fractional and vary
  across the symbol.
- **Light, then a sensor, then a phone.** Radiance is reflectance times an
  illumination field (a gradient, a soft cast shadow, shading from a
  crumpled surface's normals), plus specular glare on glossy labels (added
  independent of the ink, which is why glare erases bars); then optics (disk
  defocus, a motion smear along a random path), then a sensor with Poisson
  shot noise and read noise in electrons at a light level, auto-exposure,
  clipping, gamma, a phone's sharpening and, in dim frames, its denoiser, and
  finally JPEG at a phone's quality (60-85) through ``cv2.imencode``.
- **Its own seeds.** Every frame has its own generator seeded from
  ``(FIELD_TAG, split seed, condition, symbology, index)``: a sequence,
  never a bare integer, so no frame here shares a random stream with
  ``imagegen``'s integer seeds. ``DEV_SEED`` is the split one may look at
  while improving the decoder; ``HELDOUT_SEED`` and ``HELDOUT2_SEED`` are run
  only for the figures ``bench/decode.py`` reports.

Conditions (``CONDITIONS``): clean (a good phone shot), perspective,
cylinder, crumpled, glare, low_light, motion, defocus, small (a module of
1.0-1.8 px for 1D, 1.4-2.4 px for 2D), dense (long contents at a small
module), multi (2 to 4 symbols of mixed symbologies on one shipping label)
and no_code (scenes with print, stripes, corrugated board, glare and dark
noise but nothing to read: any read is a misread). Every frame also gets the
mild defects of every phone photo (some tilt and roll, a little defocus,
noise, sharpening, JPEG).

Symbologies (``SYMBOLOGIES``): Code 128, EAN-13, UPC-A, Code 39, ITF, QR
Code, Data Matrix and PDF417, with contents like those on parcels (UPU S10
ids, domestic waybill numbers, GTINs, SSCC-like digit strings, addresses).

What this cannot stand in for: real optics (lens distortion, chromatic
aberration, rolling shutter, auto-focus hunting), real print defects
(smudges, torn or taped-over symbols, dot-matrix and thermal head
failures), real surfaces (plastic wrap's irregular glare, transparent
pouches), real phone ISP processing (multi-frame denoise, HDR tone mapping)
and the distribution of all these in the field. It is a second, independent
synthetic set, a check against over-fitting one generator; it is not a
measurement of field read rates.
"""

from __future__ import annotations

import functools
import math
import string
from dataclasses import dataclass, field

import cv2
import numpy as np
import zxingcpp

from protocol.barcodes import gs1_check_digit, s10_check_digit

FIELD_TAG = 0xF1E1D  # first word of every frame's seed sequence
DEV_SEED = 14_01
HELDOUT_SEED = 14_77
#: A second held-out split, added once HELDOUT_SEED had been run after four rounds of changes: run only
#: for the figures, once before and once after a round.
HELDOUT2_SEED = 14_93
SIZE = (1280, 960)  # a phone photo, downscaled for the handheld (width, height; portrait swaps)
SYMBOLOGIES = ("Code128", "EAN13", "UPCA", "Code39", "ITF", "QRCode", "DataMatrix", "PDF417")
LINEAR = frozenset({"Code128", "EAN13", "UPCA", "Code39", "ITF"})
CONDITIONS = ("clean", "perspective", "cylinder", "crumpled", "glare", "low_light", "motion", "defocus",
              "small", "dense", "multi")
NO_CODE_KINDS = ("print", "stripes", "cardboard", "glare", "dark")


@dataclass(frozen=True)
class Truth:
    """One symbol in a field frame. ``accept``: the texts a correct decoder may report
    (a UPC-A is also its EAN-13 form with a leading 0)."""

    text: str
    fmt: str
    accept: frozenset[str]


@dataclass
class FieldFrame:
    condition: str
    img: np.ndarray  # BGR uint8, after JPEG
    truths: list[Truth] = field(default_factory=list)
    symbology: str = ""  # the symbol's, for single-symbol frames
    note: str = ""  # the drawn parameters, for looking at failures


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def frame_rng(split_seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([FIELD_TAG, split_seed, *key])


# ---------------------------------------------------------------- contents
def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(int(d)) for d in rng.integers(0, 10, n))


def _gs1(body: str) -> str:
    return body + str(gs1_check_digit(body))


def _s10(rng: np.random.Generator) -> str:
    serial = _digits(rng, 8)
    svc = str(rng.choice(["RR", "RA", "EE", "EA", "CP", "LX", "UA"]))
    country = str(rng.choice(["CN", "IN", "KE", "PE", "VN", "GB", "FR"]))
    return f"{svc}{serial}{s10_check_digit(serial)}{country}"


_ALNUM = string.ascii_uppercase + string.digits
_WORDS = ("village", "road", "post", "office", "box", "district", "market", "lane", "north", "block",
          "sector", "house", "farm", "school", "near", "temple", "bridge", "upper", "camp", "hill")


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(str(rng.choice(_WORDS)) for _ in range(n))


def content(rng: np.random.Generator, fmt: str, dense: bool = False) -> str:
    """Text a parcel label would carry in ``fmt`` (long when ``dense``)."""
    if fmt == "Code128":
        if dense:
            return "00" + _gs1("0" + _digits(rng, 16)) + "420" + _digits(rng, 9) + _digits(rng, 6)
        pick = int(rng.integers(0, 3))
        if pick == 0:
            return _s10(rng)
        if pick == 1:
            return str(rng.choice(["7", "8", "3"])) + _digits(rng, 11)  # a domestic waybill number
        return "".join(rng.choice(list(_ALNUM), int(rng.integers(8, 14))))
    if fmt == "EAN13":
        return _gs1(str(rng.choice(["690", "890", "616", "789", "400", "500", "750"])) + _digits(rng, 9))
    if fmt == "UPCA":
        return _gs1(str(rng.choice(["0", "1", "6", "7", "8"])) + _digits(rng, 10))
    if fmt == "Code39":
        n = int(rng.integers(16, 22)) if dense else int(rng.integers(6, 12))
        return "".join(rng.choice(list(_ALNUM + "-."), n)).strip(".-") or "PE42"
    if fmt == "ITF":
        return _gs1(_digits(rng, 13)) if not dense else _digits(rng, 2 * int(rng.integers(11, 15)))
    if fmt == "QRCode":
        if dense:
            return f"https://track.example.org/{_s10(rng)}?" + "&".join(
                f"{k}={_digits(rng, int(rng.integers(4, 9)))}" for k in "abcdefghijklmn")
        return _s10(rng) if rng.random() < 0.6 else f"https://t.example.org/{_s10(rng)}"
    if fmt == "DataMatrix":
        if dense:
            return "01" + _gs1("0" + _digits(rng, 12)) + "21" + "".join(rng.choice(list(_ALNUM), 20)) \
                + " " + _words(rng, 6)
        if rng.random() < 0.5:
            return _s10(rng)
        return "01" + _gs1("0" + _digits(rng, 12)) + "10" + _digits(rng, 6)
    if fmt == "PDF417":
        n = int(rng.integers(18, 28)) if dense else int(rng.integers(4, 9))
        return f"{_s10(rng)} {_words(rng, n)} {_digits(rng, 6)}"
    raise ValueError(fmt)


def truth(text: str, fmt: str) -> Truth:
    accept = {text, "0" + text} if fmt == "UPCA" else {text}
    return Truth(text, fmt, frozenset(accept))


# ---------------------------------------------------------------- the label canvas (reflectance)
def symbol_bits(text: str, fmt: str) -> np.ndarray:
    """One pixel per module (ink = 1), quiet zones included; 1D symbols are one row."""
    bc = zxingcpp.create_barcode(text, getattr(zxingcpp.BarcodeFormat, fmt))
    img = np.asarray(bc.to_image(scale=1, add_quiet_zones=True))
    ink = (img < 128).astype(np.uint8)
    if fmt not in LINEAR:
        return ink
    row = ink[ink.shape[0] // 2]
    if fmt == "Code39":  # the writer's wide elements are 2 narrow; labels print 3 (ISO/IEC 16388 allows 2-3)
        edges = np.flatnonzero(np.diff(row)) + 1
        runs = np.split(row, edges)
        row = np.concatenate([r if i in (0, len(runs) - 1) or r.size == 1 else np.repeat(r[:1], 3)
                              for i, r in enumerate(runs)])
    return row[None, :]


def symbol_patch(rng: np.random.Generator, text: str, fmt: str, m: int) -> np.ndarray:
    """Ink coverage (float32 0..1) at ``m`` canvas px per module, with print gain or loss."""
    bits = symbol_bits(text, fmt)
    if fmt in LINEAR:
        modules = bits.shape[1]
        height = int(max(20, modules * float(rng.uniform(0.15, 0.35))))
        bits = np.repeat(bits, height, axis=0)
    ink = np.repeat(np.repeat(bits, m, axis=0), m, axis=1)
    grow = int(rng.choice([-1, 1])) if m >= 7 and rng.random() < 0.3 else 0  # thermal heads print bars
    if grow:  # fat or thin now and then: one canvas pixel, 1/m of a module (at most 14 %)
        k = np.ones((1, 2) if fmt in LINEAR else (2, 2), np.uint8)
        ink = cv2.dilate(ink, k) if grow > 0 else cv2.erode(ink, k)
    return ink.astype(np.float32)


def _print_lines(canvas: np.ndarray, rng: np.random.Generator, x: int, y: int, w: int, h: int,
                 size: float) -> None:
    """Address-like print in a box (Hershey duplex / plain / complex, not imagegen's); uint8 canvas."""
    font = int(rng.choice([cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX]))
    scale = size * (1.6 if font == cv2.FONT_HERSHEY_PLAIN else 1.0)
    step = int(34 * size) + 6
    yy = y + step
    while yy < y + h - 4:
        line = _words(rng, int(rng.integers(2, 6))).upper() if rng.random() < 0.5 else \
            f"{_words(rng, 2)} {_digits(rng, int(rng.integers(3, 7)))}"
        cv2.putText(canvas, line, (x, yy), font, scale, 255, max(1, int(round(2 * size))), cv2.LINE_AA)
        yy += step


def label_canvas(rng: np.random.Generator, items: list[tuple[str, str]], m1d: int, m2d: int,
                 extras: bool = True) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Reflectance of a printed label holding ``items`` and some print; returns boxes of the symbols."""
    patches = [symbol_patch(rng, t, f, m1d if f in LINEAR else m2d) for t, f in items]
    pad = 3 * max(m1d, m2d)
    widest = max(p.shape[1] for p in patches)
    row_max = max(widest, int(1.5 * widest))
    boxes: list[tuple[int, int, int, int]] = []
    x = y = pad
    row_h = 0
    for p in patches:
        ph, pw = p.shape
        if x > pad and x + pw > pad + row_max:
            x, y = pad, y + row_h + pad
            row_h = 0
        boxes.append((x, y, pw, ph))
        x += pw + pad
        row_h = max(row_h, ph)
    body_w = max(b[0] + b[2] for b in boxes) + pad
    body_h = y + row_h + pad
    text_h = int(body_h * float(rng.uniform(0.3, 0.7))) if extras else 0
    w, h = body_w, body_h + text_h
    paper = float(rng.uniform(0.72, 0.92))
    ink_r = float(rng.uniform(0.04, 0.3))  # black ink down to a faded thermal grey
    ink = np.zeros((h, w), np.float32)
    for (bx, by, bw, bh), p in zip(boxes, patches, strict=True):
        ink[by:by + bh, bx:bx + bw] = np.maximum(ink[by:by + bh, bx:bx + bw], p)
    if extras:
        size = max(0.6, w / 900)
        marks = np.zeros((h, w), np.uint8)
        _print_lines(marks, rng, pad, body_h, w - 2 * pad, text_h - pad, size)
        if rng.random() < 0.6:  # the ruled boxes of a shipping form
            t = max(1, int(size * 2))
            cv2.rectangle(marks, (pad // 2, pad // 2), (w - pad // 2, h - pad // 2), 255, t)
            cv2.line(marks, (pad // 2, body_h - pad // 3), (w - pad // 2, body_h - pad // 3), 255, t)
        ink = np.maximum(ink, marks.astype(np.float32) / 255.0)
    refl = paper - (paper - ink_r) * ink
    # paper fibre and uneven print density
    blot = cv2.resize(rng.normal(0, 1, (h // 64 + 2, w // 64 + 2)).astype(np.float32), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    refl = refl * (1 + 0.04 * blot) + rng.normal(0, 0.01, (h, w)).astype(np.float32)
    return np.clip(refl, 0.01, 1.0), boxes


# ---------------------------------------------------------------- scene backgrounds (RGB reflectance)
def background(rng: np.random.Generator, w: int, h: int, kind: str | None = None) -> np.ndarray:
    kind = kind or str(rng.choice(["wood", "counter", "cardboard", "cloth"]))
    yy, xx = _grid(h, w)
    low = cv2.resize(rng.normal(0, 1, (h // 80 + 2, w // 80 + 2)).astype(np.float32), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    if kind == "wood":
        a = float(rng.uniform(0, math.pi))
        u = xx * math.cos(a) + yy * math.sin(a)
        grain = np.sin(u / float(rng.uniform(6, 18)) + 3 * low) * 0.5 + 0.5
        base = np.float32([0.18, 0.3, 0.45])  # BGR, brown
        g = base[None, None, :] * (0.75 + 0.35 * grain[..., None])
    elif kind == "cardboard":
        base = np.float32([0.3, 0.45, 0.58])
        g = base[None, None, :] * (0.9 + 0.08 * low[..., None])
        g = g + rng.normal(0, 0.015, (h, w, 1)).astype(np.float32)
    elif kind == "cloth":
        p = float(rng.uniform(3, 7))
        weave = (np.sin(xx / p) * np.sin(yy / p)) * 0.5 + 0.5
        base = rng.uniform(0.1, 0.6, 3).astype(np.float32)
        g = base[None, None, :] * (0.8 + 0.2 * weave[..., None] + 0.05 * low[..., None])
    else:  # a worn shop counter
        base = np.full(3, float(rng.uniform(0.25, 0.6)), np.float32)
        base = base * rng.uniform(0.9, 1.1, 3).astype(np.float32)
        g = base[None, None, :] * (0.9 + 0.1 * low[..., None])
        g = g + rng.normal(0, 0.02, (h, w, 1)).astype(np.float32)
    return np.clip(g, 0.01, 1.0).astype(np.float32)


# ---------------------------------------------------------------- geometry: frame pixel -> canvas point
def _camera_homography(rng: np.random.Generator, cw: int, ch: int, w: int, h: int, scale: float,
                       tilt_deg: float, roll_deg: float) -> np.ndarray:
    """Canvas -> frame homography: the canvas centred, scaled, rolled in-plane and tilted in 3D."""
    f = float(rng.uniform(0.9, 1.4)) * max(w, h)
    axis = float(rng.uniform(0, math.pi))
    tilt = math.radians(tilt_deg)
    r_tilt, _ = cv2.Rodrigues(np.float64([math.cos(axis), math.sin(axis), 0.0]) * tilt)
    r_roll, _ = cv2.Rodrigues(np.float64([0, 0, math.radians(roll_deg)]))
    rot = r_roll @ r_tilt
    k = np.float64([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    # canvas point (x, y) -> plane point ((x - cw/2) * scale, (y - ch/2) * scale, 0) at depth f
    plane = np.column_stack([rot[:, 0] * scale, rot[:, 1] * scale, [0.0, 0.0, f]])
    centre = np.float64([[1, 0, -cw / 2], [0, 1, -ch / 2], [0, 0, 1]])
    hom = k @ plane @ centre
    off = rng.uniform(-0.12, 0.12, 2) * np.float64([w, h])
    hom = np.float64([[1, 0, off[0]], [0, 1, off[1]], [0, 0, 1]]) @ hom
    return hom / hom[2, 2]


def _fit_scale(cw: int, ch: int, w: int, h: int, want: float, fill: float = 0.92) -> float:
    return min(want, fill * w / cw, fill * h / ch)


@dataclass
class Geometry:
    hom: np.ndarray  # canvas -> "flat" frame coordinates
    cylinder_r: float = 0.0  # frame px; 0 = flat
    cylinder_axis: float = 0.0  # radians, direction of the cylinder's axis in the frame
    crumple: float = 0.0  # displacement amplitude, frame px
    creases: int = 0


def frame_to_canvas(g: Geometry, w: int, h: int, rng: np.random.Generator,
                    centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel canvas coordinates (map_x, map_y) and a shading factor from surface normals."""
    yy, xx = _grid(h, w)
    shade = np.ones((h, w), np.float32)
    if g.crumple > 0:
        # a smooth random height field plus creases; displacement follows its gradient
        n = int(rng.integers(5, 9))
        z = cv2.resize(rng.normal(0, 1, (n, n)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(g.creases):
            a = float(rng.uniform(0, math.pi))
            px, py = float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.2, 0.8) * h)
            d = (xx - px) * math.cos(a) + (yy - py) * math.sin(a)
            z += float(rng.uniform(-1.0, 1.0)) * np.exp(-np.abs(d) / float(rng.uniform(30, 90)))
        z /= max(float(np.abs(z).max()), 1e-6)
        # displacement: the height's parallax (away from the label's centre) plus a smooth sideways
        # drift of the sheet; continuous, with kinks at the creases, and never folding over
        vx = cv2.resize(rng.normal(0, 1, (n, n)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        vy = cv2.resize(rng.normal(0, 1, (n, n)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        rx, ry = xx - centre[0], yy - centre[1]
        rr = np.sqrt(rx * rx + ry * ry) + 1e-3
        amp = 10.0 * g.crumple
        xx = xx + amp * (z * rx / rr + 0.6 * vx)
        yy = yy + amp * (z * ry / rr + 0.6 * vy)
        gy, gx = np.gradient(z)
        norm = max(float(np.abs(gx).max()), float(np.abs(gy).max()), 1e-6)
        ang = float(rng.uniform(0, 2 * math.pi))
        lx, ly = math.cos(ang), math.sin(ang)
        shade = np.clip(1.0 + 0.35 * (gx * lx + gy * ly) / norm * min(1.0, g.crumple), 0.45, 1.4)
    if g.cylinder_r > 0:
        # orthographic view of a cylinder of radius r whose axis passes through the label's centre
        ca, sa = math.cos(g.cylinder_axis), math.sin(g.cylinder_axis)
        dx, dy = xx - centre[0], yy - centre[1]
        across = -dx * sa + dy * ca  # distance from the axis in the frame
        along = dx * ca + dy * sa
        r = g.cylinder_r
        t = np.clip(across / r, -1.0, 1.0)
        arc = r * np.arcsin(t)
        xx = centre[0] + along * ca - arc * sa
        yy = centre[1] + along * sa + arc * ca
        shade = shade * (0.55 + 0.45 * np.sqrt(np.clip(1 - t * t, 0, 1)))
        shade[np.abs(across) >= r] = 0.0
    hinv = np.linalg.inv(g.hom)
    den = hinv[2, 0] * xx + hinv[2, 1] * yy + hinv[2, 2]
    mx = (hinv[0, 0] * xx + hinv[0, 1] * yy + hinv[0, 2]) / den
    my = (hinv[1, 0] * xx + hinv[1, 1] * yy + hinv[1, 2]) / den
    return mx.astype(np.float32), my.astype(np.float32), shade.astype(np.float32)


# ---------------------------------------------------------------- light, optics, sensor, phone
def _illumination(rng: np.random.Generator, w: int, h: int, shadow: bool) -> np.ndarray:
    yy, xx = _grid(h, w)
    a = float(rng.uniform(0, 2 * math.pi))
    ramp = ((xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a)) / max(w, h)
    light = 1.0 + float(rng.uniform(0.1, 0.6)) * ramp
    if shadow:  # a hand or phone between the lamp and the label: a soft dark polygon
        pts = np.int32(rng.uniform(0, 1, (5, 2)) * [w, h])
        poly = np.zeros((h, w), np.float32)
        cv2.fillConvexPoly(poly, cv2.convexHull(pts), 1.0)
        poly = cv2.GaussianBlur(poly, (0, 0), float(rng.uniform(8, 40)))
        light = light * (1 - float(rng.uniform(0.3, 0.65)) * poly)
    return light.astype(np.float32)


def _glare(rng: np.random.Generator, w: int, h: int, mask: np.ndarray, near: tuple[float, float],
           strength: float) -> np.ndarray:
    """Specular highlights of a lamp on a glossy laminate: elongated lobes, brightest at the centre."""
    spec = np.zeros((h, w), np.float32)
    yy, xx = _grid(h, w)
    for i in range(int(rng.integers(1, 3))):
        cx = near[0] + float(rng.normal(0, 0.12 * w))
        cy = near[1] + float(rng.normal(0, 0.1 * h))
        sx, sy = float(rng.uniform(25, 110)), float(rng.uniform(10, 60))
        a = float(rng.uniform(0, math.pi))
        u = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)
        v = -(xx - cx) * math.sin(a) + (yy - cy) * math.cos(a)
        spec += (strength if i == 0 else 0.5 * strength) * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return spec * mask


def _disk(radius: float) -> np.ndarray:
    n = int(math.ceil(radius)) * 2 + 1
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) - n // 2
    k = np.clip(radius + 0.5 - np.sqrt(xx * xx + yy * yy), 0, 1)
    return k / k.sum()


def _motion(rng: np.random.Generator, length: float) -> np.ndarray:
    """A hand's smear: a slightly curved path, unevenly exposed along its length."""
    n = int(math.ceil(length)) + 3
    k = np.zeros((2 * n + 1, 2 * n + 1), np.float32)
    a = float(rng.uniform(0, math.pi))
    bend = float(rng.uniform(-0.4, 0.4))
    steps = max(8, int(length * 4))
    for i in range(steps):
        s = (i / (steps - 1) - 0.5) * length
        ang = a + bend * s / max(length, 1)
        x, y = n + s * math.cos(ang), n + s * math.sin(ang)
        x0, y0 = int(x), int(y)
        fx, fy = x - x0, y - y0
        wgt = 0.6 + 0.4 * math.sin(math.pi * i / steps)
        k[y0, x0] += wgt * (1 - fx) * (1 - fy)
        k[y0, x0 + 1] += wgt * fx * (1 - fy)
        k[y0 + 1, x0] += wgt * (1 - fx) * fy
        k[y0 + 1, x0 + 1] += wgt * fx * fy
    return k / k.sum()


@dataclass
class Camera:
    defocus: float = 0.6  # disk radius, px
    motion: float = 0.0  # smear length, px
    electrons: float = 4000.0  # at a white surface in full light
    read_noise: float = 3.0  # electrons
    sharpen: float = 0.5  # the phone's unsharp mask amount
    denoise: bool = False
    jpeg: int = 75


def photograph(radiance: np.ndarray, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """Linear BGR radiance (1 = white paper in full light) -> what the phone saves (BGR uint8).

    The noise field is drawn once per pixel and shared by the three channels (a demosaiced
    sensor's noise is strongly correlated across channels; and it is a third of the cost).
    """
    img = radiance
    if cam.defocus > 0.3:
        img = cv2.filter2D(img, -1, _disk(cam.defocus))
    if cam.motion > 0.5:
        img = cv2.filter2D(img, -1, _motion(rng, cam.motion))
    e = np.clip(img, 0, None) * np.float32(cam.electrons)
    h, w = e.shape[:2]
    if cam.electrons < 300:
        lum = e.mean(axis=2)
        shot = (rng.poisson(lum).astype(np.float32) - lum) / np.sqrt(lum + 1e-3)
    else:
        shot = rng.standard_normal((h, w), dtype=np.float32)
    e = e + cv2.sqrt(e)[...] * shot[..., None]
    e = e + np.float32(cam.read_noise) * rng.standard_normal((h, w), dtype=np.float32)[..., None]
    # auto-exposure: the 97th percentile of the frame to 0.85 of full scale (glare still clips)
    gain = 0.85 / max(float(np.percentile(e[::7, ::7], 97)), 1e-3)
    lin = np.clip(e * np.float32(gain), 0, 1)
    out = cv2.pow(lin, 1 / 2.2)
    if cam.denoise:  # phones denoise dim frames hard: smears fine detail
        out = cv2.bilateralFilter(out.astype(np.float32), 5, 0.08, 3)
    if cam.sharpen > 0:
        out = out + cam.sharpen * (out - cv2.GaussianBlur(out, (0, 0), 1.2))
    u8 = np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(cam.jpeg)])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


# ---------------------------------------------------------------- scenes
def _module_px(rng: np.random.Generator, fmt: str, condition: str) -> float:
    """Frame pixels per module of the main symbol."""
    two_d = fmt not in LINEAR
    if condition == "small":
        return float(rng.uniform(1.4, 2.4) if two_d else rng.uniform(1.0, 1.8))
    if condition == "dense":
        return float(rng.uniform(1.7, 2.8) if two_d else rng.uniform(1.1, 1.9))
    if fmt == "PDF417":
        return float(rng.uniform(1.6, 3.5))
    return float(rng.uniform(2.6, 6.0) if two_d else rng.uniform(1.6, 3.6))


def scene(rng: np.random.Generator, condition: str, items: list[tuple[str, str]],
          size: tuple[int, int] = SIZE) -> tuple[np.ndarray, str]:
    """A photograph of a label carrying ``items`` under ``condition``; returns (BGR, note)."""
    w, h = size if rng.random() < 0.75 else (size[1], size[0])
    main = items[0][1]
    m1d, m2d = int(rng.integers(6, 10)), int(rng.integers(6, 10))
    canvas, _ = label_canvas(rng, items, m1d, m2d, extras=True)
    ch, cw = canvas.shape
    mod = _module_px(rng, main, condition)
    scale = _fit_scale(cw, ch, w, h, mod / (m1d if main in LINEAR else m2d))
    sev = float(rng.uniform(0.15, 1.0))
    tilt = float(rng.uniform(0, 15))
    # how people hold phones: mostly square to the label, sometimes not, now and then any way up
    pick = rng.random()
    roll = float(rng.uniform(-8, 8) if pick < 0.75 else rng.uniform(-30, 30) if pick < 0.9
                 else rng.uniform(-180, 180))
    cam = Camera(defocus=float(rng.uniform(0.0, 0.9)), electrons=float(rng.uniform(2500, 8000)),
                 read_noise=float(rng.uniform(2, 5)), sharpen=float(rng.uniform(0.2, 0.9)),
                 jpeg=int(rng.integers(60, 86)))
    geo_kw: dict[str, float] = {}
    glare = 0.0
    shadow = rng.random() < 0.3
    if condition == "perspective":
        tilt = 20 + 40 * sev
    elif condition == "cylinder":
        geo_kw["cylinder_r"] = 0.0  # set below from the label's size in the frame
    elif condition == "crumpled":
        geo_kw["crumple"] = 0.25 + 0.75 * sev
    elif condition == "glare":
        glare = 0.3 + 1.5 * sev
    elif condition == "low_light":
        cam.electrons = float(200 * (1.05 - sev) + 15)
        cam.read_noise = float(rng.uniform(2.5, 6))
        cam.denoise = rng.random() < 0.5
        shadow = rng.random() < 0.5
    elif condition == "motion":
        cam.motion = mod * (0.6 + 2.2 * sev)
    elif condition == "defocus":
        cam.defocus = mod * (0.3 + 0.9 * sev)
    elif condition == "multi":
        tilt = float(rng.uniform(0, 25))
        glare = float(rng.uniform(0.0, 1.0)) if rng.random() < 0.4 else 0.0
    if condition in ("small", "dense") and rng.random() < 0.5:
        tilt = float(rng.uniform(0, 25))
    hom = _camera_homography(rng, cw, ch, w, h, scale, tilt, roll)
    geo = Geometry(hom)
    label_centre = hom @ np.float64([cw / 2, ch / 2, 1])
    centre = (float(label_centre[0] / label_centre[2]), float(label_centre[1] / label_centre[2]))
    if "cylinder_r" in geo_kw:
        extent = scale * max(cw, ch)
        geo.cylinder_r = extent * float(1.2 - 0.65 * sev)
        # the axis runs along the bars or across them: both happen on tubes and bottles
        geo.cylinder_axis = math.radians(roll + float(rng.choice([0.0, 90.0])))
    if "crumple" in geo_kw:
        geo.crumple = geo_kw["crumple"]
        geo.creases = int(rng.integers(0, 4))
    mx, my, shade = frame_to_canvas(geo, w, h, rng, centre)
    # low-pass the canvas to the camera's sampling rate, then look it up
    sigma = 0.45 / max(scale, 1e-3)
    src = cv2.GaussianBlur(canvas, (0, 0), sigma) if sigma > 0.6 else canvas
    refl = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
    inside = (refl >= 0) & (shade > 0)
    tint = rng.uniform(0.92, 1.05, 3).astype(np.float32)
    bg = background(rng, w, h)
    rad = np.where(inside[..., None], refl[..., None] * tint[None, None, :] * shade[..., None], bg)
    light = _illumination(rng, w, h, shadow)
    lamp = rng.uniform(0.85, 1.1, 3).astype(np.float32)  # warm or cool light
    rad = rad * light[..., None] * lamp[None, None, :]
    if glare > 0:
        rad = rad + _glare(rng, w, h, inside.astype(np.float32), centre, glare)[..., None]
    img = photograph(rad.astype(np.float32), cam, rng)
    note = (f"{condition} sev={sev:.2f} mod={mod:.2f} tilt={tilt:.0f} roll={roll:.0f} jpeg={cam.jpeg} "
            f"e={cam.electrons:.0f} blur={cam.defocus:.1f}/{cam.motion:.1f} glare={glare:.1f}")
    return img, note


def no_code_scene(rng: np.random.Generator, kind: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A photograph with nothing to read, made to tempt a decoder (every read is a misread)."""
    w, h = size
    bg = background(rng, w, h, "cardboard" if kind == "cardboard" else None)
    cam = Camera(defocus=float(rng.uniform(0, 1.2)), electrons=float(rng.uniform(2500, 8000)),
                 jpeg=int(rng.integers(60, 86)), sharpen=float(rng.uniform(0.2, 0.9)))
    rad = bg
    if kind in ("print", "glare", "dark"):
        lw, lh = int(rng.integers(500, 1000)), int(rng.integers(350, 700))
        ink = np.zeros((lh, lw), np.uint8)
        _print_lines(ink, rng, 20, 10, lw - 40, lh - 20, float(rng.uniform(0.6, 1.3)))
        refl = 0.85 - 0.75 * ink.astype(np.float32) / 255.0
        x0, y0 = int(rng.integers(0, w - lw)), int(rng.integers(0, h - lh))
        rad = bg.copy()
        rad[y0:y0 + lh, x0:x0 + lw] = refl[..., None]
        if kind == "glare":
            mask = np.zeros((h, w), np.float32)
            mask[y0:y0 + lh, x0:x0 + lw] = 1
            spec = _glare(rng, w, h, mask, (x0 + lw / 2, y0 + lh / 2), float(rng.uniform(1, 3)))
            rad = rad + spec[..., None]
        if kind == "dark":
            cam.electrons = float(rng.uniform(8, 40))
            cam.read_noise = 5.0
    elif kind == "stripes":  # a striped shopping bag, a radiator, a ruled ledger
        yy, xx = _grid(h, w)
        a = float(rng.uniform(0, math.pi))
        u = xx * math.cos(a) + yy * math.sin(a)
        period = float(rng.uniform(5, 25))
        jitter = cv2.resize(rng.normal(0, 1, (1, 64)).astype(np.float32), (w, h))
        duty = float(rng.uniform(-0.5, 0.5))
        bars = (np.sin(2 * math.pi * u / period + 2 * jitter) > duty).astype(np.float32)
        rad = bg * (0.35 + 0.65 * bars[..., None])
    elif kind == "cardboard":  # the corrugated edge of a box
        yy, xx = _grid(h, w)
        flute = 0.5 + 0.5 * np.sin(2 * math.pi * xx / float(rng.uniform(8, 14)))
        band = (np.abs(yy - h / 2) < float(rng.uniform(40, 160))).astype(np.float32)
        rad = bg * (1 - 0.5 * band[..., None] * flute[..., None])
    light = _illumination(rng, w, h, rng.random() < 0.5)
    return photograph((rad * light[..., None]).astype(np.float32), cam, rng)


# ---------------------------------------------------------------- the sets
def field_frame(split_seed: int, condition: str, fmt: str, i: int) -> FieldFrame:
    """Frame ``i`` of one symbology under one condition (not "multi"), as ``make_field_set`` makes it."""
    rng = frame_rng(split_seed, CONDITIONS.index(condition), SYMBOLOGIES.index(fmt), i)
    text = content(rng, fmt, dense=condition == "dense")
    img, note = scene(rng, condition, [(text, fmt)])
    return FieldFrame(condition, img, [truth(text, fmt)], fmt, note)


def no_code_frame(split_seed: int, kind: str, i: int) -> FieldFrame:
    rng = frame_rng(split_seed, 1000 + NO_CODE_KINDS.index(kind), 0, i)
    return FieldFrame("no_code", no_code_scene(rng, kind), [], "", kind)


def make_field_set(split_seed: int, n_per: int = 6, n_multi: int = 24, n_none: int = 10) -> list[FieldFrame]:
    """Every condition x symbology ``n_per`` times, ``n_multi`` multi-symbol labels and
    ``n_none`` frames of each no-code kind; deterministic in ``split_seed``."""
    frames: list[FieldFrame] = []
    for ci, cond in enumerate(CONDITIONS):
        if cond == "multi":
            for i in range(n_multi):
                rng = frame_rng(split_seed, ci, 99, i)
                k = int(rng.integers(2, 5))
                fmts = [str(f) for f in rng.choice(SYMBOLOGIES, k, replace=False)]
                items = [(content(rng, f), f) for f in fmts]
                img, note = scene(rng, cond, items)
                frames.append(FieldFrame(cond, img, [truth(t, f) for t, f in items], "", note))
            continue
        for fmt in SYMBOLOGIES:
            frames += [field_frame(split_seed, cond, fmt, i) for i in range(n_per)]
    for kind in NO_CODE_KINDS:
        frames += [no_code_frame(split_seed, kind, i) for i in range(n_none)]
    return frames
