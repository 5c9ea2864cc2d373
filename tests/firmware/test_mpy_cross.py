"""Every firmware source compiles with mpy-cross for ESP32 and RP2040, and
imports on the unix port: firmware is MicroPython code first."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from simulator import unixport

pytestmark = pytest.mark.mpy  # every test runs the MicroPython unix port or mpy-cross
ROOT = unixport.firmware_root()
SOURCES = [ROOT / p for p in unixport.device_package_sources()]


def test_there_is_firmware() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"protocol/envelope.py", "protocol/signing.py", "firmware/mqtt/aclient.py",
            "firmware/locker/main.py", "drivers/scanner/engine.py"} <= names


@pytest.mark.parametrize("arch", ["xtensawin", "armv6m"])
def test_mpy_cross_compiles_all(arch: str, tmp_path: Path) -> None:
    failures = {}
    for src in SOURCES:
        if src.name == "manifest.py":
            continue  # a build description for the port's make, not firmware
        out = tmp_path / (src.stem + ".mpy")
        proc = subprocess.run(
            [unixport.find_mpy_cross(), f"-march={arch}", "-o", str(out), str(src)],
            capture_output=True, text=True,
        )
        if proc.returncode or not out.stat().st_size:
            failures[str(src)] = proc.stderr
    assert not failures


# Port-specific HAL files import what only their platform has (machine.Pin
# on a board, pyserial on CPython); mpy-cross still checks them above.
PORT_ONLY = {"drivers/hal/board.py", "drivers/hal/host.py", "firmware/manifest.py"}


def test_every_module_imports_on_the_unix_port() -> None:
    mods = [
        p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        for p in SOURCES if p.name != "__init__.py" and p.relative_to(ROOT).as_posix() not in PORT_ONLY
    ]
    script = f"for m in {mods!r}:\n    __import__(m)\nprint('ok', {len(mods)})\n"
    # Importability only: every module at once is more code than any one
    # device build holds (memory is measured by bench/firmware_mqtt.py).
    proc = unixport.run(["-c", script], heap="1M")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ok {len(mods)}"
