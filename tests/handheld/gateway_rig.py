"""The real gateway for handheld tests: ``postedge gateway run`` as a process on the
test's Mosquitto (root conftest's ``broker``, account ``hh01`` of kind handheld), its
SQLite store, and its web server (photo uploads, logging in with the broker's own
password file), plus a collector of the handheld process's log records."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.logs import ROOT, JsonLines
from common.ports import free_port
from gateway.broker import Mosquitto
from simulator.gateway_process import GatewayProcess, write_config


class RealGateway:
    def __init__(self, tmp: Path, broker: Mosquitto) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        # a fixed port: a restarted gateway is where the handheld left it
        self.port = free_port()
        self.cfg = write_config(tmp / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")
        self.cfg.write_text(self.cfg.read_text() + f'\n[web]\nhost = "127.0.0.1"\nport = {self.port}\n'
                            f'passwd_file = "{broker.directory / "passwd"}"\n'
                            f'acl_file = "{broker.directory / "acl"}"\n')
        self.db = tmp / "gateway.db"
        self.stderr = tmp / "gateway.stderr"
        self.url = f"http://127.0.0.1:{self.port}"
        self.old: list[GatewayProcess] = []
        self.proc = self._start()

    def _start(self) -> GatewayProcess:
        proc = GatewayProcess(self.cfg, stderr=self.stderr)
        proc.wait_for("web_started")
        proc.wait_for("gateway_started")
        return proc

    def kill(self) -> None:
        """SIGKILL: the outlet box loses power."""
        self.proc.kill()
        self.old.append(self.proc)

    def restart(self) -> None:
        self.proc = self._start()

    def log_text(self) -> str:
        """Everything the gateway process wrote: its JSON lines and its standard error."""
        lines = "\n".join(str(d) for p in [*self.old, self.proc] for d in p.lines)
        return lines + (self.stderr.read_text(errors="replace") if self.stderr.exists() else "")

    def stop(self) -> None:
        if self.proc.proc.poll() is None:
            self.proc.stop()

    def __enter__(self) -> RealGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LogLines(logging.Handler):
    """Every record of this process's ``postedge`` loggers, formatted as the app logs them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonLines())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def handheld_logs() -> Iterator[LogLines]:
    """Collect this process's log records, at every level, while the block runs."""
    root = logging.getLogger(ROOT)
    h, level = LogLines(), root.level
    root.addHandler(h)
    root.setLevel(logging.DEBUG)
    try:
        yield h
    finally:
        root.removeHandler(h)
        root.setLevel(level)


def files_bytes(folder: Path) -> bytes:
    """Every file under ``folder`` (SQLite databases and their WAL included), concatenated:
    content an app wrote and then deleted can still sit in a database's free pages."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())
