"""Deployment the MicroPython way: mpy-cross bundles, a mip package.json and
a freeze manifest kept in step with the sources."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from postedge import firmware_cmd as fw
from simulator import unixport

ROOT = unixport.firmware_root()
FIRMWARE = ROOT / "firmware"


def postedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "postedge.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_committed_package_json_and_manifest_are_current() -> None:
    assert (ROOT / "package.json").read_text() == fw.package_json("0.1.0")
    assert (FIRMWARE / "manifest.py").read_text() == fw.manifest_py()
    urls = json.loads((ROOT / "package.json").read_text())["urls"]
    for dest, src in urls:
        assert dest == src and (ROOT / src).is_file()
    names = {src for _, src in urls}
    assert {"firmware/locker/app.py", "firmware/outbox.py", "protocol/envelope.py",
            "drivers/scanner/engine.py"} <= names
    assert "drivers/hal/host.py" not in names
    assert not any(n.startswith(("gateway/", "handheld/", "common/", "simulator/")) for n in names)


def test_manifest_lists_files_relative_to_the_package() -> None:
    ns: dict[str, object] = {}
    calls = []
    ns["package"] = lambda name, files=None, base_path=".", opt=None: calls.append((name, files, base_path))
    exec((FIRMWARE / "manifest.py").read_text(), ns)
    assert [name for name, _, _ in calls] == list(unixport.DEVICE_PACKAGES)
    # base_path is relative to the manifest's folder; package dirs hang off it.
    for name, files, base in calls:
        assert base == ".."
        for f in files:
            assert (FIRMWARE / base / name / f).resolve().is_file(), f


@pytest.mark.slow
@pytest.mark.mpy
def test_bundle_compiles_for_esp32_and_the_result_runs(tmp_path: Path) -> None:
    r = postedge("firmware", "bundle", str(tmp_path / "b"), "--arch", "xtensawin")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"] == len(fw.device_sources())
    mpy = sorted((tmp_path / "b" / "lib").rglob("*.mpy"))
    assert mpy and all(p.read_bytes()[:1] == b"M" for p in mpy)
    assert (tmp_path / "b" / "main.py").read_text().count("firmware.locker") == 1
    # The same bundle (bytecode is portable) imports on the unix port.
    r = postedge("firmware", "bundle", str(tmp_path / "u"), "--arch", "x64")
    env = {**unixport.env(), "MICROPYPATH": f".frozen:{tmp_path / 'u' / 'lib'}"}
    # Under the heap the app runs with on the unix port: the bytecode sits in the heap
    # there, and at 256k the import passed or failed by fragmentation alone (a 2.6 KB
    # block for protocol/barcodes.py: ok at 240k and 256k, refused at 248k, before the
    # send drop-off was added; refused at 256k and ok at 248k after).
    p = subprocess.run(unixport.command(["-c", "import firmware.locker.panel; print('ok')"],
                                        heap=unixport.APP_HEAP),
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "ok", p.stderr
    # The counter scanner's bundle boots its own app from the same package.
    r = postedge("firmware", "bundle", str(tmp_path / "c"), "--arch", "x64", "--app", "counter")
    assert r.returncode == 0, r.stderr
    assert "from firmware.counter import main" in (tmp_path / "c" / "main.py").read_text()
    env = {**unixport.env(), "MICROPYPATH": f".frozen:{tmp_path / 'c' / 'lib'}"}
    p = subprocess.run(unixport.command(["-c", "import firmware.counter.app; print('ok')"], heap="256k"),
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "ok", p.stderr


def test_deploy_dry_run_prints_the_mpremote_steps(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text("{}")
    r = postedge("firmware", "deploy", "--port", "/dev/ttyUSB0", "--config", str(cfg),
                 "--out", str(tmp_path / "b"), "--dry-run")
    assert r.returncode == 0, r.stderr
    files = [line[2:] for line in r.stdout.splitlines() if line.startswith("# ")]
    lines = [line for line in r.stdout.splitlines() if not line.startswith("# ")]
    assert str(cfg) in files and any(f.endswith("locker/app.mpy") for f in files)
    assert all("mpremote connect /dev/ttyUSB0" in line for line in lines)
    assert any(line.endswith(f"cp {cfg} :config.json") for line in lines)
    assert lines[-1].endswith("reset")
    assert (tmp_path / "b" / "lib" / "firmware" / "locker" / "app.mpy").is_file()


def test_deploy_takes_a_device_config_outlet_init_wrote(tmp_path: Path) -> None:
    (tmp_path / "etc" / "devices").mkdir(parents=True)
    (tmp_path / "etc" / "devices" / "sc01.json").write_text('{"kind": "scanner"}')
    (tmp_path / "etc" / "devices" / "hh01.json").write_text('{"kind": "handheld"}')
    r = postedge("firmware", "deploy", "--port", "/dev/ttyUSB0", "--device", "sc01",
                 "--outlet-dir", str(tmp_path / "etc"), "--out", str(tmp_path / "b"), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"cp {tmp_path / 'etc' / 'devices' / 'sc01.json'} :config.json" in r.stdout
    assert "from firmware.counter import main" in (tmp_path / "b" / "main.py").read_text()
    r = postedge("--lang", "en", "firmware", "deploy", "--port", "/dev/ttyUSB0", "--device", "hh01",
                 "--outlet-dir", str(tmp_path / "etc"), "--dry-run")
    assert r.returncode == 2 and "runs no board firmware" in r.stderr
