"""The courier's touch UI in real headless Chromium (Debian's, never a downloaded browser),
through a whole bulletin-board job, in Chinese and in English.

The job list arrives as a platform-signed command over a real Mosquitto; the camera is
a folder holding a generated photo of a board with the campaign QR code; the GNSS
receiver is a real NMEA stream on loop://. The courier picks the site, installs the
board, posts the poster, photographs it (quality verdict and campaign check shown),
submits, and the page shows the job queued and then sent once the gateway's client
has received the events.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest

from gateway.broker import Mosquitto
from handheld.app import HandheldApp
from tests.test_handheld_app import (
    CAMPAIGN,
    GOOD,
    Gateway,
    board_with_qr,
    gnss_ready,
    gw,  # noqa: F401 - fixture
    hbroker,  # noqa: F401 - fixture
    jobs_args,
    make_config,
    of_type,
    signed,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM) or shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_whole_board_job_in_the_browser(lang: str, chromium: Any, tmp_path: Path,
                                        hbroker: Mosquitto, gw: Gateway) -> None:  # noqa: F811
    cam = tmp_path / "camera"
    cam.mkdir()
    cv2.imwrite(str(cam / "frame.jpg"), board_with_qr(CAMPAIGN), [cv2.IMWRITE_JPEG_QUALITY, 92])
    app = HandheldApp(make_config(tmp_path, hbroker.port, camera=str(cam)))
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
        page.wait_for_selector("#feedback[data-verdict=good]")
        good_bg = page.eval_on_selector("#feedback", "e => getComputedStyle(e).backgroundColor")
        page.wait_for_timeout(400)  # past the different-symbol window (0.3 s)
        page.fill("#scan-form input", "RB123456784GB")
        page.press("#scan-form input", "Enter")
        page.wait_for_selector("#feedback[data-verdict=invalid]")
        bad_bg = page.eval_on_selector("#feedback", "e => getComputedStyle(e).backgroundColor")
        assert good_bg != bad_bg
        assert ("无效" if zh else "Invalid") in page.inner_text("#feedback")

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
        page.wait_for_function("document.getElementById('preview').naturalWidth > 0")
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
        page.wait_for_function("document.getElementById('sync-events').textContent === '0'")
        assert ("已连接" if zh else "Connected") in page.inner_text("#sync-link")
        page.wait_for_selector("#sync-photos[data-waiting='1']")  # kept until the gateway has it

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
