# Trusted time: the gateway's clock, as devices take it.
#
#   pe/v1/<outlet>/<kind>/<device>/time   {"t":1795881163,"v":1}
#
# The gateway publishes it (QoS 0, never retained) to a device as soon as it
# sees the device come online and then every PERIOD_S. Only the gateway may
# write a device's `time` topic (gateway/broker.py), so the message is as
# trustworthy as the device's broker login; the gateway holds no device keys,
# so it is not signed. The device keeps an offset over its own clock
# (firmware/device.py) and refuses time-based decisions until it has one.
# See docs/protocol.md ("Trusted time").

from protocol.canonical import dumps, loads_object
from protocol.errors import BadField, MissingField, UnsupportedVersion

PERIOD_S = 60
# A device whose clock and the gateway's disagree by more than this raises a
# clock_skew alarm (a device config, `time_skew_s`, may change it).
SKEW_S = 60
# Earliest time a gateway can sensibly send (2024-01-01): a gateway whose own
# clock reset is refused, not believed.
MIN_T = 1704067200
MAX_T = 4102444800  # 2100-01-01
MAX_PAYLOAD = 256


def encode(t):
    """The time message for gateway time `t` (Unix seconds)."""
    return dumps({"v": 1, "t": int(t)})


def decode(payload):
    """A time message off the wire -> its Unix seconds, or a typed error."""
    if len(payload) > MAX_PAYLOAD:
        raise BadField("time message over %d bytes" % MAX_PAYLOAD)
    doc = loads_object(payload, "time")
    if doc.get("v") != 1:
        raise UnsupportedVersion("time message version %r, expected 1" % (doc.get("v"),))
    if "t" not in doc:
        raise MissingField("time message has no t")
    t = doc["t"]
    if not isinstance(t, int) or isinstance(t, bool):
        raise BadField("time.t must be an integer")
    if not MIN_T <= t < MAX_T:
        raise BadField("time.t %d is outside %d..%d" % (t, MIN_T, MAX_T))
    return t
