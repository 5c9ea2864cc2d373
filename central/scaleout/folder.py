"""A scale-out central's folder (``central/config.py`` with ``backend =
"scaleout"``): where the cluster and the database are (``scaleout.json``,
the JSON the workers and the MQTT front take, 0600 as it names the
database's login), beside the master key and the certificates (and the
counters' documents key, ``docs.key``, made 0600 by the first ``postedge
central docs`` command: ``central/documents.py``; never in the database).

Every front process of the deployment is started on the folder
(``postedge central run DIR``, or ``python -m central.scaleout.serve
--central DIR`` for more processes than one), so each reads the master key
from its file as the embedded ``central run`` does and issues device keys
(``POST /v1/keys``); the key is never put on a command line, in the JSON or
in the database. The operator's registry commands open the PostgreSQL side
only (``PgStore``): registering an outlet needs no NATS cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

from central.config import CentralConfig
from central.keys import load_master
from central.scaleout.backend import PgStore, ScaleOut
from central.scaleout.config import ScaleOutConfig

FILE = "scaleout.json"


def write_config(folder: Path, cfg: ScaleOutConfig) -> Path:
    """``scaleout.json`` in ``folder``, 0600 from its first byte."""
    path = Path(folder) / FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(cfg.to_json() + "\n")
    os.chmod(path, 0o600)
    return path


def read_config(folder: Path, cfg: CentralConfig) -> ScaleOutConfig:
    """The folder's scale-out configuration; ValueError (naming the file) when
    it is missing, not JSON or not a configuration, or when the folder is
    not a scale-out one."""
    if cfg.backend != "scaleout":
        raise ValueError(f"{Path(folder)}: backend is {cfg.backend!r}, not 'scaleout'")
    path = cfg.path(Path(folder), cfg.scaleout_file)
    try:
        return ScaleOutConfig.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None


def master(folder: Path, cfg: CentralConfig) -> bytes:
    """The platform master key from the folder (ValueError if unusable)."""
    return load_master(cfg.path(Path(folder), cfg.master_key_file))


def open_store(folder: Path, cfg: CentralConfig) -> PgStore:
    return PgStore(read_config(folder, cfg), pool_size=2)


def open_scaleout(folder: Path, cfg: CentralConfig) -> ScaleOut:
    return ScaleOut(read_config(folder, cfg))
