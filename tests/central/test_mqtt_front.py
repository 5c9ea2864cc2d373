"""Gateways' MQTT uplink straight into the scale-out backend: the gateway's
own MQTT carrier (``gateway/uplink/mqtt.py``) over TLS to nats-server's MQTT
listener on a real 3-node cluster (``central/scaleout/local.py``, with per-outlet NATS users
from ``central/scaleout/nats_auth.py``), the MQTT front
(``central/scaleout/mqtt_front.py``) and an ingest worker writing into a
real PostgreSQL. Batches end up stored once, a replay too; another outlet's
topic is refused by nats-server's permissions; malformed, oversized,
mislabelled and retired-outlet batches are refused with a reason on the ack
topic and counted; commands come down on a pull; and a NATS node SIGKILLed
mid-run loses nothing that was acked.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from central.scaleout import ScaleOut, ScaleOutConfig
from central.scaleout.local import LocalCluster, MqttListener, NatsCluster
from central.scaleout.mqtt_front import MQTT_MAX_BATCH, MqttFrontThread
from central.scaleout.nats_auth import render
from central.scaleout.worker import WorkerThread
from common.uplink_codec import EncodedBatch, encode_batch
from gateway.uplink.mqtt import MqttTransport
from gateway.uplink.transport import TransportError, tls_context
from tests.central.test_contract import events

pytestmark = pytest.mark.slow

PASSWORDS = {"o1": "o1-mqtt-pw", "o2": "o2-mqtt-pw", "o3": "o3-mqtt-pw", "o4": "o4-mqtt-pw"}


@dataclass
class Stack:
    nats: NatsCluster
    cfg: ScaleOutConfig
    backend: ScaleOut
    front: MqttFrontThread
    ca: Path

    def transport(self, outlet: str, node: int = 0, user: str | None = None, channel: int = 0,
                  timeout: float = 10.0) -> MqttTransport:
        user = user or outlet
        cid = f"t-{outlet}-{user}-{channel}-{os.urandom(3).hex()}"
        return MqttTransport(self.nats.nodes[node].mqtt_url, outlet, tls_context(str(self.ca)), timeout,
                             user, PASSWORDS[user], client_id=cid, channel=channel)

    def counts(self) -> dict[str, int]:
        return dict(self.front.front.counts)


@pytest.fixture(scope="module")
def stack(scaleout_rig: LocalCluster, central_pki: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    auth = render("pe-up/v1", PASSWORDS)
    with ExitStack() as undo:  # every part stopped, even when one's stop fails
        cluster = NatsCluster.start(tmp_path_factory.mktemp("mqtt-nats"), 3,
                                    MqttListener(central_pki.server.cert, central_pki.server.key, auth))
        undo.callback(cluster.stop)
        _, dsn = scaleout_rig.namespace("m")
        cfg = ScaleOutConfig(cluster.urls, dsn, "m", ack_wait_s=3.0)
        backend = ScaleOut(cfg)
        undo.callback(backend.close)
        for outlet in ("o1", "o2", "o3", "o4"):
            backend.add_outlet(outlet, "https-pw-unused")
        backend.retire_outlet("o3")  # still a NATS user: the registry must refuse it
        worker = WorkerThread(cfg, "w-mqtt")
        undo.callback(worker.stop)
        st = Stack(cluster, cfg, backend, MqttFrontThread(cfg, backend), central_pki.ca)
        undo.callback(lambda: st.front.stop())  # a test may have started another
        yield st


def batches_of(backend: ScaleOut, outlet: str) -> int:
    with backend.pool.tx() as c:
        row = c.execute("SELECT count(*) FROM batches WHERE outlet=%s", (outlet,)).fetchone()
    return int(row[0]) if row else 0


def test_a_gateways_batches_over_mqtt_are_stored_once_and_a_replay_too(stack: Stack) -> None:
    tr = stack.transport("o1")
    sent = [encode_batch("o1", "ev", events("lk01", 50, start=1 + 50 * i)) for i in range(5)]
    try:
        for b in sent:
            ack = tr.send(b)
            assert ack.batch == b.id and ack.acked_of(b.ids) == b.ids and not ack.rejected
    finally:
        tr.close()
    again = stack.transport("o1")  # a gateway restarted: the same batch once more
    try:
        ack = again.send(sent[0])
        assert ack.acked_of(sent[0].ids) == sent[0].ids
    finally:
        again.close()
    stack.backend.wait_written()
    assert stack.backend.count("o1") == 250
    assert batches_of(stack.backend, "o1") == 5
    held = stack.backend.event("o1", sent[2].ids[7])
    assert held is not None and held == dict(events("lk01", 50, start=101))[sent[2].ids[7]]


def test_another_outlets_topic_is_refused_by_nats(stack: Stack) -> None:
    forged = encode_batch("o2", "ev", events("lk09", 20))
    # o1's login subscribing to o2's answers: the SUBACK says no
    with pytest.raises(TransportError, match="subscription refused"):
        stack.transport("o2", user="o1", timeout=5).probe()
    # o1's login publishing on o2's batch topic: PUBACK, then the server drops it
    ctx = ssl.create_default_context(cafile=str(stack.ca))
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="forger", protocol=mqtt.MQTTv311)
    c.tls_set_context(ctx)
    c.username_pw_set("o1", PASSWORDS["o1"])
    up = threading.Event()
    c.on_connect = lambda *a: up.set()
    c.connect("127.0.0.1", stack.nats.nodes[0].mqtt_port)
    c.loop_start()
    try:
        assert up.wait(10)
        info = c.publish(f"pe-up/v1/o2/batch/0/{forged.id}", forged.body, qos=1)
        info.wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()
    log = stack.nats.nodes[0].log
    end = time.monotonic() + 10
    while "Publish Violation" not in log.read_text() and time.monotonic() < end:
        time.sleep(0.1)
    assert f'User "o1", Subject "pe-up.v1.o2.batch.0.{forged.id}"' in log.read_text()
    stack.backend.wait_written()
    assert stack.backend.count("o2") == 0 and batches_of(stack.backend, "o2") == 0
    # o2's own login sends the same batch: taken
    tr = stack.transport("o2")
    try:
        assert tr.send(forged).acked_of(forged.ids) == forged.ids
    finally:
        tr.close()
    stack.backend.wait_written()
    assert stack.backend.count("o2") == 20


def test_bad_batches_are_refused_with_a_reason_on_the_ack_topic_and_counted(stack: Stack) -> None:
    before = stack.counts()
    tr = stack.transport("o4", channel=1)
    try:
        junk = EncodedBatch("0" * 32, "ev", [], b"not deflate at all", 18)
        ack = tr.send(junk)
        assert ack.acked_of(["x"]) == [] and ack.rejected[junk.id].startswith("bad_batch: ")

        big = EncodedBatch("1" * 32, "ev", [], os.urandom(MQTT_MAX_BATCH + 1000), 0)
        ack = tr.send(big)
        assert ack.rejected[big.id].startswith("too_large: ")

        other = encode_batch("o2", "ev", events("lk01", 3))  # o2's batch on o4's own topic
        ack = tr.send(other)
        assert ack.acked_of(other.ids) == [] and "arrived for o4" in ack.rejected[other.id]
    finally:
        tr.close()
    retired = stack.transport("o3")
    try:
        b = encode_batch("o3", "ev", events("lk01", 3))
        ack = retired.send(b)
        assert ack.acked_of(b.ids) == [] and ack.rejected[b.id].startswith("unknown_outlet: ")
    finally:
        retired.close()
    after = stack.counts()
    assert after.get("bad_batch", 0) - before.get("bad_batch", 0) == 2
    assert after.get("too_large", 0) - before.get("too_large", 0) == 1
    assert after.get("unknown_outlet", 0) - before.get("unknown_outlet", 0) == 1
    stack.backend.wait_written()
    assert stack.backend.count("o4") == 0 and stack.backend.count("o3") == 0


def test_a_batch_sent_while_no_mqtt_front_runs_waits_in_the_log(stack: Stack) -> None:
    """The front stopped: the gateway's batch is captured by the stream and
    its wait times out; a front started later takes it, and the gateway's
    resend is acked without a second copy."""
    stack.front.stop()
    b = encode_batch("o4", "ev", events("wq01", 30))
    tr = stack.transport("o4", timeout=20)
    try:
        # connected first, with time to spare: on a loaded box the 2 s could
        # pass before the publish, and the log would hold nothing to take later
        tr.probe()
        tr.timeout_s = 2  # then the ack wait alone is short: no front answers
        with pytest.raises(TransportError) as e:
            tr.send(b)
        assert e.value.reason == "timeout"
    finally:
        tr.close()
    stack.front = MqttFrontThread(stack.cfg, stack.backend)
    stack.backend.wait_written(30)
    end = time.monotonic() + 20
    while stack.backend.count("o4") < 30 and time.monotonic() < end:
        time.sleep(0.1)
    assert stack.backend.count("o4") == 30  # taken from the log, before any resend
    tr = stack.transport("o4")
    try:
        assert tr.send(b).acked_of(b.ids) == b.ids
    finally:
        tr.close()
    stack.backend.wait_written()
    assert stack.backend.count("o4") == 30 and batches_of(stack.backend, "o4") == 1


def test_commands_come_down_on_a_pull_over_mqtt(stack: Stack) -> None:
    import json

    cursors = [stack.backend.push_command("o4", "locker", {"id": f"c{i}", "dev": "lk01", "op": "open"})
               for i in range(3)]
    tr = stack.transport("o4")
    try:
        down = tr.pull(0)
        assert [(k, json.loads(c)["id"]) for k, c in down.commands] == [("locker", f"c{i}") for i in range(3)]
        assert down.cursor == cursors[-1] and not down.more
        assert tr.pull(down.cursor).commands == []
    finally:
        tr.close()


def test_the_gateways_syncer_drains_its_store_over_mqtt_into_postgresql(stack: Stack, tmp_path: Path) -> None:
    """The gateway's own uplink (``gateway/uplink/sync.py``: its SQLite
    event store, batching, 2 connections in flight, the MQTT carrier) with
    ``[upstream] url`` at nats-server's MQTT port: everything it holds is
    marked synced and stored at the platform once; the rate is printed."""
    from tests.gateway.test_sync import event, fill, syncing, unsynced_ids

    n = 20_000
    db = tmp_path / "gw.sqlite"
    ids = set(fill(db, [event(f"sy{d:02d}", seq) for d in range(4) for seq in range(1, n // 4 + 1)]))
    upstream = {"url": stack.nats.nodes[1].mqtt_url, "username": "o1", "password": PASSWORDS["o1"],
                "ca_file": str(stack.ca), "batch_max_age_s": 0.1, "timeout_s": 10.0, "max_in_flight": 2}
    start = time.monotonic()
    with syncing(db, upstream):
        end = time.monotonic() + 240
        while unsynced_ids(db) and time.monotonic() < end:
            time.sleep(0.2)
        acked_s = time.monotonic() - start
    assert not unsynced_ids(db)
    stack.backend.wait_written(60)
    stored_s = time.monotonic() - start
    with stack.backend.pool.tx() as c:
        held = {r[0] for r in c.execute("SELECT id FROM events WHERE outlet='o1' AND device LIKE 'sy%'")}
    assert held == ids
    print(f"mqtt_syncer events={n} acked_s={acked_s:.1f} stored_s={stored_s:.1f} "
          f"events_per_s={n / stored_s:.0f}")


def test_many_gateway_connections_at_once(stack: Stack) -> None:
    """Six carriers (three outlets, two connections each, on two nodes)
    upload 1000-event batches at once; every event stored once; the rate
    through one MQTT front and one worker is printed."""
    conns = [(o, ch) for o in ("o1", "o2", "o4") for ch in (5, 6)]
    per, size = 6, 1000
    errors: list[BaseException] = []
    sent: dict[tuple[str, int], list[str]] = {}

    def run(outlet: str, ch: int) -> None:
        tr = stack.transport(outlet, node=ch % 2, channel=ch, timeout=30)
        ids: list[str] = []
        try:
            for i in range(per):
                b = encode_batch(outlet, "ev", events(f"mg{ch}", size, start=1 + size * i))
                assert tr.send(b).acked_of(b.ids) == b.ids
                ids += b.ids
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)
        finally:
            tr.close()
            sent[(outlet, ch)] = ids

    start = time.monotonic()
    threads = [threading.Thread(target=run, args=c) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    acked_s = time.monotonic() - start
    assert not errors, errors
    stack.backend.wait_written(60)
    stored_s = time.monotonic() - start
    for (outlet, ch), ids in sent.items():
        with stack.backend.pool.tx() as c:
            row = c.execute("SELECT count(*) FROM events WHERE outlet=%s AND device=%s",
                            (outlet, f"mg{ch}")).fetchone()
        assert row is not None and row[0] == len(ids) == per * size
    total = len(conns) * per * size
    print(f"mqtt_many connections={len(conns)} events={total} acked_s={acked_s:.1f} "
          f"stored_s={stored_s:.1f} events_per_s={total / stored_s:.0f}")


def test_a_nats_node_killed_mid_run_loses_nothing_acked(stack: Stack) -> None:
    """Two gateways on node 1's MQTT listener upload while node 3 (another
    node: a gateway's carrier has one address) is SIGKILLed and restarted;
    each gateway resends a batch until it is acked, as its syncer does."""
    gateways, per_gateway, size = 2, 40, 100
    acked: dict[str, set[str]] = {}
    retries: list[int] = [0] * gateways
    errors: list[BaseException] = []
    half = threading.Barrier(gateways + 1)

    def gateway(g: int) -> None:
        outlet = ("o1", "o2")[g]
        dev = f"nk{g}"
        got: set[str] = set()
        tr = stack.transport(outlet, node=0, timeout=5)
        try:
            for i in range(per_gateway):
                if i == per_gateway // 2:
                    half.wait(60)
                b = encode_batch(outlet, "ev", events(dev, size, start=1 + size * i))
                end = time.monotonic() + 90
                while True:
                    try:
                        ack = tr.send(b)
                        got.update(ack.acked_of(b.ids))
                        assert set(ack.acked_of(b.ids)) == set(b.ids), ack
                        break
                    except TransportError:
                        retries[g] += 1
                        tr.close()
                        if time.monotonic() > end:
                            raise
                        time.sleep(0.2)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)
            half.abort()
        finally:
            tr.close()
            acked[outlet] = got

    start = time.monotonic()
    threads = [threading.Thread(target=gateway, args=(g,)) for g in range(gateways)]
    for t in threads:
        t.start()
    half.wait(120)
    victim = stack.nats.nodes[2]
    victim.kill()
    time.sleep(2.0)
    victim.start()
    for t in threads:
        t.join(300)
    elapsed = time.monotonic() - start
    assert not errors, errors
    stack.backend.wait_written(60)
    for g in range(gateways):
        outlet, dev = ("o1", "o2")[g], f"nk{g}"
        with stack.backend.pool.tx() as c:
            held = {r[0] for r in c.execute("SELECT id FROM events WHERE outlet=%s AND device=%s",
                                            (outlet, dev))}
        assert acked[outlet] <= held  # nothing acked is lost
        assert len(held) == per_gateway * size  # every event once (the key forbids twice)
    total = gateways * per_gateway * size
    print(f"mqtt_node_kill events={total} s={elapsed:.1f} events_per_s={total / elapsed:.0f} "
          f"gateway_retries={sum(retries)}")
