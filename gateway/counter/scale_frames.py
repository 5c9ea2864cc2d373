"""One frame of an electronic scale's continuous output, read into whole
grams. Three formats, chosen in the config (``[counter] scale_format``),
never guessed: two of them send the same bytes for different weights.

``mt-sics``  Mettler Toledo MT-SICS (the "MT-SICS Interface Commands"
             reference manual, level 0 commands ``S``/``SI``/``SIR``): lines
             ``S S     1.234 kg`` (stable), ``S D     1.230 kg`` (dynamic:
             not stable), ``S +`` overload, ``S -`` underload, ``S I`` busy,
             ``ES``/``ET``/``EL`` errors; CR LF after each. ``SIR`` asks for
             a weight "immediately and repeat", which is how the gateway
             gets a continuous stream from a balance (``scale.py`` sends it).
``eq-reversed``  the ``=`` continuous format of many Chinese weighing
             indicators (XK3190 family, e.g. the XK3190-A26 manual's
             "continuous communication format 1"; the A9 and A12 indicators
             and many 电子秤 boards copy it): 9 bytes per frame, ``=`` then
             the displayed value including its decimal point *lowest digit
             first*, then the sign position (``0`` or ``-``), no CR LF.
             Display 3.000 kg is sent ``=000.3000``; −1.00 is ``=00.1000-``.
             No stable flag and no unit: the unit is configured (kg by
             default) and stability comes from the readings alone.
``st-gs``    the comma-separated header format of A&D-style indicators
             (A&D's "standard format": header ``ST`` stable, ``US``
             unstable, ``OL`` overload, then the data), with the gross/net
             field many indicators add: ``ST,GS,+0001.234kg`` (``GS`` gross,
             ``NT`` net, ``TR`` tare), CR LF after each.

Not supported: XK3190 "format 0" (STX ... XOR ETX), the ``=`` format *not*
reversed (A26 format 2; it reads like ``eq-reversed`` with the digits the
other way round, so it is exactly the kind to configure, never guess), and
pounds: a unit other than g or kg is refused (``unit``).

Values become grams with decimal arithmetic, never floats (``1.2345 kg``
is 1234.5 g, rounded half up to 1235 g); a value longer than
``MAX_DIGITS`` digits is garbage, not a weight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

FORMATS = ("mt-sics", "eq-reversed", "st-gs")
MAX_DIGITS = 9
UNITS = {"g": 1, "kg": 1000}

# Status of one frame
OK = "ok"
OVERLOAD = "overload"
UNDERLOAD = "underload"
BUSY = "busy"


class FrameError(ValueError):
    """Bytes that are not a frame of the configured format; ``reason`` is
    ``garbage`` or ``unit``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Reading:
    status: str  # ok, overload, underload, busy
    grams: int | None = None  # with ok: may be negative
    stable: bool | None = None  # the scale's own flag; None when the format has none


_NUM = re.compile(r"^[+-]?[0-9]+(\.[0-9]*)?$|^[+-]?\.[0-9]+$")


def to_grams(value: str, unit: str) -> int:
    v = value.replace(" ", "")
    if not _NUM.match(v) or sum(c.isdigit() for c in v) > MAX_DIGITS:
        raise FrameError("garbage", f"not a weight: {value[:20]!r}")
    factor = UNITS.get(unit)
    if factor is None:
        raise FrameError("unit", f"unit {unit[:8]!r} is not g or kg")
    return int((Decimal(v) * factor).quantize(Decimal(1), rounding=ROUND_HALF_UP))


_SICS = re.compile(r"^S ([SD]) +([+-]? *[0-9.]+) ([a-zA-Z]{1,5})$")


def mt_sics(line: str) -> Reading:
    line = line.strip("\r\n")
    if line in ("S +",):
        return Reading(OVERLOAD)
    if line in ("S -",):
        return Reading(UNDERLOAD)
    if line in ("S I", "ES", "ET", "EL"):
        return Reading(BUSY)
    m = _SICS.match(line)
    if not m:
        raise FrameError("garbage", f"not an MT-SICS weight line: {line[:24]!r}")
    return Reading(OK, to_grams(m.group(2), m.group(3)), m.group(1) == "S")


def eq_reversed(frame: str, unit: str = "kg") -> Reading:
    """``frame`` is the 8 bytes after ``=``."""
    if len(frame) != 8:
        raise FrameError("garbage", f"an = frame has 8 characters after '=', got {len(frame)}")
    s = frame[::-1]  # sign position first, then the value highest digit first
    sign, digits = s[0], s[1:]
    if sign not in "0-" or digits.count(".") > 1 or not digits.replace(".", "").isdigit() \
            or not digits.isascii():
        raise FrameError("garbage", f"not an = frame: {frame!r}")
    g = to_grams(digits, unit)
    return Reading(OK, -g if sign == "-" else g, None)


_STGS = re.compile(r"^(ST|US|OL),(?:(GS|NT|TR),)?([+-][0-9. ]+?) *([a-zA-Z]{1,5})$")


def st_gs(line: str) -> Reading:
    line = line.strip("\r\n")
    m = _STGS.match(line)
    if not m:
        raise FrameError("garbage", f"not an ST/US/OL line: {line[:24]!r}")
    head = m.group(1)
    if head == "OL":
        return Reading(OVERLOAD)
    return Reading(OK, to_grams(m.group(3), m.group(4)), head == "ST")


def parse(fmt: str, frame: str, unit: str = "kg") -> Reading:
    if fmt == "mt-sics":
        return mt_sics(frame)
    if fmt == "eq-reversed":
        return eq_reversed(frame, unit)
    if fmt == "st-gs":
        return st_gs(frame)
    raise ValueError(f"unknown scale format {fmt!r} (known: {', '.join(FORMATS)})")


def split_frames(fmt: str, buf: bytes) -> tuple[list[bytes], bytes]:
    """Whole frames in ``buf`` and the rest to keep for the next read.
    Line formats end at LF (CR dropped); ``=`` frames start at ``=``."""
    if fmt == "eq-reversed":
        parts = buf.split(b"=")
        head, body = parts[0], parts[1:]
        frames = [head] if head.strip(b"\r\n") else []  # bytes before the first '=' are junk
        if not body:
            return frames, b""
        # the last part may be incomplete unless it already has its 8 bytes
        out = [p.strip(b"\r\n") for p in body[:-1]]
        last = body[-1]
        if len(last.strip(b"\r\n")) >= 8:
            out.append(last.strip(b"\r\n"))
            last_rest = b""
        else:
            last_rest = b"=" + last
        return frames + out, last_rest
    lines = buf.split(b"\n")
    return [ln.rstrip(b"\r") for ln in lines[:-1] if ln.rstrip(b"\r")], lines[-1]
