"""Serial scan-engine drivers (drivers/scanner) against byte-accurate
simulated engines (simulator/scan_engine_sim.py).

Layers, each catching a different break:
  - command bytes of every family, the GM65 CRC against the manual's own
    examples (33 31, DE C8), the SSI checksum against the published frames;
  - the simulated engines put exactly those bytes on the wire;
  - parsers: GM65 ACK stripped, idle gap as a boundary (never merge a cut
    frame with the next), oversize, binary garbage, CRLF vs CR, SSI ACK/NAK,
    retransmit de-duplication, multi-packet data; hypothesis fuzz (arbitrary
    bytes never crash; valid frames interleaved with garbage and idle gaps
    come out exactly once each, never merged or split);
  - the async driver on CPython over a real pty and over socket:// through
    the HAL's host port, and raw byte streams through pyserial's loop://;
  - the same parser vectors and the driver on the MicroPython unix port.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.hal import host
from drivers.scanner import (
    ScanEngine,
    ScannerError,
    connect,
    gm65,
    honeywell,
    make_parser,
    newland,
    open_engine,
    ssi,
)
from drivers.scanner import framing as F
from simulator import unixport
from simulator.scan_engine_sim import SimScanEngine
from tests.drivers import scan_engines_mp_check as mpcheck

HERE = Path(__file__).parent
FAMILIES = ("gm65", "honeywell", "ssi", "newland")
LINE_FAMILIES = ("gm65", "honeywell", "newland")
SUFFIXES = ("cr", "crlf", "none")
FUZZ = settings(max_examples=150, deadline=None)
IDLE = 50


def hx(s: str) -> bytes:
    return bytes.fromhex(s)


def scans(events: list[tuple[str, bytes, Any]]) -> list[bytes]:
    return [p for k, p, _ in events if k == F.SCAN]


# --------------------------------------------------------------------------
# Command bytes

@pytest.mark.parametrize(("made", "wire"), [
    (gm65.TRIGGER, "7E 00 08 01 00 02 01 AB CD"),
    (gm65.ACK, "02 00 00 01 00 33 31"),
    (gm65.encode_reply(b"\x00"), "02 00 00 01 00 33 31"),  # the ACK is a reply carrying 00
    (gm65.SAVE_CMD, "7E 00 09 01 00 00 00 DE C8"),
    (gm65.encode_command(gm65.SAVE, 0, b"\x00"), "7E 00 09 01 00 00 00 DE C8"),
    (gm65.write_reg(2, 1, crc=False), "7E 00 08 01 00 02 01 AB CD"),
    (gm65.read_reg(0x60, crc=False), "7E 00 07 01 00 60 01 AB CD"),
    (honeywell.TRIGGER, "16 54 0D"),
    (honeywell.STOP, "16 55 0D"),
    (honeywell.aim_command(True), "16 4D 0D" + b"PRECA2,BK2995C80.".hex()),
    (ssi.TRIGGER, "04 E4 04 00 FF 14"),
    (ssi.STOP, "04 E5 04 00 FF 13"),
    (ssi.CMD_ACK, "04 D0 04 00 FF 28"),
    (ssi.CMD_NAK_RESEND, "05 D1 04 00 01 FF 25"),
    (ssi.aim_command(True), "07 C6 04 08 FF 2D 01 FD FA"),
    (newland.TRIGGER, "7E 01" + b"0000#SCNTRG1;".hex() + "03"),
    (newland.STOP, "7E 01" + b"0000#SCNTRG0;".hex() + "03"),
])
def test_command_bytes(made: bytes, wire: str) -> None:
    assert made == hx(wire)


def test_gm65_crc_is_ccitt_xmodem() -> None:
    assert gm65.crc16(b"123456789") == 0x31C3  # the CRC-16/XMODEM check value
    assert gm65.parse_command(gm65.TRIGGER) == (gm65.WRITE, 2, b"\x01")  # AB CD accepted
    assert gm65.parse_command(gm65.write_reg(2, 1)) == (gm65.WRITE, 2, b"\x01")
    assert gm65.parse_command(gm65.write_reg(2, 1)[:-1] + b"\x00") is None


def test_ssi_decode_data_packets() -> None:
    [p] = ssi.decode_packets(b"AB", 0x03)
    assert p == hx("07 F3 00 00 03 41 42") + ssi.checksum(hx("07 F3 00 00 03 41 42")).to_bytes(2, "big")
    assert sum(p[:-2]) + int.from_bytes(p[-2:], "big") == 0x10000
    ps = ssi.decode_packets(b"Z" * 600, 0x1C)
    assert [len(x) for x in ps] == [257, 257, 107]
    assert [x[3] for x in ps] == [ssi.ST_CONTINUATION, ssi.ST_CONTINUATION, 0]


# --------------------------------------------------------------------------
# The simulated engines say what real engines say

def test_sim_gm65_trigger_ack_then_data() -> None:
    sim = SimScanEngine("gm65", suffix="cr", aim=True)
    assert sim.feed(gm65.TRIGGER) == gm65.ACK  # nothing under the engine
    sim.present("RR123456785CN", "code128")
    assert sim.feed(gm65.TRIGGER) == gm65.ACK + b"]C0RR123456785CN\r"
    assert sim.feed(gm65.read_reg(gm65.AIM_REG)) == gm65.encode_reply(bytes([gm65.AIM_MASK]))
    assert sim.feed(gm65.TRIGGER[:-1] + b"\x00") == b"" and sim.bad_commands == 1  # bad CRC: silence


def test_sim_other_families_byte_for_byte() -> None:
    h = SimScanEngine("honeywell", suffix="crlf")
    h.present("6901234567892", "ean13")
    assert h.feed(honeywell.TRIGGER) == b"6901234567892\r\n"
    assert h.feed(honeywell.aim_command(True)) == b"PRECA2\x06,BK2995C80\x06."
    h.present("6901234567892", "ean13")
    assert h.feed(honeywell.TRIGGER) == b"]E06901234567892\r\n"
    n = SimScanEngine("newland", suffix="none")
    n.present("ABC", "qr")
    assert n.feed(newland.TRIGGER) == b"\x02\x010000#SCNTRG1\x06;\x03ABC"
    s = SimScanEngine("ssi")
    s.present("AB", "code128")
    assert s.feed(ssi.TRIGGER) == hx("04 D0 00 00 FF 2C") + ssi.decode_packets(b"AB", 3)[0]


# --------------------------------------------------------------------------
# Parsers

def test_gm65_ack_glued_to_data_is_stripped() -> None:
    p = make_parser("gm65", "cr", IDLE)
    ev = p.feed(gm65.ACK + b"]C0ABC\r" + gm65.ACK + b"XYZ\r", 0)
    assert ev == [(F.REPLY, b"\x00", "ack"), (F.SCAN, b"]C0ABC", None), (F.REPLY, b"\x00", "ack"),
                  (F.SCAN, b"XYZ", None)]
    # A reply with a wrong CRC is dropped whole, the data after it survives.
    bad = gm65.ACK[:-1] + b"\x00"
    assert scans(p.feed(bad + b"DEF\r", 1)) == [b"DEF"] and p.stats["checksum"] == 1


@pytest.mark.parametrize("family", LINE_FAMILIES)
def test_cut_frame_then_gap_never_merges(family: str) -> None:
    p = make_parser(family, "cr", IDLE)
    assert p.feed(b"RR1234", 0) == []
    assert p.idle(IDLE - 1) == []  # not yet a gap
    assert p.idle(IDLE + 5) == [] and p.stats["truncated"] == 1
    assert scans(p.feed(b"RR999\r", 200)) == [b"RR999"]
    # Bytes that waited in a buffer while nobody read are not split by the wait.
    assert scans(p.feed(b"AB", 300) + p.feed(b"CD\r", 900)) == [b"ABCD"]


def test_suffix_none_cuts_on_idle_gap_only() -> None:
    p = make_parser("honeywell", "none", IDLE)
    assert p.feed(b"ABC", 0) + p.feed(b"DEF", 10) == []
    assert scans(p.idle(70)) == [b"ABCDEF"]
    assert scans(p.feed(b"X\x00Y", 100) + p.idle(200)) == [] and p.stats["bad_bytes"] == 1


def test_crlf_and_stray_lf() -> None:
    p = make_parser("newland", "crlf", IDLE)
    assert scans(p.feed(b"A1\r\nB2\r", 0) + p.feed(b"\n", 1)) == [b"A1", b"B2"]
    q = make_parser("newland", "cr", IDLE)  # engine sends CRLF, we expect CR
    assert scans(q.feed(b"A1\r\nB2\r\n", 0)) == [b"A1", b"B2"] and q.stats["bad_bytes"] == 0


def test_oversize_dropped_whole_including_its_tail() -> None:
    p = make_parser("gm65", "cr", IDLE, max_len=16)
    ev = p.feed(b"9" * 40, 0) + p.feed(b"9" * 10 + b"\rOK\r", 1)
    assert scans(ev) == [b"OK"] and p.stats["oversize"] == 1
    q = make_parser("gm65", "none", IDLE, max_len=16)
    assert scans(q.feed(b"9" * 40, 0) + q.feed(b"9" * 5, 1) + q.idle(100) + q.feed(b"OK", 120)
                 + q.idle(200)) == [b"OK"]


def test_gs1_separators_and_utf8_are_text_binary_is_not() -> None:
    p = make_parser("gm65", "cr", IDLE)
    ok = b"]d2\x1d0109501101530003\x1d17250101" + b"\r" + "邮件ABC".encode() + b"\r"
    assert scans(p.feed(ok, 0)) == [ok.split(b"\r")[0], "邮件ABC".encode()]
    assert scans(p.feed(b"\xff\xfeAB\r\x1b[2J\r", 1)) == [] and p.stats["bad_bytes"] == 2


def test_honeywell_and_newland_replies_are_not_scans() -> None:
    h = make_parser("honeywell", "cr", IDLE)
    ev = h.feed(b"PRECA2\x06,BK2", 0) + h.feed(b"995C80\x15.", 1) + h.feed(b"PRECA2X\r", 2)
    assert ev == [(F.REPLY, b"PRECA2,BK2995C80.", "nak"), (F.SCAN, b"PRECA2X", None)]
    n = make_parser("newland", "cr", IDLE)
    ev = n.feed(b"\x02\x010000#AIDENA1\x15;\x03", 0)
    assert ev == [(F.REPLY, b"0000#AIDENA1", "nak")]


def test_ssi_ack_nak_retransmit_and_multipacket() -> None:
    p = make_parser("ssi", "none", IDLE, max_len=2048)
    [pkt] = ssi.decode_packets(b"]C0RR123456785CN", 3)
    ev = p.feed(pkt, 0)
    assert ev == [(F.SEND, ssi.CMD_ACK, None), (F.SCAN, b"]C0RR123456785CN", "code128")]
    # Our ACK was lost: the engine retransmits; ACK again, deliver once.
    again = ssi.decode_packets(b"]C0RR123456785CN", 3, retransmit=True)[0]
    assert p.feed(again, 10) == [(F.SEND, ssi.CMD_ACK, None)] and p.stats["duplicate"] == 1
    # A corrupt packet is NAKed; its retransmission is new data and delivered.
    assert (F.SEND, ssi.CMD_NAK_RESEND, None) in p.feed(pkt[:-1] + b"\x00", 20)
    p.idle(100)
    assert scans(p.feed(again, 120)) == [b"]C0RR123456785CN"]
    big = ("]Q1" + "Z" * 700).encode()
    ev = []
    for q in ssi.decode_packets(big, 0x1C):
        ev += p.feed(q, 200)
    assert scans(ev) == [big] and [k for k, _, _ in ev].count(F.SEND) == 3
    assert p.stats["checksum"] == 1 and p.stats["naks_sent"] == 1


def test_ssi_cut_packet_then_gap() -> None:
    p = make_parser("ssi", "none", IDLE)
    [a] = ssi.decode_packets(b"AAAA", 3)
    [b] = ssi.decode_packets(b"BBBB", 3)
    assert p.feed(a[:6], 0) == [] and p.idle(100) == [] and p.stats["truncated"] == 1
    assert scans(p.feed(b, 120)) == [b"BBBB"]
    # A cut multi-packet message is dropped after the assembly timeout, and
    # its late last packet is not delivered as a scan of its own.
    ps = ssi.decode_packets(b"C" * 300, 3)
    p.feed(ps[0], 200)
    p.idle(2000)
    assert p.stats["truncated"] == 2
    assert scans(p.feed(ps[1], 2100)) == [] and p.stats["truncated"] == 3
    assert scans(p.feed(b, 2200)) == [b"BBBB"]


# --------------------------------------------------------------------------
# Fuzz

def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@FUZZ
@given(family=st.sampled_from(FAMILIES), suffix=st.sampled_from(SUFFIXES), data=st.binary(max_size=600),
       cuts=st.lists(st.integers(0, 600), max_size=8), gaps=st.lists(st.booleans(), max_size=8))
def test_fuzz_arbitrary_bytes_never_crash(family: str, suffix: str, data: bytes, cuts: list[int],
                                          gaps: list[bool]) -> None:
    p = make_parser(family, suffix, IDLE, max_len=128)
    t = 0
    out = []
    for i, c in enumerate(_chunks(data, cuts)):
        out += p.feed(c, t)
        t += 100 if i < len(gaps) and gaps[i] else 1
        out += p.idle(t)
    out += p.flush()
    for kind, payload, _ in out:
        assert kind in (F.SCAN, F.REPLY, F.SEND)
        if kind == F.SCAN:
            assert F.valid_text(payload) and 0 < len(payload) <= 128 * 8


_texts = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@st.composite
def _stream(draw: st.DrawFn, family: str, suffix: str) -> tuple[list[tuple[bytes, int]], list[bytes]]:
    """Segments separated by idle gaps: valid frames from the simulator's
    encoder, garbage (never a suffix byte, always one control byte), cut
    frames. Returns (segments, the scans that must come out)."""
    sim = SimScanEngine(family, suffix=suffix, aim=draw(st.booleans()))
    segs: list[tuple[bytes, int]] = []
    want: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        # With suffix "none" a cut frame is indistinguishable from a short
        # one (the gap is the only boundary): cut frames only where a suffix
        # or a length field makes the cut visible.
        kinds = ["frame", "frame", "garbage"] + (["cut"] if suffix != "none" or family == "ssi" else [])
        what = draw(st.sampled_from(kinds))
        text = draw(_texts)
        sym = draw(st.sampled_from(["code128", "ean13", "qr"]))
        if what == "frame":
            segs.append((sim.frame(text, sym), 0))
            want.append(sim.payload(text, sym))
        elif what == "garbage":
            g = draw(st.binary(min_size=1, max_size=60))
            g = bytes(c for c in g if c not in b"\r\n" and (family != "ssi" or c != 0))
            segs.append((g + b"\x01", 0))
        else:
            f = sim.frame(text, sym)
            segs.append((f[:draw(st.integers(1, max(1, len(f) - 1 - len(F.SUFFIXES[suffix]))))], 0))
    return segs, want


@FUZZ
@given(data=st.data(), family=st.sampled_from(FAMILIES), suffix=st.sampled_from(SUFFIXES),
       cuts=st.lists(st.integers(0, 400), max_size=5))
def test_fuzz_frames_between_garbage_come_out_exactly_once(data: st.DataObject, family: str, suffix: str,
                                                            cuts: list[int]) -> None:
    segs, want = data.draw(_stream(family, suffix))
    p = make_parser(family, suffix, IDLE, max_len=256)
    t = 0
    out = []
    for seg, _ in segs:
        for c in _chunks(seg, cuts):
            out += p.feed(c, t)
            t += 1
            out += p.idle(t)  # reads that find nothing, but no gap yet
        t += IDLE + 10
        out += p.idle(t)  # the gap
    out += p.flush()
    assert scans(out) == want


# --------------------------------------------------------------------------
# The driver over real serial byte streams

class Rig:
    """A simulated engine and the driver that talks to it (pty or socket://)."""

    def __init__(self, family: str, transport: str, suffix: str = "cr", **sim_kw: Any) -> None:
        self.sim = SimScanEngine(family, suffix=suffix, gap_ms=60, unplug_ms=120, **sim_kw)
        if transport == "pty":
            url = self.sim.serve_pty()
        else:
            url = f"socket://127.0.0.1:{self.sim.serve_tcp()}"
        self.eng = connect(host, family, url, suffix=suffix, idle_ms=30, reply_ms=400,
                           max_len=1024 if family == "ssi" else 512)

    def close(self) -> None:
        self.eng.close()
        self.sim.close()


@pytest.fixture(params=[(f, t) for f in FAMILIES for t in ("pty", "socket")], ids=lambda p: "-".join(p))
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    r = Rig(*request.param)
    yield r
    r.close()


def test_driver_trigger_aim_and_scans(rig: Rig) -> None:
    async def go() -> list[Any]:
        out: list[Any] = [await rig.eng.scan(300)]  # nothing under the engine
        rig.sim.present("RR123456785CN", "code128")
        out.append(await rig.eng.scan(2000))
        out.append(await rig.eng.configure_aim(True))
        rig.sim.present("6901234567892", "ean13")
        out.append(await rig.eng.scan(2000))
        rig.sim.present("https://post.example/é", "qr")
        out.append(await rig.eng.scan(2000))
        return out

    none, plain, aimed, ean, qr = asyncio.run(go())
    fam = rig.sim.family
    assert none is None
    assert plain["text"] == "RR123456785CN" and plain["aim"] is None and plain["family"] == fam
    assert aimed is True and rig.sim.aim is True
    assert (ean["text"], ean["aim"], ean["symbology"]) == ("6901234567892", "]E0", "ean13")
    assert (qr["text"], qr["symbology"], qr["data"]) == ("https://post.example/é", "qr",
                                                         "]Q1https://post.example/é".encode())
    if fam == "ssi":
        assert plain["symbology"] == "code128" and rig.eng.stats["acks_sent"] == 3
    assert F.rejected(rig.eng.stats) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_driver_faults_are_rejected_and_counted(family: str) -> None:
    rig = Rig(family, "pty", aim=True)
    faults = [dict(noise=12), dict(truncate=True), dict(bad_checksum=True), dict(oversize=1500),
              dict(unplug=True)]

    async def go() -> list[Any]:
        got = []
        for i, fault in enumerate(faults):
            rig.sim.faults.set(**fault, scans=1)
            rig.sim.present(f"FAULT{i}", "code128")
            await rig.eng.trigger()
            got.append(await rig.eng.read_scan(400))  # keep reading: only reads see gaps
            rig.sim.present(f"GOOD{i}", "code128")
            got.append(await rig.eng.scan(2000))
        return got

    try:
        got = asyncio.run(go())
        texts = [s["text"] for s in got if s]
        late = []
        while rig.eng.pending():
            late.append(asyncio.run(rig.eng.read_scan(0))["text"])
        st_ = rig.eng.stats
        every = texts + late
        # Each good scan exactly once; a faulty one only where it survives
        # intact: after noise and a gap, after an SSI resend on our NAK, or
        # behind a GM65 ACK whose CRC was hit (the data itself is whole).
        assert [t for t in every if t.startswith("GOOD")] == [f"GOOD{i}" for i in range(5)]
        assert [t for t in every if t.startswith("FAULT")] == (
            ["FAULT0", "FAULT2"] if family in ("ssi", "gm65") else ["FAULT0"])
        assert st_["oversize"] == 1
        assert st_["truncated"] >= 2
        if family == "ssi":
            assert st_["naks_sent"] >= 1 and rig.sim.naks_heard >= 1
        elif family != "gm65":
            assert st_["bad_bytes"] >= 1  # the byte the line corrupted
        else:
            assert st_["checksum"] == 1  # the ACK with a bad CRC
    finally:
        rig.close()


def test_continuous_mode_and_suffix_none_over_socket() -> None:
    rig = Rig("honeywell", "socket", suffix="none", continuous=True)
    try:
        async def go() -> list[str]:
            await asyncio.sleep(0.05)
            for t in ("A1", "B2", "C3"):
                rig.sim.present(t)
            out = []
            for _ in range(3):
                s = await rig.eng.read_scan(2000)
                out.append(s["text"] if s else None)
            return out

        assert asyncio.run(go()) == ["A1", "B2", "C3"]
        assert rig.sim.triggers == 0
    finally:
        rig.close()


def test_loop_url_byte_stream() -> None:
    """pyserial's loop:// hands written bytes back to the reader: we play
    the engine's side on the same port, with real pauses for the gaps."""
    sim = SimScanEngine("gm65", suffix="cr", aim=True)
    port = host.uart("loop://", 9600)
    eng = open_engine(port, "gm65", suffix="cr", idle_ms=30)

    async def go() -> list[Any]:
        out = []
        for chunk in (gm65.ACK + sim.frame("RR1", "code128"), b"RR2-CUT", sim.frame("RR3", "ean13")):
            port.write(chunk)
            s = await eng.read_scan(150)
            out.append(s and (s["text"], s["symbology"]))
        return out

    try:
        assert asyncio.run(go()) == [("RR1", "code128"), None, ("RR3", "ean13")]
        assert eng.stats["truncated"] == 1 and eng.stats["replies"] == 1
    finally:
        eng.close()


def test_uart_failure_is_a_scanner_error() -> None:
    class Dead:
        def read(self, n: int) -> bytes:
            raise OSError("adapter unplugged")

        def write(self, data: bytes) -> int:
            raise OSError("adapter unplugged")

        def close(self) -> None:
            pass

    eng = ScanEngine(Dead(), "ssi")
    with pytest.raises(ScannerError) as e:
        asyncio.run(eng.read_scan(10))
    assert e.value.code == "io" and eng.stats["io"] == 1


# --------------------------------------------------------------------------
# MicroPython unix port

def _vectors() -> list[dict[str, Any]]:
    """Streams for every family and suffix with each kind of bad input."""
    out = []
    for family in FAMILIES:
        for suffix in (SUFFIXES if family != "ssi" else ("none",)):
            sim = SimScanEngine(family, suffix=suffix, aim=True)
            good = [sim.frame("RR123456785CN", "code128"), sim.frame("6901234567892", "ean13"),
                    sim.frame("邮政ABC", "qr"), sim.frame("Z" * 300, "qr")]
            steps: list[list[Any]] = []
            t = 0
            for seg in [good[0], b"\x00\xff\x13garbage", good[1][:5], good[2], b"9" * 700, good[3],
                        good[0][:-1] + bytes([good[0][-1] ^ 0x40])]:
                for i in range(0, len(seg), 7):
                    steps.append(["f", seg[i:i + 7].hex(), t])
                    t += 1
                t += 80
                steps.append(["i", t])
            steps.append(["x"])
            out.append({"family": family, "suffix": suffix, "idle_ms": IDLE, "max_len": 400, "steps": steps})
    return out


@pytest.mark.mpy
def test_micropython_parsers_match_cpython(tmp_path: Path) -> None:
    vecs = _vectors()
    path = tmp_path / "scan_vectors.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in vecs))
    proc = unixport.run([str(HERE / "scan_engines_mp_check.py"), "vectors", str(path)],
                        extra_path=[HERE.parents[1]], timeout=120)
    assert proc.returncode == 0, proc.stderr
    mp = [json.loads(x) for x in proc.stdout.splitlines()]
    cp = [json.loads(json.dumps(mpcheck.run_vector(v))) for v in vecs]
    assert mp == cp
    for r in cp:  # and the vectors say something: each stream has good scans and rejects
        assert sum(1 for e in r["events"] if e[0] == "scan") >= 3
        assert F.rejected(r["stats"]) >= 2


@pytest.mark.mpy
@pytest.mark.parametrize("family", FAMILIES)
def test_micropython_driver_against_the_simulator(family: str) -> None:
    sim = SimScanEngine(family, suffix="cr", gap_ms=60)
    sim.present("RR123456785CN", "code128")
    sim.present("6901234567892", "ean13")
    sim.faults.set(noise=10, scans=1)
    port = sim.serve_tcp()
    try:
        t0 = time.monotonic()
        proc = unixport.run([str(HERE / "scan_engines_mp_check.py"), "live", family, "cr", str(port), "3"],
                            extra_path=[HERE.parents[1]], timeout=60)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(x) for x in proc.stdout.splitlines()]
    finally:
        sim.close()
    by = [x for x in lines if x["step"] == "scan"]
    assert lines[0] == {"step": "hal", "ok": "unix"}
    assert lines[1] == {"step": "aim", "ok": True}
    assert [s["ok"] and (s["ok"]["text"], s["ok"]["aim"]) for s in by] == [
        ("RR123456785CN", "]C0"), ("6901234567892", "]E0"), None]
    end = lines[-1]["stats"]
    assert end["scans"] == 2 and time.monotonic() - t0 < 30
    if family != "ssi":
        assert end["truncated"] + end["bad_bytes"] >= 1  # the noise before the first scan
