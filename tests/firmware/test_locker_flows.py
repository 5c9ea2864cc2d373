"""Every locker flow on CPython: the real application and lock-board driver,
a byte-accurate simulated board on a socket, real flash files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from firmware.locker import codes as C
from firmware.locker import compartments as K
from firmware.locker.app import DAY, FlowError
from firmware.locker.journal import Journal
from tests.locker_rig import PLATFORM, Rig

PARCEL = "RB123456785GB"


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path)
    yield r
    r.close()


def deposit(rig: Rig, parcel: str = PARCEL, size: str = "M") -> int:
    badge = rig.provision_courier()
    rig.locker.courier_login(badge)
    return rig.run(rig.with_person(rig.locker.deposit(parcel, size)))


def opened_locks(rig: Rig) -> dict[int, int]:
    return {ch: n for ch, n in enumerate(rig.bus.board(1).opens, start=1) if n}


def issued_code(rig: Rig, parcel: str) -> str:
    [dep] = [e for e in rig.events("locker.deposit") if e["body"]["parcel"] == parcel]
    return PLATFORM.open_code(dep)  # sealed: only the platform and the notifier read it


def test_deposit_then_pickup_by_code(rig: Rig) -> None:
    cid = deposit(rig)
    c = rig.locker.comps.get(cid)
    assert c["state"] == K.OCCUPIED and c["size"] == "M" and c["parcel"] == PARCEL
    # Only a salted hash is kept on flash, never the code.
    code = issued_code(rig, PARCEL)
    assert len(code) == 6 and code.isdigit()
    flash = (rig.tmp / "flash" / "compartments").read_text()
    assert code not in flash and c["hash"] in flash
    assert opened_locks(rig) == {c["lock"]: 1}  # the door really was released, once
    # Wrong code first, then the right one.
    with pytest.raises(FlowError) as e:
        rig.run(rig.locker.pickup("000000" if code != "000000" else "111111"))
    assert e.value.code == "wrong_code"
    assert rig.run(rig.with_person(rig.locker.pickup(code))) == cid
    assert rig.locker.comps.get(cid)["state"] == K.FREE
    [pick] = rig.events("locker.pickup")
    assert pick["cls"] == "custody" and pick["body"] == {"compartment": cid, "parcel": PARCEL}
    attempts = [e["body"]["result"] for e in rig.events("locker.audit")
                if e["body"]["what"] == "pickup_attempt"]
    assert attempts == ["wrong", "ok"]
    assert rig.locker.journal.read() is None
    # A used code does not open anything again.
    with pytest.raises(FlowError):
        rig.run(rig.locker.pickup(code))


def test_deposit_picks_smallest_fitting_size_and_refuses_bad_parcels(rig: Rig) -> None:
    rig.locker.courier_login(rig.provision_courier())
    cid = rig.run(rig.with_person(rig.locker.deposit("]C0" + PARCEL, "S")))
    assert rig.locker.comps.get(cid)["size"] == "S"
    for bad, code in [("RB123456784GB", "invalid_parcel"), ("4006381333931", "invalid_parcel"),
                      (PARCEL, "already_in_locker")]:
        with pytest.raises(FlowError) as e:
            rig.run(rig.locker.deposit(bad, "S"))
        assert e.value.code == code
    assert "invalid" in rig.hal.indicator.history and "duplicate" in rig.hal.indicator.history
    # Domestic waybill in an L compartment.
    cid2 = rig.run(rig.with_person(rig.locker.deposit("]C09876543210128", "L")))
    assert rig.locker.comps.get(cid2)["size"] == "L"


def test_deposit_needs_a_courier_with_a_valid_badge(rig: Rig) -> None:
    with pytest.raises(FlowError) as e:
        rig.run(rig.locker.deposit(PARCEL, "M"))
    assert e.value.code == "no_courier"
    rig.provision_courier()
    for badge in ("PE-C:c007:wrong", "PE-C:nobody:badge-secret", "hello"):
        with pytest.raises(FlowError):
            rig.locker.courier_login(badge)
    logins = [e["body"]["result"] for e in rig.events("locker.audit") if e["body"]["what"] == "courier_login"]
    assert logins == ["refused", "refused"]  # the malformed one never names a courier
    # Revoked credentials stop working.
    rev = rig.command("credential", {"courier": "c007", "revoke": True}, "rev-1")
    assert rig.run(rig.locker.handle_command(rev)) == "ok"
    with pytest.raises(FlowError):
        rig.locker.courier_login("PE-C:c007:badge-secret")


def test_platform_issued_code_is_used_and_offline_pickup_works(rig: Rig) -> None:
    salt = "a1a2a3a4a5a6a7a8"
    payload = rig.command("provision_code", {"parcel": PARCEL, "salt": salt,
                                             "hash": C.salted_hash(salt, "735102"),
                                             "exp": rig.locker.now() + 7 * DAY}, "code-1")
    assert rig.run(rig.locker.handle_command(payload)) == "ok"
    cid = deposit(rig)
    [dep] = rig.events("locker.deposit")
    assert dep["body"]["code_by"] == "platform" and "code" not in dep["body"]
    # No broker has ever been reachable: pickup works from the pre-synced hash.
    assert not rig.locker.mqtt.connected.is_set()
    assert rig.run(rig.with_person(rig.locker.pickup("735102", via="qr"))) == cid


def test_wrong_code_lockout_with_growing_delay(rig: Rig) -> None:
    deposit(rig)
    lk = rig.locker
    for _ in range(lk.cfg["lockout_budget"] - 1):
        with pytest.raises(FlowError) as e:
            rig.run(lk.pickup("999999"))
        assert e.value.code == "wrong_code"
    with pytest.raises(FlowError):
        rig.run(lk.pickup("999999"))  # the budget's last try engages the lockout
    # the device clock is whole seconds of the wall's: one may tick between the try and this read
    assert lk.cfg["lockout_base_s"] - 1 <= lk.lockout.remaining(lk.now()) <= lk.cfg["lockout_base_s"]
    with pytest.raises(FlowError) as e:
        rig.run(lk.pickup(issued_code(rig, PARCEL)))  # even the right code waits
    assert e.value.code == "locked_out"
    assert "lockout" in rig.alarms()
    # After the wait, another wrong code doubles the delay.
    rig.hal.clock.offset += lk.cfg["lockout_base_s"] + 1
    with pytest.raises(FlowError):
        rig.run(lk.pickup("999999"))
    assert 2 * lk.cfg["lockout_base_s"] - 1 <= lk.lockout.remaining(lk.now()) <= 2 * lk.cfg["lockout_base_s"]
    # The lockout survives a reboot.
    lk2 = rig.boot()
    assert lk2.lockout.locked(lk2.now())
    results = [e["body"]["result"] for e in rig.events("locker.audit")
               if e["body"]["what"] == "pickup_attempt"]
    assert results.count("wrong") == lk.cfg["lockout_budget"] + 1 and "locked_out" in results


def test_brute_force_is_locked_out(rig: Rig) -> None:
    """Try codes as fast as the keypad allows for an hour: almost all refused."""
    deposit(rig)
    lk = rig.locker
    tried = 0
    opened = 0

    async def attack() -> None:
        nonlocal tried, opened
        for n in range(3600):  # one attempt per simulated second
            rig.hal.clock.offset += 1
            try:
                await lk.pickup(f"{n:06d}")
                opened += 1
            except FlowError as e:
                tried += e.code == "wrong_code"

    rig.run(attack())
    # Budget 5, then 30 s, 60 s, 120 s, ...: only a handful of real guesses.
    assert tried <= lk.cfg["lockout_budget"] + 7
    # Every attempt is accounted for in the audit log, without flooding it.
    audits = [e["body"] for e in rig.events("locker.audit")]
    wrong = sum(1 for a in audits if a["what"] == "pickup_attempt" and a["result"] == "wrong")
    refused = sum(a["refused"] for a in audits if a["what"] == "lockout_summary")
    assert wrong == tried
    assert refused + lk._refused == 3600 - tried - opened
    assert len(audits) < 200
    assert opened == 0 or issued_code(rig, PARCEL) < "003600"


def test_expiry_retrieval_and_returns(rig: Rig) -> None:
    cid = deposit(rig)
    lk = rig.locker
    lk.check_expiry()
    assert lk.comps.get(cid)["state"] == K.OCCUPIED
    rig.hal.clock.offset += lk.cfg["pickup_days"] * DAY + 1
    lk.check_expiry()
    assert lk.comps.get(cid)["state"] == K.OVERDUE
    assert lk.comps.retrieval_list() == [cid]
    assert [e["body"]["compartment"] for e in rig.events("locker.overdue")] == [cid]
    # A customer return, provisioned by the platform, dropped off by code.
    salt = "0f0e0d0c0b0a0908"
    ret = rig.command("provision_return", {"parcel": "CP000000270CN", "salt": salt, "size": "L",
                                           "hash": C.salted_hash(salt, "246810"),
                                           "exp": lk.now() + DAY}, "ret-1")
    assert rig.run(lk.handle_command(ret)) == "ok"
    rcid = rig.run(rig.with_person(lk.pickup("246810")))
    assert lk.comps.get(rcid)["state"] == K.RETURN_WAITING
    assert sorted(lk.comps.retrieval_list()) == sorted([cid, rcid])
    # The courier takes both (a week on, with a fresh credential).
    lk.courier_login(rig.provision_courier())
    done = rig.run(rig.with_person(lk.retrieve_all()))
    assert sorted(done) == sorted([cid, rcid])
    assert lk.comps.get(cid)["state"] == K.FREE and lk.comps.get(rcid)["state"] == K.FREE
    reasons = sorted(e["body"]["reason"] for e in rig.events("locker.retrieve"))
    assert reasons == ["overdue", "return_waiting"]


def test_reservation_from_the_handheld(rig: Rig) -> None:
    lk = rig.locker
    res = rig.command("reserve", {"parcel": PARCEL, "size": "L"}, "res-1")
    assert rig.run(lk.handle_command(res)) == "ok"
    [ack] = rig.records("/ack")
    cid = ack["result"]["compartment"]
    assert lk.comps.get(cid)["state"] == K.RESERVED and lk.comps.get(cid)["size"] == "L"
    assert lk.comps.pick_free("XL")["id"] != cid
    assert deposit(rig, size="S") == cid  # the reserved one, whatever size was asked


def test_signed_commands_refused_with_reason_and_run_at_most_once(rig: Rig) -> None:
    lk = rig.locker
    now = lk.now()
    good = rig.command("open", {"compartment": 3}, "open-1")
    cases = [
        (rig.command("open", {"compartment": 3}, "bad-1", key=b"x" * 32), "bad_signature"),
        (rig.command("open", {"compartment": 3}, "old-1", now=now - 1000, exp_in=100), "expired"),
        (b"{not json", "malformed"),
        (good.replace(b'"compartment":3', b'"compartment":4'), "bad_signature"),
    ]
    for payload, code in cases:
        assert rig.run(lk.handle_command(payload)) == code

    async def remote_open() -> str:
        r = await lk.handle_command(good)
        await rig.close_when_open(3)
        while lk.active or lk.journal.read():
            await asyncio.sleep(0.02)
        return r

    assert rig.run(remote_open()) == "ok"
    assert rig.run(lk.handle_command(good)) == "replayed"
    # ... and still after a reboot: the replay window is on flash.
    assert rig.run(rig.boot().handle_command(good)) == "replayed"
    acks = rig.records("/ack")
    assert [(a["id"], a["code"]) for a in acks] == [
        ("bad-1", "bad_signature"), ("old-1", "expired"), ("?", "malformed"),
        ("open-1", "bad_signature"), ("open-1", "ok"), ("open-1", "replayed"), ("open-1", "replayed")]
    assert all(a.get("detail") for a in acks if not a["ok"])
    assert opened_locks(rig) == {3: 1}  # executed exactly once
    assert [e["body"]["cmd"] for e in rig.events("locker.remote_open")] == ["open-1"]


@pytest.mark.slow
def test_alarms_forced_door_left_open_board_fault(tmp_path: Path) -> None:
    rig = Rig(tmp_path, door_open_alarm_s=1, board_timeout_ms=200)
    try:
        lk = rig.locker
        rig.run(lk.check_doors())
        assert rig.alarms() == []
        rig.bus.force_open(1, 5)
        rig.run(lk.check_doors())
        rig.run(lk.check_doors())
        assert rig.alarms() == ["door_forced"]  # once per episode
        rig.bus.close_door(1, 5)
        rig.run(lk.check_doors())
        # Door left open: the courier walks away for 3 s.
        lk.courier_login(rig.provision_courier())

        async def slow() -> int:
            task = asyncio.ensure_future(lk.deposit(PARCEL, "M"))
            await asyncio.sleep(3.0)  # the 1 s alarm has room even on a loaded machine
            for c in lk.comps.all():
                if rig.bus.is_open(1, c["lock"]):
                    rig.bus.close_door(1, c["lock"])
            return await task

        rig.run(slow())
        assert rig.alarms() == ["door_forced", "door_left_open"]
        # The board stops answering.
        rig.bus.faults.set(mute=True)
        rig.run(lk.check_doors())
        rig.run(lk.check_doors())
        with pytest.raises(FlowError) as e:
            rig.run(lk.deposit("EA123456785CN", "S"))
        assert e.value.code == "door_fault"
        assert rig.alarms().count("lock_board_fault") == 2  # the poll's, once, and the failed open
        assert lk.comps.find_parcel("EA123456785CN") is None
        rig.bus.faults.clear()
        rig.run(lk.check_doors())
        assert any(e["body"]["what"] == "board_recovered" for e in rig.events("locker.audit"))
    finally:
        rig.close()


# ---- power loss at every step of a door cycle

def _journal(rig: Rig, step: str, action: str, cid: int, info: dict) -> None:
    Journal(rig.hal.storage(str(rig.tmp / "flash"))).write(
        {"cid": cid, "action": action, "step": step, "info": info, "t": rig.locker.now()})


@pytest.mark.parametrize("driver,occupied,expect_state,expect_event", [
    ("kerong", True, K.OCCUPIED, "locker.deposit"),
    ("kerong", False, K.FREE, "locker.deposit_aborted"),
    ("8a", None, K.INSPECT, "locker.inspect_needed"),
])
def test_power_cut_while_opening_for_deposit(tmp_path: Path, driver: str, occupied: bool | None,
                                             expect_state: str, expect_event: str) -> None:
    rig = Rig(tmp_path, driver=driver)
    try:
        c = rig.locker.comps.get(2)
        if occupied:
            rig.bus.set_occupied(c["board"], c["lock"])
        _journal(rig, "opening", "deposit", 2, {"parcel": PARCEL, "courier": "c007", "size": "S"})
        lk = rig.boot()
        outcome = rig.run(lk.recover())
        assert lk.comps.get(2)["state"] == expect_state
        assert [e["body"]["compartment"] for e in rig.events(expect_event)] == [2]
        assert lk.journal.read() is None
        assert outcome in ("completed", "aborted", "inspect")
        if expect_state == K.INSPECT:
            assert "recovered_inconsistent" in rig.alarms()
            assert lk.comps.retrieval_list() == [2]
    finally:
        rig.close()


def test_power_cut_with_door_open_resumes_the_cycle(rig: Rig) -> None:
    lk = rig.locker
    lk.courier_login(rig.provision_courier())

    async def cut() -> None:
        task = asyncio.ensure_future(lk.deposit(PARCEL, "M"))
        while not lk.journal.read() or lk.journal.read()["step"] != "open":
            await asyncio.sleep(0.01)
        task.cancel()  # the power goes: RAM is gone, flash and the open door stay

    rig.run(cut())
    cid = Journal(rig.hal.storage(str(rig.tmp / "flash"))).read()["cid"]
    lk2 = rig.boot()

    async def reboot() -> str:
        closer = asyncio.ensure_future(rig.close_when_open(cid, delay=0.3))
        out = await lk2.recover()
        await closer
        return out

    assert rig.run(reboot()) == "resumed"
    assert lk2.comps.get(cid)["state"] == K.OCCUPIED
    assert len(rig.events("locker.deposit")) == 1


def test_power_cut_after_door_closed_replays_same_event_id(rig: Rig) -> None:
    cid = deposit(rig)
    lk = rig.locker
    code = issued_code(rig, PARCEL)

    class Cut(Exception):
        pass

    # Cut the power right after the 'closing' entry reaches flash.
    real = lk.journal.write

    def write(entry: dict) -> None:
        real(entry)
        if entry["step"] == "closing":
            raise Cut()

    lk.journal.write = write
    with pytest.raises(Cut):
        rig.run(rig.with_person(lk.pickup(code)))
    assert lk.comps.get(cid)["state"] == K.OCCUPIED  # not applied before the cut
    lk2 = rig.boot()
    assert rig.run(lk2.recover()) == "replayed"
    assert lk2.comps.get(cid)["state"] == K.FREE
    picks = rig.events("locker.pickup")
    assert len(picks) == 1 and picks[0]["id"] == json.loads(
        (rig.tmp / "flash" / "journal").read_text() or "{}").get("eid", picks[0]["id"])
    assert lk2.journal.read() is None


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    from firmware.locker.config import ConfigError, validate
    from tests.locker_rig import config

    good = config(tmp_path, "socket://127.0.0.1:1")
    for mutate, msg in [
        (lambda c: c.pop("device"), "config: missing 'device'"),
        (lambda c: c["broker"].update(port=70000), "broker.port out of range"),
        (lambda c: c["board"].update(driver="acme"), "board.driver must be one of 8a, kerong"),
        (lambda c: c["compartments"][1].update(lock=1),
         "compartments[1]: board 1 lock 1 is already compartment 1"),
        (lambda c: c["compartments"][0].update(size="XXL"), "compartments[0].size must be one of S M L XL"),
        (lambda c: c["key"].update(secret="zz"), "key.secret must be hex"),
        (lambda c: c["key"].update(secret="00"), "key.secret is shorter than 16 bytes"),
        (lambda c: c["key"].update(kv=0), "key.kv must be a key version 1-2147483647"),
        (lambda c: c["key"].update(prev={"kv": 1, "secret": "00" * 32, "until": 5}),
         "key.prev.kv must be a key version other than key.kv"),
        (lambda c: c.pop("key"), "config: missing 'key'"),
        (lambda c: c.update(keys={"k1": "00" * 32}),
         "config.keys: shared command keys are gone; provision this device's own key"),
    ]:
        bad = json.loads(json.dumps(good))
        mutate(bad)
        with pytest.raises(ConfigError) as e:
            validate(bad)
        assert str(e.value) == msg


@pytest.mark.slow
def test_watchdog_fed_only_while_every_task_beats(rig: Rig) -> None:
    from drivers.hal.common import SoftWatchdog

    lk = rig.locker
    fired: list[int] = []
    wd = SoftWatchdog(1500, lambda: fired.append(1))

    async def healthy_then_stuck() -> None:
        sup = asyncio.ensure_future(lk.supervisor_task(wd, ("sender", "monitor")))
        lk.cfg["poll_ms"] = 50  # staleness limit: max(5 s, 10 polls)
        for _ in range(30):  # 3 s of both tasks beating
            lk.beat("sender")
            lk.beat("monitor")
            await asyncio.sleep(0.1)
        fed = wd.feeds
        assert fed >= 2 and not fired
        # The monitor task hangs; the sender keeps beating.
        for _ in range(90):
            lk.beat("sender")
            await asyncio.sleep(0.1)
            if sup.done():
                break
        assert sup.done(), "the supervisor should have let the watchdog fire"

    rig.run(healthy_then_stuck())
    assert fired == [1]


def test_outbox_full_refuses_the_door_before_it_opens(tmp_path: Path) -> None:
    rig = Rig(tmp_path, outbox_bytes=8 * 1024)
    try:
        lk = rig.locker
        lk.courier_login(rig.provision_courier())
        from protocol.barcodes import s10_check_digit

        refused = None
        for i in range(24):
            serial = f"{i + 10:08d}"
            try:
                rig.run(rig.with_person(lk.deposit(f"RR{serial}{s10_check_digit(serial)}CN", "S")))
            except FlowError as e:
                assert e.code == "outbox_full", e.code
                refused = i
                break
        assert refused is not None
        opens_before = sum(rig.bus.board(1).opens)
        with pytest.raises(FlowError):
            rig.run(lk.deposit("RB123456785GB", "S"))
        assert refused > 3
        assert sum(rig.bus.board(1).opens) == opens_before  # no door moved without its record
        assert "outbox_full" in rig.alarms() or "outbox_nearly_full" in rig.alarms()
        # Every deposit that happened has its custody event.
        held = [c for c in lk.comps.all() if c["state"] == K.OCCUPIED]
        assert len(rig.events("locker.deposit")) == len(held)
    finally:
        rig.close()


# ---- a key per device, permits for handhelds

def _handheld_key() -> bytes:
    """What a courier's handheld holds: its own key (hh01, version 1)."""
    from tests.locker_rig import PLATFORM

    return PLATFORM.key("hh01")


def test_attack_a_handheld_key_signs_no_open_a_locker_accepts(rig: Rig) -> None:
    for op, args in (("open", {"compartment": 5}), ("config", {"lockout_budget": 1000}),
                     ("credential", {"courier": "evil", "salt": "00", "hash": "00", "exp": 2**40})):
        forged = rig.command(op, args, f"hh-{op}", key=_handheld_key())
        assert rig.run(rig.locker.handle_command(forged)) == "bad_signature"
    assert opened_locks(rig) == {}
    assert "evil" not in rig.locker.couriers and rig.locker.cfg["lockout_budget"] == 5


def _permit(op: str, locker: str = "lk01", parcel: str = PARCEL, lifetime_s: int = 3600,
            now: int | None = None, **kw) -> bytes:
    from protocol import signing
    from tests.locker_rig import PLATFORM

    return signing.encode(PLATFORM.permit(locker, op, parcel, "c007", "hh01", f"p-{op}-{locker}",
                                          now=now, lifetime_s=lifetime_s, **kw))


def test_deposit_and_retrieve_permits_signed_with_this_lockers_key(rig: Rig) -> None:
    async def run(payload: bytes) -> str:
        return await rig.with_person(_settle(rig, payload))

    assert rig.run(run(_permit("deposit", size="M"))) == "ok"
    [dep] = rig.events("locker.deposit")
    assert dep["body"]["parcel"] == PARCEL and dep["body"]["courier"] == "c007"
    assert dep["body"]["permit"] == "p-deposit-lk01"
    cid = dep["body"]["compartment"]
    # Not yet on the retrieval list: a retrieve permit opens nothing.
    assert rig.run(rig.locker.handle_command(_permit("retrieve"))) == "not_for_retrieval"
    rig.locker.comps.set(cid, K.OVERDUE)
    from protocol import signing
    from tests.locker_rig import PLATFORM

    retrieve = signing.encode(PLATFORM.permit("lk01", "retrieve", PARCEL, "c007", "hh01", "p-ret-2"))
    assert rig.run(run(retrieve)) == "ok"
    [ret] = rig.events("locker.retrieve")
    assert ret["body"]["compartment"] == cid and ret["body"]["permit"] == "p-ret-2"
    assert rig.locker.comps.get(cid)["state"] == K.FREE


async def _settle(rig: Rig, payload: bytes) -> str:
    code = await rig.locker.handle_command(payload)
    await asyncio.sleep(0.05)  # the door cycle is a task of its own
    while rig.locker.active or rig.locker.journal.read() is not None:
        await asyncio.sleep(0.02)
    return code


def test_a_permit_for_locker_a_is_refused_by_locker_b(tmp_path: Path) -> None:
    from tests.locker_rig import PLATFORM

    b = Rig(tmp_path, device="lk02", key=PLATFORM.device_config("lk02"))
    try:
        for_a = _permit("deposit", "lk01", size="M")
        assert b.run(b.locker.handle_command(for_a)) == "bad_signature"  # lk01's key, not lk02's
        assert b.bus.board(1).opens == [0] * 24
    finally:
        b.close()


def test_expired_or_long_lived_permits_are_refused(rig: Rig) -> None:
    now = rig.locker.now()
    expired = _permit("deposit", size="M", now=now - 4000, lifetime_s=3600)
    assert rig.run(rig.locker.handle_command(expired)) == "expired"
    long_lived = _permit("deposit", size="M", now=now, lifetime_s=13 * 3600)
    assert rig.run(rig.locker.handle_command(long_lived)) == "not_a_permit"
    assert opened_locks(rig) == {}


def test_old_key_version_accepted_in_grace_and_refused_after(tmp_path: Path) -> None:
    from tests.locker_rig import PLATFORM

    now = int(__import__("time").time())
    r = Rig(tmp_path, key=PLATFORM.device_config("lk01", kv=2, grace_until=now + 600))
    try:
        old = r.command("reserve", {"parcel": PARCEL, "size": "S"}, "old-kv-1", exp_in=3600,
                        key=PLATFORM.key("lk01", 1), kv=1)
        assert r.run(r.locker.handle_command(old)) == "ok"
        new = r.command("reserve", {"parcel": "EA123456785CN", "size": "S"}, "new-kv-2",
                        key=PLATFORM.key("lk01", 2), kv=2)
        assert r.run(r.locker.handle_command(new)) == "ok"
        r.hal.clock.offset = 601  # the grace period is over
        old2 = r.command("reserve", {"parcel": "RR123456785CN", "size": "S"}, "old-kv-2", exp_in=3600,
                         key=PLATFORM.key("lk01", 1), kv=1)
        assert r.run(r.locker.handle_command(old2)) == "retired_key"
        assert r.run(r.locker.handle_command(r.command("open", {"compartment": 1}, "unknown-kv",
                                                       key=PLATFORM.key("lk01", 3), kv=3))) == "unknown_key"
        acks = {a["id"]: a["code"] for a in r.records("/ack")}
        assert acks["old-kv-2"] == "retired_key" and acks["old-kv-1"] == "ok"
    finally:
        r.close()


def test_a_compartment_leaves_service_only_empty_and_is_never_offered_while_out(rig: Rig) -> None:
    """``service``: the platform's signed answer to a supervisor's request
    (gateway/http/clerk.py). An out-of-service compartment is skipped by
    deposits; one holding a parcel is refused so the parcel is not stranded."""
    lk = rig.locker
    smallest_m = min(c["id"] for c in lk.comps.all() if c["size"] == "M")
    oos = rig.command("service", {"compartment": smallest_m, "state": "out_of_service", "request": "gw-r1"},
                      "svc-1")
    assert rig.run(lk.handle_command(oos)) == "ok"
    assert lk.comps.get(smallest_m)["state"] == K.OUT_OF_SERVICE
    assert rig.boot().comps.get(smallest_m)["state"] == K.OUT_OF_SERVICE  # on flash, survives a reboot
    lk = rig.locker
    cid = deposit(rig, size="M")
    assert cid != smallest_m and lk.comps.get(cid)["size"] == "M"
    # a compartment with a parcel in it cannot leave service
    busy = rig.command("service", {"compartment": cid, "state": "out_of_service"}, "svc-2")
    assert rig.run(lk.handle_command(busy)) == "not_empty"
    assert lk.comps.get(cid)["state"] == K.OCCUPIED
    # nonsense is refused with a reason, and changes nothing
    for n, args in enumerate(({"compartment": 999, "state": "out_of_service"},
                              {"compartment": smallest_m, "state": "broken"}, {"state": "in_service"})):
        assert rig.run(lk.handle_command(rig.command("service", args, f"svc-bad-{n}"))) == "bad_args"
    back = rig.command("service", {"compartment": smallest_m, "state": "in_service"}, "svc-3")
    assert rig.run(lk.handle_command(back)) == "ok"
    assert lk.comps.get(smallest_m)["state"] == K.FREE
    again = rig.command("service", {"compartment": smallest_m, "state": "in_service"}, "svc-4")
    assert rig.run(lk.handle_command(again)) == "ok"  # already in service: done, not an error
    changes = [(e["cls"], *(e["body"][k] for k in ("compartment", "state", "cmd", "request")))
               for e in rig.events("locker.service")]
    assert changes == [("audit", smallest_m, "out_of_service", "svc-1", "gw-r1"),
                       ("audit", smallest_m, "in_service", "svc-3", None)]
    acks = {a["id"]: a["code"] for a in rig.records("/ack")}
    assert acks["svc-2"] == "not_empty" and acks["svc-1"] == "ok"
    assert not opened_locks(rig).get(lk.comps.get(smallest_m)["lock"])  # no door moved for it
