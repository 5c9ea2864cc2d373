"""The clerk's page on the smallest phone the issue measured (360×640) and on 390×844, in
Chinese and in English: the alarms are on the first screen
without scrolling, nothing is wider than the screen, text and field borders are at 7:1 or
more (computed from the browser's styles, tests/page_checks.py), and the Chinese page,
with a parcel's history open, has no English words in it (tests/zh_words.py: device ids,
parcel ids and codes pass; a reason code or a state does not). Real gateway web server
and SQLite (tests/gateway/clerk_rig.py), real headless Chromium.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.http.status import TEXT as PAGE_TEXT
from tests.gateway.clerk_rig import NEVER, PARCEL, PASSWORDS, XSS, Rig, event, provisioned
from tests.page_checks import above_the_fold, check_page
from tests.zh_words import english_words

VIEWPORTS = [(360, 640), (390, 844)]
BACK = "RR444444445CN"  # a parcel sent back from the locker
#: The language switch names the other language in that language; "anna" is the clerk's
#: login name (data, shown beside her role).
ALLOWED = {"English", "anna"}


#: The header's title on one line and whole.
HEADER = """() => { var t=document.querySelector('header h1'), cs=getComputedStyle(t),
  lh=parseFloat(cs.lineHeight)||parseFloat(cs.fontSize)*1.45;
  return {lines:t.getBoundingClientRect().height/lh, cut:t.scrollWidth>t.clientWidth};}"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # provisioned: the console also shows the gateway itself and a scanner that never connected
    root = tmp_path_factory.mktemp("clerk-layout")
    r = Rig(root, web=lambda db: provisioned(root, db))
    try:
        yield r
    finally:
        r.close()


def signed_in(chromium: Any, rig: Rig, lang: str, size: tuple[int, int]) -> tuple[Any, Any, str]:
    """A browser signed in as anna; the login page checked on the way (and its text)."""
    ctx = chromium.new_context(viewport={"width": size[0], "height": size[1]}, device_scale_factor=1)
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    page.goto(f"{rig.url}/clerk/login?lang={lang}")
    above_the_fold(page, f"{lang} {size} login", "header", "#login button[type=submit]")
    check_page(page, f"{lang} {size} login")
    login = page.inner_text("body")
    page.fill("input[name=name]", "anna")
    page.fill("input[name=password]", PASSWORDS["anna"])
    page.click("#login button[type=submit]")
    page.wait_for_selector("#who")
    return ctx, page, login


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("size", VIEWPORTS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_clerk_page_fits_a_small_phone(rig: Rig, chromium: Any, lang: str, size: tuple[int, int]) -> None:
    ctx, page, _ = signed_in(chromium, rig, lang, size)
    where = f"{lang} {size}"
    try:
        # the first screen: who is signed in, the alarms' heading and the first alarm whole
        above_the_fold(page, where, "header", "#who", "#logout button", "#alarms h2",
                       "#alarms li.alarm:first-child", "#alarms li.alarm:first-child button")
        h = page.evaluate(HEADER)
        assert h["lines"] < 1.5 and not h["cut"], (where, h)
        what = page.evaluate("() => document.querySelector('#alarms .alarm .what')"
                             ".getBoundingClientRect().width")
        assert what >= 0.75 * size[0], (where, what)  # an alarm's text is not squeezed into a column
        check_page(page, where)
        # the gateway itself after the alarms, with the scanner that never connected listed
        never = page.inner_text(f"#gateway li[data-device='{NEVER}']")
        assert ("从未连接" if lang == "zh" else "never connected") in never, never
        page.click("nav.jump a[href='#gateway']")
        above_the_fold(page, where + " gateway", "#gateway h2", "#gateway .gw-broker",
                       "#gateway .gw-upstream", "#gateway .gw-upload")
        page.fill("input[name=q]", PARCEL)
        page.click("#search-form button")
        page.wait_for_selector(f"div[data-parcel='{PARCEL}']")
        check_page(page, where + " with a parcel's history")
    finally:
        ctx.close()


#: Where the alarms and the gateway's block sit on a wide screen.
SIDE_JS = """() => { var a=document.querySelector('#alarms').getBoundingClientRect(),
  g=document.querySelector('#gateway').getBoundingClientRect();
  return {a_top:a.top, a_right:a.right, g_top:g.top, g_left:g.left, g_right:g.right,
          w:document.documentElement.clientWidth};}"""


@pytest.mark.slow
def test_the_gateway_stands_beside_the_alarms_on_a_wide_screen(rig: Rig, chromium: Any) -> None:
    """On the counter's PC (1280 wide) the gateway's own state is next to the alarms, not
    below the whole list; on a phone it follows them (test above)."""
    ctx, page, _ = signed_in(chromium, rig, "zh", (1280, 800))
    try:
        m = page.evaluate(SIDE_JS)
        assert m["g_left"] >= m["a_right"] and abs(m["g_top"] - m["a_top"]) < 2 and m["g_right"] <= m["w"], m
        above_the_fold(page, "1280x800", "#gateway .gw-broker", f"#gateway li[data-device='{NEVER}']")
        check_page(page, "zh 1280x800")
    finally:
        ctx.close()


@pytest.mark.slow
def test_the_open_console_follows_the_gateway_and_says_when_it_cannot(tmp_path: Path, chromium: Any) -> None:
    """A console left open all day: the gateway's block is re-read every 5 s, so a broker
    link lost after the page was loaded shows without a reload; when the gateway's web
    server is gone the block says that what it shows is not current."""
    from playwright.sync_api import expect

    own = Rig(tmp_path, web=lambda db: provisioned(tmp_path, db))
    closed = False
    try:
        ctx, page, _ = signed_in(chromium, own, "zh", (390, 844))
        try:
            expect(page.locator("#gateway .gw-broker")).to_have_attribute("data-tone", "good")
            store = own.store()
            try:
                with store.tx():
                    store.put("broker_link", json.dumps({"up": False, "since": time.time() - 120}))
            finally:
                store.close()
            broker = page.locator("#gateway .gw-broker")
            expect(broker).to_have_attribute("data-tone", "bad", timeout=12_000)
            expect(broker).to_contain_text("网关与消息代理断开已有 2 分钟")
            own.close()
            closed = True
            expect(page.locator("#gateway .gw-stale")).to_contain_text("暂时连不上网关", timeout=12_000)
            check_page(page, "zh 390x844 gateway gone")
        finally:
            ctx.close()
    finally:
        if not closed:
            own.close()


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_status_page_on_a_small_phone(rig: Rig, chromium: Any, lang: str) -> None:
    """The public status page shares the palette (page.css): the overall verdict and the
    alarms first, nothing wider than the screen, text at 7:1."""
    ctx = chromium.new_context(viewport={"width": 360, "height": 640}, device_scale_factor=1)
    page = ctx.new_page()
    try:
        page.goto(f"{rig.url}/?lang={lang}")
        above_the_fold(page, lang, "header", ".overall")
        check_page(page, f"status page {lang}", fields=0)
    finally:
        ctx.close()


@pytest.mark.slow
def test_clerk_page_in_chinese_has_no_english_words(rig: Rig, chromium: Any) -> None:
    # a parcel that went back: its retrieval's reason is a state, its inspection a board fault
    store = rig.store()
    try:
        store.commit_events([
            event("lk01", 101, "locker.deposit", "custody", {"compartment": 6, "parcel": BACK}),
            event("lk01", 102, "locker.retrieve", "custody", {"compartment": 6, "parcel": BACK,
                                                               "reason": "overdue"}),
            event("lk01", 103, "locker.inspect_needed", "custody", {"compartment": 6, "parcel": BACK,
                                                                     "reason": "board:timeout"})])
    finally:
        store.close()
    ctx, page, login = signed_in(chromium, rig, "zh", (390, 844))
    seen: dict[str, str] = {"login": login}
    try:
        seen["console"] = page.inner_text("body")
        for q in (PARCEL, "EE000000002CN", "RR222222228CN", BACK):
            page.fill("input[name=q]", q)
            page.click("#search-form button")
            page.wait_for_selector("#results")
            seen[f"search {q}"] = page.inner_text("#results")
        page.goto(f"{rig.url}/?lang=zh")  # the public status page the clerk also reads
        seen["status page"] = page.inner_text("body")
    finally:
        ctx.close()
    # the rig's device text that tries HTML is data the devices sent, shown as text (test_clerk_browser)
    bad = {k: english_words(v.replace(XSS, ""), ALLOWED) for k, v in seen.items()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, "\n".join(f"{k}: {v}\n  {seen[k]!r}" for k, v in bad.items())


ROOT = Path(__file__).resolve().parents[2]
#: The custody events the locker and the counter scanner record, read from their source:
#: the status page and the clerk's history word each one (``evt.*`` in gateway/http/text.toml),
#: never "记录：scanner.intake".
CUSTODY = sorted(
    {m for m in re.findall(r'etype = "(locker\.[a-z_]+)"|"(locker\.[a-z_]+)", "custody"',
                           (ROOT / "firmware/locker/app.py").read_text(encoding="utf-8"))
     for m in m if m}
    | set(re.findall(r'"(scanner\.[a-z_]+)", "(?:custody|telemetry)"',
                     (ROOT / "firmware/counter/app.py").read_text(encoding="utf-8"))))


def test_the_devices_record_custody_events() -> None:
    assert {"locker.deposit", "locker.retrieve", "scanner.intake", "scanner.misrouted"} <= set(CUSTODY)


@pytest.mark.parametrize("etype", CUSTODY)
def test_each_locker_and_counter_event_has_words(etype: str) -> None:
    assert PAGE_TEXT.has(f"evt.{etype}"), etype
    assert english_words(PAGE_TEXT.t(f"evt.{etype}", "zh")) == []
