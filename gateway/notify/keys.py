"""The outlet notifier key file: ``[keys]`` with ``"<kv>" = "<hex>"``.

The platform issues the outlet notifier key(s) (``protocol.seal.notifier_key``);
``provision --notifier-key`` copies them beside ``gateway.toml`` and derives
each locker's sealing key from the newest; the notifier opens sealed codes
with them. One reader for both, so a file provisioning accepts is one the
notifier can use.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from common.config import ConfigError
from protocol import keys, seal


def load_keys(path: str | Path) -> dict[int, bytes]:
    """Key version -> key; ConfigError naming the file and what is wrong."""
    where = f"notify.key_file (the notifier key file) {path}"
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{where}: cannot read it: {e}") from None
    table = doc.get("keys")
    if set(doc) != {"keys"} or not isinstance(table, dict) or not table:
        raise ConfigError(f'{where}: needs exactly one [keys] table ("<kv>" = "<hex>")')
    found: dict[int, bytes] = {}
    for kv, hexkey in table.items():
        try:
            v, key = int(kv), bytes.fromhex(hexkey)
        except (ValueError, TypeError):
            raise ConfigError(f"{where}: {kv!r} is not a version = hex key") from None
        if not keys.valid_version(v) or str(v) != kv:
            raise ConfigError(f"{where}: {kv!r} is not a key version")
        if not keys.MIN_SECRET <= len(key) <= seal.MAX_SECRET:
            raise ConfigError(f"{where}: version {v} is not {keys.MIN_SECRET}-{seal.MAX_SECRET} bytes")
        found[v] = key
    return found
