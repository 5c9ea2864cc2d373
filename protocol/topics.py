# Topic names: pe/v1/<outlet>/<kind>/<device>/<channel>.
#
# The version sits in the topic so a v2 fleet can share a broker with v1
# devices; outlet and device are in the topic (not only the payload) so the
# broker's ACL can confine each device to its own subtree.

from protocol.errors import TopicError, UnknownTopic

PREFIX = "pe"
VERSION = "v1"
KINDS = ("locker", "scanner", "handheld", "gateway")
# evt: events, QoS 1, never retained.  state: retained current state.
# presence: retained online/offline, the offline value set by the Last Will.
# cmd: signed commands down to the device.  ack: the device's command acks.
# conf: the gateway's confirmation of which of the device's events are
# committed to its disk; only then does the device delete them (firmware/sender.py).
# time: the gateway's clock, down (protocol/timesync.py); devices take their
# time from it and only the gateway may write it.
CHANNELS = ("evt", "state", "presence", "cmd", "ack", "conf", "time")
MAX_SEGMENT = 32


def valid_segment(s):
    """Segments are 1-32 of [a-z0-9_-]: safe in topics, file names and ACLs."""
    if not isinstance(s, str) or not 0 < len(s) <= MAX_SEGMENT:
        return False
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-" or c == "_"):
            return False
    return True


def build(outlet, kind, device, channel):
    if not valid_segment(outlet):
        raise TopicError("outlet %r must be 1-32 of a-z 0-9 _ -" % (outlet,))
    if kind not in KINDS:
        raise TopicError("kind %r is not one of %s" % (kind, ",".join(KINDS)))
    if not valid_segment(device):
        raise TopicError("device %r must be 1-32 of a-z 0-9 _ -" % (device,))
    if channel not in CHANNELS:
        raise TopicError("channel %r is not one of %s" % (channel, ",".join(CHANNELS)))
    return "/".join((PREFIX, VERSION, outlet, kind, device, channel))


def parse(topic):
    """Return (outlet, kind, device, channel) or raise a typed error."""
    if isinstance(topic, bytes):
        try:
            topic = topic.decode("utf-8")
        except Exception:
            raise UnknownTopic("topic is not UTF-8")
    parts = topic.split("/")
    if len(parts) < 2 or parts[0] != PREFIX:
        raise UnknownTopic("%r is outside the %s/ namespace" % (topic, PREFIX))
    if parts[1] != VERSION:
        raise UnknownTopic("%r has protocol version %r, expected %s" % (topic, parts[1], VERSION))
    if len(parts) != 6:
        raise UnknownTopic("%r has %d levels, expected 6" % (topic, len(parts)))
    outlet, kind, device, channel = parts[2], parts[3], parts[4], parts[5]
    if kind not in KINDS:
        raise UnknownTopic("%r: unknown device kind %r" % (topic, kind))
    if channel not in CHANNELS:
        raise UnknownTopic("%r: unknown channel %r" % (topic, channel))
    if not valid_segment(outlet):
        raise TopicError("%r: bad outlet id %r" % (topic, outlet))
    if not valid_segment(device):
        raise TopicError("%r: bad device id %r" % (topic, device))
    return (outlet, kind, device, channel)


def subscription(outlet, channel, kind="+", device="+"):
    """A filter for one channel of an outlet, e.g. pe/v1/o1/+/+/evt."""
    if not valid_segment(outlet):
        raise TopicError("outlet %r must be 1-32 of a-z 0-9 _ -" % (outlet,))
    if channel not in CHANNELS and channel != "+":
        raise TopicError("channel %r is not one of %s" % (channel, ",".join(CHANNELS)))
    return "/".join((PREFIX, VERSION, outlet, kind, device, channel))
