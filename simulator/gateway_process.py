"""The gateway as a separate OS process, for the demo, tests, benchmarks and
the simulator: crash tests need a process that can really be SIGKILLed.

Time. A virtual run's clock (``SimClock.attach``) is the file ``sim-clock``
beside the gateway's config; a gateway started on that config is handed it
as ``POSTEDGE_CLOCK_FILE`` (``common/clock.py``) and judges and records
time by the simulation. Found by its place rather than passed in, so every
start of the same outlet's gateway (the first, and a restart after a
``gateway_kill`` fault) runs on the same clock. No file there: the wall
clock, as in production. Beside it the gateway keeps its pace board
(``sim-pace``, ``common/timers.py``): what its paced threads wait for, so
the simulator moves the clock on only once they have done what was due."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common.clock import ENV as CLOCK_ENV
from common.timers import ENV as PACE_ENV

#: The simulation's clock file, beside the gateway's config (``clock_file``).
CLOCK_FILE = "sim-clock"
#: The gateway's pace board, beside its clock file (``pace_file``).
PACE_FILE = "sim-pace"


def clock_file(config: Path) -> Path:
    """Where a virtual run keeps the clock of the gateway started on ``config``."""
    return Path(config).parent / CLOCK_FILE


def pace_file(config: Path) -> Path:
    """Where the gateway started on ``config`` keeps its pace board in a virtual run."""
    return Path(config).parent / PACE_FILE


def write_config(path: Path, outlet: str, port: int, username: str, password: str,
                 db: str = "gateway.db", ca_file: Path | None = None, host: str = "127.0.0.1",
                 acl_file: Path | None = None) -> Path:
    """``ca_file``: connect over TLS, verifying the outlet CA (``port`` is then
    the broker's TLS port and ``host`` a name its certificate carries);
    ``acl_file``: the broker's ACL, the outlet's device logins."""
    extra = f'ca_file = "{ca_file}"\n' if ca_file else ""
    if acl_file:
        extra += f'acl_file = "{acl_file}"\n'
    path.write_text(
        f'outlet = "{outlet}"\ndb = "{db}"\n\n[broker]\nhost = "{host}"\n'
        f'port = {port}\nusername = "{username}"\npassword = "{password}"\n{extra}',
        encoding="utf-8",
    )
    return path


class GatewayProcess:
    """``postedge gateway run`` in a child process whose JSON log lines are
    read continuously by a thread (a full pipe would stall the gateway)."""

    def __init__(self, config: Path, *flags: str, stderr: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        """``stderr``: a file for the gateway's standard error (its log
        records), which otherwise goes to this process's; ``extra_env``:
        more of the gateway's environment (a county's timer slice)."""
        env = dict(os.environ)
        env.update(extra_env or {})
        env.pop(CLOCK_ENV, None)  # never inherited: only this outlet's own clock file counts
        env.pop(PACE_ENV, None)
        clock = clock_file(config)
        if clock.exists():
            env[CLOCK_ENV] = str(clock.resolve())
            env[PACE_ENV] = str(pace_file(config).resolve())
        self.clock_file = env.get(CLOCK_ENV)
        err = stderr.open("ab") if stderr is not None else None
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "postedge.cli", "gateway", "run", "--config", str(config), *flags],
                stdout=subprocess.PIPE, stderr=err, text=True, env=env,
            )
        finally:
            if err is not None:
                err.close()
        self.lines: list[dict[str, Any]] = []
        self._cursor = 0
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.lines.append(d)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, evt: str, timeout: float = 20) -> dict[str, Any]:
        """The next log line with ``evt`` after the last one returned; raise
        if the process ends first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._cursor < len(self.lines):
                    d = self.lines[self._cursor]
                    self._cursor += 1
                    if d.get("evt") == evt:
                        return d
                if self._eof:
                    raise RuntimeError(f"gateway exited ({self.proc.wait()}) before {evt!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {evt!r} from the gateway within {timeout}s")
                self._cond.wait(left)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)

    def stop(self) -> dict[str, Any]:
        """SIGTERM, as systemd stops it; return the final metrics line."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        for d in reversed(self.lines):
            if d.get("evt") == "gateway_stopped":
                return d
        raise RuntimeError(f"gateway exited with {self.proc.returncode} without its final metrics")
