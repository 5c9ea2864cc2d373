"""Outbound dispatch on the handheld (寄件): a bag label and its items, the bag's pickup
as a manifest event, collection at a village point, and the hand-out of a group order's
shares (集订分送), each a custody event through the outbox to a real Mosquitto; bad
scans and requests refused with their reason and nothing recorded; the screen in
Chromium in both languages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.ports import free_port
from gateway.broker import Mosquitto
from handheld.app import HandheldApp
from handheld.text import Refused
from handheld.webui import serve
from protocol import codes, outbound_bodies
from protocol.outbound import make_bag
from tests.handheld.conftest import Gateway
from tests.handheld.test_handheld_app import make_config, of_type, signed

BAG, BAG2 = make_bag(20261203001), make_bag(20261203002)
SALT = "0a0b0c0d0e0f1011"
TOKEN = codes.new_token(lambda n: bytes(range(3, 3 + n)))
CJK = re.compile(r"[\u4e00-\u9fff]")


def manifest() -> dict[str, Any]:
    return {"round": "r-out-1", "parcels": [],
            "points": [{"point": "vp-xiakou", "name": "下口小卖部"},
                       {"point": "vp-shangpo", "name": "上坡村委"}],
            "groups": [{"group": "GO20261203-7", "point": "vp-xiakou", "shares": [
                {"to": "李伟", "qty": 2, "token_salt": SALT, "token_hash": codes.salted_hash(SALT, TOKEN)},
                {"to": "王芳", "qty": 1}]}]}


@pytest.fixture
def app(tmp_path: Path, hbroker: Mosquitto, gw: Gateway) -> Iterator[HandheldApp]:
    a = HandheldApp(make_config(tmp_path, hbroker.port), ui=serve)
    a.start()
    assert a.link.subscribed.wait(10)
    gw.command(signed("manifest", manifest(), cid="c-out-1"))
    assert gw.wait(lambda: a.dispatch.view()["groups"])
    try:
        yield a
    finally:
        a.stop()


def refused(fn: Any, *args: Any) -> Refused:
    with pytest.raises(Refused) as e:
        fn(*args)
    return e.value


def test_bag_pickup_is_one_manifest_event(app: HandheldApp, gw: Gateway) -> None:
    d = app.dispatch
    assert refused(d.bag_scan, "SO20261203-0042").code == "no_bag"
    bad = BAG[:-1] + str((int(BAG[-1]) + 1) % 10)
    r = app.scan(bad, mode="bag")
    assert r["code"] == "bad_bag" and r["verdict"] == "invalid" and "bag_check_digit" in r["en"]
    assert app.scan(BAG, mode="bag")["ok"]
    assert app.scan("SO20261203-0042", mode="bag")["ok"]
    assert app.scan("]C0RB123456785GB", mode="bag")["item"] == "RB123456785GB"  # AIM prefix dropped
    assert app.scan("]C09876543210128", mode="bag")["ok"]
    for text, code in (("RB123456785GB", "in_bag"), ("RB123456784GB", "not_item"),
                       ("4006381333931", "not_item"), ("so-lowercase", "not_item"), ("", "not_item"),
                       (BAG2, "bag_open")):
        r = app.scan(text, mode="bag")
        assert not r["ok"] and r["code"] == code, (text, r)
        assert r["zh"] and r["en"] and r["zh"] != r["en"]
    assert d.bag_remove("9876543210128")["ok"]
    assert refused(d.bag_remove, "9876543210128").code == "not_in_bag"
    # The open bag survives a restart of the app (dispatch.json).
    app2 = type(d)(app.state_dir, "c007", app.emit)
    assert app2.state["bag"]["items"] == ["SO20261203-0042", "RB123456785GB"]
    r = d.bag_pickup()
    assert r["ok"] and BAG in r["en"] and "2" in r["zh"]
    assert refused(d.bag_pickup).code == "no_bag"
    assert app.scan(BAG, mode="bag")["code"] == "bag_done"  # a bag is taken once
    assert app.scan(BAG2, mode="bag")["ok"]
    r = app.scan("RB123456785GB", mode="bag")  # already went out in the first bag
    assert r["code"] == "in_bag" and BAG in r["en"]
    assert refused(d.bag_pickup).code == "bag_empty"
    assert gw.wait(lambda: of_type(gw.events(), "handheld.bag_pickup"))
    [ev] = of_type(gw.events(), "handheld.bag_pickup")
    assert ev["cls"] == "custody"
    assert ev["body"] == {"bag": BAG, "items": ["SO20261203-0042", "RB123456785GB"], "courier": "c007"}
    outbound_bodies.check(ev["type"], ev["body"], "handheld")


def test_village_point_collection_and_group_handout(app: HandheldApp, gw: Gateway) -> None:
    d = app.dispatch
    assert app.scan("SO20261203-0050", mode="point")["code"] == "no_point"
    assert refused(d.set_point, "VP Xiakou").code == "bad_point"
    assert "下口小卖部" in d.set_point("vp-xiakou")["zh"]
    assert app.scan("SO20261203-0050", mode="point")["ok"]
    assert app.scan("]C0EA123456785CN", mode="point")["ok"]
    r = app.scan("SO20261203-0050", mode="point")
    assert r["code"] == "already_collected" and r["verdict"] == "duplicate"
    # Group order: share 1 by the villager's delivery token, share 2 by name.
    for args, code in ((("GO20261203-9", 1, "name", "x"), "no_group"),
                       (("GO20261203-7", 3, "name", "x"), "bad_share"),
                       (("GO20261203-7", "one", "name", "x"), "bad_share"),
                       (("GO20261203-7", 1, "token", "PE-H:0000-0000-0000-0000"), "wrong_token"),
                       (("GO20261203-7", 1, "token", "123456"), "not_a_token"),
                       (("GO20261203-7", 2, "token", codes.format_token(TOKEN)), "no_code_on_file"),
                       (("GO20261203-7", 2, "name", " "), "bad_name"),
                       (("GO20261203-7", 2, "shout", "x"), "bad_method")):
        assert refused(d.handout, *args).code == code, args
    r = d.handout("GO20261203-7", 1, "token", codes.format_token(TOKEN).lower())
    assert r["ok"] and "李伟" in r["zh"]
    assert refused(d.handout, "GO20261203-7", 1, "name", "李伟").code == "share_done"
    assert d.handout("GO20261203-7", 2, "name", "王芳")["ok"]
    # A new manifest keeps what was handed out.
    gw.command(signed("manifest", manifest(), cid="c-out-2"))
    assert gw.wait(lambda: any(a.get("id") == "c-out-2" for a in gw.acks()))
    assert all(s["done"] for s in d.view()["groups"][0]["shares"])
    want = {"handheld.point_collect": 2, "handheld.group_handout": 2}
    assert gw.wait(lambda: all(len(of_type(gw.events(), t)) == n for t, n in want.items()))
    evts = gw.events()
    pc = [e["body"] for e in of_type(evts, "handheld.point_collect")]
    assert pc == [{"point": "vp-xiakou", "item": "SO20261203-0050", "courier": "c007"},
                  {"point": "vp-xiakou", "item": "EA123456785CN", "courier": "c007"}]
    ho = [e["body"] for e in of_type(evts, "handheld.group_handout")]
    assert ho[0] == {"group": "GO20261203-7", "point": "vp-xiakou", "shares": 2, "share": 1, "qty": 2,
                     "confirm": "token", "courier": "c007"}
    assert ho[1]["confirm"] == "name" and ho[1]["name"] == "王芳" and ho[1]["share"] == 2
    for e in of_type(evts, "handheld.point_collect") + of_type(evts, "handheld.group_handout"):
        assert e["cls"] == "custody"
        outbound_bodies.check(e["type"], e["body"], "handheld")
    assert TOKEN not in json.dumps(evts)  # the token is checked, never recorded


def test_bad_manifests_are_refused_and_keep_the_old_one(app: HandheldApp, gw: Gateway) -> None:
    def group(gid: str, shares: list[Any]) -> dict[str, Any]:
        return {"groups": [{"group": gid, "point": "vp-x", "shares": shares}]}

    for i, bad in enumerate((group("go-1", [{"to": "a", "qty": 1}]), group("GO1-1", []),
                             group("GO1-1", [{"to": "a", "qty": 0}]), group("GO1-1", [{"qty": 1}]),
                             {"points": [{"point": "Not A Point"}]}, {"groups": "GO1-1"})):
        gw.command(signed("manifest", bad, cid=f"c-bad-{i}"))
    assert gw.wait(lambda: sum(1 for a in gw.acks() if str(a.get("id", "")).startswith("c-bad-")) == 6)
    acks = [a for a in gw.acks() if str(a.get("id", "")).startswith("c-bad-")]
    assert all(not a["ok"] and a["code"] == "bad_args" for a in acks), acks
    assert [g["group"] for g in app.dispatch.view()["groups"]] == ["GO20261203-7"]
    # A manifest whose parcels are fine but whose groups are not changes neither.
    before = app.flows.view()["parcels"]
    gw.command(signed("manifest", {"parcels": [{"parcel": "RB123456785GB", "to": "x"}],
                                   **group("GO1-1", [])}, cid="c-bad-mixed"))
    assert gw.wait(lambda: any(a.get("id") == "c-bad-mixed" for a in gw.acks()))
    assert app.flows.view()["parcels"] == before


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_outbound_screen_in_the_browser(lang: str, chromium: Any, app: HandheldApp, gw: Gateway) -> None:
    page = chromium.new_page(viewport={"width": 420, "height": 860})
    page.set_default_timeout(10_000)
    zh = lang == "zh"
    try:
        page.goto(app.web.url + ("?lang=en" if not zh else ""))
        page.click('[data-action=mode][data-mode="bag"]')
        page.wait_for_selector('[data-mode="bag"][aria-pressed="true"]')
        for text in (BAG, "SO20261203-0042", "RB123456785GB"):
            page.fill("#scan-form input", text)
            page.press("#scan-form input", "Enter")
            page.wait_for_function("t => document.getElementById('msg').textContent.includes(t)",
                                   arg=text)
            page.wait_for_timeout(350)  # past the different-symbol window
        page.click("#tab-dispatch")
        page.wait_for_selector("#bag-pickup")
        assert ("当前邮袋" if zh else "Open bag") in page.inner_text("#bag")
        assert bool(CJK.search(page.inner_text("#bag-pickup"))) == zh
        page.click("#bag-pickup")
        page.wait_for_selector(f'.bag-done[data-bag="{BAG}"]')
        assert page.get_attribute("#msg", "data-ok") == "1"
        # the village point, then share 2 of the group order handed out by name
        page.click('[data-action=set-point][data-point="vp-xiakou"]')
        page.wait_for_selector("#point-name")
        assert page.inner_text("#point-name") == "下口小卖部"
        page.fill('form.handout[data-share="2"] [name=name]', "王芳")
        page.click('form.handout[data-share="2"] button')
        page.wait_for_selector('.share.done[data-share="2"]')
        assert not app.web.refused, app.web.refused
    finally:
        page.close()
    assert gw.wait(lambda: of_type(gw.events(), "handheld.bag_pickup") and
                   of_type(gw.events(), "handheld.group_handout"))
    [ev] = of_type(gw.events(), "handheld.bag_pickup")
    assert ev["body"]["items"] == ["SO20261203-0042", "RB123456785GB"]


def test_dispatch_requests_without_a_broker_wait_in_the_outbox(tmp_path: Path) -> None:
    """The gateway out of reach: the pickup is recorded in the outbox, not lost."""
    a = HandheldApp(make_config(tmp_path, free_port())).start()
    try:
        held = a.outbox.count()
        a.scan(BAG, mode="bag")
        a.scan("SO20261203-0042", mode="bag")
        assert a.dispatch.bag_pickup()["ok"]
        assert a.outbox.count() == held + 1
    finally:
        a.stop()
