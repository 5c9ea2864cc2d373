"""The command line's text (``postedge/text.toml``) and its language choice.

Most couriers, clerks and testers read Simplified Chinese, so every message
a person sees comes from the catalogue in both languages. The language is
``--lang`` if given, else POSTEDGE_LANG, else the locale (``LANG=zh_CN...``
selects Chinese), else English.
"""

from __future__ import annotations

from common.text import LANGS, beside, pick_lang

__all__ = ["LANGS", "TEXT", "pick", "t"]

TEXT = beside(__file__)
t = TEXT.t
pick = pick_lang
