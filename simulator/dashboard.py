"""The live dashboard of a simulator run: a web page that shows the outlet as it runs.

The runner hands ``Dashboard`` a ``snapshot`` callable (see
``docs/simulator.md``, "Reports and dashboard") and goes on with its work;
the page polls ``/api/snapshot`` every ``POLL_MS`` and redraws lockers and
compartments, devices online, backlog with a sparkline, alarms (newest
first), the faults on a timeline, progress and the ledger's running counts.

Why it is built like this:

- aiohttp in a thread of its own, with the handheld UI's server class
  (``common.web_server.ThreadedServer``): idle connections are closed, open
  connections are capped, and a loopback-bound dashboard answers only to a
  loopback ``Host`` (DNS rebinding), instead of the standard library's
  ``ThreadingHTTPServer`` with no timeouts at all. The runner stays
  threaded; snapshots are taken on a worker thread, never on the loop. The
  server holds no state of the run beyond the backlog history for the
  sparkline (the snapshot has only the current backlog). Read-only: GET
  routes only, so there is nothing for a cross-site page to change.
- The snapshot is taken only when a page asks for it, so a run without a
  browser open pays nothing for its dashboard.
- All words are made in Python (``simulator/report/text.py``, shared with the
  reports) and sent in the JSON as a ``view``, rendered for the page's
  language; the page script only places text with ``textContent`` and draws,
  so device strings can never become markup, and a Content-Security-Policy
  with a per-response nonce stops any script that is not ours.
- A snapshot that cannot be taken (the runner raised, or a dict changed
  size while it was being serialised) is retried, then answered with a 503;
  the page keeps its last picture and says it cannot reach the simulator.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import re
import secrets
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from common.web_server import ThreadedServer, host_allowlist, host_ok
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
             "return_waiting": "attn", "inspect": "attn", "out_of_service": "off"}
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
    return {
        "lang": lang,
        "scenario": t("dash.scenario", lang, scenario=snap.get("scenario", "?")),
        "meta": " · ".join(str(x) for x in (snap.get("broker"), snap.get("time_mode")) if x),
        "clock": t("dash.clock", lang, t=fmt_clock(tv)),
        "progress": progress, "progress_text": f"{int(progress * 100)}%",
        "done": t("dash.done", lang) if progress >= 1 else "",
        "lockers": lockers, "no_lockers": t("dash.no_lockers", lang),
        "devices": devices,
        "backlog": {"count": int(count), "detail": t("dash.backlog_detail", lang,
                                                    size=size_text(_num(b.get("bytes"))),
                                                    age=fmt_dur(_num(b.get("oldest_age_s"))))},
        "spark": _spark(history),
        "alarms": alarms_v, "no_alarms": t("dash.no_alarms", lang),
        "faults": faults_v, "now": min(1.0, tv / span), "no_faults": t("no_faults", lang),
        "ledger": [{"hop": str(h), "label": hop_name(h, lang), "n": int(_num(led[h]))} for h in hops],
    }


def _spark(history: list[tuple[float, float]]) -> str:
    """Polyline points in a 200 x 40 box; the page only sets the attribute."""
    if len(history) < 2:
        return ""
    t0, t1 = history[0][0], history[-1][0]
    top = max(c for _, c in history) or 1.0
    dt = (t1 - t0) or 1.0
    return " ".join(f"{200 * (tv - t0) / dt:.1f},{38 - 36 * c / top:.1f}" for tv, c in history)


CSS = """
:root{--ok:#1b7f3b;--ok-bg:#e3f4e8;--warn:#8a5a00;--warn-bg:#fff3d6;--bad:#b3261e;--bad-bg:#fde7e5;
--held:#2f5fb3;--held-bg:#e6efff;--ink:#1a1a1a;--mute:#555;--line:#d0d0d0}
*{box-sizing:border-box}
body{margin:0;font:20px/1.45 system-ui,"Noto Sans CJK SC","WenQuanYi Micro Hei","Microsoft YaHei",
"PingFang SC",sans-serif;color:var(--ink);background:#f6f6f4}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.4em 1em;padding:.5em 1em;background:#0b4f8a;
color:#fff}
header h1{margin:0;font-size:1.45em}
header .scen{flex:1;font-size:1.1em}header .meta{opacity:.8;font-size:.85em}
header a{color:#fff;font-size:1.05em;border:2px solid #fff;border-radius:.4em;padding:.1em .6em;
text-decoration:none}
.stale{background:var(--bad);color:#fff;padding:.5em 1em;font-weight:bold}
.top{display:flex;align-items:center;gap:1em;padding:.6em 1em;background:#fff;
border-bottom:1px solid var(--line)}
.bar{flex:1;height:1.1em;background:#e4e4e4;border-radius:.55em;overflow:hidden}
.bar div{height:100%;width:0;background:#0b4f8a;transition:width .3s}
#prog-text{font-size:1.4em;font-weight:bold;min-width:3.5em;text-align:right}
#clock{font-size:1.2em;font-variant-numeric:tabular-nums}#done{color:var(--ok);font-weight:bold}
.cols{display:grid;grid-template-columns:minmax(0,2fr) minmax(18em,1fr);gap:1em;padding:0 1em 2em}
@media (max-width:900px){.cols{grid-template-columns:1fr}}
h2{font-size:1.25em;margin:1em 0 .4em;border-bottom:2px solid var(--line)}
.locker{background:#fff;border:1px solid var(--line);border-radius:.5em;padding:.3em .8em .8em;margin:.6em 0}
.locker.off{border:2px dashed var(--bad);opacity:.75}
.locker h3{margin:.3em 0;font-size:1.15em;display:flex;gap:.6em;align-items:baseline}
.locker h3 .counts{font-weight:normal;color:var(--mute);font-size:.85em}
.locker .note{color:var(--bad);font-weight:bold;margin:0}
.grid{list-style:none;margin:.4em 0 0;padding:0;display:grid;gap:.3em;
grid-template-columns:repeat(auto-fill,minmax(4.6em,1fr))}
.c{border:2px solid var(--line);border-radius:.35em;padding:.1em .3em;font-size:.8em;background:#fff;
overflow-wrap:anywhere;transition:background .3s}
.c b{font-size:1.35em}.c .size{color:var(--mute);margin-left:.3em}.c em{display:block;font-style:normal}
.st-free{background:var(--ok-bg);border-color:var(--ok)}
.st-held{background:var(--held-bg);border-color:var(--held);font-weight:bold}
.st-attn{background:var(--warn-bg);border-color:var(--warn);font-weight:bold}
.st-off,.st-unknown{background:#eee;border-color:#777}
.big{font-size:2.6em;font-weight:bold;line-height:1.1}.sub{color:var(--mute)}
#spark{width:100%;height:48px;background:#fff;border:1px solid var(--line);border-radius:.3em}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(6.5em,1fr));gap:.4em}
.tile{background:#fff;border:1px solid var(--line);border-radius:.4em;padding:.3em .6em}
.tile .num{display:block;font-size:1.6em;font-weight:bold}.tile .cap{color:var(--mute);font-size:.85em}
ul.devs,ol.alarms,ul.faults{list-style:none;margin:0;padding:0}
.dev{display:flex;gap:.5em;align-items:baseline;padding:.2em .5em;margin:.2em 0;background:#fff;
border-left:.4em solid var(--ok)}
.dev.off{border-left-color:var(--bad);background:var(--bad-bg)}.dev{flex-wrap:wrap}
.dev .name{font-family:ui-monospace,monospace;flex:1;min-width:0;overflow-wrap:anywhere}
.dev .kind,.dev .st{white-space:nowrap}aside{min-width:0}.alarm,.fault{overflow-wrap:anywhere}
.dev .st{font-weight:bold}.dev.on .st{color:var(--ok)}.dev.off .st{color:var(--bad)}
.alarm{padding:.3em .5em;margin:.25em 0;background:var(--bad-bg);border-left:.4em solid var(--bad)}
.alarm .meta,.fault .meta{color:var(--mute);font-size:.85em;margin-left:.4em}
#fault-svg{width:100%;height:44px;background:#fff;border:1px solid var(--line);border-radius:.3em}
.fault{padding:.25em .5em;margin:.25em 0;background:#fff;border-left:.4em solid #999}
.fault.active{background:var(--bad-bg);border-left-color:var(--bad);font-weight:bold}
.fault .badge{display:inline-block;border-radius:.3em;padding:0 .4em;margin-left:.4em;font-size:.85em;
background:#999;color:#fff}.fault.active .badge{background:var(--bad)}
.none{color:var(--mute)}
"""

SCRIPT = """
(function(){
var V=%s,lang=%s,every=%d,$=function(id){return document.getElementById(id);},
NS='http://www.w3.org/2000/svg';
function el(tag,cls,text){var e=document.createElement(tag);if(cls){e.className=cls;}
if(text!==undefined&&text!==null){e.textContent=String(text);}return e;}
function svg(tag,attrs){var e=document.createElementNS(NS,tag);
for(var k in attrs){e.setAttribute(k,String(attrs[k]));}return e;}
function fill(id,nodes){var b=$(id);b.replaceChildren.apply(b,nodes);}
function render(v){
$('scenario').textContent=v.scenario;$('meta').textContent=v.meta;$('clock').textContent=v.clock;
$('prog-fill').style.width=(v.progress*100).toFixed(1)+'%%';$('prog-text').textContent=v.progress_text;
$('done').textContent=v.done;$('done').hidden=!v.done;
fill('locker-list',v.lockers.length?v.lockers.map(function(lk){
var d=el('div','locker'+(lk.online?'':' off'));d.dataset.device=lk.device;
var h=el('h3',null,lk.head);h.appendChild(el('span','counts',lk.counts));d.appendChild(h);
if(lk.note){d.appendChild(el('p','note',lk.note));}
var g=el('ol','grid');lk.compartments.forEach(function(c){
var li=el('li','c st-'+c.css);li.dataset.id=c.id;li.dataset.state=c.state_attr;li.title=c.label;
li.appendChild(el('b',null,c.id));if(c.size){li.appendChild(el('span','size',c.size));}
li.appendChild(el('em',null,c.label));g.appendChild(li);});
d.appendChild(g);return d;}):[el('p','none',v.no_lockers)]);
fill('device-list',v.devices.map(function(d){var li=el('li','dev '+(d.online?'on':'off'));
li.dataset.device=d.device;li.appendChild(el('span','name',d.device));li.appendChild(el('span','kind',d.kind));
li.appendChild(el('span','st',(d.online?'\\u25cf ':'\\u2715 ')+d.status));return li;}));
$('backlog-count').textContent=v.backlog.count;$('backlog-detail').textContent=v.backlog.detail;
fill('spark',v.spark?[svg('polyline',{points:v.spark,fill:'none',stroke:'#0b4f8a','stroke-width':2})]:[]);
fill('ledger-tiles',v.ledger.map(function(h){var d=el('div','tile');d.dataset.hop=h.hop;
d.appendChild(el('span','num',h.n));d.appendChild(el('span','cap',h.label));return d;}));
fill('alarm-list',v.alarms.length?v.alarms.map(function(a){var li=el('li','alarm',a.text);
li.appendChild(el('span','meta',a.device+' \\u00b7 '+a.clock));return li;}):[el('li','none',v.no_alarms)]);
var fs=[svg('rect',{x:0,y:0,width:1000,height:40,fill:'#fafafa'})];
v.faults.forEach(function(f){fs.push(svg('rect',{x:(f.x0*1000).toFixed(1),y:6,
width:Math.max(3,(f.x1-f.x0)*1000).toFixed(1),height:28,fill:f.active?'#c62828':'#9e9e9e',
'fill-opacity':f.active?0.85:0.5,'class':'fw'+(f.active?' active':'')}));});
fs.push(svg('line',{x1:(v.now*1000).toFixed(1),x2:(v.now*1000).toFixed(1),y1:0,y2:40,stroke:'#0b4f8a',
'stroke-width':3}));fill('fault-svg',fs);
fill('fault-list',v.faults.length?v.faults.map(function(f){var li=el('li','fault '+f.state,f.label);
li.appendChild(el('span','badge',f.status));
li.appendChild(el('span','meta',f.when+(f.detail?' \\u00b7 '+f.detail:'')));
return li;}):[el('li','none',v.no_faults)]);
}
function tick(){fetch('/api/snapshot?lang='+lang,{cache:'no-store'}).then(function(r){
if(!r.ok){throw new Error(r.status);}return r.json();}).then(function(s){
render(s.view);$('stale').hidden=true;
}).catch(function(){$('stale').hidden=false;}).then(function(){setTimeout(tick,every);});}
render(V);setTimeout(tick,every);
})();
"""


def render_page(view: dict[str, Any], lang: str, nonce: str) -> str:
    """The page shell; the script fills it from ``view`` at once, then polls."""
    other = "en" if lang == "zh" else "zh"

    def tx(key: str) -> str:
        return html.escape(t(key, lang))

    # "<" as \u003c: device text inside the script can then never close it
    # or open a comment that changes how the HTML parser reads it
    data = json.dumps(view, ensure_ascii=False).replace("<", "\\u003c")
    script = SCRIPT % (data, json.dumps(lang), POLL_MS)
    return (
        "<!doctype html>"
        f'<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{tx('dash.title')}</title><style nonce=\"{nonce}\">{CSS}</style></head><body>"
        f'<header><h1>{tx("dash.title")}</h1><span class="scen" id="scenario"></span>'
        f'<span class="meta" id="meta"></span>'
        f'<a id="lang-switch" href="/?lang={other}" hreflang="{other}" title="{tx("switch_hint")}">'
        f'{tx("switch")}</a></header>'
        f'<div id="stale" class="stale" role="alert" hidden>{tx("dash.stale")}</div>'
        '<div class="top"><span id="clock"></span><div class="bar"><div id="prog-fill"></div></div>'
        '<span id="prog-text"></span><span id="done" hidden></span></div>'
        '<div class="cols"><div>'
        f'<section id="lockers"><h2>{tx("dash.lockers")}</h2><div id="locker-list"></div></section>'
        f'<section id="faults"><h2>{tx("dash.faults")}</h2>'
        '<svg id="fault-svg" viewBox="0 0 1000 40" preserveAspectRatio="none"></svg>'
        '<ul class="faults" id="fault-list"></ul></section></div><aside>'
        f'<section id="backlog"><h2>{tx("dash.backlog")}</h2><div class="big" id="backlog-count"></div>'
        '<div class="sub" id="backlog-detail"></div>'
        '<svg id="spark" viewBox="0 0 200 40" preserveAspectRatio="none"></svg></section>'
        f'<section id="alarms"><h2>{tx("dash.alarms")}</h2><ol class="alarms" id="alarm-list"></ol></section>'
        f'<section id="ledger"><h2>{tx("dash.ledger")}</h2>'
        '<div class="tiles" id="ledger-tiles"></div></section>'
        f'<section id="devices"><h2>{tx("dash.devices")}</h2>'
        '<ul class="devs" id="device-list"></ul></section>'
        "</aside></div>"
        f'<script nonce="{nonce}">{script}</script></body></html>'
    )


class SnapshotUnavailable(RuntimeError):
    pass


_CSP = ("default-src 'none'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'")


async def _security_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """On every answer, 404s and 503s included (the page sets its own CSP, with nonces)."""
    h = resp.headers
    h.setdefault("Content-Security-Policy", _CSP)
    h["X-Frame-Options"] = "DENY"
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["Cache-Control"] = "no-store"
    h["Server"] = "postedge-sim-dashboard"


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

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("dashboard not started")
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def start(self) -> Dashboard:
        """Bind now (a taken port fails here, in the runner's thread), serve in a thread."""
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/index.html", self._page)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/healthz", self._healthz)
        app.middlewares.append(self._guard)
        app.on_response_prepare.append(_security_headers)
        server = ThreadedServer(app, self.host, self.port, name="postedge-sim-dashboard")
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
        nonce = secrets.token_urlsafe(16)

        def render() -> str:
            snap = self.take()
            return render_page(build_view(snap, lang, self.history()), lang, nonce)

        try:
            body = await asyncio.get_running_loop().run_in_executor(None, render)
        except SnapshotUnavailable as e:
            return self._unavailable(e)
        resp = web.Response(text=body, content_type="text/html", charset="utf-8")
        resp.headers["Content-Security-Policy"] = (f"{_CSP}; style-src 'nonce-{nonce}'; "
                                                   f"script-src 'nonce-{nonce}'")
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

    def take(self) -> dict[str, Any]:
        """One snapshot, as a private JSON-clean copy, and a backlog point
        for the sparkline. The runner's dicts may change while we read
        them: a copy that fails is retried a few times."""
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
