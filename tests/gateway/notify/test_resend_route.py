"""The clerk's resend over HTTP on the gateway's real aiohttp server: the
request is recorded, the notifier carries it out and audits it, and bad,
anonymous, repeated and oversized requests are refused with a reason."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.http.notify_resend import resend
from gateway.http.server import start_web
from tests.gateway.notify.test_notifier import Rig, wait_texts
from tests.notify_rig import contact, deposit, pickup

PARCEL = "RB123456785GB"


def call(url: str, body: bytes | None = None, method: str = "POST") -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_resend_over_http(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    stop = threading.Event()
    svc = start_web(rig.cfg.db, {"port": 0}, stop)
    try:
        base = f"http://127.0.0.1:{svc.port}/v1/notify/resend"
        rig.put(deposit("lk01", 1, PARCEL, "305117"))
        rig.contact(contact(PARCEL))
        rig.clock.offset = 61
        rig.ticks()
        assert len(wait_texts(rig.sim, 1)) == 1
        code, doc = call(base, json.dumps({"parcel": PARCEL, "clerk": "li"}).encode())
        assert (code, doc["status"]) == (202, "queued")
        rid = doc["request"]
        assert call(f"{base}/{rid}", method="GET")[1]["status"] == "queued"
        rig.ticks()
        texts = wait_texts(rig.sim, 2)
        assert len(texts) == 2 and "补发" in texts[1][1] and "305117" in texts[1][1]
        code, doc = call(f"{base}/{rid}", method="GET")
        assert (code, doc["status"]) == (200, "gateway") and "短信猫" in doc["message"]["zh"]
        [audit] = [r for r in rig.own("notify.route") if r["body"]["purpose"] == "resend"]
        assert audit["body"]["clerk"] == "li"
        # Again at once: refused, the villager is not flooded.
        assert call(base, json.dumps({"parcel": PARCEL, "clerk": "li"}).encode())[0] == 429
        # The worst a client sends.
        for body, want in [(b"{", 400), (b"[]", 400), (json.dumps({"parcel": "x' OR 1=1"}).encode(), 401),
                           (json.dumps({"parcel": "x' OR 1=1", "clerk": "li"}).encode(), 400),
                           (json.dumps({"parcel": "RB000000000CN", "clerk": "li"}).encode(), 404),
                           (json.dumps({"parcel": PARCEL, "clerk": "LI; drop"}).encode(), 401),
                           (b"x" * 5000, 413)]:
            code, doc = call(base, body)
            assert code == want, (body[:40], doc)
            assert "error" in doc
        assert call(base, method="GET")[0] == 405
        assert call(f"{base}/abc", method="GET")[0] == 404
        assert call(f"{base}/99999", method="GET")[0] == 404
        assert len(rig.sim.received) == 2
    finally:
        stop.set()
        svc.join(10)
        rig.close()


def test_resend_function_refuses_picked_up_parcels(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        rig.put(deposit("lk01", 1, PARCEL, "305117"), pickup("lk01", 2, PARCEL))
        rig.ticks(1)
        assert resend(rig.cfg.db, PARCEL, "li")[0] == 409
        assert resend(rig.cfg.db, 42, "li")[0] == 400
        now = time.time()
        rig.put(deposit("lk01", 3, "RB000000001CN", "111111"))
        rig.ticks(1)
        codes = [resend(rig.cfg.db, "RB000000001CN", "li", now=now + i * 600)[0] for i in range(7)]
        assert codes == [202] * 5 + [429] * 2  # five a day
    finally:
        rig.close()
