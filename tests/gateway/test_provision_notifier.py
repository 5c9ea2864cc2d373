"""Provisioning the outlet notifier key:
the notifier gets the outlet key(s) in its own file, each locker only its
own sealing key derived from it, every other device nothing; what a locker
seals with its provisioned section, the notifier opens with its file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.provision import ProvisionError, provision
from protocol import seal
from protocol.errors import BadSeal
from protocol.ids import format_event_id
from simulator.platform_keys import PlatformKeys
from tests.locker_rig import Rig

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = PlatformKeys("o1")
INVENTORY = """outlet = "o1"
[[devices]]
id = "lk01"
kind = "locker"
[[devices]]
id = "lk02"
kind = "locker"
[[devices]]
id = "hh01"
kind = "handheld"
[[devices]]
id = "sc01"
kind = "scanner"
"""


def _files(tmp: Path, *versions: int) -> tuple[Path, Path]:
    inv = tmp / "outlet.toml"
    inv.write_text(INVENTORY)
    nk = tmp / "notifier-from-platform.toml"
    nk.write_text("[keys]\n" + "".join(f'"{v}" = "{PLATFORM.notifier_key(v).hex()}"\n' for v in versions))
    return inv, nk


def _creds(out: Path, dev: str) -> dict:
    return json.loads((out / "devices" / f"{dev}.json").read_text())


def test_lockers_get_their_own_sealing_key_and_the_notifier_opens_what_they_seal(tmp_path: Path) -> None:
    inv, nk = _files(tmp_path, 1, 2)
    out = tmp_path / "etc"
    r = provision(inv, out, notifier_file=nk)
    assert r["notifier_keys"] == [1, 2]
    keyfile = out / "notifier" / "keys.toml"
    assert keyfile.stat().st_mode & 0o777 == 0o600
    held = {int(k): bytes.fromhex(v) for k, v in tomllib.loads(keyfile.read_text())["keys"].items()}
    assert held == {1: PLATFORM.notifier_key(1), 2: PLATFORM.notifier_key(2)}
    for lk in ("lk01", "lk02"):
        assert _creds(out, lk)["notify"] == PLATFORM.notify_config(lk, kv=2)  # the newest version
    for other in ("hh01", "sc01"):
        assert "notify" not in _creds(out, other)
    # No device file and no gateway.toml holds an outlet key, in any version.
    outlet_keys = [PLATFORM.notifier_key(v).hex() for v in (1, 2)]
    for f in [*(out / "devices").iterdir(), out / "gateway.toml", out / "gateway-credentials.json"]:
        text = f.read_text()
        assert not any(k in text for k in outlet_keys), f
    assert 'key_file = "notifier/keys.toml"' in (out / "gateway.toml").read_text()
    GatewayConfig.load(out / "gateway.toml")  # the hint is a comment: the config still loads
    # The real locker application with lk01's provisioned section seals; the
    # notifier opens it with the file it was given; lk02's key does not.
    (tmp_path / "lk01" / "flash").mkdir(parents=True)
    rig = Rig(tmp_path / "lk01", notify=_creds(out, "lk01")["notify"])
    try:
        eid = format_event_id("lk01", "0c0ffee0", 7)
        event = {"id": eid, "body": {"parcel": "RB123456785GB",
                                     "code_sealed": rig.locker.seal_code(eid, "RB123456785GB", "042917")}}
    finally:
        rig.close()
    assert seal.open_for_notifier(held, event) == "042917"
    lk02 = bytes.fromhex(_creds(out, "lk02")["notify"]["key"])
    with pytest.raises(BadSeal):
        seal.open_box("notifier", lk02, event)
    # A re-run without the file keeps the notifier's keys and the lockers' sections.
    provision(inv, out)
    assert keyfile.read_text() and _creds(out, "lk01")["notify"] == PLATFORM.notify_config("lk01", kv=2)


def test_without_a_notifier_key_nothing_is_written(tmp_path: Path) -> None:
    inv, _ = _files(tmp_path, 1)
    out = tmp_path / "etc"
    r = provision(inv, out)
    assert r["notifier_keys"] == [] and not (out / "notifier").exists()
    assert "notify" not in _creds(out, "lk01")


@pytest.mark.parametrize("text", [
    "", "[keys]\n", 'keys = "x"\n', '[keys]\n"1" = "zz"\n', '[keys]\n"0" = "' + "ab" * 32 + '"\n',
    '[keys]\n"01" = "' + "ab" * 32 + '"\n', '[keys]\n"1" = "' + "ab" * 8 + '"\n',
    '[keys]\n"1" = "' + "ab" * 65 + '"\n', '[keys]\n"1" = 5\n', '[keys]\n"x" = "' + "ab" * 32 + '"\n',
    '[keys]\n"1" = "' + "ab" * 32 + '"\n[master]\nkey = "00"\n', "not toml [",
])
def test_a_bad_notifier_key_file_is_refused_and_writes_nothing(tmp_path: Path, text: str) -> None:
    inv, nk = _files(tmp_path, 1)
    nk.write_text(text)
    out = tmp_path / "etc"
    with pytest.raises(ProvisionError, match="notifier key file"):
        provision(inv, out, notifier_file=nk)
    assert not (out / "devices").exists()


def test_cli_takes_the_notifier_key(tmp_path: Path) -> None:
    inv, nk = _files(tmp_path, 3)
    out = tmp_path / "etc"
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "gateway", "provision", str(inv),
                        "--out", str(out), "--notifier-key", str(nk)], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert _creds(out, "lk02")["notify"] == PLATFORM.notify_config("lk02", kv=3)
