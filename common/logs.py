"""Logging for every CPython role: stdlib ``logging`` under one ``postedge``
logger tree, written as JSON lines.

Two kinds of record:

- **Events** (``event(log, "web_started", port=8080)``): one notable step,
  for operators, the demo and the tests that drive a gateway as a
  subprocess and wait for a step. Written to standard output as
  ``{"evt": "web_started", "port": 8080}``, one line each, flushed.
- **Diagnostics** (``log.warning(...)``, ``log.exception(...)``): written to
  standard error as ``{"evt": "log", "level": ..., "logger": ..., "msg": ...}``
  with the traceback under ``exc``.

The handlers sit on the ``postedge`` logger itself (not the root), so they
work without configuration, and whatever the host process does with the
root logger (pytest's capture, an embedding application) neither loses nor
doubles them. They write to the current ``sys.stdout``/``sys.stderr`` at
each record, so redirecting those streams redirects the log.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

ROOT = "postedge"
_FIELDS = "evt_fields"


def get(name: str) -> logging.Logger:
    """The logger for a module: ``get(__name__)`` -> ``postedge.<module>``."""
    return logging.getLogger(name if name.startswith(ROOT + ".") else f"{ROOT}.{name}")


def event(logger: logging.Logger, evt: str, /, **fields: Any) -> None:
    """Record one notable step ``evt`` with its fields."""
    logger.info(evt, extra={_FIELDS: fields})


class JsonLines(logging.Formatter):
    """A record as one JSON line (non-ASCII kept as is: clerks read Chinese)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _FIELDS, None)
        if fields is not None:
            return json.dumps({"evt": record.msg, **fields}, ensure_ascii=False, default=str)
        doc: dict[str, Any] = {"evt": "log", "level": record.levelname.lower(), "logger": record.name,
                               "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class _CurrentStream(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that looks up sys.stdout / sys.stderr at each record."""

    def __init__(self, name: str, events: bool) -> None:
        super().__init__()
        self._name = name
        self.addFilter(lambda r: (getattr(r, _FIELDS, None) is not None) == events)
        self.setFormatter(JsonLines())

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _install() -> None:
    root = logging.getLogger(ROOT)
    if any(isinstance(h, _CurrentStream) for h in root.handlers):
        return
    root.addHandler(_CurrentStream("stdout", events=True))
    root.addHandler(_CurrentStream("stderr", events=False))
    root.setLevel(logging.INFO)
    root.propagate = False


_install()


def recorder(name: str) -> Callable[..., None]:
    """``record = recorder(__name__)``; then ``record("sync_batch", n=3)``.
    Components that report events take such a callable, so a test can pass
    its own and see what happened without parsing output."""
    logger = get(name)

    def record(evt: str, /, **fields: Any) -> None:
        event(logger, evt, **fields)

    return record
