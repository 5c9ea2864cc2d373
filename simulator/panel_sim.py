"""A simulated locker front panel (keypad + scan module + display) served
over TCP, which the locker reaches as its panel UART ``socket://host:port``.

Tests and the simulator type into it (``keys("493027")``, ``scan(text)``)
and read what the display showed (``wait_display("pickup_ok")``)."""

from __future__ import annotations

import socket
import threading
import time


class SimPanel:
    def __init__(self) -> None:
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(1)
        self.port = int(self._srv.getsockname()[1])
        self.url = f"socket://127.0.0.1:{self.port}"
        self._conn: socket.socket | None = None
        self._connected = threading.Event()
        self._cond = threading.Condition()
        self.shown: list[dict[str, str]] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            self._conn = conn
            self._connected.set()
            buf = b""
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    break
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    self._on_line(raw.decode("utf-8", "replace"))
            self._connected.clear()

    def _on_line(self, text: str) -> None:
        if not text.startswith("D:"):
            return
        code, zh, en, detail = (text[2:].split("|") + ["", "", "", ""])[:4]
        with self._cond:
            self.shown.append({"code": code, "zh": zh, "en": en, "detail": detail})
            self._cond.notify_all()

    @property
    def connected(self) -> bool:
        """A locker is connected now."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float = 20) -> None:
        if not self._connected.wait(timeout):
            raise TimeoutError("the locker never connected to its panel")

    def send_raw(self, data: bytes) -> None:
        self.wait_connected()
        assert self._conn is not None
        self._conn.sendall(data)

    def keys(self, keys: str) -> None:
        self.send_raw(f"K:{keys}#\n".encode())

    def scan(self, text: str) -> None:
        self.send_raw(f"Q:{text}\n".encode())

    def wait_display(self, code: str | None = None, timeout: float = 20,
                     after: int = 0) -> dict[str, str]:
        """The first display line at index >= after (with ``code`` if given)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for d in self.shown[after:]:
                    if code is None or d["code"] == code:
                        return d
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"display never showed {code!r}; shown: {self.shown[after:]}")
                self._cond.wait(left)

    def mark(self) -> int:
        with self._cond:
            return len(self.shown)

    def do(self, action: str, arg: str, timeout: float = 20) -> dict[str, str]:
        """Type or scan, then return the next display line that answers it."""
        m = self.mark()
        if action == "keys":
            self.keys(arg)
        else:
            self.scan(arg)
        return self.wait_display(None, timeout, after=m)

    def close(self) -> None:
        self._closed = True
        try:
            self._srv.close()
        finally:
            if self._conn is not None:
                self._conn.close()
