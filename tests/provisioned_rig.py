"""A provisioned outlet for tests: ``provision`` writes the folder as for
an outlet box (outlet CA, TLS listener, plaintext on loopback), and its
Mosquitto runs from the generated config, restartable."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common.ports import free_port
from gateway.broker import find_mosquitto
from gateway.provision import provision

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = """outlet = "o1"
[[devices]]
id = "lk01"
kind = "locker"
[[devices]]
id = "hh01"
kind = "handheld"
[[devices]]
id = "hh02"
kind = "handheld"
"""


class Outlet:
    """A provisioned outlet folder and its Mosquitto, restartable."""

    def __init__(self, tmp: Path, **provision_kw: Any) -> None:
        self.tmp = tmp
        self.provision_kw = provision_kw
        self.inv = tmp / "outlet.toml"
        self.inv.write_text(INVENTORY)
        self.out = tmp / "etc"
        self.plain, self.tls = free_port(), free_port()
        self.provision()
        self.ca = tmp / "ca.pem"
        self.ca.write_text(self.creds("lk01")["broker"]["ca"])
        self.proc: subprocess.Popen[bytes] | None = None

    def provision(self) -> dict[str, Any]:
        r = provision(self.inv, self.out, listen="127.0.0.1", port=self.plain, tls_port=self.tls,
                      **self.provision_kw)
        conf = self.out / "mosquitto" / "mosquitto.conf"
        user = os.environ.get("USER") or "root"
        conf.write_text(conf.read_text().replace("user mosquitto", f"user {user}"))
        toml = self.out / "gateway.toml"
        toml.write_text(toml.read_text().replace("/var/lib/postedge/gateway.db", "gateway.db"))
        return r

    def creds(self, dev: str) -> dict[str, Any]:
        return json.loads((self.out / "devices" / f"{dev}.json").read_text())

    def start(self) -> None:
        self.proc = subprocess.Popen([find_mosquitto(), "-c", str(self.out / "mosquitto" / "mosquitto.conf")],
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.tls), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("mosquitto did not listen")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None

    def cli(self, *args: str, lang: str = "en") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", lang, "gateway", *args],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                              text=True, timeout=60)
