"""The 政讯通 lifecycle on the courier's screen (handheld/templates/jobs.html) in
real headless Chromium (Debian's): a site survey proposed from the jobs screen
and shown as waiting for approval, then approved when the platform's list
names the site; a photo far from a site refused with the distance; a damaged
board reported with its photo; a job that could not be completed, with its
reason. Photos are files the courier chooses (the file input), drawn with
OpenCV; the position is a real NMEA stream; the job list a platform-signed
command over a real Mosquitto.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import pytest

from gateway.broker import Mosquitto
from handheld.app import HandheldApp
from handheld.webui import serve
from tests.handheld.conftest import Gateway
from tests.handheld.test_handheld_app import CAMPAIGN, board_with_qr, gnss_ready, make_config, of_type, signed

HAS = "t => document.getElementById('msg').textContent.includes(t)"


def photo_file(tmp: Path, name: str, seed: int) -> str:
    path = tmp / f"{name}.jpg"
    cv2.imwrite(str(path), board_with_qr(CAMPAIGN, seed=seed), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return str(path)


@pytest.mark.slow
def test_survey_report_and_could_not_complete_in_the_browser(chromium: Any, tmp_path: Path,
                                                             hbroker: Mosquitto, gw: Gateway) -> None:
    app = HandheldApp(make_config(tmp_path, hbroker.port), ui=serve)
    app.gnss = gnss_ready()  # held fix at 27.5 N, 109.9 E
    app.start()
    assert app.link.subscribed.wait(10)
    page = chromium.new_page(viewport={"width": 420, "height": 900})
    page.set_default_timeout(10_000)
    try:
        assert app.web is not None
        page.goto(app.web.url)  # Chinese, the default
        page.click("#tab-jobs")
        page.wait_for_selector("#no-jobs")
        assert "任务清单：从未收到" in page.inner_text("#ages")

        # ---- propose a site: the form, then the job it opens, a photo of the spot, submit
        page.click("#propose summary")
        page.fill("#survey-form [name=village]", "下坪村")
        page.fill("#survey-form [name=landmark]", "卫生院外墙")
        page.click("#survey-form button[type=submit]")
        page.wait_for_function(HAS, arg="已开始选点")
        page.wait_for_selector('.step.here[data-step="photo_site"]')
        page.set_input_files('input[data-action=photo-file][data-step="photo_site"]',
                             photo_file(tmp_path, "spot", 31))
        page.wait_for_function(HAS, arg="照片合格")
        page.click("[data-action=submit]")
        page.wait_for_function(HAS, arg="等待平台批准")
        page.click("[data-action=close-job]")
        page.wait_for_selector("#surveys .sv-waiting")
        assert "等待批准" in page.inner_text("#surveys")
        assert gw.wait(lambda: of_type(gw.events(), "handheld.site_survey"))
        survey = of_type(gw.events(), "handheld.site_survey")[0]["body"]
        assert survey["village"] == "下坪村" and survey["lat_e7"] == 275_000_000

        # ---- the platform approves it and sends jobs: one far away, one here, one to give up
        here = {"id": survey["survey"], "name": "卫生院外墙", "village": "下坪村", "lat_e7": 275_000_000,
                "lon_e7": 1_099_000_000, "tol_m": 50}
        far = {"id": "s-far", "name": "上坡小卖部", "village": "上坡村", "lat_e7": 276_000_000,
               "lon_e7": 1_099_000_000, "tol_m": 40}
        gw.command(signed("jobs", {"round": "r-1", "sites": [here, far], "jobs": [
            {"id": "j-far", "kind": "post_poster", "campaign": CAMPAIGN, "site": far, "issued": 1},
            {"id": "j-fix", "kind": "maintain", "site": here},
            {"id": "j-no", "kind": "maintain", "site": far}]}, cid="c-board-ui"))
        page.wait_for_selector("#surveys .sv-approved", timeout=15_000)
        assert "已批准" in page.inner_text("#surveys")

        # a photo taken 11 km from the site: refused, with the distance and the tolerance
        page.click('[data-action=open-job][data-job="j-far"]')
        page.wait_for_selector("#issued")
        page.click("[data-action=pick]")
        page.click('[data-action=step][data-step="post_poster"]')
        page.wait_for_selector('.step.here[data-step="photo"]')
        page.set_input_files('input[data-action=photo-file][data-step="photo"]',
                             photo_file(tmp_path, "far", 32))
        page.wait_for_function(HAS, arg="离公告栏点位太远")
        assert "允许 40 米" in page.inner_text("#msg") and page.get_attribute("#msg", "data-ok") == "0"
        page.click("[data-action=close-job]")

        # a damaged board: the before photo, then the report with its condition
        page.click('[data-action=open-job][data-job="j-fix"]')
        page.click("[data-action=pick]")
        page.set_input_files('input[data-action=photo-file][data-step="photo_before"]',
                             photo_file(tmp_path, "before", 33))
        page.wait_for_selector("#report-form")
        page.select_option("#report-form [name=condition]", "damaged")
        page.fill("#report-form [name=note]", "立柱断了")
        page.click("#report-form button[type=submit]")
        page.wait_for_function(HAS, arg="已报告：公告栏损坏")
        page.wait_for_selector('#reports [data-condition="damaged"]')
        assert page.query_selector('#pair [data-role="before"]') is not None
        assert gw.wait(lambda: of_type(gw.events(), "handheld.board_condition"))
        rep = of_type(gw.events(), "handheld.board_condition")[0]["body"]
        assert rep["condition"] == "damaged" and rep["site"] == here["id"] and len(rep["photos"]) == 1
        page.click("[data-action=close-job]")

        # could not complete, with the reason chosen
        page.click('[data-action=open-job][data-job="j-no"]')
        page.click("#cannot summary")
        page.select_option("#cannot-form [name=reason]", "no_access")
        page.fill("#cannot-form [name=note]", "道路被水淹")
        page.click("#cannot-form button[type=submit]")
        page.wait_for_function(HAS, arg="已记录无法完成：进不去")
        page.wait_for_selector("#not-done")
        assert "进不去" in page.inner_text("#not-done")
        assert gw.wait(lambda: of_type(gw.events(), "handheld.job_not_done"))
        assert of_type(gw.events(), "handheld.job_not_done")[0]["body"]["reason"] == "no_access"
    finally:
        page.close()
        app.stop()
