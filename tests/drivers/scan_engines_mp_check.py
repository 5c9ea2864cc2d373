# Run on the MicroPython unix port by tests/drivers/test_scan_engines.py (and
# imported by it on CPython, so both run the very same code):
#
#   micropython tests/drivers/scan_engines_mp_check.py vectors FILE
#       FILE: one JSON vector a line {"family", "suffix", "idle_ms", "max_len",
#       "steps": [["f", HEX, t] feed at tick t | ["i", t] idle read at t | ["x"] flush]}
#       prints one JSON line a vector: the events and the counters.
#   micropython tests/drivers/scan_engines_mp_check.py live FAMILY SUFFIX PORT N
#       drives a simulated engine (served by the test as socket://) through
#       the unix HAL: configure_aim(True), then N triggered scans; one JSON
#       line a step.

import binascii
import json
import sys

from drivers.scanner.engine import make_parser


def hexs(b):
    return binascii.hexlify(b).decode()


def run_vector(v):
    p = make_parser(v["family"], v["suffix"], v["idle_ms"], v["max_len"])
    events = []
    for step in v["steps"]:
        if step[0] == "f":
            evs = p.feed(binascii.unhexlify(step[1]), step[2])
        elif step[0] == "i":
            evs = p.idle(step[1])
        else:
            evs = p.flush()
        for kind, payload, extra in evs:
            events.append([kind, hexs(payload), extra])
    return {"events": events, "stats": p.stats}


def vectors(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                print(json.dumps(run_vector(json.loads(line))))


async def live(family, suffix, port, n):
    from drivers.hal import load
    from drivers.scanner import ScannerError, connect

    hal = load()
    eng = connect(hal, family, "socket://127.0.0.1:" + str(port), suffix=suffix, idle_ms=40)
    print(json.dumps({"step": "hal", "ok": hal.NAME}))
    print(json.dumps({"step": "aim", "ok": await eng.configure_aim(True)}))
    for _ in range(n):
        try:
            s = await eng.scan(2000)
        except ScannerError as e:
            print(json.dumps({"step": "scan", "err": e.code}))
            continue
        if s is not None:
            s = {"text": s["text"], "aim": s["aim"], "symbology": s["symbology"], "data": hexs(s["data"])}
        print(json.dumps({"step": "scan", "ok": s}))
    import gc

    gc.collect()
    print(json.dumps({"step": "end", "stats": eng.stats, "mem_free": gc.mem_free()}))
    eng.close()


if __name__ == "__main__":
    if sys.argv[1] == "vectors":
        vectors(sys.argv[2])
    else:
        import asyncio

        asyncio.run(live(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
