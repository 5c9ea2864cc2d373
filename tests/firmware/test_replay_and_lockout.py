"""A damaged replay file must not let a command run twice,
and the pickup-code lockout counts wrong codes per input source, is not
reset by someone else's success and warns before it engages.

The real application on CPython (tests/locker_rig.py): real flash files, a
byte-accurate simulated lock board."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from firmware.locker import codes as C
from firmware.locker.app import FlowError
from protocol import signing
from tests.locker_rig import PLATFORM, Rig

PARCELS = ("RB123456785GB", "CP000000270CN")


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path)
    yield r
    r.close()


def opened_locks(rig: Rig) -> dict[int, int]:
    return {ch: n for ch, n in enumerate(rig.bus.board(1).opens, start=1) if n}


def remote_open(rig: Rig, payload: bytes, cid: int = 3) -> str:
    lk = rig.locker

    async def go() -> str:
        r = await lk.handle_command(payload)
        if r == "ok":
            await rig.close_when_open(cid)
            while lk.active or lk.journal.read():
                await asyncio.sleep(0.02)
        return r

    return rig.run(go())


# ---- replay state


def _flip_id(raw: bytes) -> bytes:
    # One flipped bit in a stored id: still valid JSON, a different id.
    i = raw.index(b"open-1")
    return raw[:i] + b"opem-1" + raw[i + 6:]


DAMAGE = {
    "garbage": lambda raw: b"\x00\xff\x13garbage",
    "truncated": lambda raw: raw[: len(raw) // 2],
    "wrong_shape": lambda raw: b'{"floor": "soon", "seen": []}',
    "not_an_object": lambda raw: b"[1, 2, 3]",
    "id_bit_flip": _flip_id,
    "empty": lambda raw: b"",
    "deleted": None,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_replay_state_never_runs_a_command_twice(rig: Rig, damage: str) -> None:
    lk = rig.locker
    good = rig.command("open", {"compartment": 3}, "open-1", exp_in=3600)
    assert remote_open(rig, good) == "ok"
    path = rig.tmp / "flash" / "replay"
    raw = path.read_bytes()
    if DAMAGE[damage] is None:
        path.unlink()
    else:
        path.write_bytes(DAMAGE[damage](raw))
    booted = lk.now()
    lk = rig.boot()
    # The damaged window is replaced by a floor past every command that
    # could have run before: the same command is refused.
    assert remote_open(rig, good) == "replayed"
    assert opened_locks(rig) == {3: 1}  # executed exactly once
    assert lk.guard.floor >= booted + signing.MAX_LIFETIME
    assert rig.alarms().count("replay_state_corrupt") == 1
    [alarm] = [e["body"] for e in rig.events("locker.alarm") if e["body"]["alarm"] == "replay_state_corrupt"]
    assert alarm["floor"] == lk.guard.floor
    # A command signed after the floor was set, with a lifetime that reaches
    # past it, runs: the platform can still reach the locker.
    rig.hal.clock.offset += signing.CLOCK_SKEW + 1
    fresh = rig.command("open", {"compartment": 4}, "open-2", exp_in=signing.MAX_LIFETIME)
    assert remote_open(rig, fresh, cid=4) == "ok"
    # The floor is on flash: a second reboot keeps it and raises nothing new.
    lk = rig.boot()
    assert remote_open(rig, good) == "replayed"
    assert rig.alarms().count("replay_state_corrupt") == 1
    opened = opened_locks(rig)
    assert opened[3] == 1 and opened[4] >= 1  # (a slow bus may make the driver retry an open)


def test_an_intact_replay_state_sets_no_floor(rig: Rig) -> None:
    # A fresh locker has no replay file: that is not damage, and a reboot of
    # a locker that never ran a command is not either.
    assert rig.locker.guard.floor == 0
    lk = rig.boot()
    assert lk.guard.floor == 0 and rig.alarms() == []
    good = rig.command("open", {"compartment": 3}, "open-1")
    assert remote_open(rig, good) == "ok"
    lk = rig.boot()
    assert lk.guard.floor == 0 and "open-1" in lk.guard
    assert remote_open(rig, good) == "replayed"
    assert rig.alarms() == []


# ---- pickup-code lockout


def two_parcels(rig: Rig) -> dict[str, str]:
    """Deposit two parcels; return parcel -> the code the locker issued."""
    lk = rig.locker
    lk.courier_login(rig.provision_courier())
    for p in PARCELS:
        rig.run(rig.with_person(lk.deposit(p, "S")))
    lk.courier_logout()
    return {e["body"]["parcel"]: PLATFORM.open_code(e) for e in rig.events("locker.deposit")}


def wrong(rig: Rig, via: str, n: int = 1) -> list[str]:
    out = []
    for _ in range(n):
        with pytest.raises(FlowError) as e:
            rig.run(rig.locker.pickup("999999", via=via))
        out.append(e.value.code)
    return out


def test_someone_elses_pickup_gives_a_guesser_no_fresh_tries(rig: Rig) -> None:
    codes = two_parcels(rig)
    lk = rig.locker
    budget = lk.cfg["lockout_budget"]
    assert wrong(rig, "keypad", budget - 1) == ["wrong_code"] * (budget - 1)
    # A villager picks up at the same keypad: the guesser's count stands.
    assert rig.run(rig.with_person(lk.pickup(codes[PARCELS[0]], via="keypad")))
    assert wrong(rig, "keypad") == ["wrong_code"]  # the budget's last try
    assert wrong(rig, "keypad") == ["locked_out"]
    assert lk.lockout.locked(lk.now(), "keypad")


@pytest.mark.parametrize("guesser,villager", [("keypad", "qr"), ("qr", "keypad")])
def test_a_guesser_on_one_source_does_not_lock_out_another(rig: Rig, guesser: str, villager: str) -> None:
    codes = two_parcels(rig)
    lk = rig.locker
    budget = lk.cfg["lockout_budget"]
    wrong(rig, guesser, budget)
    assert wrong(rig, guesser) == ["locked_out"]
    cid = rig.run(rig.with_person(lk.pickup(codes[PARCELS[1]], via=villager)))
    assert not lk.lockout.locked(lk.now(), villager)
    assert lk.comps.get(cid)["state"] == "free"
    # The villager's success gave the guesser nothing back.
    assert wrong(rig, guesser) == ["locked_out"]


def test_an_alarm_goes_up_before_the_lockout(rig: Rig) -> None:
    two_parcels(rig)
    lk = rig.locker
    budget = lk.cfg["lockout_budget"]
    seen = []
    for _ in range(budget):
        wrong(rig, "qr")
        seen.append([a for a in rig.alarms() if a in ("code_guessing", "lockout")])
    # Two tries before the lockout engages, the clerk is warned; once.
    assert seen[budget - 3] == ["code_guessing"]
    assert seen[budget - 4] == []
    assert seen[-1] == ["code_guessing", "lockout"]
    warn = [e["body"] for e in rig.events("locker.alarm") if e["body"]["alarm"] == "code_guessing"]
    assert warn == [{"alarm": "code_guessing", "via": "qr", "failures": budget - 2,
                     "budget": budget}]
    lock = [e["body"] for e in rig.events("locker.alarm") if e["body"]["alarm"] == "lockout"]
    assert lock[0]["via"] == "qr"


def test_honest_typos_spread_over_days_never_lock_anyone_out(rig: Rig) -> None:
    codes = two_parcels(rig)
    lk = rig.locker
    forgive = lk.cfg["lockout_forgive_s"]
    for _ in range(48):  # one typo an hour on the keypad, for two days
        assert wrong(rig, "keypad") == ["wrong_code"]
        rig.hal.clock.offset += forgive
    assert not lk.lockout.locked(lk.now(), "keypad")
    assert "code_guessing" not in rig.alarms() and "lockout" not in rig.alarms()
    # A burst does lock; a quiet spell of budget x forgive_s gives the budget back.
    budget = lk.cfg["lockout_budget"]
    wrong(rig, "keypad", budget)
    assert lk.lockout.locked(lk.now(), "keypad")
    rig.hal.clock.offset += budget * forgive
    assert wrong(rig, "keypad", budget - 1) == ["wrong_code"] * (budget - 1)
    assert rig.run(rig.with_person(lk.pickup(codes[PARCELS[0]], via="keypad")))


def test_lockout_per_source_survives_a_reboot(rig: Rig) -> None:
    two_parcels(rig)
    lk = rig.locker
    wrong(rig, "keypad", lk.cfg["lockout_budget"])
    lk2 = rig.boot()
    assert lk2.lockout.locked(lk2.now(), "keypad")
    assert not lk2.lockout.locked(lk2.now(), "qr")


def test_an_old_locker_wide_lockout_file_locks_every_source(rig: Rig) -> None:
    lk = rig.locker
    now = lk.now()
    (rig.tmp / "flash" / "lockout").write_text(json.dumps({"failures": 6, "until": now + 60}))
    lk2 = rig.boot()
    for via in C.SOURCES:
        assert lk2.lockout.locked(now, via)
        assert lk2.lockout.remaining(now, via) == 60


def test_guesses_per_day_stay_under_the_documented_figure(rig: Rig) -> None:
    """A guesser on both sources, trying whenever the locker lets them, for
    two days: the counts docs/security.md states ("Guessing a pickup code")."""
    real = set(two_parcels(rig).values())
    lk = rig.locker
    assert (lk.cfg["lockout_budget"], lk.cfg["lockout_base_s"], lk.cfg["lockout_max_s"],
            lk.cfg["lockout_forgive_s"]) == (5, 30, 3600, 3600)
    per_day = []
    guess = 100000

    async def attack(seconds: int) -> int:
        nonlocal guess
        tried = 0
        for _ in range(0, seconds, 5):  # every 5 s, on each source
            rig.hal.clock.offset += 5
            for via in C.SOURCES:
                guess += 1
                if f"{guess:06d}" in real:
                    guess += 1  # a lucky hit would open a door: not what is measured
                try:
                    await lk.pickup(f"{guess:06d}", via=via)
                except FlowError as e:
                    tried += e.code == "wrong_code"
        return tried

    per_day.append(rig.run(attack(86400)))
    per_day.append(rig.run(attack(86400)))
    # Per source: budget + 7 doublings to reach the one-hour cap = 12 tries,
    # then one per forgive_s = 24 a day. Two sources: <= 72, then 48 a day.
    assert 40 <= per_day[0] <= 72 and per_day[1] <= 48, per_day


@pytest.mark.mpy
def test_lockout_and_replay_floor_on_the_micropython_unix_port() -> None:
    from simulator import unixport

    proc = unixport.run([str(Path(__file__).parent / "lockout_mp_check.py")], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "LOCKOUT_MP_OK", proc.stdout


def test_a_floor_set_before_the_first_time_sync_is_raised_to_the_gateways_time(tmp_path: Path) -> None:
    """The floor after damage must come from trusted time: a locker whose RTC
    reset to 2000 when its replay file was lost would otherwise set a floor in
    2000, and a command the gateway re-sends (its ack was lost) would run
    again once the clock syncs."""
    rig = Rig(tmp_path, time_source="gateway")
    try:
        real = int(time.time())
        rig.locker.on_time(real)
        good = rig.command("open", {"compartment": 3}, "open-1", now=real, exp_in=3600)
        assert remote_open(rig, good) == "ok"
        (rig.tmp / "flash" / "replay").write_bytes(b"\x00garbage")
        rig.hal.clock.offset = 946684800 - real  # the RTC forgot: 2000-01-01
        lk = rig.boot()
        assert lk.guard.floor < real  # all it could know at boot
        lk.on_time(real)  # the gateway's time arrives
        assert lk.guard.floor >= real + signing.MAX_LIFETIME
        assert remote_open(rig, good) == "replayed"
        assert opened_locks(rig) == {3: 1}
    finally:
        rig.close()
