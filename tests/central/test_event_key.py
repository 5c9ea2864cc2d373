"""Events belong to their outlet:
the platform keys what it stores by (outlet, event id), because event ids
are made by devices and device names such as ``lk01`` repeat in every
outlet. Two outlets whose lockers produce the same id both keep their event;
a resend from one outlet is still one copy. Checked on both backends, for the
tables keyed by an event id (quarantine, revocations, board reviews and
reports, notices), and for an embedded file or database made before the key
changed (upgraded in place on open, no row lost)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from central.embedded import Embedded
from central.intake import check_batch
from central.keys import KeyService
from central.notices import HttpSms, Notices
from central.revocations import Revocations
from central.scaleout.local import LocalCluster
from common.uplink_codec import decode_ack, encode_batch
from protocol import envelope, seal
from protocol.ids import format_event_id
from tests.central.conftest import CentralUnderTest
from tests.central.test_contract import Client
from tests.central.test_notices import Provider, provider  # noqa: F401 - the fixture, used by name

MASTER = bytes(range(32))
N = 20


def rows_of(outlet: str, n: int = N, start: int = 1, etype: str = "locker.deposit",
            device: str = "lk01") -> list[tuple[str, bytes]]:
    """Events with the ids every outlet's ``lk01`` makes, each body naming its outlet."""
    out = []
    for seq in range(start, start + n):
        eid = format_event_id(device, "c0ffee01", seq)
        body = {"compartment": seq % 24 + 1, "parcel": f"RB{seq:09d}CN", "note": outlet}
        out.append((eid, envelope.encode(envelope.make(eid, 1795881163 + seq, etype, "custody", body,
                                                        boot=1))))
    return out


def bad_row(seq: int) -> tuple[str, bytes]:
    """An event whose id parses but whose envelope does not: quarantined."""
    eid = format_event_id("lk01", "c0ffee01", seq)
    return eid, json.dumps({"id": eid, "v": 1, "ts": "yesterday"}).encode()


def store(b: Any, outlet: str, rows: list[tuple[str, bytes]], lane: str = "bulk") -> Any:
    enc = encode_batch(outlet, lane, rows)
    return b.store(outlet, check_batch(outlet, enc.id, enc.body))


# ------------------------------------------------------------ both backends
def test_two_outlets_with_the_same_event_ids_each_keep_their_own(central: CentralUnderTest) -> None:
    for o in ("o1", "o2"):
        central.add_outlet(o, f"{o}-secret-pw")
    clients = {o: Client(central, o, f"{o}-secret-pw") for o in ("o1", "o2")}
    sent = {o: rows_of(o) for o in clients}
    assert [e for e, _ in sent["o1"]] == [e for e, _ in sent["o2"]]
    for o, cl in clients.items():
        status, data, _ = cl.batch(sent[o])
        assert status == 200 and decode_ack(data).all, data
    central.settle()
    for o in clients:
        assert central.count(o) == N
        assert central.held(o) == dict(sent[o])  # its own payloads, not the other outlet's
    # one outlet resends part of it in another batch: still one copy each
    status, data, _ = clients["o1"].batch(sent["o1"][:5])
    assert status == 200 and decode_ack(data).all
    central.settle()
    assert (central.count("o1"), central.count("o2")) == (N, N)


# --------------------------------------------------------------- embedded
def test_embedded_counts_new_and_duplicate_per_outlet(tmp_path: Path) -> None:
    b = Embedded(tmp_path / "central")
    s1 = store(b, "o1", rows_of("o1") + [bad_row(99)])
    s2 = store(b, "o2", rows_of("o2") + [bad_row(99)])
    assert (s1.new, s1.dup) == (N, 0)
    assert (s2.new, s2.dup) == (N, 0)  # same ids, another outlet: new
    s3 = store(b, "o1", rows_of("o1")[:5], lane="live")  # a resend, in another batch
    assert (s3.new, s3.dup) == (0, 5)
    assert sorted(b.db.execute("SELECT outlet, id FROM quarantine")) == [
        ("o1", "lk01:c0ffee01:99"), ("o2", "lk01:c0ffee01:99")]
    assert b.event("o2", "lk01:c0ffee01:1") == dict(rows_of("o2"))["lk01:c0ffee01:1"]
    assert b.event("o3", "lk01:c0ffee01:1") is None
    b.close()


OLD_EMBEDDED = """
CREATE TABLE events (
    id TEXT PRIMARY KEY, outlet TEXT NOT NULL, device TEXT NOT NULL, type TEXT NOT NULL,
    cls TEXT NOT NULL, ts INTEGER NOT NULL, payload BLOB NOT NULL, batch TEXT NOT NULL,
    received_at REAL NOT NULL);
CREATE INDEX events_outlet ON events (outlet, received_at);
CREATE TABLE quarantine (
    id TEXT PRIMARY KEY, outlet TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL,
    received_at REAL NOT NULL);
CREATE TABLE revocations_answered (
    event TEXT PRIMARY KEY, outlet TEXT NOT NULL, device TEXT NOT NULL, lockers INTEGER NOT NULL,
    at REAL NOT NULL);
CREATE TABLE board_reviews (
    event TEXT PRIMARY KEY, outlet TEXT NOT NULL, device TEXT NOT NULL, sha TEXT NOT NULL,
    job TEXT NOT NULL, site TEXT NOT NULL, step TEXT NOT NULL, pair TEXT, verdict TEXT NOT NULL,
    reason TEXT NOT NULL, distance_m REAL, at REAL NOT NULL);
CREATE INDEX board_reviews_sha ON board_reviews (sha);
CREATE TABLE board_reports (
    event TEXT PRIMARY KEY, outlet TEXT NOT NULL, device TEXT NOT NULL, job TEXT, site TEXT NOT NULL,
    cond TEXT NOT NULL, note TEXT NOT NULL, photos TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE notices (
    deposit TEXT NOT NULL, purpose TEXT NOT NULL, outlet TEXT NOT NULL, parcel TEXT,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, provider_id TEXT, error TEXT,
    at REAL NOT NULL, PRIMARY KEY (deposit, purpose));
"""


def _key(db: sqlite3.Connection, table: str) -> list[str]:
    cols = [(pk, name) for _, name, _, _, _, pk in db.execute(f"PRAGMA table_info({table})") if pk]
    return [name for _, name in sorted(cols)]


def test_an_embedded_file_of_the_old_schema_is_upgraded_on_open(tmp_path: Path) -> None:
    d = tmp_path / "central"
    d.mkdir()
    old = sqlite3.connect(d / "central.db")
    old.executescript(OLD_EMBEDDED)
    eid = "lk01:c0ffee01:1"
    old.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)",
                    [(f"lk01:c0ffee01:{i}", "o1", "lk01", "locker.deposit", "custody", i, b"{}", "b1", 1.0)
                     for i in range(1, 7)])
    old.execute("DELETE FROM events WHERE id='lk01:c0ffee01:3'")  # a gap in the rowids
    rowids = old.execute("SELECT rowid, id FROM events ORDER BY rowid").fetchall()
    old.execute("INSERT INTO quarantine VALUES (?,?,?,?,?)", (eid, "o1", "bad", b"x", 1.0))
    old.execute("INSERT INTO revocations_answered VALUES (?,?,?,?,?)", (eid, "o1", "hh01", 2, 1.0))
    old.execute("INSERT INTO board_reviews VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (eid, "o1", "hh01", "a" * 64, "j1", "s1", "photo", None, "accepted", "ok", 3.0, 1.0))
    old.execute("INSERT INTO board_reports VALUES (?,?,?,?,?,?,?,?,?)",
                (eid, "o1", "hh01", None, "s1", "damaged", "", "[]", 1.0))
    old.execute("INSERT INTO notices VALUES (?,?,?,?,?,?,?,?,?)",
                (eid, "notice", "o1", "RB1", "sent", 1, "m1", "", 1.0))
    old.commit()
    old.close()

    from central.boards import Boards

    b = Embedded(d)
    Revocations(b, MASTER)
    Boards(b)
    Notices(b, MASTER, HttpSms("http://127.0.0.1:9/none", "tok"), set)
    assert b.count("o1") == 5
    assert b.db.execute("SELECT rowid, id FROM events ORDER BY rowid").fetchall() == rowids  # cursors hold
    assert _key(b.db, "events") == ["outlet", "id"] and _key(b.db, "quarantine") == ["outlet", "id"]
    for t in ("revocations_answered", "board_reviews", "board_reports"):
        assert _key(b.db, t) == ["outlet", "event"], t
        assert b.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 1, t
    assert _key(b.db, "notices") == ["outlet", "deposit", "purpose"]
    assert b.db.execute("SELECT outlet, deposit, state FROM notices").fetchall() == [("o1", eid, "sent")]
    assert b.db.execute("SELECT outlet, id, reason FROM quarantine").fetchall() == [("o1", eid, "bad")]
    idx = {r[1] for r in b.db.execute("PRAGMA index_list(events)")}
    assert "events_outlet" in idx
    # the new key is in force: another outlet's same ids are new, a resend is not
    s = store(b, "o2", rows_of("o2", 5))
    assert (s.new, s.dup) == (5, 0)
    s = store(b, "o1", rows_of("o1", 2))
    assert (s.new, s.dup) == (0, 2)
    b.close()
    again = Embedded(d)  # opening an upgraded file changes nothing
    assert (again.count("o1"), again.count("o2")) == (5, 5)
    again.close()


# ---------------------------------------------------- tables keyed by event
def revoked(outlet: str) -> tuple[str, bytes]:
    eid = format_event_id("gw-admin", "0000beef", 1)  # the same id at every outlet
    body = {"device": "hh01", "at": int(time.time()), "cancelled": []}
    return eid, envelope.encode(envelope.make(eid, int(time.time()), "gateway.device_revoked", "alarm", body,
                                              boot=1))


def test_two_outlets_same_id_revocation_reports_are_each_answered(tmp_path: Path) -> None:
    b = Embedded(tmp_path / "central")
    for o in ("o1", "o2"):
        b.add_device(o, "lk01", "locker")
        b.add_device(o, "hh01", "handheld")
    r = Revocations(b, MASTER)
    store(b, "o1", [revoked("o1")])
    assert r.run_once() == 1
    store(b, "o2", [revoked("o2")])  # the same event id, another outlet
    assert r.run_once() == 1
    assert r.run_once() == 0
    for o in ("o1", "o2"):
        _, cmds, _ = b.pull(o, 0, 10)
        assert [c["dev"] for _, c in cmds] == ["lk01"], o
        assert {d["device"]: d["retired"] for d in b.devices(o)}["hh01"] is True
    assert sorted(b.db.execute("SELECT outlet, event FROM revocations_answered")) == [
        ("o1", "gw-admin:0000beef:1"), ("o2", "gw-admin:0000beef:1")]
    b.close()


def test_two_outlets_same_id_board_events_are_each_reviewed(tmp_path: Path) -> None:
    from central.boards import Boards

    b = Embedded(tmp_path / "central")
    boards = Boards(b)
    eid_r, eid_p = format_event_id("hh01", "c0ffee01", 1), format_event_id("hh01", "c0ffee01", 2)
    for o in ("o1", "o2"):
        report = {"site": f"site-{o}", "condition": "damaged", "note": o, "photos": []}
        pic = {"sha256": ("1" if o == "o1" else "2") * 64, "job": "j-none", "site": f"site-{o}",
               "step": "photo", "lat_e7": 1, "lon_e7": 1}
        store(b, o, [(eid_r, envelope.encode(envelope.make(eid_r, 1795881163, "handheld.board_condition",
                                                           "audit", report, boot=1))),
                     (eid_p, envelope.encode(envelope.make(eid_p, 1795881164, "handheld.photo", "audit",
                                                           pic, boot=1)))])
        boards.run_once()
    assert sorted((r["outlet"], r["event"], r["site"]) for r in boards.reports()) == [
        ("o1", eid_r, "site-o1"), ("o2", eid_r, "site-o2")]
    assert sorted((r["outlet"], r["event"], r["site"]) for r in boards.reviews()) == [
        ("o1", eid_p, "site-o1"), ("o2", eid_p, "site-o2")]
    b.close()


def _deposit(outlet: str, parcel: str, code: str) -> tuple[str, bytes]:
    eid = format_event_id("lk01", "0dd0beef", 1)  # the same id at every outlet
    sealed = {"platform": seal.seal("platform", KeyService(outlet, MASTER).key("lk01"), 1, eid, parcel, code)}
    body = {"compartment": 7, "parcel": parcel, "courier": "c001", "expires": 1796000000, "code_by": "locker",
            "code_sealed": sealed}
    return eid, envelope.encode(envelope.make(eid, 1795881163, "locker.deposit", "custody", body, boot=1))


def test_two_outlets_same_id_deposits_each_get_their_notice(tmp_path: Path, provider: Provider  # noqa: F811
                                                            ) -> None:
    b = Embedded(tmp_path / "central")
    n = Notices(b, MASTER, HttpSms(provider.url, "tok"), set)
    n.add_contact("o1", "RB000000011CN", "13800000001")
    n.add_contact("o2", "RB000000025CN", "13800000002")
    store(b, "o1", [_deposit("o1", "RB000000011CN", "483920")])
    store(b, "o2", [_deposit("o2", "RB000000025CN", "105577")])
    assert n.run_once() == 2
    assert n.run_once() == 0
    texts = {t["to"]: t["text"] for t in provider.texts.values()}
    assert "483920" in texts["13800000001"] and "105577" in texts["13800000002"]
    assert n.states("o1") == {"lk01:0dd0beef:1": "sent"} == n.states("o2")
    b.close()


# -------------------------------------------------------------- scale-out
@pytest.mark.slow
def test_scaleout_worker_keeps_both_outlets_even_in_one_fetch(scaleout_rig: LocalCluster) -> None:
    from central.scaleout import ScaleOut, ScaleOutConfig
    from central.scaleout.worker import WorkerThread

    ns, dsn = scaleout_rig.namespace("k")
    cfg = ScaleOutConfig(scaleout_rig.nats.urls, dsn, ns, ack_wait_s=5.0)
    scale = ScaleOut(cfg)
    try:
        # both batches are in the log before a worker runs: one fetch brings them together
        store(scale, "o1", rows_of("o1") + [bad_row(99)])
        store(scale, "o2", rows_of("o2") + [bad_row(99)])
        worker = WorkerThread(cfg)
        try:
            scale.wait_written()
            assert (scale.count("o1"), scale.count("o2")) == (N, N)
            assert worker.worker.stats.events_new == 2 * N
            store(scale, "o1", rows_of("o1")[:5], lane="live")  # a resend in another batch
            scale.wait_written()
            assert worker.worker.stats.events_held == 5
            assert (scale.count("o1"), scale.count("o2")) == (N, N)
        finally:
            worker.stop()
        with psycopg.connect(dsn) as c:
            assert sorted(c.execute("SELECT outlet, id FROM quarantine").fetchall()) == [
                ("o1", "lk01:c0ffee01:99"), ("o2", "lk01:c0ffee01:99")]
            got = dict(c.execute("SELECT id, payload FROM events WHERE outlet='o2'").fetchall())
        assert {k: bytes(v) for k, v in got.items()} == dict(rows_of("o2"))
        assert scale.event("o2", "lk01:c0ffee01:3") == dict(rows_of("o2"))["lk01:c0ffee01:3"]
    finally:
        scale.bridge.run(scale.js.delete_stream(cfg.stream), 10)
        scale.close()


@pytest.mark.slow
def test_wait_written_returns_only_once_the_logged_batches_are_in_the_database(
        scaleout_rig: LocalCluster) -> None:
    """Judged by the stream's sequence: with no worker nothing is written
    and the wait says so; with one, it returns with every row there."""
    from central.scaleout import ScaleOut, ScaleOutConfig
    from central.scaleout.worker import WorkerThread

    ns, dsn = scaleout_rig.namespace("w")
    cfg = ScaleOutConfig(scaleout_rig.nats.urls, dsn, ns, ack_wait_s=5.0)
    scale = ScaleOut(cfg)
    try:
        store(scale, "o1", rows_of("o1"))
        with pytest.raises(TimeoutError):
            scale.wait_written(1.0)
        worker = WorkerThread(cfg)
        try:
            for i in range(5):  # each wait right after its batch was logged
                store(scale, f"o{i + 2}", rows_of(f"o{i + 2}"))
                scale.wait_written()
                assert scale.count(f"o{i + 2}") == N
            assert scale.count("o1") == N
        finally:
            worker.stop()
    finally:
        scale.bridge.run(scale.js.delete_stream(cfg.stream), 10)
        scale.close()


OLD_PG = """
CREATE TABLE events (
    id text PRIMARY KEY, outlet text NOT NULL, device text NOT NULL, type text NOT NULL,
    cls text NOT NULL, ts bigint NOT NULL, payload bytea NOT NULL, batch text NOT NULL,
    received_at double precision NOT NULL);
CREATE INDEX events_outlet ON events (outlet, received_at);
CREATE TABLE quarantine (
    id text PRIMARY KEY, outlet text NOT NULL, reason text NOT NULL, payload bytea NOT NULL,
    received_at double precision NOT NULL);
"""


@pytest.mark.slow
def test_a_scaleout_database_of_the_old_schema_is_upgraded_on_open(scaleout_rig: LocalCluster) -> None:
    from central.scaleout import ScaleOut, ScaleOutConfig
    from central.scaleout.worker import WorkerThread

    ns, dsn = scaleout_rig.namespace("m")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(OLD_PG)
        for i in range(1, 4):
            c.execute("INSERT INTO events VALUES (%s,'o1','lk01','locker.deposit','custody',1,"
                      "'\\x7b7d','b1',1)", (f"lk01:c0ffee01:{i}",))
        c.execute("INSERT INTO quarantine VALUES ('lk01:c0ffee01:9','o1','bad','\\x78',1)")
    cfg = ScaleOutConfig(scaleout_rig.nats.urls, dsn, ns, ack_wait_s=5.0)
    for _ in range(2):  # a second open finds the new key and changes nothing
        ScaleOut(cfg).close()
    scale = ScaleOut(cfg)
    worker = WorkerThread(cfg)
    try:
        with psycopg.connect(dsn) as c:
            for t in ("events", "quarantine"):
                (d,) = c.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                 "WHERE conrelid = %s::regclass AND contype = 'p'", (t,)).fetchone() or ("",)
                assert d == "PRIMARY KEY (outlet, id)", t
            assert c.execute("SELECT count(*) FROM quarantine").fetchone() == (1,)
        assert scale.count("o1") == 3
        store(scale, "o2", rows_of("o2", 3))
        scale.wait_written()
        assert (scale.count("o1"), scale.count("o2")) == (3, 3)
    finally:
        worker.stop()
        scale.bridge.run(scale.js.delete_stream(cfg.stream), 10)
        scale.close()


def test_the_simulators_central_forgets_and_loses_by_outlet_and_id(tmp_path: Path) -> None:
    from simulator.central import CentralService

    svc = CentralService(tmp_path / "central", tmp_path / "unused.pem", tmp_path / "unused.key",
                         tmp_path / "unused-ca.pem")  # never up(): the store and its reads only
    try:
        store(svc.backend, "o1", rows_of("o1"))
        svc.sabotage.lose_every = 2  # o2's ids are o1's, yet new to the platform: every 2nd is lost
        store(svc.sabotage, "o2", rows_of("o2"))
        assert len(svc.forgotten) == N // 2
        assert (svc.count("o1"), svc.count("o2")) == (N, N // 2)
        eid = "lk01:c0ffee01:1"
        assert eid in svc.held("o2")
        assert svc.forget("o1", eid)
        assert eid not in svc.held("o1") and eid in svc.held("o2")
        assert svc.backend.event("o2", eid) == dict(rows_of("o2"))[eid]
        assert not svc.forget("o1", eid)  # gone already; o2's copy is not another chance
    finally:
        svc.close()
