"""Central implementations under the contract suite (``test_contract.py``).

Each parameter of ``central`` is one implementation of
docs/central-contract.md behind its real HTTPS front, with the hooks the
suite needs that are not part of the contract (registering an outlet,
queueing a command, counting stored events, the registry itself). Each front
holds the session's master key ``MASTER``, so ``POST /v1/keys`` is served by
both. Add an implementation here and the whole suite runs against it.

``scaleout`` is the NATS JetStream + PostgreSQL backend on the session's real
cluster and database (``central/scaleout/local.py``), with one ingest worker thread; it is
marked slow (the parts start once per session, each test gets its own stream
and database).

``duty_store`` is each backend without its front, for the platform duties
that run on both (``central/duty_store.py``): revocations, clerk requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from central import front
from central.embedded import Embedded
from central.intake import check_batch
from central.registry import Registry
from central.scaleout.local import LocalCluster
from common.pki import make_outlet_pki
from common.uplink_codec import encode_batch


@dataclass
class CentralUnderTest:
    name: str
    url: str  # the batch URL, as a gateway's [upstream] url
    ca: Path
    add_outlet: Callable[[str, str], None]
    retire_outlet: Callable[[str], Any]
    push_command: Callable[[str, str, dict[str, Any]], int]
    count: Callable[[str], int]  # events stored for an outlet, once each
    settle: Callable[[], None]  # wait until what was acked is queryable (a no-op when synchronous)
    held: Callable[[str], dict[str, bytes]]  # an outlet's stored events: id -> payload
    registry: Registry  # outlets and devices, as the operator's commands write them


MASTER = bytes(range(32))  # the platform master key every front under test holds


def _held_pg(scale: Any, outlet: str) -> dict[str, bytes]:
    with scale.pool.tx() as c:
        rows = c.execute("SELECT id, payload FROM events WHERE outlet=%s", (outlet,)).fetchall()
    return {eid: bytes(p) for eid, p in rows}


@pytest.fixture(scope="session")
def central_pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_outlet_pki(tmp_path_factory.mktemp("central-pki"), "central")


@pytest.fixture(scope="session")
def scaleout_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-node NATS JetStream cluster and a PostgreSQL server, for the session."""
    rig = LocalCluster.start(tmp_path_factory.mktemp("scaleout"))
    try:
        yield rig
    finally:
        rig.stop()


@pytest.fixture(params=["embedded", pytest.param("scaleout", marks=pytest.mark.slow)])
def central(request: pytest.FixtureRequest, tmp_path: Path, central_pki: Any) -> Iterator[CentralUnderTest]:
    if request.param == "embedded":
        backend = Embedded(tmp_path / "central")
        srv, _ = front.serve(backend, "127.0.0.1", 0, str(central_pki.server.cert),
                             str(central_pki.server.key), master=MASTER)
        try:
            yield CentralUnderTest(
                "embedded", f"https://127.0.0.1:{srv.address[1]}/v1/batches", central_pki.ca,
                backend.add_outlet, backend.retire_outlet, backend.push_command, backend.count,
                lambda: None,
                lambda o: {eid: bytes(p) for _, _, eid, p, _ in backend.events_since(outlet=o)}, backend)
        finally:
            srv.stop()
            backend.close()
    elif request.param == "scaleout":
        from central.scaleout import ScaleOut, ScaleOutConfig
        from central.scaleout.worker import WorkerThread

        rig: LocalCluster = request.getfixturevalue("scaleout_rig")
        ns, dsn = rig.namespace()
        cfg = ScaleOutConfig(rig.nats.urls, dsn, ns, ack_wait_s=5.0)
        scale = ScaleOut(cfg)
        worker = WorkerThread(cfg)
        srv, _ = front.serve(scale, "127.0.0.1", 0, str(central_pki.server.cert), str(central_pki.server.key),
                             master=MASTER)
        try:
            yield CentralUnderTest(
                "scaleout", f"https://127.0.0.1:{srv.address[1]}/v1/batches", central_pki.ca,
                scale.add_outlet, scale.retire_outlet, scale.push_command, scale.count,
                scale.wait_written, lambda o: _held_pg(scale, o), scale)
        finally:
            srv.stop()
            worker.stop()
            scale.bridge.run(scale.js.delete_stream(cfg.stream), 10)
            scale.close()


@dataclass
class StoreUnderTest:
    """A backend the duties run on (``central.duty_store.DutyStore`` and
    ``central.backend.Backend``), and how to store a batch in it so that the
    duties see it at once (on scale-out: through the log and a worker)."""

    name: str
    b: Any
    settle: Callable[[], None]

    def store(self, outlet: str, *rows: tuple[str, bytes]) -> list[str]:
        enc = encode_batch(outlet, "bulk", list(rows))
        self.b.store(outlet, check_batch(outlet, enc.id, enc.body))
        self.settle()
        return [eid for eid, _ in rows]


@pytest.fixture(params=["embedded", pytest.param("scaleout", marks=pytest.mark.slow)])
def duty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    if request.param == "embedded":
        backend = Embedded(tmp_path / "central")
        try:
            yield StoreUnderTest("embedded", backend, lambda: None)
        finally:
            backend.close()
        return
    from central.scaleout import ScaleOut, ScaleOutConfig
    from central.scaleout.worker import WorkerThread

    rig: LocalCluster = request.getfixturevalue("scaleout_rig")
    ns, dsn = rig.namespace("d")
    cfg = ScaleOutConfig(rig.nats.urls, dsn, ns, ack_wait_s=5.0)
    scale = ScaleOut(cfg)
    worker = WorkerThread(cfg)
    try:
        yield StoreUnderTest("scaleout", scale, scale.wait_written)
    finally:
        worker.stop()
        scale.bridge.run(scale.js.delete_stream(cfg.stream), 10)
        scale.close()
