# HAL port for the MicroPython unix port.

import os
import socket
import sys

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


clock = Clock(_rtc_offset())
indicator = Indicator()
network = NullNetwork()


def urandom(n):
    return os.urandom(n)
