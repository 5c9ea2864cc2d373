"""A locker on CPython for tests: the real application, the real driver over
a TCP socket to a byte-accurate simulated lock board, real flash files."""

from __future__ import annotations

import asyncio
import json
import types
from pathlib import Path
from typing import Any

from drivers.hal import host
from drivers.hal.common import Clock, Indicator
from firmware.locker import codes as C
from firmware.locker.app import Locker
from firmware.locker.config import validate
from firmware.locker.doors import Doors, make_driver
from protocol import envelope, signing
from simulator.lockboard_sim import Sim8ABus, SimKerong
from simulator.outlet import compartments
from simulator.platform_keys import PlatformKeys

PLATFORM = PlatformKeys("o1")  # the platform's side: it alone holds the master key
KEY = PLATFORM.key("lk01")  # lk01's own key, version 1


def config(state_dir: Path, board_url: str, driver: str = "8a", board: int = 1, n: int = 24,
           broker_port: int = 1, board_timeout_ms: int = 600, **extra: Any) -> dict[str, Any]:
    """``board_timeout_ms``: long enough that a loaded test machine's thread
    scheduling is not taken for a board fault; a test of board faults sets it short."""
    cfg = {
        "device": "lk01", "outlet": "o1",
        "broker": {"host": "127.0.0.1", "port": broker_port, "user": "lk01", "password": "lk01-pw"},
        "board": {"driver": driver, "uart": board_url, "timeout_ms": board_timeout_ms},
        "compartments": compartments(board, n),
        "key": PLATFORM.device_config("lk01"),
        # Its own key for sealing the codes it issues to the outlet's notifier.
        "notify": PLATFORM.notify_config("lk01"),
        "state_dir": str(state_dir), "poll_ms": 50,
        # No gateway here to take the time from: the rig's clock is trusted,
        # unless a test asks for time_source="gateway" and syncs it itself.
        "time_source": "local",
    }
    cfg.update(extra)
    return validate(cfg)


def make_hal(offset: int = 0) -> types.SimpleNamespace:
    hal = types.SimpleNamespace(**{k: getattr(host, k) for k in dir(host) if not k.startswith("_")})
    hal.clock = Clock(offset)
    hal.indicator = Indicator()
    return hal


class Rig:
    """One locker, its simulated bus and helpers to drive flows."""

    def __init__(self, tmp: Path, driver: str = "8a", **extra: Any) -> None:
        self.tmp = tmp
        self.driver = driver
        self.bus = Sim8ABus(boards=(1,), locks=24) if driver == "8a" else SimKerong(boards=(0,), locks=16)
        self.board_no = 1 if driver == "8a" else 0
        self.n = 24 if driver == "8a" else 16
        self.port = self.bus.serve_tcp()
        self.extra = extra
        self.hal = make_hal()
        self.locker = self.boot()

    def boot(self) -> Locker:
        """A (re)boot: fresh RAM, same flash."""
        cfg = config(self.tmp / "flash", f"socket://127.0.0.1:{self.port}", self.driver,
                     self.board_no, self.n, **self.extra)
        doors = Doors(make_driver(cfg, self.hal), cfg["compartments"])
        self.locker = Locker(cfg, self.hal, doors)
        return self.locker

    def close(self) -> None:
        self.bus.close()

    # ---- outbox inspection
    def records(self, topic_suffix: str = "/evt") -> list[dict[str, Any]]:
        ob = self.locker.outbox
        ob.flush()
        out = []
        for _seq, _cls, topic, payload in ob.pending(10_000):
            if topic.endswith(topic_suffix):
                out.append(envelope.decode(payload) if topic_suffix == "/evt" else json.loads(payload))
        return out

    def events(self, etype: str) -> list[dict[str, Any]]:
        return [e for e in self.records() if e["type"] == etype]

    def alarms(self) -> list[str]:
        return [e["body"]["alarm"] for e in self.events("locker.alarm")]

    # ---- commands
    def command(self, op: str, args: dict[str, Any], cmd_id: str, now: int | None = None,
                exp_in: int = 300, key: bytes = KEY, kv: int = 1) -> bytes:
        now = self.locker.now() if now is None else now
        cmd = signing.sign({"id": cmd_id, "dev": "lk01", "op": op, "args": args, "iat": now,
                            "exp": now + exp_in}, key, kv=kv)
        return signing.encode(cmd)

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def provision_courier(self, courier: str = "c007", secret: str = "badge-secret") -> str:
        salt = "00112233445566ff"
        payload = self.command("credential", {"courier": courier, "salt": salt,
                                              "hash": C.salted_hash(salt, secret),
                                              "exp": self.locker.now() + 86400},
                               f"cred-{courier}")
        assert self.run(self.locker.handle_command(payload)) == "ok"
        return f"PE-C:{courier}:{secret}"

    async def close_when_open(self, cid: int, delay: float = 0.15, timeout: float = 10) -> None:
        """A person: waits for the door to open, then shuts it."""
        c = self.locker.comps.get(cid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.bus.is_open(c["board"], c["lock"]):
            if loop.time() > deadline:
                raise TimeoutError(f"door {cid} never opened")
            await asyncio.sleep(0.02)
        await asyncio.sleep(delay)
        self.bus.close_door(c["board"], c["lock"])

    async def with_person(self, flow: Any, cid: int | None = None) -> Any:
        """Run a flow while a person closes whichever door it opens."""
        task = asyncio.ensure_future(flow)
        while not task.done():
            for c in self.locker.comps.all():
                if self.bus.is_open(c["board"], c["lock"]) and (cid is None or c["id"] == cid):
                    await asyncio.sleep(0.1)
                    self.bus.close_door(c["board"], c["lock"])
            await asyncio.sleep(0.02)
        return task.result()
