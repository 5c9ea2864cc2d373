"""The simulator: scenario files, reproducible runs, every shipped
scenario green, and the checks biting when a component breaks delivery on
purpose. Real Mosquitto, the real gateway process, the real central service over
HTTPS, the real locker and counter firmware in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from simulator.runner import run_scenario
from simulator.scenario import ScenarioError, load, parse

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.toml"))


def small(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "small", "seed": 5, "time": {"hours": 12.0},
                           "outlet": {"lockers": 2, "scanners": 1}, "workload": {"parcels": 16}}
    for k, v in kw.items():
        doc[k] = v
    return doc


@pytest.mark.parametrize("doc, key", [
    ({"name": "x", "outlet": {"lockers": "two"}}, "outlet.lockers"),
    ({"name": "x", "time": {"mode": "fast"}}, "time.mode"),
    ({"name": "x", "workload": {"arrivals_by_hour": [1, 2]}}, "workload.arrivals_by_hour"),
    ({"name": "x", "faults": [{"kind": "meteor", "at_h": 1}]}, "faults[0].kind"),
    ({"name": "x", "faults": [{"kind": "wan_down", "at_h": 1}]}, "faults[0].for_h"),
    ({"name": "x", "expect": {"ledger": "yes"}}, "expect.ledger"),
    ({"name": "x", "outlet": {"lockerz": 1}}, "outlet.lockerz"),
    ({"seed": 1}, "name"),
])
def test_scenario_errors_name_the_key(doc: dict[str, Any], key: str) -> None:
    with pytest.raises(ScenarioError, match=key.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        parse(doc)


def test_shipped_scenarios_are_valid_and_the_default_is_an_outage_day() -> None:
    names = {p.stem for p in SCENARIOS}
    assert {"village-day", "market-day", "backhaul-outage-3d", "storm"} <= names
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "sim", "check", *map(str, SCENARIOS)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    day = load(ROOT / "scenarios" / "village-day.toml")
    assert {f.kind for f in day.faults} == {"wan_down", "broker_restart"}


@pytest.mark.e2e
def test_same_seed_same_trace_and_another_seed_another(tmp_path: Path) -> None:
    sc = parse(small())
    a = run_scenario(sc, tmp_path / "a")
    b = run_scenario(sc, tmp_path / "b")
    c = run_scenario(replace(sc, seed=6), tmp_path / "c")
    assert a["verdict"]["ok"] and b["verdict"]["ok"] and c["verdict"]["ok"]
    assert a["trace_hash"] == b["trace_hash"]
    assert a["trace_hash"] != c["trace_hash"]
    assert a["stats"]["deposit"] == b["stats"]["deposit"] > 0


@pytest.mark.e2e
@pytest.mark.parametrize("path", [p for p in SCENARIOS if p.stem not in ("village-day", "county-day")],
                         ids=lambda p: p.stem)  # the county: tests/simulator/test_county.py
def test_each_shipped_scenario_runs_green(tmp_path: Path, path: Path) -> None:
    res = run_scenario(load(path), tmp_path / "run")
    assert res["verdict"]["ok"], (res["verdict"], res["expectations"], res["ledger"]["end_to_end"])
    assert res["ledger"]["end_to_end"]["lost"] == 0
    assert res["stats"].get("deposit", 0) > 0


@pytest.mark.e2e
def test_the_readme_command_runs_the_default_day_and_ends_with_the_verdict(tmp_path: Path) -> None:
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "en", "sim", "run",
                        "--json", str(out_json), "--html", str(out_html)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert "PASS" in lines[0] and "PASS" in lines[-2] + lines[-1]
    res = json.loads(out_json.read_text())
    assert res["scenario"] == "village-day" and res["verdict"]["ok"]
    assert [f["kind"] for f in res["faults"]] == ["wan_down", "broker_restart"]
    assert "<svg" in out_html.read_text()


@pytest.mark.e2e
def test_ledger_catches_a_component_that_loses_events(tmp_path: Path) -> None:
    """The platform acks every event but forgets every 5th new one."""
    sc = parse(small(faults=[{"kind": "central_lossy", "at_h": 0.0, "every": 5}]))
    res = run_scenario(sc, tmp_path / "run")
    assert not res["verdict"]["ok"] and "ledger_ok" in res["verdict"]["failures"]
    e2e = res["ledger"]["end_to_end"]
    assert e2e["lost"] == res["stats"]["central_forgotten"] > 0
    central = next(h for h in res["ledger"]["per_hop"] if h["hop"] == "central")
    assert central["lost"] == e2e["lost"] and not central["ok"]
    gateway = next(h for h in res["ledger"]["per_hop"] if h["hop"] == "gateway")
    assert gateway["ok"]  # the hop that lost them is named, the others are not blamed


@pytest.mark.e2e
def test_domain_rules_catch_a_locker_that_reports_custody_twice(tmp_path: Path) -> None:
    sc = parse(small(faults=[{"kind": "device_duplicating", "at_h": 0.0, "device": "lk01"}]))
    res = run_scenario(sc, tmp_path / "run")
    assert res["ledger"]["ok"]  # every id was delivered...
    assert not res["verdict"]["ok"] and "domain_ok" in res["verdict"]["failures"]  # ...but the story is wrong
    broken = [c for c in res["domain"]["checks"] if not c["ok"]] if "checks" in res["domain"] else \
        [c for c in res["domain"].values() if isinstance(c, dict) and not c.get("ok", True)]
    assert broken, res["domain"]


@pytest.mark.e2e
def test_cli_exit_code_is_1_when_an_expectation_fails(tmp_path: Path) -> None:
    f = tmp_path / "lossy.toml"
    f.write_text('name = "lossy"\nseed = 2\n[time]\nhours = 6.0\n[outlet]\nlockers = 1\nscanners = 0\n'
                 '[workload]\nparcels = 6\n[[faults]]\nkind = "central_lossy"\nat_h = 0.0\nevery = 3\n')
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "zh", "sim", "run", str(f)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "未通过" in r.stdout and "FAIL" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[outlet]\nlockers = -1\n')
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "en", "sim", "run", str(bad)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "outlet.lockers" in r.stderr


@pytest.mark.e2e
@pytest.mark.mpy
def test_unix_port_lockers_for_fidelity(tmp_path: Path) -> None:
    """The same scenario machinery with the locker firmware as a MicroPython
    unix-port process, driven through its front panel; a power cut is a SIGKILL."""
    hours = [0.0] * 24
    hours[6] = 1.0
    sc = parse({"name": "unix", "seed": 4, "time": {"hours": 10.0},
                "outlet": {"lockers": 1, "scanners": 0, "locker_mode": "unixport"},
                "workload": {"parcels": 3, "arrivals_by_hour": hours, "pickup_delay_h": [0.2, 0.5],
                             "pickup_rate": 1.0},
                "faults": [{"kind": "power_cut", "at_h": 9.0, "device": "lk01"}]})
    snaps: list[dict[str, Any]] = []
    res = run_scenario(sc, tmp_path / "run", progress=lambda o: snaps.append(o.snapshot()))
    assert res["verdict"]["ok"], (res["verdict"], res["stats"], res["ledger"]["end_to_end"])
    assert res["stats"]["deposit"] == 3 and res["stats"]["pickup"] == 3, res["stats"]
    # the dashboard sees the process's compartments through its retained state document
    assert any(len(s["lockers"][0]["compartments"]) == 24 for s in snaps)
    types = {e["type"] for e in res["timeline"]}
    assert {"locker.deposit", "locker.pickup", "locker.boot"} <= types


@pytest.mark.e2e
def test_real_time_mode_and_the_live_dashboard_during_a_run(tmp_path: Path) -> None:
    """Real mode paces the windows by the wall clock; the dashboard serves the
    running outlet's snapshot (the page itself is tested in Chromium in
    tests/simulator/test_sim_report.py)."""
    import time
    import urllib.request

    from simulator.dashboard import Dashboard

    sc = parse({"name": "live", "seed": 9, "time": {"mode": "real", "hours": 0.05, "speed": 30.0},
                "outlet": {"lockers": 2, "scanners": 1}, "workload": {"parcels": 0, "window_min": 0.5}})
    seen: list[dict[str, Any]] = []
    dash: list[Dashboard] = []

    def on_start(outlet: Any) -> None:
        dash.append(Dashboard(outlet.snapshot, port=0, lang="en"))
        dash[0].start()

    def progress(outlet: Any) -> None:
        if dash and len(seen) < 3:
            with urllib.request.urlopen(dash[0].url.rstrip("/") + "/api/snapshot", timeout=5) as r:
                seen.append(json.loads(r.read()))

    t0 = time.monotonic()
    try:
        res = run_scenario(sc, tmp_path / "run", progress=progress, on_start=on_start)
    finally:
        for d in dash:
            d.stop()
    took = time.monotonic() - t0
    assert res["verdict"]["ok"] and res["time_mode"] == "real"
    assert took >= 180 / 30.0 * 0.8  # 3 virtual minutes at 30x: about 6 s of wall time
    assert seen, "the dashboard never answered during the run"
    snap = seen[-1]
    assert [x["device"] for x in snap["lockers"]] == ["lk01", "lk02"]
    assert len(snap["lockers"][0]["compartments"]) == 24 and 0 < snap["progress"] <= 1
    assert any(d["device"] == "sc01" for d in snap["devices"])


@pytest.mark.slow
def test_embedded_broker_queues_offline_qos1_and_enforces_the_acl(tmp_path: Path) -> None:
    """amqtt as the simulator sets it up (simulator/pybroker.py): a persistent
    session that is offline still gets its QoS 1 messages; a device cannot
    publish as another; a wrong password is refused."""
    import threading
    import time

    import paho.mqtt.client as mqtt

    from gateway.broker import Account
    from simulator.pybroker import AmqttBroker

    b = AmqttBroker(tmp_path / "b", [Account("gw-o1", "gw-pw", "o1", "gateway"),
                                     Account("lk01", "lk01-pw", "o1", "locker")])
    b.start()
    got: list[bytes] = []

    def gateway() -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw", clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set("gw-o1", "gw-pw")
        c.on_message = lambda _c, _u, m: got.append(m.payload)
        ready = threading.Event()
        c.on_subscribe = lambda *a: ready.set()
        c.connect("127.0.0.1", b.port)
        c.loop_start()
        c.subscribe("pe/v1/o1/+/+/evt", 1)
        assert ready.wait(10)
        return c

    try:
        g = gateway()
        g.loop_stop()
        g.disconnect()  # offline now; its session stays
        dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lk01", protocol=mqtt.MQTTv311)
        dev.username_pw_set("lk01", "lk01-pw")
        dev.connect("127.0.0.1", b.port)
        dev.loop_start()
        for i in range(5):
            dev.publish("pe/v1/o1/locker/lk01/evt", b"m%d" % i, qos=1).wait_for_publish(5)
        dev.publish("pe/v1/o1/locker/lk02/evt", b"spoof", qos=1)
        time.sleep(0.5)
        dev.disconnect()
        dev.loop_stop()
        g = gateway()
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        g.disconnect()
        g.loop_stop()
        assert got == [b"m0", b"m1", b"m2", b"m3", b"m4"]  # queued while offline, no spoof
        bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="x", protocol=mqtt.MQTTv311)
        bad.username_pw_set("lk01", "wrong")
        bad.connect("127.0.0.1", b.port)
        bad.loop_start()
        time.sleep(1)
        assert not bad.is_connected()
        bad.loop_stop()
    finally:
        b.kill()


@pytest.mark.e2e
def test_the_simulator_runs_on_the_embedded_broker(tmp_path: Path) -> None:
    sc = parse(small(outlet={"lockers": 2, "scanners": 1, "handhelds": 1},
                     workload={"parcels": 12, "photos": 2},
                     faults=[{"kind": "wan_down", "at_h": 8.0, "for_h": 2.0}]))
    res = run_scenario(sc, tmp_path / "run", broker="amqtt")
    assert res["broker"].startswith("amqtt")
    assert res["verdict"]["ok"], (res["verdict"], res["expectations"])


@pytest.mark.e2e
def test_simulated_handhelds_speak_tls_to_the_broker_and_the_gateway(tmp_path: Path) -> None:
    """As on site: the handhelds' MQTT goes to the broker's TLS
    listener and their photos to the gateway's HTTPS, both verifying the
    outlet CA; their events and photos arrive."""
    sc = parse(small(time={"hours": 18.0}, outlet={"lockers": 1, "scanners": 0, "handhelds": 1},
                     workload={"parcels": 6, "photos": 4}, faults=[]))
    res = run_scenario(sc, tmp_path / "run", broker="mosquitto")
    assert res["stats"].get("photo") == 4, res["stats"]
    arrived = {c["name"]: c["stats"] for c in res["domain"]["checks"]}["photo_arrives_once"]
    assert arrived["arrived"] == 4, arrived
    assert res["verdict"]["ok"], (res["verdict"], res["expectations"])
    hh = [d for d in res["devices"] if d["kind"] == "handheld"]
    assert [(d["device"], d["tls"]) for d in hh] == [("hh01", True)]
    assert hh[0]["events"] > 0
    assert not [d for d in res["devices"] if d["kind"] != "handheld" and d["tls"]]
    conf = (tmp_path / "run" / "broker" / "mosquitto.conf").read_text()
    assert "certfile" in conf and "listener" in conf
    assert 'cert_file = "' in (tmp_path / "run" / "gateway.toml").read_text()


def test_a_folder_the_simulator_did_not_make_is_never_wiped(tmp_path: Path) -> None:
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "en", "sim", "run", "--workdir",
                        str(keep)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "not a simulator work folder" in r.stderr
    assert (keep / "notes.txt").read_text() == "precious"


@pytest.mark.e2e
def test_refused_deposits_are_counted_shown_and_can_fail_the_verdict(tmp_path: Path) -> None:
    """A locker with 2 compartments and 8 parcels that nobody picks up: the
    deposits that find it full are in the result by reason, in the summary
    and the HTML report in both languages, and a scenario that bounds them
    fails when it is exceeded."""
    from simulator.report.html_report import render_html
    from simulator.report.summary import summary

    sc = parse(small(outlet={"lockers": 1, "scanners": 0, "compartments": 2},
                     workload={"parcels": 8, "pickup_rate": 0.0}, faults=[],
                     expect={"max_refused_by": {"deposit.full": 0}, "max_refused": 100}))
    res = run_scenario(sc, tmp_path / "run", broker="mosquitto")
    full = res["refused"].get("deposit.full", 0)
    assert full >= 1 and res["stats"]["deposit"] == 2, (res["refused"], res["stats"])
    assert not res["verdict"]["ok"] and res["verdict"]["failures"] == ["max_refused_by"]
    zh, en = summary(res, "zh"), summary(res, "en")
    assert f"存件：柜满，没有合适的空格口  {full} 次" in zh
    assert f"deposit: locker full, no free compartment of that size  {full}×" in en
    assert f"存件：柜满，没有合适的空格口：{full} 次，最多允许 0 次" in zh
    page = render_html(res)
    assert 'data-code="deposit.full"' in page and "柜满" in page


@pytest.mark.e2e
def test_a_hostile_login_costs_the_ledger_nothing(tmp_path: Path) -> None:
    """Hostile devices' attacks as scenario faults: a junk flood, poison messages
    and session takeovers from one device login while the workload runs.
    The ledger of every well-behaved device stays whole, the gateway holds
    the flooding login off its subscriptions and says so in an alarm."""
    import sqlite3

    sc = parse(small(outlet={"lockers": 2, "scanners": 1}, workload={"parcels": 30},
                     faults=[{"kind": "flood", "at_h": 3.0, "for_h": 2.0},
                             {"kind": "poison", "at_h": 6.0},
                             {"kind": "takeover", "at_h": 7.0, "for_h": 1.0}]))
    res = run_scenario(sc, tmp_path / "run", broker="mosquitto")
    assert res["verdict"]["ok"], (res["verdict"], res["expectations"])
    assert res["ledger"]["end_to_end"]["lost"] == 0
    assert res["stats"]["hostile_flood_sent"] > 1000 and res["stats"]["hostile_poison_sent"] > 50
    assert [f["kind"] for f in res["faults"]] == ["flood", "poison", "takeover"]
    with sqlite3.connect(tmp_path / "run" / "gateway.db") as con:
        held = [json.loads(p)["body"]["device"] for (p,) in con.execute(
            "SELECT payload FROM events WHERE type = 'gateway.device_quarantined'")]
        rejected = con.execute("SELECT count(*) FROM rejected").fetchone()[0]
    assert held and set(held) == {"rogue"}
    assert rejected > 50


@pytest.mark.e2e
@pytest.mark.slow
def test_forged_commands_open_no_door_by_either_way_in(tmp_path: Path) -> None:
    """The ``forged`` fault: open commands made without the platform's key,
    from a device login straight to the lockers and through the platform's
    downlink as if it were tampered with. Every one that reaches a locker is
    refused there (and the refusal goes upstream), no door opens, the
    ledger stays whole."""
    import sqlite3

    sc = parse(small(workload={"parcels": 10}, faults=[{"kind": "forged", "at_h": 2.0}]))
    res = run_scenario(sc, tmp_path / "run")
    assert res["verdict"]["ok"], (res["verdict"], res["expectations"])
    assert res["stats"]["hostile_forged_sent"] == 8  # four kinds for each of two lockers
    assert res["stats"]["hostile_forged_refused"] == 8 and not res["stats"].get("hostile_forged_acked")
    with sqlite3.connect(tmp_path / "run" / "gateway.db") as con:
        status = dict(con.execute("SELECT id, status FROM commands WHERE id LIKE 'forged-%'").fetchall())
        opened = con.execute("SELECT count(*) FROM events WHERE type = 'locker.remote_open'").fetchone()[0]
        acks = [json.loads(a) for (a,) in con.execute(
            "SELECT ack FROM commands WHERE id LIKE 'forged-%' AND ack IS NOT NULL")]
    assert opened == 0
    assert set(status) == {f"forged-lk0{n}-{k}" for n in (1, 2) for k in ("key", "kv", "dev", "bare")}
    assert set(status.values()) == {"refused"}, status
    assert {a["code"] for a in acks} == {"bad_signature", "unknown_key", "missing_field"}
