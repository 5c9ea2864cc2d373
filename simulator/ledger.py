"""The delivery ledger and the domain checkers: the simulator's verdict.

Delivery. Every event id (`<device>:<incarnation>:<seq>`) is recorded at each
hop it passes, in the order the hop saw it: device -> broker -> gateway ->
central by default. Each hop is judged against the hop before it, the way
Jepsen's queue checkers judge a queue against what was enqueued:

- lost: seen at the previous hop, never at this one;
- duplicated: seen more than once at this hop (ids; `extra_copies` counts copies);
- unexpected: seen at this hop but never at the source (the first hop);
- skipped: seen here and at the source but not at the previous hop (that hop's
  observation has a gap, or something bypassed it);
- reordered: per device and incarnation, the events that arrive here after an
  event that left the previous hop later. Each late event counts once (the
  "arrived after a higher one" count, not the number of inversions), and
  only the first copy of an id counts. At the source the reference is the
  sequence number itself.

An end-to-end line compares the last hop with the source (sequence order as
the reference) because that is the invariant the design promises: every
event delivered upstream exactly once, per-device order kept. Judging hop by
hop as well says *where* it broke. Some hops may break a rule by design (the
broker hop of QoS 1 is at-least-once); `tolerate` names those, and the counts
are still reported.

Domain. Separate checkers read the domain events the locker firmware emits
(envelopes as in `firmware/locker/app.py`): each parcel ends in exactly one
final state, no compartment holds two parcels, no door opens without a valid
code, a courier session or a signed command, door states stay consistent,
every photo submitted arrives once.

Pure (no I/O, no clock unless the caller leaves out `t`) and linear: 100k
events across four hops take a fraction of a second.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_HOPS = ("device", "broker", "gateway", "central")
KINDS = ("lost", "duplicated", "unexpected", "skipped", "reordered")

_Key = tuple[str, str]  # (device, incarnation): one sequence


@dataclass
class HopResult:
    """One hop judged against the previous hop (or, for the source, alone)."""

    hop: str
    previous: str | None
    observations: int
    unique: int
    lost: list[str]
    duplicated: dict[str, int]  # id -> times seen (> 1)
    unexpected: list[str]
    skipped: list[str]
    reordered: list[str]
    bad_ids: list[str]
    tolerated: frozenset[str] = frozenset()

    def counts(self) -> dict[str, int]:
        return {"lost": len(self.lost), "duplicated": len(self.duplicated),
                "extra_copies": sum(self.duplicated.values()) - len(self.duplicated),
                "unexpected": len(self.unexpected), "skipped": len(self.skipped),
                "reordered": len(self.reordered), "bad_ids": len(self.bad_ids)}

    @property
    def failures(self) -> list[str]:
        c = self.counts()
        return [k for k in KINDS if c[k] and k not in self.tolerated]

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self, examples: int = 10) -> dict[str, Any]:
        d: dict[str, Any] = {"hop": self.hop, "previous": self.previous,
                             "observations": self.observations, "unique": self.unique}
        d.update(self.counts())
        d["ok"] = self.ok
        d["tolerated"] = sorted(self.tolerated)
        d["examples"] = {"lost": self.lost[:examples], "duplicated": list(self.duplicated)[:examples],
                         "unexpected": self.unexpected[:examples], "skipped": self.skipped[:examples],
                         "reordered": self.reordered[:examples], "bad_ids": self.bad_ids[:examples]}
        return d


class Ledger:
    """Observations of event ids per hop, and the verdict on them.

    `record` may be called from several threads (paho callbacks, the
    proxy's loop): appends happen under a lock. Order at a hop is the order
    of `t`; when `t` is left out it is the time of the call, so recording
    in arrival order is enough.
    """

    def __init__(self, hops: Iterable[str] = DEFAULT_HOPS,
                 tolerate: Mapping[str, Iterable[str]] | None = None) -> None:
        self.hops = tuple(hops)
        if len(self.hops) < 1 or len(set(self.hops)) != len(self.hops):
            raise ValueError("hops must be distinct and at least one")
        self.tolerate = {h: frozenset(v) for h, v in (tolerate or {}).items()}
        unknown = set(self.tolerate) - set(self.hops) - {"end_to_end"}
        if unknown:
            raise ValueError(f"tolerate names unknown hops {sorted(unknown)}")
        self._obs: dict[str, list[tuple[float, str]]] = {h: [] for h in self.hops}
        self._lock = threading.Lock()

    def record(self, hop: str, event_id: str, t: float | None = None) -> None:
        """One sighting of event_id at hop."""
        obs = self._obs[hop]  # KeyError for a hop the ledger does not know
        with self._lock:
            obs.append((time.monotonic() if t is None else t, event_id))

    def record_many(self, hop: str, event_ids: Iterable[str], t: float | None = None) -> None:
        """Sightings in arrival order, all at (or just after) time t."""
        base = time.monotonic() if t is None else t
        obs = self._obs[hop]
        with self._lock:
            obs.extend((base, e) for e in event_ids)

    def clear(self, hop: str) -> None:
        """Forget a hop's sightings, so a hop read from a store at the end
        can be read again without counting twice."""
        with self._lock:
            self._obs[hop].clear()

    def seen(self, hop: str) -> list[str]:
        """Ids at hop in arrival order (with repeats)."""
        with self._lock:
            obs = list(self._obs[hop])
        obs.sort(key=lambda o: o[0])  # stable: equal times keep recording order
        return [e for _, e in obs]

    # ---- the verdict
    def analyze(self) -> tuple[list[HopResult], HopResult]:
        """Per-hop results and the end-to-end result (last hop vs source)."""
        seen = {h: self.seen(h) for h in self.hops}
        parsed = _parse_all(set().union(*seen.values()))
        src_hop = self.hops[0]
        src_order = list(dict.fromkeys(seen[src_hop]))
        src_rank = {e: parsed[e][1] for e in src_order if e in parsed}
        src_set = set(src_order)
        results: list[HopResult] = []
        prev_order = src_order
        prev_rank = src_rank
        for k, hop in enumerate(self.hops):
            ids = seen[hop]
            if k == 0:
                r = _judge(hop, None, ids, [], src_set, src_set, src_rank, False, parsed,
                           self.tolerate.get(hop, frozenset()))
                order = src_order
            else:
                r = _judge(hop, self.hops[k - 1], ids, prev_order, set(prev_order), src_set, prev_rank,
                           True, parsed, self.tolerate.get(hop, frozenset()))
                order = list(dict.fromkeys(ids))
            results.append(r)
            prev_order = order
            prev_rank = {e: i for i, e in enumerate(order)}
        last = self.hops[-1]
        # Against the source: by sequence number; when the source itself kept
        # sequence order, its positions say the same per device and allow
        # the fast path.
        if results[0].reordered:
            ref, positional = src_rank, False
        else:
            ref, positional = {e: i for i, e in enumerate(src_order)}, True
        e2e = _judge(last, src_hop, seen[last], src_order, src_set, src_set, ref, positional, parsed,
                     self.tolerate.get("end_to_end", frozenset()))
        return results, e2e

    def report(self, examples: int = 10) -> dict[str, Any]:
        """A JSON-able verdict; `examples` caps each list of ids."""
        hops, e2e = self.analyze()
        failing = [h.hop for h in hops if not h.ok]
        ok = not failing and e2e.ok
        d = e2e.as_dict(examples)
        d["hop"] = "end_to_end"
        return {"ok": ok, "hops": list(self.hops), "events": hops[0].unique if hops else 0,
                "failing_hops": failing, "per_hop": [h.as_dict(examples) for h in hops],
                "end_to_end": d}

    def summary(self, report: dict[str, Any] | None = None) -> str:
        """A few lines for a human: one per hop, then the verdict."""
        return delivery_summary(report if report is not None else self.report())


def delivery_summary(report: dict[str, Any]) -> str:
    lines = [f"delivery ledger: {report['events']} events from {report['hops'][0]}"]
    for h in report["per_hop"] + [report["end_to_end"]]:
        name = h["hop"] if h["previous"] is None else f"{h['previous']} -> {h['hop']}"
        parts = [f"{k} {h[k]}" for k in ("lost", "duplicated", "unexpected", "skipped", "reordered",
                                          "bad_ids") if h[k]]
        mark = "ok" if h["ok"] else "FAIL"
        tol = f" (tolerated: {', '.join(h['tolerated'])})" if h["tolerated"] and parts else ""
        lines.append(f"  {name:<28} {mark:<4} seen {h['observations']}, unique {h['unique']}"
                     + (": " + ", ".join(parts) if parts else "") + tol)
        for k, ex in h["examples"].items():
            if ex and k in KINDS and h[k]:
                lines.append(f"      {k}: {', '.join(ex)}" + (" ..." if h[k] > len(ex) else ""))
    lines.append("verdict: " + ("PASS" if report["ok"] else "FAIL"))
    return "\n".join(lines)


# The grammar of protocol.ids.parse_event_id, checked at C speed
# (a test holds the two to the same answers): parse_event_id is written for
# MicroPython and costs microseconds per id, which 100k ids cannot afford.
# The device:incarnation head is checked once per sequence, not per id.
_HEAD = re.compile(r"[a-z0-9_-]{1,32}:[0-9a-f]{8}")


def _parse_into(out: dict[str, tuple[_Key, int]], heads: dict[str, _Key | None],
                ids: Iterable[str]) -> None:
    for e in ids:
        if not isinstance(e, str):
            continue
        head, _, seq = e.rpartition(":")
        k = heads.get(head, ())
        if k == ():
            d, _, inc = head.partition(":")
            k = heads[head] = (d, inc) if _HEAD.fullmatch(head) else None
        if k is not None and seq.isdigit() and seq.isascii() and seq[0] != "0" and len(seq) <= 15:
            out[e] = (k, int(seq))


def parse_id(eid: object) -> tuple[_Key, int] | None:
    """((device, incarnation), seq), or None for an id that is not valid."""
    out: dict[str, tuple[_Key, int]] = {}
    _parse_into(out, {}, (eid,))  # type: ignore[arg-type]
    return out.get(eid) if isinstance(eid, str) else None


def _parse_all(ids: Iterable[str]) -> dict[str, tuple[_Key, int]]:
    out: dict[str, tuple[_Key, int]] = {}
    _parse_into(out, {}, ids)
    return out


def _judge(hop: str, previous: str | None, ids: list[str], prev_order: list[str], prev_set: set[str],
           src_set: set[str], rank: dict[str, int], positional: bool,
           parsed: dict[str, tuple[_Key, int]], tolerated: frozenset[str]) -> HopResult:
    """`rank` orders the events as they left the reference hop: sequence
    numbers (per device) or, when `positional`, one global position, in
    which case an order that is increasing overall needs no per-device walk."""
    counts = Counter(ids)
    order = list(counts)  # first-seen order (Counter keeps insertion order)
    lost = [e for e in prev_order if e not in counts] if previous is not None else []
    unexpected = [e for e in order if e not in src_set]
    skipped = ([e for e in order if e in src_set and e not in prev_set]
               if previous is not None else [])
    duplicated = {e: c for e, c in counts.items() if c > 1}
    reordered: list[str] = []
    bad = [e for e in order if e not in parsed]
    rget = rank.get
    if positional:
        rs = [r for r in map(rget, order) if r is not None]
        if rs == sorted(rs):
            order = []  # in order overall, so in order per device
    high: dict[_Key, int] = {}
    get = parsed.get
    for e in order:
        p = get(e)
        if p is None:
            continue
        r = rget(e)
        if r is None:
            continue
        key = p[0]
        h = high.get(key)
        if h is not None and r < h:
            reordered.append(e)
        elif h is None or r > h:
            high[key] = r
    return HopResult(hop, previous, len(ids), len(counts), lost, duplicated, unexpected, skipped,
                     reordered, bad, tolerated)


# ---------------------------------------------------------------- domain rules

ENTRY = ("locker.deposit", "locker.return_dropoff")
FINAL = ("locker.pickup", "locker.retrieve", "locker.deposit_aborted")
OUTCOMES = ("locker.deposit", "locker.deposit_aborted", "locker.pickup", "locker.pickup_unconfirmed",
            "locker.retrieve", "locker.return_dropoff", "locker.remote_open", "locker.inspect_needed",
            "locker.send_dropoff", "locker.send_aborted", "locker.send_collected")
# Which closing events may end a door cycle opened for each action.
FITS = {
    "deposit": ("locker.deposit", "locker.deposit_aborted"),
    "pickup": ("locker.pickup", "locker.pickup_unconfirmed"),
    "retrieve": ("locker.retrieve",),
    "return": ("locker.return_dropoff",),
    "remote": ("locker.remote_open",),
    "send": ("locker.send_dropoff", "locker.send_aborted"),  # a villager's send code (寄件)
    "collect": ("locker.send_collected",),  # the courier takes an outbound parcel
}


@dataclass
class Check:
    """One domain rule's outcome."""

    name: str
    violations: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, kind: str, ev: Mapping[str, Any] | None = None, **detail: Any) -> None:
        v: dict[str, Any] = {"rule": self.name, "kind": kind}
        if ev is not None:
            v["id"] = ev.get("id")
            v["type"] = ev.get("type")
        v.update(detail)
        self.violations.append(v)

    def as_dict(self, examples: int = 20) -> dict[str, Any]:
        kinds = Counter(v["kind"] for v in self.violations)
        return {"name": self.name, "ok": self.ok, "violations": len(self.violations),
                "by_kind": dict(kinds), "examples": self.violations[:examples], "stats": dict(self.stats)}


def by_device(events: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Each device's events once each, in the order the device made them:
    incarnations in order of first appearance, then by sequence number.
    Delivery order is the ledger's business; domain rules judge what
    happened at the device. Events without a valid id are left out."""
    seen: set[str] = set()
    per: dict[str, list[tuple[int, int, Mapping[str, Any]]]] = {}
    incs: dict[_Key, int] = {}
    evs = list(events)
    parsed = _parse_all([ev.get("id") for ev in evs])  # type: ignore[misc]
    for ev in evs:
        eid = ev.get("id")
        if not isinstance(eid, str) or eid in seen:
            continue
        p = parsed.get(eid)
        if p is None:
            continue
        seen.add(eid)
        key, seq = p
        n = incs.setdefault(key, len(incs))
        per.setdefault(key[0], []).append((n, seq, ev))
    return {d: [ev for _, _, ev in sorted(lst, key=lambda x: (x[0], x[1]))] for d, lst in per.items()}


def _body(ev: Mapping[str, Any]) -> Mapping[str, Any]:
    b = ev.get("body")
    return b if isinstance(b, Mapping) else {}


def _audit(ev: Mapping[str, Any], what: str, result: str | None = "ok") -> bool:
    if ev.get("type") != "locker.audit":
        return False
    b = _body(ev)
    return b.get("what") == what and (result is None or b.get("result") == result)


Grouped = dict[str, list[Mapping[str, Any]]]


def _grouped(events: Iterable[Mapping[str, Any]] | Grouped) -> Grouped:
    """Checkers accept raw events or the output of by_device (check_domain
    groups once for all of them)."""
    return events if isinstance(events, dict) else by_device(events)


def check_parcels(events: Iterable[Mapping[str, Any]] | Grouped, complete: bool = False) -> Check:
    """Each parcel that enters a locker ends in exactly one final state
    (picked up, retrieved by a courier, or its deposit aborted), and no
    final state without the parcel having been in custody. With
    `complete`, a parcel still inside at the end is a violation too (use
    it when the scenario ran every parcel to its end). An inspection of a
    parcel the ledger did not see enter (a deposit cut by a power loss)
    puts it in custody: the courier's retrieval must end it."""
    chk = Check("parcel_final_state")
    inside: dict[tuple[str, str], Mapping[str, Any]] = {}
    finals: Counter[str] = Counter()
    parcels: set[str] = set()
    for dev, evs in _grouped(events).items():
        for ev in evs:
            t = ev.get("type")
            parcel = _body(ev).get("parcel")
            if t not in ENTRY and t not in FINAL and t != "locker.inspect_needed" \
                    or not isinstance(parcel, str):
                continue
            key = (dev, parcel)
            parcels.add(parcel)
            if t == "locker.inspect_needed":
                inside.setdefault(key, ev)
            elif t in ENTRY:
                if key in inside:
                    chk.add("entered_twice", ev, parcel=parcel, first=inside[key].get("id"))
                inside[key] = ev
            elif t == "locker.deposit_aborted":
                finals[t] += 1
                if key in inside:
                    chk.add("aborted_after_deposit", ev, parcel=parcel, deposit=inside.pop(key).get("id"))
            else:
                finals[t] += 1
                if key in inside:
                    del inside[key]
                else:
                    chk.add("final_without_custody", ev, parcel=parcel)
    if complete:
        for (dev, parcel), ev in inside.items():
            chk.add("no_final_state", ev, parcel=parcel, device=dev)
    chk.stats = {"parcels": len(parcels), "still_inside": len(inside),
                 **{t.split(".")[1]: n for t, n in finals.items()}}
    return chk


def check_compartments(events: Iterable[Mapping[str, Any]] | Grouped) -> Check:
    """No compartment holds two parcels, and a parcel leaves from the
    compartment it was put in."""
    chk = Check("one_parcel_per_compartment")
    deposits = 0
    for dev, evs in _grouped(events).items():
        holds: dict[Any, str] = {}
        for ev in evs:
            t = ev.get("type")
            b = _body(ev)
            cid = b.get("compartment")
            parcel = b.get("parcel")
            if t in ENTRY:
                deposits += 1
                if cid in holds and holds[cid] != parcel:
                    chk.add("two_parcels", ev, device=dev, compartment=cid, holding=holds[cid],
                            parcel=parcel)
                holds[cid] = parcel
            elif t in ("locker.pickup", "locker.retrieve"):
                held = holds.pop(cid, None)
                if held is not None and parcel is not None and held != parcel:
                    chk.add("wrong_parcel_out", ev, device=dev, compartment=cid, holding=held,
                            parcel=parcel)
    chk.stats = {"deposits": deposits}
    return chk


def check_door_authorization(events: Iterable[Mapping[str, Any]] | Grouped,
                             forced_is_violation: bool = False) -> Check:
    """No door opens without a reason the locker accepted: a pickup code
    accepted for that very compartment, a return code, a logged-in courier
    (deposit, retrieval, collection of outbound parcels), a send code
    (`send_attempt`) or a verified signed command (remote open). Each code
    or command opens one door once.

    The firmware audits the accepted code or command (`pickup_attempt`,
    `return_attempt`, `courier_login`, `command` with result ok) before it
    opens the door, so the reason always precedes the `locker.door` event in
    the device's sequence. A forced door (`door_forced` alarm) was not opened
    by the locker; it is counted, and is a violation only if asked."""
    chk = Check("door_needs_authority")
    opens = forced = 0
    for dev, evs in _grouped(events).items():
        courier: str | None = None
        codes: Counter[Any] = Counter()
        returns = 0
        sends = 0
        permits = 0
        commands: list[str] = []
        accepted: set[str] = set()
        for ev in evs:
            t = ev.get("type")
            b = _body(ev)
            if t == "locker.audit":
                if _audit(ev, "courier_login"):
                    courier = b.get("courier")
                elif _audit(ev, "courier_login", None) or _audit(ev, "courier_logout", None):
                    courier = None
                elif _audit(ev, "pickup_attempt"):
                    codes[b.get("compartment")] += 1
                elif _audit(ev, "return_attempt"):
                    returns += 1
                elif _audit(ev, "send_attempt"):
                    sends += 1
                elif _audit(ev, "command") and b.get("op") == "open":
                    commands.append(str(b.get("id")))
                    accepted.add(str(b.get("id")))
                elif _audit(ev, "command") and b.get("op") == "deposit":
                    permits += 1  # a platform-signed deposit permit, forwarded by a handheld
            elif t == "locker.boot":
                courier = None  # a reboot ends the session; the grants die with RAM
                codes.clear()
                returns = 0
                sends = 0
                permits = 0
                commands.clear()
            elif t == "locker.alarm" and b.get("alarm") == "door_forced":
                forced += 1
                if forced_is_violation:
                    chk.add("door_forced", ev, device=dev, compartment=b.get("compartment"))
            elif t == "locker.door" and b.get("door") == "open":
                opens += 1
                cid = b.get("compartment")
                action = b.get("action")
                if action == "pickup":
                    if codes[cid] > 0:
                        codes[cid] -= 1
                    else:
                        chk.add("opened_without_code", ev, device=dev, compartment=cid)
                elif action == "return":
                    if returns > 0:
                        returns -= 1
                    else:
                        chk.add("opened_without_code", ev, device=dev, compartment=cid)
                elif action == "send":
                    if sends > 0:
                        sends -= 1
                    else:
                        chk.add("opened_without_code", ev, device=dev, compartment=cid)
                elif action == "deposit" and courier is None and permits > 0:
                    permits -= 1
                elif action in ("deposit", "retrieve", "collect"):
                    if courier is None:
                        chk.add("opened_without_courier", ev, device=dev, compartment=cid, action=action)
                elif action == "remote":
                    if commands:
                        commands.pop(0)
                    else:
                        chk.add("opened_without_command", ev, device=dev, compartment=cid)
                else:
                    chk.add("opened_for_unknown_reason", ev, device=dev, compartment=cid, action=action)
            elif t == "locker.remote_open":
                cmd = b.get("cmd")
                if cmd is not None and str(cmd) not in accepted:
                    chk.add("remote_open_of_unknown_command", ev, device=dev, cmd=cmd)
    chk.stats = {"door_opens": opens, "forced": forced}
    return chk


def check_door_states(events: Iterable[Mapping[str, Any]] | Grouped, complete: bool = False) -> Check:
    """A door cycle is open -> one closing outcome that fits why it opened.
    No second open while a door is open; no outcome for a closed door,
    except the one that power-cut recovery settles after a boot (its door
    event may never have been sent, or was sent before the cut): that one
    is excused when the firmware's `recovery` audit follows it before the
    next door opens. A left-open
    alarm only for an open door."""
    chk = Check("door_states_consistent")
    cycles = 0
    for dev, evs in _grouped(events).items():
        open_: dict[Any, Mapping[str, Any]] = {}
        pending: Mapping[str, Any] | None = None  # outcome waiting for its recovery audit
        recovering = False
        for ev in evs:
            t = ev.get("type")
            b = _body(ev)
            cid = b.get("compartment")
            if t == "locker.boot":
                if pending is not None:
                    chk.add("outcome_without_open", pending, device=dev,
                            compartment=_body(pending).get("compartment"))
                pending = None
                recovering = True
                open_.clear()
                continue
            if _audit(ev, "recovery", None):
                pending = None
                recovering = False
                continue
            if t == "locker.door" and b.get("door") == "open":
                if pending is not None:  # recovery would have reported by now
                    chk.add("outcome_without_open", pending, device=dev,
                            compartment=_body(pending).get("compartment"))
                    pending = None
                    recovering = False
                if cid in open_:
                    chk.add("opened_twice", ev, device=dev, compartment=cid, first=open_[cid].get("id"))
                open_[cid] = ev
                cycles += 1
            elif t in OUTCOMES:
                door = open_.pop(cid, None)
                if door is None:
                    if recovering and pending is None:
                        pending = ev
                        continue
                    chk.add("outcome_without_open", ev, device=dev, compartment=cid)
                    continue
                action = _body(door).get("action")
                if t != "locker.inspect_needed" and t not in FITS.get(action, ()):
                    chk.add("outcome_does_not_fit", ev, device=dev, compartment=cid, action=action)
            elif t == "locker.alarm" and b.get("alarm") == "door_left_open" and cid not in open_:
                chk.add("left_open_alarm_for_closed_door", ev, device=dev, compartment=cid)
        if complete and pending is not None:  # else recovery may still be under way
            chk.add("outcome_without_open", pending, device=dev,
                    compartment=_body(pending).get("compartment"))
        if complete:
            for cid, door in open_.items():
                chk.add("never_closed", door, device=dev, compartment=cid)
    chk.stats = {"door_cycles": cycles}
    return chk


def is_photo(ev: Mapping[str, Any]) -> bool:
    """A photo event: type ending in 'photo' with a sha256 in its body."""
    t = ev.get("type")
    return isinstance(t, str) and t.endswith("photo") and isinstance(_body(ev).get("sha256"), str)


def _shas(items: Iterable[Mapping[str, Any] | str]) -> list[str]:
    out: list[str] = []
    ids: set[str] = set()
    for it in items:
        if isinstance(it, str):
            out.append(it)
        elif is_photo(it):
            eid = it.get("id")
            if isinstance(eid, str):
                if eid in ids:
                    continue  # a redelivered event is the ledger's concern, not a second photo
                ids.add(eid)
            out.append(_body(it)["sha256"])
    return out


def check_photos(arrived: Iterable[Mapping[str, Any] | str],
                 submitted: Iterable[Mapping[str, Any] | str] | None = None) -> Check:
    """Every photo submitted arrives exactly once (by content hash): none
    lost, none twice as two different events, none that nobody submitted.
    Without `submitted`, only "at most once" can be checked."""
    chk = Check("photo_arrives_once")
    got = Counter(_shas(arrived))
    for sha, n in got.items():
        if n > 1:
            chk.add("photo_duplicated", None, sha256=sha, copies=n)
    if submitted is not None:
        sent = set(_shas(submitted))
        for sha in sorted(sent - set(got)):
            chk.add("photo_lost", None, sha256=sha)
        for sha in sorted(set(got) - sent):
            chk.add("photo_unexpected", None, sha256=sha)
        chk.stats["submitted"] = len(sent)
    chk.stats["arrived"] = len(got)
    return chk


@dataclass
class DomainReport:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def by_name(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def as_dict(self, examples: int = 20) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.as_dict(examples) for c in self.checks]}

    def summary(self) -> str:
        lines = ["domain rules:"]
        for c in self.checks:
            stats = ", ".join(f"{k} {v}" for k, v in c.stats.items())
            lines.append(f"  {c.name:<28} {'ok' if c.ok else 'FAIL':<4} {stats}")
            for v in c.violations[:5]:
                rest = ", ".join(f"{k}={v[k]}" for k in v if k not in ("rule", "kind"))
                lines.append(f"      {v['kind']}: {rest}")
            if len(c.violations) > 5:
                lines.append(f"      ... {len(c.violations) - 5} more")
        lines.append("verdict: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


def check_domain(events: Iterable[Mapping[str, Any]],
                 photos_submitted: Iterable[Mapping[str, Any] | str] | None = None,
                 complete: bool = False, forced_is_violation: bool = False) -> DomainReport:
    """Every domain rule over one list of events (any order, repeats allowed)."""
    evs = list(events)
    grouped = by_device(evs)
    return DomainReport([
        check_parcels(grouped, complete),
        check_compartments(grouped),
        check_door_authorization(grouped, forced_is_violation),
        check_door_states(grouped, complete),
        check_photos(evs, photos_submitted),
    ])
