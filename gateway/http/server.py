"""The outlet clerk's status page, its JSON, and the Prometheus scrape.

Served by the gateway process itself on aiohttp, in a thread with its own
event loop (``GatewayHTTP`` and ``WebService`` below say why it is not the
standard library's server any more: issue 11, finding 4). An outlet box has
no internet, no reverse proxy and little RAM, so the server itself carries
the protection a proxy would: request and idle timeouts, a connection cap,
a body limit of one upload chunk, and the handheld login checked before any
body is read. Everything the page needs (CSS, the refresh script) is
inline, so nothing is fetched from anywhere.
网关自带的 HTTP 服务（aiohttp）：超时、连接上限、请求体上限，先验登录再读请求体。

Routes:

``/``            the page, rendered on the server; ``?lang=zh|en``
``/fragment``    the page's ``<main>`` alone, which the page's tiny script
                 fetches every ``refresh_s`` seconds and swaps in (no reload,
                 no flicker, and a banner when the gateway stops answering);
                 ``<noscript>`` falls back to a meta refresh
``/api/status``  the same snapshot as JSON, for tools and a future app
``/metrics``     ``gateway.metrics.REGISTRY``; the backlog and devices-online
                 gauges are refreshed from the store on every scrape, so they
                 are right even before ingest or sync has touched them
``/healthz``     200 ``ok`` when the store can be read, else 503
``/v1/uploads``  photo uploads from handhelds (``POST``/``PUT``/``HEAD``/``GET``),
                 handled by ``gateway/uploads.py``: one LAN port for the page
                 and the uploads; needs ``passwd_file`` (Mosquitto's) for logins
``/v1/commands/<id>``  a forwarded command's status for the handheld that
                 forwarded it (``GET``/``HEAD``), ``gateway/command_api.py``;
                 same logins as the uploads

Each request opens its own read-only SQLite connection, on the server's
small thread pool so the event loop never waits on the disk: WAL lets it
read while ingest commits, and a read-only handle means no bug on this page
can change what the gateway stores. A row a device sent that cannot be
rendered is a placeholder, never a 500 for the page (finding 3). Text that devices sent (state documents,
alarm and parcel bodies) is escaped wherever it is shown, and a
Content-Security-Policy with a per-response nonce stops any script that is
not ours from running, should an escape ever be missed.
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
import socket
import sqlite3
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from common.logs import recorder
from gateway import metrics as M
from gateway.config import ConfigError, WebConfig, parse_web
from gateway.http.web_text import LANGS, fields, has, t
from gateway.store.events import EventStore
from gateway.store.readonly import ReadOnlyStore, StoreUnavailable
from protocol.custody import HOLDS_PARCEL, RETRIEVAL

record = recorder(__name__)

BACKLOG = 128  # TCP listen backlog: beyond it the kernel, not this process, holds the queue
DB_THREADS = 4  # the pool that runs SQLite, file and PBKDF2 work: a fixed number of threads
ALARM_RED_S = 3600.0  # an alarm this fresh turns the page red
ALARM_WINDOW_S = 24 * 3600.0  # the "alarms, last 24 h" tile
BACKLOG_WARN_S = 3600.0  # unsent data older than this asks for attention
ALARMS_SCANNED = 200
ALARMS_SHOWN = 10
PARCELS_SHOWN = 10
MAX_TEXT = 80  # device strings are cut to this on the page, never trusted for layout
# Device clocks are believed for "when did it happen" only inside this range;
# a locker without NTP after a power cut would otherwise say "56 years ago".
SANE_TS_MIN = 1_600_000_000
CLOCK_SKEW_S = 300.0
KNOWN_STATES = ("free", "reserved", "occupied", "overdue", "return_waiting", "inspect",
                "out_of_service")
# Parcel-event fields the page and API show. The deposit body can carry the
# plain pickup code (issued offline); it must never reach a screen.
CUSTODY_FIELDS = ("compartment", "parcel", "reason")

WEB_REFUSED = Counter("postedge_web_connections_closed", "HTTP connections the gateway closed or "
                      "refused to protect itself, by reason (over_capacity, idle_evicted, idle_timeout, "
                      "request_timeout)", ["reason"], registry=M.REGISTRY)
BAD_ROWS = Counter("postedge_web_bad_rows", "Rows the status page showed as a placeholder because "
                   "they could not be rendered, by kind", ["row"], registry=M.REGISTRY)


# ---------------------------------------------------------------- store access

# -------------------------------------------------------------------- snapshot

def _text(v: Any) -> str:
    """A device-sent value as a bounded display string (escaping is the
    renderer's job; this only keeps a silly value from wrecking the layout)."""
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT - 1] + "…"


def _ident(v: Any) -> int | str | None:
    """Compartment ids are ints from our firmware; anything else is shown as text."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return v
    return _text(v)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _event_time(ev: dict[str, Any], now: float) -> float:
    """When it happened: the device's clock if believable, else arrival."""
    ts = ev.get("ts")
    if isinstance(ts, int) and SANE_TS_MIN <= ts <= now + CLOCK_SKEW_S:
        return float(ts)
    return float(ev["received_at"])


def _locker_view(dev: dict[str, Any]) -> dict[str, Any]:
    """Compartments, parcels and the retrieval list from a locker's retained
    state document, tolerating any shape a device might send."""
    state = dev.get("state") if isinstance(dev.get("state"), dict) else {}
    comps: list[dict[str, Any]] = []
    raw = state.get("compartments")
    for c in raw if isinstance(raw, list) else []:
        if not isinstance(c, dict):
            continue
        st = c.get("state")
        comps.append({"id": _ident(c.get("id")),
                      "size": _text(c["size"]) if "size" in c else None,
                      "state": _text(st) if st is not None else "unknown"})
    by_state: dict[str, int] = {}
    for c in comps:
        by_state[c["state"]] = by_state.get(c["state"], 0) + 1
    state_of = {c["id"]: c["state"] for c in comps}
    retrieval = []
    rl = state.get("retrieval")
    for cid in rl if isinstance(rl, list) else []:
        ident = _ident(cid)
        retrieval.append({"id": ident, "state": state_of.get(ident, "unknown")})
    # Our own firmware fills the list from these states; show them even if a
    # document leaves the list out.
    listed = {r["id"] for r in retrieval}
    for c in comps:
        if c["state"] in RETRIEVAL and c["id"] not in listed:
            retrieval.append({"id": c["id"], "state": c["state"]})
    ob = state.get("outbox") if isinstance(state.get("outbox"), dict) else {}
    outbox = {k: _num(ob.get(k)) for k in ("used", "pending", "capacity")}
    return {
        "device": dev["device"], "online": dev["online"], "reported": bool(comps),
        "compartments": comps, "total": len(comps),
        "free": by_state.get("free", 0),
        "parcels": sum(by_state.get(s, 0) for s in HOLDS_PARCEL),
        "by_state": by_state, "retrieval": retrieval, "outbox": outbox,
    }


# Catalogue entries under "alarm." that are not alarm kinds: a device naming
# its alarm "where" must not be shown as a location prefix.
_NOT_ALARM_KINDS = ("where", "unknown")


def _alarm_text(body: dict[str, Any], lang: str) -> str:
    kind = body.get("alarm")
    kind_s = _text(kind) if kind is not None else "?"
    key = f"alarm.{kind_s}"
    if has(key) and kind_s not in _NOT_ALARM_KINDS:
        what = t(key, lang, **{k: _text(v) for k, v in fields(body).items() if k != "alarm"})
    else:
        what = t("alarm.unknown", lang, alarm=kind_s)
    cid = body.get("compartment")
    if cid is None:
        return what[:1].upper() + what[1:] if lang == "en" else what
    return t("alarm.where", lang, id=_ident(cid)) + what


# Rows (alarms, parcels, devices, lockers) that could not be shown are
# logged once each, not on every 5 s refresh of every open page.
_BAD_ROWS_LOGGED: set[tuple[str, str]] = set()
_BAD_ROWS_LOCK = threading.Lock()


def _bad_row(what: str, ident: Any, e: BaseException) -> None:
    """One row a device sent could not be turned into page data: count it,
    log it once, and let the caller show a placeholder. Never raises."""
    BAD_ROWS.labels(what).inc()
    key = (what, str(ident)[:200])
    with _BAD_ROWS_LOCK:
        if key in _BAD_ROWS_LOGGED or len(_BAD_ROWS_LOGGED) > 10_000:
            return
        _BAD_ROWS_LOGGED.add(key)

    record("web_bad_row", row=what, id=key[1], error=repr(e)[:300])


def _placeholder_alarm(ev: dict[str, Any], now: float) -> dict[str, Any]:
    """What the page shows for an alarm row it cannot render: that there was
    an alarm, from which device, and when: never a 500 for the whole page."""
    try:
        at = _event_time(ev, now)
    except Exception:  # noqa: BLE001 - a placeholder must not fail either
        at = now
    return {"id": _text(ev.get("id", "?")), "device": _text(ev.get("device", "?")),
            "kind": None, "type": _text(ev.get("type", "?")), "alarm": "?", "compartment": None,
            "at": at, "age_s": round(max(0.0, now - at), 1),
            "text": {lang: t("alarm.unreadable", lang) for lang in LANGS}}


def _parse_last_sync(raw: str | None) -> float | None:
    """``last_sync_at`` as written by the sync engine: Unix seconds, or an
    ISO 8601 time; anything else (or nothing) reads as "never"."""
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        from datetime import datetime

        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        return None


def snapshot(store: EventStore, now: float | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain data; the page and /api/status
    are both made from this, so they cannot disagree."""
    now = time.time() if now is None else now
    devices = store.devices()
    dev_out = [{"device": d["device"], "outlet": d["outlet"], "kind": d["kind"],
                "online": d["online"], "for_s": round(d["for_s"], 1),
                "last_seen": d["last_seen"], "last_seen_age_s": round(max(0.0, now - d["last_seen"]), 1)}
               for d in devices]
    lockers = []
    for d in devices:
        if d["kind"] != "locker":
            continue
        try:
            lockers.append(_locker_view(d))
        except Exception as e:  # noqa: BLE001 - a state document no one foresaw: shown as "not reported"
            _bad_row("locker", d.get("device"), e)
            lockers.append({"device": d["device"], "online": d["online"], "reported": False,
                            "compartments": [], "total": 0, "free": 0, "parcels": 0, "by_state": {},
                            "retrieval": [], "outbox": {"used": None, "pending": None, "capacity": None}})
    kinds = {d["device"]: d["kind"] for d in devices}
    alarms = []
    for ev in store.recent("alarm", ALARMS_SCANNED):
        try:
            body = ev["body"] if isinstance(ev["body"], dict) else {}
            at = _event_time(ev, now)
            # The gateway's own alarms come from a "device" that never sends presence.
            kind = kinds.get(ev["device"]) or ev["type"].split(".", 1)[0]
            alarms.append({"id": ev["id"], "device": ev["device"], "kind": kind,
                           "type": ev["type"],
                           "alarm": _text(body.get("alarm", "?")),
                           "compartment": _ident(body.get("compartment")),
                           "at": at, "age_s": round(max(0.0, now - at), 1),
                           "text": {lang: _alarm_text(body, lang) for lang in LANGS}})
        except Exception as e:  # noqa: BLE001 - one device's row never takes the page down
            _bad_row("alarm", ev.get("id"), e)
            alarms.append(_placeholder_alarm(ev, now))
    alarms.sort(key=lambda a: a["at"], reverse=True)
    parcels = []
    for ev in store.recent("custody", PARCELS_SHOWN):
        try:
            body = ev["body"] if isinstance(ev["body"], dict) else {}
            at = _event_time(ev, now)
            parcels.append({"id": ev["id"], "device": ev["device"], "type": ev["type"], "at": at,
                            "age_s": round(max(0.0, now - at), 1),
                            **{k: (_ident(body[k]) if k == "compartment" else _text(body[k]))
                               for k in CUSTODY_FIELDS if body.get(k) is not None}})
        except Exception as e:  # noqa: BLE001
            _bad_row("parcel", ev.get("id"), e)
    backlog = store.backlog()
    last_sync = _parse_last_sync(store.get("last_sync_at"))
    online = sum(1 for d in devices if d["online"])
    recent_alarms = sum(1 for a in alarms if a["age_s"] <= ALARM_WINDOW_S)
    return {
        "generated_at": now,
        "outlets": sorted({d["outlet"] for d in devices}),
        "summary": {"devices_online": online, "devices_total": len(devices),
                    "parcels": sum(lk["parcels"] for lk in lockers),
                    "alarms_24h": recent_alarms,
                    "alarms_24h_capped": recent_alarms >= ALARMS_SCANNED},
        "devices": dev_out,
        "lockers": lockers,
        "alarms": alarms[:ALARMS_SHOWN],
        "parcels": parcels,
        "backlog": {"count": backlog["count"], "bytes": backlog["bytes"],
                    "oldest_age_s": round(backlog["oldest_age_s"], 1)},
        "last_sync_at": last_sync,
        "last_sync_age_s": None if last_sync is None else round(max(0.0, now - last_sync), 1),
    }


def verdict(snap: dict[str, Any]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The one-word state at the top of the page, and why."""
    why: list[tuple[str, dict[str, Any]]] = []
    fresh_alarm = any(a["age_s"] <= ALARM_RED_S for a in snap["alarms"])
    if fresh_alarm:
        why.append(("why.alarm", {}))
    offline = snap["summary"]["devices_total"] - snap["summary"]["devices_online"]
    if offline:
        why.append(("why.offline", {"n": offline}))
    retrieval = sum(len(lk["retrieval"]) for lk in snap["lockers"])
    if retrieval:
        why.append(("why.retrieval", {"n": retrieval}))
    if snap["backlog"]["count"] and snap["backlog"]["oldest_age_s"] > BACKLOG_WARN_S:
        why.append(("why.backlog", {"s": snap["backlog"]["oldest_age_s"]}))
    if fresh_alarm:
        return "alarm", why
    return ("warn" if why else "ok"), why


# -------------------------------------------------------------------- rendering

def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def duration(s: float, lang: str) -> str:
    s = max(0, int(s))
    if s < 60:
        return t("dur.s", lang, s=s)
    if s < 3600:
        return t("dur.m", lang, m=s // 60)
    if s < 86400:
        return t("dur.hm", lang, h=s // 3600, m=s % 3600 // 60)
    return t("dur.dh", lang, d=s // 86400, h=s % 86400 // 3600)


def ago(s: float, lang: str) -> str:
    return t("just_now", lang) if s < 5 else t("ago", lang, d=duration(s, lang))


def clock(at: float, now: float) -> str:
    lt = time.localtime(at)
    fmt = "%H:%M" if now - at < 20 * 3600 else "%m-%d %H:%M"
    return time.strftime(fmt, lt)


def size_text(n: float) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def _state_label(state: str, lang: str) -> str:
    key = f"state.{state}"
    return t(key, lang) if state in KNOWN_STATES else t("state.unknown", lang, state=state)


def kind_name(kind: str | None, lang: str) -> str:
    if kind is None:
        return ""
    return t(f"kind.{kind}", lang) if has(f"kind.{kind}") else kind


def _cid(cid: Any, lang: str) -> str:
    return t("cid", lang, id=cid)


def _device_row(d: dict[str, Any], lang: str) -> str:
    """One row of the device table."""
    on = d["online"]
    kind = kind_name(d["kind"], lang)
    status = t("online_for" if on else "offline_for", lang, d=duration(d["for_s"], lang))
    return (f'<tr class="dev {"on" if on else "off"}" data-device="{esc(d["device"])}">'
            f'<td class="name">{esc(d["device"])}</td><td>{esc(kind)}</td>'
            f'<td><span class="badge">{"● " if on else "✕ "}'
            f'{esc(t("label.online" if on else "label.offline", lang))}</span> '
            f'<span class="for">{esc(status)}</span></td>'
            f'<td>{esc(ago(d["last_seen_age_s"], lang))}</td></tr>')


def _locker_html(lk: dict[str, Any], lang: str) -> str:
    """One locker's block: counts, what the courier must take out, the grid."""
    def tx(key: str, **kw: Any) -> str:
        return esc(t(key, lang, **kw))

    out = [f'<div class="locker" data-device="{esc(lk["device"])}">'
           f'<h3>{tx("locker.head", device=lk["device"])}</h3>']
    if not lk["online"]:
        out.append(f'<p class="note warn-text">✕ {tx("locker.offline_note")}</p>')
    if not lk["reported"]:
        out.append(f'<p class="none">{tx("no_lockers")}</p></div>')
        return "".join(out)
    counts = tx("locker.counts", total=lk["total"], free=lk["free"], parcels=lk["parcels"])
    out.append(f'<p class="counts">{counts}</p>')
    if lk["retrieval"]:
        sep = "、" if lang == "zh" else ", "
        items = sep.join(f'{_cid(r["id"], lang)}（{_state_label(r["state"], lang)}）' if lang == "zh"
                         else f'{_cid(r["id"], lang)} ({_state_label(r["state"], lang)})'
                         for r in lk["retrieval"])
        out.append(f'<p class="retrieval warn-text">{tx("locker.retrieval", items=items)}</p>')
    else:
        out.append(f'<p class="retrieval">{tx("locker.retrieval_none")}</p>')
    ob = lk["outbox"]
    if ob["pending"] and ob["capacity"]:
        pct = int(round(100 * (ob["used"] or 0) / ob["capacity"]))
        out.append(f'<p class="outbox">{tx("locker.outbox", n=int(ob["pending"]), pct=pct)}</p>')
    out.append('<ol class="grid">')
    for c in lk["compartments"]:
        st = c["state"]
        cls = st if st in KNOWN_STATES else "unknown"
        size = f'<span class="size">{esc(c["size"])}</span>' if c["size"] is not None else ""
        label = esc(_state_label(st, lang))
        out.append(f'<li class="c st-{cls}" title="{label}"><b>{esc(c["id"])}</b>{size}'
                   f'<em>{label}</em></li>')
    out.append("</ol></div>")
    return "".join(out)


def render_main(snap: dict[str, Any], lang: str, refresh_s: int) -> str:
    """The page body; also what /fragment returns for the live refresh."""
    now = snap["generated_at"]

    def tx(key: str, **kw: Any) -> str:
        return esc(t(key, lang, **kw))

    out: list[str] = []
    level, why = verdict(snap)
    symbol = {"ok": "✓", "warn": "!", "alarm": "‼"}[level]
    reasons = "".join(
        f"<li>{tx(k, **({'d': duration(kw['s'], lang)} if 's' in kw else kw))}</li>" for k, kw in why)
    out.append(f'<section class="overall lvl-{level}" data-level="{level}">'
               f'<span class="badge" aria-hidden="true">{symbol}</span>'
               f'<strong>{tx("overall." + level)}</strong>'
               f'{"<ul>" + reasons + "</ul>" if reasons else ""}</section>')
    s = snap["summary"]
    alarms_n = f'{s["alarms_24h"]}{"+" if s["alarms_24h_capped"] else ""}'
    tiles = [
        ("devices", tx("of", a=s["devices_online"], b=s["devices_total"]),
         "bad" if s["devices_online"] < s["devices_total"] else "good"),
        ("parcels", esc(s["parcels"]), "neutral"),
        ("alarms", esc(alarms_n), "bad" if s["alarms_24h"] else "good"),
        ("backlog", esc(snap["backlog"]["count"]),
         "warn" if snap["backlog"]["count"] and snap["backlog"]["oldest_age_s"] > BACKLOG_WARN_S
         else "neutral"),
    ]
    out.append('<section class="tiles">' + "".join(
        f'<div class="tile t-{tone}" id="tile-{name}"><span class="num">{val}</span>'
        f'<span class="cap">{tx("tile." + name)}</span></div>' for name, val, tone in tiles)
        + "</section>")

    # alarms
    out.append(f'<section id="alarms"><h2>{tx("sec.alarms")}</h2>')
    if snap["alarms"]:
        out.append('<ul class="alarms">')
        for a in snap["alarms"]:
            try:
                hot = a["age_s"] <= ALARM_RED_S
                out.append(
                    f'<li class="alarm {"hot" if hot else "old"}">'
                    f'<span class="badge">{tx("label.alarm")}</span>'
                    f'<span class="what">{esc(a["text"][lang])}</span>'
                    f'<span class="meta">{esc(kind_name(a["kind"], lang))} {esc(a["device"])} · '
                    f'{esc(clock(a["at"], now))} · {esc(ago(a["age_s"], lang))}</span>'
                    f"</li>")
            except Exception as e:  # noqa: BLE001 - a placeholder instead of a 500
                _bad_row("alarm", a.get("id") if isinstance(a, dict) else a, e)
                out.append(f'<li class="alarm hot"><span class="badge">{tx("label.alarm")}</span>'
                           f'<span class="what">{tx("alarm.unreadable")}</span></li>')
        out.append("</ul>")
    else:
        out.append(f'<p class="none good-text">✓ {tx("no_alarms")}</p>')
    out.append("</section>")

    # devices
    out.append(f'<section id="devices"><h2>{tx("sec.devices")}</h2>')
    if snap["devices"]:
        out.append(f'<table class="devices"><thead><tr><th>{tx("col.device")}</th>'
                   f'<th>{tx("col.kind")}</th><th>{tx("col.status")}</th>'
                   f'<th>{tx("col.seen")}</th></tr></thead><tbody>')
        for d in snap["devices"]:
            try:
                out.append(_device_row(d, lang))
            except Exception as e:  # noqa: BLE001
                _bad_row("device", d.get("device") if isinstance(d, dict) else d, e)
                out.append(f'<tr class="dev off"><td colspan="4">{tx("row.unreadable")}</td></tr>')
        out.append("</tbody></table>")
    else:
        out.append(f'<p class="none">{tx("no_devices")}</p>')
    out.append("</section>")

    # lockers
    out.append(f'<section id="lockers"><h2>{tx("sec.lockers")}</h2>')
    if not snap["lockers"]:
        out.append(f'<p class="none">{tx("no_lockers")}</p>')
    for lk in snap["lockers"]:
        try:
            out.append(_locker_html(lk, lang))
        except Exception as e:  # noqa: BLE001
            _bad_row("locker", lk.get("device") if isinstance(lk, dict) else lk, e)
            out.append(f'<div class="locker"><p class="none">{tx("row.unreadable")}</p></div>')
    out.append("</section>")

    # parcels
    out.append(f'<section id="parcels"><h2>{tx("sec.parcels")}</h2>')
    if snap["parcels"]:
        out.append(f'<table class="parcels"><thead><tr><th>{tx("col.when")}</th><th>{tx("col.what")}</th>'
                   f'<th>{tx("col.compartment")}</th><th>{tx("col.parcel")}</th></tr></thead><tbody>')
        for p in snap["parcels"]:
            try:
                key = f"evt.{p['type']}"
                what = t(key, lang) if has(key) else t("evt.unknown", lang, type=p["type"])
                cid = _cid(p["compartment"], lang) if "compartment" in p else ""
                out.append(f'<tr><td>{esc(clock(p["at"], now))} · {esc(ago(p["age_s"], lang))}</td>'
                           f'<td>{esc(what)}</td><td>{esc(cid)}</td>'
                           f'<td class="mono">{esc(p.get("parcel", ""))}</td></tr>')
            except Exception as e:  # noqa: BLE001
                _bad_row("parcel", p.get("id") if isinstance(p, dict) else p, e)
                out.append(f'<tr><td colspan="4">{tx("row.unreadable")}</td></tr>')
        out.append("</tbody></table>")
    else:
        out.append(f'<p class="none">{tx("no_parcels")}</p>')
    out.append("</section>")

    # sync
    b = snap["backlog"]
    out.append(f'<section id="sync"><h2>{tx("sec.sync")}</h2>')
    if b["count"]:
        behind = b["oldest_age_s"] > BACKLOG_WARN_S
        comma = "，" if lang == "zh" else ", "
        out.append(f'<p class="backlog{" warn-text" if behind else ""}">'
                   f'{tx("sync.backlog", n=b["count"], size=size_text(b["bytes"]))}{comma}'
                   f'{tx("sync.oldest", ago=ago(b["oldest_age_s"], lang))}</p>')
    else:
        out.append(f'<p class="backlog good-text">✓ {tx("sync.all_sent")}</p>')
    last = (ago(snap["last_sync_age_s"], lang) if snap["last_sync_age_s"] is not None
            else t("sync.never", lang))
    out.append(f'<p class="lastsync">{tx("sync.last", ago=last)}</p>')
    if b["count"]:
        out.append(f'<p class="note">{tx("sync.behind_note")}</p>')
    out.append("</section>")
    hms = time.strftime("%H:%M:%S", time.localtime(now))
    out.append(f'<p class="updated" data-clock="{esc(hms)}">{tx("updated", clock=hms, n=refresh_s)}</p>')
    return "".join(out)


CSS = """
:root{--ok:#1b7f3b;--ok-bg:#e3f4e8;--warn:#8a5a00;--warn-bg:#fff3d6;--bad:#b3261e;--bad-bg:#fde7e5;
--ink:#1a1a1a;--mute:#555;--line:#d0d0d0}
*{box-sizing:border-box}
body{margin:0;font:20px/1.45 system-ui,"Noto Sans CJK SC","WenQuanYi Micro Hei","Microsoft YaHei",
"PingFang SC",sans-serif;color:var(--ink);background:#f6f6f4}
header{display:flex;align-items:center;gap:1em;padding:.6em 1em;background:#0b4f8a;color:#fff}
header h1{margin:0;font-size:1.5em;flex:1}
header a{color:#fff;font-size:1.1em;border:2px solid #fff;border-radius:.4em;padding:.15em .6em;
text-decoration:none}
main{padding:0 1em 2em;max-width:1200px;margin:auto}
h2{font-size:1.35em;margin:1.2em 0 .4em;border-bottom:2px solid var(--line)}
h3{font-size:1.15em;margin:.6em 0 .2em}
.stale{background:var(--bad);color:#fff;padding:.6em 1em;font-weight:bold}
.overall{display:flex;flex-wrap:wrap;align-items:center;gap:.6em;margin-top:1em;padding:.6em 1em;
border-radius:.5em;font-size:1.3em;border:3px solid}
.overall ul{margin:0;padding-left:1.2em;font-size:.8em;flex-basis:100%}
.lvl-ok{background:var(--ok-bg);border-color:var(--ok)}.lvl-warn{background:var(--warn-bg);border-color:var(--warn)}
.lvl-alarm{background:var(--bad-bg);border-color:var(--bad)}
.badge{display:inline-block;font-weight:bold;color:#fff;border-radius:.35em;padding:0 .45em}
.lvl-ok .badge,.dev.on .badge{background:var(--ok)}.lvl-warn .badge,.alarm.old .badge{background:var(--warn)}
.lvl-alarm .badge,.alarm.hot .badge,.dev.off .badge{background:var(--bad)}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(11em,1fr));gap:.6em;margin-top:.8em}
.tile{background:#fff;border:2px solid var(--line);border-radius:.5em;padding:.5em .8em}
.tile .num{display:block;font-size:2.2em;font-weight:bold;line-height:1.1}
.tile .cap{color:var(--mute)}
.t-good .num{color:var(--ok)}.t-bad{border-color:var(--bad)}.t-bad .num{color:var(--bad)}
.t-warn{border-color:var(--warn)}.t-warn .num{color:var(--warn)}
ul.alarms{list-style:none;margin:0;padding:0}
.alarm{display:flex;flex-wrap:wrap;gap:.5em;align-items:baseline;padding:.4em .6em;margin:.3em 0;
background:#fff;border-left:.4em solid var(--warn)}
.alarm.hot{border-left-color:var(--bad);background:var(--bad-bg)}
.alarm .what{font-weight:bold;flex:1}.alarm .meta{color:var(--mute)}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:normal;color:var(--mute)}
.dev .name,.mono{font-family:ui-monospace,monospace}
.dev.off td{background:var(--bad-bg)}
.locker{background:#fff;border:1px solid var(--line);border-radius:.5em;padding:.4em .8em .8em;margin:.6em 0}
.counts{font-size:1.1em;margin:.2em 0}.retrieval,.outbox,.note{margin:.2em 0}
.grid{list-style:none;margin:.5em 0 0;padding:0;display:grid;gap:.3em;
grid-template-columns:repeat(auto-fill,minmax(5.2em,1fr))}
.c{border:2px solid var(--line);border-radius:.35em;padding:.15em .3em;background:#fff;font-size:.85em;
overflow-wrap:anywhere}
.c b{font-size:1.3em}.c .size{color:var(--mute);margin-left:.3em}
.c em{display:block;font-style:normal;max-height:2.9em;overflow:hidden}
.st-free{background:var(--ok-bg);border-color:var(--ok)}
.st-occupied,.st-reserved{background:#e6efff;border-color:#2f5fb3}
.st-overdue,.st-return_waiting,.st-inspect{background:var(--warn-bg);border-color:var(--warn);font-weight:bold}
.st-out_of_service,.st-unknown{background:#eee;border-color:#777}
.good-text{color:var(--ok)}.warn-text{color:var(--warn);font-weight:bold}
.none{color:var(--mute)}.updated{color:var(--mute);font-size:.85em;margin-top:2em}
"""

SCRIPT = """
(function(){
var main=document.getElementById('main'),stale=document.getElementById('stale'),
sc=document.getElementById('stale-clock'),every=%d*1000,lang=%s;
function tick(){
fetch('/fragment?lang='+lang,{cache:'no-store'}).then(function(r){
if(!r.ok){throw new Error(r.status);}return r.text();
}).then(function(h){main.innerHTML=h;stale.hidden=true;}).catch(function(){
var c=main.querySelector('[data-clock]');sc.textContent=c?c.getAttribute('data-clock'):'';stale.hidden=false;
}).then(function(){setTimeout(tick,every);});
}
setTimeout(tick,every);
})();
"""


def render_page(snap: dict[str, Any], lang: str, refresh_s: int, nonce: str) -> str:
    other = "en" if lang == "zh" else "zh"
    outlets = ", ".join(snap["outlets"])
    title = t("title", lang) + (" · " + t("outlet", lang, outlet=outlets) if outlets else "")
    stale = esc(t("stale", lang, clock="\x00")).replace("\x00", '<span id="stale-clock"></span>')
    return (
        "<!doctype html>"
        f'<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f'<noscript><meta http-equiv="refresh" content="{refresh_s}"></noscript>'
        f'<style nonce="{nonce}">{CSS}</style></head><body>'
        f'<header><h1>{esc(title)}</h1>'
        f'<a id="lang-switch" href="/?lang={other}" hreflang="{other}" title="{esc(t("switch_hint", lang))}">'
        f'{esc(t("switch", lang))}</a></header>'
        f'<div id="stale" class="stale" role="alert" hidden>{stale}</div>'
        f'<main id="main" aria-live="polite">{render_main(snap, lang, refresh_s)}</main>'
        f'<script nonce="{nonce}">{SCRIPT % (refresh_s, json.dumps(lang))}</script>'
        "</body></html>"
    )


# ---------------------------------------------------------------------- server

def refresh_gauges(store: EventStore) -> None:
    """Backlog and presence gauges straight from the store, at scrape time."""
    b = store.backlog()
    M.BACKLOG_EVENTS.set(b["count"])
    M.BACKLOG_BYTES.set(b["bytes"])
    M.OLDEST_UNSYNCED.set(b["oldest_age_s"])
    M.DEVICES_ONLINE.set(sum(1 for d in store.devices() if d["online"]))


TEXT_PLAIN = "text/plain; charset=utf-8"
JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
# A refused request whose unread body is bigger than this is answered and
# the connection closed: reading (even to discard) a megabyte nobody logged
# in for is what finding 4 was about. Smaller bodies are usually already in
# aiohttp's read buffer, and a clean keep-alive beats a reset for them.
DISCARD_MAX = 64 * 1024
READ_MAX = 16 * 1024  # bytes per socket read, and aiohttp's read buffer (it pauses at twice this)
BUSY_BODY = "网关正忙，请稍后重试 / Gateway busy, retry shortly\n".encode()
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 b"Retry-After: 5\r\nConnection: close\r\nCache-Control: no-store\r\n"
                 b"Content-Length: " + str(len(BUSY_BODY)).encode() + b"\r\n\r\n" + BUSY_BODY)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Busy(asyncio.Protocol):
    """Answers a connection beyond the cap with a fixed 503 and closes it,
    so the socket (and its file descriptor) is gone within one loop turn."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(BUSY_RESPONSE)
        transport.close()

    def data_received(self, data: bytes) -> None:
        """Ignored: the answer does not depend on the request."""


class GatewayHTTP:
    """The gateway's HTTP surface on aiohttp: the page, its JSON, /metrics,
    /healthz, photo uploads and command status, on one port.

    Why aiohttp rather than ``ThreadingHTTPServer`` (issue 11, finding 4):
    a thread per connection with no timeouts let 300 idle sockets pin 303
    threads, and a handler that read the whole body before looking at the
    login let 150 anonymous 1 MiB PUTs cost 160 MiB. Here one event loop
    holds every connection for a few KB each; the request and idle timeouts,
    the connection cap and the body limit are in one place; and a body is
    read only when a handler awaits it, which the upload routes do after
    the login. SQLite and file work (fsync, PBKDF2, JPEG decoding) runs on a
    small thread pool, so a slow disk never stalls the loop and the number
    of threads is fixed, whatever the clients do.
    为什么用 aiohttp：一个事件循环承载所有连接，超时、连接上限和请求体上限集中
    在一处；上传先验登录再读请求体；数据库和文件操作在固定大小的线程池里执行。
    """

    def __init__(self, db_path: Path, cfg: WebConfig) -> None:
        from gateway.http.commands import CommandAPI
        from gateway.http.uploads import UploadService

        self.db_path = Path(db_path)
        self.cfg = cfg
        self.uploads = UploadService(self.db_path, cfg.passwd_file, cfg.acl_file)
        self.commands = CommandAPI(self.db_path, self.uploads.creds)  # one password checker, one cache
        self.executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="postedge-web-db")
        # Requests in flight per connection, and since when a connection has
        # been idle: the connection cap evicts the longest-idle one, and the
        # sweeper closes any idle longer than ``idle_timeout_s`` (including
        # one that never finished its request line: slowloris).
        self.busy: dict[Any, int] = {}
        self.idle_since: dict[Any, float] = {}
        self._pending: set[Any] = set()
        self.body_read: set[int] = set()  # requests (by id) whose body a handler read
        self.runner: web.AppRunner | None = None

    # -- the app
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard],
                              client_max_size=self.uploads.limits.max_chunk + 64 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run SQLite/file/CPU work on the pool, never on the loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The request timeout, the busy/idle bookkeeping the connection cap
        and the idle sweep use, and: a refused request's body stays unread."""
        proto = request.protocol
        self.busy[proto] = self.busy.get(proto, 0) + 1
        self.idle_since.pop(proto, None)
        try:
            try:
                async with asyncio.timeout(self.cfg.request_timeout_s):
                    resp = await handler(request)
            except TimeoutError:
                WEB_REFUSED.labels("request_timeout").inc()
                resp = self._respond(request, 408, TEXT_PLAIN,
                                     "请求超时 / Request timed out\n".encode())
                resp.force_close()
        finally:
            read = id(request) in self.body_read
            self.body_read.discard(id(request))
            n = self.busy.get(proto, 1) - 1
            if n <= 0:
                self.busy.pop(proto, None)
                self.idle_since[proto] = time.monotonic()
            else:
                self.busy[proto] = n
        if request.can_read_body and not read and not resp.prepared:
            # Refused before its body was read: do not read it now either.
            length = request.content_length
            if length is None or length > DISCARD_MAX:
                resp.force_close()
        return resp

    def _respond(self, request: web.Request, code: int, ctype: str, body: bytes,
                 extra: dict[str, str] | None = None, nonce: str | None = None) -> web.Response:
        headers = {**(extra or {}), "Content-Type": ctype, "Cache-Control": "no-store",
                   "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                   "X-Frame-Options": "DENY", "Server": "postedge"}
        csp = "default-src 'none'; connect-src 'self'; base-uri 'none'; form-action 'none'; " \
              "frame-ancestors 'none'"
        if nonce:
            csp += f"; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'"
        headers["Content-Security-Policy"] = csp
        return web.Response(status=code, body=body, headers=headers)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        raw = request.rel_url.raw_path
        try:
            if path == "/v1/uploads" or path.startswith("/v1/uploads/"):
                return await self._upload(request, raw)
            if path == "/v1/commands" or path.startswith("/v1/commands/"):
                r = await self._blocking(self.commands.handle, request.method, raw, request.headers)
                return self._respond(request, r.code, JSON_TYPE, r.body, r.headers)
            if request.method not in ("GET", "HEAD"):
                return self._respond(request, 405, TEXT_PLAIN, b"method not allowed\n",
                                     {"Allow": "GET, HEAD"})
            lang = request.query.get("lang", self.cfg.lang)
            if lang not in LANGS:
                lang = self.cfg.lang
            return await self._page_route(request, path, lang)
        except Exception as e:  # noqa: BLE001 - a bug answers 500 and is logged, the server lives on

            record("web_error", path=path, error=repr(e), trace=traceback.format_exc(limit=5))
            resp = self._respond(request, 500, TEXT_PLAIN, b"internal error\n")
            resp.force_close()
            return resp

    async def _page_route(self, request: web.Request, path: str, lang: str) -> web.StreamResponse:
        routes: dict[str, Callable[[str], tuple[int, str, bytes, str | None]]] = {
            "/": self._page, "/index.html": self._page, "/fragment": self._fragment,
            "/api/status": self._api, "/metrics": self._metrics, "/healthz": self._healthz,
        }
        route = routes.get(path)
        if route is None:
            return self._respond(request, 404, TEXT_PLAIN,
                                 f'{t("err.not_found", "zh")} / {t("err.not_found", "en")}\n'.encode())
        try:
            code, ctype, body, nonce = await self._blocking(route, lang)
        except StoreUnavailable as e:
            code, ctype, body, nonce = (*self._unavailable(path, lang, str(e)), None)
        except sqlite3.Error as e:
            code, ctype, body, nonce = (*self._unavailable(path, lang, f"{type(e).__name__}: {e}"), None)
        return self._respond(request, code, ctype, body, nonce=nonce)

    async def _upload(self, request: web.Request, raw: str) -> web.StreamResponse:
        """Login and limits first (headers only), then the body, then the
        store: a refused request's body is never read (finding 4)."""
        up = self.uploads
        method = request.method
        pre = await self._blocking(up.admit, method, raw, request.headers)
        if not isinstance(pre, tuple):
            return self._respond(request, pre.code, JSON_TYPE, pre.body, pre.headers)
        principal, length = pre
        body = b""
        if length:
            try:
                body = await request.content.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The handheld died or walked out of Wi-Fi range mid-chunk:
                # nothing stored, nothing to answer.
                M.UPLOAD_CHUNKS.labels("truncated").inc()
                resp = self._respond(request, 400, TEXT_PLAIN, b"truncated body\n")
                resp.force_close()
                return resp
        self.body_read.add(id(request))
        r = await self._blocking(up.handle, method, raw, request.headers, principal, body)
        return self._respond(request, r.code, JSON_TYPE, r.body, r.headers)

    # -- page routes (run on the pool)
    def _snapshot(self) -> dict[str, Any]:
        store = ReadOnlyStore(self.db_path)
        try:
            return snapshot(store)
        finally:
            store.close()

    def _page(self, lang: str) -> tuple[int, str, bytes, str | None]:
        snap = self._snapshot()
        nonce = secrets.token_urlsafe(16)
        return 200, HTML_TYPE, render_page(snap, lang, self.cfg.refresh_s, nonce).encode(), nonce

    def _fragment(self, lang: str) -> tuple[int, str, bytes, str | None]:
        return 200, HTML_TYPE, render_main(self._snapshot(), lang, self.cfg.refresh_s).encode(), None

    def _api(self, lang: str) -> tuple[int, str, bytes, str | None]:
        return 200, JSON_TYPE, json.dumps(self._snapshot(), ensure_ascii=False).encode(), None

    def _metrics(self, lang: str) -> tuple[int, str, bytes, str | None]:
        try:
            store = ReadOnlyStore(self.db_path)
        except StoreUnavailable:
            store = None  # serve the last known values rather than fail the scrape
        if store is not None:
            try:
                refresh_gauges(store)
            except sqlite3.Error:
                pass  # same: the counters are still worth scraping
            finally:
                store.close()
        return 200, CONTENT_TYPE_LATEST, generate_latest(M.REGISTRY), None

    def _healthz(self, lang: str) -> tuple[int, str, bytes, str | None]:
        store = ReadOnlyStore(self.db_path)
        try:
            store.backlog()
        finally:
            store.close()
        return 200, TEXT_PLAIN, b"ok\n", None

    def _unavailable(self, path: str, lang: str, detail: str) -> tuple[int, str, bytes]:
        if path == "/api/status" or path == "/healthz":
            return 503, JSON_TYPE, json.dumps({"error": "store_unavailable", "detail": detail}).encode()
        msg = t("err.db", lang, detail=detail)
        if path == "/fragment":
            return 503, HTML_TYPE, f'<p class="stale">{esc(msg)}</p>'.encode()
        page = (f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head>'
                f'<meta charset="utf-8"><meta http-equiv="refresh" content="{self.cfg.refresh_s}">'
                f"<title>{esc(t('title', lang))}</title></head><body><h1>{esc(t('title', lang))}</h1>"
                f"<p>{esc(msg)}</p></body></html>")
        return 503, HTML_TYPE, page.encode()

    # -- connections
    def protocol_factory(self) -> asyncio.BaseProtocol:
        """aiohttp's own handler, unless the connection cap is reached: then
        the longest-idle connection is closed to make room (an idle
        keep-alive is cheap to reopen), and only if every connection is busy
        with a request is the newcomer answered 503."""
        assert self.runner is not None and self.runner.server is not None
        server = self.runner.server
        # force_close() drops the transport at once; the handler leaves
        # server.connections only after connection_lost, a turn later.
        conns = [h for h in server.connections if h.transport is not None]
        if len(conns) + len(self._pending) >= self.cfg.max_connections:
            victim = next((h for h in conns if h not in self.busy), None)
            if victim is None:
                WEB_REFUSED.labels("over_capacity").inc()
                return _Busy()
            WEB_REFUSED.labels("idle_evicted").inc()
            victim.force_close()
            self.idle_since.pop(victim, None)
        handler = server()
        # Counted here until connection_made has put it in server.connections.
        self._pending.add(handler)
        asyncio.get_running_loop().call_soon(self._settle, handler, 3)
        return handler

    def _settle(self, handler: Any, tries: int) -> None:
        """Once the transport exists (asyncio calls connection_made a loop
        turn after this factory), cap how much one socket read may pull in:
        asyncio reads 256 KiB at a time, so 150 strangers' bodies would be
        37 MiB in flight before their 401s; at ``READ_MAX`` a request is
        parsed from a few KB and its body waits in the kernel."""
        transport = handler.transport
        if transport is None and tries > 0:
            asyncio.get_running_loop().call_soon(self._settle, handler, tries - 1)
            return
        self._pending.discard(handler)
        if transport is not None and hasattr(transport, "max_size"):
            transport.max_size = READ_MAX

    async def sweep_idle(self) -> None:
        """Close connections idle (between requests, or never finishing a
        request head) for longer than ``idle_timeout_s``. aiohttp's own
        keep-alive timer does this too in recent versions; this sweep makes
        it true for every 3.x and for the slow request head as well."""
        assert self.runner is not None
        while True:
            await asyncio.sleep(min(1.0, self.cfg.idle_timeout_s / 4))
            server = self.runner.server
            if server is None:
                continue
            now = time.monotonic()
            live = server.connections
            known = set(live)
            for h in live:
                if h in self.busy:
                    continue
                since = self.idle_since.setdefault(h, now)
                if now - since > self.cfg.idle_timeout_s:
                    WEB_REFUSED.labels("idle_timeout").inc()
                    h.force_close()
                    self.idle_since.pop(h, None)
            for h in [h for h in self.idle_since if h not in known]:
                del self.idle_since[h]
            for h in [h for h in self.busy if h not in known]:
                del self.busy[h]

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.uploads.close()


class WebService(threading.Thread):
    """The web server's own thread and event loop; ends (and closes its
    socket and every connection) once ``stop`` is set. The gateway's ingest
    and sync are other threads: nothing here can block them, or they it."""

    def __init__(self, http: GatewayHTTP, sock: socket.socket, stop: threading.Event) -> None:
        super().__init__(name="postedge-web", daemon=True)
        self.http = http
        self.sock = sock
        self.stop_event = stop
        self._port = int(sock.getsockname()[1])
        self.error: BaseException | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def uploads(self) -> Any:
        return self.http.uploads

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 - recorded and logged; the gateway keeps ingesting
            self.error = e

            record("web_error", path="", error=repr(e), trace=traceback.format_exc(limit=5))
        finally:
            self.sock.close()
            self.http.close()

    async def _serve(self) -> None:
        cfg = self.http.cfg
        runner = web.AppRunner(self.http.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=2.0, keepalive_timeout=cfg.idle_timeout_s,
                               lingering_time=0, handler_cancellation=True,
                               max_line_size=8190, max_field_size=8190, read_bufsize=READ_MAX)
        self.http.runner = runner
        await runner.setup()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self.http.protocol_factory, sock=self.sock, backlog=BACKLOG)
        sweeper = asyncio.create_task(self.http.sweep_idle())
        try:
            while not self.stop_event.is_set():
                await asyncio.sleep(0.2)
        finally:
            sweeper.cancel()
            server.close()
            await runner.cleanup()


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen in the caller's thread (see ``start_web``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def start_web(db_path: Path | str, web_cfg: WebConfig | dict[str, Any], stop: threading.Event) -> WebService:
    """Validate ``[web]``, bind, and serve in a thread until ``stop`` is set.

    Binding happens here, not in the thread, so a taken port fails the
    gateway's start with a message naming ``web.port`` instead of leaving a
    gateway that runs without its page; connections that arrive before the
    loop runs wait in the listen backlog.
    """
    cfg = web_cfg if isinstance(web_cfg, WebConfig) else parse_web(web_cfg)
    try:
        sock = _listen(cfg.host, cfg.port)
    except OSError as e:
        raise ConfigError(f"web.host/web.port: cannot listen on {cfg.host}:{cfg.port}: {e}") from e
    svc = WebService(GatewayHTTP(Path(db_path), cfg), sock, stop)
    svc.start()

    host = cfg.host if ":" not in cfg.host else f"[{cfg.host}]"
    record("web_started", host=cfg.host, port=svc.port, url=f"http://{host}:{svc.port}/",
         max_connections=cfg.max_connections, idle_timeout_s=cfg.idle_timeout_s,
         request_timeout_s=cfg.request_timeout_s)
    return svc
