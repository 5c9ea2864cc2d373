"""Which devices the gateway shows online, sampled over a run.

The simulator's verdict used to pass while the gateway showed a locker that
kept sending as offline for hours: nothing looked at what the clerk's page
and ``gateway status`` read. This thread reads the gateway's own SQLite store
from outside, every ``interval_s`` of wall time, and notes when each fault
edge (``outlet.faults_log``) happened on the same clock, so the result can
say how long every device took to be back online after each fault
(``devices_back_online`` in ``simulator/results.py``) and what share of the
run each one was online.

Wall time, not virtual: reconnecting runs on the wall clock (MQTT keepalive,
back-off, the broker's restart) in virtual and real runs alike, and a
virtual run races through its windows while the devices reconnect. A sample
the store cannot give (a gateway being killed, a disk filled) is skipped.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from gateway.store.readonly import ReadOnlyStore

#: (wall time, {device: online in the gateway's store})
Sample = tuple[float, dict[str, bool]]


class PresenceWatch:
    """The gateway's device list every ``interval_s``, and the wall time each
    entry of ``faults_log`` appeared."""

    def __init__(self, db: Path, faults_log: list[dict[str, Any]], interval_s: float = 0.5) -> None:
        self.db = db
        self.faults_log = faults_log
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.fault_at: list[float] = []  # wall time of faults_log[i], as first seen
        self.t0 = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presence-watch", daemon=True)
        self._thread.start()

    def read(self) -> dict[str, bool] | None:
        """The gateway's view now (gateway-own rows left out); None if unreadable."""
        try:
            s = ReadOnlyStore(self.db)
            try:
                return {d["device"]: bool(d["online"]) for d in s.devices() if d["kind"] != "gateway"}
            finally:
                s.close()
        except Exception:  # noqa: BLE001 - a gateway restarting or a full disk: next time
            return None

    def sample(self) -> None:
        """One look now (the thread's step; also the result's last look)."""
        now = time.time()
        with self._lock:
            while len(self.fault_at) < len(self.faults_log):
                self.fault_at.append(now)
        view = self.read()
        if view is not None:
            with self._lock:
                self.samples.append((time.time(), view))

    def snapshot(self) -> tuple[list[Sample], list[float]]:
        with self._lock:
            return list(self.samples), list(self.fault_at)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
