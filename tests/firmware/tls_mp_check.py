# Run on the MicroPython unix port by tests/gateway/test_broker_tls.py: the
# firmware MQTT client over TLS, verifying the CA in CA_PEM and HOST's name.
#   PORT CA_PEM HOST N SECONDS   publish N QoS 1 messages on lk01's evt topic;
#                                every client log line and "acked" for each
#                                PUBACK, "done" or, after SECONDS, "gave_up".
import asyncio
import json
import sys

from firmware.mqtt.aclient import AsyncClient
from firmware.mqtt.tls import client_context


def log(evt, **kw):
    kw["evt"] = evt
    print(json.dumps(kw))


async def main(port, ca, host, n, seconds):
    c = AsyncClient("pe-lk01", host, port, "lk01", "lk01-pw", keepalive=10, timeout=2.0,
                    backoff_min=0.05, backoff_cap=0.3, log=log, ssl=client_context(ca))
    asyncio.create_task(c.run())

    async def publish_all():
        for i in range(n):
            await c.publish("pe/v1/o1/locker/lk01/evt", b"tls %d" % i, 1)
            log("acked", i=i)

    try:
        await asyncio.wait_for(publish_all(), seconds)
        log("done", stats=c.stats)
    except asyncio.TimeoutError:
        log("gave_up", stats=c.stats)
    await c.abort()


with open(sys.argv[2]) as f:
    CA = f.read()
asyncio.run(main(int(sys.argv[1]), CA, sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
