"""Devices that keep events until the gateway confirms them (the firmware's
sender on the MicroPython unix port), and the faults they must survive: for
tests of end-to-end confirmation."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from simulator import unixport
from simulator.outlet import stored_events

TESTS = Path(__file__).parent  # tests/mpy/publisher_mp_check.py: see tests/mpy/README.md


def wipe_gateway_session(port: int) -> None:
    """A clean-session login under the gateway's client id: its persistent
    session, and whatever the broker queued in it, is gone."""
    thief = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-o1", clean_session=True)
    thief.username_pw_set("gw-o1", "gw-secret")
    thief.connect("127.0.0.1", port)
    thief.loop_start()
    time.sleep(0.4)
    thief.disconnect()
    thief.loop_stop()


def publishers(tmp_path: Path, port: int, devices: list[str], n: int, spacing_ms: int
                ) -> list[subprocess.Popen]:
    # 192k: while the gateway is away the outbox holds a few hundred
    # unconfirmed records, and its index costs ~80 bytes a record in the
    # unix port's 64-bit objects (a full 64 KiB outbox fits the app's 256k).
    return [unixport.popen([str(TESTS / "mpy" / "publisher_mp_check.py"), str(port), str(n),
                            str(tmp_path / f"flash-{d}"), str(spacing_ms), d, "confirm"],
                           heap=unixport.SENDER_HEAP, extra_path=[TESTS], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT) for d in devices]


def drained(procs: list[subprocess.Popen], timeout: float) -> list[dict]:
    """Each publisher's last JSON line once it prints "drained", read on
    threads so a stuck publisher fails the test instead of hanging it."""
    import threading

    last: list[dict] = [{} for _ in procs]
    done = [threading.Event() for _ in procs]

    def read(i: int, p: subprocess.Popen) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            try:
                last[i] = json.loads(line)
            except ValueError:  # a MicroPython traceback: keep all of it
                prev = last[i].get("line", "") if last[i].get("evt") == "not_json" else ""
                last[i] = {"evt": "not_json", "line": (prev + line)[-2000:]}
                continue
            if last[i].get("evt") == "drained":
                break
        done[i].set()

    for i, p in enumerate(procs):
        threading.Thread(target=read, args=(i, p), daemon=True).start()
    deadline = time.monotonic() + timeout
    for ev in done:
        ev.wait(max(0.0, deadline - time.monotonic()))
    return last


def assert_each_once(db: Path, devices: list[str], n: int) -> None:
    got = stored_events(db)
    ids = [e["id"] for e in got]
    assert len(ids) == len(set(ids)), "an event was stored twice"
    for d in devices:
        mine = sorted(e["body"]["i"] for e in got if e["id"].startswith(d + ":"))
        missing = sorted(set(range(n)) - set(mine))
        assert not missing, f"{d}: {len(missing)} events lost, first {missing[:5]}"
