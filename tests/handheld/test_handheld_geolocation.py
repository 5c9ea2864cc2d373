"""The browser's location as a position source (handheld/geolocation.py) in real Chromium.

Chromium's geolocation override (``context.set_geolocation`` with the permission granted)
stands in for the terminal's location service. The page posts each fix with its
accuracy; the app feeds it through the same gate as the NMEA receiver's
(handheld/position.py): a 50 m fix is refused and an evidence photo with it too, a 5 m
fix held for ``hold_s`` passes and is stamped on the evidence as ``browser``, and a jump
of 11 km between two fixes holds the gate although each fix is accurate. A browser
without the permission says so on the sync screen; bad input is refused and counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.broker import Mosquitto
from handheld.app import HandheldApp
from handheld.text import Refused
from handheld.webui import handle_post, serve
from simulator.imagegen import board_with_qr
from tests.handheld.conftest import Gateway
from tests.handheld.test_handheld_app import CAMPAIGN, jobs_args, jpeg, make_config, of_type

LAT, LON = 27.5, 109.9
HOLD_S = 1.0


@pytest.fixture
def app(tmp_path: Path, hbroker: Mosquitto, gw: Gateway) -> Iterator[HandheldApp]:
    a = HandheldApp(make_config(tmp_path, hbroker.port, geolocation=True,
                                gnss_gate={"hold_s": HOLD_S, "max_accuracy_m": 10.0}), ui=serve)
    a.start()  # no NMEA receiver: the browser is the only position source
    assert a.link.subscribed.wait(10)
    try:
        yield a
    finally:
        a.stop()


class Provider:
    """The terminal's location service, played by Chromium's override. An override is one
    fixed position with the timestamp of the moment it was set, so a live provider (a new
    measurement every second) is the override set again every second."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.where: dict[str, float] | None = None
        self.live = True
        self._at = 0.0

    def set(self, lat: float, lon: float, accuracy: float) -> None:
        self.where = {"latitude": lat, "longitude": lon, "accuracy": accuracy}
        self.ctx.set_geolocation(self.where)
        self._at = time.monotonic()

    def tick(self) -> None:
        if self.live and self.where is not None and time.monotonic() - self._at >= 1.0:
            self.set(**{"lat": self.where["latitude"], "lon": self.where["longitude"],
                        "accuracy": self.where["accuracy"]})


def wait_for(pred: Any, timeout: float = 15.0, provider: Provider | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if provider is not None:
            provider.tick()
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def keep(provider: Provider, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        provider.tick()
        time.sleep(0.1)


def flags(app: HandheldApp) -> list[str]:
    f = app.gnss_fix()
    return [] if f is None else f["flags"]


@pytest.mark.slow
def test_browser_fixes_go_through_the_gnss_gate(chromium: Any, app: HandheldApp, gw: Gateway) -> None:
    app.jobs.load_list(jobs_args())
    app.jobs.pick("j-17")
    app.jobs.do_step("j-17", "install_board")
    app.jobs.do_step("j-17", "post_poster")
    ctx = chromium.new_context(permissions=["geolocation"])
    loc = Provider(ctx)
    loc.set(LAT, LON, 50)
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(app.web.url + "?lang=en")
        # 50 m: refused by the same gate and message as a poor NMEA fix, and so is the photo
        wait_for(lambda: "accuracy_poor" in flags(app), provider=loc)
        fix = app.gnss_fix()
        assert fix is not None and not fix["ok"] and fix["source"] == "browser" and fix["accuracy_m"] == 50
        refused = app.photo("j-17", "photo", jpeg(board_with_qr(CAMPAIGN, seed=1)))
        assert not refused["ok"] and refused["code"] == "position_not_ready", refused
        page.click("#tab-sync")
        page.wait_for_selector("#sync-gnss[data-ok='0']")
        assert "10" in page.inner_text("#sync-gnss") and "browser location" in page.inner_text("#sync-gnss")

        # 5 m: passes once held for hold_s; the photo is stamped with the browser's position
        loc.set(LAT, LON, 5)
        t0 = time.monotonic()
        wait_for(lambda: (app.gnss_fix() or {}).get("ok"), provider=loc)
        assert time.monotonic() - t0 >= HOLD_S * 0.9  # not before the hold time
        page.wait_for_selector("#sync-gnss[data-ok='1']")
        assert "±5" in page.inner_text("#sync-gnss")
        good = app.photo("j-17", "photo", jpeg(board_with_qr(CAMPAIGN, seed=1)))
        assert good["ok"], good
        photo = wait_for(lambda: of_type(gw.events(), "handheld.photo"), provider=loc)[0]["body"]
        assert photo["pos_src"] == "browser" and photo["acc_cm"] == 500
        assert abs(photo["lat_e7"] - int(LAT * 1e7)) < 10

        # the provider stops measuring (the browser keeps handing back its last fix): the
        # fix goes stale and the gate closes, as for a receiver that stops updating
        loc.live = False
        wait_for(lambda: {"stale_timestamp", "stale_fix"} & set(flags(app)))
        assert not app.gnss_fix()["ok"]
        loc.live = True

        # 0.1 degree (11 km) in a few seconds: an impossible jump holds the gate although
        # the new fix itself is accurate, and it stays held while the position settles
        loc.set(LAT + 0.1, LON, 5)
        wait_for(lambda: "impossible_jump" in flags(app), provider=loc)
        keep(loc, 3.0)
        fix = app.gnss_fix()
        assert fix is not None and not fix["ok"] and "impossible_jump" in fix["flags"]
        assert fix["jump"]["distance_m"] > 10_000
        page.wait_for_selector("#sync-gnss[data-ok='0']")
        assert "jump" in page.inner_text("#sync-gnss").lower()
        assert app.status()["geolocation"]["fixes"] >= 4
    finally:
        ctx.close()


def test_a_browser_without_permission_and_bad_input(chromium: Any, app: HandheldApp) -> None:
    ctx = chromium.new_context()  # no permission granted: headless Chromium denies
    page = ctx.new_page()
    try:
        page.goto(app.web.url)
        wait_for(lambda: app.browser_pos is not None and app.browser_pos.error == "denied")
        page.click("#tab-sync")
        page.wait_for_selector("#sync-geo-error")
        assert "位置" in page.inner_text("#sync-geo-error")
        fix = app.gnss_fix()
        assert fix is not None and not fix["ok"]
    finally:
        ctx.close()
    for doc in ({"lat": 91, "lon": LON, "accuracy_m": 5, "age_ms": 0},
                {"lat": LAT, "lon": LON, "accuracy_m": float("nan"), "age_ms": 0},
                {"lat": True, "lon": LON, "accuracy_m": 5, "age_ms": 0},
                {"lat": LAT, "lon": LON, "accuracy_m": 5},
                {"error": 7}):
        with pytest.raises(Refused) as e:
            handle_post(app, ["api", "position"], {}, "application/json",
                        json.dumps(doc).encode())
        assert e.value.code == "bad_position" and "浏览器" in e.value.zh
    assert app.browser_pos is not None and app.browser_pos.refused["bad_position"] == 5
