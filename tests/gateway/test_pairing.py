"""Pairing a handheld by the QR code on the clerk's page, with
real parts: an outlet folder written by ``outlet init`` (outlet CA, web
certificate, the handheld's provisioned file), the gateway's web server over
HTTPS on a real socket with its SQLite store, the clerk logging in and
asking for the code, the SVG decoded back by the handheld's own decoder
(zxing-cpp), and the handheld redeeming it: once, never twice, never late."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import threading
import time
import tomllib
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest

from common import session as S
from common.pair_code import parse
from common.ports import free_port
from gateway.config import GatewayConfig
from gateway.http.server import start_web
from gateway.outlet import build, spec
from gateway.store import clerks
from gateway.store.events import EventStore
from handheld import pairing as hp
from handheld.config import load_config
from handheld.decode import decode_image

SPEC = """
outlet = "o1"
address = "127.0.0.1"
[broker]
port = 1884
tls_port = 8883
listen = "127.0.0.1"
[web]
port = {web_port}
[[lockers]]
id = "lk01"
[[handhelds]]
id = "hh01"
"""


def svg_to_image(svg: str, px: int = 8) -> np.ndarray:
    """The QR's SVG path (``M x,y H.. V.. H.. z`` per module) on a white raster."""
    size = int(re.search(r'viewBox="0 0 (\d+) (\d+)"', svg).group(1))
    img = np.full((size * px, size * px), 255, np.uint8)
    for x, y in re.findall(r"M(\d+),(\d+)H", svg):
        x, y = int(x), int(y)
        img[y * px:(y + 1) * px, x * px:(x + 1) * px] = 0
    return img


class Https:
    """A clerk's browser: HTTPS verified with the outlet CA, one cookie jar."""

    def __init__(self, port: int, ca: Path) -> None:
        self.port = port
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, str]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=20, context=self.ctx)
        h = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        body = raw
        if form is not None:
            body = urlencode(form).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            text = r.read().decode()
            for k, v in r.getheaders():
                if k.lower() == "set-cookie":
                    name, _, rest = v.partition("=")
                    self.cookies[name] = rest.split(";", 1)[0]
        finally:
            conn.close()
        return r.status, text


@pytest.fixture(scope="module")
def outlet_dir(tmp_path_factory: pytest.TempPathFactory):
    """One outlet folder from ``outlet init`` for the module (the CA and
    certificates take seconds); each test gets its own gateway and store."""
    root = tmp_path_factory.mktemp("outlet")
    web_port = free_port()
    (root / "outlet.toml").write_text(SPEC.replace("{web_port}", str(web_port)))
    out = root / "etc"
    build.init(spec.load(root / "outlet.toml"), root / "outlet.toml", out)
    web = GatewayConfig.load(out / "gateway.toml").web
    assert web is not None and web.cert_file
    return out, web


@pytest.fixture
def outlet(outlet_dir, tmp_path: Path):
    out, web = outlet_dir
    db = tmp_path / "gw" / "gateway.db"
    store = EventStore(db)
    with store.tx():
        clerks.ensure(store.db)
        clerks.add_clerk(store.db, "bo", "clerk", S.hash_password("bo-pass-12345"))
    store.close()
    stop = threading.Event()
    svc = start_web(db, web.model_copy(update={"host": "127.0.0.1"}), stop, "o1", "gw-o1")
    browser = Https(svc.port, out / "pki" / "ca.pem")
    assert browser.request("POST", "/clerk/login", {"name": "bo", "password": "bo-pass-12345"})[0] == 303
    yield out, svc, browser, db
    stop.set()
    svc.join(10)


def show_qr(browser: Https, device: str = "hh01") -> tuple[str, str]:
    code, html = browser.request("GET", "/clerk?lang=en")
    assert code == 200 and 'id="pair-form"' in html and '<option value="hh01">' in html
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
    code, html = browser.request("POST", "/clerk/pair", {"csrf": csrf, "device": device, "lang": "en"})
    assert code == 200, html[:400]
    svg = re.search(r"<svg.*?</svg>", html, re.S).group(0)
    return html, svg


def own_events(db: Path, etype: str) -> list[dict]:
    store = EventStore(db)
    try:
        rows = store.db.execute("SELECT payload FROM events WHERE type=?", (etype,)).fetchall()
    finally:
        store.close()
    return [json.loads(r[0])["body"] for r in rows]


def test_pair_once_by_the_qr_code(outlet, tmp_path: Path) -> None:
    out, svc, browser, db = outlet
    html, svg = show_qr(browser)
    assert "Scan this code with handheld hh01" in html
    codes = decode_image(svg_to_image(svg))
    assert [c.format for c in codes] == ["QRCode"]
    text = codes[0].text
    pc = parse(text)
    assert pc.url == f"https://127.0.0.1:{svc.port}"  # the outlet's address, from the handheld's file
    assert pc.token not in html.replace(svg, "")  # only in the code, not as text on the screen

    mine = tmp_path / "hh" / "handheld.toml"
    mine.parent.mkdir()
    mine.write_text('courier = "c007"\ncamera = "0"\n[web]\nport = 8091\n')
    done = hp.pair(text, mine)
    assert done == {"device": "hh01", "outlet": "o1", "path": str(mine)}
    cfg = load_config(mine)
    provisioned = tomllib.loads((out / "devices" / "hh01.toml").read_text())
    assert cfg.device == "hh01" and cfg.courier == "c007" and cfg.web_port == 8091
    assert cfg.broker.password == provisioned["broker"]["password"]
    assert cfg.keyring.secret.hex() == provisioned["key"]["secret"]
    assert cfg.broker.ca_pem.strip() == (out / "pki" / "ca.pem").read_text().strip()
    assert mine.stat().st_mode & 0o077 == 0
    assert own_events(db, "gateway.handheld_paired")[0]["device"] == "hh01"
    assert own_events(db, "gateway.pair_issued")[0]["by"] == "bo"

    # The same code again: refused, in both languages, counted and audited.
    with pytest.raises(hp.PairFailed) as e:
        hp.pair(text, tmp_path / "other.toml")
    assert e.value.reason == "used" and "already used" in e.value.message["en"] and e.value.message["zh"]
    assert not (tmp_path / "other.toml").exists()
    assert own_events(db, "gateway.pair_refused")[0]["reason"] == "used"
    code, metrics = browser.request("GET", "/metrics")
    assert 'postedge_pair_redeems_total{outcome="used"}' in metrics

    # A made-up token: unknown.
    forged = parse(text)
    with pytest.raises(hp.PairFailed) as e:
        hp.redeem(type(forged)("A" * 32, forged.ca_sha256, forged.url), hp.fetch_ca(forged))
    assert e.value.reason == "unknown"


def test_expired_code_is_refused(outlet, tmp_path: Path) -> None:
    out, svc, browser, db = outlet
    _, svg = show_qr(browser)
    text = decode_image(svg_to_image(svg))[0].text
    svc.http.clerk.pairing.clock = lambda: time.time() + 601  # ten minutes and a second later
    with pytest.raises(hp.PairFailed) as e:
        hp.pair(text, tmp_path / "hh.toml")
    assert e.value.reason == "expired" and "expired" in e.value.message["en"]
    assert "过期" in e.value.message["zh"]
    assert not (tmp_path / "hh.toml").exists()
    assert own_events(db, "gateway.pair_refused")[0]["reason"] == "expired"


def test_a_code_pinning_another_ca_is_not_trusted(outlet, tmp_path: Path) -> None:
    out, svc, browser, db = outlet
    _, svg = show_qr(browser)
    pc = parse(decode_image(svg_to_image(svg))[0].text)
    fake = type(pc)(pc.token, "0" * 64, f"https://127.0.0.1:{svc.port}")
    with pytest.raises(hp.PairFailed) as e:
        hp.pair(fake.text(), tmp_path / "hh.toml")
    assert e.value.reason == "ca_mismatch"
    # The token was never sent: it still pairs the real handheld.
    real = type(pc)(pc.token, pc.ca_sha256, fake.url)
    assert hp.pair(real.text(), tmp_path / "hh.toml")["device"] == "hh01"


def test_not_a_pairing_code(tmp_path: Path) -> None:
    with pytest.raises(hp.PairFailed) as e:
        hp.pair("]C0RB123456785GB", tmp_path / "hh.toml")
    assert e.value.reason == "not_pair_code" and e.value.message["zh"]


@pytest.mark.slow
def test_pair_from_a_photo_of_the_screen_with_the_cli(outlet, tmp_path: Path) -> None:
    """``postedge handheld pair --image``: the handheld's decoder reads the
    code off a picture of the page; the second try is refused in Chinese."""
    import subprocess
    import sys

    import cv2

    out, svc, browser, db = outlet
    code, html = browser.request("GET", "/clerk?lang=zh")
    assert "配对手持终端" in html
    _, svg = show_qr(browser)
    photo = tmp_path / "screen.png"
    img = cv2.copyMakeBorder(svg_to_image(svg, px=6), 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=255)
    assert cv2.imwrite(str(photo), img)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "postedge.cli", *args], capture_output=True, text=True,
                              timeout=60)

    r = run("--lang", "en", "handheld", "pair", "--image", str(photo), "--config", str(tmp_path / "hh.toml"))
    assert r.returncode == 0 and "Paired with outlet o1: this handheld is hh01" in r.stdout, r.stderr
    assert load_config(tmp_path / "hh.toml").device == "hh01"
    text = decode_image(cv2.imread(str(photo)))[0].text
    r = run("--lang", "zh", "handheld", "pair", text, "--config", str(tmp_path / "hh2.toml"))
    assert r.returncode == 3 and "配对失败" in r.stderr and "已经用过" in r.stderr, r.stderr
    r = run("--lang", "zh", "handheld", "pair", "hello", "--config", str(tmp_path / "hh2.toml"))
    assert r.returncode == 2 and "不是网点配对二维码" in r.stderr, r.stderr


def test_guessing_is_counted_and_the_audit_stays_bounded(outlet) -> None:
    out, svc, browser, db = outlet
    from gateway.http.pairing import AUDIT_UNKNOWN_PER_MIN

    ctx = ssl.create_default_context(cafile=str(out / "pki" / "ca.pem"))
    for i in range(AUDIT_UNKNOWN_PER_MIN + 10):
        conn = http.client.HTTPSConnection("127.0.0.1", svc.port, timeout=10, context=ctx)
        conn.request("POST", "/v1/pair", body=json.dumps({"token": f"guess-{i:04d}-xxxxxxxxxxxx"}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        doc = json.loads(r.read())
        conn.close()
        assert r.status == 404 and doc["error"] == "unknown" and doc["message"]["zh"]
    conn = http.client.HTTPSConnection("127.0.0.1", svc.port, timeout=10, context=ctx)
    conn.request("POST", "/v1/pair", body=b"x" * 2000, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"] == "bad_request"
    conn.close()
    assert len(own_events(db, "gateway.pair_refused")) == AUDIT_UNKNOWN_PER_MIN
    _, metrics = browser.request("GET", "/metrics")
    n = float(re.search(r'postedge_pair_redeems_total\{outcome="unknown"\} (\S+)', metrics).group(1))
    assert n >= AUDIT_UNKNOWN_PER_MIN + 10
