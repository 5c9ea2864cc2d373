# Run on the MicroPython unix port and on CPython by
# tests/firmware/test_mqtt_encoder.py: every encoder of firmware/mqtt/packets.py
# given what a broker would close the connection on (or what cannot be
# encoded at all). One JSON object a line: the case and what happened.
#   PacketError    refused with the client's own error type
#   encoded        bytes came back (a bug for every case here)
#   other:<type>   some other exception escaped (a bug too)
import json
import sys

from firmware.mqtt import packets as P

LONG = "t" * 65536  # one byte over the two-byte length prefix


def case(name, fn, *args, **kw):
    try:
        out = fn(*args, **kw)
    except P.PacketError as e:
        res = {"case": name, "outcome": "PacketError", "error": str(e)[:80]}
    except Exception as e:
        res = {"case": name, "outcome": "other:" + type(e).__name__, "error": str(e)[:80]}
    else:
        res = {"case": name, "outcome": "encoded", "bytes": len(out)}
    print(json.dumps(res))


def main():
    for name, topic in [("empty", ""), ("plus", "a/+/b"), ("hash", "a/#"), ("lone hash", "#"),
                        ("nul", "a\x00b"), ("control", "a\x1bb"), ("surrogate", "a\ud800b"),
                        ("bad utf-8", b"a\xffb"), ("long", LONG), ("not a str", 42)]:
        case("publish topic " + name, P.publish, topic, b"x", 1, False, 7)
        case("publish qos0 topic " + name, P.publish, topic, b"x", 0)
    case("publish pid 0", P.publish, "a/b", b"x", 1, False, 0)
    case("publish pid 65536", P.publish, "a/b", b"x", 1, False, 65536)
    case("publish pid -1", P.publish, "a/b", b"x", 1, False, -1)
    case("publish qos 2", P.publish, "a/b", b"x", 2, False, 1)
    case("publish payload str", P.publish, "a/b", 12345, 1, False, 1)
    for name, filt in [("empty", ""), ("hash inside", "a/#/b"), ("hash glued", "a#"),
                       ("hash glued level", "a/b#"), ("plus glued", "a/b+"), ("plus glued front", "+a"),
                       ("nul", "a/\x00"), ("surrogate", "a/\ud800"), ("long", LONG)]:
        case("subscribe filter " + name, P.subscribe, 1, filt, 1)
    case("subscribe pid 0", P.subscribe, 0, "a/b", 1)
    case("subscribe qos 2", P.subscribe, 1, "a/b", 2)
    case("puback pid 0", P.puback, 0)
    case("connect will topic wildcard", P.connect, "c", will_topic="a/+")
    case("connect will topic empty", P.connect, "c", will_topic="")
    case("connect client id long", P.connect, LONG)
    case("connect user surrogate", P.connect, "c", user="u\ud800")
    case("connect password long", P.connect, "c", user="u", password=b"p" * 65536)
    case("parse publish pid 0", P.parse_publish, 0x32, b"\x00\x01a\x00\x00x")


main()
sys.stdout.flush()
