"""NMEA field formats the reader must not misread: coordinates that are not
ddmm.mmmm / dddmm.mmmm, and fixes the receiver did not measure (RMC and GNS mode
indicators E, M, S; GNS's per-constellation mode string)."""

from __future__ import annotations

import pytest
import serial

from handheld.nmea import GnssReader, NmeaError, build_sentence, parse_sentence
from handheld.position import GnssConfig
from handheld.text import TEXT
from tests.handheld.test_handheld_gnss import DAY, DAY_EPOCH, Clock, _dm, _hms

LAT, LON = 39.9, 116.4


def _reader(clock: Clock, **cfg: float) -> GnssReader:
    port = serial.serial_for_url("loop://", timeout=0.05)
    return GnssReader(port, config=GnssConfig(**cfg), clock=clock,
                      wall_clock=lambda: DAY_EPOCH + 12 * 3600 + clock.t - 1000)


def _feed(r: GnssReader, clock: Clock, lines: list[str], seconds: int = 3) -> None:
    """The same epoch's sentences ``seconds`` times, one second apart; ``{t}`` is the UTC time."""
    utc = 12 * 3600.0
    for _ in range(seconds):
        r.feed(b"".join((build_sentence(x.format(t=_hms(utc))) + "\r\n").encode() for x in lines))
        clock.t += 1.0
        utc += 1.0


(_LA, _NS), (_LO, _EW) = _dm(LAT, True), _dm(LON, False)
# Accuracy from GST and a 3-D GSA, so only the position sentence decides.
_GSA = "GNGSA,A,3,01,02,03,04,05,06,,,,,,,1.6,0.8,1.2"
_GST = "GNGST,{t},1.1,2.0,1.5,30.0,2.00,1.50,3.0"


def _rmc(mode: str) -> str:
    return f"GNRMC,{{t}},A,{_LA},{_NS},{_LO},{_EW},0.1,0.0,{DAY:%d%m%y},,,{mode}"


def _gns(mode: str) -> str:
    return f"GNGNS,{{t}},{_LA},{_NS},{_LO},{_EW},{mode},10,0.8,52.0,-8.0,,"


# --------------------------------------------------------------------------- coordinates

DECIMAL_DEGREES = [
    # The example: decimal degrees where ddmm.mmmm belongs.
    "GPGGA,161405.680,37.352387,N,121.953086,W,1,10,0.9,30.0,M,-25.0,M,,",
    "GPRMC,161405.680,A,37.352387,N,121.953086,W,0.1,0.0,060525,,,A",
    # Latitude with 3 or 5 digits before the point, longitude with 4 or 6.
    "GPGGA,123519,480.7038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
    "GPGGA,123519,04807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
    "GPGGA,123519,4807.038,N,1131.000,E,1,08,0.9,545.4,M,46.9,M,,",
    "GPGGA,123519,4807.038,N,011310.000,E,1,08,0.9,545.4,M,46.9,M,,",
    # Whole decimal degrees.
    "GPGGA,123519,48,N,011,E,1,08,0.9,545.4,M,46.9,M,,",
]


@pytest.mark.parametrize("body", DECIMAL_DEGREES)
def test_coordinates_not_in_ddmm_format_are_refused(body: str) -> None:
    with pytest.raises(NmeaError) as ei:
        parse_sentence(build_sentence(body))
    assert ei.value.code == "coord_format"
    assert "ddmm" in TEXT.t("nmea.coord_format", "en") and TEXT.t("nmea.coord_format", "zh")


def test_a_decimal_degree_receiver_never_gives_a_position() -> None:
    clock = Clock()
    r = _reader(clock, hold_s=0.0)
    lines = [b.replace("161405.680", "{t}") for b in DECIMAL_DEGREES[:2]] + [_GSA, _GST]
    _feed(r, clock, lines)
    f = r.fix()
    assert not f["ok"] and f["lat"] is None and f["flags"] == ["no_fix"], f
    assert r.counters()["rejected"]["coord_format"] == 6


@pytest.mark.parametrize(("lat", "lon", "want"), [
    ("4807.038", "01131.000", (48.1173, 11.516667)),
    ("4807", "01131", (48.116667, 11.516667)),  # no fraction: still ddmm
    ("4807.", "01131.", (48.116667, 11.516667)),
    ("0000.0001", "00000.0001", (0.0000017, 0.0000017)),
    ("8959.99999999", "17959.999999", (89.9999999, 179.99999998)),
])
def test_ddmm_coordinates_still_parse(lat: str, lon: str, want: tuple[float, float]) -> None:
    s = parse_sentence(build_sentence(f"GPGGA,123519,{lat},N,{lon},E,1,08,0.9,545.4,M,46.9,M,,"))
    assert (s["lat"], s["lon"]) == pytest.approx(want, abs=1e-6)


# --------------------------------------------------------------------------- measured or not


@pytest.mark.parametrize("mode", ["E", "M", "S"])
def test_rmc_only_fix_in_dead_reckoning_manual_or_simulator_mode_is_not_measured(mode: str) -> None:
    assert parse_sentence(build_sentence(_rmc(mode).format(t="120000")))["measured"] is False
    clock = Clock()
    r = _reader(clock, hold_s=0.0)
    _feed(r, clock, [_rmc(mode), _GSA, _GST])
    f = r.fix()
    assert not f["ok"] and "not_measured" in f["flags"], f
    assert f["lat"] == pytest.approx(LAT)


@pytest.mark.parametrize("mode", ["A", "D", "P", "R", "F", ""])
def test_rmc_only_measured_fix_passes(mode: str) -> None:
    assert parse_sentence(build_sentence(_rmc(mode).format(t="120000")))["measured"] is True
    clock = Clock()
    r = _reader(clock, hold_s=0.0)
    _feed(r, clock, [_rmc(mode), _GSA, _GST])
    assert r.fix()["ok"], r.fix()


def test_rmc_mode_n_or_an_unknown_mode() -> None:
    assert parse_sentence(build_sentence(_rmc("N").format(t="120000")))["valid"] is False
    with pytest.raises(NmeaError) as ei:
        parse_sentence(build_sentence(_rmc("X").format(t="120000")))
    assert ei.value.code == "malformed"


def test_a_measured_gga_does_not_hide_an_rmc_that_says_dead_reckoning() -> None:
    clock = Clock()
    r = _reader(clock, hold_s=0.0)
    gga = f"GNGGA,{{t}},{_LA},{_NS},{_LO},{_EW},1,10,0.8,52.0,M,-8.0,M,,"
    _feed(r, clock, [gga, _rmc("A"), _GSA, _GST])
    assert r.fix()["ok"]
    _feed(r, clock, [gga, _rmc("E"), _GSA, _GST], seconds=1)
    assert "not_measured" in r.fix()["flags"]


@pytest.mark.parametrize("quality", [6, 7, 8])
def test_gga_quality_6_to_8_is_not_measured(quality: int) -> None:
    s = parse_sentence(build_sentence(f"GPGGA,123519,4807.038,N,01131.000,E,{quality},08,0.9,545.4,M,,M,,"))
    assert s["measured"] is False


@pytest.mark.parametrize(("mode", "flags"), [
    ("A", []), ("AA", []), ("DAN", []), ("NAAN", []), ("RF", []), ("P", []),
    ("N", ["no_fix"]), ("NN", ["no_fix"]), ("NNNN", ["no_fix"]),
    ("E", ["not_measured"]), ("ENN", ["not_measured"]), ("NM", ["not_measured"]),
    ("S", ["not_measured"]), ("AE", ["not_measured"]),
])
def test_gns_mode_string_per_constellation(mode: str, flags: list[str]) -> None:
    clock = Clock()
    r = _reader(clock, hold_s=0.0)
    if "N" in mode and not mode.strip("N"):  # a receiver without a fix leaves the position blank
        _feed(r, clock, [f"GNGNS,{{t}},,,,,{mode},00,99.9,,,,", _GSA])
    else:
        _feed(r, clock, [_gns(mode), _GSA, _GST])
    f = r.fix()
    assert [x for x in f["flags"] if x != "accuracy_estimated"] == flags and f["ok"] == (not flags), f
    assert r.accepted["GNS"] == 3


def test_gns_fields() -> None:
    s = parse_sentence("$GNGNS,014035.00,4332.69262,S,17235.48549,E,RR,13,0.9,25.63,11.24,,*70")
    assert s["type"] == "GNS" and s["mode"] == "RR" and s["valid"] and s["measured"]
    assert s["lat"] == pytest.approx(-(43 + 32.69262 / 60)) and s["lon"] == pytest.approx(172 + 35.48549 / 60)
    assert s["sats"] == 13 and s["hdop"] == 0.9 and s["alt_m"] == 25.63 and s["utc_s"] == 6035.0
    for bad in ["", "AX", "a", "AAAAAAAAA"]:
        with pytest.raises(NmeaError) as ei:
            parse_sentence(build_sentence(f"GNGNS,014035.00,4332.69262,S,17235.48549,E,{bad},13,0.9,25.6,11.2,,"))
        assert ei.value.code == "malformed"
