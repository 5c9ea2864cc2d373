"""The clerk console in Debian's chromium (Playwright), on a phone-sized
screen (390x844), in Simplified Chinese and in English: log in, acknowledge
an alarm with a note (the page then shows it acknowledged, not red), find a
parcel and read its history; device text and a note that try script stay
text. Real gateway web server, real SQLite (tests/gateway/clerk_rig.py).

Set POSTEDGE_SCREENSHOT_DIR to keep the screenshots."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.clerk_rig import PARCEL, PASSWORDS, XSS, Rig

WORDS = {
    "zh": {"login": "登录", "ack": "确认", "acked": "anna 已于", "search": "查询", "deposit": "快递员投递",
           "misrouted": "不是本网点的包裹", "wrong": "账号或密码不对", "summary": "今日交班汇总"},
    "en": {"login": "Log in", "ack": "Acknowledge", "acked": "acknowledged by anna", "search": "Search",
           "deposit": "Delivered by courier", "misrouted": "Not for this outlet",
           "wrong": "Wrong name or password", "summary": "Today's handover"},
}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("clerk"))
    try:
        yield r
    finally:
        r.close()


def _shot(page: Any, name: str) -> None:
    d = os.environ.get("POSTEDGE_SCREENSHOT_DIR")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(d) / name), full_page=True)


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_clerk_logs_in_acknowledges_an_alarm_and_finds_a_parcel(rig: Rig, chromium: Any, lang: str) -> None:
    from playwright.sync_api import expect

    w = WORDS[lang]
    ctx = chromium.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{rig.url}/clerk?lang={lang}")
        expect(page.locator("#login")).to_be_visible()  # redirected to the login
        page.fill("input[name=name]", "anna")
        page.fill("input[name=password]", "not-the-password")
        page.click(f"button:has-text('{w['login']}')")
        expect(page.locator("#msg")).to_contain_text(w["wrong"])
        page.fill("input[name=password]", PASSWORDS["anna"])
        page.click(f"button:has-text('{w['login']}')")
        expect(page.locator("#who")).to_contain_text("anna")
        # The session cookie is out of the page's reach.
        assert page.evaluate("document.cookie") == ""

        alarm = page.locator(f"li[data-alarm='{rig.alarm_ordinary}']")
        expect(alarm).to_have_class("alarm hot")
        alarm.locator("input[name=note]").fill(XSS if lang == "zh" else "door closed " + XSS)
        alarm.locator(f"button:has-text('{w['ack']}')").click()
        alarm = page.locator(f"li[data-alarm='{rig.alarm_ordinary}']")
        expect(alarm).to_contain_text(w["acked"])
        expect(alarm).not_to_have_class("alarm hot")
        expect(alarm.locator(".note")).to_contain_text("<script>window.__pwned=2</script>")

        page.fill("input[name=q]", PARCEL.lower())
        page.click(f"#search-form button:has-text('{w['search']}')")
        result = page.locator(f"div[data-parcel='{PARCEL}']")
        expect(result).to_be_visible()
        expect(result.locator(".history")).to_contain_text(w["deposit"])
        expect(page.locator("#feed-list")).to_contain_text(w["misrouted"])
        expect(page.locator("#summary")).to_contain_text(w["summary"])
        _shot(page, f"clerk-{lang}.png")
        # Nothing injected ran: not the note, not the deposit's reason, not the scan's text.
        assert page.evaluate("window.__pwned") is None
        assert errors == []
        # Fits a phone: nothing wider than the screen.
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 390

        # The public page: that alarm is acknowledged, not red.
        page.goto(f"{rig.url}/?lang={lang}")
        expect(page.locator(".alarm.acked")).to_have_count(1)
        assert page.evaluate("window.__pwned") is None
    finally:
        ctx.close()
    # Reset for the other language's run.
    store = rig.store()
    try:
        store.db.execute("DELETE FROM alarm_acks")
    finally:
        store.close()


@pytest.mark.slow
def test_a_cross_site_form_in_the_clerks_browser_changes_nothing(rig: Rig, chromium: Any) -> None:
    """The clerk is logged in; a page from another origin (another port on
    the LAN) posts a form to the console, with and without a guessed token.
    SameSite=Strict keeps the cookie off that request and the Origin check
    and the CSRF token refuse it anyway: no acknowledgement is stored."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from playwright.sync_api import expect

    target = f"http://localhost:{rig.port}/clerk/alarm"  # localhost vs 127.0.0.1: another site
    evil = (f'<!doctype html><form id=f method=post action="{target}">'
            f'<input name=alarm value="{rig.alarm_ordinary}"><input name=action value=acknowledge>'
            '<input name=csrf value=guess><input name=note value=pwned></form>'
            "<script>document.getElementById('f').submit()</script>").encode()

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(evil)))
            self.end_headers()
            self.wfile.write(evil)

        def log_message(self, *a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    ctx = chromium.new_context(viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    try:
        page.goto(f"http://localhost:{rig.port}/clerk/login?lang=en")
        page.fill("input[name=name]", "bo")
        page.fill("input[name=password]", PASSWORDS["bo"])
        page.click("button:has-text('Log in')")
        expect(page.locator("#who")).to_contain_text("bo")
        before = len(rig.own_events("gateway.alarm_acknowledged"))
        with page.expect_navigation(url=target):
            page.goto(f"http://127.0.0.1:{srv.server_address[1]}/")
        assert page.locator("body").inner_text() != ""
        assert len(rig.own_events("gateway.alarm_acknowledged")) == before
        store = rig.store()
        try:
            assert store.db.execute("SELECT count(*) FROM alarm_acks WHERE note='pwned'").fetchone()[0] == 0
        finally:
            store.close()
    finally:
        ctx.close()
        srv.shutdown()


@pytest.mark.slow
def test_the_browser_session_reaches_the_counter_api_with_its_csrf_token(rig: Rig, chromium: Any) -> None:
    """The login's second cookie (Path=/v1/counter) is what Chromium sends to
    the counter API: without the console's CSRF token a POST is refused, with
    it the session is accepted (this rig has no counter desk, so the answer
    is then ``counter_disabled``, which comes only after the login passed)."""
    from playwright.sync_api import expect

    ctx = chromium.new_context(viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    try:
        page.goto(f"{rig.url}/clerk/login?lang=en")
        page.fill("input[name=name]", "bo")
        page.fill("input[name=password]", PASSWORDS["bo"])
        page.click("button:has-text('Log in')")
        expect(page.locator("#who")).to_contain_text("bo")
        token = page.locator("input[name=csrf]").first.get_attribute("value")
        got = page.evaluate("""async (t) => {
            const out = [];
            for (const h of [{}, {'X-CSRF-Token': 'guess'}, {'X-CSRF-Token': t}]) {
                const r = await fetch('/v1/counter/weigh', {method: 'POST', headers: h});
                out.push([r.status, (await r.json()).error]);
            }
            return out;
        }""", token)
        assert got == [[403, "bad_csrf"], [403, "bad_csrf"], [503, "counter_disabled"]]
    finally:
        ctx.close()
