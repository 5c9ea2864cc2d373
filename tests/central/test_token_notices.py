"""Delivery tokens texted to villagers (``central/manifests.py`` queues,
``central/notices.py`` sends) through the HTTP SMS provider double: one text
per parcel in the villager's language, with the very token the handheld's
manifest checks; retried and re-issued without a second, different token; a
parcel with no number reported, and sent once its number comes. What the
store alone does runs on both backends (``duty_store``); manifests are the
embedded backend's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.embedded import Embedded
from central.keys import KeyService
from central.manifests import Manifests
from central.notices import HttpSms, Notices, add_contact, queue_tokens, token_states, without_number
from common.ports import free_port
from handheld.app import HandheldApp
from protocol import canonical, codes
from simulator.platform_keys import MASTER
from tests.central.conftest import StoreUnderTest
from tests.central.test_notices import Provider
from tests.handheld.test_handheld_app import DEV, OUTLET, make_config

P1, P2, P3, P4 = "RB123456785GB", "EA123456785CN", "RR000000014CN", "RB000000116CN"
TOKEN_RE = re.compile(r"PE-H:[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}")


@pytest.fixture
def sms() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.srv.stop()


@pytest.fixture
def rig(tmp_path: Path, sms: Provider) -> Iterator[tuple[Embedded, Manifests, Notices]]:
    b = Embedded(tmp_path / "central")
    b.add_outlet(OUTLET, "password-of-the-outlet")
    b.add_device(OUTLET, DEV, "handheld")
    try:
        yield b, Manifests(b, MASTER), Notices(b, MASTER, HttpSms(sms.url, "tok"), set)
    finally:
        b.close()


def texts_to(provider: Provider, phone: str) -> list[str]:
    return [t["text"] for t in provider.texts.values() if t["to"] == phone]


def test_each_villager_gets_their_token_once_in_their_language_and_it_opens_the_handover(
        rig: tuple[Embedded, Manifests, Notices], sms: Provider, tmp_path: Path) -> None:
    b, rounds, notices = rig
    add_contact(b, OUTLET, P1, "13800000001", "zh")
    add_contact(b, OUTLET, P2, "13800000002", "en")
    add_contact(b, OUTLET, P3, "13800000003", "zh")
    rounds.add_point(OUTLET, "vp-xiakou", "下口小卖部")
    cmd, tokens = rounds.issue(OUTLET, DEV, "r-1204", [
        {"parcel": P1, "to": "王芳"}, {"parcel": P2, "to": "Li Wei"},
        {"parcel": P3, "to": "张强", "token": False}, {"parcel": P4, "to": "赵六"}])
    assert set(tokens) == {P1, P2, P4}
    assert notices.run_once() == 2
    [zh] = texts_to(sms, "13800000001")
    [en] = texts_to(sms, "13800000002")
    assert "投递码" in zh and tokens[P1] in zh and P1[-6:] in zh
    assert "delivery code" in en and tokens[P2] in en
    assert texts_to(sms, "13800000003") == []  # no token, no text
    # the parcel with no number is reported, not skipped silently
    assert token_states(b, OUTLET) == {P1: "sent", P2: "sent", P4: "no_contact"}
    # what the villager reads is what the real handheld checks offline
    hh = HandheldApp(make_config(tmp_path / "hh", free_port()))
    try:
        assert hh.handle_command(canonical.dumps(cmd)) == "ok"
        assert hh.flows.hand_delivery(P1, "code", TOKEN_RE.search(zh).group(0))["ok"]  # type: ignore[union-attr]
        assert hh.flows.hand_delivery(P2, "code", TOKEN_RE.search(en).group(0))["ok"]  # type: ignore[union-attr]
    finally:
        hh.stop()
    # nothing secret in the platform's tables
    dump = "\n".join(str(r) for t in ("notices", "token_notices", "manifests") for r in b.db.execute(
        f"SELECT * FROM {t}"))
    for token in tokens.values():
        assert token not in dump and token.removeprefix("PE-H:").replace("-", "") not in dump


def test_a_retry_or_a_round_issued_again_never_texts_a_second_token(
        rig: tuple[Embedded, Manifests, Notices], sms: Provider) -> None:
    b, rounds, notices = rig
    add_contact(b, OUTLET, P1, "13800000001")
    add_contact(b, OUTLET, P2, "bad-number")
    _, first = rounds.issue(OUTLET, DEV, "r-1", [{"parcel": P1, "to": "王芳"}, {"parcel": P2, "to": "李伟"}])
    sms.fail = [503, 400]  # P1: the provider is down; P2: refused for good
    assert notices.run_once() == 0
    assert token_states(b, OUTLET) == {P1: "retry", P2: "failed"}
    # the round is issued again (a changed list) before the retry, then P1 moves to the next round
    _, again = rounds.issue(OUTLET, DEV, "r-1", [{"parcel": P1, "to": "王芳"}, {"parcel": P2, "to": "李伟"}])
    _, later = rounds.issue(OUTLET, DEV, "r-2", [{"parcel": P1, "to": "王芳"}])
    assert again == first and later[P1] == first[P1]
    assert notices.run_once() == 1
    assert notices.run_once() == 0
    [text] = texts_to(sms, "13800000001")
    assert TOKEN_RE.findall(text) == [first[P1]]
    assert sms.calls == 3 and len(sms.texts) == 1
    assert token_states(b, OUTLET) == {P1: "sent", P2: "failed"}


def test_a_number_imported_after_the_manifest_still_gets_the_token(
        rig: tuple[Embedded, Manifests, Notices], sms: Provider) -> None:
    b, rounds, notices = rig
    _, tokens = rounds.issue(OUTLET, DEV, "r-1", [{"parcel": P1, "to": "王芳"}])
    assert notices.run_once() == 0 and notices.run_once() == 0
    assert sms.calls == 0 and token_states(b, OUTLET) == {P1: "no_contact"}
    add_contact(b, OUTLET, P1, "13800000001", "en")
    assert notices.run_once() == 1
    [text] = texts_to(sms, "13800000001")
    assert tokens[P1] in text and "delivery code" in text


def test_tokens_are_per_outlet_and_parcel(tmp_path: Path) -> None:
    """Two outlets' same parcel id, or two parcels, never share a token."""
    a, b = KeyService("o1", MASTER), KeyService("o2", MASTER)
    assert a.delivery_token(P1) == KeyService("o1", MASTER).delivery_token(P1)
    assert len({a.delivery_token(P1), a.delivery_token(P2), b.delivery_token(P1)}) == 3


@pytest.mark.slow
def test_the_manifest_command_reports_the_parcels_it_cannot_text(tmp_path: Path,
                                                                 sms: Provider) -> None:
    """With an SMS provider set up, ``central manifest`` prints no token it will text, and
    names (with its token, for the operator to pass on) each parcel that has no number."""
    from central.keys import load_master
    from tests.central.cli_rig import pe

    d = tmp_path / "central"
    pe("init", str(d), "--host", "127.0.0.1")
    (d / "sms.token").write_text("tok\n")
    with (d / "central.toml").open("a") as f:
        f.write(f'sms_url = "{sms.url}"\nsms_token_file = "sms.token"\n')
    pe("outlet", "add", str(d), "o1")
    pe("device", "add", str(d), "o1", "hh01", "--kind", "handheld")
    (tmp_path / "contacts.csv").write_text(f"{P1},13800000001,en\n")
    pe("contacts", "import", str(d), "o1", str(tmp_path / "contacts.csv"))
    round_file = tmp_path / "round.json"
    round_file.write_text(json.dumps([{"parcel": P1, "to": "王芳"}, {"parcel": P2, "to": "李伟"}]))
    r = pe("manifest", str(d), "o1", "hh01", "r-1", str(round_file))
    assert "codes of 1 recipients will be texted" in r.stdout
    assert "1 parcels have no recipient's number" in r.stderr
    [line] = [ln for ln in r.stdout.splitlines() if "PE-H:" in ln]
    assert line.split()[0] == P2
    b = Embedded(d / "data")
    try:
        assert Notices(b, load_master(d / "master.key"), HttpSms(sms.url, "tok"), set).run_once() == 1
        assert token_states(b, "o1") == {P1: "sent", P2: "no_contact"}
    finally:
        b.close()
    lines = pe("tokens", str(d), "o1").stdout.splitlines()
    assert lines == [f"{P2}  no number: texted once it is imported", f"{P1}  texted"]


def test_a_gateways_route_cannot_ask_for_a_token_text(duty_store: StoreUnderTest, sms: Provider) -> None:
    """Token texts are the platform's own (a manifest it issued): a ``notify.route``
    naming purpose ``token`` and a parcel sends nothing and marks nothing."""
    from protocol import envelope
    from protocol.ids import format_event_id

    add_contact(duty_store.b, OUTLET, P1, "13800000001")
    eid = format_event_id("gw-o1-sms", "0000aaaa", 1)
    body = {"event": P1, "parcel": P1, "purpose": "token", "by": "platform"}
    duty_store.store(OUTLET, (eid, envelope.encode(envelope.make(
        eid, 1795881200, "notify.route", "status", body, boot=1))))
    n = Notices(duty_store.b, MASTER, HttpSms(sms.url, "tok"), lambda: {OUTLET})
    plain = Notices(duty_store.b, MASTER, HttpSms(sms.url, "tok"), set)
    assert n.run_once() == 0 and plain.run_once() == 0 and sms.calls == 0
    assert duty_store.b.rows("notices", {}) == []


def test_queued_tokens_wait_for_a_number_and_are_texted_once_on_either_backend(
        duty_store: StoreUnderTest, sms: Provider) -> None:
    """What a manifest queues (``queue_tokens``), on the store alone: a parcel
    with no number is reported and looked at again each pass; once its number
    is imported its token goes, retried after a 503 with no second text, and
    queued again by a round issued again, nothing more is sent."""
    b = duty_store.b
    notices = Notices(b, MASTER, HttpSms(sms.url, "tok"), set)
    add_contact(b, OUTLET, P2, "13800000002", "en")
    assert queue_tokens(b, OUTLET, DEV, "r-1", [P1, P2]) == [P1]
    sms.fail = [503]
    assert notices.run_once() == 0 and notices.run_once() == 1
    assert token_states(b, OUTLET) == {P1: "no_contact", P2: "sent"}
    add_contact(b, OUTLET, P1, "13800000001")
    assert without_number(b, OUTLET, [P1, P2]) == []
    assert notices.run_once() == 1
    assert queue_tokens(b, OUTLET, DEV, "r-2", [P1, P2]) == []  # the round issued again
    assert notices.run_once() == 0
    assert token_states(b, OUTLET) == {P1: "sent", P2: "sent"}
    assert sms.calls == 3 and len(sms.texts) == 2
    derived = KeyService(OUTLET, MASTER)
    for parcel, phone in ((P1, "13800000001"), (P2, "13800000002")):
        [text] = texts_to(sms, phone)
        assert TOKEN_RE.findall(text) == [codes.format_token(derived.delivery_token(parcel))]
