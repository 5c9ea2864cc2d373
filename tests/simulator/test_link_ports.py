"""Listeners that stop and start (the WAN link, a restarted broker) get ports
the kernel never gives a client as its source port.

While such a listener is down, the gateway and the devices keep retrying
``connect`` to its port. Had the port come from ``bind(0)`` it would be an
ephemeral one, and a retry could be handed that very port as its source port
(TCP connects to itself) or another connection could hold it: the listener's
``bind`` when it comes back fails with ``EADDRINUSE`` and the whole run stops
(seen in a 3-day outage scenario in CI).
"""

from __future__ import annotations

import socket
from pathlib import Path

from common.ports import free_port
from simulator.central import Link


def ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_free_ports_are_below_the_ephemeral_range() -> None:
    low, _ = ephemeral_range()
    ports = {free_port() for _ in range(200)}
    assert all(1024 <= p < low for p in ports), sorted(p for p in ports if p >= low)[:5]
    assert len(ports) > 150  # spread out, so parallel test workers rarely pick the same one


def test_link_comes_back_up_after_clients_hammered_it_while_down() -> None:
    target = socket.socket()
    target.bind(("127.0.0.1", free_port()))
    target.listen(8)
    link = Link(target.getsockname()[1]).up()
    try:
        for _ in range(3):
            link.down()
            refused = 0
            for _ in range(3000):  # a gateway's sync retries during an outage
                c = socket.socket()
                try:
                    c.connect(("127.0.0.1", link.port))
                except ConnectionRefusedError:
                    refused += 1
                finally:
                    c.close()
            assert refused == 3000  # never connected to anything, itself included
            link.up()
            with socket.create_connection(("127.0.0.1", link.port), 2):
                pass
    finally:
        link.down()
        target.close()
