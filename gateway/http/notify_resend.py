"""The clerk's resend of a pickup-code text: ``POST /v1/notify/resend``
with ``{"parcel": "<waybill>"}`` -> ``202 {"request": <id>, "status":
"queued"}``; ``GET /v1/notify/resend/<id>`` -> the outcome once the notifier
has acted: ``gateway`` (sent by this outlet's modem), ``platform`` (the
platform sends it), ``unknown_parcel`` or ``picked_up``.

The route only records the request (``notify_requests``, one short write
transaction of its own); the notifier thread carries it out and audits it
as an own event (``notify.route`` with ``purpose: "resend"`` and the clerk,
or ``notify.resend_refused``), so the audit and the text come from the one
thread that holds the notifier key and the modem, and the page's
connections stay read-only everywhere else.

Who the clerk is: the login middleware (built separately) puts the clerk's
account in ``request["clerk"]``. Until it is merged, a request without one
is accepted only from the gateway box itself (loopback), naming the clerk in
the body (``"clerk"``); from anywhere else it is ``401``. A parcel can be
resent at most once per ``MIN_INTERVAL_S`` and ``MAX_PER_DAY`` times a day,
so a stolen session cannot flood a villager's phone (``429``).

Answers carry ``message: {zh, en}`` from ``gateway/notify/text.toml``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp import web

from common.clock import now as clock_now
from common.text import LANGS
from gateway.notify.state import ensure_schema, request_resend
from gateway.notify.texts import TEXT

PREFIX = "/v1/notify/resend"
MAX_BODY = 4096
MIN_INTERVAL_S = 300
MAX_PER_DAY = 5
_PARCEL = re.compile(r"^[A-Z0-9]{8,40}$")
_CLERK = re.compile(r"^[a-z0-9_-]{1,32}$")
LOOPBACK = ("127.0.0.1", "::1")


def _doc(error: str | None, key: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"message": TEXT.both(key, **fields)}
    if error:
        doc["error"] = error
    return doc


def resend(db_path: Path | str, parcel: Any, clerk: str,
           now: float | None = None) -> tuple[int, dict[str, Any]]:
    """Record a clerk's resend request: (HTTP status, answer)."""
    now = clock_now() if now is None else now
    if not isinstance(parcel, str) or not _PARCEL.match(parcel):
        return 400, _doc("bad_parcel", "resend.bad_request", detail="parcel")
    db = sqlite3.connect(db_path, timeout=5.0)
    try:
        db.execute("BEGIN IMMEDIATE")
        ensure_schema(db)
        job = db.execute("SELECT picked_at FROM notify_jobs WHERE parcel=? ORDER BY received_at DESC LIMIT 1",
                         (parcel,)).fetchone()
        if job is None:
            db.rollback()
            return 404, _doc("unknown_parcel", "resend.unknown_parcel")
        if job[0] is not None:
            db.rollback()
            return 409, _doc("picked_up", "resend.picked_up")
        recent = [at for (at,) in db.execute("SELECT at FROM notify_requests WHERE parcel=? AND at > ?",
                                             (parcel, now - 86400))]
        if recent and (max(recent) > now - MIN_INTERVAL_S or len(recent) >= MAX_PER_DAY):
            db.rollback()
            return 429, _doc("too_soon", "resend.bad_request", detail="too soon")
        rid = request_resend(db, parcel, clerk)
        db.commit()
        return 202, {"request": rid, "status": "queued"}
    finally:
        db.close()


def outcome(db_path: Path | str, rid: int) -> tuple[int, dict[str, Any]]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0)
    try:
        try:
            row = db.execute("SELECT parcel, outcome FROM notify_requests WHERE id=?", (rid,)).fetchone()
        except sqlite3.OperationalError:
            row = None  # no notifier table yet
    finally:
        db.close()
    if row is None:
        return 404, {"error": "not_found"}
    if row[1] is None:
        return 200, {"request": rid, "parcel": row[0], "status": "queued"}
    if row[1] in ("gateway", "platform"):
        msg = {lang: TEXT.t("resend.queued", lang, route=TEXT.t(f"resend.route.{row[1]}", lang))
               for lang in LANGS}
        return 200, {"request": rid, "parcel": row[0], "status": row[1], "message": msg}
    return 200, {"request": rid, "parcel": row[0], "status": row[1], **_doc(row[1], f"resend.{row[1]}")}


def clerk_of(request: web.Request, body: dict[str, Any]) -> str | None:
    """The clerk's account: from the login, or (loopback only) the body."""
    c = request.get("clerk")
    if isinstance(c, str) and c:
        return c
    peer = request.remote or ""
    named = body.get("clerk")
    if peer in LOOPBACK and isinstance(named, str) and _CLERK.match(named):
        return named
    return None


async def serve(http: Any, request: web.Request) -> web.StreamResponse:
    """The route, on the server's pool (``http`` is the ``GatewayHTTP``)."""

    def answer(code: int, doc: dict[str, Any], extra: dict[str, str] | None = None) -> web.StreamResponse:
        return http._respond(request, code, "application/json; charset=utf-8",
                             json.dumps(doc, ensure_ascii=False).encode(), extra)

    path = request.path
    if path.startswith(PREFIX + "/") and request.method in ("GET", "HEAD"):
        tail = path[len(PREFIX) + 1:]
        if not tail.isdigit() or len(tail) > 12:
            return answer(404, {"error": "not_found"})
        return answer(*await http._blocking(outcome, http.db_path, int(tail)))
    if path != PREFIX:
        return answer(404, {"error": "not_found"})
    if request.method != "POST":
        return answer(405, {"error": "method"}, {"Allow": "POST"})
    if request.content_length is None or request.content_length > MAX_BODY:
        return answer(413, _doc("too_large", "resend.bad_request", detail=f"body over {MAX_BODY} bytes"))
    http.body_read.add(id(request))
    try:
        body = json.loads(await request.read())
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except ValueError:
        return answer(400, _doc("bad_json", "resend.bad_request", detail="JSON object expected"))
    clerk = clerk_of(request, body)
    if clerk is None:
        return answer(401, _doc("no_clerk", "resend.bad_request", detail="clerk login required"))
    return answer(*await http._blocking(resend, http.db_path, body.get("parcel"), clerk))
