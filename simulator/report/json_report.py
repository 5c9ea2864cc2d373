"""The run result as a JSON file: the one artifact every report is made from.

Everything else in this package only reads the result, so a result saved
with :func:`write_json` can be turned into a summary or an HTML report later,
on another machine, by someone who was not there when it ran. The layout
keeps one top-level key per line, so ``grep`` and ``less`` find the verdict
at once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from simulator.report.files import atomic_write


def json_clean(v: Any) -> Any:
    """NaN and infinities as null: strict JSON parsers (jq, browsers) reject them."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_clean(x) for x in v]
    return v


def dumps(result: dict[str, Any]) -> str:
    """One top-level key per line, each value compact: ``less`` and ``grep``
    find the verdict at once, and a 10^5-event timeline stays one line
    instead of half a million."""
    try:
        parts = [f"{json.dumps(str(k))}: {json.dumps(v, ensure_ascii=False, allow_nan=False)}"
                 for k, v in result.items()]
    except ValueError:
        return dumps(json_clean(result))
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write_json(result: dict[str, Any], path: Path | str) -> Path:
    return atomic_write(path, dumps(result))


def read_json(path: Path | str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


