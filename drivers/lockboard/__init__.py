# RS-485 lock-control board drivers, one module per board family:
#
#   board8a.py  the common "8A" boards (9600 baud, XOR checksum, up to 31 boards)
#   kerong.py   Kerong KR-CU12/CU16 units (19200 baud, byte-sum checksum,
#               hook and infrared bitmaps)
#   base.py     LockBoardError, the counters, the frame parser skeleton and
#               the request/reply transaction both drivers share
#
# Every driver offers the same async API (open / status / status_all) so the
# locker application does not care which board is fitted; the byte formats
# and the sources they were taken from are described in each module.
# simulator/lockboard_sim.py serves byte-accurate simulated boards to them.

from drivers.lockboard.base import CODES, LockBoardError  # noqa: F401

DRIVERS = ("8a", "kerong")


def driver_class(name):
    if name == "8a":
        from drivers.lockboard.board8a import Board8A

        return Board8A
    if name == "kerong":
        from drivers.lockboard.kerong import Kerong

        return Kerong
    raise ValueError("unknown lock board driver %r (have: %s)" % (name, ", ".join(DRIVERS)))


def open_bus(hal, name, url, **kw):
    """A driver for the bus at `url` through the HAL's UART, at the family's
    baud rate; kw go to the driver (boards=, locks=, timeout_ms=, ...)."""
    cls = driver_class(name)
    return cls(hal.uart(url, cls.BAUD), **kw)
