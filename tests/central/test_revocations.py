"""The platform answers a revoked handheld (central/revocations.py): a
``revoke`` signed with each locker's own key, queued once for the outlet's
gateway, which each locker verifies and parses as a revocation of that
handheld; the handheld is retired in the registry. On both backends
(``duty_store``: SQLite, and PostgreSQL behind the real NATS cluster)."""

from __future__ import annotations

import time

from central.duty_store import DutyStore
from central.keys import KeyService
from central.revocations import Revocations
from protocol import envelope, keys, revocation, signing
from protocol.ids import format_event_id
from tests.central.conftest import StoreUnderTest

MASTER = bytes(range(32, 64))


def revoked_event(seq: int, device: str) -> tuple[str, bytes]:
    eid = format_event_id("gw-o1-admin", "0000beef", seq)
    body = {"device": device, "at": int(time.time()), "cancelled": []}
    return eid, envelope.encode(envelope.make(eid, int(time.time()), "gateway.device_revoked", "alarm", body,
                                              boot=1))


def test_each_locker_gets_one_revoke_signed_with_its_own_key(duty_store: StoreUnderTest) -> None:
    b = duty_store.b
    assert isinstance(b, DutyStore)  # what the duties may ask of it, and nothing more
    for dev, kind in (("lk01", "locker"), ("lk02", "locker"), ("hh01", "handheld"), ("sc01", "scanner")):
        b.add_device("o1", dev, kind)
    row = revoked_event(1, "hh01")
    duty_store.store("o1", row)
    r = Revocations(b, MASTER)
    assert r.run_once() == 2
    duty_store.store("o1", row)  # the batch again: nothing new
    assert r.run_once() == 0
    _, commands, _ = b.pull("o1", 0, 100)
    assert sorted(json_cmd["dev"] for _, json_cmd in commands) == ["lk01", "lk02"]
    ks = KeyService("o1", MASTER)
    for kind, cmd in commands:
        ring = keys.from_config(ks.device_config(cmd["dev"]))
        ok = signing.verify(cmd, ring, cmd["dev"], int(time.time()))
        assert kind == "locker" and ok["op"] == "revoke"
        assert revocation.parse_args(ok["args"]) == [("handheld", "hh01")]
        other = "lk02" if cmd["dev"] == "lk01" else "lk01"
        try:
            signing.verify(cmd, keys.from_config(ks.device_config(other)), other, int(time.time()))
        except Exception:  # noqa: BLE001 - any refusal: the command is bound to its locker
            pass
        else:
            raise AssertionError("a locker accepted another locker's revoke")
    assert {d["device"]: d["retired"] for d in b.devices("o1")}["hh01"] is True
    assert [(a["device"], a["lockers"]) for a in r.answered("o1")] == [("hh01", 2)]


def test_a_report_for_an_outlet_without_lockers_is_answered_with_nothing(duty_store: StoreUnderTest) -> None:
    duty_store.store("o1", revoked_event(1, "hh07"))
    r = Revocations(duty_store.b, MASTER)
    assert r.run_once() == 0
    assert [(a["device"], a["lockers"]) for a in r.answered("o1")] == [("hh07", 0)]
    assert Revocations(duty_store.b, MASTER).run_once() == 0  # restarted: answered already


def test_a_report_with_a_rotated_locker_is_signed_with_its_new_key(duty_store: StoreUnderTest) -> None:
    b = duty_store.b
    b.add_device("o1", "lk01", "locker")
    b.add_device("o1", "hh01", "handheld")
    assert b.rotate_device("o1", "lk01", 0) == 2
    duty_store.store("o1", revoked_event(1, "hh01"))
    assert Revocations(b, MASTER).run_once() == 1
    [(_, cmd)] = b.pull("o1", 0, 10)[1]
    now = int(time.time())
    assert signing.verify(cmd, keys.from_config(KeyService("o1", MASTER).device_config("lk01", kv=2)),
                          "lk01", now)["op"] == "revoke"


def test_a_revoke_carries_the_outlets_device_time(duty_store: StoreUnderTest) -> None:
    """An outlet whose devices run a day behind the platform (the simulator's
    virtual outlets): the revoke is signed on their clock, valid when its
    locker checks it."""
    b = duty_store.b
    b.add_device("o1", "lk01", "locker")
    b.add_device("o1", "hh01", "handheld")
    duty_store.store("o1", revoked_event(1, "hh01"))
    behind = time.time() - 86400
    assert Revocations(b, MASTER, device_clock=lambda outlet: behind).run_once() == 1
    (cmd,) = [c for k, c in b.pull("o1", 0, 10)[1] if k == "locker"]
    assert cmd["iat"] == int(behind)
