"""What the handheld says to the courier: its catalogue and the refusal that carries a key.

The text itself, in Simplified Chinese and English, is ``handheld/text.toml``
(loaded by :mod:`common.text`): the screens, the refusals (``err.<code>``), and the
reasons of the photo, duplicate, evidence, position and upload modules, each under
its own prefix. Workflows refuse a courier action with :class:`Refused`, which
carries an ``err.*`` key, so the UI never shows a raw error code.
"""

from __future__ import annotations

from typing import Any

from common.text import LANGS, Localized, beside

__all__ = ["LANGS", "TEXT", "Refused"]

TEXT = beside(__file__)


class Refused(Exception):
    """A courier action refused for a reason the courier can act on; ``code`` keys ``err.<code>``."""

    def __init__(self, code: str, detail: str | Localized = "", **kw: Any) -> None:
        """``detail``: what went wrong, for the sentence; :class:`Localized`
        when it has words in each language (a barcode checker's detail). The
        answer's ``detail`` field is the English one either way."""
        self.code = code
        self.detail = detail.get("en", "") if isinstance(detail, Localized) else detail
        self.kw = kw
        text = TEXT.both("err." + code, detail=detail, **kw)
        self.zh = text["zh"]
        self.en = text["en"]
        super().__init__(f"{code}: {self.en}")

    def as_dict(self) -> dict[str, Any]:
        return {"ok": False, "code": self.code, "zh": self.zh, "en": self.en, "detail": self.detail}
