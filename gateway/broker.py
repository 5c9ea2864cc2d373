"""Mosquitto for an outlet: generated config, password file and ACL, and a
process handle that tests, the demo and the simulator share.

Every device gets its own account whose ACL allows writing only under its own
topics (``pe/v1/<outlet>/<kind>/<device>/{evt,state,presence,ack}``) and
reading only its own ``cmd``, ``conf`` and ``time`` channels, so a compromised or misconfigured
locker cannot speak for another. The gateway account reads and writes the
outlet's whole subtree.

An outlet broker is also hardened (:class:`OutletLimits`): the
listener replaces every client id with the login's username
(``use_username_as_clientid``), so no login can take over another login's
session (a locker connecting as ``gw-<outlet>`` with a clean session used to
wipe the gateway's queued events); packets and payloads are capped at what
devices legitimately send; what the broker queues and keeps in flight per
session is bounded in messages *and* bytes; and the persistence file is
saved on a schedule that does not rewrite it every second. The generated
file explains each choice next to the setting.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from common.ports import free_port
from protocol import topics

DEVICE_WRITE = ("evt", "state", "presence", "ack")
# cmd: signed commands; conf: the gateway's "stored" confirmations (firmware/sender.py);
# time: the gateway's clock (protocol/timesync.py), written by the gateway alone
DEVICE_READ = ("cmd", "conf", "time")


@dataclass(frozen=True)
class Account:
    """A broker login. ``kind`` is a device kind or ``gateway``."""

    username: str
    password: str
    outlet: str
    kind: str

    def acl_topics(self) -> tuple[list[str], list[str]]:
        """(may write, may read): the gateway the outlet's whole subtree, a
        device its own channels and its own command topic."""
        if self.kind == "gateway":
            everything = [f"{topics.PREFIX}/{topics.VERSION}/{self.outlet}/#"]
            return everything, everything
        return ([topics.build(self.outlet, self.kind, self.username, ch) for ch in DEVICE_WRITE],
                [topics.build(self.outlet, self.kind, self.username, ch) for ch in DEVICE_READ])

    def acl_lines(self) -> list[str]:
        write, read = self.acl_topics()
        if self.kind == "gateway":
            return [f"user {self.username}", f"topic readwrite {write[0]}"]
        return [f"user {self.username}", *(f"topic write {t}" for t in write),
                *(f"topic read {t}" for t in read)]


def read_acl(text: str) -> dict[str, tuple[str, str]]:
    """Each login's (kind, outlet) from an ACL this module wrote: a device's
    write topics are ``pe/v1/<outlet>/<kind>/<user>/...``, the gateway's is
    ``pe/v1/<outlet>/#`` (kind ``gateway``). The broker enforces the file, so
    it is also the list of every login that can publish at the outlet."""
    acl: dict[str, tuple[str, str]] = {}
    user = None
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "user":
            user = words[1]
        elif user and len(words) == 3 and words[0] == "topic":
            seg = words[2].split("/")
            if len(seg) == 4 and seg[3] == "#":
                acl[user] = ("gateway", seg[2])
            elif len(seg) == 6 and seg[4] == user and user not in acl:
                acl[user] = (seg[3], seg[2])
    return acl


def find_mosquitto() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError("mosquitto is not installed (scripts/setup installs it)")


def find_mosquitto_passwd() -> str:
    for cand in (shutil.which("mosquitto_passwd"), "/usr/bin/mosquitto_passwd"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError("mosquitto_passwd is not installed (scripts/setup installs it)")


KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class OutletLimits:
    """What an outlet broker accepts, queues and keeps, and why each number.

    Sizes the devices send: an event envelope is at most 4 KiB
    (``protocol/envelope.py`` MAX_PAYLOAD), a state document at most
    16 KiB (``gateway/ingest.py`` MAX_STATE), a signed command at most 2 KiB
    (``protocol/signing.py`` MAX_COMMAND); handheld photos go over
    HTTP, never MQTT; the gateway's upstream MQTT is another broker.
    """

    #: Largest packet of any kind, PUBLISH header, topic and MQTT 5 properties
    #: included: 4x the largest legitimate document, so a state document a
    #: little over 16 KiB still reaches the gateway, which refuses it with a
    #: reason and counts it. Mosquitto checks it on the fixed header, before
    #: it allocates the body, and disconnects the sender (MQTT 5: DISCONNECT
    #: 0x95), so a 64 MiB publish never reaches the broker's memory or any
    #: subscriber. Mosquitto 2.0 recommends it over ``message_size_limit``
    #: (which reads the whole message first), so that one is not set. Also the
    #: locker firmware's own receive limit (``firmware/mqtt/packets.py``).
    max_packet: int = 64 * KIB
    #: Per session, messages queued above those in flight. The gateway is on
    #: the same box and normally connected; a WAN outage of days does not
    #: queue anything here (the gateway keeps taking events into SQLite). The
    #: queue only covers the gateway *process* being away (restart, upgrade,
    #: crash loop): 100,000 events is more than a day of a busy outlet. Past
    #: it Mosquitto drops new messages for that session, and the devices keep
    #: every event in their flash outbox and resend it until the gateway
    #: confirms it stored it (``firmware/sender.py``), so the cap costs a
    #: resend, not an event.
    max_queued_messages: int = 100_000
    #: ... and in bytes, so a flood of maximum-size publishes while the
    #: gateway is away stops at 64 MiB (plus per-message overhead) of RAM and
    #: persistence file, not at whatever the box has.
    max_queued_bytes: int = 64 * MIB
    #: Per session, messages sent and not yet acked. The gateway acks a group
    #: only after its SQLite commit (``group_max`` 2000), so two groups in flight
    #: keep it busy while the previous one fsyncs.
    max_inflight_messages: int = 4000
    #: ... and in bytes: 4000 maximum-size messages would be 256 MiB held for
    #: a gateway that is connected but stalled (disk full); ordinary events
    #: (a few hundred bytes) never come near 8 MiB.
    max_inflight_bytes: int = 8 * MIB
    #: Connections on the listener: tens of devices per outlet; the cap keeps
    #: a reconnect storm within the unit's LimitNOFILE (deploy/, 4096).
    max_connections: int = 1024
    #: Seconds between saves of the persistence file (time based, see
    #: write_config for why it is not 1 s and not "on changes").
    autosave_interval_s: int = 60
    #: Sessions not seen for this long are removed: longer than any command's
    #: lifetime (7 days, ``protocol/signing.py``), so nothing a device
    #: could still use goes, but a decommissioned handheld's session does not
    #: hold queued messages forever.
    persistent_client_expiration: str = "14d"
    #: ``use_username_as_clientid`` on the listener (see write_config). Always on
    #: in what ``provision`` writes; :class:`Mosquitto` leaves it off unless asked
    #: (its ``username_as_clientid``), because test tools and the demo still log in
    #: with the gateway's account beside a running gateway.
    username_as_clientid: bool = True


OUTLET_LIMITS = OutletLimits()

#: The MQTT-over-TLS port devices, handhelds and the simulator use (IANA 8883).
TLS_PORT = 8883


@dataclass(frozen=True)
class TlsListener:
    """The broker's TLS listener: server certificate and key from
    the outlet CA (``common/pki.py``). With it, the plaintext listener is on
    127.0.0.1 only, for the gateway on the same box; everything on the LAN
    speaks TLS (1.2 or later) and verifies the outlet CA."""

    port: int
    cafile: Path
    certfile: Path
    keyfile: Path
    bind: str = "0.0.0.0"


def _outlet_lines(limits: OutletLimits, directory: Path) -> list[str]:
    """The hardening settings, each with the reason an operator reading the
    file on a box needs (the numbers come from :class:`OutletLimits`)."""
    return [
        "",
        "# --- persistence ------------------------------------------------------",
        "# On: the gateway's and the handhelds' sessions (subscriptions, queued",
        "# QoS 1 messages) and retained presence/state survive a broker restart.",
        "# Not the store of record: devices keep events in flash until the gateway",
        "# confirms its SQLite commit, and the gateway keeps commands in SQLite",
        "# until the device acks, so a save missed by a power cut costs resends.",
        "persistence true",
        f"persistence_location {directory / 'data'}/",
        "# Every save rewrites the whole file. Saving every second (the old",
        "# setting) rewrote a flood-sized file every second and wore the SD card;",
        "# saving on a change count would do the same under a flood. A save every",
        f"# {limits.autosave_interval_s} s writes at most max_queued_bytes per interval, and a",
        "# few KiB in normal operation; SIGTERM (systemctl stop/restart) always saves.",
        "autosave_on_changes false",
        f"autosave_interval {limits.autosave_interval_s}",
        f"persistent_client_expiration {limits.persistent_client_expiration}",
        "",
        "# --- sizes ------------------------------------------------------------",
        "# Envelopes are <= 4 KiB, state documents <= 16 KiB, commands <= 2 KiB;",
        "# photos go over HTTP. A packet over max_packet_size is refused on its",
        "# header, before Mosquitto allocates its body, and the sender is",
        "# disconnected (MQTT 5: reason 0x95); nothing of it reaches a subscriber.",
        "# The gateway still sees, refuses and counts a state document a little",
        "# over 16 KiB. (message_size_limit is not set: Mosquitto 2 reads the whole",
        "# message before applying it, and recommends max_packet_size instead.)",
        f"max_packet_size {limits.max_packet}",
        "",
        "# --- queues (per session) ---------------------------------------------",
        "# The gateway runs on this box and is normally connected; during a WAN",
        "# outage it keeps storing into SQLite, so nothing waits here. The queue",
        "# covers the gateway process being away (restart, upgrade, crash loop):",
        f"# {limits.max_queued_messages} messages is more than a day of a busy outlet. Past either",
        "# cap new messages for that session are dropped: devices resend every event",
        "# the gateway has not confirmed, so the cap costs a resend, not an event,",
        f"# and a flood stops at {limits.max_queued_bytes // MIB} MiB instead of filling RAM and the disk.",
        f"max_queued_messages {limits.max_queued_messages}",
        f"max_queued_bytes {limits.max_queued_bytes}",
        "# In flight = sent, not yet acked. The gateway acks a group after its",
        "# commit (up to 2000 events), so 4000 keeps the next group coming while",
        "# one fsyncs; the byte cap stops a stalled gateway holding 4000 x 64 KiB.",
        f"max_inflight_messages {limits.max_inflight_messages}",
        f"max_inflight_bytes {limits.max_inflight_bytes}",
    ]


def _listener_lines(limits: OutletLimits | None) -> list[str]:
    """Settings that belong to each listener (they follow its line)."""
    lines = []
    if limits is not None:
        lines.append(f"max_connections {limits.max_connections}")
    if limits is not None and limits.username_as_clientid:
        lines += [
            "# The client id becomes the login's username: a device's or the",
            "# gateway's session belongs to its own login, and a locker connecting",
            "# with client id gw-<outlet> and a clean session no longer wipes the",
            "# gateway's queued events. Devices log in as their device id,",
            "# the gateway as gw-<outlet>; one login, one session, one connection.",
            "use_username_as_clientid true",
        ]
    return lines


def write_config(directory: Path, port: int, accounts: list[Account], bind: str = "127.0.0.1",
                 run_as: str | None = None, limits: OutletLimits | None = OUTLET_LIMITS,
                 tls: TlsListener | None = None) -> Path:
    """Write mosquitto.conf, passwd (hashed) and acl into ``directory``.

    ``run_as`` is the user Mosquitto drops to when started as root; tests
    and the demo keep the current user so it can read the generated files.
    ``limits`` hardens an outlet broker (the default, and what ``postedge
    gateway provision`` writes); ``None`` writes the plain broker the
    simulator's central side reuses (several connections per gateway login,
    batches of up to 16 MiB, so neither the username-as-client-id rule nor
    the device-sized limits fit it).

    ``tls``: a TLS listener on ``tls.bind``; the plaintext one on ``port``
    is then bound to 127.0.0.1 whatever ``bind`` says (the gateway on the
    same box is its only user)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    passwd = directory / "passwd"
    passwd.write_text("".join(f"{a.username}:{a.password}\n" for a in accounts))
    passwd.chmod(0o600)
    subprocess.run([find_mosquitto_passwd(), "-U", str(passwd)], check=True,
                   capture_output=True)
    acl = directory / "acl"
    acl.write_text("\n\n".join("\n".join(a.acl_lines()) for a in accounts) + "\n")
    user = run_as or os.environ.get("USER") or "root"
    head = [
        "# generated by postedge: one outlet's broker",
        f"user {user}",
    ]
    if tls is None:
        head += [f"listener {port} {bind}", *_listener_lines(limits)]
    else:
        head += [
            "",
            "# Plaintext MQTT on loopback only: the gateway on this box. Nothing on",
            "# the outlet LAN can reach it; devices use the TLS listener below.",
            f"listener {port} 127.0.0.1",
            *_listener_lines(limits),
            "",
            "# MQTT over TLS for the outlet LAN (devices, handhelds): a server",
            "# certificate from the outlet CA, which every client verifies; TLS 1.2",
            "# or later (tls_version is the minimum in Mosquitto 2).",
            f"listener {tls.port} {tls.bind}",
            f"cafile {tls.cafile}",
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            "tls_version tlsv1.2",
            "require_certificate false",
            *_listener_lines(limits),
            "",
        ]
    auth = [
        "allow_anonymous false",
        f"password_file {passwd}",
        f"acl_file {acl}",
    ]
    if limits is not None:
        body = _outlet_lines(limits, directory)
    else:
        body = [
            # Sessions and queued QoS 1 messages survive a broker restart.
            "persistence true",
            f"persistence_location {directory / 'data'}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_inflight_messages 4000",
        ]
    logs = [
        "",
        f"log_dest file {directory / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "",
    ]
    conf = directory / "mosquitto.conf"
    conf.write_text("\n".join(head + auth + body + logs))
    return conf


#: Where ``postedge gateway provision --out /etc/postedge`` puts the broker config.
DEFAULT_CONF = Path("/etc/postedge/mosquitto/mosquitto.conf")


def systemd_unit(conf: Path = DEFAULT_CONF, mosquitto: str = "/usr/sbin/mosquitto") -> str:
    """The broker's systemd unit for a generated config: the text of
    ``deploy/postedge-mosquitto.service`` (for ``/etc/postedge``), and what
    ``provision`` writes next to its output for any other folder."""
    return f"""\
# systemd unit for the outlet broker, written by postedge (gateway/broker.py
# systemd_unit; `postedge gateway provision` writes one next to its output).
# It replaces Debian's mosquitto.service, which reads /etc/mosquitto:
#   systemctl disable --now mosquitto
#   cp postedge-mosquitto.service /etc/systemd/system/
#   systemctl enable --now postedge-mosquitto
[Unit]
Description=postedge outlet MQTT broker (Mosquitto)
Documentation=man:mosquitto.conf(5) file:///opt/postedge/docs/gateway.md
After=network.target
Wants=network.target
Conflicts=mosquitto.service
# An unattended outlet: never stop trying (RestartSec keeps it from spinning).
StartLimitIntervalSec=0

[Service]
# Mosquitto 2 tells systemd when its listener is up (sd_notify), so the
# gateway (After= this unit) starts against a broker that accepts it.
Type=notify
NotifyAccess=main
ExecStart={mosquitto} -c {conf}
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM saves the persistence file; give a large one time to reach disk.
KillSignal=SIGTERM
TimeoutStopSec=30
# Devices and the gateway reconnect on their own; the broker must always
# come back, quickly, but not in a tight loop on a broken config.
Restart=always
RestartSec=2
# One descriptor per connection: max_connections (1024) plus the
# persistence file, log and listeners, with room to spare.
LimitNOFILE=4096

[Install]
WantedBy=multi-user.target
"""


def tls_listener(ca: Path, cert: Path, key: Path, port: int | None = None,
                 bind: str = "127.0.0.1") -> TlsListener:
    """A TLS listener for :class:`Mosquitto` (tests, bench, simulator): on a
    free loopback port unless told otherwise."""
    return TlsListener(port or free_port(), Path(ca), Path(cert), Path(key), bind)


class Mosquitto:
    """A Mosquitto process on a loopback port, restartable on the same port."""

    def __init__(self, directory: Path, accounts: list[Account], port: int | None = None,
                 limits: OutletLimits | None | bool = True,
                 username_as_clientid: bool = False, tls: TlsListener | None = None) -> None:
        """``limits``: True (the default) applies the outlet's limits
        (:data:`OUTLET_LIMITS`, with room for every account's connection)
        when the broker has device accounts, and leaves a broker with only
        gateway-kind accounts plain: that is the simulator's central broker
        (``simulator/uplink_double.py`` subclasses this), where each gateway
        holds several connections under one login and batches run to 16 MiB.
        Pass an :class:`OutletLimits` or None to choose exactly.

        ``username_as_clientid`` (with ``limits`` True) adds the client id
        rule that ``provision`` always writes. Off by default only because
        several tests (``tests/simulator/test_faultproxy.py``, ``test_ledger.py``,
        ``test_locker_e2e.py``, ``test_gateway_bad_input.py``) and the demo's
        platform log in with the gateway's account beside a running gateway or
        twice at once, which the rule turns into session takeovers; once
        they have accounts of their own it should default to on.

        ``tls`` adds the outlet's TLS listener (see :func:`tls_listener` for
        one from an outlet PKI on a free port); the plaintext listener on
        ``port`` is then on 127.0.0.1 only, as on an outlet box."""
        self.directory = Path(directory)
        self.accounts = accounts
        self.port = port or free_port()
        if limits is True:
            devices = any(a.kind != "gateway" for a in accounts)
            # room for every account's connection: a simulated outlet (or a scale
            # benchmark) may hold more devices than a real outlet's 1024
            room = max(OUTLET_LIMITS.max_connections, len(accounts) + 64)
            limits = OutletLimits(username_as_clientid=username_as_clientid,
                                  max_connections=room) if devices else None
        elif limits is False:
            limits = None
        self.limits: OutletLimits | None = limits
        self.tls = tls
        self.conf = write_config(self.directory, self.port, accounts, limits=limits, tls=tls)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tls_port(self) -> int:
        if self.tls is None:
            raise ValueError("this broker has no TLS listener")
        return self.tls.port

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    NAME = "mosquitto"

    def command(self) -> list[str]:
        return [find_mosquitto(), "-c", str(self.conf)]

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "stderr.log", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.NAME} exited with {self.proc.returncode}: "
                    + (self.directory / "stderr.log").read_text(errors="replace")[-2000:]
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{self.NAME} did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        """Graceful stop: Mosquitto saves its persistence file."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a power cut or OOM kill would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
