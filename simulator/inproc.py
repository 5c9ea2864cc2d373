"""Devices in the simulator's own process: the real locker and counter
firmware on the CPython HAL, wired to the byte-accurate simulated lock boards
and scan engines through in-memory UARTs instead of sockets.

Why in-memory: a simulation of thousands of lockers cannot afford a thread
and a socket pair per serial line, and the bytes on the line are the same.
The firmware still speaks MQTT to a real broker over TCP.

Determinism: each device gets a seeded ``urandom`` (pickup codes, salts) and
the scenario's clock, so the same seed issues the same codes at the same
virtual times. A *person* at each locker shuts a door on the board's next
status poll after it opened (``BusUART(auto_close=True)``), which is what
keeps a door cycle to one poll interval of real time.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.clock import ClockWriter
from drivers.hal import host
from drivers.hal.common import Indicator
from drivers.scanner.engine import open_engine
from firmware.counter import config as counter_cfg
from firmware.counter.app import Counter
from firmware.locker import config as locker_cfg
from firmware.locker.app import Locker
from firmware.locker.doors import Doors, make_driver
from protocol import envelope
from simulator.lockboard_sim import Sim8ABus
from simulator.outlet import compartments, key_section
from simulator.scan_engine_sim import SimScanEngine

Tap = Callable[[str, str, bytes], None]  # (device, topic, payload) as it enters the outbox

# The simulator host's garbage-collector setting (bench/simulator_scale.py measured it):
# every locker keeps ~250 long-lived objects, and CPython's full collections walk all of
# them while the one loop that runs every device stands still (360-440 ms at 2,000
# lockers, several times a window). Freezing what is alive after boot takes it out of
# those walks, and a large young generation lets the devices' short-lived asyncio objects
# die young. Real time held for 1,000 lockers without it, 3,000 with it.
HOST_GC = (20_000, 10, 10)


def tune_gc() -> tuple[int, int, int]:
    """Apply HOST_GC after the devices booted; returns the thresholds to restore."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*HOST_GC)
    return old


def restore_gc(old: tuple[int, int, int]) -> None:
    gc.unfreeze()
    gc.set_threshold(*old)


class BusUART:
    """A UART straight into a simulated lock-board bus.

    With ``auto_close`` a person shuts every door that a command opened once
    the locker has polled it open, so door cycles end without a thread per
    locker watching the doors."""

    def __init__(self, bus: Sim8ABus, auto_close: bool = True) -> None:
        self.bus = bus
        self.auto_close = auto_close
        self._rx = b""
        self._was_open: set[tuple[int, int]] = set()

    def _released(self) -> set[tuple[int, int]]:
        out = set()
        for addr, b in self.bus._boards.items():
            for i, r in enumerate(b.released):
                if r:
                    out.add((addr, i + 1))
        return out

    def write(self, data: bytes) -> int:
        self._rx += self.bus.feed(data)
        if self.auto_close:
            now_open = self._released()
            for board, lock in now_open & self._was_open:
                self.bus.close_door(board, lock)
            self._was_open = now_open - self._was_open
        if len(self.bus.requests) > 256:  # the simulator does not keep the wire log
            del self.bus.requests[:-64]
            del self.bus.replies[:-64]
        return len(data)

    def read(self, n: int) -> bytes:
        out, self._rx = self._rx[:n], self._rx[n:]
        return out

    def close(self) -> None:
        pass


class EngineUART:
    """A UART straight into a simulated scan engine (pauses are ignored: the
    counter's frames end with a CR suffix, not an idle gap)."""

    def __init__(self, engine: SimScanEngine) -> None:
        self.engine = engine
        self._rx = b""

    def write(self, data: bytes) -> int:
        self._rx += self.engine.feed(data)
        return len(data)

    def read(self, n: int) -> bytes:
        if not self._rx:
            self._rx = b"".join(c[0] for c in self.engine.take())
        out, self._rx = self._rx[:n], self._rx[n:]
        return out

    def close(self) -> None:
        pass


class SimClock:
    """The scenario's clock as the firmware sees it (``hal.clock``).

    Virtual mode: wall time is whatever the runner set (``set``), plus the
    device's skew; real mode: the real time plus skew. Ticks stay real, so
    the firmware's timeouts measure real waiting.

    ``attach`` makes it the time of other processes too: it writes every
    set into a clock file (``common/clock.py``) that the gateway process
    reads through ``POSTEDGE_CLOCK_FILE`` (``simulator/gateway_process.py``).
    The file only moves forward: a fault edge inside a window sets the clock
    ahead of the window's start, which then does not pull the gateway back."""

    def __init__(self, start: int | None = None) -> None:
        self.virtual = start is not None
        self.t = start or 0
        self.offset = 0
        self.writer: ClockWriter | None = None
        self.filed: float = 0  # the time last written to the clock file
        self.device_file: Path | None = None  # the unix-port devices' copy (attach_devices)

    def attach(self, path: Path) -> Path:
        """Publish this clock in ``path`` from now on (virtual mode only)."""
        if not self.virtual:
            raise ValueError("only a virtual clock is published to other processes")
        if self.writer is None:
            self.writer = ClockWriter(path, self.t)
            self.filed = self.t
        return self.writer.path

    def detach(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.device_file = None

    def attach_devices(self, path: Path) -> Path:
        """Publish this clock to unix-port devices too (virtual mode only): a
        text file ``"<virtual seconds> <wall seconds>"`` replaced at every set,
        which ``drivers/hal/unix.py`` reads (MicroPython has no mmap)."""
        if not self.virtual:
            raise ValueError("only a virtual clock is published to other processes")
        self.device_file = path
        self._write_devices(self.filed if self.writer is not None else self.t)
        return path

    def _write_devices(self, t: float) -> None:
        if self.device_file is None:
            return
        tmp = self.device_file.with_name(f".{self.device_file.name}.tmp")
        tmp.write_text(f"{float(t)!r} {time.time()!r}")
        os.replace(tmp, self.device_file)

    def set(self, t: float) -> None:
        """Devices read whole seconds; the clock file takes ``t`` as it is, so
        the gateway's timers can be stepped to the moment something is due
        (``simulator/pacing.py``)."""
        self.t = int(t)
        if self.writer is not None and t > self.filed:
            self.writer.set(t)
            self.filed = t
            self._write_devices(t)

    def time(self) -> int:
        return (self.t if self.virtual else int(time.time())) + self.offset

    def ticks_ms(self) -> int:
        return host.clock.ticks_ms()

    def ticks_diff(self, a: int, b: int) -> int:
        return host.clock.ticks_diff(a, b)


class SkewedClock:
    """One device's view of a shared clock: the same time plus its own skew;
    ``pin`` holds the time of the action the device is doing, so actions in
    one window each see their own scheduled second."""

    def __init__(self, base: SimClock) -> None:
        self.base = base
        self.offset = 0
        self.pin: int | None = None

    def time(self) -> int:
        return (self.base.time() if self.pin is None else self.pin) + self.offset

    def ticks_ms(self) -> int:
        # During an action the device's own tick follows the action's virtual second, so
        # what the firmware times between two actions (a counter's duplicate windows) is
        # the scenario's time, not however few real milliseconds apart they ran.
        if self.pin is not None:
            return (self.pin * 1000) & 0x3FFFFFFF
        return self.base.ticks_ms()

    def ticks_diff(self, a: int, b: int) -> int:
        return self.base.ticks_diff(a, b)


def make_hal(clock: SkewedClock, seed: int, uart: Any) -> types.SimpleNamespace:
    rng = random.Random(seed)
    return types.SimpleNamespace(
        NAME="sim",
        clock=clock,
        indicator=Indicator(),
        network=host.network,
        storage=host.storage,
        uart=lambda url, baudrate=9600: uart,
        # The simulator supervises the tasks itself; a watchdog that kills the
        # process would take every simulated device with it.
        watchdog=lambda timeout_ms: types.SimpleNamespace(feed=lambda: None, check=lambda: False),
        urandom=lambda n: bytes(rng.getrandbits(8) for _ in range(n)),
    )


class SimDevice:
    """One firmware instance with its tasks, a tap on its outbox, and a
    power switch (``power_cut`` drops RAM and tasks; ``boot`` starts again
    from the same flash)."""

    kind = ""
    outlet = "o1"  # the outlet its topics name; a county's outlets set their own

    def __init__(
        self,
        device: str,
        state_dir: Path,
        broker: tuple[str, int],
        password: str,
        key: bytes | dict[str, Any],
        clock: SimClock,
        seed: int,
        tap: Tap | None = None,
    ) -> None:
        self.device = device
        self.state_dir = state_dir
        self.broker = broker
        self.password = password
        self.key = key
        self.clock = clock
        self.dclock = SkewedClock(clock)  # kept across boots: a skewed RTC stays skewed
        self.seed = seed
        self.tap = tap
        self.app: Any = None
        self.duplicating = False
        self.stuck = False
        self.task: asyncio.Task[Any] | None = None
        self.boots = 0
        self.hal: Any = None

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def build(self, cfg: dict[str, Any]) -> Any:
        raise NotImplementedError

    def boot(self) -> Any:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.config()
        self.boots += 1
        self.app = self.build(cfg)
        if self.tap is not None:
            ob = self.app.outbox
            raw = ob.append
            dev = self.device

            def append(cls: str, topic: str, payload: bytes) -> Any:
                r = raw(cls, topic, payload)
                if topic.endswith("/evt"):
                    self.tap(dev, topic, payload)
                    if self.duplicating and cls == "custody":
                        # Sabotage: a firmware bug that reports one custody
                        # step twice under two ids (the domain rules must see it).
                        env = envelope.decode(payload)
                        env["id"] = self.app.next_event_id()
                        copy = envelope.encode(env)
                        raw(cls, topic, copy)
                        self.tap(dev, topic, copy)
                return r

            ob.append = append
        self.task = asyncio.ensure_future(self.app.run())
        return self.app

    def base_config(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "outlet": self.outlet,
            "broker": {
                "host": self.broker[0],
                "port": self.broker[1],
                "user": self.device,
                "password": self.password,
                "timeout": 2,
                "backoff_cap": 1.0,
            },
            "key": key_section(self.key),
            "state_dir": str(self.state_dir),
            # Virtual mode: the device's clock is the scenario's, pinned to each
            # action's own second (SkewedClock), which the gateway's beacon (the
            # same clock read a moment later) must not nudge; real mode takes
            # time from the gateway.
            "time_source": "local" if self.clock.virtual else "gateway",
        }

    async def power_cut(self) -> None:
        """RAM and tasks gone at once; what is on flash stays."""
        if self.app is not None:
            await self.app.halt()
        if self.task is not None:
            self.task.cancel()
            # Bounded: CPython 3.11's wait_for can swallow a cancellation that races with its
            # inner wait, and a device that ignores the power switch must not hang the run.
            done, _ = await asyncio.wait({self.task}, timeout=3)
            if not done:
                self.stuck = True
        self.task = None


class SimLocker(SimDevice):
    kind = "locker"

    def __init__(self, *a: Any, n: int = 24, poll_ms: int = 20, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.bus = Sim8ABus(boards=(1,), locks=n)
        self.n = n
        self.poll_ms = poll_ms
        self.uart = BusUART(self.bus)
        self.notify: dict[str, Any] | None = None  # its sealing key for the outlet's notifier

    def config(self) -> dict[str, Any]:
        cfg = self.base_config()
        if self.notify is not None:
            cfg["notify"] = self.notify
        cfg.update(
            {
                "board": {"driver": "8a", "uart": "sim://bus", "timeout_ms": 200},
                "compartments": compartments(1, self.n),
                "poll_ms": self.poll_ms,
                "outbox_bytes": 256 * 1024,
                "keepalive": 60,
            }
        )
        return locker_cfg.validate(cfg)

    def build(self, cfg: dict[str, Any]) -> Locker:
        self.hal = make_hal(self.dclock, self.seed * 7919 + self.boots, self.uart)
        return Locker(cfg, self.hal, Doors(make_driver(cfg, self.hal), cfg["compartments"]))


class SimCounter(SimDevice):
    kind = "scanner"

    def __init__(self, *a: Any, family: str = "gm65", **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.engine = SimScanEngine(family, suffix="cr", aim=True, continuous=True, seed=self.seed)
        self.uart = EngineUART(self.engine)
        self.family = family

    def config(self) -> dict[str, Any]:
        cfg = self.base_config()
        cfg.update(
            {"scanner": {"family": self.family, "uart": "sim://engine", "suffix": "cr"}, "keepalive": 60}
        )
        return counter_cfg.validate(cfg)

    def build(self, cfg: dict[str, Any]) -> Counter:
        self.hal = make_hal(self.dclock, self.seed * 7919 + self.boots, self.uart)
        sc = cfg["scanner"]
        return Counter(cfg, self.hal, open_engine(self.uart, sc["family"], suffix="cr", poll_ms=5))
