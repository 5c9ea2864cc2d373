"""The platform's keys: it alone holds the master key, derives each device's
own key (``protocol.keys.device_key``: HKDF-SHA256 of the master key, the
fleet id of outlet and device, and the key version), gives each device only
its own key, and signs commands and permits with the key of the device they
are for. It also derives each outlet's notifier key
(``protocol.seal.notifier_key``), gives each locker only its own sealing key
for it, and opens the codes lockers issue offline.

Each device is signed for at the key version the registry holds for it
(``KeyService.registered``); ``rotate`` moves a device to its next version,
with the previous one in its key section for a grace period (or none), and
``section`` is what the device's config gets at any time. Villagers'
hand-delivery tokens are derived here too (``delivery_token``).

The master key lives in one file on the central side (``central init``
writes 32 random bytes, mode 0600); nothing below the platform ever holds it.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

from central.registry import Registry
from protocol import codes, keys, permits, seal, signing

MASTER_BYTES = 32
TOKEN_SALT = b"pe/v1/delivery-token"
TOKEN_INFO = b"pe/v1/delivery-token\n"


def new_master(path: Path) -> bool:
    """Write a new master key to ``path`` unless one is there; True if written."""
    if path.exists():
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(MASTER_BYTES))
        f.flush()
        os.fsync(f.fileno())
    return True


def load_master(path: Path) -> bytes:
    """The master key; ValueError for a file that is not one, or that anyone
    but its owner may read (it is written 0600: a wider mode means someone
    changed it, and every device key of every outlet derives from it)."""
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise ValueError(f"{path}: the master key must be readable by its owner only (mode 0600), "
                         f"not {mode:04o}")
    data = Path(path).read_bytes()
    if len(data) != MASTER_BYTES:
        raise ValueError(f"{path}: a master key is {MASTER_BYTES} bytes, this file has {len(data)}")
    return data


class KeyService:
    """Keys, signatures and permits for one outlet's devices."""

    def __init__(self, outlet: str, master: bytes, kv: int = 1, kvs: dict[str, int] | None = None) -> None:
        """``kv``: the version new commands are signed with; ``kvs``: a device's
        own version where the registry holds another (after a rotation)."""
        self.outlet = outlet
        self.master = master
        self.kv = kv
        self.kvs = dict(kvs or {})

    @classmethod
    def registered(cls, backend: Any, outlet: str, master: bytes) -> KeyService:
        """Keys for ``outlet`` at the versions its registry holds, so that a
        device rotated to a new key (``rotate``) is signed for with it."""
        return cls(outlet, master, kvs={d["device"]: int(d["kv"]) for d in backend.devices(outlet)})

    def kv_of(self, device: str) -> int:
        return self.kvs.get(device, self.kv)

    def key(self, device: str, kv: int | None = None) -> bytes:
        return keys.device_key(self.master, keys.fleet_id(self.outlet, device), kv or self.kv_of(device))

    def device_config(self, device: str, kv: int | None = None, grace_until: int = 0) -> dict[str, Any]:
        """The ``key`` section of one device's config: its own key only; after
        a rotation (kv > 1) the previous version too, accepted until
        ``grace_until``."""
        kv = kv or self.kv_of(device)
        if kv > 1 and grace_until:
            return keys.config(kv, self.key(device, kv), kv - 1, self.key(device, kv - 1), grace_until)
        return keys.config(kv, self.key(device, kv))

    def notifier_key(self, kv: int = 1) -> bytes:
        """The outlet notifier's key: the gateway's notifier holds it, no device does."""
        return seal.notifier_key(self.master, self.outlet, kv)

    def notify_config(self, locker: str, kv: int = 1) -> dict[str, Any]:
        """The ``notify`` section of a locker's config: its own key for sealing
        codes to the notifier, derived from the notifier key."""
        return {"kv": kv, "key": seal.locker_notify_key(self.notifier_key(kv), locker).hex()}

    def delivery_token(self, parcel: str) -> str:
        """The villager's hand-delivery token for ``parcel`` at this outlet
        (``protocol/codes.py``: 16 Crockford base32 characters, 80 bits),
        derived from the master key rather than drawn at random: a manifest
        issued again for the parcel, or the notice sent again after a failure,
        carries the same token the villager already holds, and the platform
        still keeps no token anywhere (it derives it when it needs it)."""
        info = TOKEN_INFO + self.outlet.encode() + b"\n" + parcel.encode()
        raw = keys.hkdf(self.master, TOKEN_SALT, info, codes.TOKEN_BYTES)
        return codes.new_token(lambda n: raw[:n])

    def open_code(self, event: dict[str, Any]) -> str:
        """The code in a ``locker.deposit`` a locker issued offline, as the
        platform reads it (``protocol.seal``); raises BadSeal otherwise."""
        return seal.open_for_platform(self.master, self.outlet, event)

    def issue(self, devices: list[str], kv: int | None = None, grace_until: int = 0) -> dict[str, Any]:
        """Key sections for an outlet's devices, as provisioning takes them."""
        return {d: self.device_config(d, kv, grace_until) for d in devices}

    def sign(self, cmd: dict[str, Any], kv: int | None = None) -> dict[str, Any]:
        kv = kv or self.kv_of(cmd["dev"])
        return signing.sign(cmd, self.key(cmd["dev"], kv), kv=kv)

    def command(self, device: str, op: str, args: dict[str, Any], cmd_id: str, now: int | None = None,
                lifetime_s: int = 600, kv: int | None = None) -> dict[str, Any]:
        now = int(time.time()) if now is None else now
        return self.sign({"id": cmd_id, "dev": device, "op": op, "args": args, "iat": now,
                          "exp": now + lifetime_s}, kv)

    def permit(self, locker: str, op: str, parcel: str, courier: str, handheld: str, permit_id: str,
               now: int | None = None, lifetime_s: int = 3600, size: str | None = None,
               kv: int | None = None) -> dict[str, Any]:
        """A permit for ``locker`` signed with that locker's key."""
        now = int(time.time()) if now is None else now
        return self.sign(permits.make(locker, op, parcel, courier, handheld, now, permit_id, lifetime_s,
                                      size), kv)


KINDS = ("locker", "scanner", "handheld")
GRACE_S = signing.MAX_LIFETIME  # the longest a command signed with the previous version stays valid


def section(master: bytes, outlet: str, row: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """A registered device's key section (``backend.devices`` row): its
    key at the version the registry holds and, while a rotation's grace
    period runs, the previous version with its end (``prev.until``)."""
    now = time.time() if now is None else now
    until = int(row.get("prev_until") or 0)
    grace = until if until > now else 0
    return KeyService(outlet, master, int(row["kv"])).device_config(row["device"], grace_until=grace)


def rotate(backend: Any, master: bytes, outlet: str, device: str, grace_s: int = GRACE_S,
           now: float | None = None) -> dict[str, Any] | None:
    """Move a device to its next key version: from now on the platform signs
    for it with the new key only; the device's new key section (returned,
    and what ``POST /v1/keys`` answers from now on) carries the previous
    version until ``now + grace_s`` so what was signed before still runs,
    or not at all with ``grace_s`` 0 (a key that got out: refused as soon
    as the new section is installed). None for a device that is not
    registered or is retired."""
    now = time.time() if now is None else now
    until = int(now) + grace_s if grace_s > 0 else 0
    kv = backend.rotate_device(outlet, device, until)
    if kv is None:
        return None
    return section(master, outlet, {"device": device, "kv": kv, "prev_until": until}, now)


def issue_for_outlet(backend: Registry, master: bytes, outlet: str,
                     devices: list[tuple[str, str]]) -> dict[str, Any]:
    """What ``POST /v1/keys`` answers an outlet's ``outlet init``
    (``central/front.py``): each device registered (``add_device``) and its
    own key section at the version the registry holds; a device the registry
    has retired gets no key and is not brought back (``retired``); the
    outlet's notifier key only for an outlet registered with a notifier. The
    same on every backend: only the registry (``central/registry.py``) is
    asked. The master key never leaves this process."""
    known = {d["device"]: d for d in backend.devices(outlet)}
    keys_out: dict[str, Any] = {}
    retired = []
    for dev, kind in devices:
        row = known.get(dev)
        if row is not None and row["retired"]:
            retired.append(dev)
            continue
        if row is None or row["kind"] != kind:
            backend.add_device(outlet, dev, kind)
            row = {"device": dev, "kv": row["kv"] if row else 1,
                   "prev_until": row["prev_until"] if row else 0}
        keys_out[dev] = section(master, outlet, row)
    doc: dict[str, Any] = {"outlet": outlet, "keys": keys_out, "retired": sorted(retired)}
    if outlet in backend.notifier_outlets():
        doc["notifier"] = {"1": KeyService(outlet, master).notifier_key(1).hex()}
    return doc


def courier_credentials(keys: KeyService, lockers: list[str], courier: str, secret: str, days: int,
                        now: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A courier's credential for each locker: the badge secret's salted
    hash (``protocol/codes.py``; the secret itself is never stored) in a
    ``credential`` command signed with that locker's own key. Returns the
    arguments and the commands, which the outlet's gateway pulls and relays."""
    import secrets as _secrets

    from protocol import codes
    from protocol.signing import MAX_LIFETIME

    now = int(time.time()) if now is None else now
    salt = _secrets.token_hex(8)
    args = {"courier": courier, "salt": salt, "hash": codes.salted_hash(salt, secret),
            "exp": now + days * 86400}
    cmds = [keys.command(lk, "credential", args, f"cred-{_secrets.token_hex(8)}", now=now,
                         lifetime_s=MAX_LIFETIME) for lk in lockers]
    return args, cmds
