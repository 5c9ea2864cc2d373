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

Every event goes through the outbox (recorded with no gateway in reach) and is checked
against its schema (``protocol/outbound_bodies.py``) before it is queued: the gateway
would refuse a malformed one, so the handheld never makes one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
                     ("groups", {})):
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

    def parse_manifest(self, args: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        """Check the manifest's points and groups (ValueError naming the culprit) without
        applying them, so the app can check every part of a manifest before it takes any."""
        points, groups = args.get("points", []), args.get("groups", [])
        if not isinstance(points, list) or not isinstance(groups, list):
            raise ValueError("args.points and args.groups must be lists")
        pts: dict[str, str] = {}
        for p in points:
            if not isinstance(p, dict) or not valid_segment(p.get("point")):
                raise ValueError("each point needs a point id (1-32 of a-z 0-9 _ -)")
            pts[p["point"]] = str(p.get("name", p["point"]))[:MAX_NAME]
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
        return pts, new

    def apply_manifest(self, parsed: tuple[dict[str, str], dict[str, Any]]) -> int:
        pts, new = parsed
        with self._lock:
            for gid, g in new.items():
                g["done"] = self.state["groups"].get(gid, {}).get("done", {})
            self.state["points"] = pts
            self.state["groups"] = new
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

    # ------------------------------------------------------------------ view
    def view(self) -> dict[str, Any]:
        with self._lock:
            st = self.state
            groups = []
            for gid, g in st["groups"].items():
                shares = [{"n": i, "to": s["to"], "qty": s["qty"], "done": str(i) in g["done"],
                           "token": bool(s.get("token_hash"))} for i, s in enumerate(g["shares"], start=1)]
                groups.append({"group": gid, "point": g["point"],
                               "point_name": st["points"].get(g["point"], g["point"]), "shares": shares})
            point = st["point"]
            return {"bag": st["bag"], "bags": list(reversed(st["bags"][-5:])),
                    "point": point, "point_name": st["points"].get(point, point) if point else None,
                    "points": sorted(st["points"].items()),
                    "collected": list(reversed(st["collected"].get(point, [])[-10:])) if point else [],
                    "groups": groups}
