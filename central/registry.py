"""The outlet and device registry every backend keeps, as one protocol.

The HTTPS front checks a gateway's login against it (``outlet_login``),
``POST /v1/keys`` registers an outlet's devices in it and reads the key
version each holds (``central/keys.py`` ``issue_for_outlet``), and the
operator's ``postedge central outlet|device`` commands write it. The
embedded backend keeps it in SQLite (``central/embedded.py``), the scale-out
backend in PostgreSQL (``central/scaleout/backend.py``); both answer in the
rows shaped here, so the key logic and the commands above never ask which
one they have. Dispatchers' logins (the review page, the boards API) are
kept the same way. A retired device stays in the registry (its key version is
remembered, it is not brought back by asking for its key again) until the
operator adds it anew.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Registry(Protocol):
    def add_outlet(self, outlet: str, password: str, notifier: bool = False) -> None:
        """Register an outlet (or give it a new password, which un-retires
        it). ``notifier``: its gateway texts villagers itself while the
        backhaul is down, so it is given the outlet notifier key."""
        ...

    def retire_outlet(self, outlet: str) -> bool:
        """Retire an outlet: its login stops working at once; True if it was active."""
        ...

    def outlet_login(self, outlet: str, password: str) -> bool:
        """True when ``outlet`` exists, is not retired and the password is its own."""
        ...

    def notifier_outlets(self) -> set[str]:
        ...

    def mqtt_users(self) -> dict[str, str | None]:
        """Every active outlet's MQTT password as nats-server checks it (a
        bcrypt hash, ``mqtt_hash``), None for one registered before the
        registry kept it (add it again to give it one)."""
        ...

    def outlets(self) -> list[dict[str, Any]]:
        """Every outlet: ``outlet_row`` dicts, by id."""
        ...

    def add_device(self, outlet: str, device: str, kind: str, kv: int | None = None) -> None:
        """Register a device (or change its kind; un-retires it). ``kv``: its
        key version; by default a new device's is 1 and a registered one keeps
        its own, so registering it again never undoes a rotation."""
        ...

    def rotate_device(self, outlet: str, device: str, prev_until: int) -> int | None:
        """Move a registered, unretired device to its next key version; the
        previous one stays in its key section until ``prev_until`` (0: not at
        all). The new version, or None for no such device."""
        ...

    def retire_device(self, outlet: str, device: str) -> bool:
        """Retire a device (revoked, stolen, scrapped): no key is issued
        and no permit signed for it again; True if it was active."""
        ...

    def devices(self, outlet: str) -> list[dict[str, Any]]:
        """An outlet's devices, retired ones too: ``device_row`` dicts, by id."""
        ...

    def save_badge(self, outlet: str, courier: str, lockers: list[str], exp: int, at: float) -> None:
        """Record a courier badge issued for these lockers (its secret is
        never kept); a badge issued again replaces the last one."""
        ...

    def revoke_badge(self, outlet: str, courier: str, lockers: list[str], at: float) -> bool:
        """Mark the courier's badge revoked; True if one was on record (else a
        revoked record is made, so the list shows it)."""
        ...

    def badges(self, outlet: str) -> list[tuple[str, list[str], int, float, float | None]]:
        """The outlet's badges by courier: (courier, lockers, exp, issued_at, revoked_at)."""
        ...

    def add_dispatcher(self, name: str, password: str) -> None:
        """A dispatcher's login for the review page and ``/v1/boards`` (or a new password)."""
        ...

    def dispatcher_login(self, name: str, password: str) -> bool:
        """Whether ``name`` is an active dispatcher with this password (an unknown
        name costs a hash too, so it answers as slowly as a wrong password)."""
        ...


# The outlets' MQTT logins go to nats-server's users file as bcrypt hashes
# (``central/scaleout/nats_auth.py``), never as passwords. Cost 8: the
# password ``postedge central outlet add`` makes is 144 random bits, which no
# hash cost adds to; the hash only keeps the password out of the file, and
# nats-server checks it on every MQTT connect.
MQTT_BCRYPT_ROUNDS = 8


def mqtt_hash(password: str) -> str:
    import bcrypt  # noqa: PLC0415 - the central extra; only when an outlet is added

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=MQTT_BCRYPT_ROUNDS)).decode()


def outlet_row(outlet: str, created_at: float, retired_at: float | None) -> dict[str, Any]:
    return {"outlet": outlet, "created_at": created_at, "retired": retired_at is not None}


def device_row(device: str, kind: str, kv: int, retired_at: float | None,
               prev_until: int | None = 0) -> dict[str, Any]:
    """``prev_until``: while a rotation's grace period runs, when the previous key stops."""
    return {"device": device, "kind": kind, "kv": int(kv), "retired": retired_at is not None,
            "prev_until": int(prev_until or 0)}
