# Run on the MicroPython unix port (and on CPython, the same file) by
# tests/firmware/test_mqtt_client.py. One JSON object a line.
#   pub PORT N         publish N QoS 1 messages, print "acked <i>" for each
#   sub PORT SECONDS   subscribe to lk01's cmd topic, print what arrives
#   flap PORT SECONDS  run the device's settings (backoff_cap 1 s) against a
#                      broker for SECONDS, publishing nothing
#   refused PORT SIZE  subscribe like a device, publish SIZE bytes the broker
#                      keeps closing the connection on, then a small message
#   badargs PORT       bad topics, payloads and QoS: each must raise at once
import asyncio
import gc
import json
import sys
import time

from firmware.mqtt.aclient import AsyncClient, MQTTError, PacketError

EVT = "pe/v1/o1/locker/lk01/evt"
CMD = "pe/v1/o1/locker/lk01/cmd"


def log(evt, **kw):
    kw["evt"] = evt
    kw["t"] = time.time()
    print(json.dumps(kw))


def ms_since(t0):
    return round((time.time() - t0) * 1000)


async def expect_error(what, coro):
    """Run coro (bounded: the old client hung here); log its outcome."""
    t0 = time.time()
    try:
        await asyncio.wait_for(coro, 3)
    except asyncio.TimeoutError:
        log("hung", what=what)
        return
    except PacketError as e:
        log("bad", what=what, error=str(e), mqtt_error=isinstance(e, MQTTError), ms=ms_since(t0))
        return
    except Exception as e:
        log("other_error", what=what, error=repr(e))
        return
    log("accepted", what=what)


async def main(mode, port, arg):
    # Made first: later, a 128 KiB heap may have no 64 KiB hole left.
    long_topic = "t" * 65536 if mode == "badargs" else ""
    if mode in ("pub", "sub"):
        c = AsyncClient("pe-lk01", "127.0.0.1", port, "lk01", "lk01-pw", keepalive=4, timeout=1.0,
                        backoff_min=0.05, backoff_cap=0.5, log=log,
                        on_message=lambda t, p, r: log("message", topic=t, payload=p.decode()))
    else:
        # What firmware/device.py builds: keepalive 30 s, backoff_cap 1 s.
        c = AsyncClient("pe-lk01", "127.0.0.1", port, "lk01", "lk01-pw", keepalive=30, timeout=2.0,
                        clean=False, will_topic="pe/v1/o1/locker/lk01/presence", will_msg=b"offline",
                        log=log, backoff_cap=1.0)
    asyncio.create_task(c.run())
    if mode == "pub":
        for i in range(arg):
            await c.publish(EVT, b"m%d" % i, 1)
            log("acked", i=i)
    elif mode == "sub":
        await c.subscribe(CMD, 1)
        await asyncio.sleep(arg)
    elif mode == "flap":
        await asyncio.sleep(arg)
    elif mode == "refused":
        await c.subscribe(CMD, 1)
        t0 = time.time()
        try:
            await asyncio.wait_for(c.publish(EVT, b"x" * arg, 1), 12)
            log("acked", ms=ms_since(t0))
        except asyncio.TimeoutError:
            log("hung", ms=ms_since(t0))
        except MQTTError as e:
            log("gave_up", kind=type(e).__name__, error=str(e), ms=ms_since(t0))
        try:
            await asyncio.wait_for(c.publish(EVT, b"small", 1), 10)
            log("acked_after", ms=ms_since(t0))
        except asyncio.TimeoutError:
            log("hung_after")
    elif mode == "badargs":
        await asyncio.wait_for(c.connected.wait(), 10)
        await expect_error("empty topic", c.publish("", b"x", 1))
        await expect_error("plus in topic", c.publish("pe/v1/o1/locker/+/evt", b"x", 1))
        await expect_error("hash in topic", c.publish("pe/v1/o1/#", b"x", 1))
        await expect_error("nul in topic", c.publish("pe/v1/o1/locker/lk01/e\x00vt", b"x", 1))
        await expect_error("control char", c.publish("pe/v1/o1/locker/lk01/e\x1bvt", b"x", 0))
        await expect_error("surrogate", c.publish("pe/v1/o1/locker/lk01/\ud800", b"x", 1))
        await expect_error("bad utf-8", c.publish(b"pe/v1/\xff", b"x", 1))
        await expect_error("long topic", c.publish(long_topic, b"x", 1))
        long_topic = None
        gc.collect()
        await expect_error("big payload", c.publish(EVT, b"x" * (c.max_payload + 1), 1))
        await expect_error("payload type", c.publish(EVT, 12345, 1))
        await expect_error("qos 2", c.publish(EVT, b"x", 2))
        await expect_error("bad filter", c.subscribe("pe/v1/#/cmd", 1))
        gc.collect()
        await asyncio.wait_for(c.publish(EVT, b"x" * 1000, 1), 10)
        log("acked", what="good after bad")
    log("stats", failures=c.failures, inflight=c.inflight, **c.stats)
    await c.disconnect()


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0))
