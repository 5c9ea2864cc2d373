# Drains the flash outbox into MQTT: a window of QoS 1 publishes in flight,
# each record marked delivered only when the broker has acked it.

import asyncio


class Sender:
    def __init__(self, outbox, mqtt, wake, beat=None, window=8):
        self.outbox = outbox
        self.mqtt = mqtt
        self.wake = wake
        self.beat = beat or (lambda: None)
        self.window = window
        self.sent = 0
        self.batch_tasks = []

    async def run(self):
        while True:
            self.beat()
            if not self.mqtt.connected.is_set():
                await asyncio.sleep(0.05)
                continue
            self.outbox.poll()
            batch = self.outbox.pending(self.window)
            if not batch:
                self.outbox.commit()  # delivery marks to flash while idle
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 1)
                except asyncio.TimeoutError:
                    pass
                continue
            # Publish the batch concurrently; keep beating while a dead link
            # holds the acks back, so the watchdog resets a hung device, not
            # one that is patiently waiting for its broker.
            left = [len(batch), asyncio.Event()]
            # Kept so a host that halts the device can cancel them too.
            self.batch_tasks = [asyncio.create_task(self._send_one(r, left)) for r in batch]
            while left[0]:
                self.beat()
                try:
                    await asyncio.wait_for(left[1].wait(), 0.5)
                except asyncio.TimeoutError:
                    pass

    async def _send_one(self, rec, left):
        rec_seq, cls, topic, payload = rec
        try:
            await self.mqtt.publish(topic, payload, 1)
            self.outbox.mark_delivered(rec_seq)
            self.sent += 1
        finally:
            left[0] -= 1
            if not left[0]:
                left[1].set()
