"""``central.toml``: where the central service listens and keeps its data.

One folder holds a central service: ``central.toml``, ``master.key`` (the
platform master key, 0600), ``pki/`` (the CA gateways trust and the server
certificate) and ``data/`` (the embedded backend's SQLite file and photos).
Paths in the file are relative to it, so the folder can be moved whole.

``backend = "scaleout"`` makes it the folder of a scale-out central
(``central/scaleout/``): ``scaleout_file`` (``scaleout.json``, 0600, it
holds the database's connection string) says where the NATS cluster and
PostgreSQL are, in the JSON the workers take; the master key and the
certificates stay in the folder as for the embedded backend, and every
front process reads them from it (``central/scaleout/folder.py``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import Field

from common.config import ConfigError, Problem, Section, parse

FILE = "central.toml"


class CentralConfig(Section):
    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = 8443
    cert_file: str = "pki/server.pem"
    key_file: str = "pki/server.key"
    ca_file: str = "pki/ca.pem"
    master_key_file: str = "master.key"
    data_dir: str = "data"
    backend: Annotated[str, Field(pattern="^(embedded|scaleout)$")] = "embedded"
    scaleout_file: str = "scaleout.json"
    # Pickup notices (central/notices.py): the SMS provider's HTTPS endpoint
    # and a file holding its API token. Unset: the platform sends no texts.
    sms_url: str | None = None
    sms_token_file: str | None = None
    # How often the platform's own work runs: notices, answers to revocations.
    notice_interval_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 5.0

    def path(self, base: Path, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else base / p


def load(folder: Path) -> CentralConfig:
    path = Path(folder) / FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(problem=Problem("cannot_read", path=path, why=e)) from e
    try:
        return parse(CentralConfig, data, "")
    except ConfigError as e:
        raise e.within(path) from None


def write_default(folder: Path, host: str, port: int, backend: str = "embedded") -> Path:
    path = Path(folder) / FILE
    path.write_text(
        "# The central service (docs/central-contract.md). Paths are relative to this folder.\n"
        f'host = "{host}"\nport = {port}\n'
        'cert_file = "pki/server.pem"\nkey_file = "pki/server.key"\nca_file = "pki/ca.pem"\n'
        'master_key_file = "master.key"\ndata_dir = "data"\n'
        f'backend = "{backend}"\n' + ('scaleout_file = "scaleout.json"\n' if backend == "scaleout" else ""),
        encoding="utf-8")
    return path
