# HAL port for CPython: the simulator and tests run firmware here.

import os

import serial

from drivers.hal.common import Clock, Indicator, NullNetwork, soft_watchdog
from drivers.storage import FileStorage

NAME = "host"


class SerialUART:
    """pyserial under the UART contract: pty paths, loop://, socket://, rfc2217://."""

    def __init__(self, url, baudrate):
        self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=0, write_timeout=2)

    def write(self, data):
        n = self.port.write(data)
        self.port.flush()
        return n

    def read(self, n):
        return self.port.read(n) or b""

    def close(self):
        self.port.close()


def uart(url, baudrate=9600):
    return SerialUART(url, baudrate)


def storage(root):
    return FileStorage(root)


def watchdog(timeout_ms):
    return soft_watchdog(timeout_ms, os._exit)


clock = Clock()
indicator = Indicator()
network = NullNetwork()


def urandom(n):
    return os.urandom(n)
