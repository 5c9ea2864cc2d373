"""Gateway ingest benchmark (issue 4).

In one run, on the same Mosquitto with the same backlog published by the
same device: a plain paho QoS 1 subscriber (acks on receipt, stores nothing)
against the gateway's durable ingest (validates every envelope, commits to
SQLite in WAL mode with synchronous=FULL, acks only after the commit). Each
side drains an identical backlog of N events queued for its persistent
session. Goal: durable/raw >= 0.8.

Last line: gateway_ingest raw_msgs_per_s=... durable_msgs_per_s=... ratio=...
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.broker import Account, Mosquitto  # noqa: E402
from gateway.store.events import EventStore  # noqa: E402
from protocol import envelope, topics  # noqa: E402
from protocol.ids import format_event_id  # noqa: E402
from simulator.gateway_process import GatewayProcess, write_config  # noqa: E402

N = 20000
TOPIC = topics.build("o1", "locker", "lk01", "evt")


def payloads(run: int) -> list[bytes]:
    body = {"compartment": 7, "parcel": "RB123456785GB", "courier": "c007", "door": "closed"}
    return [envelope.encode(envelope.make(format_event_id("lk01", f"{run:08x}", i + 1), 1795881163,
                                          "locker.deposit", "custody", body, boot=1)) for i in range(N)]


def subscribe_offline(port: int, client_id: str, user: str, pw: str) -> None:
    """Create the persistent session, then leave: the broker queues for it."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                    protocol=mqtt.MQTTv311)
    c.username_pw_set(user, pw)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port)
    c.subscribe(topics.subscription("o1", "evt"), qos=1)
    c.loop_start()
    done.wait(5)
    c.disconnect()
    c.loop_stop()


def publish_backlog(port: int, data: list[bytes]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-lk01", protocol=mqtt.MQTTv311)
    c.username_pw_set("lk01", "lk01-pw")
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(TOPIC, p, qos=1) for p in data]
    for i in infos:
        i.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


def raw_rate(port: int) -> float:
    """First message to last, as for the gateway (process start-up excluded)."""
    got = [0]
    first = [0.0]
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw", clean_session=False,
                    protocol=mqtt.MQTTv311)
    c.username_pw_set("gw-o1", "gw-secret")

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        got[0] += 1
        if got[0] == 1:
            first[0] = time.perf_counter()
        if got[0] == N:
            done.set()

    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    if not done.wait(300):
        raise RuntimeError(f"raw subscriber got {got[0]} of {N}")
    dt = time.perf_counter() - first[0]
    c.disconnect()
    c.loop_stop()
    return N / dt


def durable_rate(port: int, tmp: Path, run: int) -> float:
    cfg = write_config(tmp / f"gw{run}.toml", "o1", port, "gw-o1", "gw-secret", db=f"gw{run}.db")
    # Reuse the bench-gw session created offline: same client id in the TOML.
    cfg.write_text(cfg.read_text() + 'client_id = "bench-gw"\n')
    gw = GatewayProcess(cfg)
    try:
        gw.wait_for("gateway_started", timeout=60)
        store = EventStore(tmp / f"gw{run}.db")
        while store.count() < N:
            time.sleep(0.02)
        # First message received to last one committed, from the store's clock;
        # the first group's own receive-to-commit time is added back.
        first, last = store.db.execute("SELECT min(received_at), max(received_at) FROM events").fetchone()
        store.close()
    finally:
        gw.stop()
    return N / (last - first + 0.02)


def main() -> None:
    raws, durables = [], []
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        broker = Mosquitto(tmp / "broker", [Account("gw-o1", "gw-secret", "o1", "gateway"),
                                            Account("lk01", "lk01-pw", "o1", "locker")])
        broker.start()
        try:
            for run in range(3):
                data = payloads(run)
                subscribe_offline(broker.port, "bench-raw", "gw-o1", "gw-secret")
                subscribe_offline(broker.port, "bench-gw", "gw-o1", "gw-secret")
                publish_backlog(broker.port, data)  # queued for both sessions
                raws.append(raw_rate(broker.port))
                durables.append(durable_rate(broker.port, tmp, run))
        finally:
            broker.stop()
    raw, dur = statistics.median(raws), statistics.median(durables)
    print(f"{'':34}{'msg/s':>10}")
    print(f"{'plain paho QoS 1 subscriber':34}{raw:>10.0f}   runs: {', '.join(f'{x:.0f}' for x in raws)}")
    print(f"{'gateway, durable (SQLite FULL)':34}{dur:>10.0f}   runs: "
          f"{', '.join(f'{x:.0f}' for x in durables)}")
    print(f"ratio durable/raw = {dur / raw:.2f} (goal >= 0.8); {N} events each, "
          "backlog drained from the broker")
    print(f"gateway_ingest raw_msgs_per_s={raw:.0f} durable_msgs_per_s={dur:.0f} ratio={dur / raw:.2f}")


if __name__ == "__main__":
    main()
