"""``postedge gateway clerk add|disable|list``: the operator's job of making clerk
accounts for the console (gateway/http/clerk.py).

The password is hashed here (scrypt, ``common/session.py``) and only
the hash is stored. Adding or resetting an account is audited as an own
event, ``gateway.clerk_added``, from the source ``<gateway id>-admin``: not
the console's source, because this runs as a separate process beside the
running gateway and two writers must never share one sequence counter
file (they would hand out the same event id twice). Two ``clerk add`` runs
at once are serialised by a lock file next to the counter.
职员账号管理：口令只存 scrypt 哈希，每次添加或重置都记审计事件。
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import session as S
from gateway.config import GatewayConfig
from gateway.store import clerks
from gateway.store.events import EventStore
from gateway.store.own_events import OwnEvents


def add(cfg: GatewayConfig, name: str, role: str, password: str) -> bool:
    """True for a new account, False for a reset (new password and role,
    every session of it ended). ``BadCredential``/``ValueError`` for a bad
    name, role or password."""
    S.check_name(name)
    if role not in clerks.ROLES:
        raise ValueError(f"role must be one of {', '.join(clerks.ROLES)}")
    pw = S.hash_password(password)
    return bool(_audited(cfg, lambda db: clerks.add_clerk(db, name, role, pw),
                         lambda new: ("gateway.clerk_added", {"name": name, "role": role, "new": new})))


def disable(cfg: GatewayConfig, name: str) -> bool:
    """Lock a clerk out (left the outlet, password given away): their
    sessions end at once. False if there is no such clerk."""
    body = {"name": name[:S.NAME_MAX]}
    return bool(_audited(cfg, lambda db: clerks.disable(db, name),
                         lambda found: ("gateway.clerk_disabled", {**body, "found": found})))


def _audited(cfg: GatewayConfig, change: Callable[[sqlite3.Connection], Any],
             audit: Callable[[Any], tuple[str, dict[str, Any]]]) -> Any:
    """``change`` and its own event in one transaction, under the admin lock."""
    state = Path(cfg.db).parent
    source = f"{cfg.broker.client_id}-admin"
    store = EventStore(cfg.db)
    try:
        with open(state / f"{source}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            own = OwnEvents(store, cfg.outlet, source, state)
            with store.tx():
                clerks.ensure(store.db)
                out = change(store.db)
                etype, body = audit(out)
                own.emit(etype, body, cls="audit")
        return out
    finally:
        store.close()


def listing(cfg: GatewayConfig) -> list[dict[str, Any]]:
    store = EventStore(cfg.db)
    try:
        with store.tx():
            clerks.ensure(store.db)
        return clerks.clerks(store.db)
    finally:
        store.close()
