"""A locker for fidelity: the firmware as a MicroPython unix-port process
(``-X heapsize=256k``) with its simulated lock board and front panel served
over TCP, driven through the panel's own line protocol as a courier and a
recipient would (badge scan, parcel scan, size key; pickup code on the
keypad), and a person who shuts doors (``DoorCloser``).

What differs from the in-process lockers (``simulator/inproc.py``): the
firmware runs in its own process on the real interpreter with device-sized
RAM; in a virtual run its wall time is the scenario's through a small file
the simulator replaces at every set (``SimClock.attach_devices``, read by
``drivers/hal/unix.py``), and its random bytes come from the run's seed, so
the same seed gives the same trace. The simulator follows its events from the log lines the firmware
prints with ``log_events`` on (the ledger's ``device`` hop), and a power cut
is a SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulator import unixport
from simulator.lockboard_sim import Sim8ABus
from simulator.outlet import DoorCloser, locker_config
from simulator.panel_sim import SimPanel

SIZE_KEY = {"S": "1", "M": "2", "L": "3", "XL": "4"}

EventTap = Callable[[str, dict[str, Any]], None]  # (device, {"id", "type", "cls", "body"})


class FlowRefused(Exception):
    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


class UnixLocker:
    kind = "locker"

    def __init__(
        self,
        device: str,
        state_dir: Path,
        broker: tuple[str, int],
        password: str,
        key: bytes | dict[str, Any],
        on_event: EventTap,
        n: int = 24,
        poll_ms: int = 50,
        clock_file: Path | None = None,
        seed: int | None = None,
    ) -> None:
        """``clock_file``: the scenario's clock for the unix port (a virtual
        run); ``seed``: its random bytes from a generator seeded with this
        (and the boot's number, so a reboot does not draw the same codes)."""
        self.device = device
        self.state_dir = state_dir
        self.on_event = on_event
        self.bus = Sim8ABus(boards=(1,), locks=n)
        self.panel = SimPanel()
        self.closer = DoorCloser(self.bus, locks=n, after_s=0.1)
        self.cfg = locker_config(
            device,
            "o1",
            broker[1],
            password,
            f"socket://127.0.0.1:{self.bus.serve_tcp()}",
            state_dir,
            key,
            self.panel.url,
            poll_ms=poll_ms,
            log_events=True,
        )
        self.cfg["broker"]["host"] = broker[0]
        self.proc: subprocess.Popen[str] | None = None
        self.app = self  # the runner asks `dev.app` whether a device is up
        self.task: object | None = None
        self.hal = None
        self.couriers: set[str] = set()
        self.boots = 0
        self.clock_file = clock_file
        self.seed = seed
        if clock_file is not None:
            # The scenario's clock is the trusted one, as for the in-process lockers:
            # a time beacon read a few real milliseconds late may be two windows old
            # on a virtual clock that jumps, and would step the locker's time back.
            self.cfg["time_source"] = "local"

    def boot(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir.parent / f"{self.device}.json"
        path.write_text(json.dumps(self.cfg))
        self.boots += 1
        log = open(self.state_dir.parent / f"{self.device}.stderr", "a")  # noqa: SIM115 - the process owns it
        env = {}
        if self.clock_file is not None:
            env["PE_SIM_CLOCK"] = str(self.clock_file)
        if self.seed is not None:
            env["PE_SIM_SEED"] = str(self.seed * 1000 + self.boots)
        self.proc = unixport.popen(
            ["-m", "firmware.locker.main", str(path)],
            heap=unixport.APP_HEAP,
            extra_env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.task = self.proc

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("evt") == "event":
                self.on_event(self.device, d)

    async def power_cut(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        self.task = None

    def _do(self, action: str, arg: str, want: str, timeout: float = 20) -> str:
        """Type or scan; the panel's answer, past the "door open" prompts it
        shows while a door cycle runs."""
        p = self.panel
        m = p.mark()
        if action == "keys":
            p.keys(arg)
        else:
            p.scan(arg)
        while True:
            shown = p.wait_display(None, timeout, after=m)
            with p._cond:
                m = p.shown.index(shown, m) + 1
            if shown["code"].startswith("door_open"):
                continue
            if shown["code"] != want:
                raise FlowRefused(shown["code"], shown.get("detail", ""))
            return shown.get("detail", "")

    def _deposit(self, badge: str, parcel: str, size: str) -> int:
        self.panel.wait_connected()
        self._do("scan", badge, "courier_ok")
        try:
            self._do("scan", "]C0" + parcel, "choose_size")
            return int(self._do("keys", SIZE_KEY[size], "deposit_ok", timeout=30))
        finally:
            self._do("keys", "0", "logged_out")

    def _pickup(self, code: str) -> int:
        self.panel.wait_connected()
        return int(self._do("keys", code, "pickup_ok", timeout=30))

    async def deposit(self, badge: str, parcel: str, size: str) -> int:
        return await asyncio.to_thread(self._deposit, badge, parcel, size)

    async def pickup(self, code: str) -> int:
        return await asyncio.to_thread(self._pickup, code)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.closer.stop()
        self.panel.close()
        self.bus.close()
