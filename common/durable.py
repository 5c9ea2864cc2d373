"""Files that survive a power cut: the one way the gateway and the handheld
write bytes that other state (a SQLite row, an ack) will vouch for."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes | list[Path]) -> None:
    """Write to a temporary name, fsync, rename, fsync the folder: after
    this returns the file survives a power cut, and no reader ever sees it
    half written. ``data`` may be a list of files to concatenate."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        if isinstance(data, bytes):
            f.write(data)
        else:
            for part in data:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, f, 1024 * 1024)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
