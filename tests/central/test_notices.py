"""Pickup notices from the platform (central/notices.py) through a real
HTTP SMS provider double: the code opened from the locker's sealed box,
exactly one text per deposit and purpose whatever is resent or retried, and
none where the outlet's own notifier was chosen. Each runs on both backends
(the ``duty_store`` fixture: SQLite, and PostgreSQL behind the JetStream log
and a worker), as the duty asks only for ``central/duty_store.py``."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from central.keys import KeyService
from central.notices import HttpSms, Notices
from common.web_server import ThreadedServer
from protocol import envelope, seal
from protocol.ids import format_event_id
from tests.central.conftest import StoreUnderTest

MASTER = bytes(range(32))


class Provider:
    """An SMS provider: keeps texts, deduplicates by ``ref`` as real ones do,
    fails on demand (``fail`` answers of the given status) and answers
    after ``delay_s`` (a slow provider keeps a duty pass running)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.texts: dict[str, dict[str, Any]] = {}
        self.calls = 0
        self.fail: list[int] = []
        self.delay_s = delay_s
        self.lock = threading.Lock()
        app = web.Application()
        app.router.add_post("/sms", self._send)
        self.srv = ThreadedServer(app, "127.0.0.1", 0, name="sms-double")
        self.srv.start()
        self.url = f"http://127.0.0.1:{self.srv.address[1]}/sms"

    async def _send(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer tok"
        doc = await request.json()
        with self.lock:
            self.calls += 1
        await asyncio.sleep(self.delay_s)
        with self.lock:
            if self.fail:
                return web.Response(status=self.fail.pop(0))
            self.texts.setdefault(doc["ref"], doc)
        return web.json_response({"id": f"m{len(self.texts)}"})


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.srv.stop()


def deposit(seq: int, parcel: str, code: str, device: str = "lk01", master: bytes = MASTER
            ) -> tuple[str, bytes]:
    """A locker.deposit whose code the locker sealed for the platform."""
    eid = format_event_id(device, "0dd0beef", seq)
    keys = KeyService("o1", master)
    sealed = {"platform": seal.seal("platform", keys.key(device), 1, eid, parcel, code)}
    body = {"compartment": 7, "parcel": parcel, "courier": "c001", "expires": 1796000000, "code_by": "locker",
            "code_sealed": sealed}
    return eid, envelope.encode(envelope.make(eid, 1795881163, "locker.deposit", "custody", body, boot=1))


def route(seq: int, deposit_id: str, parcel: str, by: str) -> tuple[str, bytes]:
    eid = format_event_id("gw-o1-sms", "0000aaaa", seq)
    body = {"event": deposit_id, "parcel": parcel, "purpose": "notice", "by": by}
    return eid, envelope.encode(envelope.make(eid, 1795881200, "notify.route", "status", body, boot=1))


def upload(store: StoreUnderTest, rows: list[tuple[str, bytes]]) -> None:
    store.store("o1", *rows)


def notices(store: StoreUnderTest, provider: Provider, notifier: bool) -> Notices:
    return Notices(store.b, MASTER, HttpSms(provider.url, "tok"), lambda: {"o1"} if notifier else set())


def table(store: StoreUnderTest, name: str) -> list[dict[str, Any]]:
    """Every row of one of the notices' tables, on either backend."""
    rows: list[dict[str, Any]] = store.b.rows(name, {})
    return rows


def test_an_outlet_without_a_notifier_gets_one_text_per_deposit(duty_store: StoreUnderTest,
                                                                 provider: Provider) -> None:
    n = notices(duty_store, provider, notifier=False)
    d1, d2 = deposit(1, "RB000000011CN", "483920"), deposit(2, "RB000000025CN", "105577")
    n.add_contact("o1", "RB000000011CN", "13800000001", "zh")
    n.add_contact("o1", "RB000000025CN", "13800000002", "en")
    upload(duty_store, [d1, d2])
    assert n.run_once() == 2
    upload(duty_store, [d1, d2])  # the gateway resends the batch after a lost ack
    assert n.run_once() == 0
    assert provider.calls == 2
    texts = {t["to"]: t["text"] for t in provider.texts.values()}
    assert "483920" in texts["13800000001"] and "取件码" in texts["13800000001"]
    assert "105577" in texts["13800000002"] and "Pickup code" in texts["13800000002"]
    # the code is in the text only: never in the platform's tables
    dump = "\n".join(str(r) for r in table(duty_store, "notices"))
    assert "483920" not in dump and "105577" not in dump


def test_with_a_notifier_only_routes_to_the_platform_are_sent(duty_store: StoreUnderTest,
                                                              provider: Provider) -> None:
    n = notices(duty_store, provider, notifier=True)
    d1, d2 = deposit(1, "RB000000011CN", "483920"), deposit(2, "RB000000025CN", "105577")
    for parcel, phone in (("RB000000011CN", "13800000001"), ("RB000000025CN", "13800000002")):
        n.add_contact("o1", parcel, phone)
    upload(duty_store, [d1, d2])
    assert n.run_once() == 0  # a deposit alone sends nothing where the gateway may text
    upload(duty_store, [route(1, d1[0], "RB000000011CN", "platform"),
                        route(2, d2[0], "RB000000025CN", "gateway")])
    assert n.run_once() == 1
    assert [t["to"] for t in provider.texts.values()] == ["13800000001"]


def test_a_provider_failure_is_retried_once_sent_and_a_refusal_is_final(
        duty_store: StoreUnderTest, provider: Provider) -> None:
    n = notices(duty_store, provider, notifier=False)
    d1, d2 = deposit(1, "RB000000011CN", "483920"), deposit(2, "RB000000025CN", "105577")
    n.add_contact("o1", "RB000000011CN", "13800000001")
    n.add_contact("o1", "RB000000025CN", "not-a-number")
    upload(duty_store, [d1, d2])
    provider.fail = [503, 400]
    assert n.run_once() == 0
    assert n.run_once() == 1  # d1 again; d2 was refused for good
    assert n.run_once() == 0
    rows = table(duty_store, "notices")
    assert {r["parcel"]: r["state"] for r in rows} == {"RB000000011CN": "sent", "RB000000025CN": "failed"}
    assert {r["parcel"]: r["attempts"] for r in rows} == {"RB000000011CN": 2, "RB000000025CN": 1}
    assert len(provider.texts) == 1


def test_a_tampered_box_or_a_missing_contact_sends_nothing(duty_store: StoreUnderTest,
                                                           provider: Provider) -> None:
    n = notices(duty_store, provider, notifier=False)
    eid, raw = deposit(1, "RB000000011CN", "483920")
    env = json.loads(raw)
    env["body"]["parcel"] = "RB000000039CN"  # the box is bound to the parcel it was sealed for
    n.add_contact("o1", "RB000000039CN", "13800000001")
    upload(duty_store, [(eid, envelope.encode(env)), deposit(2, "RB000000025CN", "105577")])
    assert n.run_once() == 0 and provider.calls == 0
    states = {r["parcel"]: r["state"] for r in table(duty_store, "notices")}
    assert states == {"RB000000039CN": "no_code", "RB000000025CN": "no_contact"}


def test_a_notice_gives_up_after_its_attempts(duty_store: StoreUnderTest, provider: Provider) -> None:
    """Each claim counts an attempt (added to in the store, not replaced):
    after ``MAX_ATTEMPTS`` answers of 503 the notice is failed, not tried forever."""
    from central.notices import MAX_ATTEMPTS

    n = notices(duty_store, provider, notifier=False)
    n.add_contact("o1", "RB000000011CN", "13800000001")
    upload(duty_store, [deposit(1, "RB000000011CN", "483920")])
    provider.fail = [503] * (MAX_ATTEMPTS + 2)
    for _ in range(MAX_ATTEMPTS + 2):
        assert n.run_once() == 0
    assert provider.calls == MAX_ATTEMPTS
    [row] = table(duty_store, "notices")
    assert row["state"] == "failed" and row["attempts"] == MAX_ATTEMPTS


class Counting:
    """The store a duty is given, counting every row it hands back: events
    (``events_after``, ``events_of``), table rows (``rows``) and envelopes
    (``event``), so a test sees what one pass read."""

    def __init__(self, b: Any) -> None:
        self.b = b
        self.read = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.b, name)

    def events_after(self, event_type: str, cursor: float | None) -> Any:
        events, after = self.b.events_after(event_type, cursor)
        self.read += len(events)
        return events, after

    def events_of(self, event_type: str) -> Any:
        events = self.b.events_of(event_type)
        self.read += len(events)
        return events

    def rows(self, table: str, where: dict[str, Any]) -> Any:
        rows = self.b.rows(table, where)
        self.read += len(rows)
        return rows

    def event(self, outlet: str, event_id: str) -> Any:
        payload = self.b.event(outlet, event_id)
        self.read += payload is not None
        return payload


def _sql(store: StoreUnderTest, q: Any, *args: Any) -> list[Any]:
    """One statement on the store's own database (SQLite or PostgreSQL)."""
    if store.name == "embedded":
        with store.b.lock:
            return list(store.b.db.execute(q.replace("%s", "?"), args).fetchall())
    with store.b.pool.tx() as c:
        cur = c.execute(q, args)
        return list(cur.fetchall()) if cur.description else []


def test_a_pass_reads_the_deposits_stored_since_the_last_and_not_the_old_handled_ones(
        duty_store: StoreUnderTest, provider: Provider) -> None:
    from tests.central.test_contract import events

    old = 600 if duty_store.name == "embedded" else 300
    for start in range(1, old + 1, 100):  # deposits of an earlier hour, every notice decided (no number)
        upload(duty_store, events("lk02", 100, start=start))
    _sql(duty_store, "UPDATE events SET received_at = received_at - 3600")
    counting = Counting(duty_store.b)
    n = Notices(counting, MASTER, HttpSms(provider.url, "tok"), set)
    n.add_contact("o1", "RB000000011CN", "13800000001")
    n.add_contact("o1", "RB000000025CN", "13800000002")
    assert n.run_once() == 0 and counting.read >= old  # the first pass reads them all, once
    upload(duty_store, [deposit(1, "RB000000011CN", "483920")])
    assert n.run_once() == 1
    upload(duty_store, [deposit(2, "RB000000025CN", "105577")])
    counting.read = 0
    assert n.run_once() == 1
    # the new deposit, its contact and notice, the window's one: never the old ones
    assert counting.read < 12, counting.read
    assert len(provider.texts) == 2 and provider.calls == 2
    # and the store reads them by an index of the deposits, not the whole event log
    if duty_store.name == "embedded":
        from central.embedded import events_after_sql

        plan = " ".join(str(r[-1]) for r in _sql(duty_store, "EXPLAIN QUERY PLAN "
                                                 + events_after_sql("locker.deposit"), old))
        assert "INDEX events_type_locker_deposit" in plan, plan
    else:
        from central.scaleout.backend import events_after_query

        with duty_store.b.pool.tx() as c:
            q = events_after_query("locker.deposit", time.time() - 600).as_string(c)
            [[[doc]]] = [c.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + q).fetchall()]
            doc = doc[0] if isinstance(doc, list) else doc
        scans = []

        def walk(node: dict[str, Any]) -> None:
            scans.append(node)
            for child in node.get("Plans", []):
                walk(child)

        walk(doc["Plan"])
        [scan] = [s for s in scans if s.get("Relation Name") == "events"]
        assert scan["Node Type"] in ("Index Scan", "Bitmap Heap Scan") and scan["Actual Rows"] == 2, scan
        assert scan.get("Rows Removed by Filter", 0) == 0, scan


def _late(store: StoreUnderTest, row: tuple[str, bytes], stamped: float) -> Any:
    """Store ``row`` as a writer that stamped it at ``stamped`` and has not
    committed yet; the commit, to call once newer rows were read. On
    PostgreSQL a real open transaction of a second connection (what an
    ingest worker's is while another commits); on SQLite, whose one writer
    commits in order, the row is written at the call, stamped in the past."""
    from central.intake import check_batch
    from common.uplink_codec import encode_batch

    enc = encode_batch("o1", "bulk", [row])
    [e] = check_batch("o1", enc.id, enc.body).good
    values = (e.id, "o1", e.device, e.type, e.cls, e.ts, e.payload, enc.id, stamped)
    insert = ("INSERT INTO events (id, outlet, device, type, cls, ts, payload, batch, received_at) "
              "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)")
    if store.name == "embedded":
        return lambda: _sql(store, insert, *values)
    import psycopg

    conn = psycopg.connect(store.b.cfg.pg)  # not autocommit: the transaction stays open
    conn.execute(insert, values)

    def commit() -> None:
        conn.commit()
        conn.close()

    return commit


def test_a_deposit_committed_after_newer_ones_were_read_is_still_texted_once(
        duty_store: StoreUnderTest, provider: Provider) -> None:
    n = notices(duty_store, provider, notifier=False)
    n.add_contact("o1", "RB000000011CN", "13800000001")
    n.add_contact("o1", "RB000000025CN", "13800000002")
    n.add_contact("o1", "RB000000039CN", "13800000003")
    commit = _late(duty_store, deposit(1, "RB000000011CN", "483920"), time.time())
    time.sleep(0.05)
    upload(duty_store, [deposit(2, "RB000000025CN", "105577")])  # stamped after the first, visible before it
    assert n.run_once() == 1
    upload(duty_store, [deposit(3, "RB000000039CN", "300001")])
    assert n.run_once() == 1  # the cursor is past the second and the third now
    commit()
    assert n.run_once() == 1  # the first, committed late, is still read
    assert n.run_once() == 0
    # a restarted duty (nothing remembered but the store) sends nothing twice
    assert notices(duty_store, provider, notifier=False).run_once() == 0
    assert sorted(t["to"] for t in provider.texts.values()) == ["13800000001", "13800000002", "13800000003"]
    assert provider.calls == 3


def test_a_route_that_came_before_its_deposit_is_sent_once_the_deposit_is_stored(
        duty_store: StoreUnderTest, provider: Provider) -> None:
    n = notices(duty_store, provider, notifier=True)
    n.add_contact("o1", "RB000000011CN", "13800000001")
    d1 = deposit(1, "RB000000011CN", "483920")
    upload(duty_store, [route(1, d1[0], "RB000000011CN", "platform")])
    assert n.run_once() == 0 and n.run_once() == 0  # waiting for its deposit, past the cursor
    upload(duty_store, [d1])
    assert n.run_once() == 1
    assert n.run_once() == 0 and provider.calls == 1
    assert table(duty_store, "notice_pending") == []  # nothing left to look at


def test_a_store_from_before_the_cursors_sends_what_was_due_and_nothing_twice(
        duty_store: StoreUnderTest, provider: Provider) -> None:
    """A store whose notices an earlier version kept (no cursor, nothing
    pending): its first pass reads everything once and sends what that
    version would have sent next, a retry, a deposit it had not seen, a
    queued token, and not what it sent."""
    from central.notices import NOTICES, TOKEN_NOTICES

    n = notices(duty_store, provider, notifier=False)
    d1, d2, d3 = (deposit(i, f"RB00000{i}011CN", f"48392{i}") for i in (1, 2, 3))
    for i in (1, 2, 3):
        n.add_contact("o1", f"RB00000{i}011CN", f"1380000000{i}")
    n.add_contact("o1", "RB000000097CN", "13800000009")
    upload(duty_store, [d1, d2, d3])
    for (eid, _), state, attempts in ((d1, "sent", 1), (d2, "retry", 1)):
        duty_store.b.upsert(NOTICES, {"deposit": eid, "purpose": "notice", "outlet": "o1", "parcel": None,
                                      "state": state, "attempts": attempts, "provider_id": None, "error": "",
                                      "at": time.time()})
    duty_store.b.upsert(TOKEN_NOTICES, {"outlet": "o1", "parcel": "RB000000097CN", "device": "hh01",
                                        "round": "r-1", "at": time.time()})
    assert n.run_once() == 3
    assert n.run_once() == 0
    assert sorted(t["to"] for t in provider.texts.values()) == ["13800000002", "13800000003", "13800000009"]
    assert provider.calls == 3
    attempts = {r["deposit"]: r["attempts"] for r in table(duty_store, "notices") if r["purpose"] == "notice"}
    assert attempts == {d1[0]: 1, d2[0]: 2, d3[0]: 1}
