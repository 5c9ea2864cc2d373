"""The simulator's presence rule: after every fault that ends,
each device is online in the gateway again within ``expect.online_within_min``
(wall minutes), and at the end every device is; otherwise the verdict fails
with ``devices_back_online``. Each device's uptime, as the gateway saw it, is
in the result and the terminal summary.

The verdict used to say PASS while the gateway showed a locker that kept
sending as offline. The whole-run test uses real parts (Mosquitto restarted,
the gateway process and its store, the firmware in process); "presence forced
wrong" is a locker set offline in the gateway's store after the run settled,
as a late Will used to leave it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gateway.store.events import EventStore
from simulator.assembly import Outlet
from simulator.report.summary import summary
from simulator.results import back_online_after, devices_back_online, fault_ends, run_result, uptime
from simulator.runner import run_scenario
from simulator.scenario import parse

RESTART = [{"t": 100.0, "kind": "broker_restart", "start": True, "detail": ""}]


def test_fault_ends_are_end_edges_and_instant_faults() -> None:
    log = [{"kind": "wan_down", "start": True, "detail": ""}, {"kind": "broker_restart", "start": True},
           {"kind": "wan_down", "start": False, "detail": ""}, {"kind": "power_cut", "start": True,
                                                                "detail": "lk01"}]
    assert fault_ends(log) == [1, 2, 3]


def test_recovery_is_measured_to_a_stable_online() -> None:
    s = [(0.0, {"a": True}), (1.0, {"a": False}), (2.0, {"a": True}), (3.0, {"a": False}),
         (4.0, {"a": True}), (5.0, {"a": True})]
    assert back_online_after(s, "a", 0.5, 10.0) == 3.5  # online from 4.0 to the end
    assert back_online_after(s, "a", 0.5, 2.5) == 1.5  # stable until the next fault at 2.5
    assert back_online_after(s, "b", 0.0, 10.0) is None  # never in the gateway: never online
    assert uptime(s, "a") == 0.6 and uptime(s, "b") == 0.0


def test_late_and_offline_devices_fail_in_words() -> None:
    samples = [(float(i), {"lk01": True, "lk02": i < 2 or i > 70}) for i in range(100)]
    ok = devices_back_online(samples, [1.0], RESTART, ["lk01", "lk02"], 2.0, samples[-1][1])
    assert ok["ok"] and ok["fields"]["worst_s"] == 70.0
    late = devices_back_online(samples, [1.0], RESTART, ["lk01", "lk02"], 1.0, samples[-1][1])
    assert not late["ok"] and late["fields"]["late"] == [["lk02", "broker_restart", 70.0]]
    final = {"lk01": True, "lk02": False}
    gone = devices_back_online(samples[:50], [1.0], RESTART, ["lk01", "lk02", "sc01"], 10.0, final)
    assert not gone["ok"] and gone["fields"]["offline"] == ["lk02", "sc01"]
    words = summary({"expectations": [gone], "verdict": {"ok": False, "failures": [gone["name"]]}}, "zh")
    assert "设备恢复在线" in words and "lk02（消息代理重启后 未恢复）" in words
    words = summary({"expectations": [late], "verdict": {"ok": False, "failures": [late["name"]]}}, "en")
    assert "lk02 (after broker restart: 70.0 s)" in words


def force_offline(outlet: Outlet, device: str) -> None:
    """What a late Will did to the old gateway: the device offline in its store."""
    s = EventStore(outlet.gw_db)
    try:
        s.presence(device, outlet.outlet_id, "locker", False, time.time(), None)
    finally:
        s.close()


@pytest.mark.slow
@pytest.mark.e2e
def test_a_run_with_a_broker_restart_passes_and_a_device_kept_offline_fails(tmp_path: Path) -> None:
    sc = parse({"name": "presence", "seed": 7, "time": {"hours": 6.0},
                "outlet": {"lockers": 2, "scanners": 1}, "workload": {"parcels": 12},
                "faults": [{"kind": "broker_restart", "at_h": 2.0}],
                "expect": {"online_within_min": 1.0}})
    forced: dict[str, Any] = {}

    def on_end(outlet: Outlet) -> None:
        force_offline(outlet, "lk02")
        forced.update(run_result(outlet, 0.0))

    res = run_scenario(sc, tmp_path / "run", on_end=on_end)
    check = next(e for e in res["expectations"] if e["name"] == "devices_back_online")
    assert check["ok"], check
    assert check["fields"]["faults"] == 1 and check["fields"]["within_min"] == 1
    assert res["verdict"]["ok"], res["verdict"]
    ups = {d["device"]: d["uptime"] for d in res["devices"]}
    assert set(ups) == {"lk01", "lk02", "sc01"} and all(0.5 < u <= 1.0 for u in ups.values()), ups
    assert "设备在线率（网关所见）" in summary(res, "zh") and "Device uptime" in summary(res, "en")

    bad = next(e for e in forced["expectations"] if e["name"] == "devices_back_online")
    assert not bad["ok"] and bad["fields"]["offline"] == ["lk02"], bad
    assert forced["verdict"]["failures"] == ["devices_back_online"]
    assert "结束时离线的：lk02" in summary(forced, "zh")
