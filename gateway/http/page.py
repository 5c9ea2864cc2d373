"""The clerk's status page as HTML: a snapshot (``gateway/http/status.py``)
in, the page out, in Simplified Chinese or English.

The markup is in ``templates/`` (Jinja2, autoescaped): ``page.html`` is the
whole page with its inline style (``page.css``) and refresh script
(``refresh.js``), both carrying the per-response CSP nonce; ``main.html`` is
the body that ``/fragment`` returns for the live refresh; ``unavailable.html``
is what is shown when the store cannot be read. Text that devices sent is
escaped by the template engine wherever it is shown; nothing here builds
HTML from strings.

This module computes the words (durations, "5 min ago", clock times, state
and kind names) and lays out one row at a time: a row a device sent that
cannot be turned into words becomes ``None``, which the template shows as a
placeholder ("this entry cannot be shown"), never a 500 for the page.

Template sources are written one tag per line for reading; the line breaks
and the indentation at the start of each line are dropped when an ``.html``
template is loaded (``common.pages.OneLine``), so the page is sent as compact as it was
built by hand. A space that matters is written inside a line.
状态页的 HTML：模板在 templates/ 里，自动转义；这里只计算要显示的文字。
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.pages import page_env
from gateway.http.status import (
    ALARM_RED_S,
    BACKLOG_WARN_S,
    KNOWN_STATES,
    TEXT,
    bad_row,
    verdict,
)


def duration(s: float, lang: str) -> str:
    s = max(0, int(s))
    if s < 60:
        return TEXT.t("dur.s", lang, s=s)
    if s < 3600:
        return TEXT.t("dur.m", lang, m=s // 60)
    if s < 86400:
        return TEXT.t("dur.hm", lang, h=s // 3600, m=s % 3600 // 60)
    return TEXT.t("dur.dh", lang, d=s // 86400, h=s % 86400 // 3600)


def ago(s: float, lang: str) -> str:
    return TEXT.t("just_now", lang) if s < 5 else TEXT.t("ago", lang, d=duration(s, lang))


def clock(at: float, now: float) -> str:
    lt = time.localtime(at)
    fmt = "%H:%M" if now - at < 20 * 3600 else "%m-%d %H:%M"
    return time.strftime(fmt, lt)


def size_text(n: float) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def state_label(state: str, lang: str) -> str:
    key = f"state.{state}"
    return TEXT.t(key, lang) if state in KNOWN_STATES else TEXT.t("state.unknown", lang, state=state)


def kind_name(kind: str | None, lang: str) -> str:
    if kind is None:
        return ""
    return TEXT.t(f"kind.{kind}", lang) if TEXT.has(f"kind.{kind}") else kind


def _cid(cid: Any, lang: str) -> str:
    return TEXT.t("cid", lang, id=cid)


# ------------------------------------------------------------------ templates

ENV = page_env(Path(__file__).with_name("templates"), t=TEXT.t)
ENV.filters.update(ago=ago, duration=duration, size_text=size_text)


def _html_lang(lang: str) -> str:
    return "zh-CN" if lang == "zh" else "en"


# ----------------------------------------------------------------------- rows

def _rows(what: str, ident: str, items: list[Any], build: Callable[[Any], dict[str, Any]]) -> list[Any]:
    """``build`` for each row; ``None`` (the template's placeholder) for a row
    it fails on, counted and logged once by ``bad_row``."""
    out: list[Any] = []
    for item in items:
        try:
            out.append(build(item))
        except Exception as e:  # noqa: BLE001 - a placeholder instead of a 500
            bad_row(what, item.get(ident) if isinstance(item, dict) else item, e)
            out.append(None)
    return out


def _alarm_row(a: dict[str, Any], lang: str, now: float) -> dict[str, Any]:
    ack = a.get("ack")
    return {"hot": a["age_s"] <= ALARM_RED_S and not ack, "text": a["text"][lang],
            "kind": kind_name(a["kind"], lang), "device": a["device"], "clock": clock(a["at"], now),
            "ago": ago(a["age_s"], lang),
            "ack": None if not ack else TEXT.t(f"ack.{ack['state']}", lang, by=ack["by"],
                                                clock=clock(ack["at"], now))}


def _device_row(d: dict[str, Any], lang: str) -> dict[str, Any]:
    on = d["online"]
    if d.get("never"):  # provisioned, never connected
        return {"online": False, "device": d["device"], "kind": kind_name(d["kind"], lang),
                "status": TEXT.t("never_connected", lang), "seen": TEXT.t("sync.never", lang)}
    return {"online": on, "device": d["device"], "kind": kind_name(d["kind"], lang),
            "status": TEXT.t("online_for" if on else "offline_for", lang, d=duration(d["for_s"], lang)),
            "seen": ago(d["last_seen_age_s"], lang)}


def _locker(lk: dict[str, Any], lang: str) -> dict[str, Any]:
    """One locker's block: counts, what the courier must take out, the grid."""
    out: dict[str, Any] = {"device": lk["device"], "online": lk["online"], "reported": lk["reported"],
                           "head": TEXT.t("locker.head", lang, device=lk["device"])}
    if not lk["reported"]:
        return out
    out["counts"] = TEXT.t("locker.counts", lang, total=lk["total"], free=lk["free"], parcels=lk["parcels"])
    out["retrieval"] = None
    if lk["retrieval"]:
        sep = "、" if lang == "zh" else ", "
        items = sep.join(f'{_cid(r["id"], lang)}（{state_label(r["state"], lang)}）' if lang == "zh"
                         else f'{_cid(r["id"], lang)} ({state_label(r["state"], lang)})'
                         for r in lk["retrieval"])
        out["retrieval"] = TEXT.t("locker.retrieval", lang, items=items)
    ob = lk["outbox"]
    out["outbox"] = None
    if ob["pending"] and ob["capacity"]:
        pct = int(round(100 * (ob["used"] or 0) / ob["capacity"]))
        out["outbox"] = TEXT.t("locker.outbox", lang, n=int(ob["pending"]), pct=pct)
    out["compartments"] = [{"id": c["id"], "size": c["size"], "label": state_label(c["state"], lang),
                            "cls": c["state"] if c["state"] in KNOWN_STATES else "unknown"}
                           for c in lk["compartments"]]
    return out


def _parcel_row(p: dict[str, Any], lang: str, now: float) -> dict[str, Any]:
    key = f"evt.{p['type']}"
    what = TEXT.t(key, lang) if TEXT.has(key) else TEXT.t("evt.unknown", lang, type=p["type"])
    return {"clock": clock(p["at"], now), "ago": ago(p["age_s"], lang), "what": what,
            "cid": _cid(p["compartment"], lang) if "compartment" in p else "",
            # an outbound drop-off names its send order, not a parcel
            "parcel": p.get("parcel") or p.get("order", "")}


def _gw_device(d: dict[str, Any], lang: str) -> dict[str, Any]:
    """A device line on the console: the page's row words plus the badge's word; a
    provisioned device that never connected says so in its badge."""
    row = _device_row(d, lang)
    never = bool(d.get("never"))
    label = "never_connected" if never else "label.online" if row["online"] else "label.offline"
    seen = None if never else TEXT.t("gw.seen", lang, ago=ago(d["last_seen_age_s"], lang))
    return {**row, "never": never, "label": TEXT.t(label, lang), "seen": seen}


def gateway_view(snap: dict[str, Any], lang: str) -> dict[str, Any]:
    """The gateway itself in words, for the clerk's console beside its alarms: its
    broker link (up or down, since when), whether ``[upstream]`` is configured, its
    last successful upload, its backlog, and the devices counted from the provisioning
    inventory, so a device that never connected is listed as such.

    Made from the same snapshot as the status page (``status.snapshot``), never a
    second read of the store. Every string is made here, so the template
    (``templates/gateway.html``) can be included by any page."""
    now = snap["generated_at"]
    gw = snap.get("gateway") or {}
    lines: list[dict[str, str]] = []

    def line(name: str, tone: str, text: str) -> None:
        lines.append({"name": name, "tone": tone, "text": text})

    link = gw.get("broker")
    if link is None:
        line("broker", "neutral", TEXT.t("gw.broker_unknown", lang))
    else:
        key, tone = ("gw.broker_up", "good") if link["up"] else ("gw.broker_down", "bad")
        line("broker", tone, TEXT.t(key, lang, d=duration(link["for_s"], lang),
                                    clock=clock(link["since"], now)))
    upstream = gw.get("upstream")
    if upstream is False:
        line("upstream", "warn", TEXT.t("sync.not_configured", lang))
    elif upstream:
        line("upstream", "good", TEXT.t("gw.upstream_on", lang))
    last = snap.get("last_sync_at")
    if last is None:
        line("upload", "warn" if upstream else "neutral", TEXT.t("gw.last_upload_never", lang))
    else:
        line("upload", "neutral", TEXT.t("gw.last_upload", lang, ago=ago(snap["last_sync_age_s"], lang),
                                         clock=clock(last, now)))
    b = snap["backlog"]
    if b["count"]:
        behind = b["oldest_age_s"] > BACKLOG_WARN_S or upstream is False
        line("backlog", "warn" if behind else "neutral",
             TEXT.t("gw.backlog", lang, n=b["count"], size=size_text(b["bytes"]),
                    d=duration(b["oldest_age_s"], lang)))
    else:
        line("backlog", "good", TEXT.t("gw.backlog_none", lang))
    s = snap["summary"]
    never = s.get("devices_never", 0)
    if s["devices_total"]:
        counts = TEXT.t("gw.devices_never" if never else "gw.devices", lang, online=s["devices_online"],
                        total=s["devices_total"], never=never)
        counts_tone = "good" if s["devices_online"] == s["devices_total"] else "bad"
    else:
        counts, counts_tone = TEXT.t("no_devices", lang), "neutral"
    return {"head": TEXT.t("gw.head", lang), "lines": lines, "counts": counts, "counts_tone": counts_tone,
            "devices": _rows("device", "device", snap["devices"], lambda d: _gw_device(d, lang)),
            "unreadable": TEXT.t("row.unreadable", lang), "stale": TEXT.t("gw.stale", lang)}


def _main_context(snap: dict[str, Any], lang: str, refresh_s: int) -> dict[str, Any]:
    now = snap["generated_at"]
    level, why = verdict(snap)
    s = snap["summary"]
    b = snap["backlog"]
    behind = bool(b["count"]) and b["oldest_age_s"] > BACKLOG_WARN_S
    return {
        "lang": lang, "refresh_s": refresh_s,
        "level": level, "symbol": {"ok": "✓", "warn": "!", "alarm": "‼"}[level],
        "reasons": [TEXT.t(k, lang, **({"d": duration(kw["s"], lang)} if "s" in kw else kw))
                    for k, kw in why],
        "tiles": [
            {"name": "devices", "value": TEXT.t("of", lang, a=s["devices_online"], b=s["devices_total"]),
             "tone": "bad" if s["devices_online"] < s["devices_total"] else "good"},
            {"name": "parcels", "value": s["parcels"], "tone": "neutral"},
            {"name": "alarms", "value": f'{s["alarms_24h"]}{"+" if s["alarms_24h_capped"] else ""}',
             # Red only while an alarm nobody has acknowledged is among those shown.
             "tone": "bad" if any(not a.get("ack") for a in snap["alarms"]) and s["alarms_24h"]
             else "warn" if s["alarms_24h"] else "good"},
            {"name": "backlog", "value": b["count"], "tone": "warn" if behind else "neutral"},
        ],
        "alarms": _rows("alarm", "id", snap["alarms"], lambda a: _alarm_row(a, lang, now)),
        "devices": _rows("device", "device", snap["devices"], lambda d: _device_row(d, lang)),
        "lockers": _rows("locker", "device", snap["lockers"], lambda lk: _locker(lk, lang)),
        "parcels": _rows("parcel", "id", snap["parcels"], lambda p: _parcel_row(p, lang, now)),
        "backlog": b, "behind": behind, "last_sync_age_s": snap["last_sync_age_s"],
        "upstream": (snap.get("gateway") or {}).get("upstream"),
        "hms": time.strftime("%H:%M:%S", time.localtime(now)),
    }


# ---------------------------------------------------------------------- pages

def render_main(snap: dict[str, Any], lang: str, refresh_s: int) -> str:
    """The page body; also what /fragment returns for the live refresh."""
    return ENV.get_template("main.html").render(_main_context(snap, lang, refresh_s))


def render_page(snap: dict[str, Any], lang: str, refresh_s: int, nonce: str) -> str:
    """The whole page; ``nonce`` is the one in this response's CSP header."""
    outlets = ", ".join(snap["outlets"])
    title = TEXT.t("title", lang) + (" · " + TEXT.t("outlet", lang, outlet=outlets) if outlets else "")
    # The stale banner's clock is filled in by the script: split the text around it.
    before, _, after = TEXT.t("stale", lang, clock="\x00").partition("\x00")
    return ENV.get_template("page.html").render(
        _main_context(snap, lang, refresh_s), html_lang=_html_lang(lang), title=title, nonce=nonce,
        other="en" if lang == "zh" else "zh", stale_before=before, stale_after=after)


def render_unavailable(lang: str, detail: str, refresh_s: int, fragment: bool) -> str:
    """What the page (or its refresh) shows when the store cannot be read."""
    return ENV.get_template("unavailable.html").render(
        lang=lang, html_lang=_html_lang(lang), refresh_s=refresh_s, fragment=fragment,
        msg=TEXT.t("err.db", lang, detail=detail))
