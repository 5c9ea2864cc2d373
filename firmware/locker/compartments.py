# Compartments: sizes, states, reservations, occupancy; persisted as one
# record so a power cut leaves either the old table or the new one.
#
# States:
#   free            empty and available
#   reserved        held for a parcel announced by the handheld (until exp)
#   occupied        a parcel waits for its recipient
#   overdue         not collected in time: on the courier's retrieval list
#   return_waiting  a return dropped off: on the courier's retrieval list
#   send_waiting    an outbound parcel dropped off with a send code: on the
#                   courier's retrieval list, collected as locker.send_collected
#   inspect         a power cut left the content unknown: courier must check
#   out_of_service  door or lock fault

import json

from protocol.custody import (  # noqa: F401 - the locker's modules take them from here
    FREE,
    HOLDS_PARCEL,
    INSPECT,
    OCCUPIED,
    OUT_OF_SERVICE,
    OVERDUE,
    RESERVED,
    RETRIEVAL,
    RETURN_WAITING,
    SEND_WAITING,
    SIZES,
)


class Compartments:
    def __init__(self, storage, layout, name="compartments"):
        self.storage = storage
        self.name = name
        self.by_id = {}
        raw = storage.read(name)
        saved = {}
        if raw is not None:
            try:
                for c in json.loads(raw):
                    saved[c["id"]] = c
            except Exception:
                saved = {}
                self.corrupt = True
        for spec in layout:
            c = {"id": spec["id"], "size": spec["size"], "board": spec["board"],
                 "lock": spec["lock"], "state": FREE}
            old = saved.get(spec["id"])
            if old is not None:
                for k in old:
                    if k not in ("size", "board", "lock"):
                        c[k] = old[k]
            self.by_id[spec["id"]] = c

    corrupt = False

    def save(self):
        ids = sorted(self.by_id)
        self.storage.write(self.name, json.dumps([self.by_id[i] for i in ids]).encode())

    def get(self, cid):
        return self.by_id[cid]

    def all(self):
        return [self.by_id[i] for i in sorted(self.by_id)]

    def find_parcel(self, parcel):
        for c in self.all():
            if c.get("parcel") == parcel and c["state"] in (RESERVED,) + HOLDS_PARCEL:
                return c
        return None

    def pick_free(self, size):
        """Smallest free compartment that fits `size` (a parcel fits any bigger one)."""
        want = SIZES.index(size)
        best = None
        for c in self.all():
            if c["state"] == FREE and SIZES.index(c["size"]) >= want:
                if best is None or SIZES.index(c["size"]) < SIZES.index(best["size"]):
                    best = c
        return best

    def set(self, cid, state, **fields):
        c = self.by_id[cid]
        for k in ("parcel", "salt", "hash", "deposited", "expires", "courier", "reserved_until",
                  "code_by", "order"):
            if k in c and k not in fields and state == FREE:
                del c[k]
        c["state"] = state
        for k in fields:
            c[k] = fields[k]
        return c

    def release_expired_reservations(self, now):
        changed = []
        for c in self.all():
            if c["state"] == RESERVED and c.get("reserved_until", 0) <= now:
                self.set(c["id"], FREE)
                changed.append(c["id"])
        return changed

    def mark_overdue(self, now):
        changed = []
        for c in self.all():
            if c["state"] == OCCUPIED and c.get("expires", now + 1) <= now:
                c["state"] = OVERDUE
                changed.append(c["id"])
        return changed

    def retrieval_list(self):
        return [c["id"] for c in self.all() if c["state"] in RETRIEVAL]

    def find_order(self, order):
        """The compartment holding outbound send order `order`, or None."""
        for c in self.all():
            if c["state"] == SEND_WAITING and c.get("order") == order:
                return c
        return None

    def outbound(self):
        """[{compartment, order}] of outbound parcels waiting for the courier."""
        return [{"compartment": c["id"], "order": c.get("order")} for c in self.all()
                if c["state"] == SEND_WAITING]

    def summary(self):
        counts = {}
        for c in self.all():
            counts[c["state"]] = counts.get(c["state"], 0) + 1
        return counts
