"""The recipient's signature on hand delivery, in real headless Chromium.

The delivery form has a signature pad (a canvas drawn with pointer events, a clear
button, targets of at least 44 px, at 360x640): Playwright draws a signature with the
mouse and submits; the handheld stores it as a JPEG on white (OpenCV, as the evidence
photos), emits ``handheld.hand_delivery`` naming its SHA-256, and its uploader sends the
JPEG to the real gateway's upload store, where the platform links the two. An empty pad
refuses to submit, with the error in the form and in the result area; the server
refuses an empty or broken image on its own too.

Real Mosquitto, the real gateway process (its SQLite store and its upload server,
logging in with the broker's password file), the real handheld app and its UI.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from common.ports import free_port
from gateway.broker import Mosquitto
from gateway.store.photos import photo_path
from handheld import webui
from handheld.app import HandheldApp
from handheld.text import Refused
from handheld.webui import serve
from handheld.workflows import signature_jpeg
from protocol import canonical
from simulator.imagegen import s10_id
from simulator.outlet import stored_events
from tests.handheld.gateway_rig import RealGateway
from tests.handheld.test_handheld_app import make_config, signed
from tests.handheld.test_handheld_layout import measure
from tests.waiting import within

MIN_TARGET = 44


def png_url(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return "data:image/png;base64," + base64.b64encode(bytes(buf)).decode()


@pytest.fixture
def rig(tmp_path: Path, broker: Mosquitto) -> Iterator[tuple[RealGateway, HandheldApp, str]]:
    parcel = s10_id(np.random.default_rng(16))
    with RealGateway(tmp_path / "gw", broker) as gw:
        app = HandheldApp(make_config(tmp_path, broker.port, gateway_url=gw.url), ui=serve).start()
        try:
            assert app.link.subscribed.wait(10), app.link.last_error
            cmd = signed("manifest", {"round": "r1", "parcels": [{"parcel": parcel, "to": "Wang Fang"}],
                                      "retrieval": []}, cid="c-man-sign")
            assert app.handle_command(canonical.dumps(cmd)) == "ok"
            yield gw, app, parcel
        finally:
            app.stop()


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[tuple[HandheldApp, str]]:
    """The app's stores and flows, not started (no broker, no gateway): the form and the
    server-side checks alone."""
    parcel = s10_id(np.random.default_rng(17))
    app = HandheldApp(make_config(tmp_path, free_port()))
    app.flows.load_manifest({"round": "r1", "parcels": [{"parcel": parcel, "to": "Li"}], "retrieval": []})
    try:
        yield app, parcel
    finally:
        app.stop()


def deliveries(gw: RealGateway) -> list[dict[str, Any]]:
    return [e["body"] for e in stored_events(gw.db) if e["type"] == "handheld.hand_delivery"]


@pytest.mark.slow
def test_a_signature_drawn_in_the_form_is_uploaded_with_the_delivery(
        chromium: Any, rig: tuple[RealGateway, HandheldApp, str]) -> None:
    gw, app, parcel = rig
    ctx = chromium.new_context(viewport={"width": 360, "height": 640}, service_workers="block")
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(app.web.url + "?lang=zh")
        page.click("[data-action=mode][data-mode=deliver]")
        page.wait_for_selector(".mode.sel[data-mode=deliver]")
        page.fill("#scan-form input", parcel)
        page.press("#scan-form input", "Enter")
        page.wait_for_selector(f'#confirm[data-parcel="{parcel}"]')
        page.click("[data-action=sign-open]")
        page.wait_for_selector("#confirm.signing #sign-pad")
        assert page.is_hidden("#confirm [name=code]") and page.is_hidden("#confirm button[type=submit]")
        assert page.inner_text("#sign-title") == "请收件人在框内签名"
        # the pad and its buttons on a 360x640 screen: whole, above the tab bar, big enough
        nav_top = page.evaluate("document.querySelector('nav').getBoundingClientRect().top")
        for sel in ("#sign-pad", "[data-action=sign-clear]", "[data-action=sign-submit]",
                    "[data-action=sign-close]", "[data-action=cancel-confirm]"):
            box = page.locator(sel).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, (sel, box)
            assert box["y"] + box["height"] <= nav_top + 0.5, (sel, box, nav_top)
            if sel != "#sign-pad":
                assert box["width"] >= MIN_TARGET and box["height"] >= MIN_TARGET, (sel, box)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        measure(page, "signature pad 360x640")  # the page's own rules: contrast, 48 px targets, gaps

        # an empty pad: nothing is sent; the form and the result area say why
        page.click("[data-action=sign-submit]")
        page.wait_for_selector("#confirm #sign-error")
        assert "签名框是空的" in page.inner_text("#sign-error")
        assert page.get_attribute("#msg", "data-verdict") == "refused"
        measure(page, "signature pad with its error")
        assert "签名框是空的" in page.inner_text("#msg")
        assert app.flows.view()["parcels"][0]["state"] == "on_route"

        # a stroke, cleared, then the signature: mouse moves through pointer events
        pad = page.locator("#sign-pad").bounding_box()
        assert pad is not None

        def stroke(points: list[tuple[float, float]]) -> None:
            x0, y0 = points[0]
            page.mouse.move(pad["x"] + x0 * pad["width"], pad["y"] + y0 * pad["height"])
            page.mouse.down()
            for x, y in points[1:]:
                page.mouse.move(pad["x"] + x * pad["width"], pad["y"] + y * pad["height"], steps=6)
            page.mouse.up()

        stroke([(0.1, 0.5), (0.9, 0.5)])
        assert int(page.get_attribute("#sign-pad", "data-ink") or 0) > 100
        page.click("[data-action=sign-clear]")
        assert page.get_attribute("#sign-pad", "data-ink") == "0"
        stroke([(0.1, 0.7), (0.2, 0.2), (0.3, 0.75), (0.4, 0.25), (0.5, 0.7)])
        stroke([(0.55, 0.4), (0.7, 0.3), (0.8, 0.6), (0.9, 0.35)])
        ink = int(page.get_attribute("#sign-pad", "data-ink") or 0)
        page.click("[data-action=sign-submit]")
        page.wait_for_selector("#confirm", state="detached")
        assert page.get_attribute("#msg", "data-ok") == "1"
        assert page.locator("#msg img.thumb").count() == 1  # the signature as the result's thumbnail
        print(f"signature: {ink} px of ink drawn")
        state = app.flows.view()["parcels"][0]["state"]
        assert state == "delivered"

        # the event names the JPEG; the JPEG reaches the gateway's upload store
        assert within(lambda: len(deliveries(gw)) == 1), "no hand_delivery at the gateway"
        body = deliveries(gw)[0]
        assert body["parcel"] == parcel and body["method"] == "signature"
        sha = body["signature_sha256"]
        stored = photo_path(gw.db, sha)
        assert within(lambda: stored.exists(), 30), (app.photos.status(), sorted(gw.db.parent.rglob("*")))
        jpeg = stored.read_bytes()
        assert hashlib.sha256(jpeg).hexdigest() == sha and jpeg.startswith(b"\xff\xd8\xff")
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
        # the pad inside its border, at the screen's pixel ratio (1 here): 360 px less the margins
        assert img is not None and 300 <= img.shape[1] <= 340 and img.shape[0] == 156, img.shape
        assert np.median(img) > 240  # white paper
        assert 0.002 < np.count_nonzero(img < 128) / img.size < 0.2  # and ink on it
        assert (app.state_dir / "signatures" / f"{sha}.jpg").read_bytes() == jpeg
        assert within(lambda: (app.photos.status()["queue"] or {}).get("done") == 1, 10)
    finally:
        ctx.close()


def test_pad_labels_in_both_languages(offline: tuple[HandheldApp, str]) -> None:
    app, parcel = offline
    app.scan(parcel, "deliver")
    zh, en = webui.part_scan(app, "zh"), webui.part_scan(app, "en")
    for html, words in ((zh, ("✍ 签名", "请收件人在框内签名", "清除重签", "签名确认",
                              "签名框是空的")),
                        (en, ("✍ Sign", "The recipient signs in the box", "Clear",
                              "Confirm with signature", "The signature box is empty"))):
        assert 'id="sign-pad"' in html
        for w in words:
            assert w in html, w


def test_the_server_refuses_an_empty_or_broken_signature_and_keeps_transparency_white(
        offline: tuple[HandheldApp, str]) -> None:
    app, parcel = offline
    blank = np.zeros((160, 340, 4), np.uint8)  # a transparent canvas never drawn on
    for value, code in ((png_url(blank), "empty_signature"), ("data:image/png;base64,AAAA", "bad_signature"),
                        ("data:image/jpeg;base64,/9j/", "bad_signature"),
                        (png_url(np.zeros((20, 20, 3), np.uint8)), "bad_signature")):
        with pytest.raises(Refused) as e:
            app.flows.hand_delivery(parcel, "signature", value)
        assert e.value.code == code and e.value.zh and e.value.en
    assert app.flows.view()["parcels"][0]["state"] == "on_route"
    # black ink on a transparent canvas: a JPEG on white, not a black square
    drawn = blank.copy()
    cv2.line(drawn, (20, 80), (320, 90), (0, 0, 0, 255), 4)
    jpeg, w, h = signature_jpeg(png_url(drawn))
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert (w, h) == (340, 160) and img[10, 10] > 245 and img[85, 170] < 80
    # a 3x screen's pad is capped at 1200 px
    big = np.full((540, 3000, 3), 255, np.uint8)
    cv2.line(big, (0, 270), (2999, 270), (0, 0, 0), 9)
    assert max(signature_jpeg(png_url(big))[1:]) == 1200


@pytest.mark.slow
def test_a_signature_taken_while_the_gateway_is_away_goes_up_when_it_returns(
        rig: tuple[RealGateway, HandheldApp, str]) -> None:
    """The outlet box is off when the courier delivers: the event waits in the outbox and
    the signature in the upload queue; both arrive once the gateway is back."""
    gw, app, parcel = rig
    gw.kill()
    img = np.full((156, 336, 3), 255, np.uint8)
    cv2.polylines(img, [np.array([[30, 110], [80, 40], [130, 120], [190, 50], [300, 100]], np.int32)],
                  False, (0, 0, 0), 3, cv2.LINE_AA)
    doc = {"code": parcel, "method": "signature", "value": png_url(img)}
    res = webui.handle_post(app, ["api", "deliver"], {}, "application/json", json.dumps(doc).encode())
    assert res["ok"], res
    assert within(lambda: (app.photos.status()["queue"] or {}).get("error") is not None, 15), \
        app.photos.status()
    assert (app.photos.status()["queue"] or {}).get("waiting") == 1 and app.outbox.count() >= 1
    assert not deliveries(gw)
    gw.restart()
    assert within(lambda: len(deliveries(gw)) == 1, 30), "the delivery never reached the gateway"
    sha = deliveries(gw)[0]["signature_sha256"]
    assert within(lambda: photo_path(gw.db, sha).exists(), 60), app.photos.status()
    assert hashlib.sha256(photo_path(gw.db, sha).read_bytes()).hexdigest() == sha
