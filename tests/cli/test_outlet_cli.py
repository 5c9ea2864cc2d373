"""``postedge outlet`` without running parts (the e2e run is
tests/e2e/test_outlet_init_e2e.py): the description's errors name the file
and the nearest key, check's exit codes, init's idempotence and dry run,
and the layout a locker's compartment runs give."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.outlet.spec import ConfigError, load
from handheld.config import load_config
from postedge.cli import main

SPEC = """
outlet = "o1"
address = "127.0.0.1"
[broker]
listen = "127.0.0.1"
[[lockers]]
id = "lk01"
compartments = [{ size = "S", count = 4 }, { board = 2, size = "XL", count = 2, first_lock = 5 },
                { size = "M", count = 2 }]
[[scanners]]
id = "sc01"
uart = "uart2"
[counter]
platform_keys = { p1 = "abababababababababababababababababababababababababababababababab" }
label_url = "/dev/usb/lp0"
[[handhelds]]
id = "hh01"
"""


def write(tmp_path: Path, text: str = SPEC) -> Path:
    p = tmp_path / "outlet.toml"
    p.write_text(text)
    return p


def test_a_misspelt_key_names_the_file_and_the_key_it_meant(tmp_path: Path, capsys) -> None:
    spec = write(tmp_path, SPEC.replace("compartments =", "compartmnets ="))
    assert main(["--lang", "en", "outlet", "init", str(spec), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(spec) in err and "lockers[0].compartmnets" in err and "did you mean 'compartments'" in err
    assert not (tmp_path / "o").exists()
    assert main(["--lang", "zh", "outlet", "check", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "门店描述有误" in capsys.readouterr().out


def test_the_layout_runs_continue_per_board_and_refuse_a_lock_used_twice(tmp_path: Path) -> None:
    lk = load(write(tmp_path)).lockers[0]
    assert [(c["id"], c["size"], c["board"], c["lock"]) for c in lk.layout()] == [
        (1, "S", 1, 1), (2, "S", 1, 2), (3, "S", 1, 3), (4, "S", 1, 4),
        (5, "XL", 2, 5), (6, "XL", 2, 6), (7, "M", 1, 5), (8, "M", 1, 6)]
    with pytest.raises(ConfigError, match="lockers.0.compartments|lockers\\[0\\].compartments"):
        load(write(tmp_path, SPEC.replace("first_lock = 5", "first_lock = 5 }, { size = \"S\", "
                                          "count = 1, first_lock = 2")))
    with pytest.raises(ConfigError, match="appears twice"):
        load(write(tmp_path, SPEC.replace('id = "hh01"', 'id = "lk01"')))


def test_check_before_init_says_to_run_init_and_exits_3(tmp_path: Path, capsys) -> None:
    spec = write(tmp_path)
    assert main(["--lang", "zh", "outlet", "check", str(spec), "--out", str(tmp_path / "o")]) == 3
    assert "还没有生成" in capsys.readouterr().out


def test_init_twice_changes_nothing_and_dry_run_writes_nothing(tmp_path: Path, capsys) -> None:
    spec, out = write(tmp_path), tmp_path / "o"
    assert main(["--lang", "en", "outlet", "init", str(spec), "--out", str(out), "--dry-run"]) == 0
    assert "would change" in capsys.readouterr().out and not out.exists()
    assert main(["--lang", "en", "outlet", "init", str(spec), "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert "added  devices/lk01.json" in first and "https://127.0.0.1:8080/" in first
    lk = json.loads((out / "devices" / "lk01.json").read_text())
    assert lk["board"] == {"driver": "8a", "uart": "rs485", "baud": 9600} and len(lk["compartments"]) == 8
    assert lk["key"]["kv"] == 1 and "notify" in lk and lk["state_dir"] == "data"
    # What the firmware itself checks at boot (the e2e run boots lk01 on the unix port).
    from firmware.counter import config as counter_config
    from firmware.locker import config as locker_config

    locker_config.validate(lk)
    sc = counter_config.validate(json.loads((out / "devices" / "sc01.json").read_text()))
    assert sc["scanner"]["uart"] == "uart2" and sc["broker"]["port"] == 8883
    hh = load_config(out / "devices" / "hh01.toml")
    assert hh.broker.port == 8883 and hh.gateway.url == "https://127.0.0.1:8080"
    gwc = GatewayConfig.load(out / "gateway.toml")
    assert gwc.counter is not None and gwc.counter.label_url == "/dev/usb/lp0"
    assert gwc.db == out / "data" / "gateway.db" and gwc.broker.port == 1884
    gw = (out / "gateway.toml").read_text()
    assert 'db = "data/gateway.db"' in gw and "port = 1884" in gw
    texts = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["--lang", "en", "outlet", "init", str(spec), "--out", str(out)]) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == texts
    # A changed description changes only what it touches.
    spec.write_text(SPEC.replace('address = "127.0.0.1"', 'address = "127.0.0.1"\n[web]\nport = 8443'))
    assert main(["--lang", "en", "outlet", "init", str(spec), "--out", str(out)]) == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.startswith("  changed")]
    assert sorted(w[1] for w in lines) == ["devices/hh01.toml", "gateway.toml"]


def test_the_units_init_writes_are_ones_systemd_accepts(tmp_path: Path, capsys) -> None:
    """What ``--install`` copies to /etc/systemd/system, checked by systemd's own
    parser (``systemd-analyze verify``: directives, the programs ExecStart names),
    for a folder set up as a files-only and as an installed outlet."""
    spec = write(tmp_path)
    for out, flag in ((tmp_path / "files", "--no-install"), (tmp_path / "installed", None)):
        if flag is None:  # the installed layout without root's steps: init's files as install writes them
            from gateway.outlet import build
            from gateway.outlet.spec import load as load_spec

            build.init(load_spec(spec), spec, out, install=True, dry_run=False)
        else:
            assert main(["--lang", "en", "outlet", "init", str(spec), "--out", str(out), flag]) == 0
        units = sorted(out.glob("*.service"))
        assert [u.name for u in units] == ["postedge-gateway.service", "postedge-mosquitto.service"]
        for u in units:
            r = subprocess.run(["systemd-analyze", "verify", str(u)], capture_output=True, text=True,
                               cwd=tmp_path, timeout=60)
            assert r.returncode == 0 and not r.stderr.strip(), (u.name, r.stdout, r.stderr)
        gw = (out / "postedge-gateway.service").read_text()
        # the gateway's writes go where the unit lets it write (ProtectSystem=strict)
        db = GatewayConfig.load(out / "gateway.toml").db
        writable = [line.split("=", 1)[1] for line in gw.splitlines() if line.startswith("ReadWritePaths=")]
        if flag is None:
            assert any(str(db).startswith(w) for w in writable), (db, writable)
    capsys.readouterr()


def test_a_device_taken_out_of_the_description_loses_its_files_and_login(tmp_path: Path, capsys) -> None:
    spec, out = write(tmp_path), tmp_path / "o"
    assert main(["--lang", "en", "outlet", "init", str(spec), "--out", str(out)]) == 0
    capsys.readouterr()
    spec.write_text(SPEC.replace('[[handhelds]]\nid = "hh01"\n', ""))
    assert main(["--lang", "en", "outlet", "init", str(spec), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "removed  devices/hh01.json" in said and "removed  devices/hh01.toml" in said
    assert "changed  mosquitto/passwd" in said and "hh01:" not in (out / "mosquitto" / "passwd").read_text()
    assert (out / "devices" / "lk01.json").exists()


def test_courier_badges_need_a_pilot_and_a_gateway_that_has_run(tmp_path: Path, capsys) -> None:
    spec, out = write(tmp_path), tmp_path / "o"
    assert main(["--lang", "en", "outlet", "init", str(spec), "--out", str(out)]) == 0
    assert main(["--lang", "en", "outlet", "courier", str(spec), "c007", "--out", str(out)]) == 2
    assert "start the gateway once first" in capsys.readouterr().err
    (out / "pilot" / "master.key").unlink()
    assert main(["--lang", "zh", "outlet", "courier", str(spec), "c007", "--out", str(out)]) == 2
    assert "not a pilot outlet" in capsys.readouterr().err
