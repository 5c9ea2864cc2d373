"""The courier's touch UI: a local web page for the handheld's own browser, plus its JSON API.

Same house style as the clerk's status page (``gateway/http/page.py``): HTML rendered
on the server from Jinja2 templates (``handheld/templates/``, autoescaped, so every device
or courier string is escaped), its words from ``handheld/text.toml``, CSS and script
inline under a per-response CSP nonce, and nothing fetched from anywhere else (the
handheld is often offline). Differences that come from being held in a hand outdoors:

- laid out for one hand and gloves at 360 px wide (docs/handheld.md, "One hand and
  gloves"): a one-line header, the scan input with ONE result area right under it on
  every screen (every scan and action replaces it, with a tone and a vibration per
  kind of result), the screen, and a tab bar at the bottom; every control is at
  least 48 px high and wide (``--tap``) and 12 px from the next, text and borders at
  7:1 or more, and every colour also carries a word or symbol;
- the page is one shell with six screens (scan, parcels, dispatch, jobs, camera,
  sync); the live parts of the visible screen are fetched from ``/part`` every second
  and swapped in only when they changed, so a half-typed code or an open file chooser
  survives; a failed fetch turns on the "app not answering" banner and disables the
  actions;
- an installable web app: a manifest per language, icons and a service worker that
  keeps the shell for opening with no network (``handheld/static/``);
- Simplified Chinese by default, English one tap away (``?lang=en``).

The server is aiohttp in a thread of its own (``common.web_server.ThreadedServer``,
shared with the simulator's dashboard, as are the security headers), not the
standard library's ``ThreadingHTTPServer``, which has no timeouts (an idle or
trickling socket holds a thread forever) and no limits. And because any web page the
courier's browser opens can send requests to ``127.0.0.1``, every request is checked
before it reaches the app (:class:`WebUI`): the ``Host`` must be
this UI's own, a state-changing request must come from this UI's own page (``Origin``),
be JSON, and carry the session token embedded in the page.

Routes: ``GET /`` page · ``GET /part?name=status|scan|parcels|jobs|camera|sync&job=`` ·
``GET /camera.jpg`` latest preview frame · ``GET /api/state`` · ``GET /api/outbox``
``{"connected", "outbox"}`` · the installable app: ``GET /manifest.webmanifest?lang=``,
``GET /sw.js`` (the service worker), ``GET /static/<icon>.png`` ·
``POST /api/scan`` ``{"code", "mode"}`` · ``POST /api/wedge`` ``{"raw", "age_ms"}`` (a
keyboard-wedge burst, ``handheld/wedge.py``) · ``POST /api/position`` ``{"lat", "lon",
"accuracy_m", "age_ms"}`` or ``{"error"}`` (the browser's location, ``handheld/geolocation.py``) ·
``POST /api/mode`` ``{"mode"}`` ·
``POST /api/deliver`` ``{"code", "method", "value"}`` ·
``POST /api/jobs/<id>/pick|step|submit`` · ``POST /api/jobs/<id>/photo?step=`` with
``{}`` (the camera's latest frame) or the image bytes (``image/*`` or
``application/octet-stream``). Every POST needs ``Content-Type: application/json``
(photo bytes excepted) and ``X-Postedge-Token``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import secrets
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from common import logs
from common.config import Problem
from common.pages import page_env
from common.web_server import (
    IDLE_TIMEOUT_S,
    MAX_CONNECTIONS,
    ThreadedServer,
    csp,
    host_allowlist,
    host_ok,
    local_url,
    new_nonce,
    page_csp,
    security_headers,
)
from handheld.app import HandheldApp
from handheld.config import ConfigError
from handheld.jobs import board_context
from handheld.text import LANGS, TEXT, Refused

log = logs.get(__name__)
#: The page's text in one language: ``t(key, lang, **fields)`` (``handheld/text.toml``).
t = TEXT.t
MAX_BODY = 20 * 1024 * 1024  # a full-resolution phone photo
PARTS = ("status", "scan", "parcels", "dispatch", "jobs", "camera", "sync")
SCREENS = ("scan", "parcels", "dispatch", "jobs", "camera", "sync")
MODES = ("check", "intake", "deposit", "deliver", "collect", "bag", "point")


def _coord(e7: Any) -> str:
    return f"{e7 / 1e7:.6f}" if isinstance(e7, int) else "—"


def _ago(at: float | None, lang: str) -> str:
    if at is None:
        return t("sync.never", lang)
    return t("sync.ago", lang, n=int(max(0, time.time() - at)))


def _cmd_status(status: str, lang: str) -> str:
    """A locker command's status as the gateway reports it; one this handheld has no
    words for is shown as sent."""
    key = "cmd." + status
    return t(key, lang) if TEXT.has(key) else t("cmd.other", lang, status=status)


def _msg(d: dict[str, Any] | None, lang: str) -> str:
    if not d:
        return ""
    return str(d.get(lang) or d.get("en") or "")


# ------------------------------------------------------------------ templates

#: The page and its parts: ``templates/`` beside this module (Jinja2, autoescaped, so
#: every device or courier string is escaped where it is shown). ``page.html`` is the
#: shell with its inline style (``page.css``) and script (``page.js``); each part the
#: script fetches from ``/part`` is a template of its own (``status.html``,
#: ``scan.html``, ``parcels.html``, ``jobs.html``, ``camera.html``, ``sync.html``).
ENV = page_env(Path(__file__).with_name("templates"), t=t)


def _render(name: str, lang: str, ctx: dict[str, Any]) -> str:
    return ENV.get_template(name).render(ctx, lang=lang)


# ---------------------------------------------------------------------- parts
# Each part's words and rows are made here; its template only lays them out.

def _status_ctx(app: HandheldApp, lang: str) -> dict[str, Any]:
    return {"online": bool(app.link.connected), "events": app.outbox.count(), "result": result(app, lang)}


def result(app: HandheldApp, lang: str) -> dict[str, Any] | None:
    """The newest result the app holds, for the page's one result area; ``None`` for none.

    Its ``key`` changes whenever there is something new to say: a new scan from any
    source (the page's field, the serial engine, the camera, a wedge burst), and the
    locker's answer to a deposit, which comes later than the scan (the gateway is
    polled): then the result says which compartment opened ("9 号格口已开")."""
    r = app.last_scan
    if r is None:
        return None
    verdict, ok = str(r.get("verdict", "refused")), bool(r.get("ok"))
    key, message = f'{r.get("at", "")}', _msg(r, lang)
    if r.get("cmd") and r.get("parcel"):  # a deposit: follow the locker's answer
        p = next((x for x in app.flows.view()["parcels"] if x["parcel"] == r["parcel"]), None)
        status = p["cmd_status"] if p else None
        if status in ("acked", "refused", "expired"):
            key += ":" + status
            if status == "acked" and p.get("compartment") is not None:
                message = t("ok.compartment_open", lang, n=p["compartment"], parcel=r["parcel"])
            elif status == "acked":
                message = t("ok.door_open", lang, parcel=r["parcel"])
            else:
                verdict, ok = "refused", False
                message = f'{_cmd_status(status, lang)}：{r["parcel"]}' if lang == "zh" else \
                    f'{_cmd_status(status, lang).capitalize()}: {r["parcel"]}'
    return {"key": key, "verdict": verdict, "ok": ok, "message": message, "text": str(r.get("text", ""))}


def _scan_ctx(app: HandheldApp, lang: str) -> dict[str, Any]:
    r = app.last_scan
    scan = None
    if r is not None:
        fe = r.get("form_error")
        scan = {"verdict": r.get("verdict", "refused"), "message": _msg(r, lang), "text": r.get("text", ""),
                "confirm": bool(r.get("confirm") and r.get("parcel")), "parcel": r.get("parcel"),
                "form_error": _msg(fe, lang) if isinstance(fe, dict) else ""}
    return {"modes": MODES, "mode": app.mode, "scan": scan}


def part_status(app: HandheldApp, lang: str) -> str:
    return _render("status.html", lang, _status_ctx(app, lang))


def part_scan(app: HandheldApp, lang: str) -> str:
    return _render("scan.html", lang, _scan_ctx(app, lang))


def part_parcels(app: HandheldApp, lang: str) -> str:
    v = app.flows.view()
    parcels = [{**p, "state_text": t("pstate." + p["state"], lang),
                "cmd_text": t("cmd.acked_at", lang, n=p["compartment"])
                if p["cmd_status"] == "acked" and p.get("compartment") is not None
                else _cmd_status(p["cmd_status"], lang) if p["cmd_status"] else ""}
               for p in v["parcels"]]
    retrieval = [{**r, "reason_text": t("rreason." + r["reason"], lang)
                  if TEXT.has("rreason." + str(r["reason"])) else r["reason"]} for r in v["retrieval"]]
    return _render("parcels.html", lang, {"parcels": parcels, "retrieval": retrieval,
                                          "intake": list(reversed(v["intake"]))})


def part_dispatch(app: HandheldApp, lang: str) -> str:
    """Outbound: the open bag and its items, bags taken, the village point and its
    collections, and the group orders with their shares (handheld/dispatch.py)."""
    return _render("dispatch.html", lang, app.dispatch.view(app.flows))


def _quality(q: dict[str, Any] | None, lang: str) -> dict[str, Any] | None:
    """A photo's quality verdict as the page shows it; ``None`` for nothing to show."""
    if not q:
        return None
    m = q.get("metrics") or {}
    return {"ok": bool(q.get("ok")),
            "sharpness": int(m["sharpness"]) if "sharpness" in m else None,
            "luma": int(m.get("mean_luma", 0)) if "sharpness" in m else None,
            "reasons": [_msg(x, lang) for x in q.get("messages") or []]}


def _site_name(site: dict[str, Any]) -> Any:
    return site.get("name") or site["id"]


def part_jobs(app: HandheldApp, lang: str, job: str = "") -> str:
    jobs = app.jobs.list()
    sel = next((j for j in jobs if j["id"] == job), None)
    ctx: dict[str, Any] = {"jobs": [{**j, "site_name": _site_name(j["site"])} for j in jobs],
                           "job": None, "last_photo": None}
    if sel is not None:
        j = sel
        site = j["site"]
        active = j["status"] == "active"
        ctx["job"] = {
            "id": j["id"], "status": j["status"], "kind": j["kind"], "site_name": _site_name(site),
            "coords": f'{_coord(site.get("lat_e7"))}, {_coord(site.get("lon_e7"))}',
            "directions": site.get("directions", ""), "campaign": j.get("campaign"),
            "steps": [{"name": s, "label": t("step." + s, lang), "done": s in j["done"],
                       "here": s == j["next"] and active, "photo": s.startswith("photo")}
                      for s in j["steps"]],
            "can_submit": active and j["next"] is None,
        }
        lp = app.jobs.last_photo
        if lp and lp.get("job") == j["id"]:
            ctx["last_photo"] = {"quality": _quality(lp.get("quality"), lang),
                                 "campaign": _msg(lp["campaign"], lang) if lp.get("campaign") else None}
    ctx.update(board_context(app.jobs, app.flows.view().get("received"), sel, lang))
    return _render("jobs.html", lang, ctx)


def part_camera(app: HandheldApp, lang: str) -> str:
    cam = app.camera
    configured = bool(app.cfg.camera)
    return _render("camera.html", lang, {
        "configured": configured, "error": (cam.error or None) if configured else None,
        "waiting": cam.quality is None, "q": _quality(cam.quality, lang) if configured else None})


def part_sync(app: HandheldApp, lang: str) -> str:
    st = app.status()
    ph = st["photos"]
    q = ph.get("queue") if isinstance(ph.get("queue"), dict) else {}
    g = st["gnss"]
    gnss = (t("gnss.none", lang) if g is None else t("gnss.ok", lang, acc=g.get("accuracy_m"))
            if g.get("ok") else t("gnss.wait", lang))
    geo = st.get("geolocation")
    gnss_why = [] if g is None or g.get("ok") else [_msg(m, lang) for m in g.get("messages") or []]
    gnss_src = t("gnss.source_" + g["source"], lang) if g and g.get("source") else None
    geo_error = t("geo." + geo["error"], lang) if geo and geo.get("error") else None
    return _render("sync.html", lang, {
        "online": bool(st["link"]["connected"]), "events": st["outbox"]["count"],
        "waiting": ph["local_waiting"] + int(q.get("waiting") or 0),
        "chunks": (t("sync.chunks", lang, done=q.get("chunks_done", 0), total=q["chunks_total"])
                   if q.get("chunks_total") else None),
        "error": _msg(q["error"], lang) if isinstance(q.get("error"), dict) else None,
        "uploader": ph["uploader"], "last": _ago(st["link"]["last_ack_at"], lang), "gnss": gnss,
        "gnss_ok": bool(g and g.get("ok")), "gnss_src": gnss_src, "gnss_why": gnss_why,
        "geo_error": geo_error})


# ---------------------------------------------------------------------- page

def render_page(app: HandheldApp, lang: str, nonce: str, token: str = "") -> str:
    """The page shell. ``token`` is the session token the script sends on every POST; it
    is in a ``<meta>`` tag, readable by this page's script and by nothing cross-origin."""
    return _render("page.html", lang, {
        **_status_ctx(app, lang), **_scan_ctx(app, lang), "device": app.cfg.device,
        "html_lang": "zh-CN" if lang == "zh" else "en", "other": "en" if lang == "zh" else "zh",
        "title": f'{t("title", lang)} · {app.cfg.device}', "screens": SCREENS, "nonce": nonce,
        "token": token, "wedge": json.dumps(app.wedge.page_settings()),
        "geo": "1" if app.cfg.geolocation else "0"})


# ---------------------------------------------------------------------- server

#: The whole request body must arrive within this (a 20 MiB photo over loopback takes
#: well under a second; a client that trickles bytes is holding a worker hostage).
BODY_TIMEOUT_S = 30.0
MAX_JSON = 64 * 1024           # every JSON request is a few hundred bytes
MAX_ACTIVE = 8                 # requests handled at once; more wait up to BUSY_WAIT_S, then 503
BUSY_WAIT_S = 5.0
WORKERS = 4                    # threads that run the app's blocking calls (SQLite, OpenCV)
TOKEN_HEADER = "X-Postedge-Token"
#: The only bodies that are not JSON: a photo file for ``/api/jobs/<id>/photo`` and a
#: browser camera's frame for ``/api/camscan``. None of
#: these is a CORS-safelisted type, so a cross-site page cannot send one without a
#: preflight, which this server never grants.
PHOTO_TYPES = frozenset({"application/octet-stream", "image/jpeg", "image/png", "image/webp", "image/bmp",
                         "image/tiff"})
_SERVER_NAME = "postedge-handheld"
#: Every answer's policy; the page adds nonces for its one inline style and script.
#: ``blob:`` pictures are the thumbnails of photos the page itself took or was given;
#: the manifest and the service worker (installable app) come from this server only.
CSP = csp("img-src 'self' blob:", "manifest-src 'self'", "worker-src 'self'")
#: The installable app's files (handheld/static/): the service worker and the icons.
STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {".png": "image/png", ".js": "text/javascript"}


def manifest(lang: str) -> dict[str, Any]:
    """The web app manifest in ``lang``: what the terminal's browser needs to install the
    page as an app that opens full screen, in the language the courier chose."""
    return {"name": t("title", lang), "short_name": t("title.short", lang), "lang": "zh-CN" if lang == "zh"
            else "en", "description": t("app.description", lang), "start_url": f"/?lang={lang}",
            "scope": "/", "display": "standalone", "orientation": "portrait",
            "background_color": "#ffffff", "theme_color": "#0b4f8a",
            "icons": [{"src": f"/static/icon-{n}.png", "sizes": f"{n}x{n}", "type": "image/png",
                       "purpose": "any maskable"} for n in (192, 512)]}


class _Denied(Exception):
    """A request refused by the guard before it reached the app: HTTP status + a Refused."""

    def __init__(self, status: int, refused: Refused) -> None:
        super().__init__(refused.code)
        self.status = status
        self.refused = refused


def _dumps(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, default=str)


def _parse_json(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        raise Refused("bad_request", detail="body is not JSON") from None
    if not isinstance(doc, dict):
        raise Refused("bad_request", detail="body must be an object")
    return doc


def _keyed(app: HandheldApp, res: dict[str, Any]) -> dict[str, Any]:
    """A scan's answer with the key its result has in the status part, so the page that
    shows the answer does not show (and sound) the same result again a second later."""
    r = result(app, "en")
    return {**res, "result_key": r["key"] if r else ""}


def handle_post(app: HandheldApp, parts: list[str], query: Mapping[str, str], mime: str,
                raw: bytes) -> dict[str, Any]:
    """One state-changing request, already past the guard; runs on a worker thread.

    ``mime`` is ``application/json`` except for a photo file sent as its bytes."""
    binary = mime in PHOTO_TYPES
    doc = {} if binary else _parse_json(raw)
    if parts == ["api", "scan"]:
        return _keyed(app, app.scan(str(doc.get("code", "")), doc.get("mode")))
    if parts == ["api", "camscan"]:
        # a frame from the browser's camera in camera-scan mode: decoded and voted on
        if not binary:
            raise Refused("bad_request", detail="a camera frame is sent as its image bytes")
        res = app.camera_frame(raw)
        if res["scan"] is not None:
            res["scan"] = _keyed(app, res["scan"])
        return res
    if parts == ["api", "wedge"]:
        # A keyboard-wedge burst: the same call as the serial engine's loop (same verdicts,
        # rules and duplicate windows), judged at the time the page saw it.
        code, at = app.wedge.unwrap(doc)
        return _keyed(app, app.scan(code, source="wedge", at=at))
    if parts == ["api", "position"]:
        # navigator.geolocation, through the same accuracy gate as NMEA (handheld/geolocation.py)
        if app.browser_pos is None:
            raise Refused("bad_position", detail="geolocation = false in the handheld's config")
        return app.browser_pos.post(doc)
    if parts == ["api", "mode"]:
        mode = doc.get("mode")
        if mode not in MODES:
            raise Refused("bad_request", detail=f"mode {mode!r}")
        app.mode = mode
        app.last_scan = None
        return {"ok": True, "mode": mode, "zh": t("mode." + mode, "zh"), "en": t("mode." + mode, "en")}
    if parts == ["api", "deliver"]:
        held = app.last_scan
        parcel = str(doc.get("code", ""))
        # the delivery's scan event names where the parcel was read (a wedge burst, the
        # camera), not the form that confirmed it
        source = str(held.get("source") or "manual") if held and held.get("parcel") == parcel else "manual"
        try:
            res = app.flows.hand_delivery(parcel, str(doc.get("method", "")), str(doc.get("value", "")),
                                          source=source)
        except Refused as e:
            # The form stays, with what was wrong said inside it ("还可以再试 4 次"), unless
            # there is nothing left to confirm.
            keep = held is not None and held.get("confirm") and e.code != "already_done"
            app.last_scan = {**held, "form_error": e.as_dict()} if keep and held is not None else None
            raise
        app.last_scan = None
        return res
    if len(parts) == 3 and parts[:2] == ["api", "dispatch"]:
        action = parts[2]
        if action == "pickup":
            return app.dispatch.bag_pickup()
        if action == "remove":
            return app.dispatch.bag_remove(str(doc.get("item", "")))
        if action == "point":
            return app.dispatch.set_point(str(doc.get("point", "")))
        if action == "handout":
            return app.dispatch.handout(str(doc.get("group", "")), doc.get("share"),
                                        str(doc.get("method", "")), str(doc.get("value", "")))
        # handover to the chosen village point (村邮站), confirmed by its agent
        if action == "handover-add":
            return app.dispatch.handover_add(app.flows, str(doc.get("code", "")))
        if action == "handover-group":
            return app.dispatch.handover_group(str(doc.get("group", "")))
        if action == "handover-remove":
            return app.dispatch.handover_remove(str(doc.get("item", "")))
        if action == "handover":
            return app.dispatch.handover(app.flows, str(doc.get("method", "")), str(doc.get("value", "")),
                                         str(doc.get("name", "")))
    if len(parts) == 4 and parts[:2] == ["api", "jobs"]:
        jid, action = parts[2], parts[3]
        if action == "pick":
            return app.jobs.pick(jid)
        if action == "step":
            return app.jobs.do_step(jid, str(doc.get("step", "")))
        if action == "submit":
            return app.jobs.submit(jid)
        if action == "photo":
            # JSON (normally ``{}``) or an empty body: the camera's latest frame
            return app.photo(jid, query.get("step", ""), (raw or None) if binary else None)
        # 政讯通 (handheld/jobs.py): a survey ("new": the courier's own), a condition report,
        # could not complete, an unplanned visit to a cached site (jid: the site's id)
        if action == "survey":
            return app.jobs.propose(str(doc.get("village", "")), str(doc.get("landmark", "")),
                                    str(doc.get("notes", "")), None if jid == "new" else jid)
        if action == "report":
            return app.jobs.report(jid, str(doc.get("condition", "")), str(doc.get("note", "")))
        if action == "cannot":
            return app.jobs.cannot(jid, str(doc.get("reason", "")), str(doc.get("note", "")))
        if action == "adhoc":
            return app.jobs.adhoc(jid)
    raise Refused("bad_request", detail="/".join(parts))


class WebUI:
    """The courier UI's server: binds at construction (a taken port fails the start,
    naming web.port), serves from its own thread (:class:`ThreadedServer`).

    Every request passes :meth:`_guard` first. Why each check:

    - ``Host`` must be on the allow-list (:func:`host_allowlist`): stops DNS rebinding,
      which otherwise makes a foreign page "same-origin" with this UI;
    - a state-changing request (any method but GET/HEAD; only POST is routed) must
      * not come from another site: ``Origin``, when present, must be this UI's own
        origin (``http://`` + the allowed Host), and ``Sec-Fetch-Site`` must not say
        ``cross-site``/``same-site``. Browsers always send ``Origin`` on a POST; a
        request without one is a non-browser client, and it still needs the token;
      * be ``application/json`` (or an image for the photo route): ``text/plain``,
        form encodings and a missing type are what a cross-site form or a no-cors
        fetch can send without a CORS preflight, and this server answers no preflight;
      * carry the per-session token (``X-Postedge-Token``; random, made when the UI
        starts, embedded in the page, compared with ``hmac.compare_digest``), which a
        foreign page cannot read;
      * send its body within ``BODY_TIMEOUT_S`` and within the size limit (64 KiB of
        JSON, 20 MiB of photo).
    - at most ``MAX_ACTIVE`` requests are handled at once (503 after ``BUSY_WAIT_S``).

    Each refusal answers with a bilingual message (``err.*`` in ``handheld/text.toml``),
    is counted in :attr:`refused` (shown in ``GET /api/state`` under ``web``), and is
    logged (the first of each kind, then every 100th, so a hostile page cannot flood the
    log). GET routes change nothing and are not token-checked: a foreign page cannot
    read their answers (no CORS headers), and ``Cross-Origin-Resource-Policy`` stops it
    embedding the camera picture."""

    def __init__(self, app: HandheldApp, host: str, port: int, names: Iterable[str] = (), *,
                 idle_timeout: float = IDLE_TIMEOUT_S, body_timeout: float = BODY_TIMEOUT_S,
                 max_active: int = MAX_ACTIVE, max_connections: int = MAX_CONNECTIONS) -> None:
        self.app = app
        self.token = secrets.token_urlsafe(32)
        self.refused: Counter[str] = Counter()
        self.body_timeout = body_timeout
        self.max_active = max_active
        self._sem: asyncio.Semaphore | None = None
        busy = f'{t("err.busy", "zh")}\n{t("err.busy", "en")}\n'.encode()
        try:
            self.server = ThreadedServer(self._make_app(), host, port, name="hh-web",
                                         idle_timeout=idle_timeout, max_connections=max_connections,
                                         busy_response=busy,
                                         on_refuse=lambda: self._count("busy", "too many connections"))
        except OSError as e:
            raise ConfigError.at("web.host/web.port", Problem("cannot_listen", host=host, port=port,
                                                                  why=e.strerror or e)) from e
        self.host = host
        self.allowed_hosts = host_allowlist(host, self.port, names)
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="hh-web-work")

    # ------------------------------------------------------------------ public API
    @property
    def port(self) -> int:
        return self.server.address[1]

    @property
    def url(self) -> str:
        return local_url(self.host, self.port)

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        return {"refused": dict(self.refused), "connections": self.server.connections}

    # ------------------------------------------------------------------ aiohttp app
    def _make_app(self) -> web.Application:
        a = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        a.router.add_get("/", self._page)
        a.router.add_get("/index.html", self._page)
        a.router.add_get("/part", self._part)
        a.router.add_get("/camera.jpg", self._camera)
        a.router.add_get("/api/state", self._state)
        a.router.add_get("/api/outbox", self._outbox)
        a.router.add_get("/manifest.webmanifest", self._manifest)
        a.router.add_get("/sw.js", self._sw)
        a.router.add_get("/static/{name}", self._static)
        for p in ("/api/scan", "/api/camscan", "/api/wedge", "/api/position", "/api/mode", "/api/deliver",
                  "/api/dispatch/{action}", "/api/jobs/{jid}/{action}"):
            a.router.add_post(p, self._post)
        a.on_startup.append(self._on_startup)
        # Security headers on every answer, errors included (the page sets its own CSP,
        # with the nonce of its inline style and script).
        a.on_response_prepare.append(security_headers(CSP, _SERVER_NAME, same_origin=True))
        return a

    async def _on_startup(self, _app: web.Application) -> None:
        self._sem = asyncio.Semaphore(self.max_active)

    def _count(self, code: str, detail: str) -> None:
        self.refused[code] += 1
        n = self.refused[code]
        if n == 1 or n % 100 == 0:
            log.warning("ui refused a request (%s, %d so far): %s", code, n, detail)

    def _deny(self, status: int, code: str, detail: str = "", **kw: Any) -> _Denied:
        self._count(code, detail or ", ".join(f"{k}={v}" for k, v in kw.items()))
        return _Denied(status, Refused(code, detail=detail, **kw))

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            self._check(request)
        except _Denied as d:
            return self._denied(d)
        assert self._sem is not None
        try:
            async with asyncio.timeout(BUSY_WAIT_S):
                await self._sem.acquire()
        except TimeoutError:
            return self._denied(self._deny(503, "busy", "too many requests at once"))
        try:
            resp: web.StreamResponse = await handler(request)
            return resp
        except _Denied as d:
            return self._denied(d)
        except web.HTTPException:
            raise
        except Exception as e:  # noqa: BLE001 - one bad request must not stop the UI
            log.error("ui error %s %s: %s", request.method, request.path, traceback.format_exc(limit=5))
            doc = {"ok": False, "code": "internal", **TEXT.both("err.internal", detail=repr(e)[:100])}
            return web.json_response(doc, status=500, dumps=_dumps)
        finally:
            self._sem.release()

    @staticmethod
    def _denied(d: _Denied) -> web.Response:
        resp = web.json_response(d.refused.as_dict(), status=d.status, dumps=_dumps)
        resp.force_close()  # the body may be unread: never parse it as the next request
        return resp

    def _check(self, request: web.Request) -> None:
        host = request.headers.get("Host")
        if not host_ok(host, self.allowed_hosts):
            raise self._deny(403, "bad_host", host=(host or "—")[:80])
        if request.method in ("GET", "HEAD"):
            return
        if request.method != "POST":
            raise self._deny(405, "bad_http_method", method=request.method[:16])
        origin = request.headers.get("Origin")
        site = request.headers.get("Sec-Fetch-Site", "")
        own = "http://" + str(host).strip().lower()
        if (origin is not None and origin.strip().lower() != own) or site in ("cross-site", "same-site"):
            raise self._deny(403, "bad_origin", origin=(origin or site)[:80])
        mime = _mime(request)
        photo = request.match_info.get("action") == "photo" or request.path == "/api/camscan"
        if mime != "application/json" and not (photo and mime in PHOTO_TYPES):
            raise self._deny(415, "bad_content_type", ctype=(mime or "—")[:60])
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode()):
            raise self._deny(403, "bad_token" if given else "no_token")

    async def _read_body(self, request: web.Request, mime: str) -> bytes:
        """The whole body, or _Denied: too large (413) or too slow (408)."""
        limit = MAX_BODY if mime in PHOTO_TYPES else MAX_JSON
        if request.content_length is not None and request.content_length > limit:
            raise self._deny(413, "too_large", limit=_size(limit))
        buf = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout):
                while chunk := await request.content.read(256 * 1024):
                    buf += chunk
                    if len(buf) > limit:
                        raise self._deny(413, "too_large", limit=_size(limit))
        except TimeoutError:
            raise self._deny(408, "slow_body", f"{len(buf)} bytes in {self.body_timeout:g} s") from None
        return bytes(buf)

    async def _work(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run the app's blocking code (SQLite, OpenCV, MQTT queueing) off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    def _lang(self, request: web.Request) -> str:
        lang = request.query.get("lang", self.app.cfg.lang)
        return lang if lang in LANGS else self.app.cfg.lang

    # ------------------------------------------------------------------ routes
    async def _page(self, request: web.Request) -> web.Response:
        nonce = new_nonce()
        body = await self._work(render_page, self.app, self._lang(request), nonce, self.token)
        resp = web.Response(text=body, content_type="text/html", charset="utf-8")
        resp.headers["Content-Security-Policy"] = page_csp(CSP, nonce)
        return resp

    async def _part(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        if name not in PARTS:
            return web.Response(status=404, text="no such part\n", content_type="text/plain", charset="utf-8")
        lang = self._lang(request)
        if name == "jobs":
            body = await self._work(part_jobs, self.app, lang, request.query.get("job", ""))
        else:
            fn = {"status": part_status, "scan": part_scan, "parcels": part_parcels,
                  "dispatch": part_dispatch, "camera": part_camera, "sync": part_sync}[name]
            body = await self._work(fn, self.app, lang)
        return web.Response(text=body, content_type="text/html", charset="utf-8")

    async def _camera(self, request: web.Request) -> web.Response:
        jpg = self.app.camera.preview
        if jpg is None:
            return web.Response(status=503, text="no camera picture\n", content_type="text/plain",
                                charset="utf-8")
        return web.Response(body=jpg, content_type="image/jpeg")

    async def _outbox(self, request: web.Request) -> web.Response:
        """What the offline indicator needs: the gateway link and the events waiting."""
        def doc() -> dict[str, Any]:
            return {"connected": bool(self.app.link.connected), "outbox": self.app.outbox.count()}

        return web.json_response(await self._work(doc), dumps=_dumps)

    async def _manifest(self, request: web.Request) -> web.Response:
        return web.Response(text=_dumps(manifest(self._lang(request))),
                            content_type="application/manifest+json", charset="utf-8")

    async def _sw(self, request: web.Request) -> web.Response:
        # At the root, so that its scope is the whole UI.
        return self._file("sw.js")

    async def _static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    @staticmethod
    def _file(name: str) -> web.Response:
        """A file of handheld/static/ by its bare name (no path, known types only)."""
        path = STATIC / name
        ctype = STATIC_TYPES.get(path.suffix)
        if "/" in name or "\\" in name or name.startswith(".") or ctype is None or not path.is_file():
            return web.Response(status=404, text="no such file\n", content_type="text/plain", charset="utf-8")
        return web.Response(body=path.read_bytes(), content_type=ctype)

    async def _state(self, request: web.Request) -> web.Response:
        def doc() -> dict[str, Any]:
            return {**self.app.status(), "jobs": self.app.jobs.list(), "parcels": self.app.flows.view(),
                    "web": self.stats()}

        return web.json_response(await self._work(doc), dumps=_dumps)

    async def _post(self, request: web.Request) -> web.Response:
        mi = request.match_info
        parts = (["api", "jobs", mi["jid"], mi["action"]] if "jid" in mi
                 else [p for p in request.path.split("/") if p])
        mime = _mime(request)
        raw = await self._read_body(request, mime)
        try:
            res = await self._work(handle_post, self.app, parts, dict(request.query), mime, raw)
            return web.json_response(res, dumps=_dumps)
        except Refused as e:
            return web.json_response(e.as_dict(), status=400 if e.code in ("bad_request", "no_job") else 200,
                                     dumps=_dumps)


def serve(app: HandheldApp) -> WebUI:
    """Start the courier's web UI for ``app`` on its configured ``[web]`` host and port:
    the :data:`handheld.app.UiStarter` that ``handheld/main.py`` gives the app."""
    ui = WebUI(app, app.cfg.web_host, app.cfg.web_port)
    ui.start()
    return ui


def _mime(request: web.Request) -> str:
    """The media type as sent, lower-case, without parameters; "" when there is no header
    (aiohttp's ``content_type`` would say application/octet-stream, which a no-cors
    fetch of an untyped Blob must not pass for)."""
    return request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"
