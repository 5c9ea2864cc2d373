"""The run result: what a run did, judged, as one JSON-able dict.

Everything the reports show (``simulator/report``) comes from this dict:
the ledger hop by hop (the gateway and central hops read from their stores
here, the first two recorded by ``simulator/taps.py`` as the run went), the
domain rules over what the platform holds, latency per hop from device
emit, the scenario's expectations and the verdict, the per-device timeline,
the backlog samples and the fault windows. The trace hash covers the
events' content (device, type, body without times or incarnation), so the
same scenario and seed give the same hash.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections import Counter
from typing import Any

from gateway.broker import find_mosquitto
from gateway.store.events import EventStore
from protocol.canonical import dumps
from simulator.assembly import Outlet
from simulator.ledger import check_domain
from simulator.pybroker import amqtt_version
from simulator.snapshot import fault_windows

TIME_KEYS = ("expires", "deposited", "t", "at", "ts", "since", "until", "reserved_until", "exp", "taken_at",
             # a device's clock against the gateway's: two clocks read a moment apart in
             # real time, a second either way (a unix-port locker reads its own)
             "offset", "skew", "device_t", "gateway_t")
# Left out of the trace hash with the times: a sealed code's bytes depend on
# the event id, whose incarnation a device draws at random on its first boot.
OPAQUE_KEYS = ("code_sealed",)



#: Sources of the gateway's own events that are not named ``gw-...``: the
#: counter desk (``[counter] counter_id``). Like ``gw-`` ones they are not
#: device events: not on the ledger, not in the device domain rules.
OWN_SOURCES = ("counter",)


def own_event(eid: str) -> bool:
    """An event the gateway made itself (clerk, counter desk), not a device's."""
    return eid.startswith("gw-") or eid.split(":", 1)[0] in OWN_SOURCES


def refusals(stats: Counter[str] | dict[str, int]) -> dict[str, int]:
    """The workload's actions that did not happen, by ``<action>.<reason>``:
    a flow the device refused (``deposit.full``, ``pickup.locked_out``), a
    device that was down, an action that timed out, a pickup with no code to
    type. A run can pass with some (a full locker is real life); the report
    shows them all and a scenario can bound them."""
    out: dict[str, int] = {}
    for k, n in stats.items():
        if not n:
            continue
        if "_refused_" in k:
            action, reason = k.split("_refused_", 1)
        elif k.endswith("_device_down"):
            action, reason = k[: -len("_device_down")], "device_down"
        elif k.endswith("_timeout"):
            action, reason = k[: -len("_timeout")], "timeout"
        elif k == "pickup_no_code":
            action, reason = "pickup", "no_code"
        elif k == "intake_unanswered":
            action, reason = "intake", "unanswered"
        else:
            continue
        out[f"{action}.{reason}"] = out.get(f"{action}.{reason}", 0) + int(n)
    return dict(sorted(out.items()))

def broker_name() -> str:
    try:
        out = subprocess.run([find_mosquitto(), "-h"], capture_output=True, text=True, timeout=5).stdout
        first = out.splitlines()[0] if out else "mosquitto"
        return first.replace("mosquitto version", "mosquitto").strip()
    except (OSError, RuntimeError, IndexError, subprocess.SubprocessError):
        return "mosquitto"


def _strip(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _steps(x) if k == "steps" else _strip(x) for k, x in v.items()
                if k not in TIME_KEYS and k not in OPAQUE_KEYS}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


def _steps(v: Any) -> Any:
    """A board job's ``steps`` (``[[step, at], ...]``, handheld.job_submitted) without the times."""
    if isinstance(v, list):
        return [x[0] if isinstance(x, list) and x else _strip(x) for x in v]
    return _strip(v)


def trace_hash(events: list[dict[str, Any]]) -> str:
    """Content of the run, order- and time-free: the same seed, the same hash."""
    rows = sorted(
        dumps({"d": e["id"].split(":")[0], "type": e["type"], "body": _strip(e["body"])}) for e in events
    )
    return hashlib.sha256(b"\n".join(rows)).hexdigest()


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def gateway_ids(outlet: Outlet) -> list[tuple[str, float]]:
    """``(event id, received at)`` as the gateway stored them, in order."""
    s = EventStore(outlet.gw_db)
    try:
        return [(r[0], r[1]) for r in s.db.execute("SELECT id, received_at FROM events ORDER BY rowid")]
    finally:
        s.close()


def notified_once(outlet: Outlet) -> dict[str, Any]:
    """``deposit_notified_once``: every deposit the platform holds was told
    to its villager by exactly one sender, the platform or the outlet's
    modem (``Outlet.notices``), and the modem's texts match its
    ``notify.sent`` count. Counts go to the run's stats."""
    notices = outlet.notices()
    by = Counter(s for senders in notices.values() for s in senders)
    wrong = {d: s for d, s in notices.items() if len(s) != 1}
    texts = len(outlet.modem.texts()) if outlet.modem is not None else 0
    outlet.stats["notices_platform"] = by["platform"]
    outlet.stats["notices_modem"] = by["gateway"]
    outlet.stats["notices_none_picked_up"] = by["none"]
    outlet.stats["modem_texts"] = texts
    # The platform's contacts are the simulator's own, valid by construction: one
    # the gateway refused (signed on another clock, another key) leaves its
    # villager untold whenever the backhaul is down, which "none" would hide.
    refused = sum(1 for x in outlet.gw.lines if x.get("evt") == "notify_contact_refused")
    if refused:
        outlet.stats["gateway_contacts_refused"] = refused
    ok = not wrong and texts >= by["gateway"] and bool(notices) and not refused
    detail = (f"{len(notices)} deposits: {by['platform']} by the platform, {by['gateway']} by the modem "
              f"({texts} texts)")
    if refused:
        detail += f"; the gateway refused {refused} of the platform's contacts"
    if wrong:
        detail += "; not once: " + ", ".join(f"{d}={s}" for d, s in list(wrong.items())[:5])
    fields = {"deposits": len(notices), "platform": by["platform"], "modem": by["gateway"], "texts": texts,
              "contacts_refused": refused,
              "wrong": [f"{d}={s}" for d, s in list(wrong.items())[:5]]}
    return {"name": "deposit_notified_once", "ok": ok, "detail": detail, "fields": fields}


def platform_events(outlet: Outlet) -> list[dict[str, Any]]:
    """Every event the platform holds, the gateway's own (``gw-...``:
    counter acceptances, the clerk's actions) included. The one place the
    outlet-flow checks read the central side: re-point it at another
    central service here."""
    return list(outlet.central.held(outlet.outlet_id).values())


def outbound_dispatched_once(events: list[dict[str, Any]]) -> dict[str, Any]:
    """``outbound_dispatched_once``: every outbound item the outlet took in
    (``counter.accept`` by its waybill, ``locker.send_dropoff`` by its send
    order) was collected by the courier exactly once (``locker.send_collected``
    or an item of a ``handheld.bag_pickup``), and nothing was collected that
    was never taken in. Fails on a run with no outbound item at all."""
    accepted: dict[str, str] = {}
    dropped: set[str] = set()
    collected: Counter[str] = Counter()
    for ev in events:
        b = ev.get("body") or {}
        if ev["type"] == "counter.accept":
            accepted[str(b.get("waybill"))] = str(b.get("service"))
        elif ev["type"] == "locker.send_dropoff":
            dropped.add(str(b.get("order")))
        elif ev["type"] == "locker.send_collected":
            collected[str(b.get("order"))] += 1
        elif ev["type"] == "handheld.bag_pickup":
            for item in b.get("items") or []:
                collected[str(item)] += 1
    items = set(accepted) | dropped
    wrong = sorted(f"{i}=0" for i in items - set(collected))
    wrong += sorted(f"{i}={n}" for i, n in collected.items() if n != 1 and i in items)
    wrong += sorted(f"{i}=unknown" for i in set(collected) - items)
    charity = sum(1 for s in accepted.values() if s == "charity")
    fields = {"accepted": len(accepted), "charity": charity, "dropped": len(dropped),
              "collected": sum(collected.values()), "wrong": wrong[:5]}
    detail = (f"{len(accepted)} accepted at the counter ({charity} charity), {len(dropped)} dropped off, "
              f"{fields['collected']} collected" + (f"; not once: {', '.join(wrong[:5])}" if wrong else ""))
    return {"name": "outbound_dispatched_once", "ok": bool(items) and not wrong, "detail": detail,
            "fields": fields}


def alarms_handled(events: list[dict[str, Any]]) -> dict[str, Any]:
    """``alarms_handled``: every alarm a device raised was acknowledged and
    resolved by a clerk in the console (``gateway.alarm_acknowledged``,
    ``gateway.alarm_resolved`` naming it). Fails on a run without alarms."""
    raised = sorted(ev["id"] for ev in events if ev.get("cls") == "alarm" and not own_event(ev["id"]))
    acked = {str((ev.get("body") or {}).get("alarm_id")) for ev in events
             if ev["type"] == "gateway.alarm_acknowledged"}
    resolved = {str((ev.get("body") or {}).get("alarm_id")) for ev in events
                if ev["type"] == "gateway.alarm_resolved"}
    wrong = [a for a in raised if a not in resolved]
    fields = {"raised": len(raised), "acknowledged": len(acked & set(raised)),
              "resolved": len(resolved & set(raised)), "wrong": wrong[:5]}
    detail = (f"{len(raised)} alarms: {fields['acknowledged']} acknowledged, {fields['resolved']} resolved"
              + (f"; unresolved: {', '.join(wrong[:5])}" if wrong else ""))
    return {"name": "alarms_handled", "ok": bool(raised) and not wrong, "detail": detail, "fields": fields}


#: The events that end a door cycle the workload may leave open, by what opened it.
CLOSINGS = {"deposit": ("locker.deposit",), "pickup": ("locker.pickup", "locker.pickup_unconfirmed"),
            "retrieve": ("locker.retrieve", "locker.send_collected")}


def _seq(eid: str) -> tuple[str, str, int]:
    dev, inc, n = (eid.split(":") + ["", "0"])[:3]
    return dev, inc, int(n) if n.isdigit() else 0


def _same_door(ev: dict[str, Any], end: tuple[str, str, int], cid: Any) -> bool:
    """``ev`` is from the same locker incarnation as ``end`` and about compartment ``cid``."""
    return _seq(ev["id"])[:2] == end[:2] and (ev.get("body") or {}).get("compartment") == cid


def doors_left_open_alarmed(events: list[dict[str, Any]], left: list[dict[str, Any]]) -> dict[str, Any]:
    """``doors_left_open_alarmed``: every door the workload left open after
    a deposit, pickup or retrieval (``left``: device, after, and the
    ``parcel`` or send ``order`` the compartment held) raised exactly one
    ``door_left_open`` alarm between its opening (``locker.door``) and the
    event that closed its cycle, and a clerk resolved that alarm
    (``gateway.alarm_resolved``); no door shut in time raised one. Fails on
    a run where no door was left open. Ordered by the locker's own event
    sequence: the times of one action share a second."""
    resolved = {str((ev.get("body") or {}).get("alarm_id")) for ev in events
                if ev["type"] == "gateway.alarm_resolved"}
    alarms = [ev for ev in events if ev["type"] == "locker.alarm"
              and (ev.get("body") or {}).get("alarm") == "door_left_open"]
    wrong: list[str] = []
    explained: set[str] = set()
    alarmed = 0
    by: dict[str, int] = {}
    for d in left:
        after = str(d.get("after"))
        by[after] = by.get(after, 0) + 1
        key = "order" if d.get("order") else "parcel"
        dev, parcel = str(d.get("device")), str(d.get(key))
        close = [ev for ev in events if ev["type"] in CLOSINGS.get(after, ())
                 and ev["id"].startswith(dev + ":") and (ev.get("body") or {}).get(key) == parcel]
        if not close:
            wrong.append(f"{parcel}=not_closed")
            continue
        end = _seq(close[-1]["id"])
        cid = (close[-1].get("body") or {}).get("compartment")
        opens = [_seq(ev["id"])[2] for ev in events if ev["type"] == "locker.door"
                 and _same_door(ev, end, cid) and (ev.get("body") or {}).get("door") == "open"
                 and _seq(ev["id"])[2] < end[2]]
        start = max(opens, default=-1)
        inside = [ev["id"] for ev in alarms
                  if _same_door(ev, end, cid) and start < _seq(ev["id"])[2] < end[2]]
        explained.update(inside)
        if len(inside) != 1:
            wrong.append(f"{parcel}={len(inside)}")
            continue
        alarmed += 1
        if inside[0] not in resolved:
            wrong.append(f"{inside[0]}=unresolved")
    unexpected = sorted(ev["id"] for ev in alarms if ev["id"] not in explained)
    wrong += [f"{a}=shut_in_time" for a in unexpected]
    fields = {"left_open": len(left), "alarmed": alarmed,
              "resolved": sum(1 for ev in alarms if ev["id"] in explained and ev["id"] in resolved),
              "unexpected": len(unexpected), "wrong": wrong[:5],
              **{f"after_{k}": by.get(k, 0) for k in CLOSINGS}}
    detail = (f"{len(left)} doors left open ({', '.join(f'{n} after {k}' for k, n in sorted(by.items()))}): "
              f"{alarmed} raised one alarm, {fields['resolved']} resolved"
              + (f"; wrong: {', '.join(wrong[:5])}" if wrong else ""))
    return {"name": "doors_left_open_alarmed", "ok": bool(left) and not wrong, "detail": detail,
            "fields": fields}


def platform_boards(outlet: Outlet) -> dict[str, Any]:
    """The platform's 政讯通 registry, jobs, reviews and reports of this
    outlet (``central/boards.py``; a county's outlets share the platform),
    after a last review pass over what arrived."""
    boards = outlet.central.duties.boards
    boards.run_once()
    doc = boards.overview()
    return {k: v if k == "campaigns" else [r for r in v if r.get("outlet") == outlet.outlet_id]
            for k, v in doc.items()}


def board_jobs_reviewed(board: dict[str, Any], done: dict[str, Any]) -> dict[str, Any]:
    """``board_jobs_reviewed``: every 政讯通 job the handheld did
    (``done``: ``outlet.flows["boards"]``) was received and reviewed by the
    platform with the expected verdicts: each survey's site is in the
    registry (approved, then installed by the accepted install job), each
    submitted job is ``done``, each of its photos reviewed once and
    accepted for that job and step, each condition report recorded, each
    job the courier could not complete recorded as such with its reason;
    and each photo the handheld refused on the spot (``far_from_site``:
    taken too far from the board) never reached the platform; each far photo
    the handheld only flagged and sent (``far_sent``: its list gave no
    tolerance) was refused by the platform's own review as ``far_from_site``,
    once, and its job with it. Fails on a run without a submitted job or
    without either far photo."""
    jobs = {j["id"]: j for j in board.get("jobs", [])}
    sites = {s["id"]: s for s in board.get("sites", [])}
    reviews: dict[str, list[dict[str, Any]]] = {}
    for r in board.get("reviews", []):
        reviews.setdefault(str(r.get("sha")), []).append(r)
    reports = {(r.get("job"), r.get("cond")) for r in board.get("reports", [])}
    wrong: list[str] = []
    photos = accepted = 0
    for jid, d in sorted((done.get("jobs") or {}).items()):
        site = d.get("site")
        if d.get("kind") == "survey":
            s = sites.get(site)
            if s is None or s.get("status") not in ("approved", "installed"):
                wrong.append(f"{site}={'missing' if s is None else s.get('status')}")
        else:
            j = jobs.get(jid)
            if j is None or j.get("status") != "done":
                wrong.append(f"{jid}={'missing' if j is None else j.get('reason') or j.get('status')}")
            if d.get("kind") == "install" and (sites.get(site) or {}).get("status") != "installed":
                wrong.append(f"{site}=not_installed")
        for step, sha in sorted((d.get("photos") or {}).items()):
            photos += 1
            got = [r for r in reviews.get(sha, []) if r.get("step") == step]
            ok = [r for r in got if r.get("verdict") == "accepted" and r.get("reason") == "ok"]
            accepted += len(ok) == 1
            if len(got) != 1 or len(ok) != 1:
                why = got[0].get("reason") if len(got) == 1 else len(got)
                wrong.append(f"{jid}/{step}={why}")
    for rep in done.get("reports") or []:
        if (rep.get("job"), rep.get("condition")) not in reports:
            wrong.append(f"{rep.get('job')}/report=missing")
    for nd in done.get("not_done") or []:
        j = jobs.get(nd.get("job")) or {}
        if (j.get("status"), j.get("reason")) != ("could_not_complete", nd.get("reason")):
            wrong.append(f"{nd.get('job')}={j.get('reason') or j.get('status') or 'missing'}")
    far = [x for x in done.get("refused") or [] if x.get("code") == "far_from_site"]
    for x in far:  # refused on the handheld: no second photo of that step at the platform
        n = sum(1 for rs in reviews.values() for r in rs
                if r.get("job") == x.get("job") and r.get("step") == x.get("step"))
        if n != 1:
            wrong.append(f"{x.get('job')}/{x.get('step')}={n}")
    sent = done.get("far_sent") or []
    flagged = 0
    for x in sent:  # flagged on the handheld, sent: the platform's review is what refuses it
        got = [r for r in reviews.get(str(x.get("sha")), [])
               if r.get("job") == x.get("job") and r.get("step") == x.get("step")]
        j = jobs.get(x.get("job")) or {}
        seen = len(got) == 1 and (got[0].get("verdict"), got[0].get("reason")) == ("refused", "far_from_site")
        if not seen:
            why = got[0].get("reason") if len(got) == 1 else len(got)
            wrong.append(f"{x.get('job')}/{x.get('step')}={why}")
        if (j.get("status"), j.get("reason")) != ("refused", "far_from_site"):
            wrong.append(f"{x.get('job')}={j.get('reason') or j.get('status') or 'missing'}")
        elif seen:
            flagged += 1
    submitted = [j for j, d in (done.get("jobs") or {}).items() if d.get("kind") != "survey"]
    fields = {"sites": len(done.get("sites") or {}), "jobs": len(done.get("jobs") or {}), "photos": photos,
              "accepted": accepted, "reports": len(done.get("reports") or []),
              "not_done": len(done.get("not_done") or []), "far_refused": len(far), "far_flagged": flagged,
              "wrong": wrong[:5]}
    detail = (f"{fields['jobs']} board jobs ({fields['sites']} sites surveyed), {photos} photos, {accepted} "
              f"accepted by the platform's review, {fields['reports']} condition reports, "
              f"{fields['not_done']} could not be done, {len(far)} photo refused on the handheld as too far "
              f"from the board, {flagged} sent from too far and refused by the platform's review")
    if wrong:
        detail += f"; wrong: {', '.join(wrong[:5])}"
    ok = bool(submitted) and bool(far) and bool(sent) and not wrong
    return {"name": "board_jobs_reviewed", "ok": ok, "detail": detail, "fields": fields}


def returns_retrieved_once(events: list[dict[str, Any]]) -> dict[str, Any]:
    """``returns_retrieved_once``: every return dropped off at a locker
    (``locker.return_dropoff``) was retrieved by the courier exactly once
    (``locker.retrieve`` of that parcel from that locker, reason
    ``return_waiting``). Fails on a run without returns."""
    dropped: set[tuple[str, str]] = set()
    retrieved: Counter[tuple[str, str]] = Counter()
    for ev in events:
        b = ev.get("body") or {}
        dev = ev["id"].split(":", 1)[0]
        if ev["type"] == "locker.return_dropoff":
            dropped.add((dev, str(b.get("parcel"))))
        elif ev["type"] == "locker.retrieve" and b.get("reason") == "return_waiting":
            retrieved[(dev, str(b.get("parcel")))] += 1
    wrong = sorted(f"{p}={retrieved[(d, p)]}" for d, p in dropped if retrieved[(d, p)] != 1)
    wrong += sorted(f"{p}=unknown" for d, p in set(retrieved) - dropped)
    fields = {"returns": len(dropped), "retrieved": sum(retrieved.values()), "wrong": wrong[:5]}
    detail = f"{len(dropped)} returns dropped off, {fields['retrieved']} retrieved" + (
        f"; not once: {', '.join(wrong[:5])}" if wrong else "")
    return {"name": "returns_retrieved_once", "ok": bool(dropped) and not wrong, "detail": detail,
            "fields": fields}


def guessers_locked_out(events: list[dict[str, Any]], guessers: int) -> dict[str, Any]:
    """``guessers_locked_out``: the locker locked out each of the run's
    ``guessers`` (a ``lockout`` alarm each) after no more wrong codes than
    its budget (the ``code_guessing`` warning names it), and warned the
    clerk first. (No door opened for a guess: ``door_needs_authority``.)"""
    def alarm(ev: dict[str, Any], kind: str) -> bool:
        return ev.get("cls") == "alarm" and (ev.get("body") or {}).get("alarm") == kind

    lockouts = [ev for ev in events if alarm(ev, "lockout")]
    warnings = [ev for ev in events if alarm(ev, "code_guessing")]
    budget = max([int((w.get("body") or {}).get("budget") or 0) for w in warnings] or [0])
    wrong_codes = sum(1 for ev in events if ev["type"] == "locker.audit"
                      and (ev.get("body") or {}).get("what") == "pickup_attempt"
                      and (ev.get("body") or {}).get("result") == "wrong")
    over = [ev["id"] for ev in lockouts if int((ev.get("body") or {}).get("failures") or 0) > budget]
    fields = {"guessers": guessers, "lockouts": len(lockouts), "warnings": len(warnings), "budget": budget,
              "wrong_codes": wrong_codes, "wrong": over[:5]}
    ok = len(lockouts) >= guessers > 0 and len(warnings) >= guessers and not over
    detail = (f"{guessers} guessers: {len(lockouts)} lockouts after at most {budget} wrong codes, "
              f"{len(warnings)} warnings, {wrong_codes} wrong codes in all")
    return {"name": "guessers_locked_out", "ok": ok, "detail": detail, "fields": fields}


def platform_open_decisions(outlet: Outlet) -> dict[str, str]:
    """The platform's decisions on the clerks' remote-open requests: request
    id -> the id of the ``open`` command it signed (``central/clerk_requests.py``)."""
    return {d["event"]: d["cmd"] for d in outlet.central.duties.clerk_requests.decisions(outlet.outlet_id)
            if d["kind"] == "open" and d["verdict"] == "signed"}


def remote_opens_by_request(events: list[dict[str, Any]], decisions: dict[str, str]) -> dict[str, Any]:
    """``remote_opens_by_request``: every remote open a clerk requested
    (``gateway.clerk_request``, ``open``) that the platform signed opened
    its compartment exactly once (``locker.remote_open`` naming the
    command, from that locker and compartment), and no door opened
    remotely for a command no request asked for. Fails on a run without one."""
    requests = {ev["id"]: ev.get("body") or {} for ev in events
                if ev["type"] == "gateway.clerk_request" and (ev.get("body") or {}).get("request") == "open"}
    opens: Counter[str] = Counter()
    where: dict[str, tuple[str, Any]] = {}
    for ev in events:
        if ev["type"] == "locker.remote_open":
            cmd = str((ev.get("body") or {}).get("cmd"))
            opens[cmd] += 1
            where[cmd] = (ev["id"].split(":", 1)[0], (ev.get("body") or {}).get("compartment"))
    wrong = []
    for rid, b in sorted(requests.items()):
        cmd = decisions.get(rid)
        if cmd is None:
            wrong.append(f"{rid}=undecided")
        elif opens[cmd] != 1 or where.get(cmd) != (b.get("device"), b.get("compartment")):
            wrong.append(f"{rid}={opens[cmd]}")
    asked = {decisions[r] for r in requests if r in decisions}
    wrong += sorted(f"{c}=unrequested" for c in opens if c not in asked)
    fields = {"requests": len(requests), "opened": sum(opens[c] for c in asked), "wrong": wrong[:5]}
    detail = f"{len(requests)} remote opens requested, {fields['opened']} done" + (
        f"; not once: {', '.join(wrong[:5])}" if wrong else "")
    return {"name": "remote_opens_by_request", "ok": bool(requests) and not wrong, "detail": detail,
            "fields": fields}


ENTERS = ("locker.deposit", "locker.return_dropoff", "locker.send_dropoff")  # a parcel put into a compartment


def compartments_serviced(events: list[dict[str, Any]]) -> dict[str, Any]:
    """``compartments_serviced``: every compartment a supervisor asked to
    take out of service or put back (``gateway.clerk_request``) changed
    exactly once, on that locker and compartment, under the platform's
    signed ``service`` command (``locker.service`` names the request), and
    no parcel went into a compartment while it was out of service. Fails on
    a run without such a request."""
    asks = {"out_of_service", "in_service"}
    requests = {ev["id"]: ev.get("body") or {} for ev in events
                if ev["type"] == "gateway.clerk_request" and (ev.get("body") or {}).get("request") in asks}
    applied: Counter[str] = Counter()
    changes: dict[tuple[str, Any], list[tuple[int, str]]] = {}
    for ev in events:
        if ev["type"] != "locker.service":
            continue
        b = ev.get("body") or {}
        device = ev["id"].split(":", 1)[0]
        rb = requests.get(str(b.get("request")))
        if rb is not None and (rb.get("device"), rb.get("compartment"), rb.get("request")) == (
                device, b.get("compartment"), b.get("state")):
            applied[str(b.get("request"))] += 1
        at = int(ev.get("ts", 0))
        changes.setdefault((device, b.get("compartment")), []).append((at, str(b.get("state"))))
    wrong = [f"{rid}={applied[rid]}" for rid in sorted(requests) if applied[rid] != 1]
    inside = []
    for ev in events:
        if ev["type"] not in ENTERS:
            continue
        key = (ev["id"].split(":", 1)[0], (ev.get("body") or {}).get("compartment"))
        out = False
        for ts, state in sorted(changes.get(key, [])):
            if ts >= int(ev.get("ts", 0)):  # a change in the same second: not before it
                break
            out = state == "out_of_service"
        if out:
            inside.append(f"{ev['id']}=into_out_of_service")
    wrong += inside
    fields = {"requests": len(requests), "applied": sum(applied.values()), "entered_while_out": len(inside),
              "wrong": wrong[:5]}
    detail = f"{len(requests)} service changes requested, {fields['applied']} applied" + (
        f"; wrong: {', '.join(wrong[:5])}" if wrong else "")
    return {"name": "compartments_serviced", "ok": bool(requests) and not wrong, "detail": detail,
            "fields": fields}


def hand_delivered_once(events: list[dict[str, Any]]) -> dict[str, Any]:
    """``hand_delivered_once``: every parcel handed over at the door
    (``handheld.hand_delivery``) was taken into custody first (an intake at
    the counter or on the handheld), was handed over exactly once, and was
    not also put in a locker. Fails on a run without one."""
    taken = {str((ev.get("body") or {}).get("parcel")) for ev in events
             if ev["type"] in ("handheld.intake", "scanner.intake")}
    deposited = {str((ev.get("body") or {}).get("parcel")) for ev in events if ev["type"] == "locker.deposit"}
    handed: Counter[str] = Counter(str((ev.get("body") or {}).get("parcel")) for ev in events
                                   if ev["type"] == "handheld.hand_delivery")
    wrong = sorted(f"{p}={n}" for p, n in handed.items() if n != 1)
    wrong += sorted(f"{p}=not_taken_in" for p in handed if p not in taken)
    wrong += sorted(f"{p}=also_in_locker" for p in handed if p in deposited)
    fields = {"handed": sum(handed.values()),
              "taken_in": sum(1 for ev in events if ev["type"] == "handheld.intake"), "wrong": wrong[:5]}
    detail = f"{fields['handed']} handed over at the door, {fields['taken_in']} taken in on the handheld" + (
        f"; wrong: {', '.join(wrong[:5])}" if wrong else "")
    return {"name": "hand_delivered_once", "ok": bool(handed) and not wrong, "detail": detail,
            "fields": fields}


def permit_deposits_once(events: list[dict[str, Any]]) -> dict[str, Any]:
    """``permit_deposits_once``: every deposit permit a handheld forwarded
    (``handheld.forward_command`` carrying an op ``deposit``) put its parcel
    into the permit's locker exactly once (``locker.deposit`` naming the
    permit), and no deposit names a permit nobody forwarded. Fails on a run
    without one."""
    forwarded: dict[str, tuple[str, str]] = {}
    for ev in events:
        cmd = (ev.get("body") or {}).get("cmd") if ev["type"] == "handheld.forward_command" else None
        if isinstance(cmd, dict) and cmd.get("op") == "deposit":
            forwarded[str(cmd.get("id"))] = (str(cmd.get("dev")), str((cmd.get("args") or {}).get("parcel")))
    done: Counter[str] = Counter()
    where: dict[str, tuple[str, str]] = {}
    for ev in events:
        b = ev.get("body") or {}
        if ev["type"] == "locker.deposit" and b.get("permit"):
            done[str(b["permit"])] += 1
            where[str(b["permit"])] = (ev["id"].split(":", 1)[0], str(b.get("parcel")))
    wrong = sorted(f"{p}={done[p]}" for p in forwarded if done[p] != 1 or where.get(p) != forwarded[p])
    wrong += sorted(f"{p}=not_forwarded" for p in done if p not in forwarded)
    fields = {"permits": len(forwarded), "deposited": sum(done[p] for p in forwarded), "wrong": wrong[:5]}
    detail = f"{len(forwarded)} permits forwarded, {fields['deposited']} deposits under them" + (
        f"; wrong: {', '.join(wrong[:5])}" if wrong else "")
    return {"name": "permit_deposits_once", "ok": bool(forwarded) and not wrong, "detail": detail,
            "fields": fields}


def expired_retrieved_once(events: list[dict[str, Any]]) -> dict[str, Any]:
    """``expired_retrieved_once``: a parcel that expired in a locker
    (``locker.overdue``) left it at most once, by the courier's retrieval
    (``locker.retrieve``, reason ``overdue``) or by a late pickup, never
    both; and the courier retrieved nothing as expired that had not
    expired. Fails on a run where nothing expired or nothing was retrieved
    (the flow never ran). Parcels still inside at the end are counted."""
    overdue: set[tuple[str, str]] = set()
    retrieved: Counter[tuple[str, str]] = Counter()
    picked: Counter[tuple[str, str]] = Counter()
    for ev in events:
        b = ev.get("body") or {}
        key = (ev["id"].split(":", 1)[0], str(b.get("parcel")))
        if ev["type"] == "locker.overdue":
            overdue.add(key)
        elif ev["type"] == "locker.retrieve" and b.get("reason") == "overdue":
            retrieved[key] += 1
        elif ev["type"] == "locker.pickup":
            picked[key] += 1
    wrong = sorted(f"{p}={n}" for (_, p), n in retrieved.items() if n != 1)
    wrong += sorted(f"{p}=not_expired" for k, p in retrieved if (k, p) not in overdue)
    wrong += sorted(f"{p}=also_picked_up" for k, p in retrieved if picked[(k, p)])
    late = sum(1 for k in overdue if picked[k] and not retrieved[k])
    inside = sum(1 for k in overdue if not retrieved[k] and not picked[k])
    fields = {"expired": len(overdue), "retrieved": sum(retrieved.values()), "picked_late": late,
              "still_inside": inside, "wrong": wrong[:5]}
    detail = (f"{len(overdue)} expired: {fields['retrieved']} retrieved by the courier, {late} picked up "
              f"late, {inside} still inside" + (f"; wrong: {', '.join(wrong[:5])}" if wrong else ""))
    return {"name": "expired_retrieved_once", "ok": bool(overdue) and bool(retrieved) and not wrong,
            "detail": detail, "fields": fields}


#: ``expect.online_within_min`` when a scenario names none: wall-clock minutes
#: from the end of a fault until every device is online in the gateway again
#: (reconnecting runs on the wall clock in virtual runs too: simulator/presence_watch.py).
ONLINE_WITHIN_MIN = 10.0


def fault_ends(log: list[dict[str, Any]]) -> list[int]:
    """Indexes into a faults log of the moments a fault was over: its end
    edge, or the only edge of an instant fault (a broker restart, a gateway
    kill: no end edge follows its start)."""
    ends = []
    for i, rec in enumerate(log):
        if not rec.get("start"):
            ends.append(i)
        elif not any(not r.get("start") and r.get("kind") == rec.get("kind")
                     and r.get("detail") == rec.get("detail") for r in log[i + 1:]):
            ends.append(i)
    return ends


def back_online_after(samples: list[tuple[float, dict[str, bool]]], device: str, since: float,
                      until: float) -> float | None:
    """Seconds from ``since`` until ``device`` is online in the gateway and
    stays so through the last sample before ``until``; None if it never is."""
    start: float | None = None
    for at, view in samples:
        if at < since:
            continue
        on = bool(view.get(device))
        if at < until:  # an offline look before the next fault starts the wait again
            start = (at if start is None else start) if on else None
        else:  # not back by the next fault: the first online look after it
            if start is None and on:
                start = at
            if start is not None:
                break
    return None if start is None else max(0.0, start - since)


def uptime(samples: list[tuple[float, dict[str, bool]]], device: str) -> float:
    """The share of the run ``device`` was online in the gateway, from its
    first "online" there to the last sample (0 if never online)."""
    first = next((i for i, (_at, v) in enumerate(samples) if v.get(device)), None)
    if first is None:
        return 0.0
    span = samples[-1][0] - samples[first][0]
    if span <= 0:
        return 1.0
    up = sum(b[0] - a[0] for a, b in zip(samples[first:], samples[first + 1:], strict=False)
             if a[1].get(device))
    return round(up / span, 4)


def devices_back_online(samples: list[tuple[float, dict[str, bool]]], fault_at: list[float],
                        log: list[dict[str, Any]], devices: list[str], within_min: float,
                        final: dict[str, bool]) -> dict[str, Any]:
    """After every fault that ends, each device is online in the
    gateway again within ``within_min`` (wall minutes), and at the end every
    device is. ``samples``/``fault_at`` from ``simulator/presence_watch.py``;
    ``final`` the gateway's view at the end (devices absent from it never
    connected: offline)."""
    within_s = within_min * 60
    now = samples[-1][0] if samples else 0.0
    ends = [(fault_at[i] if i < len(fault_at) else now, log[i].get("kind", "?")) for i in fault_ends(log)]
    late: list[list[Any]] = []
    worst = 0.0
    for n, (at, kind) in enumerate(ends):
        nxt = ends[n + 1][0] if n + 1 < len(ends) else now + 1
        for d in devices:
            took = back_online_after(samples, d, at, nxt)
            if took is None or took > within_s:
                late.append([d, kind, None if took is None else round(took, 1)])
            else:
                worst = max(worst, took)
    offline = [d for d in devices if not final.get(d)]
    ok = not late and not offline
    within = int(within_min) if float(within_min).is_integer() else within_min
    late_words = ", ".join(f"{d} after {k}: {'never' if s is None else f'{s} s'}" for d, k, s in late[:5])
    detail = (f"{len(devices)} devices back online within {within} min of {len(ends)} fault ends "
              f"(slowest {round(worst, 1)} s), all online at the end" if ok else
              f"offline at the end: {', '.join(offline) or '-'}; not back within {within} min: "
              f"{late_words or '-'}")
    return {"name": "devices_back_online", "ok": ok, "detail": detail,
            "fields": {"devices": len(devices), "within_min": within, "faults": len(ends),
                       "worst_s": round(worst, 1), "offline": offline, "late": late[:10]}}


def presence_result(outlet: Outlet, devices: list[str]) -> tuple[dict[str, Any] | None, dict[str, float]]:
    """The ``devices_back_online`` expectation and each device's uptime in
    the gateway, from the run's presence watch (None: no devices, or no watch)."""
    watch = outlet.presence_watch
    if watch is None or not devices:
        return None, {}
    watch.sample()  # the gateway's view at the end
    samples, fault_at = watch.snapshot()
    final = samples[-1][1] if samples else {}
    within = float(outlet.sc.expect.get("online_within_min", ONLINE_WITHIN_MIN))
    check = devices_back_online(samples, fault_at, outlet.faults_log, devices, within, final)
    return check, {d: uptime(samples, d) for d in devices}


def flow_checks(outlet: Outlet) -> list[dict[str, Any]]:
    """The outlet flows' domain checks the scenario's workload exercises;
    their counts go to the run's stats too."""
    sc = outlet.sc
    events = platform_events(outlet)
    out = []
    if sc.counter_parcels + sc.charity_parcels + sc.send_dropoffs:
        out.append(outbound_dispatched_once(events))
    if sc.returns:
        out.append(returns_retrieved_once(events))
    if sc.guessers:
        out.append(guessers_locked_out(events, sc.guessers))
    if sc.hand_deliveries and sc.handhelds:
        out.append(hand_delivered_once(events))
    if sc.pickup_days:
        out.append(expired_retrieved_once(events))
    if sc.permit_deposits and sc.handhelds:
        out.append(permit_deposits_once(events))
    if sc.remote_opens:
        out.append(remote_opens_by_request(events, platform_open_decisions(outlet)))
    if sc.out_of_service:
        out.append(compartments_serviced(events))
    if sc.board_sites and sc.handhelds:
        out.append(board_jobs_reviewed(platform_boards(outlet), outlet.flows.get("boards", {})))
    if sc.door_left_open_rate > 0:
        out.append(doors_left_open_alarmed(events, list(outlet.flows.get("doors_left_open", []))))
    if sc.forced_doors or sc.guessers or sc.door_left_open_rate > 0:
        out.append(alarms_handled(events))
    for x in out:
        for k, v in x["fields"].items():
            if isinstance(v, int):
                outlet.stats[f"{x['name']}.{k}"] = v
    return out


def run_result(outlet: Outlet, wall_s: float) -> dict[str, Any]:
    """The result as of now (see ``docs/simulator.md``); ``wall_s`` is how long the run took.
    Records the gateway and central hops into ``outlet.ledger`` afresh on each call."""
    gw = gateway_ids(outlet)
    for hop in ("gateway", "central"):  # read from the stores again on every call
        outlet.ledger.clear(hop)
    gw_at = {}
    for eid, at in gw:
        if not own_event(eid):
            outlet.ledger.record("gateway", eid, at)
            gw_at.setdefault(eid, at)
    # what the central service holds, read back from its store (once per event: it keeps one copy)
    central_at = outlet.central.received_at(outlet.outlet_id)
    held = outlet.central.held(outlet.outlet_id)
    central_events = [e for e in held.values() if not own_event(e["id"])]
    for eid, at in central_at.items():
        if not own_event(eid):
            outlet.ledger.record("central", eid, at)
    failed = sum(1 for x in outlet.gw.lines if x.get("evt") == "store_failed")
    if failed:
        outlet.stats["gateway_store_failed"] = failed
    forgotten = [e for e in outlet.central.forgotten if not own_event(e)]  # devices' only
    if forgotten:
        outlet.stats["central_forgotten"] = len(forgotten)
    report = outlet.ledger.report()
    submitted = outlet.photos_submitted()
    domain = check_domain(central_events, photos_submitted=submitted or None, complete=False)
    lat: dict[str, dict[str, float]] = {}
    for hop, seen in (("broker", outlet.obs.broker_seen), ("gateway", gw_at), ("central", central_at)):
        xs = [(seen[e] - t0) * 1000 for e, t0 in outlet.obs.emitted.items() if e in seen and seen[e] >= t0]
        lat[hop] = {"n": len(xs), "p50_ms": round(_pct(xs, 0.5), 2), "p99_ms": round(_pct(xs, 0.99), 2)}
    # a virtual run measures on the scenario's clock (common/clock.py), which moves a window at a time
    lat_clock = {"clock": "simulated", "window_s": outlet.sc.window_min * 60} if outlet.clock.virtual \
        else {"clock": "wall"}
    refused = refusals(outlet.stats)
    exp = []
    e = outlet.sc.expect
    if e.get("ledger", True):
        bad_hops = list(report["failing_hops"]) or ([] if report["ok"] else ["end_to_end"])
        exp.append(
            {"name": "ledger_ok", "ok": bool(report["ok"]), "detail": ", ".join(report["failing_hops"]),
             "fields": {"hops": bad_hops}}
        )
    if e.get("domain", True):
        exp.append(
            {"name": "domain_ok", "ok": domain.ok, "detail": "" if domain.ok else domain.summary(),
             "fields": {"rules": [c.name for c in domain.checks if not c.ok]}}
        )
    if submitted:
        arrived = outlet.central.photos()
        missing = [x for x in submitted if x not in arrived]
        exp.append(
            {
                "name": "photos_arrived",
                "ok": not missing,
                "detail": f"{len(submitted) - len(missing)}/{len(submitted)} photo files at the platform",
                "fields": {"got": len(submitted) - len(missing), "want": len(submitted)},
            }
        )
    if "min_central_events" in e:
        exp.append(
            {
                "name": "min_central_events",
                "ok": len(central_events) >= e["min_central_events"],
                "detail": f"{len(central_events)} >= {e['min_central_events']}",
                "fields": {"got": len(central_events), "want": e["min_central_events"]},
            }
        )
    if "max_lost" in e:
        lost = report["end_to_end"]["lost"] if "end_to_end" in report else 0
        exp.append(
            {"name": "max_lost", "ok": lost <= e["max_lost"], "detail": f"{lost} <= {e['max_lost']}",
             "fields": {"got": lost, "want": e["max_lost"]}}
        )
    if e.get("max_refused") is not None:
        n = sum(refused.values())
        exp.append({"name": "max_refused", "ok": n <= e["max_refused"],
                    "detail": f"{n} <= {e['max_refused']}", "fields": {"got": n, "want": e["max_refused"]}})
    for reason, most in sorted((e.get("max_refused_by") or {}).items()):
        n = refused.get(reason, 0)
        exp.append({"name": "max_refused_by", "ok": n <= most, "detail": f"{reason}: {n} <= {most}",
                    "fields": {"reason": reason, "got": n, "want": most}})
    if outlet.sc.notify.get("enabled"):
        exp.append(notified_once(outlet))
    exp.extend(flow_checks(outlet))
    kinds = {n: d.kind for n, d in outlet.devices.items()} | {n: "handheld" for n in outlet.hh}
    presence_check, up = presence_result(outlet, list(kinds))
    if presence_check is not None:
        exp.append(presence_check)
    per_dev = Counter(eid.split(":")[0] for eid in outlet.obs.emitted)
    timeline = sorted(
        (
            {
                "t": (env["ts"] - outlet.sc.start)
                if outlet.sc.mode == "virtual"
                else env["ts"] - outlet.t0_real,
                "device": env["id"].split(":")[0],
                "type": env["type"],
                "id": env["id"],
                "cls": env["cls"],
            }
            for env in outlet.obs.events.values()
        ),
        key=lambda x: x["t"],
    )
    failures = [x["name"] for x in exp if not x["ok"]]
    return {
        "scenario": outlet.sc.name,
        "seed": outlet.sc.seed,
        "broker": broker_name() if outlet.broker_kind == "mosquitto" else amqtt_version(),
        "time_mode": outlet.sc.mode,
        "wall_s": round(wall_s, 3),
        "virtual_s": outlet.sc.duration_s,
        "trace_hash": trace_hash(central_events),
        "devices": [
            {
                "device": n,
                "kind": kind,
                "events": per_dev.get(n, 0),
                # MQTT and HTTPS over TLS, verifying the outlet CA (handhelds on Mosquitto)
                "tls": kind == "handheld" and outlet.hh_tls,
                "online": [
                    [a, b if b is not None else outlet.sc.duration_s] for a, b in outlet.obs.online.get(n, [])
                ],
                # share of the run online in the gateway (devices_back_online)
                "uptime": up.get(n),
            }
            for n, kind in kinds.items()
        ],
        "timeline": timeline,
        "backlog": outlet.backlog,
        "faults": fault_windows(outlet.sc.faults),
        "latency": lat, "latency_clock": lat_clock,
        "ledger": report,
        "domain": domain.as_dict(),
        "expectations": exp,
        "stats": dict(outlet.stats),
        "refused": refused,
        "verdict": {"ok": not failures, "failures": failures},
    }
