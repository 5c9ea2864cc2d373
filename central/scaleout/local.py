"""The scale-out backend's parts on one box, on loopback: a 3-node NATS
JetStream cluster (Debian's ``nats-server``, each node with its own store
folder, full-mesh routes, optionally its MQTT listener) and a PostgreSQL
server (Debian's ``postgresql``: initdb in a temporary folder, run as an
unprivileged user because postgres refuses root, socket in that folder, TCP
on 127.0.0.1).

For what runs a whole province's platform in miniature on one machine: the
simulator's county on the scale-out backend (``simulator/central.py``), the
tests and ``bench/central_ingest.py``. Not a deployment: a real one runs
each node and the database on machines of their own. Each user of a
``LocalCluster`` gets its own namespace (stream, subjects, consumer) and its
own database, so several can share one. Nodes can be killed (SIGKILL) and
restarted on the same ports and store folders, and the database halted or
killed, to show what faults do.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.ports import free_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class NatsNode:
    name: str
    port: int
    cluster_port: int
    store: Path
    conf: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    mqtt_port: int = 0  # nats-server's MQTT listener (TLS), when the cluster has one

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.mqtt_port}"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([NATS_SERVER, "-c", str(self.conf)], stdout=out,
                                         stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, f"nats-server {self.name}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no leadership hand-over."""
        stop_process(self.proc, signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class MqttListener:
    """nats-server's MQTT listener on every node: TLS with this certificate,
    and the outlets' users (``central.scaleout.nats_auth.render``) in an
    include file that ``NatsCluster.set_auth`` rewrites and reloads."""

    cert: Path
    key: Path
    auth: str
    max_payload: str = "4MB"  # above the MQTT front's batch limit: a refusal with a reason


@dataclass
class NatsCluster:
    root: Path
    nodes: list[NatsNode] = field(default_factory=list)

    @classmethod
    def start(cls, root: Path, n: int = 3, mqtt: MqttListener | None = None) -> NatsCluster:
        root.mkdir(parents=True, exist_ok=True)
        ports = [(free_port(), free_port()) for _ in range(n)]
        c = cls(root)
        if mqtt is not None:
            (root / "auth.conf").write_text(mqtt.auth)
        for i, (port, cport) in enumerate(ports):
            name = f"n{i + 1}"
            store = root / name
            store.mkdir(exist_ok=True)
            routes = ", ".join(f"nats-route://127.0.0.1:{cp}" for j, (_, cp) in enumerate(ports) if j != i)
            conf = root / f"{name}.conf"
            extra, mport = "", 0
            if mqtt is not None:
                mport = free_port()
                extra = (f'max_payload: {mqtt.max_payload}\n'
                         f'mqtt {{ listen: "127.0.0.1:{mport}", '
                         f'tls {{ cert_file: "{mqtt.cert}", key_file: "{mqtt.key}" }} }}\n'
                         f'include "auth.conf"\n')
            conf.write_text(
                f'server_name: "{name}"\nlisten: "127.0.0.1:{port}"\n'
                f'jetstream {{ store_dir: "{store}", max_memory_store: 256MB, max_file_store: 8GB }}\n'
                f'cluster {{ name: "pe", listen: "127.0.0.1:{cport}", routes: [{routes}] }}\n' + extra)
            c.nodes.append(NatsNode(name, port, cport, store, conf, root / f"{name}.log", mqtt_port=mport))
        for node in c.nodes:
            node.start()
        return c

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def set_auth(self, text: str) -> None:
        """New users for the MQTT listener, reloaded on every running node
        (an outlet added or retired)."""
        (self.root / "auth.conf").write_text(text)
        for n in self.nodes:
            if n.alive:
                assert n.proc is not None
                n.proc.send_signal(signal.SIGHUP)  # nats-server: reload the configuration

    def stop(self) -> None:
        """Every node told at once, then waited for: stopped one by one, each
        waits out its peers' departure and the last can outlive its test run."""
        live = [n.proc for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        for proc in live:
            stop_process(proc)


def children(ppid: int) -> list[int]:
    """The pids of ``ppid``'s child processes (a server's backends)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (scripts/setup installs it)")
    return path


@dataclass
class Postgres:
    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    user: str | None = None

    @classmethod
    def start(cls) -> Postgres:
        # Not under pytest's tmp folders: those are root's 0700 and the
        # unprivileged server could not reach them.
        root = Path(tempfile.mkdtemp(prefix="postedge-pg-"))
        user = None
        if os.geteuid() == 0:
            user = "nobody"
            pw = pwd.getpwnam(user)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        pg = cls(root, free_port(), user=user)
        subprocess.run([_pg_bin("initdb"), "-D", str(root / "data"), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--locale=C", "--no-sync"], check=True, user=user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=root)
        pg.start_server()
        return pg

    def start_server(self) -> None:
        with open(self.root / "server.log", "ab") as out:
            self.proc = subprocess.Popen(
                [_pg_bin("postgres"), "-D", str(self.root / "data"), "-k", str(self.root),
                 "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
                 "-c", "shared_buffers=256MB"],
                user=self.user, stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        wait_port(self.port, self.proc, "postgres", timeout=60.0)
        # After a SIGKILL the server replays its WAL before it accepts
        # connections: seconds on a quiet box, over 20 s on a loaded one.
        end = time.monotonic() + 120
        while subprocess.run([_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             stdout=subprocess.DEVNULL).returncode != 0:
            if time.monotonic() > end:
                raise RuntimeError("postgres not ready")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend (a database host that
        crashed); ``start_server`` then recovers from the WAL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        kids = children(self.proc.pid)
        self.proc.kill()
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        end = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in kids) and time.monotonic() < end:
            time.sleep(0.05)

    def halt(self) -> None:
        """Stop the server (a fast, clean shutdown), keeping its data folder
        and port for ``start_server``: a database that is down for upkeep."""
        stop_process(self.proc, signal.SIGINT)

    def dsn(self, db: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db}"

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT)  # fast shutdown
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class LocalCluster:
    nats: NatsCluster
    pg: Postgres
    _n: int = 0

    @classmethod
    def start(cls, root: Path) -> LocalCluster:
        pg = Postgres.start()
        try:
            return cls(NatsCluster.start(root / "nats"), pg)
        except BaseException:
            pg.stop()
            raise

    def namespace(self, prefix: str = "t") -> tuple[str, str]:
        """A fresh (namespace, database DSN) pair."""
        self._n += 1
        ns = f"{prefix}{os.getpid()}_{self._n}"
        return ns, self.pg.create_db(ns)

    def stop(self) -> None:
        self.nats.stop()
        self.pg.stop()
