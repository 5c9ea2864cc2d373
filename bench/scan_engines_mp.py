# Run on the MicroPython unix port by bench/scan_engines.py:
#
#   micropython bench/scan_engines_mp.py FILE ROUNDS
#
# FILE holds one line a family: "<family> <suffix> <frames> <path of the raw stream>".
# Each stream is fed to a fresh parser in 64-byte reads (a UART FIFO's worth)
# ROUNDS times; prints "rate <family> <frames/s>" and "heap <family> <peak>",
# peak = the most live heap seen (gc.collect() then gc.mem_alloc()) above the
# baseline taken before the parser existed, sampled after every read.

import gc
import sys
import time

from drivers.scanner.engine import make_parser


def run(family, suffix, frames, stream, rounds):
    n = len(stream)
    t0 = time.ticks_us()
    got = 0
    for _ in range(rounds):
        p = make_parser(family, suffix, 50, 512)
        i = 0
        t = 0
        while i < n:
            for ev in p.feed(stream[i:i + 64], t):
                if ev[0] == "scan":
                    got += 1
            i += 64
            t += 1
        for ev in p.flush():
            if ev[0] == "scan":
                got += 1
    dt = time.ticks_diff(time.ticks_us(), t0) / 1e6
    if got != frames * rounds:
        raise SystemExit("%s: %d scans, expected %d" % (family, got, frames * rounds))
    return frames * rounds / dt


def peak_heap(family, suffix, stream):
    gc.collect()
    base = gc.mem_alloc()
    p = make_parser(family, suffix, 50, 512)
    peak = 0
    i = 0
    while i < len(stream):
        p.feed(stream[i:i + 64], i)
        gc.collect()
        used = gc.mem_alloc() - base
        if used > peak:
            peak = used
        i += 64
    return peak


def main():
    rounds = int(sys.argv[2])
    with open(sys.argv[1]) as f:
        lines = [x.split() for x in f if x.strip()]
    for family, suffix, frames, path in lines:
        gc.collect()
        with open(path, "rb") as f:
            stream = f.read()
        frames = int(frames)
        print("rate", family, run(family, suffix, frames, stream, rounds))
        print("heap", family, peak_heap(family, suffix, stream[:4096]))
        stream = None


main()
