"""What the clerk's status page shows, as plain data: the read model.

``snapshot`` reads the store (devices, lockers' state documents, alarms,
parcel events, the upload backlog) and returns one dict; the page
(``gateway/http/page.py``) and ``/api/status`` are both made from it, so they
cannot disagree. ``verdict`` turns it into the one word at the top of the
page. ``refresh_gauges`` sets the backlog and presence gauges for a scrape.

Nothing here renders or escapes: device-sent values are only cut to
``MAX_TEXT`` so a silly value cannot wreck the layout. A row a device sent
that cannot be read becomes a placeholder (``bad_row`` counts and logs it
once), never an error for the whole page.
网点状态页的数据：页面和 /api/status 都由 snapshot 生成。
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from common.clock import now as clock_now
from common.logs import recorder
from common.text import LANGS, beside, device_fields
from gateway import metrics as M
from gateway.broker import read_acl
from gateway.store import alarms_ack
from gateway.store.events import EventStore
from protocol.custody import HOLDS_PARCEL, RETRIEVAL

record = recorder(__name__)

# The page's text (gateway/http/text.toml); the page and the simulator's
# reports read it from here.
TEXT = beside(__file__)

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
                "out_of_service", "send_waiting")
# Parcel-event fields the page and API show, and nothing else of a body: a
# deposit's code travels only sealed (protocol/seal.py, `code_sealed`), and
# even the boxes stay off the screen.
CUSTODY_FIELDS = ("compartment", "parcel", "order", "reason")

BAD_ROWS = Counter("postedge_web_bad_rows", "Rows the status page showed as a placeholder because "
                   "they could not be rendered, by kind", ["row"], registry=M.REGISTRY)


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
    if TEXT.has(key) and kind_s not in _NOT_ALARM_KINDS:
        what = TEXT.t(key, lang, **{k: _text(v) for k, v in device_fields(body).items() if k != "alarm"})
    else:
        what = TEXT.t("alarm.unknown", lang, alarm=kind_s)
    cid = body.get("compartment")
    if cid is None:
        return what[:1].upper() + what[1:] if lang == "en" else what
    return TEXT.t("alarm.where", lang, id=_ident(cid)) + what


def alarm_text(body: dict[str, Any], lang: str) -> str:
    """An alarm event's body as the clerk reads it ("3 号格口：柜门被强行打开");
    ``postedge gateway status`` prints the same words as the page."""
    return _alarm_text(body, lang)


# Rows (alarms, parcels, devices, lockers) that could not be shown are
# logged once each, not on every 5 s refresh of every open page.
_BAD_ROWS_LOGGED: set[tuple[str, str]] = set()
_BAD_ROWS_LOCK = threading.Lock()


def bad_row(what: str, ident: Any, e: BaseException) -> None:
    """One row a device sent could not be turned into page data (here or
    on the page): count it, log it once, and let the caller show a
    placeholder. Never raises."""
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
            "text": {lang: TEXT.t("alarm.unreadable", lang) for lang in LANGS}}


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


@dataclass(frozen=True)
class Setup:
    """What the page knows of the gateway beyond its database: whether
    ``[upstream]`` is configured (None: not known, as for a tool), and the
    devices provisioning made logins for (the broker's ACL), so a device
    that never connected is counted and shown rather than invisible."""

    upstream: bool | None = None
    inventory: tuple[tuple[str, str], ...] = ()  # (device, kind)


def inventory(acl_text: str) -> tuple[tuple[str, str], ...]:
    """(device, kind) for every device login in the outlet broker's ACL, the
    provisioning inventory as the broker enforces it (the gateway's own login
    left out): the page and ``postedge gateway status`` count devices from it."""
    return tuple(sorted((u, k) for u, (k, _) in read_acl(acl_text).items() if k != "gateway"))


def broker_link(store: EventStore, now: float) -> dict[str, Any] | None:
    """The gateway's own link to the outlet broker, as its ingest wrote it
    (``broker_link``: up or down, and since when); None before it wrote one."""
    raw = store.get("broker_link")
    try:
        doc = json.loads(raw) if raw else None
        if not isinstance(doc, dict) or not isinstance(doc.get("up"), bool):
            return None
        since = float(doc.get("since", now))
    except (ValueError, TypeError):
        return None
    return {"up": doc["up"], "since": since, "for_s": round(max(0.0, now - since), 1)}


def snapshot(store: EventStore, now: float | None = None, parcel_ids: bool = False,
             setup: Setup | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain data; the page and /api/status
    are both made from this, so they cannot disagree.

    The public page (``/``, ``/api/status``: anyone on the outlet LAN) gets
    no parcel ids; the clerk console, behind its login, asks for them with
    ``parcel_ids=True`` (docs/gateway.md, "The clerk console"). Alarms a
    clerk acknowledged carry ``ack`` and no longer count as fresh."""
    now = clock_now() if now is None else now
    setup = setup or Setup()
    devices = store.devices()
    dev_out = [{"device": d["device"], "outlet": d["outlet"], "kind": d["kind"],
                "online": d["online"], "for_s": round(d["for_s"], 1), "never": False,
                "last_seen": d["last_seen"], "last_seen_age_s": round(max(0.0, now - d["last_seen"]), 1)}
               for d in devices]
    seen = {d["device"] for d in devices}
    for device, kind in setup.inventory:
        if device not in seen:  # provisioned, never connected
            dev_out.append({"device": device, "outlet": "", "kind": kind, "online": False, "for_s": 0.0,
                            "never": True, "last_seen": None, "last_seen_age_s": None})
    lockers = []
    for d in devices:
        if d["kind"] != "locker":
            continue
        try:
            lockers.append(_locker_view(d))
        except Exception as e:  # noqa: BLE001 - a state document no one foresaw: shown as "not reported"
            bad_row("locker", d.get("device"), e)
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
            bad_row("alarm", ev.get("id"), e)
            alarms.append(_placeholder_alarm(ev, now))
    alarms.sort(key=lambda a: a["at"], reverse=True)
    acks = alarms_ack.read(store.db, [a["id"] for a in alarms])
    for a in alarms:
        ack = acks.get(a["id"])
        # A clerk's note may name a parcel or a villager: console only.
        a["ack"] = ack if ack is None or parcel_ids else {k: v for k, v in ack.items() if k != "note"}
    parcels = []
    for ev in store.recent("custody", PARCELS_SHOWN):
        try:
            body = ev["body"] if isinstance(ev["body"], dict) else {}
            at = _event_time(ev, now)
            parcels.append({"id": ev["id"], "device": ev["device"], "type": ev["type"], "at": at,
                            "age_s": round(max(0.0, now - at), 1),
                            **{k: (_ident(body[k]) if k == "compartment" else _text(body[k]))
                               for k in CUSTODY_FIELDS if body.get(k) is not None
                               and (parcel_ids or k != "parcel")}})
        except Exception as e:  # noqa: BLE001
            bad_row("parcel", ev.get("id"), e)
    backlog = store.backlog()
    last_sync = _parse_last_sync(store.get("last_sync_at"))
    online = sum(1 for d in dev_out if d["online"])
    recent_alarms = sum(1 for a in alarms if a["age_s"] <= ALARM_WINDOW_S)
    return {
        "generated_at": now,
        "outlets": sorted({d["outlet"] for d in devices}),
        "summary": {"devices_online": online, "devices_total": len(dev_out),
                    "devices_never": sum(1 for d in dev_out if d["never"]),
                    "parcels": sum(lk["parcels"] for lk in lockers),
                    "alarms_24h": recent_alarms,
                    "alarms_24h_capped": recent_alarms >= ALARMS_SCANNED},
        "devices": dev_out,
        "lockers": lockers,
        "alarms": alarms[:ALARMS_SHOWN],
        "parcels": parcels,
        "backlog": {"count": backlog["count"], "bytes": backlog["bytes"],
                    "oldest_age_s": round(backlog["oldest_age_s"], 1)},
        "gateway": {"broker": broker_link(store, now), "upstream": setup.upstream},
        "last_sync_at": last_sync,
        "last_sync_age_s": None if last_sync is None else round(max(0.0, now - last_sync), 1),
    }


def verdict(snap: dict[str, Any]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The one-word state at the top of the page, and why."""
    why: list[tuple[str, dict[str, Any]]] = []
    # An alarm a clerk acknowledged is in hand: it no longer turns the page red.
    fresh_alarm = any(a["age_s"] <= ALARM_RED_S and not a.get("ack") for a in snap["alarms"])
    if fresh_alarm:
        why.append(("why.alarm", {}))
    gw = snap.get("gateway") or {}
    link = gw.get("broker")
    broker_down = link is not None and not link["up"]
    if broker_down:
        # The gateway's own link, not the devices': while it is down every
        # device looks silent, so the devices are not blamed for it.
        why.append(("why.broker_down", {"s": link["for_s"]}))
    never = snap["summary"].get("devices_never", 0)
    offline = snap["summary"]["devices_total"] - snap["summary"]["devices_online"] - never
    if offline and not broker_down:
        why.append(("why.offline", {"n": offline}))
    if never:
        why.append(("why.never", {"n": never}))
    if gw.get("upstream") is False:
        why.append(("why.no_upstream", {}))
    retrieval = sum(len(lk["retrieval"]) for lk in snap["lockers"])
    if retrieval:
        why.append(("why.retrieval", {"n": retrieval}))
    if snap["backlog"]["count"] and snap["backlog"]["oldest_age_s"] > BACKLOG_WARN_S:
        why.append(("why.backlog", {"s": snap["backlog"]["oldest_age_s"]}))
    if fresh_alarm:
        return "alarm", why
    return ("warn" if why else "ok"), why


def refresh_gauges(store: EventStore) -> None:
    """Backlog and presence gauges straight from the store, at scrape time."""
    b = store.backlog()
    M.BACKLOG_EVENTS.set(b["count"])
    M.BACKLOG_BYTES.set(b["bytes"])
    M.OLDEST_UNSYNCED.set(b["oldest_age_s"])
    M.DEVICES_ONLINE.set(sum(1 for d in store.devices() if d["online"]))

