"""The central side of a simulated outlet or county: the real central service,
the WAN link to it, and a test PKI.

- :class:`CentralService` runs the platform as it ships (``central/``): the
  embedded SQLite backend in the run's folder, or on request the scale-out
  one (``backend="scaleout"``: a 3-node NATS JetStream cluster, an ingest
  worker and PostgreSQL on loopback, ``central/scaleout/local.py``), the
  aiohttp HTTPS front with outlet logins on loopback, and the platform's own
  duties (pickup notices through the real HTTP SMS adapter, answers to
  revoked devices, the boards' review) on a short timer. What the
  simulator's checks need it reads back from the central store
  (``outlet_events``, ``complete_photos``, ``Notices.states``), so a report
  judges what the platform really holds, not what a stand-in remembered.
  One sabotage stays, to prove the ledger bites (embedded only):
  ``lose_every`` acks every event but never stores every Nth new one.
- :class:`SmsDouble`: the SMS provider the platform texts through, an HTTP
  endpoint that keeps every text once per reference, as real ones do.
- :class:`Link`: a TCP relay standing for the outlet's WAN: counts bytes both
  ways and goes ``down()`` (refused, live connections cut) and ``up()``. It is
  the network, not the platform, so faults on it are faults of the backhaul.
- :func:`make_certs`: a test PKI with the ``openssl`` CLI: a CA, a server
  certificate for 127.0.0.1/localhost, a client certificate, one signed by an
  untrusted CA and one for the wrong host name.

The gateway tests' uplink double with its own fault hooks (HTTP 500s, lost
acks, a slow platform, the MQTT acker) is ``simulator/uplink_double.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from central.backend import Stored
from central.dispatch import Dispatch
from central.duties import Duties
from central.embedded import Embedded
from central.front import Front
from central.intake import Checked
from central.notices import HttpSms, add_contact
from common.logs import JsonLines
from common.ports import free_port
from common.web_server import ThreadedServer
from protocol import envelope
from simulator.platform_keys import MASTER


# ------------------------------------------------------------------- certs
@dataclass(frozen=True)
class Certs:
    dir: Path
    ca: Path  # the CA gateways trust
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # right host name, signed by a CA nobody trusts
    rogue_key: Path
    wronghost_cert: Path  # trusted CA, but issued for central.example only
    wronghost_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "30", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d: Path, name: str, ca: str, cn: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(
        f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "30", "-extfile", f"{name}.ext", cwd=d)


def make_certs(directory: Path) -> Certs:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _ca(d, "ca")
    _ca(d, "rogue-ca")
    server_ext = "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost"
    _leaf(d, "server", "ca", "127.0.0.1", server_ext)
    _leaf(d, "client", "ca", "gw-o1", "extendedKeyUsage=clientAuth")
    _leaf(d, "rogue", "rogue-ca", "127.0.0.1", server_ext)
    _leaf(d, "wronghost", "ca", "central.example",
          "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:central.example")
    return Certs(d, d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
                 d / "rogue.pem", d / "rogue.key", d / "wronghost.pem", d / "wronghost.key")


# --------------------------------------------------------------------- SMS
class SmsDouble:
    """An SMS provider on loopback (``POST /sms``, bearer token): keeps each
    text once per ``ref``, as a provider's idempotency key does."""

    TOKEN = "sim-sms-token"

    def __init__(self) -> None:
        self.texts: dict[str, dict[str, Any]] = {}
        self.calls = 0
        self.lock = threading.Lock()
        app = web.Application()
        app.router.add_post("/sms", self._send)
        self.srv = ThreadedServer(app, "127.0.0.1", 0, name="sim-sms")
        self.srv.start()
        self.url = f"http://127.0.0.1:{self.srv.address[1]}/sms"

    async def _send(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        doc = await request.json()
        with self.lock:
            self.calls += 1
            self.texts.setdefault(str(doc.get("ref")), doc)
            n = len(self.texts)
        return web.json_response({"id": f"sms{n}"})

    def close(self) -> None:
        self.srv.stop()


# ----------------------------------------------------------------- central
class _Sabotaged:
    """The backend as the front sees it, with ``lose_every``: every Nth new
    event is acked (the front builds the ack from what it checked) but never
    stored, so the gateway lets go of it and it is lost for good."""

    def __init__(self, backend: Embedded) -> None:
        self.backend = backend
        self.lose_every = 0
        self.forgotten: list[str] = []
        self._new_seen = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def store(self, outlet: str, checked: Checked) -> Stored:
        if not self.lose_every:
            return self.backend.store(outlet, checked)
        with self._lock:
            ids = [e.id for e in checked.good]
            held = {r[0] for r in self.backend.db.execute(
                f"SELECT id FROM events WHERE outlet=? AND id IN ({','.join('?' * len(ids))})",
                (outlet, *ids))} if ids else set()
            keep = []
            for e in checked.good:
                if e.id not in held:
                    self._new_seen += 1
                    if self._new_seen % self.lose_every == 0:
                        self.forgotten.append(e.id)
                        continue
                keep.append(e)
        return self.backend.store(outlet, dataclasses.replace(checked, good=keep))


class CentralService:
    """The real central service on loopback, for one outlet or a county.

    ``up()`` starts the HTTPS front (``url``, trusting ``ca``) and the duties;
    ``add_outlet`` registers a gateway's login. Reads are incremental: the
    events held are paged in once from the store and kept decoded."""

    def __init__(self, directory: Path, cert: Path, key: Path, ca: Path, master: bytes = MASTER,
                 duty_interval_s: float = 0.2, clock: Callable[[], float] = time.time,
                 backend: str = "embedded") -> None:
        """``backend``: ``embedded`` (SQLite in the folder) or ``scaleout``
        (its own local NATS cluster, worker and PostgreSQL under the folder)."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key, self.ca = cert, key, ca
        self.master = master
        self.duty_interval_s = duty_interval_s
        self.kind = backend
        self.cluster: Any = None
        self.worker: Any = None
        self.backend: Any
        if backend == "scaleout":
            from central.scaleout import ScaleOut, ScaleOutConfig
            from central.scaleout.local import LocalCluster
            from central.scaleout.worker import WorkerThread

            self.cluster = LocalCluster.start(self.dir / "scaleout")
            ns, dsn = self.cluster.namespace("sim")
            cfg = ScaleOutConfig(self.cluster.nats.urls, dsn, ns)
            self.backend = ScaleOut(cfg)
            self.worker = WorkerThread(cfg)
            self.sabotage: Any = self.backend
        else:
            self.backend = Embedded(self.dir)
            self.sabotage = _Sabotaged(self.backend)
        self.sms = SmsDouble()
        # each outlet's virtual clock, which the commands signed for its lockers carry
        self.device_clocks: dict[str, Callable[[], float]] = {}
        self.duties = Duties(self.backend, master, HttpSms(self.sms.url, SmsDouble.TOKEN), clock=clock,
                             device_clock=lambda outlet: self.device_clocks.get(outlet, time.time)())
        self.front = Front(self.sabotage, clock=clock,  # type: ignore[arg-type]
                           dispatch=Dispatch(self.backend, clock=clock, boards=self.duties.boards),
                           master=master, boards=self.duties.boards)
        self.passwords: dict[str, str] = {}
        self._log_to_file()
        self.srv: ThreadedServer | None = None
        self._stop = threading.Event()
        self._duties: threading.Thread | None = None
        self.lock = threading.Lock()  # the read cache
        self._cursor: dict[str, float | None] = {}  # outlet -> where its reads stopped
        self._closed = False
        self._events: dict[str, dict[str, dict[str, Any]]] = {}  # outlet -> id -> envelope
        self._received: dict[str, dict[str, float]] = {}  # outlet -> id -> stored at

    # ------------------------------------------------------------ running
    def add_outlet(self, outlet: str, notifier: bool = False, password: str | None = None,
                   clock: Callable[[], float] | None = None, lockers: int = 0) -> str:
        """Register an outlet and its lockers ``lk01``..; the password its
        gateway logs in with. ``clock``: the outlet's devices' time."""
        if clock is not None:
            self.device_clocks[outlet] = clock
        for i in range(lockers):  # the registry the platform checks a clerk's request against
            self.backend.add_device(outlet, f"lk{i + 1:02d}", "locker")
        pw = password or secrets.token_urlsafe(18)
        self.backend.add_outlet(outlet, pw, notifier=notifier)
        self.passwords[outlet] = pw
        return pw

    def _log_to_file(self) -> None:
        """The platform's own log (every batch, every notice) into ``central.log``
        in its folder: embedded in the simulator's process it would otherwise
        fill the tester's terminal."""
        self._logger = logging.getLogger("postedge.central")
        self._handler = logging.FileHandler(self.dir / "central.log", encoding="utf-8")
        self._handler.setFormatter(JsonLines())
        self._logger.addHandler(self._handler)
        self._logger.propagate = False

    def up(self) -> CentralService:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        self.srv = ThreadedServer(self.front.app(), "127.0.0.1", 0, name="central-https", idle_timeout=30.0,
                                  max_connections=4096, ssl_context=ctx, auto_decompress=False)
        self.srv.start()
        self._duties = threading.Thread(target=self._run_duties, name="central-duties", daemon=True)
        self._duties.start()
        return self

    @property
    def port(self) -> int:
        assert self.srv is not None, "CentralService.up() first"
        return self.srv.address[1]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1/batches"

    def _run_duties(self) -> None:
        self.duties.run_until(self._stop, self.duty_interval_s)

    def close(self) -> None:
        self._stop.set()
        if self._duties is not None:
            self._duties.join(10)
        if self.srv is not None:
            self.srv.stop()
            self.srv = None
        self.sms.close()
        with self.lock:  # what it held at the end stays readable (a report, a dashboard that lingers)
            if self.written():
                for outlet in list(self.passwords):
                    self._sync(outlet)
            self._closed = True
        if self.worker is not None:
            self.worker.stop()
        self.backend.close()
        if self.cluster is not None:
            self.cluster.stop()
        self._logger.removeHandler(self._handler)
        self._handler.close()
        if not self._logger.handlers:
            self._logger.propagate = True

    # --------------------------------------------------------- the platform
    def push_command(self, outlet: str, kind: str, cmd: dict[str, Any]) -> int:
        return self.backend.push_command(outlet, kind, cmd)

    def add_contact(self, outlet: str, parcel: str, phone: str, lang: str = "zh") -> None:
        add_contact(self.backend, outlet, parcel, phone, lang)

    @property
    def lose_every(self) -> int:
        return int(getattr(self.sabotage, "lose_every", 0))

    @lose_every.setter
    def lose_every(self, n: int) -> None:
        if self.kind != "embedded":
            raise ValueError("the central_lossy sabotage needs the embedded backend")
        self.sabotage.lose_every = n

    @property
    def forgotten(self) -> list[str]:
        return list(getattr(self.sabotage, "forgotten", []))

    def written(self) -> bool:
        """Whether everything the front acked is where readers look (on
        scale-out the workers may still be writing what the log holds)."""
        return self.kind == "embedded" or self.backend.written()

    # --------------------------------------------------------------- reads
    def _sync(self, outlet: str) -> None:
        """Page in the outlet's events stored since its last read (caller
        holds ``lock``); an event read again (a scale-out store re-reads a
        window) is decoded once."""
        if self._closed:
            return
        rows, self._cursor[outlet] = self.backend.outlet_events(outlet, self._cursor.get(outlet))
        events = self._events.setdefault(outlet, {})
        received = self._received.setdefault(outlet, {})
        for eid, payload, at in rows:
            if eid not in events:
                events[eid] = envelope.decode(payload)
                received[eid] = at

    def held(self, outlet: str) -> dict[str, dict[str, Any]]:
        """Every event the platform holds from ``outlet`` (once each), by id, decoded."""
        with self.lock:
            self._sync(outlet)
            return dict(self._events.get(outlet, {}))

    def count(self, outlet: str) -> int:
        """How many events the platform holds from ``outlet`` (the dashboard's live figure)."""
        with self.lock:
            self._sync(outlet)
            return len(self._events.get(outlet, {}))

    def received_at(self, outlet: str) -> dict[str, float]:
        """When the platform stored each event it holds from ``outlet`` (wall clock)."""
        with self.lock:
            self._sync(outlet)
            return dict(self._received.get(outlet, {}))

    def health(self) -> list[dict[str, Any]]:
        """Per outlet: events held, last upload, alarms (the dispatcher's view)."""
        with self._store():
            return self.backend.health()

    def _store(self) -> Any:
        """The embedded store's connection is shared with its writers: reads
        take its lock; the scale-out store's pool needs none."""
        return self.backend.lock if self.kind == "embedded" else contextlib.nullcontext()

    def photos(self) -> set[str]:
        with self._store():
            return self.backend.complete_photos()

    def forget(self, outlet: str, event_id: str) -> bool:
        """Delete one stored event, as a failing disk would (a test proving the
        ledger notices); True if it was held."""
        if self.kind != "embedded":
            raise ValueError("forgetting an event needs the embedded backend")
        with self.lock:
            gone = self.backend.forget(outlet, event_id)  # by (outlet, id): another outlet's stays
            self._events.get(outlet, {}).pop(event_id, None)
            self._received.get(outlet, {}).pop(event_id, None)
            return gone

    def notices(self, outlet: str) -> dict[str, list[str]]:
        """Who told the villager of each deposit the platform holds: the
        platform when its notice went out through the SMS provider
        (``central/notices.py``), ``gateway`` for each ``notify.sent`` (or
        ``notify.uncertain``: it may have) from the outlet's modem, ``none``
        when the gateway routed it to nobody (picked up before anyone was
        told). Deposit id -> senders: one each when every deposit was told
        exactly once. Per outlet: a county's outlets share one service."""
        evs = self.held(outlet).values()
        with self._store():
            notices = self.duties.notices
            assert notices is not None  # the simulator's service always has its SMS double
            sent = {d for d, st in notices.states(outlet).items() if st == "sent"}
        out: dict[str, list[str]] = {e["id"]: [] for e in evs if e.get("type") == "locker.deposit"}
        for d in sent:
            out.setdefault(d, []).append("platform")
        for e in evs:
            body = e.get("body") if isinstance(e.get("body"), dict) else {}
            if body.get("purpose") != "notice":
                continue
            if e.get("type") == "notify.route" and body.get("by") == "none":
                out.setdefault(str(body.get("event")), []).append("none")
            elif e.get("type") in ("notify.sent", "notify.uncertain"):
                out.setdefault(str(body.get("event")), []).append("gateway")
        return out


# ---------------------------------------------------------------- the WAN
class Link:
    """A TCP relay standing for the outlet's WAN link to the central side."""

    def __init__(self, target_port: int, port: int | None = None, rate_bytes_per_s: int = 0) -> None:
        """``rate_bytes_per_s``: shape each direction to this rate (0 = as
        fast as loopback goes), for a rural link's bandwidth."""
        self.target_port = target_port
        self.port = port or free_port()
        self.rate = rate_bytes_per_s
        self._next = {True: 0.0, False: 0.0}
        self.up_bytes = 0  # gateway -> central
        self.down_bytes = 0  # central -> gateway
        self.connections = 0
        self.lock = threading.Lock()
        self.live: set[socket.socket] = set()
        self.listener: socket.socket | None = None
        self.is_up = False

    def up(self) -> Link:
        if self.listener is not None:
            return self
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        lst.settimeout(0.05)
        self.listener = lst
        self.is_up = True
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()
        return self

    start = up

    def down(self) -> None:
        """New connections refused, live ones cut."""
        self.is_up = False
        lst, self.listener = self.listener, None
        if lst is not None:
            # shutdown takes the socket out of LISTEN at once; a bare close
            # waits for the accept thread's pending call, and the kernel
            # keeps completing handshakes until then
            try:
                lst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            lst.close()
        with self.lock:
            live = list(self.live)
            self.live.clear()
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    stop = down

    def _accept(self, lst: socket.socket) -> None:
        while self.listener is lst:
            try:
                conn, _ = lst.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                far = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                conn.close()
                continue
            conn.settimeout(None)
            far.settimeout(None)
            with self.lock:
                if self.listener is not lst:
                    conn.close()
                    far.close()
                    return
                self.connections += 1
                self.live.update((conn, far))
            threading.Thread(target=self._pump, args=(conn, far, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(far, conn, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        try:
            while True:
                data = src.recv(16384 if self.rate else 65536)
                if not data:
                    break
                if self.rate:
                    with self.lock:
                        now = time.monotonic()
                        at = max(now, self._next[upward])
                        self._next[upward] = at + len(data) / self.rate
                    if at > now:
                        time.sleep(at - now)
                dst.sendall(data)
                with self.lock:
                    if upward:
                        self.up_bytes += len(data)
                    else:
                        self.down_bytes += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self.lock:
                self.live.discard(src)
            src.close()

