"""The dispatcher's page in Debian's chromium (Playwright) over the central
service's real HTTPS front: sign in, see the outlets' health, review the
evidence photos (a duplicate claim flagged, a rejection needs a reason), and
a cross-site form changes nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central import front
from central.embedded import Embedded
from common.pki import make_outlet_pki
from common.uplink_codec import encode_batch
from tests.central.test_contract import events

pytestmark = pytest.mark.browser


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Embedded]]:
    pki = make_outlet_pki(tmp_path / "pki", "central")
    b = Embedded(tmp_path / "central")
    b.add_outlet("o1", "o1-password-x")
    b.add_outlet("o2", "o2-password-x")
    b.add_dispatcher("wang", "dispatch-pass-1")
    from central.intake import check_batch

    rows = events("lk01", 12)
    enc = encode_batch("o1", "bulk", rows)
    b.store("o1", check_batch("o1", enc.id, enc.body))
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
        b.close()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_dispatcher_signs_in_sees_outlets_and_reviews_a_photo(
        service: tuple[str, Embedded], chromium: Any, lang: str) -> None:
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
    review = b.db.execute("SELECT verdict, reason, by FROM photo_reviews").fetchone()
    assert review == ("rejected", "照片模糊", "wang")
    cookies = {c["name"]: c for c in ctx.cookies()}
    c = cookies["pe_dispatch"]
    assert c["httpOnly"] and c["secure"] and c["sameSite"] == "Strict" and c["path"] == "/dispatch"
    ctx.close()


def test_a_cross_site_form_changes_nothing(service: tuple[str, Embedded], chromium: Any,
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
    assert b.db.execute("SELECT count(*) FROM photo_reviews").fetchone()[0] == 0
    # and the page itself does not send its cookie to another site's form
    evil = tmp_path / "evil.html"
    evil.write_text(f'<form id=f method=post action="{url}/dispatch/review">'
                    f'<input name=sha value="{sha}"><input name=verdict value=accepted></form>'
                    "<script>document.getElementById('f').submit()</script>")
    page.goto(evil.as_uri())
    page.wait_for_load_state()
    assert b.db.execute("SELECT count(*) FROM photo_reviews").fetchone()[0] == 0
    assert json.dumps(ctx.cookies())  # the session is still there: nothing was done with it
    ctx.close()
