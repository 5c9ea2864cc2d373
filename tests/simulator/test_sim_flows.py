"""The outlet's own flows in the simulator's workload (issues 15 and 18):
an outbound day (counter acceptances with the scale and label, a charity
parcel, a locker drop-off by send code, the courier's collection), a
return dropped off and retrieved, a pickup-code guesser meeting the
lockout, and the clerk resolving the alarms in the console, each judged by
its domain check; and each check failing when its flow is broken."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest

from simulator.assembly import Outlet
from simulator.report.reading import expect_text
from simulator.results import (
    alarms_handled,
    compartments_serviced,
    expired_retrieved_once,
    guessers_locked_out,
    hand_delivered_once,
    outbound_dispatched_once,
    permit_deposits_once,
    platform_events,
    platform_open_decisions,
    remote_opens_by_request,
    returns_retrieved_once,
)
from simulator.runner import run_scenario
from simulator.scenario import parse
from simulator.workload import generate

# Hour 0 most of a day before the wall's now: the outlet's clock runs behind
# the platform's (as a default run started before 16:00 UTC does), so a
# command the platform signs on its own clock is not yet valid on the outlet's.
DAY = {
    "name": "flows", "seed": 11, "time": {"hours": 6.0, "start": int(time.time()) - 20 * 3600},
    "outlet": {"lockers": 1, "compartments": 24, "scanners": 1, "handhelds": 1},
    "workload": {"parcels": 6, "pickup_rate": 0.5, "pickup_delay_h": [0.5, 1.0],
                 "arrivals_by_hour": [1] * 24, "counter_parcels": 2, "charity_parcels": 1,
                 "send_dropoffs": 2, "outbound_h": 1.0, "forced_doors": 1, "returns": 1, "guessers": 1,
                 "remote_opens": 1, "hand_deliveries": 2, "out_of_service": 1},
}


def st_ok(res: dict[str, Any], key: str) -> bool:
    return int(res["stats"].get(key, 0)) > 0


def ev(eid: str, etype: str, body: dict[str, Any], cls: str = "custody") -> dict[str, Any]:
    return {"id": eid, "type": etype, "cls": cls, "body": body}


OUTBOUND = [
    ev("counter:aa:1", "counter.accept", {"waybill": "CP123456785CN", "service": "standard"}),
    ev("counter:aa:2", "counter.accept", {"waybill": "CP000000019CN", "service": "charity"}),
    ev("lk01:bb:1", "locker.send_dropoff", {"compartment": 3, "order": "SO1-0001"}),
    ev("lk01:bb:2", "locker.send_collected", {"compartment": 3, "order": "SO1-0001", "courier": "c001"}),
    ev("hh01:cc:1", "handheld.bag_pickup",
       {"bag": "BG000000000000", "items": ["CP123456785CN", "CP000000019CN"], "courier": "c001"}),
]


def test_outbound_check_counts_each_item_and_fails_on_every_broken_dispatch() -> None:
    ok = outbound_dispatched_once(OUTBOUND)
    assert ok["ok"], ok
    assert ok["fields"] == {"accepted": 2, "charity": 1, "dropped": 1, "collected": 3, "wrong": []}
    # collected twice: the drop-off's second send_collected (another event id)
    twice = outbound_dispatched_once([*OUTBOUND, ev("lk01:bb:3", "locker.send_collected",
                                                    {"compartment": 3, "order": "SO1-0001"})])
    assert not twice["ok"] and twice["fields"]["wrong"] == ["SO1-0001=2"]
    # never collected: the bag left one parcel behind
    short = copy.deepcopy(OUTBOUND)
    short[-1]["body"]["items"] = ["CP123456785CN"]
    missed = outbound_dispatched_once(short)
    assert not missed["ok"] and missed["fields"]["wrong"] == ["CP000000019CN=0"]
    # collected but never taken in
    ghost = outbound_dispatched_once([*OUTBOUND[:-1], ev("hh01:cc:1", "handheld.bag_pickup",
                                                         {"items": ["CP123456785CN", "CP000000019CN",
                                                                    "RB123456785CN"]})])
    assert not ghost["ok"] and ghost["fields"]["wrong"] == ["RB123456785CN=unknown"]
    # a day with no outbound item at all proves nothing
    assert not outbound_dispatched_once([])["ok"]
    for lang in ("zh", "en"):
        assert "SO1-0001=2" in expect_text(twice, lang)
    assert "寄件" in expect_text(ok, "zh") and "2 accepted at the counter" in expect_text(ok, "en")


ALARMS = [
    ev("lk01:bb:9", "locker.alarm", {"alarm": "door_forced", "compartment": 12}, cls="alarm"),
    ev("gw-o1-clerk:dd:1", "gateway.alarm_acknowledged", {"alarm_id": "lk01:bb:9"}, cls="audit"),
    ev("gw-o1-clerk:dd:2", "gateway.alarm_resolved", {"alarm_id": "lk01:bb:9", "note": "shut"}, cls="audit"),
]


def test_alarm_check_fails_on_an_alarm_nobody_resolved() -> None:
    ok = alarms_handled(ALARMS)
    assert ok["ok"] and ok["fields"] == {"raised": 1, "acknowledged": 1, "resolved": 1, "wrong": []}
    only_acked = alarms_handled(ALARMS[:2])
    assert not only_acked["ok"] and only_acked["fields"]["wrong"] == ["lk01:bb:9"]
    other = ev("lk01:bb:10", "locker.alarm", {"alarm": "door_forced"}, cls="alarm")
    second = alarms_handled([*ALARMS, other])
    assert not second["ok"] and second["fields"]["wrong"] == ["lk01:bb:10"]
    assert not alarms_handled([])["ok"]
    assert "未处理" in expect_text(second, "zh")


def test_the_workload_draws_the_outbound_day_without_moving_the_inbound_one() -> None:
    sc = parse(DAY)
    inbound_keys = ("parcels", "pickup_rate", "pickup_delay_h", "arrivals_by_hour")
    plain = parse({**DAY, "workload": {k: v for k, v in DAY["workload"].items() if k in inbound_keys}})
    acts = generate(sc)
    kinds = [a.kind for a in acts]
    for k, n in (("counter_accept", 3), ("send_book", 2), ("send_dropoff", 2), ("collect", 1),
                 ("bag_pickup", 1), ("door_forced", 1), ("clerk_alarms", 1), ("return_book", 1),
                 ("return_dropoff", 1), ("guess", 1), ("remote_open", 1),
                 ("hh_intake", 2), ("hand_delivery", 2)):
        assert kinds.count(k) == n, k
    inbound = [(a.t, a.kind, a.args) for a in acts if a.kind in ("intake", "deposit", "pickup")]
    assert inbound == [(a.t, a.kind, a.args) for a in generate(plain)]
    first_collect = min(a.t for a in acts if a.kind in ("collect", "bag_pickup"))
    taken_in = ("counter_accept", "send_dropoff", "return_dropoff")
    assert all(a.t < first_collect for a in acts if a.kind in taken_in)
    clerk = next(a.t for a in acts if a.kind == "clerk_alarms")
    assert all(a.t < clerk for a in acts if a.kind in ("door_forced", "guess", "remote_open"))
    assert generate(sc) == acts  # the same seed, the same day


RETURNS = [
    ev("lk01:bb:4", "locker.return_dropoff", {"compartment": 5, "parcel": "RR123456785CN"}),
    ev("lk01:bb:5", "locker.retrieve",
       {"compartment": 5, "parcel": "RR123456785CN", "reason": "return_waiting"}),
]


def test_returns_check_fails_on_a_return_left_behind_or_retrieved_twice() -> None:
    ok = returns_retrieved_once(RETURNS)
    assert ok["ok"] and ok["fields"] == {"returns": 1, "retrieved": 1, "wrong": []}
    assert returns_retrieved_once(RETURNS[:1])["fields"]["wrong"] == ["RR123456785CN=0"]
    twice = returns_retrieved_once([*RETURNS, dict(RETURNS[1], id="lk01:bb:6")])
    assert not twice["ok"] and twice["fields"]["wrong"] == ["RR123456785CN=2"]
    # the same parcel id retrieved from another locker is not this return's retrieval
    other = returns_retrieved_once([RETURNS[0], dict(RETURNS[1], id="lk02:ee:1")])
    assert not other["ok"] and "RR123456785CN=0" in other["fields"]["wrong"]
    assert not returns_retrieved_once([])["ok"]
    assert "退件" in expect_text(twice, "zh")


def audit_wrong(n: int) -> dict[str, Any]:
    return ev(f"lk01:bb:{20 + n}", "locker.audit", {"what": "pickup_attempt", "result": "wrong"}, cls="audit")


GUESS = [*(audit_wrong(i) for i in range(5)),
         ev("lk01:bb:30", "locker.alarm", {"alarm": "code_guessing", "failures": 3, "budget": 5},
            cls="alarm"),
         ev("lk01:bb:31", "locker.alarm", {"alarm": "lockout", "failures": 5, "seconds": 30}, cls="alarm")]


def test_guesser_check_fails_without_a_lockout_or_past_the_budget() -> None:
    ok = guessers_locked_out(GUESS, 1)
    assert ok["ok"] and ok["fields"]["lockouts"] == 1 and ok["fields"]["wrong_codes"] == 5
    assert ok["fields"]["budget"] == 5 and ok["fields"]["warnings"] == 1
    assert not guessers_locked_out(GUESS[:-1], 1)["ok"]  # never locked out
    late = [*GUESS[:-1], ev("lk01:bb:31", "locker.alarm", {"alarm": "lockout", "failures": 9}, cls="alarm")]
    bad = guessers_locked_out(late, 1)
    assert not bad["ok"] and bad["fields"]["wrong"] == ["lk01:bb:31"]
    assert not guessers_locked_out(GUESS, 2)["ok"]  # two guessers, one lockout
    assert not guessers_locked_out([], 0)["ok"]
    assert "锁定" in expect_text(ok, "zh")


REQ = "gw-o1-clerk:dd:7"
OPENS = [
    ev(REQ, "gateway.clerk_request", {"request": "open", "device": "lk01", "compartment": 24}, cls="audit"),
    ev("lk01:bb:40", "locker.audit", {"what": "command", "op": "open", "id": "open-1", "result": "ok"},
       cls="audit"),
    ev("lk01:bb:41", "locker.remote_open", {"compartment": 24, "cmd": "open-1"}),
]


def test_remote_open_check_fails_on_an_undecided_a_double_or_an_unasked_open() -> None:
    ok = remote_opens_by_request(OPENS, {REQ: "open-1"})
    assert ok["ok"] and ok["fields"] == {"requests": 1, "opened": 1, "wrong": []}
    assert remote_opens_by_request(OPENS, {})["fields"]["wrong"] == [f"{REQ}=undecided", "open-1=unrequested"]
    twice = remote_opens_by_request([*OPENS, dict(OPENS[2], id="lk01:bb:42")], {REQ: "open-1"})
    assert not twice["ok"] and twice["fields"]["wrong"] == [f"{REQ}=2"]
    elsewhere = [*OPENS[:2], ev("lk01:bb:41", "locker.remote_open", {"compartment": 3, "cmd": "open-1"})]
    assert not remote_opens_by_request(elsewhere, {REQ: "open-1"})["ok"]
    stray = remote_opens_by_request([*OPENS, ev("lk01:bb:43", "locker.remote_open", {"cmd": "x-9"})],
                                    {REQ: "open-1"})
    assert not stray["ok"] and stray["fields"]["wrong"] == ["x-9=unrequested"]
    assert not remote_opens_by_request([], {})["ok"]
    assert "远程开门" in expect_text(twice, "zh")


HAND = [
    ev("hh01:cc:5", "handheld.intake", {"parcel": "LX123456785CN", "courier": "c001"}),
    ev("hh01:cc:6", "handheld.hand_delivery", {"parcel": "LX123456785CN", "method": "name", "name": "王"}),
]


def test_service_check_fails_on_a_double_change_a_missing_one_or_a_parcel_put_in_while_out() -> None:
    def at(e: dict[str, Any], ts: int) -> dict[str, Any]:
        return dict(e, ts=ts)

    out = {"request": "out_of_service", "device": "lk01", "compartment": 7, "role": "supervisor"}
    back = dict(out, request="in_service")
    good = [ev("gw-o1-clerk:aa:1", "gateway.clerk_request", out, "audit"),
            at(ev("lk01:bb:1", "locker.service", {"compartment": 7, "state": "out_of_service", "cmd": "c1",
                                                  "request": "gw-o1-clerk:aa:1"}, "audit"), 100),
            ev("gw-o1-clerk:aa:2", "gateway.clerk_request", back, "audit"),
            at(ev("lk01:bb:2", "locker.service", {"compartment": 7, "state": "in_service", "cmd": "c2",
                                                  "request": "gw-o1-clerk:aa:2"}, "audit"), 200),
            at(ev("lk01:bb:3", "locker.deposit", {"compartment": 7, "parcel": "RB123456785GB"}), 250)]
    assert compartments_serviced(good)["ok"]
    assert not compartments_serviced([])["ok"]  # a run that asked for none proves nothing
    twice = [*good, dict(good[1], id="lk01:bb:9")]
    assert compartments_serviced(twice)["fields"]["wrong"] == ["gw-o1-clerk:aa:1=2"]
    assert not compartments_serviced(good[:3] + good[4:])["ok"]  # never put back
    into = [*good, at(ev("lk01:bb:4", "locker.send_dropoff", {"compartment": 7, "order": "SO1-1"}), 150)]
    r = compartments_serviced(into)
    assert not r["ok"] and r["fields"]["entered_while_out"] == 1
    other = [*good, at(ev("lk02:bb:4", "locker.deposit", {"compartment": 7, "parcel": "RB1"}), 150)]
    assert compartments_serviced(other)["ok"]  # the same number at another locker is another compartment


def test_hand_delivery_check_fails_twice_untaken_or_also_in_a_locker() -> None:
    ok = hand_delivered_once(HAND)
    assert ok["ok"] and ok["fields"] == {"handed": 1, "taken_in": 1, "wrong": []}
    twice = hand_delivered_once([*HAND, dict(HAND[1], id="hh01:cc:7")])
    assert not twice["ok"] and twice["fields"]["wrong"] == ["LX123456785CN=2"]
    assert hand_delivered_once(HAND[1:])["fields"]["wrong"] == ["LX123456785CN=not_taken_in"]
    both = hand_delivered_once([*HAND, ev("lk01:bb:50", "locker.deposit", {"parcel": "LX123456785CN"})])
    assert not both["ok"] and both["fields"]["wrong"] == ["LX123456785CN=also_in_locker"]
    assert not hand_delivered_once([])["ok"]
    assert "上门投递" in expect_text(both, "zh")


@pytest.mark.e2e
@pytest.mark.slow
def test_an_outbound_day_and_a_forced_door_pass_their_checks_and_break_them(tmp_path: Path) -> None:
    seen: list[Outlet] = []
    events: list[dict[str, Any]] = []

    def keep(outlet: Outlet) -> None:
        seen.append(outlet)

    decisions: dict[str, str] = {}
    res = run_scenario(parse(DAY), tmp_path / "run", on_start=keep,
                       on_end=lambda o: decisions.update(platform_open_decisions(o)))
    exp = {x["name"]: x for x in res["expectations"]}
    assert res["verdict"]["ok"], (res["verdict"], res["refused"], res["domain"])
    out = exp["outbound_dispatched_once"]
    assert out["ok"] and out["fields"]["accepted"] == 3 and out["fields"]["charity"] == 1
    assert out["fields"]["dropped"] == 2 and out["fields"]["collected"] == 5
    ret = exp["returns_retrieved_once"]
    assert ret["ok"] and ret["fields"]["returns"] == ret["fields"]["retrieved"] == 1
    gs = exp["guessers_locked_out"]
    assert gs["ok"] and gs["fields"]["lockouts"] == 1
    assert 0 < gs["fields"]["wrong_codes"] <= gs["fields"]["budget"]
    hd = exp["hand_delivered_once"]
    assert hd["ok"] and hd["fields"]["handed"] == hd["fields"]["taken_in"] == 2
    sv = exp["compartments_serviced"]  # out of service and back, each decided by the central service
    assert sv["ok"] and sv["fields"]["requests"] == sv["fields"]["applied"] == 2
    assert res["stats"]["compartment_out"] == res["stats"]["compartment_back"] == 1
    ro = exp["remote_opens_by_request"]
    assert ro["ok"] and ro["fields"]["requests"] == ro["fields"]["opened"] == 1 and st_ok(res, "remote_open")
    al = exp["alarms_handled"]
    assert al["ok"] and al["fields"]["raised"] >= 3  # the forced door; the guesser's warning and lockout
    assert al["fields"]["acknowledged"] == al["fields"]["resolved"] == al["fields"]["raised"]
    st = res["stats"]
    assert st["counter_accept"] == 3 and st["counter_accept_charity"] == 1 and st["send_dropoff"] == 2
    assert st["bag_items"] == 3 and st["collect_compartments"] >= 3 and st["door_forced"] == 1
    assert st["return_dropoff"] == 1 and st["guess"] == 1 and not st.get("guess_opened")
    assert st["outbound_dispatched_once.collected"] == 5 and st["alarms_handled.resolved"] >= 1
    assert res["refused"] == {"guess.locked_out": 1}  # what a guesser meets, counted by its reason
    # the round's manifest came from the platform (central/manifests.py) down through the
    # gateway: each hand delivery confirmed by the delivery code the platform made
    assert st["hand_delivery"] == st["hand_delivery_by_code"] == 2 and not st.get("hand_delivery_by_name")
    # The labels went to the printer, with each waybill's Code 128.
    label = (tmp_path / "run" / "label.prn").read_bytes()
    assert label.count(b'"128"') == 3
    # The door rules know the send and collect cycles (no unknown-reason opens).
    rules = {c["name"]: c for c in res["domain"]["checks"]}
    assert rules["door_needs_authority"]["ok"] and rules["door_states_consistent"]["ok"]
    # The same platform record, broken: a second collection, an alarm left open.
    events = platform_events(seen[0])
    dropped = next(e for e in events if e["type"] == "locker.send_collected")
    again = dict(dropped, id=dropped["id"] + "0")
    assert not outbound_dispatched_once([*events, again])["ok"]
    unresolved = [e for e in events if e["type"] != "gateway.alarm_resolved"]
    assert not alarms_handled(unresolved)["ok"]
    ret_ev = next(e for e in events
                  if e["type"] == "locker.retrieve" and e["body"].get("reason") == "return_waiting")
    assert not returns_retrieved_once([*events, dict(ret_ev, id=ret_ev["id"] + "0")])["ok"]
    assert not guessers_locked_out([e for e in events if e["body"].get("alarm") != "lockout"], 1)["ok"]
    opened = next(e for e in events if e["type"] == "locker.remote_open")
    handed = next(e for e in events if e["type"] == "handheld.hand_delivery")
    assert not hand_delivered_once([*events, dict(handed, id=handed["id"] + "0")])["ok"]
    assert len(decisions) == 1  # the central service signed the one request (central/clerk_requests.py)
    assert remote_opens_by_request(events, decisions)["ok"]
    assert not remote_opens_by_request([*events, dict(opened, id=opened["id"] + "0")], decisions)["ok"]


PERMIT = {"id": "permit-1", "dev": "lk01", "op": "deposit", "args": {"parcel": "EE123456785CN", "size": "S"}}
PERMITS = [
    ev("hh01:cc:8", "handheld.forward_command", {"kind": "locker", "cmd": PERMIT}),
    ev("lk01:bb:60", "locker.deposit", {"compartment": 2, "parcel": "EE123456785CN", "permit": "permit-1"}),
]


def test_permit_check_fails_on_an_unused_a_reused_or_an_unknown_permit() -> None:
    ok = permit_deposits_once(PERMITS)
    assert ok["ok"] and ok["fields"] == {"permits": 1, "deposited": 1, "wrong": []}
    assert permit_deposits_once(PERMITS[:1])["fields"]["wrong"] == ["permit-1=0"]
    twice = permit_deposits_once([*PERMITS, dict(PERMITS[1], id="lk01:bb:61")])
    assert not twice["ok"] and twice["fields"]["wrong"] == ["permit-1=2"]
    other = ev("lk02:ee:1", "locker.deposit", {"parcel": "EE123456785CN", "permit": "permit-1"})
    assert not permit_deposits_once([PERMITS[0], other])["ok"]  # the wrong locker
    assert permit_deposits_once(PERMITS[1:])["fields"]["wrong"] == ["permit-1=not_forwarded"]
    assert not permit_deposits_once([])["ok"]
    assert "许可" in expect_text(twice, "zh")
    # virtual time too: the gateway expires permits by the scenario's clock (test_sim_virtual_clock.py)
    assert parse({"name": "x", "workload": {"permit_deposits": 1}}).permit_deposits == 1


@pytest.mark.e2e
@pytest.mark.slow
def test_deposits_by_permit_forwarded_by_the_handheld(tmp_path: Path) -> None:
    """Real time (an hour a second); virtual mode is
    tests/simulator/test_sim_virtual_clock.py."""
    sc = parse({"name": "permits", "seed": 3, "time": {"hours": 2.0, "mode": "real", "speed": 3600.0},
                "outlet": {"lockers": 1, "compartments": 24, "scanners": 1, "handhelds": 1},
                "workload": {"parcels": 2, "arrivals_by_hour": [1] * 24, "permit_deposits": 2,
                             "outbound_h": 0.25}})
    res = run_scenario(sc, tmp_path / "run")
    assert res["verdict"]["ok"], res["verdict"]
    [chk] = [x for x in res["expectations"] if x["name"] == "permit_deposits_once"]
    assert chk["ok"] and chk["fields"]["permits"] == chk["fields"]["deposited"] == 2
    assert res["stats"]["permit_deposit"] == 2 and res["refused"] == {}
    rules = {c["name"]: c for c in res["domain"]["checks"]}
    assert rules["door_needs_authority"]["ok"]  # the permit is the door's authority


EXPIRED = [
    ev("lk01:bb:70", "locker.overdue", {"compartment": 4, "parcel": "RB000000019CN"}),
    ev("lk01:bb:71", "locker.retrieve", {"compartment": 4, "parcel": "RB000000019CN", "reason": "overdue"}),
    ev("lk01:bb:72", "locker.overdue", {"compartment": 6, "parcel": "RB000000027CN"}),
    ev("lk01:bb:73", "locker.pickup", {"compartment": 6, "parcel": "RB000000027CN"}),
]


def test_expiry_check_fails_on_a_double_retrieval_or_an_unexpired_one() -> None:
    ok = expired_retrieved_once(EXPIRED)
    assert ok["ok"] and ok["fields"] == {"expired": 2, "retrieved": 1, "picked_late": 1, "still_inside": 0,
                                         "wrong": []}
    twice = expired_retrieved_once([*EXPIRED, dict(EXPIRED[1], id="lk01:bb:74")])
    assert not twice["ok"] and twice["fields"]["wrong"] == ["RB000000019CN=2"]
    early = expired_retrieved_once(EXPIRED[1:])
    assert not early["ok"] and early["fields"]["wrong"] == ["RB000000019CN=not_expired"]
    both = expired_retrieved_once([*EXPIRED, ev("lk01:bb:75", "locker.pickup", {"parcel": "RB000000019CN"})])
    assert not both["ok"] and both["fields"]["wrong"] == ["RB000000019CN=also_picked_up"]
    assert not expired_retrieved_once(EXPIRED[2:])["ok"]  # expired, but the courier never came
    assert "逾期" in expect_text(both, "zh")


def test_a_short_pickup_window_schedules_the_platforms_setting_and_daily_collections() -> None:
    sc = parse({"name": "x", "time": {"hours": 72.0}, "outlet": {"lockers": 2},
                "workload": {"parcels": 4, "pickup_days": 1, "outbound_h": 13.0}})
    acts = generate(sc)
    assert [(a.t, a.device) for a in acts if a.kind == "set_pickup_days"] == [(0.0, "lk01"), (0.0, "lk02")]
    collects = sorted((a.t / 3600, a.device) for a in acts if a.kind == "collect")
    assert collects == [(h, d) for h in (15.0, 39.0, 63.0) for d in ("lk01", "lk02")]
