"""The SMS a villager reads, rendered from ``text.toml`` at the moment of
sending: the pickup code is a parameter here and nowhere else, so it is
never stored, logged or put in an event (the caller keeps only the number
of parts)."""

from __future__ import annotations

import time

from common.text import beside

TEXT = beside(__file__)
PURPOSES = ("notice", "reminder", "resend")
_MON = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def when(ts: int | None, lang: str, tz_offset_h: float) -> str:
    """A date and time the way a villager reads it, in the outlet's zone."""
    if not ts:
        return "?"
    t = time.gmtime(int(ts) + int(tz_offset_h * 3600))
    month = t.tm_mon if lang == "zh" else _MON[t.tm_mon - 1]
    return TEXT.t("date", lang, month=month, day=t.tm_mday,
                  hh=f"{t.tm_hour:02d}", mm=f"{t.tm_min:02d}")


def render(purpose: str, lang: str, *, parcel: str, outlet: str, compartment: object, code: str,
           expires: int | None, tz_offset_h: float) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}")
    return TEXT.t(f"sms.{purpose}", lang, parcel=parcel, outlet=outlet, compartment=compartment, code=code,
                  expires=when(expires, lang, tz_offset_h))
