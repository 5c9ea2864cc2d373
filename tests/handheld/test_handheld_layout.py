"""The handheld's page for one hand and gloves and as an
installable app, in real headless Chromium at the two phone sizes couriers
carry (360×640, 390×844), in Chinese and in English.

Layout is checked from the browser's own geometry and computed styles, not from
screenshots: nothing important below the fold (behind the tab bar) on the scan screen
and in the delivery confirmation, no horizontal overflow and no label wider than its
button, a one-line header, every tap target at least 44 px and 12 px from the next,
and text and input borders at 7:1 or more (WCAG 2 relative luminance, below). Then the
one result area (replaced by each scan, the same place every time, a sound and a
vibration per kind of result, a thumbnail after a photo, "9 号格口已开" once the locker
answers), the red banner when the app stops answering, and the service worker serving
the page with the app stopped.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from common.ports import free_port
from firmware.locker.codes import salted_hash
from gateway.broker import Mosquitto
from handheld.app import HandheldApp
from handheld.webui import serve
from protocol import codes
from simulator.imagegen import board_with_qr, s10_id
from tests.handheld.conftest import DEV, Gateway
from tests.handheld.test_handheld_app import (
    CAMPAIGN,
    PLATFORM,
    FakeGatewayApi,
    gnss_ready,
    jobs_args,
    make_config,
    signed,
)
from tests.page_checks import COLOUR_JS, MIN_CONTRAST

VIEWPORTS = [(360, 640), (390, 844)]
LANGS = ["zh", "en"]
MIN_TARGET = 44
MIN_GAP = 12
MIN_KEY = 48  # the keypad's keys, for gloves

#: Measures the page: run in the browser, returns lists of what is wrong (empty = fine).
#: Contrast is WCAG 2's, with the colour helpers of tests/page_checks.py.
MEASURE = """(arg) => {
var root=arg.scope?document.querySelector(arg.scope):document.body, TAP=arg.tap;
""" + COLOUR_JS + """
var W=innerWidth, H=innerHeight, nav=document.querySelector('nav'),
  navTop=shown(nav)?nav.getBoundingClientRect().top:H;
var out={contrast:[],overflow:[],targets:[],gaps:[],n_text:0,n_inputs:0,n_targets:0};
var all=root.querySelectorAll('*');
for(var i=0;i<all.length;i++){var el=all[i];
  if(!shown(el)||el.closest('video,#preview,#thumb'))continue;
  var cs=getComputedStyle(el), r=el.getBoundingClientRect();
  if(r.right>W+0.5||r.left<-0.5){out.overflow.push(name(el)+' x '+r.left+'..'+r.right);}
  if((el.classList.contains('btn')||el.tagName==='INPUT')&&el.scrollWidth>el.clientWidth+1){
    out.overflow.push(name(el)+' content '+el.scrollWidth+' > '+el.clientWidth);}
  var own=Array.prototype.some.call(el.childNodes,function(n){return n.nodeType===3&&n.textContent.trim();});
  var bg=behind(el);
  if(own){out.n_text++; var fg=over(parse(cs.color),bg), k=ratio(fg,bg);
    if(k<%(min)s){out.contrast.push(name(el)+' text '+k.toFixed(2));}}
  if(el.tagName==='INPUT'&&el.type!=='file'){out.n_inputs++;
    var k2=ratio(over(parse(cs.borderTopColor),behind(el.parentElement)),behind(el.parentElement));
    if(k2<%(min)s){out.contrast.push(name(el)+' border '+k2.toFixed(2));}
    var ph=getComputedStyle(el,'::placeholder').color, k3=ratio(over(parse(ph),bg),bg);
    if(el.placeholder&&k3<%(min)s){out.contrast.push(name(el)+' placeholder '+k3.toFixed(2));}}
}
var t=Array.prototype.filter.call(root.querySelectorAll(
  'button,a.btn,label.btn,input:not([type=file]),select,textarea'),function(el){
  if(!shown(el))return false; var r=el.getBoundingClientRect();
  return (el.closest('nav')&&r.bottom<=H)||r.bottom<=navTop;});
out.n_targets=t.length;
var R=t.map(function(el){return el.getBoundingClientRect();});
for(var a=0;a<t.length;a++){
  if(R[a].height<TAP||R[a].width<TAP){out.targets.push(name(t[a])+' '+R[a].width+'x'+R[a].height);}
  for(var b=a+1;b<t.length;b++){
    if(t[a].contains(t[b])||t[b].contains(t[a]))continue;
    var dx=Math.max(0,R[b].left-R[a].right,R[a].left-R[b].right),
        dy=Math.max(0,R[b].top-R[a].bottom,R[a].top-R[b].bottom);
    if(Math.max(dx,dy)<%(gap)s-0.5){out.gaps.push(name(t[a])+' / '+name(t[b])+' '+dx+','+dy);}}}
out.scroll_width=document.documentElement.scrollWidth; out.width=W;
return out;}""".replace("%(min)s", str(MIN_CONTRAST)).replace("%(gap)s", str(MIN_GAP))

#: Bottom edges that must be above the tab bar (and the tab bar on the screen).
FOLD = """sels => { var nav=document.querySelector('nav').getBoundingClientRect(), out=[];
  if(nav.bottom>innerHeight+0.5){out.push('nav '+nav.bottom+' > '+innerHeight);}
  sels.forEach(function(s){var els=document.querySelectorAll(s);
    if(!els.length){out.push(s+' missing');}
    els.forEach(function(e){var r=e.getBoundingClientRect();
      if(r.height===0||r.bottom>nav.top+0.5){out.push(s+' bottom '+r.bottom+' > '+nav.top);}});});
  return out;}"""

#: The header on one line and its title whole (no wrap, no ellipsis).
HEADER = """() => { var h=document.querySelector('header'), t=document.querySelector('header h1'),
  lh=parseFloat(getComputedStyle(t).lineHeight)||parseFloat(getComputedStyle(t).fontSize)*1.4;
  var kids=Array.prototype.map.call(h.children,function(c){return c.getBoundingClientRect();})
    .filter(function(r){return r.height>0;});
  var top=Math.min.apply(null,kids.map(function(r){return r.top;})),
      bottom=Math.min.apply(null,kids.map(function(r){return r.bottom;}));
  return {height:h.getBoundingClientRect().height, title_lines:t.getBoundingClientRect().height/lh,
          title_cut:t.scrollWidth>t.clientWidth, one_row:kids.every(function(r){return r.top<bottom;}),
          text:t.textContent};}"""

#: The keypad step: every part of it inside the screen (no scrolling), the page behind
#: it out of the way. Returns what sticks out and how many keys are shown.
KEYPAD_FIT = """() => { var out=[], H=innerHeight, W=innerWidth, k=document.getElementById('keypad');
  var m=document.querySelector('main');
  if(m.scrollHeight>m.clientHeight+1){out.push('main scrolls '+m.scrollHeight+' > '+m.clientHeight);}
  k.querySelectorAll('*').forEach(function(e){var r=e.getBoundingClientRect();
    if(r.height>0&&(r.bottom>H+0.5||r.top<-0.5||r.right>W+0.5||r.left<-0.5)){
      out.push((e.getAttribute('data-key')||e.id||e.className)+' '+r.top+'..'+r.bottom);}});
  ['header','#bar','nav'].forEach(function(s){if(document.querySelector(s).getBoundingClientRect().height>0){
    out.push(s+' still shown');}});
  var keys=Array.prototype.filter.call(k.querySelectorAll('.key'),function(e){
    return e.getBoundingClientRect().height>0;});
  return {out:out, keys:keys.length};}"""

#: Records what the page asks of the vibration motor and the speaker.
CUE_PROBE = """window.__vib=[]; window.__tones=[];
navigator.vibrate=function(p){window.__vib.push(Array.isArray(p)?p:[p]);return true;};
(function(){var AC=window.AudioContext; if(!AC)return;
  var make=AC.prototype.createOscillator;
  AC.prototype.createOscillator=function(){var o=make.call(this), start=o.start.bind(o);
    o.start=function(w){window.__tones.push(o.frequency.value);return start(w);}; return o;};})();"""


def measure(page: Any, where: str, scope: str = "", tap: int = MIN_TARGET) -> dict[str, Any]:
    """Everything in ``scope`` (a selector; the whole page by default) measured; tap targets
    at least ``tap`` px."""
    m: dict[str, Any] = page.evaluate(MEASURE, {"scope": scope, "tap": tap})
    assert m["scroll_width"] <= m["width"], (where, m["scroll_width"], m["width"])
    assert not m["overflow"], (where, m["overflow"])
    assert not m["contrast"], (where, m["contrast"])
    assert not m["targets"], (where, m["targets"])
    assert not m["gaps"], (where, m["gaps"])
    assert m["n_text"] > 5 and m["n_inputs"] >= 1 and m["n_targets"] > 5, m  # it measured something
    return m


def above_fold(page: Any, where: str, *sels: str) -> None:
    bad = page.evaluate(FOLD, list(sels))
    assert not bad, (where, bad)


@pytest.fixture
def api() -> Iterator[FakeGatewayApi]:
    a = FakeGatewayApi()
    try:
        yield a
    finally:
        a.close()


def started(tmp_path: Path, port: int, **over: Any) -> HandheldApp:
    app = HandheldApp(make_config(tmp_path, port, **over), ui=serve)
    app.gnss = gnss_ready()
    app.start()
    return app


def manifest_with(parcels: list[dict[str, Any]], cid: str) -> dict[str, Any]:
    return signed("manifest", {"round": "r1", "parcels": parcels, "retrieval": []}, cid=cid)


def scan(page: Any, code: str, verdict: str) -> None:
    page.evaluate("document.getElementById('msg').removeAttribute('data-verdict')")  # wait for a new one
    page.fill("#scan-form input", code)
    page.press("#scan-form input", "Enter")
    page.wait_for_selector(f"#msg[data-verdict={verdict}]")


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("size", VIEWPORTS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_scan_and_delivery_screens_fit_one_hand(lang: str, size: tuple[int, int], chromium: Any,
                                                tmp_path: Path, hbroker: Mosquitto, gw: Gateway) -> None:
    zh = lang == "zh"
    rng = np.random.default_rng(size[0])
    parcel, other = s10_id(rng), s10_id(rng)
    salt = "0011223344556677"
    token = codes.new_token(lambda n: bytes(range(3, 3 + n)))
    app = started(tmp_path, hbroker.port, scan={"same_window_s": 3.0, "other_window_s": 0.0})
    ctx = chromium.new_context(viewport={"width": size[0], "height": size[1]}, service_workers="block")
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    where = f"{lang} {size}"
    try:
        assert app.link.subscribed.wait(10)
        gw.command(manifest_with([{"parcel": parcel, "to": "Wang Fang", "token_salt": salt,
                                   "token_hash": salted_hash(salt, token)}, {"parcel": other, "to": "Li"}],
                                 "c-man-layout"))
        assert gw.wait(lambda: len(app.flows.view()["parcels"]) == 2)
        page.goto(app.web.url + f"?lang={lang}")
        page.wait_for_selector("#link-pill[data-connected='1']")
        h = page.evaluate(HEADER)
        assert h["title_lines"] < 1.5 and not h["title_cut"], (where, h)
        assert h["one_row"] and h["height"] <= 64, (where, h)
        assert h["text"] == ("手持终端" if zh else "Handheld")
        scan_screen = ("#scan-form input", "#scan-form button", "#msg", ".modes .btn", "header")
        above_fold(page, where, *scan_screen)
        measure(page, where + " scan screen")
        scan(page, other, "good")
        above_fold(page, where, *scan_screen)
        measure(page, where + " a good scan")

        # hand delivery: the confirmation is a step of its own, all of it above the fold
        page.click("[data-action=mode][data-mode=deliver]")
        page.wait_for_selector(".mode.sel[data-mode=deliver]")
        scan(page, parcel, "good")
        page.wait_for_selector(f'#confirm[data-parcel="{parcel}"]')
        hint = page.inner_text("#confirm .hint")
        assert ("交付码或姓名" in hint) if zh else ("code or name" in hint.lower()), hint
        form = ("#confirm h3", "#confirm [name=code]", "#confirm [name=name]", "#confirm button[type=submit]",
                "[data-action=cancel-confirm]", "#msg", "#scan-form input")
        above_fold(page, where, *form)
        measure(page, where + " delivery form")
        # a wrong code: said inside the form, which stays; the result area says the same
        page.fill("#confirm [name=code]", "PE-H:0000-0000-0000-0000")
        page.click("#confirm button[type=submit]")
        page.wait_for_selector("#confirm #confirm-error")
        err = page.inner_text("#confirm-error")
        assert "4" in err and (("还可以" in err) if zh else ("left" in err)), err
        assert page.get_attribute("#msg", "data-ok") == "0" and page.inner_text("#msg b") == err
        shots = os.environ.get("POSTEDGE_SCREENSHOT_DIR")
        if shots:
            page.screenshot(path=str(Path(shots) / f"handheld-confirm-{lang}-{size[0]}.png"))
        above_fold(page, where, *form, "#confirm-error")
        measure(page, where + " delivery form with its error")
        # the code typed on the keypad: a full-screen step, all of it on the screen at once
        page.click("[data-action=keypad-open]")
        page.wait_for_selector("#keypad", state="visible")
        for layer in ("digits", "letters"):
            if page.get_attribute("#keypad", "data-layer") != layer:
                page.click(f'#keypad .keys:visible [data-action=key-layer][data-layer="{layer}"]')
            assert page.get_attribute("#keypad", "data-layer") == layer
            assert page.get_attribute("#keypad-value", "inputmode") == \
                ("numeric" if layer == "digits" else "text")
            fit = page.evaluate(KEYPAD_FIT)
            assert not fit["out"] and fit["keys"] >= 12, (where, layer, fit)
            measure(page, f"{where} keypad {layer}", scope="#keypad", tap=MIN_KEY)
            if shots:
                page.screenshot(path=str(Path(shots) / f"handheld-keypad-{layer}-{lang}-{size[0]}.png"))
        for ch in token:
            layer = "digits" if ch.isdigit() else "letters"
            if page.get_attribute("#keypad", "data-layer") != layer:
                page.click(f'#keypad .keys:visible [data-action=key-layer][data-layer="{layer}"]')
            page.click(f'#keypad .keys:visible [data-key="{ch}"]')
        page.click("#keypad .keys:visible [data-action=key-back]")
        page.click(f'#keypad .keys:visible [data-key="{token[-1]}"]')
        assert page.input_value("#keypad-value") == codes.format_token(token).removeprefix("PE-H:")
        page.wait_for_timeout(1200)  # a refresh of the form keeps the step and what it holds
        assert page.is_visible("#keypad") and page.input_value("#keypad-value").replace("-", "") == token
        page.click("[data-action=keypad-submit]")
        page.wait_for_selector("#confirm", state="detached")
        assert page.is_visible("nav") and page.is_visible("#scan-form input")  # the shell is back
        assert page.get_attribute("#msg", "data-ok") == "1"
        assert app.flows.view()["parcels"][0]["state"] == "delivered"
    finally:
        ctx.close()
        app.stop()


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_one_result_area_with_sound_vibration_thumbnail_and_compartment(
        lang: str, chromium: Any, tmp_path: Path, hbroker: Mosquitto, gw: Gateway,
        api: FakeGatewayApi) -> None:
    zh = lang == "zh"
    rng = np.random.default_rng(77)
    dep, good = s10_id(rng), s10_id(rng)
    permit = PLATFORM.permit("lk01", "deposit", dep, "c007", DEV, "p-dep-9", size="M")
    app = started(tmp_path, hbroker.port, gateway_url=api.url,
                  scan={"same_window_s": 3.0, "other_window_s": 0.0})
    ctx = chromium.new_context(viewport={"width": 360, "height": 640}, service_workers="block")
    ctx.add_init_script(CUE_PROBE)
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    try:
        assert app.link.subscribed.wait(10)
        gw.command(manifest_with([{"parcel": dep, "to": "Li Wei", "size": "M", "locker": "lk01",
                                   "permit": permit}, {"parcel": good, "to": "Zhao"}], "c-man-result"))
        assert gw.wait(lambda: len(app.flows.view()["parcels"]) == 2)
        page.goto(app.web.url + f"?lang={lang}")
        page.wait_for_selector("#msg[data-verdict=none]")

        def place() -> dict[str, float]:
            return page.evaluate("""() => {
                var i=document.querySelector('#scan-form input').getBoundingClientRect(),
                    m=document.getElementById('msg').getBoundingClientRect();
                return {input: i.bottom, top: m.top}; }""")

        def verdicts() -> list[str]:
            return page.evaluate("""() => Array.prototype.filter.call(
                document.querySelectorAll('[data-verdict]'), e => e.getBoundingClientRect().height > 0)
                .map(e => e.id + ':' + e.getAttribute('data-verdict'))""")

        at = place()
        assert 0 <= at["top"] - at["input"] <= 16, at  # right under the scan input
        scan(page, good, "good")
        assert verdicts() == ["msg:good"] and good in page.inner_text("#msg")
        scan(page, good, "duplicate")
        assert verdicts() == ["msg:duplicate"]
        scan(page, "RB123456784GB", "invalid")
        assert verdicts() == ["msg:invalid"] and good not in page.inner_text("#msg")
        assert place() == at  # the same place every time: the input does not jump
        # one sound and one vibration per result, different for each kind
        vib, tones = page.evaluate("[window.__vib, window.__tones]")
        assert vib == [[60], [40, 80, 40], [250, 100, 250]], vib
        assert tones == [1760, 880, 880, 196], tones

        # a deposit: the locker's answer (polled from the gateway) says which compartment opened
        page.click("[data-action=mode][data-mode=deposit]")
        page.wait_for_selector(".mode.sel[data-mode=deposit]")
        scan(page, dep, "good")
        assert "lk01" in page.inner_text("#msg")
        api.status["p-dep-9"] = {"id": "p-dep-9", "status": "acked",
                                 "ack": {"ok": True, "code": "ok", "result": {"compartment": 9, "size": "M"}}}
        want = "9 号格口已开" if zh else "Compartment 9 is open"
        page.wait_for_function("t => document.getElementById('msg').textContent.includes(t)", arg=want)
        assert verdicts() == ["msg:good"] and page.evaluate("window.__vib.length") == 6
        page.wait_for_timeout(1500)  # shown once, not again at every refresh
        assert page.evaluate("window.__vib.length") == 6
        page.click("#tab-parcels")  # and the parcel's row says it too
        row = f'.row[data-parcel="{dep}"]'
        page.wait_for_selector(row)
        assert ("9 号格口已开" if zh else "compartment 9 open") in page.inner_text(row)

        # a photo: its thumbnail in the result area, beside the verdict
        cam = tmp_path / "board.jpg"
        cv2.imwrite(str(cam), board_with_qr(CAMPAIGN), [cv2.IMWRITE_JPEG_QUALITY, 92])
        gw.command(signed("jobs", jobs_args(), cid="c-jobs-result"))
        page.click("#tab-jobs")
        page.click('[data-action=open-job][data-job="j-17"]', timeout=15_000)
        page.click("[data-action=pick]")
        for step in ("install_board", "post_poster"):
            page.click(f'[data-action=step][data-step="{step}"]')
            page.wait_for_selector(f'.step.done[data-step="{step}"]')
        page.set_input_files('[data-action=photo-file][data-step="photo"]', str(cam))
        page.wait_for_selector("#msg[data-ok='1'] img.thumb", timeout=20_000)
        page.wait_for_function("() => document.querySelector('#msg img.thumb').naturalWidth > 0")
        assert ("照片合格" if zh else "passed the checks") in page.inner_text("#msg")
        at_jobs = place()
        assert at_jobs == at, (at_jobs, at)  # the same result area on every screen
        above_fold(page, "jobs", "#msg img.thumb")
        # the next action replaces it, thumbnail and all
        page.click("[data-action=submit]")
        page.wait_for_function("t => document.getElementById('msg').textContent.includes(t)",
                               arg="任务已提交" if zh else "Job submitted")
        assert page.query_selector("#msg img.thumb") is None
    finally:
        ctx.close()
        app.stop()


@pytest.mark.slow
def test_banner_and_disabled_actions_when_the_app_stops_answering(chromium: Any, tmp_path: Path) -> None:
    app = started(tmp_path, free_port())  # no broker: events wait in the outbox
    ctx = chromium.new_context(viewport={"width": 360, "height": 640}, service_workers="block")
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(app.web.url)
        scan(page, s10_id(np.random.default_rng(3)), "good")
        # the offline indicator: the gateway link and the outbox's count, from /api/outbox too
        n = app.outbox.count()
        assert n >= 1
        page.wait_for_selector(f"#link-pill[data-connected='0'][data-outbox='{n}']")
        assert page.inner_text("#link-pill") == f"✕ 离线 · 待发 {n}"
        with urllib.request.urlopen(app.web.url + "api/outbox", timeout=5) as r:
            assert json.loads(r.read()) == {"connected": False, "outbox": n}
        assert page.is_hidden("#down") and page.is_enabled("[data-action=mode][data-mode=intake]")
        app.web.stop()  # the app's server is gone (its process died)
        page.wait_for_selector("#down", state="visible", timeout=5_000)
        assert "没有响应" in page.inner_text("#down")
        above_fold(page, "banner", "#down")
        assert page.evaluate("getComputedStyle(document.getElementById('down')).backgroundColor") == \
            "rgb(139, 26, 20)"
        assert page.is_disabled("#scan-form button")
        assert page.is_disabled("[data-action=mode][data-mode=intake]")
        assert page.inner_text("#link-pill") == "✕ 无响应"  # no green "connected" left behind
        # a tap does nothing that could look done
        page.click("[data-action=mode][data-mode=intake]", force=True)
        assert app.mode == "check"
    finally:
        ctx.close()
        app.stop()


@pytest.mark.slow
def test_installable_app_opens_with_the_app_stopped(chromium: Any, tmp_path: Path) -> None:
    app = started(tmp_path, free_port())
    ctx = chromium.new_context(viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    try:
        base = app.web.url.rstrip("/")
        # the manifest in each language, with icons that are real PNGs of the sizes it says
        for lang, name in (("zh", "快递员手持终端"), ("en", "Courier handheld")):
            with urllib.request.urlopen(f"{base}/manifest.webmanifest?lang={lang}", timeout=5) as r:
                assert r.headers["Content-Type"].startswith("application/manifest+json")
                m = json.loads(r.read())
            assert (m["name"], m["start_url"], m["display"]) == (name, f"/?lang={lang}", "standalone")
            for icon in m["icons"]:
                with urllib.request.urlopen(base + icon["src"], timeout=5) as r:
                    img = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
                n = int(icon["sizes"].split("x")[0])
                assert img.shape[:2] == (n, n) and icon["type"] == "image/png"
        page.goto(base + "/?lang=en")
        assert page.get_attribute("link[rel=manifest]", "href") == "/manifest.webmanifest?lang=en"
        page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=20_000)
        page.wait_for_function("""() => caches.open('postedge-handheld-v1').then(c => c.keys())
            .then(k => k.length >= 7)""")
        app.stop()  # the app and its server are gone; the browser has no network to it
        with pytest.raises(OSError):
            urllib.request.urlopen(base + "/", timeout=3)
        for url, words in ((base + "/?lang=en", "Scan or type"), (base + "/", "扫描或输入")):
            page.goto(url)
            assert words in (page.get_attribute("#scan-form input", "placeholder") or "")
            page.wait_for_selector("#down", state="visible", timeout=5_000)  # and it says so at once
            assert page.is_disabled("#scan-form button")
    finally:
        ctx.close()
        app.stop()
