"""The courier handheld app: outbox and MQTT link, scan feedback, parcel flows,
bulletin-board jobs from a signed command, and bad input.

A real Mosquitto with a handheld account (the shared conftest has none), a real paho
client playing the gateway (it confirms each event it receives, as the gateway does),
real SQLite, real photos drawn with OpenCV and read back
with zxing-cpp, a real NMEA stream through pyserial's loop://.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import serial

from common.ports import free_port
from firmware.locker.codes import salted_hash
from gateway.broker import Mosquitto
from handheld import webui
from handheld.app import HandheldApp
from handheld.config import ConfigError, HandheldConfig, parse_config
from handheld.nmea import GnssReader, build_sentence
from handheld.outbox import OutboxFull, SqliteOutbox
from handheld.position import GnssConfig
from handheld.scanning import ScanFilter
from handheld.text import Refused
from protocol import canonical, codes, presence, signing
from protocol.errors import ProtocolError
from simulator.imagegen import board_with_qr, s10_id
from simulator.platform_keys import PlatformKeys
from tests.handheld.conftest import ACCOUNTS, DEV, OUTLET, Gateway
from tests.waiting import within

PLATFORM = PlatformKeys(OUTLET)  # the platform's side: it alone holds the master key
KEY = PLATFORM.key(DEV)  # hh01's own key: verifies commands to hh01, opens no locker
CAMPAIGN = "PE-CAMP:health-2025"
T0 = 1_746_518_400.0
GOOD = "RB123456785GB"  # valid S10 (the protocol's own example)


# ------------------------------------------------------------------ helpers

def jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return bytes(buf)


class Clock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


def gnss_ready(lat: float = 27.5, lon: float = 109.9) -> GnssReader:
    """A reader on loop:// fed 7 s of a good fix, with a clock that then stands still (fix stays fresh)."""
    clock = Clock()
    port = serial.serial_for_url("loop://", timeout=0.05)
    r = GnssReader(port, config=GnssConfig(), clock=clock, wall_clock=lambda: T0)
    for i in range(7):
        t = f"0800{i:02d}.00"
        la = f"{int(lat):02d}{(lat % 1) * 60:07.4f}"
        lo = f"{int(lon):03d}{(lon % 1) * 60:07.4f}"
        for body in (f"GNGGA,{t},{la},N,{lo},E,1,14,0.7,410.0,M,-20.0,M,,",
                     f"GNRMC,{t},A,{la},N,{lo},E,0.0,0.0,060525,,,A",
                     f"GNGST,{t},0.9,2.1,1.4,20.0,2.4,1.8,3.5"):
            port.write((build_sentence(body) + "\r\n").encode())
        r.poll()
        clock.t += 1
    return r


def signed(op: str, args: dict[str, Any], dev: str = DEV, cid: str | None = None, key: bytes = KEY,
           ttl: int = 3600) -> dict[str, Any]:
    now = int(time.time())
    return signing.sign({"v": 1, "id": cid or f"c-{op}-{time.monotonic_ns() % 10**9}", "dev": dev, "op": op,
                         "args": args, "iat": now - 5, "exp": now + ttl}, key, 1)


def jobs_args() -> dict[str, Any]:
    return {"round": "r-0501", "jobs": [
        {"id": "j-17", "kind": "install", "campaign": CAMPAIGN,
         "site": {"id": "s-03", "name": "Xiakou square", "lat_e7": 275000000, "lon_e7": 1099000000,
                  "directions": "Behind the clinic / 卫生院后面"}},
        {"id": "j-18", "kind": "maintenance", "campaign": CAMPAIGN,
         "site": {"id": "s-04", "name": "Shangpo shop", "lat_e7": 275100000, "lon_e7": 1099100000,
                  "directions": "Shop wall"}}]}


def make_config(tmp: Path, port: int, **over: Any) -> HandheldConfig:
    d: dict[str, Any] = {
        "device": DEV, "outlet": OUTLET, "courier": "c007", "state_dir": str(tmp / "hh-state"),
        "key": PLATFORM.device_config(DEV),
        "broker": {"host": "127.0.0.1", "port": port, "username": DEV, "password": "hh01-pw", "keepalive": 5},
        "gateway": {"url": over.pop("gateway_url", "http://127.0.0.1:9")},
        "web": {"host": "127.0.0.1", "port": 0},
        "require_position": True,
    }
    d.update(over)
    return parse_config(d, tmp)


@pytest.fixture
def app(tmp_path: Path, hbroker: Mosquitto, gw: Gateway) -> Iterator[HandheldApp]:
    a = HandheldApp(make_config(tmp_path, hbroker.port))
    a.gnss = gnss_ready()
    a.start()
    assert a.link.subscribed.wait(10)
    try:
        yield a
    finally:
        a.stop()


def of_type(evts: list[dict[str, Any]], t: str) -> list[dict[str, Any]]:
    return [e for e in evts if e["type"] == t]


# ------------------------------------------------------------------ outbox + link

@pytest.mark.slow
def test_outbox_keeps_everything_across_restarts_and_a_broker_that_is_down(tmp_path: Path) -> None:
    port = free_port()
    cfg = make_config(tmp_path, port)
    a = HandheldApp(cfg).start()
    sent = []
    for _ in range(5):
        r = a.scan(s10_id(np.random.default_rng(len(sent))), mode="intake")
        assert r["ok"], r
        sent.append(r["parcel"])
        time.sleep(cfg.other_window_s + 0.05)
    time.sleep(0.5)
    assert not a.link.connected and a.link.last_error
    first_count = a.outbox.count()
    assert first_count == 10  # 5 scans (telemetry) + 5 intakes (custody)
    a.stop()

    # a restart with the broker still down: nothing lost, ids continue
    a = HandheldApp(cfg).start()
    r = a.scan(s10_id(np.random.default_rng(99)), mode="intake")
    assert r["ok"]
    sent.append(r["parcel"])
    time.sleep(0.3)
    assert a.outbox.count() == first_count + 2
    a.stop()

    # the broker comes up; the gateway is listening; the third start sends everything in order
    b = Mosquitto(tmp_path / "broker", ACCOUNTS, port=port)
    b.start()
    gw = Gateway(port)
    try:
        a = HandheldApp(cfg).start()
        try:
            assert gw.wait(lambda: len(gw.events()) >= first_count + 2, 15)
            assert gw.wait(lambda: a.outbox.count() == 0)
            evts = gw.events()
            assert [e["body"]["parcel"] for e in of_type(evts, "handheld.intake")] == sent
            seqs = [int(e["id"].split(":")[2]) for e in evts]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            assert {e["cls"] for e in of_type(evts, "handheld.intake")} == {"custody"}
            assert {e["cls"] for e in of_type(evts, "handheld.scan")} == {"telemetry"}
            assert len({e["boot"] for e in evts}) == 2  # two boots produced events
            # presence online (retained) and a state document
            # presence online (retained, tagged with this connection: protocol/presence.py)
            assert gw.wait(lambda: any(t.endswith("/presence") and presence.decode(p)[0] is True
                                       for t, p in gw.msgs))
        finally:
            a.stop()
        assert gw.wait(lambda: any(t.endswith("/presence") and presence.decode(p)[0] is False
                                   for t, p in gw.msgs[-3:]))
    finally:
        gw.close()
        b.kill()


def test_outbox_capacity_evicts_only_telemetry(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "ob.db", capacity_bytes=64 * 1024)
    blob = b"x" * 1000
    for _ in range(40):
        ob.append("telemetry", "t", blob)
    for _ in range(30):
        ob.append("custody", "t", blob)
    st = ob.status()
    assert st["by_class"]["custody"] == 30 and st["evicted"] > 0 and st["bytes"] <= 64 * 1024
    for _ in range(40):
        try:
            ob.append("audit", "t", blob)
        except OutboxFull:
            break
    else:
        pytest.fail("outbox never filled")
    st = ob.status()
    assert "telemetry" not in st["by_class"] and st["by_class"]["custody"] == 30 and st["refused"] == 1
    before = ob.count()
    with pytest.raises(OutboxFull):
        ob.append("custody", "t", blob)
    assert ob.count() == before  # a refused record evicts nothing
    ob.close()
    ob = SqliteOutbox(tmp_path / "ob.db", capacity_bytes=64 * 1024)
    assert ob.count() == before and ob.used_bytes == st["bytes"]
    seq = ob.pending(1)[0][0]
    ob.mark_delivered(seq)
    assert ob.count() == before - 1 and not ob.contains(seq)


# ------------------------------------------------------------------ scans

def test_scan_verdicts_and_both_duplicate_windows() -> None:
    clock = Clock()
    f = ScanFilter(same_window_s=3.0, other_window_s=0.3, clock=clock)
    other = s10_id(np.random.default_rng(5))
    assert f.judge(GOOD).verdict == "good"
    clock.t += 1.0
    r = f.judge(GOOD)
    assert (r.verdict, r.reason) == ("duplicate", "same_symbol")
    clock.t += 2.9  # window restarts on every read: still a duplicate
    assert f.judge(GOOD).verdict == "duplicate"
    clock.t += 3.1
    assert f.judge(GOOD).verdict == "good"
    clock.t += 0.1
    r = f.judge(other)
    assert (r.verdict, r.reason) == ("duplicate", "too_soon")
    clock.t += 3.5
    assert f.judge(other).verdict == "good"
    clock.t += 5
    bad = GOOD[:10] + "4" + GOOD[11:]
    r = f.judge(bad)
    assert r.verdict == "invalid" and r.reason == "s10_check_digit"
    clock.t += 5
    r = f.judge("6901234567892")  # a product EAN-13, not a parcel
    assert (r.verdict, r.reason) == ("invalid", "not_parcel")
    clock.t += 5
    r = f.judge(s10_id(np.random.default_rng(6)), route={GOOD})
    assert (r.verdict, r.reason) == ("wrong_route", "not_on_route")
    clock.t += 5
    assert f.judge("]C0" + GOOD, route={GOOD}).verdict == "good"  # AIM prefix from a scan engine
    assert f.counts["good"] >= 3 and f.counts["duplicate"] == 3


def test_scan_screen_feedback_per_verdict(tmp_path: Path) -> None:
    a = HandheldApp(make_config(tmp_path, free_port(), scan={"same_window_s": 2.0, "other_window_s": 0.0}))
    try:
        a.flows.load_manifest({"parcels": [{"parcel": GOOD}]})
        assert a.scan(GOOD)["verdict"] == "good"
        dup = a.scan(GOOD)
        assert dup["verdict"] == "duplicate" and "重复" in dup["zh"] and "Duplicate" in dup["en"]
        wrong = a.scan(s10_id(np.random.default_rng(8)))
        assert wrong["verdict"] == "wrong_route" and "路线" in wrong["zh"]
        inv = a.scan("HELLO")
        assert inv["verdict"] == "invalid" and inv["zh"].startswith("✕")
        types = [r[2] for r in a.outbox.pending(10)]
        assert all(t.endswith("/evt") for t in types) and a.outbox.count() == 3  # no event for the duplicate
        # a checker's detail in the courier's language, not the checker's English
        country = a.scan("RB123456785ZZ")
        assert country["zh"].endswith("ZZ 不是 ISO 3166 国家代码") and "country code" in country["en"]
        deliver = a.scan("RB123456784GB", mode="deliver")
        assert deliver["code"] == "invalid_scan" and deliver["zh"] == "条码无效：校验位是 4，应为 5"
        assert deliver["detail"] == "check digit is 4, expected 5"  # the API's field stays the checker's
    finally:
        a.stop()


# ------------------------------------------------------------------ jobs

@pytest.mark.slow
def test_bulletin_board_job_from_a_signed_command(app: HandheldApp, gw: Gateway) -> None:
    cmd = signed("jobs", jobs_args(), cid="c-jobs-1")
    gw.command(cmd)
    assert gw.wait(lambda: any(a["id"] == "c-jobs-1" for a in gw.acks()))
    ack = next(a for a in gw.acks() if a["id"] == "c-jobs-1")
    assert ack["ok"] and ack["result"] == {"items": 2}
    assert [j["id"] for j in app.jobs.list()] == ["j-17", "j-18"]
    # replayed, forged, for another device, not JSON: refused with the reason, nothing changes
    gw.command(cmd)
    forged = dict(signed("jobs", {"jobs": []}, cid="c-forged"), sig="0" * 64)
    gw.command(forged)
    gw.command(signed("jobs", {"jobs": []}, dev="hh02", cid="c-other"))
    gw.command(b"\xff not json")
    assert gw.wait(lambda: len(gw.acks()) >= 5)
    codes = {a["id"]: a["code"] for a in gw.acks()}
    assert codes["c-jobs-1"] in ("ok", "replayed") and list(codes.values()).count("replayed") == 1
    assert codes["c-forged"] == "bad_signature" and codes["c-other"] == "wrong_device"
    assert codes["?"] == "malformed"
    assert len(app.jobs.list()) == 2

    with pytest.raises(Refused) as e:
        app.jobs.do_step("j-17", "install_board")  # not picked yet
    assert e.value.code == "bad_step"
    # the step in words in each language, never its code
    assert e.value.zh == "这一步现在不能做：安装公告栏" and e.value.en.endswith(": Install the board")
    app.jobs.pick("j-17")
    with pytest.raises(Refused):
        app.jobs.do_step("j-17", "post_poster")  # out of order
    app.jobs.do_step("j-17", "install_board")
    done = app.jobs.do_step("j-17", "post_poster")
    assert done["zh"] == "已完成：张贴海报" and done["en"] == "Done: Post the poster"
    with pytest.raises(Refused) as e:
        app.jobs.submit("j-17")
    assert e.value.code == "need_steps" and "photo" in e.value.en

    # the wrong poster, then no poster: refused with a clear message, nothing recorded
    wrong = app.photo("j-17", "photo", jpeg(board_with_qr("PE-CAMP:flu-2024", seed=2)))
    assert not wrong["ok"] and wrong["code"] == "campaign_wrong" and "flu-2024" in wrong["en"]
    assert "海报不对" in wrong["zh"]
    with pytest.raises(Refused) as e:
        app.jobs.photo("j-17", "photo", jpeg(board_with_qr(None, seed=3)))
    assert e.value.code == "campaign_missing"
    blurry = app.photo("j-17", "photo", jpeg(cv2.GaussianBlur(board_with_qr(CAMPAIGN, seed=4), (0, 0), 6)))
    assert not blurry["ok"] and blurry["code"] == "photo_quality" and blurry["quality"]["ok"] is False
    assert app.index.count() == 0

    good = app.photo("j-17", "photo", jpeg(board_with_qr(CAMPAIGN, seed=1)))
    assert good["ok"], good
    assert good["quality"]["ok"] and CAMPAIGN in good["campaign"]["en"]
    res = app.jobs.submit("j-17")
    assert res["ok"] and app.jobs.list()[0]["status"] in ("submitted", "sent")
    assert gw.wait(lambda: of_type(gw.events(), "handheld.job_submitted"))
    assert gw.wait(lambda: app.jobs.list()[0]["status"] == "sent")
    evts = gw.events()
    steps = [e["body"]["step"] for e in of_type(evts, "handheld.board_step")]
    assert steps == ["arrive", "install_board", "post_poster"]
    ph = of_type(evts, "handheld.photo")
    assert len(ph) == 1 and ph[0]["cls"] == "audit" and ph[0]["body"]["sha256"] == good["sha256"]
    assert ph[0]["body"]["campaign"] == CAMPAIGN and ph[0]["body"]["lat_e7"] == 275000000
    sub = of_type(evts, "handheld.job_submitted")[0]["body"]
    assert sub["photos"] == [good["sha256"]] and sub["job"] == "j-17"
    # the photo waits for the uploader (stored on the handheld until it exists)
    assert app.photos.status()["total"] == 1
    assert (app.state_dir / "photos" / f"{good['sha256']}.jpg").exists()

    # maintenance: before and after photos
    app.jobs.pick("j-18")
    assert app.photo("j-18", "photo_before", jpeg(board_with_qr(CAMPAIGN, seed=11)))["ok"]
    app.jobs.do_step("j-18", "maintain")
    assert app.photo("j-18", "photo_after", jpeg(board_with_qr(CAMPAIGN, seed=12)))["ok"]
    app.jobs.submit("j-18")
    # a re-sent job list keeps work in progress
    gw.command(signed("jobs", {"jobs": jobs_args()["jobs"][:1]}, cid="c-jobs-2"))
    assert gw.wait(lambda: any(a["id"] == "c-jobs-2" for a in gw.acks()))
    assert {j["id"]: j["status"] for j in app.jobs.list()}.keys() == {"j-17", "j-18"}


# ------------------------------------------------------------------ parcel flows

class FakeGatewayApi:
    """``GET /v1/commands/<id>``: 404 until the test says the locker answered."""

    def __init__(self) -> None:
        self.status: dict[str, dict[str, Any]] = {}
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                cid = self.path.rsplit("/", 1)[-1]
                doc = outer.status.get(cid)
                body = json.dumps(doc).encode() if doc else b'{"error":"not_found"}'
                self.send_response(200 if doc else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_parcel_flows_publish_custody_events(tmp_path: Path, hbroker: Mosquitto, gw: Gateway) -> None:
    api = FakeGatewayApi()
    a = HandheldApp(make_config(tmp_path, hbroker.port, gateway_url=api.url,
                                scan={"same_window_s": 3.0, "other_window_s": 0.0}))
    a.start()
    assert a.link.subscribed.wait(10)
    try:
        rng = np.random.default_rng(42)
        dep, hand, hand2, ret, stranger = (s10_id(rng) for _ in range(5))
        permit = PLATFORM.permit("lk01", "deposit", dep, "c007", DEV, "p-dep-1", size="M")
        salt = "0011223344556677"
        token = codes.new_token(lambda n: bytes(range(7, 7 + n)))
        manifest = {"round": "r1", "parcels": [
            # An older platform also sends the locker code's verifier: the handheld drops it.
            {"parcel": dep, "to": "Li Wei", "size": "M", "locker": "lk01", "permit": permit,
             "code_salt": salt, "code_hash": salted_hash(salt, "135790")},
            {"parcel": hand, "to": "Wang Fang", "token_salt": salt, "token_hash": salted_hash(salt, token)},
            {"parcel": hand2, "to": "Zhao Lei"}],
            "retrieval": [{"parcel": ret, "locker": "lk01", "reason": "overdue"}]}
        gw.command(signed("manifest", manifest, cid="c-man-1"))
        assert gw.wait(lambda: a.flows.view()["parcels"])

        r = a.scan(dep, mode="deposit")
        assert r["ok"] and r["cmd"] == "p-dep-1" and "lk01" in r["en"]
        assert a.scan(stranger, mode="deposit")["verdict"] == "wrong_route"
        assert a.scan("6901234567892", mode="deposit")["verdict"] == "invalid"
        # the gateway does not know the command yet (404), then the locker acks it
        a.flows.poll_commands()
        assert a.flows.state["commands"]["p-dep-1"]["status"] == "unknown"
        api.status["p-dep-1"] = {"id": "p-dep-1", "status": "acked", "ack": {"ok": True, "code": "ok"}}
        assert gw.wait(lambda: a.flows.view()["parcels"][0]["state"] == "deposited")

        r = a.scan(hand, mode="deliver")
        assert r["ok"] and r["confirm"]
        stored = (tmp_path / "hh-state" / "parcels.json").read_text()
        assert "code_hash" not in stored and salted_hash(salt, "135790") not in stored
        with pytest.raises(Refused) as e:
            a.flows.hand_delivery(hand, "code", "135790")  # the locker code is no delivery token
        assert e.value.code == "locker_code_given" and "PE-H" in e.value.en and "交付" in e.value.zh
        with pytest.raises(Refused) as e:
            a.flows.hand_delivery(hand, "code", "PE-H:0000-0000-0000-0000")
        assert e.value.code == "wrong_code" and "4" in e.value.en
        # The QR code's text, or the printed token typed in lower case with I for 1.
        typed = codes.format_token(token).lower().replace("1", "i")
        assert a.flows.hand_delivery(hand, "code", typed)["ok"]
        with pytest.raises(Refused) as e:
            a.flows.hand_delivery(hand2, "code", "123456")
        assert e.value.code == "no_code_on_file"
        assert a.flows.hand_delivery(hand2, "name", "赵磊")["ok"]
        with pytest.raises(Refused) as e:
            a.flows.hand_delivery(hand2, "name", "赵磊")
        assert e.value.zh == f"包裹 {hand2} 已处理（已当面投递）" and "delivered" not in e.value.zh
        assert e.value.en == f"Parcel {hand2} is already done (delivered)"
        a.scans.forget(dep)  # scanned a moment ago: the same-symbol window would call it a duplicate
        assert a.scan(dep, mode="collect")["verdict"] == "wrong_route"
        page = webui.part_parcels(a, "zh")
        assert "超期未取" in page and "overdue" not in page
        assert a.scan(ret, mode="collect")["ok"]
        assert a.scan(s10_id(rng), mode="intake")["ok"]

        want = {"handheld.deposit_requested", "handheld.forward_command", "handheld.command_result",
                "handheld.hand_delivery", "handheld.collect", "handheld.intake"}
        assert gw.wait(lambda: want <= {e["type"] for e in gw.events()}, 15)
        evts = gw.events()
        fwd = of_type(evts, "handheld.forward_command")[0]
        assert fwd["cls"] == "custody" and fwd["body"] == {"kind": "locker", "cmd": permit}
        # what the gateway will enqueue verifies for the locker with lk01's own key, not hh01's
        assert signing.verify(canonical.dumps(fwd["body"]["cmd"]), {1: PLATFORM.key("lk01")}, "lk01",
                              int(time.time()))
        with pytest.raises(ProtocolError):
            signing.verify(canonical.dumps(fwd["body"]["cmd"]), {1: KEY}, "lk01", int(time.time()))
        req = of_type(evts, "handheld.deposit_requested")[0]["body"]
        assert req == {"parcel": dep, "locker": "lk01", "size": "M", "cmd": "p-dep-1", "courier": "c007"}
        hd = of_type(evts, "handheld.hand_delivery")
        assert [h["body"]["method"] for h in hd] == ["code", "name"] and hd[0]["body"]["verified"] is True
        assert "654321" not in json.dumps(evts)  # the pickup code is never recorded
        assert of_type(evts, "handheld.collect")[0]["body"]["reason"] == "overdue"
        assert all(e["cls"] == "custody" for e in evts if e["type"] in want - {"handheld.command_result"})
    finally:
        a.stop()
        api.close()


# ------------------------------------------------------------------ bad input

def test_bad_input_gives_clear_messages_and_loses_nothing(tmp_path: Path) -> None:
    cam = tmp_path / "cam"
    cam.mkdir()
    cv2.imwrite(str(cam / "f1.jpg"), board_with_qr(CAMPAIGN))
    a = HandheldApp(make_config(tmp_path, free_port(), camera=str(cam)))
    bad_gnss = GnssReader(serial.serial_for_url("loop://", timeout=0.05))
    a.gnss = bad_gnss
    a.start()
    try:
        a.jobs.load_list(jobs_args())
        a.jobs.pick("j-17")
        a.jobs.do_step("j-17", "install_board")
        a.jobs.do_step("j-17", "post_poster")
        held = a.outbox.count()
        # corrupt and non-image files, an empty frame
        for data in (b"\xff\xd8\xff\xe0garbage", b"hello, not a picture"):
            r = a.photo("j-17", "photo", data)
            assert not r["ok"] and r["code"] == "not_an_image" and r["zh"] and r["en"]
        with pytest.raises(Exception) as e:
            a.jobs.photo("j-17", "photo", np.zeros((0, 0, 3), np.uint8))
        assert getattr(e.value, "code", "") == "empty_frame"
        # garbage NMEA: counted, the position is not ready, the photo is refused for that reason
        bad_gnss.feed(b"$GPGGA,garbage*00\r\n\x00\x01\x02 nonsense\r\n$GNRMC,,V,,,,,,,,,,N*4D\r\n")
        assert sum(bad_gnss.counters()["rejected"].values()) >= 1
        assert within(lambda: a.camera.latest() is not None)
        r = a.photo("j-17", "photo", None)
        assert not r["ok"] and r["code"] == "position_not_ready" and r["retake"] is False
        # the camera disappears: a clear message, no stale frame used as evidence
        for f in cam.iterdir():
            f.unlink()
        cam.rmdir()
        assert within(lambda: a.camera.error is not None)
        r = a.photo("j-17", "photo", None)
        assert not r["ok"] and r["code"] == "no_frame" and "相机" in r["zh"]
        # the gateway's HTTP API is away: polling changes nothing and does not raise
        a.flows.state["commands"]["x"] = {"parcel": GOOD, "locker": "lk01", "status": "queued",
                                          "for": "deposit"}
        assert a.flows.poll_commands() == 0 and a.gateway.reachable is False
        # broken commands: refused and acked, nothing else changes
        for payload in (b"", b"[]", b'{"id":"c1"}', b"x" * 70000):
            assert a.handle_command(payload) in ("malformed", "missing_field", "oversized")
        assert a.outbox.count() == held + 4  # four acks queued, no event lost or added
        assert len(a.jobs.list()) == 2
    finally:
        a.stop()


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    base: dict[str, Any] = {"device": DEV, "outlet": OUTLET, "key": {"kv": 1, "secret": "00" * 32}}
    assert parse_config(base, tmp_path).lang == "zh"
    for bad, key in ((dict(base, device="HH 01"), "device"), (dict(base, broker={"port": 0}), "broker.port"),
                     (dict(base, brokr={}), "brokr"),
                     (dict(base, key={"kv": 1, "secret": "zz"}), "key.secret"),
                     (dict(base, key={"kv": 0, "secret": "00" * 32}), "key.kv"),
                     ({"device": DEV, "outlet": OUTLET}, "key"),
                     (dict(base, command_keys={"k1": "00" * 32}), "command_keys"),
                     (dict(base, lang="fr"), "lang"), (dict(base, gateway={"url": "ftp://x"}), "gateway.url"),
                     (dict(base, scan={"same_window_s": -1}), "scan.same_window_s")):
        with pytest.raises(ConfigError) as e:
            parse_config(bad, tmp_path)
        assert key in str(e.value)
    bad_file = tmp_path / "hh.toml"
    bad_file.write_text(f'device = "hh01"\noutlet = "o1"\n[key]\nkv = 1\nsecret = "{"00" * 32}"\n[brokr]\n')
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "zh", "handheld", "run",
                        "--config", str(bad_file)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"错误：{bad_file}: brokr: 没有这个键，是不是 'broker'？"), r.stderr
    assert "Traceback" not in r.stderr


def test_run_with_its_ui_port_taken_is_one_line_and_exit_3(tmp_path: Path) -> None:
    """The machine's problem, not the config's: exit 3, one translated line."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cfg = tmp_path / "hh.toml"
    cfg.write_text(f'device = "hh01"\noutlet = "o1"\nstate_dir = "st"\n'
                   f'[key]\nkv = 1\nsecret = "{"00" * 32}"\n[broker]\n'
                   f'host = "127.0.0.1"\nport = 1\n[web]\nport = {port}\n')
    try:
        r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "zh", "handheld", "run",
                            "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert r.returncode == 3, r.stderr
    want = f"错误：手持终端无法启动：web.host/web.port: 无法在 127.0.0.1:{port} 上监听"
    assert r.stderr.startswith(want), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
