"""The outlet a scenario runs in: its parts, brought up and taken down.

One object holds everything a run touches, all real and on loopback: the
outlet broker (Mosquitto, or amqtt where it is not installed), an MQTT fault
proxy in front of it when faults or tests need one, the gateway process
syncing over HTTPS to the real central service (``simulator/central.py``:
the embedded backend and the HTTPS front, on loopback) through a WAN link
that can go down,
and the devices: the locker and counter firmware running in this process on
the CPython HAL (``simulator/inproc.py``) or unix-port lockers, and simulated
courier handhelds. :class:`Outlet` builds them (``start``), powers the
devices on (``boot_all``), gives the lockers their courier badge
(``provision``) and tears it all down (``close``). What is done *to* the
outlet lives beside it: ``actions`` (the workload), ``injection`` (faults),
``sampling``, ``settling``, ``results``; ``runner`` drives a scenario
through them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.ports import free_port
from firmware.locker import codes as C
from gateway.broker import Account, Mosquitto, find_mosquitto, tls_listener
from handheld import tls as handheld_tls
from protocol import signing
from simulator.central import CentralService, Certs, Link, make_certs
from simulator.counter_sim import ScaleSim, public_keys
from simulator.faultproxy import FaultProxy, Rule
from simulator.gateway_process import GatewayProcess, clock_file
from simulator.handheld_sim import SimHandheld
from simulator.inproc import SimClock, SimCounter, SimDevice, SimLocker, restore_gc, tune_gc
from simulator.ledger import Ledger
from simulator.modem_sim import ModemSim
from simulator.platform_keys import PlatformKeys
from simulator.presence_watch import PresenceWatch
from simulator.pybroker import AmqttBroker
from simulator.scenario import HOSTILE_KINDS, Scenario, devices_of
from simulator.snapshot import live_view
from simulator.taps import BrokerTap, DeviceTap, Observed
from simulator.unix_locker import UnixLocker

OUTLET = "o1"
# The platform's master key stays with the central service (and this fixed copy of it
# for the simulator's signing): each device is given only its own derived key, and
# commands are signed with that device's key.
KEYS = PlatformKeys(OUTLET)
BADGE_SECRET = "sim-badge"
HOPS = ("device", "broker", "gateway", "central")


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
        outlet_id: str = OUTLET,
        central: CentralService | None = None,
        certs: Certs | None = None,
        central_backend: str = "embedded",
    ) -> None:
        """``broker``: "mosquitto", "amqtt" (``simulator/pybroker.py``) or "auto" (Mosquitto
        when installed, else amqtt). ``proxy`` puts the fault proxy in front of the broker even
        when no scenario fault needs it (the pytest plugin injects MQTT faults mid-test);
        ``handhelds`` adds broker accounts ``hh01``... for simulated courier handhelds.
        A county (``simulator/fleet.py``) runs many outlets against one ``central``
        service, each with its own ``outlet_id`` (and shares one test PKI, ``certs``);
        alone, an outlet starts a central service of its own, on ``central_backend``
        (``embedded``, or ``scaleout``: its own NATS cluster and PostgreSQL)."""
        self.sc = sc
        self.outlet_id = outlet_id
        self.gw_user = f"gw-{outlet_id}"
        self.keys = KEYS if outlet_id == OUTLET else PlatformKeys(outlet_id)
        self.own_central = central is None
        self.central_backend = central_backend
        self.shared_certs = certs
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
        self.hh_tls = False
        self.hostile: dict[int, Any] = {}  # running hostile faults (simulator/hostile.py)
        self.dir = workdir
        self.log = log or (lambda evt, **kw: None)
        self.clock = SimClock(sc.start if sc.mode == "virtual" else None)
        self.t0_real = time.time()
        # QoS 1 may deliver twice before the gateway dedups; a device's sender publishes a
        # window of records as concurrent tasks (firmware/sender.py), so around a reconnect
        # or a reboot an older record can reach the broker after a newer one; the uplink's
        # two lanes (alarms and status first) reorder by design, and the central side orders
        # by sequence number.
        self.ledger = Ledger(
            HOPS,
            tolerate={
                "broker": {"duplicated", "reordered"},
                "gateway": {"duplicated"},
                # resent after a gateway SIGKILL; the platform keeps one copy by id
                "central": {"reordered", "duplicated"},
                "end_to_end": {"reordered", "duplicated"},
            },
        )
        self.obs = Observed()
        self.central: CentralService  # in start() when not shared: it needs the run's certificates
        if central is not None:
            self.central = central
        self.devices: dict[str, SimDevice] = {}
        self.modem: ModemSim | None = None  # with [notify] in the scenario (start)
        self.scale: ScaleSim | None = None  # with the counter desk (start)
        self.web_ca: Path | None = None  # the CA the gateway's HTTPS chains to (None: plain HTTP)
        self.flows: dict[str, Any] = {}  # what the outlet flows remember (simulator/outlet_flows.py)
        self.faults_log: list[dict[str, Any]] = []
        self.backlog: list[list[float]] = []
        self.paced_emitted = 0  # device events emitted by the last clock advance (simulator/pacing.py)
        self.live: dict[str, float] = {}  # the dashboard's store counts (simulator/sampling.py)
        self.stats: Counter[str] = Counter()
        self.proxy: FaultProxy | None = None
        self.disk: Path | None = None
        self.t_virtual = 0.0
        self.progress = 0.0
        self.mqtt_rules: dict[int, Rule] = {}
        self.presence_watch: PresenceWatch | None = None  # from start()
        self.device_tap = DeviceTap(self.ledger, self.obs, self.vt, sc.start, self.keys.open_code)

    def vt(self) -> float:
        return self.t_virtual

    def _unix_event(self, device: str, d: dict[str, Any]) -> None:
        """An event a unix-port locker logged: recorded, and its badge noted once provisioned."""
        env = self.device_tap.logged(device, d)
        b = env["body"]
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
        names = devices_of(sc.lockers, sc.scanners)
        accounts = [
            Account(self.gw_user, "gw-secret", self.outlet_id, "gateway"),
            Account("sim-tap", "sim-tap-pw", self.outlet_id, "gateway"),
        ]
        accounts += [
            Account(n, f"{n}-pw", self.outlet_id, "locker" if n.startswith("lk") else "scanner")
            for n in names
        ]
        hh = [f"hh{i + 1:02d}" for i in range(self.handhelds)]
        accounts += [Account(n, f"{n}-pw", self.outlet_id, "handheld") for n in hh]
        if any(f.kind in HOSTILE_KINDS for f in sc.faults):
            # one ordinary device login, in hostile hands (simulator/hostile.py)
            accounts.append(Account(self.ROGUE, f"{self.ROGUE}-pw", self.outlet_id, "locker"))
        certs = self.shared_certs or make_certs(self.dir / "pki")
        # Handhelds speak TLS to the broker and the gateway's HTTPS, verifying
        # the outlet CA, as on site. Only with Mosquitto (amqtt has
        # no TLS listener here), and around the fault proxy: the proxy reads
        # MQTT packets to inject its faults, which TLS hides from it, so the
        # scenario's mqtt faults reach the lockers' plaintext path only.
        self.hh_tls = bool(hh) and self.broker_kind == "mosquitto"
        if self.broker_kind == "amqtt":
            self.broker: Mosquitto | AmqttBroker = AmqttBroker(self.dir / "broker", accounts)
        else:
            # as provisioned on site: a login's client id is its user name, so no
            # login can take over another's session (the takeover fault shows it)
            tls = tls_listener(certs.ca, certs.server_cert, certs.server_key) if self.hh_tls else None
            self.broker = Mosquitto(self.dir / "broker", accounts, username_as_clientid=True, tls=tls)
        self.broker.start()
        port = self.broker.port
        if self.want_proxy or any(f.kind == "mqtt" for f in sc.faults):
            self.proxy = FaultProxy("127.0.0.1", self.broker.port)
            self.proxy.start()
            port = self.proxy.port
        if self.own_central:
            self.central = CentralService(self.dir / "central", certs.server_cert, certs.server_key,
                                          certs.ca, backend=self.central_backend).up()
        # with an SMS modem at the outlet its gateway is the notifier: the platform texts
        # only what the gateway routes to it
        uplink_pw = self.central.add_outlet(self.outlet_id, notifier=bool(sc.notify.get("enabled")),
                                            clock=self.clock.time, lockers=sc.lockers)
        self.link = Link(self.central.port).up()
        self.gw_cfg = self.dir / "gateway.toml"
        self.gw_db = self.dir / "gateway.db"
        if any(f.kind == "disk_full" for f in sc.faults):
            self.gw_db = self.mount_gateway_disk() / "gateway.db"
        if hh or sc.web:
            self.web_port = free_port()
        self.gw_cfg.write_text(
            "\n".join(
                [
                    f'outlet = "{self.outlet_id}"',
                    f'db = "{self.gw_db}"',
                    "",
                    "[broker]",
                    'host = "127.0.0.1"',
                    f"port = {self.broker.port}",
                    f'username = "{self.gw_user}"',
                    'password = "gw-secret"',
                    # every device login: the gateway holds a flooding one off its subscriptions
                    f'acl_file = "{self.dir / "broker" / "acl"}"',
                    "",
                    "[upstream]",
                    f'url = "https://127.0.0.1:{self.link.port}/v1/batches"',
                    f'ca_file = "{certs.ca}"',
                    f'username = "{self.outlet_id}"',
                    f'password = "{uplink_pw}"',
                    f"probe_interval_s = {self.uplink_poll_s}",
                    "backoff_cap_s = 2.0",
                    "batch_max_age_s = 0.5",
                    f"down_interval_s = {self.uplink_poll_s}",
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
                        *([f'cert_file = "{certs.server_cert}"', f'key_file = "{certs.server_key}"']
                          if self.hh_tls else []),
                        "",
                    ]
                    if self.web_port
                    else []
                )
                + (self._counter_config() if sc.counter_desk else [])
                + (
                    # The gateway's own small disk: its budget must fit it. With the default
                    # 512 MiB reserve on a 256 MiB tmpfs the gateway is always over budget and
                    # evicts every synced event and thins unsynced status and telemetry, so
                    # the ledger's gateway hop found an empty store once a budget pass ran.
                    # No reserve: nothing but the store lives on this tmpfs. With one, a
                    # budget pass during a disk_full fault (the tmpfs shrunk to what it
                    # holds) found the store over budget and thinned the outage's unsynced
                    # door events, which the ledger rightly counted as lost.
                    ["[budget]", "max_mb = 192", "reserve_mb = 0", ""]
                    if self.disk
                    else []
                )
            )
        )
        self.web_ca = certs.ca if self.hh_tls else None
        self.modem: ModemSim | None = None
        if sc.notify.get("enabled"):
            self._notifier()
        if self.clock.virtual:  # the gateway process on the scenario's clock (common/clock.py)
            self.clock.attach(clock_file(self.gw_cfg))
            if sc.locker_mode == "unixport":  # and the unix-port lockers (drivers/hal/unix.py)
                self.clock.attach_devices(self.dir / "sim-clock-devices")
        self.gw = GatewayProcess(self.gw_cfg, extra_env=self.gw_env)
        self.gw.wait_for("gateway_started", timeout=60)
        self.broker_tap = BrokerTap(self.broker.port, self.outlet_id, self.ledger, self.obs, self.vt,
                                    devices=[*names, *hh])
        # What the gateway shows online, over the run (devices_back_online).
        self.presence_watch = PresenceWatch(self.gw_db, self.faults_log)
        self.broker_tap.subscribed.wait(10)
        for i, n in enumerate(names):
            if n.startswith("lk") and sc.locker_mode == "unixport":
                self.devices[n] = UnixLocker(  # type: ignore[assignment]
                    n,
                    self.dir / "flash" / n,
                    ("127.0.0.1", port),
                    f"{n}-pw",
                    self.keys.device_config(n),
                    self._unix_event,
                    n=sc.compartments,
                    poll_ms=max(sc.poll_ms, 50),
                    clock_file=self.clock.device_file,
                    seed=sc.seed * 100 + i,
                )
                continue
            cls = SimLocker if n.startswith("lk") else SimCounter
            kw: dict[str, Any] = {"n": sc.compartments, "poll_ms": sc.poll_ms} if cls is SimLocker else {}
            dev = cls(
                n,
                self.dir / "flash" / n,
                ("127.0.0.1", port),
                f"{n}-pw",
                self.keys.device_config(n),
                self.clock,
                sc.seed * 1000 + i,
                tap=self.device_tap.emitted,
                **kw,
            )
            dev.outlet = self.outlet_id
            self.devices[n] = dev
            if self.modem is not None and isinstance(dev, SimLocker):
                dev.notify = self.keys.notify_config(n)
        hh_ssl = handheld_tls.context(certs.ca.read_text(encoding="ascii")) if self.hh_tls else None
        for n in hh:
            self.hh[n] = SimHandheld(
                n,
                self.outlet_id,
                self.dir / "handheld" / n,
                "127.0.0.1",
                self.broker.tls_port if hh_ssl else port,
                f"{n}-pw",
                self.clock.time,
                tap=self.device_tap.emitted,
                gateway_url=f"{'https' if hh_ssl else 'http'}://127.0.0.1:{self.web_port}",
                ssl_context=hh_ssl,
            )

    def _counter_config(self) -> list[str]:
        """``[counter]``: the acceptance desk with a simulated scale on a pty
        and the label printer as a file (``simulator/counter_sim.py``)."""
        self.scale = ScaleSim()
        keys = ", ".join(f'{k} = "{v}"' for k, v in public_keys().items())
        return ["[counter]", f"platform_keys = {{ {keys} }}", f'scale_url = "{self.scale.path}"',
                'scale_format = "st-gs"', "stable_window_s = 0.15",
                f'label_url = "file:{self.dir / "label.prn"}"', 'label_language = "tspl"', ""]

    def _notifier(self) -> None:
        """The SMS notifier: a simulated modem on a pty, the outlet notifier
        key, and ``[notify]`` in the gateway's config. Reminders are off:
        the lockers' expiry is on the scenario's clock, the gateway's on the
        wall clock."""
        self.modem = ModemSim(self.dir / "ttyModem")
        keys = self.dir / "notify-keys.toml"
        keys.write_text(f'[keys]\n"1" = "{self.keys.notifier_key().hex()}"\n', encoding="utf-8")
        with self.gw_cfg.open("a", encoding="utf-8") as f:
            f.write(f'\n[notify]\nmodem = "{self.modem.path}"\nkey_file = "{keys}"\n'
                    f'name_zh = "模拟村邮站"\nname_en = "Simulated village post"\n'
                    f'delay_s = {float(self.sc.notify.get("delay_s", 3.0))}\nremind_hours = 0\n'
                    # a busy test machine makes the simulated modem slow, not faulty:
                    # generous deadlines, short backoff
                    "interval_s = 0.2\ntimeout_s = 5.0\nsend_timeout_s = 10.0\n"
                    "backoff_base_s = 0.2\nbackoff_cap_s = 2.0\nretries = 20\n")

    def push_contacts(self) -> int:
        """The platform's contacts for the parcels of the day (its manifest),
        pushed down before the couriers come: a share ``notify.contacts``."""
        import random

        from gateway.notify import contacts
        from simulator.workload import generate, inbound_deposits

        rng = random.Random(self.sc.seed * 31 + 7)
        share = float(self.sc.notify.get("contacts", 1.0))
        n = 0
        for a in inbound_deposits(generate(self.sc)):
            parcel = a.args["parcel"]
            # the platform holds every villager's number (the parcel system hands it
            # over); the gateway's notifier is given the share it can text itself
            if rng.random() >= share:
                number = f"+86138{zlib.crc32(parcel.encode()) % 10**8:08d}"
                self.central.add_contact(self.outlet_id, parcel, number)
                continue
            phone = f"+86139{rng.randrange(10**8):08d}"
            self.central.add_contact(self.outlet_id, parcel, phone)
            # signed on the outlet's clock, which the gateway checks it on
            self.central.push_command(self.outlet_id, "notify", contacts.make(
                self.keys.notifier_key(), 1, f"ct-{parcel.lower()}", parcel, phone, "zh",
                int(self.clock.time()), lifetime_s=signing.MAX_LIFETIME))
            n += 1
        self.stats["notify_contacts"] = n
        return n

    def notices(self) -> dict[str, list[str]]:
        """Who told each deposit's villager (``CentralService.notices``), and
        ``none`` for a deposit whose text the gateway's modem dropped because
        the parcel was picked up before it went out: no event tells the
        platform that (the gateway's own store does), and nobody was told."""
        got = self.central.notices(self.outlet_id)
        untold = {d for d, senders in got.items() if not senders}
        if untold and self.modem is not None:
            for d in untold & self._texts_dropped_for_pickup():
                got[d] = ["none"]
        return got

    def _texts_dropped_for_pickup(self) -> set[str]:
        try:
            db = sqlite3.connect(f"file:{self.gw_db}?mode=ro", uri=True, timeout=5)
            try:
                return {r[0] for r in db.execute(
                    "SELECT s.event FROM notify_sms s JOIN notify_jobs j ON j.event = s.event "
                    "WHERE s.state = 'cancelled' AND s.purpose = 'notice' AND j.picked_at IS NOT NULL")}
            finally:
                db.close()
        except sqlite3.Error:  # the gateway restarting, or no notifier tables yet
            return set()

    def notices_settled(self, timeout: float = 60.0) -> dict[str, list[str]]:
        """Who told each deposit's villager, once the notifier's last
        routes have reached the platform (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.notices()
            if all(got.values()) or time.monotonic() > deadline:
                return got
            time.sleep(0.2)

    #: How often the gateway probes the platform while it is away and pulls
    #: commands: brisk for one outlet's tests; a county (simulator/fleet.py)
    #: paces a hundred gateways slower, as the field would.
    uplink_poll_s = 0.5
    #: More of the gateway process's environment (a county's timer slice, simulator/fleet.py).
    gw_env: dict[str, str] = {}
    #: How long the simulator's pacing sleeps at most between two looks at the
    #: gateway's board (simulator/pacing.py): short for one outlet, longer in a
    #: county, whose hundred outlets look from one loop.
    pace_nap_s = 0.004
    DISK_ROOM = "256m"
    ROGUE = "rogue"  # the hostile faults' device login

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

    def boot_all(self) -> None:
        """Power the devices on (in the event loop: their tasks live there)."""
        for dev in self.devices.values():
            dev.boot()
        self._gc = tune_gc()

    def command(self, device: str, op: str, args: dict[str, Any], cid: str) -> dict[str, Any]:
        now = self.clock.time()
        return self.keys.sign(
            {
                "id": cid,
                "dev": device,
                "op": op,
                "args": args,
                "iat": now,
                "exp": now + signing.MAX_LIFETIME - 60,
            }
        )

    def push_round(self) -> int:
        """The courier's round manifest for the day's hand deliveries, issued by the
        platform (``central/manifests.py``) before the courier sets out: signed with the
        handheld's own key and sent down through the gateway like any command. The
        villagers' delivery codes it makes come back here, as the villagers would have
        them by text; the handheld takes the manifest when the round starts
        (``simulator/outlet_flows.py``). How many parcels it lists."""
        from central.manifests import Manifests
        from simulator.workload import generate

        acts = [a for a in generate(self.sc) if a.kind == "hand_delivery" and a.device in self.hh]
        if not acts:
            return 0
        device = acts[0].device
        self.central.backend.add_device(self.outlet_id, device, "handheld")
        # signed on the outlet's clock, as the platform signs what its devices check
        rounds = Manifests(self.central.backend, self.central.master, clock=self.clock.time)
        _, tokens = rounds.issue(self.outlet_id, device, "r-day",
                                 [{"parcel": a.args["parcel"], "to": a.args["name"]} for a in acts])
        self.flows["round_tokens"] = tokens
        return len(acts)

    async def provision(self, timeout: float = 60) -> None:
        """Courier badges to every locker, through central -> gateway -> locker;
        with the notifier, the day's contacts too; the handheld's round manifest."""
        if self.modem is not None:
            self.push_contacts()
        self.push_round()
        salt = "5a17" * 4
        for n, dev in self.devices.items():
            if isinstance(dev, SimLocker | UnixLocker):
                self.central.push_command(
                    self.outlet_id,
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

    def photos_submitted(self) -> list[str]:
        return [sha for h in self.hh.values() for sha in h.submitted]

    def snapshot(self) -> dict[str, Any]:
        """The live dashboard's view (simulator/dashboard.py)."""
        return live_view(
            self.sc,
            t_virtual=self.t_virtual,
            progress=self.progress,
            broker=self.broker_kind,
            obs=self.obs,
            devices=self.devices,
            handhelds=self.hh,
            backlog=self.backlog,
            ledger=self.ledger,
            live=self.live,
        )

    def central_stored(self) -> int:
        """Distinct events the platform has stored (gateway-own included, as the gateway's count)."""
        return self.central.count(self.outlet_id)

    async def close(self) -> None:
        for attack in self.hostile.values():  # a hostile fault still running at the end
            attack.stop()
        self.hostile.clear()
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
            lambda: self.presence_watch.stop() if self.presence_watch else None,
            lambda: self.broker_tap.close(),
            lambda: self.gw.stop(),
            lambda: self.link.down(),
            lambda: self.central.close() if self.own_central else None,
            lambda: self.broker.stop(),
            lambda: self.proxy.stop() if self.proxy else None,
            lambda: subprocess.run(["umount", "-l", str(self.disk)], check=False) if self.disk else None,
            lambda: self.modem.close() if self.modem else None,
            lambda: self.scale.close() if self.scale else None,
        ):
            try:
                step()
            except Exception:  # noqa: BLE001 - tearing down what may already be gone
                pass
