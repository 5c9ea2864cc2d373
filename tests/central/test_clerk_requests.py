"""The platform decides a clerk's request (central/clerk_requests.py) and
the real locker application runs what it signed: a supervisor's request for
a registered locker becomes one command matched by ``args.request``;
anything else is refused with a reason and nothing is signed. On both
backends (``duty_store``: SQLite, and PostgreSQL behind the real NATS
cluster and an ingest worker)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from central.clerk_requests import OPEN_BUDGET, ClerkRequests
from central.duties import Duties, SecurityDuties
from common.uplink_codec import DOWN_CLERK_DECISION, read_clerk_refusal
from firmware.locker import compartments as K
from protocol import canonical, envelope
from protocol.ids import format_event_id
from simulator.platform_keys import MASTER
from tests.central.conftest import StoreUnderTest
from tests.locker_rig import Rig

SEQ = iter(range(1, 10_000))


def request(kind: str, compartment: Any = 3, role: str = "supervisor", device: str = "lk01",
            note: str = "door sticks") -> tuple[str, bytes]:
    eid = format_event_id("gw-o1-clerk", "0000beef", next(SEQ))
    body = {"request": kind, "device": device, "compartment": compartment, "by": "wang", "role": role,
            "note": note}
    return eid, envelope.encode(envelope.make(eid, int(time.time()), "gateway.clerk_request", "audit", body,
                                              boot=1))


@pytest.fixture
def central(duty_store: StoreUnderTest) -> StoreUnderTest:
    b = duty_store.b
    b.add_device("o1", "lk01", "locker")
    b.add_device("o1", "hh01", "handheld")
    b.add_device("o1", "lk09", "locker")
    b.retire_device("o1", "lk09")
    return duty_store


def commands(b: Any, outlet: str = "o1") -> list[dict[str, Any]]:
    """The signed commands for the outlet's lockers."""
    return [cmd for kind, cmd in b.pull(outlet, 0, 100)[1] if kind == "locker"]


def refusals(b: Any, outlet: str = "o1") -> dict[str, str]:
    """The refusals sent down to the outlet's console: request -> reason."""
    out = {}
    for kind, cmd in b.pull(outlet, 0, 100)[1]:
        if kind == DOWN_CLERK_DECISION:
            req, reason = read_clerk_refusal(canonical.dumps(cmd))
            out[req] = reason
    return out


def test_a_supervisors_request_is_signed_once_and_the_locker_runs_it(central: StoreUnderTest,
                                                                     tmp_path: Path) -> None:
    [oos, back] = central.store("o1", request("out_of_service"), request("in_service"))
    cr = ClerkRequests(central.b, MASTER)
    assert cr.run_once() == 2
    # a new one: decided on the next pass, the old ones not again
    central.store("o1", request("out_of_service"))
    assert cr.run_once() == 1 and cr.run_once() == 0
    cmds = commands(central.b)
    assert [(c["op"], c["args"]["state"], c["args"]["request"]) for c in cmds[:2]] == [
        ("service", "out_of_service", oos), ("service", "in_service", back)]
    (tmp_path / "locker").mkdir()
    rig = Rig(tmp_path / "locker")
    try:
        run = [rig.run(rig.locker.handle_command(json.dumps(c).encode())) for c in cmds[:1]]
        assert run == ["ok"] and rig.locker.comps.get(3)["state"] == K.OUT_OF_SERVICE
        assert rig.run(rig.locker.handle_command(json.dumps(cmds[1]).encode())) == "ok"
        assert rig.locker.comps.get(3)["state"] == K.FREE
        # the same command again (the relay resends after a lost ack): run at most once
        assert rig.run(rig.locker.handle_command(json.dumps(cmds[0]).encode())) == "replayed"
    finally:
        rig.close()
    assert [d["verdict"] for d in cr.decisions("o1")] == ["signed"] * 3


def test_requests_the_platform_refuses(central: StoreUnderTest) -> None:
    cases = {
        "not_supervisor": request("open", role="clerk"),
        "unknown_locker": request("out_of_service", device="lk77"),
        "malformed": request("explode"),
    }
    cases["retired"] = request("out_of_service", device="lk09")
    cases["handheld"] = request("open", device="hh01")
    cases["no_note"] = request("open", note="  ")
    cases["bool_compartment"] = request("open", compartment=True)
    cases["huge_compartment"] = request("open", compartment=10**9)
    ids = central.store("o1", *cases.values())
    cr = ClerkRequests(central.b, MASTER)
    assert cr.run_once() == 0 and commands(central.b) == []
    got = {d["event"]: d["reason"] for d in cr.decisions("o1")}
    want = dict(zip(ids, ["not_supervisor", "unknown_locker", "malformed", "unknown_locker", "unknown_locker",
                          "no_note", "malformed", "malformed"], strict=True))
    assert got == want
    assert {d["verdict"] for d in cr.decisions("o1")} == {"refused"}
    # each refusal goes down to the outlet once, so its console stops saying "waiting for the platform"
    assert refusals(central.b) == want
    assert cr.run_once() == 0 and len(central.b.pull("o1", 0, 100)[1]) == len(want)


def test_a_burst_of_remote_opens_is_cut_at_the_budget(central: StoreUnderTest) -> None:
    central.store("o1", *(request("open", compartment=1 + i % 20) for i in range(OPEN_BUDGET + 3)))
    cr = ClerkRequests(central.b, MASTER)
    assert cr.run_once() == OPEN_BUDGET
    reasons = [d["reason"] for d in cr.decisions("o1")]
    assert reasons.count("ok") == OPEN_BUDGET and reasons.count("too_many_opens") == 3
    assert sorted(refusals(central.b).values()) == ["too_many_opens"] * 3
    assert all(c["op"] == "open" and c["args"]["request"] for c in commands(central.b))
    # the budget is the outlet's: another outlet's opens are not counted against it
    central.b.add_device("o2", "lk01", "locker")
    central.store("o2", request("open"))
    assert cr.run_once() == 1 and [c["op"] for c in commands(central.b, "o2")] == ["open"]
    # an hour on: the budget is back
    later = ClerkRequests(central.b, MASTER, clock=lambda: time.time() + 3601)
    central.store("o1", request("open"))
    assert later.run_once() == 1


def test_the_duties_keep_going_when_one_step_fails(central: StoreUnderTest) -> None:
    central.store("o1", request("out_of_service"))
    d = Duties(central.b, MASTER) if central.name == "embedded" else SecurityDuties(central.b, MASTER)

    def broken() -> int:
        raise RuntimeError("disk on fire")

    d.revocations.run_once = broken  # type: ignore[method-assign]
    assert d.run_once()
    assert d.failures == 1 and [c["op"] for c in commands(central.b)] == ["service"]
