"""Faults of the scale-out backend on its real parts (``central/scaleout/local.py``): a NATS
node (the stream's leader) SIGKILLed while gateways upload through the HTTPS
front, an ingest worker process SIGKILLed mid-stream (with events re-batched
under new batch ids, which only the workers' ON CONFLICT can catch), and
PostgreSQL SIGKILLed and restarted while gateways upload. In each, every
event acked to a gateway ends up in PostgreSQL exactly once, and a gateway
sees nothing but retries (a 5xx or a dropped connection, then the same batch
again), never a refusal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from central import front
from central.intake import check_batch
from central.scaleout import ScaleOut, ScaleOutConfig
from central.scaleout.local import LocalCluster
from central.scaleout.worker import WorkerThread
from common.uplink_codec import encode_batch
from tests.central.conftest import CentralUnderTest, _held_pg
from tests.central.test_contract import PW, Client, events

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    cfg: ScaleOutConfig
    backend: ScaleOut
    cut: CentralUnderTest


@pytest.fixture
def stack(scaleout_rig: LocalCluster, central_pki: Any) -> Iterator[Stack]:
    ns, dsn = scaleout_rig.namespace("f")
    cfg = ScaleOutConfig(scaleout_rig.nats.urls, dsn, ns, ack_wait_s=2.0)
    backend = ScaleOut(cfg)
    srv, _ = front.serve(backend, "127.0.0.1", 0, str(central_pki.server.cert), str(central_pki.server.key))
    cut = CentralUnderTest("scaleout", f"https://127.0.0.1:{srv.address[1]}/v1/batches", central_pki.ca,
                           backend.add_outlet, backend.retire_outlet, backend.push_command, backend.count,
                           backend.wait_written, lambda o: _held_pg(backend, o), backend)
    try:
        yield Stack(cfg, backend, cut)
    finally:
        srv.stop()
        for node in scaleout_rig.nats.nodes:  # the session's cluster stays whole for the next test
            if not node.alive:
                node.start()
        try:
            backend.bridge.run(backend.js.delete_stream(cfg.stream), 10)
        finally:
            backend.close()


def stored_ids(backend: ScaleOut) -> tuple[int, set[str]]:
    with backend.pool.tx() as c:
        rows = c.execute("SELECT count(*) FROM events").fetchone()
        ids = {r[0] for r in c.execute("SELECT id FROM events")}
    return int(rows[0]), ids


def test_a_nats_node_killed_while_gateways_upload_loses_and_doubles_nothing(
        stack: Stack, scaleout_rig: LocalCluster) -> None:
    worker = WorkerThread(stack.cfg, "w1")
    gateways, batches, per = 3, 30, 100
    for g in range(gateways):
        stack.cut.add_outlet(f"o{g}", PW)
    acked: dict[int, list[str]] = {g: [] for g in range(gateways)}
    seen: dict[int, list[int | str]] = {g: [] for g in range(gateways)}
    first_acks = threading.Event()
    kill_done = threading.Event()

    def gateway(g: int) -> None:
        cl = Client(stack.cut, outlet=f"o{g}")
        deadline = time.monotonic() + 120
        for b in range(batches):
            rows = events(f"lk{g:02d}", per, start=1 + b * per, inc=f"{g + 1:08x}")
            while time.monotonic() < deadline:
                try:
                    status, _, _ = cl.batch(rows)
                except OSError as e:  # the front's thread busy past the client timeout, a reset
                    seen[g].append(type(e).__name__)
                    cl.conn.close()
                    continue
                seen[g].append(status)
                if status == 200:
                    acked[g].extend(eid for eid, _ in rows)
                    break
                if status < 500:
                    return  # refused: never expected, the assertions below say so
                time.sleep(0.1)
            if b == 5:
                first_acks.set()
            if b == 15:
                kill_done.wait(30)  # a third of each gateway's batches go after the kill

    def killer() -> None:
        first_acks.wait(60)
        info = stack.backend.bridge.run(stack.backend.js.stream_info(stack.cfg.stream), 10)
        leader = info.cluster.leader if info.cluster else None
        node = next(n for n in scaleout_rig.nats.nodes if n.name == leader)
        node.kill()  # the stream's leader: a new one must be elected while batches arrive
        kill_done.set()

    threads = [threading.Thread(target=gateway, args=(g,)) for g in range(gateways)]
    threads.append(threading.Thread(target=killer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    try:
        assert kill_done.is_set()
        assert sum(not n.alive for n in scaleout_rig.nats.nodes) == 1
        for g in range(gateways):
            # only successes and retries: nothing refused
            assert all(s == 200 or isinstance(s, str) or s >= 500 for s in seen[g]), seen[g]
            assert len(acked[g]) == batches * per, f"gateway {g} got {len(acked[g])} acked"
        stack.backend.wait_written(60)
        rows, ids = stored_ids(stack.backend)
        every = {eid for a in acked.values() for eid in a}
        assert ids == every  # none lost
        assert rows == len(every) == gateways * batches * per  # none twice
    finally:
        worker.stop()


def _worker_proc(cfg: ScaleOutConfig) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "central.scaleout.worker", cfg.to_json()],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)


def test_a_worker_killed_mid_stream_is_replaced_and_nothing_is_lost_or_doubled(stack: Stack) -> None:
    backend = stack.backend
    backend.add_outlet("o1", PW)
    n_batches, per = 120, 200
    checked = []
    for b in range(n_batches):
        eb = encode_batch("o1", "bulk", events("lk01", per, start=1 + b * per))
        checked.append(check_batch("o1", eb.id, eb.body))
    for b in range(0, n_batches, 10):
        # A gateway that lost acks and re-batched (its adaptive batch size
        # shrank): events already written, under another batch id, which
        # JetStream's dedupe does not catch; the workers' ON CONFLICT must.
        again = encode_batch("o1", "bulk", events("lk01", per // 2, start=1 + b * per))
        checked.append(check_batch("o1", again.id, again.body))
    w1 = _worker_proc(stack.cfg)
    published = threading.Event()

    def publisher() -> None:
        for c in checked:
            backend.store("o1", c)
            # a steady stream over about three seconds: the kill below must come while it
            # still runs (one worker wrote all 24,000 events before a 5 ms stream was seen)
            time.sleep(0.02)
        published.set()

    pub = threading.Thread(target=publisher)
    pub.start()
    w2 = None
    try:
        end = time.monotonic() + 60
        while backend.count("o1") < n_batches * per // 4 and time.monotonic() < end:
            time.sleep(0.02)
        mid = backend.count("o1")
        assert 0 < mid < n_batches * per
        w1.send_signal(signal.SIGKILL)  # mid-stream: its fetched, unacked messages stay with JetStream
        w1.wait(10)
        time.sleep(0.5)
        assert backend.count("o1") < n_batches * per  # still work left for the next worker
        w2 = _worker_proc(stack.cfg)
        pub.join(60)
        assert published.is_set()
        backend.wait_written(90)
        rows, ids = stored_ids(backend)
        assert rows == len(ids) == n_batches * per
        assert ids == {eid for c in checked for eid in c.ids}
        assert w2.poll() is None  # the replacement worker is still running (nothing crashed it)
    finally:
        pub.join(60)
        for w in (w1, w2):
            if w is not None and w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.communicate(timeout=30)


def test_postgres_killed_and_restarted_while_gateways_upload_loses_and_doubles_nothing(
        stack: Stack, scaleout_rig: LocalCluster) -> None:
    worker = WorkerThread(stack.cfg, "w1")
    gateways, batches, per = 2, 30, 100
    for g in range(gateways):
        stack.cut.add_outlet(f"p{g}", PW)
    acked: dict[int, list[str]] = {g: [] for g in range(gateways)}
    seen: dict[int, list[int | str]] = {g: [] for g in range(gateways)}
    started = threading.Event()
    restarted = threading.Event()

    def gateway(g: int) -> None:
        cl = Client(stack.cut, outlet=f"p{g}")
        deadline = time.monotonic() + 120
        for b in range(batches):
            rows = events(f"sc{g:02d}", per, start=1 + b * per, inc=f"{g + 17:08x}")
            while time.monotonic() < deadline:
                try:
                    status, _, _ = cl.batch(rows)
                except OSError as e:
                    seen[g].append(type(e).__name__)
                    cl.conn.close()
                    continue
                seen[g].append(status)
                if status == 200:
                    acked[g].extend(eid for eid, _ in rows)
                    break
                if status < 500:
                    return
                time.sleep(0.1)
            if b == 5:
                started.set()
            if b == 15:
                restarted.wait(30)

    def killer() -> None:
        started.wait(60)
        pg = scaleout_rig.pg
        pg.kill()  # the postmaster and its backends, as if the database host crashed
        time.sleep(1.0)  # gateways keep uploading into a dead database meanwhile
        pg.start_server()  # crash recovery from the WAL, same data folder and port
        restarted.set()

    threads = [threading.Thread(target=gateway, args=(g,)) for g in range(gateways)]
    threads.append(threading.Thread(target=killer))
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert restarted.is_set()
        for g in range(gateways):
            assert all(s == 200 or isinstance(s, str) or s >= 500 for s in seen[g]), seen[g]
            assert len(acked[g]) == batches * per, f"gateway {g} got {len(acked[g])} acked"
        assert any(s != 200 for g in seen for s in seen[g])  # the outage was seen, as retries
        stack.backend.wait_written(60)
        rows, ids = stored_ids(stack.backend)
        every = {eid for a in acked.values() for eid in a}
        assert ids == every
        assert rows == len(every) == gateways * batches * per
    finally:
        pg_proc = scaleout_rig.pg.proc
        if not restarted.is_set() and pg_proc is not None and pg_proc.poll() is not None:
            scaleout_rig.pg.start_server()  # the session's database stays up for the next test
        worker.stop()
