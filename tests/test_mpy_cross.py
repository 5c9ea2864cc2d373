"""Every firmware source compiles with mpy-cross for ESP32 and RP2040, and
imports on the unix port: firmware is MicroPython code first."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from postedge import unixport

FIRMWARE = unixport.firmware_root() / "firmware"
SOURCES = sorted(FIRMWARE.rglob("*.py"))


def test_there_is_firmware() -> None:
    names = {p.relative_to(FIRMWARE).as_posix() for p in SOURCES}
    assert {"protocol/envelope.py", "protocol/signing.py", "mqtt/aclient.py", "locker/main.py"} <= names


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
PORT_ONLY = {"hal/board.py", "hal/host.py", "manifest.py"}


def test_every_module_imports_on_the_unix_port() -> None:
    mods = [
        "firmware." + p.relative_to(FIRMWARE).with_suffix("").as_posix().replace("/", ".")
        for p in SOURCES if p.name != "__init__.py" and p.relative_to(FIRMWARE).as_posix() not in PORT_ONLY
    ]
    script = f"for m in {mods!r}:\n    __import__(m)\nprint('ok', {len(mods)})\n"
    # Importability only: every module at once is more code than any one
    # device build holds (memory is measured by bench/firmware_mqtt.py).
    proc = unixport.run(["-c", script], heap="1M")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ok {len(mods)}"
