"""The handheld keeps each event until the gateway confirms it (handheld/link.py).

A broker's PUBACK is not the gateway's commit: while the gateway is away its
persistent session holds what the handheld sent, and a clean-session login
under the gateway's client id (a takeover, a broker that lost its state) wipes
that. The handheld used to delete on PUBACK and so lost those custody events;
now it resends whatever the gateway has not confirmed after a reconnect and
after a confirm timeout, and the gateway stores each exactly once.

Real Mosquitto (``broker`` fixture, account ``hh01`` of kind handheld), the
real gateway process and its SQLite store, the handheld's real outbox and link.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.storage import FileStorage
from gateway.broker import Mosquitto
from handheld.link import MqttLink
from handheld.outbox import SqliteOutbox
from protocol import envelope, signing, topics
from protocol.ids import SeqCounter, format_event_id
from simulator.gateway_process import GatewayProcess, write_config
from simulator.outlet import stored_events
from tests.confirm_rig import wipe_gateway_session
from tests.waiting import within

DEV = "hh01"
T_EVT = topics.build("o1", "handheld", DEV, "evt")
T_ACK = topics.build("o1", "handheld", DEV, "ack")


class Handheld:
    """The handheld's outbox and link as HandheldApp wires them, with its event ids."""

    def __init__(self, state: Path, port: int, **link_kw: Any) -> None:
        state.mkdir(parents=True, exist_ok=True)
        self.counter = SeqCounter(FileStorage(str(state / "ids")))
        self.outbox = SqliteOutbox(state / "outbox.db")
        self.link = MqttLink(DEV, "o1", "127.0.0.1", port, DEV, "hh01-pw", self.outbox, lambda b: None,
                             keepalive=5, **link_kw)
        self.ids: list[str] = []
        self.link.start()
        assert self.link.subscribed.wait(10), self.link.last_error

    def emit(self, i: int) -> str:
        eid = format_event_id(DEV, self.counter.incarnation, self.counter.next())
        data = envelope.encode(envelope.make(eid, int(time.time()), "handheld.intake", "custody",
                                             {"parcel": f"RB{i:09d}GB", "i": i}, self.counter.boot))
        self.outbox.append("custody", T_EVT, data, eid, "handheld.intake")
        self.link.wake()
        self.ids.append(eid)
        return eid

    def close(self) -> None:
        self.link.stop()
        self.outbox.close()


@pytest.fixture
def gateway(tmp_path: Path, broker: Mosquitto) -> Iterator[list[GatewayProcess]]:
    """The real gateway; a list so a test can replace it after killing it."""
    procs = [GatewayProcess(write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret"))]
    procs[0].wait_for("gateway_started")
    try:
        yield procs
    finally:
        procs[-1].stop()


def assert_each_once(db: Path, ids: list[str]) -> None:
    got = [e["id"] for e in stored_events(db) if e["id"].startswith(DEV + ":")]
    assert len(got) == len(set(got)), "an event was stored twice"
    missing = [i for i in ids if i not in set(got)]
    assert not missing, f"{len(missing)} of {len(ids)} handheld events lost, first {missing[:3]}"


def test_events_sent_while_the_gateway_is_away_and_its_session_is_wiped_are_stored_once(
        tmp_path: Path, broker: Mosquitto, gateway: list[GatewayProcess]) -> None:
    """The regression: on PUBACK-deletes these events were gone from the handheld
    and from the wiped session. Now they stay, and a reconnect sends them again."""
    db = tmp_path / "gateway.db"
    hh = Handheld(tmp_path / "hh", broker.port)
    try:
        before = [hh.emit(i) for i in range(3)]
        assert within(lambda: hh.outbox.count() == 0 and len(stored_events(db)) == 3), \
            "the gateway never stored or confirmed"
        assert_each_once(db, before)

        gateway[-1].kill()  # away: the broker queues for its session
        time.sleep(0.5)
        away = [hh.emit(i) for i in range(3, 23)]
        # a command ack is not an event: its PUBACK is final, as before
        hh.outbox.append("audit", T_ACK, signing.ack("c-1", int(time.time()), None, {"items": 0}))
        hh.link.wake()
        assert within(lambda: hh.link.stats["acked"] >= 3 + len(away) + 1, 10), hh.link.stats
        within(lambda: hh.outbox.count() <= len(away), 5)
        # Checked at the end, after the headline (the store): the broker's PUBACK
        # deleted the ack but not one event.
        kept = [c for _s, c, _t, _p in hh.outbox.pending(100)]

        wipe_gateway_session(broker.port)
        gateway.append(GatewayProcess(tmp_path / "gateway.toml"))
        gateway[-1].wait_for("gateway_started")
        # The courier walks out of Wi-Fi range and back: the handheld's connection drops
        # (not a clean DISCONNECT) and paho reconnects on its own.
        connects = hh.link.stats["connects"]
        sock = hh.link.client.socket()
        assert sock is not None
        sock.shutdown(2)
        assert within(lambda: hh.link.stats["connects"] > connects, 20), hh.link.last_error
        within(lambda: hh.outbox.count() == 0 and len(stored_events(db)) >= 3 + len(away), 30)
        after = [hh.emit(i) for i in range(23, 26)]
        within(lambda: hh.outbox.count() == 0 and len(stored_events(db)) >= 6 + len(away), 30)
        stats = dict(hh.link.stats)
        left = hh.outbox.count()
    finally:
        hh.close()
    assert_each_once(db, before + away + after)
    assert kept == ["custody"] * len(away)
    assert left == 0 and stats["resends"] >= 1, stats


@pytest.mark.slow
def test_a_confirm_timeout_resends_within_a_bounded_window(tmp_path: Path, broker: Mosquitto,
                                                           gateway: list[GatewayProcess], connect) -> None:
    """No reconnect this time: the handheld stays connected while the gateway is away
    and wiped. At most ``max_awaiting`` events go out unconfirmed; the confirm timeout
    sends them again, doubling while nothing is confirmed; once the gateway is back all
    are stored once. A malformed confirmation releases nothing."""
    db = tmp_path / "gateway.db"
    gateway[-1].kill()
    time.sleep(0.5)
    hh = Handheld(tmp_path / "hh", broker.port, confirm_timeout_s=0.5, confirm_timeout_max_s=2.0,
                  max_awaiting=8)
    try:
        ids = [hh.emit(i) for i in range(30)]
        assert within(lambda: hh.link.awaiting == 8, 10)
        time.sleep(0.3)
        assert hh.link.stats["published"] <= 16  # the window holds back the other 22
        assert within(lambda: hh.link.stats["resends"] >= 2, 10)
        assert hh.link.confirm_timeout_s > 0.5  # doubled while nothing was confirmed
        within(lambda: hh.link.confirm_timeout_s == 2.0, 10)
        assert hh.link.confirm_timeout_s == 2.0  # and capped
        assert hh.outbox.count() == 30

        gw = connect("gw-o1")  # a malformed / foreign confirmation changes nothing
        conf = topics.build("o1", "handheld", DEV, "conf")
        bad = [b"not json", b'{"v":1,"stored":[1]}', b'{"v":1,"stored":{"x":[["a",1]]}}']
        for payload in bad:
            gw.client.publish(conf, payload, qos=1).wait_for_publish(5)
        assert within(lambda: hh.link.stats["confirm_bad"] >= 2, 5)
        assert hh.outbox.count() == 30

        wipe_gateway_session(broker.port)
        gateway.append(GatewayProcess(tmp_path / "gateway.toml"))
        gateway[-1].wait_for("gateway_started")
        assert within(lambda: hh.outbox.count() == 0, 40), (hh.outbox.count(), hh.link.stats)
        assert hh.link.confirm_timeout_s == 0.5  # progress resets the wait
    finally:
        hh.close()
    assert_each_once(db, ids)


def test_confirmations_release_only_what_they_name(tmp_path: Path, broker: Mosquitto, connect) -> None:
    """Without a gateway: a test client confirms by hand. Only the named seqs of the
    named incarnation are deleted; a record that is not an event goes at its PUBACK."""
    hh = Handheld(tmp_path / "hh", broker.port, confirm_timeout_s=60)
    gw = connect("gw-o1")
    conf = topics.build("o1", "handheld", DEV, "conf")
    got = threading.Event()
    try:
        ids = [hh.emit(i) for i in range(6)]
        assert within(lambda: hh.link.awaiting == 6 and hh.link.inflight == 0, 10)
        inc = ids[0].split(":")[1]
        seqs = [int(i.split(":")[2]) for i in ids]
        from protocol.canonical import dumps

        gw.client.publish(conf, dumps({"v": 1, "stored": {"00000000": [[seqs[0], seqs[-1]]],
                                                           inc: [[seqs[1], seqs[2]], [seqs[4], seqs[4]]]}}),
                          qos=0).wait_for_publish(5)
        assert within(lambda: hh.outbox.count() == 3, 5)
        left = [envelope.decode(p)["id"] for _s, _c, _t, p in hh.outbox.pending(10)]
        assert left == [ids[0], ids[3], ids[5]]
        assert hh.link.stats["confirmed"] == 3 and hh.link.awaiting == 3
        got.set()
    finally:
        hh.close()
    assert got.is_set()
