"""The central service's HTTPS front (docs/central-contract.md, the OpenAPI
file beside it): batches up, commands down, evidence photos, time; and, over
a backend that keeps review data, the dispatcher's 政讯通 API under
``/v1/boards`` (``central/boards.py``; a dispatcher's login, never an
outlet's).

Every request names its outlet twice: the login (HTTP Basic, the outlet id
and its password from the registry) and ``X-Postedge-Outlet``. They must be
the same, and the batch body must name that outlet too: one outlet's
credentials never upload, pull or read for another (a forged header is a 403,
not a silent re-attribution). The login is checked on the headers, before
any body is read, and bodies are capped (413), so an unauthenticated client
costs no memory. Backend calls block (SQLite, a network store) and run in a
thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from central.backend import Backend, PhotoError
from central.boards import BoardError, Boards
from central.dispatch import Dispatch
from central.intake import MAX_BATCH_BYTES, check_batch
from central.registry import Registry
from common.logs import get, recorder
from common.uplink_codec import CONTENT_TYPE, BatchError, encode_ack, encode_down
from common.web_server import ThreadedServer

log = get(__name__)
record = recorder(__name__)

BATCHES = "/v1/batches"
UPLOADS = "/v1/uploads"
TIME = "/v1/time"
KEYS = "/v1/keys"  # per-device keys for an outlet's ``outlet init`` (central/keys.py issue_for_outlet)
MAX_KEY_DEVICES = 500
BOARDS = "/v1/boards"
DOWN_PAGE = 100
MAX_PHOTO = 64 * 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_OUTLET = re.compile(r"^[a-z0-9_-]{1,32}$")


def _json(status: int, doc: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(doc, separators=(",", ":")).encode(),
                        content_type="application/json")


def _error(status: int, code: str, detail: str = "") -> web.Response:
    return _json(status, {"error": code, **({"detail": detail} if detail else {})})


class Front:
    """The aiohttp application over one backend; ``counts`` are what it refused
    and why (also in its log)."""

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time,
                 dispatch: Dispatch | None = None, master: bytes | None = None,
                 boards: Boards | None = None) -> None:
        """``dispatch``: the dispatcher's page (``central/dispatch.py``) on the
        same server, for a backend that keeps its review data; ``master``: the
        platform master key, for ``/v1/keys`` (without it that route is 503);
        ``boards``: the 政讯通 registry and review (``central/boards.py``) under
        ``/v1/boards``, for dispatchers (HTTP Basic with a dispatcher's login)."""
        self.backend = backend
        self.master = master
        self.clock = clock
        self.dispatch = dispatch
        self.boards = boards
        self.counts: Counter[str] = Counter()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BATCH_BYTES)
        r = app.router
        r.add_post(BATCHES, self._batch)
        r.add_get(BATCHES, self._pull, allow_head=False)
        r.add_head(BATCHES, self._probe)
        r.add_get(TIME, self._time, allow_head=False)
        r.add_post(KEYS, self._keys)
        r.add_post(UPLOADS, self._photo_begin)
        r.add_put(UPLOADS + r"/{sha256:[0-9a-f]{64}}/{index:[0-9]{1,6}}", self._photo_chunk)
        r.add_get(UPLOADS + r"/{sha256:[0-9a-f]{64}}", self._photo_state, allow_head=False)
        if self.dispatch is not None:
            self.dispatch.routes(app)
        if self.boards is not None:
            r.add_get(BOARDS, self._boards_view, allow_head=False)
            r.add_post(BOARDS + r"/{what:campaigns|sites|jobs}", self._boards_add)
            r.add_post(BOARDS + r"/sites/{site:[A-Za-z0-9_.:-]{1,64}}/{action:approve|retire}",
                       self._site_action)
            r.add_post(BOARDS + r"/send/{outlet:[a-z0-9_-]{1,32}}/{device:[a-z0-9_-]{1,32}}",
                       self._boards_send)
        return app

    # ----------------------------------------------------------- login
    async def _login(self, request: web.Request) -> str | web.Response:
        """The logged-in outlet, or the refusal to send."""
        auth = request.headers.get("Authorization", "")
        outlet = password = ""
        if auth.startswith("Basic "):
            try:
                outlet, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                outlet = ""
        if not _OUTLET.match(outlet) or not await self._run(self.backend.outlet_login, outlet, password):
            return self._refuse(request, 401, "unauthorized")
        claimed = request.headers.get("X-Postedge-Outlet", outlet)
        if claimed != outlet:
            return self._refuse(request, 403, "outlet_mismatch",
                                f"logged in as {outlet}, header says {claimed[:40]!r}")
        return outlet

    def _refuse(self, request: web.Request, status: int, code: str, detail: str = "") -> web.Response:
        self.counts[code] += 1
        record("refused", code=code, path=request.path, peer=request.remote, detail=detail[:200])
        return _error(status, code, detail)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _body(self, request: web.Request, limit: int) -> bytes | web.Response:
        if request.content_length is not None and request.content_length > limit:
            return self._refuse(request, 413, "too_large", f"{request.content_length} bytes")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, 413, "too_large")

    # --------------------------------------------------------- batches
    async def _batch(self, request: web.Request) -> web.Response:
        outlet = await self._login(request)
        if isinstance(outlet, web.Response):
            return outlet
        h = request.headers
        if h.get("Content-Encoding") != "deflate" or h.get("Content-Type") != CONTENT_TYPE:
            return self._refuse(request, 415, "bad_media_type", f"want {CONTENT_TYPE} with deflate")
        body = await self._body(request, MAX_BATCH_BYTES)
        if isinstance(body, web.Response):
            return body
        try:
            checked = await self._run(check_batch, outlet, h.get("X-Postedge-Batch", ""), body)
        except BatchError as e:
            return self._refuse(request, 400, "bad_batch", str(e))
        stored = await self._run(self.backend.store, outlet, checked)
        self.counts["batches"] += 1
        record("batch", outlet=outlet, batch=checked.batch.id, n=len(checked.ids), new=stored.new,
               dup=stored.dup, quarantined=len(checked.quarantined))
        return web.Response(status=200, content_type="application/json",
                            body=encode_ack(checked.batch.id, checked.acked, checked.rejected,
                                            batch_ids=checked.ids))

    async def _pull(self, request: web.Request) -> web.Response:
        outlet = await self._login(request)
        if isinstance(outlet, web.Response):
            return outlet
        raw = request.headers.get("X-Postedge-After", "0")
        if not raw.isdigit() or len(raw) > 18:
            return self._refuse(request, 400, "bad_cursor", "X-Postedge-After must be a whole number")
        cursor, commands, more = await self._run(self.backend.pull, outlet, int(raw), DOWN_PAGE)
        return web.Response(status=200, content_type="application/json",
                            body=encode_down(cursor, commands, more))

    async def _probe(self, request: web.Request) -> web.Response:
        outlet = await self._login(request)
        return outlet if isinstance(outlet, web.Response) else web.Response(status=204)

    async def _time(self, request: web.Request) -> web.Response:
        outlet = await self._login(request)
        if isinstance(outlet, web.Response):
            return outlet
        return _json(200, {"t": int(self.clock())})

    # ------------------------------------------------------------ keys
    async def _keys(self, request: web.Request) -> web.Response:
        """``{"devices": [{"id", "kind"}]}`` from the logged-in outlet: each
        device's own key section (never the master key, never another
        outlet's devices: the login decides the outlet)."""
        from central.keys import KINDS, issue_for_outlet

        outlet = await self._login(request)
        if isinstance(outlet, web.Response):
            return outlet
        if self.master is None or not isinstance(self.backend, Registry):
            return self._refuse(request, 503, "keys_unavailable", "this central service issues no keys")
        body = await self._body(request, 64 * 1024)
        if isinstance(body, web.Response):
            return body
        try:
            doc = json.loads(body)
            devs = [(d["id"], d["kind"]) for d in doc["devices"]]
        except (ValueError, KeyError, TypeError):
            return self._refuse(request, 400, "bad_request", 'want {"devices": [{"id", "kind"}]}')
        if not 1 <= len(devs) <= MAX_KEY_DEVICES or not all(
                isinstance(i, str) and _OUTLET.match(i) and k in KINDS for i, k in devs):
            return self._refuse(request, 400, "bad_request", "device ids a-z 0-9 _ - (1-32), kinds "
                                f"{'/'.join(KINDS)}, 1-{MAX_KEY_DEVICES} devices")
        out = await self._run(issue_for_outlet, self.backend, self.master, outlet, devs)
        self.counts["keys"] += 1
        record("keys_issued", outlet=outlet, n=len(out["keys"]), retired=out["retired"])
        return _json(200, out)

    # ---------------------------------------------------------- boards
    async def _dispatcher(self, request: web.Request) -> str | web.Response:
        """The logged-in dispatcher (HTTP Basic, the /dispatch logins), or the refusal."""
        auth = request.headers.get("Authorization", "")
        name = password = ""
        if auth.startswith("Basic "):
            try:
                name, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                name = ""
        login = getattr(self.backend, "dispatcher_login", None)
        if not name or login is None or not await self._run(login, name, password):
            return self._refuse(request, 401, "unauthorized")
        return name

    async def _board_call(self, request: web.Request, fn: Callable[..., Any], *args: Any,
                          status: int = 200) -> web.Response:
        try:
            res = await self._run(fn, *args)
        except BoardError as e:
            return self._refuse(request, 409 if e.code in ("bad_status", "campaign_over") else 400, e.code,
                                e.detail)
        except (TypeError, ValueError, KeyError) as e:
            return self._refuse(request, 400, "bad_request", f"{type(e).__name__}: {e}"[:200])
        return _json(status, res if isinstance(res, dict) else {"ok": True, "result": res})

    async def _boards_view(self, request: web.Request) -> web.Response:
        who = await self._dispatcher(request)
        if isinstance(who, web.Response):
            return who
        assert self.boards is not None
        boards = self.boards

        def view() -> dict[str, Any]:
            boards.run_once()  # the freshest review: what was stored up to now
            return boards.overview()

        return await self._board_call(request, view)

    async def _boards_add(self, request: web.Request) -> web.Response:
        who = await self._dispatcher(request)
        if isinstance(who, web.Response):
            return who
        assert self.boards is not None
        body = await self._body(request, 16 * 1024)
        if isinstance(body, web.Response):
            return body
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._refuse(request, 400, "bad_json")
        b, what = self.boards, request.match_info["what"]
        if what == "campaigns":
            return await self._board_call(request, lambda: b.add_campaign(
                str(doc.get("id", "")), str(doc.get("poster", "")), str(doc.get("qr", "")),
                doc.get("starts"), doc.get("ends")) or {"ok": True, "campaign": doc.get("id")}, status=201)
        if what == "sites":
            return await self._board_call(request, lambda: b.add_site(
                str(doc["id"]), str(doc["outlet"]), str(doc["village"]), int(doc["lat_e7"]),
                int(doc["lon_e7"]),
                name=str(doc.get("name", "")), tol_m=float(doc.get("tol_m", 50.0)),
                landmark=str(doc.get("landmark", ""))) or {"ok": True, "site": doc["id"]}, status=201)
        return await self._board_call(request, lambda: {"ok": True, "job": b.add_job(
            str(doc.get("kind", "")), str(doc.get("outlet", "")), str(doc.get("device", "")),
            doc.get("site"), doc.get("campaign"), doc.get("village"))}, status=201)

    async def _site_action(self, request: web.Request) -> web.Response:
        who = await self._dispatcher(request)
        if isinstance(who, web.Response):
            return who
        assert self.boards is not None
        b, m = self.boards, request.match_info
        fn = b.approve_site if m["action"] == "approve" else b.retire_site
        record("site_" + m["action"], site=m["site"], by=who)
        return await self._board_call(request, lambda: fn(m["site"]) or {"ok": True, "site": m["site"]})

    async def _boards_send(self, request: web.Request) -> web.Response:
        who = await self._dispatcher(request)
        if isinstance(who, web.Response):
            return who
        assert self.boards is not None
        b, m = self.boards, request.match_info

        def send() -> dict[str, Any]:
            cid, cursor, n = b.send_jobs(m["outlet"], m["device"])
            return {"ok": True, "cmd": cid, "cursor": cursor, "jobs": n}

        return await self._board_call(request, send)

    # ---------------------------------------------------------- photos
    async def _photo_begin(self, request: web.Request) -> web.Response:
        outlet = await self._login(request)
        if isinstance(outlet, web.Response):
            return outlet
        body = await self._body(request, 64 * 1024)
        if isinstance(body, web.Response):
            return body
        try:
            doc = json.loads(body)
        except ValueError:
            return self._refuse(request, 400, "bad_json")
        sha, size, cs = (doc.get("sha256"), doc.get("size"), doc.get("chunk_size")) \
            if isinstance(doc, dict) else (None, None, None)
        if not isinstance(sha, str) or not _HEX64.match(sha) or type(size) is not int or \
                not 1 <= size <= MAX_PHOTO or type(cs) is not int or not 1024 <= cs <= 4 * 1024 * 1024:
            return self._refuse(request, 400, "bad_request", "sha256, size and chunk_size")
        created, st = await self._run(self.backend.photo_begin, outlet, sha, size, cs, doc.get("meta"))
        return _json(201 if created else 200, st.as_dict())

    async def _photo_chunk(self, request: web.Request) -> web.Response:
        outlet = await self._login(request)
        if isinstance(outlet, web.Response):
            return outlet
        body = await self._body(request, 4 * 1024 * 1024)
        if isinstance(body, web.Response):
            return body
        m = request.match_info
        try:
            complete = await self._run(self.backend.photo_chunk, m["sha256"], int(m["index"]), body,
                                       request.headers.get("X-Chunk-Sha256", ""))
        except PhotoError as e:
            return self._refuse(request, e.status, e.code)
        return web.Response(status=204, headers={"X-Upload-Complete": "true" if complete else "false"})

    async def _photo_state(self, request: web.Request) -> web.Response:
        outlet = await self._login(request)
        if isinstance(outlet, web.Response):
            return outlet
        st = await self._run(self.backend.photo_state, request.match_info["sha256"])
        if st is None:
            return _error(404, "unknown_upload")
        return _json(200, st.as_dict())


def serve(backend: Backend, host: str, port: int, cert: str, key: str,
          master: bytes | None = None) -> tuple[ThreadedServer, Front]:
    """The front on ``host:port`` over HTTPS (TLS 1.2+), started; with the
    ``master`` key it also issues device keys (``/v1/keys``) and signs board
    job lists (``/v1/boards``)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    boards = Boards(backend, master)  # type: ignore[arg-type]  # every backend is a duty store
    front = Front(backend, dispatch=Dispatch(backend, boards=boards),  # type: ignore[arg-type]
                  master=master, boards=boards)
    srv = ThreadedServer(front.app(), host, port, name="central-https", idle_timeout=30.0,
                         max_connections=1024, ssl_context=ctx, auto_decompress=False)
    srv.start()
    return srv, front
