"""The ingest worker: a stateless writer from the log into PostgreSQL.

It holds nothing a restart loses: it pulls a group of messages from the
shared durable consumer, writes all their rows in one transaction (events and
quarantined events ``ON CONFLICT (outlet, id) DO NOTHING``, so a redelivered
message is harmless; the outlet is in the key because device names, and so
event ids, repeat from outlet to outlet), commits, and only then acks the
messages. A worker creates (or upgrades, ``schema.MIGRATE``) the tables
before it writes, as a front does, so the order they start in does not matter,
and waits for the database when it is down (at start, or after a write
failed), with a bounded backoff that it logs and counts. A worker killed
before its ack leaves the messages to JetStream, which hands them to another
(or the restarted) worker after ``ack_wait``. Add workers to write faster;
they share the consumer's messages between them. Inside one worker, two
lanes (fetch -> write -> ack loops) overlap one's commit with the other's
fetch.

Run one per process with ``python -m central.scaleout.worker CONFIG_JSON``
(one JSON line on stdout once it is bound and connected, its stats as
another on SIGTERM), or in a thread with
``WorkerThread`` (tests, a single-process deployment).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass

import nats
import psycopg
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from central.scaleout import log as jlog
from central.scaleout import record
from central.scaleout.bridge import LoopThread
from central.scaleout.config import ScaleOutConfig
from central.scaleout.schema import (
    INDEXES,
    INSERT_BATCHES,
    INSERT_EVENTS,
    INSERT_QUARANTINE,
    MIGRATE,
    SCHEMA,
    SCHEMA_LOCK,
)
from common.logs import get
from common.text import beside, pick_lang

log = get(__name__)
TEXT = beside(__file__)

FETCH = 64  # messages per transaction at most
LANES = 2  # fetch/write loops per worker (see Worker._lane)
# Waiting for the database (``Worker._db``): the first retry soon, then
# doubling up to the cap, so a database down for upkeep is not hammered
# and one that comes back is found within the cap.
WAIT_FIRST_S = 0.2
WAIT_MAX_S = 5.0


@dataclass
class Stats:
    messages: int = 0
    events_new: int = 0
    events_held: int = 0  # already in the store: a redelivery or a resend
    quarantined: int = 0
    parked: int = 0  # messages that were not batch records (terminated, counted)
    retries: int = 0
    db_waits: int = 0  # tries that found the database unavailable (at start or after a failed write)


class Worker:
    def __init__(self, cfg: ScaleOutConfig, name: str = "worker", lanes: int = LANES) -> None:
        self.cfg = cfg
        self.name = name
        self.lanes = lanes
        self.stats = Stats()
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()  # bound to the consumer and connected to the database

    def stop(self) -> None:
        self._stop.set()

    async def _db(self, make_tables: bool = False) -> psycopg.AsyncConnection:
        """A connection to the database, waited for: a worker started (or
        left) while PostgreSQL is down for upkeep or restarting keeps trying,
        with a bounded backoff, logged and counted (``Stats.db_waits``),
        and consumes once it is back; the log keeps the messages meanwhile.
        ``make_tables``: create (or upgrade) the tables first, which a
        database going away mid-way fails too and is tried again the same way.
        Raises only when the worker is told to stop while it waits."""
        delay = WAIT_FIRST_S
        while True:
            db: psycopg.AsyncConnection | None = None
            try:
                db = await psycopg.AsyncConnection.connect(self.cfg.pg, autocommit=True, connect_timeout=5)
                if make_tables:
                    async with db.transaction():
                        await db.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
                        there = [t for t in sorted({ix.table for ix in INDEXES})
                                 if (await (await db.execute("SELECT to_regclass(%s)", (t,))).fetchone()
                                     or [None])[0] is not None]
                        await db.execute(SCHEMA)
                        await db.execute(MIGRATE)
                        # the indexes of the tables just made; those missing on tables that were
                        # there, a front builds concurrently (PgStore.build_concurrently)
                        for ix in INDEXES:
                            if ix.table not in there:
                                await db.execute(ix.create())
                return db
            except psycopg.OperationalError as e:
                if db is not None:
                    await db.close()
                if self._stop.is_set():
                    raise
                self.stats.db_waits += 1
                log.warning("%s: database unavailable (try %d), next try in %.1fs: %s", self.name,
                            self.stats.db_waits, delay, str(e).strip().splitlines()[0] if str(e) else e)
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, WAIT_MAX_S)

    async def run(self) -> None:
        nc = await jlog.connect(self.cfg, f"central-{self.name}")
        try:
            js = nc.jetstream(timeout=5)
            await jlog.ensure(js, self.cfg)
            lanes_ready = [asyncio.Event() for _ in range(self.lanes)]
            tasks = [asyncio.create_task(self._lane(js, i, lanes_ready[i])) for i in range(self.lanes)]
            for ev in lanes_ready:
                waiter = asyncio.create_task(ev.wait())
                await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                for t in tasks:
                    if t.done():
                        t.result()  # a lane that failed to start fails the worker
            if not self._stop.is_set():  # not stopped while it waited for the database
                self.ready.set()
            await asyncio.gather(*tasks)
        finally:
            await nc.close()

    async def _lane(self, js: JetStreamContext, lane: int, ready: asyncio.Event) -> None:
        """One fetch -> write -> ack loop with its own subscription and
        database connection. A worker runs ``lanes`` of them so that one
        lane's commit wait overlaps another's fetch: with live traffic a
        fetch brings few messages and a lone loop waits on commits."""
        sub = await js.pull_subscribe_bind(durable=self.cfg.durable, stream=self.cfg.stream)
        try:
            db = await self._db(make_tables=True)
        except psycopg.OperationalError:
            if self._stop.is_set():  # told to stop while it waited: nothing was fetched
                await sub.unsubscribe()
                return
            raise
        ready.set()
        try:
            while not self._stop.is_set():
                try:
                    msgs = await sub.fetch(FETCH, timeout=0.5)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except nats.errors.Error as e:  # a node down, the consumer's leader moving
                    self.stats.retries += 1
                    log.debug("%s/%d: fetch: %r", self.name, lane, e)
                    await asyncio.sleep(0.1)
                    continue
                if not msgs:
                    continue
                try:
                    await self._write(db, msgs)
                except psycopg.OperationalError as e:
                    # Not written: hand the messages back for a prompt retry.
                    log.warning("%s/%d: write failed, will retry: %s", self.name, lane, e)
                    self.stats.retries += 1
                    for m in msgs:
                        try:
                            await m.nak()
                        except nats.errors.Error:
                            pass
                    await db.close()
                    try:
                        db = await self._db()
                    except psycopg.OperationalError:
                        return  # told to stop while it waited: the messages went back
                    continue
                for m in msgs:
                    try:
                        await m.ack()
                    except nats.errors.Error as e:  # redelivered later; the rows are idempotent
                        log.debug("%s/%d: ack: %r", self.name, lane, e)
        finally:
            try:
                await sub.unsubscribe()  # the inbox only; the durable consumer stays
            except (nats.errors.Error, ValueError):
                pass
            await db.close()

    async def _write(self, db: psycopg.AsyncConnection, msgs: list[Msg]) -> None:
        now = time.time()
        # by (outlet, id): one fetch may hold two outlets' events with the same id
        ev: dict[tuple[str, str], tuple[str, str, str, str, str, int, bytes, str, float]] = {}
        qu: dict[tuple[str, str], tuple[str, str, str, bytes, float]] = {}
        ba: dict[tuple[str, str], tuple[str, str, str, int, int, int, float]] = {}
        for m in msgs:
            try:
                p = record.unpack(m.data)
            except ValueError as e:
                log.error("%s: parked a message that is not a batch record: %s", self.name, e)
                self.stats.parked += 1
                await m.term()
                continue
            for eid, dev, typ, cls, ts, payload in p.good:
                ev[(p.outlet, eid)] = (eid, p.outlet, dev, typ, cls, ts, payload, p.batch, now)
            for eid, reason, payload in p.quarantined:
                qu[(p.outlet, eid)] = (eid, p.outlet, reason, payload, now)
            ba[(p.outlet, p.batch)] = (p.batch, p.outlet, p.lane, p.n, p.parts, p.wire_bytes, now)
        async with db.transaction():
            new = 0
            if ev:
                cur = await db.execute(INSERT_EVENTS, [list(c) for c in zip(*ev.values(), strict=True)])
                new = cur.rowcount
            if qu:
                await db.execute(INSERT_QUARANTINE, [list(c) for c in zip(*qu.values(), strict=True)])
            if ba:
                await db.execute(INSERT_BATCHES, [list(c) for c in zip(*ba.values(), strict=True)])
        self.stats.messages += len(msgs)
        self.stats.events_new += new
        self.stats.events_held += len(ev) - new
        self.stats.quarantined += len(qu)


class WorkerThread:
    """A worker on its own event loop thread, for tests and one-process use."""

    def __init__(self, cfg: ScaleOutConfig, name: str = "worker") -> None:
        self.worker = Worker(cfg, name)
        self.bridge = LoopThread(f"central-{name}")
        self.future = asyncio.run_coroutine_threadsafe(self.worker.run(), self.bridge.loop)

    def stop(self) -> None:
        self.bridge.loop.call_soon_threadsafe(self.worker.stop)
        try:
            self.future.result(15)
        finally:
            self.bridge.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(TEXT.t("usage.worker", pick_lang()), file=sys.stderr)
        return 2
    try:
        cfg = ScaleOutConfig.from_json(args[0])
    except (ValueError, TypeError) as e:
        print(TEXT.t("bad_config", pick_lang(), detail=str(e)), file=sys.stderr)
        return 2
    w = Worker(cfg, f"worker-{os.getpid()}")

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, w.stop)
        task = asyncio.create_task(w.run())
        ready = asyncio.create_task(w.ready.wait())
        await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
        if w.ready.is_set():
            print(json.dumps({"ready": w.name}), flush=True)  # a supervisor may wait for this line
        ready.cancel()
        await task

    asyncio.run(go())
    print(json.dumps(asdict(w.stats)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
