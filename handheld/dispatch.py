"""Outbound dispatch on the handheld (寄件): bagging, the bag's pickup, collection at
village points, and the hand-out of group orders there (集订分送).

- **Bagging.** The courier scans a bag label (``BG`` + 11 digits + a GS1 check digit,
  ``protocol/outbound.py``), then each outbound item going into it: a send order id
  (``SO…-…``, from a locker drop-off or a booking) or a parcel id from the counter's
  waybill roll. One bag is open at a time; an item is in at most one bag.
- **Bag pickup.** Taking the bag is the manifest event: ``handheld.bag_pickup``
  ``{bag, items, courier}`` (custody). The bag's label is the manifest's key: the
  platform matches every item to the drop-off or acceptance that brought it in.
- **Village points.** At a village point (a shop that takes in villagers' parcels) the
  courier chooses the point and scans what it hands over: ``handheld.point_collect``
  ``{point, item, courier}``, one event per item.
- **Group orders.** A group order (e.g. fertiliser ordered together by a village)
  arrives in the platform-signed manifest with its point and its shares, one per
  villager; each share handed out is ``handheld.group_handout`` ``{group, point,
  shares, share, qty, confirm, courier}``, confirmed by the villager's delivery token
  (checked offline against the share's salted hash, never recorded) or their name.

- **Handover to a village point (村邮站).** At the chosen point the courier puts
  inbound manifest parcels on the handover list (scanned, or tapped among those the
  manifest routes to that point) and, with one tap, a group order's shares not yet
  handed out; the point's agent then confirms the whole lot at once: with their code
  when the manifest's point carries its salted hash (``agent_salt``/``agent_hash``,
  the delivery-token scheme of ``protocol/codes.py``; checked here, never recorded,
  ``AGENT_TRIES`` wrong codes and the point is locked until a new code arrives), else
  with their name and a signature on the pad (a JPEG queued for upload like a hand
  delivery's). One ``handheld.point_handover`` ``{point, items, agent, confirm,
  [signature_sha256], courier}`` for the parcels, one ``handheld.group_handover``
  ``{group, point, shares, handed, qty, agent, confirm, ...}`` per group order; the
  parcels are then "at point" on the courier's list (``ParcelFlows.leave_at_point``:
  never delivered or handed over again) and the shares the point's.

Every event goes through the outbox (recorded with no gateway in reach) and is checked
against its schema (``protocol/outbound_bodies.py``) before it is queued: the gateway
would refuse a malformed one, so the handheld never makes one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from handheld.jobs import atomic_json, read_json
from handheld.text import TEXT, Refused
from protocol import barcodes, outbound_bodies
from protocol.codes import matches as code_matches
from protocol.codes import normalize_token
from protocol.errors import ProtocolError
from protocol.outbound import BAG_PREFIX, bag_problem, valid_order
from protocol.topics import valid_segment

Emit = Callable[[str, str, dict[str, Any]], tuple[str, int]]
KEEP = 50  # recent bags and collections shown on the screen
MAX_NAME = 40
AGENT_TRIES = 5  # wrong agent codes before the point is locked (as a recipient's token)
HEX = frozenset("0123456789abcdef")


class Parcels(Protocol):
    """What a handover needs of the courier's parcel list (handheld/workflows.py)."""

    def for_point(self, text: str) -> str: ...
    def point_bound(self, point: str) -> list[str]: ...
    def leave_at_point(self, parcels: list[str], point: str, event_id: str) -> None: ...
    def store_signature(self, value: str) -> dict[str, Any]: ...
    def queue_signature(self, sig: dict[str, Any], event_id: str, **about: Any) -> None: ...


def _hex(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, str) and lo <= len(v) <= hi and len(v) % 2 == 0 and set(v) <= HEX


def parse_agent(p: dict[str, Any]) -> dict[str, Any] | None:
    """The agent of a manifest point (``agent``, ``agent_salt``, ``agent_hash``; all
    optional, salt and hash together), or None; ValueError naming the point if malformed."""
    pid = p["point"]
    name, salt, h = p.get("agent"), p.get("agent_salt"), p.get("agent_hash")
    if name is None and salt is None and h is None:
        return None
    if name is not None and (not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_NAME):
        raise ValueError(f"point {pid}: agent must be a name of 1..{MAX_NAME} characters")
    if (salt is None) != (h is None):
        raise ValueError(f"point {pid}: agent_salt and agent_hash go together")
    if salt is not None and (not _hex(salt, 8, 64) or not _hex(h, 64, 64)):
        raise ValueError(f"point {pid}: agent_salt must be hex, agent_hash 64 hex digits")
    return {"agent": name.strip() if isinstance(name, str) else None, "salt": salt, "hash": h}


def outbound_item(text: str) -> str:
    """The item id in a scan (an order id, or a parcel id with any AIM prefix); Refused otherwise."""
    t = str(text).strip()
    if valid_order(t):
        return t
    v = barcodes.classify(t)
    if v["ok"] and v["kind"] in barcodes.PARCEL_KINDS:
        return v["value"]
    raise Refused("not_item", detail=v.get("reason") or v.get("kind") or "")


class Dispatch:
    def __init__(self, state_dir: Path, courier: str, emit: Emit,
                 now: Callable[[], float] = time.time) -> None:
        self.path = state_dir / "dispatch.json"
        self.courier = courier
        self.emit = emit
        self.now = now
        self._lock = threading.RLock()
        self.state: dict[str, Any] = read_json(self.path, {})
        for k, v in (("bag", None), ("bags", []), ("point", None), ("points", {}), ("collected", {}),
                     ("groups", {}), ("agents", {}), ("handover", {}), ("handed", {}),
                     ("tries", {})):
            self.state.setdefault(k, v)

    def _save(self) -> None:
        atomic_json(self.path, self.state)

    def _emit(self, etype: str, body: dict[str, Any]) -> str:
        try:
            outbound_bodies.check(etype, body, "handheld")
        except ProtocolError as e:
            raise Refused("bad_request", detail=e.detail) from None
        eid, _ = self.emit(etype, "custody", body)
        return eid

    # ------------------------------------------------------------------ manifest
    def load_manifest(self, args: dict[str, Any]) -> int:
        """Village points and group orders from the platform-signed manifest (its
        ``points`` and ``groups``; both optional). Shares already handed out stay so."""
        return self.apply_manifest(self.parse_manifest(args))

    def parse_manifest(self, args: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        """Check the manifest's points and groups (ValueError naming the culprit) without
        applying them, so the app can check every part of a manifest before it takes any."""
        points, groups = args.get("points", []), args.get("groups", [])
        if not isinstance(points, list) or not isinstance(groups, list):
            raise ValueError("args.points and args.groups must be lists")
        pts: dict[str, str] = {}
        agents: dict[str, Any] = {}
        for p in points:
            if not isinstance(p, dict) or not valid_segment(p.get("point")):
                raise ValueError("each point needs a point id (1-32 of a-z 0-9 _ -)")
            pts[p["point"]] = str(p.get("name", p["point"]))[:MAX_NAME]
            agent = parse_agent(p)
            if agent is not None:
                agents[p["point"]] = agent
        new: dict[str, Any] = {}
        for g in groups:
            if not isinstance(g, dict) or not valid_order(g.get("group")) or \
                    not valid_segment(g.get("point")):
                raise ValueError("each group order needs a group id and a point")
            shares = g.get("shares")
            if not isinstance(shares, list) or not 0 < len(shares) <= 500:
                raise ValueError(f"group {g['group']}: shares must be a list of 1..500")
            for i, s in enumerate(shares, start=1):
                qty = s.get("qty") if isinstance(s, dict) else None
                if not isinstance(qty, int) or isinstance(qty, bool) or not 0 < qty < 1000:
                    raise ValueError(f"group {g['group']} share {i}: qty must be 1..999")
                if not isinstance(s.get("to"), str) or not 0 < len(s["to"]) <= MAX_NAME:
                    raise ValueError(f"group {g['group']} share {i}: to must name the villager")
            new[g["group"]] = {"point": g["point"], "shares": shares}
            pts.setdefault(g["point"], g["point"])
        return pts, new, agents

    def apply_manifest(self, parsed: tuple[dict[str, str], dict[str, Any], dict[str, Any]]) -> int:
        pts, new, agents = parsed
        with self._lock:
            for gid, g in new.items():
                old = self.state["groups"].get(gid, {})
                g["done"] = old.get("done", {})
                g["at_point"] = old.get("at_point", {})
            for pid, a in agents.items():
                # a new code on file unlocks a point locked by wrong tries
                if self.state["agents"].get(pid, {}).get("hash") != a["hash"]:
                    self.state["tries"].pop(pid, None)
            self.state["points"] = pts
            self.state["groups"] = new
            self.state["agents"] = agents
            self._save()
        return len(pts) + len(new)

    # ------------------------------------------------------------------ bagging
    def bag_scan(self, text: str) -> dict[str, Any]:
        """A scan in bag mode: a bag label opens that bag, anything else goes into it."""
        t = str(text).strip()
        with self._lock:
            if t.startswith(BAG_PREFIX) and not valid_order(t):
                why = bag_problem(t)
                if why is not None:
                    raise Refused("bad_bag", detail=why)
                open_bag = self.state["bag"]
                if open_bag is not None and open_bag["bag"] != t:
                    raise Refused("bag_open", bag=open_bag["bag"], n=len(open_bag["items"]))
                if any(b["bag"] == t for b in self.state["bags"]):
                    raise Refused("bag_done", bag=t)
                if open_bag is None:
                    self.state["bag"] = {"bag": t, "items": [], "opened": int(self.now())}
                    self._save()
                return {"ok": True, "bag": t, **TEXT.both("ok.bag_opened", bag=t)}
            bag = self.state["bag"]
            if bag is None:
                raise Refused("no_bag")
            item = outbound_item(t)
            if item in bag["items"]:
                raise Refused("in_bag", item=item, bag=bag["bag"])
            for b in self.state["bags"]:
                if item in b["items"]:
                    raise Refused("in_bag", item=item, bag=b["bag"])
            if len(bag["items"]) >= outbound_bodies.MAX_ITEMS:
                raise Refused("bag_full", n=outbound_bodies.MAX_ITEMS)
            bag["items"].append(item)
            self._save()
            return {"ok": True, "bag": bag["bag"], "item": item,
                    **TEXT.both("ok.bag_item", item=item, bag=bag["bag"], n=len(bag["items"]))}

    def bag_remove(self, item: str) -> dict[str, Any]:
        """Take an item out of the open bag (scanned into the wrong one)."""
        with self._lock:
            bag = self.state["bag"]
            if bag is None or item not in bag["items"]:
                raise Refused("not_in_bag", item=str(item)[:40])
            bag["items"].remove(item)
            self._save()
            return {"ok": True, **TEXT.both("ok.bag_removed", item=item, bag=bag["bag"])}

    def bag_pickup(self) -> dict[str, Any]:
        """The courier takes the open bag: the manifest event, then the bag is closed."""
        with self._lock:
            bag = self.state["bag"]
            if bag is None:
                raise Refused("no_bag")
            if not bag["items"]:
                raise Refused("bag_empty", bag=bag["bag"])
            eid = self._emit("handheld.bag_pickup", {"bag": bag["bag"], "items": list(bag["items"]),
                                                     "courier": self.courier})
            self.state["bags"] = (self.state["bags"] + [{**bag, "event": eid, "at": int(self.now())}])[-KEEP:]
            self.state["bag"] = None
            self._save()
            return {"ok": True, "bag": bag["bag"], "event": eid,
                    **TEXT.both("ok.bag_pickup", bag=bag["bag"], n=len(bag["items"]))}

    # ------------------------------------------------------------------ village points
    def set_point(self, point: str) -> dict[str, Any]:
        if not valid_segment(point):
            raise Refused("bad_point", detail=str(point)[:40])
        with self._lock:
            self.state["point"] = point
            self._save()
        name = self.state["points"].get(point, point)
        return {"ok": True, "point": point, **TEXT.both("ok.point", point=name)}

    def point_collect(self, text: str) -> dict[str, Any]:
        with self._lock:
            point = self.state["point"]
            if point is None:
                raise Refused("no_point")
            item = outbound_item(text)
            done = self.state["collected"].setdefault(point, [])
            if item in done:
                raise Refused("already_collected", item=item)
            eid = self._emit("handheld.point_collect",
                             {"point": point, "item": item, "courier": self.courier})
            done.append(item)
            self.state["collected"][point] = done[-KEEP * 4:]
            self._save()
            return {"ok": True, "item": item, "event": eid,
                    **TEXT.both("ok.point_collect", item=item, point=self.state["points"].get(point, point))}

    # ------------------------------------------------------------------ group orders
    def handout(self, group: str, share: Any, method: str, value: str) -> dict[str, Any]:
        """Hand one share of a group order to its villager, confirmed by token or name."""
        with self._lock:
            g = self.state["groups"].get(group)
            if g is None:
                raise Refused("no_group", group=str(group)[:32])
            try:
                n = int(share)
            except (TypeError, ValueError):
                n = 0
            shares = g["shares"]
            if not 0 < n <= len(shares):
                raise Refused("bad_share", n=len(shares))
            if str(n) in g["done"]:
                raise Refused("share_done", share=n, group=group)
            if str(n) in g.get("at_point", {}):
                raise Refused("share_at_point", share=n, group=group,
                              point=self.state["points"].get(g["point"], g["point"]))
            s = shares[n - 1]
            body: dict[str, Any] = {"group": group, "point": g["point"], "shares": len(shares), "share": n,
                                    "qty": s["qty"], "confirm": method, "courier": self.courier}
            if method == "token":
                if not s.get("token_salt") or not s.get("token_hash"):
                    raise Refused("no_code_on_file")
                token = normalize_token(str(value))
                if token is None:
                    raise Refused("not_a_token")
                if not code_matches(s["token_salt"], s["token_hash"], token):
                    raise Refused("wrong_token")
            elif method == "name":
                name = str(value).strip()
                if not 0 < len(name) <= MAX_NAME:
                    raise Refused("bad_name")
                body["name"] = name
            else:
                raise Refused("bad_method")
            eid = self._emit("handheld.group_handout", body)
            g["done"][str(n)] = eid
            self._save()
            return {"ok": True, "event": eid,
                    **TEXT.both("ok.handout", share=n, shares=len(shares), to=s["to"], qty=s["qty"])}

    # ------------------------------------------------------------------ handover to a point
    def _draft(self) -> tuple[str, dict[str, Any]]:
        point = self.state["point"]
        if point is None:
            raise Refused("no_point")
        return point, self.state["handover"].setdefault(point, {"items": [], "groups": []})

    def _pname(self, point: str) -> str:
        return str(self.state["points"].get(point, point))

    def handover_add(self, parcels: Parcels, text: str) -> dict[str, Any]:
        """Put a manifest parcel on the handover list of the chosen point."""
        with self._lock:
            point, draft = self._draft()
            pid = parcels.for_point(text)
            for other, d in self.state["handover"].items():
                if pid in d["items"]:
                    raise Refused("in_handover", item=pid, point=self._pname(other))
            if len(draft["items"]) >= outbound_bodies.MAX_ITEMS:
                raise Refused("bag_full", n=outbound_bodies.MAX_ITEMS)
            draft["items"].append(pid)
            self._save()
            return {"ok": True, "item": pid,
                    **TEXT.both("ok.handover_add", item=pid, point=self._pname(point), n=len(draft["items"]))}

    def handover_group(self, group: str) -> dict[str, Any]:
        """Put a group order's open shares (those not yet handed out) on the handover list."""
        with self._lock:
            point, draft = self._draft()
            g = self.state["groups"].get(group)
            if g is None:
                raise Refused("no_group", group=str(group)[:32])
            if g["point"] != point:
                raise Refused("group_elsewhere", group=group, point=self._pname(g["point"]))
            if not self._open_shares(g):
                raise Refused("group_done", group=group)
            if group not in draft["groups"]:
                draft["groups"].append(group)
                self._save()
            return {"ok": True, **TEXT.both("ok.handover_group", group=group, n=len(self._open_shares(g)))}

    def handover_remove(self, item: str) -> dict[str, Any]:
        """Take a parcel or a group order off the chosen point's handover list."""
        with self._lock:
            point, draft = self._draft()
            for key in ("items", "groups"):
                if item in draft[key]:
                    draft[key].remove(item)
                    self._save()
                    return {"ok": True, **TEXT.both("ok.handover_removed", item=item)}
            raise Refused("not_in_handover", item=str(item)[:40])

    @staticmethod
    def _open_shares(g: dict[str, Any]) -> list[int]:
        return [n for n in range(1, len(g["shares"]) + 1)
                if str(n) not in g["done"] and str(n) not in g.get("at_point", {})]

    def _agent_check(self, point: str, method: str, value: str, name: str) -> dict[str, Any]:
        """The agent's confirmation as the event's fields (never the code itself)."""
        agent = self.state["agents"].get(point) or {}
        if agent.get("hash"):
            if method != "token":
                raise Refused("agent_code_needed")
            tries = int(self.state["tries"].get(point, 0))
            if tries >= AGENT_TRIES:
                raise Refused("agent_locked")
            token = normalize_token(str(value))
            if token is None:
                raise Refused("not_a_token")  # not a guess at the code: no try counted
            if not code_matches(agent["salt"], agent["hash"], token):
                self.state["tries"][point] = tries + 1
                self._save()
                if tries + 1 >= AGENT_TRIES:
                    raise Refused("agent_locked")
                raise Refused("wrong_agent_code", left=AGENT_TRIES - tries - 1)
            return {"agent": agent.get("agent") or self._pname(point), "confirm": "token"}
        if method == "token":
            raise Refused("no_agent_code")
        if method != "signature":
            raise Refused("bad_method")
        who = str(name).strip()
        if not 0 < len(who) <= MAX_NAME:
            raise Refused("bad_name")
        return {"agent": who, "confirm": "signature"}

    def handover(self, parcels: Parcels, method: str, value: str, name: str = "") -> dict[str, Any]:
        """The agent confirms the chosen point's handover list: one event for the parcels,
        one per group order; nothing is recorded unless every part is still to hand over."""
        with self._lock:
            point, draft = self._draft()
            if not draft["items"] and not draft["groups"]:
                raise Refused("handover_empty", point=self._pname(point))
            for pid in draft["items"]:
                parcels.for_point(pid)  # delivered by hand meanwhile? said before the agent confirms
            groups = []
            for gid in draft["groups"]:
                g = self.state["groups"].get(gid)
                if g is None or g["point"] != point or not self._open_shares(g):
                    raise Refused("group_done", group=gid)
                groups.append((gid, g, self._open_shares(g)))
            who = self._agent_check(point, method, value, name)
            try:
                sig = parcels.store_signature(value) if who["confirm"] == "signature" else None
            except Refused as e:
                if e.code == "empty_signature":  # said of the agent, not of a recipient
                    raise Refused("agent_sign_empty") from None
                raise
            if sig is not None:
                who["signature_sha256"] = sig["sha256"]
            bodies: list[tuple[str, dict[str, Any]]] = []
            if draft["items"]:
                bodies.append(("handheld.point_handover", {"point": point, "items": list(draft["items"]),
                                                           **who, "courier": self.courier}))
            for gid, g, open_ in groups:
                bodies.append(("handheld.group_handover", {
                    "group": gid, "point": point, "shares": len(g["shares"]), "handed": open_,
                    "qty": sum(g["shares"][n - 1]["qty"] for n in open_), **who, "courier": self.courier}))
            for etype, body in bodies:  # all checked before any is recorded
                try:
                    outbound_bodies.check(etype, body, "handheld")
                except ProtocolError as e:
                    raise Refused("bad_request", detail=e.detail) from None
            events = [self._emit(etype, body) for etype, body in bodies]
            k = 0
            if draft["items"]:
                parcels.leave_at_point(draft["items"], point, events[0])
                k = 1
            for (_gid, g, open_), eid in zip(groups, events[k:], strict=True):
                for n in open_:
                    g.setdefault("at_point", {})[str(n)] = eid
            if sig is not None:
                parcels.queue_signature(sig, events[0], point=point, agent=who["agent"])
            n_items, n_shares = len(draft["items"]), sum(len(o) for _, _, o in groups)
            self.state["handed"][point] = (self.state["handed"].get(point, []) + [
                {"items": list(draft["items"]), "groups": [gid for gid, _, _ in groups],
                 "agent": who["agent"], "confirm": who["confirm"], "events": events,
                 "at": int(self.now())}])[-KEEP:]
            self.state["handover"].pop(point, None)
            self.state["tries"].pop(point, None)
            self._save()
            return {"ok": True, "events": events,
                    **TEXT.both("ok.handover", point=self._pname(point), agent=who["agent"],
                                n=n_items, shares=n_shares)}

    # ------------------------------------------------------------------ view
    def view(self, parcels: Parcels | None = None) -> dict[str, Any]:
        """What the outbound screen shows; with ``parcels``, also the parcels the manifest
        routes to the chosen point that are not yet on its handover list."""
        with self._lock:
            st = self.state
            groups = []
            for gid, g in st["groups"].items():
                at = g.get("at_point", {})
                shares = [{"n": i, "to": s["to"], "qty": s["qty"], "done": str(i) in g["done"],
                           "at_point": str(i) in at, "token": bool(s.get("token_hash"))}
                          for i, s in enumerate(g["shares"], start=1)]
                groups.append({"group": gid, "point": g["point"],
                               "point_name": st["points"].get(g["point"], g["point"]), "shares": shares,
                               "open": len(self._open_shares(g))})
            point = st["point"]
            draft = st["handover"].get(point) or {"items": [], "groups": []}
            agent = st["agents"].get(point) or {} if point else {}
            bound = parcels.point_bound(point) if parcels is not None and point else []
            return {"bag": st["bag"], "bags": list(reversed(st["bags"][-5:])),
                    "point": point, "point_name": st["points"].get(point, point) if point else None,
                    "points": sorted(st["points"].items()),
                    "collected": list(reversed(st["collected"].get(point, [])[-10:])) if point else [],
                    "groups": groups,
                    "handover": {"items": list(draft["items"]), "groups": list(draft["groups"])},
                    "bound": [pid for pid in bound if pid not in draft["items"]],
                    "agent": {"name": agent.get("agent"), "code": bool(agent.get("hash")),
                              "left": AGENT_TRIES - int(st["tries"].get(point, 0)) if point else AGENT_TRIES},
                    "handed": list(reversed(st["handed"].get(point, [])[-5:])) if point else []}
