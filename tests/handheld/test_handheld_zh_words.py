"""No English words on the handheld's Chinese screens: every tab,
the delivery form with its refusal and its keypad, a job's detail, and the result area
after good, duplicate, invalid, wrong-route and refused scans, read from real headless
Chromium as the courier sees them (``inner_text``) and checked with the command line's
rule (tests/zh_words.py): a lower-case ASCII word (a reason code, a state, a label that
missed the catalogue) fails; ids, codes and units pass. Data the platform sent (names,
directions) is in Chinese here, so that what is left is the page's own text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware.locker.codes import salted_hash
from gateway.broker import Mosquitto
from protocol import codes
from protocol.outbound import make_bag
from simulator.imagegen import s10_id
from tests.handheld.conftest import Gateway
from tests.handheld.test_handheld_app import CAMPAIGN, signed
from tests.handheld.test_handheld_layout import started
from tests.zh_words import english_words

SALT = "0011223344556677"
SWITCH = {"English"}  # the language switch names the other language in that language


#: The words in attributes of what is shown inside a selector.
ATTRS = """sel => { var out=[]; document.querySelectorAll(sel + ', ' + sel + ' *').forEach(function(e){
  var r=e.getBoundingClientRect(); if(!r.width||!r.height)return;
  ['placeholder','title','aria-label'].forEach(function(a){var v=e.getAttribute(a); if(v){out.push(v);}});});
  return out;}"""


def scan(page: Any, code: str, verdict: str) -> None:
    """A scan through the page's field; ``verdict`` "*" takes whatever comes."""
    page.evaluate("document.getElementById('msg').removeAttribute('data-verdict')")
    page.fill("#scan-form input", code)
    page.press("#scan-form input", "Enter")
    page.wait_for_selector("#msg[data-verdict]" if verdict == "*" else f"#msg[data-verdict={verdict}]")


def jobs() -> dict[str, Any]:
    return {"round": "r-0501", "jobs": [
        {"id": "j-17", "kind": "install", "campaign": CAMPAIGN,
         "site": {"id": "s-03", "name": "下口广场", "lat_e7": 275000000, "lon_e7": 1099000000,
                  "directions": "卫生院后面"}},
        {"id": "j-18", "kind": "maintenance", "campaign": CAMPAIGN,
         "site": {"id": "s-04", "name": "上坡小卖部", "lat_e7": 275100000, "lon_e7": 1099100000,
                  "directions": "商店墙上"}}]}


def outbound() -> dict[str, Any]:
    return {"round": "r-out-1", "parcels": [],
            "points": [{"point": "vp-xiakou", "name": "下口小卖部"}],
            "groups": [{"group": "GO20261203-7", "point": "vp-xiakou", "shares": [
                {"to": "李伟", "qty": 2}, {"to": "王芳", "qty": 1}]}]}


@pytest.mark.slow
def test_every_handheld_screen_in_chinese_has_no_english_words(chromium: Any, tmp_path: Path,
                                                                hbroker: Mosquitto, gw: Gateway) -> None:
    rng = np.random.default_rng(19)
    parcel, other, gone = s10_id(rng), s10_id(rng), s10_id(rng)
    token = codes.new_token(lambda n: bytes(range(5, 5 + n)))
    app = started(tmp_path, hbroker.port, scan={"same_window_s": 3.0, "other_window_s": 0.0})
    ctx = chromium.new_context(viewport={"width": 360, "height": 640}, service_workers="block")
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    seen: dict[str, str] = {}

    def look(where: str, sel: str = "body") -> None:
        """What the courier reads there: the text, and the placeholders, titles and labels
        a screen reader or a long press shows."""
        seen[where] = page.inner_text(sel) + "\n" + "\n".join(page.evaluate(ATTRS, sel))

    try:
        assert app.link.subscribed.wait(10)
        gw.command(signed("manifest", {**outbound(), "retrieval": [], "parcels": [
            {"parcel": parcel, "to": "王芳", "token_salt": SALT, "token_hash": salted_hash(SALT, token)},
            {"parcel": other, "to": "李伟"}, {"parcel": gone, "to": "赵强"}]}, cid="c-man-zh"))
        gw.command(signed("jobs", jobs(), cid="c-jobs-zh"))
        assert gw.wait(lambda: len(app.flows.view()["parcels"]) == 3 and app.dispatch.view()["groups"]
                       and len(app.jobs.list()) == 2)
        page.goto(app.web.url)
        page.wait_for_selector("#link-pill[data-connected='1']")
        look("scan screen")
        scan(page, other, "good")
        look("a good scan", "#msg")
        scan(page, other, "duplicate")
        look("a duplicate", "#msg")
        scan(page, "RB123456784GB", "invalid")
        look("a bad check digit", "#msg")
        scan(page, "hello", "invalid")
        look("not a parcel id", "#msg")

        # delivery: the form, a refused code, the keypad, then delivered by name
        page.click("[data-action=mode][data-mode=deliver]")
        page.wait_for_selector(".mode.sel[data-mode=deliver]")
        scan(page, parcel, "good")
        page.wait_for_selector("#confirm")
        look("delivery form")
        page.fill("#confirm [name=code]", "123456")
        page.click("#confirm button[type=submit]")
        page.wait_for_selector("#confirm #confirm-error")
        look("a locker code in the delivery form")
        before = page.inner_text("#confirm-error")
        page.fill("#confirm [name=code]", "PE-H:0000-0000-0000-0000")
        page.click("#confirm button[type=submit]")
        page.wait_for_function("t => document.getElementById('confirm-error').innerText !== t", arg=before)
        look("a wrong code in the delivery form")
        page.click("[data-action=keypad-open]")
        look("keypad digits")
        page.click("#keypad .keys:visible [data-action=key-layer]")
        look("keypad letters")
        page.click("[data-action=keypad-close]")
        page.fill("#confirm [name=name]", "王芳")
        page.fill("#confirm [name=code]", "")
        page.click("#confirm button[type=submit]")
        page.wait_for_selector("#confirm", state="detached")
        look("delivered", "#msg")
        page.wait_for_timeout(3100)  # past the duplicate window
        scan(page, parcel, "*")
        look("delivered already", "#msg")
        if page.query_selector("#confirm"):  # the form again: its refusal says the parcel's state
            page.fill("#confirm [name=name]", "王芳")
            page.evaluate("document.getElementById('msg').removeAttribute('data-verdict')")
            page.click("#confirm button[type=submit]")
            page.wait_for_selector("#msg[data-verdict]")
            look("delivered already, confirmed again", "#msg")
            # the refusal may close the form in the render after the verdict: cancel it
            # if it is still there then, without racing that render for a click
            page.evaluate("document.querySelector('[data-action=cancel-confirm]')?.click()")
            page.wait_for_selector("#confirm", state="detached")
        for mode in ("intake", "deposit", "collect", "point", "bag"):
            page.click(f"[data-action=mode][data-mode={mode}]")
            page.wait_for_selector(f".mode.sel[data-mode={mode}]")
            look(f"mode {mode}", "#msg")
        scan(page, make_bag(20261203001), "*")
        look("a bag label", "#msg")
        page.wait_for_timeout(350)
        scan(page, gone, "*")
        look("a parcel into the bag", "#msg")

        for tab in ("parcels", "dispatch", "jobs", "camera", "sync"):
            page.click(f"#tab-{tab}")
            page.wait_for_function("s => document.querySelector('#scr-' + s + ' .live').innerHTML.length > 0",
                                   arg=tab)
            page.wait_for_timeout(300)
            look(f"tab {tab}")
            if tab == "jobs":
                page.click('[data-action=open-job][data-job="j-17"]')
                page.wait_for_selector("[data-action=pick]")
                look("a job")
                page.click("[data-action=pick]")
                page.wait_for_selector('[data-action=step][data-step="install_board"]')
                page.click('[data-action=step][data-step="install_board"]')
                page.wait_for_selector('.step.done[data-step="install_board"]')
                look("a job under way")
                page.click("[data-action=close-job]")
    finally:
        ctx.close()
        app.stop()
    bad = {where: english_words(text, SWITCH) for where, text in seen.items()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, "\n".join(f"{k}: {v}\n  {seen[k]!r}" for k, v in bad.items())
