# Run on the MicroPython unix port by tests/test_mqtt_client.py.
#   pub PORT N         publish N QoS 1 messages, print "acked <i>" for each
#   sub PORT SECONDS   subscribe to lk01's cmd topic, print what arrives
import asyncio
import json
import sys
import time

from firmware.mqtt.aclient import AsyncClient


def log(evt, **kw):
    kw["evt"] = evt
    kw["t"] = time.time()
    print(json.dumps(kw))


async def main(mode, port, arg):
    c = AsyncClient("pe-lk01", "127.0.0.1", port, "lk01", "lk01-pw", keepalive=4, timeout=1.0,
                    backoff_min=0.05, backoff_cap=0.5, log=log,
                    on_message=lambda t, p, r: log("message", topic=t, payload=p.decode()))
    asyncio.create_task(c.run())
    if mode == "pub":
        for i in range(arg):
            await c.publish("pe/v1/o1/locker/lk01/evt", b"m%d" % i, 1)
            log("acked", i=i)
    else:
        await c.subscribe("pe/v1/o1/locker/lk01/cmd", 1)
        await asyncio.sleep(arg)
    log("stats", **c.stats)
    await c.disconnect()


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
