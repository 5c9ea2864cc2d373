"""Scheduled maintenance revisits: a site with a revisit interval
gets a ``maintain`` job from the central duties once its last accepted visit
is that old, once per due date, and the job goes out with the handheld's
next job list.

Real parts: the embedded backend's SQLite file and the duties loop
(``central/duties.py``) that ``postedge central run`` runs; the courier's
events are stored the way a gateway's batch is (``check_batch`` and
``Embedded.store``). Time is a fake clock passed in: nothing sleeps.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central.boards import DAY_S, BoardError, Boards
from central.duties import Duties
from central.embedded import Embedded
from central.intake import check_batch
from common.uplink_codec import encode_batch
from protocol import envelope
from protocol.ids import format_event_id

MASTER = bytes(range(32))
QR = "PE-CAMP:health-2026"
LAT, LON = 275_000_000, 1_099_000_000
T0 = 1_796_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def days(self, n: float) -> None:
        self.now += n * DAY_S


class County:
    """One outlet, one site, the duties on a fake clock."""

    def __init__(self, tmp: Path) -> None:
        self.clock = Clock()
        self.b = Embedded(tmp / "central")
        self.b.add_outlet("o1", "o1-password-x")
        self.boards = Boards(self.b, MASTER, clock=self.clock)
        self.duties = Duties(self.b, MASTER, clock=self.clock, boards=self.boards)
        self.boards.add_campaign("health-2026", "健康知识宣传", QR)
        self.seq = 0

    def courier(self, *events: tuple[str, dict[str, Any]]) -> None:
        """Handheld events in one batch, stored as the front stores a gateway's."""
        rows = []
        for etype, body in events:
            self.seq += 1
            eid = format_event_id("hh01", "c0ffee01", self.seq)
            env = envelope.make(eid, int(self.clock()), etype, "audit", body, boot=1)
            rows.append((eid, envelope.encode(env)))
        enc = encode_batch("o1", "bulk", rows)
        self.b.store("o1", check_batch("o1", enc.id, enc.body))

    def photo(self, job: str, step: str, sha: str, qr: bool = True) -> tuple[str, dict[str, Any]]:
        return "handheld.photo", {"sha256": sha * 64, "job": job, "site": "s1", "step": step,
                                  "lat_e7": LAT + 50, "lon_e7": LON, "acc_cm": 300,
                                  "taken_at": int(self.clock()), **({"qr": [QR]} if qr else {})}

    def install(self) -> None:
        """s1 installed by hh01 with the campaign's poster, accepted by review now."""
        self.boards.add_site("s1", "o1", "石门村", LAT, LON, name="村委会门口")
        jid = self.boards.add_job("install", "o1", "hh01", site="s1", campaign="health-2026", jid="bj-1")
        self.courier(self.photo(jid, "photo", "a"), ("handheld.job_submitted", {"job": jid}))
        self.duties.run_once()
        assert self.boards.job(jid)["status"] == "done"
        assert self.boards.site("s1")["status"] == "installed"

    def maintain_jobs(self) -> list[dict[str, Any]]:
        return [j for j in self.boards.jobs() if j["kind"] == "maintain"]


@pytest.fixture
def county(tmp_path: Path) -> Iterator[County]:
    c = County(tmp_path)
    try:
        yield c
    finally:
        c.b.close()


def test_a_due_site_gets_one_maintenance_job_sent_with_the_next_job_list(county: County) -> None:
    c = county
    c.install()
    c.boards.set_revisit("s1", 30)
    c.clock.days(29.9)
    c.duties.run_once()
    assert c.maintain_jobs() == []
    c.clock.days(0.2)  # 30 days and a bit since the accepted install
    c.duties.run_once()
    c.duties.run_once()
    c.clock.days(1)
    c.duties.run_once()
    jobs = c.maintain_jobs()
    assert len(jobs) == 1, jobs
    job = jobs[0]
    assert (job["outlet"], job["device"], job["site"], job["campaign"], job["status"]) == \
        ("o1", "hh01", "s1", "health-2026", "new")
    # the next job list carries it; once sent, it is not made again
    listed = c.boards.job_list("o1", "hh01")["jobs"]
    assert [(j["id"], j["kind"]) for j in listed] == [(job["id"], "maintenance")]
    assert listed[0]["campaign"] == QR
    _, cursor, n = c.boards.send_jobs("o1", "hh01")
    assert n == 1 and cursor > 0
    assert c.b.pull("o1", cursor - 1, 10)[1][0][0] == "handheld"
    c.clock.days(5)
    c.duties.run_once()
    assert [j["status"] for j in c.maintain_jobs()] == ["sent"]


def test_the_interval_runs_again_from_the_accepted_revisit(county: County) -> None:
    c = county
    c.install()
    c.boards.set_revisit("s1", 30)
    c.clock.days(31)
    c.duties.run_once()
    (first,) = c.maintain_jobs()
    c.clock.days(2)  # the courier goes two days later: before and after, the poster still there
    c.courier(c.photo(first["id"], "photo_before", "b", qr=False), c.photo(first["id"], "photo_after", "c"),
              ("handheld.job_submitted", {"job": first["id"]}))
    c.duties.run_once()
    assert c.boards.job(first["id"])["status"] == "done"
    visited = c.clock()
    c.clock.days(29)
    c.duties.run_once()
    assert len(c.maintain_jobs()) == 1
    c.clock.days(1.5)
    c.duties.run_once()
    jobs = c.maintain_jobs()
    assert len(jobs) == 2
    second = next(j for j in jobs if j["id"] != first["id"])
    assert second["status"] == "new" and second["created_at"] >= visited + 30 * DAY_S


def test_a_refused_revisit_is_not_made_again_and_an_open_adhoc_job_holds_it_back(county: County) -> None:
    c = county
    c.install()
    c.boards.set_revisit("s1", 10)
    adhoc = c.boards.add_job("maintain", "o1", "hh01", site="s1")
    c.clock.days(11)
    c.duties.run_once()
    assert [j["id"] for j in c.maintain_jobs()] == [adhoc]  # the dispatcher's own job covers it
    c.courier(("handheld.job_not_done", {"job": adhoc, "reason": "weather"}))
    c.duties.run_once()
    assert c.boards.job(adhoc)["status"] == "could_not_complete"
    (rv,) = [j for j in c.maintain_jobs() if j["id"] != adhoc]
    # the scheduled visit's photo after shows no poster: refused, and not scheduled a second time
    c.courier(c.photo(rv["id"], "photo_before", "d", qr=False),
              c.photo(rv["id"], "photo_after", "e", qr=False), ("handheld.job_submitted", {"job": rv["id"]}))
    c.duties.run_once()
    assert c.boards.job(rv["id"])["status"] == "refused"
    c.clock.days(3)
    c.duties.run_once()
    assert len(c.maintain_jobs()) == 2


def test_only_installed_sites_with_an_interval_are_revisited(county: County) -> None:
    c = county
    c.install()  # s1: installed, no interval
    c.boards.add_site("s2", "o1", "石门村", LAT + 9_000, LON, status="approved")
    c.boards.set_revisit("s2", 7)
    c.boards.add_site("s3", "o1", "龙潭村", LAT + 19_000, LON, status="installed")
    c.boards.set_revisit("s3", 7)
    c.boards.add_job("post_poster", "o1", "hh02", site="s3", campaign="health-2026", jid="bj-3")
    c.boards.add_site("s4", "o1", "龙潭村", LAT + 29_000, LON, status="installed")
    c.boards.set_revisit("s4", 7)
    c.boards.retire_site("s4")
    c.clock.days(8)
    c.duties.run_once()
    # s3 was registered installed (a board from before postedge) and never visited accepted here:
    # due from its registration, to the courier who has a job there
    assert [(j["site"], j["device"]) for j in c.maintain_jobs()] == [("s3", "hh02")]
    with pytest.raises(BoardError):
        c.boards.set_revisit("s1", 0)
    with pytest.raises(BoardError):
        c.boards.set_revisit("nowhere", 7)


def test_a_file_from_before_revisits_gets_the_column(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "central.db")
    db.execute("CREATE TABLE board_sites (id TEXT PRIMARY KEY, outlet TEXT NOT NULL, village TEXT NOT NULL, "
               "name TEXT NOT NULL, lat_e7 INTEGER NOT NULL, lon_e7 INTEGER NOT NULL, acc_cm INTEGER, "
               "tol_m REAL NOT NULL, status TEXT NOT NULL, landmark TEXT NOT NULL DEFAULT '', "
               "notes TEXT NOT NULL DEFAULT '', photos TEXT NOT NULL DEFAULT '[]', proposed_by TEXT, "
               "poster TEXT, cond TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL)")
    db.execute("INSERT INTO board_sites (id, outlet, village, name, lat_e7, lon_e7, tol_m, status, "
               "created_at, updated_at) VALUES ('s1','o1','石门村','村口',1,1,50,'installed',1,1)")
    db.commit()
    db.close()
    b = Embedded(tmp_path)
    try:
        boards = Boards(b, clock=lambda: T0)
        Boards(b)  # a second registry on the same file: the column is there already
        boards.set_revisit("s1", 14)
        assert boards.site("s1")["revisit_days"] == 14
        assert boards.schedule_revisits() == []  # due, but nobody has had a job there to send it to
    finally:
        b.close()


def test_a_job_list_carries_the_outlets_device_time_not_the_platforms(tmp_path: Path) -> None:
    """An outlet whose devices' clock is a day ahead of the platform's (the
    simulator's virtual outlets): the list is signed on the devices' clock,
    so the handheld and gateway that check it on theirs find it valid."""
    b = Embedded(tmp_path / "central")
    b.add_outlet("o1", "o1-password-x")
    ahead = T0 + DAY_S
    boards = Boards(b, MASTER, clock=Clock(), device_clock=lambda outlet: ahead if outlet == "o1" else 0.0)
    boards.add_job("survey", "o1", "hh01", village="西江村", jid="bj-1")
    _, cursor, _ = boards.send_jobs("o1", "hh01")
    target, raw = b.pull("o1", cursor - 1, 10)[1][0][:2]
    cmd = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    assert target == "handheld" and cmd["iat"] == int(ahead) and cmd["exp"] > ahead
    # the platform's own clock is the default
    assert Boards(b, MASTER, clock=Clock()).device_clock("o1") == T0
