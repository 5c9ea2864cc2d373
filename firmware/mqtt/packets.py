# MQTT 3.1.1 packet encoding and decoding, the part of the client that is
# pure bytes: testable on CPython and the unix port without a socket.

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


class PacketError(Exception):
    pass


def _str(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
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
    payload = _str(client_id)
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        payload += _str(will_topic) + _str(will_msg)
    if user is not None:
        flags |= 0x80
        payload += _str(user)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    return packet(CONNECT, body)


def publish(topic, payload, qos=0, retain=False, pid=0, dup=False):
    if qos not in (0, 1):
        raise PacketError("QoS %r not supported" % (qos,))
    if not qos:
        dup = False  # DUP must be 0 for QoS 0 (MQTT-3.3.1-2)
    first = PUBLISH | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = _str(topic)
    if qos:
        body += struct.pack("!H", pid)
    return packet(first, body + payload)


def puback(pid):
    return packet(PUBACK, struct.pack("!H", pid))


def subscribe(pid, topic, qos=1):
    return packet(SUBSCRIBE | 0x02, struct.pack("!H", pid) + _str(topic) + bytes([qos]))


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
        i += 2
    return (topic, body[i:], qos, pid, bool(first & 1), bool(first & 0x08))
