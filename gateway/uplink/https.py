"""The HTTPS carrier: POST a batch, the 200 answer is its ack; HEAD probes."""

from __future__ import annotations

import base64
import http.client
import ssl
from urllib.parse import urlsplit

from common.uplink_codec import CONTENT_TYPE, Ack, Down, EncodedBatch
from gateway.uplink.transport import Transport, TransportError, ack_for, down_of, tls_reason


class HttpsTransport(Transport):
    """HTTPS POST with the standard library; one kept-alive connection.

    Keeping the connection means a busy drain pays one TLS handshake, and a
    probe against a reachable but unhealthy server reuses it too.
    """

    overhead = 300  # request line and headers

    def __init__(self, url: str, outlet: str, ctx: ssl.SSLContext, timeout_s: float,
                 username: str = "", password: str = "") -> None:
        u = urlsplit(url)
        if u.scheme != "https" or not u.hostname:
            raise ValueError(f"not an https URL: {url!r}")
        self.host = u.hostname
        self.port = u.port or 443
        self.path = u.path or "/"
        self.outlet = outlet
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.auth = ("Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
                     if username else None)
        self.conn: http.client.HTTPSConnection | None = None

    def _request(self, method: str, body: bytes | None, headers: dict[str, str]
                 ) -> tuple[int, bytes]:
        if self.auth:
            headers["Authorization"] = self.auth
        for attempt in (0, 1):
            fresh = self.conn is None
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                                        context=self.ctx)
            sent = False
            try:
                self.conn.request(method, self.path, body=body, headers=headers)
                sent = True
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, data
            except TimeoutError as e:
                self.close()
                if sent:
                    # Reached and sent, but no answer in time: a slow server,
                    # not a dead link, so the syncer backs off instead of
                    # resending the moment a probe gets through.
                    raise TransportError("timeout", "no response", unreachable=False) from e
                raise tls_reason(e) from e
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # A kept-alive connection the server closed while idle: one
                # retry on a fresh connection, never more.
                self.close()
                if fresh or attempt:
                    raise tls_reason(e) from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise tls_reason(e) from e
        raise TransportError("connection", "unreachable")  # pragma: no cover

    def send(self, batch: EncodedBatch) -> Ack:
        status, data = self._request("POST", batch.body, {
            "Content-Type": CONTENT_TYPE, "Content-Encoding": "deflate",
            "X-Postedge-Outlet": self.outlet, "X-Postedge-Batch": batch.id})
        if status != 200:
            raise TransportError(f"http_{status}", data[:200].decode("utf-8", "replace"),
                                 unreachable=False)
        return ack_for(data, batch)

    def pull(self, after: int) -> Down:
        status, data = self._request("GET", None, {"X-Postedge-Outlet": self.outlet,
                                                   "X-Postedge-After": str(after)})
        if status != 200:
            raise TransportError(f"http_{status}", data[:200].decode("utf-8", "replace"),
                                 unreachable=False)
        return down_of(data)

    def probe(self) -> None:
        status, _ = self._request("HEAD", None, {"X-Postedge-Outlet": self.outlet})
        if status >= 500:
            raise TransportError(f"http_{status}", "probe", unreachable=False)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None


# ------------------------------------------------------------------------- MQTT
