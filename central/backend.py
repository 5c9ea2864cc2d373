"""The one interface every central backend implements.

The HTTPS front (``central/front.py``) and the contract tests talk to this
and nothing else, so the embedded SQLite backend and a scale-out backend are
interchangeable. Every method is idempotent where a gateway may repeat it:
a batch resent after a lost ack stores nothing twice (event id), a pull
repeated with the same cursor returns the same commands, a photo chunk sent
twice is kept once.

Durability is part of the contract: ``store`` returns only once the events
are as safe as the backend gets (committed to SQLite, or in a replicated log),
because its return is what the gateway's ack means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from central.intake import Checked
from common.uplink_codec import encode_down
from protocol.canonical import dumps
from protocol.errors import ProtocolError


def carriable(kind: str, cmd: dict[str, Any]) -> str:
    """A command as it is kept: canonical JSON. ValueError if the downlink
    answer could not carry it (a float, nesting past the wire's depth, a
    huge body): queued, it would fail every pull of the outlet after it, so
    it is refused at the door instead."""
    try:
        encode_down(0, [(kind, cmd)])
        return dumps(cmd).decode()
    except ProtocolError as e:
        raise ValueError(f"a {kind} command the downlink cannot carry: {e}") from e


@dataclass(frozen=True)
class Stored:
    """What ``store`` knows when it returns: the new and already-held counts,
    or None for a backend that acks on a replicated log before its workers
    have sorted new from old."""

    new: int | None
    dup: int | None


@dataclass(frozen=True)
class PhotoState:
    sha256: str
    size: int
    chunk_size: int
    chunks: int
    confirmed: tuple[int, ...]
    complete: bool

    def as_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "chunk_size": self.chunk_size,
                "chunks": self.chunks, "confirmed": list(self.confirmed), "complete": self.complete}


class PhotoError(ValueError):
    """A photo request that does not fit the upload it names; ``status``
    is the HTTP answer (400 bad chunk, 404 unknown upload, 409 whole-file
    hash mismatch)."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


class Backend(Protocol):
    # -- outlets (the registry a login is checked against)
    def outlet_login(self, outlet: str, password: str) -> bool:
        """True when ``outlet`` exists, is not retired and the password is its own."""
        ...

    # -- batches
    def store(self, outlet: str, checked: Checked) -> Stored:
        """Keep a checked batch's good events once each and its quarantined
        ones aside; durable on return."""
        ...

    # -- commands down to the outlet's devices
    def push_command(self, outlet: str, kind: str, cmd: dict[str, Any]) -> int:
        """Queue a signed command for one of the outlet's devices; its cursor."""
        ...

    def pull(self, outlet: str, after: int, page: int) -> tuple[int, list[tuple[str, dict[str, Any]]], bool]:
        """Commands after ``after`` (which acks every one up to it):
        (cursor, [(kind, command)], more)."""
        ...

    # -- evidence photos, by content hash, in chunks
    def photo_begin(self, outlet: str, sha256: str, size: int, chunk_size: int,
                    meta: Any) -> tuple[bool, PhotoState]:
        """Open (or find) an upload; (created, state)."""
        ...

    def photo_chunk(self, sha256: str, idx: int, data: bytes, chunk_sha256: str) -> bool:
        """Keep one chunk; True once the photo is complete. Raises PhotoError."""
        ...

    def photo_state(self, sha256: str) -> PhotoState | None:
        ...

    def close(self) -> None:
        ...
