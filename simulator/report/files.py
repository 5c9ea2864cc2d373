"""Writing a report file so that no reader ever sees half of it.

The JSON result and the HTML report are picked up by CI artifact
collectors, mailed, and read by the dashboard while a run may still be
writing them; both go through :func:`atomic_write`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path | str, text: str) -> Path:
    """Write beside the target and rename, so a reader (a CI artifact
    collector, the dashboard) never sees half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
