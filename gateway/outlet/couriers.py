"""``postedge outlet courier``: a courier's badge for a pilot outlet, with no
hand-written code. On a full deployment the central service issues courier
credentials (``postedge central courier add``, ``central/keys.py``
``courier_credentials``: the same command, queued for the gateway to pull);
a pilot's embedded backend (``pilot/master.key``, see
``build.py``) does it here the same way: a fresh badge secret, its salted
hash (``protocol/codes.py``) in a ``credential`` command signed with each
locker's own key, queued in the gateway (``gateway/service.py`` Enqueuer),
whose relay delivers it when the locker is online. The badge text
(``PE-C:<courier>:<secret>``) is printed once, for the QR code on the badge;
nothing keeps the secret."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from common.clock import now as clock_now
from gateway import revoke
from gateway.config import ConfigError, GatewayConfig
from gateway.outlet.build import PILOT_MASTER
from gateway.outlet.spec import OutletSpec
from gateway.service import Enqueuer
from protocol import codes, keys, signing
from protocol.errors import ProtocolError
from protocol.signing import MAX_LIFETIME
from protocol.topics import valid_segment


class CourierError(ValueError):
    pass


def issue(spec: OutletSpec, out: Path, courier: str, days: int = 30) -> dict[str, Any]:
    """Queue ``courier``'s credential for every locker; the badge text and
    the lockers it goes to."""
    if not valid_segment(courier):
        raise CourierError(f"courier id must be 1-32 of a-z 0-9 _ -, got {courier!r}")
    if not 1 <= days <= 366:
        raise CourierError("days must be 1-366")
    master_path = Path(out) / PILOT_MASTER
    if not master_path.exists():
        raise CourierError(f"{out} is not a pilot outlet (no {PILOT_MASTER}): the central service "
                           "issues courier credentials (postedge central courier add DIR "
                           f"{spec.outlet} {courier} on it; the gateway relays them to the lockers)")
    master = bytes.fromhex(master_path.read_text().strip())
    try:
        cfg = GatewayConfig.load(Path(out) / "gateway.toml")
    except ConfigError as e:
        raise CourierError(str(e)) from e
    revoked = revoke.load(Path(out))
    secret = secrets.token_urlsafe(12)
    salt = secrets.token_hex(8)
    now = int(clock_now())  # the exp the gateway will judge by
    args = {"courier": courier, "salt": salt, "hash": codes.salted_hash(salt, secret),
            "exp": now + days * 86400}
    lockers = [lk.id for lk in spec.lockers if lk.id not in revoked]
    if not Path(cfg.db).exists():  # never create the gateway's database as another user
        raise CourierError(f"no database at {cfg.db}: start the gateway once first")
    queue = Enqueuer(cfg)
    try:
        for dev in lockers:
            key = keys.device_key(master, keys.fleet_id(spec.outlet, dev), 1)
            cmd = {"id": f"cred-{secrets.token_hex(8)}", "dev": dev, "op": "credential", "args": args,
                   "iat": now, "exp": now + MAX_LIFETIME}
            try:
                queue.enqueue("locker", signing.encode(signing.sign(cmd, key, kv=1)))
            except ProtocolError as e:
                raise CourierError(f"{dev}: {e}") from e
    finally:
        queue.close()
    _same_owner(Path(cfg.db), cfg.broker.client_id)
    return {"badge": f"PE-C:{courier}:{secret}", "lockers": lockers, "exp": args["exp"]}


def _same_owner(db: Path, gateway_id: str) -> None:
    """Run as root on an installed outlet: the files SQLite made stay the
    gateway's, or its service account could not open its own database."""
    if os.geteuid() != 0 or not db.exists():
        return
    st = db.stat()
    beside = (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), db.parent / f"{gateway_id}.seq")
    for p in beside:
        if p.exists():
            os.chown(p, st.st_uid, st.st_gid)
