"""The courier's touch UI: a local web page for the handheld's own browser, plus its JSON API.

Same house style as the clerk's status page (``gateway/web.py``): the standard
library's ``ThreadingHTTPServer``, HTML rendered on the server with every device or
courier string escaped, CSS and script inline under a per-response CSP nonce, and
nothing fetched from anywhere else (the handheld is often offline). Differences that
come from being held in a hand outdoors:

- every control is at least 48 px high and wide (``--tap``), text is large, and every
  colour also carries a word or symbol (a green/red screen in the sun is hard to read);
- the page is one shell with five screens (scan, parcels, jobs, camera, sync); the
  live parts of the visible screen are fetched from ``/part`` every second and swapped
  in only when they changed, so a half-typed code or an open file chooser survives;
- Simplified Chinese by default, English one tap away (``?lang=en``).

Routes: ``GET /`` page · ``GET /part?name=status|scan|parcels|jobs|camera|sync&job=`` ·
``GET /camera.jpg`` latest preview frame · ``GET /api/state`` ·
``POST /api/scan`` ``{"code", "mode"}`` · ``POST /api/deliver`` ``{"code", "method", "value"}`` ·
``POST /api/jobs/<id>/pick|step|submit`` · ``POST /api/jobs/<id>/photo?step=`` with the image
bytes as the body, or an empty body for the camera's latest frame.
"""

from __future__ import annotations

import html
import json
import logging
import secrets
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from handheld.ui_text import LANGS, Refused, both, t

if TYPE_CHECKING:
    from handheld.app import HandheldApp

log = logging.getLogger(__name__)
MAX_BODY = 20 * 1024 * 1024  # a full-resolution phone photo
PARTS = ("status", "scan", "parcels", "jobs", "camera", "sync")
SCREENS = ("scan", "parcels", "jobs", "camera", "sync")


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _coord(e7: Any) -> str:
    return f"{e7 / 1e7:.6f}" if isinstance(e7, int) else "—"


def _ago(at: float | None, lang: str) -> str:
    if at is None:
        return t("sync.never", lang)
    return t("sync.ago", lang, n=int(max(0, time.time() - at)))


def _msg(d: dict[str, Any] | None, lang: str) -> str:
    if not d:
        return ""
    return str(d.get(lang) or d.get("en") or "")


# ---------------------------------------------------------------------- parts

def part_status(app: HandheldApp, lang: str) -> str:
    st = app.status()
    on = st["link"]["connected"]
    n = st["outbox"]["count"]
    return (f'<span class="pill {"on" if on else "off"}" id="link-pill" data-connected="{int(on)}">'
            f'{esc(t("sync.online" if on else "sync.offline", lang))}</span>'
            f'<span class="pill" id="events-pill">{esc(t("sync.events", lang))}: <b>{n}</b></span>')


def part_scan(app: HandheldApp, lang: str) -> str:
    r = app.last_scan
    modes = "".join(
        f'<button type="button" class="btn mode{" sel" if m == app.mode else ""}" data-action="mode" '
        f'data-mode="{m}" aria-pressed="{str(m == app.mode).lower()}">{esc(t("mode." + m, lang))}</button>'
        for m in ("check", "intake", "deposit", "deliver", "collect"))
    out = [f'<div class="modes" role="group" aria-label="{esc(t("scan.mode", lang))}">{modes}</div>']
    if r is None:
        out.append(f'<div id="feedback" class="fb v-none" data-verdict="none">'
                   f'{esc(t("scan.none", lang))}</div>')
    else:
        v = r.get("verdict", "refused")
        out.append(f'<div id="feedback" class="fb v-{esc(v)}" data-verdict="{esc(v)}" role="status">'
                   f'<b>{esc(_msg(r, lang))}</b><span class="mono">{esc(r.get("text", ""))}</span></div>')
        if r.get("confirm") and r.get("parcel"):
            out.append(
                f'<form id="confirm" data-parcel="{esc(r["parcel"])}"><h3>{esc(t("parcels.confirm", lang))}'
                f' <span class="mono">{esc(r["parcel"])}</span></h3>'
                f'<label>{esc(t("parcels.code", lang))}<input name="code" inputmode="numeric" '
                f'autocomplete="off"></label>'
                f'<label>{esc(t("parcels.name", lang))}<input name="name" autocomplete="off"></label>'
                f'<button type="submit" class="btn primary">{esc(t("parcels.confirm", lang))}</button>'
                '</form>')
    return "".join(out)


def part_parcels(app: HandheldApp, lang: str) -> str:
    v = app.flows.view()
    out = []
    if not v["parcels"] and not v["retrieval"]:
        out.append(f'<p class="none">{esc(t("parcels.none", lang))}</p>')
    if v["parcels"]:
        out.append(f'<h3>{esc(t("parcels.manifest", lang, n=len(v["parcels"])))}</h3><ul class="list">')
        for p in v["parcels"]:
            cmd = f' · {esc(t("cmd." + p["cmd_status"], lang))}' if p["cmd_status"] else ""
            out.append(f'<li class="row p-{esc(p["state"])}" data-parcel="{esc(p["parcel"])}">'
                       f'<span class="mono">{esc(p["parcel"])}</span> <span>{esc(p["to"])}</span> '
                       f'<em>{esc(t("pstate." + p["state"], lang))}{cmd}</em></li>')
        out.append("</ul>")
    if v["retrieval"]:
        out.append(f'<h3>{esc(t("parcels.retrieval", lang, n=len(v["retrieval"])))}</h3><ul class="list">')
        for r in v["retrieval"]:
            out.append(f'<li class="row" data-parcel="{esc(r["parcel"])}"><span class="mono">'
                       f'{esc(r["parcel"])}</span> {esc(r["locker"])} · {esc(r["reason"])} '
                       f'<em>{esc(t("pstate.collected", lang) if r["state"] == "collected" else "")}'
                       '</em></li>')
        out.append("</ul>")
    if v["intake"]:
        out.append(f'<h3>{esc(t("mode.intake", lang))}</h3><ul class="list">')
        for i in reversed(v["intake"]):
            out.append(f'<li class="row"><span class="mono">{esc(i["parcel"])}</span></li>')
        out.append("</ul>")
    return "".join(out)


def _quality(q: dict[str, Any] | None, lang: str) -> str:
    if not q:
        return ""
    ok = bool(q.get("ok"))
    m = q.get("metrics") or {}
    reasons = "".join(f"<li>{esc(_msg(x, lang))}</li>" for x in q.get("messages") or [])
    detail = ""
    if "sharpness" in m:
        detail = (f'<span>{esc(t("quality.sharpness", lang))} {int(m["sharpness"])}</span> '
                  f'<span>{esc(t("quality.exposure", lang))} {int(m.get("mean_luma", 0))}</span>')
    return (f'<div class="quality {"q-ok" if ok else "q-bad"}" data-ok="{int(ok)}">'
            f'<b>{esc(t("quality.ok" if ok else "quality.bad", lang))}</b> {detail}'
            f'{"<ul>" + reasons + "</ul>" if reasons else ""}</div>')


def part_jobs(app: HandheldApp, lang: str, job: str = "") -> str:
    jobs = app.jobs.list()
    if not jobs:
        return f'<p class="none" id="no-jobs">{esc(t("jobs.none", lang))}</p>'
    sel = next((j for j in jobs if j["id"] == job), None)
    if sel is None:
        out = ['<ul class="list jobs">']
        for j in jobs:
            site = j["site"]
            out.append(f'<li class="row job j-{esc(j["status"])}" data-job="{esc(j["id"])}">'
                       f'<button type="button" class="btn wide" data-action="open-job" '
                       f'data-job="{esc(j["id"])}">'
                       f'<b>{esc(site.get("name") or site["id"])}</b> · {esc(t("kind." + j["kind"], lang))}'
                       f' · <em class="jstate">{esc(t("jstate." + j["status"], lang))}</em></button></li>')
        out.append("</ul>")
        return "".join(out)
    j = sel
    site = j["site"]
    out = [f'<div class="job-detail" data-job="{esc(j["id"])}" data-status="{esc(j["status"])}">',
           f'<button type="button" class="btn" data-action="close-job">← {esc(t("jobs.back", lang))}'
           '</button>',
           f'<h3>{esc(site.get("name") or site["id"])} · {esc(t("kind." + j["kind"], lang))}</h3>',
           f'<p class="jstate">{esc(t("jstate." + j["status"], lang))}</p>',
           f'<dl><dt>{esc(t("jobs.coords", lang))}</dt><dd class="mono" id="coords">'
           f'{_coord(site.get("lat_e7"))}, {_coord(site.get("lon_e7"))}</dd>',
           f'<dt>{esc(t("jobs.directions", lang))}</dt>'
           f'<dd id="directions">{esc(site.get("directions", ""))}</dd>']
    if j.get("campaign"):
        out.append(f'<dt>{esc(t("jobs.campaign", lang))}</dt><dd class="mono">{esc(j["campaign"])}</dd>')
    out.append("</dl>")
    if j["status"] == "open":
        out.append(f'<button type="button" class="btn primary wide" data-action="pick" '
                   f'data-job="{esc(j["id"])}">'
                   f'{esc(t("jobs.pick", lang))}</button>')
    else:
        out.append('<ol class="steps">')
        for s in j["steps"]:
            done = s in j["done"]
            here = s == j["next"] and j["status"] == "active"
            label = esc(t("step." + s, lang))
            if done:
                out.append(f'<li class="step done" data-step="{s}">✓ {label}</li>')
            elif here and s.startswith("photo"):
                out.append(f'<li class="step here" data-step="{s}">{label}<div class="acts">'
                           f'<button type="button" class="btn primary" data-action="photo" '
                           f'data-job="{esc(j["id"])}"'
                           f' data-step="{s}">📷 {esc(t("jobs.take_photo", lang))}</button>'
                           f'<label class="btn">{esc(t("jobs.upload_photo", lang))}<input type="file" '
                           f'accept="image/*" capture="environment" data-action="photo-file" '
                           f'data-job="{esc(j["id"])}" data-step="{s}"></label></div></li>')
            elif here:
                out.append(f'<li class="step here" data-step="{s}">'
                           '<button type="button" class="btn primary wide" '
                           f'data-action="step" data-job="{esc(j["id"])}" data-step="{s}">{label} — '
                           f'{esc(t("jobs.done", lang))}</button></li>')
            else:
                out.append(f'<li class="step todo" data-step="{s}">{label}</li>')
        out.append("</ol>")
        if j["status"] == "active" and j["next"] is None:
            out.append(f'<button type="button" class="btn primary wide" data-action="submit" '
                       f'data-job="{esc(j["id"])}">{esc(t("jobs.submit", lang))}</button>')
    lp = app.jobs.last_photo
    if lp and lp.get("job") == j["id"]:
        out.append('<div id="photo-result">' + _quality(lp.get("quality"), lang))
        if lp.get("campaign"):
            out.append(f'<p class="good-text" id="campaign-ok">✓ {esc(_msg(lp["campaign"], lang))}</p>')
        out.append("</div>")
    out.append("</div>")
    return "".join(out)


def part_camera(app: HandheldApp, lang: str) -> str:
    cam = app.camera
    if not app.cfg.camera:
        return f'<p class="none">{esc(t("camera.none", lang))}</p>'
    if cam.error:
        return (f'<p class="fb v-invalid" id="camera-error">'
                f'{esc(t("camera.lost", lang, detail=cam.error))}</p>')
    if cam.quality is None:
        return f'<p class="none">{esc(t("camera.waiting", lang))}</p>'
    return _quality(cam.quality, lang)


def part_sync(app: HandheldApp, lang: str) -> str:
    st = app.status()
    ob = st["outbox"]
    ph = st["photos"]
    on = st["link"]["connected"]
    out = [f'<dl class="sync"><dt>{esc(t("sync.gateway", lang))}</dt>'
           f'<dd id="sync-link" class="{"good-text" if on else "warn-text"}">'
           f'{esc(t("sync.online" if on else "sync.offline", lang))}</dd>',
           f'<dt>{esc(t("sync.events", lang))}</dt><dd id="sync-events">{ob["count"]}</dd>',
           f'<dt>{esc(t("sync.photos", lang))}</dt>']
    q = ph.get("queue") if isinstance(ph.get("queue"), dict) else {}
    waiting = ph["local_waiting"] + int(q.get("waiting") or 0)
    out.append(f'<dd id="sync-photos" data-waiting="{waiting}">{waiting}')
    if q.get("chunks_total"):
        chunks = t("sync.chunks", lang, done=q.get("chunks_done", 0), total=q["chunks_total"])
        out.append(f' · <span id="sync-chunks">{esc(chunks)}</span>')
    if isinstance(q.get("error"), dict):
        out.append(f'<br><small class="warn-text">{esc(_msg(q["error"], lang))}</small>')
    if not ph["uploader"]:
        out.append(f'<br><small>{esc(t("sync.uploader_missing", lang))}</small>')
    out.append(f'</dd><dt>{esc(t("sync.last", lang))}</dt><dd id="sync-last">'
               f'{esc(_ago(st["link"]["last_ack_at"], lang))}</dd>')
    g = st["gnss"]
    gtxt = (t("gnss.none", lang) if g is None else t("gnss.ok", lang, acc=g.get("accuracy_m"))
            if g.get("ok") else t("gnss.wait", lang))
    out.append(f'<dt>{esc(t("sync.gnss", lang))}</dt><dd id="sync-gnss">{esc(gtxt)}</dd></dl>')
    return "".join(out)


# ---------------------------------------------------------------------- page

CSS = """
:root{--tap:56px;--ok:#1b7f3b;--ok-bg:#e3f4e8;--warn:#8a5a00;--warn-bg:#fff3d6;--bad:#b3261e;--bad-bg:#fde7e5;
--dup:#555;--dup-bg:#eceff1;--ink:#1a1a1a;--line:#c8c8c8;--blue:#0b4f8a}
*{box-sizing:border-box}
body{margin:0;font:20px/1.45 system-ui,"Noto Sans CJK SC","WenQuanYi Micro Hei","Microsoft YaHei",sans-serif;
color:var(--ink);background:#f6f6f4}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5em;padding:.4em .6em;background:var(--blue);
color:#fff}
header h1{margin:0;font-size:1.25em;flex:1}
a.btn,.btn{display:inline-flex;align-items:center;justify-content:center;min-height:var(--tap);
min-width:var(--tap);padding:.3em .9em;border:2px solid var(--blue);border-radius:.5em;background:#fff;
color:var(--blue);font:inherit;font-weight:600;text-decoration:none;cursor:pointer;margin:.2em}
header a.btn{border-color:#fff;background:transparent;color:#fff}
.btn.primary{background:var(--blue);color:#fff}.btn.wide{width:100%;justify-content:flex-start;text-align:left}
.btn.sel{background:var(--blue);color:#fff}
.btn input[type=file]{position:absolute;width:1px;height:1px;opacity:0}
nav{display:grid;grid-template-columns:repeat(5,1fr);gap:.2em;padding:.2em;background:#dfe6ee}
nav .btn{margin:0;font-size:.9em;padding:.2em}
nav .btn[aria-current=true]{background:var(--blue);color:#fff}
main{padding:.4em .7em 3em;max-width:900px;margin:auto}
.pill{display:inline-block;border-radius:1em;padding:.1em .7em;background:#fff;color:var(--ink);
font-size:.85em}
.pill.on{background:var(--ok-bg);color:var(--ok)}.pill.off{background:var(--bad-bg);color:var(--bad)}
.modes{display:flex;flex-wrap:wrap}
form.scan{display:flex;gap:.3em;margin:.5em 0}
input{font:inherit;min-height:var(--tap);padding:.2em .5em;border:2px solid var(--line);border-radius:.4em;
flex:1;width:100%}
label{display:block;margin:.3em 0}
.fb{border:3px solid var(--line);border-radius:.5em;padding:.6em .8em;margin:.5em 0;font-size:1.2em}
.fb .mono{display:block;font-size:.8em}
.v-good{background:var(--ok-bg);border-color:var(--ok);color:var(--ok)}
.v-duplicate{background:var(--dup-bg);border-color:var(--dup);color:var(--dup)}
.v-invalid,.v-refused{background:var(--bad-bg);border-color:var(--bad);color:var(--bad)}
.v-wrong_route{background:var(--warn-bg);border-color:var(--warn);color:var(--warn)}
#msg:empty{display:none}
.list{list-style:none;padding:0;margin:0}.row{padding:.3em 0;border-bottom:1px solid var(--line)}
.row em{font-style:normal;color:#555;margin-left:.4em}
.mono{font-family:ui-monospace,monospace}
.steps{padding-left:1.2em}.step{margin:.4em 0}.step.done{color:var(--ok)}.step.todo{color:#777}
.step.here{font-weight:bold}.acts{display:flex;flex-wrap:wrap}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em .8em}dt{color:#555}dd{margin:0}
.quality{border:3px solid;border-radius:.5em;padding:.4em .7em;margin:.4em 0}
.q-ok{border-color:var(--ok);background:var(--ok-bg)}.q-bad{border-color:var(--bad);background:var(--bad-bg)}
.good-text{color:var(--ok);font-weight:bold}.warn-text{color:var(--bad);font-weight:bold}.none{color:#666}
#preview{max-width:100%;border:2px solid var(--line);border-radius:.4em;background:#222;min-height:120px}
"""

SCRIPT = r"""
(function(){
var lang=%s, screen='scan', job='', busy=false;
var msg=document.getElementById('msg');
function $(s){return document.querySelector(s);}
function show(r){
  var v=r.verdict||(r.ok?'good':'refused');
  msg.className='fb v-'+v; msg.setAttribute('data-verdict',v); msg.setAttribute('data-ok',r.ok?'1':'0');
  msg.textContent=r[lang]||r.en||r.code||'';
}
function post(url,body,raw){
  var opt={method:'POST',headers:{}};
  if(raw!==undefined){opt.body=raw;opt.headers['Content-Type']='application/octet-stream';}
  else{opt.body=JSON.stringify(body||{});opt.headers['Content-Type']='application/json';}
  return fetch(url,opt).then(function(r){return r.json();}).then(function(r){show(r);refresh();return r;})
   .catch(function(e){show({ok:false,en:String(e),zh:String(e)});});
}
function load(name,el){
  var q='/part?name='+name+'&lang='+lang+(name==='jobs'?'&job='+encodeURIComponent(job):'');
  return fetch(q,{cache:'no-store'}).then(function(r){if(!r.ok)throw new Error(r.status);return r.text();})
   .then(function(h){if(el.getAttribute('data-html')!==h){el.innerHTML=h;el.setAttribute('data-html',h);}
     document.body.removeAttribute('data-stale');})
   .catch(function(){document.body.setAttribute('data-stale','1');});
}
function refresh(){
  load('status',$('#status'));
  var live=$('#scr-'+screen+' .live'); if(live){load(screen,live);}
  if(screen==='camera'){$('#preview').src='/camera.jpg?t='+Date.now();}
}
function go(s){
  screen=s;
  document.querySelectorAll('main > section').forEach(function(x){x.hidden=(x.id!=='scr-'+s);});
  document.querySelectorAll('nav .btn').forEach(function(b){b.setAttribute('aria-current',
    b.getAttribute('data-screen')===s?'true':'false');});
  refresh();
}
document.addEventListener('click',function(e){
  var b=e.target.closest('[data-action],[data-screen]'); if(!b)return;
  if(b.hasAttribute('data-screen')){go(b.getAttribute('data-screen'));return;}
  var a=b.getAttribute('data-action'), j=b.getAttribute('data-job'), st=b.getAttribute('data-step');
  if(a==='mode'){post('/api/mode',{mode:b.getAttribute('data-mode')});}
  else if(a==='open-job'){job=j;refresh();}
  else if(a==='close-job'){job='';refresh();}
  else if(a==='pick'){post('/api/jobs/'+encodeURIComponent(j)+'/pick');}
  else if(a==='step'){post('/api/jobs/'+encodeURIComponent(j)+'/step',{step:st});}
  else if(a==='submit'){post('/api/jobs/'+encodeURIComponent(j)+'/submit');}
  else if(a==='photo'){msg.className='fb';msg.textContent='…';
    post('/api/jobs/'+encodeURIComponent(j)+'/photo?step='+st,null,new Uint8Array(0));}
});
document.addEventListener('change',function(e){
  var i=e.target; if(i.getAttribute('data-action')!=='photo-file'||!i.files.length)return;
  post('/api/jobs/'+encodeURIComponent(i.getAttribute('data-job'))+'/photo?step='+i.getAttribute('data-step'),
       null,i.files[0]);
});
document.addEventListener('submit',function(e){
  e.preventDefault(); var f=e.target;
  if(f.id==='scan-form'){var c=f.querySelector('input').value;f.querySelector('input').value='';
    post('/api/scan',{code:c});}
  else if(f.id==='confirm'){var code=f.querySelector('[name=code]').value,
    name=f.querySelector('[name=name]').value;
    post('/api/deliver',{code:f.getAttribute('data-parcel'),method:code?'code':'name',value:code||name});}
});
go('scan');
setInterval(refresh,1000);
})();
"""


def render_page(app: HandheldApp, lang: str, nonce: str) -> str:
    other = "en" if lang == "zh" else "zh"
    tabs = "".join(f'<button type="button" class="btn" data-screen="{s}" id="tab-{s}">'
                   f'{esc(t("tab." + s, lang))}</button>' for s in SCREENS)
    sections = [
        f'<section id="scr-scan"><form id="scan-form" class="scan"><input name="code" autocomplete="off" '
        f'autofocus placeholder="{esc(t("scan.placeholder", lang))}" '
        f'aria-label="{esc(t("scan.placeholder", lang))}">'
        f'<button type="submit" class="btn primary">{esc(t("scan.button", lang))}</button></form>'
        f'<div class="live">{part_scan(app, lang)}</div></section>',
        '<section id="scr-parcels" hidden><div class="live"></div></section>',
        '<section id="scr-jobs" hidden><div class="live"></div></section>',
        f'<section id="scr-camera" hidden><img id="preview" alt="{esc(t("tab.camera", lang))}" '
        f'src="/camera.jpg"><div class="live"></div></section>',
        '<section id="scr-sync" hidden><div class="live"></div></section>',
    ]
    title = f'{t("title", lang)} · {app.cfg.device}'
    return (
        "<!doctype html>"
        f'<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style nonce=\"{nonce}\">{CSS}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><span id="status">{part_status(app, lang)}</span>'
        f'<a class="btn" id="lang-switch" href="/?lang={other}" hreflang="{other}">'
        f'{esc(t("switch", lang))}</a>'
        f'</header><nav>{tabs}</nav><main><div id="msg" class="fb" role="alert" aria-live="assertive"></div>'
        + "".join(sections) +
        f'</main><script nonce="{nonce}">{SCRIPT % json.dumps(lang)}</script></body></html>'
    )


# ---------------------------------------------------------------------- server

class UIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], app: HandheldApp) -> None:
        self.app = app
        super().__init__(addr, UIHandler)


class UIHandler(BaseHTTPRequestHandler):
    server: UIServer
    server_version = "postedge-handheld"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """The page polls every second; per-request lines would bury the app's own log."""

    def do_GET(self) -> None:
        self._nonce: str | None = None
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        app = self.server.app
        lang = q.get("lang", [app.cfg.lang])[0]
        if lang not in LANGS:
            lang = app.cfg.lang
        try:
            if url.path in ("/", "/index.html"):
                self._nonce = secrets.token_urlsafe(16)
                self._send(200, "text/html; charset=utf-8", render_page(app, lang, self._nonce).encode())
            elif url.path == "/part":
                name = q.get("name", [""])[0]
                if name not in PARTS:
                    self._send(404, "text/plain; charset=utf-8", b"no such part\n")
                    return
                if name == "jobs":
                    body = part_jobs(app, lang, q.get("job", [""])[0])
                else:
                    body = {"status": part_status, "scan": part_scan, "parcels": part_parcels,
                            "camera": part_camera, "sync": part_sync}[name](app, lang)
                self._send(200, "text/html; charset=utf-8", body.encode())
            elif url.path == "/camera.jpg":
                jpg = app.camera.preview
                if jpg is None:
                    self._send(503, "text/plain; charset=utf-8", b"no camera picture\n")
                else:
                    self._send(200, "image/jpeg", jpg)
            elif url.path == "/api/state":
                doc = {**app.status(), "jobs": app.jobs.list(), "parcels": app.flows.view()}
                self._json(200, doc)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")
        except Exception as e:  # noqa: BLE001 - one bad request must not stop the UI
            log.error("ui error %s: %s", url.path, traceback.format_exc(limit=5))
            self._json(500, {"ok": False, "code": "internal", **both("err.internal", detail=repr(e)[:100])})

    def do_POST(self) -> None:
        self._nonce = None
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        app = self.server.app
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if not 0 <= n <= MAX_BODY:
            self._json(413, Refused("bad_request", detail="body too large").as_dict())
            return
        raw = self.rfile.read(n) if n else b""
        parts = [unquote(p) for p in url.path.split("/") if p]
        try:
            res = self._post(app, parts, q, raw)
            self._json(200, res)
        except Refused as e:
            self._json(200 if e.code not in ("bad_request", "no_job") else 400, e.as_dict())
        except Exception as e:  # noqa: BLE001 - answer with a message, keep serving
            log.error("ui post error %s: %s", url.path, traceback.format_exc(limit=5))
            self._json(500, {"ok": False, "code": "internal", **both("err.internal", detail=repr(e)[:100])})

    def _body(self, raw: bytes) -> dict[str, Any]:
        if not raw:
            return {}
        try:
            doc = json.loads(raw)
        except ValueError:
            raise Refused("bad_request", detail="body is not JSON") from None
        if not isinstance(doc, dict):
            raise Refused("bad_request", detail="body must be an object")
        return doc

    def _post(self, app: HandheldApp, parts: list[str], q: dict[str, list[str]],
              raw: bytes) -> dict[str, Any]:
        if parts == ["api", "scan"]:
            b = self._body(raw)
            return app.scan(str(b.get("code", "")), b.get("mode"))
        if parts == ["api", "mode"]:
            mode = self._body(raw).get("mode")
            if mode not in ("check", "intake", "deposit", "deliver", "collect"):
                raise Refused("bad_request", detail=f"mode {mode!r}")
            app.mode = mode
            app.last_scan = None
            return {"ok": True, "mode": mode, "zh": t("mode." + mode, "zh"), "en": t("mode." + mode, "en")}
        if parts == ["api", "deliver"]:
            b = self._body(raw)
            res = app.flows.hand_delivery(str(b.get("code", "")), str(b.get("method", "")),
                                          str(b.get("value", "")))
            app.last_scan = None
            return res
        if len(parts) == 4 and parts[:2] == ["api", "jobs"]:
            jid, action = parts[2], parts[3]
            if action == "pick":
                return app.jobs.pick(jid)
            if action == "step":
                return app.jobs.do_step(jid, str(self._body(raw).get("step", "")))
            if action == "submit":
                return app.jobs.submit(jid)
            if action == "photo":
                return app.photo(jid, q.get("step", [""])[0], raw or None)
        raise Refused("bad_request", detail="/".join(parts))

    def _json(self, code: int, doc: dict[str, Any]) -> None:
        self._send(code, "application/json; charset=utf-8",
                   json.dumps(doc, ensure_ascii=False, default=str).encode())

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        csp = ("default-src 'none'; connect-src 'self'; img-src 'self'; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")
        if self._nonce:
            csp += f"; style-src 'nonce-{self._nonce}'; script-src 'nonce-{self._nonce}'"
        self.send_header("Content-Security-Policy", csp)
        self.end_headers()
        self.wfile.write(body)


class WebUI:
    """Binds at construction (a taken port fails the start, naming web.port), serves in a thread."""

    def __init__(self, app: HandheldApp, host: str, port: int) -> None:
        from handheld.config import ConfigError

        try:
            self.httpd = UIServer((host, port), app)
        except OSError as e:
            raise ConfigError(f"web.host/web.port: cannot listen on {host}:{port}: {e}") from e
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.25},
                                        name="hh-web", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
