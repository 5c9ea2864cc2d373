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
