"""A double of the platform's uplink for the gateway's own tests and the WAN
benchmark, with fault hooks the real central service (``central/``, run by
the simulator through ``simulator/central.py``) has no business carrying.

The gateway's uplink tests need a platform that fails on demand: HTTP 500s,
lost acks, a slow answer, a socket whose first byte is checked before TLS, an
upload cut short, and an MQTT uplink (a central Mosquitto and an acker). The
simulator and the end-to-end tests use the real service instead.

- :class:`UplinkDouble` is the ledger: it decodes batches with the uplink codec
  (``common.uplink_codec``) and validates every event with the shared protocol
  module (``protocol.envelope.decode``), records every event id it
  received and how many times, keeps the first copy (duplicates dropped), and
  builds the ack. It also holds commands for the outlets' devices
  (``push_command``) and answers the gateways' downlink pulls. Faults:
  ``fail`` (HTTP 500 / no MQTT ack, batch not processed), ``delay_s``
  (slow), ``drop_acks`` (process the next N batches but lose their acks, as
  a dropped response would).
- :class:`UplinkDoubleHttps`: aiohttp behind TLS (optionally requiring client
  certificates), on its own event loop in its own thread, with
  ``down()``/``up()`` for "connection refused". It peeks at the first byte
  of every connection before the handshake, so a test can prove a client
  never spoke plaintext.
- :class:`CentralBroker`: a Mosquitto with a TLS-only listener, passwords and
  a per-outlet ACL (``gateway/broker.py`` writes plain loopback listeners for
  the outlet side); :class:`CentralMqtt` is the acker on it.

Photos: the HTTPS endpoint also answers the gateway's photo uploads
(``/v1/uploads``, the protocol of ``gateway/http/uploads.py``) as a real platform
must: chunks and whole files are hash-checked, photos are kept once per
content hash across all outlets (a second outlet's copy costs one request),
and every claim (outlet, device, meta) is recorded, since the same picture
arriving as evidence from two places is itself worth a look.

Why aiohttp: the gateway's own server (``gateway/http/server.py``)
is aiohttp, and the stub was the last hand-written ``http.server`` handler,
with its own copy of status lines, header writing and body reading. One
toolkit means one set of HTTP semantics to know; the stub keeps only what a
test needs to see: the first byte before TLS (its own accept loop, as
aiohttp's sites hand the socket to TLS before anyone can peek), a
connection closed unanswered (a lost ack, a cut upload), and ``down()``.
The ledger's calls block (its lock, ``delay_s``), so they run on a thread
pool, never on the loop, and a slow platform still serves other gateways.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import queue
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from aiohttp import web

from common.ports import free_port
from common.uplink_codec import CONTENT_TYPE, BatchError, decode_batch, encode_ack, encode_down
from gateway.broker import Account, Mosquitto
from gateway.config import DEFAULT_PREFIX
from protocol import envelope
from protocol.errors import BadField, ProtocolError
from protocol.ids import parse_event_id
from simulator.central import Certs


# ------------------------------------------------------------------ ledger
@dataclass
class BatchRecord:
    id: str
    outlet: str
    lane: str
    n: int
    wire_bytes: int
    decoded_bytes: int
    new: int
    dup: int
    at: float
    ids: list[str] = field(default_factory=list)
    ack_dropped: bool = False


class UplinkDouble:
    """What the platform holds, deduplicated by event id, and its faults."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.events: dict[str, dict[str, Any]] = {}  # first copy of each id
        self.payloads: dict[str, bytes] = {}
        self.counts: Counter[str] = Counter()  # every receipt, duplicates included
        self.quarantine: dict[str, str] = {}
        self.batches: list[BatchRecord] = []
        self.bad_batches: list[str] = []
        self.truncated = 0  # uploads cut short (sender killed, link cut)
        # faults
        self.fail = False
        self.delay_s = 0.0
        self.drop_acks = 0
        self.delay_fn: Callable[[], float] | None = None
        # downlink: per outlet, commands as (cursor, kind, command object)
        self.down: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
        self.down_next = 1
        self.down_acked: dict[str, int] = {}
        self.pulls: Counter[str] = Counter()
        self.down_page = 100
        # photos, by content hash
        self.photos: dict[str, bytes] = {}
        self.photo_claims: dict[str, list[dict[str, Any]]] = {}
        self.photo_partial: dict[str, dict[str, Any]] = {}
        self.photo_puts: Counter[str] = Counter()
        self.photo_begins: Counter[str] = Counter()

    @property
    def duplicates(self) -> int:
        return sum(self.counts.values()) - len(self.counts)

    def handle(self, outlet: str, bid: str, body: bytes) -> bytes | None:
        """Process one batch; the ack, or None when the ack is to be lost.

        Raises BatchError for a batch that is not well formed (HTTP 400).
        """
        delay = self.delay_fn() if self.delay_fn else self.delay_s
        if delay:
            time.sleep(delay)
        try:
            batch = decode_batch(body)
            if bid and batch.id != bid:
                raise BatchError(f"batch id {batch.id} arrived as {bid}")
            if batch.outlet != outlet:
                raise BatchError(f"batch of outlet {batch.outlet} arrived for {outlet}")
        except BatchError as e:
            with self.lock:
                self.bad_batches.append(str(e))
            raise
        acked: list[str] = []
        rejected: dict[str, str] = {}
        new = dup = 0
        with self.lock:
            for eid, payload in batch.events:
                try:
                    parse_event_id(eid)
                except ProtocolError:
                    rejected[eid] = "bad_field: unparseable id"
                    continue
                try:
                    env = envelope.decode(payload)
                    if env["id"] != eid:
                        raise BadField(f"rebuilt id {env['id']} != {eid}")
                except ProtocolError as e:
                    rejected[eid] = f"{e.code}: {e.detail}"
                    self.quarantine.setdefault(eid, rejected[eid])
                    acked.append(eid)
                    continue
                self.counts[eid] += 1
                if eid in self.events:
                    dup += 1
                else:
                    new += 1
                    self.events[eid] = env
                    self.payloads[eid] = payload
                acked.append(eid)
            rec = BatchRecord(batch.id, outlet, batch.lane, len(batch.events), len(body),
                              batch.decoded_bytes, new, dup, time.time(), [e[0] for e in batch.events])
            if self.drop_acks > 0:
                self.drop_acks -= 1
                rec.ack_dropped = True
            self.batches.append(rec)
            self.lock.notify_all()
        ids = [e[0] for e in batch.events]
        return None if rec.ack_dropped else encode_ack(batch.id, acked, rejected, batch_ids=ids)

    # -------------------------------------------------------------- photos
    def _photo_state(self, sha: str) -> dict[str, Any] | None:
        if sha in self.photos:
            size = len(self.photos[sha])
            cs = self.photo_partial.get(sha, {}).get("chunk_size", max(size, 1))
            n = -(-size // cs)
            return {"sha256": sha, "size": size, "chunk_size": cs, "chunks": n, "confirmed": list(range(n)),
                    "complete": True}
        p = self.photo_partial.get(sha)
        if p is None:
            return None
        return {"sha256": sha, "size": p["size"], "chunk_size": p["chunk_size"], "chunks": p["chunks"],
                "confirmed": sorted(p["parts"]), "complete": False}

    def photo_begin(self, outlet: str, doc: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(doc, dict):
            return 400, {"error": "bad_json"}
        sha, size, cs = doc.get("sha256"), doc.get("size"), doc.get("chunk_size")
        if not isinstance(sha, str) or not _HEX64.match(sha) or not isinstance(size, int) or \
                not 1 <= size <= 64 * 1024 * 1024 or not isinstance(cs, int) or \
                not 1024 <= cs <= 4 * 1024 * 1024:
            return 400, {"error": "bad_request"}
        with self.lock:
            self.photo_begins[sha] += 1
            self.photo_claims.setdefault(sha, []).append({"outlet": outlet, "meta": doc.get("meta")})
            st = self._photo_state(sha)
            if st is not None:
                return 200, st
            self.photo_partial[sha] = {"size": size, "chunk_size": cs, "chunks": -(-size // cs), "parts": {}}
            return 201, self._photo_state(sha) or {}

    def photo_chunk(self, sha: str, idx: int, body: bytes, chunk_hash: str) -> tuple[int, bool]:
        """(status, complete)."""
        with self.lock:
            self.photo_puts[sha] += 1
            if sha in self.photos:
                return 204, True
            p = self.photo_partial.get(sha)
            if p is None:
                return 404, False
            if idx >= p["chunks"]:
                return 400, False
            want = p["chunk_size"] if idx < p["chunks"] - 1 else p["size"] - p["chunk_size"] * idx
            if len(body) != want or hashlib.sha256(body).hexdigest() != chunk_hash:
                return 400, False
            p["parts"][idx] = body
            if len(p["parts"]) < p["chunks"]:
                return 204, False
            data = b"".join(p["parts"][i] for i in range(p["chunks"]))
            if hashlib.sha256(data).hexdigest() != sha:
                p["parts"].clear()
                return 409, False
            self.photos[sha] = data
            p["parts"].clear()
            self.lock.notify_all()
            return 204, True

    def push_command(self, outlet: str, kind: str, cmd: dict[str, Any]) -> int:
        """Queue a signed command for an outlet's device; returns its cursor."""
        with self.lock:
            n = self.down_next
            self.down_next += 1
            self.down.setdefault(outlet, []).append((n, kind, cmd))
            return n

    def pull(self, outlet: str, after: int) -> bytes:
        """A gateway's pull: ``after`` acks what it has, the rest comes down."""
        with self.lock:
            self.pulls[outlet] += 1
            self.down_acked[outlet] = max(self.down_acked.get(outlet, 0), after)
            left = [c for c in self.down.get(outlet, []) if c[0] > after]
            self.down[outlet] = left
            page = left[:self.down_page]
            cursor = page[-1][0] if page else after
            self.lock.notify_all()
        return encode_down(cursor, [(k, c) for _, k, c in page], more=len(left) > len(page))

    def wait_for(self, pred: Callable[[UplinkDouble], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not pred(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(min(left, 0.2))
            return True

    def wait_ids(self, ids: set[str] | list[str], timeout: float) -> bool:
        want = set(ids)
        return self.wait_for(lambda c: want <= c.events.keys(), timeout)


# ------------------------------------------------------------------- HTTPS
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
UPLOADS = "/v1/uploads"
BODY_MAX = 80 * 1024 * 1024  # a batch or a photo chunk; aiohttp's default is 1 MiB
WORKERS = 32  # threads for the ledger's blocking calls (``delay_s`` sleeps in them)
PEEK_TIMEOUT_S = 10  # for a client's first byte, and then for its TLS handshake
IDLE_S = 30  # a kept-alive connection silent this long is closed


def _reply(status: int, body: bytes = b"", ctype: str = "application/json") -> web.Response:
    return web.Response(status=status, body=body, content_type=ctype)


class UplinkDoubleHttps:
    """The platform's HTTPS endpoint: ``https://127.0.0.1:<port>/v1/batches``.

    ``POST`` any path but ``/v1/uploads``: a batch, answered with its ack
    (``X-Postedge-Outlet``, ``X-Postedge-Batch``); ``GET``: a downlink pull
    (``X-Postedge-After``); ``HEAD``: the probe (204, or 500 under ``fail``);
    ``/v1/uploads...``: photos. Basic auth when ``auth`` is set (not on the
    probe); ``client_ca`` makes the TLS layer require a client certificate.
    A batch whose ack is to be lost (``drop_acks``) and an upload cut short
    leave the connection closed unanswered.
    """

    def __init__(self, central: UplinkDouble, cert: Path, key: Path, port: int | None = None,
                 client_ca: Path | None = None, auth: tuple[str, str] | None = None) -> None:
        self.central = central
        self.port = port or free_port()
        self.auth = auth
        self._want_auth = ("Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                           if auth is not None else None)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(str(client_ca))
        self.lock = threading.Lock()
        self.first_bytes: list[bytes] = []  # every connection's first byte, read before the handshake
        self.tls_failures: list[str] = []
        # while up: the server's thread, its loop, and (loop-owned) its connections
        self.thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._live: set[asyncio.Transport] = set()
        self._opening: set[asyncio.Task[None]] = set()
        self._work: set[asyncio.Future[Any]] = set()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1/batches"

    # -- the app
    def app(self) -> web.Application:
        app = web.Application(client_max_size=BODY_MAX)
        r = app.router
        for path in (UPLOADS, UPLOADS + "/"):
            r.add_post(path, self._photo_begin)
        r.add_put(UPLOADS + r"/{sha:[0-9a-f]{64}}/{idx:[0-9]+}", self._photo_chunk)
        r.add_get(UPLOADS + "/{sha}", self._photo_state)  # and HEAD
        for method in ("GET", "HEAD", "POST", "PUT"):
            r.add_route(method, UPLOADS + "{rest:(/.*)?}", self._upload_no_route)
        r.add_post("/{path:.*}", self._batch)
        r.add_get("/{path:.*}", self._pull, allow_head=False)
        r.add_head("/{path:.*}", self._probe)
        r.add_put("/{path:.*}", self._no_route)
        return app

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """The ledger's calls block (its lock, ``delay_s``): never on the loop."""
        fut = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        self._work.add(fut)
        fut.add_done_callback(self._work.discard)
        return await fut

    async def _body(self, request: web.Request) -> bytes | None:
        """The whole body, or None when the sender died or the link broke
        mid-upload: nothing to answer, and not a malformed request."""
        try:
            return await request.read()
        except OSError:
            with self.central.lock:
                self.central.truncated += 1
            return None

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        """Close the connection unanswered (aiohttp's write of the returned
        response then fails quietly)."""
        if request.transport is not None:
            request.transport.abort()
        return web.Response()

    def _refused(self, request: web.Request) -> web.Response | None:
        """401 without the right login, 500 while the platform is failing."""
        if self._want_auth is not None and request.headers.get("Authorization", "") != self._want_auth:
            return _reply(401, b'{"error":"unauthorized"}')
        if self.central.fail:
            return _reply(500, b'{"error":"injected"}')
        return None

    # -- batches, pulls, the probe
    async def _batch(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body is None:
            return self._drop(request)
        if (refused := self._refused(request)) is not None:
            return refused
        h = request.headers
        if h.get("Content-Encoding") != "deflate" or h.get("Content-Type") != CONTENT_TYPE:
            return _reply(415, b'{"error":"want a deflate-coded postedge batch"}')
        try:
            ack = await self._blocking(self.central.handle, h.get("X-Postedge-Outlet", ""),
                                       h.get("X-Postedge-Batch", ""), body)
        except BatchError as e:
            return _reply(400, json.dumps({"error": str(e)}).encode())
        if ack is None:  # processed, but the answer is lost
            return self._drop(request)
        return _reply(200, ack)

    async def _pull(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        try:
            after = int(request.headers.get("X-Postedge-After", "0"))
        except ValueError:
            return _reply(400, b'{"error":"X-Postedge-After must be an integer"}')
        down = await self._blocking(self.central.pull, request.headers.get("X-Postedge-Outlet", ""), after)
        return _reply(200, down)

    async def _probe(self, request: web.Request) -> web.Response:
        return _reply(500 if self.central.fail else 204)

    async def _no_route(self, request: web.Request) -> web.Response:
        if await self._body(request) is None:
            return self._drop(request)
        return _reply(404, b'{"error":"no_route"}')

    # -- photos
    async def _upload_no_route(self, request: web.Request) -> web.Response:
        if await self._body(request) is None:
            return self._drop(request)
        return self._refused(request) or _reply(404, b'{"error":"no_route"}')

    async def _photo_begin(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body is None:
            return self._drop(request)
        if (refused := self._refused(request)) is not None:
            return refused
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        code, st = await self._blocking(self.central.photo_begin,
                                        request.headers.get("X-Postedge-Outlet", ""), doc)
        return _reply(code, json.dumps(st).encode())

    async def _photo_chunk(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body is None:
            return self._drop(request)
        if (refused := self._refused(request)) is not None:
            return refused
        m = request.match_info
        code, complete = await self._blocking(self.central.photo_chunk, m["sha"], int(m["idx"]), body,
                                              request.headers.get("X-Chunk-Sha256", ""))
        return web.Response(status=code, headers={"X-Upload-Complete": "true" if complete else "false"})

    async def _photo_state(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        st = await self._blocking(self._state_of, request.match_info["sha"])
        if st is None:
            return _reply(404, b'{"error":"unknown_upload"}')
        return _reply(200, json.dumps(st).encode())

    def _state_of(self, sha: str) -> dict[str, Any] | None:
        with self.central.lock:
            return self.central._photo_state(sha)

    # -- connections: the first byte, then TLS, then aiohttp
    async def _accept(self, listener: socket.socket, server: web.Server) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            task = asyncio.create_task(self._open(conn, server))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open(self, conn: socket.socket, server: web.Server) -> None:
        """Peek at the first byte (a TLS ClientHello is 0x16), then hand the
        socket to TLS and aiohttp. A socket never handed over is closed."""
        loop = asyncio.get_running_loop()
        try:
            readable = loop.create_future()
            loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
            try:
                await asyncio.wait_for(readable, PEEK_TIMEOUT_S)
            finally:
                loop.remove_reader(conn.fileno())
            first = conn.recv(1, socket.MSG_PEEK)
            with self.lock:
                self.first_bytes.append(first)
            try:
                transport, _ = await loop.connect_accepted_socket(server, conn, ssl=self.ctx,
                                                                  ssl_handshake_timeout=PEEK_TIMEOUT_S)
            except (OSError, TimeoutError) as e:  # ssl.SSLError is an OSError
                with self.lock:
                    self.tls_failures.append(str(e))
                raise
        except (OSError, TimeoutError):  # silent, gone, or refused in the handshake
            conn.close()
            return
        except asyncio.CancelledError:  # down() while opening
            conn.close()
            raise
        self._live = {t for t in self._live if not t.is_closing()}
        self._live.add(transport)

    # -- the thread
    def up(self) -> UplinkDoubleHttps:
        if self.thread is not None:
            return self
        # Bound here, not in the thread: when up() returns, connections are accepted.
        listener = socket.create_server(("127.0.0.1", self.port), backlog=128)
        listener.setblocking(False)
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="central-https")
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(listener, ready), daemon=True,
                                       name=f"central-https-{self.port}")
        self.thread.start()
        ready.wait(10)
        if self._stop is None:
            self.down()
            raise RuntimeError(f"central HTTPS on port {self.port} did not start")
        return self

    start = up

    def _run(self, listener: socket.socket, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(listener, ready))
        finally:
            ready.set()  # also when setup failed: up() must not wait for nothing
            listener.close()
            loop.close()

    async def _serve(self, listener: socket.socket, ready: threading.Event) -> None:
        # auto_decompress off: a batch is checked and decoded deflated, as it came.
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1,
                               keepalive_timeout=IDLE_S, auto_decompress=False)
        await runner.setup()
        assert runner.server is not None
        self._stop = asyncio.Event()
        accept = asyncio.create_task(self._accept(listener, runner.server))
        ready.set()
        try:
            await self._stop.wait()
        finally:
            accept.cancel()
            listener.close()  # refused from here on
            for task in list(self._opening):
                task.cancel()
            for transport in self._live:
                transport.abort()  # cut, as a crashed platform would
            self._live.clear()
            for fut in list(self._work):
                fut.cancel()  # a ledger call still running finishes in its thread, unanswered
            await asyncio.gather(accept, *self._opening, return_exceptions=True)
            await runner.cleanup()

    def down(self) -> None:
        """Refuse connections and cut the live ones, as a crashed platform would."""
        thread, self.thread = self.thread, None
        if thread is None:
            return
        loop, stop, self._stop = self._loop, self._stop, None
        if stop is not None and thread.is_alive():
            assert loop is not None
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    stop = down


# -------------------------------------------------------------------- MQTT
class CentralBroker(Mosquitto):
    """A central Mosquitto with one TLS listener on loopback.

    Gateways may publish only ``<prefix>/<own outlet>/batch/#`` and read only
    ``<prefix>/<own outlet>/ack/#``; the acker account reads and writes the
    whole prefix. Reuses the outlet broker's process handling and hashed
    password file; the listener, ACL and TLS settings are written here.
    """

    def __init__(self, directory: Path, certs: Certs, gateways: list[tuple[str, str, str]],
                 acker: tuple[str, str] = ("central-acker", "acker-secret"), port: int | None = None,
                 prefix: str = DEFAULT_PREFIX, require_client_cert: bool = False,
                 others: list[tuple[str, str, list[str]]] = ()) -> None:
        """``others``: more accounts as (username, password, ACL topic lines),
        e.g. a bridge forwarding device topics for a side-by-side benchmark."""
        accounts = [Account(u, p, o, "gateway") for u, p, o in gateways]
        accounts.append(Account(acker[0], acker[1], "central", "gateway"))
        accounts += [Account(u, p, "other", "gateway") for u, p, _ in others]
        super().__init__(directory, accounts, port)
        self.acker = acker
        self.prefix = prefix
        acl = [f"user {acker[0]}\ntopic readwrite {prefix}/#"]
        for u, _p, o in gateways:
            acl.append(f"user {u}\ntopic write {prefix}/{o}/batch/#\ntopic read {prefix}/{o}/ack/#\n"
                       f"topic write {prefix}/{o}/pull/#\ntopic read {prefix}/{o}/down/#")
        for u, _p, lines in others:
            acl.append("\n".join([f"user {u}", *lines]))
        (self.directory / "acl").write_text("\n\n".join(acl) + "\n")
        text = self.conf.read_text()
        listener = f"listener {self.port} 127.0.0.1"
        tls = [listener, f"cafile {certs.ca}", f"certfile {certs.server_cert}", f"keyfile {certs.server_key}",
               f"require_certificate {'true' if require_client_cert else 'false'}"]
        text = text.replace(listener, "\n".join(tls))
        text = text.replace("persistence true", "persistence false")
        self.conf.write_text(text)


class CentralMqtt:
    """The acker: takes batches off the central broker, acks them on the
    gateway's ack topic. Work happens on its own thread so a slow central
    (``delay_s``) never stalls the MQTT keepalive."""

    def __init__(self, central: UplinkDouble, port: int, ca: Path, username: str, password: str,
                 prefix: str = DEFAULT_PREFIX) -> None:
        self.central = central
        self.port = port
        self.prefix = prefix
        self.inbox: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="central-acker",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.tls_set(ca_certs=str(ca))
        self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = lambda c, u, msg: self.inbox.put(msg)
        self.worker = threading.Thread(target=self._work, daemon=True)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if not rc.is_failure:
            client.subscribe([(f"{self.prefix}/+/batch/+/+", 1), (f"{self.prefix}/+/pull/+/+", 1)])

    def start(self, timeout: float = 10) -> CentralMqtt:
        self.worker.start()
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            raise TimeoutError("central acker did not subscribe")
        return self

    def _work(self) -> None:
        while True:
            msg = self.inbox.get()
            if msg is None:
                return
            parts = msg.topic.split("/")  # <prefix>/<outlet>/batch|pull/<channel>/<id>
            outlet, channel, bid = parts[-4], parts[-2], parts[-1]
            if self.central.fail:
                continue  # the platform is erroring: no ack, batch not processed
            if parts[-3] == "pull":
                try:
                    after = int(json.loads(msg.payload)["after"])
                except (ValueError, KeyError, TypeError):
                    continue
                self.client.publish(f"{self.prefix}/{outlet}/down/{channel}/{bid}",
                                    self.central.pull(outlet, after), qos=1)
                continue
            try:
                ack = self.central.handle(outlet, bid, msg.payload)
            except BatchError:
                continue
            if ack is not None:
                self.client.publish(f"{self.prefix}/{outlet}/ack/{channel}/{bid}", ack, qos=1)

    def stop(self) -> None:
        self.inbox.put(None)
        self.client.disconnect()
        self.client.loop_stop()
