"""An HTTP answer as the gateway's routes build it, independent of the
server library: the upload, command and status routes return these and the
server (``gateway/http/server.py``) writes them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Reply:
    """An answer; ``code`` 0 means none (the client is gone: close)."""

    code: int
    body: bytes = b""
    headers: dict[str, str] | None = None
    close: bool = False
