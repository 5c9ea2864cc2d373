# Pickup codes and courier credentials as salted SHA-256 hashes: the scheme
# the platform, the locker and the handheld share, so that each can check a
# code without holding it. The locker's attempt rationing is in
# firmware/locker/codes.py.
#
# Two secrets for a recipient, for two places:
#
# - the pickup code, 6 digits, typed at a locker's keypad (or scanned as
#   `PE-P:<code>`). A salted hash of 10^6 values is broken in seconds by
#   anyone who holds it, so only the locker holds one: its lockout
#   rations the tries at the panel (docs/security.md).
# - the hand-delivery token, 80 random bits as 16 Crockford base32
#   characters, which the villager's notice shows as a QR code
#   (`PE-H:XXXX-XXXX-XXXX-XXXX`, printed below it for typing). The
#   handheld's manifest carries only its salted hash: a stolen handheld
#   gives up no code, because 2^80 tries is out of reach where 10^6 is not
#   (bench/code_secrecy.py measures both).

import binascii
import hashlib

from protocol.signing import equal_ct


def salted_hash(salt_hex, secret):
    h = hashlib.sha256(binascii.unhexlify(salt_hex))
    h.update(secret.encode() if isinstance(secret, str) else secret)
    return binascii.hexlify(h.digest()).decode()


def new_salt(urandom):
    return binascii.hexlify(urandom(8)).decode()


def new_code(urandom, digits=6):
    """A numeric code from the RNG, without modulo bias beyond 1e-9."""
    n = 0
    for b in urandom(8):
        n = (n << 8) | b
    return ("%0" + str(digits) + "d") % (n % (10 ** digits))


def matches(salt_hex, stored_hash, secret):
    return equal_ct(salted_hash(salt_hex, secret).encode(), stored_hash.encode())


TOKEN_PREFIX = "PE-H:"
TOKEN_BYTES = 10  # 80 bits
TOKEN_LEN = 16  # base32 characters
_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
_ALIAS = {"O": "0", "I": "1", "L": "1"}


def new_token(urandom):
    """A hand-delivery token: TOKEN_BYTES random bytes, Crockford base32."""
    n = 0
    for b in urandom(TOKEN_BYTES):
        n = (n << 8) | b
    out = ""
    for _ in range(TOKEN_LEN):
        out = _B32[n & 31] + out
        n >>= 5
    return out


def format_token(token):
    """What the notice prints and its QR code holds: PE-H:XXXX-XXXX-XXXX-XXXX."""
    return TOKEN_PREFIX + "-".join(token[i:i + 4] for i in range(0, TOKEN_LEN, 4))


def normalize_token(text):
    """The 16 token characters from a scan or a courier's typing (any case,
    with or without the PE-H: prefix, dashes and spaces; O read as 0, I and L
    as 1), or None if it is not a token."""
    if not isinstance(text, str):
        return None
    t = text.strip().upper()
    if t.startswith(TOKEN_PREFIX):
        t = t[len(TOKEN_PREFIX):]
    out = ""
    for c in t:
        if c in "- ":
            continue
        c = _ALIAS.get(c, c)
        if c not in _B32:
            return None
        out += c
    return out if len(out) == TOKEN_LEN else None
