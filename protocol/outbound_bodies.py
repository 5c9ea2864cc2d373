# Body schemas of the outbound (寄件) custody events, checked by the gateway
# before it stores one (gateway/ingest/checks.py) and by the handheld before
# it emits one, so a malformed body is refused with a reason at the first
# hop instead of reaching the platform's ledger. Written in the MicroPython
# subset like the rest of protocol/, but the locker does not import it (its
# own bodies are built from checked state; the heap stays for data).
#
# A body may carry fields beyond these (newer firmware), except secrets: a
# send code or token must never travel in clear, so fields with those names
# are refused outright.

from protocol import barcodes
from protocol.custody import SIZES
from protocol.errors import BadField, MissingField
from protocol.outbound import bag_problem, valid_order
from protocol.topics import valid_segment

MAX_ITEMS = 200  # items in one bag: a full mail bag of small parcels
FORBIDDEN = ("code", "send_code", "token", "secret", "pin", "password")
SOURCES = ("keypad", "qr")
ABORT_REASONS = ("empty", "power_cut")
CONFIRMS = ("name", "signature", "token")
MAX_NAME = 40  # a person's name as the handheld takes it
MAX_SHARES = 500  # shares of one group order
HEX = "0123456789abcdef"


def _need(body, key):
    if key not in body:
        raise MissingField("%s is missing" % key)
    return body[key]


def _int(body, key, lo, hi):
    v = _need(body, key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadField("%s must be an integer %d..%d, not %r" % (key, lo, hi, v))
    return v


def _order(body, key="order"):
    v = _need(body, key)
    if not valid_order(v):
        raise BadField("%s %r is not an order id (4-32 of A-Z 0-9 - with a -)" % (key, v))
    return v


def _seg(body, key):
    v = _need(body, key)
    if not valid_segment(v):
        raise BadField("%s %r must be 1-32 of a-z 0-9 _ -" % (key, v))
    return v


def _one_of(body, key, allowed):
    v = _need(body, key)
    if v not in allowed:
        raise BadField("%s %r is not one of %s" % (key, v, ", ".join(allowed)))
    return v


def item_problem(item):
    """None if `item` names an outbound item (a send order or a parcel id
    from the counter's waybill roll), else why not."""
    if valid_order(item):
        return None
    if not isinstance(item, str):
        return "not_text"
    v = barcodes.classify(item)
    if v["ok"] and v["kind"] in barcodes.PARCEL_KINDS and v["value"] == item:
        return None
    return v.get("reason") or "not_item"


def _item(body, key="item"):
    v = _need(body, key)
    why = item_problem(v)
    if why is not None:
        raise BadField("%s %r is not an order or parcel id (%s)" % (key, v, why))
    return v


def _send_dropoff(b):
    _int(b, "compartment", 1, 9999)
    _order(b)
    _one_of(b, "size", SIZES)
    _one_of(b, "booked", SIZES)
    _one_of(b, "via", SOURCES)


def _send_aborted(b):
    _int(b, "compartment", 1, 9999)
    _order(b)
    _one_of(b, "reason", ABORT_REASONS)


def _send_collected(b):
    _int(b, "compartment", 1, 9999)
    _order(b)
    _seg(b, "courier")


def _bag_pickup(b):
    why = bag_problem(_need(b, "bag"))
    if why is not None:
        raise BadField("bag %r: %s" % (b["bag"], why))
    items = _need(b, "items")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
        raise BadField("items must be a list of 1..%d ids" % MAX_ITEMS)
    seen = {}
    for i, item in enumerate(items):
        why = item_problem(item)
        if why is not None:
            raise BadField("items[%d] %r is not an order or parcel id (%s)" % (i, item, why))
        if item in seen:
            raise BadField("items[%d] %r is listed twice" % (i, item))
        seen[item] = 1
    _seg(b, "courier")


def _point_collect(b):
    _seg(b, "point")
    _item(b)
    _seg(b, "courier")


def _group_handout(b):
    _order(b, "group")
    _seg(b, "point")
    n = _int(b, "shares", 1, 500)
    _int(b, "share", 1, n)
    _int(b, "qty", 1, 999)
    _one_of(b, "confirm", CONFIRMS)
    _seg(b, "courier")


def _ids(b, key):
    """A list of 1..MAX_ITEMS distinct order or parcel ids."""
    items = _need(b, key)
    if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
        raise BadField("%s must be a list of 1..%d ids" % (key, MAX_ITEMS))
    seen = {}
    for i, item in enumerate(items):
        why = item_problem(item)
        if why is not None:
            raise BadField("%s[%d] %r is not an order or parcel id (%s)" % (key, i, item, why))
        if item in seen:
            raise BadField("%s[%d] %r is listed twice" % (key, i, item))
        seen[item] = 1
    return items


def _agent_confirm(b):
    """Who at the point took it and how they confirmed: their code (checked on the
    handheld, never sent), their name, or their signature (the JPEG uploaded
    separately, named here by its SHA-256 so the platform links the two)."""
    agent = _need(b, "agent")
    if not isinstance(agent, str) or not 0 < len(agent.strip()) <= MAX_NAME:
        raise BadField("agent must name the point's agent (1..%d characters)" % MAX_NAME)
    how = _one_of(b, "confirm", CONFIRMS)
    if how == "signature":
        sha = _need(b, "signature_sha256")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in HEX for c in sha):
            raise BadField("signature_sha256 must be 64 lower-case hex digits")


def _point_handover(b):
    # inbound parcels left at a village point, the agent confirming the lot at once
    _seg(b, "point")
    _ids(b, "items")
    _agent_confirm(b)
    _seg(b, "courier")


def _group_handover(b):
    # every share of a group order not yet handed out, to its point in one step
    _order(b, "group")
    _seg(b, "point")
    n = _int(b, "shares", 1, MAX_SHARES)
    handed = _need(b, "handed")
    if not isinstance(handed, list) or not 0 < len(handed) <= n:
        raise BadField("handed must be a list of 1..%d share numbers" % n)
    seen = {}
    for i, s in enumerate(handed):
        if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= n:
            raise BadField("handed[%d] %r is not a share 1..%d" % (i, s, n))
        if s in seen:
            raise BadField("handed[%d] share %d is listed twice" % (i, s))
        seen[s] = 1
    _int(b, "qty", 1, 999 * MAX_SHARES)
    _agent_confirm(b)
    _seg(b, "courier")


SCHEMAS = {
    "locker.send_dropoff": _send_dropoff,
    "locker.send_aborted": _send_aborted,
    "locker.send_collected": _send_collected,
    "handheld.bag_pickup": _bag_pickup,
    "handheld.point_collect": _point_collect,
    "handheld.group_handout": _group_handout,
    "handheld.point_handover": _point_handover,
    "handheld.group_handover": _group_handover,
}
TYPES = tuple(SCHEMAS)


def check(etype, body, kind=None, cls="custody"):
    """Raise MissingField/BadField unless `body` fits `etype`'s schema;
    types without one here pass. With `kind` (the topic's device kind), a
    locker.* type must come from a locker and a handheld.* one from a
    handheld; these events are custody, never evictable status."""
    f = SCHEMAS.get(etype)
    if f is None:
        return body
    if kind is not None and etype.split(".")[0] != kind:
        raise BadField("%s is not an event a %s sends" % (etype, kind))
    if cls != "custody":
        raise BadField("%s must be class custody, not %r" % (etype, cls))
    if not isinstance(body, dict):
        raise BadField("%s body must be an object" % etype)
    for k in FORBIDDEN:
        if k in body:
            raise BadField("%s body must not carry %r (secrets never travel in clear)" % (etype, k))
    f(body)
    return body
