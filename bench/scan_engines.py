"""Scan-engine parser benchmark (issue 5).

Measured side by side in one run, on the very same byte streams and the
very same parser code (drivers/scanner):

- frames parsed per second on the MicroPython unix port (128 KiB heap) and
  on CPython, per family and overall (the total frames over the total time
  of the four families), and the ratio MicroPython / CPython;
- the parser's peak live heap on MicroPython: ``gc.collect()`` then
  ``gc.mem_alloc()`` after every 64-byte read, minus the baseline before the
  parser was created; the largest over the families is reported.

The streams are what the simulated engines (simulator/scan_engine_sim.py)
put on the wire: 250 scans a stream (parsed 8 times on MicroPython, 40
times on CPython) with AIM identifiers, a mix of a 13-character S10 parcel
id (Code 128), an EAN-13 and a 60-byte QR payload;
GM65 with its ACK in front of every scan, SSI as DECODE_DATA packets, the
line families with a CR suffix. They are fed in 64-byte reads, the size of
a UART FIFO drain, with no idle gaps (the worst case for buffering). A
serial line at 9600 baud carries at most ~40 such scans per second, so any
rate in the thousands leaves the device's CPU to the application.

Last line: scan_engines micropython_frames_per_s=... cpython_frames_per_s=...
peak_heap_bytes=...
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.scanner.engine import make_parser  # noqa: E402
from simulator import unixport  # noqa: E402
from simulator.scan_engine_sim import SimScanEngine  # noqa: E402

BENCH = Path(__file__).resolve().parent
FAMILIES = ("gm65", "honeywell", "ssi", "newland")
N = 250  # scans a stream (~15 KB: it must sit in a 128 KiB heap with the parser)
ROUNDS_MP = 8
ROUNDS_CP = 40
LABELS = [("RR123456785CN", "code128"), ("6901234567892", "ean13"),
          ("https://post.example/t/" + "A1B2C3D4E5" * 3 + "XYZ12345", "qr")]


def stream(family: str) -> tuple[str, bytes]:
    """N scans as the simulated engine frames them (suffix, AIM, GM65 ACK)."""
    suffix = "none" if family == "ssi" else "cr"
    sim = SimScanEngine(family, suffix=suffix, aim=True)
    ack = b"\x02\x00\x00\x01\x00\x33\x31" if family == "gm65" else b""
    parts = [ack + sim.frame(*LABELS[i % len(LABELS)]) for i in range(N)]
    return suffix, b"".join(parts)


def cpython_rate(family: str, suffix: str, data: bytes) -> float:
    t0 = time.perf_counter()
    got = 0
    for _ in range(ROUNDS_CP):
        p = make_parser(family, suffix, 50, 512)
        for i in range(0, len(data), 64):
            got += sum(1 for ev in p.feed(data[i:i + 64], i // 64) if ev[0] == "scan")
        got += sum(1 for ev in p.flush() if ev[0] == "scan")
    dt = time.perf_counter() - t0
    if got != N * ROUNDS_CP:
        raise RuntimeError(f"{family}: {got} scans, expected {N * ROUNDS_CP}")
    return N * ROUNDS_CP / dt


def main() -> None:
    streams = {f: stream(f) for f in FAMILIES}
    with tempfile.TemporaryDirectory() as tmp:
        lines = []
        for f, (suffix, data) in streams.items():
            (Path(tmp) / f"{f}.bin").write_bytes(data)
            lines.append(f"{f} {suffix} {N} {Path(tmp) / f'{f}.bin'}\n")
        path = Path(tmp) / "streams.txt"
        path.write_text("".join(lines))
        proc = unixport.run([str(BENCH / "scan_engines_mp.py"), str(path), str(ROUNDS_MP)],
                            extra_path=[ROOT], timeout=600)
    if proc.returncode:
        raise RuntimeError(proc.stderr or proc.stdout)
    mp_rate: dict[str, float] = {}
    heap: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        kind, fam, value = line.split()
        if kind == "rate":
            mp_rate[fam] = float(value)
        else:
            heap[fam] = int(value)
    cp_rate = {f: cpython_rate(f, *streams[f]) for f in FAMILIES}

    def overall(rates: dict[str, float]) -> float:
        # Total frames over total time: the harmonic mean, not the mean of rates.
        return len(FAMILIES) / sum(1 / rates[f] for f in FAMILIES)

    mp_all, cp_all = overall(mp_rate), overall(cp_rate)
    peak = max(heap.values())
    print(f"{'family':12}{'MicroPython':>14}{'CPython':>12}{'ratio':>8}{'peak heap':>12}")
    for f in FAMILIES:
        print(f"{f:12}{mp_rate[f]:>14.0f}{cp_rate[f]:>12.0f}{mp_rate[f] / cp_rate[f]:>8.2f}{heap[f]:>12}")
    print(f"frames/s, {N} scans a stream in 64-byte reads; peak heap in bytes (MicroPython, 128 KiB heap)")
    print(f"ratio MicroPython/CPython = {mp_all / cp_all:.2f}")
    print(f"scan_engines micropython_frames_per_s={mp_all:.0f} cpython_frames_per_s={cp_all:.0f} "
          f"peak_heap_bytes={peak}")


if __name__ == "__main__":
    main()
