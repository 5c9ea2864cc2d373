"""The platform's signed documents for outlets' counters: the standard-box
catalogue and the tariff for outbound parcels (寄件).

The platform alone holds the Ed25519 private key (``docs.key`` in the
central folder, mode 0600); a gateway holds only its public key, in
``[counter] platform_keys`` (``postedge central docs key`` prints the line),
so a gateway can check a document and never make one
(``common/platform_docs.py`` says why Ed25519 and not a derived HMAC key).

Publishing signs the body as the next version of its kind, keeps it, and
queues it down to every outlet it names (``*``: every registered outlet that
is not retired) as a ``counter_doc`` (``common/uplink_codec.py``). The
gateway verifies it exactly as one posted to its counter API and refuses a
version not newer than the one it has, so a resend or a replay changes
nothing. Before anything is signed the body is read by the same parsers the
counters price with (``common/box_catalogue.py``, ``common/tariff.py``): a
document every counter would refuse never leaves the platform. An outlet
registered later gets the latest of each kind with ``resend``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from central.embedded import Embedded
from common import platform_docs as pd
from common.box_catalogue import Catalogue
from common.logs import recorder
from common.tariff import Tariff
from common.uplink_codec import DOWN_COUNTER_DOC, counter_doc
from protocol.errors import ProtocolError
from protocol.topics import valid_segment

record = recorder(__name__)
KEY_FILE = "docs.key"
DEFAULT_KID = "p1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS platform_docs (
    kind TEXT NOT NULL, version INTEGER NOT NULL, outlets TEXT NOT NULL, doc TEXT NOT NULL,
    digest TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (kind, version));
"""


class DocumentRefused(ValueError):
    """A body the counters would refuse, or outlets that are not ids: nothing signed."""


class Documents:
    def __init__(self, backend: Embedded, kid: str = DEFAULT_KID,
                 clock: Callable[[], float] = time.time) -> None:
        if not valid_segment(kid):
            raise ValueError(f"key id {kid!r}: 1-32 of a-z 0-9 _ -")
        self.b = backend
        self.kid = kid
        self.clock = clock
        self.key = _load_or_make_key(backend.dir / KEY_FILE)
        with self.b.lock:
            self.b.db.executescript(SCHEMA)

    def public_keys(self) -> dict[str, str]:
        """``[counter] platform_keys`` for a gateway's config: key id -> public key hex."""
        return {self.kid: pd.public_hex(self.key)}

    def publish(self, kind: str, body: dict[str, Any], outlets: Iterable[str] = ("*",)) -> dict[str, Any]:
        """Sign ``body`` as the next version of ``kind`` for ``outlets`` and queue it
        down to each of them; the signed document."""
        if kind not in pd.KINDS:
            raise DocumentRefused(f"kind must be one of {', '.join(pd.KINDS)}")
        targets = sorted(set(outlets))
        if not targets or not all(o == "*" or valid_segment(o) for o in targets):
            raise DocumentRefused(f"outlets must be outlet ids or '*': {targets}")
        with self.b.lock:
            (last,) = self.b.db.execute("SELECT COALESCE(MAX(version), 0) FROM platform_docs WHERE kind=?",
                                        (kind,)).fetchone()
            try:
                doc = pd.sign({"v": 1, "kind": kind, "version": int(last) + 1, "outlets": targets,
                               "iat": int(self.clock()), "body": body}, self.key, self.kid)
            except ProtocolError as e:  # a float, nesting too deep: not canonical JSON
                raise DocumentRefused(f"the counters would refuse this {kind}: {e}") from e
            signed = self._check(doc)
            self.b.db.execute("INSERT INTO platform_docs VALUES (?,?,?,?,?,?)",
                              (kind, signed.version, json.dumps(targets), json.dumps(doc), signed.digest,
                               self.clock()))
        sent = [o for o in self._outlets(targets) if self._push(o, doc)]
        record("platform_doc_published", kind=kind, version=signed.version, outlets=targets, queued=len(sent))
        return doc

    def resend(self, outlet: str) -> int:
        """Queue, for each kind, the newest document meant for ``outlet`` (by name or
        ``*``), e.g. for an outlet registered after it was published; how many."""
        with self.b.lock:
            rows = self.b.db.execute(
                "SELECT kind, doc FROM platform_docs ORDER BY kind, version DESC").fetchall()
        newest: dict[str, dict[str, Any]] = {}
        for kind, text in rows:
            doc = json.loads(text)
            if kind not in newest and (outlet in doc["outlets"] or "*" in doc["outlets"]):
                newest[kind] = doc
        return sum(self._push(outlet, d) for d in newest.values())

    def latest(self) -> list[dict[str, Any]]:
        """The newest document of each kind."""
        with self.b.lock:
            rows = self.b.db.execute(
                "SELECT doc FROM platform_docs d WHERE version = "
                "(SELECT MAX(version) FROM platform_docs WHERE kind = d.kind) ORDER BY kind").fetchall()
        return [json.loads(r[0]) for r in rows]

    def _check(self, doc: dict[str, Any]) -> pd.SignedDoc:
        """Read the signed document as a counter will; DocumentRefused with the reason."""
        outlet = next((o for o in doc["outlets"] if o != "*"), "any")
        try:
            signed = pd.verify(doc, pd.load_public_keys(self.public_keys()), doc["kind"], outlet)
            (Catalogue if doc["kind"] == "box_catalogue" else Tariff)(signed)
        except (pd.DocError, ValueError) as e:
            raise DocumentRefused(f"the counters would refuse this {doc['kind']}: {e}") from e
        return signed

    def _outlets(self, targets: list[str]) -> list[str]:
        if "*" in targets:
            return [o["outlet"] for o in self.b.outlets() if not o["retired"]]
        return targets

    def _push(self, outlet: str, doc: dict[str, Any]) -> bool:
        self.b.push_command(outlet, DOWN_COUNTER_DOC, counter_doc(doc))
        return True


def _load_or_make_key(path: Path) -> Ed25519PrivateKey:
    """The platform's document key: made once, kept 0600 beside the database."""
    if path.exists():
        key = load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key
