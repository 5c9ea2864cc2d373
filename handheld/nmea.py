"""NMEA 0183 from a GNSS receiver on a serial port: sentences parsed, lines counted.

* **Parsing** (:func:`parse_sentence`, pure): GGA, RMC, GNS, GSA and GST from any
  talker (GP, GL, GA, GB/BD for BeiDou, GN for combined). The ``*hh`` checksum is
  *required*: every receiver made this century sends it, and without it a line cut
  by a loose connector looks like a valid sentence with the last fields missing.
  Garbage, bad checksums, truncated lines and binary noise raise :class:`NmeaError`
  with a reason code (``nmea.<code>`` in ``handheld/text.toml``); the reader counts
  them by code and carries on.
* **Coordinates** are ``ddmm.mmmm`` (latitude, exactly 4 digits before the point) and
  ``dddmm.mmmm`` (longitude, 5), as NMEA 0183 writes them with leading zeros. Anything
  else - decimal degrees (``37.352387``) from a misconfigured receiver or a bridge app,
  dropped leading zeros - is refused as ``coord_format`` instead of being read as
  nonsense degrees and minutes.
* **Measured or not**: GGA quality 6-8 and the RMC/GNS mode indicators E (dead
  reckoning), M (manual input) and S (simulator) mark a position the receiver did not
  measure (``measured: False``; the fix gate flags it ``not_measured``). GNS carries
  one mode letter per constellation: all ``N`` is no fix.
* **Reading** (:class:`GnssReader`): takes anything pyserial's
  :func:`serial.serial_for_url` opens (a device path, ``loop://``, a pty,
  ``socket://`` for a Bluetooth bridge) or an already open port. It runs a
  background thread (:meth:`GnssReader.start`) or is polled (:meth:`GnssReader.poll`);
  both feed :meth:`GnssReader.feed`, which takes raw bytes so tests and replay tools
  can push recorded streams through the same code. Each good sentence goes to the
  fix gate (:class:`handheld.position.FixGate`), which decides whether the position
  may be stamped on evidence.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import serial

from handheld.position import FixGate, GnssConfig

#: NMEA 0183 caps a sentence at 82 characters; a few receivers exceed it a little
#: (long GSA/GSV with many constellations), so we accept up to this before calling
#: a line runaway noise.
MAX_SENTENCE = 120
SUPPORTED = ("GGA", "RMC", "GNS", "GSA", "GST")
#: FAA mode indicators (NMEA 0183 2.3+, RMC field 12; one letter per constellation in
#: GNS): Autonomous, Differential, Estimated (dead reckoning), Float RTK, Manual input,
#: Not valid, Precise, RTK, Simulator.
MODES = "ADEFMNPRS"
#: Modes (and GGA qualities) whose position the receiver did not measure.
NOT_MEASURED_MODES = "EMS"
NOT_MEASURED_QUALITY = (6, 7, 8)
#: GNS mode strings: GPS, GLONASS, Galileo, BeiDou, QZSS, NavIC (NMEA 4.11) and a
#: little room for receivers that add more.
MAX_GNS_MODES = 8


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
_LAT_DM = re.compile(r"^\d{4}(?:\.\d*)?$")
_LON_DM = re.compile(r"^\d{5}(?:\.\d*)?$")
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
    if not (_LAT_DM if lat else _LON_DM).match(v):
        # Decimal degrees or dropped leading zeros: any reading of it is a guess.
        raise NmeaError("coord_format", f"{name}={v!r}, want {'ddmm.mmmm' if lat else 'dddmm.mmmm'}")
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
    """Parse one GGA/RMC/GNS/GSA/GST sentence to a dict; raise :class:`NmeaError` otherwise.

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
            measured=quality not in NOT_MEASURED_QUALITY,
            sats=_i(f[6], "sats"),
            hdop=_f(f[7], "hdop"),
            alt_m=_f(f[8], "alt") if len(f) > 8 else None,
        )
    elif kind == "RMC":
        _need(f, 9, kind)
        if f[1] not in ("A", "V"):
            raise NmeaError("malformed", f"status={f[1]!r}")
        lat, lon = _position(f, 2)
        mode = f[11] if len(f) > 11 else ""  # absent before NMEA 2.3
        if mode and (len(mode) != 1 or mode not in MODES):
            raise NmeaError("malformed", f"mode={mode!r}")
        speed_kn = _f(f[6], "speed")
        base.update(
            utc_s=_utc(f[0]),
            valid=f[1] == "A" and mode != "N",
            measured=mode not in NOT_MEASURED_MODES or not mode,
            lat=lat,
            lon=lon,
            speed_mps=None if speed_kn is None else speed_kn * 0.514444,
            course_deg=_f(f[7], "course"),
            date=_date(f[8]),
            mode=mode or None,
        )
    elif kind == "GNS":
        # hhmmss.ss,lat,N,lon,E,mode string,sats,HDOP,alt,geoid sep,age,station[,nav status]
        _need(f, 9, kind)
        lat, lon = _position(f, 1)
        mode = f[5]
        if not 1 <= len(mode) <= MAX_GNS_MODES or any(c not in MODES for c in mode):
            raise NmeaError("malformed", f"mode={mode[:12]!r}")
        base.update(
            utc_s=_utc(f[0]),
            lat=lat,
            lon=lon,
            mode=mode,
            # A fix if any constellation has one; not measured if any says E, M or S.
            valid=mode.strip("N") != "",
            measured=not any(c in NOT_MEASURED_MODES for c in mode),
            sats=_i(f[6], "sats"),
            hdop=_f(f[7], "hdop"),
            alt_m=_f(f[8], "alt"),
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



class GnssReader:
    """Reads NMEA from a serial port into a :class:`~handheld.position.FixGate`; counts lines.

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
        self.gate = FixGate(config, clock=clock, wall_clock=wall_clock)
        self.config = self.gate.config
        self._url = port if isinstance(port, str) else None
        self._baudrate = baudrate
        self._port: serial.SerialBase | None = None if isinstance(port, str) else port
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._buf = bytearray()
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        #: Intact sentences of types we do not use (GSV, VTG, TXT, proprietary): not errors.
        self.ignored: Counter[str] = Counter()
        self.recent_rejects: deque[tuple[str, str]] = deque(maxlen=20)
        self.bytes_read = 0
    # ------------------------------------------------------------------ port I/O
    def open(self) -> None:
        """Open the port now (``start``/``poll`` do this on demand)."""
        if self._port is None and self._url is not None:
            self._port = serial.serial_for_url(self._url, baudrate=self._baudrate, timeout=0.1)
            self.gate.receiver_ok = True

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
            self.gate.receiver_lost()
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
                    self.gate.receiver_ok = True
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
            self.gate.apply(sentence)


    def fix(self, now: float | None = None) -> dict[str, Any]:
        """The gate's snapshot of the current fix (:meth:`handheld.position.FixGate.fix`)."""
        with self._lock:
            return self.gate.fix(now)

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

