"""The gateway's HTTP server: the clerk's status page, its JSON, the
Prometheus scrape, photo uploads and command status, on one port.

What the page shows is ``gateway/http/status.py`` (the snapshot), how it
looks is ``gateway/http/page.py`` and its templates; this module serves them.
Served by the gateway process itself on aiohttp, in a thread with its own
event loop (``GatewayHTTP`` and ``WebService`` below say why it is not the
standard library's server). An outlet box has
no internet, no reverse proxy and little RAM, so the server itself carries
the protection a proxy would: request and idle timeouts, a connection cap,
a body limit of one upload chunk, and the handheld login checked before any
body is read. Everything the page needs (CSS, the refresh script) is
inline in it, so nothing is fetched from anywhere.
网关自带的 HTTP 服务（aiohttp）：超时、连接上限、请求体上限，先验登录再读请求体。

Routes:

``/``            the page, rendered on the server; ``?lang=zh|en``
``/fragment``    the page's ``<main>`` alone, which the page's tiny script
                 fetches every ``refresh_s`` seconds and swaps in (no reload,
                 no flicker, and a banner when the gateway stops answering);
                 ``<noscript>`` falls back to a meta refresh
``/api/status``  the same snapshot as JSON, for tools and a future app
``/metrics``     ``gateway.metrics.REGISTRY``; the backlog and devices-online
                 gauges are refreshed from the store on every scrape, so they
                 are right even before ingest or sync has touched them
``/healthz``     200 ``ok`` when the store can be read, else 503
``/v1/uploads``  photo uploads from handhelds (``POST``/``PUT``/``HEAD``/``GET``),
                 handled by ``gateway/http/uploads.py``: one LAN port for the page
                 and the uploads; needs ``passwd_file`` (Mosquitto's) for logins
``/v1/commands/<id>``  a forwarded command's status for the handheld that
                 forwarded it (``GET``/``HEAD``), ``gateway/http/commands.py``;
                 same logins as the uploads
``/v1/pair``, ``/v1/pair/ca``  a handheld redeeming the one-time pairing
                 token from the QR code on the clerk's page, and the outlet CA it
                 pins by the code's fingerprint (``gateway/http/pairing.py``)
``/v1/counter/...``  counter acceptance of outbound parcels,
                 ``gateway/http/counter.py``; 503 unless a counter desk is given

Each request opens its own read-only SQLite connection, on the server's
small thread pool so the event loop never waits on the disk: WAL lets it
read while ingest commits, and a read-only handle means no bug on this page
can change what the gateway stores. A row a device sent that cannot be
rendered is a placeholder, never a 500 for the page (finding 3). Text that
devices sent (state documents, alarm and parcel bodies) is escaped by the
page's templates wherever it is shown, and a Content-Security-Policy with a
per-response nonce stops any script that is not ours from running, should
an escape ever be missed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sqlite3
import ssl
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from common.config import Problem
from common.logs import recorder
from common.text import LANGS
from common.web_server import open_url
from gateway import metrics as M
from gateway.config import ConfigError, WebConfig, parse_web
from gateway.http.page import render_main, render_page, render_unavailable
from gateway.http.status import TEXT, Setup, inventory, refresh_gauges, snapshot
from gateway.store.readonly import ReadOnlyStore, StoreUnavailable

if TYPE_CHECKING:
    from gateway.counter.acceptance import CounterDesk

record = recorder(__name__)

BACKLOG = 128  # TCP listen backlog: beyond it the kernel, not this process, holds the queue
DB_THREADS = 4  # the pool that runs SQLite, file and PBKDF2 work: a fixed number of threads
WEB_REFUSED = Counter("postedge_web_connections_closed", "HTTP connections the gateway closed or "
                      "refused to protect itself, by reason (over_capacity, idle_evicted, idle_timeout, "
                      "request_timeout)", ["reason"], registry=M.REGISTRY)

TEXT_PLAIN = "text/plain; charset=utf-8"
JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
# A refused request whose unread body is bigger than this is answered and
# the connection closed: reading (even to discard) a megabyte nobody logged
# in for is what finding 4 was about. Smaller bodies are usually already in
# aiohttp's read buffer, and a clean keep-alive beats a reset for them.
DISCARD_MAX = 64 * 1024
READ_MAX = 16 * 1024  # bytes per socket read, and aiohttp's read buffer (it pauses at twice this)
BUSY_BODY = "网关正忙，请稍后重试 / Gateway busy, retry shortly\n".encode()
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 b"Retry-After: 5\r\nConnection: close\r\nCache-Control: no-store\r\n"
                 b"Content-Length: " + str(len(BUSY_BODY)).encode() + b"\r\n\r\n" + BUSY_BODY)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Busy(asyncio.Protocol):
    """Answers a connection beyond the cap with a fixed 503 and closes it,
    so the socket (and its file descriptor) is gone within one loop turn."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(BUSY_RESPONSE)
        transport.close()

    def data_received(self, data: bytes) -> None:
        """Ignored: the answer does not depend on the request."""


class GatewayHTTP:
    """The gateway's HTTP surface on aiohttp: the page, its JSON, /metrics,
    /healthz, photo uploads and command status, on one port.

    Why aiohttp rather than ``ThreadingHTTPServer``:
    a thread per connection with no timeouts let 300 idle sockets pin 303
    threads, and a handler that read the whole body before looking at the
    login let 150 anonymous 1 MiB PUTs cost 160 MiB. Here one event loop
    holds every connection for a few KB each; the request and idle timeouts,
    the connection cap and the body limit are in one place; and a body is
    read only when a handler awaits it, which the upload routes do after
    the login. SQLite and file work (fsync, PBKDF2, JPEG decoding) runs on a
    small thread pool, so a slow disk never stalls the loop and the number
    of threads is fixed, whatever the clients do.
    为什么用 aiohttp：一个事件循环承载所有连接，超时、连接上限和请求体上限集中
    在一处；上传先验登录再读请求体；数据库和文件操作在固定大小的线程池里执行。
    """

    def __init__(self, db_path: Path, cfg: WebConfig, outlet: str | None = None,
                 gateway_id: str | None = None, counter: CounterDesk | None = None,
                 notify_key_file: str | None = None, tz_offset_h: float = 8.0,
                 upstream: bool | None = None) -> None:
        """``upstream``: whether ``[upstream]`` is configured (the page says
        so rather than promising an upload that never comes)."""
        from gateway.http.clerk import ClerkConsole
        from gateway.http.clerk_slip import SlipDesk
        from gateway.http.commands import CommandAPI
        from gateway.http.counter import CounterRoutes
        from gateway.http.uploads import UploadService

        self.db_path = Path(db_path)
        self.cfg = cfg
        self.upstream = upstream
        self.uploads = UploadService(self.db_path, cfg.passwd_file, cfg.acl_file)
        self.commands = CommandAPI(self.db_path, self.uploads.creds)  # one password checker, one cache
        # The clerk console (gateway/http/clerk.py) writes own events, so it
        # needs the outlet and the gateway's id; without them /clerk is 503.
        # Pickup slips print on the counter's receipt printer, with the code
        # only if the notifier key file opens it (gateway/http/clerk_slip.py).
        receipt = counter.receipt_printer if counter is not None else None
        slips = SlipDesk(self.db_path, receipt, notify_key_file, tz_offset_h) if receipt is not None else None
        self.clerk = (ClerkConsole(self.db_path, outlet, gateway_id or f"gw-{outlet}", bool(cfg.cert_file),
                                   cfg.lang, slips, self.setup) if outlet else None)
        self.counter = CounterRoutes(counter, self.uploads.creds)
        if self.clerk is not None:
            # The clerk's browser may use the counter API with its console
            # session too (cookie + origin + CSRF); the device keeps Basic.
            from gateway.http.counter_login import clerk_or_device

            self.counter.authorize = clerk_or_device(self.counter.basic, self.clerk)
            # Handheld pairing by the QR code the console shows (gateway/http/pairing.py).
            from gateway.http.pairing import Pairing

            self.clerk.pairing = Pairing(self.clerk, cfg.cert_file)
        self.executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="postedge-web-db")
        # Requests in flight per connection, and since when a connection has
        # been idle: the connection cap evicts the longest-idle one, and the
        # sweeper closes any idle longer than ``idle_timeout_s`` (including
        # one that never finished its request line: slowloris).
        self.busy: dict[Any, int] = {}
        self.idle_since: dict[Any, float] = {}
        self._pending: set[Any] = set()
        self.body_read: set[int] = set()  # requests (by id) whose body a handler read
        self.runner: web.AppRunner | None = None

    # -- the app
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard],
                              client_max_size=self.uploads.limits.max_chunk + 64 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run SQLite/file/CPU work on the pool, never on the loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The request timeout, the busy/idle bookkeeping the connection cap
        and the idle sweep use, and: a refused request's body stays unread."""
        proto = request.protocol
        self.busy[proto] = self.busy.get(proto, 0) + 1
        self.idle_since.pop(proto, None)
        try:
            try:
                async with asyncio.timeout(self.cfg.request_timeout_s):
                    resp = await handler(request)
            except TimeoutError:
                WEB_REFUSED.labels("request_timeout").inc()
                resp = self._respond(request, 408, TEXT_PLAIN,
                                     "请求超时 / Request timed out\n".encode())
                resp.force_close()
        finally:
            read = id(request) in self.body_read
            self.body_read.discard(id(request))
            n = self.busy.get(proto, 1) - 1
            if n <= 0:
                self.busy.pop(proto, None)
                self.idle_since[proto] = time.monotonic()
            else:
                self.busy[proto] = n
        if request.can_read_body and not read and not resp.prepared:
            # Refused before its body was read: do not read it now either.
            length = request.content_length
            if length is None or length > DISCARD_MAX:
                resp.force_close()
        return resp

    def _respond(self, request: web.Request, code: int, ctype: str, body: bytes,
                 extra: dict[str, str] | None = None, nonce: str | None = None) -> web.Response:
        headers = {**(extra or {}), "Content-Type": ctype, "Cache-Control": "no-store",
                   "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                   "X-Frame-Options": "DENY", "Server": "postedge"}
        csp = "default-src 'none'; connect-src 'self'; base-uri 'none'; form-action 'none'; " \
              "frame-ancestors 'none'"
        if nonce:
            csp += f"; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'"
        headers["Content-Security-Policy"] = csp
        return web.Response(status=code, body=body, headers=headers)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        raw = request.rel_url.raw_path
        try:
            if path == "/v1/uploads" or path.startswith("/v1/uploads/"):
                return await self._upload(request, raw)
            if path == "/clerk" or path.startswith("/clerk/"):
                return await self._clerk(request)
            if path == "/v1/pair" or path.startswith("/v1/pair/"):
                return await self._pair(request)
            if path.startswith("/v1/notify/"):  # the clerk's resend: gateway/http/notify_resend.py
                from gateway.http import notify_resend

                return await notify_resend.serve(self, request)
            if path == "/v1/commands" or path.startswith("/v1/commands/"):
                r = await self._blocking(self.commands.handle, request.method, raw, request.headers)
                return self._respond(request, r.code, JSON_TYPE, r.body, r.headers)
            if path == "/v1/counter" or path.startswith("/v1/counter/"):
                r = await self.counter.serve(request, self._blocking, self.body_read)
                return self._respond(request, r.code, JSON_TYPE, r.body, r.headers)
            if request.method not in ("GET", "HEAD"):
                return self._respond(request, 405, TEXT_PLAIN, b"method not allowed\n",
                                     {"Allow": "GET, HEAD"})
            lang = request.query.get("lang", self.cfg.lang)
            if lang not in LANGS:
                lang = self.cfg.lang
            return await self._page_route(request, path, lang)
        except Exception as e:  # noqa: BLE001 - a bug answers 500 and is logged, the server lives on

            record("web_error", path=path, error=repr(e), trace=traceback.format_exc(limit=5))
            resp = self._respond(request, 500, TEXT_PLAIN, b"internal error\n")
            resp.force_close()
            return resp

    async def _page_route(self, request: web.Request, path: str, lang: str) -> web.StreamResponse:
        routes: dict[str, Callable[[str], tuple[int, str, bytes, str | None]]] = {
            "/": self._page, "/index.html": self._page, "/fragment": self._fragment,
            "/api/status": self._api, "/metrics": self._metrics, "/healthz": self._healthz,
        }
        route = routes.get(path)
        if route is None:
            both = TEXT.both("err.not_found")
            return self._respond(request, 404, TEXT_PLAIN, f'{both["zh"]} / {both["en"]}\n'.encode())
        try:
            code, ctype, body, nonce = await self._blocking(route, lang)
        except StoreUnavailable as e:
            code, ctype, body, nonce = (*self._unavailable(path, lang, str(e)), None)
        except sqlite3.Error as e:
            code, ctype, body, nonce = (*self._unavailable(path, lang, f"{type(e).__name__}: {e}"), None)
        return self._respond(request, code, ctype, body, nonce=nonce)

    async def _upload(self, request: web.Request, raw: str) -> web.StreamResponse:
        """Login and limits first (headers only), then the body, then the
        store: a refused request's body is never read (finding 4)."""
        up = self.uploads
        method = request.method
        pre = await self._blocking(up.admit, method, raw, request.headers)
        if not isinstance(pre, tuple):
            return self._respond(request, pre.code, JSON_TYPE, pre.body, pre.headers)
        principal, length = pre
        body = b""
        if length:
            try:
                body = await request.content.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The handheld died or walked out of Wi-Fi range mid-chunk:
                # nothing stored, nothing to answer.
                M.UPLOAD_CHUNKS.labels("truncated").inc()
                resp = self._respond(request, 400, TEXT_PLAIN, b"truncated body\n")
                resp.force_close()
                return resp
        self.body_read.add(id(request))
        r = await self._blocking(up.handle, method, raw, request.headers, principal, body)
        return self._respond(request, r.code, JSON_TYPE, r.body, r.headers)

    async def _pair(self, request: web.Request) -> web.StreamResponse:
        """A handheld redeeming a pairing token (``gateway/http/pairing.py``)."""
        pairing = self.clerk.pairing if self.clerk is not None else None
        if pairing is None:
            return self._respond(request, 503, TEXT_PLAIN, b"pairing not configured\n")

        async def body() -> bytes:
            self.body_read.add(id(request))
            return await request.read()

        code, out = await pairing.serve(request.method, request.path, body, request.content_length,
                                        request.remote or "?", self._blocking)
        return self._respond(request, code, JSON_TYPE, out)

    async def _clerk(self, request: web.Request) -> web.StreamResponse:
        """Everything under /clerk is the console's (login, CSRF, roles)."""
        if self.clerk is None:
            return self._respond(request, 503, TEXT_PLAIN, b"clerk console not configured\n")
        self.body_read.add(id(request))
        return await self.clerk.handle(request, self._blocking)

    # -- page routes (run on the pool)
    def _snapshot(self) -> dict[str, Any]:
        store = ReadOnlyStore(self.db_path)
        try:
            return snapshot(store, setup=self.setup())
        finally:
            store.close()

    def setup(self) -> Setup:
        """``[upstream]`` configured or not, and the devices the broker's ACL
        has logins for (re-read when it changes)."""
        devices: tuple[tuple[str, str], ...] = ()
        acl = Path(self.cfg.acl_file) if self.cfg.acl_file else None
        if acl is not None:
            try:
                st = acl.stat()
                stamp = (st.st_mtime, st.st_size)
                if stamp != getattr(self, "_acl_stamp", None):
                    self._inventory = inventory(acl.read_text(encoding="utf-8"))
                    self._acl_stamp = stamp
                devices = self._inventory
            except OSError:
                devices = ()
        return Setup(self.upstream, devices)

    def _page(self, lang: str) -> tuple[int, str, bytes, str | None]:
        snap = self._snapshot()
        nonce = secrets.token_urlsafe(16)
        return 200, HTML_TYPE, render_page(snap, lang, self.cfg.refresh_s, nonce).encode(), nonce

    def _fragment(self, lang: str) -> tuple[int, str, bytes, str | None]:
        return 200, HTML_TYPE, render_main(self._snapshot(), lang, self.cfg.refresh_s).encode(), None

    def _api(self, lang: str) -> tuple[int, str, bytes, str | None]:
        return 200, JSON_TYPE, json.dumps(self._snapshot(), ensure_ascii=False).encode(), None

    def _metrics(self, lang: str) -> tuple[int, str, bytes, str | None]:
        try:
            store = ReadOnlyStore(self.db_path)
        except StoreUnavailable:
            store = None  # serve the last known values rather than fail the scrape
        if store is not None:
            try:
                refresh_gauges(store)
            except sqlite3.Error:
                pass  # same: the counters are still worth scraping
            finally:
                store.close()
        return 200, CONTENT_TYPE_LATEST, generate_latest(M.REGISTRY), None

    def _healthz(self, lang: str) -> tuple[int, str, bytes, str | None]:
        store = ReadOnlyStore(self.db_path)
        try:
            store.backlog()
        finally:
            store.close()
        return 200, TEXT_PLAIN, b"ok\n", None

    def _unavailable(self, path: str, lang: str, detail: str) -> tuple[int, str, bytes]:
        if path == "/api/status" or path == "/healthz":
            return 503, JSON_TYPE, json.dumps({"error": "store_unavailable", "detail": detail}).encode()
        page = render_unavailable(lang, detail, self.cfg.refresh_s, fragment=path == "/fragment")
        return 503, HTML_TYPE, page.encode()

    # -- connections
    def protocol_factory(self) -> asyncio.BaseProtocol:
        """aiohttp's own handler, unless the connection cap is reached: then
        the longest-idle connection is closed to make room (an idle
        keep-alive is cheap to reopen), and only if every connection is busy
        with a request is the newcomer answered 503."""
        assert self.runner is not None and self.runner.server is not None
        server = self.runner.server
        # force_close() drops the transport at once; the handler leaves
        # server.connections only after connection_lost, a turn later.
        conns = [h for h in server.connections if h.transport is not None]
        if len(conns) + len(self._pending) >= self.cfg.max_connections:
            victim = next((h for h in conns if h not in self.busy), None)
            if victim is None:
                WEB_REFUSED.labels("over_capacity").inc()
                return _Busy()
            WEB_REFUSED.labels("idle_evicted").inc()
            victim.force_close()
            self.idle_since.pop(victim, None)
        handler = server()
        # Counted here until connection_made has put it in server.connections.
        self._pending.add(handler)
        asyncio.get_running_loop().call_soon(self._settle, handler, 3)
        return handler

    def _settle(self, handler: Any, tries: int) -> None:
        """Once the transport exists (asyncio calls connection_made a loop
        turn after this factory), cap how much one socket read may pull in:
        asyncio reads 256 KiB at a time, so 150 strangers' bodies would be
        37 MiB in flight before their 401s; at ``READ_MAX`` a request is
        parsed from a few KB and its body waits in the kernel."""
        transport = handler.transport
        if transport is None and tries > 0:
            asyncio.get_running_loop().call_soon(self._settle, handler, tries - 1)
            return
        self._pending.discard(handler)
        if transport is not None and hasattr(transport, "max_size"):
            transport.max_size = READ_MAX

    async def sweep_idle(self) -> None:
        """Close connections idle (between requests, or never finishing a
        request head) for longer than ``idle_timeout_s``. aiohttp's own
        keep-alive timer does this too in recent versions; this sweep makes
        it true for every 3.x and for the slow request head as well."""
        assert self.runner is not None
        while True:
            await asyncio.sleep(min(1.0, self.cfg.idle_timeout_s / 4))
            server = self.runner.server
            if server is None:
                continue
            now = time.monotonic()
            live = server.connections
            known = set(live)
            for h in live:
                if h in self.busy:
                    continue
                since = self.idle_since.setdefault(h, now)
                if now - since > self.cfg.idle_timeout_s:
                    WEB_REFUSED.labels("idle_timeout").inc()
                    h.force_close()
                    self.idle_since.pop(h, None)
            for h in [h for h in self.idle_since if h not in known]:
                del self.idle_since[h]
            for h in [h for h in self.busy if h not in known]:
                del self.busy[h]

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.uploads.close()
        if self.clerk is not None:
            self.clerk.close()


class WebService(threading.Thread):
    """The web server's own thread and event loop; ends (and closes its
    socket and every connection) once ``stop`` is set. The gateway's ingest
    and sync are other threads: nothing here can block them, or they it."""

    def __init__(self, http: GatewayHTTP, sock: socket.socket, stop: threading.Event) -> None:
        super().__init__(name="postedge-web", daemon=True)
        self.http = http
        self.sock = sock
        self.stop_event = stop
        self._port = int(sock.getsockname()[1])
        self.error: BaseException | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def uploads(self) -> Any:
        return self.http.uploads

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 - recorded and logged; the gateway keeps ingesting
            self.error = e

            record("web_error", path="", error=repr(e), trace=traceback.format_exc(limit=5))
        finally:
            self.sock.close()
            self.http.close()

    async def _serve(self) -> None:
        cfg = self.http.cfg
        runner = web.AppRunner(self.http.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=2.0, keepalive_timeout=cfg.idle_timeout_s,
                               lingering_time=0, handler_cancellation=True,
                               max_line_size=8190, max_field_size=8190, read_bufsize=READ_MAX)
        self.http.runner = runner
        await runner.setup()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self.http.protocol_factory, sock=self.sock, backlog=BACKLOG,
                                          ssl=tls_context(cfg))
        sweeper = asyncio.create_task(self.http.sweep_idle())
        try:
            while not self.stop_event.is_set():
                await asyncio.sleep(0.2)
        finally:
            sweeper.cancel()
            server.close()
            await runner.cleanup()


def tls_context(cfg: WebConfig) -> ssl.SSLContext | None:
    """HTTPS with the server certificate ``provision`` issues from the outlet
    CA, TLS 1.2 or later; None for plain HTTP."""
    if not cfg.cert_file or not cfg.key_file:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    return ctx


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen in the caller's thread (see ``start_web``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def start_web(db_path: Path | str, web_cfg: WebConfig | dict[str, Any], stop: threading.Event,
              outlet: str | None = None, gateway_id: str | None = None,
              counter: CounterDesk | None = None, notify_key_file: str | None = None,
              tz_offset_h: float = 8.0, upstream: bool | None = None) -> WebService:
    """Validate ``[web]``, bind, and serve in a thread until ``stop`` is set.

    Binding happens here, not in the thread, so a taken port fails the
    gateway's start with a message naming ``web.port`` instead of leaving a
    gateway that runs without its page; connections that arrive before the
    loop runs wait in the listen backlog.
    """
    cfg = web_cfg if isinstance(web_cfg, WebConfig) else parse_web(web_cfg)
    try:
        tls_context(cfg)  # a bad certificate or key fails the start, naming the keys
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"web.cert_file/web.key_file: {e}") from e
    try:
        sock = _listen(cfg.host, cfg.port)
    except OSError as e:
        raise ConfigError.at("web.host/web.port", Problem("cannot_listen", host=cfg.host, port=cfg.port,
                                                          why=e.strerror or e)) from e
    svc = WebService(GatewayHTTP(Path(db_path), cfg, outlet, gateway_id, counter, notify_key_file,
                                 tz_offset_h, upstream), sock, stop)
    svc.start()

    # Bound to 0.0.0.0, the address to open is the box's LAN one.
    url = open_url("https" if cfg.cert_file else "http", cfg.host, svc.port)
    record("web_started", host=cfg.host, port=svc.port, url=url,
         max_connections=cfg.max_connections, idle_timeout_s=cfg.idle_timeout_s,
         request_timeout_s=cfg.request_timeout_s)
    return svc
