"""What the clerk types for an outbound parcel, checked before anything
else happens: the sender, the recipient, the service and, for a charity
parcel (公益包裹), its donor and beneficiary.

Text is NFC-normalised and trimmed; control, format (bidi overrides,
zero-width), private-use, surrogate and unassigned characters are refused,
because the text goes onto a label, a receipt and an event. Lengths are
characters after normalising; together they keep a ``counter.accept``
event far below the envelope's 4 KB limit. Every refusal names the field
(``FormError.field``) so the clerk's page can point at it.

Phones: a mainland mobile (11 digits, 1[3-9]…) or a landline with its
area code (0 and 2-3 digits, then 7-8 digits, an optional dash). Labels
and receipts show a mobile as ``138****5678`` (privacy waybills, 隐私面单);
the event keeps the whole number, which the platform needs to deliver.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

MAX_NAME = 32
MAX_ADDRESS = 120
MAX_CHARITY = 40
SERVICES = ("standard", "charity")
_BAD_CATEGORIES = ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp")
_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")
_LANDLINE = re.compile(r"^0[0-9]{2,3}-?[0-9]{7,8}$")


class FormError(ValueError):
    def __init__(self, field: str, reason: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Party:
    name: str
    phone: str
    address: str
    postcode: str

    def doc(self) -> dict[str, str]:
        return {"name": self.name, "phone": self.phone, "address": self.address, "postcode": self.postcode}


@dataclass(frozen=True)
class ParcelForm:
    box: str
    sender: Party
    recipient: Party
    service: str
    waybill_scan: str
    reading: str
    donor: str = ""
    beneficiary: str = ""


def text(d: dict[str, Any], key: str, where: str, max_len: int, required: bool = True) -> str:
    field = f"{where}.{key}" if where else key
    v = d.get(key, "")
    if v is None:
        v = ""
    if not isinstance(v, str):
        raise FormError(field, "not_text", "must be text")
    if len(v) > max_len * 4:  # before normalising: no megabyte goes through NFC
        raise FormError(field, "too_long", f"at most {max_len} characters")
    v = unicodedata.normalize("NFC", v).strip()
    if required and not v:
        raise FormError(field, "missing", "is required")
    if len(v) > max_len:
        raise FormError(field, "too_long", f"at most {max_len} characters")
    for c in v:
        if unicodedata.category(c) in _BAD_CATEGORIES:
            raise FormError(field, "bad_chars", f"character U+{ord(c):04X} is not allowed")
    return v


def phone(d: dict[str, Any], where: str, required: bool = True) -> str:
    v = text(d, "phone", where, 20, required)
    if v and not (v.isascii() and (_MOBILE.match(v) or _LANDLINE.match(v))):
        raise FormError(f"{where}.phone", "bad_phone",
                        "a mobile (11 digits) or a landline with its area code")
    return v


def postcode(d: dict[str, Any], where: str, required: bool) -> str:
    v = text(d, "postcode", where, 6, required)
    if v and not (len(v) == 6 and v.isascii() and v.isdigit()):
        raise FormError(f"{where}.postcode", "bad_postcode", "a postcode is 6 digits")
    return v


def party(d: object, where: str, recipient: bool) -> Party:
    if not isinstance(d, dict):
        raise FormError(where, "missing", "is required")
    extra = set(d) - {"name", "phone", "address", "postcode"}
    if extra:
        raise FormError(f"{where}.{sorted(extra)[0]}", "unknown_field", "is not a field of this form")
    return Party(text(d, "name", where, MAX_NAME), phone(d, where),
                 text(d, "address", where, MAX_ADDRESS, required=recipient),
                 postcode(d, where, required=recipient))


def mask_phone(p: str) -> str:
    return p[:3] + "****" + p[7:] if _MOBILE.match(p) else p


FIELDS = {"box", "sender", "recipient", "service", "waybill", "reading", "charity"}


def parse(doc: object) -> ParcelForm:
    """The form from the page's JSON; FormError naming the first bad field."""
    if not isinstance(doc, dict):
        raise FormError("", "malformed", "the form is a JSON object")
    extra = set(doc) - FIELDS
    if extra:
        # weight_g among them: the weight comes from the scale, never from the client
        raise FormError(sorted(extra)[0], "unknown_field", "is not a field of this form")
    service = doc.get("service", "standard")
    if service not in SERVICES:
        raise FormError("service", "unknown_service", f"one of {', '.join(SERVICES)}")
    donor = beneficiary = ""
    charity = doc.get("charity")
    if service == "charity":
        if not isinstance(charity, dict) or set(charity) - {"donor", "beneficiary"}:
            raise FormError("charity", "missing", "a charity parcel names its donor and beneficiary")
        donor = text(charity, "donor", "charity", MAX_CHARITY)
        beneficiary = text(charity, "beneficiary", "charity", MAX_CHARITY)
    elif charity not in (None, {}):
        raise FormError("charity", "not_charity", "only a charity parcel has a donor and beneficiary")
    return ParcelForm(text(doc, "box", "", 32), party(doc.get("sender"), "sender", recipient=False),
                      party(doc.get("recipient"), "recipient", recipient=True), service,
                      text(doc, "waybill", "", 64), text(doc, "reading", "", 64), donor, beneficiary)
