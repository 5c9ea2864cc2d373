# Sealed pickup codes: a code a locker issues offline travels only encrypted,
# once for each reader that may see it (docs/security.md, "Sealed codes").
#
#   body["code_sealed"] = {"platform": {"kv": 1, "box": "<hex>"},
#                          "notifier": {"kv": 1, "box": "<hex>"}}
#
# Readers and their keys. Each box is sealed under a key only its reader can
# derive, and neither key signs anything a device accepts:
#
# - "platform": from the locker's own device key at version kv
#   (protocol/keys.py). The platform derives it from its master key; the
#   gateway holds no device key, so it cannot open this box.
# - "notifier": the outlet's notifier (SMS while the backhaul is down) holds
#   one outlet notifier key, derived by the platform from its master key
#   (notifier_key: HKDF, label "pe/v1/notifier-key", the outlet, version kv).
#   Each locker is given only its own sealing key, derived from that one by
#   HKDF-Expand with its device id (locker_notify_key), so a locker can seal
#   for the notifier but read no other locker's codes, and the notifier
#   derives every locker's key from the one it holds. The notifier key is no
#   input to any command or permit key: it opens no door and signs nothing.
#
# The scheme: AES-256 in CTR mode, then HMAC-SHA256 (encrypt-then-MAC), with
# the two keys derived from the reader's key by HKDF-Expand under separate
# labels. The MAC covers the reader, the key version, the event id, the
# parcel and the ciphertext (each field length-prefixed), so a box moved to
# another event, parcel, reader or version is refused.
#
# The nonce is the event id: "<device>:<incarnation>:<seq>" never repeats for
# a device (protocol/ids.py: the seq is reserved on flash before it is handed
# out, and a wiped counter starts a new random incarnation), and each key
# belongs to one device. A journal replayed after a power cut re-sends the box
# sealed before the cut; sealing the same code for the same event again gives
# the same bytes, so no counter block is ever used for two plaintexts.
#
# AES: the unix port and ESP32 builds of `cryptolib` have ECB and CBC but
# not CTR (MICROPY_PY_CRYPTOLIB_CTR is off), so CTR is built here on one
# ECB block encryption: cryptolib on MicroPython, the `cryptography` package
# on CPython. Everything else is this one implementation on both.

import binascii
import hashlib

from protocol.errors import BadField, BadSeal
from protocol.ids import parse_event_id
from protocol.keys import HASH_LEN, MIN_SECRET, device_key, fleet_id, hkdf, hkdf_expand, valid_version
from protocol.signing import equal_ct, hmac_sha256
from protocol.topics import valid_segment

READERS = ("platform", "notifier")
TAG_LEN = 16
MAX_SECRET = 64
NOTIFIER_SALT = b"pe/v1/notifier-key"
NOTIFIER_INFO = b"pe/v1/notifier-key\n"
LOCKER_INFO = b"pe/v1/notifier-seal\n"
MAC_DOMAIN = b"pe/v1/sealed-code\n"


def _aes_ecb(key):
    """A function that encrypts 16-byte blocks with AES under `key`."""
    try:
        import cryptolib
    except ImportError:
        cryptolib = None
    if cryptolib is not None:
        return cryptolib.aes(key, 1).encrypt  # 1: ECB
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(key), modes.ECB()).encryptor().update


def _lp(b):
    """Length-prefixed, so no two field lists give the same MAC input."""
    return str(len(b)).encode() + b":" + b


def _keys(reader, key):
    enc = hkdf_expand(key, b"pe/v1/seal-enc\n" + reader.encode(), 32)
    mac = hkdf_expand(key, b"pe/v1/seal-mac\n" + reader.encode(), 32)
    return enc, mac


def _ctr(enc_key, reader, eid, data):
    block = _aes_ecb(enc_key)
    nonce = hashlib.sha256(b"pe/v1/seal-iv\n" + _lp(reader.encode()) + _lp(eid.encode())).digest()[:12]
    out = bytearray(len(data))
    i = 0
    n = 0
    while i < len(data):
        ks = block(nonce + n.to_bytes(4, "big"))
        for j in range(16):
            if i + j >= len(data):
                break
            out[i + j] = data[i + j] ^ ks[j]
        i += 16
        n += 1
    return bytes(out)


def _tag(mac_key, reader, kv, eid, parcel, ct):
    msg = MAC_DOMAIN + _lp(reader.encode()) + _lp(str(kv).encode()) + _lp(eid.encode()) + \
        _lp(parcel.encode()) + _lp(ct)
    return hmac_sha256(mac_key, msg)[:TAG_LEN]


def _check_key(key):
    if not isinstance(key, bytes) or not MIN_SECRET <= len(key) <= MAX_SECRET:
        raise BadField("a sealing key is %d-%d bytes" % (MIN_SECRET, MAX_SECRET))


def seal(reader, key, kv, eid, parcel, code):
    """The box for `reader` ({"kv", "box"}) holding `code`, bound to the
    event `eid` and `parcel`. `key` is the reader's key as this locker holds
    it: its device key at `kv` (platform) or its notifier sealing key."""
    if reader not in READERS:
        raise BadField("reader must be one of %s" % ", ".join(READERS))
    _check_key(key)
    if not valid_version(kv):
        raise BadField("kv must be a key version")
    parse_event_id(eid)
    enc, mac = _keys(reader, key)
    ct = _ctr(enc, reader, eid, code.encode())
    return {"kv": kv, "box": binascii.hexlify(ct + _tag(mac, reader, kv, eid, parcel, ct)).decode()}


def _box(sealed, reader):
    """(kv, ciphertext, tag) of a reader's box; BadSeal if it is not one."""
    if not isinstance(sealed, dict):
        raise BadSeal("code_sealed must be an object")
    b = sealed.get(reader)
    if not isinstance(b, dict):
        raise BadSeal("no box for the %s" % reader)
    kv = b.get("kv")
    if not valid_version(kv):
        raise BadSeal("the %s box has no key version" % reader)
    box = b.get("box")
    if not isinstance(box, str) or len(box) > 256 or len(box) < 2 * (TAG_LEN + 1) or len(box) % 2:
        raise BadSeal("the %s box is not 17-128 bytes of hex" % reader)
    for c in box:
        if not ("0" <= c <= "9" or "a" <= c <= "f"):
            raise BadSeal("the %s box is not lowercase hex" % reader)
    raw = binascii.unhexlify(box)
    return kv, raw[:-TAG_LEN], raw[-TAG_LEN:]


def box_version(event, reader):
    """The key version a reader needs to open this event's box."""
    body = event.get("body") if isinstance(event, dict) else None
    if not isinstance(body, dict):
        raise BadSeal("event has no body")
    return _box(body.get("code_sealed"), reader)[0]


def open_box(reader, key, event):
    """The code in `event`'s box for `reader`, opened with that reader's key
    for the sending locker at the box's kv. BadSeal if the key is wrong or
    anything in the box, the event id or the parcel was changed."""
    if not isinstance(event, dict) or not isinstance(event.get("body"), dict):
        raise BadSeal("event has no body")
    eid = event.get("id")
    parcel = event["body"].get("parcel")
    if not isinstance(eid, str) or not isinstance(parcel, str):
        raise BadSeal("event has no id or parcel")
    kv, ct, tag = _box(event["body"].get("code_sealed"), reader)
    enc, mac = _keys(reader, key)
    if not equal_ct(tag, _tag(mac, reader, kv, eid, parcel, ct)):
        raise BadSeal("the %s box of %s does not verify" % (reader, eid))
    pt = _ctr(enc, reader, eid, ct)
    for c in pt:
        if not 0x30 <= c <= 0x39:
            raise BadSeal("the %s box of %s holds no code" % (reader, eid))
    return pt.decode()


# ---- keys


def notifier_key(master, outlet, kv):
    """The outlet notifier's key at version `kv` (platform side: it alone
    holds the master). Given to the gateway's notifier, never to a device."""
    if len(master) < MIN_SECRET:
        raise BadField("master key is shorter than %d bytes" % MIN_SECRET)
    if not valid_segment(outlet):
        raise BadField("outlet must be 1-32 of a-z 0-9 _ -")
    if not valid_version(kv):
        raise BadField("key version must be a positive integer")
    return hkdf(master, NOTIFIER_SALT, NOTIFIER_INFO + outlet.encode() + b"\n" + str(kv).encode(), HASH_LEN)


def locker_notify_key(notifier, device):
    """The key `device` seals codes for the notifier with: derived one-way
    from the outlet's notifier key, so a locker holds only its own."""
    _check_key(notifier)
    if not valid_segment(device):
        raise BadField("device must be 1-32 of a-z 0-9 _ -")
    return hkdf_expand(notifier, LOCKER_INFO + device.encode(), HASH_LEN)


def open_for_platform(master, outlet, event):
    """The platform's side: derive the locker's device key from the master
    at the box's kv and open the platform box."""
    dev = _device(event)
    kv = box_version(event, "platform")
    return open_box("platform", device_key(master, fleet_id(outlet, dev), kv), event)


def open_for_notifier(keys_by_version, event):
    """The notifier's side: `keys_by_version` maps a notifier key version to
    the outlet notifier key it holds."""
    kv = box_version(event, "notifier")
    key = keys_by_version.get(kv)
    if key is None:
        raise BadSeal("the notifier holds no key version %d" % kv)
    return open_box("notifier", locker_notify_key(key, _device(event)), event)


def _device(event):
    if not isinstance(event, dict):
        raise BadSeal("event is not an object")
    try:
        return parse_event_id(event.get("id"))[0]
    except BadField as e:
        raise BadSeal(e.detail)
