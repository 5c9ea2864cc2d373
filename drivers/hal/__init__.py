# Hardware abstraction: one interface, one port per platform side by side.
#
#   board.py  ESP32-class boards (machine.UART, machine.WDT, machine.Pin, WLAN)
#   unix.py   the MicroPython unix port (UARTs over socket://host:port)
#   host.py   CPython (UARTs through pyserial: pty paths, loop://, socket://, rfc2217://)
#   common.py what every port shares: clock, indicators, software watchdog
#
# Application code calls load() and never imports a port directly, so the
# same locker and scanner code runs on a board, on the unix port and on
# CPython (the simulator runs many lockers in one process this way).
#
# UART contract, the same on every port:
#   write(data) -> int        writes all of data (one call per frame)
#   read(n) -> bytes          up to n bytes already received; b"" if none; never blocks
#   close()

import sys


def load():
    """The HAL module for the platform this code is running on."""
    if sys.implementation.name != "micropython":
        from drivers.hal import host

        return host
    if sys.platform in ("linux", "darwin"):
        from drivers.hal import unix

        return unix
    from drivers.hal import board

    return board
