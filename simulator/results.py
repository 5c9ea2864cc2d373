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

TIME_KEYS = ("expires", "deposited", "t", "at", "ts", "since", "until", "reserved_until", "exp")
# Left out of the trace hash with the times: a sealed code's bytes depend on
# the event id, whose incarnation a device draws at random on its first boot.
OPAQUE_KEYS = ("code_sealed",)



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
        return {k: _strip(x) for k, x in v.items() if k not in TIME_KEYS and k not in OPAQUE_KEYS}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


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
    ok = not wrong and texts >= by["gateway"] and bool(notices)
    detail = (f"{len(notices)} deposits: {by['platform']} by the platform, {by['gateway']} by the modem "
              f"({texts} texts)")
    if wrong:
        detail += "; not once: " + ", ".join(f"{d}={s}" for d, s in list(wrong.items())[:5])
    fields = {"deposits": len(notices), "platform": by["platform"], "modem": by["gateway"], "texts": texts,
              "wrong": [f"{d}={s}" for d, s in list(wrong.items())[:5]]}
    return {"name": "deposit_notified_once", "ok": ok, "detail": detail, "fields": fields}


def run_result(outlet: Outlet, wall_s: float) -> dict[str, Any]:
    """The result as of now (see ``docs/simulator.md``); ``wall_s`` is how long the run took.
    Records the gateway and central hops into ``outlet.ledger`` afresh on each call."""
    gw = gateway_ids(outlet)
    for hop in ("gateway", "central"):  # read from the stores again on every call
        outlet.ledger.clear(hop)
    gw_at = {}
    for eid, at in gw:
        if not eid.startswith("gw-"):
            outlet.ledger.record("gateway", eid, at)
            gw_at.setdefault(eid, at)
    # what the central service holds, read back from its store (once per event: it keeps one copy)
    central_at = outlet.central.received_at(outlet.outlet_id)
    held = outlet.central.held(outlet.outlet_id)
    central_events = [e for e in held.values() if not e["id"].startswith("gw-")]
    for eid, at in central_at.items():
        if not eid.startswith("gw-"):
            outlet.ledger.record("central", eid, at)
    failed = sum(1 for x in outlet.gw.lines if x.get("evt") == "store_failed")
    if failed:
        outlet.stats["gateway_store_failed"] = failed
    forgotten = [e for e in outlet.central.forgotten if not e.startswith("gw-")]  # devices' only
    if forgotten:
        outlet.stats["central_forgotten"] = len(forgotten)
    report = outlet.ledger.report()
    submitted = outlet.photos_submitted()
    domain = check_domain(central_events, photos_submitted=submitted or None, complete=False)
    lat: dict[str, dict[str, float]] = {}
    for hop, seen in (("broker", outlet.obs.broker_seen), ("gateway", gw_at), ("central", central_at)):
        xs = [(seen[e] - t0) * 1000 for e, t0 in outlet.obs.emitted.items() if e in seen and seen[e] >= t0]
        lat[hop] = {"n": len(xs), "p50_ms": round(_pct(xs, 0.5), 2), "p99_ms": round(_pct(xs, 0.99), 2)}
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
    kinds = {n: d.kind for n, d in outlet.devices.items()} | {n: "handheld" for n in outlet.hh}
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
            }
            for n, kind in kinds.items()
        ],
        "timeline": timeline,
        "backlog": outlet.backlog,
        "faults": fault_windows(outlet.sc.faults),
        "latency": lat,
        "ledger": report,
        "domain": domain.as_dict(),
        "expectations": exp,
        "stats": dict(outlet.stats),
        "refused": refused,
        "verdict": {"ok": not failures, "failures": failures},
    }
