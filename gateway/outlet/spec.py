"""``OUTLET.toml``, declared and checked at load like ``gateway.toml``
(``common/config.py``): an unknown key is refused with the nearest known one
("did you mean"), and every error names the file, because the person
reading it is a field engineer editing that file on the box.

Compartments are written as runs (``{ board = 1, size = "S", count = 8 }``)
because a real locker is laid out that way; ids run from 1 across the runs
and locks continue on each board unless ``first_lock`` says otherwise."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from common.config import ConfigError, KeyProblem, Problem, Section, parse
from common.text import LANGS
from protocol.topics import valid_segment

__all__ = ["ConfigError", "OutletSpec", "load"]

DeviceId = Annotated[str, Field(min_length=1, max_length=32)]


def _segment(v: str) -> str:
    if not valid_segment(v):
        raise ValueError(f"must be 1-32 of a-z 0-9 _ -, got {v!r}")
    return v


class Run(Section):
    """A run of same-size compartments on one board."""

    board: Annotated[int, Field(ge=1, le=255)] = 1
    size: Literal["S", "M", "L", "XL"]
    count: Annotated[int, Field(ge=1, le=255)]
    first_lock: Annotated[int, Field(ge=1, le=255)] | None = None


#: The common 24-door cabinet (simulator/outlet.py compartments): S M L XL in turn.
DEFAULT_RUNS: tuple[Run, ...] = ()


class Board(Section):
    driver: Literal["8a", "kerong"] = "8a"
    uart: Annotated[str, Field(min_length=1)] = "rs485"
    baud: Annotated[int, Field(ge=1200, le=115200)] = 9600


class Locker(Section):
    id: DeviceId
    board: Board = Board()
    compartments: list[Run] = []
    panel: Annotated[str, Field(min_length=1)] | None = None
    state_dir: Annotated[str, Field(min_length=1)] = "data"
    time_source: Literal["gateway", "local"] = "gateway"
    pickup_days: Annotated[int, Field(ge=1, le=60)] = 7
    door_open_alarm_s: Annotated[int, Field(ge=10, le=3600)] = 120
    poll_ms: Annotated[int, Field(ge=20, le=5000)] = 500

    _id = field_validator("id")(_segment)

    def layout(self) -> list[dict[str, Any]]:
        """The firmware's ``compartments`` list (firmware/locker/config.py)."""
        if not self.compartments:
            sizes = ("S", "M", "L", "XL")
            return [{"id": i, "size": sizes[(i - 1) % 4], "board": 1, "lock": i} for i in range(1, 25)]
        out: list[dict[str, Any]] = []
        next_lock: dict[int, int] = {}
        for run in self.compartments:
            lock = run.first_lock or next_lock.get(run.board, 1)
            for _ in range(run.count):
                out.append({"id": len(out) + 1, "size": run.size, "board": run.board, "lock": lock})
                lock += 1
            next_lock[run.board] = lock
        return out

    @model_validator(mode="after")
    def _no_shared_lock(self) -> Locker:
        seen: set[tuple[int, int]] = set()
        for c in self.layout():
            place = (c["board"], c["lock"])
            if place in seen or c["lock"] > 255:
                raise KeyProblem("compartments", Problem("lock_twice", board=place[0], lock=place[1]))
            seen.add(place)
        return self


class Scanner(Section):
    id: DeviceId
    family: Literal["gm65", "honeywell", "ssi", "newland"] = "gm65"
    uart: Annotated[str, Field(min_length=1)] = "uart1"
    suffix: Literal["cr", "crlf", "none"] = "cr"
    mode: Literal["continuous", "triggered"] = "continuous"
    state_dir: Annotated[str, Field(min_length=1)] = "data"

    _id = field_validator("id")(_segment)


class Handheld(Section):
    id: DeviceId

    _id = field_validator("id")(_segment)


class Central(Section):
    """The central service: where the gateway uploads (``[upstream]``) and
    where device keys come from. Without ``keys`` the outlet runs as a pilot:
    ``init`` keeps a master key of its own (``pilot/master.key``) and
    derives every device's key from it as the platform would."""

    url: Annotated[str, Field(min_length=1)] | None = None
    username: str = ""
    password: str = ""
    ca_file: Annotated[str, Field(min_length=1)] | None = None
    keys: Annotated[str, Field(min_length=1)] | None = None
    notifier_keys: Annotated[str, Field(min_length=1)] | None = None


class Broker(Section):
    # Not 1883: Debian's own mosquitto.service listens there.
    port: Annotated[int, Field(ge=1, le=65535)] = 1884
    tls_port: Annotated[int, Field(ge=1, le=65535)] = 8883
    listen: Annotated[str, Field(min_length=1)] = "0.0.0.0"


class Web(Section):
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    lang: Literal[LANGS] = "zh"  # type: ignore[valid-type]


class OutletSpec(Section):
    outlet: DeviceId
    # The box's LAN address devices and the clerk reach; unset: found at init.
    address: Annotated[str, Field(min_length=1)] | None = None
    central: Central = Central()
    broker: Broker = Broker()
    web: Web = Web()
    lockers: list[Locker] = []
    scanners: list[Scanner] = []
    handhelds: list[Handheld] = []
    # Passed to gateway.toml's [counter] as is (gateway/config.py CounterConfig).
    counter: dict[str, Any] | None = None

    _outlet = field_validator("outlet")(_segment)

    def devices(self) -> list[tuple[str, str]]:
        """(id, kind) of every device, in file order."""
        return ([(d.id, "locker") for d in self.lockers] + [(d.id, "scanner") for d in self.scanners]
                + [(d.id, "handheld") for d in self.handhelds])

    @model_validator(mode="after")
    def _unique(self) -> OutletSpec:
        seen: set[str] = set()
        for dev, kind in self.devices():
            if dev in seen:
                raise KeyProblem(f"{kind}s", Problem("device_twice", device=dev))
            seen.add(dev)
        if not seen:
            raise KeyProblem("lockers", Problem("no_devices"))
        if self.broker.port == self.broker.tls_port:
            raise KeyProblem("broker", Problem("ports_same"))
        return self


def load(path: Path) -> OutletSpec:
    """The description at ``path``; ConfigError naming the file and the key."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(problem=Problem("cannot_read", path=path, why=e)) from e
    try:
        spec = parse(OutletSpec, data, "")
        if spec.counter is not None:
            from gateway.config import CounterConfig

            parse(CounterConfig, spec.counter, "counter")
        return spec
    except ConfigError as e:
        raise e.within(path) from None
