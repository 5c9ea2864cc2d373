"""What the simulated serial devices share as servers: a TCP listener for
``socket://`` URLs and a raw pty for a serial device path, their threads
(one per client or pty) and the sockets and pty fds to release on close.
The lock-board buses and the scan engines serve the same way; each defines
``_stop``, ``_threads`` and ``_closers`` in its constructor and how it talks
on one connection (``_serve_socket``) and on a pty (``_serve_pty``)."""

from __future__ import annotations

import os
import socket
import threading
import tty
from collections.abc import Callable
from typing import Any, Self


class Served:
    _stop: threading.Event
    _threads: list[threading.Thread]
    _closers: list[socket.socket | int]

    def _spawn(self, target: Callable[[Any], None], arg: Any) -> None:
        t = threading.Thread(target=target, args=(arg,), daemon=True,
                             name=f"{type(self).__name__}-{len(self._threads)}")
        t.start()  # started before it is listed: close() joins only started threads
        self._threads.append(t)

    def _serve_socket(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _serve_pty(self, master: int) -> None:
        raise NotImplementedError

    def serve_tcp(self) -> int:
        """Listen on 127.0.0.1; return the port for socket://127.0.0.1:PORT.
        One thread accepts, one thread serves each connection."""
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        srv.settimeout(0.05)
        self._closers.append(srv)
        self._spawn(self._accept_loop, srv)
        return int(srv.getsockname()[1])

    def _accept_loop(self, srv: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._closers.append(conn)
            self._spawn(self._serve_socket, conn)

    def serve_pty(self) -> str:
        """Open a pty in raw mode; return the device path a driver opens as
        its serial port (pyserial, or the HAL's host port)."""
        master, slave = os.openpty()
        tty.setraw(slave)
        # Keeping our slave fd open means a client closing and reopening the
        # port never makes the master side see a hang-up.
        self._closers.extend([master, slave])
        self._spawn(self._serve_pty, master)
        return os.ttyname(slave)

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
