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
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from central.embedded import Embedded
from central.keys import KeyService, courier_credentials
from common.logs import recorder

record = recorder(__name__)
LIFETIME_S = 7 * 24 * 3600  # a revocation waits as long as any command for a locker that is offline

SCHEMA = """
CREATE TABLE IF NOT EXISTS courier_badges (
    outlet TEXT NOT NULL, courier TEXT NOT NULL, lockers TEXT NOT NULL, exp INTEGER NOT NULL,
    issued_at REAL NOT NULL, revoked_at REAL, PRIMARY KEY (outlet, courier));
"""


class CourierRefused(ValueError):
    """A badge the platform will not issue; ``code`` names why."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Couriers:
    def __init__(self, backend: Embedded, master: bytes, clock: Callable[[], float] = time.time) -> None:
        self.b = backend
        self.master = master
        self.clock = clock
        with self.b.lock:
            self.b.db.executescript(SCHEMA)

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
        with self.b.lock:
            self.b.db.execute(
                "INSERT INTO courier_badges VALUES (?,?,?,?,?,NULL) ON CONFLICT(outlet, courier) DO UPDATE "
                "SET lockers=excluded.lockers, exp=excluded.exp, issued_at=excluded.issued_at, "
                "revoked_at=NULL",
                (outlet, courier, json.dumps(lockers), cred["exp"], now))
        record("courier_badge_issued", outlet=outlet, courier=courier, lockers=len(lockers))
        return f"PE-C:{courier}:{secret}", cred, lockers

    def list(self, outlet: str) -> list[dict[str, Any]]:
        """The outlet's badges: courier, lockers, exp, issued_at and state
        (``active``, ``expired`` or ``revoked``)."""
        now = self.clock()
        with self.b.lock:
            rows = self.b.db.execute("SELECT courier, lockers, exp, issued_at, revoked_at "
                                     "FROM courier_badges WHERE outlet=? ORDER BY courier",
                                     (outlet,)).fetchall()
        return [{"courier": c, "lockers": json.loads(lk), "exp": exp, "issued_at": at,
                 "state": "revoked" if rv is not None else "expired" if exp <= now else "active"}
                for c, lk, exp, at, rv in rows]

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
        with self.b.lock:
            known = self.b.db.execute("UPDATE courier_badges SET revoked_at=? WHERE outlet=? AND courier=?",
                                      (now, outlet, courier)).rowcount == 1
            if not known:
                self.b.db.execute("INSERT INTO courier_badges VALUES (?,?,?,0,?,?)",
                                  (outlet, courier, json.dumps(lockers), now, now))
        record("courier_revoked", outlet=outlet, courier=courier, lockers=len(lockers), on_record=known)
        return lockers, known
