# Event envelopes: compact canonical JSON with a size limit and typed errors.
#
#   {"v":1,"id":"lk01:3fa2c0de:17","ts":1795881163,"type":"locker.deposit",
#    "cls":"custody","boot":4,"body":{...}}
#
# `cls` is the data class the gateway's disk budget works with: custody,
# alarm and audit records are never evicted; status and telemetry may be
# downsampled and evicted first. Unknown top-level fields are kept, so a
# gateway accepts events from newer firmware during a staged roll-out.

from protocol import PROTOCOL_VERSION
from protocol.canonical import check_value, dumps, loads_checked
from protocol.errors import (
    BadField,
    MalformedPayload,
    MissingField,
    OversizedPayload,
    UnsupportedVersion,
)
from protocol.ids import parse_event_id

MAX_PAYLOAD = 4096
CLASSES = ("custody", "alarm", "audit", "status", "telemetry")
NEVER_EVICT = ("custody", "alarm", "audit")
MAX_TYPE = 40


_TYPES_SEEN = {}  # event types already found valid: a fleet uses few of them


def valid_type(t):
    if not isinstance(t, str) or not 0 < len(t) <= MAX_TYPE:
        return False
    if t in _TYPES_SEEN:
        return True
    for c in t:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "_" or c == "."):
            return False
    if t[0] == "." or t[-1] == ".":
        return False
    if len(_TYPES_SEEN) < 64:
        _TYPES_SEEN[t] = True
    return True


def _check(env, text=True, walk=True, device=None):
    for f in ("v", "id", "ts", "type", "cls", "body"):
        if f not in env:
            raise MissingField("envelope has no %r field" % f)
    v = env["v"]
    if not isinstance(v, int) or isinstance(v, bool):
        raise BadField("v must be an integer")
    if v != PROTOCOL_VERSION:
        raise UnsupportedVersion("envelope version %d, this side speaks %d" % (v, PROTOCOL_VERSION))
    parsed = parse_event_id(env["id"], device)
    ts = env["ts"]
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise BadField("ts must be a non-negative integer (Unix seconds)")
    if not valid_type(env["type"]):
        raise BadField("type %r must be 1-40 of a-z 0-9 _ ." % (env["type"],))
    if env["cls"] not in CLASSES:
        raise BadField("cls %r is not one of %s" % (env["cls"], ",".join(CLASSES)))
    if not isinstance(env["body"], dict):
        raise BadField("body must be an object")
    if "boot" in env:
        b = env["boot"]
        if not isinstance(b, int) or isinstance(b, bool) or b < 0:
            raise BadField("boot must be a non-negative integer")
    if walk:
        check_value(env, text)
    return parsed


def make(event_id, ts, etype, cls, body, boot=None):
    env = {"v": PROTOCOL_VERSION, "id": event_id, "ts": ts, "type": etype, "cls": cls, "body": body}
    if boot is not None:
        env["boot"] = boot
    return env


def encode(env, limit=MAX_PAYLOAD):
    """Validate and return the canonical bytes of an envelope."""
    if not isinstance(env, dict):
        raise MalformedPayload("envelope must be an object")
    _check(env)
    data = dumps(env)
    if len(data) > limit:
        raise OversizedPayload("envelope is %d bytes, limit %d" % (len(data), limit))
    return data


def decode(payload, limit=MAX_PAYLOAD):
    """Parse and validate payload bytes; return the envelope dict."""
    if len(payload) > limit:
        raise OversizedPayload("payload is %d bytes, limit %d" % (len(payload), limit))
    return decode_event(payload, limit)[0]


def decode_event(payload, limit=MAX_PAYLOAD, device=None):
    """decode(), also returning the parsed id (device, incarnation, seq).

    With `device`, the event id must name that device (see parse_event_id)."""
    if len(payload) > limit:
        raise OversizedPayload("payload is %d bytes, limit %d" % (len(payload), limit))
    wire = isinstance(payload, (bytes, bytearray))
    env, checked = loads_checked(payload, "payload")
    return env, _check(env, not wire, not (wire and checked), device)


def device_of(env):
    return parse_event_id(env["id"])[0]
