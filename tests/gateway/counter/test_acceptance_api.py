"""Counter acceptance end to end: the gateway's own HTTP server on a
loopback port, a real SQLite store, Mosquitto's password file for logins,
a scale, a TSPL label printer and an ESC/POS receipt printer on ptys, and
the platform's documents pushed through the API. Then everything a
careless clerk or a hostile client can send."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.ports import free_port
from gateway.broker import Account, write_config
from gateway.counter.acceptance import CounterDesk
from gateway.counter.printers import Printer
from gateway.counter.scale import Scale, serial_opener
from gateway.http.server import start_web
from gateway.store.events import EventStore
from protocol import envelope
from protocol.canonical import dumps
from tests.gateway.counter.platform_rig import KEYS as PLATFORM_KEYS
from tests.gateway.counter.platform_rig import RATES, ROGUE, catalogue_doc, tariff_doc
from tests.gateway.counter.printer_rig import PtyPrinter
from tests.gateway.counter.scale_rig import PtyScale

PW = {"gw-o1": "gw-secret", "hh01": "hh01-pw"}
ACCOUNTS = [Account("gw-o1", PW["gw-o1"], "o1", "gateway"), Account("hh01", PW["hh01"], "o1", "handheld")]


def frame(grams: int) -> bytes:
    return f"ST,GS,+{grams // 1000:04d}.{grams % 1000:03d}kg\r\n".encode()


class Counter:
    def __init__(self, root: Path) -> None:
        conf = write_config(root / "broker", free_port(), ACCOUNTS)
        self.db = root / "gw" / "gateway.db"
        EventStore(self.db).close()
        self.scale = PtyScale()
        self.scale.play([frame(2345)])
        self.label = PtyPrinter({b"\x1b!?": b"\x00"})
        self.receipt = PtyPrinter({b"\x10\x04\x04": b"\x12"})
        self.desk = CounterDesk(
            self.db, "o1", root / "gw" / "counter", PLATFORM_KEYS,
            Scale(serial_opener(self.scale.path), "st-gs", window_s=0.15),
            Printer("label", self.label.path, "tspl", status_timeout_s=0.5),
            Printer("receipt", self.receipt.path, "escpos", status_timeout_s=0.5), scale_timeout_s=2)
        self.stop_event = threading.Event()
        self.svc = start_web(self.db, {"host": "127.0.0.1", "port": 0,
                                       "passwd_file": str(conf.parent / "passwd")},
                             self.stop_event, counter=self.desk)

    def call(self, method: str, path: str, body: Any = None, user: str | None = "gw-o1",
             raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        h = dict(headers or {})
        if user is not None:
            h["Authorization"] = "Basic " + base64.b64encode(f"{user}:{PW[user]}".encode()).decode()
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        c = http.client.HTTPConnection("127.0.0.1", self.svc.port, timeout=10)
        try:
            c.request(method, f"/v1/counter{path}", body=data, headers=h)
            r = c.getresponse()
            out = r.read()
            return r.status, json.loads(out) if out else None
        finally:
            c.close()

    def weigh(self, grams: int | None = None) -> str:
        if grams is not None:
            self.scale.frames = [frame(grams)]
            time.sleep(0.1)
        code, doc = self.call("POST", "/weigh", raw=b"")
        assert code == 200, doc
        return str(doc["reading"])

    def close(self) -> None:
        self.stop_event.set()
        self.svc.join(10)
        self.desk.close()
        for part in (self.scale, self.label, self.receipt):
            part.close()


@pytest.fixture
def counter(tmp_path: Path) -> Iterator[Counter]:
    c = Counter(tmp_path)
    try:
        for doc in (catalogue_doc(), tariff_doc()):
            code, out = c.call("PUT", "/documents", raw=dumps(doc))
            assert code == 200, out
        yield c
    finally:
        c.close()


def form(reading: str, **over: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "box": "PE-BOX-F5", "reading": reading, "service": "standard", "waybill": "]C09512345678903",
        "sender": {"name": "李四", "phone": "13912341234", "address": "贵州省黔东南州雷山县西江镇"},
        "recipient": {"name": "王五", "phone": "13812345678", "address": "北京市朝阳区建国路 1 号",
                      "postcode": "100020"}}
    f.update(over)
    return f


def accepts(db: Path) -> list[dict[str, Any]]:
    s = EventStore(db)
    try:
        return [json.loads(e["payload"]) for e in s.events() if e["type"] == "counter.accept"]
    finally:
        s.close()


def test_a_parcel_accepted_end_to_end(counter: Counter) -> None:
    code, doc = counter.call("GET", "/boxes")
    assert code == 200 and {b["code"] for b in doc["boxes"]} == {"PE-BOX-F5", "PE-BOX-E30", "PE-BOX-D1"}
    assert doc["tariff"]["version"] == 1
    reading = counter.weigh()
    code, out = counter.call("POST", "/accept", form(reading))
    assert code == 200, out
    # 2345 g to Beijing (z2): the 1-3 kg band
    assert out["weight_g"] == 2345 and out["postage_fen"] == 1600 and out["zone"] == "z2"
    assert out["label"] == {"printed": True} and out["receipt"] == {"printed": True}
    time.sleep(0.2)
    assert b'BARCODE 48,48,"128",120,1,0,3,6,"9512345678903"' in counter.label.received
    assert "收 王五  138****5678".encode("gb18030") in counter.label.received
    assert "邮资 Postage: ¥16.00".encode("gb18030") in counter.receipt.received
    [ev] = accepts(counter.db)
    assert ev["id"] == out["event"] and ev["cls"] == "custody"
    body = ev["body"]
    assert body["waybill"] == "9512345678903" and body["weight_g"] == 2345 and body["clerk"] == "gw-o1"
    assert body["recipient"]["phone"] == "13812345678" and body["postage_fen"] == 1600
    assert body["tariff"]["version"] == 1 and len(body["catalogue"]["digest"]) == 16
    # it waits in the store's upstream lane like every event, and is a valid envelope
    s = EventStore(counter.db)
    try:
        [(eid, _, payload)] = [u for u in s.unsynced(False, 100, 1 << 20) if u[0] == out["event"]]
    finally:
        s.close()
    assert envelope.decode(payload)["type"] == "counter.accept"
    # the same waybill again, even with a fresh weighing: refused, nothing recorded
    code, out2 = counter.call("POST", "/accept", form(counter.weigh()))
    assert code == 409 and out2["error"] == "waybill_reused" and out2["field"] == "waybill"
    assert "已使用" in out2["message"]["zh"] and len(accepts(counter.db)) == 1
    # the reading was spent
    code, out3 = counter.call("POST", "/accept", form(reading, waybill="]C09512345678910"))
    assert code == 409 and out3["error"] == "unknown_reading"
    # reprint, audited
    code, rp = counter.call("POST", "/reprint", {"waybill": "9512345678903"})
    assert code == 200 and rp["printed"] is True
    code, rp = counter.call("POST", "/reprint", {"waybill": "9599999999999"})
    assert code == 404


def test_a_charity_parcel_with_donor_and_beneficiary(counter: Counter) -> None:
    reading = counter.weigh(800)
    school = {"name": "黔东南州某小学", "phone": "085512345678", "address": "贵州省凯里市",
              "postcode": "556000"}
    code, out = counter.call("POST", "/accept", form(reading, service="charity", box="PE-BOX-E30",
                                                     waybill="RB123456785CN", recipient=school,
                                                     charity={"donor": "爱心企业", "beneficiary": "某小学"}))
    assert code == 200, out
    assert out["postage_fen"] == 0 and out["service"] == "charity"  # z1 charity rate
    [ev] = accepts(counter.db)
    assert ev["body"]["charity"] == {"donor": "爱心企业", "beneficiary": "某小学"}
    code, out = counter.call("POST", "/accept", form(counter.weigh(), service="charity",
                                                     waybill="RB123456799CN"))
    assert code == 422 and out["field"] == "charity"


def test_refusals_record_nothing(counter: Counter) -> None:
    r = counter.weigh(3500)
    cases: list[tuple[dict[str, Any], int, str]] = [
        (form(r, box="PE-BOX-E30"), 422, "overweight"),  # 3.5 kg in a 3 kg egg box
        (form(r, box="PE-BOX-NOPE"), 404, "unknown_box"),
        (form(r, box="pe-box-f5"), 404, "unknown_box"),
        (form(r, waybill="9512345678903"), 422, "invalid_waybill"),  # no AIM id: could be a product
        (form(r, waybill="]E06901234567892"), 422, "invalid_waybill"),  # an EAN-13 product
        (form(r, waybill="RB123456784CN"), 422, "invalid_waybill"),  # wrong check digit
        (form(r, waybill="]C0951234567890\x1b"), 422, "bad_chars"),
        (form("forged-token"), 409, "unknown_reading"),
        (form(r, weight_g=1), 422, "unknown_field"),  # the weight is the scale's, never the client's
        (form(r, service="express"), 422, "unknown_service"),
        (form(r, recipient={"name": "王五", "phone": "13812345678", "address": "x", "postcode": "1000"}),
         422, "bad_postcode"),
        (form(r, recipient={"name": "王五", "phone": "12345", "address": "x", "postcode": "100020"}),
         422, "bad_phone"),
        (form(r, recipient={"name": "名" * 33, "phone": "13812345678", "address": "x", "postcode": "100020"}),
         422, "too_long"),
        (form(r, recipient={"name": "x" * 100_000, "phone": "13812345678", "address": "x",
                            "postcode": "100020"}), 413, "body_too_large"),
        (form(r, recipient={"name": "王\u202e五", "phone": "13812345678", "address": "x",
                            "postcode": "100020"}), 422, "bad_chars"),
        (form(r, recipient={"name": "王五", "phone": "13812345678", "address": "x", "postcode": "100020",
                            "ssn": "1"}), 422, "unknown_field"),
        (form(r, sender={"name": "", "phone": "13912341234"}), 422, "missing"),
        (form(r, sender={"name": ["x"], "phone": "13912341234"}), 422, "not_text"),
    ]
    for body, status, reason in cases:
        code, out = counter.call("POST", "/accept", body)
        assert (code, out["error"]) == (status, reason), (body, out)
        assert set(out["message"]) == {"zh", "en"}
    for raw, reason in [(b"{", "malformed"), (b"[1]", "malformed"), (b'{"box": NaN}', "malformed"),
                        (b"[" * 10_000 + b"]" * 10_000, "body_too_large"),
                        (b"[" * 5000 + b"]" * 5000, "malformed"),
                        (b"\xff\xfe", "malformed")]:
        code, out = counter.call("POST", "/accept", raw=raw)
        assert out["error"] == reason, raw[:20]
    assert accepts(counter.db) == []
    # and the counter still works
    code, out = counter.call("POST", "/accept", form(r, recipient={
        "name": "Zoë 王 📦", "phone": "01012345678", "address": "北京", "postcode": "100020"}))
    assert code == 200, out
    assert accepts(counter.db)[0]["body"]["recipient"]["name"] == "Zoë 王 📦"


def test_over_the_tariff_limit_and_a_bare_scale(counter: Counter) -> None:
    big = {"code": "PE-BOX-XL", "name": {"zh": "大箱", "en": "XL"}, "l_mm": 600, "w_mm": 500, "h_mm": 500,
           "tare_g": 900, "max_g": 60000, "suits": ["produce"]}
    from tests.gateway.counter.platform_rig import BOXES
    code, _ = counter.call("PUT", "/documents", raw=dumps(catalogue_doc(version=2, boxes=[*BOXES, big])))
    assert code == 200
    code, out = counter.call("POST", "/accept", form(counter.weigh(45000), box="PE-BOX-XL"))
    assert (code, out["error"]) == (422, "postage") and "over_tariff_max" in out["message"]["en"]
    counter.scale.frames = [frame(0)]
    time.sleep(0.1)
    code, out = counter.call("POST", "/weigh", raw=b"")
    assert (code, out["error"]) == (409, "no_weight")
    counter.scale.frames = [b"ST,GS,+99999999999999.999kg\r\n"]  # a huge reading is garbage, not a weight
    time.sleep(0.1)
    code, out = counter.call("POST", "/weigh", raw=b"")
    assert (code, out["error"]) == (503, "scale") and "no_data" in out["message"]["en"]
    counter.scale.frames = [b"ST,GS,-0001.000kg\r\n"]
    time.sleep(0.1)
    code, out = counter.call("POST", "/weigh", raw=b"")
    assert (code, out["error"]) == (409, "scale") and "negative" in out["message"]["en"]


def test_forged_stale_or_misdirected_documents_change_nothing(counter: Counter) -> None:
    cheap = json.loads(json.dumps(RATES))
    cheap["standard"]["bands"][0]["fen"]["z2"] = 1
    cases = [
        (tariff_doc(version=2, rates=cheap, key=ROGUE), "bad_signature"),
        ({**tariff_doc(version=2), "body": {"zones": {"default": "z3"}, "services": cheap}}, "bad_signature"),
        (tariff_doc(version=1, rates=cheap), "stale_version"),  # a replay of version 1's number
        (catalogue_doc(version=5, outlets=["o2"]), "wrong_outlet"),
        ({"kind": "firmware"}, "wrong_kind"),
    ]
    for doc, reason in cases:
        code, out = counter.call("PUT", "/documents", raw=dumps(doc))
        assert (code, out["error"]) == (422, "document") and reason in out["message"]["en"], out
    code, out = counter.call("PUT", "/documents", raw=b"\x00" * 70_000)
    assert code == 413
    for raw in (b"[" * 30000 + b"]" * 30000, b"\xff" * 100, b'{"kind": "tariff", "v": NaN}', b""):
        code, out = counter.call("PUT", "/documents", raw=raw)
        assert (code, out["error"]) == (422, "document"), raw[:10]
    code, out = counter.call("POST", "/accept", form(counter.weigh(900)))
    assert code == 200 and out["postage_fen"] == 1000  # still version 1's price
    # a forged file on disk is refused at the next start too
    path = counter.desk.docs_dir / "tariff.json"
    path.write_bytes(dumps(tariff_doc(version=9, rates=cheap, key=ROGUE)))
    counter.desk.tariff = None
    counter.desk.load_documents()
    assert counter.desk.tariff is None
    code, out = counter.call("POST", "/accept", form(counter.weigh(900), waybill="]C09512345678910"))
    assert (code, out["error"]) == (503, "no_tariff")


def test_logins_and_an_empty_label_roll(counter: Counter) -> None:
    assert counter.call("GET", "/boxes", user=None)[0] == 401
    assert counter.call("POST", "/accept", form("x"), user="hh01")[0] == 403
    # a stranger's big body is never read: 401 from the headers
    code, _ = counter.call("POST", "/accept", raw=b"x" * 10_000, user=None)
    assert code == 401
    reading = counter.weigh()
    counter.label.answers[b"\x1b!?"] = b"\x04"  # TSPL: out of paper
    code, out = counter.call("POST", "/accept", form(reading))
    assert (code, out["error"]) == (503, "printer") and "out_of_paper" in out["message"]["en"]
    assert accepts(counter.db) == []
    counter.label.answers[b"\x1b!?"] = b"\x00"  # a new roll: the same waybill and weighing go through
    code, out = counter.call("POST", "/accept", form(reading))
    assert code == 200 and out["label"]["printed"] is True


def test_an_empty_receipt_roll_does_not_stop_an_accept_and_slips_print(
        counter: Counter, capsys: pytest.CaptureFixture[str]) -> None:
    counter.receipt.answers[b"\x10\x04\x04"] = b"\x72"  # paper end
    code, out = counter.call("POST", "/accept", form(counter.weigh()))
    assert code == 200 and out["receipt"] == {"printed": False, "error": "out_of_paper"}
    assert out["label"]["printed"] is True
    counter.receipt.answers[b"\x10\x04\x04"] = b"\x12"
    slip = counter.desk.print_pickup_slip("042917", "9512345678903", "lk01", "2026-12-10")
    assert slip == {"printed": True}
    deadline = time.monotonic() + 2
    while b"PE-P:042917" not in counter.receipt.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert b"PE-P:042917" in counter.receipt.received
    assert "042917" not in capsys.readouterr().out  # printed, never logged
    with pytest.raises(Exception) as e:
        counter.desk.print_pickup_slip("04291", "p", "lk01", "d")
    assert getattr(e.value, "reason", None) == "bad_code"


def test_two_counters_on_one_store_cannot_take_the_same_waybill(counter: Counter, tmp_path: Path) -> None:
    other = CounterDesk(counter.db, "o1", counter.desk.docs_dir, PLATFORM_KEYS, counter.desk.scale, None,
                        counter_id="counter2")
    try:
        reading = other.weigh()["reading"]
        assert other.accept(form(reading), "gw-o1")["label"] == {"printed": False, "error": "no_printer"}
        code, out = counter.call("POST", "/accept", form(counter.weigh()))
        assert (code, out["error"]) == (409, "waybill_reused")
        assert len(accepts(counter.db)) == 1
    finally:
        other.store.close()


def test_scanned_box_codes_refusals_counted_and_one_weighing_at_a_time(counter: Counter) -> None:
    code, out = counter.call("POST", "/accept", form(counter.weigh(), box="]C0PE-BOX-F5"))  # AIM prefix
    assert code == 200, out
    counter.call("POST", "/accept", form(counter.weigh(3500), box="PE-BOX-E30", waybill="]C09512345678910"))
    c = http.client.HTTPConnection("127.0.0.1", counter.svc.port, timeout=5)
    c.request("GET", "/metrics")
    metrics = c.getresponse().read().decode()
    c.close()
    assert 'postedge_counter_accepts_total{result="overweight"}' in metrics
    assert 'postedge_counter_accepts_total{result="accepted"}' in metrics
    # a weighing that cannot settle holds the scale; a second caller is told at once
    counter.scale.frames = [b"US,GS,+0001.000kg\r\n"]
    results: list[tuple[int, Any]] = []
    t = threading.Thread(target=lambda: results.append(counter.call("POST", "/weigh", raw=b"")))
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    code, out = counter.call("POST", "/weigh", raw=b"")
    assert (code, out["error"]) == (409, "scale") and "busy" in out["message"]["en"]
    assert time.monotonic() - t0 < 1
    t.join()
    assert results[0][1]["error"] == "scale" and "unstable" in results[0][1]["message"]["en"]


@pytest.mark.slow
def test_the_gateway_process_serves_the_counter_its_config_describes(tmp_path: Path) -> None:
    """``postedge gateway run`` with ``[counter]``: Mosquitto, the gateway
    process, a pty scale and a file label printer; the documents pushed,
    a parcel weighed and accepted, and the event in the gateway's store."""
    from gateway.broker import Mosquitto
    from simulator.gateway_process import GatewayProcess
    from simulator.gateway_process import write_config as write_gateway_config

    broker = Mosquitto(tmp_path / "broker", ACCOUNTS)
    broker.start()
    scale = PtyScale()
    scale.play([frame(1500)])
    web_port = free_port()
    cfg = write_gateway_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", PW["gw-o1"])
    keys = ", ".join(f'{k} = "{v}"' for k, v in PLATFORM_KEYS.items())
    with cfg.open("a", encoding="utf-8") as f:
        f.write(f'\n[web]\nhost = "127.0.0.1"\nport = {web_port}\npasswd_file = "broker/passwd"\n'
                f'\n[counter]\nplatform_keys = {{ {keys} }}\nscale_url = "{scale.path}"\n'
                f'scale_format = "st-gs"\nstable_window_s = 0.2\n'
                f'label_url = "file:{tmp_path / "labels.zpl"}"\nlabel_language = "zpl"\n')
    gw = GatewayProcess(cfg)
    try:
        gw.wait_for("gateway_started", timeout=30)

        def call(method: str, path: str, body: bytes) -> tuple[int, Any]:
            h = {"Authorization": "Basic " + base64.b64encode(b"gw-o1:gw-secret").decode()}
            c = http.client.HTTPConnection("127.0.0.1", web_port, timeout=10)
            try:
                c.request(method, f"/v1/counter{path}", body=body, headers=h)
                r = c.getresponse()
                return r.status, json.loads(r.read())
            finally:
                c.close()

        for doc in (catalogue_doc(), tariff_doc()):
            assert call("PUT", "/documents", dumps(doc))[0] == 200
        code, w = call("POST", "/weigh", b"")
        assert code == 200 and w["weight_g"] == 1500
        code, out = call("POST", "/accept", json.dumps(form(w["reading"])).encode())
        assert code == 200 and out["label"] == {"printed": True}, out
        assert b"^FD9512345678903^FS" in (tmp_path / "labels.zpl").read_bytes()
    finally:
        gw.stop()
        broker.stop()
        scale.close()
    [ev] = accepts(tmp_path / "gateway.db")
    assert ev["body"]["weight_g"] == 1500 and ev["id"].startswith("counter:")
