"""The dispatcher's page in Debian's chromium (Playwright) over the central
service's real HTTPS front: sign in, see the outlets' health, review the
evidence photos (a duplicate claim flagged, a rejection needs a reason), and
a cross-site form changes nothing; the page says what needs doing: open
alarms until the clerk's resolution arrives, how far behind an outlet is,
and the 政讯通 campaigns, sites, jobs and verdicts, in zh (no English words)
and en."""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from central import front
from central.boards import Boards
from central.dispatch import Dispatch
from central.embedded import Embedded
from common.pki import make_outlet_pki
from common.uplink_codec import encode_batch
from common.web_server import ThreadedServer
from tests.central.test_contract import events

pytestmark = pytest.mark.browser


@dataclass
class Store:
    """A backend under test: what it is, and how to wait until what it was
    given is where its readers look (on scale-out: through the log and a
    worker into PostgreSQL)."""

    b: Any
    settle: Callable[[], None]


@pytest.fixture(params=["embedded", pytest.param("scaleout", marks=pytest.mark.slow)])
def store_of(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The page's store: the embedded backend, or the scale-out one (NATS
    JetStream, an ingest worker, PostgreSQL)."""
    if request.param == "embedded":
        b = Embedded(tmp_path / "central")
        try:
            yield Store(b, lambda: None)
        finally:
            b.close()
        return
    from central.scaleout import ScaleOut, ScaleOutConfig
    from central.scaleout.worker import WorkerThread

    so = request.getfixturevalue("scaleout_rig")
    ns, dsn = so.namespace("p")
    cfg = ScaleOutConfig(so.nats.urls, dsn, ns, ack_wait_s=5.0)
    scale = ScaleOut(cfg)
    worker = WorkerThread(cfg)
    try:
        yield Store(scale, scale.wait_written)
    finally:
        worker.stop()
        scale.bridge.run(scale.js.delete_stream(cfg.stream), 10)
        scale.close()


# The page in both languages on the embedded backend; on scale-out in Chinese
# only: the words are the page's, the store is what differs.
BACKEND_LANGS = [("embedded", "zh"), ("embedded", "en"),
                 pytest.param("scaleout", "zh", marks=pytest.mark.slow)]


def handheld_commands(b: Any, outlet: str) -> int:
    """How many commands wait for the outlet's handhelds."""
    return sum(1 for kind, _ in b.pull(outlet, 0, 10_000)[1] if kind == "handheld")


@pytest.fixture
def service(tmp_path: Path, store_of: Store) -> Iterator[tuple[str, Any]]:
    pki = make_outlet_pki(tmp_path / "pki", "central")
    b = store_of.b
    b.add_outlet("o1", "o1-password-x")
    b.add_outlet("o2", "o2-password-x")
    b.add_dispatcher("wang", "dispatch-pass-1")
    from central.intake import check_batch

    rows = events("lk01", 12)
    enc = encode_batch("o1", "bulk", rows)
    b.store("o1", check_batch("o1", enc.id, enc.body))
    store_of.settle()
    photo = b"\xff\xd8" + bytes(3000)
    sha = hashlib.sha256(photo).hexdigest()
    for outlet, job, site, hh in (("o1", "j1", "s1", "hh01"), ("o2", "j9", "s7", "hh02")):
        meta = {"job": job, "site": site, "step": "install", "device": hh}
        b.photo_begin(outlet, sha, len(photo), 4096, meta)
    assert b.photo_chunk(sha, 0, photo, hashlib.sha256(photo).hexdigest())
    srv, _ = front.serve(b, "127.0.0.1", 0, str(pki.server.cert), str(pki.server.key))
    try:
        yield f"https://127.0.0.1:{srv.address[1]}", b
    finally:
        srv.stop()


@pytest.mark.parametrize(("store_of", "lang"), BACKEND_LANGS, indirect=["store_of"])
def test_a_dispatcher_signs_in_sees_outlets_and_reviews_a_photo(
        service: tuple[str, Any], chromium: Any, lang: str) -> None:
    url, b = service
    zh = lang == "zh"
    ctx = chromium.new_context(viewport={"width": 1024, "height": 768}, ignore_https_errors=True)
    page = ctx.new_page()
    page.goto(f"{url}/dispatch?lang={lang}")
    page.fill("input[name=name]", "wang")
    page.fill("input[name=password]", "wrong-password")
    page.click("form.login button")
    assert page.locator(".message").inner_text() == ("账号或密码不对" if zh else "Wrong name or password")
    page.fill("input[name=name]", "wang")
    page.fill("input[name=password]", "dispatch-pass-1")
    page.click("form.login button")
    rows = page.locator("#outlets tbody tr")
    assert rows.count() == 2
    first = rows.nth(0).inner_text()
    assert "o1" in first and "12" in first
    assert ("超过 24 小时没有上传" if lang == "zh" else "no upload for over 24 h") in rows.nth(1).inner_text()
    photo = page.locator("li.photo")
    assert photo.count() == 1
    assert ("同一张照片被用于不同任务或点位" if zh else "same photo was submitted") in photo.inner_text()
    # a rejection without a reason is refused, with a reason it is kept
    photo.locator("button[value=rejected]").click()
    assert page.locator(".message").inner_text() == ("退回时请写明原因" if zh else "Write why when rejecting")
    page.locator("li.photo input[name=reason]").fill("照片模糊")
    page.locator("li.photo button[value=rejected]").click()
    assert "照片模糊" in page.locator("li.photo .verdict").inner_text()
    (review,) = b.photos_for_review()
    assert (review["verdict"], review["reason"], review["by"]) == ("rejected", "照片模糊", "wang")
    cookies = {c["name"]: c for c in ctx.cookies()}
    c = cookies["pe_dispatch"]
    assert c["httpOnly"] and c["secure"] and c["sameSite"] == "Strict" and c["path"] == "/dispatch"
    ctx.close()


def test_a_cross_site_form_changes_nothing(service: tuple[str, Any], chromium: Any,
                                            tmp_path: Path) -> None:
    url, b = service
    ctx = chromium.new_context(ignore_https_errors=True)
    page = ctx.new_page()
    page.goto(f"{url}/dispatch?lang=en")
    page.fill("input[name=name]", "wang")
    page.fill("input[name=password]", "dispatch-pass-1")
    page.click("form.login button")
    sha = page.locator("li.photo").get_attribute("data-sha")
    # the same request as the page's own form, with the session's cookie but not its CSRF token
    r = ctx.request.post(f"{url}/dispatch/review", form={"sha": sha, "verdict": "accepted", "csrf": "guess"},
                         max_redirects=0)
    assert r.status == 403
    assert [p["verdict"] for p in b.photos_for_review()] == [None]
    # and the page itself does not send its cookie to another site's form
    evil = tmp_path / "evil.html"
    evil.write_text(f'<form id=f method=post action="{url}/dispatch/review">'
                    f'<input name=sha value="{sha}"><input name=verdict value=accepted></form>'
                    "<script>document.getElementById('f').submit()</script>")
    page.goto(evil.as_uri())
    page.wait_for_load_state()
    assert [p["verdict"] for p in b.photos_for_review()] == [None]
    assert json.dumps(ctx.cookies())  # the session is still there: nothing was done with it
    ctx.close()


# ------------------------------------------------------------ what needs doing: alarms, backlog, boards

MASTER = bytes(range(32))
CAMP_QR = "PE-CAMP:health-2026"
LAT, LON = 275_000_000, 1_099_000_000


def envelopes(device: str, rows: list[tuple[int, str, str, dict[str, Any]]],
              inc: str = "c0ffee01") -> list[tuple[str, bytes]]:
    """(seq, type, class, body) as a device's envelopes stamped with the wall clock."""
    from protocol import envelope
    from protocol.ids import format_event_id

    out = []
    for seq, etype, cls, body in rows:
        eid = format_event_id(device, inc, seq)
        out.append((eid, envelope.encode(envelope.make(eid, int(time.time()) - body.pop("_age_s", 0), etype,
                                                       cls, body, boot=1))))
    return out


def upload(s: Store, outlet: str, rows: list[tuple[str, bytes]], lane: str = "bulk") -> None:
    from central.intake import check_batch

    enc = encode_batch(outlet, lane, rows)
    s.b.store(outlet, check_batch(outlet, enc.id, enc.body))
    s.settle()


@pytest.fixture
def county(tmp_path: Path, store_of: Store) -> Iterator[tuple[str, Store, Boards]]:
    """Two outlets, one with a backlog three hours deep and an open alarm; a
    campaign, three sites (installed, approved, proposed), an install job
    whose photo was taken too far away, and a handheld's new job to send.
    The front is wired as ``postedge central run`` should: the page and
    ``/v1/boards`` share one registry that holds the master key."""
    pki = make_outlet_pki(tmp_path / "pki", "central")
    b = store_of.b
    for o in ("o1", "o2"):
        b.add_outlet(o, f"{o}-password-x")
    b.add_dispatcher("wang", "dispatch-pass-1")
    boards = Boards(b, MASTER)
    boards.add_campaign("health-2026", "健康知识宣传", CAMP_QR)
    boards.add_site("s1", "o1", "石门村", LAT, LON, name="村委会门口", status="installed")
    boards.set_revisit("s1", 30)
    boards.add_site("s2", "o1", "石门村", LAT + 20_000, LON, name="小卖部旁")
    boards.add_site("s3", "o1", "龙潭村", LAT + 90_000, LON, name="桥头", status="proposed")
    boards.add_job("install", "o1", "hh01", site="s2", campaign="health-2026", jid="bj-1")
    boards.add_job("maintain", "o1", "hh02", site="s1", jid="bj-2")
    boards.send_jobs("o1", "hh01")
    upload(store_of, "o1", envelopes("hh01", [
        (1, "handheld.photo", "audit", {"job": "bj-1", "site": "s2", "step": "photo", "sha256": "ab" * 32,
                                        "lat_e7": LAT + 20_000 + 30_000, "lon_e7": LON, "qr": [CAMP_QR]}),
        (2, "handheld.job_submitted", "audit", {"job": "bj-1"})]))
    # the gateway drains oldest first: its newest batch starts with an event three hours old
    upload(store_of, "o1", envelopes("lk01", [
        (1, "locker.deposit", "custody", {"compartment": 3, "parcel": "RB123456785CN", "_age_s": 3 * 3600}),
        (2, "locker.alarm", "alarm", {"alarm": "door_forced", "compartment": 3, "_age_s": 2 * 3600}),
        (3, "locker.deposit", "custody", {"compartment": 4, "parcel": "EA000000005CN", "_age_s": 600})]))
    front_ = front.Front(b, dispatch=Dispatch(b, boards=boards), master=MASTER, boards=boards)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(pki.server.cert), str(pki.server.key))
    srv = ThreadedServer(front_.app(), "127.0.0.1", 0, name="central-https", ssl_context=ctx,
                         auto_decompress=False)
    srv.start()
    try:
        yield f"https://127.0.0.1:{srv.address[1]}", store_of, boards
    finally:
        srv.stop()


def sign_in(chromium: Any, url: str, lang: str) -> tuple[Any, Any]:
    ctx = chromium.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    page = ctx.new_page()
    page.goto(f"{url}/dispatch?lang={lang}")
    page.fill("input[name=name]", "wang")
    page.fill("input[name=password]", "dispatch-pass-1")
    page.click("form.login button")
    return ctx, page


@pytest.mark.parametrize(("store_of", "lang"), BACKEND_LANGS, indirect=["store_of"])
def test_the_page_says_what_needs_doing(county: tuple[str, Store, Boards], chromium: Any,
                                        lang: str) -> None:
    from tests.cli.test_cli_zh import english_words

    url, store, boards = county
    b = store.b
    zh = lang == "zh"
    ctx, page = sign_in(chromium, url, lang)
    o1 = page.locator("#outlets tr[data-outlet=o1]")
    assert o1.locator(".open-alarms").inner_text() == "1"
    assert o1.locator(".lag").inner_text() == ("3 小时" if zh else "3 h")
    assert page.locator("#outlets tr[data-outlet=o2] .lag").inner_text() == "—"
    alarm = page.locator("#alarms tr[data-alarm='lk01:c0ffee01:2']")
    assert ("柜门被强行打开" if zh else "door forced open") in alarm.inner_text()
    assert ("2 小时前" if zh else "2 h ago") in alarm.inner_text()
    # 政讯通: campaigns, sites with status, condition and revisit, jobs by state, the verdict's reason
    assert "健康知识宣传" in page.locator("#campaigns").inner_text()
    sites = page.locator("#sites")
    assert sites.locator("tr[data-site=s1] .status").inner_text() == ("已安装" if zh else "installed")
    assert ("每 30 天" if zh else "every 30 d") in sites.locator("tr[data-site=s1] .revisit").inner_text()
    assert sites.locator("tr[data-site=s3] .status").inner_text() == ("待批准" if zh else "proposed")
    job = page.locator("#jobs tr[data-job=bj-1]")
    assert job.locator(".status").inner_text() == ("未通过" if zh else "refused")
    far = "拍摄位置离点位太远" if zh else "taken too far from the site"
    assert job.locator(".reason").inner_text() == far
    assert page.locator("#reviews tr.refused .reason").inner_text() == far
    if zh:
        # identifiers have digits; the language switch names English in English; the dispatcher is wang
        body = page.locator("body").inner_text()
        assert english_words(body, {"wang", "English"}) == [], english_words(body, {"wang", "English"})
    # the job-state filter is a link: only the refused job is left
    page.click("#job-filter a[data-state=refused]")
    assert [page.locator("#jobs tbody tr").nth(i).get_attribute("data-job")
            for i in range(page.locator("#jobs tbody tr").count())] == ["bj-1"]
    # the dispatcher approves the proposed site and sends hh02 its new maintenance job
    page.locator("#sites tr[data-site=s3] button[value=approve]").click()
    assert page.locator("#sites tr[data-site=s3] .status").inner_text() == ("已批准" if zh else "approved")
    assert boards.site("s3")["status"] == "approved"
    # and asks for a revisit of s2 every 14 days; 0 days is refused with the reason (by the
    # server too: the field's own limit taken off, as a browser without form checks would send it)
    form = page.locator("#sites tr[data-site=s2] form.revisit-form")
    form.locator("input[name=days]").evaluate("e => e.removeAttribute('min')")
    form.locator("input[name=days]").fill("0")
    form.locator("button").click()
    assert ("1 到 3650 天" if zh else "1 to 3650 days") in page.locator(".message").inner_text()
    assert boards.site("s2")["revisit_days"] is None
    form = page.locator("#sites tr[data-site=s2] form.revisit-form")
    form.locator("input[name=days]").fill("14")
    form.locator("button").click()
    assert boards.site("s2")["revisit_days"] == 14
    assert page.locator("#sites tr[data-site=s2] input[name=days]").input_value() == "14"
    before = handheld_commands(b, "o1")
    page.locator("form.send button").click()
    assert boards.job("bj-2")["status"] == "sent"
    assert handheld_commands(b, "o1") == before + 1
    assert page.locator("form.send").count() == 0
    # the clerk resolves the alarm at the outlet; the gateway's event arrives with the next upload
    upload(store, "o1", envelopes("gw01", [(1, "gateway.alarm_resolved", "audit", {
        "alarm_id": "lk01:c0ffee01:2", "alarm": "door_forced", "device": "lk01", "by": "li",
        "role": "clerk", "note": "门已关好"})]))
    page.goto(f"{url}/dispatch?lang={lang}")
    assert page.locator("#alarms").count() == 0
    assert page.locator("#no-alarms").inner_text() == ("没有未处理的警报" if zh else "No open alarms")
    assert page.locator("#outlets tr[data-outlet=o1] .open-alarms").inner_text() == "0"
    ctx.close()


def test_an_acknowledged_alarm_is_still_open_and_another_outlets_resolution_closes_nothing(
        county: tuple[str, Store, Boards]) -> None:
    _, store, _ = county
    upload(store, "o1", envelopes("gw01", [(1, "gateway.alarm_acknowledged", "audit",
                                            {"alarm_id": "lk01:c0ffee01:2"})]))
    upload(store, "o2", envelopes("gw01", [(1, "gateway.alarm_resolved", "audit",
                                            {"alarm_id": "lk01:c0ffee01:2"})]))
    assert [(a["outlet"], a["id"]) for a in store.b.open_alarms()] == [("o1", "lk01:c0ffee01:2")]


def test_the_upload_lag_is_the_bulk_lanes_and_ignores_clockless_events(
        county: tuple[str, Store, Boards]) -> None:
    _, store, _ = county
    b = store.b
    lag = b.upload_lag()["o1"]
    assert 3 * 3600 <= lag < 3 * 3600 + 60
    # an alarm sent at once on the fast lane afterwards does not hide the bulk backlog
    upload(store, "o1", envelopes("lk02", [(1, "locker.alarm", "alarm", {"alarm": "door_left_open"})]),
           lane="fast")
    assert abs(b.upload_lag()["o1"] - lag) < 5
    # a device that did not know the time yet (ts from boot) says nothing about the backlog
    upload(store, "o2", envelopes("lk01", [(1, "locker.deposit", "custody",
                                        {"compartment": 1, "parcel": "RB123456785CN",
                                         "_age_s": int(time.time()) - 42})]))
    assert "o2" not in b.upload_lag()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_dispatcher_sees_acceptances_whose_postage_did_not_check_out(
        tmp_path: Path, chromium: Any, lang: str) -> None:
    """A counter acceptance charged less than the tariff it cites is listed, in words, with
    what the platform computed; one priced right is not."""
    from central.documents import Documents
    from central.postage_audit import PostageAudit
    from simulator.counter_sim import BOXES, RATES, ZONES
    from tests.central.conftest import StoreUnderTest
    from tests.central.test_postage_audit import accept, store
    from tests.zh_words import english_words

    pki = make_outlet_pki(tmp_path / "pki", "central")
    b = Embedded(tmp_path / "central")
    b.add_outlet("o1", "o1-password-x")
    b.add_dispatcher("wang", "dispatch-pass-1")
    docs = Documents(b)
    docs.publish("tariff", {"zones": ZONES, "services": RATES})
    docs.publish("box_catalogue", {"boxes": BOXES})
    good = accept(docs)
    ok_id, cheap_id = store(StoreUnderTest("embedded", b, lambda: None), good,
                            {**good, "postage_fen": good["postage_fen"] - 300})
    assert PostageAudit(b).run_once() == 1
    srv, _ = front.serve(b, "127.0.0.1", 0, str(pki.server.cert), str(pki.server.key))
    ctx = chromium.new_context(viewport={"width": 1024, "height": 768}, ignore_https_errors=True)
    try:
        page = ctx.new_page()
        page.goto(f"https://127.0.0.1:{srv.address[1]}/dispatch?lang={lang}")
        page.fill("input[name=name]", "wang")
        page.fill("input[name=password]", "dispatch-pass-1")
        page.click("form.login button")
        rows = page.locator("#postage tbody tr")
        assert rows.count() == 1
        text = rows.nth(0).inner_text()
        assert cheap_id in text and ok_id not in page.inner_text("#postage")
        assert ("邮资与资费不符" if lang == "zh" else "Postage differs from the tariff") in text
        fen = good["postage_fen"]
        want = (f"收了 {(fen - 300) / 100:.2f} 元" if lang == "zh" else f"charged ¥{(fen - 300) / 100:.2f}")
        assert want in text and f"{fen / 100:.2f}" in text, text
        if lang == "zh":
            assert english_words(page.inner_text("#postage")) == []
    finally:
        ctx.close()
        srv.stop()
        b.close()
