"""``/v1/counter/...``: the counter acceptance API (寄件) that
the clerk's acceptance screen calls; the work is ``gateway/counter/``.

``GET  /v1/counter/boxes``     the catalogue's boxes and the documents in use
``POST /v1/counter/weigh``     a stable weight from the scale: ``{reading, weight_g, expires_in_s}``
``POST /v1/counter/accept``    the form (``gateway/counter/parcel_form.py``) with the
                               ``reading`` token: ``{event, waybill, weight_g, postage_fen,
                               zone, service, label: {printed, error?}, receipt?}``
``POST /v1/counter/reprint``   ``{waybill}``: the label again, audited
``PUT  /v1/counter/documents`` a signed catalogue or tariff from the platform

Refusals are ``{error, message: {zh, en}, field?}`` with 4xx/5xx, the shape
the upload and command APIs use.

Login: HTTP Basic with a Mosquitto account (the counter device), checked
by the same ``Credentials`` as the uploads, and the account must be of a
kind in ``kinds`` (default: the outlet's ``gateway`` account); or, when the
server has the clerk console, a signed-in clerk's session cookie with the
origin and CSRF checks (``gateway/http/counter_login.py`` is the
``authorize`` the server passes). The name it returns goes into every
``counter.accept`` as ``clerk``. Login is checked from the headers before
any body is read.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from common.logs import recorder
from common.platform_docs import MAX_DOC
from gateway.counter.acceptance import CounterDesk, Refused
from gateway.http.auth import Credentials, basic_auth
from gateway.http.reply import Reply

record = recorder(__name__)

PREFIX = "/v1/counter"
MAX_BODY = 16 * 1024  # a form is under 2 KB; documents have their own limit
Authorize = Callable[[web.Request], "str | Reply"]


def _err(code: int, reason: str, zh: str, en: str) -> Reply:
    doc = {"error": reason, "message": {"zh": zh, "en": en}}
    headers = {"WWW-Authenticate": 'Basic realm="postedge"'} if code == 401 else None
    return Reply(code, json.dumps(doc, ensure_ascii=False).encode(), headers)


def _ok(doc: Any) -> Reply:
    return Reply(200, json.dumps(doc, ensure_ascii=False).encode())


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class CounterRoutes:
    def __init__(self, desk: CounterDesk | None, creds: Credentials | None,
                 kinds: tuple[str, ...] = ("gateway",), authorize: Authorize | None = None) -> None:
        self.desk = desk
        self.creds = creds
        self.kinds = desk.login_kinds if desk is not None else kinds
        self.authorize: Authorize = authorize or (lambda request: self.basic(request.headers))

    def basic(self, headers: Any) -> str | Reply:
        """HTTP Basic with a Mosquitto account of a kind in ``kinds``."""
        if self.creds is None:
            return _err(503, "counter_login_disabled", "网关未配置登录（缺少 web.passwd_file）",
                        "Logins are not configured on this gateway (web.passwd_file is not set)")
        who = basic_auth(headers.get("Authorization"))
        if who is None:
            return _err(401, "unauthorized", "需要登录", "Login required")
        try:
            principal = self.creds.check(*who)
        except OSError as e:
            return _err(503, "passwd_unreadable", f"网关无法读取密码文件：{e}",
                        f"The gateway cannot read its password file: {e}")
        if principal is None:
            return _err(401, "unauthorized", "用户名或密码错误", "Wrong username or password")
        if principal.kind not in self.kinds:
            return _err(403, "forbidden", "此账号不能使用柜台收寄", "This account may not use the counter")
        return principal.username

    async def serve(self, request: web.Request, blocking: Callable[..., Awaitable[Any]],
                    body_read: set[int]) -> Reply:
        try:
            return await self._serve(request, blocking, body_read)
        except Refused as e:
            return Reply(e.status, json.dumps(e.doc(), ensure_ascii=False).encode())
        except sqlite3.Error as e:
            return _err(503, "store_unavailable", "网关数据库暂时不可用，请稍后重试",
                        f"Gateway database unavailable, retry later ({e})")
        except Exception as e:  # noqa: BLE001 - one bad request never stops the counter
            record("web_error", path=request.path, error=repr(e), trace=traceback.format_exc(limit=5))
            return _err(500, "internal", "网关内部错误", "Internal error")

    async def _serve(self, request: web.Request, blocking: Callable[..., Awaitable[Any]],
                     body_read: set[int]) -> Reply:
        who = await blocking(self.authorize, request)  # PBKDF2 / the session store: on the pool
        if isinstance(who, Reply):
            return who
        if self.desk is None:
            return _err(503, "counter_disabled", "本网关未配置柜台收寄",
                        "Counter acceptance is not configured")
        route = (request.method, request.path[len(PREFIX):])
        desk = self.desk
        if route == ("GET", "/boxes"):
            return _ok(await blocking(lambda: {
                "boxes": desk.boxes(),
                "catalogue": desk.catalogue.doc.cite() if desk.catalogue else None,
                "tariff": desk.tariff.doc.cite() if desk.tariff else None}))
        if route == ("POST", "/weigh"):
            return _ok(await blocking(desk.weigh))
        if route in (("POST", "/accept"), ("POST", "/reprint"), ("PUT", "/documents")):
            limit = MAX_DOC if route[1] == "/documents" else MAX_BODY
            length = request.content_length
            if length is None or length > limit:
                return _err(413, "body_too_large", f"请求体过大（上限 {limit} 字节）",
                            f"Body missing a length or larger than {limit} bytes")
            try:
                body = await request.content.readexactly(length) if length else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                body_read.add(id(request))
                return Reply(400, b'{"error": "truncated"}', close=True)
            body_read.add(id(request))
            if route[1] == "/documents":
                return _ok(await blocking(desk.install, body))
            try:
                doc = json.loads(body, parse_constant=_no_constants)
            except (ValueError, RecursionError):
                return _err(400, "malformed", "请求不是有效的 JSON", "The body is not valid JSON")
            if route[1] == "/accept":
                return _ok(await blocking(desk.accept, doc, who))
            waybill = doc.get("waybill") if isinstance(doc, dict) else None
            return _ok(await blocking(desk.reprint, waybill, who))
        return _err(404, "no_route", "没有这个地址", f"No such route: {request.method} {request.path}")
