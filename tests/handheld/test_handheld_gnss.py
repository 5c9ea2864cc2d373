"""NMEA parsing and the GNSS reader: real pyserial ports (loop:// and a pty), fuzzed input."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
import serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handheld.nmea import SUPPORTED, GnssReader, NmeaError, build_sentence, checksum, parse_sentence
from handheld.position import NON_BLOCKING, GnssConfig, haversine_m
from handheld.text import TEXT
from tests.waiting import within

# Beijing-ish countryside; 1 minute of latitude is about 1852 m.
LAT, LON = 39.9, 116.4
DAY = dt.date(2025, 5, 6)
DAY_EPOCH = dt.datetime.combine(DAY, dt.time(), dt.UTC).timestamp()


def _dm(value: float, lat: bool) -> tuple[str, str]:
    hemi = ("N" if value >= 0 else "S") if lat else ("E" if value >= 0 else "W")
    v = abs(value)
    deg = int(v)
    minutes = (v - deg) * 60
    return (f"{deg:02d}{minutes:07.4f}" if lat else f"{deg:03d}{minutes:07.4f}"), hemi


def _hms(sec: float) -> str:
    sec = sec % 86400
    return f"{int(sec // 3600):02d}{int(sec % 3600 // 60):02d}{sec % 60:05.2f}"


def epoch(
    utc_s: float,
    lat: float | None = LAT,
    lon: float | None = LON,
    *,
    quality: int = 1,
    sats: int = 10,
    hdop: float | None = 0.8,
    gst: tuple[float, float] | None = (2.0, 1.5),
    fix_type: int = 3,
    talker: str = "GN",
) -> bytes:
    """One second of receiver output: GGA, RMC, GSA, GST, plus a GSV we do not use."""
    t = _hms(utc_s)
    if lat is None or lon is None:
        la, ns, lo, ew = "", "", "", ""
    else:
        (la, ns), (lo, ew) = _dm(lat, True), _dm(lon, False)
    hd = "" if hdop is None else f"{hdop:.1f}"
    lines = [
        f"{talker}GGA,{t},{la},{ns},{lo},{ew},{quality},{sats:02d},{hd},52.0,M,-8.0,M,,",
        f"{talker}RMC,{t},{'A' if quality else 'V'},{la},{ns},{lo},{ew},0.1,0.0,{DAY:%d%m%y},,,A",
        f"{talker}GSA,A,{fix_type},01,02,03,04,05,06,,,,,,,1.6,{hd},1.2",
        "GPGSV,1,1,04,01,40,083,46,02,17,308,41,03,07,344,39,04,13,161,45",
    ]
    if gst is not None:
        lines.append(f"{talker}GST,{t},1.1,2.0,1.5,30.0,{gst[0]:.2f},{gst[1]:.2f},3.0")
    return b"".join((build_sentence(x) + "\r\n").encode() for x in lines)


class Clock:
    """Monotonic time the test advances - the reader's timers without sleeping."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def reader(clock: Clock, **cfg: float) -> GnssReader:
    port = serial.serial_for_url("loop://", timeout=0.05)
    return GnssReader(
        port, config=GnssConfig(**cfg), clock=clock, wall_clock=lambda: DAY_EPOCH + 12 * 3600 + clock.t - 1000
    )


def run(r: GnssReader, clock: Clock, seconds: int, start_utc: float = 12 * 3600, **kw: object) -> float:
    """Feed ``seconds`` epochs one second apart through the real loop:// port; returns next utc."""
    utc = start_utc
    for _ in range(seconds):
        r._port.write(epoch(utc, **kw))  # type: ignore[union-attr]
        while r.poll():
            pass
        clock.t += 1.0
        utc += 1.0
    return utc


# --------------------------------------------------------------------------- parser


def test_reference_sentences_parse() -> None:
    gga = parse_sentence("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47")
    assert gga["type"] == "GGA" and gga["quality"] == 1 and gga["sats"] == 8 and gga["hdop"] == 0.9
    assert gga["lat"] == pytest.approx(48.1173) and gga["lon"] == pytest.approx(11.5166667)
    assert gga["utc_s"] == 12 * 3600 + 35 * 60 + 19
    rmc = parse_sentence(b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n")
    assert (
        rmc["valid"]
        and rmc["date"] == dt.date(1994, 3, 23)
        and rmc["speed_mps"] == pytest.approx(11.52, 0.01)
    )
    gsa = parse_sentence("$GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1*39")
    assert gsa["fix_type"] == 3 and gsa["prns"] == [4, 5, 9, 12, 24] and gsa["hdop"] == 1.3
    gst = parse_sentence("$GPGST,172814.0,0.006,0.023,0.020,273.6,0.023,0.020,0.031*6A")
    assert gst["lat_std_m"] == 0.023 and gst["lon_std_m"] == 0.020
    bd = parse_sentence(build_sentence("BDGGA,010203.00,3000.0000,S,07000.0000,W,2,12,0.6,10.0,M,,M,,"))
    assert bd["talker"] == "BD" and bd["lat"] == -30.0 and bd["lon"] == -70.0


def test_no_fix_sentence_has_empty_fields() -> None:
    s = parse_sentence(build_sentence("GPGGA,120000.00,,,,,0,00,99.99,,,,,,"))
    assert s["quality"] == 0 and s["lat"] is None and s["lon"] is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "empty"),
        (b"\x00\xff\xfe$GP", "binary"),
        ("GPGGA,123519*47", "no_start"),
        ("$GPGGA,123519,4807.038,N,01131.000,E,1,08", "truncated"),
        ("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*4", "truncated"),
        ("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48", "bad_checksum"),
        ("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*ZZ", "bad_checksum"),
        ("$" + "A" * 200 + "*00", "too_long"),
        (build_sentence("gpgga,1"), "bad_address"),
        (build_sentence("GPGSV,1,1,00"), "unsupported"),
        (build_sentence("PUBX,00,1"), "unsupported"),
        (build_sentence("GPGGA,126119,4807.038,N,01131.000,E,1,08,0.9,545.4,M,,M,,"), "malformed"),
        (build_sentence("GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,,M,,"), "malformed"),
        (build_sentence("GPGGA,123519,4807.038,X,01131.000,E,1,08,0.9,545.4,M,,M,,"), "malformed"),
        (build_sentence("GPGGA,123519,4807.038,N,,,1,08,0.9,545.4,M,,M,,"), "malformed"),
        (build_sentence("GPGGA,123519,nan,N,01131.000,E,1,08,0.9,545.4,M,,M,,"), "malformed"),
        (build_sentence("GPGGA,123519,4807.038,N,01131.000,E,1,08,-1,545.4,M,,M,,"), "malformed"),
        (build_sentence("GPGGA,123519,4807.038"), "malformed"),
        (build_sentence("GPRMC,123519,Q,4807.038,N,01131.000,E,0,0,230394,,"), "malformed"),
        (build_sentence("GPRMC,123519,A,4807.038,N,01131.000,E,0,0,320194,,"), "malformed"),
        (build_sentence("GPGSA,A,7,,,,,,,,,,,,,1,1,1"), "malformed"),
    ],
)
def test_rejections_have_codes_and_bilingual_text(raw: str | bytes, code: str) -> None:
    with pytest.raises(NmeaError) as ei:
        parse_sentence(raw)
    assert ei.value.code == code
    assert TEXT.t("nmea." + code, "zh") and TEXT.t("nmea." + code, "en")


def test_checksum_is_xor_of_body() -> None:
    assert checksum("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,") == 0x47
    assert build_sentence("GPGGA,1").endswith(f"*{checksum('GPGGA,1'):02X}")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_never_crash_parser(data: bytes) -> None:
    try:
        out = parse_sentence(data)
    except NmeaError as exc:
        assert TEXT.has("nmea." + exc.code)
    else:
        assert out["type"] in SUPPORTED


_VALID = [
    "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
    "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W",
    "GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1",
    "GPGST,172814.0,0.006,0.023,0.020,273.6,0.023,0.020,0.031",
]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(_VALID),
    st.integers(min_value=0, max_value=80),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=6),
    st.booleans(),
)
def test_fuzz_mutated_fields_with_good_checksum(body: str, pos: int, insert: str, fix_crc: bool) -> None:
    """Corrupted content that still carries a *valid* checksum must parse or be refused cleanly."""
    pos = min(pos, len(body))
    mutated = body[:pos] + insert + body[pos + len(insert) :]
    line = build_sentence(mutated) if fix_crc else f"${mutated}*{checksum(body):02X}"
    try:
        out = parse_sentence(line)
    except NmeaError as exc:
        assert TEXT.has("nmea." + exc.code)
    else:
        if out.get("lat") is not None:
            assert -90 <= out["lat"] <= 90 and -180 <= out["lon"] <= 180


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=90), st.just(b"\n"), st.just(b"$"), st.just(b"*")), max_size=30))
def test_fuzz_stream_recovers_the_next_good_epoch(noise: list[bytes]) -> None:
    """Any noise on the line is counted; the next clean sentence after a newline still lands."""
    clock = Clock()
    r = reader(clock)
    r.feed(b"".join(noise))
    r.feed(b"\r\n" + epoch(12 * 3600 + 5))
    assert r.accepted["GGA"] >= 1
    f = r.fix()
    assert f["lat"] == pytest.approx(LAT) and f["lon"] == pytest.approx(LON)
    assert all(TEXT.has("nmea." + code) for code in r.rejected)


# --------------------------------------------------------------------------- reader state


def test_gate_passes_after_accuracy_held() -> None:
    clock = Clock()
    r = reader(clock, hold_s=5.0)
    run(r, clock, 3)
    f = r.fix()
    assert not f["ok"] and f["flags"] == ["accuracy_not_held"]
    assert f["accuracy_source"] == "gst" and f["accuracy_m"] == pytest.approx(2.5)
    run(r, clock, 3, start_utc=12 * 3600 + 3)
    f = r.fix()
    assert f["ok"], f
    assert f["accuracy_held_s"] >= 5.0 and f["sats"] == 10 and f["fix_type"] == 3
    assert f["gnss_utc"].startswith("2025-05-06T12:00:05") and not f["estimated"]
    assert f["fix_age_s"] == pytest.approx(1.0)


def test_poor_accuracy_resets_hold_timer() -> None:
    clock = Clock()
    r = reader(clock, hold_s=3.0)
    utc = run(r, clock, 4)
    assert r.fix()["ok"]
    utc = run(r, clock, 1, start_utc=utc, gst=(12.0, 9.0))
    f = r.fix()
    assert not f["ok"] and "accuracy_poor" in f["flags"] and f["accuracy_m"] == pytest.approx(15.0)
    assert "≤ 10.0 米" in f["messages"][0]["zh"]
    run(r, clock, 2, start_utc=utc)
    assert r.fix()["flags"] == ["accuracy_not_held"]


def test_hdop_estimate_when_no_gst_and_gst_expiry() -> None:
    clock = Clock()
    r = reader(clock, hold_s=2.0)
    run(r, clock, 4, gst=None, hdop=1.2)
    f = r.fix()
    assert f["accuracy_source"] == "hdop_estimate" and f["accuracy_m"] == pytest.approx(6.0)
    assert f["estimated"] and "accuracy_estimated" in f["flags"] and f["ok"]
    assert "accuracy_estimated" in NON_BLOCKING
    # an HDOP of 2.5 -> 12.5 m estimated: not good enough
    run(r, clock, 1, start_utc=13 * 3600, gst=None, hdop=2.5)
    assert "accuracy_poor" in r.fix()["flags"]


def test_no_fix_flags() -> None:
    clock = Clock()
    r = reader(clock)
    f = r.fix()
    assert f["flags"] == ["no_fix"] and f["lat"] is None and not f["ok"]
    run(r, clock, 2, lat=None, lon=None, quality=0, sats=0, fix_type=1)
    assert r.fix()["flags"] == ["no_fix"]
    assert TEXT.t("gnss.no_fix", "zh").startswith("尚未定位")


def test_stale_fix_when_receiver_goes_quiet() -> None:
    clock = Clock()
    r = reader(clock, hold_s=1.0, max_fix_age_s=5.0)
    run(r, clock, 3)
    assert r.fix()["ok"]
    clock.t += 10
    f = r.fix()
    assert not f["ok"] and "stale_fix" in f["flags"] and f["fix_age_s"] > 5


def test_null_island_few_sats_dead_reckoning_2d() -> None:
    clock = Clock()
    r = reader(clock, hold_s=0.0)
    run(r, clock, 2, lat=0.0, lon=0.0)
    assert "null_island" in r.fix()["flags"]
    clock2 = Clock()
    r2 = reader(clock2, hold_s=0.0)
    run(r2, clock2, 2, sats=3)
    assert "few_satellites" in r2.fix()["flags"]
    clock3 = Clock()
    r3 = reader(clock3, hold_s=0.0)
    run(r3, clock3, 2, quality=6)
    assert "not_measured" in r3.fix()["flags"]
    clock4 = Clock()
    r4 = reader(clock4, hold_s=0.0)
    run(r4, clock4, 2, fix_type=2)
    f = r4.fix()
    assert "fix_2d" in f["flags"] and f["ok"]  # recorded, not blocking


def test_impossible_jump_flagged_then_settles() -> None:
    clock = Clock()
    r = reader(clock, hold_s=2.0, jump_settle_s=10.0)
    utc = run(r, clock, 3)
    assert r.fix()["ok"]
    utc = run(r, clock, 1, start_utc=utc, lat=LAT + 0.5)  # ~55 km in one second
    f = r.fix()
    assert "impossible_jump" in f["flags"] and not f["ok"] and f["jump"]["distance_m"] > 50_000
    run(r, clock, 12, start_utc=utc, lat=LAT + 0.5)
    assert r.fix()["ok"]


def test_walking_is_not_a_jump() -> None:
    clock = Clock()
    r = reader(clock, hold_s=1.0)
    utc = 12 * 3600.0
    for i in range(5):
        run(r, clock, 1, start_utc=utc + i, lat=LAT + i * 20 / 111_000)  # 20 m/s - a motorbike
    assert r.fix()["ok"]
    assert haversine_m(LAT, LON, LAT + 1 / 60, LON) == pytest.approx(1853, rel=0.01)


def test_frozen_receiver_time_is_stale_timestamp() -> None:
    clock = Clock()
    r = reader(clock, hold_s=0.0, frozen_after_s=3.0)
    for _ in range(6):
        r._port.write(epoch(12 * 3600))  # type: ignore[union-attr]
        r.poll()
        clock.t += 1
    f = r.fix()
    assert "stale_timestamp" in f["flags"] and not f["ok"]


def test_clock_skew_noted_not_blocking() -> None:
    clock = Clock()
    port = serial.serial_for_url("loop://", timeout=0.05)
    r = GnssReader(port, config=GnssConfig(hold_s=0.0), clock=clock, wall_clock=lambda: DAY_EPOCH + 5 * 86400)
    run(r, clock, 2)
    f = r.fix()
    assert "clock_skew" in f["flags"] and f["ok"] and f["clock_skew_s"] < -86400


def test_garbage_is_counted_and_good_data_survives() -> None:
    clock = Clock()
    r = reader(clock, hold_s=0.0)
    good = epoch(12 * 3600)
    bad_crc = build_sentence("GNGGA,120001.00,3954.0000,N,11624.0000,E,1,10,0.8,52.0,M,,M,,")[:-2] + "00\r\n"
    stream = (
        b"\x00\xff\x13\x88binary noise\r\n"
        + bad_crc.encode()
        + b"$GNGGA,120001.00,3954.00\r\n"  # truncated by a loose connector
        + b"hello world\r\n"
        + b"garbage"
        + good  # newline lost: noise glued to the front of a good sentence
        + b"\xfe" * 1000  # a babbling line with no newline at all
        + b"\r\n"
        + good
    )
    r._port.write(stream)  # type: ignore[union-attr]
    while r.poll():
        pass
    c = r.counters()
    assert c["accepted"]["GGA"] == 2 and c["accepted"]["GST"] == 2
    for code in ("binary", "bad_checksum", "truncated", "no_start", "too_long"):
        assert c["rejected"].get(code, 0) >= 1, (code, c)
    assert c["ignored"]["GPGSV"] == 2
    f = r.fix()
    assert f["ok"] and f["lat"] == pytest.approx(LAT)
    # a line that never ends is cut off instead of growing memory
    r.feed(b"\x01" * 5000)
    assert r.counters()["rejected"]["too_long"] >= 2 and len(r._buf) < 1000


# --------------------------------------------------------------------------- real ports, real time


def _feed_until(write: object, pred: object, extra: bytes = b"", timeout: float = 8.0) -> bool:
    """Write one epoch every 0.1 s (like a 10 Hz receiver) until ``pred()`` holds.

    Writing until the condition is met, instead of a fixed burst, keeps the test
    deterministic on a loaded CI box where the reader thread may run late.
    """
    utc = 12 * 3600.0
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        write(extra + epoch(utc))  # type: ignore[operator]
        utc += 0.1
        time.sleep(0.1)
        if pred():  # type: ignore[operator]
            return True
    return False


def test_background_thread_over_loop_url() -> None:
    port = serial.serial_for_url("loop://", timeout=0.05)
    cfg = GnssConfig(hold_s=0.3, max_fix_age_s=2.0)
    with GnssReader(port, config=cfg) as r:
        assert _feed_until(port.write, lambda: r.fix()["ok"], extra=b"\x00junk\r\n"), r.fix()
        assert r.counters()["rejected"]["binary"] >= 1
        assert r.fix()["accuracy_held_s"] >= 0.3


def test_pty_receiver_then_unplugged() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    cfg = GnssConfig(hold_s=0.3, max_fix_age_s=1.0, reconnect_s=0.2)
    r = GnssReader(path, baudrate=9600, config=cfg).start()
    try:
        ok = _feed_until(lambda b: os.write(master, b), lambda: r.fix()["ok"], extra=b"$GNGGA,12\r\n")
        assert ok, r.fix()
        assert r.counters()["rejected"]["truncated"] >= 1
        os.close(slave)
        os.close(master)  # the receiver's cable is pulled
        master = slave = -1
        assert within(lambda: not r.fix()["ok"] and "stale_fix" in r.fix()["flags"])
        assert within(lambda: "receiver_lost" in r.fix()["flags"])
    finally:
        r.stop()
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)


def test_missing_device_is_counted_not_raised() -> None:
    r = GnssReader("/dev/does-not-exist-gnss", config=GnssConfig(reconnect_s=0.05))
    assert r.poll() == 0
    f = r.fix()
    assert "receiver_lost" in f["flags"] and not f["ok"]
    assert r.counters()["rejected"]["port_error"] == 1
