"""The dispatcher's page on the central service: the outlets and their health
(events held, last upload, resent batches, alarms) and the review queue of
evidence photos (accept, or reject with a reason; a photo claimed for two
jobs or sites is flagged as a duplicate).

Served by the same HTTPS front as the gateways' API, under ``/dispatch``,
with its own logins (dispatchers, not outlets). Sessions: a 256-bit random
token, only its hash kept, in an HttpOnly, Secure, SameSite=Strict cookie
limited to ``/dispatch``; 30 minutes idle, 12 hours at most. Every POST
carries the session's CSRF token and a POST from another origin is refused.
Failed logins are throttled per name and per address (``common/session.py``).
Sessions live in memory: a restart signs dispatchers out, which costs them a
login and keeps no secret on disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from central.embedded import Embedded
from common import session as S
from common.logs import recorder
from common.pages import page_env
from common.text import beside
from common.web_server import new_nonce

TEXT = beside(__file__, "text_dispatch.toml")
ENV = page_env(Path(__file__).with_name("templates"), t=TEXT.t)
COOKIE = "pe_dispatch"
QUIET_H = 24  # an active outlet without an upload for this long is highlighted
BODY_MAX = 8 * 1024

record = recorder(__name__)


@dataclass
class Session:
    name: str
    csrf: str
    started: float
    seen: float


def _policy(nonce: str) -> str:
    return ("default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'; "
            f"style-src 'nonce-{nonce}'")


class Dispatch:
    def __init__(self, backend: Embedded, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.fails: dict[str, tuple[int, float, float]] = {}

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/dispatch", self._page, allow_head=False)
        r.add_post("/dispatch/login", self._login)
        r.add_post("/dispatch/logout", self._logout)
        r.add_post("/dispatch/review", self._review)

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _lang(request: web.Request, form: dict[str, Any] | None = None) -> str:
        lang = (form or {}).get("lang") or request.query.get("lang")
        if lang in ("zh", "en"):
            return str(lang)
        return "en" if request.headers.get("Accept-Language", "zh").lower().startswith("en") else "zh"

    def _session(self, request: web.Request) -> tuple[str, Session] | None:
        token = request.cookies.get(COOKIE, "")
        if not token:
            return None
        key = S.token_hash(token)
        s = self.sessions.get(key)
        now = self.clock()
        if s is None or now - s.seen > S.SESSION_IDLE_S or now - s.started > S.SESSION_MAX_S:
            self.sessions.pop(key, None)
            return None
        s.seen = now
        return key, s

    async def _form(self, request: web.Request) -> dict[str, Any] | None:
        if request.content_length is not None and request.content_length > BODY_MAX:
            return None
        try:
            return dict(await request.post())
        except (ValueError, web.HTTPRequestEntityTooLarge):
            return None

    @staticmethod
    def _same_origin(request: web.Request) -> bool:
        """A browser's own word on where a POST comes from: ``Sec-Fetch-Site``
        when it sends one, else ``Origin`` (which is ``null`` for some
        same-origin form posts, so that one is judged by the former)."""
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None:
            return site == "same-origin"
        origin = request.headers.get("Origin")
        return origin is None or origin == f"https://{request.host}"

    def _render(self, request: web.Request, lang: str, s: Session | None, message: str = "",
                status: int = 200) -> web.Response:
        nonce = new_nonce()
        ctx: dict[str, Any] = {"lang": lang, "nonce": nonce, "message": message,
                               "name": s.name if s else "", "csrf": s.csrf if s else ""}
        if s is not None:
            ctx["outlets"] = self._outlets(lang)
            ctx["photos"] = self._photos(lang)
        html = ENV.get_template("dispatch.html").render(**ctx)
        return web.Response(status=status, text=html, content_type="text/html",
                            headers={"Content-Security-Policy": _policy(nonce), "Cache-Control": "no-store",
                                     "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"})

    def _ago(self, at: float | None, lang: str) -> str:
        if at is None:
            return TEXT.t("never", lang)
        s = max(0.0, self.clock() - at)
        if s < 3600:
            return TEXT.t("ago.min", lang, n=int(s // 60))
        if s < 86400:
            return TEXT.t("ago.hour", lang, n=int(s // 3600))
        return TEXT.t("ago.day", lang, n=int(s // 86400))

    def _outlets(self, lang: str) -> list[dict[str, Any]]:
        out = []
        for o in self.backend.health():
            quiet = not o["retired"] and (o["last_batch_at"] is None
                                          or self.clock() - o["last_batch_at"] > QUIET_H * 3600)
            state = TEXT.t("state.retired" if o["retired"] else "state.active", lang)
            if quiet:
                state = TEXT.t("state.quiet", lang, hours=QUIET_H)
            out.append({"outlet": o["outlet"], "state": state, "events": o["events"],
                        "last": self._ago(o["last_batch_at"], lang), "resent": o["resent_batches"],
                        "alarms": o["alarms"],
                        "css": "retired" if o["retired"] else "quiet" if quiet else ""})
        return out

    def _photos(self, lang: str) -> list[dict[str, Any]]:
        out = []
        for p in self.backend.photos_for_review():
            claims = [TEXT.t("photo.claim", lang, outlet=c["outlet"], job=c.get("job", "?"),
                             site=c.get("site", "?"), step=c.get("step", "?"), device=c.get("device", "?"))
                      for c in p["claims"]]
            verdict = ""
            if p["verdict"] == "accepted":
                verdict = TEXT.t("photo.accepted", lang, by=p["by"])
            elif p["verdict"] == "rejected":
                verdict = TEXT.t("photo.rejected", lang, by=p["by"], reason=p["reason"])
            out.append({"sha": p["sha"], "size": p["size"], "claims": claims, "duplicate": p["duplicate"],
                        "verdict_text": verdict, "css": "duplicate" if p["duplicate"] else ""})
        return out

    # ------------------------------------------------------------- routes
    async def _page(self, request: web.Request) -> web.Response:
        found = self._session(request)
        return self._render(request, self._lang(request), found[1] if found else None)

    async def _login(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        lang = self._lang(request, form)
        if form is None or not self._same_origin(request):
            return self._render(request, lang, None, TEXT.t("error.csrf", lang), 403)
        name, password = str(form.get("name", ""))[:64], str(form.get("password", ""))
        now = self.clock()
        keys = (f"name:{name}", f"addr:{request.remote}")
        if any(self.fails.get(k, (0, now, 0.0))[2] > now for k in keys):
            record("dispatch_login_locked", name=name, peer=request.remote)
            return self._render(request, lang, None, TEXT.t("login.failed", lang), 401)
        ok = await asyncio.get_running_loop().run_in_executor(
            None, self.backend.dispatcher_login, name, password)
        if not ok:
            for k in keys:
                fails, first, _ = self.fails.get(k, (0, now, 0.0))
                self.fails[k] = S.after_failure(fails, first, now)
            record("dispatch_login_failed", name=name, peer=request.remote)
            return self._render(request, lang, None, TEXT.t("login.failed", lang), 401)
        for k in keys:
            self.fails.pop(k, None)
        old = self._session(request)
        if old is not None:
            self.sessions.pop(old[0], None)
        token = S.new_token()
        self.sessions[S.token_hash(token)] = Session(name, S.new_token(), now, now)
        record("dispatch_login", name=name, peer=request.remote)
        resp = web.HTTPSeeOther(f"/dispatch?lang={lang}")
        resp.set_cookie(COOKIE, token, path="/dispatch", httponly=True, secure=True, samesite="Strict")
        raise resp

    async def _checked(self, request: web.Request) -> tuple[Session, dict[str, Any], str] | web.Response:
        form = await self._form(request)
        lang = self._lang(request, form)
        found = self._session(request)
        if found is None:
            return self._render(request, lang, None, "", 401)
        s = found[1]
        if form is None or not self._same_origin(request) or not S.same(str(form.get("csrf", "")), s.csrf):
            record("dispatch_csrf_refused", name=s.name, peer=request.remote)
            return self._render(request, lang, s, TEXT.t("error.csrf", lang), 403)
        return s, form, lang

    async def _logout(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        found = self._session(request)
        if found is not None:
            self.sessions.pop(found[0], None)
        resp = web.HTTPSeeOther(f"/dispatch?lang={checked[2]}")
        resp.del_cookie(COOKIE, path="/dispatch")
        raise resp

    async def _review(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        s, form, lang = checked
        verdict, reason, sha = str(form.get("verdict", "")), str(form.get("reason", "")).strip(), \
            str(form.get("sha", ""))
        if verdict == "rejected" and not reason:
            return self._render(request, lang, s, TEXT.t("error.reason", lang), 400)
        if verdict not in ("accepted", "rejected"):
            return self._render(request, lang, s, TEXT.t("error.unknown_photo", lang), 400)
        done = await asyncio.get_running_loop().run_in_executor(
            None, self.backend.review_photo, sha, verdict, reason, s.name)
        if not done:
            return self._render(request, lang, s, TEXT.t("error.unknown_photo", lang), 404)
        record("photo_reviewed", sha=sha, verdict=verdict, by=s.name)
        raise web.HTTPSeeOther(f"/dispatch?lang={lang}")
