"""The dispatcher's page on the central service: what needs doing.

- The outlets and their health: events held, last upload, how far behind the
  gateway was at its last upload (the gateway reports no backlog upstream,
  so the platform measures it: the age of the oldest event in the newest
  batch, ``upload_lag``), resent batches, and the alarms still open
  (no ``gateway.alarm_resolved`` from the outlet's clerk names them yet) with
  the oldest one's age; the open alarms listed.
- The review queue of evidence photos (accept, or reject with a reason; a
  photo claimed for two jobs or sites is flagged as a duplicate).
- 政讯通 (``central/boards.py``): campaigns, sites (status, condition, next
  scheduled revisit), jobs by state, the automatic review's verdicts with
  their reasons, and condition reports; filters by site and job state are
  links (``?site=``, ``?job=``). A dispatcher approves or retires a site,
  sets its revisit interval and sends a handheld its job list from here, the
  same operations as the ``/v1/boards`` API and ``postedge central
  site|job`` (the interval only here and in ``Boards.set_revisit``).

Served by the same HTTPS front as the gateways' API, under ``/dispatch``, on
either backend (``DispatchStore``), with its own logins (dispatchers, not
outlets). Sessions: a 256-bit random token, only its hash kept, in an
HttpOnly, Secure, SameSite=Strict cookie limited to ``/dispatch``; 30
minutes idle, 12 hours at most. Every POST carries the session's CSRF token
and a POST from another origin is refused. Failed logins are throttled per
name and per address (``common/session.py``). Sessions live in memory: a
restart signs dispatchers out, which costs them a login and keeps no secret
on disk; with several scale-out fronts behind one address, the balancer
keeps a dispatcher on one front (sticky sessions), or a front that did not
sign them in asks them to sign in again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from central.boards import JOB_STATES, SITE_STATES, BoardError, Boards
from central.duty_store import DutyStore
from central.postage_audit import PostageAudit
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
JOBS_LISTED = 300  # the newest jobs listed (the state filter narrows them); the counts are of all
POSTAGE_LISTED = 100  # the newest acceptances whose postage did not check out
ALARMS_LISTED = 200  # the oldest open alarms listed; the per-outlet counts include every one

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


class DispatchStore(DutyStore, Protocol):
    """What the page reads and writes beyond the duty store; both backends
    have it (``central/dispatch_reads.py`` holds the rules they share)."""

    def health(self, alarms: bool = True) -> list[dict[str, Any]]: ...

    def open_alarms(self, limit: int = 200) -> list[dict[str, Any]]: ...

    def upload_lag(self) -> dict[str, float]: ...

    def photos_for_review(self, limit: int = 200) -> list[dict[str, Any]]: ...

    def review_photo(self, sha256: str, verdict: str, reason: str, by: str) -> bool: ...


class Dispatch:
    def __init__(self, backend: DispatchStore, clock: Callable[[], float] = time.time,
                 boards: Boards | None = None) -> None:
        """``boards``: the registry the front serves, with the master key to
        sign job lists (else one of its own, which cannot send them)."""
        self.backend = backend
        self.clock = clock
        self.boards = boards or Boards(backend, clock=clock)
        self.postage = PostageAudit(backend, clock=clock)  # only read here; central/duties.py runs it
        self.sessions: dict[str, Session] = {}
        self.fails: dict[str, tuple[int, float, float]] = {}

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/dispatch", self._page, allow_head=False)
        r.add_post("/dispatch/login", self._login)
        r.add_post("/dispatch/logout", self._logout)
        r.add_post("/dispatch/review", self._review)
        r.add_post("/dispatch/site", self._site)
        r.add_post("/dispatch/send", self._send)
        r.add_post("/dispatch/revisit", self._revisit)

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

    async def _render(self, request: web.Request, lang: str, s: Session | None, message: str = "",
                      status: int = 200) -> web.Response:
        """The page; built in a worker thread (it reads the store and runs a board review pass)."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self._render_now, request, lang, s, message, status)

    def _render_now(self, request: web.Request, lang: str, s: Session | None, message: str,
                    status: int) -> web.Response:
        nonce = new_nonce()
        ctx: dict[str, Any] = {"lang": lang, "nonce": nonce, "message": message,
                               "name": s.name if s else "", "csrf": s.csrf if s else ""}
        if s is not None:
            alarms = self._alarms(lang)
            ctx["alarms"] = alarms[:ALARMS_LISTED]
            ctx["outlets"] = self._outlets(lang, alarms)
            ctx["photos"] = self._photos(lang)
            ctx["postage"] = self._postage(lang)
            ctx.update(self._boards(lang, request.query.get("site", ""), request.query.get("job", "")))
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

    @staticmethod
    def _span(s: float, lang: str) -> str:
        if s < 3600:
            return TEXT.t("dur.min", lang, n=int(s // 60))
        if s < 86400:
            return TEXT.t("dur.hour", lang, n=int(s // 3600))
        return TEXT.t("dur.day", lang, n=int(s // 86400))

    @staticmethod
    def _word(prefix: str, value: str | None, lang: str) -> str:
        """A stored code in the reader's language; one this page does not know, as stored."""
        key = f"{prefix}.{value}"
        return TEXT.t(key, lang) if value and TEXT.has(key) else str(value or "")

    def _alarms(self, lang: str) -> list[dict[str, Any]]:
        out = []
        for a in self.backend.open_alarms(limit=0):
            # the device's clock when it had one, else when the platform heard of it
            at = a["ts"] if a["ts"] >= 1_000_000_000 else a["received_at"]
            kind = a["alarm"]
            text = (TEXT.t(f"alarm.{kind}", lang) if kind and kind != "unknown" and TEXT.has(f"alarm.{kind}")
                    else TEXT.t("alarm.unknown", lang, alarm=kind or "?"))
            out.append({**a, "at": at, "text": text, "age": self._ago(at, lang)})
        return out

    def _outlets(self, lang: str, alarms: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        lags = self.backend.upload_lag()
        open_n: dict[str, int] = {}
        oldest: dict[str, float] = {}
        for a in alarms:
            open_n[a["outlet"]] = open_n.get(a["outlet"], 0) + 1
            oldest[a["outlet"]] = min(oldest.get(a["outlet"], a["at"]), a["at"])
        for o in self.backend.health(alarms=False):
            quiet = not o["retired"] and (o["last_batch_at"] is None
                                          or self.clock() - o["last_batch_at"] > QUIET_H * 3600)
            state = TEXT.t("state.retired" if o["retired"] else "state.active", lang)
            if quiet:
                state = TEXT.t("state.quiet", lang, hours=QUIET_H)
            out.append({"outlet": o["outlet"], "state": state, "events": o["events"],
                        "last": self._ago(o["last_batch_at"], lang), "resent": o["resent_batches"],
                        "open_alarms": open_n.get(o["outlet"], 0),
                        "oldest_alarm": self._ago(oldest[o["outlet"]], lang) if o["outlet"] in oldest else "",
                        "lag": (self._span(lags[o["outlet"]], lang) if o["outlet"] in lags
                                else TEXT.t("lag.none", lang)),
                        "css": "retired" if o["retired"] else "quiet" if quiet else
                        "alarm" if o["outlet"] in open_n else ""})
        return out

    def _day(self, at: float | None) -> str:
        return time.strftime("%Y-%m-%d", time.localtime(at)) if at is not None else ""

    def _boards(self, lang: str, site_filter: str, job_filter: str) -> dict[str, Any]:
        """The 政讯通 sections; a filter value the page does not know shows everything."""
        b = self.boards
        try:
            b.run_once()  # the freshest review: every courier event stored up to now
        except Exception as e:  # the duties try again; the page shows what was reviewed so far
            record("dispatch_review_pass_failed", error=f"{type(e).__name__}: {e}"[:200])
        site_filter = site_filter if site_filter in SITE_STATES else ""
        job_filter = job_filter if job_filter in JOB_STATES else ""
        campaigns = []
        for c in b.campaigns():
            period = (TEXT.t("period.any", lang) if c["starts"] is None and c["ends"] is None else
                      TEXT.t("period.range", lang, starts=self._day(c["starts"]) or "…",
                             ends=self._day(c["ends"]) or "…"))
            campaigns.append({**c, "period": period})
        all_sites = b.sites()
        site_counts = {st: sum(1 for x in all_sites if x["status"] == st) for st in SITE_STATES}
        sites = []
        for x in all_sites:
            if site_filter and x["status"] != site_filter:
                continue
            due = b.revisit_due(x)
            if due is None:
                revisit = TEXT.t("revisit.none", lang) if not x.get("revisit_days") else ""
            elif due <= self.clock():
                revisit = TEXT.t("revisit.overdue", lang, days=f"{x['revisit_days']:g}")
            else:
                revisit = TEXT.t("revisit.due", lang, when=self._day(due), days=f"{x['revisit_days']:g}")
            sites.append({**x, "status_text": self._word("site.status", x["status"], lang),
                          "cond_text": self._word("cond", x["cond"], lang) if x["cond"] else
                          TEXT.t("cond.none", lang), "revisit": revisit,
                          "can_approve": x["status"] == "proposed", "can_retire": x["status"] != "retired",
                          "days": f"{x['revisit_days']:g}" if x.get("revisit_days") else "",
                          "css": "alarm" if x["cond"] else x["status"]})
        all_jobs = b.jobs()
        job_counts = {st: sum(1 for j in all_jobs if j["status"] == st) for st in JOB_STATES}
        jobs = []
        for j in reversed(all_jobs):  # the newest first
            if len(jobs) == JOBS_LISTED:
                break
            if job_filter and j["status"] != job_filter:
                continue
            reason = j["reason"] or ""
            reason_text = (self._word("reason", reason, lang) if TEXT.has(f"reason.{reason}") else
                           self._word("not_done", reason, lang))
            jobs.append({**j, "kind_text": self._word("job.kind", j["kind"], lang),
                         "status_text": self._word("job.status", j["status"], lang),
                         "reason_text": reason_text})
        to_send: dict[tuple[str, str], int] = {}
        for j in all_jobs:
            if j["status"] == "new":
                to_send[(j["outlet"], j["device"])] = to_send.get((j["outlet"], j["device"]), 0) + 1
        reviews = [{**r, "verdict_text": self._word("verdict", r["verdict"], lang),
                    "reason_text": self._word("reason", r["reason"], lang),
                    "step_text": self._word("step", r["step"], lang),
                    "distance": "" if r["distance_m"] is None else TEXT.t("distance.m", lang,
                                                                         m=f"{r['distance_m']:.0f}"),
                    "css": "" if r["verdict"] == "accepted" else "refused"}
                   for r in b.reviews()[:200]]
        reports = [{**r, "cond_text": self._word("cond", r["cond"], lang), "age": self._ago(r["at"], lang)}
                   for r in b.reports()[:100]]
        return {"campaigns": campaigns, "sites": sites, "jobs": jobs, "reviews": reviews, "reports": reports,
                "site_filter": site_filter, "job_filter": job_filter,
                "site_states": [(st, self._word("site.status", st, lang), site_counts[st])
                                for st in SITE_STATES],
                "job_states": [(st, self._word("job.status", st, lang), job_counts[st]) for st in JOB_STATES],
                "to_send": [{"outlet": o, "device": d, "n": n} for (o, d), n in sorted(to_send.items())]
                if b.master is not None else []}

    def _postage(self, lang: str) -> list[dict[str, Any]]:
        """Counter acceptances whose postage the platform could not confirm
        (``central/postage_audit.py``), newest first: each may be money lost or a
        tampered counter, and someone has to look."""
        bad = self.postage.verdicts(failed_only=True, newest=POSTAGE_LISTED)
        return [{**v, "text": self._word("postage", v["verdict"], lang), "age": self._ago(v["at"], lang),
                 "detail": self._postage_detail(v["verdict"], v["detail"], lang)}
                for v in bad]

    @staticmethod
    def _postage_detail(verdict: str, d: dict[str, Any], lang: str) -> str:
        """What a postage finding rests on, in words: the figures, never a stored sentence."""
        key = f"postage_detail.{verdict}" + (f".{d['why']}" if "why" in d else "")
        if not TEXT.has(key):
            return ""
        words = {k: v for k, v in d.items() if k != "why"}
        words.update({k: f"{d[k] / 100:.2f}" for k in ("charged", "want") if isinstance(d.get(k), int)})
        if "kind" in d:  # a document's kind in the reader's words
            kind = f"doc_kind.{d['kind']}"
            words["kind"] = TEXT.t(kind, lang) if TEXT.has(kind) else d["kind"]
        return TEXT.t(key, lang, **words)

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
        return await self._render(request, self._lang(request), found[1] if found else None)

    async def _login(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        lang = self._lang(request, form)
        if form is None or not self._same_origin(request):
            return await self._render(request, lang, None, TEXT.t("error.csrf", lang), 403)
        name, password = str(form.get("name", ""))[:64], str(form.get("password", ""))
        now = self.clock()
        keys = (f"name:{name}", f"addr:{request.remote}")
        if any(self.fails.get(k, (0, now, 0.0))[2] > now for k in keys):
            record("dispatch_login_locked", name=name, peer=request.remote)
            return await self._render(request, lang, None, TEXT.t("login.failed", lang), 401)
        ok = await asyncio.get_running_loop().run_in_executor(
            None, self.backend.dispatcher_login, name, password)
        if not ok:
            for k in keys:
                fails, first, _ = self.fails.get(k, (0, now, 0.0))
                self.fails[k] = S.after_failure(fails, first, now)
            record("dispatch_login_failed", name=name, peer=request.remote)
            return await self._render(request, lang, None, TEXT.t("login.failed", lang), 401)
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
            return await self._render(request, lang, None, "", 401)
        s = found[1]
        if form is None or not self._same_origin(request) or not S.same(str(form.get("csrf", "")), s.csrf):
            record("dispatch_csrf_refused", name=s.name, peer=request.remote)
            return await self._render(request, lang, s, TEXT.t("error.csrf", lang), 403)
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
            return await self._render(request, lang, s, TEXT.t("error.reason", lang), 400)
        if verdict not in ("accepted", "rejected"):
            return await self._render(request, lang, s, TEXT.t("error.unknown_photo", lang), 400)
        done = await asyncio.get_running_loop().run_in_executor(
            None, self.backend.review_photo, sha, verdict, reason, s.name)
        if not done:
            return await self._render(request, lang, s, TEXT.t("error.unknown_photo", lang), 404)
        record("photo_reviewed", sha=sha, verdict=verdict, by=s.name)
        raise web.HTTPSeeOther(f"/dispatch?lang={lang}")

    async def _board_call(self, request: web.Request, s: Session, lang: str, fn: Callable[[], Any]) -> \
            web.Response | None:
        """Run a board operation; the page with the reason when it cannot be done."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, fn)
        except BoardError as e:
            text = TEXT.t(f"board_error.{e.code}", lang) if TEXT.has(f"board_error.{e.code}") else e.code
            return await self._render(request, lang, s, TEXT.t("error.board", lang, code=text),
                                404 if e.code.startswith("unknown") else 409)
        return None

    async def _site(self, request: web.Request) -> web.Response:
        """Approve a proposed site or retire one (``Boards.approve_site`` / ``retire_site``)."""
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        s, form, lang = checked
        sid, action = str(form.get("site", ""))[:64], str(form.get("action", ""))
        if action not in ("approve", "retire"):
            return await self._render(request, lang, s, TEXT.t("board_error.bad_request", lang), 400)
        fn = self.boards.approve_site if action == "approve" else self.boards.retire_site
        failed = await self._board_call(request, s, lang, lambda: fn(sid))
        if failed is not None:
            return failed
        record("site_" + action, site=sid, by=s.name)
        raise web.HTTPSeeOther(f"/dispatch?lang={lang}#sites")

    async def _revisit(self, request: web.Request) -> web.Response:
        """Set a site's revisit interval in days, or clear it (``Boards.set_revisit``)."""
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        s, form, lang = checked
        sid, raw = str(form.get("site", ""))[:64], str(form.get("days", "")).strip()
        try:
            days = float(raw) if raw else None
        except ValueError:
            days = -1.0  # refused by set_revisit with its reason
        failed = await self._board_call(request, s, lang, lambda: self.boards.set_revisit(sid, days))
        if failed is not None:
            return failed
        record("site_revisit", site=sid, days=days, by=s.name)
        raise web.HTTPSeeOther(f"/dispatch?lang={lang}#sites-title")

    async def _send(self, request: web.Request) -> web.Response:
        """Sign and queue one handheld's job list (``Boards.send_jobs``)."""
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        s, form, lang = checked
        outlet, device = str(form.get("outlet", ""))[:32], str(form.get("device", ""))[:32]
        if not outlet or not device:
            return await self._render(request, lang, s, TEXT.t("board_error.bad_request", lang), 400)
        failed = await self._board_call(request, s, lang, lambda: self.boards.send_jobs(outlet, device))
        if failed is not None:
            return failed
        record("jobs_sent_by", outlet=outlet, device=device, by=s.name)
        raise web.HTTPSeeOther(f"/dispatch?lang={lang}#jobs")
