"""Which alarms a clerk has acknowledged or resolved, and with what note.

One row per alarm event id, overwritten as the alarm moves on
(``acknowledged`` → ``resolved``). The page reads it through the read-only
store: an acknowledged alarm no longer turns the page red, it is shown with
who took it and the note. The row is the page's memory only; what happened
is the own event (``gateway.alarm_acknowledged`` / ``gateway.alarm_resolved``)
that syncs upstream with the note.

The table may not exist yet on a gateway where nobody has set up a clerk
(``clerks.ensure`` creates it): ``read`` then answers "nothing
acknowledged", so the public page works on any store.
警报的确认与处理记录：已确认的警报不再把页面变红。
"""

from __future__ import annotations

import sqlite3
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm_acks (
    alarm_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('acknowledged','resolved')),
    by TEXT NOT NULL,
    note TEXT NOT NULL,
    at REAL NOT NULL
);
"""

STATES = ("acknowledged", "resolved")


def put(db: sqlite3.Connection, alarm_id: str, state: str, by: str, note: str, at: float) -> None:
    if state not in STATES:
        raise ValueError(state)
    db.execute("INSERT INTO alarm_acks(alarm_id, state, by, note, at) VALUES (?,?,?,?,?) "
               "ON CONFLICT(alarm_id) DO UPDATE SET state=excluded.state, by=excluded.by, "
               "note=excluded.note, at=excluded.at", (alarm_id, state, by, note, at))


def read(db: sqlite3.Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
    """``{alarm id: {state, by, note, at}}`` for those of ``ids`` that have one."""
    if not ids:
        return {}
    try:
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for aid, state, by, note, at in db.execute(
                    f"SELECT alarm_id, state, by, note, at FROM alarm_acks WHERE alarm_id IN "
                    f"({','.join('?' * len(chunk))})", chunk):
                out[aid] = {"state": state, "by": by, "note": note, "at": at}
        return out
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {}
        raise
