"""What a platform duty that answers events once needs from a backend, as one protocol.

The security-relevant duties (``central/revocations.py``: signing a revoke
for a stolen device's outlet; ``central/clerk_requests.py``: deciding a
clerk's request) must run whichever backend holds the events, and so must
the postage audit (``central/postage_audit.py``) and what the operator
issues for outlets (``central/documents.py``, ``central/manifests.py``), so
they ask the backend only for these few operations and never for its database: the
embedded backend answers them from SQLite (``central/embedded.py``), the
scale-out one from PostgreSQL (``central/scaleout/backend.py``). Besides
the registry (``central/registry.py``) and ``push_command``:

- ``duty_table``: create the duty's table of answers (``DutyTable``), keyed
  by (outlet, event id) like the events themselves;
- ``undecided``: the events of the duty's type that no answer covers yet,
  so a duty restarted after a crash resumes where it stopped;
- ``decide``: record one answer, once (a second answer to the same event
  is ignored); a table with another key may record a row once the same way
  (the next version of a document: two publishers never get the same one);
- ``count_decided``: how many of an outlet's answers since a time match
  some columns (the clerks' remote-open budget);
- ``decided``: an outlet's answers, oldest first;
- ``duties_turn``: whether this process may run a pass now. Several
  scale-out fronts may run the duties at once; one pass at a time keeps a
  budget from being counted twice and a refusal from being sent twice.

The pickup notices (``central/notices.py``) keep rows that are not one
answer per event (a villager's number per parcel, a notice per deposit and
purpose, claimed before the SMS provider is called and updated as it
answers), so a table may name another key (``DutyTable.key``) and a duty
may also:

- ``upsert``: write one row by its key, the other columns replaced (or,
  for the columns named ``add``, added to: a count of attempts);
- ``rows``: a table's rows whose columns equal some values (and, for a
  page, differ from others), or only the newest few of them by ``at``;
- ``delete``: remove one row by its key (a notice no longer pending);
- ``update``: change some columns of one row by its key, only while other
  columns hold given values (a board job moves from ``sent`` to
  ``submitted`` once, however many passes read the event);
- ``events_of``: every event of a type, oldest first;
- ``events_after``: the events of a type stored after a cursor the store
  handed out, and the next cursor, through an index of that type's events
  (``DutyTable.reads``), so a pass reads what is new, not every event ever
  stored; where writers can commit out of order (several scale-out workers)
  the answer starts a window before the cursor again, so an event committed
  late is still read, and the duty skips what it handled already;
- ``event``: one event's stored envelope.

A table's columns are declared once here, in a small vocabulary both
databases render (``text``, ``int``, ``real``), so the duty carries no SQL.
"""

from __future__ import annotations

import json
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from central.registry import Registry

TYPES = ("text", "int", "real")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # one of TYPES
    null: bool = False


@dataclass(frozen=True)
class DutyTable:
    """A duty's answers to events of ``event_type``, keyed by (``outlet``,
    ``event``), both text; ``at`` (real) is when the answer was made, which
    ``count_decided`` and ``decided`` go by. Every column is named here,
    those three too, in the table's order.

    A table of other rows (``upsert``, ``rows``) names its ``key``, whose
    columns are text or int and not null (most start with ``outlet``; the
    platform's own documents are keyed by kind and version, no outlet's);
    it then needs no ``event`` or ``at``, and ``event_type`` may be ``""``
    (no event type it answers).

    ``reads``: event types the duty reads in the order stored
    (``events_after``); the store keeps an index of each (made where the
    table is), which only that type's inserts touch.

    ``indexes``: the column lists of the table's own indexes besides its
    key, for the columns a duty's reads filter or order by (``rows``,
    ``count_decided``) other than a prefix of the key; without one, each
    such read scans the whole table, which grows by an answer per event.
    Each is named ``<table>_<columns>`` (``index_name``)."""

    name: str
    event_type: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ("outlet", "event")
    reads: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"not a table name: {self.name!r}")
        for c in self.columns:
            if not c.name.isidentifier() or c.type not in TYPES:
                raise ValueError(f"{self.name}: bad column {c!r}")
        have = {c.name: c for c in self.columns}
        needs = [Column("at", "real")] if self.key == ("outlet", "event") else []
        if not self.key:
            raise ValueError(f"{self.name}: a table needs a key")
        for k in self.key:
            if have.get(k) not in (Column(k, "text"), Column(k, "int")):
                raise ValueError(f"{self.name}: the key column {k!r} must be text or int, not null")
        for need in [Column(k, "text") for k in self.key if k in ("outlet", "event")] + needs:
            if have.get(need.name) != need:
                raise ValueError(f"{self.name}: needs the column {need!r}")
        for t in self.reads:
            event_type_name(t)
        for cols in self.indexes:
            if not cols or any(c not in have for c in cols):
                raise ValueError(f"{self.name}: an index of unknown columns {cols!r}")


def index_name(table: DutyTable, columns: tuple[str, ...]) -> str:
    """The name of ``table``'s index of ``columns`` (``DutyTable.indexes``),
    the same in either database, so a store can tell it has it."""
    return "_".join((table.name, *columns))


def event_type_name(event_type: str) -> str:
    """``event_type`` as part of an index's name (``locker.deposit`` ->
    ``locker_deposit``); ValueError for anything but a plain event type, so
    a type may be written into SQL as a literal (a partial index is used
    only by a query that names its type as one)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*", event_type):
        raise ValueError(f"not an event type: {event_type!r}")
    return event_type.replace(".", "_")


def identifier(name: str) -> str:
    """``name`` quoted for either database (``by`` is a keyword in
    PostgreSQL); ValueError for anything but a plain identifier."""
    if not name.isidentifier():
        raise ValueError(f"not an identifier: {name!r}")
    return f'"{name}"'


def body_of(payload: bytes | str) -> dict[str, Any]:
    """A stored envelope's ``body``; ``{}`` when it is not an object."""
    try:
        body = json.loads(payload).get("body")
    except (ValueError, AttributeError):
        return {}
    return body if isinstance(body, dict) else {}


def columns_of(row: dict[str, Any]) -> list[str]:
    """A row's column names, checked."""
    return [identifier(k) for k in row]


@runtime_checkable
class DutyStore(Registry, Protocol):
    """The registry, queueing a command and the duties' answers (module doc)."""

    def push_command(self, outlet: str, kind: str, cmd: dict[str, Any]) -> int:
        ...

    def duty_table(self, table: DutyTable) -> None:
        """Create the duty's table if missing (an older one is upgraded to the
        key, and gets the nullable columns added since it was made)."""
        ...

    def undecided(self, event_type: str, decisions: str) -> list[tuple[str, str, dict[str, Any]]]:
        """Events of ``event_type`` no row of ``decisions`` answers yet, oldest
        first: (outlet, event id, body; ``{}`` when the body is not an object)."""
        ...

    def decide(self, table: str, row: dict[str, Any]) -> bool:
        """Record one answer (``row`` names ``outlet``, ``event`` and the
        table's columns); False if the event was answered already. On a
        table with another key: False if a row with that key is there."""
        ...

    def count_decided(self, table: str, outlet: str, since: float, where: dict[str, Any]) -> int:
        """The outlet's answers made after ``since`` whose columns equal ``where``."""
        ...

    def decided(self, table: str, outlet: str) -> list[dict[str, Any]]:
        """The outlet's answers, oldest first (by ``at``, then event id), every column."""
        ...

    def duties_turn(self) -> AbstractContextManager[bool]:
        """True inside when this process alone runs a duty pass now."""
        ...

    def upsert(self, table: DutyTable, row: dict[str, Any], add: tuple[str, ...] = ()) -> None:
        """Write ``row`` (every column of ``table.key`` and some others): a
        new row, or the one with its key updated, its other columns
        replaced, the ``add`` ones added to (attempts counted)."""
        ...

    def rows(self, table: str, where: dict[str, Any], unlike: dict[str, Any] | None = None,
             newest: int | None = None) -> list[dict[str, Any]]:
        """The rows whose columns equal ``where`` and differ from ``unlike``,
        every column, in no particular order; with ``newest``, only the last
        ``newest`` by ``at`` (the table needs one), newest first, so a page
        reads only the rows it shows."""
        ...

    def delete(self, table: DutyTable, key: dict[str, Any]) -> None:
        """Remove the row whose key is ``key`` (every column of ``table.key``), if any."""
        ...

    def update(self, table: DutyTable, key: dict[str, Any], values: dict[str, Any],
               only_if: dict[str, tuple[Any, ...]] | None = None) -> bool:
        """Set ``values`` on the row whose key is ``key``, in one statement and
        only while each column named in ``only_if`` holds one of its values
        (a state moving on only from the states it may leave, whoever else
        writes the row meanwhile); whether a row was changed."""
        ...

    def events_of(self, event_type: str) -> list[tuple[str, str, dict[str, Any]]]:
        """Every event of ``event_type``, oldest first: (outlet, event id, body)."""
        ...

    def events_after(self, event_type: str, cursor: float | None
                     ) -> tuple[list[tuple[str, str, dict[str, Any]]], float]:
        """The events of ``event_type`` stored after ``cursor`` (None: from
        the first), oldest first, as (outlet, event id, body), and the cursor
        to ask with next time; through an index of the type (a table's
        ``reads``). The cursor is the store's own (keep
        it, do not compute with it). An event may be answered again on the
        next call (a store whose writers commit out of order re-reads a
        window), never skipped."""
        ...

    def event(self, outlet: str, event_id: str) -> bytes | None:
        """One stored event's envelope, by the outlet that sent it and its id."""
        ...
