"""Scanning with the browser's camera in real Chromium.

Chromium's fake camera plays a Y4M of a parcel label (``simulator/imagegen.py``); the
page's camera-scan button sends frames to ``/api/camscan`` one at a time, where the
handheld camera's decoder and vote take the read as a scan: the parcel id shows as a
good scan in the result area and a ``handheld.scan`` event from the ``camera`` source
reaches the gateway. A frame that is not an image is refused in words and counted, and
the app goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.broker import Mosquitto
from handheld.app import HandheldApp
from handheld.webui import serve
from simulator.imagegen import label_image, s10_id
from tests.handheld.conftest import Gateway
from tests.handheld.test_handheld_app import make_config, of_type
from tests.handheld.test_handheld_browser_camera import camera_page, write_y4m

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JUNK = """async () => {
  const token = document.querySelector('meta[name="postedge-token"]').content;
  const r = await fetch('/api/camscan', {method: 'POST', body: new Uint8Array([1, 2, 3, 255]),
    headers: {'X-Postedge-Token': token, 'Content-Type': 'image/jpeg'}});
  return [r.status, await r.json()];
}"""


@pytest.fixture
def app(tmp_path: Path, hbroker: Mosquitto, gw: Gateway) -> Iterator[HandheldApp]:
    a = HandheldApp(make_config(tmp_path, hbroker.port), ui=serve)
    a.start()
    assert a.link.subscribed.wait(10)
    try:
        yield a
    finally:
        a.stop()


def test_a_label_in_front_of_the_browser_camera_is_a_scan(app: HandheldApp, gw: Gateway,
                                                          tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(31)
    parcel = s10_id(rng)
    img, _ = label_image([(parcel, "Code128")], rng)
    video = write_y4m(tmp_path / "label.y4m", img)
    with sync_playwright() as pw:
        b = camera_page(pw, video)
        try:
            ctx = b.new_context(permissions=["camera"], viewport={"width": 360, "height": 640})
            page = ctx.new_page()
            page.set_default_timeout(30_000)
            page.goto(app.web.url + "?lang=zh")
            page.click("#camscan")
            page.wait_for_selector("#camscan[aria-pressed=true]")
            assert page.is_visible("#bcam")  # the courier sees what the camera sees
            page.wait_for_selector("#msg[data-verdict=good]")
            assert parcel in page.inner_text("#msg")

            def camera_scans() -> list[dict[str, Any]]:
                scans = of_type(gw.events(), "handheld.scan")
                return [e for e in scans if e["body"].get("source") == "camera"]

            assert gw.wait(camera_scans)
            assert [(e["body"]["code"], e["body"]["verdict"]) for e in camera_scans()] == [(parcel, "good")]
            # the same label stays in front of the camera: one scan, the rest are duplicates
            page.wait_for_timeout(1500)
            assert [e["body"]["verdict"] for e in camera_scans()] == ["good"]
            assert app.browser_frames >= 2
            page.click("#camscan")
            page.wait_for_selector("#camscan[aria-pressed=false]")
            page.wait_for_selector("#bcam", state="hidden")
            # a frame that is not a picture: refused in words, counted, the app answers on
            status, doc = page.evaluate(JUNK)
            assert status == 200 and doc["ok"] is False and doc["code"] == "camera_frame", doc
            assert "相机画面无法识别" in doc["zh"]
            assert app.status()["browser_camera"]["refused"] == 1
            page.fill("#scan-form input", parcel)
            page.click("#scan-form button[type=submit]")
            page.wait_for_selector("#msg[data-verdict]")
            ctx.close()
        finally:
            b.close()
