"""``postedge sim run``: one outlet, from a scenario, with faults, checked.

What comes up (all real, on loopback): Mosquitto for the outlet, the
gateway process from issue 4 syncing over HTTPS to the central stub through
a WAN link that can go down, an MQTT fault proxy between the devices and the
broker when the scenario asks for packet faults, and the devices: the real
locker and counter firmware running in this process on the CPython HAL
(``simulator/inproc.py``), with simulated lock boards and scan engines.

Time. In virtual mode the scenario's clock jumps from one action window to
the next (``window_min``), and every device reads its wall time from it, so a
day takes seconds; actions in one window run concurrently across devices and
in order on each device. In real mode the windows are paced by the wall
clock (``speed``).

The ledger follows every event id hop by hop: ``device`` (as it enters the
device's flash outbox), ``broker`` (a persistent QoS 1 subscriber on the
outlet broker), ``gateway`` (its SQLite store) and ``central`` (what the
platform received, duplicates included). The domain rules run over what the
central side holds. The trace hash covers the events' content (device, type,
body without times or incarnation), so the same scenario and seed give the
same hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from firmware.device import FlowError
from firmware.locker import codes as C
from gateway.broker import Account, Mosquitto, find_mosquitto, free_port
from gateway.store.events import EventStore
from protocol import envelope, signing, topics
from protocol.canonical import dumps
from simulator.central import Central, CentralHttps, Link, make_certs
from simulator.faultproxy import FaultProxy, Rule
from simulator.gateway_process import GatewayProcess
from simulator.handheld_sim import SimHandheld
from simulator.inproc import SimClock, SimCounter, SimDevice, SimLocker, restore_gc, tune_gc
from simulator.ledger import Ledger, check_domain
from simulator.pybroker import AmqttBroker, amqtt_version
from simulator.scenario import Fault, Scenario
from simulator.unix_locker import FlowRefused, UnixLocker
from simulator.workload import Action, generate

OUTLET = "o1"
KEY = hashlib.sha256(b"postedge simulator platform key").digest()
BADGE_SECRET = "sim-badge"
TIME_KEYS = ("expires", "deposited", "t", "at", "ts", "since", "until", "reserved_until", "exp")
HOPS = ("device", "broker", "gateway", "central")


def broker_name() -> str:
    try:
        out = subprocess.run([find_mosquitto(), "-h"], capture_output=True, text=True, timeout=5).stdout
        first = out.splitlines()[0] if out else "mosquitto"
        return first.replace("mosquitto version", "mosquitto").strip()
    except (OSError, RuntimeError, IndexError, subprocess.SubprocessError):
        return "mosquitto"


def _strip(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _strip(x) for k, x in v.items() if k not in TIME_KEYS}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


def trace_hash(events: list[dict[str, Any]]) -> str:
    """Content of the run, order- and time-free: the same seed, the same hash."""
    rows = sorted(
        dumps({"d": e["id"].split(":")[0], "type": e["type"], "body": _strip(e["body"])}) for e in events
    )
    return hashlib.sha256(b"\n".join(rows)).hexdigest()


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


@dataclass
class Observed:
    """What the taps saw, with real times, for the ledger and latency."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    emitted: dict[str, float] = field(default_factory=dict)
    broker_seen: dict[str, float] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # device-side copy, by id
    codes: dict[str, str] = field(default_factory=dict)  # parcel -> pickup code
    online: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    alarms: list[dict[str, Any]] = field(default_factory=list)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)  # retained state documents


class BrokerTap:
    """A persistent QoS 1 subscriber on the outlet broker: the ledger's
    ``broker`` hop and the devices' presence."""

    def __init__(self, port: int, ledger: Ledger, obs: Observed, vt: Callable[[], float]) -> None:
        self.ledger = ledger
        self.obs = obs
        self.vt = vt
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="sim-tap", clean_session=False, protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set("sim-tap", "sim-tap-pw")
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(
            [(topics.subscription(OUTLET, ch), 1) for ch in ("evt", "presence", "state")]
        )
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if msg.topic.endswith("/state"):
            # What a device process says about itself (a unix-port locker's compartments).
            try:
                doc = json.loads(msg.payload)
            except ValueError:
                return
            with self.obs.lock:
                self.obs.states[msg.topic.split("/")[4]] = doc
            return
        if msg.topic.endswith("/presence"):
            dev = msg.topic.split("/")[4]
            with self.obs.lock:
                spans = self.obs.online[dev]
                if msg.payload == b"online" and (not spans or spans[-1][1] is not None):
                    spans.append([self.vt(), None])
                elif msg.payload == b"offline" and spans and spans[-1][1] is None:
                    spans[-1][1] = self.vt()
            return
        try:
            env = envelope.decode(msg.payload)
        except Exception:  # noqa: BLE001 - counted by the ledger as never arriving
            return
        self.ledger.record("broker", env["id"], now)
        with self.obs.lock:
            self.obs.broker_seen.setdefault(env["id"], now)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Outlet:
    """Everything a scenario runs, brought up in ``start`` and down in ``close``."""

    def __init__(
        self,
        sc: Scenario,
        workdir: Path,
        log: Callable[..., None] | None = None,
        proxy: bool = False,
        handhelds: int = 0,
        broker: str = "auto",
    ) -> None:
        """``broker``: "mosquitto", "amqtt" (``simulator/pybroker.py``) or "auto" (Mosquitto
        when installed, else amqtt). ``proxy`` puts the fault proxy in front of the broker even
        when no scenario fault needs it (the pytest plugin injects MQTT faults mid-test);
        ``handhelds`` adds broker accounts ``hh01``... for simulated courier handhelds."""
        self.sc = sc
        self.want_proxy = proxy
        if broker not in ("auto", "mosquitto", "amqtt"):
            raise ValueError(f"broker must be auto, mosquitto or amqtt, got {broker!r}")
        if broker == "auto":
            try:
                find_mosquitto()
                broker = "mosquitto"
            except FileNotFoundError:
                broker = "amqtt"
        self.broker_kind = broker
        self.handhelds = max(handhelds, sc.handhelds)
        self.hh: dict[str, SimHandheld] = {}
        self.web_port = 0
        self.dir = workdir
        self.log = log or (lambda evt, **kw: None)
        self.clock = SimClock(sc.start if sc.mode == "virtual" else None)
        self.t0_real = time.time()
        # QoS 1 may deliver twice before the gateway dedups; the uplink's two lanes (alarms and
        # status first) reorder by design, and the central side orders by sequence number.
        self.ledger = Ledger(
            HOPS,
            tolerate={
                "broker": {"duplicated"},
                "gateway": {"duplicated"},
                # resent after a gateway SIGKILL; the platform keeps one copy by id
                "central": {"reordered", "duplicated"},
                "end_to_end": {"reordered", "duplicated"},
            },
        )
        self.obs = Observed()
        self.central = Central()
        self.devices: dict[str, SimDevice] = {}
        self.faults_log: list[dict[str, Any]] = []
        self.backlog: list[list[float]] = []
        self.stats: Counter[str] = Counter()
        self.proxy: FaultProxy | None = None
        self.disk: Path | None = None
        self.t_virtual = 0.0
        self.progress = 0.0

    # ---------------------------------------------------------------- up
    def vt(self) -> float:
        return self.t_virtual

    def _tap(self, device: str, topic: str, payload: bytes) -> None:
        now = time.time()
        try:
            env = envelope.decode(payload)
        except Exception:  # noqa: BLE001
            return
        self.ledger.record("device", env["id"], now)
        with self.obs.lock:
            self.obs.emitted[env["id"]] = now
            self.obs.events[env["id"]] = env
            b = env["body"]
            if env["type"] == "locker.deposit" and "code" in b:
                self.obs.codes[b["parcel"]] = b["code"]
            elif env["type"].endswith(".alarm"):
                self.obs.alarms.append({"t": self.t_virtual, "device": device, **b})

    def _unix_event(self, device: str, d: dict[str, Any]) -> None:
        """An event a unix-port locker logged as it entered its outbox."""
        now = time.time()
        env = {
            "id": d["id"],
            "type": d["type"],
            "cls": d["cls"],
            "body": d.get("body") or {},
            "ts": int(self.sc.start + self.t_virtual),
        }
        self.ledger.record("device", env["id"], now)
        b = env["body"]
        with self.obs.lock:
            self.obs.emitted[env["id"]] = now
            self.obs.events[env["id"]] = env
            if env["type"] == "locker.deposit" and "code" in b:
                self.obs.codes[b["parcel"]] = b["code"]
            elif env["type"].endswith(".alarm"):
                self.obs.alarms.append({"t": self.t_virtual, "device": device, **b})
        if (
            env["type"] == "locker.audit"
            and b.get("what") == "command"
            and b.get("result") == "ok"
            and b.get("id") == f"cred-{device}"
        ):
            dev = self.devices.get(device)
            if isinstance(dev, UnixLocker):
                dev.couriers.add("c001")

    def start(self) -> None:
        sc = self.sc
        names = [f"lk{i + 1:02d}" for i in range(sc.lockers)] + [f"sc{i + 1:02d}" for i in range(sc.scanners)]
        accounts = [
            Account("gw-o1", "gw-secret", OUTLET, "gateway"),
            Account("sim-tap", "sim-tap-pw", OUTLET, "gateway"),
        ]
        accounts += [
            Account(n, f"{n}-pw", OUTLET, "locker" if n.startswith("lk") else "scanner") for n in names
        ]
        hh = [f"hh{i + 1:02d}" for i in range(self.handhelds)]
        accounts += [Account(n, f"{n}-pw", OUTLET, "handheld") for n in hh]
        if self.broker_kind == "amqtt":
            self.broker: Mosquitto | AmqttBroker = AmqttBroker(self.dir / "broker", accounts)
        else:
            self.broker = Mosquitto(self.dir / "broker", accounts)
        self.broker.start()
        port = self.broker.port
        if self.want_proxy or any(f.kind == "mqtt" for f in sc.faults):
            self.proxy = FaultProxy("127.0.0.1", self.broker.port)
            self.proxy.start()
            port = self.proxy.port
        certs = make_certs(self.dir / "pki")
        self.https = CentralHttps(self.central, certs.server_cert, certs.server_key).up()
        self.link = Link(self.https.port).up()
        self.gw_cfg = self.dir / "gateway.toml"
        self.gw_db = self.dir / "gateway.db"
        if any(f.kind == "disk_full" for f in sc.faults):
            self.gw_db = self.mount_gateway_disk() / "gateway.db"
        if hh:
            self.web_port = free_port()
        self.gw_cfg.write_text(
            "\n".join(
                [
                    f'outlet = "{OUTLET}"',
                    f'db = "{self.gw_db}"',
                    "",
                    "[broker]",
                    'host = "127.0.0.1"',
                    f"port = {self.broker.port}",
                    'username = "gw-o1"',
                    'password = "gw-secret"',
                    "",
                    "[upstream]",
                    f'url = "https://127.0.0.1:{self.link.port}/v1/batches"',
                    f'ca_file = "{certs.ca}"',
                    "probe_interval_s = 0.5",
                    "backoff_cap_s = 2.0",
                    "batch_max_age_s = 0.5",
                    "down_interval_s = 0.5",
                    "",
                ]
                + (
                    # handhelds upload photos to the gateway's web server, logging in with their
                    # broker accounts (checked against Mosquitto's own password file)
                    [
                        "[web]",
                        'host = "127.0.0.1"',
                        f"port = {self.web_port}",
                        f'passwd_file = "{self.dir / "broker" / "passwd"}"',
                        f'acl_file = "{self.dir / "broker" / "acl"}"',
                        "",
                    ]
                    if self.web_port
                    else []
                )
            )
        )
        self.gw = GatewayProcess(self.gw_cfg)
        self.gw.wait_for("gateway_started", timeout=60)
        self.tap = BrokerTap(self.broker.port, self.ledger, self.obs, self.vt)
        self.tap.subscribed.wait(10)
        for i, n in enumerate(names):
            if n.startswith("lk") and sc.locker_mode == "unixport":
                self.devices[n] = UnixLocker(  # type: ignore[assignment]
                    n,
                    self.dir / "flash" / n,
                    ("127.0.0.1", port),
                    f"{n}-pw",
                    KEY,
                    self._unix_event,
                    n=sc.compartments,
                    poll_ms=max(sc.poll_ms, 50),
                )
                continue
            cls = SimLocker if n.startswith("lk") else SimCounter
            kw: dict[str, Any] = {"n": sc.compartments, "poll_ms": sc.poll_ms} if cls is SimLocker else {}
            dev = cls(
                n,
                self.dir / "flash" / n,
                ("127.0.0.1", port),
                f"{n}-pw",
                KEY,
                self.clock,
                sc.seed * 1000 + i,
                tap=self._tap,
                **kw,
            )
            self.devices[n] = dev
        for n in hh:
            self.hh[n] = SimHandheld(
                n,
                OUTLET,
                self.dir / "handheld" / n,
                "127.0.0.1",
                port,
                f"{n}-pw",
                self.clock.time,
                tap=self._tap,
                gateway_url=f"http://127.0.0.1:{self.web_port}",
            )

    DISK_ROOM = "256m"

    def mount_gateway_disk(self) -> Path:
        """The gateway's database on a tmpfs of its own, so a fault can fill it for real."""
        mnt = self.dir / "gwdisk"
        mnt.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.DISK_ROOM}", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"the disk_full fault needs a tmpfs (run as root): {r.stderr.strip()}")
        self.disk = mnt
        return mnt

    def _remount(self, size: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(self.disk)], check=True, capture_output=True
        )

    def boot_all(self) -> None:
        """Power the devices on (in the event loop: their tasks live there)."""
        for dev in self.devices.values():
            dev.boot()
        self._gc = tune_gc()

    def command(self, device: str, op: str, args: dict[str, Any], cid: str) -> dict[str, Any]:
        now = self.clock.time()
        return signing.sign(
            {
                "id": cid,
                "dev": device,
                "op": op,
                "args": args,
                "iat": now,
                "exp": now + signing.MAX_LIFETIME - 60,
            },
            KEY,
            kid="k1",
        )

    async def provision(self, timeout: float = 60) -> None:
        """Courier badges to every locker, through central -> gateway -> locker."""
        salt = "5a17" * 4
        for n, dev in self.devices.items():
            if isinstance(dev, SimLocker | UnixLocker):
                self.central.push_command(
                    OUTLET,
                    "locker",
                    self.command(
                        n,
                        "credential",
                        {
                            "courier": "c001",
                            "salt": salt,
                            "hash": C.salted_hash(salt, BADGE_SECRET),
                            "exp": self.clock.time() + int(self.sc.duration_s) + 30 * 86400,
                        },
                        f"cred-{n}",
                    ),
                )
        deadline = time.monotonic() + timeout
        lockers = [d for d in self.devices.values() if isinstance(d, SimLocker | UnixLocker)]
        while time.monotonic() < deadline:
            if all("c001" in d.app.couriers for d in lockers):
                return
            await asyncio.sleep(0.05)
        missing = [d.device for d in lockers if "c001" not in d.app.couriers]
        raise RuntimeError(f"courier credentials never reached {missing}")

    # ---------------------------------------------------------- actions
    async def do(self, a: Action) -> None:
        if a.kind == "photo":
            await self.photo(a)
            return
        dev = self.devices.get(a.device)
        if dev is None or dev.app is None or dev.task is None:
            self.stats[f"{a.kind}_device_down"] += 1
            return
        if dev.hal is not None:  # an in-process device reads the scenario's clock
            dev.hal.clock.pin = self.sc.start + int(a.t) if self.sc.mode == "virtual" else None
        try:
            if a.kind == "intake":
                assert isinstance(dev, SimCounter)
                before = sum(dev.app.counts.values())
                dev.engine.present(a.args["parcel"], "code128")
                deadline = time.monotonic() + 5
                while sum(dev.app.counts.values()) == before and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
                if sum(dev.app.counts.values()) == before:
                    self.stats["intake_unanswered"] += 1
                else:  # what the clerk heard: good, duplicate, invalid, wrong_outlet or suppressed
                    self.stats["intake_" + (dev.app.last or {}).get("verdict", "suppressed")] += 1
                self.stats["intake"] += 1
            elif a.kind == "deposit" and isinstance(dev, UnixLocker):
                await dev.deposit(
                    f"PE-C:{a.args['courier']}:{BADGE_SECRET}", a.args["parcel"], a.args["size"]
                )
                self.stats["deposit"] += 1
            elif a.kind == "pickup" and isinstance(dev, UnixLocker):
                code = self.obs.codes.get(a.args["parcel"])
                if code is None:
                    self.stats["pickup_no_code"] += 1
                    return
                await dev.pickup(code)
                self.stats["pickup"] += 1
            elif a.kind == "deposit":
                lk = dev.app
                lk.courier_login(f"PE-C:{a.args['courier']}:{BADGE_SECRET}")
                try:
                    await asyncio.wait_for(lk.deposit(a.args["parcel"], a.args["size"]), 20)
                    self.stats["deposit"] += 1
                finally:
                    lk.courier_logout()
            elif a.kind == "pickup":
                code = self.obs.codes.get(a.args["parcel"])
                if code is None:
                    self.stats["pickup_no_code"] += 1
                    return
                await asyncio.wait_for(dev.app.pickup(code), 20)
                self.stats["pickup"] += 1
        except (FlowError, FlowRefused) as e:
            self.stats[f"{a.kind}_refused_{e.code}"] += 1
        except TimeoutError:
            self.stats[f"{a.kind}_timeout"] += 1
        finally:
            if dev.hal is not None:
                dev.hal.clock.pin = None

    async def photo(self, a: Action) -> None:
        """A bulletin-board evidence photo: rendered, QR checked, event queued, uploaded."""
        h = self.hh.get(a.device)
        if h is None:
            self.stats["photo_device_down"] += 1
            return
        job = a.args["job"]
        await asyncio.to_thread(h.photo, job, a.args["site"], f"PE-CAMP:{job}", a.args["seed"])
        self.stats["photo"] += 1
        await asyncio.to_thread(h.upload)

    def photos_submitted(self) -> list[str]:
        return [sha for h in self.hh.values() for sha in h.submitted]

    async def run_window(self, actions: list[Action]) -> None:
        per: dict[str, list[Action]] = defaultdict(list)
        for a in actions:
            per[a.device].append(a)

        async def chain(items: list[Action]) -> None:
            for a in items:
                await self.do(a)

        await asyncio.gather(*(chain(v) for v in per.values()))

    # ----------------------------------------------------------- faults
    async def apply(self, f: Fault, starting: bool) -> None:
        rec = {
            "t": f.at_s if starting else f.until_s,
            "kind": f.kind,
            "start": starting,
            "detail": f.device or f.action or "",
        }
        target = f.device or next((n for n in self.devices if n.startswith("lk")), "")
        if f.kind == "wan_down":
            (self.link.down if starting else self.link.up)()
        elif f.kind == "broker_restart" and starting:
            await asyncio.to_thread(self.broker.stop)
            await asyncio.to_thread(self.broker.start)
        elif f.kind == "gateway_kill" and starting:
            self.gw.proc.kill()
            self.gw.proc.wait()
            self.gw = GatewayProcess(self.gw_cfg)
            await asyncio.to_thread(self.gw.wait_for, "gateway_started", 60)
        elif f.kind == "power_cut":
            dev = self.devices[target]
            if starting:
                await dev.power_cut()
                if f.for_h <= 0:
                    dev.boot()
            elif f.for_h > 0:
                dev.boot()
        elif f.kind == "clock_skew":
            dev = self.devices[target]
            if isinstance(dev, UnixLocker):  # its RTC is the host's: nothing to skew from here
                self.stats["clock_skew_unsupported"] += 1
            else:
                dev.dclock.offset = f.skew_s if starting else 0
        elif f.kind == "disk_full":
            if starting:  # what is there now, and a few pages: the next group commit fails
                used = shutil.disk_usage(self.disk).used
                await asyncio.to_thread(self._remount, str(max(used + 32 * 1024, 256 * 1024)))
            else:
                await asyncio.to_thread(self._remount, self.DISK_ROOM)
        elif f.kind == "central_lossy":
            self.central.lose_every = f.every if starting else 0
        elif f.kind == "device_duplicating":
            self.devices[target].duplicating = starting
        elif f.kind == "mqtt" and self.proxy is not None:
            if starting:
                rule = Rule(
                    f.action,
                    kinds=f.packet,
                    topic=f.topic or None,
                    p=f.p,
                    delay_ms=f.delay_ms,
                    seed=self.sc.seed,
                )
                self.proxy.add_rule(rule)
                self._rules = getattr(self, "_rules", {})
                self._rules[id(f)] = rule
            else:
                self.proxy.remove_rule(self._rules.pop(id(f)))
        self.faults_log.append(rec)
        self.log("fault", **rec)

    def sample_backlog(self) -> None:
        try:
            s = EventStore(self.gw_db)
            try:
                b = s.backlog()
            finally:
                s.close()
        except Exception:  # noqa: BLE001 - a gateway restarting; sample next time
            return
        self.backlog.append([self.t_virtual, b["count"], b["bytes"]])

    # -------------------------------------------------------------- run
    async def run(self, progress: Callable[[Outlet], None] | None = None) -> None:
        sc = self.sc
        await self.provision()
        actions = generate(sc)
        win = sc.window_min * 60
        edges: list[tuple[float, Fault, bool]] = []
        for f in sc.faults:
            edges.append((f.at_s, f, True))
            if f.for_h > 0 or f.kind in ("wan_down", "mqtt", "clock_skew", "disk_full"):
                edges.append((f.until_s, f, False))
        edges.sort(key=lambda e: e[0])
        t = 0.0
        i = 0
        real0 = time.monotonic()
        while t < sc.duration_s:
            end = min(t + win, sc.duration_s)
            while edges and edges[0][0] < end:
                ft, f, starting = edges.pop(0)
                self.t_virtual = ft
                self.clock.set(sc.start + ft)
                await self.apply(f, starting)
            self.t_virtual = t
            self.clock.set(sc.start + t)
            batch = []
            while i < len(actions) and actions[i].t < end:
                batch.append(actions[i])
                i += 1
            if sc.mode == "real":
                wait = t / sc.speed - (time.monotonic() - real0)
                if wait > 0:
                    await asyncio.sleep(wait)
            await self.run_window(batch)
            await asyncio.sleep(0.005)  # let the devices' own tasks breathe
            self.sample_backlog()
            t = end
            self.progress = t / sc.duration_s
            if progress:
                progress(self)
        for _, f, starting in edges:  # faults still open at the end are closed
            if not starting:
                await self.apply(f, False)
        self.t_virtual = sc.duration_s
        self.clock.set(sc.start + sc.duration_s)
        await self.settle()

    async def settle(self, timeout: float = 120) -> None:
        """Everything emitted reaches the central side (or the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.obs.lock:
                want = set(self.obs.emitted)
            with self.central.lock:
                have = set(self.central.counts)
                photos = set(self.central.photos)
            if want <= have and set(self.photos_submitted()) <= photos:
                return
            if self._quiescent(want):
                # Nothing is in flight any more: the gateway holds every event and the platform
                # acked them all. What the platform lacks now, it lost; waiting will not bring it.
                self.log("settle_quiescent", missing=len(want - have))
                return
            for h in self.hh.values():  # the uploader retries what the gateway has not confirmed
                if h.queue is not None:
                    await asyncio.to_thread(h.upload)
            await asyncio.sleep(0.2)
            self.sample_backlog()
        self.log("settle_timeout", missing=len(want - have))

    def _quiescent(self, want: set[str]) -> bool:
        try:
            s = EventStore(self.gw_db)
            try:
                backlog = s.backlog()["count"]
                stored = {r[0] for r in s.db.execute("SELECT id FROM events")}
            finally:
                s.close()
        except Exception:  # noqa: BLE001 - the gateway may be restarting
            return False
        with self.central.lock:
            photos_done = set(self.photos_submitted()) <= set(self.central.photos)
        return backlog == 0 and want <= stored and photos_done

    # ---------------------------------------------------------- results
    def gateway_ids(self) -> list[tuple[str, float]]:
        s = EventStore(self.gw_db)
        try:
            return [(r[0], r[1]) for r in s.db.execute("SELECT id, received_at FROM events ORDER BY rowid")]
        finally:
            s.close()

    def result(self, wall_s: float) -> dict[str, Any]:
        gw = self.gateway_ids()
        for hop in ("gateway", "central"):  # read from the stores again on every call
            self.ledger.clear(hop)
        gw_at = {}
        for eid, at in gw:
            if not eid.startswith("gw-"):
                self.ledger.record("gateway", eid, at)
                gw_at.setdefault(eid, at)
        central_at: dict[str, float] = {}
        with self.central.lock:
            for b in self.central.batches:
                for eid in b.ids:
                    central_at.setdefault(eid, b.at)
            counts = dict(self.central.counts)
            central_events = [e for e in self.central.events.values() if not e["id"].startswith("gw-")]
        for eid, n in counts.items():
            if not eid.startswith("gw-"):
                for _ in range(n):
                    self.ledger.record("central", eid, central_at.get(eid))
        failed = sum(1 for x in self.gw.lines if x.get("evt") == "store_failed")
        if failed:
            self.stats["gateway_store_failed"] = failed
        forgotten = [e for e in self.central.forgotten if not e.startswith("gw-")]  # devices' only
        if forgotten:
            self.stats["central_forgotten"] = len(forgotten)
        report = self.ledger.report()
        submitted = self.photos_submitted()
        domain = check_domain(central_events, photos_submitted=submitted or None, complete=False)
        lat: dict[str, dict[str, float]] = {}
        for hop, seen in (("broker", self.obs.broker_seen), ("gateway", gw_at), ("central", central_at)):
            xs = [(seen[e] - t0) * 1000 for e, t0 in self.obs.emitted.items() if e in seen and seen[e] >= t0]
            lat[hop] = {"n": len(xs), "p50_ms": round(_pct(xs, 0.5), 2), "p99_ms": round(_pct(xs, 0.99), 2)}
        exp = []
        e = self.sc.expect
        if e.get("ledger", True):
            exp.append(
                {"name": "ledger_ok", "ok": bool(report["ok"]), "detail": ", ".join(report["failing_hops"])}
            )
        if e.get("domain", True):
            exp.append(
                {"name": "domain_ok", "ok": domain.ok, "detail": "" if domain.ok else domain.summary()}
            )
        if submitted:
            with self.central.lock:
                arrived = set(self.central.photos)
            missing = [x for x in submitted if x not in arrived]
            exp.append(
                {
                    "name": "photos_arrived",
                    "ok": not missing,
                    "detail": f"{len(submitted) - len(missing)}/{len(submitted)} photo files at the platform",
                }
            )
        if "min_central_events" in e:
            exp.append(
                {
                    "name": "min_central_events",
                    "ok": len(central_events) >= e["min_central_events"],
                    "detail": f"{len(central_events)} >= {e['min_central_events']}",
                }
            )
        if "max_lost" in e:
            lost = report["end_to_end"]["lost"] if "end_to_end" in report else 0
            exp.append(
                {"name": "max_lost", "ok": lost <= e["max_lost"], "detail": f"{lost} <= {e['max_lost']}"}
            )
        per_dev = Counter(eid.split(":")[0] for eid in self.obs.emitted)
        timeline = sorted(
            (
                {
                    "t": (env["ts"] - self.sc.start)
                    if self.sc.mode == "virtual"
                    else env["ts"] - self.t0_real,
                    "device": env["id"].split(":")[0],
                    "type": env["type"],
                    "id": env["id"],
                    "cls": env["cls"],
                }
                for env in self.obs.events.values()
            ),
            key=lambda x: x["t"],
        )
        kinds = {n: d.kind for n, d in self.devices.items()} | {n: "handheld" for n in self.hh}
        failures = [x["name"] for x in exp if not x["ok"]]
        return {
            "scenario": self.sc.name,
            "seed": self.sc.seed,
            "broker": broker_name() if self.broker_kind == "mosquitto" else amqtt_version(),
            "time_mode": self.sc.mode,
            "wall_s": round(wall_s, 3),
            "virtual_s": self.sc.duration_s,
            "trace_hash": trace_hash(central_events),
            "devices": [
                {
                    "device": n,
                    "kind": kind,
                    "events": per_dev.get(n, 0),
                    "online": [
                        [a, b if b is not None else self.sc.duration_s] for a, b in self.obs.online.get(n, [])
                    ],
                }
                for n, kind in kinds.items()
            ],
            "timeline": timeline,
            "backlog": self.backlog,
            "faults": self._fault_windows(),
            "latency": lat,
            "ledger": report,
            "domain": domain.as_dict(),
            "expectations": exp,
            "stats": dict(self.stats),
            "verdict": {"ok": not failures, "failures": failures},
        }

    def _fault_windows(self) -> list[dict[str, Any]]:
        out = []
        for f in self.sc.faults:
            out.append(
                {
                    "t": f.at_s,
                    "until": f.until_s if f.for_h > 0 else f.at_s,
                    "kind": f.kind,
                    "detail": f.device or f.action or "",
                }
            )
        return out

    def snapshot(self) -> dict[str, Any]:
        """The live dashboard's view (simulator/dashboard.py)."""
        lockers = []
        devices = []
        with self.obs.lock:
            online = {n: bool(s and s[-1][1] is None) for n, s in self.obs.online.items()}
            alarms = list(self.obs.alarms[-50:])
        for n, d in self.devices.items():
            if isinstance(d, SimLocker) and d.app is not None:
                lockers.append(
                    {
                        "device": n,
                        "online": online.get(n, False),
                        "compartments": [
                            {"id": c["id"], "size": c["size"], "state": c["state"]} for c in d.app.comps.all()
                        ],
                    }
                )
            elif isinstance(d, UnixLocker):
                with self.obs.lock:
                    doc = self.obs.states.get(n) or {}
                comps = doc.get("compartments") if isinstance(doc.get("compartments"), list) else []
                lockers.append(
                    {
                        "device": n,
                        "online": online.get(n, False),
                        "compartments": [
                            {"id": c.get("id"), "size": c.get("size"), "state": c.get("state")}
                            for c in comps
                            if isinstance(c, dict)
                        ],
                    }
                )
            else:
                devices.append({"device": n, "kind": d.kind, "online": online.get(n, False)})
        for n in self.hh:
            devices.append({"device": n, "kind": "handheld", "online": online.get(n, False)})
        b = self.backlog[-1] if self.backlog else [0, 0, 0]
        faults = [{**w, "active": w["t"] <= self.t_virtual < w["until"]} for w in self._fault_windows()]
        return {
            "scenario": self.sc.name,
            "t_virtual": self.t_virtual,
            "progress": self.progress,
            "time_mode": self.sc.mode,
            "broker": self.broker_kind,
            "lockers": lockers,
            "devices": devices,
            "backlog": {"count": b[1], "bytes": b[2], "oldest_age_s": 0.0},
            "alarms": alarms[::-1],
            "faults": faults,
            "ledger": {h: len(self.ledger.seen(h)) for h in ("device", "broker")},
        }

    async def close(self) -> None:
        if getattr(self, "_gc", None) is not None:
            restore_gc(self._gc)
            self._gc = None
        for h in self.hh.values():
            try:
                h.close()
            except Exception:  # noqa: BLE001
                pass
        for d in self.devices.values():
            try:
                await d.power_cut()
                if isinstance(d, UnixLocker):
                    d.close()
            except Exception:  # noqa: BLE001
                pass
        for step in (
            lambda: self.tap.close(),
            lambda: self.gw.stop(),
            lambda: self.link.down(),
            lambda: self.https.down(),
            lambda: self.broker.stop(),
            lambda: self.proxy.stop() if self.proxy else None,
            lambda: subprocess.run(["umount", "-l", str(self.disk)], check=False) if self.disk else None,
        ):
            try:
                step()
            except Exception:  # noqa: BLE001 - tearing down what may already be gone
                pass


def run_scenario(
    sc: Scenario,
    workdir: Path,
    progress: Callable[[Outlet], None] | None = None,
    on_start: Callable[[Outlet], None] | None = None,
    log: Callable[..., None] | None = None,
    broker: str = "auto",
) -> dict[str, Any]:
    """Run one scenario to the end and return the result dict."""
    marker = workdir / ".postedge-sim"
    if workdir.exists() and any(workdir.iterdir()):
        if not marker.exists():  # never wipe a folder the simulator did not make
            raise ValueError(f"{workdir} is not empty and is not a simulator work folder")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by postedge sim run; the next run in this folder replaces it\n")
    wall0 = time.monotonic()
    outlet = Outlet(sc, workdir, log, broker=broker)

    async def main() -> dict[str, Any]:
        try:
            await asyncio.to_thread(outlet.start)
            outlet.boot_all()
            if on_start:
                on_start(outlet)
            await outlet.run(progress)
            return outlet.result(time.monotonic() - wall0)
        finally:
            await outlet.close()

    res = asyncio.run(main())
    (workdir / "result.json").write_text(json.dumps(res, ensure_ascii=False))
    os.environ.get("POSTEDGE_SIM_KEEP")  # workdir stays for inspection
    return res
