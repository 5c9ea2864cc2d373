"""The gateway's side of trusted time (docs/protocol.md, "Trusted time"): its
clock on every online locker's and scanner's ``time`` topic, nothing from a
clock that cannot be right, and a command refused as ``time_not_synced``
sent again rather than given up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ingest.relay import Relay
from gateway.ingest.timebeacon import TimeBeacon
from gateway.store.events import EventStore
from gateway.store.own_events import OwnEvents
from protocol import signing, timesync, topics

T = 1795881600


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path / "gateway.db")
    with s.tx():
        for device, kind, online in [("lk01", "locker", True), ("lk02", "locker", False),
                                     ("sc01", "scanner", True), ("hh01", "handheld", True)]:
            s.presence(device, "o1", kind, online, T)
    yield s
    s.close()


def test_time_goes_to_every_online_locker_and_scanner(store: EventStore) -> None:
    sent: list[tuple[str, bytes]] = []
    beacon = TimeBeacon(store, "o1", lambda topic, payload: sent.append((topic, payload)),
                        source=lambda: T + 0.7)
    assert beacon.tick() == 2
    assert [topic for topic, _ in sent] == [topics.build("o1", "locker", "lk01", "time"),
                                           topics.build("o1", "scanner", "sc01", "time")]
    assert {p for _, p in sent} == {b'{"t":1795881600,"v":1}'}
    assert timesync.decode(sent[0][1]) == T


@pytest.mark.parametrize("bad", [0.0, 946684800.0, 5e9])
def test_a_gateway_clock_that_cannot_be_right_sends_nothing(store: EventStore, bad: float) -> None:
    """A gateway whose own clock reset (no NTP yet): devices stay unsynced and
    refuse, rather than take 2000 as the truth."""
    sent: list[tuple[str, bytes]] = []
    beacon = TimeBeacon(store, "o1", lambda topic, payload: sent.append((topic, payload)),
                        source=lambda: bad)
    assert beacon.tick() == 0 and sent == [] and beacon.untrusted == 1


def test_time_not_synced_is_sent_again_not_refused(store: EventStore, tmp_path: Path) -> None:
    sent: list[str] = []
    relay = Relay(store, "o1", OwnEvents(store, "o1", "gw-o1", tmp_path / "own"),
                  lambda topic, payload: sent.append(topic), resend_s=30)
    cmd = signing.encode(signing.sign({"id": "c-1", "dev": "lk01", "op": "open", "args": {},
                                       "iat": T, "exp": T + 600}, b"k" * 32, kv=1))
    with store.tx():
        relay.enqueue("locker", cmd)
        assert relay.tick(T) == 1
        relay.on_ack("lk01", {"id": "c-1", "ok": False, "code": "time_not_synced", "detail": ""})
    [row] = relay.commands("lk01")
    assert row["status"] == "sent" and row["ack"] is None
    assert relay.tick(T + 5) == 0 and relay.tick(T + 31) == 1  # again after the resend interval
    with store.tx():
        relay.on_ack("lk01", {"id": "c-1", "ok": True, "code": "ok"})
    [row] = relay.commands("lk01")
    assert row["status"] == "acked" and json.dumps(row["ack"])
