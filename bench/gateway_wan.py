"""Gateway WAN benchmark (issue 4): bytes on the wire, and draining a backlog.

Measured side by side in one run, on loopback, with a fixed seed:

1. Bytes per event for a realistic outlet mix (lockers: deposits, pickups,
   door status, heartbeats, alarms; counter scanners: S10 and domestic
   waybill scans; courier handhelds: scans with GNSS and photo evidence with
   SHA-256 hashes), as our batches carry them (columnar JSON, zlib, 1,000
   events a batch, with the central side's ack) against the anchor: one JSON
   MQTT message per event at QoS 1, the way ThingsBoard Gateway or a
   Mosquitto bridge forwards device traffic. Both are counted as MQTT 3.1.1
   framing in both directions: PUBLISH (fixed header, topic, packet id,
   payload) plus PUBACK, and for ours also the ack message and its PUBACK.
   The same traffic is then sent for real over TLS through a counting TCP
   relay (the "WAN"), to show the framing count is not flattering: TLS
   records, handshakes and keepalives included.
   A table of alternatives shows why the codec is what it is.
2. 100,000 events backlogged behind a dead link: the real gateway process
   (``postedge gateway run``) with its outlet Mosquitto, syncing over MQTT/TLS
   to a central Mosquitto and acker; the link comes back and we measure the
   seconds to the first acked batch (the gateway's own log line) and the
   drain rate. Three rounds, median reported. The anchor drains the same
   100,000 events as per-event QoS 1 publishes over the same TLS link with
   20 in flight (Mosquitto's bridge default). Loopback makes this a CPU
   race; on a real rural link bytes decide, so the 20,000-event mix is also
   sent both ways over the relay shaped to 2 Mbit/s.

Goals: reduction >= 10x, first_batch_s <= 1.
Last line: gateway_wan json_bytes_per_event=... batch_bytes_per_event=...
reduction=... first_batch_s=... drain_events_per_s=...
"""

from __future__ import annotations

import json
import lzma
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.uplink_codec import encode_ack, encode_batch  # noqa: E402
from gateway.broker import Account, Mosquitto  # noqa: E402
from gateway.config import DEFAULT_PREFIX  # noqa: E402
from gateway.store.events import EventStore, StoredEvent  # noqa: E402
from gateway.uplink.sync import Syncer  # noqa: E402
from gateway.uplink.transport import tls_context  # noqa: E402
from protocol import envelope, topics  # noqa: E402
from protocol.ids import format_event_id  # noqa: E402
from simulator.central import Link, make_certs  # noqa: E402
from simulator.uplink_double import CentralBroker, CentralMqtt, UplinkDouble  # noqa: E402

OUTLET = "o-0451"
SEED = 451
N_BYTES = 20_000
N_BACKLOG = 100_000
BATCH = 1000
ROUNDS = 3
SHAPED_RATE = 250_000  # bytes/s each way: a 2 Mbit/s rural link
GW_USER, GW_PASS = "gw-o-0451", "gw-up-secret"
BRIDGE_USER, BRIDGE_PASS = "bridge-o-0451", "bridge-secret"


# ------------------------------------------------------------- the event mix
def _s10(rng: random.Random) -> str:
    d = [rng.randrange(10) for _ in range(8)]
    c = 11 - sum(a * b for a, b in zip(d, (8, 6, 4, 2, 3, 5, 9, 7), strict=True)) % 11
    c = 0 if c == 10 else 5 if c == 11 else c
    return rng.choice(("RB", "EA", "CP", "LZ")) + "".join(map(str, d)) + str(c) + "CN"


def mix(n: int, seed: int) -> list[StoredEvent]:
    """Events of one outlet's day: 4 lockers (45%), 2 scanners (35%), 3 handhelds (20%)."""
    rng = random.Random(seed)
    devs = [("locker", f"lk{i:02d}") for i in range(1, 5)] + [("scanner", f"sc{i:02d}") for i in (1, 2)] \
        + [("handheld", f"hh{i:02d}") for i in range(1, 4)]
    inc = {d: f"{rng.getrandbits(32):08x}" for _, d in devs}
    seq = dict.fromkeys(inc, 0)
    ts = 1795881163
    out: list[StoredEvent] = []
    for _ in range(n):
        ts += rng.randrange(0, 20)
        r = rng.random()
        kind, dev = rng.choice(devs[:4] if r < 0.45 else devs[4:6] if r < 0.80 else devs[6:])
        seq[dev] += 1
        eid = format_event_id(dev, inc[dev], seq[dev])
        x = rng.random()
        c = rng.randint(1, 24)
        if kind == "locker":
            if x < 0.3:
                t, cls, body = "locker.deposit", "custody", {
                    "compartment": c, "parcel": _s10(rng), "courier": f"c-{rng.randrange(60):04d}",
                    "expires": ts + 7 * 86400, "code_by": "platform"}
            elif x < 0.55:
                t, cls, body = "locker.pickup", "custody", {"compartment": c, "parcel": _s10(rng)}
            elif x < 0.85:
                t, cls, body = "locker.door", "status", {"compartment": c, "door": "open",
                                                         "action": rng.choice(("deposit", "pickup"))}
            elif x < 0.98:
                t, cls, body = "locker.heartbeat", "telemetry", {
                    "temp_cc": rng.randint(-500, 4000), "rssi": rng.randint(-95, -50),
                    "uptime_s": rng.randrange(10**6), "free_heap": rng.randrange(20000, 60000),
                    "outbox": rng.randrange(4)}
            else:
                t, cls, body = "locker.alarm", "alarm", {"alarm": "door_left_open", "compartment": c}
        elif kind == "scanner":
            t, cls = "scanner.scan", "custody"
            if x < 0.7:
                body = {"code": _s10(rng), "kind": "s10", "aim": "]C0", "station": 1,
                        "op": rng.choice(("in", "out", "counter"))}
            else:
                waybill = str(rng.choice((1, 5, 9))) + "".join(str(rng.randrange(10)) for _ in range(12))
                body = {"code": waybill, "kind": "cn_domestic", "aim": "]C0", "station": 2, "op": "in"}
        else:
            lat = 301234567 + rng.randrange(-50000, 50000)
            lon = 1041234567 + rng.randrange(-50000, 50000)
            if x < 0.6:
                t, cls, body = "handheld.scan", "custody", {
                    "code": _s10(rng), "kind": "s10", "lat_e7": lat, "lon_e7": lon, "op": "delivered",
                    "courier": f"c-{rng.randrange(60):04d}"}
            else:
                t, cls, body = "handheld.photo", "audit", {
                    "job": f"bb-{rng.randrange(3000):05d}", "step": rng.choice(("install", "poster", "before",
                                                                                "after")),
                    "sha256": f"{rng.getrandbits(256):064x}", "bytes": rng.randrange(200000, 900000),
                    "w": 1600, "h": 1200, "sharp": rng.randrange(100, 900), "lat_e7": lat, "lon_e7": lon}
        payload = envelope.encode(envelope.make(eid, ts, t, cls, body, boot=rng.randint(1, 9)))
        out.append(StoredEvent(eid, OUTLET, kind, dev, inc[dev], seq[dev], cls, t, ts, payload))
    return out


# ----------------------------------------------------------- MQTT framing
def _varint_len(n: int) -> int:
    k = 1
    while n >= 128:
        n //= 128
        k += 1
    return k


def publish_len(topic: str, payload: bytes, qos: int = 1) -> int:
    rl = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    return 1 + _varint_len(rl) + rl


PUBACK = 4


def anchor_bytes(events: list[StoredEvent]) -> int:
    return sum(publish_len(topics.build(OUTLET, e.kind, e.device, "evt"), e.payload) + PUBACK
               for e in events)


def our_bytes(events: list[StoredEvent]) -> tuple[int, int]:
    """Both directions, and the batch bodies alone."""
    total = bodies = 0
    for i in range(0, len(events), BATCH):
        chunk = events[i:i + BATCH]
        b = encode_batch(OUTLET, "bulk", [(e.id, e.payload) for e in chunk])
        ack = encode_ack(b.id, b.ids, batch_ids=b.ids)
        total += publish_len(f"{DEFAULT_PREFIX}/{OUTLET}/batch/0/{b.id}", b.body) + PUBACK
        total += publish_len(f"{DEFAULT_PREFIX}/{OUTLET}/ack/0/{b.id}", ack) + PUBACK
        bodies += len(b.body)
    return total, bodies


def alternatives(events: list[StoredEvent]) -> list[tuple[str, float, float]]:
    """(codec, bytes per event of batch bodies, events per second to encode)."""
    rows = []
    lines = [e.payload for e in events]

    def run(name: str, fn: Any) -> None:
        t0 = time.perf_counter()
        total = sum(fn(i) for i in range(0, len(events), BATCH))
        rows.append((name, total / len(events), len(events) / (time.perf_counter() - t0)))

    run("lines + zlib-6", lambda i: len(zlib.compress(b"\n".join(lines[i:i + BATCH]), 6)))
    run("lines + lzma-6", lambda i: len(lzma.compress(b"\n".join(lines[i:i + BATCH]))))
    run("columns + zlib-6 (ours)",
        lambda i: len(encode_batch(OUTLET, "bulk", [(e.id, e.payload) for e in events[i:i + BATCH]]).body))

    def col_lzma(i: int) -> int:
        body = encode_batch(OUTLET, "bulk", [(e.id, e.payload) for e in events[i:i + BATCH]]).body
        return len(lzma.compress(zlib.decompress(body)))

    run("columns + lzma-6", col_lzma)
    return rows


# --------------------------------------------------------------- the WAN
class Rig:
    """A central Mosquitto (TLS) with the acker, behind a counting link."""

    def __init__(self, tmp: Path) -> None:
        self.certs = make_certs(tmp / "pki")
        # the anchor's account: a bridge forwarding the outlet's device topics
        bridge = (BRIDGE_USER, BRIDGE_PASS, [f"topic readwrite pe/v1/{OUTLET}/#"])
        self.broker = CentralBroker(tmp / "central", self.certs, [(GW_USER, GW_PASS, OUTLET)],
                                    others=[bridge])
        self.broker.start()
        self.central = UplinkDouble()
        self.acker = CentralMqtt(self.central, self.broker.port, self.certs.ca, *self.broker.acker).start()
        self.link = Link(self.broker.port).up()

    def upstream(self, **kw: Any) -> dict[str, Any]:
        return {"url": f"mqtts://127.0.0.1:{self.link.port}", "ca_file": str(self.certs.ca),
                "username": GW_USER, "password": GW_PASS, **kw}

    def wire(self) -> int:
        return self.link.up_bytes + self.link.down_bytes

    def close(self) -> None:
        self.link.down()
        self.acker.stop()
        self.broker.stop()


def anchor_publish(rig: Rig, events: list[StoredEvent], inflight: int = 20) -> float:
    """Per-event JSON QoS 1 publishes over TLS through the link; seconds taken."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bridge", protocol=mqtt.MQTTv311)
    c.tls_set_context(tls_context(str(rig.certs.ca)))
    c.username_pw_set(BRIDGE_USER, BRIDGE_PASS)
    c.max_inflight_messages_set(inflight)
    done = threading.Event()
    window = threading.Semaphore(inflight)
    acked = [0]

    def on_publish(client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        acked[0] += 1
        window.release()
        if acked[0] == len(events):
            done.set()

    c.on_publish = on_publish
    c.connect("127.0.0.1", rig.link.port)
    c.loop_start()
    t0 = time.perf_counter()
    for e in events:
        # Never more than the in-flight window handed to paho: a bridge holds
        # its queue itself, and paho's own queue slows down when it is long.
        window.acquire()
        c.publish(topics.build(OUTLET, e.kind, e.device, "evt"), e.payload, qos=1)
    if not done.wait(120):
        raise RuntimeError(f"anchor: {acked[0]} of {len(events)} acked")
    dt = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return dt


def ours_sync(rig: Rig, tmp: Path, events: list[StoredEvent], name: str = "bytes.db") -> None:
    db = tmp / name
    s = EventStore(db)
    s.commit_events(events)
    s.close()
    stop = threading.Event()
    syncer = Syncer(db, OUTLET, rig.upstream(), stop, log=lambda *a, **k: None)
    t = syncer.start()
    want = {e.id for e in events}
    if not rig.central.wait_ids(want, 300):
        raise RuntimeError("batches not all acked")
    stop.set()
    t.join(15)


def shaped_link(rig: Rig, tmp: Path, events: list[StoredEvent]) -> tuple[float, float]:
    """Both sides through a link shaped to SHAPED_RATE each way; events/s."""
    normal = rig.link
    rig.link.down()
    rig.link = Link(rig.broker.port, rate_bytes_per_s=SHAPED_RATE).up()
    try:
        rig.central = rig.acker.central = UplinkDouble()
        anchor_s = anchor_publish(rig, events)
        t0 = time.perf_counter()
        ours_sync(rig, tmp, events, "shaped.db")
        ours_s = time.perf_counter() - t0
    finally:
        rig.link.down()
        rig.link = normal.up()
    return len(events) / anchor_s, len(events) / ours_s


# ------------------------------------------------------------ the backlog
def gateway_toml(path: Path, broker_port: int, upstream: dict[str, Any]) -> Path:
    lines = [f'outlet = "{OUTLET}"', 'db = "gateway.db"', "", "[broker]", 'host = "127.0.0.1"',
             f"port = {broker_port}", f'username = "gw-{OUTLET}"', 'password = "gw-secret"', "",
             "[upstream]"] + [f"{k} = {json.dumps(v)}" for k, v in upstream.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def log_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def backlog_round(rig: Rig, tmp: Path, seed: int) -> dict[str, float]:
    work = tmp / f"round-{seed}"
    work.mkdir()
    outlet_broker = Mosquitto(work / "broker", [Account(f"gw-{OUTLET}", "gw-secret", OUTLET, "gateway")])
    outlet_broker.start()
    events = mix(N_BACKLOG, seed)
    s = EventStore(work / "gateway.db")
    for i in range(0, len(events), 5000):
        s.commit_events(events[i:i + 5000])
    s.close()
    rig.central = rig.acker.central = UplinkDouble()
    rig.link.down()
    conf = gateway_toml(work / "gateway.toml", outlet_broker.port, rig.upstream())
    out = work / "gateway.log"
    with open(out, "wb") as f:
        gw = subprocess.Popen([sys.executable, "-m", "postedge.cli", "gateway", "run", "--config", str(conf)],
                              stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not any(d.get("evt") == "sync_failed" for d in log_lines(out)):
            if time.monotonic() > deadline or gw.poll() is not None:
                raise RuntimeError("gateway never tried the dead link:\n" + out.read_text()[-2000:])
            time.sleep(0.05)
        time.sleep(3.0)  # dead for a while: the gateway is probing
        t_up = time.time()
        rig.link.up()
        if not rig.central.wait_ids({e.id for e in events}, 600):
            raise RuntimeError(f"drain incomplete: {len(rig.central.events)} of {N_BACKLOG}")
        time.sleep(0.5)  # the last ack's log line
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(30)
        outlet_broker.stop()
    batches = [d for d in log_lines(out) if d.get("evt") == "sync_batch" and d["at"] >= t_up]
    first = batches[0]["at"] - t_up
    last = batches[-1]["at"] - t_up
    return {"first_batch_s": first, "drain_s": last, "rate": N_BACKLOG / last, "batches": len(batches),
            "dups": rig.central.duplicates}


# ----------------------------------------------------------------- main
def main() -> None:
    events = mix(N_BYTES, SEED)
    raw = sum(len(e.payload) for e in events)
    json_total = anchor_bytes(events)
    ours_total, bodies = our_bytes(events)
    json_pe = json_total / len(events)
    ours_pe = ours_total / len(events)
    reduction = json_pe / ours_pe

    print(f"event mix: {len(events)} events, {raw / len(events):.0f} bytes of envelope JSON each on average")
    print("codec alternatives, batch bodies only (1,000 events a batch):")
    for name, bpe, eps in alternatives(events):
        print(f"  {name:26} {bpe:7.1f} bytes/event   encode {eps:9.0f} events/s")
    print()
    print("bytes on the wire per event, MQTT 3.1.1 framing, both directions:")
    print(f"  one JSON message per event (QoS 1 + PUBACK)      {json_pe:7.1f}")
    print(f"  batched, columnar, zlib (+ ack, PUBACKs)         {ours_pe:7.1f}   "
          f"(bodies alone {bodies / len(events):.1f})")
    print(f"  reduction anchor/ours = {reduction:.1f}x (goal >= 10x)")

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        rig = Rig(tmp)
        try:
            w0 = rig.wire()
            anchor_publish(rig, events)
            anchor_wire = rig.wire() - w0
            w0 = rig.wire()
            ours_sync(rig, tmp, events)
            ours_wire = rig.wire() - w0
            print("measured through the TLS link (TCP payload both ways: TLS records, handshakes, acks):")
            print(f"  one JSON message per event {anchor_wire / len(events):7.1f} bytes/event;  "
                  f"ours {ours_wire / len(events):6.1f};  reduction {anchor_wire / ours_wire:.1f}x")
            print()

            shaped = shaped_link(rig, tmp, events)
            rounds = [backlog_round(rig, tmp, SEED + 1 + r) for r in range(ROUNDS)]
            anchor_events = mix(N_BACKLOG, SEED + 99)
            anchor_s = anchor_publish(rig, anchor_events)
        finally:
            rig.close()
    first = statistics.median(r["first_batch_s"] for r in rounds)
    rate = statistics.median(r["rate"] for r in rounds)
    a_rate, o_rate = shaped
    mbit = SHAPED_RATE * 8 // 1_000_000
    print(f"the same {N_BYTES} events over a {mbit} Mbit/s link: one JSON message per event "
          f"{a_rate:.0f} events/s, ours {o_rate:.0f} events/s ({o_rate / a_rate:.1f}x)")
    print()
    print(f"{N_BACKLOG} events behind a dead link, the real gateway process, MQTT over TLS "
          "(loopback, no shaping: what the two cores here can do):")
    for i, r in enumerate(rounds, 1):
        print(f"  round {i}: link back -> first acked batch {r['first_batch_s']:.3f} s; drained in "
              f"{r['drain_s']:.2f} s ({r['rate']:.0f} events/s, {r['batches']} batches, "
              f"{r['dups']} duplicates at the central side)")
    print(f"  median: first batch {first:.3f} s (goal <= 1 s), drain {rate:.0f} events/s")
    print(f"  anchor, per-event QoS 1 JSON over the same link (20 in flight): {N_BACKLOG / anchor_s:.0f} "
          f"events/s; ours/anchor = {rate / (N_BACKLOG / anchor_s):.1f}x")
    print(f"gateway_wan json_bytes_per_event={json_pe:.1f} batch_bytes_per_event={ours_pe:.1f} "
          f"reduction={reduction:.1f} first_batch_s={first:.3f} drain_events_per_s={rate:.0f}")


if __name__ == "__main__":
    main()
