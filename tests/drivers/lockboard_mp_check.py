# Run on the MicroPython unix port by tests/drivers/test_lockboards.py: drives a
# simulated lock-board bus (started by the test, reached as socket://) with
# the firmware driver through the unix HAL, and prints one JSON line per step
# for the test to assert. The bus the test prepares (B = first board):
#   board B: lock 5 forced open, lock 7 jammed (infrared on lock 3 for Kerong)
#   board B+1: noise before every reply     board B+2: every reply corrupted
#   board B+3: not on the bus (mute)
#
#   micropython -X heapsize=128k tests/drivers/lockboard_mp_check.py 8a|kerong PORT

import asyncio
import binascii
import gc
import json
import sys

from drivers.hal import load
from drivers.lockboard import LockBoardError, open_bus


def hexs(b):
    return binascii.hexlify(b).decode()


async def step(name, coro):
    try:
        r = await coro
        out = {"step": name, "ok": r}
    except LockBoardError as e:
        out = {"step": name, "err": e.code, "detail": e.detail}
    except Exception as e:  # a crash is a test failure, reported as such
        out = {"step": name, "crash": repr(e)}
    print(json.dumps(out))


def opened(states):
    return [s["lock"] for s in states if s["open"]]


async def main(family, port):
    hal = load()
    b0 = 1 if family == "8a" else 0
    boards = [b0, b0 + 1, b0 + 2, b0 + 3]
    d = open_bus(hal, family, "socket://127.0.0.1:" + str(port), boards=boards,
                 timeout_ms=150, retries=1, verify_polls=2, verify_ms=30)
    if family == "8a":
        from drivers.lockboard import board8a as m
    else:
        from drivers.lockboard import kerong as m
    print(json.dumps({"step": "vectors", "ok": [hexs(m.encode_open(b0, 1)), hexs(m.encode_query(b0, 1)),
                                                hexs(m.encode_query_all(b0))]}))
    print(json.dumps({"step": "hal", "ok": hal.NAME}))
    await step("open1", d.open(1))
    await step("status1", d.status(1))
    await step("status2", d.status(2))
    await step("status3", d.status(3))
    await step("status5", d.status(5))

    async def all_open():
        return opened(await d.status_all(board=b0))

    await step("all", all_open())
    await step("jammed", d.open(7))
    await step("noisy", d.status(1, board=b0 + 1))
    await step("corrupt", d.status(1, board=b0 + 2))
    await step("mute", d.status(1, board=b0 + 3))
    await step("bad_lock", d.status(99, board=b0))
    gc.collect()
    print(json.dumps({"step": "end", "stats": d.stats, "errors": d.errors,
                      "mem_free": gc.mem_free()}))
    d.close()


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
