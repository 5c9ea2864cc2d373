"""Whether a gateway is serving a database: a lock the running gateway holds.

``gateway status`` reads the same SQLite file whether or not a gateway is
behind it, and a stopped gateway's last figures look healthy ("devices
online 1/2", exit 0). The running gateway holds an exclusive ``flock`` on
``<db>.running`` for its whole life; the kernel drops it when the process
ends, however it ends (SIGKILL included), so there is no stale pid file to
clean up. ``is_running`` tries the lock without waiting.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def lock_path(db: Path | str) -> Path:
    return Path(str(db) + ".running")


class RunningLock:
    """Held by ``gateway run`` from start to exit."""

    def __init__(self, db: Path | str) -> None:
        self.path = lock_path(db)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def is_running(db: Path | str) -> bool:
    """True while some process holds the running lock of ``db``."""
    try:
        fd = os.open(lock_path(db), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
