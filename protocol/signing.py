# Signed commands to devices (open a compartment, provision pickup codes,
# config): HMAC-SHA256 over canonical bytes, an expiry and a replay window.
#
# micropython-lib's hmac is not on the unix port, so HMAC (RFC 2104) is built
# here on hashlib.sha256, which every MicroPython port has.
#
#   {"v":1,"id":"c-9f2e","dev":"lk01","op":"open","args":{"door":3},
#    "iat":1795881100,"exp":1795881400,"kv":1,"sig":"<64 hex>"}
#
# `kv` is the version of the device's own key the platform signed with
# (protocol/keys.py: each device's key is derived from the platform's master
# key, the device id and the version).
#
# The signature covers b"pe/v1/cmd\n" + canonical JSON of every field but
# "sig": the prefix keeps a command signature from ever verifying as some
# other signed object.

import binascii
import hashlib

from protocol import PROTOCOL_VERSION
from protocol.canonical import check_value, dumps, loads_object
from protocol.errors import (
    BadField,
    BadSignature,
    ExpiredCommand,
    MalformedPayload,
    MissingField,
    NotYetValid,
    OversizedPayload,
    ReplayedCommand,
    UnknownKey,
    UnsupportedVersion,
    WrongDevice,
)
from protocol.topics import valid_segment

DOMAIN = b"pe/v1/cmd\n"
MAX_COMMAND = 2048
MAX_LIFETIME = 7 * 24 * 3600  # provisioning may wait out a long backhaul cut
CLOCK_SKEW = 300
_FIELDS = ("v", "id", "dev", "op", "args", "iat", "exp", "kv")
MAX_KV = 2147483647


def hmac_sha256(key, msg):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (64 - len(key))
    inner = hashlib.sha256(bytes([b ^ 0x36 for b in key]))
    inner.update(msg)
    outer = hashlib.sha256(bytes([b ^ 0x5C for b in key]))
    outer.update(inner.digest())
    return outer.digest()


def equal_ct(a, b):
    """Compare without an early exit, so timing reveals nothing of the MAC."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


def signing_bytes(cmd):
    body = {}
    for k in cmd:
        if k != "sig":
            body[k] = cmd[k]
    return DOMAIN + dumps(body)


def _int(cmd, f):
    x = cmd[f]
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise BadField("%s must be a non-negative integer" % f)
    return x


def _check_fields(cmd):
    for f in _FIELDS:
        if f not in cmd:
            raise MissingField("command has no %r field" % f)
    v = cmd["v"]
    if not isinstance(v, int) or isinstance(v, bool) or v != PROTOCOL_VERSION:
        raise UnsupportedVersion("command version %r, this side speaks %d" % (cmd["v"], PROTOCOL_VERSION))
    for f in ("id", "op"):
        if not valid_segment(cmd[f]):
            raise BadField("%s must be 1-32 of a-z 0-9 _ -" % f)
    kv = cmd["kv"]
    if not isinstance(kv, int) or isinstance(kv, bool) or not 0 < kv <= MAX_KV:
        raise BadField("kv must be a key version 1-%d" % MAX_KV)
    if not valid_segment(cmd["dev"]):
        raise BadField("dev must be a device id")
    if not isinstance(cmd["args"], dict):
        raise BadField("args must be an object")
    iat = _int(cmd, "iat")
    exp = _int(cmd, "exp")
    if exp <= iat:
        raise BadField("exp must be after iat")
    if exp - iat > MAX_LIFETIME:
        raise BadField("lifetime %d s exceeds %d s" % (exp - iat, MAX_LIFETIME))
    check_value(cmd)


def sign(cmd, key, kv=None):
    """Return a copy of cmd with kv (the key version, if given) and sig set."""
    out = {}
    for k in cmd:
        if k != "sig":
            out[k] = cmd[k]
    if kv is not None:
        out["kv"] = kv
    out.setdefault("v", PROTOCOL_VERSION)
    _check_fields(out)
    out["sig"] = binascii.hexlify(hmac_sha256(key, signing_bytes(out))).decode()
    return out


def encode(cmd):
    data = dumps(cmd)
    if len(data) > MAX_COMMAND:
        raise OversizedPayload("command is %d bytes, limit %d" % (len(data), MAX_COMMAND))
    return data


class ReplayGuard:
    """Remembers executed command ids until they expire.

    Bounded: when full, the entry that expires first is dropped and its
    expiry becomes a floor; any later command expiring at or before that
    floor is refused, so a dropped id can still never run twice.
    `state()`/`restore()` let a device persist the window across reboots;
    when the saved window is lost or damaged, `forget(now)` raises the floor
    past every command that could have run (docs/security.md).
    """

    def __init__(self, capacity=64):
        self.capacity = capacity
        self._seen = {}
        self.floor = 0

    def __contains__(self, cmd_id):
        return cmd_id in self._seen

    def __len__(self):
        return len(self._seen)

    def check(self, cmd_id, exp):
        if cmd_id in self._seen:
            raise ReplayedCommand("command %s was already executed" % cmd_id)
        if exp <= self.floor:
            raise ReplayedCommand("command %s expires by the replay floor %d" % (cmd_id, self.floor))

    def add(self, cmd_id, exp, now):
        for k in list(self._seen):
            if self._seen[k] < now:
                # Expired ids can't verify any more; the floor keeps them out.
                if self._seen[k] > self.floor:
                    self.floor = self._seen[k]
                del self._seen[k]
        while len(self._seen) >= self.capacity:
            oldest = None
            for k in self._seen:
                if oldest is None or self._seen[k] < self._seen[oldest]:
                    oldest = k
            if self._seen[oldest] > self.floor:
                self.floor = self._seen[oldest]
            del self._seen[oldest]
        self._seen[cmd_id] = exp

    def state(self):
        return {"floor": self.floor, "seen": self._seen}

    def restore(self, st):
        """Load a saved window; ValueError if `st` is not one (nothing changes)."""
        if not isinstance(st, dict):
            raise ValueError("replay state is not an object")
        floor = st.get("floor", 0)
        seen = st.get("seen", {})
        if not _count(floor) or not isinstance(seen, dict):
            raise ValueError("replay state has a bad floor or window")
        for k in seen:
            if not isinstance(k, str) or not _count(seen[k]):
                raise ValueError("replay state has a bad entry")
        self.floor = floor
        self._seen = dict(seen)

    def forget(self, now, skew=CLOCK_SKEW):
        """The saved window is lost: refuse every command that could have run.

        A command ran at some t <= now with iat <= t + skew and
        exp <= iat + MAX_LIFETIME, so exp <= now + skew + MAX_LIFETIME:
        with the floor there, none of them passes check() again. Commands
        signed later with a lifetime reaching past the floor still run."""
        self._seen = {}
        f = now + skew + MAX_LIFETIME
        if f > self.floor:
            self.floor = f


def _count(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def verify(payload, keys, device, now, guard=None, skew=CLOCK_SKEW):
    """Check a command for `device` at time `now`; return the command dict.

    `keys` is the device's protocol.keys.Keyring (its own key, the previous
    version too during a rotation's grace period) or a dict of key version ->
    secret bytes. With a
    guard, the id is recorded, so a second delivery raises ReplayedCommand.
    Checks run cheapest-to-forge last: the signature is checked before any
    field is trusted for expiry or replay decisions.
    """
    if isinstance(payload, dict):
        cmd = payload
    else:
        if len(payload) > MAX_COMMAND:
            raise OversizedPayload("command is %d bytes, limit %d" % (len(payload), MAX_COMMAND))
        cmd = loads_object(payload, "command")
    if not isinstance(cmd, dict):
        raise MalformedPayload("command is not a JSON object")
    if "sig" not in cmd:
        raise MissingField("command has no 'sig' field")
    _check_fields(cmd)
    if hasattr(keys, "secret_for"):
        key = keys.secret_for(cmd["kv"], now)  # UnknownKey, RetiredKey
    else:
        key = keys.get(cmd["kv"])
        if key is None:
            raise UnknownKey("no key version %r" % (cmd["kv"],))
    sig = cmd["sig"]
    if not isinstance(sig, str) or len(sig) != 64:
        raise BadSignature("sig must be 64 hex digits")
    for c in sig:
        if not ("0" <= c <= "9" or "a" <= c <= "f"):
            raise BadSignature("sig must be lowercase hex")
    given = binascii.unhexlify(sig)
    if not equal_ct(given, hmac_sha256(key, signing_bytes(cmd))):
        raise BadSignature("signature does not match command %s" % (cmd["id"],))
    if cmd["dev"] != device:
        raise WrongDevice("command is for %s, this is %s" % (cmd["dev"], device))
    if now + skew < cmd["iat"]:
        raise NotYetValid("command issued %d s in the future" % (cmd["iat"] - now))
    if now >= cmd["exp"]:
        raise ExpiredCommand("command %s expired %d s ago" % (cmd["id"], now - cmd["exp"]))
    if guard is not None:
        guard.check(cmd["id"], cmd["exp"])
        guard.add(cmd["id"], cmd["exp"], now)
    return cmd


def ack(cmd_id, ts, error=None, result=None):
    """The ack a device publishes: ok, or the error code that refused it."""
    a = {"v": PROTOCOL_VERSION, "id": cmd_id, "ts": ts, "ok": error is None}
    a["code"] = "ok" if error is None else error.code
    if error is not None and error.detail:
        a["detail"] = error.detail
    if result is not None:
        a["result"] = result
    return dumps(a)
