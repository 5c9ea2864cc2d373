"""``postedge outlet check``: what stands between the folder ``init`` wrote
and a serving outlet, each as a message key the clerk's language says.

Exit codes follow the gateway's: 2 for a configuration that cannot be used
(the description, gateway.toml), 3 for the box (files out of date with the
description, Mosquitto missing, a part not running, an address the box does
not have). A note (0) is worth saying but stops nothing."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.broker import find_mosquitto
from gateway.config import ConfigError, GatewayConfig
from gateway.outlet import build
from gateway.outlet.spec import OutletSpec, load
from gateway.running import is_running


@dataclass
class Finding:
    exit: int  # 0 note, 2 configuration, 3 environment
    key: str  # postedge/text.toml outlet.check.<key>
    params: dict[str, Any] = field(default_factory=dict)


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except OSError:
        return False


def _local_address(addr: str) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET) as s:
            s.bind((addr, 0))
        return True
    except OSError as e:
        return e.errno != errno.EADDRNOTAVAIL


def check(spec_path: Path, out: Path) -> list[Finding]:
    try:
        spec: OutletSpec = load(spec_path)
    except ConfigError as e:
        return [Finding(2, "spec", {"msg": str(e)})]
    out = Path(out).resolve()
    gw_toml = out / "gateway.toml"
    if not gw_toml.exists():
        return [Finding(3, "not_initialized", {"out": str(out), "spec": str(spec_path)})]
    found: list[Finding] = []
    try:
        cfg = GatewayConfig.load(gw_toml)
    except ConfigError as e:
        if isinstance(e.__cause__, OSError):
            return [Finding(3, "unreadable", {"msg": str(e)})]
        return [Finding(2, "gateway_toml", {"msg": str(e)})]
    try:
        changes = build.init(spec, spec_path, out, install=str(cfg.db) == build.DB_INSTALLED, dry_run=True)
    except build.OutletError as e:
        return [Finding(2, "spec", {"msg": str(e)})]
    except OSError as e:  # an installed folder read by a user who may not (0600 keys)
        return [Finding(3, "unreadable", {"msg": str(e)})]
    if changes.changes:
        found.append(Finding(3, "stale", {"files": ", ".join(rel for _, rel in changes.changes),
                                          "spec": str(spec_path), "out": str(out)}))
    try:
        find_mosquitto()
    except FileNotFoundError:
        found.append(Finding(3, "no_mosquitto"))
    db_dir = Path(cfg.db).parent
    if not (db_dir.is_dir() and os.access(db_dir, os.W_OK)):
        found.append(Finding(3, "db_dir", {"path": str(db_dir)}))
    if not _reachable(cfg.broker.port):
        found.append(Finding(3, "broker_down", {"port": cfg.broker.port,
                                               "cmd": build.start_commands(out)[0][1]}))
    if not is_running(cfg.db):
        found.append(Finding(3, "gateway_down", {"cmd": build.start_commands(out)[1][1]}))
    if spec.address and not _local_address(spec.address):
        found.append(Finding(3, "address", {"address": spec.address}))
    if cfg.upstream is None:
        found.append(Finding(0, "no_upstream"))
    return found


def exit_code(found: list[Finding]) -> int:
    codes = {f.exit for f in found}
    return 2 if 2 in codes else 3 if 3 in codes else 0
