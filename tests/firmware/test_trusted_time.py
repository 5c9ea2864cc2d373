"""Trusted time on the locker (CPython, the real application and driver):
a locker whose clock reset to 2000 refuses time-based decisions until the
gateway's time arrives, and then decides by the gateway's time.

The same story on the MicroPython unix port against Mosquitto and the real
gateway is tests/e2e/test_trusted_time_e2e.py."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from firmware.devconfig import ConfigError
from firmware.locker import codes as C
from firmware.locker import compartments as K
from firmware.locker.app import DAY, FlowError
from firmware.locker.config import validate
from protocol import timesync
from tests.locker_rig import Rig, config

PARCEL = "RB123456785GB"
Y2000 = 946684800  # 2000-01-01T00:00:00Z, where a board's RTC lands after it forgets
SALT = "00112233445566ff"


def provisioned(rig: Rig, courier: str, secret: str, exp: int) -> str:
    """A credential the platform sent earlier (already on flash)."""
    rig.locker.couriers[courier] = {"salt": SALT, "hash": C.salted_hash(SALT, secret), "exp": exp}
    rig.locker._save_json("couriers", rig.locker.couriers)
    return f"PE-C:{courier}:{secret}"


def send_time(rig: Rig, t: int | bytes) -> None:
    payload = t if isinstance(t, bytes) else timesync.encode(t)
    rig.locker._on_message(rig.locker.t_time, payload, False)


def acks(rig: Rig) -> list[dict]:
    return rig.records("/ack")


@pytest.fixture
def reset_rig(tmp_path: Path):
    """A locker that takes its time from the gateway, its RTC back at 2000."""
    r = Rig(tmp_path, time_source="gateway")
    r.hal.clock.offset = Y2000 - int(time.time())
    yield r
    r.close()


def test_clock_reset_to_2000_refuses_until_synced_then_recovers(reset_rig: Rig) -> None:
    rig, lk = reset_rig, reset_rig.locker
    real = int(time.time())
    expired = provisioned(rig, "c-old", "old-secret", real - 3600)  # expired an hour ago
    valid = provisioned(rig, "c-new", "new-secret", real + DAY)
    assert lk.now() < real - 20 * 365 * DAY  # the locker believes it is 2000
    # Before the gateway's time: no badge decision at all, in either direction.
    for badge in (expired, valid):
        with pytest.raises(FlowError) as e:
            lk.courier_login(badge)
        assert e.value.code == "time_not_synced"
    assert lk.session is None
    # A fresh platform command is refused as "not synced", not as not_yet_valid,
    # and not remembered: the same command runs once the time is known.
    cmd = rig.command("open", {"compartment": 1}, "c-fresh", now=real)
    assert rig.run(lk.handle_command(cmd)) == "time_not_synced"
    [ack] = acks(rig)
    assert ack["id"] == "c-fresh" and not ack["ok"] and ack["code"] == "time_not_synced"
    # The gateway's time arrives.
    believed = lk.now()  # the locker's own clock just before: 2000 and the seconds this test has run
    send_time(rig, real)
    assert lk.synced and abs(lk.now() - real) <= 2
    [alarm] = rig.events("locker.alarm")
    assert alarm["body"]["alarm"] == "clock_skew" and alarm["body"]["gateway_t"] == real
    assert alarm["body"]["skew"] > 20 * 365 * DAY and abs(alarm["ts"] - real) <= 2
    [synced] = [e for e in rig.events("locker.audit") if e["body"]["what"] == "time_synced"]
    assert abs(synced["body"]["offset"] - (real - believed)) <= 1 and believed - Y2000 < 600
    # Now by the gateway's time: the expired badge is refused, the valid one works.
    with pytest.raises(FlowError) as e:
        lk.courier_login(expired)
    assert e.value.code == "bad_badge"
    assert lk.courier_login(valid) == "c-new"
    assert rig.run(lk.handle_command(cmd)) == "ok"
    cid = rig.run(rig.with_person(lk.deposit(PARCEL, "M")))
    [dep] = rig.events("locker.deposit")
    assert abs(dep["ts"] - real) <= 5 and abs(dep["body"]["expires"] - (real + 7 * DAY)) <= 5
    assert lk.comps.get(cid)["state"] == K.OCCUPIED
    logins = [e["body"]["result"] for e in rig.events("locker.audit") if e["body"]["what"] == "courier_login"]
    assert logins == ["time_not_synced", "time_not_synced", "refused", "ok"]


def test_command_arriving_with_the_connection_waits_for_the_time(reset_rig: Rig) -> None:
    rig, lk = reset_rig, reset_rig.locker
    real = int(time.time())

    async def go() -> None:
        task = asyncio.create_task(lk.command_task())
        lk._on_message(lk.t_cmd, rig.command("config", {"pickup_days": 3}, "c-1", now=real), False)
        await asyncio.sleep(0.4)
        assert acks(rig) == []  # held, not refused
        send_time(rig, real)
        for _ in range(100):
            if acks(rig):
                break
            await asyncio.sleep(0.02)
        task.cancel()

    rig.run(go())
    [ack] = acks(rig)
    assert ack["id"] == "c-1" and ack["ok"]
    assert lk.cfg["pickup_days"] == 3


def test_no_time_within_the_wait_is_refused_and_the_command_kept_for_later(tmp_path: Path) -> None:
    rig = Rig(tmp_path, time_source="gateway", time_wait_s=1)
    try:
        lk = rig.locker

        async def go() -> None:
            task = asyncio.create_task(lk.command_task())
            lk._on_message(lk.t_cmd, rig.command("config", {"pickup_days": 3}, "c-2"), False)
            for _ in range(200):
                if acks(rig):
                    break
                await asyncio.sleep(0.02)
            task.cancel()

        rig.run(go())
        [ack] = acks(rig)
        assert ack["code"] == "time_not_synced" and lk.cfg["pickup_days"] == 7
        assert "c-2" not in lk.guard.state()["seen"]  # nothing remembered: it may come again
    finally:
        rig.close()


def test_time_is_monotonic_between_syncs_and_steps_only_with_an_alarm(tmp_path: Path) -> None:
    rig = Rig(tmp_path, time_source="gateway", time_skew_s=60)
    try:
        lk = rig.locker
        real = int(time.time())
        send_time(rig, real)
        assert rig.alarms() == []  # the clock was right: synced, no alarm
        t0 = lk.now()
        send_time(rig, t0 - 20)  # a small step back: waited out, never taken
        assert lk.now() >= t0
        assert rig.alarms() == []
        send_time(rig, lk.now() + 3600)  # the gateway's clock jumped an hour
        assert lk.now() >= t0 + 3590
        assert rig.alarms() == ["clock_skew"]
        send_time(rig, real)  # ... and back: a step this large is taken, with an alarm
        assert abs(lk.now() - real) <= 2
        assert rig.alarms() == ["clock_skew", "clock_skew"]
        assert lk.stats["time_syncs"] == 4
        assert [e["body"]["what"] for e in rig.events("locker.audit")].count("time_synced") == 1
    finally:
        rig.close()


@pytest.mark.parametrize("payload", [
    b"not json", b'{"t":1795881600}', b'{"t":1795881600,"v":2}', b'{"v":1}', b'{"t":"1795881600","v":1}',
    b'{"t":true,"v":1}', b'{"t":1795881600.5,"v":1}', b'{"t":0,"v":1}', b'{"t":946684800,"v":1}',
    b'{"t":1795881600,"v":1,"pad":"' + b"x" * 300 + b'"}', b"[1795881600]",
])
def test_bad_time_messages_are_counted_and_ignored(reset_rig: Rig, payload: bytes) -> None:
    send_time(reset_rig, payload)
    assert not reset_rig.locker.synced and reset_rig.locker.stats["time_refused"] == 1
    assert reset_rig.alarms() == []


def test_overdue_parcels_are_not_judged_by_an_unsynced_clock(tmp_path: Path) -> None:
    rig = Rig(tmp_path, time_source="gateway")
    try:
        real = int(time.time())
        send_time(rig, real)
        rig.locker.courier_login(provisioned(rig, "c007", "pw", real + DAY))
        cid = rig.run(rig.with_person(rig.locker.deposit(PARCEL, "M")))
        rig.hal.clock.offset = 30 * DAY  # the RTC runs a month ahead after a reboot
        lk = rig.boot()
        lk.check_expiry()
        assert lk.comps.get(cid)["state"] == K.OCCUPIED and rig.events("locker.overdue") == []
        send_time(rig, real + 60)
        lk.check_expiry()
        assert lk.comps.get(cid)["state"] == K.OCCUPIED and rig.events("locker.overdue") == []
    finally:
        rig.close()


def test_a_return_code_waits_for_the_time_and_is_not_counted_as_wrong(reset_rig: Rig) -> None:
    rig, lk = reset_rig, reset_rig.locker
    real = int(time.time())
    lk.codes["RR000000000GB"] = {"salt": SALT, "hash": C.salted_hash(SALT, "424242"),
                                 "exp": real + DAY, "kind": "return"}
    with pytest.raises(FlowError) as e:
        rig.run(lk.pickup("424242"))
    assert e.value.code == "time_not_synced"
    assert lk.lockout.failures(real, "keypad") == 0 and lk.lockout.failures(real, "qr") == 0
    send_time(rig, real)
    assert rig.run(rig.with_person(lk.pickup("424242"))) is not None
    assert len(rig.events("locker.return_dropoff")) == 1


def test_pickup_by_code_does_not_need_the_time(reset_rig: Rig) -> None:
    """A pickup code has no expiry on the locker: villagers are not kept
    waiting for a gateway that is down when the locker reboots."""
    rig, lk = reset_rig, reset_rig.locker
    cid = lk.comps.pick_free("M")["id"]
    lk.comps.set(cid, K.OCCUPIED, parcel=PARCEL, salt=SALT, hash=C.salted_hash(SALT, "135790"),
                 deposited=Y2000, expires=Y2000 + 7 * DAY, code_by="platform")
    assert not lk.synced
    assert rig.run(rig.with_person(lk.pickup("135790"))) == cid


def test_local_time_source_trusts_the_device_clock(tmp_path: Path) -> None:
    rig = Rig(tmp_path)  # the rig's default: no gateway
    try:
        assert rig.locker.synced
        before = rig.locker.now()
        send_time(rig, before + 7200)  # not subscribed; and ignored if it came
        assert abs(rig.locker.now() - before) <= 2 and rig.alarms() == []
    finally:
        rig.close()


@pytest.mark.parametrize("extra, key", [
    ({"time_source": "ntp"}, "time_source"), ({"time_skew_s": 0}, "time_skew_s"),
    ({"time_skew_s": "60"}, "time_skew_s"), ({"time_wait_s": -1}, "time_wait_s"),
])
def test_time_config_errors_name_the_field(tmp_path: Path, extra: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        config(tmp_path, "socket://127.0.0.1:1", **extra)
    cfg = json.loads(json.dumps(config(tmp_path, "socket://127.0.0.1:1")))
    cfg.pop("time_source")
    assert validate(cfg).get("time_source", "gateway") == "gateway"  # the default: the gateway's time
