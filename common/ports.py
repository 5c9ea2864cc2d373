"""Loopback ports for listeners that the gateway, the central service's
local cluster, the simulator and the tests start and restart."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out as a client's source port."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port for a listener that may stop and start again.

    Chosen below the kernel's ephemeral range on purpose: a port taken with
    ``bind(0)`` is an ephemeral one, so while its listener is down (a broker
    restart, the WAN link cut for days) a client retrying ``connect`` to it
    can be given that very port as its own source port and connect to
    itself (TCP simultaneous open), or another connection can hold it; the
    listener then cannot bind again (``EADDRINUSE``) and the run fails.
    Ports below the range are never handed out by ``connect``.
    """
    top = _ephemeral_low()
    low = max(1024, top - 22768)
    for _ in range(200):
        port = random.randrange(low, top)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free loopback port below the ephemeral range")
