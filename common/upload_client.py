"""The client of the photo upload protocol, shared by the handheld (photos
to the gateway) and the gateway (photos to the platform, which answers the
same protocol). Stdlib only.

1. ``POST /v1/uploads`` announces a file by SHA-256; the answer lists the
   chunks the server already holds durably (``complete`` when it has the
   whole file: de-duplication by content hash).
2. ``PUT`` only the chunks not confirmed, each with its own SHA-256; a
   ``204`` means the chunk is on the server's disk.
3. ``409``: the assembled file's hash was wrong; start the file again.

The server side is ``gateway/uploads.py``; docs/gateway.md "Photo uploads"
gives the reasons for HTTP rather than MQTT chunks.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_CHUNK = 64 * 1024


class Unreachable(Exception):
    """No answer from the server (refused, reset, timed out, DNS)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


# ----------------------------------------------------------------- client

class UploadClient:
    """The upload protocol's client over one kept connection (when the
    server keeps it: the gateway's HTTP/1.0 server closes after each
    request, the central side keeps alive)."""

    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        path = u.path.rstrip("/")
        self.path = path if path.endswith("/uploads") else path + "/v1/uploads"
        self.timeout_s = timeout_s
        self.ctx = ssl_context
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": "Basic " + token, **(headers or {})}
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        hdrs = {**self.headers, **(headers or {})}
        for attempt in (0, 1):
            fresh = self.conn is None
            if self.conn is None:
                self.conn = (http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                                         context=self.ctx)
                             if self.https else
                             http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s))
            try:
                self.conn.request(method, self.path + path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except TimeoutError as e:
                self.close()
                raise Unreachable("gateway_timeout", str(e) or "timed out") from e
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if fresh or attempt:  # a kept connection closed while idle gets one retry
                    raise Unreachable("gateway_unreachable", f"{type(e).__name__}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise Unreachable("gateway_unreachable", f"{type(e).__name__}: {e}") from e
        raise Unreachable("gateway_unreachable", "no answer")  # pragma: no cover

    def begin(self, sha256: str, size: int, chunk_size: int, meta: dict[str, Any]
              ) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"sha256": sha256, "size": size, "chunk_size": chunk_size, "meta": meta}).encode()
        code, _, data = self.request("POST", "", body, {"Content-Type": "application/json"})
        return code, _json(data)

    def put(self, sha256: str, idx: int, chunk: bytes) -> tuple[int, bool, dict[str, Any]]:
        """(status, complete, error document)."""
        code, hdrs, data = self.request("PUT", f"/{sha256}/{idx}", chunk, {
            "Content-Type": "application/octet-stream", "X-Chunk-Sha256": hashlib.sha256(chunk).hexdigest()})
        return code, hdrs.get("x-upload-complete") == "true", _json(data)

    def state(self, sha256: str) -> tuple[int, dict[str, Any]]:
        code, _, data = self.request("GET", f"/{sha256}")
        return code, _json(data)


def _json(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data) if data else {}
    except ValueError:
        return {"raw": data[:200].decode("utf-8", "replace")}
    return doc if isinstance(doc, dict) else {"raw": doc}


@dataclass
class Outcome:
    """What one photo's attempt came to. ``stop``: do not try further
    photos in this run (the gateway is gone, full or refuses us)."""

    state: str  # done | partial | failed
    sent: int = 0
    error: str | None = None
    detail: str = ""
    stop: bool = False
    restarted: int = 0


def upload_bytes(client: UploadClient, data: bytes, sha256: str, meta: dict[str, Any], chunk_size: int,
                 known: Callable[[int, int, list[int]], None] = lambda cs, n, c: None,
                 confirmed: Callable[[int], None] = lambda idx: None,
                 restart: Callable[[], None] = lambda: None,
                 between: Callable[[], bool] = lambda: True) -> Outcome:
    """Upload one file's missing chunks: the protocol, without any queue.

    The callbacks let a caller record progress durably: ``known`` (the
    server's chunk size, count and confirmed list), ``confirmed`` (one chunk's
    204 arrived), ``restart`` (409: the file starts over). ``between`` is
    asked before every chunk; False pauses (``partial``), which is how the
    gateway yields the uplink to custody events.
    """
    out = Outcome("partial")
    for _ in range(3):  # POST again after a 409 or a 404 (partial expired), a few times at most
        try:
            code, st = client.begin(sha256, len(data), chunk_size, meta)
        except Unreachable as e:
            return Outcome("partial", out.sent, e.code, e.detail, stop=True, restarted=out.restarted)
        if code not in (200, 201):
            return _refused(code, st, out)
        if st.get("complete"):
            out.state = "done"
            return out
        cs, n = int(st["chunk_size"]), int(st["chunks"])
        have = {int(i) for i in st.get("confirmed", [])}
        known(cs, n, sorted(have))
        again = False
        for idx in range(n):
            if idx in have:
                continue
            if not between():
                return out
            try:
                code, complete, err = client.put(sha256, idx, data[idx * cs:(idx + 1) * cs])
            except Unreachable as e:
                out.error, out.detail, out.stop = e.code, e.detail, True
                return out
            if code == 204:
                out.sent += 1
                confirmed(idx)
                if complete:
                    out.state = "done"
                    return out
                continue
            if code in (404, 409):
                if code == 409:
                    out.restarted += 1
                    restart()
                again = True
                break
            return _refused(code, err, out)
        if not again:
            # Every chunk confirmed without the completing answer (another
            # handheld finished it meanwhile): ask.
            try:
                code, st = client.state(sha256)
            except Unreachable as e:
                return Outcome("partial", out.sent, e.code, e.detail, stop=True, restarted=out.restarted)
            if code == 200 and st.get("complete"):
                out.state = "done"
                return out
    out.error = out.error or "restarted"
    return out


def _refused(code: int, doc: dict[str, Any], out: Outcome) -> Outcome:
    detail = str(doc.get("message", {}).get("en") if isinstance(doc.get("message"), dict) else doc)[:300]
    out.detail = f"HTTP {code}: {detail}"
    if code == 401:
        out.error, out.stop = "unauthorized", True
    elif code == 403:
        out.error, out.stop = "forbidden", True
    elif code == 507:
        out.error, out.stop = "gateway_full", True
    elif code in (429, 503) or code >= 500:
        out.error, out.stop = "gateway_busy", True
    elif code in (413, 415):
        out.error, out.state = "rejected", "failed"  # this photo can never go; the next one may
    else:
        out.error = "rejected"  # 400: damaged in transit, or a bug; retried next run
    return out


