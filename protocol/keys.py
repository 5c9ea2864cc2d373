# Per-device keys. The platform holds one master key and derives each
# device's command key with HKDF-SHA256 (RFC 5869) from the master, the
# device's fleet-wide id and a key version:
#
#   PRK = HMAC-SHA256(b"pe/v1/device-key", master)              (extract)
#   key = HMAC-SHA256(PRK, info || 0x01)                          (expand, 32 bytes)
#   info = b"pe/v1/device-key\n" + device_id + b"\n" + decimal version
#
# A device holds only its own derived key (a Keyring: the current version
# and, during a grace period after a rotation, the previous one); the gateway
# holds none. The HMAC is signing.hmac_sha256: one implementation.

import binascii

from protocol.errors import BadField, RetiredKey, UnknownKey
from protocol.signing import hmac_sha256
from protocol.topics import valid_segment

HASH_LEN = 32
SALT = b"pe/v1/device-key"
INFO = b"pe/v1/device-key\n"
MAX_VERSION = 2147483647
MIN_SECRET = 16


def hkdf_extract(salt, ikm):
    if not salt:
        salt = b"\x00" * HASH_LEN
    return hmac_sha256(salt, ikm)


def hkdf_expand(prk, info, length):
    if length > 255 * HASH_LEN:
        raise BadField("HKDF output is at most %d bytes" % (255 * HASH_LEN))
    out = b""
    t = b""
    i = 1
    while len(out) < length:
        t = hmac_sha256(prk, t + info + bytes([i]))
        out += t
        i += 1
    return out[:length]


def hkdf(ikm, salt, info, length):
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def valid_version(kv):
    return isinstance(kv, int) and not isinstance(kv, bool) and 0 < kv <= MAX_VERSION


def fleet_id(outlet, device):
    """Device ids are unique within an outlet; keys are derived from this."""
    return outlet + "/" + device


def _valid_device_id(device_id):
    if not isinstance(device_id, str):
        return False
    parts = device_id.split("/")
    if len(parts) > 2:
        return False
    for p in parts:
        if not valid_segment(p):
            return False
    return True


def device_key(master, device_id, version):
    """The 32-byte command key of `device_id` ("<outlet>/<device>") at key
    version `version`. Platform side only: no device holds the master."""
    if len(master) < MIN_SECRET:
        raise BadField("master key is shorter than %d bytes" % MIN_SECRET)
    if not _valid_device_id(device_id):
        raise BadField("device id must be <outlet>/<device>, each 1-32 of a-z 0-9 _ -")
    if not valid_version(version):
        raise BadField("key version must be 1-%d" % MAX_VERSION)
    info = INFO + device_id.encode() + b"\n" + str(version).encode()
    return hkdf(master, SALT, info, HASH_LEN)


class Keyring:
    """A device's own key: the current version, and the previous one until
    `prev_until` (Unix seconds) so commands and permits signed before a
    rotation still run until the grace period ends."""

    def __init__(self, kv, secret, prev_kv=None, prev_secret=None, prev_until=0):
        self.kv = kv
        self.secret = secret
        self.prev_kv = prev_kv
        self.prev_secret = prev_secret
        self.prev_until = prev_until

    def secret_for(self, kv, now):
        if kv == self.kv:
            return self.secret
        if self.prev_secret is not None and kv == self.prev_kv:
            if now < self.prev_until:
                return self.prev_secret
            raise RetiredKey("key version %d retired at %d" % (kv, self.prev_until))
        raise UnknownKey("no key version %r (this device holds %d)" % (kv, self.kv))

    def versions(self):
        return [self.kv] if self.prev_secret is None else [self.kv, self.prev_kv]


def _secret(d, where):
    s = d.get("secret")
    if not isinstance(s, str):
        raise BadField("%s.secret must be a hex string" % where)
    try:
        raw = binascii.unhexlify(s)
    except Exception:
        raise BadField("%s.secret must be hex" % where)
    if len(raw) < MIN_SECRET:
        raise BadField("%s.secret is shorter than %d bytes" % (where, MIN_SECRET))
    return raw


def from_config(d, where="key"):
    """A Keyring from a device config's key section:
    {"kv": 2, "secret": "<hex>", "prev": {"kv": 1, "secret": "<hex>", "until": ts}}.
    Raises BadField naming the field."""
    if not isinstance(d, dict):
        raise BadField("%s must be an object" % where)
    if not valid_version(d.get("kv")):
        raise BadField("%s.kv must be a key version 1-%d" % (where, MAX_VERSION))
    secret = _secret(d, where)
    p = d.get("prev")
    if p is None:
        return Keyring(d["kv"], secret)
    w = where + ".prev"
    if not isinstance(p, dict):
        raise BadField("%s must be an object" % w)
    if not valid_version(p.get("kv")) or p["kv"] == d["kv"]:
        raise BadField("%s.kv must be a key version other than %s.kv" % (w, where))
    until = p.get("until")
    if not isinstance(until, int) or isinstance(until, bool) or until < 0:
        raise BadField("%s.until must be Unix seconds" % w)
    return Keyring(d["kv"], secret, p["kv"], _secret(p, w), until)


def config(kv, secret, prev_kv=None, prev_secret=None, prev_until=0):
    """The key section a device's config carries (the inverse of from_config)."""
    d = {"kv": kv, "secret": binascii.hexlify(secret).decode()}
    if prev_secret is not None:
        d["prev"] = {"kv": prev_kv, "secret": binascii.hexlify(prev_secret).decode(), "until": prev_until}
    return d
