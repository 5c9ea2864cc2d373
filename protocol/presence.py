# Presence payloads: "online" and "offline" tagged with the connection they
# belong to, so an old connection's Last Will cannot undo a newer "online".
#
# A device publishes "online <tag>" (retained, QoS 1) on every new connection
# and registers "offline <tag>" as that connection's Will. The tag names the
# connection: "<incarnation>.<boot>.<conn>" (the device's incarnation id, its
# boot counter and the client's connection counter). The broker publishes a
# Will when it notices a connection is gone, which after a broker restart or a
# half-open socket can be long after the device reconnected; a reader that
# keeps the tag of the latest "online" drops an "offline" carrying any other
# tag (gateway/store/events.py, simulator/taps.py).
#
# The courier handheld (handheld/link.py, CPython) tags its presence the same
# way, its last field counting CONNECT attempts (paho's on_pre_connect).
#
# Untagged "online" and "offline" (devices built before tags) are still read;
# without a tag nothing can be compared, so they are taken as they come.
#
# MicroPython: the same module runs on the devices.

from protocol.errors import BadField

ONLINE = "online"
OFFLINE = "offline"
MAX_TAG = 48


def tag(incarnation, boot, conn):
    return "%s.%d.%d" % (incarnation, boot, conn)


def encode(state, t=None):
    if state not in (ONLINE, OFFLINE):
        raise BadField("presence state must be online or offline")
    if t is None:
        return state.encode()
    return ("%s %s" % (state, t)).encode()


def decode(payload):
    """(online, tag or None) from a presence payload; BadField otherwise."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > 8 + MAX_TAG:
        raise BadField("presence payload too long")
    try:
        text = bytes(payload).decode()
    except UnicodeError:
        raise BadField("presence payload is not UTF-8")
    parts = text.split(" ")
    if len(parts) > 2 or parts[0] not in (ONLINE, OFFLINE):
        raise BadField("presence must be online or offline, got %r" % text[:20])
    t = None
    if len(parts) == 2:
        t = parts[1]
        fields = t.split(".")
        if len(fields) != 3 or len(fields[0]) != 8 or not _hex(fields[0]) \
                or not _digits(fields[1]) or not _digits(fields[2]):
            raise BadField("presence tag must be incarnation.boot.conn, got %r" % t[:20])
    return parts[0] == ONLINE, t


def _hex(s):
    for ch in s:
        if not ("0" <= ch <= "9" or "a" <= ch <= "f"):
            return False
    return True


def _digits(s):
    if not s or len(s) > 10:
        return False
    for ch in s:
        if not "0" <= ch <= "9":
            return False
    return True
