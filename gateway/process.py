"""The gateway as a separate OS process, for the demo, tests and the
simulator: crash tests need a process that can really be SIGKILLed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def write_config(path: Path, outlet: str, port: int, username: str, password: str,
                 db: str = "gateway.db") -> Path:
    path.write_text(
        f'outlet = "{outlet}"\ndb = "{db}"\n\n[broker]\nhost = "127.0.0.1"\n'
        f'port = {port}\nusername = "{username}"\npassword = "{password}"\n',
        encoding="utf-8",
    )
    return path


class GatewayProcess:
    """``postedge gateway`` in a child process whose JSON log lines we read."""

    def __init__(self, config: Path, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postedge.cli", "gateway", "run", "--config", str(config), *flags],
            stdout=subprocess.PIPE, text=True,
        )
        self.lines: list[dict[str, Any]] = []

    def wait_for(self, evt: str, timeout: float = 20) -> dict[str, Any]:
        """Read log lines until one with ``evt``; raise if the process ends first."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"gateway exited ({self.proc.wait()}) before {evt!r}")
            try:
                d = json.loads(line)
            except ValueError:
                continue
            self.lines.append(d)
            if d.get("evt") == evt:
                return d
        raise TimeoutError(f"no {evt!r} from the gateway within {timeout}s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> dict[str, Any]:
        """SIGTERM, as systemd stops it; return the final metrics line."""
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=15)
        for line in out.splitlines():
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass
        for d in reversed(self.lines):
            if d.get("evt") == "gateway_stopped":
                return d
        raise RuntimeError(f"gateway exited with {self.proc.returncode} without its final metrics")
