"""Evidence photos from the browser's camera (getUserMedia) in real Chromium.

Chromium's fake capture device plays a Y4M file this test writes with OpenCV and numpy
(``--use-fake-device-for-media-stream --use-file-for-fake-video-capture``). The page
grabs a frame from the video, sends it as a JPEG to the job's photo route, and the
server's quality gate, hashing, campaign check and duplicate rules decide, exactly as
for the handheld's own camera: a blurred board is refused, a retake of the sharp one
passes (its stored file hashes to the recorded sha256), and the same scene sent for
another job is refused as a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from gateway.broker import Mosquitto
from handheld.app import HandheldApp
from handheld.webui import serve
from simulator.imagegen import board_with_qr
from simulator.pytest_plugin import CHROMIUM, CHROMIUM_ARGS
from tests.handheld.conftest import Gateway
from tests.handheld.test_handheld_app import CAMPAIGN, gnss_ready, jobs_args, make_config, of_type

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def write_y4m(path: Path, img: np.ndarray, frames: int = 3) -> Path:
    """A still scene as a YUV4MPEG2 (4:2:0) file: what Chromium's fake camera plays."""
    h, w = img.shape[:2]
    i420 = cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).tobytes()
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + i420)
    return path


@pytest.fixture
def app(tmp_path: Path, hbroker: Mosquitto, gw: Gateway) -> Iterator[HandheldApp]:
    a = HandheldApp(make_config(tmp_path, hbroker.port), ui=serve)
    a.gnss = gnss_ready()
    a.start()
    assert a.link.subscribed.wait(10)
    a.jobs.load_list(jobs_args())
    try:
        yield a
    finally:
        a.stop()


def camera_page(pw: Any, video: Path) -> Any:
    return pw.chromium.launch(executable_path=CHROMIUM, args=[
        *CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}"])


def shoot(browser: Any, app: HandheldApp, job: str, step: str) -> Any:
    ctx = browser.new_context(permissions=["camera"], viewport={"width": 420, "height": 860})
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    page.goto(app.web.url + "?lang=en")
    page.click("#tab-jobs")
    page.click(f'[data-action=open-job][data-job="{job}"]')
    page.wait_for_selector(f'[data-action=photo-browser][data-step="{step}"]')
    page.evaluate("document.getElementById('msg').removeAttribute('data-ok')")
    page.click(f'[data-action=photo-browser][data-step="{step}"]')
    page.wait_for_selector("#msg[data-ok]", timeout=30_000)
    assert page.is_visible("#bcam")  # the live picture is on the screen while shooting
    return ctx, page


def test_browser_camera_photo_goes_through_the_same_gates(app: HandheldApp, gw: Gateway,
                                                          tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    sharp = board_with_qr(CAMPAIGN, seed=1, w=1280, h=960)
    blurred = write_y4m(tmp_path / "blurred.y4m", cv2.GaussianBlur(sharp, (0, 0), 6))
    good = write_y4m(tmp_path / "board.y4m", sharp)
    app.jobs.pick("j-17")
    app.jobs.do_step("j-17", "install_board")
    app.jobs.do_step("j-17", "post_poster")
    with sync_playwright() as pw:
        # a shaky shot: the quality gate refuses it, nothing is kept
        b = camera_page(pw, blurred)
        try:
            ctx, page = shoot(b, app, "j-17", "photo")
            assert page.get_attribute("#msg", "data-ok") == "0"
            assert app.jobs.last_photo is not None and app.jobs.last_photo["quality"]["ok"] is False
            assert app.index.count() == 0
            ctx.close()
        finally:
            b.close()
        # the retake passes: quality, campaign QR, position; the file hashes to its record
        b = camera_page(pw, good)
        try:
            ctx, page = shoot(b, app, "j-17", "photo")
            assert page.get_attribute("#msg", "data-ok") == "1", page.inner_text("#msg")
            page.wait_for_selector("#photo-result .quality[data-ok='1']")
            assert CAMPAIGN in page.inner_text("#campaign-ok")
            ev = gw.wait(lambda: of_type(gw.events(), "handheld.photo"))
            assert ev
            body = of_type(gw.events(), "handheld.photo")[0]["body"]
            stored = app.state_dir / "photos" / f'{body["sha256"]}.jpg'
            assert hashlib.sha256(stored.read_bytes()).hexdigest() == body["sha256"]
            assert body["w"] > 0 and body["pos_src"]
            ctx.close()
            # the same scene again for another job: the duplicate rules refuse it
            app.jobs.pick("j-18")
            ctx, page = shoot(b, app, "j-18", "photo_before")
            assert page.get_attribute("#msg", "data-ok") == "0"
            assert "already submitted" in page.inner_text("#msg")  # photo_index: exact duplicate
            assert app.index.count() == 1
            ctx.close()
        finally:
            b.close()
