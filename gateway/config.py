"""Gateway configuration from a TOML file (``postedge gateway --config``)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


def _upstream(d: dict[str, Any] | None, base: Path | None) -> dict[str, Any] | None:
    """Checked at load (TLS-only URLs, key names), for every command; key
    and certificate paths made absolute against the config file's folder."""
    if d is None:
        return None
    from gateway.sync import parse_upstream

    try:
        parse_upstream(d, base=base)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    out = dict(d)
    for k in ("ca_file", "cert_file", "key_file"):
        if base is not None and isinstance(out.get(k), str) and not Path(out[k]).is_absolute():
            out[k] = str(base / out[k])
    return out


def _web(d: dict[str, Any] | None, base: Path | None = None) -> dict[str, Any] | None:
    """Checked at load, so every command using the file refuses a bad [web];
    ``passwd_file``/``acl_file`` made absolute against the config's folder."""
    if d is None:
        return None
    from gateway.web import parse_config

    try:
        parse_config(d)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    out = dict(d)
    for k in ("passwd_file", "acl_file"):
        if base is not None and isinstance(out.get(k), str) and not Path(out[k]).is_absolute():
            out[k] = str(base / out[k])
    return out


def _budget(d: dict[str, Any] | None) -> dict[str, Any] | None:
    from gateway.budget import BudgetConfig

    try:
        BudgetConfig.from_dict(d)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return d


@dataclass
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    client_id: str = ""
    keepalive: int = 30


@dataclass
class GatewayConfig:
    outlet: str
    db: Path
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    # Group commit: keep reading for up to this long (or this many messages)
    # before one transaction commits them all.
    group_window_s: float = 0.02
    group_max: int = 2000
    # [upstream]: sync to the central side (gateway/sync.py validates it).
    upstream: dict[str, Any] | None = None
    # [web]: the clerk's status page and /metrics (gateway/web.py).
    web: dict[str, Any] | None = None
    # [budget]: max_mb, reserve_mb, interval_s (gateway/budget.py).
    budget: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None) -> GatewayConfig:
        try:
            outlet = str(d["outlet"])
            db = Path(d["db"])
        except KeyError as e:
            raise ConfigError(f"gateway config needs {e.args[0]!r}") from None
        if base is not None and not db.is_absolute():
            db = base / db
        b = dict(d.get("broker", {}))
        unknown = set(b) - set(BrokerConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown [broker] keys: {', '.join(sorted(unknown))}")
        broker = BrokerConfig(**b)
        if not broker.client_id:
            broker.client_id = f"gw-{outlet}"
        return cls(
            outlet=outlet,
            db=db,
            broker=broker,
            group_window_s=float(d.get("group_window_s", 0.02)),
            group_max=int(d.get("group_max", 2000)),
            upstream=_upstream(d.get("upstream"), base),
            web=_web(d.get("web"), base),
            budget=_budget(d.get("budget")),
        )

    @classmethod
    def load(cls, path: Path) -> GatewayConfig:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}") from e
        return cls.from_dict(data, base=Path(path).parent)
