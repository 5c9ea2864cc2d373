"""The duty store's row operations on both backends (``central/duty_store.py``):
a conditional update moves a row only from the states it may leave, and a
table made before a nullable column was declared gets the column."""

from __future__ import annotations

from central.duty_store import Column, DutyTable
from tests.central.conftest import StoreUnderTest

JOBS = DutyTable("t_jobs", "", (Column("id", "text"), Column("status", "text"), Column("note", "text", True)),
                 key=("id",))
JOBS_LATER = DutyTable("t_jobs", "", (*JOBS.columns, Column("due", "real", True)), key=("id",))


def test_an_update_moves_a_row_only_from_the_states_named(duty_store: StoreUnderTest) -> None:
    b = duty_store.b
    b.duty_table(JOBS)
    b.upsert(JOBS, {"id": "j1", "status": "new", "note": None})
    assert b.update(JOBS, {"id": "j1"}, {"status": "sent"}, {"status": ("new",)})
    assert not b.update(JOBS, {"id": "j1"}, {"status": "sent", "note": "again"}, {"status": ("new",)})
    assert b.update(JOBS, {"id": "j1"}, {"status": "done", "note": "ok"}, {"status": ("sent", "submitted")})
    assert b.rows(JOBS.name, {"id": "j1"}) == [{"id": "j1", "status": "done", "note": "ok"}]
    assert not b.update(JOBS, {"id": "nobody"}, {"status": "done"})  # no such row
    assert not b.update(JOBS, {"id": "j1"}, {"status": "x"}, {"status": ()})  # no state allows it


def test_a_table_from_before_a_nullable_column_gets_it(duty_store: StoreUnderTest) -> None:
    b = duty_store.b
    b.duty_table(JOBS)
    b.upsert(JOBS, {"id": "j1", "status": "new", "note": None})
    b.duty_table(JOBS_LATER)
    b.duty_table(JOBS_LATER)  # a second start: nothing more to add
    b.upsert(JOBS_LATER, {"id": "j2", "status": "new", "note": None, "due": 5.0})
    got = {r["id"]: r for r in b.rows(JOBS.name, {})}
    assert got["j1"]["due"] is None and got["j2"]["due"] == 5.0
