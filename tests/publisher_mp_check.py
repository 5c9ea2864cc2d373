# Run on the MicroPython unix port by tests/test_locker_e2e.py and
# tests/test_thin_slice.py: append N envelopes to a flash outbox at a steady pace while the firmware Sender
# drains it over the firmware MQTT client; print progress as JSON lines and
# "drained" when every record has been acked by the broker.
import asyncio
import json
import sys
import time

from firmware.locker.sender import Sender
from firmware.mqtt.aclient import AsyncClient
from firmware.outbox import Outbox
from firmware.protocol import envelope, topics
from firmware.protocol.ids import SeqCounter, format_event_id
from firmware.storage import FileStorage


async def main(port, n, state, spacing_ms):
    st = FileStorage(state)
    seq = SeqCounter(st)
    print(json.dumps({"evt": "boot", "incarnation": seq.incarnation, "boot": seq.boot}))
    ob = Outbox(state + "/outbox", capacity=64 * 1024)
    topic = topics.build("o1", "locker", "lk01", "evt")
    client = AsyncClient("pe-lk01", "127.0.0.1", port, "lk01", "lk01-pw", timeout=1.0,
                         keepalive=5, backoff_min=0.05, backoff_cap=0.5,
                         log=lambda evt, **kw: print(json.dumps({"evt": evt})))
    wake = asyncio.Event()
    sender = Sender(ob, client, wake)
    asyncio.create_task(client.run())
    asyncio.create_task(sender.run())
    for i in range(n):
        eid = format_event_id("lk01", seq.incarnation, seq.next())
        env = envelope.make(eid, int(time.time()), "locker.audit", "audit", {"i": i}, boot=seq.boot)
        ob.append("audit", topic, envelope.encode(env))
        if n <= 50:
            print(json.dumps({"evt": "queued", "id": eid}))
        wake.set()
        await asyncio.sleep_ms(spacing_ms)
    print(json.dumps({"evt": "appended", "n": n}))
    while ob.count:
        await asyncio.sleep_ms(50)
    ob.close()
    print(json.dumps({"evt": "drained", "stats": client.stats, "sent": sender.sent}))


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                 int(sys.argv[4]) if len(sys.argv) > 4 else 10))
