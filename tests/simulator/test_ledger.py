"""The delivery ledger and domain rules: green on clean traces (including
the real locker firmware's own events), red on every kind of breakage,
including a component broken on purpose through the fault proxy."""

from __future__ import annotations

import copy
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.broker import Mosquitto
from protocol.errors import BadField
from protocol.ids import parse_event_id
from simulator.faultproxy import C2S, S2C, FaultProxy, Rule
from simulator.ledger import Ledger, check_domain, check_photos, parse_id
from tests.conftest import PASSWORDS
from tests.locker_rig import PLATFORM, Rig

INC = "0000abcd"
TOPIC = "pe/v1/o1/locker/lk01/evt"


def eid(seq: int, dev: str = "lk01", inc: str = INC) -> str:
    return f"{dev}:{inc}:{seq}"


# ---- delivery

def test_clean_trace_is_green() -> None:
    led = Ledger()
    ids = [eid(s, d) for s in range(1, 51) for d in ("lk01", "lk02")]
    for hop in led.hops:
        led.record_many(hop, ids)
    r = led.report()
    assert r["ok"] and r["events"] == 100 and r["failing_hops"] == []
    assert all(h["lost"] == h["duplicated"] == h["reordered"] == 0 for h in r["per_hop"])
    json.dumps(r)
    assert "verdict: PASS" in led.summary(r)


def test_each_kind_is_found_at_the_hop_that_caused_it() -> None:
    led = Ledger(tolerate={"broker": {"duplicated"}})
    src = [eid(s) for s in range(1, 11)]
    led.record_many("device", src)
    led.record_many("broker", src + [src[3]])  # QoS 1 redelivery: tolerated here
    led.record_many("gateway", [e for e in src if e != src[6]] + ["lk09:00000001:1", "garbage"])
    swapped = [e for e in src if e != src[6]]
    swapped[1], swapped[2] = swapped[2], swapped[1]
    led.record_many("central", swapped + [src[6]])
    r = led.report()
    by = {h["hop"]: h for h in r["per_hop"]}
    assert by["broker"]["duplicated"] == 1 and by["broker"]["extra_copies"] == 1 and by["broker"]["ok"]
    assert by["gateway"]["lost"] == 1 and by["gateway"]["examples"]["lost"] == [src[6]]
    assert by["gateway"]["unexpected"] == 2 and by["gateway"]["bad_ids"] == 1
    assert by["central"]["reordered"] == 1 and by["central"]["examples"]["reordered"] == [src[1]]
    assert by["central"]["skipped"] == 1 and by["central"]["examples"]["skipped"] == [src[6]]
    e2e = r["end_to_end"]
    assert e2e["lost"] == 0 and e2e["reordered"] == 2  # src[1] and src[6] arrived late
    assert not r["ok"] and r["failing_hops"] == ["gateway", "central"]
    text = led.summary(r)
    assert "FAIL" in text and src[6] in text


def test_order_follows_t_and_reorder_is_per_device() -> None:
    led = Ledger(["device", "gateway"])
    led.record_many("device", [eid(1), eid(2), eid(1, "lk02"), eid(2, "lk02")])
    # Devices interleave differently: that is not reordering.
    for t, e in [(3, eid(1)), (1, eid(1, "lk02")), (2, eid(2, "lk02")), (4, eid(2))]:
        led.record("gateway", e, t=t)
    assert led.report()["ok"]
    led.record("gateway", eid(1), t=0)  # a copy before everything: first copy now precedes
    assert led.seen("gateway")[0] == eid(1)
    r = led.report()["per_hop"][1]
    assert r["duplicated"] == 1 and r["reordered"] == 0


def test_source_out_of_sequence_is_reordering_at_the_source() -> None:
    led = Ledger(["device", "central"])
    led.record_many("device", [eid(2), eid(1), eid(3)])
    led.record_many("central", [eid(2), eid(1), eid(3)])
    r = led.report()
    assert r["per_hop"][0]["reordered"] == 1 and r["per_hop"][1]["reordered"] == 0
    assert r["end_to_end"]["reordered"] == 1


def test_new_incarnation_is_its_own_sequence() -> None:
    led = Ledger(["device", "central"])
    ids = [eid(5), eid(6), eid(1, inc="0000beef"), eid(2, inc="0000beef")]
    led.record_many("device", ids)
    led.record_many("central", ids)
    assert led.report()["ok"]


def test_ids_parse_exactly_as_the_protocol_does() -> None:
    for s in ["lk01:0000abcd:1", "a-b_c:ffffffff:999999999999999", "LK01:0000abcd:1", "lk01:0000ABCD:1",
              "lk01:0000abcd:01", "lk01:0000abcd:0", "lk01:0000abc:1", "lk01:0000abcd:1:2", "lk01::1",
              "lk01:0000abcd:\u0661", "x" * 33 + ":0000abcd:1", "lk01:0000abcd:1234567890123456", ""]:
        try:
            want: Any = ((lambda p: ((p[0], p[1]), p[2]))(parse_event_id(s)))
        except BadField:
            want = None
        assert parse_id(s) == want, s


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="lk01:abcdef9-_A\u0661", max_size=30))
def test_id_parser_agrees_with_protocol_on_noise(s: str) -> None:
    try:
        p = parse_event_id(s)
        want: Any = ((p[0], p[1]), p[2])
    except BadField:
        want = None
    assert parse_id(s) == want


def model(hops: list[list[str]]) -> list[dict[str, int]]:
    """The rules written the slow, obvious way."""
    out = []
    src = hops[0]
    for k, ids in enumerate(hops):
        first = []
        for e in ids:
            if e not in first:
                first.append(e)
        prev_first: list[str] = []
        for e in (hops[k - 1] if k else []):
            if e not in prev_first:
                prev_first.append(e)
        reordered = 0
        for i, e in enumerate(first):
            dev, inc, seq = parse_event_id(e)
            if k == 0:
                later = [x for x in first[:i] if parse_event_id(x)[:2] == (dev, inc)
                         and parse_event_id(x)[2] > seq]
            else:
                later = [x for x in first[:i] if x in prev_first and e in prev_first
                         and parse_event_id(x)[:2] == (dev, inc)
                         and prev_first.index(x) > prev_first.index(e)]
            reordered += bool(later)
        out.append({
            "lost": len([e for e in prev_first if e not in ids]),
            "duplicated": len([e for e in first if ids.count(e) > 1]),
            "unexpected": len([e for e in first if e not in src]),
            "skipped": len([e for e in first if k and e in src and e not in prev_first]),
            "reordered": reordered,
        })
    return out


ID = st.builds(eid, st.integers(1, 12), st.sampled_from(["lk01", "lk02"]),
               st.sampled_from([INC, "0000beef"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(ID, max_size=25), min_size=2, max_size=4))
def test_counts_match_a_model_on_random_traces(hops: list[list[str]]) -> None:
    names = [f"h{i}" for i in range(len(hops))]
    led = Ledger(names)
    for name, ids in zip(names, hops, strict=True):
        led.record_many(name, ids)
    r = led.report()
    want = model(hops)
    for got, exp in zip(r["per_hop"], want, strict=True):
        assert {k: got[k] for k in exp} == exp
    clean = all(not any(m.values()) for m in want)
    assert r["ok"] == (clean and r["end_to_end"]["ok"])


@pytest.mark.slow
def test_hundred_thousand_events_are_reported_whole() -> None:
    """Correctness at a 3-day outlet's scale (its speed is a benchmark's job:
    bench/simulator_scale.py)."""
    ids = [eid(s, f"lk{d:02d}") for s in range(1, 10_001) for d in range(10)]
    led = Ledger()
    for hop in led.hops:
        led.record_many(hop, ids)
    r = led.report()
    assert r["ok"] and r["events"] == 100_000


# ---- a component broken on purpose, seen by the ledger

def _client(port: int, name: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
    c.username_pw_set("gw-o1", PASSWORDS["gw-o1"])
    ready = threading.Event()
    c.on_connect = lambda *a: ready.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ready.wait(10)
    return c


def _run_through_proxy(broker: Mosquitto, rule: Rule, n: int) -> tuple[Ledger, FaultProxy, list[str]]:
    led = Ledger(["device", "gateway"])
    got: list[str] = []
    cond = threading.Condition()
    with FaultProxy("127.0.0.1", broker.port) as proxy:
        sub = _client(proxy.port, "gw")
        done = threading.Event()
        sub.on_subscribe = lambda *a: done.set()

        def on_message(client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
            e = json.loads(msg.payload)["id"]
            led.record("gateway", e)
            with cond:
                got.append(e)
                cond.notify_all()

        sub.on_message = on_message
        sub.subscribe(TOPIC, 0)
        assert done.wait(10)
        proxy.add_rule(rule)
        pub = _client(proxy.port, "lk01")
        ids = [eid(s) for s in range(1, n + 1)]
        for e in ids:
            led.record("device", e)
            pub.publish(TOPIC, json.dumps({"id": e}), qos=0)
        pub.publish(TOPIC, json.dumps({"id": "end"}), qos=0)  # a marker: everything before it is in
        with cond:
            assert cond.wait_for(lambda: "end" in got, 10)
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
    led._obs["gateway"] = [o for o in led._obs["gateway"] if o[1] != "end"]
    return led, proxy, ids


def test_ledger_catches_a_lossy_hop_exactly(broker: Mosquitto) -> None:
    led, proxy, ids = _run_through_proxy(
        broker, Rule("drop", direction=C2S, kinds="PUBLISH", topic=TOPIC, every=5), 30)
    r = led.report(examples=100)
    hop = r["per_hop"][1]
    assert not r["ok"] and hop["lost"] == 6
    assert hop["examples"]["lost"] == [ids[i] for i in range(4, 30, 5)]
    assert hop["duplicated"] == hop["unexpected"] == hop["reordered"] == 0
    assert proxy.counters()["drop"] == 6


def test_ledger_catches_a_duplicating_and_reordering_hop(broker: Mosquitto) -> None:
    led, proxy, ids = _run_through_proxy(
        broker, Rule("duplicate", direction=S2C, kinds="PUBLISH", topic=TOPIC, every=4), 12)
    hop = led.report(examples=100)["per_hop"][1]
    assert hop["duplicated"] == 3 and hop["lost"] == 0
    assert sorted(hop["examples"]["duplicated"]) == sorted([ids[3], ids[7], ids[11]])
    led, proxy, ids = _run_through_proxy(
        broker, Rule("reorder", direction=C2S, kinds="PUBLISH", topic=TOPIC, limit=1), 5)
    hop = led.report()["per_hop"][1]
    assert hop["reordered"] == 1 and hop["examples"]["reordered"] == [ids[0]] and hop["lost"] == 0


# ---- domain rules

def firmware_trace(tmp_path: Path) -> list[dict[str, Any]]:
    """The real locker application on CPython: deposit, pickup by code, a
    signed remote open, expiry, a return drop-off and a courier retrieval."""
    from firmware.locker import codes as C
    from firmware.locker.app import DAY

    rig = Rig(tmp_path)
    try:
        lk = rig.locker
        rig.run(_boot(lk))
        lk.courier_login(rig.provision_courier())
        a = rig.run(rig.with_person(lk.deposit("RB123456785GB", "M")))
        rig.run(rig.with_person(lk.deposit("CP000000270CN", "S")))
        code = next(PLATFORM.open_code(e) for e in rig.events("locker.deposit")
                    if e["body"]["parcel"] == "RB123456785GB")
        lk.courier_logout()
        assert rig.run(rig.with_person(lk.pickup(code))) == a

        async def remote() -> None:
            assert await lk.handle_command(rig.command("open", {"compartment": 9}, "open-1")) == "ok"
            await rig.close_when_open(9)
            while lk.active or lk.journal.read():
                await _sleep()

        rig.run(remote())
        rig.hal.clock.offset += lk.cfg["pickup_days"] * DAY + 1
        lk.check_expiry()
        salt = "0f0e0d0c0b0a0908"
        ret = rig.command("provision_return", {"parcel": "RR000000000CN", "salt": salt, "size": "L",
                                               "hash": C.salted_hash(salt, "246810"),
                                               "exp": lk.now() + DAY}, "ret-1")
        assert rig.run(lk.handle_command(ret)) == "ok"
        rig.run(rig.with_person(lk.pickup("246810")))
        lk.courier_login(rig.provision_courier())
        assert len(rig.run(rig.with_person(lk.retrieve_all()))) == 2
        return rig.records()
    finally:
        rig.close()


async def _boot(lk: Any) -> None:
    lk.emit("locker.boot", "status", {"boot": lk.seq.boot, "compartments": 24, "hal": "test"})


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return firmware_trace(tmp_path_factory.mktemp("locker"))


def test_real_firmware_trace_passes_every_rule(trace: list[dict[str, Any]]) -> None:
    rep = check_domain(trace + trace[:5], complete=True)  # repeats are the ledger's business
    assert rep.ok, rep.summary()
    stats = {c.name: c.stats for c in rep.checks}
    assert stats["parcel_final_state"]["parcels"] == 3
    assert stats["parcel_final_state"]["pickup"] == 1 and stats["parcel_final_state"]["retrieve"] == 2
    # two deposits, a pickup, a remote open, a return and two retrievals
    assert stats["door_needs_authority"]["door_opens"] == 7
    json.dumps(rep.as_dict())
    assert "verdict: PASS" in rep.summary()


def _types(trace: list[dict[str, Any]], t: str, **body: Any) -> list[int]:
    return [i for i, e in enumerate(trace) if e["type"] == t
            and all(e["body"].get(k) == v for k, v in body.items())]


def _insert(trace: list[dict[str, Any]], at: int, ev: dict[str, Any]) -> list[dict[str, Any]]:
    """Insert ev at position `at`, renumbering the sequence so order holds."""
    out = copy.deepcopy(trace[:at]) + [copy.deepcopy(ev)] + copy.deepcopy(trace[at:])
    dev, inc, _ = parse_event_id(trace[0]["id"])
    for n, e in enumerate(out, start=1):
        e["id"] = f"{dev}:{inc}:{n}"
    return out


def _violations(events: list[dict[str, Any]], **kw: Any) -> Counter[str]:
    rep = check_domain(events, **kw)
    return Counter(v["kind"] for c in rep.checks for v in c.violations)


def test_door_opened_without_code_or_command_is_caught(trace: list[dict[str, Any]]) -> None:
    ok_pickups = [i for i, e in enumerate(trace) if e["type"] == "locker.audit"
                  and e["body"].get("what") == "pickup_attempt" and e["body"].get("result") == "ok"]
    no_code = [e for i, e in enumerate(trace) if i != ok_pickups[0]]
    assert _violations(no_code)["opened_without_code"] == 1
    cmd = [i for i, e in enumerate(trace) if e["type"] == "locker.audit"
           and e["body"].get("what") == "command" and e["body"].get("op") == "open"]
    no_cmd = [e for i, e in enumerate(trace) if i != cmd[0]]
    v = _violations(no_cmd)
    assert v["opened_without_command"] == 1 and v["remote_open_of_unknown_command"] == 1
    logout = next(i for i, e in enumerate(trace) if e["type"] == "locker.audit"
                  and e["body"].get("what") == "courier_logout")
    door = next(e for e in trace if e["type"] == "locker.door" and e["body"]["action"] == "deposit")
    assert _violations(_insert(trace, logout + 1, door))["opened_without_courier"] == 1


def test_two_parcels_and_final_states_are_caught(trace: list[dict[str, Any]]) -> None:
    dep = trace[_types(trace, "locker.deposit")[0]]
    other = copy.deepcopy(dep)
    other["body"]["parcel"] = "EE000000000CN"
    v = _violations(_insert(trace, _types(trace, "locker.deposit")[0] + 1, other))
    assert v["two_parcels"] == 1
    pick = trace[_types(trace, "locker.pickup")[0]]
    v = _violations(_insert(trace, len(trace), pick))
    assert v["final_without_custody"] == 1
    no_retrieve = [e for e in trace if e["type"] != "locker.retrieve"]
    assert _violations(no_retrieve, complete=True)["no_final_state"] == 2
    assert _violations(no_retrieve)["no_final_state"] == 0  # a scenario that stopped mid-way
    v = _violations(_insert(trace, _types(trace, "locker.deposit")[0] + 1, dep))
    assert v["entered_twice"] == 1


def test_inconsistent_door_states_are_caught(trace: list[dict[str, Any]]) -> None:
    i = _types(trace, "locker.door", action="pickup")[0]
    v = _violations(_insert(trace, i + 1, trace[i]))
    assert v["opened_twice"] == 1
    gone = [e for e in trace if not (e["type"] == "locker.door" and e["body"]["action"] == "pickup")]
    assert _violations(gone)["outcome_without_open"] == 1
    wrong = copy.deepcopy(trace)
    wrong[i]["body"]["action"] = "retrieve"
    assert _violations(wrong)["outcome_does_not_fit"] == 1
    alarm = {"v": 1, "id": "x", "ts": 0, "type": "locker.alarm", "cls": "alarm",
             "body": {"alarm": "door_left_open", "compartment": 20}}
    assert _violations(_insert(trace, len(trace), alarm))["left_open_alarm_for_closed_door"] == 1
    never = _insert(trace, len(trace), trace[i])
    assert _violations(never, complete=True)["never_closed"] == 1


def test_photos_arrive_exactly_once() -> None:
    def photo(seq: int, sha: str) -> dict[str, Any]:
        return {"v": 1, "id": eid(seq, "hh01"), "ts": 0, "type": "handheld.photo", "cls": "custody",
                "body": {"sha256": sha, "job": "b1"}}

    sent = [photo(1, "a" * 64), photo(2, "b" * 64), photo(3, "c" * 64)]
    assert check_photos(sent + [sent[0]], sent).ok  # the same event twice is a delivery matter
    chk = check_photos([sent[0], photo(9, "a" * 64), sent[1], photo(4, "d" * 64)], sent)
    assert Counter(v["kind"] for v in chk.violations) == {"photo_duplicated": 1, "photo_lost": 1,
                                                          "photo_unexpected": 1}
    assert not check_domain([sent[0], photo(9, "a" * 64)]).ok


def test_power_cut_recovery_may_close_a_cycle_without_a_door_event() -> None:
    def ev(seq: int, t: str, **body: Any) -> dict[str, Any]:
        return {"v": 1, "id": eid(seq), "ts": 0, "type": t, "cls": "custody", "body": body}

    boot = ev(1, "locker.boot", boot=2)
    outcome = ev(2, "locker.inspect_needed", compartment=4, parcel="RB123456785GB", reason="power_cut")
    audit = ev(3, "locker.audit", what="recovery", outcome="inspect")
    assert check_domain([boot, outcome, audit]).by_name("door_states_consistent").ok
    assert not check_domain([outcome]).by_name("door_states_consistent").ok  # no boot: no excuse
    assert not check_domain([boot, outcome], complete=True).by_name("door_states_consistent").ok
