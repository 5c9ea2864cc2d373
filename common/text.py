"""Everything a person reads, in Simplified Chinese and English: one loader
for the per-component catalogues.

Each component keeps its text in a TOML file beside its code
(``postedge/text.toml`` for the CLI, ``gateway/http/text.toml`` for the
clerk's page, ``handheld/text.toml``, ``simulator/text.toml``), so a
translator reads a component's whole vocabulary in one place and a change to
one screen touches one file. An entry is a table with a ``zh`` and an ``en``
string; dotted table names group entries::

    [overall.ok]
    zh = "一切正常"
    en = "All good"

Why TOML files and one small loader rather than gettext: the catalogues are
keyed by meaning (``overall.ok``), not by English source strings, because
the firmware and the devices send the keys (alarm kinds, refusal codes); the
two languages are peers; and nothing has to be compiled before a test or a
demo runs. ``tests/common/test_text.py`` fails on a key missing in either
language and on placeholders that differ between the two.

One rule for a missing key everywhere: ``KeyError``, so a typo fails the
tests instead of showing a blank. Fields that come from devices fill
placeholders and nothing else: ``key`` and ``lang`` are positional-only, a
field a device left out shows as ``?``, and values are substituted, never
formatted again, so a ``{`` in device text is shown as sent.
"""

from __future__ import annotations

import os
import string
import tomllib
import unicodedata
from functools import cache
from pathlib import Path
from typing import Any

LANGS = ("zh", "en")


class CatalogError(ValueError):
    """A catalogue file that is not a valid set of zh/en entries."""


class _Blank(dict[str, Any]):
    """Format mapping that shows "?" for a field left out, so a sentence
    whose details a device did not send still reads as a sentence."""

    def __missing__(self, key: str) -> str:
        return "?"


def _flatten(table: dict[str, Any], prefix: str, out: dict[str, dict[str, str]], path: Path) -> None:
    """Entries are tables with ``zh`` and ``en``; any other key of a table is
    a table of entries below it (``[progress]`` and ``[progress.done]`` both)."""
    for k, v in table.items():
        key = f"{prefix}{k}"
        if not isinstance(v, dict):
            raise CatalogError(f"{path}: '{key}' must be a table with zh and en")
        texts = {lang: v[lang] for lang in LANGS if lang in v}
        if texts:
            if len(texts) != len(LANGS) or not all(isinstance(x, str) for x in texts.values()):
                raise CatalogError(f"{path}: '{key}' needs both zh and en strings, has {sorted(texts)}")
            out[key] = texts
        _flatten({n: x for n, x in v.items() if n not in LANGS}, key + ".", out, path)


def placeholders(text: str) -> set[str]:
    """The named fields a text fills, e.g. {'n', 'outlet'}."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


class Localized(dict[str, str]):
    """A field that is itself text for a person, ``{"zh": ..., "en": ...}``
    (``Localized(cat.both("pstate.deposited"))``): each language's sentence
    gets that language's word ("已处理（已投柜）", "already deposited in a
    locker"), never the state's code. A plain dict a device sent is not one
    and fills in as it is."""


class Catalog:
    """A component's text, loaded from its TOML file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as f:
            raw = tomllib.load(f)
        self.entries: dict[str, dict[str, str]] = {}
        _flatten(raw, "", self.entries, path)

    def t(self, key: str, lang: str, /, **fields: object) -> str:
        """The text for ``key`` in ``lang`` with ``fields`` filled in; a
        :class:`Localized` field fills in its own text in ``lang``."""
        lang = lang if lang in LANGS else "en"
        filled = {k: v.get(lang, "?") if isinstance(v, Localized) else v for k, v in fields.items()}
        return self.entries[key][lang].format_map(_Blank(filled))

    def both(self, key: str, /, **fields: object) -> dict[str, str]:
        """``{"zh": ..., "en": ...}``: what an API answer carries for a person."""
        return {lang: self.t(key, lang, **fields) for lang in LANGS}

    def has(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)


@cache
def load(path: Path | str) -> Catalog:
    """The catalogue at ``path``, read once per process."""
    return Catalog(Path(path))


def beside(module_file: str, name: str = "text.toml") -> Catalog:
    """The catalogue file next to a module: ``beside(__file__)``."""
    return load(Path(module_file).resolve().with_name(name))


def device_fields(body: dict[Any, Any]) -> dict[str, object]:
    """Device-sent fields that may fill a text: string keys only (``**``
    needs them), at most 64 so a 10,000-key body costs nothing."""
    out: dict[str, object] = {}
    for k, v in body.items():
        if isinstance(k, str) and len(out) < 64:
            out[k] = v
    return out


def pick_lang(lang: str | None = None) -> str:
    """``lang`` if given, else POSTEDGE_LANG, else the locale (``LANG=zh_CN...``
    selects Chinese), else English."""
    for cand in (lang, os.environ.get("POSTEDGE_LANG"), os.environ.get("LANG")):
        if cand:
            return "zh" if cand.lower().startswith("zh") else "en"
    return "en"


def cells(s: str) -> int:
    """Terminal columns ``s`` takes: CJK and other wide characters two,
    combining marks none, the rest one."""
    n = 0
    for c in s:
        if unicodedata.combining(c):
            continue
        n += 2 if unicodedata.east_asian_width(c) in "WF" else 1
    return n


# No line starts with these: closing punctuation stays with the text before.
_NO_BREAK_BEFORE = set("，。、；：！？）」』》〉】…,.;:!?)]}")
_NO_BREAK_AFTER = set("（「『《〈【")


def wrap_cells(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` terminal columns (a longer
    word alone on its line). ASCII words break at spaces; Chinese may break
    between any two characters except before closing punctuation, as
    Chinese text is set. textwrap counts characters, so a Chinese line it
    makes is up to twice as wide as asked."""
    units: list[str] = []  # words, single wide characters, and " " for a space
    word = ""
    for c in " ".join(text.split()):
        if c == " " or cells(c) == 2 or c in _NO_BREAK_BEFORE:
            if word:
                units.append(word)
                word = ""
            if c in _NO_BREAK_BEFORE and units and units[-1] != " ":
                units[-1] += c
            else:
                units.append(c)
        else:
            word += c
    if word:
        units.append(word)
    for i in range(len(units) - 2, -1, -1):  # and none ends with an opening bracket
        if units[i] and units[i][-1] in _NO_BREAK_AFTER and units[i + 1] != " ":
            units[i:i + 2] = [units[i] + units[i + 1]]
    lines: list[str] = []
    line = ""
    for u in units:
        if u == " ":
            if line:
                line += " "
            continue
        if line and cells(line) + cells(u) > width:
            lines.append(line.rstrip())
            line = ""
        line += u
    if line.strip():
        lines.append(line.rstrip())
    return lines
