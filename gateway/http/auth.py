"""Who is calling: the handheld and clerk logins of the gateway's HTTP routes.

Mosquitto's password file and ACL are the user base (``Credentials``): the
handheld already has broker credentials, so the routes reuse them instead
of a second secret to distribute, and the account's kind (handheld, locker,
gateway) comes from the ACL the provisioning wrote.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.broker import read_acl
from gateway.http.reply import Reply


def verify_mosquitto_hash(stored: str, password: str) -> bool:
    """Check a password against one Mosquitto password-file hash.

    ``$7$<iterations>$<salt b64>$<hash b64>`` is Mosquitto 2.0's
    PBKDF2-HMAC-SHA512 (what ``mosquitto_passwd -U`` writes here);
    ``$6$<salt b64>$<hash b64>`` is 1.x's salted SHA-512 of password+salt,
    still found in old files. Anything else never matches."""
    parts = stored.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations = int(parts[2])
            if not 1 <= iterations <= 10_000_000:
                return False
            salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(want))
            return hmac.compare_digest(got, want)
        if len(parts) == 4 and parts[1] == "6":
            salt, want = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            return hmac.compare_digest(hashlib.sha512(password.encode() + salt).digest(), want)
    except (ValueError, binascii.Error):
        return False
    return False


@dataclass(frozen=True)
class Principal:
    username: str
    kind: str | None  # from the ACL: locker, scanner, handheld, gateway; None if not listed
    outlet: str | None


class Credentials:
    """Mosquitto's password file and ACL as the upload routes' user base.

    The handheld already has broker credentials (``provision`` wrote them),
    so uploads reuse them instead of a second secret to distribute. The
    account's kind comes from the ACL ``gateway/broker.py`` writes (a
    device's write topics are ``pe/v1/<outlet>/<kind>/<user>/...``, the
    gateway's is ``pe/v1/<outlet>/#``). Both files are re-read when they
    change, so a newly provisioned handheld can upload without a restart.
    A verified (user, password) pair is remembered, keyed by its hash line,
    so a slow PBKDF2 is paid once per login, not per chunk.
    """

    def __init__(self, passwd_file: Path, acl_file: Path | None = None) -> None:
        self.passwd_file = Path(passwd_file)
        self.acl_file = Path(acl_file) if acl_file else self.passwd_file.with_name("acl")
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._hashes: dict[str, str] = {}
        self._acl: dict[str, tuple[str, str | None]] = {}
        self._ok: dict[tuple[str, str], bytes] = {}

    @staticmethod
    def _stat(p: Path) -> tuple[float, int] | None:
        try:
            st = p.stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def _load(self) -> None:
        stamp = (self._stat(self.passwd_file), self._stat(self.acl_file))
        if stamp == self._stamp:
            return
        hashes: dict[str, str] = {}
        for line in self.passwd_file.read_text(encoding="utf-8").splitlines():  # OSError -> caller
            user, sep, h = line.strip().partition(":")
            if sep and user and not user.startswith("#"):
                hashes[user] = h
        try:
            text = self.acl_file.read_text(encoding="utf-8")
        except OSError:
            text = ""
        acl: dict[str, tuple[str, str | None]] = dict(read_acl(text))
        self._hashes, self._acl, self._ok, self._stamp = hashes, acl, {}, stamp

    def check(self, username: str, password: str) -> Principal | None:
        """The account if the password is right, else None. Raises OSError
        when the password file cannot be read (the caller answers 503)."""
        with self._lock:
            self._load()
            stored = self._hashes.get(username)
            kind, outlet = self._acl.get(username, (None, None))
            if stored is None:
                return None
            key = (username, stored)
            digest = hashlib.sha256(password.encode()).digest()
            known = self._ok.get(key)
        if known is not None:
            return Principal(username, kind, outlet) if hmac.compare_digest(known, digest) else None
        if not verify_mosquitto_hash(stored, password):
            return None
        with self._lock:
            self._ok[key] = digest
        return Principal(username, kind, outlet)


def handheld_login(creds: Credentials, header: str | None, err: Callable[..., Reply], forbidden_zh: str,
                   forbidden_en: str) -> Any:
    """The logged-in handheld account, or the refusal to send back (a Reply):
    one login check for every route a handheld uses."""
    who = basic_auth(header)
    if who is None:
        return err(401, "unauthorized", "需要登录（设备的用户名和密码）",
                   "Login required (the device's username and password)")
    try:
        principal = creds.check(*who)
    except OSError as e:
        return err(503, "passwd_unreadable", f"网关无法读取密码文件：{e}",
                   f"The gateway cannot read its password file: {e}")
    if principal is None:
        return err(401, "unauthorized", "用户名或密码错误", "Wrong username or password")
    if principal.kind != "handheld":
        return err(403, "forbidden", forbidden_zh, forbidden_en)
    return principal


def basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, sep, pw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return (user, pw) if sep else None
