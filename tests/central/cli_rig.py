"""``postedge central`` as an operator types it, for tests: one command run
in a subprocess, and a central folder with an outlet and its devices
registered, the way most command-line tests begin."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
from pathlib import Path

from common.uplink_codec import encode_batch
from gateway.uplink.https import HttpsTransport

ROOT = Path(__file__).resolve().parents[2]


def pe(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``postedge --lang en central ARGS``; asserts exit 0 unless ``check`` is False."""
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "en", "central", *args],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def add_outlet(d: Path, outlet: str = "o1") -> str:
    """Register ``outlet``; the uplink password the command shows only once."""
    m = re.search(r"shown only now\): (\S+)", pe("outlet", "add", str(d), outlet).stdout)
    assert m is not None
    return m.group(1)


def registered(d: Path, devices: dict[str, str], outlet: str = "o1") -> str:
    """A new central folder at ``d`` (loopback) with ``outlet`` and its
    ``devices`` (id: kind) registered; the outlet's uplink password."""
    pe("init", str(d), "--host", "127.0.0.1")
    password = add_outlet(d, outlet)
    for dev, kind in devices.items():
        pe("device", "add", str(d), outlet, dev, "--kind", kind)
    return password


def gateway_client(d: Path, port: int, password: str, outlet: str = "o1") -> HttpsTransport:
    """The gateway's own uplink client for the front of folder ``d`` on ``port``
    (trusting the folder's CA), logged in as ``outlet``."""
    ctx = ssl.create_default_context(cafile=str(d / "pki" / "ca.pem"))
    return HttpsTransport(f"https://127.0.0.1:{port}/v1/batches", outlet, ctx, 10.0, outlet, password)


def upload(d: Path, port: int, password: str, rows: list[tuple[str, str]], outlet: str = "o1") -> None:
    """One batch of ``rows`` as a gateway sends it; asserts every row acknowledged."""
    t = gateway_client(d, port, password, outlet)
    try:
        assert t.send(encode_batch(outlet, "bulk", rows)).all
    finally:
        t.close()
