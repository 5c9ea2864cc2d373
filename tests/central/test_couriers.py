"""Couriers' badges end to end (``central/couriers.py``, ``postedge central
courier add|list|revoke``): what the platform queues is what the real
locker firmware runs; a revoked courier's badge no longer logs in and the
permits already signed for them are refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from central.couriers import CourierRefused, Couriers
from central.embedded import Embedded
from central.keys import KeyService
from firmware.locker.app import FlowError
from protocol import signing
from simulator.platform_keys import MASTER
from tests.central.cli_rig import pe, registered
from tests.locker_rig import Rig


def run_queued(b: Embedded, rig: Rig, after: int, device: str = "lk01") -> tuple[int, list[str]]:
    """Relay what the outlet's gateway pulls to the locker, as the gateway does: the results."""
    cursor, cmds, _ = b.pull("o1", after, 100)
    return cursor, [rig.run(rig.locker.handle_command(signing.encode(c))) for k, c in cmds
                    if k == "locker" and c["dev"] == device]


def test_a_badge_logs_in_until_it_is_revoked_and_the_couriers_permits_go_with_it(tmp_path: Path) -> None:
    b = Embedded(tmp_path / "central")
    b.add_device("o1", "lk01", "locker")
    b.add_device("o1", "lk02", "locker")
    b.add_device("o1", "hh01", "handheld")
    rig = Rig(tmp_path)
    try:
        couriers = Couriers(b, MASTER, clock=lambda: float(rig.locker.now()))
        badge, cred, lockers = couriers.issue("o1", "c009", 7)
        assert lockers == ["lk01", "lk02"] and badge.startswith("PE-C:c009:")
        cursor, results = run_queued(b, rig, 0)
        assert results == ["ok"]
        assert rig.locker.courier_login(badge) == "c009"
        rig.locker.courier_logout()
        permit = KeyService.registered(b, "o1", MASTER).permit(
            "lk01", "deposit", "RB123456785GB", "c009", "hh01", "p-1", now=rig.locker.now(), size="S")
        assert [c["state"] for c in couriers.list("o1")] == ["active"]
        assert couriers.revoke("o1", "c009") == (["lk01", "lk02"], True)
        cursor, results = run_queued(b, rig, cursor)
        assert results == ["ok", "ok"]  # the credential forgotten, the courier's permits refused
        with pytest.raises(FlowError):
            rig.locker.courier_login(badge)
        assert rig.run(rig.locker.handle_command(signing.encode(permit))) == "revoked"
        assert [c["state"] for c in couriers.list("o1")] == ["revoked"]
        # a new badge is a new credential: it logs in again
        badge2, _, _ = couriers.issue("o1", "c009", 7)
        _, results = run_queued(b, rig, cursor)
        assert results == ["ok"] and rig.locker.courier_login(badge2) == "c009"
        assert [c["state"] for c in couriers.list("o1")] == ["active"]
    finally:
        rig.close()
        b.close()
    b = Embedded(tmp_path / "central2")
    try:
        with pytest.raises(CourierRefused):
            Couriers(b, MASTER).issue("o1", "c009", 7)  # no locker registered
    finally:
        b.close()


@pytest.mark.slow
def test_courier_add_list_and_revoke_from_the_command_line(tmp_path: Path) -> None:
    d = tmp_path / "central"
    registered(d, {"lk01": "locker"})
    r = pe("courier", "add", str(d), "o1", "c009", "--days", "7")
    assert re.fullmatch(r"PE-C:c009:\S+", r.stdout.split()[-1])
    assert re.search(r"c009\s+active\s+valid until \d{4}-\d\d-\d\d\s+lockers lk01",
                     pe("courier", "list", str(d), "o1").stdout)
    r = pe("courier", "revoke", str(d), "o1", "c009")
    assert "revoked" in r.stdout and "lk01" in r.stdout
    assert re.search(r"c009\s+revoked", pe("courier", "list", str(d), "o1").stdout)
    r = pe("courier", "revoke", str(d), "o1", "c777")  # issued before the platform kept badges
    assert "no record" in r.stderr and "revoked" in r.stdout
    r = pe("courier", "revoke", str(d), "o9", "c009", check=False)
    assert r.returncode == 2 and "no registered locker" in r.stderr
    r = pe("courier", "revoke", str(d), "o1", "Bad Id", check=False)
    assert r.returncode == 2 and "cannot be used" in r.stderr
