"""Quarantine: a device that floods refused messages stops being routed to
the gateway for a while.

Why at the subscription and not in the gateway's code: the gateway has one
session at Mosquitto for every device's messages. A login that writes junk
faster than the gateway reads fills that session's queue, and Mosquitto then
drops messages for the gateway, other devices' events included, after it has
already PUBACKed them to their senders (``bench/hostile_device.py`` measured
the well-behaved devices' stored rate falling to a tenth). Mosquitto 2.0 has
no per-login rate limit, so the gateway stops asking for that device's
messages: it leaves the outlet-wide wildcard filters for one filter set per
known device, without the flooding one. Mosquitto then discards the flood at
publish time, queueing nothing, and everyone else's events flow.

Nothing of the quarantined device is lost: devices keep each event until the
gateway confirms it is stored (docs/protocol.md, "End-to-end confirmation")
and send it again after the quarantine.

The rule looks at refusals, not at rates: a locker emptying a backlog after
the gateway was away, or a busy counter, sends many *valid* messages and must
never be held. A device is held when, within ``window_s``, at least
``min_refused`` of its messages were refused and they were at least half of
what it sent. The hold lasts ``first_s``, doubling on each repeat up to
``max_s``; a device that stays clean for ``forgive_s`` after a release starts
again at ``first_s``.

What it costs: while any device is held, a device the gateway has never
heard from is not subscribed either, so a newly installed device's first
events wait (in its own outbox) until the hold ends; at most ``max_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple


class DeviceKey(NamedTuple):
    outlet: str
    kind: str
    device: str


class Hold(NamedTuple):
    until: float
    seconds: float
    strikes: int


class Quarantine:
    """Which devices are held, and until when. ``held`` is read by paho's
    network thread for every message (a dict lookup under the GIL); changes
    come from the ingest thread under ``lock``."""

    def __init__(self, min_refused: int = 200, window_s: float = 1.0, first_s: float = 30.0,
                 max_s: float = 900.0, forgive_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.min_refused = min_refused
        self.window_s = window_s
        self.first_s = first_s
        self.max_s = max_s
        self.forgive_s = forgive_s
        self.clock = clock
        self.lock = threading.Lock()
        self.held: dict[DeviceKey, Hold] = {}
        # per device: window start, messages and refusals in it
        self._window: dict[DeviceKey, tuple[float, int, int]] = {}
        # per device released: strikes so far and when it was released
        self._past: dict[DeviceKey, tuple[int, float]] = {}

    def is_held(self, key: DeviceKey) -> bool:
        return key in self.held

    def observe(self, counts: dict[DeviceKey, tuple[int, int]]) -> list[tuple[DeviceKey, Hold, int]]:
        """Count one group's messages and refusals per device; return the
        devices held because of it, each with its hold and the refusals that
        earned it."""
        now = self.clock()
        newly: list[tuple[DeviceKey, Hold, int]] = []
        with self.lock:
            for key, (total, refused) in counts.items():
                if key in self.held:
                    continue
                start, n, bad = self._window.get(key, (now, 0, 0))
                if now - start > self.window_s:
                    start, n, bad = now, 0, 0
                n += total
                bad += refused
                if bad >= self.min_refused and 2 * bad >= n:
                    strikes, released = self._past.get(key, (0, now))
                    if now - released > self.forgive_s:
                        strikes = 0
                    seconds = min(self.max_s, self.first_s * 2 ** strikes)
                    hold = Hold(now + seconds, seconds, strikes + 1)
                    self.held[key] = hold
                    self._window.pop(key, None)
                    newly.append((key, hold, bad))
                else:
                    if len(self._window) > 10000:
                        self._window.clear()
                    self._window[key] = (start, n, bad)
        return newly

    def release_due(self) -> list[DeviceKey]:
        """Release the devices whose hold has ended."""
        now = self.clock()
        with self.lock:
            done = [k for k, h in self.held.items() if h.until <= now]
            for k in done:
                self._past[k] = (self.held.pop(k).strikes, now)
        return done
