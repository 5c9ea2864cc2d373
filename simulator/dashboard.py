"""The live dashboard of a simulator run: a web page that shows the outlet as it runs.

The runner hands ``Dashboard`` a ``snapshot`` callable (see
``docs/simulator.md``, "Reports and dashboard") and goes on with its work;
the page polls ``/api/snapshot`` every ``POLL_MS`` and redraws lockers and
compartments, devices online, backlog with a sparkline, alarms (newest
first), the faults on a timeline, progress and the ledger's running counts.

Why it is built like this:

- aiohttp in a thread of its own, with the server class the handheld's UI
  uses too (``common.web_server.ThreadedServer``, which also sends both
  their security headers): idle connections are closed, open connections
  are capped, and a loopback-bound dashboard answers only to a loopback
  ``Host`` (DNS rebinding), instead of the standard library's
  ``ThreadingHTTPServer`` with no timeouts at all. The runner stays
  threaded; snapshots are taken on a worker thread, never on the loop. The
  server holds no state of the run beyond the backlog history for the
  sparkline (the snapshot has only the current backlog). Read-only: GET
  routes only, so there is nothing for a cross-site page to change.
- The snapshot is taken only when a page asks for it, so a run without a
  browser open pays nothing for its dashboard.
- The page shell is a Jinja2 template (``simulator/dashboard_templates/``,
  autoescaped). All words are made in Python (``simulator/report/text.py``,
  shared with the reports) and sent in the JSON as a ``view``, rendered for
  the page's language; the page script only places text with
  ``textContent`` and draws, so device strings can never become markup, and
  a Content-Security-Policy with a per-response nonce stops any script that
  is not ours.
- A snapshot that cannot be taken (the runner raised, or a dict changed
  size while it was being serialised) is retried, then answered with a 503;
  the page keeps its last picture and says it cannot reach the simulator.
- When the run ends the runner freezes the last picture (:meth:`Dashboard.
  finish`, taken before the outlet is torn down) with the verdict and the
  reports' paths, and ``sim run`` keeps serving it until the tester stops
  it: a page open at the end shows how the run ended, not an error.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from common.pages import page_env
from common.web_server import (
    ThreadedServer,
    csp,
    host_allowlist,
    host_ok,
    local_url,
    new_nonce,
    page_csp,
    security_headers,
)
from simulator.report import HOP_ORDER, fmt_clock, fmt_dur, json_clean, size_text
from simulator.report.text import (
    LANGS,
    alarm_text,
    check_lang,
    fault_name,
    hop_name,
    kind_name,
    state_name,
    t,
)

POLL_MS = 500
HISTORY = 300  # backlog points kept for the sparkline
ALARMS_SHOWN = 30
STATE_CSS = {"free": "free", "occupied": "held", "reserved": "held", "expired": "attn", "overdue": "attn",
             "return_waiting": "attn", "send_waiting": "attn", "inspect": "attn", "out_of_service": "off"}
_SAFE = re.compile(r"[a-z0-9_]{1,32}")


def _num(v: Any, default: float = 0.0) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else default


def _list(v: Any) -> list[Any]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def build_view(snap: dict[str, Any], lang: str, history: list[tuple[float, float]]) -> dict[str, Any]:
    """Everything the page shows, as text in ``lang`` and numbers in [0, 1].

    Tolerant of a snapshot with parts missing or of the wrong shape: a
    runner in the middle of a fault must not blank the page."""
    tv = _num(snap.get("t_virtual"))
    progress = min(1.0, max(0.0, _num(snap.get("progress"))))
    lockers = []
    for lk in _list(snap.get("lockers")):
        comps = []
        for c in _list(lk.get("compartments")):
            st = str(c.get("state", "?"))
            comps.append({"id": str(c.get("id", "?")), "size": str(c.get("size") or ""), "state": st,
                          "css": STATE_CSS.get(st, "unknown"),
                          "state_attr": st if _SAFE.fullmatch(st) else "unknown",
                          "label": state_name(st, lang)})
        free = sum(1 for c in comps if c["state"] == "free")
        online = bool(lk.get("online", True))
        lockers.append({"device": str(lk.get("device", "?")), "online": online,
                        "head": t("dash.locker_head", lang, device=lk.get("device", "?")),
                        "counts": t("dash.locker_counts", lang, free=free, total=len(comps)),
                        "note": "" if online else t("dash.locker_offline", lang),
                        "compartments": comps})
    devices = []
    for d in _list(snap.get("devices")):
        on = bool(d.get("online"))
        devices.append({"device": str(d.get("device", "?")), "online": on,
                        "kind": kind_name(d.get("kind"), lang),
                        "status": t("dash.online" if on else "dash.offline", lang)})
    b = snap.get("backlog") if isinstance(snap.get("backlog"), dict) else {}
    alarms = sorted(_list(snap.get("alarms")), key=lambda a: _num(a.get("t")), reverse=True)
    alarms_v = [{"clock": fmt_clock(_num(a.get("t"))), "device": str(a.get("device", "?")),
                 "text": alarm_text(a, lang)} for a in alarms[:ALARMS_SHOWN]]
    faults = _list(snap.get("faults"))
    ends = [tv, 1.0] + [_num(f.get("until"), _num(f.get("t"))) for f in faults] + \
        [_num(f.get("t")) for f in faults]
    span = max([tv / progress if progress > 0.02 else 0.0] + ends)
    faults_v = []
    for f in sorted(faults, key=lambda f: _num(f.get("t"))):
        t0 = _num(f.get("t"))
        until = f.get("until")
        t1 = _num(until, t0) if until is not None else None
        active = bool(f.get("active")) if "active" in f else (t0 <= tv and (t1 is None or tv < t1))
        state = "active" if active else ("pending" if t0 > tv else "over")
        when = (t("fault.span", lang, a=fmt_clock(t0), b=fmt_clock(t1)) if t1 is not None and t1 > t0
                else t("fault.at", lang, a=fmt_clock(t0)))
        faults_v.append({"label": fault_name(f.get("kind"), lang), "when": when,
                         "detail": str(f.get("detail") or ""), "active": active, "state": state,
                         "status": t(f"fault.{state}", lang), "x0": t0 / span,
                         "x1": (t1 if t1 is not None else tv if active else t0) / span})
    led = snap.get("ledger") if isinstance(snap.get("ledger"), dict) else {}
    hops = sorted(led, key=lambda h: (HOP_ORDER.index(h) if h in HOP_ORDER else 99, str(h)))
    count = _num(b.get("count"))
    verdict = snap.get("verdict") if isinstance(snap.get("verdict"), dict) else None
    reports = _plain(verdict.get("reports")) if verdict else []
    return {
        "lang": lang,
        "scenario": t("dash.scenario", lang, scenario=snap.get("scenario", "?")),
        "meta": " · ".join(str(x) for x in (snap.get("broker"), snap.get("time_mode")) if x),
        "clock": t("dash.clock", lang, t=fmt_clock(tv)),
        "progress": progress, "progress_text": f"{int(progress * 100)}%",
        "done": t("dash.done", lang) if progress >= 1 else "",
        "verdict": None if verdict is None else {
            "ok": bool(verdict.get("ok")),
            "text": t("verdict.pass" if verdict.get("ok") else "verdict.fail", lang),
            "reports": t("dash.reports", lang, paths=", ".join(reports)) if reports else "",
            "stop": t("dash.stop_hint", lang)},
        "lockers": lockers, "no_lockers": t("dash.no_lockers", lang),
        "devices": devices,
        "backlog": {"count": int(count), "detail": t("dash.backlog_detail", lang,
                                                    size=size_text(_num(b.get("bytes"))),
                                                    age=fmt_dur(_num(b.get("oldest_age_s"))))},
        "spark": _spark(history),
        "alarms": alarms_v, "no_alarms": t("dash.no_alarms", lang),
        "faults": faults_v, "now": min(1.0, tv / span), "no_faults": t("no_faults", lang),
        "ticks": _ticks(span),
        "ledger": [{"hop": str(h), "label": hop_name(h, lang), "n": int(_num(led[h]))} for h in hops],
    }


def _plain(v: Any) -> list[str]:
    return [str(x) for x in v if isinstance(x, str)] if isinstance(v, list) else []


TICK_STEPS_H = (1, 2, 3, 6, 12, 24, 48)


def _ticks(span_s: float) -> list[dict[str, Any]]:
    """Hour marks under the fault timeline: the smallest step that gives at
    most 8 steps, each mark at ``x`` in [0, 1] with its label in the clock's
    H:MM without seconds (``6:00``, ``30:00`` on the second day)."""
    hours = span_s / 3600.0
    step = next((h for h in TICK_STEPS_H if hours / h <= 8), max(1, math.ceil(hours / 8 / 24)) * 24)
    out = []
    k = 0
    while k * step * 3600.0 <= span_s + 1e-6:
        t_s = k * step * 3600.0
        out.append({"x": t_s / span_s if span_s > 0 else 0.0, "label": fmt_clock(t_s)[:-3]})
        k += 1
    return out


def _spark(history: list[tuple[float, float]]) -> str:
    """Polyline points in a 200 x 40 box; the page only sets the attribute."""
    if len(history) < 2:
        return ""
    t0, t1 = history[0][0], history[-1][0]
    top = max(c for _, c in history) or 1.0
    dt = (t1 - t0) or 1.0
    return " ".join(f"{200 * (tv - t0) / dt:.1f},{38 - 36 * c / top:.1f}" for tv, c in history)


#: The page: ``dashboard_templates/`` beside this module (Jinja2, autoescaped).
#: ``page.html`` is the shell with its inline style (``page.css``) and script
#: (``page.js``), which carries the first view as JSON and redraws from it.
ENV = page_env(Path(__file__).with_name("dashboard_templates"), t=t)


def render_page(view: dict[str, Any], lang: str, nonce: str) -> str:
    """The page shell; the script fills it from ``view`` at once, then polls.

    The view goes into the script through ``tojson``, which writes ``<``, ``>``, ``&``
    and ``'`` as ``\\u`` escapes: device text inside the script can then never close
    it or open a comment that changes how the HTML parser reads it."""
    return ENV.get_template("page.html").render(
        view=view, lang=lang, nonce=nonce, poll_ms=POLL_MS, html_lang="zh-CN" if lang == "zh" else "en",
        other="en" if lang == "zh" else "zh")


class SnapshotUnavailable(RuntimeError):
    pass


_CSP = csp()
_SERVER_NAME = "postedge-sim-dashboard"


def _text(code: int, body: str) -> web.Response:
    return web.Response(status=code, text=body, content_type="text/plain", charset="utf-8")


def _dumps(v: Any) -> str:
    try:
        return json.dumps(v, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(json_clean(v), ensure_ascii=False)


class Dashboard:
    """Serve the live page for one run: ``start()``, hand ``url`` to the
    tester, ``stop()`` at the end (or use it as a context manager).

    ``port=0`` takes a free port; ``host`` defaults to loopback, because a
    dashboard is for the person at the machine, and the run's data is not
    for the whole LAN unless asked (``host="0.0.0.0"``)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], port: int = 0, lang: str = "zh",
                 host: str = "127.0.0.1") -> None:
        self.snapshot = snapshot
        self.port = port
        self.lang = check_lang(lang)
        self.host = host
        self._server: ThreadedServer | None = None
        self._allowed: frozenset[str] | None = None
        self._lock = threading.Lock()
        self._history: list[tuple[float, float]] = []
        self._final: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("dashboard not started")
        return local_url(self.host, self.port)

    def start(self) -> Dashboard:
        """Bind now (a taken port fails here, in the runner's thread), serve in a thread."""
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/index.html", self._page)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/healthz", self._healthz)
        app.middlewares.append(self._guard)
        # on every answer, 404s and 503s included (the page sets its own CSP, with nonces)
        app.on_response_prepare.append(security_headers(_CSP, _SERVER_NAME))
        server = ThreadedServer(app, self.host, self.port, name=_SERVER_NAME)
        self.port = server.address[1]
        # Bound to a wildcard the tester reaches it by whatever LAN name or address they
        # like, so only a loopback or named bind checks Host (DNS rebinding).
        wildcard = self.host in ("0.0.0.0", "::", "")
        self._allowed = None if wildcard else host_allowlist(self.host, self.port)
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        self._server = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self._allowed is not None and not host_ok(request.headers.get("Host"), self._allowed):
            return _text(403, "未知的 Host（防止 DNS 重绑定）/ unknown Host header (DNS rebinding guard)\n")
        resp: web.StreamResponse = await handler(request)
        return resp

    def _lang(self, request: web.Request) -> str:
        lang = request.query.get("lang", self.lang)
        return lang if lang in LANGS else self.lang

    async def _page(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        nonce = new_nonce()

        def render() -> str:
            snap = self.take()
            return render_page(build_view(snap, lang, self.history()), lang, nonce)

        try:
            body = await asyncio.get_running_loop().run_in_executor(None, render)
        except SnapshotUnavailable as e:
            return self._unavailable(e)
        resp = web.Response(text=body, content_type="text/html", charset="utf-8")
        resp.headers["Content-Security-Policy"] = page_csp(_CSP, nonce)
        return resp

    async def _snapshot(self, request: web.Request) -> web.Response:
        lang = self._lang(request)

        def answer() -> str:
            snap = self.take()
            out = dict(snap)
            out["view"] = build_view(snap, lang, self.history())
            return _dumps(out)

        try:
            body = await asyncio.get_running_loop().run_in_executor(None, answer)
        except SnapshotUnavailable as e:
            return self._unavailable(e)
        return web.Response(text=body, content_type="application/json", charset="utf-8")

    async def _healthz(self, request: web.Request) -> web.Response:
        return _text(200, "ok\n")

    @staticmethod
    def _unavailable(e: SnapshotUnavailable) -> web.Response:
        return web.Response(status=503, text=json.dumps({"error": "snapshot_unavailable", "detail": str(e)}),
                            content_type="application/json", charset="utf-8")

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def freeze(self) -> None:
        """Keep the picture as it is now: the outlet is about to be torn down."""
        snap = self.take()
        snap["progress"] = 1.0
        with self._lock:
            self._final = snap

    def finish(self, ok: bool, reports: list[str]) -> None:
        """The run's verdict and the reports written, shown on the frozen picture."""
        with self._lock:
            if self._final is None:
                raise RuntimeError("freeze() the last picture first")
            self._final = {**self._final, "verdict": {"ok": ok, "reports": list(reports)}}

    def take(self) -> dict[str, Any]:
        """One snapshot, as a private JSON-clean copy, and a backlog point
        for the sparkline. The runner's dicts may change while we read
        them: a copy that fails is retried a few times. After
        :meth:`freeze`, the frozen picture."""
        with self._lock:
            if self._final is not None:
                return json.loads(_dumps(self._final))
        err: BaseException | None = None
        for _ in range(3):
            try:
                snap = json.loads(_dumps(self.snapshot()))
                break
            except Exception as e:  # the runner's problem, shown as a 503, never a dead dashboard
                err = e
        else:
            raise SnapshotUnavailable(repr(err))
        if not isinstance(snap, dict):
            raise SnapshotUnavailable(f"snapshot is {type(snap).__name__}, not a dict")
        tv = _num(snap.get("t_virtual"))
        b = snap.get("backlog") if isinstance(snap.get("backlog"), dict) else {}
        with self._lock:
            h = self._history
            if h and tv < h[-1][0]:
                h.clear()  # time went back: a new run behind the same dashboard
            if h and tv == h[-1][0]:
                h[-1] = (tv, _num(b.get("count")))
            else:
                h.append((tv, _num(b.get("count"))))
            del h[:-HISTORY]
        return snap

    def history(self) -> list[tuple[float, float]]:
        with self._lock:
            return list(self._history)
