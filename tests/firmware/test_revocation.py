"""Revocation at the locker: a platform-signed ``revoke`` makes
the locker refuse every permit a stolen handheld (or a courier) carried,
on flash across reboots, in a bounded list that fails closed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from protocol import revocation, signing
from protocol.errors import BadField, Revoked
from tests.locker_rig import PLATFORM, Rig

PARCELS = ["RB123456785GB", "EA123456785CN", "RR123456785CN", "CP123456785CN"]


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path)
    yield r
    r.close()


def _permit(parcel: str, handheld: str = "hh01", courier: str = "c007", pid: str = "p-1",
            now: int | None = None) -> bytes:
    return signing.encode(PLATFORM.permit("lk01", "deposit", parcel, courier, handheld, pid, now=now,
                                          size="M"))


async def _settle(rig: Rig, payload: bytes) -> str:
    code = await rig.locker.handle_command(payload)
    await asyncio.sleep(0.05)
    while rig.locker.active or rig.locker.journal.read() is not None:
        await asyncio.sleep(0.02)
    return code


def _run(rig: Rig, payload: bytes) -> str:
    return rig.run(rig.with_person(_settle(rig, payload)))


def _revoke(rig: Rig, cid: str, now: int | None = None, **args: list[str]) -> str:
    return rig.run(rig.locker.handle_command(rig.command("revoke", args, cid, now=now)))


def test_a_revoked_handhelds_permits_are_refused_and_others_still_open(rig: Rig) -> None:
    now = rig.locker.now()
    carried = _permit(PARCELS[0], "hh01", pid="p-hh01", now=now - 60)  # in the stolen handheld
    assert _revoke(rig, "rv-1", handhelds=["hh01"]) == "ok"
    assert _run(rig, carried) == "revoked"
    assert rig.bus.board(1).opens == [0] * 24
    acks = {a["id"]: a for a in rig.records("/ack")}
    assert acks["p-hh01"]["code"] == "revoked" and "hh01" in acks["p-hh01"]["detail"]
    # Another handheld's permit, and the same courier on it, still open.
    assert _run(rig, _permit(PARCELS[1], "hh02", pid="p-hh02", now=now - 60)) == "ok"
    assert [e["body"]["permit"] for e in rig.events("locker.deposit")] == ["p-hh02"]
    # A permit the platform signs after the revocation is its own choice.
    assert _run(rig, _permit(PARCELS[2], "hh01", pid="p-later", now=now + 1)) == "ok"


def test_a_revoked_courier_is_refused_on_any_handheld(rig: Rig) -> None:
    now = rig.locker.now()
    assert _revoke(rig, "rv-c", couriers=["c007"]) == "ok"
    assert _run(rig, _permit(PARCELS[0], "hh02", "c007", "p-c007", now=now - 5)) == "revoked"
    assert _run(rig, _permit(PARCELS[1], "hh02", "c008", "p-c008", now=now - 5)) == "ok"


def test_revocations_survive_a_reboot_and_a_damaged_list_fails_closed(rig: Rig) -> None:
    now = rig.locker.now()
    assert _revoke(rig, "rv-1", handhelds=["hh01"]) == "ok"
    rig.boot()
    assert _run(rig, _permit(PARCELS[0], "hh01", pid="p-a", now=now - 60)) == "revoked"
    # Damaged on flash: the locker cannot know whom it forgot, so every
    # permit issued before now is refused, whoever carries it, with an alarm.
    path = rig.tmp / "flash" / "revoked"
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01
    path.write_bytes(bytes(raw))
    rig.boot()
    assert "revocations_lost" in rig.alarms()
    assert _run(rig, _permit(PARCELS[1], "hh02", pid="p-b", now=now - 60)) == "revoked"
    fresh = rig.locker.now() + 1
    assert _run(rig, _permit(PARCELS[1], "hh02", pid="p-c", now=fresh)) == "ok"
    rig.boot()  # the floor itself is on flash
    assert _run(rig, _permit(PARCELS[2], "hh03", pid="p-d", now=now - 60)) == "revoked"


@pytest.mark.parametrize("args", [
    {}, {"handhelds": []}, {"handhelds": "hh01"}, {"handhelds": ["HH 01"]}, {"handhelds": [None]},
    {"devices": ["hh01"]}, {"handhelds": ["x" * 33]}, {"couriers": [1]},
    {"handhelds": [f"h{i}" for i in range(65)]},
])
def test_bad_revoke_args_are_refused_and_change_nothing(rig: Rig, args: dict) -> None:
    assert _revoke(rig, "rv-bad", **args) == "bad_args"
    assert rig.locker.revoked.entries == {}
    assert not (rig.tmp / "flash" / "revoked").exists()


def test_the_list_is_bounded_expires_and_overflows_into_a_floor(rig: Rig) -> None:
    now = rig.locker.now()
    for i in range(revocation.CAPACITY + 5):
        assert _revoke(rig, f"rv-{i}", now=now - 100 + i, handhelds=[f"hh{i}"]) == "ok"
    rv = rig.locker.revoked
    assert len(rv.entries) == revocation.CAPACITY
    assert rv.floor == now - 100 + 4  # the five oldest folded into the floor
    assert rig.alarms().count("revocations_full") == 5
    assert len((rig.tmp / "flash" / "revoked").read_bytes()) < 2048
    # Anyone's permit from before the floor is refused; a later one of a
    # folded handheld too, as long as it predates that handheld's revocation.
    assert _run(rig, _permit(PARCELS[0], "hh99", pid="p-old", now=now - 100)) == "revoked"
    assert _run(rig, _permit(PARCELS[1], "hh99", pid="p-new", now=now - 10)) == "ok"
    # Once every permit an entry could refuse has expired, it goes.
    rig.hal.clock.offset = revocation.KEEP_S + 200
    assert _revoke(rig, "rv-late", handhelds=["hh100"]) == "ok"
    assert list(rig.locker.revoked.entries) == ["handheld/hh100"] and rig.locker.revoked.floor == 0


def test_restore_refuses_anything_it_did_not_write() -> None:
    r = revocation.Revocations()
    for bad in (None, [], {"e": [], "floor": "0"}, {"e": [["handheld/hh01"]], "floor": 0},
                {"e": [["device/hh01", 5]], "floor": 0}, {"e": [["handheld/", 5]], "floor": 0},
                {"e": [["handheld/hh01", True]], "floor": 0}, {"e": {}, "floor": 0}):
        with pytest.raises(ValueError):
            r.restore(json.loads(json.dumps(bad)))
    r.add("handheld", "hh01", 100, 100)
    r2 = revocation.Revocations()
    r2.restore(json.loads(json.dumps(r.state())))
    with pytest.raises(Revoked):
        r2.check({"iat": 100, "args": {"handheld": "hh01", "courier": "c1"}})
    with pytest.raises(BadField):
        r.add("locker", "lk01", 100, 100)
