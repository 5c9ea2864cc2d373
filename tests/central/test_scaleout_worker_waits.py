"""An ingest worker whose database is down when it starts
(``central/scaleout/worker.py``), on the real rig (``central/scaleout/local.py``): it waits,
retrying with a bounded backoff that it logs and counts, and once
PostgreSQL is back it writes everything the log took meanwhile, each event
once. Two ways a start meets the outage: PostgreSQL stopped before the
worker starts, and PostgreSQL going down while the worker makes its tables
(a worker there gave up, and the log filled until someone restarted it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from central.intake import Checked, check_batch
from central.scaleout import ScaleOut, ScaleOutConfig
from central.scaleout.local import LocalCluster
from central.scaleout.schema import SCHEMA_LOCK
from common.uplink_codec import encode_batch
from tests.central.test_contract import PW, events

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Worker:
    """A worker process (as a deployment runs it) and what it says on stderr."""

    proc: subprocess.Popen[str]
    err: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, cfg: ScaleOutConfig) -> Worker:
        proc = subprocess.Popen([sys.executable, "-m", "central.scaleout.worker", cfg.to_json()],
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        w = cls(proc)
        threading.Thread(target=lambda: w.err.extend(proc.stderr or ()), daemon=True).start()
        return w

    def ready(self) -> None:
        """Until it says it is bound and connected (it exits instead if it gave up)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert json.loads(line or "{}") == {"ready": f"worker-{self.proc.pid}"}, "".join(self.err)

    def stop(self) -> dict[str, Any]:
        """SIGTERM; its stats."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, "".join(self.err)
        stats: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return stats


@dataclass
class Outage:
    cfg: ScaleOutConfig
    backend: ScaleOut
    rig: LocalCluster
    batches: list[Checked]

    def stored(self) -> list[str]:
        """Every event id stored, once per row (a fresh connection: the
        front's pooled ones went with the server)."""
        end = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.cfg.pg, autocommit=True) as c:
                    return [r[0] for r in c.execute("SELECT id FROM events WHERE outlet='o1'")]
            except psycopg.OperationalError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)

    def check_every_event_once(self, worker: Worker) -> None:
        self.backend.wait_written(60)
        ids = self.stored()
        assert len(ids) == len(set(ids)) == 500
        assert set(ids) == {eid for c in self.batches for eid in c.ids}
        assert worker.proc.poll() is None, "".join(worker.err)  # still consuming
        stats = worker.stop()
        assert stats["db_waits"] >= 2, stats  # counted
        assert stats["events_new"] + stats["events_held"] >= 500, stats
        assert "database unavailable" in "".join(worker.err)  # logged


@pytest.fixture
def outage(scaleout_rig: LocalCluster) -> Iterator[Outage]:
    ns, dsn = scaleout_rig.namespace("w")
    cfg = ScaleOutConfig(scaleout_rig.nats.urls, dsn, ns, ack_wait_s=2.0)
    backend = ScaleOut(cfg)  # the front: tables made, the log ready
    backend.add_outlet("o1", PW)
    batches = []
    for b in range(10):
        eb = encode_batch("o1", "bulk", events("lk01", 50, start=1 + b * 50))
        batches.append(check_batch("o1", eb.id, eb.body))
    again = encode_batch("o1", "bulk", events("lk01", 25, start=1))  # a resend under a new batch id
    batches.append(check_batch("o1", again.id, again.body))
    try:
        yield Outage(cfg, backend, scaleout_rig, batches)
    finally:
        pg = scaleout_rig.pg
        if pg.proc is None or pg.proc.poll() is not None:
            pg.start_server()  # the session's database stays up for the next test
        backend.bridge.run(backend.js.delete_stream(cfg.stream), 10)
        backend.close()


def _run(outage: Outage, between: Callable[[Worker], None]) -> None:
    """Half the batches logged with the database up, PostgreSQL stopped, the
    rest logged; a worker started and ``between`` run (which leaves the
    database down); PostgreSQL started again; every event stored once."""
    pg = outage.rig.pg
    for c in outage.batches[:5]:
        outage.backend.store("o1", c)
    worker: Worker | None = None
    try:
        worker = Worker.start(outage.cfg)
        between(worker)
        for c in outage.batches[5:]:
            outage.backend.store("o1", c)  # the log takes them while the database is down
        time.sleep(3.0)  # several tries into a database that is down
        assert worker.proc.poll() is None, "".join(worker.err)  # waiting, not given up
        pg.start_server()
        worker.ready()
        outage.check_every_event_once(worker)
    finally:
        if worker is not None and worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(10)


def test_a_worker_started_while_postgres_is_stopped_waits_and_then_stores_every_event_once(
        outage: Outage) -> None:
    outage.rig.pg.halt()
    _run(outage, lambda w: None)


def test_a_worker_whose_database_goes_down_while_it_makes_its_tables_waits_for_it(
        outage: Outage) -> None:
    """The worker has connected and waits for the schema lock (another
    process holds it, as a front starting at the same time does) when the
    database goes down under it."""
    holder = psycopg.connect(outage.cfg.pg, autocommit=True)

    def down_while_making_tables(worker: Worker) -> None:
        holder.execute("BEGIN")
        holder.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
        end = time.monotonic() + 30
        while not holder.execute("SELECT count(*) FROM pg_locks WHERE locktype='advisory' AND NOT granted"
                                 ).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < end and worker.proc.poll() is None, "".join(worker.err)
            time.sleep(0.05)
        outage.rig.pg.halt()

    try:
        _run(outage, down_while_making_tables)
    finally:
        holder.close()
