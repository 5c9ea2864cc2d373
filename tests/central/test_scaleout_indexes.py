"""The scale-out store's indexes (``central/scaleout/schema.py``, ``PgStore.duty_table``),
on the session's real PostgreSQL: a duty table's own indexes (the boards'
reviews by photo hash, the postage checks by time) are there after a store
opens and serve the duty's reads once the table is large; on a table that
was there already, an index is built with ``CREATE INDEX CONCURRENTLY``, so
writers into it do not wait for the build; an index an interrupted build
left invalid is built again; and a second open changes nothing. The same
indexes on the embedded store (SQLite), whose reads they serve too."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from central.boards import REVIEWS
from central.duty_store import index_name
from central.embedded import Embedded, rows_sql
from central.postage_audit import CHECKS
from central.scaleout import PgStore, ScaleOutConfig
from central.scaleout.backend import rows_query
from central.scaleout.local import LocalCluster
from tests.waiting import until

SHA = index_name(REVIEWS, ("sha",))  # board_reviews_sha
AT = index_name(CHECKS, ("at",))  # postage_checks_at
# Rows enough that a scan of the table costs more than the index: the
# planner's choice is then the index's use, not a guess on an empty table.
ROWS = 20_000
EVENT = "INSERT INTO events (id, outlet, device, type, cls, ts, payload, batch, received_at) "
REVIEW = "INSERT INTO board_reviews (event, outlet, device, sha, job, site, step, verdict, reason, at) "
LOGGER = "postedge.central.scaleout.backend"


def _store(rig: LocalCluster) -> PgStore:
    ns, dsn = rig.namespace("ix")
    return PgStore(ScaleOutConfig(rig.nats.urls, dsn, ns))


def _indexes(store: PgStore) -> dict[str, tuple[int, bool, bool]]:
    """Every index of the store's database: name -> (oid, valid, unique)."""
    with store.pool.tx() as c:
        rows = c.execute("SELECT c.relname, c.oid, i.indisvalid, i.indisunique FROM pg_index i "
                         "JOIN pg_class c ON c.oid = i.indexrelid "
                         "WHERE c.relnamespace = current_schema()::regnamespace").fetchall()
    return {name: (int(oid), valid, unique) for name, oid, valid, unique in rows}


def _fill_reviews(store: PgStore, n: int = ROWS, shas: int = ROWS) -> None:
    with store.pool.tx() as c:
        c.execute(REVIEW + "SELECT 'hh01:e:' || g, 'o' || (g %% 7), 'hh01', md5((g %% %s)::text), 'j' || g, "
                  "'s1', 'photo', 'accepted', 'ok', g FROM generate_series(1, %s) g", (shas, n))
        c.execute("ANALYZE board_reviews")


def _fill_checks(store: PgStore, n: int = ROWS) -> None:
    with store.pool.tx() as c:
        c.execute("INSERT INTO postage_checks (outlet, event, verdict, detail, at) "
                  "SELECT 'o' || (g %% 7), 'c01:e:' || g, CASE WHEN g %% 50 = 0 THEN 'postage_mismatch' "
                  "ELSE 'ok' END, '{}', g FROM generate_series(1, %s) g", (n,))
        c.execute("ANALYZE postage_checks")


def _scans(store: PgStore, q: sql.Composed, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The plan's nodes that read a table or an index, for ``q``."""
    with store.pool.tx() as c:
        text = q.as_string(c)
        [[[doc]]] = [c.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(text), args).fetchall()]
    doc = doc[0] if isinstance(doc, list) else doc
    out: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        if "Relation Name" in node or "Index Name" in node:
            out.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(doc["Plan"])
    return out


def _used(scans: list[dict[str, Any]]) -> set[str]:
    return {s["Index Name"] for s in scans if "Index Name" in s}


@pytest.mark.slow
def test_a_store_has_the_duties_indexes_they_serve_the_reads_and_a_second_open_builds_nothing(
        scaleout_rig: LocalCluster, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(scaleout_rig)
    try:
        for table in (REVIEWS, CHECKS):
            store.duty_table(table)
        have = _indexes(store)
        for name in (SHA, AT, "events_board_reviews", "events_postage_checks", "events_alarms",
                     "events_batch"):
            assert have[name][1], name  # there and valid
        _fill_reviews(store)
        _fill_checks(store)
        # a photo's earlier reviews, by its hash (the boards' duplicate check)
        sha = "c4ca4238a0b923820dcc509a6f75849b"  # md5('1')
        assert [r["event"] for r in store.rows(REVIEWS.name, {"sha": sha})] == ["hh01:e:1"]
        assert SHA in _used(_scans(store, *rows_query(REVIEWS.name, {"sha": sha}))), "no index on sha"
        # the dispatcher's page: the newest failed checks of every outlet
        newest = store.rows(CHECKS.name, {}, unlike={"verdict": "ok"}, newest=5)
        assert [r["at"] for r in newest] == [20000.0, 19950.0, 19900.0, 19850.0, 19800.0]
        assert AT in _used(_scans(store, *rows_query(CHECKS.name, {}, {"verdict": "ok"}, 20)))
        # opened again (a front restarting): every index there and valid, nothing built
        caplog.set_level(logging.INFO, logger=LOGGER)
        caplog.clear()
        again = PgStore(store.cfg, pool_size=2)
        try:
            for table in (REVIEWS, CHECKS):
                again.duty_table(table)
        finally:
            again.close()
        assert _indexes(store) == have  # the same indexes, none dropped and made again
        assert not [r for r in caplog.records if r.msg.startswith("index ")]
    finally:
        store.close()


@pytest.mark.slow
def test_an_index_on_a_table_that_is_there_is_built_concurrently_while_writers_write(
        scaleout_rig: LocalCluster, caplog: pytest.LogCaptureFixture) -> None:
    """A store from before the postage audit and the reviews' hash index:
    the events are there, and so are the reviews. The new version opens
    while an ingest worker's transaction into each table is open: each
    build waits for that transaction, and meanwhile another writer into
    the same table is not kept waiting (behind a plain build it would wait
    until the build ends, which on a large table is long)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = _store(scaleout_rig)
    try:
        store.duty_table(dataclasses.replace(REVIEWS, indexes=()))  # the reviews as they were
        _fill_reviews(store, n=2000)
        with store.pool.tx() as c:
            c.execute(EVENT + "SELECT 'cs01:e:' || g, 'o1', 'cs01', 'counter.accept', 'business', g, '{}', "
                      "'b' || g, g FROM generate_series(1, 2000) g")
        assert SHA not in _indexes(store) and "events_postage_checks" not in _indexes(store)
        caplog.clear()
        dsn = store.cfg.pg
        with psycopg.connect(dsn) as events_writer, psycopg.connect(dsn) as reviews_writer, \
                psycopg.connect(dsn, autocommit=True) as other, \
                psycopg.connect(dsn, autocommit=True) as watch:
            # the workers' open transactions, one into each table
            events_writer.execute(EVENT + "VALUES ('cs01:e:x1', 'o1', 'cs01', 'counter.accept', 'business', "
                                  "1, '{}', 'bx', 1)")
            reviews_writer.execute(REVIEW + "VALUES ('hh01:e:x1', 'o1', 'hh01', 'x1', 'j', 's', 'photo', "
                                   "'ok', 'ok', 1)")
            failed: list[BaseException] = []

            def open_new_version() -> None:
                try:
                    store.duty_table(CHECKS)
                    store.duty_table(REVIEWS)
                except BaseException as e:  # noqa: BLE001 - handed to the test's thread
                    failed.append(e)

            def building(index: str) -> bool:
                """The build of ``index`` waits for a lock (the open writer's)."""
                row = watch.execute("SELECT count(*) FROM pg_stat_activity "
                                    "WHERE query ILIKE 'CREATE INDEX%%' AND query LIKE %s "
                                    "AND wait_event_type = 'Lock' "
                                    "AND datname = current_database()", (f"%{index}%",)).fetchone()
                return bool(row and row[0])

            other.execute("SET lock_timeout = '3s'")
            t = threading.Thread(target=open_new_version)
            t.start()
            until(lambda: building("events_postage_checks"), timeout=30)
            other.execute(EVENT + "VALUES ('cs01:e:x2', 'o1', 'cs01', 'counter.accept', 'business', 2, '{}', "
                          "'bx', 2)")
            assert t.is_alive() and not failed  # the build still waits; the other writer did not
            events_writer.commit()
            until(lambda: building(SHA), timeout=30)
            other.execute(REVIEW + "VALUES ('hh01:e:x2', 'o1', 'hh01', 'x2', 'j', 's', 'photo', 'ok', "
                          "'ok', 2)")
            assert t.is_alive() and not failed
            reviews_writer.commit()
            t.join(60)
        assert not t.is_alive() and not failed, failed
        have = _indexes(store)
        assert have[SHA][1] and have["events_postage_checks"][1] and have[AT][1]
        built = {r.args[0] for r in caplog.records if r.msg.startswith("index ")}  # type: ignore[index]
        assert built == {SHA, "events_postage_checks"}  # the new table's index: in its own transaction
        with store.pool.tx() as c:
            c.execute("ANALYZE board_reviews")
        assert SHA in _used(_scans(store, *rows_query(REVIEWS.name, {"sha": "x2"})))
        assert [r["event"] for r in store.rows(REVIEWS.name, {"sha": "x2"})] == ["hh01:e:x2"]
    finally:
        store.close()


@pytest.mark.slow
def test_an_index_an_interrupted_build_left_invalid_is_built_again(scaleout_rig: LocalCluster) -> None:
    """A concurrent build that fails half way leaves its index in the
    catalogue, invalid: never read, and ``IF NOT EXISTS`` takes it for
    there. A unique build over hashes that repeat fails that way."""
    store = _store(scaleout_rig)
    try:
        store.duty_table(dataclasses.replace(REVIEWS, indexes=()))
        _fill_reviews(store, n=4000, shas=1000)  # every hash reviewed four times
        with psycopg.connect(store.cfg.pg, autocommit=True) as c, \
                pytest.raises(psycopg.errors.UniqueViolation):
            c.execute(sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY {} ON board_reviews (sha)").format(
                sql.Identifier(SHA)))
        assert _indexes(store)[SHA][1:] == (False, True)  # left there, invalid
        store.duty_table(REVIEWS)
        assert _indexes(store)[SHA][1:] == (True, False)  # valid, and the store's own: not unique
        sha = "c4ca4238a0b923820dcc509a6f75849b"  # md5('1')
        assert len(store.rows(REVIEWS.name, {"sha": sha})) == 4
        assert SHA in _used(_scans(store, *rows_query(REVIEWS.name, {"sha": sha})))
    finally:
        store.close()


def test_the_embedded_store_has_the_same_indexes_and_reads_by_them(tmp_path: Path) -> None:
    b = Embedded(tmp_path / "central")
    try:
        for table in (REVIEWS, CHECKS):
            b.duty_table(table)
        for table, q in ((REVIEWS, rows_sql(REVIEWS.name, {"sha": "x"})),
                         (CHECKS, rows_sql(CHECKS.name, {}, {"verdict": "ok"}, 20))):
            with b.lock:
                plan = " ".join(str(r[-1]) for r in b.db.execute("EXPLAIN QUERY PLAN " + q[0], q[1]))
            assert f"INDEX {index_name(table, table.indexes[0])}" in plan, plan
    finally:
        b.close()
