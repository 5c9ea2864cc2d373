"""Who may call ``/v1/counter/*``: the counter device, or a clerk signed in
to the console in this browser (the outbound acceptance screen).

* **The counter device** (a till or a script on the box) sends HTTP Basic
  with a Mosquitto account, as before (``CounterRoutes.basic``). A request
  with an ``Authorization`` header is always judged by it, cookie or not.
* **The clerk's browser** sends the console's session cookie, which the
  login sets for ``Path=/v1/counter`` as well as ``/clerk``
  (``clerk.COOKIE_PATHS``). A cookie alone is ambient authority, so every
  unsafe request (anything but GET/HEAD) authorized by it must be
  same-origin (``Origin`` / ``Sec-Fetch-Site``, the console's check) *and*
  carry the session's CSRF token in the ``X-CSRF-Token`` header (the
  acceptance screen reads it from the console page, where every form already
  carries it). Both clerks and supervisors may accept parcels; the clerk's
  name goes into ``counter.accept`` as ``clerk``.

A cookie that names no live session is ``401`` without a Basic challenge,
so a browser shows the console's login link, not a password dialog.
Refusals are counted in ``postedge_clerk_actions_total{action="counter"}``
and worded in ``text_clerk.toml`` (``counter.*``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from common import session as S
from gateway.http.clerk import CLERK_EVENTS, TEXT, ClerkConsole, same_origin
from gateway.http.reply import Reply

SAFE = ("GET", "HEAD")
CSRF_HEADER = "X-CSRF-Token"

Authorize = Callable[[web.Request], "str | Reply"]


def _refuse(code: int, reason: str) -> Reply:
    CLERK_EVENTS.labels("counter", reason).inc()
    doc = {"error": reason, "message": TEXT.both(f"counter.{reason}")}
    return Reply(code, json.dumps(doc, ensure_ascii=False).encode())


def clerk_or_device(basic: Callable[[Any], str | Reply], console: ClerkConsole) -> Authorize:
    """The counter routes' ``authorize``: Basic for the device, else the
    console's session with the origin and CSRF checks."""

    def authorize(request: web.Request) -> str | Reply:
        headers = request.headers
        token = request.cookies.get(S.COOKIE, "")
        if "Authorization" in headers or not token:
            return basic(headers)
        unsafe = request.method not in SAFE
        if unsafe and not same_origin(headers, request.host):
            return _refuse(403, "cross_origin")
        who = console.who(token)
        if who is None:
            return _refuse(401, "no_session")
        if unsafe and not S.same(headers.get(CSRF_HEADER, ""), who["csrf"]):
            return _refuse(403, "bad_csrf")
        return str(who["name"])

    return authorize
