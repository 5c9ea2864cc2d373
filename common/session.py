"""Clerk logins: password hashing, sessions, CSRF tokens and throttling.

**Why scrypt (``hashlib.scrypt``) and not argon2.** Both are memory-hard;
scrypt is in the standard library (OpenSSL), so the gateway image on a
Raspberry Pi-class box needs no C extension built for it, and nothing else
on the box uses argon2. Parameters: N = 2^15, r = 8, p = 1: 32 MiB and
about 0.1 s per check on this class of machine (OWASP's floor for scrypt is
N = 2^17 with 128 MiB; a box with 1 GiB of RAM that also runs ingest cannot
spend that per login, and the throttle below, not the hash, is what stops
online guessing). A stolen database then costs an attacker 32 MiB and
~0.1 s of a core per guess per account. Salt 16 random bytes, key 32
bytes. The stored string names its parameters (``scrypt$15$8$1$salt$key``),
so they can be raised later without breaking old accounts. At most
``KDF_SLOTS`` hashes run at once, so a burst of logins cannot take the
box's memory.

**Sessions.** 256-bit random token (``secrets``), only its SHA-256 in the
database; an HttpOnly, SameSite=Strict cookie (``Secure`` when the page is
served over HTTPS); 30 minutes idle, 12 hours at most (one shift). A login
always makes a new token (session fixation: a token planted before the login
is never promoted) and ends the session the browser came with.

**CSRF.** Every POST carries the session's own random token in a form field,
compared in constant time; and a POST whose ``Origin`` is not this host is
refused before that. SameSite=Strict alone would stop a cross-site form in
today's browsers; the token also covers older ones and a sibling page on
the same LAN address.

**Throttling.** Per account and per address: 5 failures are free, then each
further failure locks that key for 30 s, doubling up to 15 minutes; a
successful login clears both keys; failures older than an hour are
forgotten. While a key is locked the password is not even checked (no KDF
spent, the same answer for a right and a wrong password), and only the
first refusal of a lockout is audited, so a flood cannot fill the store
with audit events (which are never evicted).
职员登录：scrypt 口令哈希、会话、CSRF 令牌、按账号和地址限速。
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading

SCRYPT_LOG_N = 15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
KDF_SLOTS = threading.BoundedSemaphore(2)

PASSWORD_MIN = 10
PASSWORD_MAX = 256
NAME_MAX = 32

SESSION_IDLE_S = 30 * 60.0
SESSION_MAX_S = 12 * 3600.0
COOKIE = "pe_clerk"

FREE_FAILS = 5
LOCK_BASE_S = 30.0
LOCK_MAX_S = 15 * 60.0
FORGET_S = 3600.0


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _kdf(password: str, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    with KDF_SLOTS:
        return hashlib.scrypt(password.encode(), salt=salt, n=1 << log_n, r=r, p=p,
                              maxmem=SCRYPT_MAXMEM, dklen=32)


def hash_password(password: str, log_n: int = SCRYPT_LOG_N) -> str:
    """The stored string for ``password``. ``log_n``: the cost it is made at
    (stored with it, so ``verify_password`` checks each hash at its own);
    only the default belongs in a real account, a rig that logs in hundreds
    of times uses the lowest ``verify_password`` accepts."""
    check_password_shape(password)
    if not 10 <= log_n <= 20:
        raise ValueError(f"scrypt cost 2^{log_n} out of 2^10..2^20")
    salt = secrets.token_bytes(16)
    key = _kdf(password, salt, log_n, SCRYPT_R, SCRYPT_P)
    return f"scrypt${log_n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


# Checked for unknown accounts, so "no such clerk" takes as long as a wrong password.
_DUMMY = f"scrypt${SCRYPT_LOG_N}${SCRYPT_R}${SCRYPT_P}${_b64(bytes(16))}${_b64(bytes(32))}"


def verify_password(password: str, stored: str | None) -> bool:
    if len(password) > PASSWORD_MAX:
        return False
    try:
        scheme, log_n, r, p, salt, key = (stored or _DUMMY).split("$")
        if scheme != "scrypt" or not (10 <= int(log_n) <= 20):
            return False
        got = _kdf(password, base64.b64decode(salt), int(log_n), int(r), int(p))
    except ValueError:
        return False
    return stored is not None and hmac.compare_digest(got, base64.b64decode(key))


class BadCredential(ValueError):
    """A name or password that cannot be an account's."""


def check_name(name: str) -> str:
    if not (1 <= len(name) <= NAME_MAX) or not all(c.isalnum() or c in "-_." for c in name) \
            or not name.isascii():
        raise BadCredential(f"clerk name must be 1-{NAME_MAX} of a-z A-Z 0-9 - _ .")
    return name


def check_password_shape(password: str) -> None:
    if not (PASSWORD_MIN <= len(password) <= PASSWORD_MAX):
        raise BadCredential(f"password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def after_failure(fails: int, first_at: float, now: float) -> tuple[int, float, float]:
    """(fails, first_at, locked_until) after one more failure."""
    if now - first_at > FORGET_S:
        fails, first_at = 0, now
    fails += 1
    locked = 0.0
    if fails >= FREE_FAILS:
        locked = now + min(LOCK_BASE_S * 2 ** (fails - FREE_FAILS), LOCK_MAX_S)
    return fails, first_at, locked


class PasswordCache:
    """Passwords already checked against a stored hash, remembered by their
    SHA-256 and keyed by (name, stored hash): a service that checks the same
    login on every request (a gateway's batch uploads) pays the scrypt cost
    once, and a new password (a new stored hash) is checked afresh."""

    def __init__(self) -> None:
        self._ok: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def check(self, name: str, password: str, stored: str) -> bool:
        key = (name, stored)
        digest = hashlib.sha256(password.encode()).digest()
        with self._lock:
            known = self._ok.get(key)
        if known is not None:
            return hmac.compare_digest(known, digest)
        if not verify_password(password, stored):
            return False
        with self._lock:
            self._ok[key] = digest
        return True
