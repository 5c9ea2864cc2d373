# Drains the flash outbox into MQTT, and deletes each event only when the
# gateway says it is stored.
#
# A broker's PUBACK means "the broker has it", not "it is on the gateway's
# disk": a broker killed before it persists, a gateway session wiped by a
# client-id takeover or a gateway database moved aside after damage all
# lose PUBACKed messages. So, with `confirm` on (every device of an outlet),
# an event record stays in the outbox after its PUBACK and is marked
# delivered only when the gateway's confirmation names its id (topic
# pe/v1/<outlet>/<kind>/<device>/conf, see docs/protocol.md). What is not
# confirmed is sent again after every new connection and after a confirm
# timeout that doubles while nothing is confirmed (so a gateway that is away
# for hours gets a few copies, not one per minute); the gateway drops the
# copies by event id. Records that are not events (command acks) are marked
# at their PUBACK: the gateway re-sends an unacknowledged command and the
# device answers it again from its replay window.

import asyncio
from array import array

from drivers.hal import common
from firmware.mqtt.packets import MQTTError, PacketError
from protocol.confirm import (
    CONFIRM_TIMEOUT_MAX_S,
    CONFIRM_TIMEOUT_S,
    MAX_AWAITING,
    contains,
    event_key,
    stored_ranges,
)


class Sender:
    def __init__(self, outbox, mqtt, wake, beat=None, window=8, confirm=False, clock=None,
                 confirm_timeout_s=CONFIRM_TIMEOUT_S):
        self.outbox = outbox
        self.mqtt = mqtt
        self.wake = wake
        self.beat = beat or (lambda: None)
        self.window = window
        self.confirm = confirm
        self.sent = 0
        self.unsendable = 0
        self.refused = 0
        self.confirmed = 0
        self.resends = 0
        self.batch_tasks = []
        # Events of incarnation `inc` PUBACKed on this pass and not yet
        # confirmed: their event seqs and outbox record seqs, side by side.
        # Arrays, not a dict: a device heap is a few dozen KB and fragments.
        self._ev = array("I")
        self._rec = array("I")
        self.inc = None
        self._after = 0  # outbox records up to here were sent on this pass
        self._clock = clock
        self._timeout_base = confirm_timeout_s
        self._timeout = confirm_timeout_s
        self._since = None  # time of the last send or confirmation while waiting
        self._was_connected = False

    def _now(self):
        # Ticks, not wall time: a device clock that is set or jumps must not
        # fire (or starve) the resend timer.
        return (self._clock or common).ticks_ms()

    def _elapsed_s(self, since):
        return (self._clock or common).ticks_diff(self._now(), since) / 1000

    def rewind(self):
        """Send everything unconfirmed again, from the oldest record."""
        if self._after:
            self.resends += 1
        self._after = 0
        self._since = None
        # Still in the outbox, so they are sent (and awaited) again.
        self._ev = array("I")
        self._rec = array("I")

    @property
    def awaiting(self):
        return len(self._ev)

    def on_confirm(self, stored):
        """The gateway's confirmation: {incarnation: [[first, last], ...]}
        of seqs it has committed. Returns how many records it released."""
        if self.inc is None:
            return 0
        ranges = stored_ranges(stored, self.inc)
        if not ranges:
            return 0
        n = 0
        keep_ev = array("I")
        keep_rec = array("I")
        for i in range(len(self._ev)):
            if contains(ranges, self._ev[i]):
                self.outbox.mark_delivered(self._rec[i])
                n += 1
            else:
                keep_ev.append(self._ev[i])
                keep_rec.append(self._rec[i])
        if n:
            self._ev = keep_ev
            self._rec = keep_rec
            self.confirmed += n
            self.wake.set()  # the window has room again
            self._timeout = self._timeout_base
            self._since = self._now() if len(self._ev) else None
        return n

    def _check_timeout(self):
        if not len(self._ev) and not self._after:
            return
        if self._since is None:
            self._since = self._now()
            return
        if self._elapsed_s(self._since) >= self._timeout:
            self._timeout = min(self._timeout * 2, CONFIRM_TIMEOUT_MAX_S)
            self.rewind()

    async def run(self):
        while True:
            self.beat()
            if not self.mqtt.connected.is_set():
                self._was_connected = False
                await asyncio.sleep(0.05)
                continue
            if not self._was_connected:
                # A new connection: the old session may be gone with what it
                # held, so whatever is unconfirmed goes again.
                self._was_connected = True
                self.rewind()
            self.outbox.poll()
            room = self.window
            if self.confirm:
                self._check_timeout()
                room = min(room, MAX_AWAITING - len(self._ev))
            batch = self.outbox.pending(room, self._after) if room > 0 else []
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
            if self.confirm:
                last = batch[-1][0]
                if last > self._after:
                    self._after = last
                if self._since is None:
                    self._since = self._now()

    async def _send_one(self, rec, left):
        rec_seq, cls, topic, payload = rec
        try:
            try:
                await self.mqtt.publish(topic, payload, 1)
            except PacketError:
                # Can never be sent (a topic or size the client refuses):
                # set aside so it cannot block the records behind it.
                self.unsendable += 1
                self.outbox.mark_delivered(rec_seq)
                return
            except MQTTError:
                # The broker kept closing the connection on it: left pending,
                # tried again on a later pass, after the client's backoff.
                self.refused += 1
                return
            key = event_key(payload) if self.confirm and topic.endswith("/evt") else None
            if key is not None and self.inc is None:
                self.inc = key[0]
            if key is None or key[0] != self.inc:
                # not an event, or an older incarnation's: the broker's ack it is
                self.outbox.mark_delivered(rec_seq)
            else:
                self._ev.append(key[1])
                self._rec.append(rec_seq)
            self.sent += 1
        finally:
            left[0] -= 1
            if not left[0]:
                left[1].set()
