# HAL port for the MicroPython unix port.

import os
import socket
import sys
import time

from drivers.hal.common import Clock, Indicator, NullNetwork, soft_watchdog
from drivers.storage import FileStorage

NAME = "unix"


class SocketUART:
    """A UART whose far end is a TCP socket (socket://host:port), the way
    the simulated lock boards and scan engines are served."""

    def __init__(self, host, port):
        addr = socket.getaddrinfo(host, port)[0][-1]
        self.sock = socket.socket()
        self.sock.connect(addr)
        self.sock.setblocking(False)

    def write(self, data):
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data) if hasattr(self.sock, "sendall") else self.sock.write(data)
        finally:
            self.sock.setblocking(False)
        return len(data)

    def read(self, n):
        try:
            data = self.sock.recv(n)
        except OSError:
            return b""
        if data is None:
            return b""
        if data == b"":
            raise OSError("UART peer closed")
        return data

    def close(self):
        self.sock.close()


def uart(url, baudrate=9600):
    """Open a UART by URL; baudrate is kept for symmetry with real ports."""
    if url.startswith("socket://"):
        host, port = url[9:].rsplit(":", 1)
        return SocketUART(host, int(port))
    raise OSError("the unix port reaches UARTs only as socket://host:port, not %r" % url)


def storage(root):
    return FileStorage(root)


def watchdog(timeout_ms):
    return soft_watchdog(timeout_ms, sys.exit)


def _rtc_offset():
    """The unix port's stand-in for a board RTC that is wrong: PE_CLOCK_OFFSET_S
    seconds added to the host's clock (tests set it to a clock reset to 2000)."""
    try:
        return int(os.getenv("PE_CLOCK_OFFSET_S") or 0)
    except ValueError:
        return 0


class SimulatedClock(Clock):
    """The unix port in a simulation (PE_SIM_CLOCK names a file): wall time
    is the scenario's. The simulator writes "<virtual seconds> <its wall
    seconds then>" into the file at every set (replacing it whole), and the
    time runs on at real speed from there, as the gateway's does
    (common/clock.py): a locker process on the unix port then expires
    parcels and stamps events on the same axis as the in-process lockers.
    A file caught missing mid-replace leaves the last reading in force.
    Ticks stay real: the firmware's timeouts measure real waiting."""

    def __init__(self, path, offset=0):
        super().__init__(offset)
        self.path = path
        self.base = None

    def _read(self):
        try:
            with open(self.path) as f:
                v, w = f.read().split()
            self.base = (float(v), float(w))
        except (OSError, ValueError):
            pass
        return self.base

    def time(self):
        got = self._read()
        if got is None:
            return Clock.time(self)
        now = time.time_ns() / 1e9
        return int(got[0] + max(0.0, now - got[1])) + self.offset


def _clock():
    path = os.getenv("PE_SIM_CLOCK")
    return SimulatedClock(path, _rtc_offset()) if path else Clock(_rtc_offset())


clock = _clock()
indicator = Indicator()
network = NullNetwork()


def _seeded():
    """PE_SIM_SEED (a simulation only; a board's HAL has no such switch):
    the device's random bytes from a seeded generator, so a simulated
    locker on the unix port draws the same codes and salts in every run of
    the same seed, as the in-process ones do (the trace hash's guarantee).
    Never set outside the simulator: codes must be unpredictable."""
    seed = os.getenv("PE_SIM_SEED")
    if not seed:
        return None
    import random

    random.seed(int(seed))
    return random


_rng = _seeded()


def urandom(n):
    if _rng is not None:
        return bytes(_rng.getrandbits(8) for _ in range(n))
    return os.urandom(n)
