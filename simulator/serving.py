"""What the simulated serial devices share as servers: their threads (one per
client or pty) and the sockets and pty fds to release on close. The lock-board
buses and the scan engines serve the same way; each defines ``_stop``,
``_threads`` and ``_closers`` in its constructor."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Any, Self


class Served:
    _stop: threading.Event
    _threads: list[threading.Thread]
    _closers: list[socket.socket | int]

    def _spawn(self, target: Callable[[Any], None], arg: Any) -> None:
        t = threading.Thread(target=target, args=(arg,), daemon=True,
                             name=f"{type(self).__name__}-{len(self._threads)}")
        self._threads.append(t)
        t.start()

    def close(self) -> None:
        """Stop every server thread and release sockets and pty fds."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        for c in self._closers:
            try:
                if isinstance(c, int):
                    os.close(c)
                else:
                    c.close()
            except OSError:
                pass
        self._closers.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
