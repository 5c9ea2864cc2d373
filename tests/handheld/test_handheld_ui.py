"""The courier's touch UI in real headless Chromium (Debian's, never a downloaded browser),
through a whole bulletin-board job, in Chinese and in English.

The job list arrives as a platform-signed command over a real Mosquitto; the camera is
a folder holding a generated photo of a board with the campaign QR code; the GNSS
receiver is a real NMEA stream on loop://. The courier picks the site, installs the
board, posts the poster, photographs it (quality verdict and campaign check shown),
submits, and the page shows the job queued and then sent once the gateway's client
has received the events.

Then the UI server's guard, over real sockets: a cross-site
``text/plain`` POST (from a real page on another origin in Chromium, and by hand),
a foreign ``Host`` (DNS rebinding), a POST without the session token, non-JSON bodies,
oversized and trickled bodies, idle and half-sent connections, the connection cap and
the security headers. Each refused request must leave the outbox untouched.
"""


from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import web

from common.ports import free_port
from common.web_server import ThreadedServer
from gateway.broker import Mosquitto
from handheld.app import HandheldApp
from handheld.webui import TOKEN_HEADER, WebUI, serve
from simulator.imagegen import s10_id
from tests.handheld.conftest import Gateway
from tests.handheld.test_handheld_app import (
    CAMPAIGN,
    GOOD,
    board_with_qr,
    gnss_ready,
    jobs_args,
    make_config,
    of_type,
    signed,
)

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_whole_board_job_in_the_browser(lang: str, chromium: Any, tmp_path: Path,
                                        hbroker: Mosquitto, gw: Gateway) -> None:
    cam = tmp_path / "camera"
    cam.mkdir()
    cv2.imwrite(str(cam / "frame.jpg"), board_with_qr(CAMPAIGN), [cv2.IMWRITE_JPEG_QUALITY, 92])
    app = HandheldApp(make_config(tmp_path, hbroker.port, camera=str(cam)), ui=serve)
    app.gnss = gnss_ready()
    app.start()
    assert app.link.subscribed.wait(10)
    page = chromium.new_page(viewport={"width": 420, "height": 860})
    page.set_default_timeout(10_000)
    try:
        url = app.web.url + ("?lang=en" if lang == "en" else "")
        page.goto(url)
        zh = lang == "zh"
        assert page.get_attribute("html", "lang") == ("zh-CN" if zh else "en")
        assert bool(CJK.search(page.inner_text("nav"))) == zh
        # every visible control is a comfortable touch target
        for el in page.query_selector_all(".btn"):
            box = el.bounding_box()
            if box and el.is_visible():
                assert box["height"] >= 48 and box["width"] >= 48, el.inner_text()

        # scan screen: distinct feedback per verdict
        page.fill("#scan-form input", GOOD)
        page.press("#scan-form input", "Enter")
        page.wait_for_selector("#msg[data-verdict=good]")
        good_bg = page.eval_on_selector("#msg", "e => getComputedStyle(e).backgroundColor")
        page.wait_for_timeout(400)  # past the different-symbol window (0.3 s)
        page.fill("#scan-form input", "RB123456784GB")
        page.press("#scan-form input", "Enter")
        page.wait_for_selector("#msg[data-verdict=invalid]")
        bad_bg = page.eval_on_selector("#msg", "e => getComputedStyle(e).backgroundColor")
        assert good_bg != bad_bg
        assert ("无效" if zh else "Invalid") in page.inner_text("#msg")

        # the job list arrives from the gateway as a signed command
        page.click("#tab-jobs")
        page.wait_for_selector("#no-jobs")
        gw.command(signed("jobs", jobs_args(), cid=f"c-ui-{lang}"))
        page.wait_for_selector('[data-action=open-job][data-job="j-17"]', timeout=10_000)
        page.click('[data-action=open-job][data-job="j-17"]')
        page.wait_for_selector("#coords")
        assert page.inner_text("#coords") == "27.500000, 109.900000"
        assert "卫生院后面" in page.inner_text("#directions")
        page.click("[data-action=pick]")
        for step in ("install_board", "post_poster"):
            page.click(f'[data-action=step][data-step="{step}"]')
            page.wait_for_selector(f'.step.done[data-step="{step}"]')
        # photograph: the camera's latest frame, quality verdict and campaign check shown
        page.click("#tab-camera")
        page.wait_for_selector("#scr-camera .quality[data-ok='1']", timeout=10_000)
        page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0")
        page.click("#tab-jobs")
        page.click('[data-action=photo][data-step="photo"]')
        page.wait_for_selector("#photo-result .quality[data-ok='1']", timeout=20_000)
        assert CAMPAIGN in page.inner_text("#campaign-ok")
        msg_has = "t => document.getElementById('msg').textContent.includes(t)"
        page.wait_for_function(msg_has, arg="照片合格" if zh else "passed the checks")
        page.click("[data-action=submit]")
        page.wait_for_function(msg_has, arg="任务已提交" if zh else "Job submitted")
        assert page.get_attribute("#msg", "data-ok") == "1"
        page.wait_for_function(
            "t => document.querySelector('.job-detail .jstate').textContent.includes(t)",
            arg="已发送" if zh else "sent", timeout=15_000)
        assert gw.wait(lambda: of_type(gw.events(), "handheld.job_submitted"))
        ph = of_type(gw.events(), "handheld.photo")
        assert len(ph) == 1 and ph[0]["body"]["campaign"] == CAMPAIGN

        # sync screen: connected, nothing waiting, the photo kept for the uploader
        page.click("#tab-sync")
        page.wait_for_selector("#sync-events")
        page.wait_for_function("() => document.getElementById('sync-events').textContent === '0'")
        assert ("已连接" if zh else "Connected") in page.inner_text("#sync-link")
        page.wait_for_selector("#sync-photos[data-waiting='1']")  # kept until the gateway has it
        assert not app.web.refused, app.web.refused  # the real page never trips the guard

        # the language switch
        page.click("#lang-switch")
        page.wait_for_load_state()
        assert page.get_attribute("html", "lang") == ("en" if zh else "zh-CN")
        assert bool(CJK.search(page.inner_text("nav"))) != zh
        shots = os.environ.get("POSTEDGE_SCREENSHOT_DIR")
        if shots:
            page.screenshot(path=str(Path(shots) / f"handheld-{lang}.png"), full_page=True)
    finally:
        page.close()
        app.stop()


# ------------------------------------------------------------------ the server's guard

@pytest.fixture
def ui_app(tmp_path: Path) -> Iterator[HandheldApp]:
    """A started app whose broker is away: every accepted action lands in the outbox and stays."""
    a = HandheldApp(make_config(tmp_path, free_port()), ui=serve).start()
    try:
        yield a
    finally:
        a.stop()


def call(port: int, method: str, path: str, body: bytes | str = b"", headers: dict[str, str] | None = None,
         host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request over a real socket, with exactly the Host and headers given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body,
                     headers={"Host": f"127.0.0.1:{port}" if host is None else host, **(headers or {})})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def intake(code: str) -> str:
    return json.dumps({"code": code, "mode": "intake"})


def legit(ui: WebUI) -> dict[str, str]:
    return {"Content-Type": "application/json", TOKEN_HEADER: ui.token, "Origin": f"http://127.0.0.1:{ui.port}"}


def assert_refused(status: int, body: bytes, want_status: int, code: str) -> dict[str, Any]:
    doc = json.loads(body)
    assert (status, doc["ok"], doc["code"]) == (want_status, False, code), (status, doc)
    assert CJK.search(doc["zh"]) and doc["en"] and not CJK.search(doc["en"])  # both languages
    return doc


def test_cross_site_text_plain_post_is_refused_and_records_nothing(ui_app: HandheldApp) -> None:
    ui = ui_app.web
    rng = np.random.default_rng(111)
    held = ui_app.outbox.count()
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain;charset=UTF-8"}
    st, _, body = call(ui.port, "POST", "/api/scan", intake(s10_id(rng)), evil)
    assert_refused(st, body, 403, "bad_origin")
    # the same with the session token (say it leaked): the foreign Origin alone is enough
    st, _, body = call(ui.port, "POST", "/api/scan", intake(s10_id(rng)), {**evil, TOKEN_HEADER: ui.token})
    assert_refused(st, body, 403, "bad_origin")
    # Sec-Fetch-Site from a browser that hides Origin
    st, _, body = call(ui.port, "POST", "/api/scan", intake(s10_id(rng)),
                       {**legit(ui), "Origin": "", "Sec-Fetch-Site": "cross-site"})
    assert_refused(st, body, 403, "bad_origin")
    # what a cross-site form or no-cors fetch can send, even with the token and our Origin: refused
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        h = {**legit(ui), "Content-Type": ctype} if ctype else {k: v for k, v in legit(ui).items()
                                                              if k != "Content-Type"}
        st, _, body = call(ui.port, "POST", "/api/scan", intake(s10_id(rng)), h)
        doc = assert_refused(st, body, 415, "bad_content_type")
        assert "application/json" in doc["zh"] and "application/json" in doc["en"]
    # a photo file's bytes are allowed on the photo route only
    st, _, body = call(ui.port, "POST", "/api/scan", b"\xff\xd8", {**legit(ui), "Content-Type": "image/jpeg"})
    assert_refused(st, body, 415, "bad_content_type")
    st, _, body = call(ui.port, "POST", "/api/jobs/j-none/photo?step=photo", b"\xff\xd8",
                       {**legit(ui), "Content-Type": "image/jpeg"})
    assert_refused(st, body, 200, "no_job")  # past the guard, refused by the app
    assert ui_app.outbox.count() == held and ui_app.flows.view()["intake"] == []
    assert ui.refused["bad_origin"] == 3 and ui.refused["bad_content_type"] == 5
    # the UI's own request still works, and the refusals are counted in the state
    code = s10_id(rng)
    st, _, body = call(ui.port, "POST", "/api/scan", intake(code), legit(ui))
    assert st == 200 and json.loads(body)["ok"], body
    assert ui_app.outbox.count() > held  # the scan and its custody event
    assert [i["parcel"] for i in ui_app.flows.view()["intake"]] == [code]
    st, _, body = call(ui.port, "GET", "/api/state")
    assert st == 200 and json.loads(body)["web"]["refused"]["bad_content_type"] == 5


def test_foreign_host_is_refused(ui_app: HandheldApp) -> None:
    """DNS rebinding: evil.example resolves to 127.0.0.1, so only the Host header tells."""
    ui = ui_app.web
    held = ui_app.outbox.count()
    for host in ("evil.example", f"evil.example:{ui.port}", f"127.0.0.1.evil.example:{ui.port}",
                 f"127.0.0.1:{ui.port + 1}"):
        for path in ("/", "/api/state", "/camera.jpg", "/part?name=sync"):
            st, _, body = call(ui.port, "GET", path, host=host)
            assert_refused(st, body, 403, "bad_host")
        st, _, body = call(ui.port, "POST", "/api/scan", intake(GOOD),
                           {**legit(ui), "Origin": f"http://{host}"}, host=host)
        assert_refused(st, body, 403, "bad_host")
    st, _, body = call(ui.port, "GET", "/", host="")
    assert_refused(st, body, 403, "bad_host")
    assert ui_app.outbox.count() == held and ui.refused["bad_host"] == 21
    for host in (f"127.0.0.1:{ui.port}", f"localhost:{ui.port}", f"LOCALHOST:{ui.port}", f"[::1]:{ui.port}"):
        st, _, body = call(ui.port, "GET", "/", host=host)
        assert st == 200 and ui.token.encode() in body, host


def test_post_without_the_session_token_is_refused(ui_app: HandheldApp) -> None:
    ui = ui_app.web
    held = ui_app.outbox.count()
    no_token = {k: v for k, v in legit(ui).items() if k != TOKEN_HEADER}
    st, _, body = call(ui.port, "POST", "/api/scan", intake(GOOD), no_token)
    assert_refused(st, body, 403, "no_token")
    for wrong in ("x", ui.token[:-1], ui.token + "A", "令牌"):
        st, _, body = call(ui.port, "POST", "/api/scan", intake(GOOD),
                           {**no_token, TOKEN_HEADER: wrong.encode().decode("latin-1")})
        assert_refused(st, body, 403, "bad_token")
    st, _, body = call(ui.port, "POST", "/api/mode", json.dumps({"mode": "intake"}), no_token)
    assert_refused(st, body, 403, "no_token")
    assert ui_app.outbox.count() == held and ui_app.mode == "check"
    assert ui.refused["no_token"] == 2 and ui.refused["bad_token"] == 4
    # a non-browser client (no Origin) with the token is served
    st, _, body = call(ui.port, "POST", "/api/mode", json.dumps({"mode": "intake"}),
                       {"Content-Type": "application/json", TOKEN_HEADER: ui.token})
    assert st == 200 and ui_app.mode == "intake"
    # the token is per session: a new UI has a new one
    other = WebUI(ui_app, "127.0.0.1", 0)
    try:
        assert other.token != ui.token and len(ui.token) >= 32
    finally:
        other.stop()


def test_sizes_headers_and_methods(ui_app: HandheldApp) -> None:
    ui = ui_app.web
    st, h, page = call(ui.port, "GET", "/?lang=en")
    csp = h["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert st == 200 and nonce and page.count(f'nonce="{nonce.group(1)}"'.encode()) == 2
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert page.count(b"<script") == 1  # the one inline script, under the nonce
    assert (h["x-frame-options"], h["x-content-type-options"], h["referrer-policy"]) == \
        ("DENY", "nosniff", "no-referrer")
    assert f'<meta name="postedge-token" content="{ui.token}">'.encode() in page
    assert "aiohttp" not in h.get("server", "") and "Python" not in h.get("server", "")
    # every answer carries them, refusals and 404s included
    for method, path, host in (("GET", "/nowhere", None), ("GET", "/", "evil.example")):
        st, h, _ = call(ui.port, method, path, host=host)
        assert st in (403, 404) and "frame-ancestors 'none'" in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["cross-origin-resource-policy"] == "same-origin"
    held = ui_app.outbox.count()
    big = json.dumps({"code": GOOD, "pad": "x" * 70_000})
    st, _, body = call(ui.port, "POST", "/api/scan", big, legit(ui))
    assert_refused(st, body, 413, "too_large")
    # a preflight is never granted; other methods are refused
    st, h, body = call(ui.port, "OPTIONS", "/api/scan", headers={"Origin": "http://evil.example",
                                                                 "Access-Control-Request-Method": "POST"})
    assert st == 405 and "access-control-allow-origin" not in h
    assert_refused(st, body, 405, "bad_http_method")
    st, _, body = call(ui.port, "POST", "/api/scan", "{not json", legit(ui))
    assert_refused(st, body, 400, "bad_request")
    assert ui_app.outbox.count() == held


def _closed_within(s: socket.socket, limit: float) -> tuple[bool, float, bytes]:
    """Read until the server closes the socket; (closed, seconds taken, bytes read)."""
    t0 = time.monotonic()
    got = b""
    s.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, time.monotonic() - t0, got
        if not chunk:
            return True, time.monotonic() - t0, got
        got += chunk
    return False, time.monotonic() - t0, got


def test_idle_and_trickling_connections_are_closed(tmp_path: Path) -> None:
    app = HandheldApp(make_config(tmp_path, free_port()))
    ui = WebUI(app, "127.0.0.1", 0, idle_timeout=1.0, body_timeout=1.0)
    ui.start()
    host = f"127.0.0.1:{ui.port}"
    socks: list[socket.socket] = []
    try:
        def connect() -> socket.socket:
            s = socket.create_connection(("127.0.0.1", ui.port), timeout=5)
            socks.append(s)
            return s

        silent = connect()  # never sends a byte
        half = connect()    # half a request, then nothing
        half.sendall(f"GET /api/state HTTP/1.1\r\nHost: {host}\r\n".encode())
        kept = connect()    # a whole request, then an idle keep-alive connection
        kept.sendall(f"GET /part?name=status HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        slow = connect()    # a POST whose body never finishes arriving
        head = (f"POST /api/scan HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"{TOKEN_HEADER}: {ui.token}\r\nContent-Length: 200\r\n\r\n")
        slow.sendall(head.encode() + b'{"code": ')
        t0 = time.monotonic()
        for s in (silent, half, kept, slow):
            closed, _, got = _closed_within(s, 6.0)
            took = time.monotonic() - t0
            assert closed and took < 4.0, (closed, took, got)
            assert s is not silent or took > 0.6  # held open until the timeout, not refused at once
            if s is kept:
                assert got.startswith(b"HTTP/1.1 200")
            elif s is slow:
                assert got.startswith(b"HTTP/1.1 408") and "太慢".encode() in got
            else:
                assert got == b""
        assert ui.refused["slow_body"] == 1 and app.outbox.count() == 0
        # the server itself is fine afterwards
        st, _, _ = call(ui.port, "GET", "/api/state")
        assert st == 200
    finally:
        for s in socks:
            s.close()
        ui.stop()
        app.stop()


def test_connections_and_requests_are_bounded(tmp_path: Path) -> None:
    app = HandheldApp(make_config(tmp_path, free_port()))
    ui = WebUI(app, "127.0.0.1", 0, max_connections=2)
    ui.start()
    socks = []
    try:
        for _ in range(2):
            socks.append(socket.create_connection(("127.0.0.1", ui.port), timeout=5))
        deadline = time.monotonic() + 5
        while ui.server.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        third = socket.create_connection(("127.0.0.1", ui.port), timeout=5)
        closed, _, got = _closed_within(third, 5.0)
        third.close()
        assert closed and got.startswith(b"HTTP/1.1 503") and "正忙".encode() in got, got
        assert ui.refused["busy"] == 1
        for s in socks:
            s.close()
        deadline = time.monotonic() + 5
        while ui.server.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert call(ui.port, "GET", "/api/state")[0] == 200
    finally:
        for s in socks:
            s.close()
        ui.stop()
        app.stop()


ATTACK = """<!doctype html><html><body><h1>Free prizes</h1>
<iframe name="sink" style="display:none"></iframe>
<form id="f" method="POST" enctype="text/plain" target="sink" action="TARGET/api/scan">
<input name='{"code":"FORM","mode":"intake","x":"' value='"}'></form>
<script>
var T='TARGET';
var a=fetch(T+'/api/scan',{method:'POST',mode:'no-cors',headers:{'Content-Type':'text/plain'},
  body:JSON.stringify({code:'PLAIN',mode:'intake'})}).catch(function(){});
var b=fetch(T+'/api/scan',{method:'POST',mode:'no-cors',
  body:new Blob([JSON.stringify({code:'BLOB',mode:'intake'})])}).catch(function(){});
var c=fetch(T+'/api/scan',{method:'POST',headers:{'Content-Type':'application/json'},
  body:JSON.stringify({code:'JSON',mode:'intake'})}).catch(function(){});
document.getElementById('f').submit();
Promise.all([a,b,c]).then(function(){setTimeout(function(){document.title='done';},500);});
</script></body></html>"""


def test_a_cross_site_page_in_chromium_cannot_record_custody(chromium: Any, ui_app: HandheldApp) -> None:
    """A real page on another origin (localhost vs 127.0.0.1, another port) tries every
    request a browser lets it send without asking: a text/plain fetch, an untyped Blob, a
    JSON fetch (needs a preflight, never granted) and an auto-submitted text/plain form."""
    ui = ui_app.web
    rng = np.random.default_rng(5)
    codes = {k: s10_id(rng) for k in ("PLAIN", "BLOB", "JSON", "FORM")}
    html = ATTACK.replace("TARGET", ui.url.rstrip("/"))
    for k, v in codes.items():
        html = html.replace(f"'{k}'", f"'{v}'").replace(f'"{k}"', f'"{v}"')

    async def attack(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    site = web.Application()
    site.router.add_get("/", attack)
    evil = ThreadedServer(site, "127.0.0.1", 0, name="evil-site")
    evil.start()
    held = ui_app.outbox.count()
    page = chromium.new_page()
    try:
        page.goto(f"http://localhost:{evil.address[1]}/")
        page.wait_for_function("document.title === 'done'", timeout=10_000)
        deadline = time.monotonic() + 5
        while sum(ui.refused.values()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert ui_app.outbox.count() == held, ui_app.flows.view()["intake"]
        assert ui_app.flows.view()["intake"] == []
        # the three simple POSTs arrived and were refused; the JSON one stopped at its preflight
        assert (ui.refused["bad_origin"], ui.refused["bad_http_method"]) == (3, 1), ui.refused
    finally:
        page.close()
        evil.stop()
