# Pickup codes and courier credentials as salted SHA-256 hashes: the scheme
# the platform, the locker and the handheld share, so that each can check a
# code without holding it. The locker's attempt rationing is in
# firmware/locker/codes.py.

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
