"""The platform's keys as the simulator and tests hold them: the central
service's own key service (``central/keys.py``) with a fixed, well-known
master key, so runs and golden files are reproducible. Never a real master."""

from __future__ import annotations

import hashlib

from central.keys import KeyService

MASTER = hashlib.sha256(b"postedge simulator platform master key").digest()


class PlatformKeys(KeyService):
    def __init__(self, outlet: str, master: bytes = MASTER, kv: int = 1) -> None:
        super().__init__(outlet, master, kv)
