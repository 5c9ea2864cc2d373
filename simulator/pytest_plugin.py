"""pytest plugin: a whole simulated outlet as fixtures, so testers write scenarios as tests.

Registered through the ``pytest11`` entry point (``postedge_sim``), so any test file in
an environment where postedge is installed can ask for the fixtures, with no conftest::

    import pytest

    def test_pickup(outlet):
        parcel = outlet.new_parcel()
        outlet.deposit("lk01", parcel, size="S")
        outlet.pickup("lk01", parcel)           # with the code the locker issued
        assert outlet.settle()                  # every event reached the platform
        assert outlet.verdict()["ok"], outlet.summary()

    @pytest.mark.outlet(lockers=1, compartments=4, proxy=True)
    def test_acks_lost(outlet, faults, locker):
        with faults.mqtt("drop", packet="PUBACK", p=0.5):
            locker.deposit(outlet.new_parcel())
        assert outlet.settle() and outlet.ledger()["ok"]

Fixtures: ``outlet`` (:class:`SimOutlet`), ``locker`` (:class:`LockerHandle`, the first
locker), ``faults`` (:class:`FaultInjector`), ``handheld`` (:class:`SimHandheld`, ``hh01``) and
``sim_scenario`` (a factory that runs a whole scenario and returns its result dict).

Why step by step rather than ``Outlet.run()``: a scenario file describes a day of
seeded random traffic, which is the right tool for soak and regression runs, but a
tester chasing one bug wants "deposit, cut the WAN, deposit again, bring it back,
check" with ordinary asserts between the steps. So the plugin brings the outlet up
(broker, gateway process, the real central service over HTTPS behind a WAN link, the real firmware in
process), provisions the courier badge, and then hands the tester a synchronous API.

Threads. The in-process firmware are asyncio tasks; the outlet's event loop runs in
a background thread owned by the fixture, and every call that touches a device is
shipped to it with ``asyncio.run_coroutine_threadsafe``, so a test never needs to be
async and never blocks the devices between its steps. Waiting in the test (``settle``)
waits in the loop, with the devices running.

Heavy imports (the runner pulls in the gateway, paho and the firmware) happen only
when a fixture is used: the plugin is loaded into every pytest run in the
environment and must cost nothing to the tests that do not use it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import random
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from simulator.handheld_sim import SimHandheld as BaseSimHandheld

if TYPE_CHECKING:
    from simulator.assembly import Outlet
    from simulator.faultproxy import FaultProxy, Rule
    from simulator.ledger import DomainReport
    from simulator.scenario import Scenario

T = TypeVar("T")

#: Marker keys that are not Scenario fields.
EXTRA_KEYS = ("proxy", "scenario", "start_timeout")
#: Scenario fields a marker may not set (they describe a whole run, not a test's outlet).
NOT_FROM_MARKER = ("faults", "expect", "path")
COURIER = "c001"
#: Faults that last until undone (the others are instants in the report).
WINDOW_FAULTS = ("wan_down", "mqtt", "power_cut")

_OUTLET_KEY = pytest.StashKey["SimOutlet"]()


class SimActionError(AssertionError):
    """A tester's step could not be done (device down, no code for the parcel, timeout)."""


# --------------------------------------------------------------------------- the loop
class _LoopThread:
    """One asyncio loop in a daemon thread: where the outlet's devices live."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Run a coroutine in the loop and wait for it here; a timeout cancels it there."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise SimActionError(f"timed out after {timeout} s") from None

    def run(self, fn: Callable[..., T], *args: Any, timeout: float | None = 60) -> T:
        """Run a plain function in the loop thread (device state is only touched there)."""

        async def once() -> T:
            return fn(*args)

        return self.call(once(), timeout)

    def stop(self) -> None:
        async def drain() -> None:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(drain(), 20)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


# --------------------------------------------------------------------------- outlet
class SimOutlet:
    """A running outlet driven step by step from a synchronous test.

    ``outlet`` is the runner's :class:`simulator.assembly.Outlet` (everything is reachable
    from it: ``central``, ``gw``, ``broker``, ``link``, ``proxy``, ``devices``, ``obs``)."""

    def __init__(self, sc: Scenario, workdir: Path, proxy: bool = False, handhelds: int = 0) -> None:
        from simulator.assembly import Outlet

        self.sc = sc
        self.dir = workdir
        self.outlet: Outlet = Outlet(sc, workdir, proxy=proxy, handhelds=handhelds)
        self.loop = _LoopThread(f"postedge-sim-{sc.name}")
        self.handhelds: dict[str, SimHandheld] = {}
        self._rng = random.Random(sc.seed)
        self._parcels: set[str] = set()
        self._wall0 = time.monotonic()
        self._closed = False

    # ---------------------------------------------------------------- life
    def start(self, timeout: float = 90) -> SimOutlet:
        """Broker, central service, gateway and devices up; courier badges provisioned."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.outlet.start()  # blocking (processes, certificates): not in the loop
        self.loop.run(self.outlet.boot_all)  # the firmware's tasks belong to the loop
        self.loop.call(self.outlet.provision(timeout), timeout + 5)
        self._wall0 = time.monotonic()
        return self

    def close(self) -> None:
        """Everything down, in the loop, then the loop itself; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for hh in list(self.handhelds.values()):
            with contextlib.suppress(Exception):
                hh.close()
        try:
            self.loop.call(self.outlet.close(), 60)
        except Exception:  # noqa: BLE001 - a broken outlet still has to free its ports and threads
            pass
        self.loop.stop()

    # ---------------------------------------------------------------- names and time
    @property
    def lockers(self) -> list[str]:
        return [n for n in self.outlet.devices if n.startswith("lk")]

    @property
    def scanners(self) -> list[str]:
        return [n for n in self.outlet.devices if n.startswith("sc")]

    @property
    def central(self) -> Any:
        """The real central service (:class:`simulator.central.CentralService`): ``held(outlet)``,
        ``received_at(outlet)``, ``photos()``, ``notices(outlet)``, ``push_command``."""
        return self.outlet.central

    @property
    def proxy(self) -> FaultProxy | None:
        return self.outlet.proxy

    def device(self, name: str) -> Any:
        try:
            return self.outlet.devices[name]
        except KeyError:
            raise SimActionError(f"no device {name!r} (have {', '.join(self.outlet.devices)})") from None

    def now(self) -> int:
        """The outlet's virtual Unix time."""
        return self.outlet.clock.time()

    @property
    def t(self) -> float:
        """Virtual seconds since the scenario's start."""
        return self.outlet.t_virtual

    def advance(self, hours: float = 0.0, *, seconds: float = 0.0) -> float:
        """Move the virtual clock forward (pickup codes expire, overdue parcels show)."""
        if hours < 0 or seconds < 0:
            raise ValueError("the clock only moves forward")

        def move() -> float:
            o = self.outlet
            o.t_virtual += hours * 3600.0 + seconds
            o.clock.set(self.sc.start + o.t_virtual)
            return o.t_virtual

        return self.loop.run(move)

    def new_parcel(self) -> str:
        """A fresh, valid S10 parcel id (seeded: the same test gives the same ids)."""
        from simulator.workload import s10_id

        while True:
            p = s10_id(self._rng)
            if p not in self._parcels:
                self._parcels.add(p)
                return p

    # ---------------------------------------------------------------- actions
    def _running(self, name: str) -> Any:
        dev = self.device(name)
        if dev.app is None or dev.task is None:
            raise SimActionError(f"{name} is powered off (faults.power_on / locker.boot)")
        return dev

    def deposit(self, locker: str, parcel: str, size: str = "M", courier: str = COURIER,
                timeout: float = 20) -> int:
        """A courier badges in, deposits ``parcel`` and logs out; returns the compartment.
        A refusal raises the firmware's ``FlowError`` (``.code``: full, already_in_locker...)."""
        from simulator.assembly import BADGE_SECRET

        dev = self._running(locker)

        async def go() -> int:
            lk = dev.app
            lk.courier_login(f"PE-C:{courier}:{BADGE_SECRET}")
            try:
                cid = await asyncio.wait_for(lk.deposit(parcel, size), timeout)
                self.outlet.stats["deposit"] += 1
                return int(cid)
            finally:
                lk.courier_logout()

        return self.loop.call(go(), timeout + 5)

    def code(self, parcel: str) -> str | None:
        """The pickup code the locker issued for ``parcel`` (seen in its deposit event)."""
        with self.outlet.obs.lock:
            return self.outlet.obs.codes.get(parcel)

    def pickup(self, locker: str, parcel: str, code: str | None = None, timeout: float = 20) -> int:
        """The recipient types the code the locker issued (or ``code``); returns the compartment.
        A wrong code raises ``FlowError('wrong_code')``."""
        if code is None:
            code = self.code(parcel)
            if code is None:
                raise SimActionError(f"no pickup code was issued for {parcel}")
        dev = self._running(locker)

        async def go() -> int:
            cid = await asyncio.wait_for(dev.app.pickup(code), timeout)
            self.outlet.stats["pickup"] += 1
            return int(cid)

        return self.loop.call(go(), timeout + 5)

    def intake(self, scanner: str, parcel: str, symbology: str = "code128",
               timeout: float = 5) -> list[dict[str, Any]]:
        """A clerk scans ``parcel`` at a counter scanner; returns the events it emitted."""
        dev = self._running(scanner)
        before = set(self.events_ids(scanner))

        async def go() -> None:
            n0 = sum(dev.app.counts.values())
            dev.engine.present(parcel, symbology)
            deadline = time.monotonic() + timeout
            while sum(dev.app.counts.values()) == n0:
                if time.monotonic() > deadline:
                    raise SimActionError(f"{scanner} did not read {parcel} within {timeout} s")
                await asyncio.sleep(0.005)
            self.outlet.stats["intake"] += 1

        self.loop.call(go(), timeout + 5)
        return [e for e in self.events(scanner) if e["id"] not in before]

    def power_cut(self, device: str) -> None:
        """RAM and tasks gone at once; flash stays. The device stays off until ``boot``."""
        dev = self.device(device)
        self.loop.call(dev.power_cut(), 30)
        self._log_fault("power_cut", device)

    def boot(self, device: str) -> None:
        dev = self.device(device)
        if dev.task is not None:
            raise SimActionError(f"{device} is already running")
        self.loop.run(dev.boot)
        self._log_fault("power_cut", device, start=False)

    def _log_fault(self, kind: str, detail: str = "", start: bool = True) -> None:
        rec = {"t": self.t, "kind": kind, "start": start, "detail": detail}
        self.outlet.faults_log.append(rec)
        self.outlet.log("fault", **rec)

    # ---------------------------------------------------------------- observation
    def _record_device(self, device: str, topic: str, payload: bytes) -> None:
        """A non-firmware device (a handheld) emitted: the ledger's ``device`` hop."""
        self.loop.run(self.outlet.device_tap.emitted, device, topic, payload)

    def events(self, device: str | None = None, type: str | None = None) -> list[dict[str, Any]]:
        """Events as they entered the devices' outboxes, in emission order."""
        with self.outlet.obs.lock:
            evs = list(self.outlet.obs.events.values())
        return [e for e in evs if (device is None or e["id"].split(":")[0] == device)
                and (type is None or e["type"] == type)]

    def events_ids(self, device: str | None = None) -> list[str]:
        return [e["id"] for e in self.events(device)]

    def central_events(self, type: str | None = None) -> list[dict[str, Any]]:
        """What the platform holds (first copy of each id), gateway heartbeats left out."""
        evs = self.outlet.central.held(self.outlet.outlet_id).values()
        return [e for e in evs if not e["id"].startswith("gw-") and (type is None or e["type"] == type)]

    def missing(self) -> list[str]:
        """Ids emitted by a device that the platform has not received (yet)."""
        with self.outlet.obs.lock:
            want = list(self.outlet.obs.emitted)
        have = self.outlet.central.received_at(self.outlet.outlet_id)
        return [e for e in want if e not in have]

    def settle(self, timeout: float = 60) -> bool:
        """Wait (devices running) until every emitted event reached the platform;
        True if it did. With the WAN down this waits out the timeout and says False."""
        from simulator.settling import settle

        self.loop.call(settle(self.outlet, timeout), timeout + 30)
        return not self.missing()

    def wait_for(self, pred: Callable[[], bool], timeout: float = 10, interval: float = 0.05) -> bool:
        """Poll ``pred`` while the devices run; True once it holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(interval)
        return bool(pred())

    # ---------------------------------------------------------------- verdict
    def result(self) -> dict[str, Any]:
        """The runner's run-result dict, as of now; may be called any number of times.

        ``simulator.results.run_result`` records the gateway and central hops into the ledger
        each time it runs, which is right once at the end of a run but would count every
        event twice on a second call; so it runs on a copy of the ledger, in the loop
        (where the firmware's taps write), and the live ledger is left as it was."""
        from simulator.ledger import Ledger, check_domain
        from simulator.results import run_result

        o = self.outlet

        def compute() -> dict[str, Any]:
            live = o.ledger
            copy = Ledger(live.hops, tolerate=live.tolerate)
            with live._lock:  # the ledger has no public copy; its lists are ours to read
                for h in live.hops:
                    copy._obs[h] = list(live._obs[h])
            o.ledger = copy
            try:
                return run_result(o, time.monotonic() - self._wall0)
            finally:
                o.ledger = live

        res = self.loop.run(compute, timeout=120)
        res["faults"] = res.get("faults", []) + self._fault_windows()
        photos = self.photos_submitted()
        if photos and o.sc.expect.get("domain", True):
            # The runner knows nothing of the handhelds' submissions; with them the photo
            # rule can also say "lost" and "unexpected", not only "twice".
            dom = check_domain(self.central_events(), photos_submitted=photos, complete=False)
            res["domain"] = dom.as_dict()
            for x in res["expectations"]:
                if x["name"] == "domain_ok":
                    x["ok"], x["detail"] = dom.ok, "" if dom.ok else dom.summary()
            failures = [x["name"] for x in res["expectations"] if not x["ok"]]
            res["verdict"] = {"ok": not failures, "failures": failures}
        return res

    def _fault_windows(self) -> list[dict[str, Any]]:
        """The faults this test injected, as the report's windows: a start and its end
        (same kind and detail) make one window; one still open runs to now."""
        out: list[dict[str, Any]] = []
        open_: dict[tuple[str, str], dict[str, Any]] = {}
        for rec in list(self.outlet.faults_log):
            key = (rec["kind"], rec["detail"])
            if rec["start"]:
                w = {"t": rec["t"], "until": rec["t"], "kind": rec["kind"], "detail": rec["detail"]}
                out.append(w)
                if rec["kind"] in WINDOW_FAULTS:
                    w["until"] = None
                    open_[key] = w
            elif key in open_:
                open_.pop(key)["until"] = rec["t"]
        for w in open_.values():
            w["until"] = self.t
        return out

    def ledger(self) -> dict[str, Any]:
        """The delivery ledger's report (``["ok"]``, ``["end_to_end"]["lost"]``, per hop)."""
        return self.result()["ledger"]

    def domain(self, complete: bool = False) -> DomainReport:
        """Parcel, compartment, door and photo rules over what the platform holds.
        ``complete=True`` also fails parcels still inside and doors never closed."""
        from simulator.ledger import check_domain

        photos = self.photos_submitted() or None
        return check_domain(self.central_events(), photos_submitted=photos, complete=complete)

    def verdict(self) -> dict[str, Any]:
        """``{"ok": bool, "failures": [...]}``: ledger and domain, as the runner judges a run."""
        return self.result()["verdict"]

    def summary(self, lang: str = "en", result: dict[str, Any] | None = None) -> str:
        """The run in a screenful (verdict, ledger per hop with lost ids, domain rules)."""
        from simulator.report import summary

        return summary(result if result is not None else self.result(), lang=lang)

    def photos_submitted(self) -> list[str]:
        return [sha for hh in self.handhelds.values() for sha in hh.submitted]


# --------------------------------------------------------------------------- devices
class LockerHandle:
    """One locker of the outlet, for tests about that locker."""

    def __init__(self, sim: SimOutlet, name: str) -> None:
        self.sim = sim
        self.name = name

    @property
    def device(self) -> Any:
        """The runner's :class:`simulator.inproc.SimLocker`."""
        return self.sim.device(self.name)

    @property
    def app(self) -> Any:
        """The real firmware object (:class:`firmware.locker.app.Locker`); None while off."""
        return self.device.app

    @property
    def bus(self) -> Any:
        """The simulated lock-board bus (:class:`simulator.lockboard_sim.Sim8ABus`)."""
        return self.device.bus

    @property
    def online(self) -> bool:
        return self.device.task is not None

    def deposit(self, parcel: str | None = None, size: str = "M", courier: str = COURIER) -> int:
        """Deposit ``parcel`` (a fresh one when None); returns the compartment."""
        return self.sim.deposit(self.name, parcel or self.sim.new_parcel(), size, courier)

    def pickup(self, parcel: str, code: str | None = None) -> int:
        return self.sim.pickup(self.name, parcel, code)

    def power_cut(self) -> None:
        self.sim.power_cut(self.name)

    def boot(self) -> None:
        self.sim.boot(self.name)

    def compartments(self) -> list[dict[str, Any]]:
        """A copy of the compartment table (``id``, ``size``, ``state``, ``parcel``...)."""
        app = self.app
        if app is None:
            raise SimActionError(f"{self.name} is powered off")
        return self.sim.loop.run(lambda: [dict(c) for c in app.comps.all()])

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        return self.sim.events(self.name, type)


class SimHandheld(BaseSimHandheld):
    """A courier handheld on the outlet broker (``simulator/handheld_sim.py``: the app's own
    SQLite outbox and MQTT link), registered with the outlet so its events are followed by
    the ledger from the outbox on and its photos feed the photo rule."""

    def __init__(self, sim: SimOutlet, name: str = "hh01", connect_timeout: float = 15) -> None:
        from simulator.assembly import OUTLET

        o = sim.outlet
        port = o.proxy.port if o.proxy is not None else o.broker.port
        super().__init__(name, OUTLET, sim.dir / "handheld" / name, "127.0.0.1", port, f"{name}-pw",
                         sim.now, tap=sim._record_device)
        self.sim = sim
        sim.handhelds[name] = self
        if not sim.wait_for(lambda: self.link.connected, connect_timeout):
            raise SimActionError(f"{name} could not connect to the broker: {self.link.last_error}")

    def photo(self, job: str = "job-1", site: str = "site-1", data: bytes | None = None,  # type: ignore[override]
              step: str = "photo") -> str:
        """A bulletin-board evidence photo: a ``handheld.photo`` event with the image's
        SHA-256 (of ``data``, or of fresh random bytes); returns the hash."""
        blob = data if data is not None else random.Random(f"{self.name}-{len(self.submitted)}").randbytes(64)
        sha = hashlib.sha256(blob).hexdigest()
        self.emit("handheld.photo", "audit", {"job": job, "site": site, "step": step, "sha256": sha})
        self.submitted.append(sha)
        return sha

    def close(self) -> None:
        super().close()
        self.sim.handhelds.pop(self.name, None)


# --------------------------------------------------------------------------- faults
class RuleHandle:
    """An MQTT fault rule in the proxy: active from creation until ``remove`` or the
    end of its ``with`` block."""

    def __init__(self, sim: SimOutlet, rule: Rule) -> None:
        self.sim = sim
        self.rule = rule
        self.active = True

    def remove(self) -> None:
        if self.active and self.sim.proxy is not None:
            self.sim.proxy.remove_rule(self.rule)
            self.sim._log_fault("mqtt", self.rule.action, start=False)
        self.active = False

    @property
    def fired(self) -> int:
        return self.rule.fired

    @property
    def matched(self) -> int:
        return self.rule.matched

    def __enter__(self) -> RuleHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class FaultInjector:
    """Faults injected now, at the outlet's current virtual time; each is logged in the
    run result's faults, like the scenario's timed ones."""

    def __init__(self, sim: SimOutlet) -> None:
        self.sim = sim

    def _apply(self, kind: str, starting: bool = True, **kw: Any) -> None:
        from simulator.injection import inject
        from simulator.scenario import Fault

        f = Fault(kind, at_h=self.sim.t / 3600.0, **kw)
        self.sim.loop.call(inject(self.sim.outlet, f, starting), 120)

    def wan_down(self) -> None:
        """The gateway's uplink to the platform stops carrying bytes."""
        self._apply("wan_down", True)

    def wan_up(self) -> None:
        self._apply("wan_down", False)

    @contextlib.contextmanager
    def wan_outage(self) -> Iterator[None]:
        """``with faults.wan_outage(): ...`` - the WAN is down inside the block."""
        self.wan_down()
        try:
            yield
        finally:
            self.wan_up()

    def broker_restart(self) -> None:
        """Mosquitto stopped and started again (same port, its persistence kept)."""
        self._apply("broker_restart")

    def gateway_kill(self) -> None:
        """SIGKILL the gateway process and start a new one on the same database."""
        self._apply("gateway_kill")

    def power_cut(self, device: str, boot: bool = True) -> None:
        """Power cut: RAM and tasks gone, flash kept; booted again at once unless ``boot=False``
        (then ``power_on``)."""
        self.sim.power_cut(device)
        if boot:
            self.sim.boot(device)

    def power_on(self, device: str) -> None:
        self.sim.boot(device)

    def clock_skew(self, device: str, seconds: int) -> None:
        """The device's RTC runs ``seconds`` off the outlet's clock (0 puts it right)."""
        self.sim.device(device)
        self._apply("clock_skew", True, device=device, skew_s=int(seconds))

    def mqtt(self, action: str, packet: str | tuple[str, ...] | None = "PUBLISH", topic: str | None = None,
             p: float = 1.0, direction: str | None = None, delay_ms: float = 0.0, every: int | None = None,
             limit: int | None = None) -> RuleHandle:
        """A fault proxy rule on the device links (drop, delay, duplicate, reorder, cut),
        active at once; use it as a context manager or call ``.remove()``."""
        from simulator.faultproxy import Rule

        proxy = self.sim.proxy
        if proxy is None:
            raise SimActionError("no fault proxy: mark the test @pytest.mark.outlet(proxy=True)")
        rule = Rule(action, direction=direction, kinds=packet, topic=topic, p=p, every=every,
                    limit=limit, delay_ms=delay_ms, seed=self.sim.sc.seed)
        proxy.add_rule(rule)
        self.sim._log_fault("mqtt", action)
        return RuleHandle(self.sim, rule)


# --------------------------------------------------------------------------- pytest wiring
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "outlet(**fields): the simulated outlet for the `outlet` fixture - Scenario fields "
        "(lockers, compartments, scanners, handhelds, seed, name, start, mode, poll_ms, ...), "
        "proxy=True for MQTT faults, scenario=<Scenario or path> as the base",
    )


def _scenario_for(request: pytest.FixtureRequest) -> tuple[Scenario, dict[str, Any]]:
    from simulator.scenario import Scenario, load

    kw: dict[str, Any] = {}
    for m in reversed(list(request.node.iter_markers("outlet"))):  # the closest marker wins
        if m.args:
            raise pytest.UsageError("@pytest.mark.outlet takes keyword arguments only")
        kw.update(m.kwargs)
    extra = {k: kw.pop(k) for k in EXTRA_KEYS if k in kw}
    fields = {f.name for f in dataclasses.fields(Scenario)} - set(NOT_FROM_MARKER)
    bad = sorted(set(kw) - fields)
    if bad:
        known = ", ".join(sorted(fields | set(EXTRA_KEYS)))
        raise pytest.UsageError(f"@pytest.mark.outlet: unknown {', '.join(bad)} (known: {known})")
    base = extra.get("scenario")
    if isinstance(base, str | Path):
        base = load(base)
    if base is None:
        name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in request.node.name)[:60]
        base = Scenario(name=name or "pytest", seed=1, lockers=2, scanners=1, parcels=0)
    return dataclasses.replace(base, **kw), extra


@pytest.fixture
def outlet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SimOutlet]:
    """A started, provisioned outlet (2 lockers, 1 scanner by default; see the marker)."""
    sc, extra = _scenario_for(request)
    names = request.fixturenames
    if "handheld" in names and sc.handhelds < 1:
        sc = dataclasses.replace(sc, handhelds=1)
    proxy = bool(extra.get("proxy", "faults" in names))
    sim = SimOutlet(sc, tmp_path / "outlet", proxy=proxy, handhelds=sc.handhelds)
    request.node.stash[_OUTLET_KEY] = sim
    try:
        sim.start(float(extra.get("start_timeout", 90)))
        yield sim
    finally:
        sim.close()


@pytest.fixture
def locker(outlet: SimOutlet) -> LockerHandle:
    """The outlet's first locker (``lk01``)."""
    if not outlet.lockers:
        raise pytest.UsageError("the `locker` fixture needs an outlet with lockers >= 1")
    return LockerHandle(outlet, outlet.lockers[0])


@pytest.fixture
def faults(outlet: SimOutlet) -> FaultInjector:
    """Inject faults into ``outlet`` now (with this fixture the outlet gets a fault proxy)."""
    return FaultInjector(outlet)


@pytest.fixture
def handheld(outlet: SimOutlet) -> Iterator[SimHandheld]:
    """A courier handheld ``hh01`` connected to the outlet broker."""
    hh = SimHandheld(outlet, "hh01")
    try:
        yield hh
    finally:
        hh.close()


@pytest.fixture
def sim_scenario(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``sim_scenario(path_or_Scenario, **overrides)`` runs a whole scenario (as
    ``postedge sim run`` does) in a fresh directory and returns the result dict."""
    from simulator.runner import run_scenario
    from simulator.scenario import Scenario, load

    n = 0

    def run(scenario: Scenario | str | Path, **overrides: Any) -> dict[str, Any]:
        nonlocal n
        sc = scenario if isinstance(scenario, Scenario) else load(scenario)
        if overrides:
            sc = dataclasses.replace(sc, **overrides)
        n += 1
        return run_scenario(sc, tmp_path / f"scenario-{n}")

    return run


#: Debian's chromium (scripts/setup installs it); Playwright drives it, never a downloaded browser.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Playwright ``Browser`` on Debian's chromium, one per test module, for
    page tests (the gateway's status page, the handheld UI, the simulator's report and
    dashboard). Tests that use it are marked ``browser``."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failed test that used ``outlet``, the outlet's summary goes in the report
    (a section like captured output) and its result is saved next to the workdir, so the
    failure says which hop lost what without a rerun."""
    outcome = yield
    rep = outcome.get_result()
    sim = item.stash.get(_OUTLET_KEY, None)
    if sim is None or call.when != "call" or not rep.failed or sim._closed:
        return
    try:
        import json

        res = sim.result()
        path = sim.dir / "result.json"
        path.write_text(json.dumps(res, ensure_ascii=False))
        text = sim.summary("en", res) + f"\n\nresult: {path}\n"
    except Exception as e:  # noqa: BLE001 - the report must not hide the test's own failure
        text = f"(no outlet summary: {type(e).__name__}: {e})"
    rep.sections.append(("postedge outlet", text))
