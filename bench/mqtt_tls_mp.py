# MicroPython side of bench/firmware_mqtt.py's TLS rows: the firmware client
# over TLS to Mosquitto, verifying the outlet CA (firmware/mqtt/tls.py).
#   rate PORT N WINDOW CA_PEM       publish N QoS 1 messages; "rate <msg/s> <n>"
#   handshake PORT TRIALS CA_PEM    connect TRIALS times, each from nothing to
#                                   CONNACK (TCP, TLS handshake with
#                                   certificate verification, MQTT CONNECT);
#                                   "handshake <s> ..." and the heap the TLS
#                                   connection holds ("heap <bytes> <peak>")
#   load PORT CA_PEM|-              connect, publish 200, disconnect (TLS, or
#                                   plain with "-"): run under valgrind's
#                                   massif, the difference is mbedTLS's C heap
import asyncio
import gc
import sys
import time

from firmware.mqtt.aclient import AsyncClient
from firmware.mqtt.tls import client_context

HOST = "localhost"  # the server certificate's name (IP 127.0.0.1 works too)
TOPIC = "pe/v1/o1/locker/lk01/evt"


def read(path):
    with open(path) as f:
        return f.read()


def client(port, ca, window=8):
    return AsyncClient("bench-lk01", HOST, port, "lk01", "lk01-pw", max_inflight=window,
                       timeout=5.0, backoff_min=0.05, backoff_cap=0.5, ssl=client_context(ca))


async def rate(port, n, window, ca):
    c = client(port, ca, window)
    asyncio.create_task(c.run())
    await c.connected.wait()
    payload = b"x" * 180
    done = [0]

    async def worker(k):
        for _ in range(k):
            await c.publish(TOPIC, payload, 1)
            done[0] += 1

    t0 = time.ticks_us()
    await asyncio.gather(*[worker(n // window) for _ in range(window)])
    dt = time.ticks_diff(time.ticks_us(), t0) / 1e6
    print("rate %.1f %d" % (done[0] / dt, done[0]))
    await c.disconnect()


async def handshake(port, trials, ca):
    times = []
    peak = 0
    held = 0
    for _ in range(trials):
        gc.collect()
        base = gc.mem_alloc()
        t0 = time.ticks_us()
        c = client(port, ca)
        task = asyncio.create_task(c.run())
        await c.connected.wait()
        times.append(time.ticks_diff(time.ticks_us(), t0) / 1e6)
        gc.collect()
        held = max(held, gc.mem_alloc() - base)
        for _ in range(50):
            await c.publish(TOPIC, b"y" * 180, 1)
        peak = max(peak, gc.mem_alloc() - base)
        await c.disconnect()
        await task
    print("handshake " + " ".join("%.4f" % t for t in times))
    print("heap %d %d" % (held, peak))


async def load(port, ca):
    if ca is None:
        c = AsyncClient("bench-lk01", "127.0.0.1", port, "lk01", "lk01-pw", timeout=5.0)
    else:
        c = client(port, ca)
    task = asyncio.create_task(c.run())
    await c.connected.wait()
    for _ in range(200):
        await c.publish(TOPIC, b"z" * 180, 1)
    await c.disconnect()
    await task


mode = sys.argv[1]
if mode == "load":
    asyncio.run(load(int(sys.argv[2]), None if sys.argv[3] == "-" else read(sys.argv[3])))
elif mode == "rate":
    asyncio.run(rate(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), read(sys.argv[5])))
else:
    asyncio.run(handshake(int(sys.argv[2]), int(sys.argv[3]), read(sys.argv[4])))
