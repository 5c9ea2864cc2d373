"""Outbound drop-off (寄件) at the locker on CPython: send codes provisioned by
signed command, used once, sharing the per-source lockout; the courier's `9#`
collects outbound parcels with the rest; power cuts at each step. The same
flows run on the MicroPython unix port in tests/e2e/test_locker_send_e2e.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from firmware.locker import codes as C
from firmware.locker import compartments as K
from firmware.locker.app import DAY, MAX_SENDS, FlowError
from firmware.locker.journal import Journal
from firmware.locker.panel import Panel
from protocol import outbound_bodies
from tests.locker_rig import Rig

ORDER = "SO20261203-0042"
CODE = "418263"


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path)
    yield r
    r.close()


def provision(rig: Rig, order: str = ORDER, code: str = CODE, size: str = "M", exp_in: int = DAY,
              cmd_id: str | None = None, **extra: object) -> str:
    salt = "5e5e5e5e5e5e5e5e"
    args = {"order": order, "salt": salt, "hash": C.salted_hash(salt, code), "exp": rig.locker.now() + exp_in,
            "size": size, **extra}
    payload = rig.command("provision_send", args, cmd_id or f"send-{order.lower()}")
    return rig.run(rig.locker.handle_command(payload))


def audits(rig: Rig, what: str) -> list[dict]:
    return [e["body"] for e in rig.events("locker.audit") if e["body"]["what"] == what]


def test_send_code_opens_a_compartment_of_the_booked_size_once(rig: Rig) -> None:
    lk = rig.locker
    assert provision(rig) == "ok"
    flash = (rig.tmp / "flash" / "sends").read_text()
    assert CODE not in flash and ORDER in flash  # only the salted hash rests on flash
    shown, cid = rig.run(rig.with_person(lk.enter_code(CODE, via="keypad")))
    assert shown == "send_ok"
    c = lk.comps.get(cid)
    assert c["state"] == K.SEND_WAITING and c["size"] == "M" and c["order"] == ORDER
    [ev] = rig.events("locker.send_dropoff")
    assert ev["cls"] == "custody"
    assert ev["body"] == {"compartment": cid, "order": ORDER, "size": "M", "booked": "M", "via": "keypad"}
    outbound_bodies.check("locker.send_dropoff", ev["body"])
    raw = json.dumps(rig.records())
    assert CODE not in raw and CODE not in (rig.tmp / "flash" / "journal").read_text()
    assert lk.journal.read() is None
    # The replayed code (typed again, or scanned as PE-S:) opens nothing and
    # is not counted as a guess.
    for via in ("keypad", "qr"):
        with pytest.raises(FlowError) as e:
            rig.run(lk.enter_code(CODE, via=via))
        assert e.value.code == "code_used"
    assert lk.lockout.failures(lk.now(), "keypad") == 0
    assert sum(rig.bus.board(1).opens) == 1
    assert [a["result"] for a in audits(rig, "send_attempt")] == ["ok", "used", "used"]
    # Used up for good: survives a reboot, and the platform cannot re-arm it.
    lk2 = rig.boot()
    with pytest.raises(FlowError) as e:
        rig.run(lk2.enter_code(CODE))
    assert e.value.code == "code_used"
    ack = provision(rig, cmd_id="send-again")
    assert ack != "ok"
    assert lk2.state_doc()["outbound"] == [{"compartment": cid, "order": ORDER}]
    assert cid in lk2.state_doc()["retrieval"]


def test_courier_collects_outbound_with_overdue_parcels(rig: Rig) -> None:
    lk = rig.locker
    provision(rig)
    provision(rig, order="SO20261203-0043", code="550119", size="S")
    _, a = rig.run(rig.with_person(lk.enter_code(CODE)))
    _, b = rig.run(rig.with_person(lk.enter_code("550119", via="qr")))
    lk.courier_login(rig.provision_courier())
    pcid = rig.run(rig.with_person(lk.deposit("RB123456785GB", "L")))
    rig.hal.clock.offset += lk.cfg["pickup_days"] * DAY + 1
    lk.check_expiry()
    done = rig.run(rig.with_person(lk.retrieve_all()))
    assert sorted(done) == sorted([a, b, pcid])
    got = {e["body"]["order"]: e["body"] for e in rig.events("locker.send_collected")}
    assert got == {ORDER: {"compartment": a, "order": ORDER, "courier": "c007"},
                   "SO20261203-0043": {"compartment": b, "order": "SO20261203-0043", "courier": "c007"}}
    for body in got.values():
        outbound_bodies.check("locker.send_collected", body)
    assert [e["body"]["parcel"] for e in rig.events("locker.retrieve")] == ["RB123456785GB"]
    assert all(lk.comps.get(cid)["state"] == K.FREE and "order" not in lk.comps.get(cid) for cid in done)


def test_guesser_shares_the_pickup_lockout_and_send_codes_stay_safe(rig: Rig) -> None:
    lk = rig.locker
    provision(rig)
    for _ in range(lk.cfg["lockout_budget"]):
        with pytest.raises(FlowError) as e:
            rig.run(lk.enter_code("999999" if CODE != "999999" else "111111"))
        assert e.value.code == "wrong_code"
    with pytest.raises(FlowError) as e:
        rig.run(lk.enter_code(CODE))  # the keypad is locked out, send codes too
    assert e.value.code == "locked_out"
    assert "code_guessing" in rig.alarms() and "lockout" in rig.alarms()
    # The QR source is rationed separately: the villager scans PE-S:.
    shown, cid = rig.run(rig.with_person(lk.enter_code(CODE, via="qr")))
    assert shown == "send_ok"


def test_no_free_compartment_keeps_the_code(rig: Rig) -> None:
    lk = rig.locker
    provision(rig, size="XL")
    for c in lk.comps.all():
        if c["size"] == "XL":
            lk.comps.set(c["id"], K.OCCUPIED, parcel="X")
    with pytest.raises(FlowError) as e:
        rig.run(lk.enter_code(CODE))
    assert e.value.code == "full" and e.value.detail == "XL"
    assert sum(rig.bus.board(1).opens) == 0
    assert audits(rig, "send_attempt")[-1]["result"] == "full"
    xl = next(c for c in lk.comps.all() if c["size"] == "XL")
    lk.comps.set(xl["id"], K.FREE)
    shown, cid = rig.run(rig.with_person(lk.enter_code(CODE)))
    assert shown == "send_ok" and cid == xl["id"]


def test_expired_bad_and_too_many_codes_are_refused(rig: Rig) -> None:
    lk = rig.locker
    provision(rig, exp_in=60)
    rig.hal.clock.offset += 61
    with pytest.raises(FlowError) as e:
        rig.run(lk.enter_code(CODE))
    assert e.value.code == "code_expired"
    for i, bad in enumerate(({"order": "so-lower"}, {"order": "SO1", "size": "M"},
                             {"order": ORDER, "size": "XXL"}, {"order": ORDER, "exp": "soon"}, {"order": 5})):
        args = {"salt": "00", "hash": "00", "exp": lk.now() + 10, **bad}
        assert rig.run(lk.handle_command(rig.command("provision_send", args, f"bad-{i}"))) != "ok"
    n = len(lk.sends)
    for i in range(MAX_SENDS - n):
        rig.hal.clock.offset += 1  # the replay window keeps 64 ids per second of iat
        assert provision(rig, order=f"SO9-{i}", code=f"{i:06d}") == "ok"
    # Full: the expired code makes room, then nothing does.
    assert provision(rig, order="SO9-OVER") == "ok" and ORDER not in lk.sends
    assert provision(rig, order="SO9-OVER2") != "ok"
    assert len(lk.sends) == MAX_SENDS
    # The platform withdraws one: room again.
    rev = rig.command("provision_send", {"order": "SO9-0", "revoke": True}, "rev-1")
    assert rig.run(lk.handle_command(rev)) == "ok" and "SO9-0" not in lk.sends


def test_door_left_open_alarms_and_the_code_is_used_only_when_it_closes(rig: Rig) -> None:
    lk = rig.locker
    lk.cfg["door_open_alarm_s"] = 1
    provision(rig)

    async def slow_villager() -> tuple[str, int]:
        flow = asyncio.ensure_future(lk.enter_code(CODE))
        while not lk.active:
            await asyncio.sleep(0.02)
        cid = next(iter(lk.active))
        # Typed again while the door stands open: refused, no second door.
        with pytest.raises(FlowError) as e:
            await lk.enter_code(CODE, via="qr")
        assert e.value.code == "busy"
        await rig.close_when_open(cid, delay=1.5)
        return await flow

    shown, cid = rig.run(slow_villager())
    assert shown == "send_ok" and "door_left_open" in rig.alarms()
    assert sum(rig.bus.board(1).opens) == 1


def test_empty_compartment_on_a_sensing_board_keeps_the_code(tmp_path: Path) -> None:
    rig = Rig(tmp_path, driver="kerong")
    try:
        provision(rig)
        shown, cid = rig.run(rig.with_person(rig.locker.enter_code(CODE)))
        assert shown == "send_empty" and rig.locker.comps.get(cid)["state"] == K.FREE
        [ab] = rig.events("locker.send_aborted")
        assert ab["body"] == {"compartment": cid, "order": ORDER, "reason": "empty"}
        c = rig.locker.comps.get(cid)
        rig.bus.set_occupied(c["board"], c["lock"])
        shown, cid2 = rig.run(rig.with_person(rig.locker.enter_code(CODE)))
        assert shown == "send_ok" and cid2 == cid
    finally:
        rig.close()


def _journal(rig: Rig, step: str, action: str, cid: int, info: dict) -> None:
    Journal(rig.hal.storage(str(rig.tmp / "flash"))).write(
        {"cid": cid, "action": action, "step": step, "info": info, "t": rig.locker.now()})


@pytest.mark.parametrize("driver,step,occupied,state,event,code_left", [
    ("kerong", "opening", True, K.SEND_WAITING, "locker.send_dropoff", False),
    ("kerong", "opening", False, K.FREE, "locker.send_aborted", True),
    ("8a", "opening", None, K.INSPECT, "locker.inspect_needed", True),
    ("8a", "open", None, K.SEND_WAITING, "locker.send_dropoff", False),
])
def test_power_cut_mid_dropoff(tmp_path: Path, driver: str, step: str, occupied: bool | None, state: str,
                               event: str, code_left: bool) -> None:
    rig = Rig(tmp_path, driver=driver)
    try:
        provision(rig)
        c = rig.locker.comps.get(2)
        if occupied:
            rig.bus.set_occupied(c["board"], c["lock"])
        _journal(rig, step, "send", 2, {"order": ORDER, "size": "S", "via": "keypad"})
        lk = rig.boot()
        rig.run(lk.recover())
        assert lk.comps.get(2)["state"] == state and lk.journal.read() is None
        [ev] = rig.events(event)
        assert ev["body"]["compartment"] == 2 and ev["body"]["order"] == ORDER
        assert bool(lk.sends[ORDER].get("used")) is not code_left
        if state == K.INSPECT:
            assert lk.comps.retrieval_list() == [2]
    finally:
        rig.close()


@pytest.mark.parametrize("driver,put_in,state", [("8a", None, K.SEND_WAITING),
                                                 ("kerong", True, K.SEND_WAITING),
                                                 ("kerong", False, K.FREE)])
def test_power_cut_with_the_door_open_resumes_and_blocks_a_second_door(tmp_path: Path, driver: str,
                                                                        put_in: bool | None,
                                                                        state: str) -> None:
    rig = Rig(tmp_path, driver=driver)
    try:
        _resume(rig, put_in, state)
    finally:
        rig.close()


def _resume(rig: Rig, put_in: bool | None, state: str) -> None:
    lk = rig.locker
    provision(rig)

    async def cut() -> None:
        task = asyncio.ensure_future(lk.enter_code(CODE))
        while not lk.journal.read() or lk.journal.read()["step"] != "open":
            await asyncio.sleep(0.01)
        task.cancel()

    rig.run(cut())
    cid = Journal(rig.hal.storage(str(rig.tmp / "flash"))).read()["cid"]
    lk2 = rig.boot()

    async def reboot() -> None:
        entry = lk2.journal.read()
        lk2._sending[entry["info"]["order"]] = cid  # as run() does before recovery
        rec = asyncio.ensure_future(lk2._recover_task())
        await asyncio.sleep(0.2)
        with pytest.raises(FlowError) as e:
            await lk2.enter_code(CODE)
        assert e.value.code == "busy"
        if put_in:
            c = lk2.comps.get(cid)
            rig.bus.set_occupied(c["board"], c["lock"])
        await rig.close_when_open(cid, delay=0.1)
        await rec

    rig.run(reboot())
    assert lk2.comps.get(cid)["state"] == state
    assert len(rig.events("locker.send_dropoff")) == (state == K.SEND_WAITING)
    assert len(rig.events("locker.send_aborted")) == (state == K.FREE)
    assert bool(lk2.sends[ORDER].get("used")) == (state == K.SEND_WAITING)


def test_panel_routes_send_codes_and_refuses_bad_qr(rig: Rig) -> None:
    class Uart:
        def __init__(self) -> None:
            self.out: list[bytes] = []

        def write(self, b: bytes) -> None:
            self.out.append(b)

    provision(rig)
    panel = Panel(Uart())
    assert rig.run(panel.handle(rig.locker, "Q:PE-S:12ab")) == "bad_code"
    assert rig.run(panel.handle(rig.locker, "Q:PE-S:" + "9" * 40)) == "bad_code"
    assert rig.locker.lockout.failures(rig.locker.now(), "qr") == 0
    assert rig.run(rig.with_person(panel.handle(rig.locker, "Q:PE-S:" + CODE))) == "send_ok"
    assert rig.run(panel.handle(rig.locker, "K:" + CODE + "#")) == "code_used"


def test_a_replayed_provision_command_cannot_rearm_a_used_code(rig: Rig) -> None:
    """The platform's signed command, captured and sent again after the drop-off:
    refused by the replay window, and the order stays used."""
    lk = rig.locker
    salt = "5e5e5e5e5e5e5e5e"
    payload = rig.command("provision_send", {"order": ORDER, "salt": salt, "hash": C.salted_hash(salt, CODE),
                                             "exp": lk.now() + DAY, "size": "S"}, "send-once")
    assert rig.run(lk.handle_command(payload)) == "ok"
    rig.run(rig.with_person(lk.enter_code(CODE)))
    assert rig.run(lk.handle_command(payload)) == "replayed"
    assert rig.run(rig.boot().handle_command(payload)) == "replayed"  # the window is on flash
    with pytest.raises(FlowError) as e:
        rig.run(rig.locker.enter_code(CODE))
    assert e.value.code == "code_used"
