"""The locker pickup slip a clerk prints for a villager without a phone:
which locker and compartment, the parcel's id tail, the expiry,
and the pickup code *only when the gateway itself could open the code the
locker sealed for the outlet notifier* (``gateway/http/clerk_slip.py``
decides). Otherwise the slip says the code comes by SMS or through the
platform: a code the locker sealed for the platform alone is not the
gateway's to print.

Why a second slip beside ``receipt.pickup_slip``: that one is a code and a
parcel id; this one is what the villager needs at the locker (which one,
which door, until when) and exists in both variants. Every line comes from
``gateway/counter/text.toml`` and is printed in Chinese, then English, as
GB 18030 in the printer's Chinese mode (``receipt.py`` says why). Only the
id's tail is printed, so a slip left on the counter does not name the whole
waybill. The code is a parameter: never logged or stored here.
"""

from __future__ import annotations

from dataclasses import dataclass

from escpos.printer import Dummy

from common.text import LANGS, beside
from gateway.counter.receipt import CHINESE_MODE, _line

TEXT = beside(__file__)
TAIL = 6


@dataclass(frozen=True)
class LockerSlip:
    locker: str
    compartment: object  # an int from the deposit event, "?" if it had none
    parcel: str
    expires: dict[str, str]  # the date in each language ("12月6日10:00", "6 Dec 10:00")
    code: str | None = None  # 6 digits, or None: the code comes by SMS / the platform


def tail(parcel: str) -> str:
    return parcel if len(parcel) <= TAIL else "…" + parcel[-TAIL:]


def locker_slip(s: LockerSlip) -> bytes:
    """The slip as ESC/POS bytes (python-escpos's ``Dummy`` collects them)."""
    if s.code is not None and (len(s.code) != 6 or not s.code.isascii() or not s.code.isdigit()):
        raise ValueError("a pickup code is 6 digits")
    p = Dummy()
    p._raw(CHINESE_MODE)

    def both(key: str, **fields: object) -> None:
        for lang in LANGS:
            _line(p, TEXT.t(key, lang, **fields))

    p.set(align="center", bold=True, double_height=True, double_width=True)
    _line(p, TEXT.t("slip.title", "zh"))
    p.set(align="center", bold=False, normal_textsize=True)
    _line(p, TEXT.t("slip.title", "en"))
    p.set(align="left")
    both("slip.locker", locker=s.locker, compartment=s.compartment)
    both("slip.parcel", tail=tail(s.parcel))
    for lang in LANGS:
        _line(p, TEXT.t("slip.expires", lang, when=s.expires.get(lang, "?")))
    if s.code is not None:
        p.set(align="center")
        p.qr(f"PE-P:{s.code}", native=True, size=8)
        p.set(align="center", bold=True, double_height=True, double_width=True)
        _line(p, f"{s.code[:3]} {s.code[3:]}")
        p.set(align="left", bold=False, normal_textsize=True)
        both("slip.scan")
    else:
        p.set(bold=True)
        both("slip.no_code")
        p.set(bold=False)
        both("slip.ask")
    p.cut()
    return bytes(p.output)
