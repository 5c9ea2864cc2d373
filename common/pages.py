"""The Jinja2 environment every page and report is rendered with: the
clerk's page, the handheld's UI, the simulator's dashboard and its HTML
report. Autoescaped, a missing name is an error, and ``.html`` templates
are written one tag per line but sent without that whitespace.

Needs Jinja2 (in the handheld, gateway and simulator extras).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from jinja2.ext import Extension


class OneLine(Extension):
    """Drops each line break and the indentation after it from ``.html`` template
    sources, so templates can be read one tag per line and still send no whitespace
    the hand-built pages did not have (a space that matters is written inside a line).
    Included ``.css`` and ``.js`` are left as written."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        if name is None or not name.endswith(".html"):
            return source
        return "".join(line.lstrip() for line in source.splitlines())


def _blank_none(v: Any) -> Any:
    return "" if v is None else v


def page_env(folder: Path, **globals_: Any) -> Environment:
    """The Jinja2 environment for the templates in ``folder``: autoescaped, a missing
    name is an error (``StrictUndefined``), ``.html`` sources one line (:class:`OneLine`),
    ``None`` printed as nothing, ``tojson`` keeps non-ASCII text as it is (still with
    ``<``, ``>``, ``&`` and ``'`` escaped, so data can sit inside a ``<script>``).
    ``globals_`` are names every template sees (e.g. ``t``, the text catalogue)."""
    env = Environment(loader=FileSystemLoader(folder), autoescape=True, undefined=StrictUndefined,
                      extensions=[OneLine], finalize=_blank_none)
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": False}
    env.globals.update(globals_)
    return env
