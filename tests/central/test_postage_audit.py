"""The platform re-prices every counter acceptance from the documents it cites
(``central/postage_audit.py``): what a counter priced from the platform's own
tariff is ``ok``; a postage a tampered box charged, a document the platform never
issued, a box not in the catalogue or overloaded are each named, kept and counted.
The audit runs on both backends (the ``duty_store`` fixture), in the duties each
runs: every duty on the embedded one, the shared ones on scale-out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central.documents import Documents
from central.duties import Duties
from central.embedded import Embedded
from common import platform_docs as pd
from common.tariff import Tariff
from protocol import envelope
from protocol.ids import format_event_id
from simulator.counter_sim import BOXES, RATES, ZONES
from simulator.platform_keys import MASTER
from tests.central.conftest import StoreUnderTest

SEQ = iter(range(1, 10_000))


@pytest.fixture
def platform(duty_store: StoreUnderTest, tmp_path: Path) -> tuple[StoreUnderTest, Documents]:
    duty_store.b.add_outlet("o1", "password-of-o1")
    docs = Documents(duty_store.b, key_dir=tmp_path)
    docs.publish("tariff", {"zones": ZONES, "services": RATES})
    docs.publish("box_catalogue", {"boxes": BOXES})
    return duty_store, docs


def duties_of(s: StoreUnderTest) -> Duties:
    """What ``postedge central run`` runs on the backend: the audit is in both."""
    return Duties(s.b, MASTER)


def accept(docs: Documents, **change: Any) -> dict[str, Any]:
    """A counter.accept body as the gateway's desk makes it, priced from the platform's documents."""
    tariff, catalogue = (d for d in sorted(docs.latest(), key=lambda d: d["kind"] != "tariff"))
    keys = pd.load_public_keys(docs.public_keys())
    t = pd.verify(tariff, keys, "tariff", "o1")
    c = pd.verify(catalogue, keys, "box_catalogue", "o1")
    grams = change.pop("weight_g", 2345)
    q = Tariff(t).quote("standard", "552300", grams)
    body = {"waybill": "EA123456785CN", "waybill_kind": "s10", "box": BOXES[0]["code"], "weight_g": grams,
            "stable_readings": 3, "service": "standard", "zone": q.zone, "postage_fen": q.fen,
            "sender": {"name": "王芳", "phone": "13800000000", "address": "下口村", "postcode": "552300"},
            "recipient": {"name": "李伟", "phone": "13900000000", "address": "贵阳", "postcode": "552300"},
            "clerk": "mei", "catalogue": c.cite(), "tariff": t.cite()}
    body.update(change)
    return body


def accepted(*bodies: dict[str, Any]) -> list[tuple[str, bytes]]:
    """``counter.accept`` events with these bodies, as the gateway's desk records them."""
    rows = []
    for body in bodies:
        eid = format_event_id("gw-o1-counter", "0000beef", next(SEQ))
        rows.append((eid, envelope.encode(envelope.make(eid, int(time.time()), "counter.accept", "custody",
                                                          body, boot=1))))
    return rows


def store(s: StoreUnderTest, *bodies: dict[str, Any]) -> list[str]:
    return s.store("o1", *accepted(*bodies))


def test_each_acceptance_is_priced_again_from_the_documents_it_cites(
        platform: tuple[StoreUnderTest, Documents]) -> None:
    s, docs = platform
    good = accept(docs)
    cases = {
        "ok": good,
        "postage_mismatch": {**good, "postage_fen": good["postage_fen"] - 300},
        "unknown_document": {**good, "tariff": {**good["tariff"], "version": 7}},
        "unknown_document ": {**good, "tariff": {**good["tariff"], "digest": "0" * 16}},
        "box_unknown": {**good, "box": "PE-BOX-NONE"},
        "box_overweight": accept(docs, weight_g=BOXES[0]["max_g"] + 500),
        "postage_mismatch  ": {**good, "weight_g": 10**6},  # more than the tariff prices at all
        "no_document": {**good, "tariff": None},
        "malformed": {**good, "recipient": {"name": "李伟"}},
    }
    ids = store(s, *cases.values())
    duties = duties_of(s)
    duties.run_once()
    got = {v["event"]: v["verdict"] for v in duties.postage.verdicts("o1")}
    assert [got[i] for i in ids] == [k.strip() for k in cases]
    detail = {v["event"]: v["detail"] for v in duties.postage.verdicts("o1")}
    assert detail[ids[1]] == {"why": "price", "charged": good["postage_fen"] - 300, "zone": good["zone"],
                              "want": good["postage_fen"], "want_zone": good["zone"]}
    assert detail[ids[2]] == {"kind": "tariff", "version": 7, "why": "never_issued"}
    assert detail[ids[3]]["why"] == "digest" and detail[ids[6]]["why"] == "unpriceable"
    duties.run_once()  # each acceptance is judged once
    assert len(duties.postage.verdicts()) == len(cases)


def test_the_page_reads_only_the_newest_failures(platform: tuple[StoreUnderTest, Documents]) -> None:
    """The dispatcher's page asks for the last N failed checks, newest first;
    the ``ok`` ones and older failures are not read at all."""
    s, docs = platform
    good = accept(docs)
    duties = duties_of(s)
    ids = []
    for body in (good, {**good, "box": "PE-BOX-NONE"}, good, {**good, "tariff": None},
                 {**good, "postage_fen": 1}):
        ids += store(s, body)  # one batch each: the order they reach the platform is theirs
        duties.run_once()
    newest = duties.postage.verdicts(failed_only=True, newest=2)
    assert [v["event"] for v in newest] == [ids[4], ids[3]]
    assert [v["verdict"] for v in duties.postage.verdicts(failed_only=True)] == [
        "box_unknown", "no_document", "postage_mismatch"]
    assert len(duties.postage.verdicts()) == 5


def test_a_citation_of_version_true_is_a_finding_not_a_stopped_audit(
        platform: tuple[StoreUnderTest, Documents]) -> None:
    """A tampered counter citing version ``true`` of a document: SQLite took
    it for version 1; PostgreSQL cannot compare it with its bigint, so the
    lookup failed, the pass stopped at that acceptance on every tick, and no
    acceptance after it was ever checked. It is a citation finding on both."""
    s, docs = platform
    good = accept(docs)
    ids = store(s, {**good, "tariff": {**good["tariff"], "version": True}},
                {**good, "catalogue": {**good["catalogue"], "version": True}}, good)
    duties = duties_of(s)
    duties.run_once()
    assert duties.failures == 0
    got = {v["event"]: (v["verdict"], v["detail"].get("why")) for v in duties.postage.verdicts("o1")}
    assert [got.get(i) for i in ids] == [("unknown_document", "citation")] * 2 + [("ok", None)]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Embedded, Documents]]:
    b = Embedded(tmp_path / "central")
    b.add_outlet("o1", "password-of-o1")
    docs = Documents(b)
    docs.publish("tariff", {"zones": ZONES, "services": RATES})
    docs.publish("box_catalogue", {"boxes": BOXES})
    try:
        yield b, docs
    finally:
        b.close()


def test_undecided_lists_each_event_until_its_duty_answers_it(embedded: tuple[Embedded, Documents]) -> None:
    """``Embedded.undecided``: what a once-only duty has left; a body that is
    not an object reads as ``{}``; a table name is never taken from data."""
    b, docs = embedded
    ids = store(StoreUnderTest("embedded", b, lambda: None), accept(docs), accept(docs))
    b.db.execute("CREATE TABLE verdicts_t (outlet TEXT, event TEXT)")
    assert [e for _, e, _ in b.undecided("counter.accept", "verdicts_t")] == ids
    b.db.execute("INSERT INTO verdicts_t VALUES ('o1', ?)", (ids[0],))
    left = b.undecided("counter.accept", "verdicts_t")
    assert [(o, e) for o, e, _ in left] == [("o1", ids[1])] and left[0][2]["clerk"] == "mei"
    assert b.undecided("locker.deposit", "verdicts_t") == []
    with pytest.raises(ValueError):
        b.undecided("counter.accept", "verdicts_t; DROP TABLE events")
