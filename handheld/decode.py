"""Barcode decoding for the courier handheld: zxing-cpp for the symbols, OpenCV
for the image work around it.

Why this shape. zxing-cpp on the whole frame is fast and reads most labels a
courier points a phone at; what it misses are bars seen at an angle, labels
far away (a module under ~1.5 px), noisy frames from a dim shop and faded
thermal print. Throwing more whole-frame passes at every frame would multiply
the cost of every frame, the easy ones included. So:

1. **First pass**: zxing-cpp on the full frame with its own rotate and
   downscale tries (not invert: parcels print dark on light, and those tries
   cost a quarter of the pass), restricted to the symbologies a post outlet
   meets (Code 128, Code 39, ITF, EAN/UPC, QR, Data Matrix, PDF417). Data Matrix and
   PDF417 stay in: parcel labels carry them (GS1 DataMatrix, postal 2D
   indicia and franking, carriers' PDF417 shipping and customs blocks) and
   both are Reed-Solomon protected, so accepting them costs no misreads.
   Dropping the rest (Codabar, DataBar, Code 93, Aztec, MaxiCode, ...) is
   both faster and removes the formats that most often "read" noise. ITF
   reads shorter than 14 digits are dropped everywhere: ITF has no check
   character of its own, a scan line leaving the symbol early yields a
   shorter even-length read, and logistics prints ITF-14.
2. **Stop** when every read is trustworthy: a 2D symbol (Reed-Solomon
   protected) or a 1D read whose text passes a check-digit validator from
   ``protocol.barcodes`` (S10, EAN/UPC, GS1).
3. **Otherwise, targeted retries** (nothing found, or a 1D read that fails
   validation): OpenCV finds candidate regions from the gradient structure
   tensor (bars = strong, coherent gradients), each region is cut out with
   an affine warp that turns its dominant edges upright (bars vertical; a
   PDF417's rows horizontal, which zxing-cpp's PDF417 reader needs beyond a
   few degrees of roll) and scales the modules to a readable width, and
   zxing-cpp reads a few enhanced versions of that small crop. 1D: smoothed
   *along* the bars (kills sensor noise without touching the bar edges),
   the crop as cut, sharpened across the bars. 2D: CLAHE read with the
   global-histogram binarizer (glare, shadows, low light), smoothed and
   stretched under one global threshold (creased and dim labels), locally
   normalised (a highlight or shadow edge across the symbol), smoothed, as
   cut, sharpened. A 2D region is cut through the four corners of its
   outline (a homography), not by an affine warp: a symbol or label seen at
   an angle becomes a rectangle again, where the affine cut left a PDF417's
   rows converging; after that cut's variants, the affine cut is read twice
   (CLAHE, and softened then sharpened, both under the global histogram)
   for the square symbols whose outline is a poor quadrilateral and dim
   PDF417s. Linear regions long enough for a 1D symbol (and longer than
   their bars are tall) go first, then 2D regions, then the other coherent
   blobs (a PDF417's columns and start/stop patterns, print). Retries
   stop at the first trustworthy read in a region. Crops are read without
   zxing-cpp's rotate tries (they are deskewed; the tries cost 3x a read),
   except the first variant of each 2D cut. When nothing at all was read,
   the whole frame averaged down to 0.7 of its size (area resampling takes
   out shot noise) is read once: dim and noisy frames. Before that, when
   nothing trusted was read, a 2D region the region budget never reached
   (a PDF417's columns look like 1D regions and go first) gets the corner
   cut's first two variants.
4. **Label read**: a region that already holds a trusted read (usually the
   whole label) is read once more, deskewed and stretched: on labels with
   several symbols the first pass often reads one and stops, and this finds
   the rest. It also runs, once, after a conclusive first pass, with a
   coarser region search; when the label has then given two symbols, its
   2D region (the whole label) is read once more, cut through its corners,
   for a third.

Reads from retries are held to a higher bar than the first pass (they come
from images we have pushed around): a 1D retry read is kept only if it
passes a check digit, or it is Code 128 or Code 39 with text that is not a
failed attempt at a checked scheme (digits in plain Code 128 are no failed
EAN/UPC: GS1 puts none there), or an ITF longer than ITF-14 (no failed
GTIN-14, a number of its own); an EAN/UPC retry read (mod-10 check only)
and such an ITF (no check at all) must be read again from the crop
resampled to 5/4 size. What measured
well and what did not is written down in ``bench/decode.py``'s docstring.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import zxingcpp

from protocol import barcodes

TARGET_2D = 620.0
#: Symbologies read at a post outlet. zxing-cpp names, as reported in ``Code.format``.
FORMATS = zxingcpp.barcode_formats_from_str("Code128,Code39,ITF,EANUPC,QRCode,DataMatrix,PDF417")
MATRIX_FORMATS = frozenset({"QRCode", "MicroQRCode", "RMQRCode", "DataMatrix", "PDF417", "MicroPDF417",
                            "Aztec", "MaxiCode"})
#: 1D symbologies with a mandatory check character inside the symbol.
SELF_CHECKED_LINEAR = frozenset({"Code128", "EAN13", "EAN8", "UPCA", "UPCE"})

Quad = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Code:
    """One decoded symbol.

    ``kind`` is the validator's verdict when the text passes a check digit
    (``"s10"``, ``"ean13"``, ``"sscc"``, ``"gtin"``...), else None: a
    domestic waybill (format only, no public check digit) or free text.
    ``stage`` says which pass read it ("first" or the retry variant), for
    benchmarks and field logs.
    """

    text: str
    format: str
    quad: Quad
    kind: str | None = None
    symbology: str = ""
    stage: str = "first"

    @property
    def linear(self) -> bool:
        return self.format not in MATRIX_FORMATS

    @property
    def validated(self) -> bool:
        return self.kind is not None

    @property
    def trusted(self) -> bool:
        """Safe to act on from a single frame: error-corrected 2D, or a passed check digit."""
        return self.validated or not self.linear

    def center(self) -> tuple[float, float]:
        xs = [p[0] for p in self.quad]
        ys = [p[1] for p in self.quad]
        return sum(xs) / 4.0, sum(ys) / 4.0

    def to_json(self) -> dict[str, object]:
        return {"text": self.text, "format": self.format, "kind": self.kind}


def check(text: str, symbology: str = "") -> tuple[str | None, str]:
    """(kind, reason): the validator's kind if the text passes a *check digit*, else (None, reason).

    Domestic waybills classify as ok but carry no check digit, so they do
    not count as validated here.
    """
    v = barcodes.classify(symbology + text if symbology else text)
    if v["ok"] and v.get("check") != "none":
        return str(v["kind"]), ""
    return None, str(v.get("reason", "unchecked"))


def to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    if img.shape[2] == 1:
        return img[:, :, 0]
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _quad(pos: zxingcpp.Position, m_inv: np.ndarray | None = None) -> Quad:
    """The read's corners in frame pixels; ``m_inv`` maps crop to frame (2 x 3 affine or 3 x 3 homography)."""
    pts = np.float32([[pos.top_left.x, pos.top_left.y], [pos.top_right.x, pos.top_right.y],
                      [pos.bottom_right.x, pos.bottom_right.y], [pos.bottom_left.x, pos.bottom_left.y]])
    if m_inv is not None and m_inv.shape[0] == 3:
        pts = cv2.perspectiveTransform(pts.reshape(-1, 1, 2), m_inv.astype(np.float64)).reshape(-1, 2)
    elif m_inv is not None:
        pts = pts @ m_inv[:, :2].T + m_inv[:, 2]
    return tuple((int(round(float(x))), int(round(float(y)))) for x, y in pts)  # type: ignore[return-value]


def _to_code(b: zxingcpp.Barcode, stage: str, m_inv: np.ndarray | None = None) -> Code:
    sym = b.symbology_identifier or ""
    kind, _ = check(b.text, sym)
    return Code(text=b.text, format=b.format.name, quad=_quad(b.position, m_inv), kind=kind,
                symbology=sym, stage=stage)


def read_zxing(gray: np.ndarray, *, formats: zxingcpp.BarcodeFormats = FORMATS, rotate: bool = True,
               downscale: bool = True, invert: bool = True,
               binarizer: zxingcpp.Binarizer = zxingcpp.Binarizer.LocalAverage) -> list[zxingcpp.Barcode]:
    return zxingcpp.read_barcodes(gray, formats=formats, try_rotate=rotate, try_downscale=downscale,
                                  try_invert=invert, binarizer=binarizer)


# ---------------------------------------------------------------- regions
@dataclass
class Region:
    """A place in the frame that looks like a symbol: centre, bar-normal angle, extents."""

    cx: float
    cy: float
    theta: float  # radians; direction of the intensity gradient (across the bars)
    length: float  # extent across the bars, frame pixels
    width: float  # extent along the bars
    coherence: float  # 1 = perfectly parallel edges (1D), low = 2D / text
    score: float
    linear: bool = True  # segmented as parallel bars
    contour: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 2), np.float32))

    def contains(self, x: float, y: float) -> bool:
        u = (x - self.cx) * math.cos(self.theta) + (y - self.cy) * math.sin(self.theta)
        v = -(x - self.cx) * math.sin(self.theta) + (y - self.cy) * math.cos(self.theta)
        return abs(u) <= self.length / 2 + 8 and abs(v) <= self.width / 2 + 8


_BINS = 16
_MIN_LINEAR = 64.0  # px across the bars: a 1D symbol at >= 1 px per module
_NEAR = math.cos(1.5 * 2 * math.pi / _BINS)  # within +-17 degrees of a peak (+-34 doubled)


def _blobs(mask: np.ndarray, close: int) -> list[np.ndarray]:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close, close))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c for c in contours if cv2.contourArea(c) >= 120]


def find_regions(gray: np.ndarray, max_regions: int = 4, work_side: int = 640) -> list[Region]:
    """Candidate symbol regions from the gradient structure tensor, linear ones first.

    Bars give strong gradients that all point one way (high coherence, at
    pixel level even when blurred); print and 2D symbols give strong
    gradients in mixed directions. A label is bars *and* print, so the two
    are segmented separately: a mask of coherent edges for 1D symbols, and
    one of all strong edges for 2D symbols. The energy threshold is relative
    to the frame's median so a faded label in a dim frame still shows up;
    regions too thin or too small to hold a symbol are dropped.
    """
    h, w = gray.shape
    s = min(1.0, work_side / max(h, w))
    small = cv2.resize(gray, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else gray
    f = small.astype(np.float32)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3)
    win = (9, 9)
    jxx = cv2.boxFilter(gx * gx, -1, win)
    jyy = cv2.boxFilter(gy * gy, -1, win)
    jxy = cv2.boxFilter(gx * gy, -1, win)
    energy = jxx + jyy
    diff = jxx - jyy
    root = cv2.sqrt(diff * diff + 4 * jxy * jxy)  # once: coherence and the doubled angle both need it
    coh = root / (energy + 1e-3)
    thr = max(8.0 * float(np.median(energy[::3, ::3])), 60.0)
    strong = energy > thr
    # Split coherent edges by orientation (doubled angle, so a bar's two edges agree): bars and the
    # text lines beside them on a label point different ways and must not merge into one region.
    coherent = strong & (coh > 0.6)
    mag = root + 1e-3
    cphi, sphi = diff / mag, (2 * jxy) / mag  # cos, sin of the doubled gradient angle
    phi = np.arctan2(sphi[coherent], cphi[coherent])
    hist, _ = np.histogram(phi, bins=_BINS, range=(-math.pi, math.pi), weights=energy[coherent])
    found: list[tuple[np.ndarray, bool]] = []
    if hist.size and hist.max() > 0:
        peaks = [i for i in range(_BINS) if hist[i] >= 0.12 * hist.max()
                 and hist[i] >= hist[(i - 1) % _BINS] and hist[i] > hist[(i + 1) % _BINS]]
        for i in sorted(peaks, key=lambda i: -hist[i])[:3]:
            centre = -math.pi + (i + 0.5) * 2 * math.pi / _BINS
            near = (cphi * math.cos(centre) + sphi * math.sin(centre)) > _NEAR
            found += [(c, True) for c in _blobs((coherent & near).astype(np.uint8), 9)]
    found += [(c, False) for c in _blobs(strong.astype(np.uint8), 15)]
    out: list[Region] = []
    for c, linear in found:
        x, y, bw, bh = cv2.boundingRect(c)
        blob = np.zeros((bh, bw), np.uint8)
        cv2.drawContours(blob, [c - [x, y]], -1, 1, -1)
        sl = (slice(y, y + bh), slice(x, x + bw))
        wgt = blob.astype(np.float32)
        sxx, syy, sxy = (float((j[sl] * wgt).sum()) for j in (jxx, jyy, jxy))
        theta = 0.5 * math.atan2(2 * sxy, sxx - syy)
        coherence = math.sqrt((sxx - syy) ** 2 + 4 * sxy * sxy) / (sxx + syy + 1e-6)
        pts = c.reshape(-1, 2).astype(np.float32) / s
        u = pts @ np.float32([math.cos(theta), math.sin(theta)])
        v = pts @ np.float32([-math.sin(theta), math.cos(theta)])
        length, width = float(u.max() - u.min()), float(v.max() - v.min())
        if min(length, width) < 12 or (linear and length < 24):
            continue
        cu, cv_ = (u.max() + u.min()) / 2, (v.max() + v.min()) / 2
        cx = cu * math.cos(theta) - cv_ * math.sin(theta)
        cy = cu * math.sin(theta) + cv_ * math.cos(theta)
        mean_e = float((energy[sl] * wgt).sum() / max(1.0, float(wgt.sum())))
        score = float(wgt.sum()) * (0.3 + coherence) * math.sqrt(mean_e)
        out.append(Region(float(cx), float(cy), theta, length, width, coherence, score, linear, pts))
    # Linear regions long enough to hold a 1D symbol (EAN-8, the shortest, is 67 modules) and longer
    # than their bars first, then 2D ones, then the other linear blobs: the columns and start/stop
    # patterns of a PDF417 (bars taller than the blob is long) or a line of print, which the whole
    # PDF417's (2D) region covers.
    out.sort(key=lambda r: (0 if _bar_code_like(r) else 2 if r.linear else 1, -r.score))
    return out[:max_regions]


def _bar_code_like(r: Region) -> bool:
    """A linear region shaped like a 1D symbol: long enough for one, and longer across its bars than
    along them (1D symbols print bars at most about as tall as the symbol is long; a PDF417's start and
    stop patterns and its columns are bars taller than the blob they make is long)."""
    return r.linear and r.length >= _MIN_LINEAR and r.width <= r.length


def warp_region(gray: np.ndarray, r: Region, scale: float, margin: float = 0.12,
                upright: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Cut out ``r`` scaled by ``scale``; with ``upright`` the bars end up vertical.

    Returns the crop and the inverse affine map (crop → frame) for quads.
    """
    th = r.theta if upright else 0.0
    c, s = math.cos(th), math.sin(th)
    if upright:
        lw, ww = r.length, r.width
    else:  # axis-aligned box around the rotated one
        lw = abs(r.length * math.cos(r.theta)) + abs(r.width * math.sin(r.theta))
        ww = abs(r.length * math.sin(r.theta)) + abs(r.width * math.cos(r.theta))
    pad = margin * max(lw, ww) + 12
    out_w = int((lw + 2 * pad) * scale)
    out_h = int((ww + 2 * pad) * scale)
    # frame -> crop: rotate by -theta about the centre, scale, move centre to the crop's centre.
    m = np.float32([[c * scale, s * scale, 0], [-s * scale, c * scale, 0]])
    m[:, 2] = np.float32([out_w / 2, out_h / 2]) - m[:, :2] @ np.float32([r.cx, r.cy])
    crop = cv2.warpAffine(gray, m, (out_w, out_h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return crop, cv2.invertAffineTransform(m)


#: A 2D region less than this many times longer than wide (a QR, a Data Matrix) is also cut affine.
_ELONGATED = 1.4


def warp_quad(gray: np.ndarray, r: Region, scale: float,
              margin: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Cut out ``r`` through a homography from the four corners of its outline: a tilted label's
    symbol becomes a rectangle again.

    An affine cut turns the symbol upright but leaves the sides of a symbol
    seen at an angle converging; a PDF417's rows then run out of their
    columns and zxing-cpp reads nothing (measured on the field set's dev
    split: perspective PDF417 0 of 4 with the affine cut). The corners are
    the outline's extremes along the region's two diagonals, in the region's
    own (bar-normal) axes. Returns the crop and the inverse homography.
    """
    hull = cv2.convexHull(r.contour.astype(np.float32)).reshape(-1, 2)
    # The outline's own axes (its minimum-area rectangle), the one of them nearest the bar normal
    # across: the structure tensor's angle means little for a square 2D symbol, and 45 degrees off
    # its sides the diagonal extremes would fall on an edge instead of a corner.
    a = math.radians(cv2.minAreaRect(hull)[2])
    a = min((a + k * math.pi / 2 for k in range(4)),
            key=lambda t: abs(math.remainder(t - r.theta, 2 * math.pi)))
    c, s = math.cos(a), math.sin(a)
    u = (hull[:, 0] - r.cx) * c + (hull[:, 1] - r.cy) * s
    v = -(hull[:, 0] - r.cx) * s + (hull[:, 1] - r.cy) * c
    q = np.float32([hull[np.argmin(u + v)], hull[np.argmax(u - v)], hull[np.argmax(u + v)],
                    hull[np.argmin(u - v)]])
    w = max(float(np.linalg.norm(q[1] - q[0])), float(np.linalg.norm(q[2] - q[3])), 8.0) * scale
    h = max(float(np.linalg.norm(q[3] - q[0])), float(np.linalg.norm(q[2] - q[1])), 8.0) * scale
    pad = margin * max(w, h) + 12
    dst = np.float32([[pad, pad], [pad + w, pad], [pad + w, pad + h], [pad, pad + h]])
    m = cv2.getPerspectiveTransform(q, dst)
    crop = cv2.warpPerspective(gray, m, (int(w + 2 * pad), int(h + 2 * pad)), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)
    return crop, np.linalg.inv(m)


# ---------------------------------------------------------------- enhancements
def stretch(img: np.ndarray) -> np.ndarray:
    """Contrast stretch between the 1st and 99th percentiles (robust to specular glints)."""
    lo, hi = np.percentile(img[::2, ::2], (1, 99))  # a quarter of the pixels give the same percentiles
    if hi - lo < 2:
        return img
    return cv2.convertScaleAbs(img, alpha=255.0 / (hi - lo), beta=-lo * 255.0 / (hi - lo))


def smooth_along_bars(img: np.ndarray, length: int) -> np.ndarray:
    """Average along the (vertical) bars: noise falls by sqrt(length), bar edges keep their sharpness."""
    k = max(3, length | 1)
    return cv2.blur(img, (1, k))


def sharpen_across(img: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """Unsharp mask across the bars only, undoing some defocus without amplifying noise along them."""
    f = img.astype(np.float32)
    b = cv2.GaussianBlur(f, (0, 0), sigmaX=sigma, sigmaY=0.1)
    return np.clip(f + amount * (f - b), 0, 255).astype(np.uint8)


def sharpen(img: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """Isotropic unsharp mask, for 2D symbols out of focus."""
    f = img.astype(np.float32)
    return np.clip(f + amount * (f - cv2.GaussianBlur(f, (0, 0), sigma)), 0, 255).astype(np.uint8)


def local_normalise(img: np.ndarray, sigma: float) -> np.ndarray:
    """Subtract the local mean and divide by the local spread (Gaussian windows of ``sigma``).

    A glossy label's highlight, a shadow edge or a dim corner changes the
    light across a symbol faster than CLAHE's tiles follow; dividing by the
    local contrast puts every module on one scale whatever lights it.
    """
    f = img.astype(np.float32)
    k = int(2 * sigma) | 1  # box windows: a tenth of the Gaussian's cost, and the same rescues
    mu = cv2.blur(f, (k, k))
    sd = np.sqrt(np.maximum(cv2.blur((f - mu) ** 2, (k, k)), 0.0)) + 4.0  # running sums dip below 0
    return np.clip(128.0 + 60.0 * (f - mu) / sd, 0, 255).astype(np.uint8)


_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
_LA, _GH = zxingcpp.Binarizer.LocalAverage, zxingcpp.Binarizer.GlobalHistogram


Variant = tuple[str, np.ndarray, zxingcpp.Binarizer]


def variants(crop: np.ndarray, linear: bool, scale: float) -> Iterable[Variant]:
    """Enhanced versions of an upright crop and the binarizer to read each with, most useful first
    (order measured by bench/decode.py).

    Linear: smoothing along the bars rescues nearly every noisy, rotated or
    faded read on its own; the crop as cut reads the stacked rows of a PDF417
    that smoothing would merge; a strong unsharp mask across the bars (sigma
    ~1.6 frame px) rescues defocus; a mild one rescues far-away labels whose
    modules are ~1 px. 2D: local contrast equalisation (CLAHE on 4 x 4 tiles)
    read with zxing's global-histogram binarizer rescues glare, shadow and
    low light (the crop is small, so one threshold fits it once CLAHE has
    flattened the light); a Gaussian smoothing at the upscaling's scale
    rescues noise and JPEG blocks; then the crop as cut, then sharpened
    (motion blur and defocus).
    """
    if linear:
        sm = stretch(smooth_along_bars(crop, max(5, crop.shape[0] // 6)))
        return [
            ("smooth", sm, _LA),
            ("upright", stretch(crop), _LA),
            ("sharp", sharpen_across(sm, max(2.0, 1.6 * scale), 4.0), _LA),
            ("mild", sharpen_across(sm, max(1.5, 1.0 * scale), 2.0), _LA),
        ]
    return _variants_2d(crop, scale)


def _variants_2d(crop: np.ndarray, scale: float) -> Iterator[Variant]:
    """Made one at a time: most 2D regions stop at the first or second."""
    yield "clahe", _CLAHE.apply(crop), _GH
    soft = cv2.GaussianBlur(crop, (0, 0), 0.5 * scale + 0.5)
    yield "softgh", stretch(soft), _GH
    yield "norm", local_normalise(crop, max(8.0, 6.0 * scale)), _LA
    yield "soft", soft, _LA
    yield "plain", crop, _LA
    yield "sharp", sharpen(crop, max(1.5, 2.0 * scale), 2.0), _LA


def edge_count(crop: np.ndarray) -> int:
    """Bar/space transitions along the middle of an upright crop (a 1D symbol has 20 to 100+).

    Costs ~0.1 ms and saves the zxing calls on label edges and ruled lines,
    which the region finder rightly reports as coherent but which hold no bars.
    """
    h = crop.shape[0]
    prof = crop[h // 3: max(h // 3 + 1, 2 * h // 3)].mean(axis=0).astype(np.float32)
    if prof.size < 16:
        return 0
    k = max(9, (prof.size // 12) | 1)
    local = cv2.blur(prof.reshape(1, -1), (k, 1)).ravel()
    d = prof - local
    amp = float(np.percentile(np.abs(d), 90))
    if amp < 1.0:
        return 0
    sign = np.where(d > 0.25 * amp, 1, np.where(d < -0.25 * amp, -1, 0))
    sign = sign[sign != 0]
    return int(np.count_nonzero(sign[1:] != sign[:-1]))


# ---------------------------------------------------------------- pipeline
@dataclass
class DecodeStats:
    """What the last call spent, for the bench and field telemetry."""

    first_ms: float = 0.0
    retry_ms: float = 0.0
    regions: int = 0
    attempts: int = 0


def _retry_ok(code: Code) -> bool:
    """Retry reads come from pushed-around images: only self-evidently right ones are kept."""
    if code.trusted:
        return True
    if code.format in ("Code128", "Code39"):
        _, reason = check(code.text, code.symbology)
        if code.format == "Code128" and code.symbology == "]C0" and reason in _NOT_EAN:
            # Digits in plain Code 128 are not an EAN/UPC that failed its check: GS1 never puts a GTIN in
            # plain Code 128, and the symbol's own mod-103 check already passed. A waybill or an internal
            # number; the first pass keeps them, so a retry may too.
            return True
        return reason == "unrecognised"  # free text, not a failed S10/GS1 (or an EAN in Code 39)
    # ITF longer than ITF-14 is no failed GTIN-14 but a number of its own (no check character in the
    # symbology): kept, once read again from the resampled crop like the weakly checked EAN/UPC.
    return code.format == "ITF" and len(code.text) > _ITF_MIN


#: ``check`` reasons for digits that are no EAN/UPC: the validator tried EAN on them for want of better.
_NOT_EAN = frozenset({"unrecognised", "ean_check_digit", "ean_format"})


#: ITF has no check character of its own and partial reads of it are common (a scan line that
#: leaves the symbol early still ends on a valid-looking pair of digits); logistics prints ITF-14
#: (GTIN-14, GS1 check digit; a 12-digit fragment passes that check one time in ten). ITF reads
#: shorter than 14 digits are dropped.
_ITF_MIN = 14


def plausible(code: Code) -> bool:
    """False for reads that are far more often a fragment than a symbol: a short ITF."""
    return not (code.format == "ITF" and len(code.text) < _ITF_MIN)


#: Symbologies whose only protection is a mod-10 check digit: a misdecoded digit pair from an
#: enhanced crop passes it one time in ten, so a retry read of them must be read again.
WEAK_CHECK = frozenset({"EAN13", "EAN8", "UPCA", "UPCE"})


def _confirmed(code: Code, var: np.ndarray, formats: zxingcpp.BarcodeFormats, rotate: bool) -> bool:
    """The same text from the same crop resampled to 5/4 size (new pixel phases, new bar edges)."""
    big = cv2.resize(var, None, fx=1.25, fy=1.25, interpolation=cv2.INTER_LINEAR)
    return any(b.text == code.text for b in read_zxing(big, formats=formats, rotate=rotate, downscale=False,
                                                        invert=False))


def _same(a: Code, b: Code) -> bool:
    return a.text == b.text and a.format == b.format


def _span(c: Code) -> float:
    return float(np.hypot(c.quad[1][0] - c.quad[0][0], c.quad[1][1] - c.quad[0][1]))


def _expanded(quad: Quad, grow_min: float) -> np.ndarray:
    """A linear read's quad grown along its bars: zxing's quad spans only the scan lines that decoded."""
    q = np.float32(quad)
    across = q[1] - q[0]
    along = q[3] - q[0]
    if float(np.hypot(*along)) < 2.0:
        along = np.float32([-across[1], across[0]])
    n = along / max(float(np.hypot(*along)), 1e-6)
    grow = max(grow_min, 0.25 * float(np.hypot(*(q[3] - q[0]))))
    return np.float32([q[0] - n * grow, q[1] - n * grow, q[2] + n * grow, q[3] + n * grow])


#: Short retail symbols that zxing now and then finds inside part of a longer symbol's bars.
_SUBREAD_PRONE = frozenset({"UPCE", "EAN8"})


def _on_bars(big: Code, small: Code) -> bool:
    """Does ``small`` sit on ``big``'s bars? For the sub-read-prone formats anywhere along the bars
    (their height is unknown: up to ~half the symbol's length), otherwise near the lines that decoded."""
    grow = 0.45 * _span(big) if small.format in _SUBREAD_PRONE else 12.0
    return cv2.pointPolygonTest(_expanded(big.quad, grow), small.center(), False) >= 0


def drop_subreads(codes: list[Code]) -> list[Code]:
    """Drop a shorter 1D read lying on a longer one's bars: one symbol cannot sit inside another.

    zxing reads a UPC-E or EAN-8 now and then out of part of a slanted
    EAN-13 or Code 128, check digit and all; the longer read is the real one.
    Measured: this removes the only misreads zxing-cpp makes on the bench set.
    """
    keep = []
    for a in codes:
        inside = a.linear and any(
            b is not a and b.linear and b.text != a.text and _span(b) > _span(a) and _on_bars(b, a)
            for b in codes)
        if not inside:
            keep.append(a)
    return keep


def _read_crop(var: np.ndarray, binarizer: zxingcpp.Binarizer, name: str, m_inv: np.ndarray,
               formats: zxingcpp.BarcodeFormats, codes: list[Code],
               invert: bool = False) -> tuple[list[Code], bool, int]:
    """Read one enhanced crop; add what passes the retry bar to ``codes``.

    Returns the new list, whether anything was accepted, and the extra zxing
    calls spent confirming weakly checked reads.
    """
    found, extra = False, 0
    # The crop is deskewed, so zxing's rotate tries are wasted on it (3x a read's time) except with the
    # first 2D variant of each cut: reading a Data Matrix turned 90 degrees sometimes finds it where upright
    # did not.
    for b in read_zxing(var, formats=formats, rotate=name in ("clahe", "quad-clahe"), downscale=False,
                        invert=invert, binarizer=binarizer):
        c = _to_code(b, name, m_inv)
        if not _retry_ok(c) or not plausible(c):
            continue
        weak = c.format in WEAK_CHECK or (c.format == "ITF" and not c.trusted)
        if weak and not _confirmed(c, var, formats, False):
            extra += 1
            continue
        found = True
        # A trusted retry read replaces a doubtful first-pass read of the same symbol.
        if c.trusted:
            codes = [d for d in codes if d.trusted or not _on_bars(c, d)]
        if not any(_same(c, d) for d in codes):
            codes.append(c)
    return codes, found, extra


def _label_read(gray: np.ndarray, r: Region, codes: list[Code],
                formats: zxingcpp.BarcodeFormats) -> list[Code]:
    """One read of a region that already holds a read: the rest of a label with several symbols.

    Measured on the field set's dev split: most symbols missed on labels with
    2 to 4 symbols sat in a region holding one already read, deskewed by that
    region's edges and contrast-stretched, zxing-cpp reads them at once.
    """
    scale = float(np.clip(620.0 / max(r.length, r.width, 1.0), 0.6, 4.0))
    crop, m_inv = warp_region(gray, r, scale, upright=True)
    return _read_crop(stretch(crop), _LA, "label", m_inv, formats, codes)[0]


def _label_quad_read(gray: np.ndarray, r: Region, codes: list[Code],
                     formats: zxingcpp.BarcodeFormats) -> list[Code]:
    """One more read of a label that already gave two symbols: its 2D region (the whole label) cut
    through its corners, CLAHE, one threshold.

    Why: the label read above takes the first region holding a read, and the
    region finder puts linear regions first, so that region is usually one
    symbol's bars (an EAN's), not the label: a PDF417 or a second EAN beside it
    lies outside that crop. A label that gave two symbols is a shipping label
    that often carries a third; reading single-symbol frames again would cost
    every conclusive frame (+9 % on the imagegen set) for nothing.
    """
    scale = float(np.clip(TARGET_2D / max(r.length, r.width, 1.0), 0.6, 4.0))
    crop, m_inv = warp_quad(gray, r, scale)
    return _read_crop(_CLAHE.apply(crop), _GH, "label-quad", m_inv, formats, codes)[0]


def _tries_2d(gray: np.ndarray, r: Region, scale: float
              ) -> Iterator[tuple[str, np.ndarray, zxingcpp.Binarizer, np.ndarray]]:
    """A 2D region's crops to read, in order: cut through its corners, then (square regions) the affine cut.

    Measured on the field set's dev split: the cut through the corners reads
    PDF417s and labels seen at an angle the affine cut cannot; on a few
    square symbols (QR, Data Matrix) whose outline is less of a rectangle
    (a crumpled or dim label) the affine cut read by the first variant still
    finds what it missed, and a dim PDF417 the affine cut softened, sharpened
    and read under one threshold.
    """
    crop, m_inv = warp_quad(gray, r, scale)
    for n, v, b in _variants_2d(crop, scale):
        yield "quad-" + n, v, b, m_inv
    crop, m_inv = warp_region(gray, r, scale, upright=True)
    yield "clahe", _CLAHE.apply(crop), _GH, m_inv
    # Soft, then sharpened at the module's scale, under one threshold: dim PDF417s whose rows shot noise
    # breaks up (2 of the dev split's low-light PDF417s; nothing else read them).
    yield "sharpgh", sharpen(cv2.GaussianBlur(crop, (0, 0), 0.5 * scale + 0.5), scale + 1.0, 2.0), _GH, m_inv


#: Variants of the corner cut read on a 2D region the region budget did not reach (see ``decode_image``).
_RESERVE_2D = 2

#: The whole-frame last try's resampling factor.
_AVERAGED = 0.7


def decode_image(img: np.ndarray, *, formats: zxingcpp.BarcodeFormats = FORMATS, retries: bool = True,
                 thorough: bool = False, max_regions: int = 4, max_attempts: int = 12,
                 stats: DecodeStats | None = None) -> list[Code]:
    """All codes in a BGR or grayscale frame, first-pass reads first.

    Retries run only when the first pass is not conclusive (nothing read, or
    a 1D read without a passed check digit), and are capped at
    ``max_regions`` regions and ``max_attempts`` zxing calls on crops so a
    frame's cost stays bounded. ``thorough`` (still images, where nobody is
    waiting on the next frame) also retries regions no read covers when every
    read was trusted: a second, damaged code on the same label.
    """
    gray = to_gray(img)
    t0 = time.perf_counter()
    # No invert tries here (a quarter of the first pass's time; parcels print dark on light): a light-on-dark
    # symbol is read by the last, averaged whole-frame read, which keeps them.
    codes = [c for c in (_to_code(b, "first") for b in read_zxing(gray, formats=formats, invert=False))
             if plausible(c)]
    t1 = time.perf_counter()
    if stats is not None:
        stats.first_ms = (t1 - t0) * 1000
    codes = drop_subreads(codes)
    # A lone UPC-E / EAN-8 may be a piece of a longer symbol the first pass missed: look again.
    conclusive = bool(codes) and all(c.trusted and c.format not in _SUBREAD_PRONE for c in codes)
    if not retries:
        return codes
    if conclusive and not thorough:
        # Every read trusted: one look at the label around them for a second symbol (a coarser region
        # search: the label is large).
        regions = find_regions(gray, max_regions=3 * max_regions, work_side=400)
        holding = [r for r in regions if any(r.contains(*c.center()) for c in codes)]
        for r in holding[:1]:
            codes = _label_read(gray, r, codes, formats)
        label = [r for r in holding if not r.linear][:1]
        if len(codes) >= 2 and label:
            codes = _label_quad_read(gray, label[0], codes, formats)
        return drop_subreads(codes)
    regions = find_regions(gray, max_regions=3 * max_regions)
    doubtful = [c for c in codes if not c.trusted or c.format in _SUBREAD_PRONE]
    # Regions holding a doubtful read first, then the rest in the finder's order (linear first).
    todo = [r for r in regions if any(r.contains(*c.center()) for c in doubtful)]
    todo += [r for r in regions if r not in todo]
    attempts = tried = labelled = 0
    tried_regions: list[Region] = []
    for r in todo:
        if tried >= max_regions or attempts >= max_attempts:
            break
        linear = r.linear
        done = [c for c in codes if c.trusted and c not in doubtful and c.linear == linear]
        if any(r.contains(*c.center()) for c in done):
            if not labelled:  # one label read per frame, as above
                labelled += 1
                attempts += 1
                codes = _label_read(gray, r, codes, formats)
            continue  # already read here
        # Aim for ~4 px per module: a Code 128 S10 is ~150 modules, EAN-13 95; 2D symbols vary.
        target = 620.0 if linear else TARGET_2D
        scale = float(np.clip(target / max(r.length, r.width, 1.0), 0.6, 4.0))
        if linear:
            crop, m_inv = warp_region(gray, r, scale, upright=True)
            if edge_count(crop) < 16:
                continue  # a label border or a ruled line: too few bars to be a symbol
            tries: Iterable[tuple[str, np.ndarray, zxingcpp.Binarizer, np.ndarray]] = (
                (n, v, b, m_inv) for n, v, b in variants(crop, linear, scale))
        else:
            tries = _tries_2d(gray, r, scale)
        tried += 1
        tried_regions.append(r)
        for name, var, binarizer, m_inv in tries:
            if attempts >= max_attempts:
                break
            attempts += 1
            codes, found, extra = _read_crop(var, binarizer, name, m_inv, formats, codes)
            attempts += extra
            if found:
                break
    if not any(c.trusted for c in codes):
        # The linear regions first can spend the whole budget on the start/stop patterns and columns of
        # a PDF417 (coherent bars, long enough for a 1D symbol) and never reach the symbol's own 2D
        # region. When nothing trusted was read, the first 2D region not yet tried gets the corner cut's
        # first two variants. Measured on the field set's dev split: 9 PDF417s (perspective, dim,
        # glare, motion, defocus, dense), no misread; with the sharpened affine cut ~3 ms (3 %) on a
        # frame with no code.
        for r in [r for r in todo if not r.linear and not any(r is d for d in tried_regions)][:1]:
            scale = float(np.clip(TARGET_2D / max(r.length, r.width, 1.0), 0.6, 4.0))
            for name, var, binarizer, m_inv in itertools.islice(_tries_2d(gray, r, scale), _RESERVE_2D):
                attempts += 1
                codes, found, extra = _read_crop(var, binarizer, name, m_inv, formats, codes)
                attempts += extra
                if found:
                    break
    if not codes and attempts < 2 * max_attempts:
        # Nothing anywhere: the frame averaged down to 0.7 of its size (area resampling), read whole.
        # Measured on the field set's dev split: dim and noisy frames whose Data Matrix, QR or UPC the
        # crops missed (the averaging takes out shot noise; modules of 3+ px survive it), and no
        # misreads on the frames with no code. No rotate or downscale tries (they doubled its cost and
        # rescued nothing more); the invert try, which the first pass leaves to it: ~9 ms, or twice that
        # when nothing is found, on frames with no read only.
        small = cv2.resize(gray, None, fx=_AVERAGED, fy=_AVERAGED, interpolation=cv2.INTER_AREA)
        back = np.float32([[1 / _AVERAGED, 0, 0], [0, 1 / _AVERAGED, 0]])
        codes = _read_crop(small, _LA, "averaged", back, formats, codes, invert=True)[0]
    codes = drop_subreads(codes)
    if stats is not None:
        stats.retry_ms = (time.perf_counter() - t1) * 1000
        stats.regions = tried
        stats.attempts = attempts
    return codes
