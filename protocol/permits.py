# Permits: what a courier's handheld carries instead of a key. A permit is a
# signed command (signing.py) that the platform signs with the key of the ONE
# locker it is for, bound to one parcel, one courier, the one handheld that
# carries it, and a short lifetime:
#
#   {"v":1,"id":"p-7f3a","dev":"lk01","op":"deposit","kv":1,
#    "args":{"parcel":"RB123456785GB","courier":"c007","handheld":"hh01","size":"M"},
#    "iat":1795881100,"exp":1795924300,"sig":"<64 hex>"}
#
# ops: "deposit" (args parcel, courier, handheld, size) and "retrieve" (args
# parcel, courier, handheld: opens the compartment holding that parcel if it
# is on the retrieval list). The handheld holds no key any locker accepts; the
# gateway holds none either, so it checks only the shape (`forwardable`) and
# forwards nothing else from a handheld; the locker checks the signature with
# its own key, then `check` again before it opens a door.

from protocol.errors import BadField, NotAPermit
from protocol.topics import valid_segment

OPS = ("deposit", "retrieve")
MAX_LIFETIME = 12 * 3600  # a courier's day, not the 7 days of a platform command
MAX_PARCEL = 40


def check(cmd):
    """Raise NotAPermit unless cmd is a permit op with its bindings and a short lifetime."""
    if not isinstance(cmd, dict):
        raise NotAPermit("a permit is a JSON object")
    op = cmd.get("op")
    if op not in OPS:
        raise NotAPermit("op %r is not a permit (%s)" % (op, ", ".join(OPS)))
    a = cmd.get("args")
    if not isinstance(a, dict):
        raise NotAPermit("permit has no args")
    p = a.get("parcel")
    if not isinstance(p, str) or not 0 < len(p) <= MAX_PARCEL:
        raise NotAPermit("permit must name one parcel")
    for k in ("courier", "handheld"):
        if not valid_segment(a.get(k)):
            raise NotAPermit("permit must name one %s" % k)
    if not valid_segment(cmd.get("dev")):
        raise NotAPermit("permit must name one locker")
    iat, exp = cmd.get("iat"), cmd.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int) or isinstance(iat, bool) or isinstance(exp, bool):
        raise NotAPermit("permit needs integer iat and exp")
    if exp - iat > MAX_LIFETIME:
        raise NotAPermit("permit lifetime %d s exceeds %d s" % (exp - iat, MAX_LIFETIME))
    return cmd


def forwardable(cmd, kind, via):
    """What the gateway checks before it queues a command a handheld
    forwarded: a locker permit, carried by the handheld it was issued to."""
    if kind != "locker":
        raise NotAPermit("handhelds forward permits to lockers only, not to %r" % (kind,))
    check(cmd)
    if cmd["args"]["handheld"] != via:
        raise NotAPermit("permit was issued to %s, forwarded by %s" % (cmd["args"]["handheld"], via))
    if "sig" not in cmd:
        raise BadField("permit is not signed")
    return cmd


def make(locker, op, parcel, courier, handheld, now, permit_id, lifetime=3600, size=None):
    """An unsigned permit (the platform signs it with the locker's key)."""
    args = {"parcel": parcel, "courier": courier, "handheld": handheld}
    if size is not None:
        args["size"] = size
    return {"v": 1, "id": permit_id, "dev": locker, "op": op, "args": args,
            "iat": now, "exp": now + lifetime}
