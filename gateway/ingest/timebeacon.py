"""Trusted time for the outlet's devices: the gateway's clock, published on
each online locker's and scanner's ``time`` topic (``protocol/timesync.py``).

The gateway's own clock is the source: the OS keeps it with NTP. ``source``
is the hook for another one (the platform's time, from its batch acks,
when a deployment configures it); nothing here depends on which.
A source that reads before ``timesync.MIN_T`` (a gateway whose own clock
reset and has no NTP yet) publishes nothing: devices then stay unsynced and
refuse time-based decisions, rather than take a wrong time.

Messages are QoS 0 and never retained: a lost one is replaced at the next
tick, and a retained time would be stale when a device reads it.
"""

from __future__ import annotations

from collections.abc import Callable

from common.clock import now as clock_now
from common.logs import recorder
from gateway.store.events import EventStore
from protocol import timesync, topics

# Devices that take their time from the gateway (handhelds use their phone's).
KINDS = ("locker", "scanner")

record = recorder(__name__)


class TimeBeacon:
    def __init__(self, store: EventStore, outlet: str, publish: Callable[[str, bytes], None],
                 source: Callable[[], float] = clock_now) -> None:
        self.store = store
        self.outlet = outlet
        self.publish = publish
        self.source = source
        self.untrusted = 0

    def tick(self) -> int:
        """Send the time to every online locker and scanner; returns how many."""
        t = int(self.source())
        if not timesync.MIN_T <= t < timesync.MAX_T:
            self.untrusted += 1
            if self.untrusted == 1 or self.untrusted % 60 == 0:
                record("time_untrusted", t=t, ticks=self.untrusted)
            return 0
        self.untrusted = 0
        payload = timesync.encode(t)
        marks = ",".join("?" * len(KINDS))
        rows = self.store.db.execute(
            f"SELECT device, kind FROM devices WHERE online = 1 AND kind IN ({marks}) ORDER BY device",
            KINDS).fetchall()
        for device, kind in rows:
            self.publish(topics.build(self.outlet, kind, device, "time"), payload)
        return len(rows)
