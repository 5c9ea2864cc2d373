"""The outlet clerk's status page, its JSON, and the Prometheus scrape.

Served by the gateway process itself with the standard library's
``ThreadingHTTPServer``: an outlet box has no internet, no reverse proxy and
little RAM, and four read-only routes do not need a framework. Everything
the page needs (CSS, the refresh script) is inline, so nothing is fetched
from anywhere.

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

Each request opens its own read-only SQLite connection: WAL lets it read
while ingest commits, and a read-only handle means no bug on this page can
change what the gateway stores. Text that devices sent (state documents,
alarm and parcel bodies) is escaped wherever it is shown, and a
Content-Security-Policy with a per-response nonce stops any script that is
not ours from running, should an escape ever be missed.
"""

from __future__ import annotations

import html
import json
import secrets
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from firmware.locker.compartments import HOLDS_PARCEL, RETRIEVAL
from gateway import metrics as M
from gateway.config import ConfigError
from gateway.store import EventStore
from gateway.web_text import LANGS, has, t

KEYS = ("host", "port", "lang", "refresh_s", "passwd_file", "acl_file")
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


@dataclass(frozen=True)
class WebConfig:
    """The ``[web]`` table. ``port = 0`` takes any free port (tests); the
    port actually bound is logged as ``web_started``."""

    host: str = "127.0.0.1"
    port: int = 8080
    lang: str = "zh"
    refresh_s: int = 5
    # Mosquitto's password file (and ACL, default: ``acl`` beside it): photo
    # uploads log in with the handheld's broker account. Unset: uploads 503.
    passwd_file: str | None = None
    acl_file: str | None = None


def parse_config(web: dict[str, Any]) -> WebConfig:
    """Validate ``[web]``; every error names its key (``web.port ...``)."""
    if not isinstance(web, dict):
        raise ConfigError("web must be a table")
    unknown = sorted(set(web) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join('web.' + k for k in unknown)}; "
                          f"known: {', '.join(KEYS)}")
    d = WebConfig()
    host = web.get("host", d.host)
    if not isinstance(host, str) or not host.strip():
        raise ConfigError(f"web.host must be a non-empty string, got {host!r}")
    port = web.get("port", d.port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"web.port must be an integer 0-65535, got {port!r}")
    lang = web.get("lang", d.lang)
    if lang not in LANGS:
        raise ConfigError(f"web.lang must be one of {', '.join(LANGS)}, got {lang!r}")
    refresh = web.get("refresh_s", d.refresh_s)
    if not isinstance(refresh, int) or isinstance(refresh, bool) or not 1 <= refresh <= 3600:
        raise ConfigError(f"web.refresh_s must be an integer 1-3600 (seconds), got {refresh!r}")
    files: dict[str, str | None] = {}
    for k in ("passwd_file", "acl_file"):
        v = web.get(k)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise ConfigError(f"web.{k} must be a file path, got {v!r}")
        files[k] = v
    if files["acl_file"] and not files["passwd_file"]:
        raise ConfigError("web.acl_file given without web.passwd_file")
    return WebConfig(host=host.strip(), port=port, lang=lang, refresh_s=refresh, **files)


# ---------------------------------------------------------------- store access

class StoreUnavailable(RuntimeError):
    pass


class ReadOnlyStore(EventStore):
    """The gateway's store through a read-only connection.

    Subclassed rather than re-queried so the page reads exactly what
    ``EventStore`` means by devices, backlog and recent events; only the
    connection differs (``mode=ro``, ``query_only``, no migrations)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).resolve()
        if not self.path.exists():
            raise StoreUnavailable(f"{self.path} does not exist")
        try:
            self.db = sqlite3.connect(self.path.as_uri() + "?mode=ro", uri=True,
                                      isolation_level=None, check_same_thread=False, timeout=5)
        except sqlite3.Error as e:
            raise StoreUnavailable(str(e)) from e
        try:
            self.db.execute("PRAGMA query_only=1")
            self.db.execute("PRAGMA busy_timeout=5000")
            version = self.schema_version
        except sqlite3.Error as e:
            self.db.close()
            raise StoreUnavailable(str(e)) from e
        if version < 2:
            self.db.close()
            raise StoreUnavailable(f"schema version {version}, the gateway has not migrated it yet")


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


def _alarm_text(body: dict[str, Any], lang: str) -> str:
    kind = body.get("alarm")
    kind_s = _text(kind) if kind is not None else "?"
    key = f"alarm.{kind_s}"
    if has(key):
        what = t(key, lang, **{k: _text(v) for k, v in body.items() if k != "alarm"})
    else:
        what = t("alarm.unknown", lang, alarm=kind_s)
    cid = body.get("compartment")
    if cid is None:
        return what[:1].upper() + what[1:] if lang == "en" else what
    return t("alarm.where", lang, id=_ident(cid)) + what


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
    lockers = [_locker_view(d) for d in devices if d["kind"] == "locker"]
    kinds = {d["device"]: d["kind"] for d in devices}
    alarms = []
    for ev in store.recent("alarm", ALARMS_SCANNED):
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
    alarms.sort(key=lambda a: a["at"], reverse=True)
    parcels = []
    for ev in store.recent("custody", PARCELS_SHOWN):
        body = ev["body"] if isinstance(ev["body"], dict) else {}
        at = _event_time(ev, now)
        parcels.append({"id": ev["id"], "device": ev["device"], "type": ev["type"], "at": at,
                        "age_s": round(max(0.0, now - at), 1),
                        **{k: (_ident(body[k]) if k == "compartment" else _text(body[k]))
                           for k in CUSTODY_FIELDS if body.get(k) is not None}})
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
            hot = a["age_s"] <= ALARM_RED_S
            out.append(
                f'<li class="alarm {"hot" if hot else "old"}">'
                f'<span class="badge">{tx("label.alarm")}</span>'
                f'<span class="what">{esc(a["text"][lang])}</span>'
                f'<span class="meta">{esc(kind_name(a["kind"], lang))} {esc(a["device"])} · '
                f'{esc(clock(a["at"], now))} · {esc(ago(a["age_s"], lang))}</span>'
                f"</li>")
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
            on = d["online"]
            kind = kind_name(d["kind"], lang)
            status = t("online_for" if on else "offline_for", lang, d=duration(d["for_s"], lang))
            out.append(
                f'<tr class="dev {"on" if on else "off"}" data-device="{esc(d["device"])}">'
                f'<td class="name">{esc(d["device"])}</td><td>{esc(kind)}</td>'
                f'<td><span class="badge">{"● " if on else "✕ "}'
                f'{tx("label.online" if on else "label.offline")}</span> '
                f'<span class="for">{esc(status)}</span></td>'
                f'<td>{esc(ago(d["last_seen_age_s"], lang))}</td></tr>')
        out.append("</tbody></table>")
    else:
        out.append(f'<p class="none">{tx("no_devices")}</p>')
    out.append("</section>")

    # lockers
    out.append(f'<section id="lockers"><h2>{tx("sec.lockers")}</h2>')
    if not snap["lockers"]:
        out.append(f'<p class="none">{tx("no_lockers")}</p>')
    for lk in snap["lockers"]:
        out.append(f'<div class="locker" data-device="{esc(lk["device"])}">'
                   f'<h3>{tx("locker.head", device=lk["device"])}</h3>')
        if not lk["online"]:
            out.append(f'<p class="note warn-text">✕ {tx("locker.offline_note")}</p>')
        if not lk["reported"]:
            out.append(f'<p class="none">{tx("no_lockers")}</p></div>')
            continue
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
    out.append("</section>")

    # parcels
    out.append(f'<section id="parcels"><h2>{tx("sec.parcels")}</h2>')
    if snap["parcels"]:
        out.append(f'<table class="parcels"><thead><tr><th>{tx("col.when")}</th><th>{tx("col.what")}</th>'
                   f'<th>{tx("col.compartment")}</th><th>{tx("col.parcel")}</th></tr></thead><tbody>')
        for p in snap["parcels"]:
            key = f"evt.{p['type']}"
            what = t(key, lang) if has(key) else t("evt.unknown", lang, type=p["type"])
            cid = _cid(p["compartment"], lang) if "compartment" in p else ""
            out.append(f'<tr><td>{esc(clock(p["at"], now))} · {esc(ago(p["age_s"], lang))}</td>'
                       f'<td>{esc(what)}</td><td>{esc(cid)}</td>'
                       f'<td class="mono">{esc(p.get("parcel", ""))}</td></tr>')
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


class StatusServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], db_path: Path, cfg: WebConfig) -> None:
        from gateway.command_api import CommandAPI
        from gateway.uploads import UploadService

        self.db_path = Path(db_path)
        self.cfg = cfg
        self.uploads = UploadService(self.db_path, cfg.passwd_file, cfg.acl_file)
        self.commands = CommandAPI(self.db_path, self.uploads.creds)  # one password checker, one cache
        super().__init__(addr, StatusHandler)

    def server_close(self) -> None:
        super().server_close()
        self.uploads.close()


class StatusHandler(BaseHTTPRequestHandler):
    server: StatusServer
    server_version = "postedge-status"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: the page polls every few seconds,
        which would bury the gateway's own log lines."""

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_POST(self) -> None:
        self._upload("POST")

    def do_PUT(self) -> None:
        self._upload("PUT")

    def _upload(self, method: str) -> None:
        """Everything under /v1/uploads goes to gateway/uploads.py."""
        self._nonce = None
        path = urlsplit(self.path).path
        if path != "/v1/uploads" and not path.startswith("/v1/uploads/"):
            self.close_connection = True  # a body we did not read may follow
            self._send(405, "text/plain; charset=utf-8", b"method not allowed\n", False)
            return
        self.connection.settimeout(30)  # a handheld gone mid-chunk must not hold a thread
        try:
            r = self.server.uploads.handle(method, path, self.headers, self.rfile)
        except Exception as e:
            from gateway.ingest import emit

            emit("web_error", path=path, error=repr(e), trace=traceback.format_exc(limit=5))
            self.close_connection = True
            self._send(500, "text/plain; charset=utf-8", b"internal error\n", False)
            return
        if r.close:
            self.close_connection = True
        if r.code:
            self._send(r.code, "application/json; charset=utf-8", r.body, method == "HEAD", r.headers)

    def _dispatch(self, head: bool) -> None:
        self._nonce: str | None = None
        url = urlsplit(self.path)
        if url.path == "/v1/uploads" or url.path.startswith("/v1/uploads/"):
            self._upload("HEAD" if head else "GET")
            return
        if url.path == "/v1/commands" or url.path.startswith("/v1/commands/"):
            r = self.server.commands.handle("HEAD" if head else "GET", url.path, self.headers)
            self._send(r.code, "application/json; charset=utf-8", r.body, head, r.headers)
            return
        q = parse_qs(url.query)
        cfg = self.server.cfg
        lang = q.get("lang", [cfg.lang])[0]
        if lang not in LANGS:
            lang = cfg.lang
        routes: dict[str, Callable[[str], tuple[int, str, bytes]]] = {
            "/": self._page, "/index.html": self._page, "/fragment": self._fragment,
            "/api/status": self._api, "/metrics": self._metrics, "/healthz": self._healthz,
        }
        route = routes.get(url.path)
        try:
            if route is None:
                code, ctype, body = 404, "text/plain; charset=utf-8", (
                    f'{t("err.not_found", "zh")} / {t("err.not_found", "en")}\n').encode()
            else:
                code, ctype, body = route(lang)
        except StoreUnavailable as e:
            code, ctype, body = self._unavailable(url.path, lang, str(e))
        except sqlite3.Error as e:
            code, ctype, body = self._unavailable(url.path, lang, f"{type(e).__name__}: {e}")
        except Exception as e:
            from gateway.ingest import emit

            emit("web_error", path=url.path, error=repr(e), trace=traceback.format_exc(limit=5))
            code, ctype, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        self._send(code, ctype, body, head)

    def _send(self, code: int, ctype: str, body: bytes, head: bool,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        csp = "default-src 'none'; connect-src 'self'; base-uri 'none'; form-action 'none'; " \
              "frame-ancestors 'none'"
        if self._nonce:
            csp += f"; style-src 'nonce-{self._nonce}'; script-src 'nonce-{self._nonce}'"
        self.send_header("Content-Security-Policy", csp)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _snapshot(self) -> dict[str, Any]:
        store = ReadOnlyStore(self.server.db_path)
        try:
            return snapshot(store)
        finally:
            store.close()

    def _page(self, lang: str) -> tuple[int, str, bytes]:
        snap = self._snapshot()
        self._nonce = secrets.token_urlsafe(16)
        body = render_page(snap, lang, self.server.cfg.refresh_s, self._nonce)
        return 200, "text/html; charset=utf-8", body.encode()

    def _fragment(self, lang: str) -> tuple[int, str, bytes]:
        body = render_main(self._snapshot(), lang, self.server.cfg.refresh_s)
        return 200, "text/html; charset=utf-8", body.encode()

    def _api(self, lang: str) -> tuple[int, str, bytes]:
        body = json.dumps(self._snapshot(), ensure_ascii=False)
        return 200, "application/json; charset=utf-8", body.encode()

    def _metrics(self, lang: str) -> tuple[int, str, bytes]:
        try:
            store = ReadOnlyStore(self.server.db_path)
        except StoreUnavailable:
            store = None  # serve the last known values rather than fail the scrape
        if store is not None:
            try:
                refresh_gauges(store)
            finally:
                store.close()
        return 200, CONTENT_TYPE_LATEST, generate_latest(M.REGISTRY)

    def _healthz(self, lang: str) -> tuple[int, str, bytes]:
        store = ReadOnlyStore(self.server.db_path)
        try:
            store.backlog()
        finally:
            store.close()
        return 200, "text/plain; charset=utf-8", b"ok\n"

    def _unavailable(self, path: str, lang: str, detail: str) -> tuple[int, str, bytes]:
        if path == "/api/status" or path == "/healthz":
            return 503, "application/json; charset=utf-8", json.dumps(
                {"error": "store_unavailable", "detail": detail}).encode()
        msg = t("err.db", lang, detail=detail)
        if path == "/fragment":
            return 503, "text/html; charset=utf-8", f'<p class="stale">{esc(msg)}</p>'.encode()
        page = (f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head>'
                f'<meta charset="utf-8"><meta http-equiv="refresh" content="{self.server.cfg.refresh_s}">'
                f"<title>{esc(t('title', lang))}</title></head><body><h1>{esc(t('title', lang))}</h1>"
                f"<p>{esc(msg)}</p></body></html>")
        return 503, "text/html; charset=utf-8", page.encode()


class WebService(threading.Thread):
    """The serving thread; ends (and closes its socket) once ``stop`` is set."""

    def __init__(self, httpd: StatusServer, stop: threading.Event) -> None:
        super().__init__(name="postedge-web", daemon=True)
        self.httpd = httpd
        self.stop_event = stop

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def run(self) -> None:
        watcher = threading.Thread(target=self._watch, name="postedge-web-stop", daemon=True)
        watcher.start()
        try:
            self.httpd.serve_forever(poll_interval=0.25)
        finally:
            self.httpd.server_close()

    def _watch(self) -> None:
        self.stop_event.wait()
        self.httpd.shutdown()


def start_web(db_path: Path | str, web: dict[str, Any], stop: threading.Event) -> WebService:
    """Validate ``[web]``, bind, and serve in a thread until ``stop`` is set.

    Binding happens here, not in the thread, so a taken port fails the
    gateway's start with a message naming ``web.port`` instead of leaving a
    gateway that runs without its page.
    """
    cfg = parse_config(web)
    try:
        httpd = StatusServer((cfg.host, cfg.port), Path(db_path), cfg)
    except OSError as e:
        raise ConfigError(f"web.host/web.port: cannot listen on {cfg.host}:{cfg.port}: {e}") from e
    svc = WebService(httpd, stop)
    svc.start()
    from gateway.ingest import emit

    host = cfg.host if ":" not in cfg.host else f"[{cfg.host}]"
    emit("web_started", host=cfg.host, port=svc.port, url=f"http://{host}:{svc.port}/")
    return svc
