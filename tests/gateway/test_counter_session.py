"""The counter acceptance API (``/v1/counter/*``) from the clerk's browser
session as well as from the counter device (gateway/http/counter_login.py):
the real gateway web server with the clerk console and a counter desk (a
scale, a TSPL label printer and an ESC/POS receipt printer on ptys) over a
real SQLite store, Mosquitto's password file for the device's Basic login.
A cookie-authorized unsafe request needs the session's CSRF token and a
same-origin request; the device's Basic login needs neither."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.ports import free_port
from gateway import metrics as M
from gateway.broker import Account, write_config
from gateway.counter.acceptance import CounterDesk
from gateway.counter.printers import Printer
from gateway.counter.scale import Scale, serial_opener
from gateway.store.events import EventStore
from protocol.canonical import dumps
from tests.gateway.clerk_rig import Client, Rig
from tests.gateway.counter.platform_rig import KEYS as PLATFORM_KEYS
from tests.gateway.counter.platform_rig import catalogue_doc, tariff_doc
from tests.gateway.counter.printer_rig import PtyPrinter
from tests.gateway.counter.scale_rig import PtyScale

DEVICE = ("gw-o1", "gw-secret")
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{DEVICE[0]}:{DEVICE[1]}".encode()).decode()}


class CounterRig:
    def __init__(self, root: Path) -> None:
        conf = write_config(root / "broker", free_port(), [Account(*DEVICE, "o1", "gateway")])
        self.scale = PtyScale()
        self.scale.play([b"ST,GS,+0002.345kg\r\n"])
        self.label = PtyPrinter({b"\x1b!?": b"\x00"})
        self.receipt = PtyPrinter({b"\x10\x04\x04": b"\x12"})
        self.desk: CounterDesk | None = None

        def web(db: Path) -> dict[str, Any]:
            self.desk = CounterDesk(
                db, "o1", root / "gw" / "counter", PLATFORM_KEYS,
                Scale(serial_opener(self.scale.path), "st-gs", window_s=0.15),
                Printer("label", self.label.path, "tspl", status_timeout_s=0.5),
                Printer("receipt", self.receipt.path, "escpos", status_timeout_s=0.5), scale_timeout_s=2)
            return {"counter": self.desk, "cfg": {"passwd_file": str(conf.parent / "passwd")}}

        self.rig = Rig(root, web)
        for doc in (catalogue_doc(), tariff_doc()):
            code, _, out = self.call(self.rig.client(), "PUT", "/documents", raw=dumps(doc), headers=BASIC)
            assert code == 200, out

    @staticmethod
    def call(c: Client, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        code, hdrs, text = c.request(method, f"/v1/counter{path}", raw=data if method != "GET" else None,
                                     headers=headers)
        return code, hdrs, json.loads(text) if text else None

    def accepts(self) -> list[dict[str, Any]]:
        s = EventStore(self.rig.db)
        try:
            return [json.loads(e["payload"]) for e in s.events() if e["type"] == "counter.accept"]
        finally:
            s.close()

    def close(self) -> None:
        self.rig.close()
        if self.desk is not None:
            self.desk.close()
        for part in (self.scale, self.label, self.receipt):
            part.close()


@pytest.fixture
def counter(tmp_path: Path) -> Iterator[CounterRig]:
    r = CounterRig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def accept_form(reading: str, waybill: str) -> dict[str, Any]:
    return {"box": "PE-BOX-F5", "reading": reading, "service": "standard", "waybill": waybill,
            "sender": {"name": "李四", "phone": "13912341234", "address": "贵州省黔东南州雷山县西江镇"},
            "recipient": {"name": "王五", "phone": "13812345678", "address": "北京市朝阳区建国路 1 号",
                          "postcode": "100020"}}


def refused(reason: str) -> float:
    return M.REGISTRY.get_sample_value("postedge_clerk_actions_total",
                                       {"action": "counter", "outcome": reason}) or 0.0


def test_a_signed_in_clerk_accepts_a_parcel_with_the_session_and_csrf(counter: CounterRig) -> None:
    c = counter.rig.client()
    assert c.login("bo") == 303
    # The login scopes one token to the console and to the counter API, nothing wider.
    cookies = c.last_set_cookie
    assert "Path=/clerk;" in cookies and "Path=/v1/counter;" in cookies and "Path=/;" not in cookies
    assert cookies.count("HttpOnly") == 2 and cookies.count("SameSite=Strict") == 2
    csrf = c.csrf()
    code, _, doc = counter.call(c, "GET", "/boxes")  # safe: the cookie alone
    assert code == 200 and {b["code"] for b in doc["boxes"]} >= {"PE-BOX-F5"}
    n0 = refused("bad_csrf")
    code, _, doc = counter.call(c, "POST", "/weigh")  # unsafe without the token
    assert code == 403 and doc["error"] == "bad_csrf" and "X-CSRF-Token" in doc["message"]["en"]
    assert doc["message"]["zh"]
    code, _, doc = counter.call(c, "POST", "/weigh", headers={"X-CSRF-Token": csrf + "x"})
    assert code == 403 and doc["error"] == "bad_csrf" and refused("bad_csrf") == n0 + 2
    code, _, doc = counter.call(c, "POST", "/weigh", headers={"X-CSRF-Token": csrf})
    assert code == 200 and doc["weight_g"] == 2345
    code, _, out = counter.call(c, "POST", "/accept", accept_form(doc["reading"], "]C09512345678903"),
                                headers={"X-CSRF-Token": csrf, "Origin": f"http://127.0.0.1:{counter.rig.port}",
                                         "Sec-Fetch-Site": "same-origin"})
    assert code == 200, out
    [ev] = counter.accepts()
    assert ev["id"] == out["event"] and ev["body"]["clerk"] == "bo"
    # After logout the cookie is dead: 401 without a Basic challenge (no password dialog).
    code, _, _ = c.post("/clerk/logout", {"csrf": csrf})
    assert code == 303 and "Path=/v1/counter;" in c.last_set_cookie and "Max-Age=0" in c.last_set_cookie
    c.cookies["pe_clerk"] = "stolen-or-expired-token"
    code, hdrs, doc = counter.call(c, "GET", "/boxes")
    assert code == 401 and doc["error"] == "no_session" and "www-authenticate" not in hdrs


def test_a_cross_site_request_with_the_clerks_cookie_is_refused(counter: CounterRig) -> None:
    c = counter.rig.client()
    c.login("bo")
    csrf = c.csrf()
    n0 = refused("cross_origin")
    for evil in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                 {"Sec-Fetch-Site": "same-site", "Origin": f"http://127.0.0.1:{counter.rig.port}"}):
        code, _, doc = counter.call(c, "POST", "/weigh", headers={"X-CSRF-Token": csrf, **evil})
        assert code == 403 and doc["error"] == "cross_origin", evil
        code, _, doc = counter.call(c, "POST", "/accept", accept_form("r", "]C09512345678903"),
                                    headers={"X-CSRF-Token": csrf, **evil})
        assert code == 403 and doc["error"] == "cross_origin"
    assert refused("cross_origin") == n0 + 8
    assert counter.accepts() == []


def test_the_counter_device_keeps_its_basic_login(counter: CounterRig) -> None:
    c = counter.rig.client()  # no cookie
    code, hdrs, doc = counter.call(c, "POST", "/weigh")
    assert code == 401 and hdrs["www-authenticate"].startswith("Basic")
    code, _, doc = counter.call(c, "POST", "/weigh", headers=BASIC)  # no CSRF needed: not a browser session
    assert code == 200
    code, _, out = counter.call(c, "POST", "/accept", accept_form(doc["reading"], "]C09512345678910"),
                                headers=BASIC)
    assert code == 200, out
    assert counter.accepts()[0]["body"]["clerk"] == "gw-o1"
    # Basic decides when both are sent: a wrong password is not rescued by a live session.
    c.login("bo")
    bad = {"Authorization": "Basic " + base64.b64encode(b"gw-o1:wrong").decode()}
    code, _, doc = counter.call(c, "POST", "/weigh", headers={**bad, "X-CSRF-Token": c.csrf()})
    assert code == 401 and doc["error"] == "unauthorized"
