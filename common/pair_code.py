"""The text of a handheld pairing QR code, written by the
gateway's clerk page (``gateway/http/pairing.py``) and read by the handheld
(``handheld/pairing.py``): one format in one place.

``PE-PAIR:1:<token>:<ca sha256 hex>:<gateway https url>``

The token is one-time and short-lived; the fingerprint is the SHA-256 of the
outlet CA certificate (DER), so the handheld can fetch the CA over an
unverified connection, check it against the QR code it scanned in the clerk's
presence, and then talk to the gateway over TLS verified with that CA only.
The URL comes last because it holds colons itself."""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "PE-PAIR:1:"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_FP = re.compile(r"^[0-9a-f]{64}$")


class BadPairCode(ValueError):
    """Scanned text that is not a pairing code; ``reason`` names what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PairCode:
    token: str
    ca_sha256: str
    url: str

    def text(self) -> str:
        return f"{PREFIX}{self.token}:{self.ca_sha256}:{self.url}"


def parse(text: str) -> PairCode:
    """The pairing code in ``text`` (a scan); BadPairCode otherwise."""
    text = text.strip()
    if not text.startswith(PREFIX):
        raise BadPairCode("not_pair_code")
    parts = text[len(PREFIX):].split(":", 2)
    if len(parts) != 3:
        raise BadPairCode("not_pair_code")
    token, fp, url = parts
    if not _TOKEN.match(token) or not _FP.match(fp):
        raise BadPairCode("not_pair_code")
    if not re.match(r"^https://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?$", url):
        raise BadPairCode("bad_url")
    return PairCode(token, fp, url.rstrip("/"))
