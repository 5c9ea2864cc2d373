"""The small local web servers' shared base: an aiohttp application served from a
thread of its own (:class:`ThreadedServer`), the ``Host`` allow-list that stops DNS
rebinding, the security headers and Content-Security-Policy every answer carries
(the Jinja2 environment the pages are rendered with is ``common/pages.py``).

Used by the courier's touch UI (``handheld/webui.py``) and the simulator's live
dashboard (``simulator/dashboard.py``), so the two send the same headers from one
place and neither builds HTML from strings.

Needs aiohttp and Jinja2, which are in the handheld, gateway and simulator extras
(not in the base install): only modules of those roles import this one.
本地网页服务的公共部分：线程中的 aiohttp 服务器、Host 白名单、安全响应头、Jinja2 模板环境。
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from common import logs

log = logs.get(__name__)

#: A connection that has sent no complete request (nothing at all, or half a request
#: line trickled in) for this long is closed; so is a kept-alive one left idle. The
#: pages poll every second or faster, so a live tab never sees this.
IDLE_TIMEOUT_S = 15.0
MAX_CONNECTIONS = 32           # open sockets; the next one gets a 503 and is closed
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


# ------------------------------------------------------------------ addresses

def bind(host: str, port: int, backlog: int = 64) -> socket.socket:
    """A listening TCP socket for ``host`` (name, IPv4 or IPv6 literal) and ``port``.

    Bound by the caller's thread so that a taken port fails the start there and then,
    not later inside the server's own thread."""
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    infos = socket.getaddrinfo(h or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    fam, _, _, _, addr = infos[0]
    return socket.create_server(addr[:2], family=fam, backlog=backlog)


def lan_address() -> str:
    """The address this box is reached at on its LAN: the source address of
    its default route (a UDP connect sends nothing). What a person opens when
    a server is bound to a wildcard, which is never an address to open."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
        return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


def open_url(scheme: str, bind_host: str, port: int) -> str:
    """The URL a person opens for a server bound to ``bind_host``."""
    h = bind_host.strip()
    if h in ("", "0.0.0.0", "::", "[::]"):
        h = lan_address()
    if ":" in h and not h.startswith("["):
        h = f"[{h}]"
    return f"{scheme}://{h}:{port}/"


def host_allowlist(bind_host: str, port: int, names: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` header values a request may carry: loopback by name and address, the
    address the server is bound to (unless it is a wildcard) and ``names``, each with
    ``:port`` (and bare when the port is 80, as browsers then send it).

    Why: a DNS-rebinding page first resolves ``evil.example`` to its own server, then to
    127.0.0.1, and so reaches this server as "its own origin"; the only thing that still
    says ``evil.example`` is the ``Host`` header."""
    hosts = set(LOOPBACK_NAMES)
    b = bind_host.strip().lower()
    if b not in ("", "0.0.0.0", "::", "[::]"):
        hosts.add(f"[{b}]" if ":" in b and not b.startswith("[") else b)
    for n in names:
        n = n.strip().lower().rstrip(".")
        if n:
            hosts.add(f"[{n}]" if n.count(":") > 1 and not n.startswith("[") else n)
    out: set[str] = set()
    for h in hosts:
        if h.startswith("[") or ":" not in h:
            out.add(f"{h}:{port}")
            if port == 80:
                out.add(h)
        else:
            out.add(h)  # a configured name that already carries its port
    return frozenset(out)


def host_ok(header: str | None, allowed: frozenset[str]) -> bool:
    return bool(header) and str(header).strip().lower() in allowed


def local_url(host: str, port: int) -> str:
    """The URL to open a server bound to ``host``: a wildcard bind is opened on loopback."""
    h = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in h and not h.startswith("["):
        h = f"[{h}]"
    return f"http://{h}:{port}/"


# ------------------------------------------------------------------ headers

def csp(*also: str) -> str:
    """A Content-Security-Policy that allows nothing but fetches to this server, plus
    ``also`` (e.g. ``"img-src 'self'"``). Every answer carries it; a page adds the
    nonces of its one inline style and script with :func:`page_csp`."""
    return "; ".join(("default-src 'none'", "connect-src 'self'", *also, "base-uri 'none'",
                      "form-action 'none'", "frame-ancestors 'none'"))


def new_nonce() -> str:
    """A fresh nonce for one page's inline style and script."""
    return secrets.token_urlsafe(16)


def page_csp(policy: str, nonce: str) -> str:
    """``policy`` with this page's inline style and script allowed by ``nonce``."""
    return f"{policy}; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'"


def security_headers(policy: str, server: str, *, same_origin: bool = False
                     ) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook that puts the security headers on every answer,
    refusals, 404s and 503s included: ``policy`` unless the handler set its own (the
    page, with its nonces), no framing, no sniffing, no referrer, no caching, and a
    ``Server`` name that says nothing about aiohttp or Python. ``same_origin`` adds
    ``Cross-Origin-Resource-Policy`` and ``Cross-Origin-Opener-Policy`` (a foreign page
    can then neither embed this server's pictures nor keep a handle on its window)."""

    async def hook(request: web.Request, resp: web.StreamResponse) -> None:
        h = resp.headers
        h.setdefault("Content-Security-Policy", policy)
        h["X-Frame-Options"] = "DENY"
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "no-referrer"
        if same_origin:
            h["Cross-Origin-Resource-Policy"] = "same-origin"
            h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cache-Control"] = "no-store"
        h["Server"] = server

    return hook


# ------------------------------------------------------------------ templates

# ------------------------------------------------------------------ server

class _Refuse(asyncio.Protocol):
    """What a connection over the limit gets: one fixed 503 and a close, no parsing."""

    def __init__(self, response: bytes, on_refuse: Callable[[], None] | None) -> None:
        self.response = response
        self.on_refuse = on_refuse

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.response)
        transport.close()
        if self.on_refuse is not None:
            self.on_refuse()


class ThreadedServer:
    """An ``aiohttp.web.Application`` served from a thread with its own event loop.

    Why a thread: the handheld app and the simulator are threaded programs (MQTT link,
    camera, GNSS, the runner); giving the web server a loop of its own keeps them as
    they are, and their blocking calls run in a small thread pool, never on the loop.

    What aiohttp gives over the standard library's ``ThreadingHTTPServer`` (one thread
    per connection, no timeouts): ``keepalive_timeout`` closes a connection that has sent
    no complete request for ``idle_timeout`` seconds, including one that never sends a
    byte or trickles its headers (aiohttp >= 3.10 arms it at connect); header count and
    line sizes are bounded by the parser; and this class caps open connections (the one
    over ``max_connections`` gets a fixed 503 and is closed before any parsing)."""

    def __init__(self, app: web.Application, host: str, port: int, *, name: str,
                 idle_timeout: float = IDLE_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS,
                 busy_response: bytes = b"", on_refuse: Callable[[], None] | None = None,
                 ssl_context: ssl.SSLContext | None = None, auto_decompress: bool = True) -> None:
        """``ssl_context``: serve HTTPS (the central service's front).
        ``auto_decompress=False`` hands compressed bodies over as sent, for a
        handler that inflates them itself with a bound (a deflate bomb)."""
        self.app = app
        self.ssl_context = ssl_context
        self.auto_decompress = auto_decompress
        self.name = name
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.on_refuse = on_refuse
        body = busy_response or b"busy\n"
        self.busy_response = (b"HTTP/1.1 503 Service Unavailable\r\n"
                              b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
                              b"Retry-After: 2\r\nContent-Length: "
                              + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.sock = bind(host, port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._aserver: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        a = self.sock.getsockname()
        return str(a[0]), int(a[1])

    @property
    def connections(self) -> int:
        """Open connections (for tests and status)."""
        srv = self._runner.server if self._runner is not None else None
        return len(srv.connections) if srv is not None else 0

    def start(self) -> None:
        """Start serving; returns once the server accepts, or raises why it could not."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup())
        except BaseException as e:  # noqa: BLE001 - handed to start()'s caller
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _setup(self) -> None:
        # lingering_time: after answering a request whose body was not read (a refusal),
        # aiohttp reads and drops the rest so the client sees the answer rather than a
        # reset; bounded like any other idle wait, not aiohttp's default 10 s.
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=2.0,
                               keepalive_timeout=self.idle_timeout,
                               lingering_time=min(2.0, self.idle_timeout), max_headers=64,
                               auto_decompress=self.auto_decompress)
        await runner.setup()
        self._runner = runner
        server = runner.server
        assert server is not None

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= self.max_connections:
                return _Refuse(self.busy_response, self.on_refuse)
            return server()

        loop = asyncio.get_running_loop()
        self._aserver = await loop.create_server(factory, sock=self.sock, ssl=self.ssl_context)

    async def _teardown(self) -> None:
        if self._aserver is not None:
            self._aserver.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Stop accepting, give requests in flight 2 s, close every connection. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            self.sock.close()
            return
        try:
            asyncio.run_coroutine_threadsafe(self._teardown(), loop).result(10)
        except Exception:  # noqa: BLE001 - stopping must finish; say what went wrong
            log.error("%s: error while stopping: %s", self.name, traceback.format_exc(limit=3))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self.sock.close()
