"""政讯通 on the platform (central/boards.py): campaigns, the site registry,
jobs signed for a handheld, and the review of evidence photos.

Real parts: each backend (the embedded one's SQLite file; the scale-out
one's NATS JetStream cluster, an ingest worker and PostgreSQL), the aiohttp
front over HTTPS on a real socket; the courier's events arrive as a gateway
sends them (a batch to ``/v1/batches``), the dispatcher works through
``/v1/boards``.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from central import front
from central.boards import Boards, distance_m
from central.embedded import Embedded
from central.keys import KeyService
from central.scaleout.local import LocalCluster
from common.pki import make_outlet_pki
from common.uplink_codec import CONTENT_TYPE, decode_down, encode_batch
from protocol import envelope, signing
from protocol.ids import format_event_id

PW = "o1-secret-pw"
MASTER = bytes(range(32))
CAMPAIGN_QR = "PE-CAMP:health-2026"
LAT, LON = 275_000_000, 1_099_000_000  # the surveyed spot


class Rig:
    def __init__(self, tmp: Path, backend: Any, settle: Callable[[], None] = lambda: None,
                 master: bytes = MASTER) -> None:
        """``settle``: until what the front took is where the review reads it
        (on scale-out: through the log and a worker into PostgreSQL)."""
        pki = make_outlet_pki(tmp / "pki", "central")
        self.backend = backend
        self.settle = settle
        self.backend.add_outlet("o1", PW)
        self.backend.add_dispatcher("disp", "dispatcher-pw-1")
        self.srv, self.front = front.serve(self.backend, "127.0.0.1", 0, str(pki.server.cert),
                                           str(pki.server.key), master=master)
        self.ctx = ssl.create_default_context(cafile=str(pki.ca))
        self.seq = 0

    def call(self, method: str, path: str, doc: Any = None, body: bytes | None = None,
             user: str = "disp:dispatcher-pw-1", headers: dict[str, str] | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.srv.address[1], context=self.ctx, timeout=30)
        h = {"Authorization": "Basic " + base64.b64encode(user.encode()).decode(), **(headers or {})}
        if doc is not None:
            body = json.dumps(doc).encode()
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        try:
            return r.status, json.loads(data) if data else None
        except ValueError:
            return r.status, data

    def courier(self, etype: str, body: dict[str, Any], cls: str = "audit") -> str:
        """One handheld event up through the front, as the outlet's gateway uploads it."""
        self.seq += 1
        eid = format_event_id("hh01", "c0ffee01", self.seq)
        self.upload([(eid, envelope.encode(envelope.make(eid, int(time.time()), etype, cls, body, boot=1)))])
        return eid

    def upload(self, rows: list[tuple[str, bytes]]) -> None:
        """Events (id, envelope bytes) in one batch, as the outlet's gateway uploads them."""
        b = encode_batch("o1", "bulk", rows)
        status, data = self.call("POST", "/v1/batches", body=b.body, user=f"o1:{PW}", headers={
            "Content-Type": CONTENT_TYPE, "Content-Encoding": "deflate", "X-Postedge-Batch": b.id,
            "X-Postedge-Outlet": "o1"})
        assert status == 200 and data["all"], data
        self.settle()

    def pull(self, after: int = 0) -> list[tuple[str, dict[str, Any]]]:
        """What the outlet's gateway pulls: (device kind, command)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.srv.address[1], context=self.ctx, timeout=30)
        conn.request("GET", "/v1/batches", headers={"Authorization": "Basic " + base64.b64encode(
            f"o1:{PW}".encode()).decode(), "X-Postedge-After": str(after)})
        down = decode_down(conn.getresponse().read())
        conn.close()
        return [(k, json.loads(raw)) for k, raw in down.commands]

    def view(self) -> dict[str, Any]:
        status, doc = self.call("GET", "/v1/boards")
        assert status == 200, doc
        return doc

    def close(self) -> None:
        self.srv.stop()


@pytest.fixture(params=["embedded", pytest.param("scaleout", marks=pytest.mark.slow)])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    if request.param == "embedded":
        backend = Embedded(tmp_path / "central")
        r = Rig(tmp_path, backend)
        try:
            yield r
        finally:
            r.close()
            backend.close()
        return
    from central.scaleout import ScaleOut, ScaleOutConfig
    from central.scaleout.worker import WorkerThread

    so: LocalCluster = request.getfixturevalue("scaleout_rig")
    ns, dsn = so.namespace("b")
    cfg = ScaleOutConfig(so.nats.urls, dsn, ns, ack_wait_s=5.0)
    scale = ScaleOut(cfg)
    worker = WorkerThread(cfg)
    r = Rig(tmp_path, scale, scale.wait_written)
    try:
        yield r
    finally:
        r.close()
        worker.stop()
        scale.bridge.run(scale.js.delete_stream(cfg.stream), 10)
        scale.close()


def photo(sha: str, job: str, site: str, step: str, lat: int = LAT, lon: int = LON,
          qr: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"sha256": sha * 64 if len(sha) == 1 else sha, "job": job, "site": site, "step": step,
            "lat_e7": lat, "lon_e7": lon, "acc_cm": 250, "taken_at": int(time.time()),
            **({"qr": qr} if qr is not None else {}), **extra}


def by_event(doc: dict[str, Any], eid: str) -> dict[str, Any]:
    return next(r for r in doc["reviews"] if r["event"] == eid)


def test_distance_is_metres_on_the_ground() -> None:
    # 0.001 degree of latitude is about 111 m anywhere
    assert 110.0 < distance_m(LAT, LON, LAT + 10_000, LON) < 112.0
    assert distance_m(LAT, LON, LAT, LON) == 0.0


def test_survey_approved_then_installed_and_the_job_list_is_signed_for_the_handheld(rig: Rig) -> None:
    assert rig.call("POST", "/v1/boards/campaigns", {"id": "health-2026", "poster": "Health check 2026",
                                                      "qr": CAMPAIGN_QR})[0] == 201
    # a courier's own survey, then a dispatcher's approval
    rig.courier("handheld.site_survey", {"survey": "sv-hh01-1", "lat_e7": LAT, "lon_e7": LON, "acc_cm": 300,
                                         "village": "Xiakou", "landmark": "clinic wall", "notes": "dry",
                                         "photos": ["a" * 64]})
    doc = rig.view()
    site = next(s for s in doc["sites"] if s["id"] == "sv-hh01-1")
    assert site["status"] == "proposed" and site["village"] == "Xiakou" and site["proposed_by"] == "hh01"
    # an install job is refused until the site is approved
    status, err = rig.call("POST", "/v1/boards/jobs", {"kind": "install", "outlet": "o1", "device": "hh01",
                                                        "site": "sv-hh01-1", "campaign": "health-2026"})
    assert (status, err["error"]) == (409, "bad_status")
    assert rig.call("POST", "/v1/boards/sites/sv-hh01-1/approve")[0] == 200
    status, res = rig.call("POST", "/v1/boards/jobs", {"kind": "install", "outlet": "o1", "device": "hh01",
                                                        "site": "sv-hh01-1", "campaign": "health-2026"})
    assert status == 201
    jid = res["job"]
    status, sent = rig.call("POST", "/v1/boards/send/o1/hh01")
    assert status == 200 and sent["jobs"] == 1
    # the gateway pulls a command signed with hh01's own key, holding the job and the site registry
    kind, cmd = rig.pull()[-1]
    assert kind == "handheld" and cmd["op"] == "jobs" and cmd["dev"] == "hh01"
    assert signing.verify(cmd, {1: KeyService("o1", MASTER).key("hh01")}, "hh01", int(time.time()),
                          signing.ReplayGuard(8))["args"]["jobs"][0]["campaign"] == CAMPAIGN_QR
    assert [s["id"] for s in cmd["args"]["sites"]] == ["sv-hh01-1"]

    # the courier does it: photo near the site with the right poster, then submits
    e = rig.courier("handheld.photo", photo("b", jid, "sv-hh01-1", "photo", lat=LAT + 100, qr=[CAMPAIGN_QR]))
    rig.courier("handheld.job_submitted", {"job": jid, "site": "sv-hh01-1", "kind": "install",
                                           "photos": ["b" * 64]})
    doc = rig.view()
    r = by_event(doc, e)
    assert (r["verdict"], r["reason"]) == ("accepted", "ok") and r["distance_m"] < 2
    assert next(j for j in doc["jobs"] if j["id"] == jid)["status"] == "done"
    site = next(s for s in doc["sites"] if s["id"] == "sv-hh01-1")
    assert site["status"] == "installed" and site["poster"] == "health-2026"


def _installed(rig: Rig) -> str:
    boards = rig.front.boards
    assert boards is not None
    boards.add_campaign("health-2026", "Health check 2026", CAMPAIGN_QR)
    boards.add_site("s-01", "o1", "Xiakou", LAT, LON, tol_m=30)
    return boards.add_job("install", "o1", "hh01", "s-01", "health-2026")


def test_a_photo_far_from_the_site_is_refused_with_its_reason(rig: Rig) -> None:
    jid = _installed(rig)
    far = rig.courier("handheld.photo", photo("c", jid, "s-01", "photo", lat=LAT + 5_000, qr=[CAMPAIGN_QR]))
    nopos = rig.courier("handheld.photo", {**photo("d", jid, "s-01", "photo", qr=[CAMPAIGN_QR]),
                                           "lat_e7": None})
    rig.courier("handheld.job_submitted", {"job": jid, "site": "s-01", "kind": "install"})
    doc = rig.view()
    r = by_event(doc, far)
    assert (r["verdict"], r["reason"]) == ("refused", "far_from_site") and 50 < r["distance_m"] < 60
    assert by_event(doc, nopos)["reason"] == "no_position"
    job = next(j for j in doc["jobs"] if j["id"] == jid)
    assert (job["status"], job["reason"]) == ("refused", "far_from_site")
    assert next(s for s in doc["sites"] if s["id"] == "s-01")["status"] == "approved"


def test_wrong_or_missing_campaign_qr_refused_duplicate_photo_refused(rig: Rig) -> None:
    jid = _installed(rig)
    wrong = rig.courier("handheld.photo", photo("e", jid, "s-01", "photo", qr=["PE-CAMP:flu-2024"]))
    missing = rig.courier("handheld.photo", photo("f", jid, "s-01", "photo", qr=[]))
    url = rig.courier("handheld.photo", photo("1", jid, "s-01", "photo",
                                              qr=["https://zxt.example.cn/c/" + CAMPAIGN_QR]))
    # the same picture claimed again for another job's step: a duplicate
    other = rig.front.boards.add_job("install", "o1", "hh01", "s-01", "health-2026")  # type: ignore[union-attr]
    dup = rig.courier("handheld.photo", photo("1", other, "s-01", "photo", qr=[CAMPAIGN_QR]))
    doc = rig.view()
    assert by_event(doc, wrong)["reason"] == "campaign_wrong"
    assert by_event(doc, missing)["reason"] == "campaign_missing"
    assert by_event(doc, url)["reason"] == "ok"
    assert (by_event(doc, dup)["verdict"], by_event(doc, dup)["reason"]) == ("refused", "duplicate")
    # a photo event resent (same event id) is reviewed once
    assert rig.front.boards.run_once() == 0  # type: ignore[union-attr]
    assert len(doc["reviews"]) == 4


def test_damaged_board_report_and_could_not_complete_reach_the_review(rig: Rig) -> None:
    boards = rig.front.boards
    assert boards is not None
    boards.add_site("s-02", "o1", "Shangpo", LAT, LON, status="installed")
    jid = boards.add_job("maintain", "o1", "hh01", "s-02")
    before = rig.courier("handheld.photo", photo("2", jid, "s-02", "photo_before", pair=f"{jid}:1"))
    rig.courier("handheld.board_condition", {"job": jid, "site": "s-02", "condition": "damaged",
                                             "note": "post snapped", "photos": ["2" * 64]})
    rig.courier("handheld.board_condition", {"job": jid, "site": "s-02", "condition": "on_fire"})
    other = boards.add_job("maintain", "o1", "hh01", "s-02")
    rig.courier("handheld.job_not_done", {"job": other, "site": "s-02", "reason": "no_access",
                                          "note": "road flooded"})
    doc = rig.view()
    assert by_event(doc, before)["pair"] == f"{jid}:1"
    [rep] = doc["reports"]  # the bad condition code is not recorded
    assert rep["cond"] == "damaged" and rep["site"] == "s-02" and rep["photos"] == ["2" * 64]
    assert next(s for s in doc["sites"] if s["id"] == "s-02")["cond"] == "damaged"
    j = next(j for j in doc["jobs"] if j["id"] == other)
    assert (j["status"], j["reason"]) == ("could_not_complete", "no_access")


def test_the_board_routes_need_a_dispatcher_and_say_what_is_wrong(rig: Rig) -> None:
    assert rig.call("GET", "/v1/boards", user=f"o1:{PW}")[0] == 401  # an outlet is no dispatcher
    assert rig.call("GET", "/v1/boards", user="disp:wrong")[0] == 401
    status, err = rig.call("POST", "/v1/boards/jobs", {"kind": "paint", "outlet": "o1", "device": "hh01"})
    assert (status, err["error"]) == (400, "bad_kind")
    status, err = rig.call("POST", "/v1/boards/sites", {"id": "s-9"})
    assert (status, err["error"]) == (400, "bad_request")
    assert rig.call("POST", "/v1/boards/sites/nope/approve")[1]["error"] == "unknown_site"
    assert rig.front.counts["unauthorized"] == 2


def test_boards_keep_their_tables_in_the_embedded_file(tmp_path: Path) -> None:
    b = Embedded(tmp_path / "c")
    Boards(b).add_site("s-1", "o1", "V", LAT, LON)
    b.close()
    b = Embedded(tmp_path / "c")
    try:
        assert Boards(b).site("s-1")["status"] == "approved"  # type: ignore[index]
    finally:
        b.close()


def test_the_openapi_file_lists_the_board_routes_the_front_serves(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    spec = json.loads((root / "central" / "contract" / "openapi.json").read_text())
    documented = {(m.upper(), p) for p, ops in spec["x-dispatcher-paths"].items() for m in ops}
    b = Embedded(tmp_path / "c")
    try:
        served = set()
        for route in front.Front(b, boards=Boards(b)).app().router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path") or info.get("formatter", "")
            if path.startswith("/v1/boards"):
                served.add((route.method, path))
    finally:
        b.close()
    assert documented == served
