# Confirmations: the gateway telling a device which of its events are on disk.
#
#   pe/v1/<outlet>/<kind>/<device>/conf   {"stored":{"3fa2c0de":[[1,17],[19,20]]},"v":1}
#
# Seq ranges per incarnation, sorted and merged, not a high-water mark:
# device seqs have gaps (evicted telemetry, a sequence block skipped after a
# reboot), and a mark would also confirm events a broker lost below it. The
# same sorted [first, last] ranges carry the uplink's acks
# (gateway/transports.py) and the outbox's delivery marks (firmware/outbox.py).
# The device side (firmware/sender.py, handheld/link.py) deletes an event
# only when a confirmation names it: see docs/protocol.md.

from protocol.canonical import dumps

# A sender re-sends what is unconfirmed after this long, doubling up to the
# maximum while confirmations stay away.
CONFIRM_TIMEOUT_S = 20
CONFIRM_TIMEOUT_MAX_S = 600
# At most this many events sent and not yet confirmed: a flow-control window
# (like TCP's) that also bounds RAM (8 bytes an event, in two arrays).
MAX_AWAITING = 128

_ID_KEY = b'"id":"'


def ranges(seqs):
    """Sorted, merged [first, last] ranges of a collection of ints."""
    out = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def contains(rs, seq):
    """Whether `seq` lies in sorted, disjoint ranges (binary search). Ranges
    out of order only make it answer False: the event is sent again."""
    lo, hi = 0, len(rs)
    while lo < hi:
        mid = (lo + hi) // 2
        a, b = rs[mid][0], rs[mid][1]
        if seq < a:
            hi = mid
        elif seq > b:
            lo = mid + 1
        else:
            return True
    return False


def encode(stored):
    """{incarnation: [seq, ...]} -> the canonical bytes the gateway publishes."""
    doc = {}
    for inc in stored:
        doc[inc] = ranges(stored[inc])
    return dumps({"v": 1, "stored": doc})


def stored_ranges(stored, inc):
    """The well-formed [first, last] ranges a confirmation's "stored" object
    gives for `inc`. A confirmation is still bytes off the network: anything
    malformed is left out (that event is sent again and confirmed later)
    rather than raised inside a network callback."""
    if not isinstance(stored, dict):
        return []
    rs = stored.get(inc)
    if not isinstance(rs, list):
        return []
    out = []
    for r in rs:
        if isinstance(r, list) and len(r) == 2 and type(r[0]) is int and type(r[1]) is int:
            out.append(r)
    return out


def event_key(payload):
    """(incarnation, seq) of a canonical envelope's bytes, or None.

    Canonical JSON sorts keys, so the envelope's own "id" comes after the
    body; keys after it ("ts", "type", "v") hold no such text. The last
    '"id":"' is therefore the envelope's, and no JSON parse is needed."""
    i = payload.rfind(_ID_KEY)
    if i < 0:
        return None
    i += len(_ID_KEY)
    j = payload.find(b'"', i)
    if j < 0:
        return None
    parts = payload[i:j].split(b":")
    if len(parts) != 3:
        return None
    try:
        return (parts[1].decode(), int(parts[2]))
    except Exception:
        return None
