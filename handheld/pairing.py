"""Pairing this handheld with an outlet from the QR code on the clerk's page.

The code (``common/pair_code.py``) carries a one-time token, the SHA-256 of
the outlet CA and the gateway's address. The handheld:

1. fetches the CA from ``/v1/pair/ca`` over TLS it does not verify yet, and
   keeps it only if its fingerprint is the one in the code (the code was
   scanned off the clerk's screen, so it is the trust anchor; a rogue access
   point cannot produce a CA with that hash);
2. redeems the token at ``/v1/pair`` over TLS verified with that CA alone
   (``handheld/tls.py``), and gets its provisioned configuration (login, own
   key, broker, the outlet CA, the gateway URL);
3. saves it as its config file, keeping what the device itself set there
   (courier, camera, GNSS, web, scan settings), 0600, written whole
   (temporary file, then rename).

A refusal from the gateway (expired, used, unknown) carries its reason in
both languages; local failures use ``text_pair.toml``."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common.pair_code import BadPairCode, PairCode, parse
from common.text import beside
from handheld import tls

TEXT = beside(__file__, "text_pair.toml")
#: What pairing writes; everything else in the config file is the device's own.
PROVISIONED = ("device", "outlet", "key", "broker", "gateway")
TIMEOUT_S = 15.0


class PairFailed(Exception):
    """Pairing did not happen: ``reason`` (a ``why.*`` key, or the gateway's
    refusal code) and ``message`` in zh and en."""

    def __init__(self, reason: str, message: dict[str, str] | None = None, **kw: Any) -> None:
        self.reason = reason
        self.message = message or TEXT.both(f"why.{reason}", **kw)
        super().__init__(f"{reason}: {self.message['en']}")


def _conn(code: PairCode, ctx: ssl.SSLContext) -> http.client.HTTPSConnection:
    u = urlsplit(code.url)
    return http.client.HTTPSConnection(u.hostname or "", u.port or 443, timeout=TIMEOUT_S, context=ctx)


def _call(conn: http.client.HTTPSConnection, method: str, path: str,
          body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        raw = r.read(1024 * 1024)
    except (OSError, ssl.SSLError, http.client.HTTPException) as e:
        raise PairFailed("unreachable", detail=str(e)[:120]) from None
    finally:
        conn.close()
    try:
        doc = json.loads(raw)
    except ValueError:
        raise PairFailed("bad_answer") from None
    if not isinstance(doc, dict):
        raise PairFailed("bad_answer")
    return r.status, doc


def fetch_ca(code: PairCode) -> str:
    """The outlet CA, if it is the one the code pins."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # not trusted yet: the hash below decides
    status, doc = _call(_conn(code, ctx), "GET", "/v1/pair/ca")
    pem = doc.get("ca")
    if status != 200 or not isinstance(pem, str):
        raise PairFailed("bad_answer")
    try:
        der = ssl.PEM_cert_to_DER_cert(pem)
    except ValueError:
        raise PairFailed("ca_mismatch") from None
    if hashlib.sha256(der).hexdigest() != code.ca_sha256:
        raise PairFailed("ca_mismatch")
    return pem


def redeem(code: PairCode, ca_pem: str) -> dict[str, Any]:
    """The gateway's answer to the token, over TLS verified with the pinned CA."""
    ctx = tls.context(ca_pem)
    assert ctx is not None
    status, doc = _call(_conn(code, ctx), "POST", "/v1/pair", json.dumps({"token": code.token}).encode())
    if status != 200:
        msg = doc.get("message")
        reason = str(doc.get("error", "bad_answer"))[:40]
        if not (isinstance(msg, dict) and isinstance(msg.get("zh"), str) and isinstance(msg.get("en"), str)):
            raise PairFailed("bad_answer")
        raise PairFailed(reason, {"zh": msg["zh"], "en": msg["en"]})
    if not isinstance(doc.get("config"), str) or doc.get("ca") != ca_pem:
        raise PairFailed("bad_answer")
    return doc


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    raise ValueError(f"cannot keep {v!r}")


def merged(provisioned: str, own_path: Path) -> str:
    """The provisioned text with the device's own settings from ``own_path`` kept."""
    try:
        own = tomllib.loads(own_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        own = {}
    mine = {k: v for k, v in own.items() if k not in PROVISIONED}
    top = [f"{k} = {_value(v)}" for k, v in mine.items() if not isinstance(v, dict)]
    tables = []
    for k, v in mine.items():
        if isinstance(v, dict):
            tables += ["", f"[{k}]", *(f"{kk} = {_value(vv)}" for kk, vv in v.items())]
    head = "# Paired with the outlet (postedge handheld pair); [key], [broker], [gateway] come from it.\n"
    return head + "".join(line + "\n" for line in top) + provisioned.rstrip("\n") + "\n" + \
        "".join(line + "\n" for line in tables)


def save(text: str, path: Path) -> None:
    tomllib.loads(text)  # never write a file the app cannot start from
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pair(scanned: str, config_path: Path) -> dict[str, str]:
    """Pair from the scanned text and save the configuration; what was paired."""
    try:
        code = parse(scanned)
    except BadPairCode as e:
        raise PairFailed(e.reason) from None
    ca = fetch_ca(code)
    doc = redeem(code, ca)
    path = Path(config_path)
    try:
        text = merged(doc["config"], path)
        tomllib.loads(text)
        path.parent.mkdir(parents=True, exist_ok=True)
        save(text, path)
    except (OSError, ValueError) as e:
        raise PairFailed("cannot_save", detail=str(e)[:120]) from None
    conf = tomllib.loads(doc["config"])
    return {"device": str(conf.get("device", doc.get("device", "?"))), "outlet": str(conf.get("outlet", "?")),
            "path": str(path)}


def scan_image(path: str) -> str:
    """The pairing code's text in a photo of the clerk's screen (the handheld's decoder)."""
    from handheld.decode import decode_image
    from handheld.sources import load_image

    for c in decode_image(load_image(path), thorough=True):
        if c.text.startswith("PE-PAIR:"):
            return c.text
    raise PairFailed("no_code")
