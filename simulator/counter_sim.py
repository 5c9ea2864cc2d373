"""The outlet counter's devices and the clerk's browser, as the simulator drives them.

The counter acceptance desk (``gateway/counter/``) runs inside the gateway
process; what is outside it is simulated here: the electronic scale on a
pty writing continuous ``ST,GS`` frames (the weight of whatever the clerk
put on it), the platform's signed box catalogue and tariff (a fixed,
well-known simulator key, never a real one), and an HTTP client with one
cookie jar that speaks to the gateway's web server over TLS (verifying the
outlet CA) or plain HTTP, as the clerk's browser and the acceptance screen
do. The label printer is a file (``file:`` URL): the gateway writes TSPL
into it.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import ssl
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import platform_docs as signed_docs

#: The platform key that signs the simulated outlet's counter documents.
PLATFORM = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"postedge simulator counter docs").digest())
KEY_ID = "sim"

BOXES: list[dict[str, Any]] = [
    {"code": "PE-BOX-F5", "name": {"zh": "水果箱 5 号", "en": "Fruit box 5"}, "l_mm": 400, "w_mm": 300,
     "h_mm": 250, "tare_g": 450, "max_g": 10000, "suits": ["fruit", "produce"]},
    {"code": "PE-BOX-E30", "name": {"zh": "鸡蛋箱 30 枚", "en": "Egg box, 30"}, "l_mm": 320, "w_mm": 220,
     "h_mm": 180, "tare_g": 300, "max_g": 3000, "suits": ["eggs", "fragile"]},
]
RATES: dict[str, Any] = {
    "standard": {"bands": [{"up_to_g": 1000, "fen": {"z1": 800, "z2": 1000, "z3": 1200}},
                           {"up_to_g": 3000, "fen": {"z1": 1200, "z2": 1600, "z3": 2000}}],
                 "step_g": 1000, "step_fen": {"z1": 300, "z2": 500, "z3": 700}, "max_g": 40000},
    "charity": {"bands": [{"up_to_g": 1000, "fen": {"z1": 0, "z2": 300, "z3": 500}}],
                "step_g": 1000, "step_fen": {"z1": 100, "z2": 200, "z3": 300}, "max_g": 20000},
}
ZONES = {"default": "z3", "by_prefix": {"55": "z1", "52": "z1", "10": "z2", "20": "z2"}}


def public_keys() -> dict[str, str]:
    """``[counter] platform_keys`` for the gateway's config."""
    return {KEY_ID: signed_docs.public_hex(PLATFORM)}


def documents(outlet: str, iat: int) -> list[dict[str, Any]]:
    """The box catalogue and the tariff, signed, as the platform pushes them."""
    cat = {"v": 1, "kind": "box_catalogue", "version": 1, "outlets": [outlet], "iat": iat,
           "body": {"boxes": BOXES}}
    tar = {"v": 1, "kind": "tariff", "version": 1, "outlets": ["*"], "iat": iat,
           "body": {"zones": ZONES, "services": RATES}}
    return [signed_docs.sign(cat, PLATFORM, KEY_ID), signed_docs.sign(tar, PLATFORM, KEY_ID)]


def scale_frame(grams: int) -> bytes:
    """One continuous-output frame of a stable weight (``st-gs``, kilograms)."""
    return f"ST,GS,+{grams // 1000:04d}.{grams % 1000:03d}kg\r\n".encode()


class ScaleSim:
    """The scale's end of a pty: a thread writing the current weight's frame
    every ``period`` seconds; ``put`` is a parcel placed on the pan."""

    def __init__(self, period: float = 0.03) -> None:
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        os.close(slave)  # the gateway opens it by path, as it would /dev/ttyUSB0
        self.frame = scale_frame(0)
        self.period = period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="scale-sim", daemon=True)
        self.thread.start()

    def put(self, grams: int) -> None:
        self.frame = scale_frame(grams)

    def _run(self) -> None:
        import select

        while not self.stop.is_set():
            try:
                os.write(self.master, self.frame)
                # the gateway's reads keep the pty from filling; what it writes (nothing) is dropped
                while select.select([self.master], [], [], 0)[0]:
                    os.read(self.master, 1024)
            except OSError:
                if self.stop.wait(self.period):
                    return
            time.sleep(self.period)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        try:
            os.close(self.master)
        except OSError:
            pass


class WebClient:
    """HTTP/1.1 to the gateway's web server with one cookie jar; redirects
    are not followed (the console answers its forms with 303)."""

    def __init__(self, port: int, ca: Path | None = None) -> None:
        self.port = port
        self.ctx = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        conn: http.client.HTTPConnection
        if self.ctx is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
            for k, v in r.getheaders():
                if k.lower() == "set-cookie":
                    name, _, rest = v.partition("=")
                    if "Max-Age=0" in v:
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = rest.split(";", 1)[0]
            return r.status, text
        finally:
            conn.close()

    def json(self, method: str, path: str, doc: Any = None, user: tuple[str, str] | None = None,
             raw: bytes | None = None) -> tuple[int, Any]:
        h = {"Content-Type": "application/json"}
        if user is not None:
            h["Authorization"] = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        body = raw if raw is not None else (None if doc is None else json.dumps(doc).encode())
        code, text = self.request(method, path, body, h)
        try:
            return code, json.loads(text) if text else None
        except ValueError:
            return code, {"error": "not_json", "text": text[:200]}

    def form(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        return self.request("POST", path, urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    # ------------------------------------------------------------ the clerk console
    def login(self, name: str, password: str) -> bool:
        code, _ = self.form("/clerk/login", {"name": name, "password": password})
        return code == 303 and bool(self.cookies)

    def console(self) -> tuple[str, list[str]]:
        """The console page's CSRF token and the alarms it lists with a form (ids)."""
        code, html = self.request("GET", "/clerk?lang=en")
        if code != 200:
            raise RuntimeError(f"clerk console answered {code}")
        m = re.search(r'name="csrf" value="([^"]+)"', html)
        if m is None:
            raise RuntimeError("no CSRF token on the console page")
        return m.group(1), re.findall(r'name="alarm" value="([^"]+)"', html)
