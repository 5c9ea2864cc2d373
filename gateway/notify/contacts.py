"""Where a recipient's phone number comes from: the platform, in a signed
``contact`` command it pushes down the downlink for the outlet's notifier,
when it learns the parcel (its manifest, before the courier even arrives)::

    {"id": "ct-RB123456785GB", "dev": "notifier", "op": "contact",
     "args": {"parcel": "RB123456785GB", "phone": "+8613800138000", "lang": "zh"},
     "iat": ..., "exp": ..., "kv": 1, "v": 1, "sig": "<64 hex>"}

Signed like any command (``protocol/signing.py``) but with the *contact
key* ``HKDF-Expand(N, "pe/v1/notify-contact\\n", 32)`` of the outlet
notifier key ``N`` (``protocol/seal.py``): only the platform and this
notifier hold it, so a device, a handheld or anyone on the LAN cannot
point a villager's code at another phone; and it is no input to any device
key, so holding it opens no door. The downlink stores the command as it
came (``state.inbox_put``); the notifier, which holds ``N``, checks it and
keeps the contact. A later contact for the same parcel replaces the earlier
one (the villager changed number).

Why not in the locker's ``provision_code``: that command is signed for the
locker and the locker needs no phone number; and a parcel the locker codes
offline has no ``provision_code`` at all.
"""

from __future__ import annotations

import re
from typing import Any

from common.text import LANGS
from protocol import signing
from protocol.errors import BadField
from protocol.keys import hkdf_expand

DEVICE = "notifier"
OP = "contact"
CONTACT_INFO = b"pe/v1/notify-contact\n"
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_CN_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")
_PARCEL = re.compile(r"^[A-Z0-9]{8,40}$")


def contact_key(notifier_key: bytes) -> bytes:
    return hkdf_expand(notifier_key, CONTACT_INFO, 32)


def normalise_phone(phone: Any) -> str:
    """E.164 (+ and 7-15 digits); a bare 11-digit mainland mobile gets +86."""
    if not isinstance(phone, str):
        raise BadField("phone must be a string")
    p = phone.replace(" ", "").replace("-", "")
    if _CN_MOBILE.match(p):
        p = "+86" + p
    if not p.isascii() or not _PHONE.match(p):
        raise BadField("phone must be +<7-15 digits> or an 11-digit mobile number")
    return p


def check(payload: bytes | dict[str, Any], keys_by_version: dict[int, bytes], now: int) -> dict[str, str]:
    """The contact in a signed command: {"parcel", "phone", "lang", "cid"};
    ProtocolError (with its code) for anything else."""
    keys = {kv: contact_key(k) for kv, k in keys_by_version.items()}
    cmd = signing.verify(payload, keys, DEVICE, now)
    if cmd["op"] != OP:
        raise BadField(f"op must be {OP!r}")
    a = cmd["args"]
    parcel = a.get("parcel")
    # The parcel id as the locker's deposit event carries it (the canonical
    # value of protocol/barcodes.require_parcel_id): S10, domestic or SSCC.
    if not isinstance(parcel, str) or not _PARCEL.match(parcel):
        raise BadField("parcel must be 8-40 of A-Z 0-9")
    lang = a.get("lang", "zh")
    if lang not in LANGS:
        raise BadField(f"lang must be one of {', '.join(LANGS)}")
    return {"parcel": parcel, "phone": normalise_phone(a.get("phone")), "lang": lang, "cid": cmd["id"]}


def make(notifier_key: bytes, kv: int, cid: str, parcel: str, phone: str, lang: str, now: int,
         lifetime_s: int = 7 * 86400) -> dict[str, Any]:
    """The platform's side (simulator, tests)."""
    cmd = {"id": cid, "dev": DEVICE, "op": OP, "args": {"parcel": parcel, "phone": phone, "lang": lang},
           "iat": now, "exp": now + lifetime_s}
    return signing.sign(cmd, contact_key(notifier_key), kv=kv)
