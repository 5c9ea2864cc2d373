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

It runs on either backend: the issued documents are kept through
``central/duty_store.py`` (``DOCS``), never by SQL of its own, so a
scale-out folder publishes into PostgreSQL and its fronts hand the queued
documents to gateways as any other command. Two publishers racing for a
kind's next version cannot both take it (``decide`` records a version
once): the loser signs the version after.
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

from central.duty_store import Column, DutyStore, DutyTable
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
PUBLISH_TRIES = 8  # publishers racing for the next version: each loser signs the one after

# The issued documents, in the duty store's vocabulary (``central/duty_store.py``),
# so either backend keeps them: keyed by kind and version, no outlet's (a
# document names its outlets in ``outlets``, JSON, ``*`` for every one).
DOCS = DutyTable("platform_docs", "", (
    Column("kind", "text"), Column("version", "int"), Column("outlets", "text"), Column("doc", "text"),
    Column("digest", "text"), Column("at", "real")), key=("kind", "version"))


class DocumentRefused(ValueError):
    """A body the counters would refuse, or outlets that are not ids: nothing signed."""


def issued(store: DutyStore) -> list[dict[str, Any]]:
    """Every issued document's row, by kind then newest version first (the
    table is made by ``Documents`` or ``PostageAudit``)."""
    return sorted(store.rows(DOCS.name, {}), key=lambda r: (r["kind"], -r["version"]))


def resend(store: DutyStore, outlet: str) -> int:
    """Queue, for each kind, the newest document meant for ``outlet`` (by name
    or ``*``): an outlet registered after it was published gets what its
    counter prices with (``postedge central outlet add``); how many. Needs
    no signing key: what it sends was signed when published."""
    store.duty_table(DOCS)
    newest: dict[str, dict[str, Any]] = {}
    for row in issued(store):
        doc = json.loads(row["doc"])
        if row["kind"] not in newest and (outlet in doc["outlets"] or "*" in doc["outlets"]):
            newest[row["kind"]] = doc
    for d in newest.values():
        store.push_command(outlet, DOWN_COUNTER_DOC, counter_doc(d))
    return len(newest)


class Documents:
    def __init__(self, backend: DutyStore, kid: str = DEFAULT_KID,
                 clock: Callable[[], float] = time.time, key_dir: Path | None = None) -> None:
        """``key_dir``: where the private key (``KEY_FILE``) is kept; by
        default the embedded backend's own folder. A scale-out store has no
        folder of its own, so its caller names the central folder."""
        if not valid_segment(kid):
            raise ValueError(f"key id {kid!r}: 1-32 of a-z 0-9 _ -")
        where = key_dir if key_dir is not None else getattr(backend, "dir", None)
        if where is None:
            raise ValueError("no folder for the documents' key: name one (key_dir)")
        self.b = backend
        self.kid = kid
        self.clock = clock
        self.key = _load_or_make_key(Path(where) / KEY_FILE)
        self.b.duty_table(DOCS)

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
        for _ in range(PUBLISH_TRIES):
            last = max((r["version"] for r in self.b.rows(DOCS.name, {"kind": kind})), default=0)
            try:
                doc = pd.sign({"v": 1, "kind": kind, "version": int(last) + 1, "outlets": targets,
                               "iat": int(self.clock()), "body": body}, self.key, self.kid)
            except ProtocolError as e:  # a float, nesting too deep: not canonical JSON
                raise DocumentRefused(f"the counters would refuse this {kind}: {e}") from e
            signed = self._check(doc)
            # recorded once: a publisher that took this version meanwhile wins, this one signs the next
            row = {"kind": kind, "version": signed.version, "outlets": json.dumps(targets),
                   "doc": json.dumps(doc), "digest": signed.digest, "at": self.clock()}
            if self.b.decide(DOCS.name, row):
                break
        else:
            raise DocumentRefused(f"no free version of {kind} after {PUBLISH_TRIES} tries: publish again")
        sent = [o for o in self._outlets(targets) if self._push(o, doc)]
        record("platform_doc_published", kind=kind, version=signed.version, outlets=targets, queued=len(sent))
        return doc

    def latest(self) -> list[dict[str, Any]]:
        """The newest document of each kind."""
        newest: dict[str, dict[str, Any]] = {}
        for row in issued(self.b):
            newest.setdefault(row["kind"], json.loads(row["doc"]))
        return [newest[k] for k in sorted(newest)]

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
