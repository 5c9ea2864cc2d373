"""The courier's touch UI: a local web page for the handheld's own browser, plus its JSON API.

Same house style as the clerk's status page (``gateway/web.py``): HTML rendered on the
server with every device or courier string escaped, CSS and script inline under a
per-response CSP nonce, and nothing fetched from anywhere else (the handheld is often
offline). Differences that come from being held in a hand outdoors:

- every control is at least 48 px high and wide (``--tap``), text is large, and every
  colour also carries a word or symbol (a green/red screen in the sun is hard to read);
- the page is one shell with five screens (scan, parcels, jobs, camera, sync); the
  live parts of the visible screen are fetched from ``/part`` every second and swapped
  in only when they changed, so a half-typed code or an open file chooser survives;
- Simplified Chinese by default, English one tap away (``?lang=en``).

The server is aiohttp in a thread of its own (:class:`ThreadedServer`), not the
standard library's ``ThreadingHTTPServer``, which has no timeouts (an idle or
trickling socket holds a thread forever) and no limits. And because any web page the
courier's browser opens can send requests to ``127.0.0.1``, every request is checked
before it reaches the app (:class:`WebUI`): the ``Host`` must be
this UI's own, a state-changing request must come from this UI's own page (``Origin``),
be JSON, and carry the session token embedded in the page.

Routes: ``GET /`` page · ``GET /part?name=status|scan|parcels|jobs|camera|sync&job=`` ·
``GET /camera.jpg`` latest preview frame · ``GET /api/state`` ·
``POST /api/scan`` ``{"code", "mode"}`` · ``POST /api/mode`` ``{"mode"}`` ·
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
import html
import json
import logging
import secrets
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from handheld.app import HandheldApp
from handheld.config import ConfigError
from handheld.text import LANGS, TEXT, Refused

log = logging.getLogger(__name__)
#: The page's text in one language: ``t(key, lang, **fields)`` (``handheld/text.toml``).
t = TEXT.t
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


def _cmd_status(status: str, lang: str) -> str:
    """A locker command's status as the gateway reports it; one this handheld has no
    words for is shown as sent."""
    key = "cmd." + status
    return t(key, lang) if TEXT.has(key) else t("cmd.other", lang, status=status)


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
            cmd = f' · {esc(_cmd_status(p["cmd_status"], lang))}' if p["cmd_status"] else ""
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
var token=document.querySelector('meta[name="postedge-token"]').getAttribute('content');
function $(s){return document.querySelector(s);}
function show(r){
  var v=r.verdict||(r.ok?'good':'refused');
  msg.className='fb v-'+v; msg.setAttribute('data-verdict',v); msg.setAttribute('data-ok',r.ok?'1':'0');
  msg.textContent=r[lang]||r.en||r.code||'';
}
function post(url,body,raw){
  var opt={method:'POST',credentials:'same-origin',headers:{'X-Postedge-Token':token}};
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
    post('/api/jobs/'+encodeURIComponent(j)+'/photo?step='+encodeURIComponent(st),{});}
});
document.addEventListener('change',function(e){
  var i=e.target; if(i.getAttribute('data-action')!=='photo-file'||!i.files.length)return;
  post('/api/jobs/'+encodeURIComponent(i.getAttribute('data-job'))+'/photo?step='
       +encodeURIComponent(i.getAttribute('data-step')),
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


def render_page(app: HandheldApp, lang: str, nonce: str, token: str = "") -> str:
    """The page shell. ``token`` is the session token the script sends on every POST; it
    is in a ``<meta>`` tag, readable by this page's script and by nothing cross-origin."""
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
        f'<meta name="postedge-token" content="{esc(token)}">'
        f"<title>{esc(title)}</title><style nonce=\"{nonce}\">{CSS}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><span id="status">{part_status(app, lang)}</span>'
        f'<a class="btn" id="lang-switch" href="/?lang={other}" hreflang="{other}">'
        f'{esc(t("switch", lang))}</a>'
        f'</header><nav>{tabs}</nav><main><div id="msg" class="fb" role="alert" aria-live="assertive"></div>'
        + "".join(sections) +
        f'</main><script nonce="{nonce}">{SCRIPT % json.dumps(lang)}</script></body></html>'
    )


# ---------------------------------------------------------------------- server

#: A connection that has sent no complete request (nothing at all, or half a request
#: line trickled in) for this long is closed; so is a kept-alive one left idle. The page
#: polls every second, so a live tab never sees this.
IDLE_TIMEOUT_S = 15.0
#: The whole request body must arrive within this (a 20 MiB photo over loopback takes
#: well under a second; a client that trickles bytes is holding a worker hostage).
BODY_TIMEOUT_S = 30.0
MAX_JSON = 64 * 1024           # every JSON request is a few hundred bytes
MAX_ACTIVE = 8                 # requests handled at once; more wait up to BUSY_WAIT_S, then 503
BUSY_WAIT_S = 5.0
MAX_CONNECTIONS = 32           # open sockets; the next one gets a 503 and is closed
WORKERS = 4                    # threads that run the app's blocking calls (SQLite, OpenCV)
TOKEN_HEADER = "X-Postedge-Token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
#: The only bodies that are not JSON: a photo file for ``/api/jobs/<id>/photo``. None of
#: these is a CORS-safelisted type, so a cross-site page cannot send one without a
#: preflight, which this server never grants.
PHOTO_TYPES = frozenset({"application/octet-stream", "image/jpeg", "image/png", "image/webp", "image/bmp",
                         "image/tiff"})
_SERVER_NAME = "postedge-handheld"
#: Every answer's policy; the page adds nonces for its one inline style and script.
CSP = ("default-src 'none'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")


def bind(host: str, port: int, backlog: int = 64) -> socket.socket:
    """A listening TCP socket for ``host`` (name, IPv4 or IPv6 literal) and ``port``.

    Bound by the caller's thread so that a taken port fails the start there and then,
    not later inside the server's own thread."""
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    infos = socket.getaddrinfo(h or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    fam, _, _, _, addr = infos[0]
    return socket.create_server(addr[:2], family=fam, backlog=backlog)


def host_allowlist(bind_host: str, port: int, names: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` header values a request may carry: loopback by name and address, the
    address the server is bound to (unless it is a wildcard) and ``names``, each with
    ``:port`` (and bare when the port is 80, as browsers then send it).

    Why: a DNS-rebinding page first resolves ``evil.example`` to its own server, then to
    127.0.0.1, and so reaches this UI as "its own origin"; the only thing that still says
    ``evil.example`` is the ``Host`` header."""
    hosts = set(LOOPBACK_NAMES)
    b = bind_host.strip().lower()
    if b not in ("", "0.0.0.0", "::", "[::]"):
        hosts.add(f"[{b}]" if ":" in b and not b.startswith("[") else b)
    for n in names:
        n = n.strip().lower().rstrip(".")
        if n:
            hosts.add(f"[{n}]" if n.count(":") > 1 and not n.startswith("[") else n)
    out: set[str] = set()
    for h in hosts:
        if h.startswith("[") or ":" not in h:
            out.add(f"{h}:{port}")
            if port == 80:
                out.add(h)
        else:
            out.add(h)  # a configured name that already carries its port
    return frozenset(out)


def host_ok(header: str | None, allowed: frozenset[str]) -> bool:
    return bool(header) and str(header).strip().lower() in allowed


class _Refuse(asyncio.Protocol):
    """What a connection over the limit gets: one fixed 503 and a close, no parsing."""

    def __init__(self, response: bytes, on_refuse: Callable[[], None] | None) -> None:
        self.response = response
        self.on_refuse = on_refuse

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.response)
        transport.close()
        if self.on_refuse is not None:
            self.on_refuse()


class ThreadedServer:
    """An ``aiohttp.web.Application`` served from a thread with its own event loop.

    Why a thread: the handheld app and the simulator are threaded programs (MQTT link,
    camera, GNSS, the runner); giving the UI a loop of its own keeps them as they are,
    and their blocking calls run in a small thread pool, never on the loop.

    What aiohttp gives over the standard library's ``ThreadingHTTPServer`` (one thread
    per connection, no timeouts): ``keepalive_timeout`` closes a connection that has sent
    no complete request for ``idle_timeout`` seconds, including one that never sends a
    byte or trickles its headers (aiohttp >= 3.10 arms it at connect); header count and
    line sizes are bounded by the parser; and this class caps open connections (the one
    over ``max_connections`` gets a fixed 503 and is closed before any parsing).

    ``simulator/dashboard.py`` serves its page with this class too; it lives here
    because the handheld's UI is where it was first needed."""

    def __init__(self, app: web.Application, host: str, port: int, *, name: str,
                 idle_timeout: float = IDLE_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS,
                 busy_response: bytes = b"", on_refuse: Callable[[], None] | None = None) -> None:
        self.app = app
        self.name = name
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.on_refuse = on_refuse
        body = busy_response or b"busy\n"
        self.busy_response = (b"HTTP/1.1 503 Service Unavailable\r\n"
                              b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
                              b"Retry-After: 2\r\nContent-Length: "
                              + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.sock = bind(host, port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._aserver: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        a = self.sock.getsockname()
        return str(a[0]), int(a[1])

    @property
    def connections(self) -> int:
        """Open connections (for tests and status)."""
        srv = self._runner.server if self._runner is not None else None
        return len(srv.connections) if srv is not None else 0

    def start(self) -> None:
        """Start serving; returns once the server accepts, or raises why it could not."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup())
        except BaseException as e:  # noqa: BLE001 - handed to start()'s caller
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _setup(self) -> None:
        # lingering_time: after answering a request whose body was not read (a refusal),
        # aiohttp reads and drops the rest so the client sees the answer rather than a
        # reset; bounded like any other idle wait, not aiohttp's default 10 s.
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=2.0,
                               keepalive_timeout=self.idle_timeout,
                               lingering_time=min(2.0, self.idle_timeout), max_headers=64)
        await runner.setup()
        self._runner = runner
        server = runner.server
        assert server is not None

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= self.max_connections:
                return _Refuse(self.busy_response, self.on_refuse)
            return server()

        loop = asyncio.get_running_loop()
        self._aserver = await loop.create_server(factory, sock=self.sock)

    async def _teardown(self) -> None:
        if self._aserver is not None:
            self._aserver.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Stop accepting, give requests in flight 2 s, close every connection. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            self.sock.close()
            return
        try:
            asyncio.run_coroutine_threadsafe(self._teardown(), loop).result(10)
        except Exception:  # noqa: BLE001 - stopping must finish; say what went wrong
            log.error("%s: error while stopping: %s", self.name, traceback.format_exc(limit=3))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self.sock.close()


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


def handle_post(app: HandheldApp, parts: list[str], query: Mapping[str, str], mime: str,
                raw: bytes) -> dict[str, Any]:
    """One state-changing request, already past the guard; runs on a worker thread.

    ``mime`` is ``application/json`` except for a photo file sent as its bytes."""
    binary = mime in PHOTO_TYPES
    doc = {} if binary else _parse_json(raw)
    if parts == ["api", "scan"]:
        return app.scan(str(doc.get("code", "")), doc.get("mode"))
    if parts == ["api", "mode"]:
        mode = doc.get("mode")
        if mode not in ("check", "intake", "deposit", "deliver", "collect"):
            raise Refused("bad_request", detail=f"mode {mode!r}")
        app.mode = mode
        app.last_scan = None
        return {"ok": True, "mode": mode, "zh": t("mode." + mode, "zh"), "en": t("mode." + mode, "en")}
    if parts == ["api", "deliver"]:
        res = app.flows.hand_delivery(str(doc.get("code", "")), str(doc.get("method", "")),
                                      str(doc.get("value", "")))
        app.last_scan = None
        return res
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
            raise ConfigError(f"web.host/web.port: cannot listen on {host}:{port}: {e}") from e
        self.host = host
        self.allowed_hosts = host_allowlist(host, self.port, names)
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="hh-web-work")

    # ------------------------------------------------------------------ public API
    @property
    def port(self) -> int:
        return self.server.address[1]

    @property
    def url(self) -> str:
        h = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in h and not h.startswith("["):
            h = f"[{h}]"
        return f"http://{h}:{self.port}/"

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
        for p in ("/api/scan", "/api/mode", "/api/deliver", "/api/jobs/{jid}/{action}"):
            a.router.add_post(p, self._post)
        a.on_startup.append(self._on_startup)
        a.on_response_prepare.append(self._headers)
        return a

    async def _on_startup(self, _app: web.Application) -> None:
        self._sem = asyncio.Semaphore(self.max_active)

    async def _headers(self, request: web.Request, resp: web.StreamResponse) -> None:
        """Security headers on every answer, errors included (the page sets its own CSP,
        with the nonce of its inline style and script)."""
        h = resp.headers
        h.setdefault("Content-Security-Policy", CSP)
        h["X-Frame-Options"] = "DENY"
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "no-referrer"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cache-Control"] = "no-store"
        h["Server"] = _SERVER_NAME

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
        photo = request.match_info.get("action") == "photo"
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
        nonce = secrets.token_urlsafe(16)
        body = await self._work(render_page, self.app, self._lang(request), nonce, self.token)
        resp = web.Response(text=body, content_type="text/html", charset="utf-8")
        resp.headers["Content-Security-Policy"] = (f"{CSP}; style-src 'nonce-{nonce}'; "
                                                   f"script-src 'nonce-{nonce}'")
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
                  "camera": part_camera, "sync": part_sync}[name]
            body = await self._work(fn, self.app, lang)
        return web.Response(text=body, content_type="text/html", charset="utf-8")

    async def _camera(self, request: web.Request) -> web.Response:
        jpg = self.app.camera.preview
        if jpg is None:
            return web.Response(status=503, text="no camera picture\n", content_type="text/plain",
                                charset="utf-8")
        return web.Response(body=jpg, content_type="image/jpeg")

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
