"""Handover to a village point (村邮站) on the handheld:
inbound manifest parcels and a group order's open shares left at the chosen point,
confirmed at once by its agent, by the agent's code (salted hash in the manifest,
checked offline, never recorded) or by their name and a signature; the parcels are
"at point" afterwards and cannot be handed over or delivered again.

The app's own stores and flows (SQLite outbox, dispatch.json, parcels.json), not
started, for the rules; the real gateway process on Mosquitto for the events it
accepts and refuses, and for what waits in the outbox while it is away; Chromium for
the screen (tests/handheld/test_handheld_point_handover_browser.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from common.ports import free_port
from gateway.broker import Mosquitto
from gateway.store.events import EventStore
from gateway.store.photos import photo_path
from handheld import webui
from handheld.app import HandheldApp
from handheld.text import Refused
from protocol import canonical, codes, envelope, outbound_bodies
from simulator.outlet import stored_events
from tests.handheld.gateway_rig import RealGateway
from tests.handheld.test_handheld_app import make_config, signed
from tests.waiting import within

SALT = "1a2b3c4d5e6f7081"
AGENT_CODE = codes.new_token(lambda n: bytes(range(40, 40 + n)))
P1, P2, P3, P4 = "RB123456785GB", "EA123456785CN", "RR000000014CN", "CP000000102DE"
GROUP = "GO20261204-3"


def manifest(agent_hash: str | None = None) -> dict[str, Any]:
    """Two points: Xiakou's agent has a code on file, Shangpo's has none (signature)."""
    h = agent_hash or codes.salted_hash(SALT, AGENT_CODE)
    return {"round": "r-vp-1",
            "parcels": [{"parcel": P1, "to": "李伟", "point": "vp-xiakou"},
                        {"parcel": P2, "to": "王芳", "point": "vp-xiakou"},
                        {"parcel": P3, "to": "张强"},
                        {"parcel": P4, "to": "赵敏", "point": "vp-shangpo"}],
            "retrieval": [],
            "points": [{"point": "vp-xiakou", "name": "下口小卖部", "agent": "陈代办",
                        "agent_salt": SALT, "agent_hash": h},
                       {"point": "vp-shangpo", "name": "上坡村委"}],
            "groups": [{"group": GROUP, "point": "vp-xiakou", "shares": [
                {"to": "李伟", "qty": 2}, {"to": "王芳", "qty": 1}, {"to": "张强", "qty": 4}]}]}


def load(app: HandheldApp, args: dict[str, Any]) -> None:
    """What the app does with a verified manifest command (handheld/app.py)."""
    outbound = app.dispatch.parse_manifest(args)
    app.flows.load_manifest(args)
    app.dispatch.apply_manifest(outbound)


def png_url(img: np.ndarray) -> str:
    import base64

    ok, buf = cv2.imencode(".png", img)
    assert ok
    return "data:image/png;base64," + base64.b64encode(bytes(buf)).decode()


def signature() -> str:
    img = np.full((156, 336, 3), 255, np.uint8)
    cv2.polylines(img, [np.array([[30, 110], [80, 40], [130, 120], [190, 50], [300, 100]], np.int32)],
                  False, (0, 0, 0), 3, cv2.LINE_AA)
    return png_url(img)


def queued(app: HandheldApp, etype: str) -> list[dict[str, Any]]:
    """The events of ``etype`` waiting in the outbox, decoded."""
    evts = [envelope.decode(p) for _seq, _cls, _topic, p in app.outbox.pending(1000)]
    return [e for e in evts if e["type"] == etype]


def state(app: HandheldApp, pid: str) -> str:
    return next(p["state"] for p in app.flows.view()["parcels"] if p["parcel"] == pid)


def refused(fn: Any, *args: Any) -> Refused:
    with pytest.raises(Refused) as e:
        fn(*args)
    assert e.value.zh and e.value.en and e.value.zh != e.value.en
    return e.value


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[HandheldApp]:
    """The app's stores and flows, not started: no broker, no gateway."""
    app = HandheldApp(make_config(tmp_path, free_port()))
    load(app, manifest())
    try:
        yield app
    finally:
        app.stop()


def test_parcels_handed_to_the_point_with_the_agents_code(offline: HandheldApp) -> None:
    app, d = offline, offline.dispatch
    assert refused(d.handover_add, app.flows, P1).code == "no_point"
    d.set_point("vp-xiakou")
    # the manifest's parcels for this point are offered; P3 has no point but may be left here
    assert d.view(app.flows)["bound"] == [P1, P2]
    assert d.handover_add(app.flows, "]C0" + P1)["item"] == P1  # AIM prefix dropped
    assert d.handover_add(app.flows, P3)["ok"]
    assert d.view(app.flows)["bound"] == [P2]
    assert refused(d.handover_add, app.flows, P1).code == "in_handover"
    assert refused(d.handover_add, app.flows, "RB000000000GB").code in ("wrong_route", "invalid_scan")
    assert refused(d.handover_add, app.flows, "RR876543216CN").code == "wrong_route"  # not on the manifest
    assert d.handover_remove(P3)["ok"]
    assert refused(d.handover_remove, P3).code == "not_in_handover"
    assert d.handover_add(app.flows, P2)["ok"]
    # The agent has a code on file: a name and a signature do not do.
    assert refused(d.handover, app.flows, "signature", signature(), "陈代办").code == "agent_code_needed"
    assert refused(d.handover, app.flows, "token", "123456").code == "not_a_token"  # no try counted
    assert d.view(app.flows)["agent"] == {"name": "陈代办", "code": True, "left": 5}
    e = refused(d.handover, app.flows, "token", "PE-H:0000-0000-0000-0000")
    assert e.code == "wrong_agent_code" and "4" in e.zh and "4 tries" in e.en
    assert d.view(app.flows)["agent"]["left"] == 4
    assert not queued(app, "handheld.point_handover") and state(app, P1) == "on_route"
    r = d.handover(app.flows, "token", codes.format_token(AGENT_CODE).lower())
    assert r["ok"] and "陈代办" in r["zh"] and "下口小卖部" in r["zh"]
    [ev] = queued(app, "handheld.point_handover")
    assert ev["cls"] == "custody"
    assert ev["body"] == {"point": "vp-xiakou", "items": [P1, P2], "agent": "陈代办", "confirm": "token",
                          "courier": "c007"}
    outbound_bodies.check(ev["type"], ev["body"], "handheld")
    # the code is checked, never recorded
    assert AGENT_CODE not in json.dumps(ev)
    assert AGENT_CODE not in (app.state_dir / "dispatch.json").read_text()
    # at the point now: off the list, never handed over or delivered a second time
    assert state(app, P1) == state(app, P2) == "at_point"
    assert d.view(app.flows)["bound"] == [] and d.view(app.flows)["agent"]["left"] == 5
    assert refused(d.handover_add, app.flows, P1).code == "already_done"
    assert refused(d.handover, app.flows, "token", codes.format_token(AGENT_CODE)).code == "handover_empty"
    assert refused(app.flows.hand_delivery, P2, "name", "王芳").code == "already_done"
    # nor put in a locker (read past the scan filter's window for a second symbol)
    e = refused(app.flows.deposit, P1, "manual", time.monotonic() + 5)
    assert e.code == "already_done" and "已交村邮站" in e.zh
    assert webui.part_parcels(app, "zh").count("已交村邮站") == 2
    # survives a restart of the app
    again = HandheldApp(make_config(app.state_dir.parent, free_port()))
    try:
        assert state(again, P1) == "at_point"
        assert again.dispatch.view(again.flows)["handed"][0]["items"] == [P1, P2]
    finally:
        again.stop()


def test_wrong_agent_codes_lock_the_point_until_a_new_code(offline: HandheldApp) -> None:
    app, d = offline, offline.dispatch
    d.set_point("vp-xiakou")
    d.handover_add(app.flows, P1)
    lefts = []
    for _ in range(4):
        lefts.append(refused(d.handover, app.flows, "token", "PE-H:0000-0000-0000-0000").kw["left"])
    assert lefts == [4, 3, 2, 1]
    assert refused(d.handover, app.flows, "token", "PE-H:0000-0000-0000-0000").code == "agent_locked"
    # locked: even the right code is refused now (5 guesses at 80 bits, then no more)
    assert refused(d.handover, app.flows, "token", codes.format_token(AGENT_CODE)).code == "agent_locked"
    load(app, manifest())  # the same code again: still locked
    assert refused(d.handover, app.flows, "token", codes.format_token(AGENT_CODE)).code == "agent_locked"
    new_code = codes.new_token(lambda n: bytes(range(90, 90 + n)))
    load(app, manifest(codes.salted_hash(SALT, new_code)))  # the platform sends a new code
    assert d.view(app.flows)["handover"]["items"] == [P1]  # the list waited
    assert d.handover(app.flows, "token", codes.format_token(new_code))["ok"]
    assert state(app, P1) == "at_point" and not queued(app, "handheld.hand_delivery")


def test_bulk_handover_of_a_group_order_and_a_signature_without_a_code(offline: HandheldApp) -> None:
    app, d = offline, offline.dispatch
    d.set_point("vp-xiakou")
    assert d.handout(GROUP, 1, "name", "李伟")["ok"]  # share 1 to its villager first
    r = d.handover_group(GROUP)
    assert r["ok"] and "2" in r["en"]
    assert d.handover(app.flows, "token", codes.format_token(AGENT_CODE))["ok"]
    [ev] = queued(app, "handheld.group_handover")
    assert ev["body"] == {"group": GROUP, "point": "vp-xiakou", "shares": 3, "handed": [2, 3], "qty": 5,
                          "agent": "陈代办", "confirm": "token", "courier": "c007"}
    assert not queued(app, "handheld.point_handover")  # no parcels were on the list
    shares = d.view(app.flows)["groups"][0]["shares"]
    assert [(s["done"], s["at_point"]) for s in shares] == [(True, False), (False, True), (False, True)]
    e = refused(d.handout, GROUP, 2, "name", "王芳")
    assert e.code == "share_at_point" and "下口小卖部" in e.zh
    assert refused(d.handover_group, GROUP).code == "group_done"
    assert 'class="at-point"' in webui.part_dispatch(app, "en")
    # A new manifest keeps the shares with the point.
    load(app, manifest())
    assert [s["at_point"] for s in d.view(app.flows)["groups"][0]["shares"]] == [False, True, True]
    # Shangpo has no agent code: their name and a signature on the pad.
    d.set_point("vp-shangpo")
    assert refused(d.handover_group, GROUP).code == "group_elsewhere"
    d.handover_add(app.flows, P4)
    blank = png_url(np.zeros((160, 340, 4), np.uint8))
    for args, code in ((("token", codes.format_token(AGENT_CODE)), "no_agent_code"),
                       (("signature", signature(), " "), "bad_name"),
                       (("signature", blank, "赵敏"), "agent_sign_empty"),
                       (("signature", "data:image/png;base64,AAAA", "赵敏"), "bad_signature"),
                       (("nod", "", "赵敏"), "bad_method")):
        assert refused(d.handover, app.flows, *args).code == code, args
    assert state(app, P4) == "on_route"
    assert d.handover(app.flows, "signature", signature(), "  村委刘会计 ")["ok"]
    [ev] = queued(app, "handheld.point_handover")
    b = ev["body"]
    assert b["agent"] == "村委刘会计" and b["confirm"] == "signature" and b["items"] == [P4]
    sig = app.state_dir / "signatures" / f"{b['signature_sha256']}.jpg"
    assert sig.read_bytes().startswith(b"\xff\xd8\xff")
    # queued for upload like a delivery's signature, with the event that names it
    [(path, meta)] = app.photos.db.execute("SELECT path, meta FROM photos").fetchall()
    assert path == str(sig) and json.loads(meta)["event_id"] == ev["id"]
    assert json.loads(meta)["point"] == "vp-shangpo" and json.loads(meta)["kind"] == "signature"


def test_a_delivered_parcel_cannot_be_handed_over_after_it_was_listed(offline: HandheldApp) -> None:
    app, d = offline, offline.dispatch
    d.set_point("vp-xiakou")
    d.handover_add(app.flows, P1)
    assert app.flows.hand_delivery(P1, "name", "李伟")["ok"]  # the villager met the courier first
    e = refused(d.handover, app.flows, "token", codes.format_token(AGENT_CODE))
    assert e.code == "already_done" and P1 in e.en
    assert not queued(app, "handheld.point_handover")
    assert d.view(app.flows)["agent"]["left"] == 5  # said before the agent typed anything


@pytest.mark.parametrize("point, why", [
    ({"point": "vp-x", "agent_salt": SALT}, "together"),
    ({"point": "vp-x", "agent_hash": "ab" * 32}, "together"),
    ({"point": "vp-x", "agent_salt": "xyz1", "agent_hash": "ab" * 32}, "hex"),
    ({"point": "vp-x", "agent_salt": SALT, "agent_hash": "AB" * 32}, "hex"),
    ({"point": "vp-x", "agent_salt": SALT, "agent_hash": "ab" * 31}, "hex"),
    ({"point": "vp-x", "agent": "x" * 41}, "agent"),
    ({"point": "vp-x", "agent": 7}, "agent"),
])
def test_a_malformed_manifest_point_is_refused_and_changes_nothing(
        offline: HandheldApp, point: dict[str, Any], why: str) -> None:
    before = offline.dispatch.view()
    with pytest.raises(ValueError, match=why):
        offline.dispatch.parse_manifest({"points": [point]})
    # as the platform's signed command: refused whole, the parcels too
    bad = dict(manifest(), parcels=[{"parcel": P1, "to": "x"}], points=[point])
    assert offline.handle_command(canonical.dumps(signed("manifest", bad, cid="c-bad-pt"))) == "bad_args"
    assert offline.dispatch.view() == before and len(offline.flows.view()["parcels"]) == 4


# ---------------------------------------------------------------- the real gateway

@pytest.fixture
def rig(tmp_path: Path, broker: Mosquitto) -> Iterator[tuple[RealGateway, HandheldApp]]:
    with RealGateway(tmp_path / "gw", broker) as gw:
        app = HandheldApp(make_config(tmp_path, broker.port, gateway_url=gw.url)).start()
        try:
            assert app.link.subscribed.wait(10), app.link.last_error
            assert app.handle_command(canonical.dumps(signed("manifest", manifest(), cid="c-vp-1"))) == "ok"
            yield gw, app
        finally:
            app.stop()


def of(gw: RealGateway, etype: str) -> list[dict[str, Any]]:
    return [e["body"] for e in stored_events(gw.db) if e["type"] == etype]


def rejected(gw: RealGateway) -> list[dict[str, Any]]:
    s = EventStore(gw.db)
    try:
        return s.rejected()
    finally:
        s.close()


@pytest.mark.slow
def test_the_gateway_stores_the_handovers_and_refuses_a_malformed_one(
        rig: tuple[RealGateway, HandheldApp]) -> None:
    gw, app = rig
    d = app.dispatch
    d.set_point("vp-xiakou")
    d.handover_add(app.flows, P1)
    d.handover_group(GROUP)
    assert d.handover(app.flows, "token", codes.format_token(AGENT_CODE))["ok"]
    assert within(lambda: of(gw, "handheld.point_handover") and of(gw, "handheld.group_handover"))
    assert of(gw, "handheld.point_handover")[0]["items"] == [P1]
    assert of(gw, "handheld.group_handover")[0]["handed"] == [1, 2, 3]
    # A malformed body (as a faulty handheld would send it) is refused at the gateway.
    app.emit("handheld.point_handover", "custody", {"point": "vp-xiakou", "items": [P2, P2], "agent": "x",
                                                    "confirm": "token", "courier": "c007"})
    app.emit("handheld.point_handover", "custody", {"point": "vp-xiakou", "items": [P2], "agent": "x",
                                                    "confirm": "signature", "courier": "c007"})
    assert within(lambda: len(rejected(gw)) >= 2), rejected(gw)
    assert {r["code"] for r in rejected(gw)} <= {"bad_field", "missing_field"}, rejected(gw)
    assert len(of(gw, "handheld.point_handover")) == 1


@pytest.mark.slow
def test_a_handover_while_the_gateway_is_away_arrives_when_it_returns(
        rig: tuple[RealGateway, HandheldApp]) -> None:
    """The outlet box is off when the agent signs: the event waits in the outbox and the
    signature in the upload queue; both arrive once the gateway is back."""
    gw, app = rig
    gw.kill()
    d = app.dispatch
    d.set_point("vp-shangpo")
    d.handover_add(app.flows, P4)
    assert d.handover(app.flows, "signature", signature(), "村委刘会计")["ok"]
    assert within(lambda: (app.photos.status()["queue"] or {}).get("error") is not None, 15)
    assert app.outbox.count() >= 1 and not of(gw, "handheld.point_handover")
    gw.restart()
    assert within(lambda: len(of(gw, "handheld.point_handover")) == 1, 30), "never arrived"
    body = of(gw, "handheld.point_handover")[0]
    assert body["items"] == [P4] and body["confirm"] == "signature"
    assert within(lambda: photo_path(gw.db, body["signature_sha256"]).exists(), 60), app.photos.status()


def test_a_scan_at_the_point_leaves_own_parcels_and_collects_the_rest(offline: HandheldApp) -> None:
    """The scan field and the engine in the village point use: a parcel of the courier's
    manifest goes on the handover list; a send order or a parcel the point gives the
    courier is collected from it, as before."""
    app = offline
    app.dispatch.set_point("vp-xiakou")
    r = app.scan("]C0" + P1, mode="point")
    assert r["ok"] and r["item"] == P1, r
    assert app.dispatch.view(app.flows)["handover"]["items"] == [P1]
    assert not queued(app, "handheld.point_collect")
    assert app.scan("SO20261203-0050", mode="point")["ok"]
    assert app.scan("RR876543216CN", mode="point")["ok"]  # not on the manifest: the point's outbound
    assert [e["body"]["item"] for e in queued(app, "handheld.point_collect")] == [
        "SO20261203-0050", "RR876543216CN"]
    assert app.dispatch.view(app.flows)["handover"]["items"] == [P1]


def test_confirming_deliveries_back_to_back_is_not_a_double_read(offline: HandheldApp) -> None:
    """The different-symbol window catches a second label read by one trigger pull; a
    delivery confirmed in a form right after another is no such read and goes through,
    and its scan event names where the parcel was read, not the form."""
    app = offline
    t0 = time.monotonic()
    reads = [app.scan(pid, mode="deliver", source="wedge", at=t0 - 10 + 2 * i)
             for i, pid in enumerate((P1, P3))]
    assert all(r["ok"] and r["confirm"] and r["source"] == "wedge" for r in reads), reads
    for pid in (P1, P3):  # both confirmed within the different-symbol window of each other
        assert app.flows.hand_delivery(pid, "name", "王芳", source="wedge")["ok"]
    scans = [e["body"] for e in queued(app, "handheld.scan")]
    assert [(b["code"], b["source"]) for b in scans] == [(P1, "wedge"), (P3, "wedge")]
