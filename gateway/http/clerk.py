"""The clerk console: login, alarms acknowledged and resolved
with a note, parcel search with its history, compartment requests to the
platform, the counter's scan feed in words, and the day's handover summary.

Served under ``/clerk`` by the gateway's HTTP server
(``gateway/http/server.py`` hands every ``/clerk`` request here and knows
nothing else about it). The public status page (``/``) stays on the outlet
LAN without a login and shows no parcel ids; everything with parcel data is
here, behind a login (docs/gateway.md, "The clerk console").

Who may do what (``NEEDS``):

============================================  ==========  ==========
action                                         clerk       supervisor
============================================  ==========  ==========
search parcels, scan feed, summary             yes         yes
acknowledge / resolve an ordinary alarm        yes         yes
acknowledge / resolve a critical alarm         no          yes
(door forced, code guessing, lockout, replay
state damaged, state unclear after power cut,
any alarm kind the gateway does not know)
print a pickup slip (``clerk_slip.py``)        yes         yes
compartment out of service / back in service   no          yes
request a remote open                          no          yes
============================================  ==========  ==========

Why: a critical alarm is a sign of an attack or of custody in doubt, and
acknowledging it takes it off the page; a compartment change or a remote
open acts on a locker (a door opening without a code). The gateway holds no
device key, so the locker changes are *requests*: an own event
``gateway.clerk_request`` that syncs upstream; the platform decides, signs a
command carrying ``args.request`` = the request's event id, and the relay
delivers it. The console shows each request's stage: waiting for the link,
with the platform, or the signed command's state.

Every action is an own event (``gateway/store/own_events.py``) from the
source ``<gateway id>-clerk``, synced upstream like any other event: logins,
failed logins, lockouts, logouts, acknowledgements, resolutions, searches
and requests. Device text is only ever filled into autoescaped templates;
inputs have hard length caps and a clear error.
网点职员控制台：登录、确认和处理警报、查询包裹、向平台申请格口操作、扫描记录、交班汇总。
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import Counter

from common import session as S
from common.barcode_words import reason_text
from common.clock import now as clock_now
from common.logs import recorder
from common.pages import page_env
from common.text import LANGS, beside
from gateway import metrics as M
from gateway.http.clerk_phone import parcels_by_tail, tail_of
from gateway.http.clerk_slip import NoSlip, SlipDesk
from gateway.http.page import KNOWN_STATES, ago, clock, gateway_view, kind_name, state_label
from gateway.http.status import TEXT as PAGE_TEXT
from gateway.http.status import Setup, snapshot
from gateway.store import alarms_ack, clerks
from gateway.store.events import EventStore
from gateway.store.own_events import OwnEvents
from gateway.store.readonly import ReadOnlyStore
from protocol.topics import valid_segment

record = recorder(__name__)

TEXT = beside(__file__, "text_clerk.toml")
ENV = page_env(Path(__file__).with_name("templates"), t=TEXT.t, pt=PAGE_TEXT.t)

CLERK_EVENTS = Counter("postedge_clerk_actions", "Clerk console actions, by action and outcome",
                       ["action", "outcome"], registry=M.REGISTRY)

BODY_MAX = 8 * 1024  # a form: a note and a few fields
NOTE_MAX = 500
QUERY_MAX = 64
FEED_SHOWN = 30
RESULTS_MAX = 200
CRITICAL = frozenset({"door_forced", "code_guessing", "lockout", "replay_state_corrupt",
                      "recovered_inconsistent"})
ORDINARY = frozenset({"door_left_open", "lock_board_fault", "outbox_full", "outbox_nearly_full",
                      "journal_corrupt", "budget_threatened", "clock_skew", "device_misbehaving",
                      "device_quarantined", "store_damaged"})
REQUESTS = ("out_of_service", "in_service", "open")
NEEDS = {"search": "clerk", "alarm": "clerk", "slip": "clerk", "alarm_critical": "supervisor",
         "out_of_service": "supervisor", "in_service": "supervisor", "open": "supervisor"}
WAYBILL = re.compile(r"^[A-Z0-9]{6,40}$")
PHONE_TAIL = re.compile(r"^[0-9]{4}$")
# Event types the scan feed shows, and which of them are highlighted.
SCAN_TYPES = ("scanner.intake", "scanner.misrouted", "scanner.invalid")

# status, HTML, extra headers (a list: the header once per value, as Set-Cookie needs)
Reply = tuple[int, str, dict[str, str | list[str]]]
# The session cookie's paths: the console, and the counter acceptance API the
# clerk's acceptance screen calls (gateway/http/counter_login.py). Two
# cookies with one token rather than Path=/, so the public page, uploads and
# metrics never see it.
COOKIE_PATHS = ("/clerk", "/v1/counter")


def allowed(role: str, action: str) -> bool:
    need = NEEDS[action]
    return need == "clerk" or role == "supervisor"


def is_critical(alarm_kind: str) -> bool:
    return alarm_kind in CRITICAL or alarm_kind not in ORDINARY


def stage_text(request: dict[str, Any], lang: str) -> str:
    """Where a clerk's request stands, in words; the platform's refusal
    with its reason (a reason the catalogue lacks is shown as its code)."""
    stage, reason = request["stage"], request.get("reason")
    if stage == "platform_refused":
        why = TEXT.t(f"refusal.{reason}", lang) if TEXT.has(f"refusal.{reason}") else str(reason)
        return TEXT.t("stage.platform_refused", lang, reason=why)
    return TEXT.t(f"stage.{stage}", lang) if TEXT.has(f"stage.{stage}") else stage


class Refused(Exception):
    """A request the console answers with an error page: status and catalogue key."""

    def __init__(self, status: int, key: str, **fields: Any) -> None:
        super().__init__(key)
        self.status = status
        self.key = key
        self.fields = fields


class ClerkConsole:
    """The ``/clerk`` routes over the gateway's store.

    Reads go through a read-only connection per request (as the page's);
    writes (sessions, throttle, acknowledgements, requests, own events) go
    through one writable connection under a lock, because the own-event
    sequence is one counter file that only one writer may advance."""

    def __init__(self, db_path: Path, outlet: str, gateway_id: str, secure: bool, lang: str,
                 slips: SlipDesk | None = None, setup: Callable[[], Setup] | None = None) -> None:
        """``setup``: the gateway's own state for the page (``[upstream]``,
        the provisioned devices), as the public page has it."""
        self.db_path = Path(db_path)
        self.setup = setup or Setup
        self.slips = slips
        self.outlet = outlet
        source = f"{gateway_id}-clerk"
        self.source = source if valid_segment(source) else "gw-clerk"
        self.secure = secure
        self.lang = lang
        self.lock = threading.Lock()
        self._store: EventStore | None = None
        self._own: OwnEvents | None = None
        # Handheld pairing by QR code (gateway/http/pairing.py), set by the server.
        self.pairing: Any = None

    # ------------------------------------------------------------ plumbing
    @property
    def store(self) -> EventStore:
        if self._store is None:
            self._store = EventStore(self.db_path)
            with self._store.tx():
                clerks.ensure(self._store.db)
            self._own = OwnEvents(self._store, self.outlet, self.source, self.db_path.parent)
        return self._store

    @property
    def own(self) -> OwnEvents:
        _ = self.store
        assert self._own is not None
        return self._own

    def audit(self, etype: str, body: dict[str, Any]) -> str:
        """An own event (caller holds the lock, inside or outside a tx)."""
        return self.own.emit(etype, body, cls="audit")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    async def handle(self, request: web.Request,
                     blocking: Callable[..., Awaitable[Any]]) -> web.Response:
        lang = request.query.get("lang", self.lang)
        if lang not in LANGS:
            lang = self.lang
        method = request.method
        form: dict[str, str] = {}
        if method == "POST":
            length = request.content_length
            if length is None:
                return self._html(411, self._error_page(lang, "err.length"))
            if length > BODY_MAX:
                return self._html(413, self._error_page(lang, "err.too_big"))
            if not self._same_origin(request):
                CLERK_EVENTS.labels("post", "cross_origin").inc()
                return self._html(403, self._error_page(lang, "err.origin"))
            try:
                raw = await request.content.readexactly(length) if length else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                # The browser went away mid-form: nothing to do, nothing stored.
                resp = self._html(400, self._error_page(lang, "err.bad_form"))
                resp.force_close()
                return resp
            form = _parse_form(raw)
            lang = form.get("lang", lang) if form.get("lang") in LANGS else lang
        elif method not in ("GET", "HEAD"):
            return self._html(405, self._error_page(lang, "err.method"), {"Allow": "GET, HEAD, POST"})
        token = request.cookies.get(S.COOKIE, "")
        addr = request.remote or "?"
        try:
            status, html, headers = await blocking(self.route, method, request.path, dict(request.query),
                                                   form, token, addr, lang)
        except Refused as r:
            status, html, headers = r.status, self._error_page(lang, r.key, **r.fields), {}
        return self._html(status, html, headers)

    def _same_origin(self, request: web.Request) -> bool:
        return same_origin(request.headers, request.host)

    def _html(self, status: int, html: str, extra: dict[str, str | list[str]] | None = None) -> web.Response:
        # The nonce is the one our template wrote into its <style> tag, the
        # first thing in <head>: device text comes later and is escaped (a
        # quote cannot survive autoescaping), so it cannot supply one.
        nonce = _NONCE.search(html[:2048])
        csp = "default-src 'none'; connect-src 'self'; base-uri 'none'; form-action 'self'; " \
              "frame-ancestors 'none'"
        if nonce:
            csp += f"; style-src 'nonce-{nonce.group(1)}'; script-src 'nonce-{nonce.group(1)}'"
        headers: CIMultiDict[str] = CIMultiDict({
            "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
            # same-origin, not no-referrer: under no-referrer Chromium sends
            # "Origin: null" with our own forms, and the Origin check needs it.
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "X-Frame-Options": "DENY", "Server": "postedge", "Content-Security-Policy": csp})
        for k, v in (extra or {}).items():
            if isinstance(v, list):
                headers.popall(k, None)
                for one in v:
                    headers.add(k, one)
            else:
                headers[k] = v
        return web.Response(status=status, body=html.encode(), headers=headers)

    def _error_page(self, lang: str, key: str, **fields: Any) -> str:
        return self._render(lang, "error", {"msg": TEXT.t(key, lang, **fields)})

    def _render(self, lang: str, view: str, ctx: dict[str, Any]) -> str:
        return ENV.get_template("clerk.html").render(
            lang=lang, html_lang="zh-CN" if lang == "zh" else "en", other="en" if lang == "zh" else "zh",
            nonce=secrets.token_urlsafe(16), view=view, who=None, csrf="", **ctx)

    def _cookie(self, token: str, max_age: int) -> list[str]:
        secure = "; Secure" if self.secure else ""
        return [f"{S.COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
                for path in COOKIE_PATHS]

    # ------------------------------------------------------------ routes (pool thread)
    def route(self, method: str, path: str, query: dict[str, str], form: dict[str, str], token: str,
              addr: str, lang: str) -> Reply:
        if path == "/clerk/login":
            if method == "POST":
                return self.login(form, token, addr, lang)
            return 200, self._login_page(lang, None), {}
        who = self.who(token)
        if who is None:
            if method == "POST":
                CLERK_EVENTS.labels("post", "no_session").inc()
                return 401, self._login_page(lang, TEXT.t("login.expired", lang)), {}
            return 303, "", {"Location": f"/clerk/login?lang={lang}"}
        if method == "POST":
            if not S.same(form.get("csrf", ""), who["csrf"]):
                CLERK_EVENTS.labels("post", "bad_csrf").inc()
                raise Refused(403, "err.csrf")
            actions: dict[str, Callable[[dict[str, Any], dict[str, str], str], Reply]] = {
                "/clerk/logout": self.logout, "/clerk/alarm": self.alarm,
                "/clerk/compartment": self.compartment, "/clerk/slip": self.slip,
                "/clerk/pair": self.pair}
            act = actions.get(path)
            if act is None:
                raise Refused(404, "err.not_found")
            return act(who, form, lang)
        if path in ("/clerk", "/clerk/"):
            return 200, self.console(who, lang, query.get("q", "")), {}
        if path == "/clerk/feed":
            return 200, self._render_part(lang, "feed", {"feed": self.feed(lang)}), {}
        if path == "/clerk/gateway":
            return 200, ENV.get_template("gateway.html").render(gw=self.gateway(lang)), {}
        raise Refused(404, "err.not_found")

    def _login_page(self, lang: str, msg: str | None, name: str = "") -> str:
        return self._render(lang, "login", {"msg": msg, "name": name})

    def _render_part(self, lang: str, part: str, ctx: dict[str, Any]) -> str:
        return ENV.get_template(f"clerk_{part}.html").render(lang=lang, **ctx)

    # ------------------------------------------------------------ login
    def who(self, token: str) -> dict[str, Any] | None:
        if not token or len(token) > 100:
            return None
        th = S.token_hash(token)
        now = time.time()  # wall: a session lasts for a real person at a real screen
        with self.lock:
            db = self.store.db
            s = clerks.session(db, th)
            if s is None:
                return None
            if s["disabled"] or now > s["expires"] or now - s["last_seen"] > S.SESSION_IDLE_S:
                clerks.end_session(db, th)
                return None
            clerks.touch_session(db, th, now)
        return {**s, "token_hash": th}

    def login(self, form: dict[str, str], old_token: str, addr: str, lang: str) -> Reply:
        name, password = form.get("name", ""), form.get("password", "")
        if not name or len(name) > S.NAME_MAX or len(password) > S.PASSWORD_MAX:
            CLERK_EVENTS.labels("login", "bad_input").inc()
            return 400, self._login_page(lang, TEXT.t("login.bad_input", lang)), {}
        keys = [f"name:{name}", f"addr:{addr}"]
        now = time.time()  # wall: a lockout makes a real person wait
        with self.lock:
            db = self.store.db
            locked = max(clerks.throttle_get(db, k)[2] for k in keys)
            account = clerks.clerk(db, name)
        if locked > now:
            CLERK_EVENTS.labels("login", "throttled").inc()
            wait = int(locked - now) + 1
            return 429, self._login_page(lang, TEXT.t("login.throttled", lang, s=wait), name), \
                {"Retry-After": str(wait)}
        ok = S.verify_password(password, account["pw"] if account else None)
        ok = ok and account is not None and not account["disabled"]
        with self.lock, self.store.tx():
            db = self.store.db
            if not ok:
                clerks.throttle_prune(db, now, S.FORGET_S)
                lock_now = False
                for k in keys:
                    fails, first, _ = clerks.throttle_get(db, k)
                    fails, first, until = S.after_failure(fails, first, now)
                    clerks.throttle_put(db, k, fails, first, until)
                    lock_now = lock_now or until > now
                self.audit("gateway.clerk_login_failed", {"name": name[:S.NAME_MAX], "addr": addr,
                                                          "locked": lock_now})
                CLERK_EVENTS.labels("login", "failed").inc()
                return 401, self._login_page(lang, TEXT.t("login.failed", lang), name), {}
            for k in keys:
                clerks.throttle_clear(db, k)
            if old_token:
                clerks.end_session(db, S.token_hash(old_token))  # never promote a planted token
            token, csrf = S.new_token(), S.new_token()
            clerks.new_session(db, S.token_hash(token), name, csrf, addr, now, now + S.SESSION_MAX_S)
            assert account is not None
            self.audit("gateway.clerk_login", {"name": name, "role": account["role"], "addr": addr})
        CLERK_EVENTS.labels("login", "ok").inc()
        return 303, "", {"Location": f"/clerk?lang={lang}",
                         "Set-Cookie": self._cookie(token, int(S.SESSION_MAX_S))}

    def logout(self, who: dict[str, Any], form: dict[str, str], lang: str) -> Reply:
        with self.lock, self.store.tx():
            clerks.end_session(self.store.db, who["token_hash"])
            self.audit("gateway.clerk_logout", {"name": who["name"]})
        CLERK_EVENTS.labels("logout", "ok").inc()
        return 303, "", {"Location": f"/clerk/login?lang={lang}", "Set-Cookie": self._cookie("", 0)}

    # ------------------------------------------------------------ actions
    def _note(self, form: dict[str, str]) -> str:
        note = form.get("note", "").strip()
        if len(note) > NOTE_MAX:
            raise Refused(400, "err.note_long", n=NOTE_MAX)
        return note

    def alarm(self, who: dict[str, Any], form: dict[str, str], lang: str) -> Reply:
        aid, action = form.get("alarm", ""), form.get("action", "")
        if action not in ("acknowledge", "resolve") or not aid or len(aid) > 120:
            raise Refused(400, "err.bad_form")
        note = self._note(form)
        if action == "resolve" and not note:
            raise Refused(400, "err.note_needed")
        with self.lock:
            row = self.store.db.execute(
                "SELECT device, CAST(payload AS TEXT) FROM events WHERE id=? AND cls='alarm'",
                (aid,)).fetchone()
        if row is None:
            raise Refused(404, "err.no_alarm")
        try:
            body = json.loads(row[1]).get("body", {})
            kind = str(body.get("alarm", "?")) if isinstance(body, dict) else "?"
        except ValueError:
            kind = "?"
        if is_critical(kind) and not allowed(who["role"], "alarm_critical"):
            CLERK_EVENTS.labels("alarm", "forbidden").inc()
            raise Refused(403, "err.supervisor")
        state = "acknowledged" if action == "acknowledge" else "resolved"
        now = clock_now()
        with self.lock, self.store.tx():
            alarms_ack.put(self.store.db, aid, state, who["name"], note, now)
            self.audit(f"gateway.alarm_{state}", {"alarm_id": aid, "alarm": kind[:40], "device": row[0],
                                                  "by": who["name"], "role": who["role"], "note": note})
        CLERK_EVENTS.labels("alarm", state).inc()
        return 303, "", {"Location": f"/clerk?lang={lang}#alarms"}

    def compartment(self, who: dict[str, Any], form: dict[str, str], lang: str) -> Reply:
        device, kind = form.get("device", ""), form.get("action", "")
        if kind not in REQUESTS or not valid_segment(device):
            raise Refused(400, "err.bad_form")
        try:
            cid = int(form.get("compartment", ""))
        except ValueError:
            raise Refused(400, "err.bad_form") from None
        note = self._note(form)
        if not allowed(who["role"], kind):
            CLERK_EVENTS.labels(kind, "forbidden").inc()
            raise Refused(403, "err.supervisor")
        if kind == "open" and not note:
            raise Refused(400, "err.note_needed")
        store = ReadOnlyStore(self.db_path)
        try:
            lockers = {lk["device"]: lk for lk in snapshot(store)["lockers"]}
        finally:
            store.close()
        lk = lockers.get(device)
        if lk is None or cid not in {c["id"] for c in lk["compartments"]}:
            raise Refused(404, "err.no_compartment")
        now = clock_now()
        with self.lock, self.store.tx():
            eid = self.audit("gateway.clerk_request", {"request": kind, "device": device, "compartment": cid,
                                                       "by": who["name"], "role": who["role"], "note": note})
            clerks.add_request(self.store.db, eid, kind, device, cid, who["name"], note, now)
        CLERK_EVENTS.labels(kind, "requested").inc()
        return 303, "", {"Location": f"/clerk?lang={lang}#requests"}

    def slip(self, who: dict[str, Any], form: dict[str, str], lang: str) -> Reply:
        """A pickup slip on the receipt printer (``clerk_slip.py``): audited
        as ``gateway.clerk_slip`` with whether it carried the code, never
        the code itself."""
        parcel = form.get("parcel", "").strip().upper()
        if self.slips is None:
            CLERK_EVENTS.labels("slip", "no_printer").inc()
            raise Refused(503, "slip.no_printer")
        try:
            out = self.slips.print_slip(parcel)
        except NoSlip as e:
            CLERK_EVENTS.labels("slip", str(e)).inc()
            raise Refused(400 if str(e) == "bad_parcel" else 503 if str(e) == "no_printer" else 404,
                          f"slip.{e}") from None
        with self.lock, self.store.tx():
            self.audit("gateway.clerk_slip", {"by": who["name"], "role": who["role"], **out})
        outcome = ("code" if out["with_code"] else "no_code") if out["printed"] else "printer_" + out["error"]
        CLERK_EVENTS.labels("slip", outcome).inc()
        if not out["printed"]:
            reason = TEXT.t(f"printer.{out['error']}", lang) if TEXT.has(f"printer.{out['error']}") \
                else out["error"]
            raise Refused(503, "slip.printer", reason=reason)
        msg = TEXT.t("slip.printed_code" if out["with_code"] else "slip.printed_no_code", lang,
                     parcel=parcel, why=TEXT.t(f"slip.why.{out['why']}", lang))
        return 200, self._render(lang, "notice", {"msg": msg}), {}

    def _pair_ctx(self) -> dict[str, Any]:
        from gateway.http import pairing

        if self.pairing is None or self.pairing.folder is None:  # no HTTPS: no pairing
            return {"pair_t": pairing.TEXT.t, "pairable": None, "pair_minutes": 0}
        return {"pair_t": pairing.TEXT.t, "pairable": self.pairing.handhelds(),
                "pair_minutes": int(self.pairing.ttl_s // 60)}

    def pair(self, who: dict[str, Any], form: dict[str, str], lang: str) -> Reply:
        """A one-time pairing QR code for a handheld (``pairing.py``)."""
        from gateway.http.pairing import PairError, refusal

        if self.pairing is None:
            raise Refused(503, "err.not_found")
        try:
            qr = self.pairing.issue(form.get("device", ""), who["name"])
        except PairError as e:
            CLERK_EVENTS.labels("pair", e.reason).inc()
            return e.status, self._render(lang, "error", {"msg": refusal(e.reason)[lang]}), {}
        CLERK_EVENTS.labels("pair", "issued").inc()
        return 200, self._render(lang, "pair", {"qr": qr, **self._pair_ctx()}), {}

    # ------------------------------------------------------------ reads
    def console(self, who: dict[str, Any], lang: str, q: str) -> str:
        store = ReadOnlyStore(self.db_path)
        try:
            snap = snapshot(store, parcel_ids=True, setup=self.setup())
            search = self.search(store, who, q, lang) if q else None
            reqs = clerks.requests(store.db)
            summary = self.summary(store, snap)
            feed = self._feed(store, lang)
        finally:
            store.close()
        now = snap["generated_at"]
        alarms = []
        for a in snap["alarms"]:
            ack = a.get("ack")
            need = "alarm_critical" if is_critical(a["alarm"]) else "alarm"
            alarms.append({"id": a["id"], "text": a["text"][lang], "device": a["device"],
                           "clock": clock(a["at"], now), "ago": ago(a["age_s"], lang),
                           "critical": is_critical(a["alarm"]), "hot": a["age_s"] <= 3600 and not ack,
                           "ack": None if not ack else {**ack, "clock": clock(ack["at"], now)},
                           "may": allowed(who["role"], need)})
        lockers = [{"device": lk["device"], "compartments": [
            {"id": c["id"], "label": state_label(c["state"], lang), "state": c["state"]}
            for c in lk["compartments"]]} for lk in snap["lockers"]]
        requests = [{**r, "clock": clock(r["at"], now),
                     "what": TEXT.t(f"req.{r['kind']}", lang, id=r["compartment"], device=r["device"]),
                     "stage_text": stage_text(r, lang)} for r in reqs]
        return ENV.get_template("clerk.html").render(
            lang=lang, html_lang="zh-CN" if lang == "zh" else "en", other="en" if lang == "zh" else "zh",
            nonce=secrets.token_urlsafe(16), view="console", who=who, csrf=who["csrf"],
            supervisor=who["role"] == "supervisor", alarms=alarms, lockers=lockers, requests=requests,
            gw=gateway_view(snap, lang),
            q=q[:QUERY_MAX], search=search, summary=summary, feed=feed, can_slip=self.slips is not None,
            link_down=any(r["stage"] == "waiting_link" for r in reqs), **self._pair_ctx())

    def gateway(self, lang: str) -> dict[str, Any]:
        """The gateway's own block alone (``templates/gateway.html``), which the open
        console re-reads every few seconds: a broker link lost at noon shows at noon."""
        store = ReadOnlyStore(self.db_path)
        try:
            snap = snapshot(store, setup=self.setup())
        finally:
            store.close()
        return gateway_view(snap, lang)

    def search(self, store: ReadOnlyStore, who: dict[str, Any], q: str, lang: str) -> dict[str, Any]:
        """Parcels by waybill (exact) or the recipient's phone tail (last 4
        digits, ``body.phone_tail`` in the events that carry one, or the
        notifier's contact: ``clerk_phone.py``), each with its phone tail and
        its whole event history, oldest first."""
        raw = q.strip()
        if len(raw) > QUERY_MAX:
            return {"error": TEXT.t("search.too_long", lang, n=QUERY_MAX), "parcels": []}
        norm = raw.upper().replace(" ", "")
        if PHONE_TAIL.match(norm):
            kind = "phone_tail"
            found = [r[0] for r in store.db.execute(
                "SELECT DISTINCT json_extract(CAST(payload AS TEXT), '$.body.parcel') FROM events "
                "WHERE json_extract(CAST(payload AS TEXT), '$.body.phone_tail') = ? LIMIT 20", (norm,))
                if isinstance(r[0], str)]
            found += [p for p in parcels_by_tail(store.db, norm, 20) if p not in found][:20 - len(found)]
        elif WAYBILL.match(norm):
            kind = "waybill"
            found = [norm]
        else:
            return {"error": TEXT.t("search.bad", lang), "parcels": []}
        now = clock_now()
        parcels = []
        total = 0
        for parcel in found:
            rows = store.db.execute(
                "SELECT id, device, type, ts, received_at, CAST(payload AS TEXT) FROM events "
                "WHERE json_extract(CAST(payload AS TEXT), '$.body.parcel') = ? "
                "ORDER BY received_at, rowid LIMIT ?", (parcel, RESULTS_MAX)).fetchall()
            if not rows:
                continue
            hist = [self._event_row(r, lang, now) for r in rows]
            total += len(hist)
            parcels.append({"parcel": parcel, "history": hist,
                            "phone_tail": tail_of(store.db, parcel, (r[5] for r in rows))})
        with self.lock:
            self.audit("gateway.clerk_search", {"by": who["name"], "kind": kind, "q": norm,
                                                "parcels": len(parcels)})
        CLERK_EVENTS.labels("search", "hit" if parcels else "miss").inc()
        return {"error": None, "parcels": parcels, "kind": kind, "events": total}

    def _event_row(self, r: tuple[Any, ...], lang: str, now: float) -> dict[str, Any]:
        eid, device, etype, ts, received, payload = r
        try:
            body = json.loads(payload).get("body", {})
            body = body if isinstance(body, dict) else {}
        except ValueError:
            body = {}
        at = float(ts) if isinstance(ts, int) and 1_600_000_000 <= ts <= now + 300 else float(received)
        return {"clock": clock(at, now), "ago": ago(max(0.0, now - at), lang),
                "what": event_words(etype, lang),
                "device": device, "compartment": _short(body.get("compartment")),
                "reason": reason_words(body.get("reason"), lang)}

    def _feed(self, store: ReadOnlyStore, lang: str) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(SCAN_TYPES))
        rows = store.db.execute(
            "SELECT id, device, type, ts, received_at, CAST(payload AS TEXT) FROM events "
            f"WHERE type IN ({marks}) "
            "ORDER BY received_at DESC, rowid DESC LIMIT ?", (*SCAN_TYPES, FEED_SHOWN)).fetchall()
        now = clock_now()
        out = []
        for r in rows:
            try:
                body = json.loads(r[5]).get("body", {})
                body = body if isinstance(body, dict) else {}
            except ValueError:
                body = {}
            dest = body.get("dest_outlet") or body.get("dest")
            misrouted = r[2] == "scanner.misrouted" or (isinstance(dest, str) and dest != self.outlet)
            refused = r[2] == "scanner.invalid"
            row = self._event_row(r, lang, now)
            row.update(parcel=_short(body.get("parcel")), text=_short(body.get("text")),
                       misrouted=misrouted, refused=refused, dest=_short(dest),
                       flag=TEXT.t("feed.misrouted", lang) if misrouted
                       else TEXT.t("feed.refused", lang,
                                   reason=_short(reason_text(body["reason"], lang) if body.get("reason")
                                                 else "") or "?")
                       if refused else "")
            out.append(row)
        return out

    def feed(self, lang: str) -> list[dict[str, Any]]:
        store = ReadOnlyStore(self.db_path)
        try:
            return self._feed(store, lang)
        finally:
            store.close()

    def summary(self, store: ReadOnlyStore, snap: dict[str, Any]) -> dict[str, Any]:
        """Today's handover: since local midnight, by event type and alarms'
        state; open items are alarms not resolved, requests not done, and
        compartments waiting for the courier."""
        lt = time.localtime(clock_now())
        midnight = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))
        counts = dict(store.db.execute(
            "SELECT type, count(*) FROM events WHERE received_at >= ? GROUP BY type", (midnight,)).fetchall())
        alarm_ids = [r[0] for r in store.db.execute(
            "SELECT id FROM events WHERE cls='alarm' AND received_at >= ?", (midnight,))]
        acks = alarms_ack.read(store.db, alarm_ids)
        resolved = sum(1 for a in acks.values() if a["state"] == "resolved")
        reqs = clerks.requests(store.db, 200)
        return {"deposits": counts.get("locker.deposit", 0), "pickups": counts.get("locker.pickup", 0),
                "scans": counts.get("scanner.intake", 0), "misrouted": counts.get("scanner.misrouted", 0),
                "alarms": len(alarm_ids), "alarms_resolved": resolved,
                "alarms_open": len(alarm_ids) - resolved,
                "requests_open": sum(1 for r in reqs if r["stage"] in ("waiting_link", "sent", "cmd_queued",
                                                                       "cmd_sent")),
                "retrieval": sum(len(lk["retrieval"]) for lk in snap["lockers"])}


_NONCE = re.compile(r'nonce="([A-Za-z0-9_\-]+)"')


def same_origin(headers: Any, host: str | None) -> bool:
    """A POST from another site (or a sandboxed ``null`` origin) is refused
    before its session or CSRF token is looked at (the console's forms and
    the counter API's cookie-authorized calls alike)."""
    if headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = headers.get("Origin")
    if origin is None:
        return True
    try:
        return urlsplit(origin).netloc.lower() == (host or "").lower()
    except ValueError:
        return False


def _short(v: Any) -> str:
    if v is None:
        return ""
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return s if len(s) <= 80 else s[:79] + "…"


def reason_words(reason: Any, lang: str) -> str:
    """A history row's reason in the reader's language (no reason codes on a
    Chinese page): a compartment state (a retrieval's), a locker's abort or inspection
    reason (``history_reason.*``; ``board:<detail>`` is the board's fault, its detail is for
    the logs); anything else is what the device sent, shown as text and cut short."""
    if not isinstance(reason, str):
        return _short(reason)
    code = reason.split(":", 1)[0]
    if reason in KNOWN_STATES:
        return state_label(reason, lang)
    if TEXT.has(f"history_reason.{code}"):
        return TEXT.t(f"history_reason.{code}", lang)
    return _short(reason)


def event_words(etype: str, lang: str) -> str:
    """An event type in words: the console's own catalogue first (scans),
    then the page's (parcel events), else a generic label with the type."""
    for cat in (TEXT, PAGE_TEXT):
        if cat.has(f"evt.{etype}"):
            return cat.t(f"evt.{etype}", lang)
    return PAGE_TEXT.t("evt.unknown", lang, type=_short(etype))


def _parse_form(raw: bytes) -> dict[str, str]:
    """``application/x-www-form-urlencoded``, first value of each key, bad
    UTF-8 replaced (it then fails the field checks with a clear error)."""
    from urllib.parse import parse_qsl

    out: dict[str, str] = {}
    try:
        pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
    except ValueError:
        return out  # too many fields: nothing in it passes the checks
    for k, v in pairs:
        out.setdefault(k, v)
    return out


__all__ = ["ClerkConsole", "allowed", "is_critical", "kind_name", "same_origin"]
