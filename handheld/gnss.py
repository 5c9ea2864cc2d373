"""Position for photo evidence from an NMEA 0183 GNSS receiver on a serial port.

Evidence of a bulletin-board install is only as good as the position stamped on it,
and receivers in rural China spend much of their time in poor conditions (valleys,
tree cover, a cold start after the handheld sat in a drawer). So this module is
deliberately suspicious:

* **Parsing** (:func:`parse_sentence`, pure): GGA, RMC, GSA and GST from any talker
  (GP, GL, GA, GB/BD for BeiDou, GN for combined). The ``*hh`` checksum is
  *required*: every receiver made this century sends it, and without it a line cut
  by a loose connector looks like a valid sentence with the last fields missing.
  Garbage, bad checksums, truncated lines and binary noise raise :class:`NmeaError`
  with a reason code; the reader counts them by code and carries on.
* **Accuracy**: GST gives the 1-sigma error of latitude and longitude in metres as
  the receiver's own estimate - the best figure available - and we report the
  horizontal figure ``sqrt(sigma_lat**2 + sigma_lon**2)`` (DRMS, about 65 % of fixes
  fall inside). Without a fresh GST we estimate ``HDOP x UERE`` with UERE = 5 m and
  say so (``accuracy_source = "hdop_estimate"``, flag ``accuracy_estimated``).
* **Gate**: a photo's position counts only when accuracy has stayed <= 10 m for
  ``hold_s`` (5 s) without a break. A receiver coming out of a cold start often
  reports one optimistic epoch; holding for a few seconds filters that out without
  making the courier wait long.
* **Suspicion flags** (``gnss.<flag>`` in ``handheld/text.toml``): no fix, stale fix (nothing new for
  ``max_fix_age_s``), position 0,0 (a receiver's "no data" placeholder), a jump that
  implies an impossible speed, a receiver clock that does not advance (a frozen
  receiver replaying its last fix), too few satellites, dead-reckoning/manual/
  simulator fix quality, receiver disconnected. Non-blocking notes: estimated
  accuracy, 2-D fix, receiver clock far from the handheld clock.

The reader takes anything pyserial's :func:`serial.serial_for_url` opens (a device
path, ``loop://``, a pty, ``socket://`` for a Bluetooth bridge) or an already open
port. It runs a background thread (:meth:`GnssReader.start`) or is polled
(:meth:`GnssReader.poll`); both feed :meth:`GnssReader.feed`, which takes raw bytes
so tests and replay tools can push recorded streams through the same code.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from handheld.text import TEXT

#: NMEA 0183 caps a sentence at 82 characters; a few receivers exceed it a little
#: (long GSA/GSV with many constellations), so we accept up to this before calling
#: a line runaway noise.
MAX_SENTENCE = 120
SUPPORTED = ("GGA", "RMC", "GSA", "GST")

#: Flags that are recorded but do not block evidence.
NON_BLOCKING = frozenset({"accuracy_estimated", "fix_2d", "clock_skew"})


class NmeaError(ValueError):
    """A line that is not a usable NMEA sentence; ``code`` keys ``nmea.<code>`` in the catalogue."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)


def checksum(body: str | bytes) -> int:
    """XOR of the bytes between ``$`` and ``*`` - the NMEA 0183 checksum."""
    data = body.encode("ascii") if isinstance(body, str) else body
    value = 0
    for b in data:
        value ^= b
    return value


def build_sentence(body: str) -> str:
    """``$body*HH`` - for tests, simulators and replay tools."""
    return f"${body}*{checksum(body):02X}"


_HEX2 = re.compile(r"^[0-9A-Fa-f]{2}$")
_ADDRESS = re.compile(r"^(?:[A-Z]{2}[A-Z]{3}|P[A-Z0-9]{1,8})$")
_NUM = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_UNSIGNED = re.compile(r"^\d+(?:\.\d*)?$")
_TIME = re.compile(r"^(\d{2})(\d{2})(\d{2}(?:\.\d+)?)$")
_DATE = re.compile(r"^(\d{2})(\d{2})(\d{2})$")


def split_sentence(raw: str | bytes) -> tuple[str, str, list[str]]:
    """Check framing and checksum; return ``(talker, type, fields)``.

    Raises :class:`NmeaError` for anything that is not a complete, intact sentence.
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw).rstrip(b"\r\n")
        if not data:
            raise NmeaError("empty")
        if any(b < 0x20 or b > 0x7E for b in data):
            raise NmeaError("binary", f"{len(data)} bytes")
        line = data.decode("ascii")
    else:
        line = raw.rstrip("\r\n")
        if not line:
            raise NmeaError("empty")
        if any(not (" " <= ch <= "~") for ch in line):
            raise NmeaError("binary", f"{len(line)} chars")
    if len(line) > MAX_SENTENCE:
        raise NmeaError("too_long", f"{len(line)} chars")
    if not line.startswith("$"):
        raise NmeaError("no_start", line[:16])
    star = line.rfind("*")
    if star < 0:
        raise NmeaError("truncated", "no '*hh' checksum")
    body, given = line[1:star], line[star + 1 :].strip()
    if len(given) < 2:
        raise NmeaError("truncated", "checksum cut short")
    if not _HEX2.match(given):
        raise NmeaError("bad_checksum", f"checksum field {given[:8]!r}")
    if "$" in body or "*" in body:
        raise NmeaError("malformed", "stray '$' or '*'")
    want = checksum(body)
    if int(given, 16) != want:
        raise NmeaError("bad_checksum", f"got {given.upper()} want {want:02X}")
    fields = body.split(",")
    address = fields[0]
    if not _ADDRESS.match(address):
        raise NmeaError("bad_address", address[:10])
    if address.startswith("P"):
        return "P", address[1:], fields[1:]
    return address[:2], address[2:], fields[1:]


def _f(v: str, name: str) -> float | None:
    if v == "":
        return None
    if not _NUM.match(v):
        raise NmeaError("malformed", f"{name}={v!r}")
    return float(v)


def _i(v: str, name: str) -> int | None:
    if v == "":
        return None
    if not v.isdigit():
        raise NmeaError("malformed", f"{name}={v!r}")
    return int(v)


def _utc(v: str) -> float | None:
    """hhmmss.ss -> seconds of the UTC day."""
    if v == "":
        return None
    m = _TIME.match(v)
    if not m:
        raise NmeaError("malformed", f"time={v!r}")
    h, mi, s = int(m.group(1)), int(m.group(2)), float(m.group(3))
    if h > 23 or mi > 59 or s >= 61:
        raise NmeaError("malformed", f"time={v!r}")
    return h * 3600 + mi * 60 + s


def _date(v: str) -> _dt.date | None:
    if v == "":
        return None
    m = _DATE.match(v)
    if not m:
        raise NmeaError("malformed", f"date={v!r}")
    d, mo, yy = int(m.group(1)), int(m.group(2)), int(m.group(3))
    try:
        return _dt.date(2000 + yy if yy < 80 else 1900 + yy, mo, d)
    except ValueError as exc:
        raise NmeaError("malformed", f"date={v!r}") from exc


def _coord(v: str, hemi: str, *, lat: bool) -> float | None:
    """ddmm.mmmm / dddmm.mmmm + hemisphere -> signed decimal degrees."""
    if v == "" and hemi == "":
        return None
    name = "lat" if lat else "lon"
    if not _UNSIGNED.match(v) or hemi not in (("N", "S") if lat else ("E", "W")):
        raise NmeaError("malformed", f"{name}={v!r},{hemi!r}")
    val = float(v)
    deg = int(val // 100)
    minutes = val - deg * 100
    out = deg + minutes / 60.0
    if minutes >= 60 or out > (90 if lat else 180):
        raise NmeaError("malformed", f"{name}={v!r}")
    return -out if hemi in ("S", "W") else out


def _need(fields: list[str], n: int, kind: str) -> None:
    if len(fields) < n:
        raise NmeaError("malformed", f"{kind} has {len(fields)} fields, needs {n}")


def _position(fields: list[str], i: int) -> tuple[float | None, float | None]:
    lat = _coord(fields[i], fields[i + 1], lat=True)
    lon = _coord(fields[i + 2], fields[i + 3], lat=False)
    if (lat is None) != (lon is None):
        raise NmeaError("malformed", "only one of lat/lon present")
    return lat, lon


def parse_sentence(raw: str | bytes) -> dict[str, Any]:
    """Parse one GGA/RMC/GSA/GST sentence to a dict; raise :class:`NmeaError` otherwise.

    Empty fields become None (receivers leave them blank without a fix). Other
    sentence types with a valid checksum raise ``unsupported`` so the caller can
    count them apart from corruption.
    """
    talker, kind, f = split_sentence(raw)
    base: dict[str, Any] = {"talker": talker, "type": kind}
    if talker == "P" or kind not in SUPPORTED:
        raise NmeaError("unsupported", f"{talker}{kind}")
    if kind == "GGA":
        _need(f, 8, kind)
        lat, lon = _position(f, 1)
        quality = _i(f[5], "quality")
        base.update(
            utc_s=_utc(f[0]),
            lat=lat,
            lon=lon,
            quality=0 if quality is None else quality,
            sats=_i(f[6], "sats"),
            hdop=_f(f[7], "hdop"),
            alt_m=_f(f[8], "alt") if len(f) > 8 else None,
        )
    elif kind == "RMC":
        _need(f, 9, kind)
        if f[1] not in ("A", "V"):
            raise NmeaError("malformed", f"status={f[1]!r}")
        lat, lon = _position(f, 2)
        mode = f[11] if len(f) > 11 else ""
        speed_kn = _f(f[6], "speed")
        base.update(
            utc_s=_utc(f[0]),
            valid=f[1] == "A" and mode not in ("N",),
            lat=lat,
            lon=lon,
            speed_mps=None if speed_kn is None else speed_kn * 0.514444,
            course_deg=_f(f[7], "course"),
            date=_date(f[8]),
            mode=mode or None,
        )
    elif kind == "GSA":
        _need(f, 17, kind)
        if f[0] not in ("M", "A", ""):
            raise NmeaError("malformed", f"mode={f[0]!r}")
        fix_type = _i(f[1], "fix_type")
        if fix_type is not None and fix_type not in (1, 2, 3):
            raise NmeaError("malformed", f"fix_type={fix_type}")
        prns = [p for p in (_i(x, "prn") for x in f[2:14]) if p is not None]
        base.update(
            fix_type=fix_type,
            prns=prns,
            pdop=_f(f[14], "pdop"),
            hdop=_f(f[15], "hdop"),
            vdop=_f(f[16], "vdop"),
        )
    else:  # GST
        _need(f, 8, kind)
        base.update(
            utc_s=_utc(f[0]),
            rms=_f(f[1], "rms"),
            lat_std_m=_f(f[5], "lat_std"),
            lon_std_m=_f(f[6], "lon_std"),
            alt_std_m=_f(f[7], "alt_std"),
        )
    for key in ("hdop", "pdop", "vdop", "lat_std_m", "lon_std_m"):
        if base.get(key) is not None and (base[key] < 0 or not math.isfinite(base[key])):
            raise NmeaError("malformed", f"{key}={base[key]}")
    return base


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (mean Earth radius) - plenty for jump detection."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371008.8 * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class GnssConfig:
    """Gate and suspicion thresholds (see the module docstring for the reasoning)."""

    max_accuracy_m: float = 10.0
    hold_s: float = 5.0
    max_fix_age_s: float = 5.0
    #: User-equivalent range error for the HDOP estimate; 5 m is typical for a
    #: single-frequency consumer receiver with open sky.
    uere_m: float = 5.0
    min_sats: int = 4
    #: 250 km/h: faster than any courier's vehicle, slower than a bad fix jumping tens of km.
    max_speed_mps: float = 70.0
    #: After a jump the position stays suspect this long (the receiver must settle).
    jump_settle_s: float = 10.0
    #: A GST older than this no longer describes the current fix.
    gst_max_age_s: float = 2.5
    #: Receiver UTC unchanged across sentences for this long = frozen.
    frozen_after_s: float = 3.0
    #: Receiver UTC vs. handheld clock difference that earns a ``clock_skew`` note.
    max_clock_skew_s: float = 600.0
    #: Seconds between reopen attempts when the port fails (receiver unplugged).
    reconnect_s: float = 1.0


class GnssReader:
    """Reads NMEA from a serial port and maintains the current fix, gate timer and counters.

    ``port`` is a URL/device for :func:`serial.serial_for_url` (reopened after errors)
    or an open ``serial.SerialBase`` (used as is; not reopened, closed by the owner).
    ``clock`` is monotonic seconds (fix age, hold timer); ``wall_clock`` is UTC epoch
    seconds (clock-skew check). Both are parameters so replay tools and tests can
    drive time; defaults are the real clocks.
    """

    def __init__(
        self,
        port: str | serial.SerialBase,
        *,
        baudrate: int = 9600,
        config: GnssConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or GnssConfig()
        self.clock = clock
        self.wall_clock = wall_clock
        self._url = port if isinstance(port, str) else None
        self._baudrate = baudrate
        self._port: serial.SerialBase | None = None if isinstance(port, str) else port
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._buf = bytearray()
        self._port_ok = True
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        #: Intact sentences of types we do not use (GSV, VTG, TXT, proprietary): not errors.
        self.ignored: Counter[str] = Counter()
        self.recent_rejects: deque[tuple[str, str]] = deque(maxlen=20)
        self.bytes_read = 0
        # fix state
        self._lat: float | None = None
        self._lon: float | None = None
        self._alt: float | None = None
        self._pos_at: float | None = None
        self._pos_utc: float | None = None
        self._has_fix = False
        self._quality: int | None = None
        self._sats: int | None = None
        self._gga_hdop: float | None = None
        self._gga_at: float | None = None
        self._gsa: dict[str, Any] | None = None
        self._gsa_at: float | None = None
        self._gst: dict[str, Any] | None = None
        self._gst_at: float | None = None
        self._rmc: dict[str, Any] | None = None
        self._date: _dt.date | None = None
        self._last_utc: float | None = None
        self._utc_changed_at: float | None = None
        self._jump_at: float | None = None
        self._jump_detail: dict[str, float] | None = None
        self._held_since: float | None = None
        self._skew_s: float | None = None

    # ------------------------------------------------------------------ port I/O
    def open(self) -> None:
        """Open the port now (``start``/``poll`` do this on demand)."""
        if self._port is None and self._url is not None:
            self._port = serial.serial_for_url(self._url, baudrate=self._baudrate, timeout=0.1)
            self._port_ok = True

    def _drop_port(self) -> None:
        if self._url is not None and self._port is not None:
            try:
                self._port.close()
            except Exception:  # noqa: BLE001 - closing a dead port may fail in any way
                pass
            self._port = None

    def poll(self) -> int:
        """Read what is waiting on the port (non-blocking) and process it; returns bytes read.

        A port error is counted and flags ``receiver_lost``; it never raises, so a
        yanked receiver cannot take the app down.
        """
        try:
            self.open()
            assert self._port is not None
            n = self._port.in_waiting
            data = self._port.read(n) if n else b""
        except (serial.SerialException, OSError, ValueError, AssertionError) as exc:
            self._port_error(exc)
            return 0
        if data:
            self.feed(data)
        return len(data)

    def _port_error(self, exc: BaseException) -> None:
        with self._lock:
            self.rejected["port_error"] += 1
            self.recent_rejects.append(("port_error", str(exc)[:80]))
            self._port_ok = False
            self._held_since = None
        self._drop_port()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.open()
                assert self._port is not None
                data = self._port.read(max(1, self._port.in_waiting))
            except (serial.SerialException, OSError, ValueError, AssertionError) as exc:
                self._port_error(exc)
                if self._url is None:
                    return  # cannot reopen a port we were handed
                self._stop.wait(self.config.reconnect_s)
                continue
            if data:
                with self._lock:
                    self._port_ok = True
                self.feed(data)

    def start(self) -> GnssReader:
        """Read in a daemon thread until :meth:`stop`."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="gnss-reader", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close a port this reader opened."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._drop_port()

    def __enter__(self) -> GnssReader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ parsing
    def feed(self, data: bytes) -> None:
        """Process raw bytes from the receiver: split lines, parse, update the fix.

        Lines are split on LF; anything before a ``$`` on a line is noise (counted),
        and a line holding several ``$`` is treated as several sentences, so a
        sentence glued to garbage after a lost newline is still recovered. A run of
        bytes without any newline longer than 4 x :data:`MAX_SENTENCE` is dropped as
        noise so a babbling line cannot grow memory.
        """
        with self._lock:
            self.bytes_read += len(data)
            self._buf.extend(data)
            while True:
                nl = self._buf.find(b"\n")
                if nl < 0:
                    break
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                self._line(line)
            if len(self._buf) > 4 * MAX_SENTENCE:
                keep = self._buf.rfind(b"$")
                self._reject("too_long", bytes(self._buf[:40]))
                self._buf = bytearray(
                    self._buf[keep:] if keep >= 0 and len(self._buf) - keep < MAX_SENTENCE else b""
                )

    def _reject(self, code: str, raw: bytes) -> None:
        self.rejected[code] += 1
        self.recent_rejects.append((code, raw[:60].decode("ascii", "backslashreplace")))

    def _line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        parts = line.split(b"$")
        prefix = parts[0]
        if prefix.strip(b"\r\n\x00 "):
            if len(prefix) > MAX_SENTENCE:
                self._reject("too_long", prefix)
            else:
                bad = any(b < 0x20 or b > 0x7E for b in prefix)
                self._reject("binary" if bad else "no_start", prefix)
        for part in parts[1:]:
            raw = b"$" + part
            try:
                sentence = parse_sentence(raw)
            except NmeaError as exc:
                if exc.code == "unsupported":
                    self.ignored[exc.detail[:8]] += 1
                else:
                    self._reject(exc.code, raw)
                continue
            self.accepted[sentence["type"]] += 1
            self._apply(sentence)

    # ------------------------------------------------------------------ state
    def _apply(self, s: dict[str, Any]) -> None:
        now = self.clock()
        self._port_ok = True
        kind = s["type"]
        if kind in ("GGA", "RMC", "GST") and s.get("utc_s") is not None:
            if s["utc_s"] != self._last_utc:
                self._last_utc = s["utc_s"]
                self._utc_changed_at = now
        if kind == "GGA":
            self._gga_at = now
            self._quality = s["quality"]
            self._sats = s["sats"]
            self._gga_hdop = s["hdop"]
            if s["quality"] > 0 and s["lat"] is not None:
                self._alt = s["alt_m"]
                self._position(s["lat"], s["lon"], s["utc_s"], now)
            else:
                self._has_fix = False
        elif kind == "RMC":
            self._rmc = s
            if s["date"] is not None:
                self._date = s["date"]
                if s["utc_s"] is not None:
                    gnss_epoch = _dt.datetime.combine(s["date"], _dt.time(), _dt.UTC).timestamp() + s["utc_s"]
                    self._skew_s = gnss_epoch - self.wall_clock()
            # GGA is the richer source; RMC positions are used only when no GGA is coming.
            gga_fresh = self._gga_at is not None and now - self._gga_at <= self.config.max_fix_age_s
            if not gga_fresh:
                if s["valid"] and s["lat"] is not None:
                    self._quality = None
                    self._position(s["lat"], s["lon"], s["utc_s"], now)
                else:
                    self._has_fix = False
        elif kind == "GSA":
            self._gsa, self._gsa_at = s, now
            if s["fix_type"] == 1:
                self._has_fix = False
        else:
            self._gst, self._gst_at = s, now
        self._refresh(now)

    def _position(self, lat: float, lon: float, utc_s: float | None, now: float) -> None:
        cfg = self.config
        if self._pos_at is not None and now - self._pos_at > cfg.max_fix_age_s:
            self._held_since = None  # a gap breaks the "held" run
        if self._lat is not None and self._lon is not None and self._pos_at is not None:
            if utc_s is not None and self._pos_utc is not None:
                dt = (utc_s - self._pos_utc) % 86400.0
                if dt > 43200:  # receiver time went backwards; fall back to our clock
                    dt = now - self._pos_at
            else:
                dt = now - self._pos_at
            if dt > 0 or (lat, lon) != (self._lat, self._lon):
                dist = haversine_m(self._lat, self._lon, lat, lon)
                speed = dist / max(dt, 1.0)
                if speed > cfg.max_speed_mps:
                    self._jump_at = now
                    self._jump_detail = {"distance_m": round(dist, 1), "speed_mps": round(speed, 1)}
                    self._held_since = None
        self._lat, self._lon = lat, lon
        self._pos_at, self._pos_utc = now, utc_s
        self._has_fix = True

    def _accuracy(self, now: float) -> tuple[float | None, str | None]:
        cfg = self.config
        gst = self._gst
        if (
            gst is not None
            and self._gst_at is not None
            and now - self._gst_at <= cfg.gst_max_age_s
            and gst["lat_std_m"] is not None
            and gst["lon_std_m"] is not None
        ):
            return math.hypot(gst["lat_std_m"], gst["lon_std_m"]), "gst"
        hdop = self._gga_hdop
        if hdop is None and self._gsa is not None:
            hdop = self._gsa.get("hdop")
        if hdop is not None:
            return hdop * cfg.uere_m, "hdop_estimate"
        return None, None

    def _flags(self, now: float, accuracy: float | None) -> list[str]:
        """All flags except the hold-timer one, in the order a courier should fix them."""
        cfg = self.config
        flags: list[str] = []
        if not self._port_ok:
            flags.append("receiver_lost")
        if not self._has_fix or self._lat is None:
            flags.append("no_fix")
            return flags
        if self._pos_at is None or now - self._pos_at > cfg.max_fix_age_s:
            flags.append("stale_fix")
        if abs(self._lat) < 1e-4 and abs(self._lon or 0.0) < 1e-4:
            flags.append("null_island")
        if self._jump_at is not None and now - self._jump_at < cfg.jump_settle_s:
            flags.append("impossible_jump")
        if self._utc_changed_at is not None and now - self._utc_changed_at > cfg.frozen_after_s:
            flags.append("stale_timestamp")
        if self._sats is not None and self._sats < cfg.min_sats:
            flags.append("few_satellites")
        if self._quality is not None and self._quality >= 6:
            flags.append("not_measured")
        if accuracy is None:
            flags.append("no_accuracy")
        elif accuracy > cfg.max_accuracy_m:
            flags.append("accuracy_poor")
        gsa_fresh = self._gsa_at is not None and now - self._gsa_at <= cfg.max_fix_age_s
        if gsa_fresh and self._gsa is not None and self._gsa["fix_type"] == 2:
            flags.append("fix_2d")
        if self._skew_s is not None and abs(self._skew_s) > cfg.max_clock_skew_s:
            flags.append("clock_skew")
        return flags

    def _refresh(self, now: float) -> None:
        acc, _ = self._accuracy(now)
        blocking = [f for f in self._flags(now, acc) if f not in NON_BLOCKING]
        if blocking:
            self._held_since = None
        elif self._held_since is None:
            self._held_since = now

    def fix(self, now: float | None = None) -> dict[str, Any]:
        """Snapshot of the current fix for an evidence record.

        ``ok`` is True only with no blocking flag, i.e. a fresh, plausible fix whose
        accuracy has been within the gate for ``hold_s``. ``flags`` holds every flag
        (blocking and notes); ``messages`` has their bilingual texts.
        """
        with self._lock:
            t = self.clock() if now is None else now
            cfg = self.config
            acc, source = self._accuracy(t)
            flags = self._flags(t, acc)
            blocking = [f for f in flags if f not in NON_BLOCKING]
            held = 0.0 if blocking or self._held_since is None else t - self._held_since
            if not blocking and held < cfg.hold_s:
                flags.append("accuracy_not_held")
            if source == "hdop_estimate":
                flags.append("accuracy_estimated")
            ok = not [f for f in flags if f not in NON_BLOCKING]
            gnss_utc = None
            if self._date is not None and self._pos_utc is not None:
                stamp = _dt.datetime.combine(self._date, _dt.time(), _dt.UTC) + _dt.timedelta(
                    seconds=self._pos_utc
                )
                gnss_utc = stamp.isoformat().replace("+00:00", "Z")
            gsa = self._gsa or {}
            return {
                "ok": ok,
                "lat": None if self._lat is None else round(self._lat, 7),
                "lon": None if self._lon is None else round(self._lon, 7),
                "alt_m": self._alt,
                "accuracy_m": None if acc is None else round(acc, 2),
                "accuracy_source": source,
                "estimated": source == "hdop_estimate",
                "accuracy_held_s": round(held, 2),
                "fix_age_s": None if self._pos_at is None else round(t - self._pos_at, 2),
                "sats": self._sats,
                "hdop": self._gga_hdop if self._gga_hdop is not None else gsa.get("hdop"),
                "pdop": gsa.get("pdop"),
                "fix_type": gsa.get("fix_type"),
                "quality": self._quality,
                "gnss_utc": gnss_utc,
                "clock_skew_s": None if self._skew_s is None else round(self._skew_s, 1),
                "jump": dict(self._jump_detail) if "impossible_jump" in flags and self._jump_detail else None,
                "flags": flags,
                "messages": [{"code": f, **TEXT.both("gnss." + f, max_m=cfg.max_accuracy_m)} for f in flags],
            }

    def counters(self) -> dict[str, Any]:
        """Accepted sentences by type, rejected lines by reason, bytes read: for diagnostics/metrics."""
        with self._lock:
            return {
                "accepted": dict(self.accepted),
                "rejected": dict(self.rejected),
                "ignored": dict(self.ignored),
                "bytes": self.bytes_read,
                "recent_rejects": list(self.recent_rejects),
            }
