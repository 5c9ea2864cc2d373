"""The whole 政讯通 lifecycle between a courier's handheld and the platform,
with the platform's review of its evidence photos.

Real parts all the way: the handheld app with its web UI driven over HTTP
(as the page does), a real Mosquitto and a paho client playing the outlet's
gateway (it confirms events and hands down commands), a real NMEA stream for
the position gate, photos drawn with OpenCV and read back with zxing-cpp; the
gateway's side then uploads what it received to the real central front
(embedded SQLite, HTTPS on a socket) and pulls the job lists the platform
signed for the handheld.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central.embedded import Embedded
from gateway.broker import Mosquitto
from handheld.app import HandheldApp
from handheld.text import Refused
from handheld.webui import TOKEN_HEADER, serve
from simulator.platform_keys import MASTER
from tests.central.test_boards import Rig
from tests.handheld.conftest import Gateway
from tests.handheld.test_handheld_app import board_with_qr, gnss_ready, jpeg, make_config

QR = "PE-CAMP:health-2026"


class Courier:
    """The handheld's UI API, as the page calls it."""

    def __init__(self, app: HandheldApp) -> None:
        assert app.web is not None
        self.ui = app.web
        self.port = app.web.port  # type: ignore[attr-defined]

    def call(self, method: str, path: str, doc: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = {TOKEN_HEADER: self.ui.token}  # type: ignore[attr-defined]
        body = raw
        if raw is not None:
            h["Content-Type"] = "image/jpeg"
        elif method == "POST":
            body = json.dumps(doc or {}).encode()
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, (json.loads(data) if r.headers.get("Content-Type", "").startswith("application/json")
                          else data.decode())

    def post(self, path: str, doc: Any = None) -> dict[str, Any]:
        status, res = self.call("POST", path, doc)
        assert status == 200, res
        return res

    def photo(self, job: str, step: str, img: Any) -> dict[str, Any]:
        status, res = self.call("POST", f"/api/jobs/{job}/photo?step={step}", raw=jpeg(img))
        assert status == 200, res
        return res

    def part(self, job: str = "", lang: str = "en") -> str:
        status, html = self.call("GET", f"/part?name=jobs&lang={lang}&job={job}")
        assert status == 200
        return html


class Outlet:
    """The gateway's two directions: the handheld's events up to the platform, commands down."""

    def __init__(self, gw: Gateway, rig: Rig) -> None:
        self.gw, self.rig = gw, rig
        self.sent: set[str] = set()
        self.cursor = 0
        self.acked: set[str] = set()

    def upload(self) -> int:
        with self.gw.cond:
            rows = [(json.loads(p)["id"], p) for t, p in self.gw.msgs if t.endswith("/evt")]
        new = [(i, p) for i, p in rows if i not in self.sent]
        if new:
            self.rig.upload(new)
            self.sent.update(i for i, _ in new)
        return len(new)

    def deliver(self) -> None:
        """Pull the platform's commands and hand the handheld's to it; wait for its acks."""
        cmds = [c for k, c in self.rig.pull(self.cursor) if k == "handheld"]
        for c in cmds:
            if c["id"] not in self.acked:
                self.gw.command(c)
        assert self.gw.wait(lambda: {c["id"] for c in cmds} <= {a["id"] for a in self.gw.acks()})
        bad = [a for a in self.gw.acks() if a["id"] in {c["id"] for c in cmds} and not a.get("ok")]
        assert not bad, bad
        self.acked.update(c["id"] for c in cmds)


@pytest.fixture
def world(tmp_path: Path, hbroker: Mosquitto,
          gw: Gateway) -> Iterator[tuple[HandheldApp, Courier, Outlet, Rig]]:
    backend = Embedded(tmp_path / "central" / "data")
    rig = Rig(tmp_path / "central", backend, master=MASTER)  # the platform signs with the keys hh01 trusts
    app = HandheldApp(make_config(tmp_path, hbroker.port), ui=serve)
    app.gnss = gnss_ready()  # a held fix at 27.5 N, 109.9 E
    app.start()
    try:
        assert app.link.subscribed.wait(10)
        yield app, Courier(app), Outlet(gw, rig), rig
    finally:
        app.stop()
        rig.close()
        backend.close()


def job_of(rig: Rig, jid: str) -> dict[str, Any]:
    return next(j for j in rig.view()["jobs"] if j["id"] == jid)


@pytest.mark.slow
def test_board_lifecycle_from_survey_to_install_and_maintenance(
        world: tuple[HandheldApp, Courier, Outlet, Rig]) -> None:
    app, hh, outlet, rig = world
    boards = rig.front.boards
    assert boards is not None
    campaign = {"id": "health-2026", "poster": "Health", "qr": QR}
    assert rig.call("POST", "/v1/boards/campaigns", campaign)[0] == 201

    # ---- survey on the courier's own initiative: the spot, a photo, the notes
    started = hh.post("/api/jobs/new/survey", {"village": "Xiakou", "landmark": "clinic wall",
                                               "notes": "dry"})
    sv = started["job"]
    assert started["ok"] and "photograph the spot" in started["en"]
    assert hh.photo(sv, "photo_site", board_with_qr(None, seed=21))["ok"]
    sent = hh.post(f"/api/jobs/{sv}/submit")
    assert sent["ok"] and "waiting for the platform" in sent["en"]
    assert app.jobs.surveys()[0]["status"] == "waiting"
    assert "waiting for approval" in hh.part() and "等待批准" in hh.part(lang="zh")
    assert outlet.gw.wait(lambda: any(e["type"] == "handheld.site_survey" for e in outlet.gw.events()))
    outlet.upload()
    site = next(s for s in rig.view()["sites"] if s["id"] == sv)
    assert (site["status"], site["village"], site["lat_e7"]) == ("proposed", "Xiakou", 275_000_000)

    # ---- the dispatcher approves; an install job goes down in a signed list with the site registry
    assert rig.call("POST", f"/v1/boards/sites/{sv}/approve")[0] == 200
    status, res = rig.call("POST", "/v1/boards/jobs", {"kind": "install", "outlet": "o1", "device": "hh01",
                                                        "site": sv, "campaign": "health-2026"})
    assert status == 201
    install = res["job"]
    assert rig.call("POST", "/v1/boards/send/o1/hh01")[1]["jobs"] == 1
    outlet.deliver()
    assert app.jobs.surveys()[0]["status"] == "approved"
    assert [s["id"] for s in app.jobs.sites()] == [sv]
    page = hh.part(install)
    assert "issued" in page and "Job list: just now" in page and "Locker permits: never received" in page

    # ---- install it: the wrong poster is refused, then the right one passes
    hh.post(f"/api/jobs/{install}/pick")
    hh.post(f"/api/jobs/{install}/step", {"step": "install_board"})
    hh.post(f"/api/jobs/{install}/step", {"step": "post_poster"})
    wrong = hh.photo(install, "photo", board_with_qr("PE-CAMP:flu-2024", seed=22))
    assert not wrong["ok"] and wrong["code"] == "campaign_wrong"
    good_img = board_with_qr(QR, seed=23)
    good = hh.photo(install, "photo", good_img)
    assert good["ok"], good
    assert hh.post(f"/api/jobs/{install}/submit")["ok"]
    assert outlet.gw.wait(lambda: any(e["type"] == "handheld.job_submitted" for e in outlet.gw.events()))
    outlet.upload()
    view = rig.view()
    [review] = [r for r in view["reviews"] if r["job"] == install]
    assert (review["verdict"], review["reason"]) == ("accepted", "ok") and review["sha"] == good["sha256"]
    assert job_of(rig, install)["status"] == "done"
    assert next(s for s in view["sites"] if s["id"] == sv)["status"] == "installed"

    # ---- a site far from where the courier stands: the photo is refused with the distance
    boards.add_site("s-far", "o1", "Shangpo", 276_000_000, 1_099_000_000, name="Shangpo shop", tol_m=40,
                    status="installed")
    poster = boards.add_job("post_poster", "o1", "hh01", "s-far", "health-2026")
    maint = boards.add_job("maintain", "o1", "hh01", sv)
    gone = boards.add_job("maintain", "o1", "hh01", "s-far")
    rig.call("POST", "/v1/boards/send/o1/hh01")
    outlet.deliver()
    hh.post(f"/api/jobs/{poster}/pick")
    hh.post(f"/api/jobs/{poster}/step", {"step": "post_poster"})
    far = hh.photo(poster, "photo", board_with_qr(QR, seed=24))
    assert not far["ok"] and far["code"] == "far_from_site" and far["tolerance_m"] == 40
    assert 11_000 < far["distance_m"] < 11_300 and "40 m allowed" in far["en"] and "允许 40 米" in far["zh"]

    # ---- the same picture again for another job: a duplicate, refused
    hh.post(f"/api/jobs/{maint}/pick")
    dup = hh.photo(maint, "photo_before", good_img)
    assert not dup["ok"] and "duplicate" in dup["code"]

    # ---- maintenance: before photo, a damaged board reported, after photo kept in its pair
    assert hh.photo(maint, "photo_before", board_with_qr(QR, seed=25))["ok"]
    rep = hh.post(f"/api/jobs/{maint}/report", {"condition": "damaged", "note": "post snapped"})
    assert rep["ok"] and rep["en"] == "Reported: Board damaged" and rep["zh"] == "已报告：公告栏损坏"
    bad = hh.call("POST", f"/api/jobs/{maint}/report", {"condition": "on_fire"})[1]
    assert bad["code"] == "bad_condition"
    hh.post(f"/api/jobs/{maint}/step", {"step": "maintain"})
    assert hh.photo(maint, "photo_after", board_with_qr(QR, seed=26))["ok"]
    page = hh.part(maint)
    assert 'id="pair"' in page and "Board damaged" in page
    assert hh.post(f"/api/jobs/{maint}/submit")["ok"]

    # ---- could not complete, with its reason
    res = hh.post(f"/api/jobs/{gone}/cannot", {"reason": "no_access", "note": "road flooded"})
    assert res["ok"] and res["en"] == "Recorded as not completed: No access"
    assert hh.call("POST", f"/api/jobs/{gone}/cannot", {"reason": "no_access"})[1]["code"] == "job_done"
    assert "road flooded" in hh.part(gone)

    assert outlet.gw.wait(lambda: sum(e["type"] in ("handheld.job_submitted", "handheld.job_not_done")
                                      for e in outlet.gw.events()) >= 3)
    outlet.upload()
    view = rig.view()
    [report] = view["reports"]
    assert (report["cond"], report["site"], report["note"]) == ("damaged", sv, "post snapped")
    pair = [r for r in view["reviews"] if r["job"] == maint]
    assert {r["step"] for r in pair} == {"photo_before", "photo_after"}
    assert len({r["pair"] for r in pair}) == 1 and all(r["verdict"] == "accepted" for r in pair)
    assert job_of(rig, maint)["status"] == "done"
    assert (job_of(rig, gone)["status"], job_of(rig, gone)["reason"]) == ("could_not_complete", "no_access")
    assert job_of(rig, poster)["status"] == "sent"  # nothing accepted for it yet


@pytest.mark.slow
def test_board_rules_on_the_handheld_alone(tmp_path: Path) -> None:
    """Without a network (the broker is not there): the distance gate (refused with the
    platform's tolerance, only flagged without one), condition codes, reasons, survey
    details, and everything waits in the outbox."""
    from common.ports import free_port

    app = HandheldApp(make_config(tmp_path, free_port()))
    app.gnss = gnss_ready()
    app.start()
    try:
        far = {"id": "s-far", "name": "far", "lat_e7": 276_000_000, "lon_e7": 1_099_000_000}
        app.jobs.load_list({"round": "r-1", "sites": [{**far, "tol_m": 40}], "jobs": [
            {"id": "j-strict", "kind": "maintain", "site": {**far, "tol_m": 40}},
            {"id": "j-loose", "kind": "maintenance", "site": far},
            {"id": "j-sv", "kind": "survey", "village": "Xiakou"}]})
        assert {j["id"]: j["kind"] for j in app.jobs.list()}["j-strict"] == "maintenance"
        app.jobs.pick("j-strict")
        r = app.photo("j-strict", "photo_before", jpeg(board_with_qr(QR, seed=41)))
        assert not r["ok"] and r["code"] == "far_from_site" and r["retake"] and app.index.count() == 0
        app.jobs.pick("j-loose")
        r = app.photo("j-loose", "photo_before", jpeg(board_with_qr(QR, seed=42)))
        assert r["ok"] and "far_unverified" in r["flags"]
        with pytest.raises(Refused) as e:
            app.jobs.report("j-strict", "damaged")
        assert e.value.code == "report_needs_photo"
        with pytest.raises(Refused) as e:
            app.jobs.report("j-loose", "graffiti")
        assert e.value.code == "bad_condition"
        with pytest.raises(Refused) as e:
            app.jobs.cannot("j-loose", "lazy")
        assert e.value.code == "bad_reason"
        # a platform survey job: no submit without the survey details
        app.jobs.pick("j-sv")
        assert app.photo("j-sv", "photo_site", jpeg(board_with_qr(None, seed=43)))["ok"]
        with pytest.raises(Refused) as e:
            app.jobs.submit("j-sv")
        assert e.value.code == "need_steps"
        with pytest.raises(Refused) as e:
            app.jobs.propose("")
        assert e.value.code == "bad_survey"
        app.jobs.propose("Xiakou", "well", job="j-sv")
        assert app.jobs.submit("j-sv")["ok"]
        # an unplanned visit to a cached site; a site this handheld does not know is refused
        assert app.jobs.adhoc("s-far")["job"].startswith("adhoc-hh01-")
        with pytest.raises(Refused) as e:
            app.jobs.adhoc("s-nowhere")
        assert e.value.code == "no_site"
        assert app.outbox.count() >= 4  # arrive x3, photo, survey: all held for days if need be
        assert app.jobs.surveys()[0]["status"] == "waiting"
    finally:
        app.stop()
