# Revocations: the handhelds and couriers whose permits a locker refuses
# (a revoked device loses every permit it carried).
#
# The platform signs a `revoke` command for each locker of the outlet with
# that locker's key (the gateway holds none), and the gateway relays it like
# any other command:
#
#   {"op": "revoke", "args": {"handhelds": ["hh01"], "couriers": ["c007"]}, ...}
#
# An entry refuses every permit that names the handheld (args.handheld) or
# courier (args.courier) and was issued at or before the revocation (the
# command's iat): a permit the platform signs later is the platform's choice
# (a handheld found again). A permit lives at most permits.MAX_LIFETIME, so
# an entry can go once `at + MAX_LIFETIME + CLOCK_SKEW` has passed: every
# permit it could refuse has expired by then. That keeps the list small on
# flash. It is also bounded by count (CAPACITY): when more revocations are
# live than fit, the oldest goes and its time becomes a floor, and every
# permit issued at or before the floor is refused, whoever carries it. The
# list fails closed: refusing too much costs a courier a trip to the
# counter; refusing too little opens a door for a thief.
#
# MicroPython and CPython: plain classes, no typing.

from protocol.errors import BadField, Revoked
from protocol.permits import MAX_LIFETIME
from protocol.signing import CLOCK_SKEW
from protocol.topics import valid_segment

KINDS = ("handheld", "courier")
ARGS = {"handhelds": "handheld", "couriers": "courier"}  # the revoke command's lists
CAPACITY = 32
KEEP_S = MAX_LIFETIME + CLOCK_SKEW
MAX_PER_COMMAND = 64


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def parse_args(args):
    """[(kind, id)] from a revoke command's args; BadField naming what is wrong."""
    if not isinstance(args, dict):
        raise BadField("revoke args must be an object")
    out = []
    for name in args:
        if name not in ARGS:
            raise BadField("revoke takes %s, not %r" % (" and ".join(sorted(ARGS)), name))
        ids = args[name]
        if not isinstance(ids, list):
            raise BadField("revoke %s must be a list of ids" % name)
        for i in ids:
            if not valid_segment(i):
                raise BadField("revoke %s: %r is not a device or courier id" % (name, i))
            out.append((ARGS[name], i))
    if not out:
        raise BadField("revoke names no handheld and no courier")
    if len(out) > MAX_PER_COMMAND:
        raise BadField("revoke names %d ids, at most %d" % (len(out), MAX_PER_COMMAND))
    return out


class Revocations:
    def __init__(self, capacity=CAPACITY):
        self.capacity = capacity
        self.entries = {}  # "handheld/hh01" -> revoked at (Unix seconds)
        self.floor = 0  # permits issued at or before this are refused
        self.dropped = 0  # live entries let go into the floor (the list was full)

    def add(self, kind, ident, at, now):
        if kind not in KINDS:
            raise BadField("revocation kind must be one of %s" % ", ".join(KINDS))
        if not valid_segment(ident):
            raise BadField("revocation id must be 1-32 of a-z 0-9 _ -")
        if not _int(at):
            raise BadField("revocation time must be an integer")
        k = kind + "/" + ident
        if at > self.entries.get(k, 0):
            self.entries[k] = at
        self.prune(now)

    def prune(self, now):
        """Forget what can refuse no live permit; past capacity, fold the
        oldest into the floor. Returns how many were folded."""
        for k in list(self.entries):
            if self.entries[k] + KEEP_S < now:
                del self.entries[k]
        folded = 0
        while len(self.entries) > self.capacity:
            oldest = None
            for k in self.entries:
                if oldest is None or self.entries[k] < self.entries[oldest]:
                    oldest = k
            at = self.entries.pop(oldest)
            if at > self.floor:
                self.floor = at
            folded += 1
        if self.floor and self.floor + KEEP_S < now:
            self.floor = 0
        self.dropped += folded
        return folded

    def raise_floor(self, t):
        if t > self.floor:
            self.floor = t

    def check(self, permit):
        """Raise Revoked if this permit (already shape-checked) may not run."""
        iat = permit["iat"]
        a = permit["args"]
        if iat <= self.floor:
            raise Revoked("permits issued before %d are refused (revocations overflowed or were lost)"
                          % (self.floor + 1))
        for kind in KINDS:
            at = self.entries.get(kind + "/" + str(a.get(kind)))
            if at is not None and iat <= at:
                raise Revoked("%s %s was revoked at %d" % (kind, a.get(kind), at))

    def state(self):
        return {"e": [[k, self.entries[k]] for k in sorted(self.entries)], "floor": self.floor}

    def restore(self, st):
        """Raise ValueError if `st` is not a state this class wrote."""
        if not isinstance(st, dict) or not isinstance(st.get("e"), list) or not _int(st.get("floor")):
            raise ValueError("not a revocation list")
        entries = {}
        for e in st["e"]:
            if not isinstance(e, list) or len(e) != 2 or not isinstance(e[0], str) or not _int(e[1]):
                raise ValueError("not a revocation entry")
            parts = e[0].split("/", 1)
            if len(parts) != 2 or parts[0] not in KINDS or not valid_segment(parts[1]):
                raise ValueError("not a revocation entry")
            entries[e[0]] = e[1]
        self.entries = entries
        self.floor = st["floor"]
