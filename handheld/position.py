"""The fix gate: whether the receiver's current position is good enough to stamp on evidence.

Evidence of a bulletin-board install is only as good as the position stamped on it,
and receivers in rural China spend much of their time in poor conditions (valleys,
tree cover, a cold start after the handheld sat in a drawer). So the gate is
deliberately suspicious. It takes parsed sentences (:mod:`handheld.nmea`) and keeps:

* **Accuracy**: GST gives the 1-sigma error of latitude and longitude in metres as
  the receiver's own estimate - the best figure available - and we report the
  horizontal figure ``sqrt(sigma_lat**2 + sigma_lon**2)`` (DRMS, about 65 % of fixes
  fall inside). Without a fresh GST we estimate ``HDOP x UERE`` with UERE = 5 m and
  say so (``accuracy_source = "hdop_estimate"``, flag ``accuracy_estimated``).
* **Gate**: a photo's position counts only when accuracy has stayed <= 10 m for
  ``hold_s`` (5 s) without a break. A receiver coming out of a cold start often
  reports one optimistic epoch; holding for a few seconds filters that out without
  making the courier wait long.
* **Suspicion flags** (``gnss.<flag>`` in ``handheld/text.toml``): no fix, stale fix
  (nothing new for ``max_fix_age_s``), position 0,0 (a receiver's "no data"
  placeholder), a jump that implies an impossible speed, a receiver clock that does
  not advance (a frozen receiver replaying its last fix), too few satellites,
  a position the receiver did not measure (``not_measured``: GGA quality 6-8, or an
  RMC/GNS mode indicator E, M or S - dead reckoning, manual input, simulator - in any
  fresh sentence: one source saying so is enough), receiver disconnected. Non-blocking
  notes: estimated accuracy, 2-D fix, receiver clock far from the handheld clock.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handheld.text import TEXT

#: Flags that are recorded but do not block evidence.
NON_BLOCKING = frozenset({"accuracy_estimated", "fix_2d", "clock_skew"})


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


class FixGate:
    """The current fix, its suspicion flags and the hold timer, from parsed sentences.

    ``clock`` is monotonic seconds (fix age, hold timer); ``wall_clock`` is UTC epoch
    seconds (clock-skew check). Not thread-safe: its reader serialises the calls.
    """

    def __init__(
        self,
        config: GnssConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or GnssConfig()
        self.clock = clock
        self.wall_clock = wall_clock
        #: False after the port failed, until it reopens or a sentence arrives.
        self.receiver_ok = True
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
        self._gns_at: float | None = None
        #: Per sentence type (GGA, RMC, GNS): when it last said its position was not
        #: measured, or None once it says measured again.
        self._unmeasured: dict[str, float | None] = {}
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
        #: A provider's own accuracy (:meth:`apply_position`): metres and when it was measured.
        self._direct: tuple[float, float] | None = None

    def receiver_lost(self) -> None:
        """The port failed: flag ``receiver_lost`` and restart the hold timer."""
        self.receiver_ok = False
        self._held_since = None

    def apply(self, s: dict[str, Any]) -> None:
        """Take one parsed sentence (:func:`handheld.nmea.parse_sentence`) into the fix."""
        now = self.clock()
        self.receiver_ok = True
        kind = s["type"]
        if kind in ("GGA", "RMC", "GST") and s.get("utc_s") is not None:
            if s["utc_s"] != self._last_utc:
                self._last_utc = s["utc_s"]
                self._utc_changed_at = now
        if "measured" in s:
            self._unmeasured[kind] = None if s["measured"] else now
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
        elif kind == "GNS":
            # GGA's content with a mode per constellation instead of a quality; some
            # receivers send it instead of GGA. GGA, when it comes, stays the source.
            self._gns_at = now
            gga_fresh = self._gga_at is not None and now - self._gga_at <= self.config.max_fix_age_s
            if not gga_fresh:
                self._quality = None
                self._sats = s["sats"]
                self._gga_hdop = s["hdop"]
                if s["valid"] and s["lat"] is not None:
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
            # GGA (or GNS) is the richer source; RMC positions are used only when neither is coming.
            age = self.config.max_fix_age_s
            gga_fresh = any(at is not None and now - at <= age for at in (self._gga_at, self._gns_at))
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

    def apply_position(self, lat: float, lon: float, accuracy_m: float, *, age_s: float = 0.0,
                       alt_m: float | None = None, stamp: float | None = None) -> None:
        """Take one fix from a provider that reports its own accuracy instead of NMEA (the
        browser's ``navigator.geolocation``: Android's horizontal accuracy is a 68 %
        radius, about the DRMS figure GST gives, so the same ``max_accuracy_m`` applies).

        ``age_s``: how long ago the provider measured it (a cached fix is old: past
        ``max_fix_age_s`` it is ``stale_fix``); ``stamp``: the provider's own time of the
        fix; the same stamp again is a provider repeating itself (``stale_timestamp``).
        Jumps, the hold timer and every other flag work exactly as for NMEA; there is no
        satellite count, so ``few_satellites`` never applies."""
        now = self.clock()
        at = now - max(0.0, age_s)
        self.receiver_ok = True
        if stamp is None or stamp != self._last_utc:
            self._last_utc = stamp
            self._utc_changed_at = now
        self._quality = None
        self._sats = None
        self._gga_hdop = None
        self._alt = alt_m
        self._direct = (float(accuracy_m), at)
        self._position(lat, lon, None, at)
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
        if self._direct is not None and now - self._direct[1] <= cfg.max_fix_age_s:
            return self._direct[0], "browser"
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
        if not self.receiver_ok:
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
        if any(at is not None and now - at <= cfg.max_fix_age_s for at in self._unmeasured.values()):
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
