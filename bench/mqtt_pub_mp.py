# MicroPython side of bench/firmware_mqtt.py: publish N QoS 1 messages with
# the firmware client and print the rate; or (mode "watch") publish forever,
# printing the wall time of every PUBACK, for the reconnect measurement.
import asyncio
import sys
import time

from firmware.mqtt.aclient import AsyncClient


async def main(port, n, window, mode):
    c = AsyncClient("bench-lk01", "127.0.0.1", port, "lk01", "lk01-pw", max_inflight=window,
                    timeout=1.0, backoff_min=0.05, backoff_cap=0.5)
    asyncio.create_task(c.run())
    await c.connected.wait()
    payload = b"x" * 180
    topic = "pe/v1/o1/locker/lk01/evt"
    if mode == "watch":
        print("ready")
        while True:
            await c.publish(topic, payload, 1)
            print("ack %.3f" % time.time())
            await asyncio.sleep_ms(20)
    done = [0]

    async def worker(k):
        for _ in range(k):
            await c.publish(topic, payload, 1)
            done[0] += 1

    t0 = time.ticks_us()
    await asyncio.gather(*[worker(n // window) for _ in range(window)])
    dt = time.ticks_diff(time.ticks_us(), t0) / 1e6
    print("rate %.1f %d" % (done[0] / dt, done[0]))
    await c.disconnect()


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
