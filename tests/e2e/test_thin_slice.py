"""Thin slice end to end: firmware on the MicroPython unix port (128 KiB
heap: sequence counter, flash outbox, MQTT client) -> real Mosquitto ->
gateway process -> SQLite file, with the gateway killed at the worst moments."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.broker import Mosquitto
from gateway.store.events import EventStore
from protocol import envelope
from simulator import unixport
from simulator.gateway_process import GatewayProcess, write_config

pytestmark = pytest.mark.mpy  # every test runs the MicroPython unix port or mpy-cross
TESTS = Path(__file__).parent.parent  # tests/mpy/publisher_mp_check.py is shared with tests/confirm_rig.py


@pytest.fixture
def gw_config(tmp_path: Path, broker: Mosquitto) -> Path:
    return write_config(tmp_path / "gateway.toml", "o1", broker.port, "gw-o1", "gw-secret")


def device(tmp_path: Path, broker: Mosquitto, events: int) -> list[dict]:
    """Boot the device, queue `events` events, run until the broker acked them all."""
    proc = unixport.run([str(TESTS / "mpy" / "publisher_mp_check.py"), str(broker.port), str(events),
                         str(tmp_path / "flash"), "0"], heap=unixport.SENDER_HEAP, extra_path=[TESTS],
                         timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1]["evt"] == "drained"
    return lines


def queued(lines: list[dict]) -> list[str]:
    return [d["id"] for d in lines if d["evt"] == "queued"]


def stored(tmp_path: Path) -> list[dict]:
    s = EventStore(tmp_path / "gateway.db")
    try:
        return s.events()
    finally:
        s.close()


def wait_stored(tmp_path: Path, n: int, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = stored(tmp_path)
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    raise TimeoutError(f"{len(rows)} of {n} events stored")


def test_device_events_reach_gateway_disk(tmp_path: Path, broker: Mosquitto, gw_config: Path) -> None:
    gw = GatewayProcess(gw_config)
    try:
        gw.wait_for("gateway_started")
        ids = queued(device(tmp_path, broker, 5))
        rows = wait_stored(tmp_path, 5)
    finally:
        gw.stop()
    assert [r["id"] for r in rows] == ids
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        env = envelope.decode(r["payload"])
        assert env["id"] == r["id"] and env["cls"] == "audit"
        assert envelope.encode(env) == r["payload"]  # stored as canonical bytes


def test_sequence_survives_device_reboot(tmp_path: Path, broker: Mosquitto, gw_config: Path) -> None:
    gw = GatewayProcess(gw_config)
    try:
        gw.wait_for("gateway_started")
        first = device(tmp_path, broker, 2)
        second = device(tmp_path, broker, 2)
        wait_stored(tmp_path, 4)
    finally:
        last = gw.stop()
    boots = [d for d in first + second if d["evt"] == "boot"]
    assert [b["boot"] for b in boots] == [1, 2]
    assert boots[0]["incarnation"] == boots[1]["incarnation"]
    assert [int(i.rsplit(":", 1)[1]) for i in queued(first) + queued(second)] == [1, 2, 3, 4]
    assert last.get("seq_gaps", 0) == 0


def test_gateway_sigkill_before_commit_stores_exactly_once(
    tmp_path: Path, broker: Mosquitto, gw_config: Path
) -> None:
    gw = GatewayProcess(gw_config, "--hold-before-commit", "60")
    try:
        gw.wait_for("gateway_started")
        [eid] = queued(device(tmp_path, broker, 1))
        holding = gw.wait_for("holding")
        assert holding["ids"] == [eid]
        assert stored(tmp_path) == []  # received, not committed
    finally:
        gw.kill()
    gw = GatewayProcess(gw_config)
    try:
        gw.wait_for("committed")
        wait_stored(tmp_path, 1)
        time.sleep(0.5)  # room for any stray redelivery
    finally:
        last = gw.stop()
    assert [r["id"] for r in stored(tmp_path)] == [eid]
    assert last["stored"] == 1


def test_gateway_exit_after_commit_before_ack_dedupes(
    tmp_path: Path, broker: Mosquitto, gw_config: Path
) -> None:
    gw = GatewayProcess(gw_config, "--exit-before-ack")
    gw.wait_for("gateway_started")
    [eid] = queued(device(tmp_path, broker, 1))
    gw.wait_for("exiting_before_ack")
    assert gw.proc.wait(10) == 3
    assert [r["id"] for r in stored(tmp_path)] == [eid]  # committed, never acked
    gw = GatewayProcess(gw_config)
    try:
        redelivered = gw.wait_for("committed")
    finally:
        last = gw.stop()
    assert redelivered["ids"] == [eid] and redelivered["duplicates"] == 1
    assert last["duplicates"] == 1
    assert [r["id"] for r in stored(tmp_path)] == [eid]
