"""A courier's whole day on the handheld's screen in real headless Chromium, while the
outlet box is unreachable, then drained when it comes back.

The pieces are each tested on their own (the camera, wedge, signature, board and
position tests beside this file); this test runs them one after the other on one
handheld whose link is down, because what breaks in a day is their interplay: an
outbox and a photo queue that must hold everything, a wedge queue that must survive a
signature dialog, quality and position gates that must refuse without leaving
anything behind.

The outlet box losing power: its Mosquitto and its gateway process (the real one:
SQLite store and photo upload server) are both SIGKILLed, so the handheld's link is
down (the status pill says offline with the outbox count) and its uploader holds
the photos. Offline, through the UI only: an install job's camera photo (Chromium's
fake camera playing a Y4M) blurred and refused by the quality gate, the retake
passing and the job submitted; a poster photo 11 km from its site refused by the
position gate (a held NMEA fix); a damaged board reported with its before photo; in
delivery mode a wedge burst opens the confirmation dialog, a second burst during the
dialog is queued, the recipient signs on the pad, and the queued scan opens the next
parcel's dialog, confirmed with a name. Nothing reaches the gateway meanwhile. Then
the box comes back and every event and every accepted photo arrive exactly once, and
the refused photos never.

What cannot happen offline, done before the link is cut: the site survey is proposed
and reaches the gateway, and its approval comes down in the platform-signed job list
(with the day's parcel manifest), which only the gateway can hand down; both are
published on the handheld's command topic with the gateway's account, as the
gateway's relay does. The install of the approved site is done offline.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import publish

from gateway.broker import Mosquitto
from gateway.store.photos import photo_path, photos_dir
from protocol import canonical, topics
from simulator.imagegen import s10_id
from simulator.outlet import stored_events
from tests.conftest import PASSWORDS
from tests.handheld.conftest import DEV, OUTLET
from tests.handheld.gateway_rig import RealGateway
from tests.handheld.test_handheld_app import CAMPAIGN, board_with_qr, signed
from tests.handheld.test_handheld_boards_browser import photo_file
from tests.handheld.test_handheld_browser_camera import camera_page, shoot, write_y4m
from tests.handheld.test_handheld_wedge import HUMAN_MS, TEST_BREAK_MS, burst, start
from tests.waiting import within

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HERE = (275_000_000, 1_099_000_000)  # where the courier stands (gnss_ready's held fix)


def hand_down(broker: Mosquitto, cmd: dict[str, Any]) -> None:
    """A platform-signed command published on the handheld's command topic with the
    gateway's account: what the gateway's relay does with one it pulled."""
    publish.single(topics.build(OUTLET, "handheld", DEV, "cmd"), canonical.dumps(cmd), qos=1,
                   hostname="127.0.0.1", port=broker.port, client_id="gw-o1-relay",
                   auth={"username": "gw-o1", "password": PASSWORDS["gw-o1"]}, protocol=mqtt.MQTTv311)


def uploads(gw: RealGateway) -> list[str]:
    """The photos the gateway's upload server completed, one row each."""
    db = sqlite3.connect(gw.db)
    try:
        return [s for (s,) in db.execute("SELECT sha256 FROM uploads WHERE completed_at IS NOT NULL")]
    finally:
        db.close()


def act(page: Any, selector: str) -> str:
    """Click something whose answer lands in the result area; that answer's data-ok."""
    page.evaluate("document.getElementById('msg').removeAttribute('data-ok')")
    page.click(selector)
    page.wait_for_selector("#msg[data-ok]")
    return page.get_attribute("#msg", "data-ok") or ""


def upload_file(page: Any, job: str, step: str, path: str) -> str:
    page.evaluate("document.getElementById('msg').removeAttribute('data-ok')")
    page.set_input_files(f'input[data-action=photo-file][data-job="{job}"][data-step="{step}"]', path)
    page.wait_for_selector("#msg[data-ok]", timeout=20_000)
    return page.get_attribute("#msg", "data-ok") or ""


def open_job(page: Any, job: str) -> None:
    if page.query_selector("[data-action=close-job]") is not None:
        page.click("[data-action=close-job]")
    page.click(f'[data-action=open-job][data-job="{job}"]')
    page.wait_for_selector(f'[data-action=pick][data-job="{job}"], .step[data-step]')


def stroke(page: Any, points: list[tuple[float, float]]) -> None:
    pad = page.locator("#sign-pad").bounding_box()
    assert pad is not None
    x0, y0 = points[0]
    page.mouse.move(pad["x"] + x0 * pad["width"], pad["y"] + y0 * pad["height"])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(pad["x"] + x * pad["width"], pad["y"] + y * pad["height"], steps=6)
    page.mouse.up()


def test_a_day_offline_through_the_whole_ui_then_drained(tmp_path: Path, broker: Mosquitto) -> None:
    from playwright.sync_api import sync_playwright

    t_start = time.monotonic()
    rng = np.random.default_rng(1616)
    first, second = s10_id(rng), s10_id(rng)
    sharp = board_with_qr(CAMPAIGN, seed=61, w=1280, h=960)
    blurred_video = write_y4m(tmp_path / "blurred.y4m", cv2.GaussianBlur(sharp, (0, 0), 6))
    sharp_video = write_y4m(tmp_path / "board.y4m", sharp)

    with RealGateway(tmp_path / "gw", broker) as gw, sync_playwright() as pw, ExitStack() as stack:
        app = start(tmp_path, broker.port, gateway_url=gw.url)
        stack.callback(app.stop)
        browser = camera_page(pw, sharp_video)
        stack.callback(browser.close)
        # ---------------------------------------------------------- at the outlet, online
        ctx = browser.new_context(viewport={"width": 420, "height": 860}, service_workers="block")
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.goto(app.web.url + "?lang=en")
        page.click("#tab-jobs")
        page.click("#propose summary")
        page.fill("#survey-form [name=village]", "Xiaping")
        page.fill("#survey-form [name=landmark]", "clinic wall")
        page.click("#survey-form button[type=submit]")
        page.wait_for_selector('.step.here[data-step="photo_site"]')
        sv = page.get_attribute('.step.here [data-action=photo-file]', "data-job")
        assert sv and upload_file(page, sv, "photo_site", photo_file(tmp_path, "spot", 62)) == "1"
        assert act(page, "[data-action=submit]") == "1"
        page.click("[data-action=close-job]")
        page.wait_for_selector("#surveys .sv-waiting")
        assert within(lambda: any(e["type"] == "handheld.site_survey" for e in stored_events(gw.db)))
        survey = next(e["body"] for e in stored_events(gw.db) if e["type"] == "handheld.site_survey")
        assert survey["survey"] == sv and (survey["lat_e7"], survey["lon_e7"]) == HERE
        assert within(lambda: len(uploads(gw)) == 1, 30), app.photos.status()  # the spot's photo

        # the platform approves the site and signs the day's jobs; the parcels for the round
        here = {"id": sv, "name": "clinic wall", "village": "Xiaping", "lat_e7": HERE[0],
                "lon_e7": HERE[1], "tol_m": 50}
        old = {"id": "s-old", "name": "market board", "village": "Xiaping", "lat_e7": HERE[0] + 1000,
               "lon_e7": HERE[1], "tol_m": 50}
        far = {"id": "s-far", "name": "Shangpo shop", "village": "Shangpo", "lat_e7": 276_000_000,
               "lon_e7": HERE[1], "tol_m": 40}
        hand_down(broker, signed("jobs", {"round": "r-day", "sites": [here, old, far], "jobs": [
            {"id": "j-inst", "kind": "install", "campaign": CAMPAIGN, "site": here, "issued": 1},
            {"id": "j-far", "kind": "post_poster", "campaign": CAMPAIGN, "site": far, "issued": 1},
            {"id": "j-fix", "kind": "maintain", "site": old}]}, cid="c-jobs-day"))
        hand_down(broker, signed("manifest", {"round": "r-day", "parcels": [
            {"parcel": first, "to": "Wang Fang"}, {"parcel": second, "to": "Zhao Lei"}],
            "retrieval": []}, cid="c-man-day"))
        page.wait_for_selector("#surveys .sv-approved")
        assert within(lambda: len(app.flows.view()["parcels"]) == 2, 10)
        assert within(lambda: app.outbox.count() == 0, 15)  # everything so far confirmed
        online_ids = {e["id"] for e in stored_events(gw.db)}
        online_photos = set(uploads(gw))
        ctx.close()

        # ---------------------------------------------------------- the box loses power
        gw.kill()
        broker.kill()
        assert within(lambda: not app.link.connected, 10)
        t_cut = time.monotonic()

        # ---- install the approved site: a shaky camera shot refused, the retake passes
        ctx = browser.new_context(viewport={"width": 420, "height": 860}, service_workers="block")
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.goto(app.web.url + "?lang=en")
        page.click("#tab-jobs")
        open_job(page, "j-inst")
        page.click("[data-action=pick]")
        page.click('[data-action=step][data-step="install_board"]')
        page.click('[data-action=step][data-step="post_poster"]')
        page.wait_for_selector('.step.here[data-step="photo"]')
        ctx.close()
        shaky = camera_page(pw, blurred_video)
        try:
            sctx, spage = shoot(shaky, app, "j-inst", "photo")
            assert spage.get_attribute("#msg", "data-ok") == "0", spage.inner_text("#msg")
            assert app.jobs.last_photo is not None and app.jobs.last_photo["quality"]["ok"] is False
            sctx.close()
        finally:
            shaky.close()
        ctx, page = shoot(browser, app, "j-inst", "photo")
        assert page.get_attribute("#msg", "data-ok") == "1", page.inner_text("#msg")
        page.wait_for_selector("#photo-result .quality[data-ok='1']")
        assert act(page, "[data-action=submit]") == "1"

        # ---- a poster photo 11 km from its site: refused with the distance and the tolerance
        open_job(page, "j-far")
        page.click("[data-action=pick]")
        page.click('[data-action=step][data-step="post_poster"]')
        page.wait_for_selector('.step.here[data-step="photo"]')
        assert upload_file(page, "j-far", "photo", photo_file(tmp_path, "far", 63)) == "0"
        assert "Too far from the board's site" in page.inner_text("#msg")
        assert "40 m allowed" in page.inner_text("#msg")

        # ---- a damaged board: the before photo, then the report with its condition
        open_job(page, "j-fix")
        page.click("[data-action=pick]")
        assert upload_file(page, "j-fix", "photo_before", photo_file(tmp_path, "before", 64)) == "1"
        page.wait_for_selector("#report-form")
        page.select_option("#report-form [name=condition]", "damaged")
        page.fill("#report-form [name=note]", "post snapped")
        page.click("#report-form button[type=submit]")
        page.wait_for_selector('#reports [data-condition="damaged"]')
        page.click("[data-action=close-job]")

        # ---- deliveries: a wedge burst opens the dialog, a second burst is queued meanwhile
        page.click("#tab-scan")
        page.click("[data-action=mode][data-mode=deliver]")
        page.wait_for_selector(".mode.sel[data-mode=deliver]")
        page.focus("#scan-form input")
        page.wait_for_timeout(TEST_BREAK_MS + 200)
        burst(page, first)
        page.wait_for_selector(f'#confirm[role=dialog][data-parcel="{first}"]')
        page.focus("#confirm [name=name]")
        page.wait_for_timeout(TEST_BREAK_MS + 200)
        burst(page, second)
        page.wait_for_selector("#wedge-queue[data-count='1']:not([hidden])")
        assert page.input_value("#confirm [name=name]") == ""  # the burst's keys taken back out
        assert page.get_attribute("#confirm", "data-parcel") == first

        # the recipient signs on the pad; the queued scan then opens the next dialog
        page.click("[data-action=sign-open]")
        page.wait_for_selector("#confirm.signing #sign-pad")
        stroke(page, [(0.1, 0.7), (0.2, 0.2), (0.3, 0.75), (0.4, 0.25), (0.5, 0.7)])
        stroke(page, [(0.55, 0.4), (0.7, 0.3), (0.8, 0.6), (0.9, 0.35)])
        page.click("[data-action=sign-submit]")
        page.wait_for_selector(f'#confirm[data-parcel="{second}"]')
        page.wait_for_selector("#wedge-queue[hidden]", state="attached")
        # typed at a person's speed (a name filled in within 0.3 s of the signature's
        # confirmation is refused by the scan filter's other-symbol window, "too_soon")
        page.focus("#confirm [name=name]")
        page.keyboard.type("Zhao Lei", delay=HUMAN_MS)
        page.click("#confirm button[type=submit]")
        page.wait_for_selector("#confirm", state="detached")
        states = {p["parcel"]: p["state"] for p in app.flows.view()["parcels"]}
        assert states == {first: "delivered", second: "delivered"}, states

        # ---- still offline: nothing reached the gateway; the pill says so with the count
        queued = app.outbox.count()
        assert queued >= 8, queued
        page.wait_for_selector("#link-pill[data-connected='0']")
        page.wait_for_selector(f"#link-pill[data-outbox='{queued}']")
        assert f"Offline · {queued} queued" in page.inner_text("#link-pill")
        assert {e["id"] for e in stored_events(gw.db)} == online_ids
        assert set(uploads(gw)) == online_photos
        # the install's retake, the damaged board's before photo and the signature wait
        assert within(lambda: (app.photos.status()["queue"] or {}).get("waiting") == 3, 10), \
            app.photos.status()
        queue = app.photos.status()["queue"] or {}
        print(f"offline for {time.monotonic() - t_cut:.1f} s: {queued} events queued, photos {queue}")

        # ---------------------------------------------------------- the box comes back
        broker.start()
        gw.restart()
        t_back = time.monotonic()
        assert within(lambda: app.outbox.count() == 0, 60), (app.outbox.count(), app.link.last_error)
        page.wait_for_selector("#link-pill[data-connected='1'][data-outbox='0']")
        print(f"events drained {time.monotonic() - t_back:.1f} s after the box came back")
        events = stored_events(gw.db)
        ids = Counter(e["id"] for e in events)
        assert [i for i, n in ids.items() if n > 1] == []  # each event stored once
        day = [e for e in events if e["id"] not in online_ids]
        kinds = Counter(e["type"] for e in day)
        assert kinds["handheld.site_survey"] == 0  # proposed before the cut, stored then
        submitted = [e["body"]["job"] for e in day if e["type"] == "handheld.job_submitted"]
        assert submitted == ["j-inst"], submitted
        [report] = [e["body"] for e in day if e["type"] == "handheld.board_condition"]
        assert (report["condition"], report["site"], len(report["photos"])) == ("damaged", "s-old", 1)
        hand = [e["body"] for e in day if e["type"] == "handheld.hand_delivery"]
        assert [(b["parcel"], b["method"]) for b in hand] == [(first, "signature"), (second, "name")]
        # in delivery mode a read is recorded when it is confirmed: one scan event per
        # wedge-scanned parcel, naming the wedge it was read by, not the form
        scans = [e["body"] for e in day if e["type"] == "handheld.scan"]
        assert [(b["code"], b["verdict"], b["source"]) for b in scans] == [
            (first, "good", "wedge"), (second, "good", "wedge")], scans
        assert kinds["handheld.photo"] == 2 and kinds["handheld.job_submitted"] == 1, kinds

        # every accepted photo once, the refused ones never
        accepted = {e["body"]["sha256"] for e in day if e["type"] == "handheld.photo"}
        assert len(accepted) == 2, accepted  # the install's retake, the damaged board's before
        expected = online_photos | accepted | {hand[0]["signature_sha256"]}
        assert within(lambda: set(uploads(gw)) == expected, 60), (app.photos.status(), uploads(gw))
        got = uploads(gw)
        assert len(got) == len(set(got)) == 4
        assert {p.name for p in photos_dir(gw.db).glob("*.jpg")} == {f"{s}.jpg" for s in expected}
        for sha in expected:
            assert hashlib.sha256(photo_path(gw.db, sha).read_bytes()).hexdigest() == sha
        # the refused shots left nothing behind on the handheld either
        kept = {p.stem for p in (app.state_dir / "photos").glob("*.jpg")}
        assert kept == online_photos | accepted, kept
        print(f"whole day: {time.monotonic() - t_start:.1f} s")
        ctx.close()
