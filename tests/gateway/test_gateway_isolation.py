"""One message, one storage fault or one lost broker session never stops the
gateway or costs another device's events (issue: hostile devices, findings 1,
5 and 8, and end-to-end confirmation).

Every test runs the real gateway process against a real Mosquitto and a real
SQLite file; the device side is paho or the firmware on the MicroPython unix
port."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.broker import Account, Mosquitto
from gateway.ingest.relay import CommandConflict, store_command
from gateway.store.events import EventStore
from protocol import envelope, topics
from protocol.canonical import dumps
from protocol.errors import ProtocolError
from simulator.gateway_process import GatewayProcess, write_config
from simulator.outlet import stored_events
from tests.confirm_rig import assert_each_once, drained, publishers, wipe_gateway_session
from tests.waiting import within


@pytest.fixture
def accounts(accounts: list[Account]) -> list[Account]:
    """The shared logins plus a third locker, for three publishing devices."""
    return [*accounts, Account("lk03", "lk03-pw", "o1", "locker")]


def raw_event(dev: str, seq: int, kind_type: str = "locker.door", cls: str = "custody",
              **over: object) -> bytes:
    """An envelope encoded with plain json, so out-of-range values can be sent."""
    env = envelope.make(f"{dev}:0badc0de:{seq}", 1795881163, kind_type, cls, {"door": 1})
    env.update(over)
    return json.dumps(env, separators=(",", ":")).encode()


def count_stored(db: Path) -> tuple[int, int]:
    s = EventStore(db)
    try:
        return s.count(), len(s.rejected())
    finally:
        s.close()


# ---- finding 1: no single message stops the gateway

POISON = [
    # (who, channel, payload, refusal code)
    ("lk01", "evt", raw_event("lk01", 1, ts=10**20), "bad_field"),
    ("lk01", "evt", raw_event("lk01", 2, body={"door": 2**64}), "bad_field"),
    ("lk01", "evt", raw_event("lk01", 3, boot=-(2**70)), "bad_field"),
    ("lk01", "ack", b'{"id":[1]}', "bad_field"),
    ("lk01", "ack", b'{"id":{"a":1},"ok":true}', "bad_field"),
    ("lk01", "ack", b'{"id":"c1","code":7,"ok":"yes"}', "bad_field"),
    ("lk01", "ack", b'{"id":"c1","ts":100000000000000000000}', "bad_field"),
    ("lk01", "state", b'{"v":1,"ts":100000000000000000000}', "bad_field"),
    ("lk01", "state", b'[1,2]', "malformed"),
    ("lk01", "presence", b"\xff\xfe", "bad_field"),
    ("lk01", "presence", b"", "bad_field"),
]


def forward_event(dev: str, seq: int, cmd: object, kind: object = "locker") -> bytes:
    env = envelope.make(f"{dev}:0badc0de:{seq}", 1795881163, "handheld.forward_command", "custody",
                        {"kind": kind, "cmd": cmd})
    return json.dumps(env, separators=(",", ":")).encode()


def test_no_message_stops_the_gateway_and_others_are_stored(tmp_path: Path, broker: Mosquitto,
                                                            connect) -> None:
    """Each poison message is refused with a reason and acked; the gateway
    stays up, and the good events sent around them (from another device)
    are stored exactly once."""
    gw = GatewayProcess(write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret"))
    gw.wait_for("gateway_started")
    lk01, lk02, hh01 = connect("lk01"), connect("lk02"), connect("hh01")
    good = topics.build("o1", "locker", "lk02", "evt")
    hh = topics.build("o1", "handheld", "hh01", "evt")
    forwards = [
        forward_event("hh01", 1, {"id": "f1", "dev": "lk01", "op": "open", "exp": 2**64}),
        forward_event("hh01", 2, {"id": ["x"], "dev": "lk01", "op": "open", "exp": 1}),
        forward_event("hh01", 3, {"id": "f3", "dev": "lk01", "op": "open", "exp": 1}, kind=[1]),
    ]
    try:
        seq = 0
        for who, channel, payload, _ in POISON:
            seq += 1
            lk02.client.publish(good, raw_event("lk02", seq), qos=1).wait_for_publish(5)
            lk01.client.publish(topics.build("o1", "locker", who, channel), payload,
                                qos=1).wait_for_publish(5)
        for payload in forwards:
            seq += 1
            lk02.client.publish(good, raw_event("lk02", seq), qos=1).wait_for_publish(5)
            hh01.client.publish(hh, payload, qos=1).wait_for_publish(5)
        seq += 1
        lk02.client.publish(good, raw_event("lk02", seq), qos=1).wait_for_publish(5)
        # The 2**64 forward is refused whole (the envelope bounds integers);
        # the other two events are kept and only their commands are refused.
        want_events = seq + len(forwards) - 1
        assert within(lambda: count_stored(tmp_path / "gateway.db") >= (want_events, len(POISON) + 1)), \
            count_stored(tmp_path / "gateway.db")
        assert gw.proc.poll() is None, "the gateway exited"
    finally:
        last = gw.stop()
    got = stored_events(tmp_path / "gateway.db")
    ids = [e["id"] for e in got]
    assert len(ids) == len(set(ids))
    assert {f"lk02:0badc0de:{i}" for i in range(1, seq + 1)} <= set(ids)
    assert not any(i.startswith("lk01:") for i in ids)
    s = EventStore(tmp_path / "gateway.db")
    codes = [r["code"] for r in s.rejected()]
    assert s.db.execute("SELECT count(*) FROM commands").fetchone() == (0,)
    s.close()
    assert sorted(codes) == sorted([*(c for *_, c in POISON), "bad_field"])
    assert last["forward_refused"] == len(forwards) - 1
    assert last.get("rejected_bad_field", 0) == sum(c == "bad_field" for *_, c in POISON) + 1
    assert not [d for d in gw.lines if d.get("evt") == "store_failed"]


def test_a_stream_of_refusals_raises_one_alarm(tmp_path: Path, broker: Mosquitto, connect) -> None:
    gw = GatewayProcess(write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret"))
    gw.wait_for("gateway_started")
    lk01 = connect("lk01")
    evt = topics.build("o1", "locker", "lk01", "evt")
    try:
        for i in range(45):
            lk01.client.publish(evt, b"junk %d" % i, qos=1).wait_for_publish(5)
        assert within(lambda: count_stored(tmp_path / "gateway.db")[1] >= 45)
    finally:
        gw.stop()
    s = EventStore(tmp_path / "gateway.db")
    alarms = s.recent("alarm")
    s.close()
    assert [a["type"] for a in alarms] == ["gateway.device_misbehaving"]
    assert alarms[0]["body"]["device"] == "lk01"
    assert alarms[0]["body"]["codes"] == {"malformed": 20}


# ---- finding 5: a damaged database is moved aside, with an alarm

def test_damaged_database_is_moved_aside_and_the_gateway_serves(tmp_path: Path, broker: Mosquitto,
                                                               connect) -> None:
    db = tmp_path / "gateway.db"
    s = EventStore(db)
    s.commit_events([])
    s.db.execute("CREATE TABLE filler(x BLOB)")
    for _ in range(200):
        s.db.execute("INSERT INTO filler VALUES (randomblob(2000))")
    s.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    data = bytearray(db.read_bytes())
    page = 4096
    for p in range(3, len(data) // page - 1, 7):  # damage b-tree pages, keep the header
        data[p * page:p * page + 64] = b"\xa5" * 64
    db.write_bytes(bytes(data))
    gw = GatewayProcess(write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret"))
    try:
        gw.wait_for("gateway_started")
        moved = gw.wait_for("store_damaged")
        lk01 = connect("lk01")
        lk01.client.publish(topics.build("o1", "locker", "lk01", "evt"), raw_event("lk01", 1),
                            qos=1).wait_for_publish(5)
        assert within(lambda: count_stored(db)[0] >= 2)
    finally:
        gw.stop()
    assert Path(moved["moved_to"]).exists()
    s = EventStore(db)
    alarms = s.recent("alarm")
    assert s.db.execute("PRAGMA quick_check").fetchone() == ("ok",)
    s.close()
    assert [a["type"] for a in alarms] == ["gateway.store_damaged"]


# ---- finding 8: command ids

def _permit(cid: str, **args: object) -> bytes:
    return dumps({"v": 1, "id": cid, "dev": "lk01", "op": "deposit", "kv": 1, "sig": "0" * 64,
                  "iat": 1999999000, "exp": 2000000000,
                  "args": {"parcel": "RB123456785GB", "courier": "c007", "handheld": "hh01", **args}})


def test_forwarded_ids_cannot_shadow_platform_commands(tmp_path: Path) -> None:
    s = EventStore(tmp_path / "gateway.db")
    junk = _permit("c-77", junk=1)
    real = dumps({"id": "c-77", "dev": "lk01", "op": "open", "exp": 2000000000, "args": {"door": 3}})
    other = dumps({"id": "c-77", "dev": "lk01", "op": "open", "exp": 2000000000, "args": {"door": 4}})
    with s.tx():
        assert store_command(s, "o1", "locker", junk, via="hh01") == "c-77"
    with s.tx():
        assert store_command(s, "o1", "locker", real) == "c-77"  # its own namespace: queued
        assert store_command(s, "o1", "locker", real) == "c-77"  # the same again: idempotent
    with pytest.raises(CommandConflict), s.tx():
        store_command(s, "o1", "locker", other)
    with pytest.raises(CommandConflict), s.tx():
        store_command(s, "o1", "locker", _permit("c-77", junk=2), via="hh01")
    rows = s.db.execute("SELECT ns, id, payload FROM commands ORDER BY ns").fetchall()
    s.close()
    assert rows == [("", "c-77", real), ("fwd:hh01", "c-77", junk)]


def test_handhelds_forward_only_permits_issued_to_them(tmp_path: Path) -> None:
    """A handheld's forward carries a permit (deposit or retrieve at
    one locker, for this handheld, short-lived), never a platform command."""
    s = EventStore(tmp_path / "gateway.db")
    refused = []
    for op in ("open", "config", "credential", "provision_code", "reserve"):
        refused.append(dumps({"v": 1, "id": f"x-{op}", "dev": "lk01", "op": op, "kv": 1, "sig": "0" * 64,
                              "iat": 1999999000, "exp": 2000000000, "args": {"compartment": 1}}))
    other_hh = dumps({**json.loads(_permit("x-hh02")), "args": {"parcel": "RB123456785GB",
                                                                 "courier": "c007", "handheld": "hh02"}})
    long_lived = dumps({**json.loads(_permit("x-long")), "iat": 1900000000})
    for payload in [*refused, other_hh, long_lived]:
        with pytest.raises(ProtocolError) as e, s.tx():
            store_command(s, "o1", "locker", payload, via="hh01")
        assert e.value.code == "not_a_permit", payload
    with pytest.raises(ProtocolError), s.tx():
        store_command(s, "o1", "scanner", _permit("x-scanner"), via="hh01")
    with s.tx():
        assert store_command(s, "o1", "locker", _permit("ok-1"), via="hh01") == "ok-1"
        # the platform's own commands (via the downlink) are not permits and need not be
        assert store_command(s, "o1", "locker", refused[0]) == "x-open"
    s.close()


# ---- end-to-end confirmation: a broker ack is not storage

@pytest.mark.e2e
@pytest.mark.mpy
def test_a_wiped_gateway_session_loses_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    """While the gateway is away, its persistent session (holding what the
    devices sent) is wiped by a clean-session login under its client id, as
    a takeover or a broker that lost its state does. The devices' outbox
    keeps every event until the gateway confirms it, so nothing is lost."""
    gw = GatewayProcess(write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret"))
    gw.wait_for("gateway_started")
    devices, n = ["lk01", "lk02"], 300
    procs = publishers(tmp_path, broker.port, devices, n, spacing_ms=5)
    try:
        time.sleep(0.5)
        gw.kill()  # away; the broker now queues for its session
        time.sleep(1.0)
        wipe_gateway_session(broker.port)
        gw = GatewayProcess(tmp_path / "gateway.toml")
        gw.wait_for("gateway_started")
        results = drained(procs, 90)
        assert all(r.get("evt") == "drained" for r in results), results
        assert sum(r["resends"] for r in results) >= 1  # the devices really had to send again
    finally:
        for p in procs:
            p.kill()
            p.wait()
        gw.stop()
    assert_each_once(tmp_path / "gateway.db", devices, n)


@pytest.mark.e2e
@pytest.mark.mpy
@pytest.mark.slow
def test_twenty_broker_sigkills_then_a_takeover_lose_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    """Three devices publish while Mosquitto is SIGKILLed 20 times (whatever
    it had not saved is gone) and then the gateway's session is taken over:
    every event reaches the gateway's store exactly once."""
    gw = GatewayProcess(write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret"))
    gw.wait_for("gateway_started")
    devices, n = ["lk01", "lk02", "lk03"], 400
    procs = publishers(tmp_path, broker.port, devices, n, spacing_ms=8)
    rng = random.Random(20261203)
    try:
        for _ in range(20):
            time.sleep(rng.uniform(0.05, 0.3))
            broker.kill()
            time.sleep(rng.uniform(0.0, 0.15))
            broker.start()
        wipe_gateway_session(broker.port)
        results = drained(procs, 120)
        assert all(r.get("evt") == "drained" for r in results), results
    finally:
        for p in procs:
            p.kill()
            p.wait()
        gw.stop()
    assert_each_once(tmp_path / "gateway.db", devices, n)


def test_ranges_in_a_confirmation_are_exact() -> None:
    from protocol.confirm import contains, event_key, ranges, stored_ranges

    assert ranges([5, 1, 2, 3, 9, 10, 3]) == [[1, 3], [5, 5], [9, 10]]
    r = ranges([1, 2, 3, 5, 9, 10])
    assert [s for s in range(12) if contains(r, s)] == [1, 2, 3, 5, 9, 10]
    assert stored_ranges({"ab": [[1, 2], [3], ["4", 5], [True, 6], [7, 8]]}, "ab") == [[1, 2], [7, 8]]
    assert stored_ranges([1], "ab") == [] and stored_ranges({"ab": 5}, "ab") == []
    env = envelope.encode(envelope.make("lk01:3fa2c0de:17", 1, "locker.audit", "audit",
                                        {"id": "lk09:00000000:5", "cmd": {"id": "x:y:1"}}))
    assert event_key(env) == ("3fa2c0de", 17)


def test_sqlite_integer_bound_matches_the_protocol(tmp_path: Path) -> None:
    """What the protocol lets through, SQLite stores; what it refuses would
    have overflowed the binding."""
    from protocol.canonical import MAX_INT

    db = sqlite3.connect(str(tmp_path / "x.db"))
    db.execute("CREATE TABLE t(v INTEGER)")
    db.execute("INSERT INTO t VALUES (?)", (MAX_INT,))
    with pytest.raises(OverflowError):
        db.execute("INSERT INTO t VALUES (?)", (10**20,))


def test_provision_writes_each_device_only_its_own_key(tmp_path: Path) -> None:
    """The platform derives the keys; provisioning hands each device
    its own and the gateway none, and refuses a key file with anything else."""
    from gateway.provision import ProvisionError, provision
    from simulator.platform_keys import PlatformKeys

    inv = tmp_path / "outlet.toml"
    inv.write_text('outlet = "o9"\n[[devices]]\nid = "lk01"\nkind = "locker"\n'
                   '[[devices]]\nid = "hh01"\nkind = "handheld"\n', encoding="utf-8")
    plat = PlatformKeys("o9")
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(plat.issue(["lk01", "hh01"])))
    out = tmp_path / "etc"
    assert provision(inv, out, port=18830, key_file=keys)["keys"] == 2
    lk = json.loads((out / "devices" / "lk01.json").read_text())
    hh = json.loads((out / "devices" / "hh01.json").read_text())
    assert lk["key"] == {"kv": 1, "secret": plat.key("lk01").hex()}
    assert hh["key"] == {"kv": 1, "secret": plat.key("hh01").hex()}
    every = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert every.count(plat.key("lk01").hex()) == 1 and plat.master.hex() not in every
    for name in ("gateway.toml", "gateway-credentials.json"):
        text = (out / name).read_text()
        assert plat.key("lk01").hex() not in text and plat.key("hh01").hex() not in text
    keys.write_text(json.dumps({**plat.issue(["lk01", "hh01"]), "master": plat.master.hex()}))
    with pytest.raises(ProvisionError, match="not in the inventory"):
        provision(inv, out, port=18830, key_file=keys)
    keys.write_text(json.dumps(plat.issue(["lk01"])))
    with pytest.raises(ProvisionError, match="no key for hh01"):
        provision(inv, out, port=18830, key_file=keys)


def test_provision_gives_the_notifier_its_key_and_each_locker_only_its_sealing_key(tmp_path: Path) -> None:
    """The notifier key goes to the gateway's notifier alone (0600, its own
    file); each locker gets its own sealing key derived from it, the
    handheld none, and the gateway's config still loads."""
    from gateway.config import GatewayConfig
    from gateway.provision import ProvisionError, provision
    from simulator.platform_keys import PlatformKeys

    inv = tmp_path / "outlet.toml"
    inv.write_text('outlet = "o9"\n[[devices]]\nid = "lk01"\nkind = "locker"\n'
                   '[[devices]]\nid = "lk02"\nkind = "locker"\n'
                   '[[devices]]\nid = "hh01"\nkind = "handheld"\n', encoding="utf-8")
    plat = PlatformKeys("o9")
    nfile = tmp_path / "notifier.toml"
    nfile.write_text(f'[keys]\n"1" = "{plat.notifier_key().hex()}"\n', encoding="utf-8")
    out = tmp_path / "etc"
    provision(inv, out, port=18830, notifier_file=nfile)
    lk1 = json.loads((out / "devices" / "lk01.json").read_text())
    lk2 = json.loads((out / "devices" / "lk02.json").read_text())
    hh = json.loads((out / "devices" / "hh01.json").read_text())
    assert lk1["notify"] == plat.notify_config("lk01") and lk2["notify"] == plat.notify_config("lk02")
    assert "notify" not in hh
    nk = out / "notifier" / "keys.toml"
    assert nk.stat().st_mode & 0o777 == 0o600
    devices = "".join(p.read_text() for p in (out / "devices").iterdir())
    assert plat.notifier_key().hex() not in devices
    cfg = GatewayConfig.load(out / "gateway.toml")
    assert not cfg.notify.enabled and cfg.notify.key_file == str(nk)
    # A re-run without the file keeps what the lockers have.
    provision(inv, out, port=18830)
    assert json.loads((out / "devices" / "lk01.json").read_text())["notify"] == lk1["notify"]
    nfile.write_text('[keys]\n"1" = "abc"\n', encoding="utf-8")
    with pytest.raises(ProvisionError, match="notify.key_file"):
        provision(inv, out, port=18830, notifier_file=nfile)
