"""The clerk's status page, /api/status and /metrics, end to end.

A real gateway process (``postedge gateway --config`` with a ``[web]``
table) stores what devices publish to a real Mosquitto; the page is opened
in Debian's chromium through Playwright (never a downloaded browser) and
checked for what a clerk reads, in Chinese and in English: presence with
durations (a scanner's Last Will turns it offline on the open page),
compartments and parcels, alarms, the upload backlog and last sync.
Text a device sends is shown as text: an injected ``<script>`` must neither
run nor vanish.

Set POSTEDGE_SCREENSHOT_DIR to keep the page's screenshots for a look.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.broker import Mosquitto
from gateway.config import ConfigError
from gateway.config import parse_web as parse_config
from gateway.http.page import ago, duration, render_main, render_page
from gateway.http.server import start_web
from gateway.http.status import snapshot
from gateway.store.events import EventStore, StoredEvent
from protocol import envelope, topics
from protocol.ids import format_event_id
from simulator.gateway_process import GatewayProcess, write_config
from simulator.outlet import compartments
from tests.conftest import PASSWORDS

INC = "0badc0de"
INJECTED = '<img src=x onerror="window.__pwned=2"><script>window.__pwned=1</script>'
INJECTED_ALARM = "<script>window.__pwned=3</script>"
PICKUP_CODE = "654321"  # in the deposit body; must never reach the page or the API


# ------------------------------------------------------------------ helpers

def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def wait_api(base: str, pred: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        code, _, body = get(base + "/api/status")
        if code == 200:
            last = json.loads(body)
            if pred(last):
                return last
        time.sleep(0.1)
    raise AssertionError(f"/api/status never matched; last: {json.dumps(last)[:2000]}")


def event(dev: str, seq: int, etype: str, cls: str, body: dict[str, Any]) -> bytes:
    env = envelope.make(format_event_id(dev, INC, seq), int(time.time()), etype, cls, body, boot=1)
    return envelope.encode(env)


def locker_state() -> dict[str, Any]:
    """A 24-door locker as firmware/locker/app.py ``state_doc`` publishes it:
    parcels in 5 and 9, 6 overdue, 7 a return, and a state in 12 that tries
    HTML injection."""
    comps = [{"id": c["id"], "size": c["size"], "state": "free"} for c in compartments()]
    for cid, st in ((5, "occupied"), (9, "occupied"), (6, "overdue"), (7, "return_waiting"),
                    (12, INJECTED)):
        comps[cid - 1]["state"] = st
    return {"v": 1, "ts": int(time.time()), "compartments": comps, "retrieval": [6, 7],
            "summary": {"free": 19, "occupied": 2, "overdue": 1, "return_waiting": 1},
            "outbox": {"used": 2048, "pending": 3, "capacity": 65536}}


def device_client(user: str, port: int, will: str | None = None) -> mqtt.Client:
    """A device's MQTT session; with ``will`` the broker publishes b"offline"
    there, retained, when the connection drops without a DISCONNECT."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{user}", protocol=mqtt.MQTTv311)
    c.username_pw_set(user, PASSWORDS[user])
    if will:
        c.will_set(will, b"offline", qos=1, retain=True)
    up = threading.Event()
    c.on_connect = lambda *a: up.set()
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    assert up.wait(10), f"{user}: no CONNACK"
    return c


def pull_the_plug(c: mqtt.Client) -> None:
    """Drop the TCP connection as a power cut would: no DISCONNECT, so the
    broker sends the Last Will."""
    sock = c.socket()
    c.loop_stop()
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def keep_screenshot(path: Path) -> None:
    out = os.environ.get("POSTEDGE_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / path.name)


# ------------------------------------------------------------------ fixtures

@pytest.fixture
def gateway_web(tmp_path: Path, broker: Mosquitto) -> Iterator[dict[str, Any]]:
    cfg = write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")
    with cfg.open("a", encoding="utf-8") as f:
        f.write('\n[web]\nhost = "127.0.0.1"\nport = 0\nlang = "zh"\nrefresh_s = 1\n')
    gw = GatewayProcess(cfg)
    try:
        gw.wait_for("gateway_started")
        started = next(d for d in gw.lines if d.get("evt") == "web_started")
        yield {"gw": gw, "base": f"http://127.0.0.1:{started['port']}", "db": tmp_path / "gateway.db"}
    finally:
        if gw.proc.poll() is None:
            gw.stop()


# ------------------------------------------------------------------ the page, end to end

def test_clerk_sees_outlet_status_in_chinese_and_english(gateway_web: dict[str, Any], broker: Mosquitto,
                                                        chromium: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    base = gateway_web["base"]
    lk_presence = topics.build("o1", "locker", "lk01", "presence")
    sc_presence = topics.build("o1", "scanner", "sc01", "presence")
    lk = device_client("lk01", broker.port, will=lk_presence)
    sc = device_client("sc01", broker.port, will=sc_presence)
    lk_evt = topics.build("o1", "locker", "lk01", "evt")
    events = [
        (lk, lk_evt, event("lk01", 1, "locker.deposit", "custody",
                           {"compartment": 5, "parcel": "RB123456785GB", "courier": "c007",
                            "code_by": "locker", "code": PICKUP_CODE})),
        (lk, lk_evt, event("lk01", 2, "locker.alarm", "alarm", {"alarm": "door_forced", "compartment": 3})),
        (lk, lk_evt, event("lk01", 3, "locker.alarm", "alarm", {"alarm": INJECTED_ALARM})),
        (sc, topics.build("o1", "scanner", "sc01", "evt"),
         event("sc01", 1, "scanner.scan", "telemetry", {"code": "4006381333931"})),
    ]
    try:
        lk.publish(lk_presence, b"online", qos=1, retain=True).wait_for_publish(5)
        sc.publish(sc_presence, b"online", qos=1, retain=True).wait_for_publish(5)
        lk.publish(topics.build("o1", "locker", "lk01", "state"), json.dumps(locker_state()).encode(),
                   qos=1, retain=True).wait_for_publish(5)
        for client, topic, payload in events:
            client.publish(topic, payload, qos=1).wait_for_publish(5)

        # ---- /api/status: the same facts the page is made from
        api = wait_api(base, lambda s: s["backlog"]["count"] == 4 and s["summary"]["devices_online"] == 2
                       and s["lockers"] and s["lockers"][0]["reported"])
        devs = {d["device"]: d for d in api["devices"]}
        assert set(devs) == {"lk01", "sc01"}
        assert devs["lk01"]["kind"] == "locker" and devs["sc01"]["kind"] == "scanner"
        assert all(d["online"] and 0 <= d["for_s"] < 60 for d in devs.values())
        locker = api["lockers"][0]
        assert (locker["total"], locker["free"], locker["parcels"]) == (24, 19, 4)
        assert [(r["id"], r["state"]) for r in locker["retrieval"]] == [(6, "overdue"), (7, "return_waiting")]
        assert locker["compartments"][11]["state"] == INJECTED
        assert api["summary"] == {"devices_online": 2, "devices_total": 2, "devices_never": 0, "parcels": 4,
                                  "alarms_24h": 2, "alarms_24h_capped": False}
        forced = next(a for a in api["alarms"] if a["alarm"] == "door_forced")
        assert forced["compartment"] == 3 and forced["device"] == "lk01"
        assert forced["text"] == {"zh": "3 号格口：柜门被强行打开", "en": "Compartment 3: door forced open"}
        # Parcel ids are for the clerk console, behind its login: the LAN page shows none.
        assert (api["parcels"][0]["type"], api["parcels"][0]["compartment"]) == ("locker.deposit", 5)
        assert "parcel" not in api["parcels"][0]
        assert api["backlog"]["bytes"] == sum(len(p) for _, _, p in events)
        assert api["backlog"]["oldest_age_s"] < 60
        assert api["last_sync_at"] is None
        code, ctype, raw = get(base + "/api/status")
        assert ctype.startswith("application/json") and PICKUP_CODE not in raw

        # ---- /metrics and /healthz
        code, ctype, metrics = get(base + "/metrics")
        assert code == 200 and ctype.startswith("text/plain")
        assert re.search(r"^postedge_devices_online 2\.0$", metrics, re.M)
        assert re.search(r"^postedge_backlog_events 4\.0$", metrics, re.M)
        assert re.search(rf"^postedge_backlog_bytes {float(api['backlog']['bytes'])}$", metrics, re.M)
        assert re.search(r"^postedge_oldest_unsynced_seconds \d", metrics, re.M)
        assert re.search(r'^postedge_ingested_events_total\{cls="alarm"\} 2\.0$', metrics, re.M)
        assert get(base + "/healthz")[:3:2] == (200, "ok\n")
        assert get(base + "/nowhere")[0] == 404

        # ---- the page in Chinese (the configured default)
        page = chromium.new_page(viewport={"width": 1100, "height": 900})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(base + "/")
        assert page.get_attribute("html", "lang") == "zh-CN"
        expect(page).to_have_title(re.compile("网点设备状态"))
        main = page.locator("main")
        lk_row = page.locator('tr.dev[data-device="lk01"]')
        sc_row = page.locator('tr.dev[data-device="sc01"]')
        expect(lk_row).to_contain_text("快递柜")
        expect(lk_row).to_contain_text("在线")
        expect(lk_row).to_contain_text(re.compile(r"已在线 \d+ 秒"))
        expect(sc_row).to_contain_text("扫描枪")
        expect(sc_row).to_contain_text(re.compile(r"在线.*已在线 \d+ 秒"))
        expect(page.locator("#alarms")).to_contain_text("3 号格口：柜门被强行打开")
        expect(page.locator("#alarms")).to_contain_text("快递柜 lk01")
        expect(page.locator("#alarms")).to_contain_text(re.compile("刚刚|秒前"))
        expect(page.locator(".overall")).to_contain_text("有警报，请处理")
        expect(page.locator("#tile-devices")).to_contain_text("2 / 2")
        expect(page.locator("#tile-parcels .num")).to_have_text("4")
        expect(page.locator("#tile-alarms .num")).to_have_text("2")
        expect(page.locator("#tile-backlog .num")).to_have_text("4")
        expect(page.locator("#lockers")).to_contain_text("共 24 个格口：19 个空闲，4 个有包裹")
        expect(page.locator("#lockers")).to_contain_text("快递员需取回：6 号（逾期）、7 号（待退件）")
        expect(page.locator("#lockers")).to_contain_text("设备内待发送 3 条，存储已用 3%")
        expect(page.locator("#parcels")).to_contain_text("快递员投递")
        expect(page.locator("#parcels")).not_to_contain_text("RB123456785GB")
        expect(page.locator("#sync")).to_contain_text(re.compile(r"待上传 4 条（\d+ B）"))
        expect(page.locator("#sync")).to_contain_text("没有配置上传到平台")  # no [upstream] here
        expect(main).not_to_contain_text(PICKUP_CODE)

        # Device text is text: visible as typed, no element made of it, nothing run.
        expect(page.locator("#lockers .c").nth(11)).to_contain_text(INJECTED)
        expect(page.locator("#alarms")).to_contain_text(INJECTED_ALARM)
        assert page.locator("main img").count() == 0
        assert page.locator("main script").count() == 0
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page.content()
        assert page.evaluate("window.__pwned") is None and dialogs == []

        shot_zh = tmp_path / "status_page_zh.png"
        page.screenshot(path=str(shot_zh), full_page=True)
        keep_screenshot(shot_zh)
        assert shot_zh.stat().st_size > 20_000

        # ---- switch to English with the link
        page.locator("#lang-switch").click()
        page.wait_for_url(re.compile(r"lang=en"))
        assert page.get_attribute("html", "lang") == "en"
        expect(page.locator("#lang-switch")).to_have_text("中文")
        expect(page).to_have_title(re.compile("Outlet status"))
        expect(lk_row).to_contain_text(re.compile(r"Online.*online for \d+ s"))
        expect(page.locator("#alarms")).to_contain_text("Compartment 3: door forced open")
        expect(page.locator(".overall")).to_contain_text("Alarm: please act")
        expect(page.locator("#tile-devices")).to_contain_text("2 of 2")
        expect(page.locator("#lockers")).to_contain_text("24 compartments: 19 free, 4 with a parcel")
        expect(page.locator("#lockers")).to_contain_text(
            "Courier to take out: No. 6 (Overdue), No. 7 (Return)")
        expect(page.locator("#parcels")).to_contain_text("Delivered by courier")
        expect(page.locator("#sync")).to_contain_text(re.compile(r"4 events waiting \(\d+ B\)"))
        expect(page.locator("#sync")).to_contain_text("Uploading to the platform is not configured")
        expect(page.locator("#lockers .c").nth(11)).to_contain_text(INJECTED)
        shot_en = tmp_path / "status_page_en.png"
        page.screenshot(path=str(shot_en), full_page=True)
        keep_screenshot(shot_en)

        # ---- live refresh, without a reload: a power cut at the scanner
        # (its Last Will) and a sync recorded by the sync engine show up.
        page.evaluate("window.__same_page = 1")
        pull_the_plug(sc)
        expect(sc_row).to_contain_text(re.compile(r"Offline.*offline for \d+ s"), timeout=10_000)
        expect(page.locator("#tile-devices")).to_contain_text("1 of 2")
        expect(page.locator(".overall")).to_contain_text("1 device(s) offline")
        expect(lk_row).to_contain_text("Online")
        side = EventStore(gateway_web["db"])
        side.put("last_sync_at", str(time.time() - 125))
        side.close()
        expect(page.locator("#sync")).to_contain_text("Last upload: 2 min ago", timeout=10_000)
        assert page.evaluate("window.__same_page") == 1
        assert page.evaluate("window.__pwned") is None and dialogs == []
        offline = wait_api(base, lambda s: s["summary"]["devices_online"] == 1)
        assert {d["device"]: d["online"] for d in offline["devices"]} == {"lk01": True, "sc01": False}
        assert re.search(r"^postedge_devices_online 1\.0$", get(base + "/metrics")[2], re.M)

        # ---- and back to Chinese: the offline scanner, in Chinese
        page.locator("#lang-switch").click()
        page.wait_for_url(re.compile(r"lang=zh"))
        expect(sc_row).to_contain_text(re.compile(r"离线.*已离线 \d+ 秒"))
        expect(page.locator("#sync")).to_contain_text("上次上传：2 分钟前")
        expect(page.locator(".overall")).to_contain_text("1 台设备离线")
        shot = tmp_path / "status_page_zh_offline.png"
        page.screenshot(path=str(shot), full_page=True)
        keep_screenshot(shot)

        # ---- the gateway stops (SIGTERM): the web thread ends with it and
        # the open page says it cannot reach the gateway.
        t0 = time.monotonic()
        gateway_web["gw"].stop()
        assert time.monotonic() - t0 < 10
        expect(page.locator("#stale")).to_be_visible(timeout=10_000)
        expect(page.locator("#stale")).to_contain_text("无法连接网关")
        expect(sc_row).to_contain_text("离线")  # the last data stays on screen
        shot = tmp_path / "status_page_zh_stale.png"
        page.screenshot(path=str(shot), full_page=False)
        keep_screenshot(shot)
    finally:
        for c in (lk, sc):
            c.loop_stop()
            try:
                c.disconnect()
            except (OSError, ValueError):
                pass  # the scanner's socket is already gone


def test_alarm_with_a_lang_field_keeps_the_page_up_in_the_browser(tmp_path: Path, chromium: Any) -> None:
    """An alarm whose body has a key named ``lang``
    (or ``key``) made ``/``, ``/fragment`` and ``/api/status`` answer 500
    until 200 newer alarms pushed it out. The clerk's browser, refreshing
    live, must keep showing the page and that alarm."""
    from playwright.sync_api import expect

    store = EventStore(tmp_path / "gw.db")
    now = int(time.time())
    bodies = [{"alarm": "x", "lang": "zh", "key": "..", "n": 7},
              {"alarm": "lockout", "seconds": 45, "lang": "en", "key": "title", "compartment": 2}]
    store.commit_events([
        StoredEvent(format_event_id("lk01", INC, i + 1), "o1", "locker", "lk01", INC, i + 1, "alarm",
                    "locker.alarm", now, envelope.encode(envelope.make(
                        format_event_id("lk01", INC, i + 1), now, "locker.alarm", "alarm", b)))
        for i, b in enumerate(bodies)])
    store.close()
    stop = threading.Event()
    svc = start_web(tmp_path / "gw.db", {"port": 0, "refresh_s": 1}, stop)
    try:
        base = f"http://127.0.0.1:{svc.port}"
        for path in ("/", "/fragment", "/api/status", "/?lang=en", "/fragment?lang=en"):
            assert get(base + path)[0] == 200, path
        page = chromium.new_page()
        page.goto(base + "/")
        alarms = page.locator("#alarms")
        expect(alarms).to_contain_text("警报：x")
        expect(alarms).to_contain_text("2 号格口：取件码错误次数过多，已暂停取件 45 秒")
        page.wait_for_timeout(2500)  # two live refreshes through /fragment
        expect(page.locator("#stale")).to_be_hidden()
        expect(alarms).to_contain_text("警报：x")
        page.goto(base + "/?lang=en")
        expect(page.locator("#alarms")).to_contain_text("Compartment 2: too many wrong pickup codes, "
                                                        "pickup paused for 45 s")
        expect(page.locator("#alarms")).to_contain_text("Alarm: x")
        page.close()
    finally:
        stop.set()
        svc.join(5)


# ------------------------------------------------------------------ config, robustness, formatting

@pytest.mark.parametrize("web, key", [
    ({"port": "8080"}, "web.port"),
    ({"port": 70000}, "web.port"),
    ({"port": True}, "web.port"),
    ({"host": ""}, "web.host"),
    ({"lang": "fr"}, "web.lang"),
    ({"refresh_s": 0}, "web.refresh_s"),
    ({"colour": "red"}, "web.colour"),
])
def test_web_config_errors_name_the_key(web: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_config(web)


def test_web_config_defaults() -> None:
    cfg = parse_config({})
    assert (cfg.host, cfg.port, cfg.lang, cfg.refresh_s) == ("127.0.0.1", 8080, "zh", 5)


def test_gateway_refuses_a_bad_web_table_naming_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "gateway.toml", "o1", 1, "gw-o1", "gw-secret")
    with cfg.open("a", encoding="utf-8") as f:
        f.write('\n[web]\nport = "eighty"\n')
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "gateway", "run", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "web.port" in r.stderr


def test_taken_port_names_web_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError, match="web.port"):
            start_web(tmp_path / "gw.db", {"port": s.getsockname()[1]}, threading.Event())


def test_missing_database_is_a_503_not_a_crash(tmp_path: Path) -> None:
    stop = threading.Event()
    svc = start_web(tmp_path / "absent.db", {"port": 0, "lang": "en"}, stop)
    try:
        base = f"http://127.0.0.1:{svc.port}"
        code, _, body = get(base + "/")
        assert code == 503 and "Cannot read the gateway database" in body
        assert get(base + "/healthz")[0] == 503
        assert get(base + "/api/status")[0] == 503
        assert get(base + "/metrics")[0] == 200  # a scrape still gets the counters
    finally:
        stop.set()
        svc.join(5)
    assert not svc.is_alive()


def test_garbage_state_documents_and_alarms_render_escaped(tmp_path: Path) -> None:
    """Whatever shape a device's state document has, the page renders and
    every device string comes out escaped."""
    store = EventStore(tmp_path / "gw.db")
    now = time.time()
    docs = {
        "lk01": {"compartments": "lots"},
        "lk02": {"compartments": [1, None, {"id": {"x": "<b>"}, "state": "<i>x</i>", "size": 5},
                                  {"id": True}], "retrieval": "6", "outbox": "full"},
        "lk03": {"compartments": [{"id": 1, "size": "S", "state": "inspect"}], "retrieval": [],
                 "outbox": {"used": "a", "pending": 2, "capacity": 0}},
    }
    for dev, doc in docs.items():
        store.device_state(dev, "o1", "locker", json.dumps(doc), now)
    store.presence("hh1", "o1", "handheld", False, now - 90_000)
    bodies = [{"alarm": "<svg onload=x>", "compartment": "<u>1</u>"}, {"alarm": "lockout", "seconds": 60},
              {"alarm": "door_left_open"}, {"no": "alarm"}]
    store.commit_events([
        StoredEvent(format_event_id("lk01", INC, i + 1), "o1", "locker", "lk01", INC, i + 1, "alarm",
                    "locker.alarm", 5, envelope.encode(envelope.make(
                        format_event_id("lk01", INC, i + 1), 5, "locker.alarm", "alarm", b)))
        for i, b in enumerate(bodies)])
    gw_id = format_event_id("gw-o1", INC, 1)
    store.commit_events([StoredEvent(gw_id, "o1", "gateway", "gw-o1", INC, 1, "alarm", "gateway.alarm",
                                     int(now), envelope.encode(envelope.make(
                                         gw_id, int(now), "gateway.alarm", "alarm",
                                         {"alarm": "budget_threatened", "used": 9, "limit": 8})))])
    snap = snapshot(store)
    store.close()
    gw_alarm = next(a for a in snap["alarms"] if a["device"] == "gw-o1")
    assert gw_alarm["kind"] == "gateway"
    assert gw_alarm["text"]["zh"] == "网关存储空间快用完了，请联系客服"
    texts = {a["id"].rsplit(":", 1)[1]: a["text"] for a in snap["alarms"]}
    assert texts["2"]["en"] == "Too many wrong pickup codes, pickup paused for 60 s"
    assert texts["3"]["zh"] == "柜门未关"
    assert texts["4"]["en"] == "Alarm: ?"
    assert snap["alarms"][0]["age_s"] < 60  # ts=5 is not believed; arrival time is used
    lockers = {lk["device"]: lk for lk in snap["lockers"]}
    assert lockers["lk01"]["reported"] is False
    assert lockers["lk02"]["total"] == 2 and lockers["lk02"]["retrieval"] == []
    assert [r["id"] for r in lockers["lk03"]["retrieval"]] == [1]  # inspect is on the list
    for lang in ("zh", "en"):
        page = render_page(snap, lang, 5, "n0nce")
        assert "<svg" not in page and "<u>" not in page and "<i>x" not in page and '<b>"' not in page
        assert "&lt;svg onload=x&gt;" in page and "&lt;i&gt;x&lt;/i&gt;" in page
        assert page.count("<script") == 1 and 'nonce="n0nce"' in page
    assert "已离线 1 天 1 小时" in render_main(snap, "zh", 5)


def test_durations_read_naturally() -> None:
    assert ago(2, "zh") == "刚刚" and ago(2, "en") == "just now"
    assert ago(300, "zh") == "5 分钟前" and ago(300, "en") == "5 min ago"
    assert ago(42, "en") == "42 s ago"
    assert duration(3 * 3600 + 120, "zh") == "3 小时 2 分钟"
    assert duration(2 * 86400 + 3600, "en") == "2 d 1 h"


def test_the_page_blames_the_gateway_for_its_own_trouble_and_counts_devices_that_never_came(
        tmp_path: Path, broker: Mosquitto) -> None:
    """With the broker down the page said "2 台设备离线"
    and nothing about the gateway's own link; without ``[upstream]`` it
    promised an upload; a provisioned scanner that never connected was
    invisible. Now: the provisioned devices (the broker's ACL) are counted,
    the gateway's broker link and a missing ``[upstream]`` are the reasons."""
    cfg = write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")
    with cfg.open("a", encoding="utf-8") as f:
        f.write('\n[web]\nhost = "127.0.0.1"\nport = 0\nlang = "zh"\nrefresh_s = 1\n'
                f'passwd_file = "{broker.directory / "passwd"}"\nacl_file = "{broker.directory / "acl"}"\n')
    gw = GatewayProcess(cfg)
    lk = None
    try:
        gw.wait_for("gateway_started")
        base = f"http://127.0.0.1:{next(d for d in gw.lines if d.get('evt') == 'web_started')['port']}"
        presence = topics.build("o1", "locker", "lk01", "presence")
        lk = device_client("lk01", broker.port, will=presence)
        lk.publish(presence, b"online", qos=1, retain=True).wait_for_publish(5)
        api = wait_api(base, lambda s: s["summary"]["devices_online"] == 1
                       and (s["gateway"]["broker"] or {}).get("up") is True)
        # lk01, lk02, sc01, hh01 have logins; only lk01 ever came
        assert api["summary"]["devices_total"] == 4 and api["summary"]["devices_never"] == 3
        never = {d["device"] for d in api["devices"] if d["never"]}
        assert never == {"lk02", "sc01", "hh01"}
        assert api["gateway"]["upstream"] is False
        _, _, page = get(base + "/?lang=zh")
        assert "3 台已配置的设备从未连接" in page and "从未连接" in page
        assert "没有配置上传" in page and "恢复后自动上传" not in page
        assert "台设备离线" not in page
        broker.kill()  # the gateway's own link goes
        api = wait_api(base, lambda s: (s["gateway"]["broker"] or {}).get("up") is False)
        _, _, page = get(base + "/?lang=zh")
        assert "网关与消息代理断开" in page
        assert "台设备离线" not in page  # the devices are not blamed for the gateway's link
        _, _, page = get(base + "/?lang=en")
        assert "cut off from its message broker" in page
    finally:
        if lk is not None:
            lk.loop_stop()
        gw.kill()
