# MQTT 3.1.1 packet encoding and decoding, the part of the client that is
# pure bytes: testable on CPython and the unix port without a socket.
#
# check_topic, check_filter, check_payload and check_qos are what the client
# runs on a caller's arguments before anything reaches the socket. They exist
# because a broker answers a bad PUBLISH by closing the connection
# (Mosquitto: empty topic, wildcards, NUL or control characters, bad UTF-8,
# a packet over max_packet_size), and a QoS 1 message the session resends
# after every reconnect would close every new connection too.
#
# The encoders run the same checks: they are imported on their
# own too (the simulator, tools, tests on CPython), and what they cannot
# encode must fail as a PacketError, not as whatever the runtime raises
# (CPython: UnicodeEncodeError for a lone surrogate, struct.error for a
# length over 65535) or, worse, not at all (MicroPython's struct.pack("!H")
# keeps the low 16 bits of a long topic's length: a corrupt packet). Packet
# ids are 1..65535 (MQTT-2.3.1-1). A test that needs an odd packet on
# purpose writes its bytes by hand. The client's hot path pays a dict
# lookup for the topic (the check_topic cache) and two comparisons.

import struct

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x80
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

MAX_PACKET = 64 * 1024
MAX_REMAINING = 268435455  # four length bytes, MQTT 3.1.1 section 2.2.3

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


MAX_TOPIC = 65535  # a two-byte length prefix (MQTT 3.1.1 section 1.5.3)
# Default limit on an outgoing payload: four event envelopes
# (protocol/envelope.py, 4 KiB) and room for a large locker's
# retained state document, while a device never builds a packet that a
# board's heap or the broker's max_packet_size would choke on.
MAX_PAYLOAD = 16384


class MQTTError(Exception):
    """Every error the firmware MQTT client raises is one of these."""


class PacketError(MQTTError):
    """A packet that cannot be built or parsed: a bad topic, payload or QoS
    from the caller (raised before anything is sent), or bytes off the wire
    that are not the packet they claim to be."""


# Topics already found valid, mapped to their UTF-8 bytes: a device
# publishes to a handful, so each is checked once. Bounded: cleared when full.
_TOPICS_OK = {}
_TOPICS_KEEP = 16


def _bad_char(o):
    # What Mosquitto's UTF-8 check refuses (and the MQTT spec forbids or
    # discourages): NUL and control characters, UTF-16 surrogates (MicroPython
    # encodes them without complaint), and the Unicode non-characters.
    return (o < 0x20 or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xDFFF
            or 0xFDD0 <= o <= 0xFDEF or (o & 0xFFFE) == 0xFFFE)


def _check_name(topic, what):
    if isinstance(topic, (bytes, bytearray)):
        raw = bytes(topic)
        try:
            text = raw.decode("utf-8")
        except Exception:
            raise PacketError("%s is not valid UTF-8" % what)
    elif isinstance(topic, str):
        if len(topic) > MAX_TOPIC:  # characters <= bytes: too long before encoding it
            raise PacketError("%s is %d characters, over %d bytes" % (what, len(topic), MAX_TOPIC))
        text = topic
        try:
            raw = topic.encode("utf-8")
        except Exception:  # CPython: a lone surrogate
            raise PacketError("%s cannot be encoded as UTF-8" % what)
    else:
        raise PacketError("%s must be str, not %s" % (what, type(topic).__name__))
    if not raw:
        raise PacketError("%s is empty" % what)
    if len(raw) > MAX_TOPIC:
        raise PacketError("%s is %d bytes, over %d" % (what, len(raw), MAX_TOPIC))
    for ch in text:
        if _bad_char(ord(ch)):
            raise PacketError("%s holds character U+%04X" % (what, ord(ch)))
    return raw


def _remember(key, raw):
    if len(_TOPICS_OK) >= _TOPICS_KEEP:
        _TOPICS_OK.clear()
    _TOPICS_OK[key] = raw
    return raw


def check_topic(topic):
    """The UTF-8 bytes of a topic to PUBLISH to, or PacketError: empty, over
    65535 bytes, not UTF-8, NUL or control characters, or a wildcard."""
    cacheable = isinstance(topic, (str, bytes))
    if cacheable:
        raw = _TOPICS_OK.get(topic)
        if raw is not None:
            return raw
    raw = _check_name(topic, "topic")
    if b"+" in raw or b"#" in raw:
        raise PacketError("wildcard in a publish topic: %r" % (topic,))
    return _remember(topic, raw) if cacheable else raw


def check_filter(topic):
    """The UTF-8 bytes of a topic filter to SUBSCRIBE to, or PacketError:
    as check_topic, except that '+' may fill a whole level and '#' only the
    whole last level."""
    raw = _check_name(topic, "topic filter")
    levels = raw.split(b"/")
    last = len(levels) - 1
    for i, lv in enumerate(levels):
        if b"#" in lv and (lv != b"#" or i != last):
            raise PacketError("'#' must be the whole last level: %r" % (topic,))
        if b"+" in lv and lv != b"+":
            raise PacketError("'+' must fill a whole level: %r" % (topic,))
    return raw


def check_payload(payload, limit=MAX_PAYLOAD):
    """The payload as bytes (a str is encoded as UTF-8), or PacketError if it
    is not bytes-like or is over `limit` bytes."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    elif isinstance(payload, bytearray) or isinstance(payload, memoryview):
        payload = bytes(payload)
    elif not isinstance(payload, bytes):
        raise PacketError("payload must be bytes, not %s" % type(payload).__name__)
    if len(payload) > limit:
        raise PacketError("payload of %d bytes is over the limit of %d" % (len(payload), limit))
    return payload


def check_qos(qos):
    # The client has QoS 0 and 1 flows only.
    if qos not in (0, 1) or isinstance(qos, bool):
        raise PacketError("QoS %r not supported (0 or 1)" % (qos,))


def check_pid(pid):
    """A packet identifier: an int in 1..65535 (MQTT-2.3.1-1), or PacketError."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= 65535:
        raise PacketError("packet id %r out of range (1..65535)" % (pid,))


def _str(s, what="string"):
    # A UTF-8 string or binary field: two length bytes, so at most 65535.
    if isinstance(s, str):
        try:
            s = s.encode("utf-8")
        except Exception:  # CPython: a lone surrogate
            raise PacketError("%s cannot be encoded as UTF-8" % what)
        # MicroPython encodes one as ED A0..BF xx, which no UTF-8 decoder takes.
        i = s.find(b"\xed")
        while i >= 0:
            if i + 1 < len(s) and s[i + 1] >= 0xA0:
                raise PacketError("%s holds a UTF-16 surrogate" % what)
            i = s.find(b"\xed", i + 1)
    elif not isinstance(s, (bytes, bytearray)):
        raise PacketError("%s must be str or bytes, not %s" % (what, type(s).__name__))
    if len(s) > 65535:
        raise PacketError("%s is %d bytes, over 65535" % (what, len(s)))
    return struct.pack("!H", len(s)) + s


def remaining_length(n):
    if not 0 <= n <= MAX_REMAINING:
        raise PacketError("remaining length %d out of range" % n)
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + remaining_length(len(body)) + body


def connect(client_id, keepalive=60, clean=True, user=None, password=None,
            will_topic=None, will_msg=b"", will_qos=1, will_retain=True):
    if password is not None and user is None:
        raise PacketError("a password needs a user name (MQTT-3.1.2-22)")
    flags = 0
    if clean:
        flags |= 0x02
    payload = _str(client_id, "client id")
    if will_topic is not None:
        check_qos(will_qos)
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        payload += _str(check_topic(will_topic)) + _str(will_msg, "will message")
    if user is not None:
        flags |= 0x80
        payload += _str(user, "user name")
    if password is not None:
        flags |= 0x40
        payload += _str(password, "password")
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    return packet(CONNECT, body)


def publish(topic, payload, qos=0, retain=False, pid=0, dup=False):
    """A PUBLISH packet, or PacketError for what check_topic, check_payload
    (up to MAX_REMAINING) and check_qos refuse, and for a QoS 1 packet id
    outside 1..65535 (pid is ignored at QoS 0)."""
    raw = check_topic(topic)
    payload = check_payload(payload, MAX_REMAINING)
    check_qos(qos)
    if not qos:
        dup = False  # DUP must be 0 for QoS 0 (MQTT-3.3.1-2)
    first = PUBLISH | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = struct.pack("!H", len(raw)) + raw
    if qos:
        check_pid(pid)
        body += struct.pack("!H", pid)
    return packet(first, body + payload)


def puback(pid):
    check_pid(pid)
    return packet(PUBACK, struct.pack("!H", pid))


def subscribe(pid, topic, qos=1):
    """A SUBSCRIBE packet for one filter, or PacketError for what check_filter
    and check_qos refuse and a packet id outside 1..65535."""
    check_pid(pid)
    raw = check_filter(topic)
    check_qos(qos)
    return packet(SUBSCRIBE | 0x02, struct.pack("!H", pid) + struct.pack("!H", len(raw)) + raw
                  + bytes([qos]))


def pingreq():
    return bytes([PINGREQ, 0])


def disconnect():
    return bytes([DISCONNECT, 0])


def parse_publish(first, body):
    """Return (topic, payload, qos, pid, retain, dup) of a PUBLISH body."""
    if len(body) < 2:
        raise PacketError("PUBLISH too short")
    tlen = struct.unpack("!H", body[:2])[0]
    if 2 + tlen > len(body):
        raise PacketError("PUBLISH topic runs past the packet")
    try:
        topic = body[2:2 + tlen].decode("utf-8")
    except Exception:
        raise PacketError("PUBLISH topic is not UTF-8")
    qos = (first >> 1) & 3
    if qos == 3:
        raise PacketError("PUBLISH with QoS 3")
    i = 2 + tlen
    pid = 0
    if qos:
        if i + 2 > len(body):
            raise PacketError("PUBLISH has no packet id")
        pid = struct.unpack("!H", body[i:i + 2])[0]
        if not pid:
            raise PacketError("PUBLISH with packet id 0")  # MQTT-2.3.1-1
        i += 2
    return (topic, body[i:], qos, pid, bool(first & 1), bool(first & 0x08))
