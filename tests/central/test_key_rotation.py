"""Device key rotation (``central/keys.py`` ``rotate``, ``postedge central
device rotate``): once a device holds the key section the platform issues
after a rotation, what the old key signed is refused (at once, or when the
grace period ends) and what the platform signs from then on runs. Checked on
the real locker firmware and the real handheld application."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.embedded import Embedded
from central.keys import KeyService, issue_for_outlet, rotate
from central.keys import section as key_section
from central.manifests import Manifests
from common.ports import free_port
from handheld.app import HandheldApp
from protocol import canonical, signing
from simulator.platform_keys import MASTER
from tests.central.cli_rig import pe, registered
from tests.handheld.test_handheld_app import DEV, OUTLET, make_config
from tests.locker_rig import Rig

P1 = "RB123456785GB"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Embedded]:
    b = Embedded(tmp_path / "central")
    b.add_outlet("o1", "password-of-the-outlet")
    b.add_device("o1", "lk01", "locker")
    try:
        yield b
    finally:
        b.close()


def signed(b: Embedded, op: str, args: dict[str, object], cmd_id: str, lifetime_s: int = 600) -> bytes:
    """A command for lk01 as the platform signs it: with the key version the registry holds."""
    return signing.encode(KeyService.registered(b, "o1", MASTER).command("lk01", op, args, cmd_id,
                                                                          lifetime_s=lifetime_s))


def test_without_grace_the_old_key_is_refused_once_the_new_section_is_installed(
        registry: Embedded, tmp_path: Path) -> None:
    b = registry
    old_section = issue_for_outlet(b, MASTER, "o1", [("lk01", "locker")])["keys"]["lk01"]
    assert old_section["kv"] == 1
    before = signed(b, "reserve", {"parcel": P1, "size": "S"}, "before")
    section = rotate(b, MASTER, "o1", "lk01", grace_s=0)
    assert section is not None and section["kv"] == 2 and "prev" not in section
    assert issue_for_outlet(b, MASTER, "o1", [("lk01", "locker")])["keys"]["lk01"] == section  # /v1/keys
    b.add_device("o1", "lk01", "locker")  # registered again (device add): the rotation stays
    after = signed(b, "reserve", {"parcel": "EA123456785CN", "size": "S"}, "after")
    assert json.loads(after)["kv"] == 2
    r = Rig(tmp_path, key=old_section)
    try:
        # not installed yet: the locker cannot check the new key (the documented hand-off)
        assert r.run(r.locker.handle_command(after)) == "unknown_key"
        r.extra["key"] = section  # the new config installed, the locker restarted
        r.boot()
        assert r.run(r.locker.handle_command(before)) == "unknown_key"
        assert r.run(r.locker.handle_command(after)) == "ok"
    finally:
        r.close()


def test_with_grace_the_old_key_runs_until_the_grace_period_ends(registry: Embedded, tmp_path: Path) -> None:
    b = registry
    before = signed(b, "reserve", {"parcel": P1, "size": "S"}, "before", lifetime_s=3600)
    later = signed(b, "reserve", {"parcel": "RR123456785CN", "size": "S"}, "later", lifetime_s=3600)
    section = rotate(b, MASTER, "o1", "lk01", grace_s=600)
    assert section is not None and section["kv"] == 2 and section["prev"]["kv"] == 1
    assert abs(section["prev"]["until"] - (time.time() + 600)) < 5
    after = signed(b, "reserve", {"parcel": "EA123456785CN", "size": "S"}, "after")
    r = Rig(tmp_path, key=section)
    try:
        assert r.run(r.locker.handle_command(before)) == "ok"  # signed before, within the grace
        assert r.run(r.locker.handle_command(after)) == "ok"
        r.hal.clock.offset = 601  # the grace period is over
        assert r.run(r.locker.handle_command(later)) == "retired_key"
    finally:
        r.close()
    # once it has passed, the registry's section no longer carries the old key
    [row] = b.devices("o1")
    assert key_section(MASTER, "o1", row) == section
    assert "prev" not in key_section(MASTER, "o1", row, now=time.time() + 601)


def test_a_rotated_handheld_takes_its_manifests_with_the_new_key_only(tmp_path: Path) -> None:
    b = Embedded(tmp_path / "central")
    b.add_device(OUTLET, DEV, "handheld")
    rounds = Manifests(b, MASTER)
    old_cmd, _ = rounds.issue(OUTLET, DEV, "r-1", [{"parcel": P1, "to": "王芳"}])
    section = rotate(b, MASTER, OUTLET, DEV, grace_s=0)
    assert section is not None
    new_cmd, _ = rounds.issue(OUTLET, DEV, "r-2", [{"parcel": P1, "to": "王芳"}])
    assert (old_cmd["kv"], new_cmd["kv"]) == (1, 2)
    hh = HandheldApp(make_config(tmp_path / "hh", free_port(), key=section))
    try:
        assert hh.handle_command(canonical.dumps(old_cmd)) == "unknown_key"
        assert hh.handle_command(canonical.dumps(new_cmd)) == "ok"
    finally:
        hh.stop()
        b.close()
    assert rotate(b := Embedded(tmp_path / "central"), MASTER, OUTLET, "hh99") is None  # not registered
    b.retire_device(OUTLET, DEV)
    assert rotate(b, MASTER, OUTLET, DEV) is None  # retired: no new key
    b.close()


@pytest.mark.slow
def test_device_rotate_from_the_command_line(tmp_path: Path) -> None:
    d = tmp_path / "central"
    registered(d, {"lk01": "locker"})
    r = pe("device", "rotate", str(d), "o1", "lk01")
    key = json.loads(r.stdout)["key"]
    assert key["kv"] == 2 and key["prev"]["kv"] == 1 and "moved to key version 2" in r.stderr
    assert "outlet init" in r.stderr
    assert json.loads(pe("device", "add", str(d), "o1", "lk01", "--kind", "locker").stdout)["key"] == key
    cmd = json.loads(pe("sign", str(d), "o1", "lk01", "open", "--print-only").stdout)
    assert cmd["kv"] == 2
    r = pe("device", "rotate", str(d), "o1", "lk01", "--grace-days", "0")
    key = json.loads(r.stdout)["key"]
    assert key["kv"] == 3 and "prev" not in key and "no grace period" in r.stderr
    r = pe("device", "rotate", str(d), "o1", "lk09", check=False)
    assert r.returncode == 2 and "no active device lk09" in r.stderr
    r = pe("device", "rotate", str(d), "o1", "lk01", "--grace-days", "9", check=False)
    assert r.returncode == 2 and "0-7" in r.stderr


def test_a_registry_from_before_rotation_opens_with_every_device_on_its_version(tmp_path: Path) -> None:
    import sqlite3

    (tmp_path / "old").mkdir()
    db = sqlite3.connect(tmp_path / "old" / "central.db")
    db.execute("CREATE TABLE devices (id TEXT NOT NULL, outlet TEXT NOT NULL, kind TEXT NOT NULL, "
               "kv INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL, retired_at REAL, "
               "PRIMARY KEY (outlet, id))")
    db.execute("INSERT INTO devices VALUES ('lk01', 'o1', 'locker', 3, 0, NULL)")
    db.commit()
    db.close()
    b = Embedded(tmp_path / "old")
    try:
        assert b.devices("o1") == [{"device": "lk01", "kind": "locker", "kv": 3, "retired": False,
                                    "prev_until": 0}]
        section = rotate(b, MASTER, "o1", "lk01")
        assert section is not None and (section["kv"], section["prev"]["kv"]) == (4, 3)
    finally:
        b.close()


@pytest.mark.slow
def test_the_edge_takes_a_rotation_through_v1_keys_and_provision(tmp_path: Path) -> None:
    """The hand-off as an outlet runs it: after ``device rotate`` the gateway's
    key request over HTTPS gets the new section, provisioning writes it into the
    device's files, and the locker booted on that file runs what the platform
    signs now and refuses what the old key signed."""

    from central import front
    from central.keys import load_master
    from gateway import provision
    from gateway.outlet import central_keys

    d = tmp_path / "central"
    password = registered(d, {"lk01": "locker", "hh01": "handheld"})
    old = json.loads(pe("sign", str(d), "o1", "lk01", "reserve", "--args",
                        json.dumps({"parcel": P1, "size": "S"}), "--id", "old", "--print-only").stdout)
    rotated = json.loads(pe("device", "rotate", str(d), "o1", "lk01", "--grace-days", "0").stdout)["key"]
    new = json.loads(pe("sign", str(d), "o1", "lk01", "reserve", "--args",
                        json.dumps({"parcel": "EA123456785CN", "size": "S"}), "--id", "new",
                        "--print-only").stdout)
    assert (old["kv"], new["kv"], rotated["kv"]) == (1, 2, 2)
    b = Embedded(d / "data")
    srv, _ = front.serve(b, "127.0.0.1", 0, str(d / "pki" / "server.pem"), str(d / "pki" / "server.key"),
                         master=load_master(d / "master.key"))
    try:
        doc = central_keys.fetch(f"https://127.0.0.1:{srv.address[1]}/v1/batches", "o1", "o1", password,
                                 d / "pki" / "ca.pem", [("lk01", "locker"), ("hh01", "handheld")])
    finally:
        srv.stop()
        b.close()
    assert doc["keys"]["lk01"] == rotated and doc["keys"]["hh01"]["kv"] == 1
    inv = tmp_path / "inventory.toml"
    inv.write_text('outlet = "o1"\n[[devices]]\nid = "lk01"\nkind = "locker"\n'
                   '[[devices]]\nid = "hh01"\nkind = "handheld"\n', encoding="utf-8")
    key_file, _ = central_keys.write(doc, tmp_path)
    out = tmp_path / "outlet"
    provision.provision(inv, out, listen="127.0.0.1", port=free_port(), tls_port=free_port(),
                        key_file=key_file)
    installed = json.loads((out / "devices" / "lk01.json").read_text())["key"]
    assert installed == rotated
    r = Rig(tmp_path, key=installed)
    try:
        assert r.run(r.locker.handle_command(signing.encode(old))) == "unknown_key"
        assert r.run(r.locker.handle_command(signing.encode(new))) == "ok"
    finally:
        r.close()
