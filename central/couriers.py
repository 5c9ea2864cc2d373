"""Couriers' badges at an outlet's lockers, issued, listed and revoked.

A badge (``PE-C:<courier>:<secret>``) opens a locker's courier session at
the panel; the locker checks it against a ``credential`` the platform signed
with that locker's own key (``central/keys.py`` ``courier_credentials``).
The secret is printed once and kept nowhere; the platform keeps what it
issued (courier, lockers, expiry, when) so the operator can list badges and
revoke one.

Revoking a courier queues, for every registered locker of the outlet, two
commands signed with that locker's key at the version the registry holds:
``credential`` with ``revoke: true`` (the locker forgets the credential, so
the badge no longer logs in) and ``revoke`` with ``couriers`` (the permits
already signed for that courier are refused, ``protocol/revocation.py``,
even at a locker that missed the first). A badge issued again later is a
new credential, and permits signed after the revocation run.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from central.keys import KeyService, courier_credentials
from central.registry import Registry
from common.logs import recorder

record = recorder(__name__)
LIFETIME_S = 7 * 24 * 3600  # a revocation waits as long as any command for a locker that is offline

class CourierBackend(Registry, Protocol):
    def push_command(self, outlet: str, kind: str, cmd: dict[str, Any]) -> int:
        ...


class CourierRefused(ValueError):
    """A badge the platform will not issue; ``code`` names why."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Couriers:
    def __init__(self, backend: CourierBackend, master: bytes,
                 clock: Callable[[], float] = time.time) -> None:
        """``backend``: either backend's registry (the badge book is part of
        it, ``central/registry.py``) and its command queue."""
        self.b = backend
        self.master = master
        self.clock = clock

    def _lockers(self, outlet: str) -> list[str]:
        return [d["device"] for d in self.b.devices(outlet) if d["kind"] == "locker" and not d["retired"]]

    def issue(self, outlet: str, courier: str, days: int) -> tuple[str, dict[str, Any], list[str]]:
        """A new badge for ``courier``, its credential queued for every locker
        of the outlet: (badge text, credential args, lockers). A badge issued
        again replaces the last one (a new secret)."""
        lockers = self._lockers(outlet)
        if not lockers:
            raise CourierRefused("no_lockers")
        secret = secrets.token_urlsafe(12)
        now = int(self.clock())
        cred, cmds = courier_credentials(KeyService.registered(self.b, outlet, self.master), lockers, courier,
                                         secret, days, now=now)
        for cmd in cmds:
            self.b.push_command(outlet, "locker", cmd)
        self.b.save_badge(outlet, courier, lockers, cred["exp"], now)
        record("courier_badge_issued", outlet=outlet, courier=courier, lockers=len(lockers))
        return f"PE-C:{courier}:{secret}", cred, lockers

    def list(self, outlet: str) -> list[dict[str, Any]]:
        """The outlet's badges: courier, lockers, exp, issued_at and state
        (``active``, ``expired`` or ``revoked``)."""
        now = self.clock()
        return [{"courier": c, "lockers": lk, "exp": exp, "issued_at": at,
                 "state": "revoked" if rv is not None else "expired" if exp <= now else "active"}
                for c, lk, exp, at, rv in self.b.badges(outlet)]

    def revoke(self, outlet: str, courier: str) -> tuple[list[str], bool]:
        """Revoke ``courier``'s badge and permits at every locker of the outlet:
        (the lockers the commands were queued for, none for an outlet with
        no locker, and whether a badge was on record). A courier with none
        on record (issued before the platform kept them, or by hand with
        ``central sign``) is revoked all the same: refusing too much costs a
        trip to the counter, too little a door."""
        lockers = self._lockers(outlet)
        if not lockers:
            return [], False  # nowhere to revoke it: nothing queued, nothing recorded
        keys = KeyService.registered(self.b, outlet, self.master)
        now = int(self.clock())
        for locker in lockers:
            base = hashlib.sha256(f"{outlet}/{courier}/{locker}/{now}".encode()).hexdigest()[:22]
            self.b.push_command(outlet, "locker", keys.command(
                locker, "credential", {"courier": courier, "revoke": True}, "cr" + base, now=now,
                lifetime_s=LIFETIME_S))
            self.b.push_command(outlet, "locker", keys.command(
                locker, "revoke", {"couriers": [courier]}, "rc" + base, now=now, lifetime_s=LIFETIME_S))
        known = self.b.revoke_badge(outlet, courier, lockers, now)
        record("courier_revoked", outlet=outlet, courier=courier, lockers=len(lockers), on_record=known)
        return lockers, known
