"""Pairing a handheld with the outlet by a QR code on the clerk's page.

The clerk, logged in to the console, picks a provisioned handheld and gets a
QR code (``common/pair_code.py``): a one-time token, the outlet CA's
fingerprint and the gateway's address. The handheld scans it
(``handheld/pairing.py``), fetches the CA from ``/v1/pair/ca`` and checks it
against the fingerprint, then redeems the token at ``/v1/pair`` over TLS
verified with that CA, and gets its provisioned configuration
(``devices/<id>.toml``: login, own key, broker, the outlet CA, gateway URL)
that ``outlet init`` wrote.

Why a token and not the file on a USB stick: the clerk sees which handheld
is paired, the token is useless after one use or ``TOKEN_TTL_S``, and no
credential ever sits on a screen or in a photo of it (the QR holds a token,
not the password). Tokens are kept in the gateway's SQLite by their SHA-256
only; redeeming marks the row used in the same transaction that checks it,
so two handhelds racing for one token cannot both win. Every issue, redeem
and refusal is an own audit event (synced upstream); refusals are counted
(``postedge_pair_redeems{outcome}``) and answered with a reason in zh and en.

The files: the outlet folder is the one provision laid out, the parent of
``web/`` (``[web] cert_file``): ``pki/ca.pem`` and ``devices/<id>.toml``.
An installed outlet's device files are root's (0600); the gateway's account
must be able to read them for pairing (``outlet init`` grants it when run as
root; otherwise the refusal says ``config_unreadable``)."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import ssl
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

from prometheus_client import Counter

from common.logs import recorder
from common.pair_code import PairCode
from common.text import beside
from gateway import metrics as M
from protocol.topics import valid_segment

record = recorder(__name__)
TEXT = beside(__file__, "text_pair.toml")

TOKEN_TTL_S = 600
PAIR_PATH = "/v1/pair"
CA_PATH = "/v1/pair/ca"
BODY_MAX = 1024
# Refusals of tokens nobody issued are counted always but audited at most
# this often per minute: a LAN client guessing cannot fill the own events.
AUDIT_UNKNOWN_PER_MIN = 30
SCHEMA = """CREATE TABLE IF NOT EXISTS pair_tokens (
    hash TEXT PRIMARY KEY, device TEXT NOT NULL, by TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, used_at REAL, used_from TEXT)"""

PAIR_REDEEMS = Counter("postedge_pair_redeems", "Handheld pairing tokens redeemed or refused, by outcome "
                       "(paired, unknown, expired, used, bad_request, config_unreadable)", ["outcome"],
                       registry=M.REGISTRY)
PAIR_ISSUED = Counter("postedge_pair_issued", "Pairing QR codes shown on the clerk's page",
                      registry=M.REGISTRY)


class PairError(Exception):
    """A pairing the gateway cannot do: ``reason`` is a ``text_pair.toml`` key under ``refused.``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def ca_sha256(pem: str) -> str:
    """SHA-256 (hex) of a PEM certificate's DER bytes: what the QR code pins."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def qr_svg(text: str) -> str:
    """The QR code for ``text`` as an inline ``<svg>`` (the qrcode library's
    path image: one black path, scales without blurring on any screen)."""
    import qrcode
    from qrcode.image.svg import SvgPathImage

    img = qrcode.make(text, image_factory=SvgPathImage, box_size=10, border=4,
                      error_correction=qrcode.constants.ERROR_CORRECT_M)
    buf = io.BytesIO()
    img.save(buf)
    svg = buf.getvalue().decode("utf-8")
    return svg[svg.index("<svg"):]  # no XML declaration inside HTML


class Pairing:
    """Issue tokens (for the clerk console) and redeem them (for handhelds).

    ``clerk`` is the ``ClerkConsole`` (its writable store, lock, audit and
    setup); typed loosely because the console imports this module."""

    def __init__(self, clerk: Any, cert_file: str | None, clock: Callable[[], float] = time.time,
                 ttl_s: float = TOKEN_TTL_S) -> None:
        self.clerk = clerk
        self.folder = Path(cert_file).resolve().parent.parent if cert_file else None
        # The wall clock, not common.clock: a pairing code is shown to a real
        # person who has minutes to scan it, whatever a simulation's time says.
        self.clock = clock
        self.ttl_s = ttl_s
        self._ready = False
        self._unknown: tuple[float, int] = (0.0, 0)  # (minute started, unknown refusals audited in it)

    def _db(self) -> Any:
        """The console's writable connection (caller holds ``clerk.lock``)."""
        db = self.clerk.store.db
        if not self._ready:
            db.execute(SCHEMA)
            self._ready = True
        return db

    # ------------------------------------------------------------ files
    def ca_pem(self) -> str:
        if self.folder is None:
            raise PairError(503, "no_tls")
        try:
            return (self.folder / "pki" / "ca.pem").read_text(encoding="utf-8")
        except OSError:
            raise PairError(503, "no_tls") from None

    def _device_file(self, device: str) -> Path:
        assert self.folder is not None
        return self.folder / "devices" / f"{device}.toml"

    def handhelds(self) -> list[str]:
        """Provisioned handhelds the broker still has a login for."""
        if self.folder is None:
            return []
        inv = self.clerk.setup().inventory
        return [dev for dev, kind in inv if kind == "handheld" and self._device_file(dev).exists()]

    def _gateway_url(self, device: str) -> str:
        try:
            doc = tomllib.loads(self._device_file(device).read_text(encoding="utf-8"))
            return str(doc["gateway"]["url"])
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError):
            raise PairError(503, "config_unreadable") from None

    # ------------------------------------------------------------ issue (clerk)
    def issue(self, device: str, by: str) -> dict[str, Any]:
        """A fresh token for ``device``: the QR text and its SVG, audited."""
        if not valid_segment(device) or device not in self.handhelds():
            raise PairError(404, "no_handheld")
        fp = ca_sha256(self.ca_pem())
        url = self._gateway_url(device)
        token = secrets.token_urlsafe(24)
        now = self.clock()
        with self.clerk.lock, self.clerk.store.tx():
            db = self._db()
            db.execute("DELETE FROM pair_tokens WHERE expires_at < ?", (now - 86400,))
            db.execute("INSERT INTO pair_tokens (hash, device, by, created_at, expires_at) "
                       "VALUES (?,?,?,?,?)",
                       (_hash(token), device, by, now, now + self.ttl_s))
            self.clerk.audit("gateway.pair_issued", {"device": device, "by": by,
                                                     "expires_s": int(self.ttl_s)})
        PAIR_ISSUED.inc()
        text = PairCode(token, fp, url).text()
        return {"device": device, "text": text, "svg": qr_svg(text), "minutes": int(self.ttl_s // 60),
                "url": url}

    # ------------------------------------------------------------ redeem (handheld)
    def redeem(self, token: str, addr: str) -> dict[str, Any]:
        """The handheld's configuration for a good token, which is then used
        up; PairError (counted and audited) for any other."""
        if not isinstance(token, str) or not 16 <= len(token) <= 64:
            self._refuse(400, "bad_request", addr)
        now = self.clock()
        with self.clerk.lock, self.clerk.store.tx():
            db = self._db()
            row = db.execute("SELECT device, expires_at, used_at FROM pair_tokens WHERE hash=?",
                             (_hash(token),)).fetchone()
            if row is None:
                reason = "unknown"
            elif row[2] is not None:
                reason = "used"
            elif now > row[1]:
                reason = "expired"
            else:
                reason = ""
                db.execute("UPDATE pair_tokens SET used_at=?, used_from=? WHERE hash=?",
                           (now, addr, _hash(token)))
            if reason:
                if self._audit_refusal(reason, now):
                    self.clerk.audit("gateway.pair_refused", {"reason": reason, "addr": addr,
                                                              "device": row[0] if row else ""})
            else:
                try:
                    config = self._device_file(row[0]).read_text(encoding="utf-8")
                    ca = self.ca_pem()
                except (OSError, PairError):
                    reason = "config_unreadable"
                    db.execute("UPDATE pair_tokens SET used_at=NULL WHERE hash=?", (_hash(token),))
                    self.clerk.audit("gateway.pair_refused", {"reason": reason, "addr": addr,
                                                              "device": row[0]})
                else:
                    self.clerk.audit("gateway.handheld_paired", {"device": row[0], "addr": addr})
        if reason:
            PAIR_REDEEMS.labels(reason).inc()
            record("pair_refused", reason=reason, addr=addr)
            raise PairError(503 if reason == "config_unreadable" else 404 if reason == "unknown" else 410,
                            reason)
        PAIR_REDEEMS.labels("paired").inc()
        record("handheld_paired", device=row[0], addr=addr)
        return {"device": row[0], "config": config, "ca": ca}

    def _audit_refusal(self, reason: str, now: float) -> bool:
        """Whether to audit this refusal (caller holds the lock): always for a
        real token used or late, at most ``AUDIT_UNKNOWN_PER_MIN`` unknown ones."""
        if reason != "unknown":
            return True
        start, n = self._unknown
        if now - start >= 60:
            start, n = now, 0
        self._unknown = (start, n + 1)
        return n < AUDIT_UNKNOWN_PER_MIN

    def _refuse(self, status: int, reason: str, addr: str) -> NoReturn:
        PAIR_REDEEMS.labels(reason).inc()
        record("pair_refused", reason=reason, addr=addr)
        raise PairError(status, reason)

    # ------------------------------------------------------------ HTTP
    async def serve(self, method: str, path: str, body: Callable[[], Awaitable[bytes]],
                    content_length: int | None, addr: str,
                    blocking: Callable[..., Awaitable[Any]]) -> tuple[int, bytes]:
        """``GET /v1/pair/ca`` (the CA PEM) and ``POST /v1/pair`` (``{"token"}``):
        (status, JSON body). The body is read only when it is small."""
        try:
            if path == CA_PATH and method in ("GET", "HEAD"):
                return 200, json.dumps({"ca": await blocking(self.ca_pem)}).encode()
            if path != PAIR_PATH:
                raise PairError(404, "not_found")
            if method != "POST":
                raise PairError(405, "method")
            if content_length is None or content_length > BODY_MAX:
                self._refuse(411 if content_length is None else 413, "bad_request", addr)
            try:
                doc = json.loads(await body())
                token = doc["token"] if isinstance(doc, dict) else None
            except (ValueError, KeyError):
                token = None
            if not isinstance(token, str):
                self._refuse(400, "bad_request", addr)
            return 200, json.dumps(await blocking(self.redeem, token, addr)).encode()
        except PairError as e:
            return e.status, json.dumps({"error": e.reason, "message": refusal(e.reason)},
                                        ensure_ascii=False).encode()


def refusal(reason: str) -> dict[str, str]:
    """A refusal in both languages (the handheld shows its courier's)."""
    key = f"refused.{reason}"
    return TEXT.both(key if TEXT.has(key) else "refused.bad_request")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
