"""Documents the platform pushes to the gateway (the box catalogue, the
tariff), signed so that the gateway can check them and cannot make them.

Why Ed25519 and not an HMAC key derived per gateway like the device keys
(``protocol/keys.py``): whoever can check an HMAC can also make one, so a
gateway holding an HMAC key could mint its own tariff, and root on the
gateway box is a threat in ``docs/security.md``. With Ed25519 the gateway
holds only the platform's *public* key (``[counter] platform_keys``: key id
to 32 bytes hex); the private key never leaves the platform. A gateway
that is compromised can still skip the check on its own box, but it
cannot produce a document the platform would accept as its own: every
``counter.accept`` names the catalogue and tariff (kind, version, digest)
it was computed from, so the platform can re-check the postage upstream.

The gateway never signs, so it holds no device key either: keys stay
with the platform. ``cryptography`` is already the gateway's dependency (the
outlet CA); nothing new to install, and it is a CPython-only role: the
firmware never reads these documents.

Wire form (canonical JSON, ``protocol/canonical.py``: sorted keys, no
floats, so every amount is an integer)::

    {"v": 1, "kind": "box_catalogue" | "tariff", "version": 7,
     "outlets": ["o1"] | ["*"], "iat": 1795881100, "kid": "p1",
     "body": {...}, "sig": "<128 hex: Ed25519 over DOMAIN + canonical(doc without sig)>"}

``DOMAIN`` keeps a document signature from verifying as anything else the
platform signs. A document names the outlets it is for (or ``*``), so one
outlet's tariff cannot be pushed to another; ``version`` only grows, so an
old tariff cannot be replayed over a newer one (``newer``).
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.canonical import dumps, loads_object
from protocol.errors import ProtocolError
from protocol.topics import valid_segment

DOMAIN = b"pe/v1/platform-doc\n"
KINDS = ("box_catalogue", "tariff")
MAX_DOC = 64 * 1024  # a catalogue of a few dozen boxes, a tariff of 34 provinces: a few KB
MAX_VERSION = 2**31 - 1
_FIELDS = ("v", "kind", "version", "outlets", "iat", "kid", "body", "sig")


class DocError(ValueError):
    """A platform document refused; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SignedDoc:
    kind: str
    version: int
    kid: str
    iat: int
    body: dict[str, Any]
    digest: str  # SHA-256 of the signed bytes, hex: what counter.accept cites

    def cite(self) -> dict[str, Any]:
        """What an event records of the document it used."""
        return {"kind": self.kind, "version": self.version, "digest": self.digest[:16]}


def _signed_bytes(doc: dict[str, Any]) -> bytes:
    return DOMAIN + dumps({k: v for k, v in doc.items() if k != "sig"})


def sign(doc: dict[str, Any], private_key: Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    """Platform side (and the tests' and simulator's stand-in platform)."""
    out = {k: v for k, v in doc.items() if k != "sig"}
    out["kid"] = kid
    out.setdefault("v", 1)
    out["sig"] = private_key.sign(_signed_bytes(out)).hex()
    return out


def public_hex(private_key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def load_public_keys(keys: dict[str, str]) -> dict[str, Ed25519PublicKey]:
    """``{kid: 64 hex}`` from the config into key objects; DocError naming the kid."""
    out: dict[str, Ed25519PublicKey] = {}
    for kid, h in keys.items():
        try:
            raw = binascii.unhexlify(h)
            out[kid] = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error) as e:
            raise DocError("bad_key", f"platform key {kid!r} is not 32 bytes of hex: {e}") from e
    return out


def _int(doc: dict[str, Any], f: str, lo: int, hi: int) -> int:
    x = doc.get(f)
    if not isinstance(x, int) or isinstance(x, bool) or not lo <= x <= hi:
        raise DocError("bad_field", f"{f} must be an integer {lo}-{hi}")
    return x


def verify(data: bytes | dict[str, Any], keys: dict[str, Ed25519PublicKey], kind: str, outlet: str
           ) -> SignedDoc:
    """Check a document's signature, kind and outlet; the body is the
    caller's to check (``catalogue.parse``, ``tariff.parse``). The
    signature is checked before any field is trusted."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_DOC:
            raise DocError("oversized", f"document is {len(data)} bytes, limit {MAX_DOC}")
        try:
            doc = loads_object(bytes(data), "document")
        except (ProtocolError, ValueError, RecursionError) as e:
            raise DocError("malformed", str(e)[:200]) from e
    else:
        doc = data
    if not isinstance(doc, dict):
        raise DocError("malformed", "a document is a JSON object")
    for f in _FIELDS:
        if f not in doc:
            raise DocError("missing_field", f"document has no {f!r}")
    extra = set(doc) - set(_FIELDS)
    if extra:
        raise DocError("bad_field", f"unknown fields {sorted(extra)}")
    kid = doc["kid"]
    if not valid_segment(kid) or kid not in keys:
        raise DocError("unknown_key", f"no platform key {kid!r}")
    sig = doc["sig"]
    if not isinstance(sig, str) or len(sig) != 128 or not set(sig) <= set("0123456789abcdef"):
        raise DocError("bad_signature", "sig must be 128 lowercase hex digits")
    try:
        raw_sig = binascii.unhexlify(sig)
        signed = _signed_bytes(doc)
    except (ValueError, binascii.Error, ProtocolError) as e:
        raise DocError("bad_signature", f"cannot check the signature: {e}") from e
    try:
        keys[kid].verify(raw_sig, signed)
    except InvalidSignature:
        raise DocError("bad_signature", f"signature does not match ({doc.get('kind')!r} "
                                        f"version {doc.get('version')!r})") from None
    if doc["v"] != 1:
        raise DocError("unsupported_version", f"document version {doc['v']!r}, this gateway reads 1")
    if doc["kind"] != kind:
        raise DocError("wrong_kind", f"expected a {kind}, got {doc['kind']!r}")
    outlets = doc["outlets"]
    if not isinstance(outlets, list) or not all(isinstance(o, str) for o in outlets):
        raise DocError("bad_field", "outlets must be a list of outlet ids")
    if outlet not in outlets and "*" not in outlets:
        raise DocError("wrong_outlet", f"document is for {outlets}, this is {outlet}")
    if not isinstance(doc["body"], dict):
        raise DocError("bad_field", "body must be an object")
    return SignedDoc(kind, _int(doc, "version", 1, MAX_VERSION), kid, _int(doc, "iat", 0, 2**53 - 1),
                     doc["body"], hashlib.sha256(signed).hexdigest())


def newer(current: SignedDoc | None, candidate: SignedDoc) -> SignedDoc:
    """The candidate if it may replace ``current``: versions only grow, so
    an old document cannot be pushed back over a newer one."""
    if current is not None and candidate.version <= current.version:
        raise DocError("stale_version", f"{candidate.kind} version {candidate.version} is not newer "
                                        f"than {current.version}")
    return candidate
