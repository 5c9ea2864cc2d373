# Run on the MicroPython unix port by tests/e2e/test_locker_e2e.py,
# tests/e2e/test_thin_slice.py and tests/confirm_rig.py: append N envelopes
# to a flash outbox at a steady pace while the firmware Sender drains it
# over the firmware MQTT client; print progress as JSON lines and
# "drained" when every record has been acked by the broker, or, with the
# `confirm` argument, confirmed as stored by the gateway (the device's own
# end-to-end guarantee: records leave flash only then).
# Arguments: PORT N STATE_DIR [SPACING_MS] [DEVICE] [confirm]
import asyncio
import gc
import json
import sys
import time

from drivers.storage import FileStorage
from firmware.mqtt.aclient import AsyncClient
from firmware.outbox import Outbox, OutboxFull
from firmware.sender import Sender
from protocol import envelope, topics
from protocol.ids import SeqCounter, format_event_id


async def main(port, n, state, spacing_ms, dev, confirm):
    st = FileStorage(state)
    seq = SeqCounter(st)
    print(json.dumps({"evt": "boot", "incarnation": seq.incarnation, "boot": seq.boot}))
    ob = Outbox(state + "/outbox", capacity=64 * 1024)
    topic = topics.build("o1", "locker", dev, "evt")
    t_conf = topics.build("o1", "locker", dev, "conf")
    sender = None

    def on_message(t, payload, retained):
        if t == t_conf:
            sender.on_confirm(json.loads(payload).get("stored"))

    client = AsyncClient("pe-" + dev, "127.0.0.1", port, dev, dev + "-pw", timeout=1.0,
                         keepalive=5, backoff_min=0.05, backoff_cap=0.5, on_message=on_message,
                         log=lambda evt, **kw: print(json.dumps({"evt": evt})))
    wake = asyncio.Event()
    sender = Sender(ob, client, wake, confirm=confirm, confirm_timeout_s=2)
    asyncio.create_task(client.run())
    asyncio.create_task(sender.run())
    if confirm:
        await client.subscribe(t_conf, 0)
    full = 0
    for i in range(n):
        eid = format_event_id(dev, seq.incarnation, seq.next())
        env = envelope.make(eid, int(time.time()), "locker.audit", "audit", {"i": i}, boot=seq.boot)
        data = envelope.encode(env)
        while True:
            try:
                ob.append("audit", topic, data)
                break
            except OutboxFull:  # a device refuses the action; here: wait for room
                full += 1
                await asyncio.sleep_ms(50)
        if n <= 50:
            print(json.dumps({"evt": "queued", "id": eid}))
        elif i % 100 == 0:
            gc.collect()
            print(json.dumps({"evt": "mem", "i": i, "free": gc.mem_free(), "awaiting": sender.awaiting,
                              "outbox": ob.count}))
        wake.set()
        await asyncio.sleep_ms(spacing_ms)
    print(json.dumps({"evt": "appended", "n": n}))
    while ob.count:
        await asyncio.sleep_ms(50)
    ob.close()
    print(json.dumps({"evt": "drained", "stats": client.stats, "sent": sender.sent,
                      "confirmed": sender.confirmed, "resends": sender.resends,
                      "outbox_full_waits": full}))


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                 int(sys.argv[4]) if len(sys.argv) > 4 else 10,
                 sys.argv[5] if len(sys.argv) > 5 else "lk01",
                 len(sys.argv) > 6 and sys.argv[6] == "confirm"))
