# What every HAL port shares.

import time

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython

    def ticks_ms():
        return int(time.monotonic() * 1000) & 0x3FFFFFFF

    def ticks_diff(a, b):
        d = (a - b) & 0x3FFFFFFF
        return d - 0x40000000 if d & 0x20000000 else d


class Clock:
    """Wall time (Unix seconds) and a monotonic millisecond tick.

    `offset` models a skewed device clock (the simulator sets it); the
    monotonic tick is what timeouts use, so skew never breaks a deadline.
    """

    def __init__(self, offset=0):
        self.offset = offset

    def time(self):
        return int(time.time()) + self.offset

    def ticks_ms(self):
        return ticks_ms()

    def ticks_diff(self, a, b):
        return ticks_diff(a, b)


class Indicator:
    """Buzzer and LEDs. Ports that have none record the patterns, which the
    tests and the simulator read; a board port drives pins as well."""

    PATTERNS = ("good", "duplicate", "invalid", "wrong_outlet", "error", "alarm", "door_open")

    def __init__(self, limit=64):
        self.history = []
        self.limit = limit

    def signal(self, pattern):
        if pattern not in self.PATTERNS:
            raise ValueError("unknown indicator pattern %r" % (pattern,))
        self.history.append(pattern)
        if len(self.history) > self.limit:
            self.history.pop(0)
        self._drive(pattern)

    def _drive(self, pattern):
        pass


class SoftWatchdog:
    """A watchdog for ports without hardware: if not fed within timeout_ms,
    the process exits, as a hardware watchdog would reset the board."""

    def __init__(self, timeout_ms, on_expire=None):
        self.timeout_ms = timeout_ms
        self.last = ticks_ms()
        self.on_expire = on_expire
        self.feeds = 0

    def feed(self):
        self.last = ticks_ms()
        self.feeds += 1

    def check(self):
        """Called from the event loop; returns True if it fired."""
        if ticks_diff(ticks_ms(), self.last) > self.timeout_ms:
            if self.on_expire is not None:
                self.on_expire()
            return True
        return False


class NullNetwork:
    """Hosts are always on the network; a board brings up Wi-Fi."""

    def connect(self, cfg=None):
        return True

    def isconnected(self):
        return True


def soft_watchdog(timeout_ms, exit_fn):
    """A SoftWatchdog whose expiry logs and ends the process with code 70,
    as a hardware watchdog would reset the board."""

    def expire():
        print('{"evt":"watchdog_reset"}')
        exit_fn(70)

    return SoftWatchdog(timeout_ms, expire)
