"""A device that arrives or leaves after the outlet is set up.

``add`` writes the device into the description (the description stays the
one truth; the caller then runs ``init``, which writes its credentials, key
and complete configuration and changes nothing else). ``retire`` is
``gateway/revoke.py``: its broker login and ACL go, its files go, it is
recorded in ``revoked.json`` (so no later ``init`` brings it back) and
upstream; Mosquitto is then told to re-read its files, dropping the device's
connection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway import revoke
from gateway.config import ConfigError, GatewayConfig
from gateway.outlet.spec import load


class DeviceError(ValueError):
    pass


def add(spec_path: Path, kind: str, device: str, like: str | None = None, uart: str | None = None) -> None:
    """Append ``device`` to the description; a locker takes the board and
    layout of locker ``like`` (default: the 24-door cabinet)."""
    spec = load(spec_path)
    if device in {d for d, _ in spec.devices()}:
        raise DeviceError(f"{spec_path}: {device} is already in the description")
    lines = ["", "# added by postedge outlet add-device", f"[[{kind}s]]", f"id = {json.dumps(device)}"]
    if kind == "locker":
        src = next((lk for lk in spec.lockers if lk.id == like), None) if like else None
        if like and src is None:
            raise DeviceError(f"{spec_path}: no locker {like!r} to copy the layout of")
        if src is not None:
            b = src.board
            lines.append(f"board = {{ driver = {json.dumps(b.driver)}, uart = "
                         f"{json.dumps(uart or b.uart)}, baud = {b.baud} }}")
            runs = ", ".join("{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in r.model_dump().items()
                                              if v is not None) + " }" for r in src.compartments)
            if runs:
                lines.append(f"compartments = [{runs}]")
        elif uart:
            lines.append(f"board = {{ uart = {json.dumps(uart)} }}")
    elif kind == "scanner" and uart:
        lines.append(f"uart = {json.dumps(uart)}")
    before = Path(spec_path).read_text(encoding="utf-8")
    Path(spec_path).write_text(before.rstrip("\n") + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    try:
        load(spec_path)
    except ConfigError:
        Path(spec_path).write_text(before, encoding="utf-8")
        raise


def retire(out: Path, device: str, broker_pid: int | None = None) -> dict[str, Any]:
    """Revoke ``device`` (``gateway/revoke.py``); ``reload`` in the result is
    how Mosquitto was told, or ``reload_error`` why it was not."""
    try:
        cfg = GatewayConfig.load(Path(out) / "gateway.toml")
    except ConfigError as e:
        raise DeviceError(str(e)) from e
    broker_dir = Path(out) / "mosquitto"
    try:
        r = revoke.revoke(Path(out), broker_dir / "passwd", broker_dir / "acl", device, cfg.db,
                          cfg.broker.username, outlet=cfg.outlet, gateway_id=cfg.broker.client_id)
    except revoke.RevokeError as e:
        raise DeviceError(str(e)) from e
    try:
        r["reload"] = revoke.reload_broker(broker_pid)
    except (revoke.RevokeError, OSError) as e:
        r["reload_error"] = str(e)
    return r
