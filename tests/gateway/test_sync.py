"""Upstream sync: batching, compression, lanes, idempotent
resends, outages, the bandwidth cap, TLS-only, and the real gateway process
SIGKILLed over and over while devices publish and it syncs.

Everything is real and on loopback: SQLite files, the uplink double's HTTPS
server and TLS Mosquitto (simulator/uplink_double.py), certificates made with the
openssl CLI, the outlet's Mosquitto, paho publishers as devices, and a TCP
relay standing for the WAN link.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.uplink_codec import BatchError, batch_id, decode_ack, decode_batch, encode_ack, encode_batch
from gateway import metrics as M
from gateway.broker import Mosquitto
from gateway.config import ConfigError
from gateway.store.events import EventStore, StoredEvent
from gateway.uplink.sync import Syncer, parse_upstream
from protocol import envelope, topics
from protocol.ids import format_event_id
from simulator.central import Certs
from simulator.uplink_double import CentralBroker, CentralMqtt, UplinkDouble, UplinkDoubleHttps
from tests.uplink_rig import FAST, GW_PASS, GW_USER, Log, Uplink, gateway_toml

ROOT = Path(__file__).resolve().parents[2]
INC = "0badcafe"


# ------------------------------------------------------------------ helpers
def event(dev: str, seq: int, cls: str = "custody", etype: str = "locker.deposit",
          body: dict[str, Any] | None = None, inc: str = INC) -> StoredEvent:
    eid = format_event_id(dev, inc, seq)
    if body is None:
        body = {"compartment": seq % 24 + 1, "parcel": "RB123456785CN"}
    payload = envelope.encode(envelope.make(eid, 1795881163 + seq, etype, cls, body, boot=1))
    return StoredEvent(eid, "o1", "locker", dev, inc, seq, cls, etype, 1795881163 + seq, payload)


def noisy(rng: random.Random) -> dict[str, Any]:
    """A body zlib cannot shrink much (a photo hash and a random number)."""
    return {"sha256": f"{rng.getrandbits(256):064x}", "n": rng.getrandbits(40)}


def fill(db: Path, events: list[StoredEvent]) -> list[str]:
    s = EventStore(db)
    try:
        s.commit_events(events)
    finally:
        s.close()
    return [e.id for e in events]


def backlog(db: Path) -> dict[str, float]:
    s = EventStore(db)
    try:
        return s.backlog()
    finally:
        s.close()


def unsynced_ids(db: Path) -> set[str]:
    c = sqlite3.connect(db)
    try:
        return {r[0] for r in c.execute("SELECT id FROM events WHERE synced_at IS NULL")}
    finally:
        c.close()


@contextmanager
def syncing(db: Path, upstream: dict[str, Any]) -> Iterator[tuple[Syncer, Log]]:
    log = Log()
    stop = threading.Event()
    s = Syncer(db, "o1", upstream, stop, log=log, seed=7)
    t = s.start()
    try:
        yield s, log
    finally:
        stop.set()
        t.join(15)
        assert not t.is_alive(), "syncer did not stop"




# ------------------------------------------------------------------- config
@pytest.mark.parametrize("table, key, words", [
    ({"url": "mqtt://127.0.0.1:1883"}, "upstream.url", "plaintext"),
    ({"url": "http://central.example/v1/batches"}, "upstream.url", "plaintext"),
    ({}, "upstream.url", "required"),
    ({"url": "ftp://central.example"}, "upstream.url", "scheme"),
    ({"url": "https://u:p@central.example/"}, "upstream.url", "credentials"),
    ({"url": "https://central.example/", "transport": "mqtt"}, "upstream.transport", "match"),
    ({"url": "https://central.example/", "batch_max_events": 0}, "upstream.batch_max_events", "integer"),
    ({"url": "https://central.example/", "bandwidth_bytes_per_s": 1.5}, "upstream.bandwidth_bytes_per_s",
     "integer"),
    ({"url": "https://central.example/", "batch_max_age_s": -1}, "upstream.batch_max_age_s", "number"),
    ({"url": "https://central.example/", "backoff_base_s": 5, "backoff_cap_s": 1}, "upstream.backoff_cap_s",
     "below"),
    ({"url": "https://central.example/", "ca_file": "/nonexistent/ca.pem"}, "upstream.ca_file", "no such"),
    ({"url": "https://central.example/", "verify": False}, "upstream.verify", "unknown"),
])
def test_config_errors_name_the_key(table: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_upstream(table)
    assert str(ei.value).startswith(key + ":"), str(ei.value)
    assert words in str(ei.value)


def test_config_defaults_and_transport_from_scheme() -> None:
    cfg = parse_upstream({"url": "mqtts://central.example:8883"})
    assert cfg.transport == "mqtt" and cfg.batch_max_events == 1000 and cfg.bandwidth_bytes_per_s == 0
    assert parse_upstream({"url": "https://central.example/up"}).transport == "https"


def test_config_cert_paths_relative_to_the_config_file(tmp_path: Path, certs: Certs) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.pem").write_bytes(certs.ca.read_bytes())
    cfg = parse_upstream({"url": "https://central.example/", "ca_file": "pki/ca.pem"}, base=tmp_path)
    assert cfg.ca_file == str(tmp_path / "pki" / "ca.pem")


def test_gateway_process_refuses_plaintext_upstream(tmp_path: Path) -> None:
    conf = tmp_path / "gateway.toml"
    conf.write_text('outlet = "o1"\ndb = "gw.db"\n[broker]\nport = 1\n'
                    '[upstream]\nurl = "mqtt://127.0.0.1:1883"\n')
    proc = subprocess.run([sys.executable, "-m", "postedge.cli", "gateway", "run", "--config", str(conf)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0
    assert "upstream.url" in proc.stderr and "plaintext" in proc.stderr


# ------------------------------------------------------------------ batching
def test_batches_by_count_then_age(tmp_path: Path, https_uplink: Uplink) -> None:
    db = tmp_path / "gw.db"
    synced_before = M.REGISTRY.get_sample_value("postedge_synced_events_total") or 0.0
    t_fill = time.time()
    ids = fill(db, [event("lk01", i) for i in range(1, 26)])
    with syncing(db, https_uplink.upstream(batch_max_events=10, batch_max_age_s=1.5)) as (_, log):
        assert https_uplink.central.wait_ids(ids, 10)
        log.wait("sync_batch", 5, lambda x: x["n"] == 5)
        time.sleep(1.2)  # a gauge update
    # A batch resent after an ack that came late on a loaded box is the
    # gateway's retry, stored once: each batch counts by its first arrival.
    batches = [b for b in https_uplink.central.batches if b.new]
    assert sorted(b.n for b in batches) == [5, 10, 10]
    full = [b for b in batches if b.n == 10]
    assert all(b.at - t_fill < 1.2 for b in full)  # full: sent at once
    assert batches[-1].n == 5 and batches[-1].at - t_fill >= 1.4  # partial: waited for batch_max_age_s
    # oldest first: the two full batches hold the first 20 events, in order
    assert sorted(b.ids for b in full) == [ids[:10], ids[10:20]] and batches[-1].ids == ids[20:]
    assert backlog(db)["count"] == 0
    assert (M.REGISTRY.get_sample_value("postedge_synced_events_total") or 0) - synced_before == 25
    assert M.REGISTRY.get_sample_value("postedge_backlog_events") == 0
    st_ = EventStore(db)
    try:  # what the status page reads as "last sync"
        assert 0 <= time.time() - float(st_.get("last_sync_at") or 0) < 10
    finally:
        st_.close()


def test_batches_by_bytes(tmp_path: Path, https_uplink: Uplink) -> None:
    db = tmp_path / "gw.db"
    evs = [event("lk01", i, body={"note": "x" * 200, "i": i}) for i in range(1, 41)]
    size = len(evs[0].payload)
    ids = fill(db, evs)
    with syncing(db, https_uplink.upstream(batch_max_bytes=2048, batch_max_events=1000)):
        assert https_uplink.central.wait_ids(ids, 10)
    batches = https_uplink.central.batches
    assert len(batches) >= 40 * size // 2048
    for b in batches:
        assert sum(len(https_uplink.central.payloads[i]) for i in b.ids) <= 2048
    assert max(b.n for b in batches) == 2048 // size


def test_compression_is_applied(tmp_path: Path, https_uplink: Uplink) -> None:
    db = tmp_path / "gw.db"
    evs = [event("lk01", i) for i in range(1, 1001)]
    raw = sum(len(e.payload) for e in evs)
    ids = fill(db, evs)
    with syncing(db, https_uplink.upstream()):
        assert https_uplink.central.wait_ids(ids, 10)
    wire = sum(b.wire_bytes for b in https_uplink.central.batches)
    # The server only accepts Content-Encoding: deflate and decodes with zlib;
    # the body is a small fraction of the events it carries.
    assert wire * 20 < raw, (wire, raw)
    # Bytes rebuilt on the central side are the device's exact bytes.
    assert all(https_uplink.central.payloads[e.id] == e.payload for e in evs)


@pytest.mark.slow
def test_alarms_overtake_a_backlog(tmp_path: Path, https_uplink: Uplink) -> None:
    db = tmp_path / "gw.db"
    rng = random.Random(1)
    bulk = fill(db, [event("lk01", i, body=noisy(rng)) for i in range(1, 3001)])
    up = https_uplink.upstream(batch_max_events=100, bandwidth_bytes_per_s=40_000)
    with syncing(db, up) as (_, log):
        log.wait("sync_batch", 10)
        t_alarm = time.time()
        alarms = fill(db, [event("lk02", i, cls="alarm", etype="locker.alarm",
                                 body={"alarm": "door_forced", "compartment": i}) for i in range(1, 4)])
        assert https_uplink.central.wait_ids(alarms, 5)
        got_alarm = time.time()
        assert https_uplink.central.wait_ids(bulk, 30)
    batches = https_uplink.central.batches
    fast = [i for i, b in enumerate(batches) if b.lane == "fast"]
    assert len(fast) == 1 and set(batches[fast[0]].ids) == set(alarms)
    assert fast[0] < len(batches) - 3, "the alarm waited for the backlog"
    assert got_alarm - t_alarm < 2.5
    # the backlog itself goes oldest first: each batch a run of the backlog
    # (two are in flight at once, so neighbours may land in either order)
    runs = sorted((b.ids for b in batches if b.lane == "bulk"), key=lambda r: bulk.index(r[0]))
    assert [i for r in runs for i in r] == bulk
    starts = [bulk.index(b.ids[0]) for b in batches if b.lane == "bulk"]
    assert all(later > earlier for earlier, later in zip(starts, starts[2:], strict=False))


# ------------------------------------------------------------- idempotence
def test_lost_acks_are_resent_as_the_same_batch(tmp_path: Path, uplink: Uplink) -> None:
    db = tmp_path / "gw.db"
    ids = fill(db, [event("lk01", i) for i in range(1, 31)])
    uplink.central.drop_acks = 2
    with syncing(db, uplink.upstream(batch_max_events=10, timeout_s=1.0)) as (_, log):
        assert uplink.central.wait_ids(ids, 20)
        deadline = time.monotonic() + 20
        while backlog(db)["count"] and time.monotonic() < deadline:
            time.sleep(0.05)
    c = uplink.central
    assert backlog(db)["count"] == 0
    dropped = [b for b in c.batches if b.ack_dropped]
    assert len(dropped) == 2
    # each batch whose ack was lost came again, recognisably the same batch
    sent = [b.id for b in c.batches]
    for b in dropped:
        assert sent.count(b.id) >= 2
    assert c.duplicates >= 10  # the central side saw resent events...
    assert sorted(c.events) == sorted(ids)  # ...and holds each exactly once
    assert all(n >= 1 for n in c.counts.values()) and set(c.counts) == set(ids)
    assert log.of("sync_failed")


# -------------------------------------------------------- outage, recovery
@pytest.mark.slow
def test_long_outage_then_recovery_within_a_second_of_the_probe(tmp_path: Path, uplink: Uplink) -> None:
    db = tmp_path / "gw.db"
    first = fill(db, [event("lk01", i) for i in range(1, 51)])
    with syncing(db, uplink.upstream(probe_interval_s=0.3, backoff_cap_s=2.0)) as (syncer, log):
        assert uplink.central.wait_ids(first, 10)
        uplink.link.down()
        # the outage: devices keep producing while nothing gets through
        later: list[str] = []
        t_end = time.monotonic() + 4.0
        seq = 100
        while time.monotonic() < t_end:
            later += fill(db, [event("lk01", seq + k) for k in range(20)])
            seq += 20
            time.sleep(0.2)
        n_before = len(uplink.central.events)
        assert n_before == len(first)
        assert log.of("sync_failed")
        assert syncer.stats["probes_failed"] >= 8
        t_up = time.time()
        uplink.link.up()
        assert uplink.central.wait_ids(later, 10)
        resumed = log.wait("sync_resumed", 5)
    probe = [x for x in log.of("sync_probe_ok") if x["t"] >= t_up][0]
    assert probe["link_was_down"]
    first_after = min(b.at for b in uplink.central.batches if b.at >= t_up)
    assert first_after - probe["t"] <= 1.0
    assert first_after - t_up <= 0.3 + 1.0
    assert resumed["after_probe_s"] <= 1.0
    assert sorted(uplink.central.events) == sorted(first + later)
    assert backlog(db)["count"] == 0


@pytest.mark.slow
def test_central_down_slow_and_erroring_degrades_and_recovers(tmp_path: Path, uplink: Uplink) -> None:
    db = tmp_path / "gw.db"
    c = uplink.central
    produced: list[str] = []
    stop_feed = threading.Event()

    def feed() -> None:
        seq = 1
        while not stop_feed.is_set():
            produced.extend(fill(db, [event("sc01", seq + k, etype="scanner.scan") for k in range(10)]))
            seq += 10
            time.sleep(0.1)

    failed_before = M.REGISTRY.get_sample_value("postedge_sync_batches_total", {"outcome": "failed"}) or 0
    with syncing(db, uplink.upstream(timeout_s=0.8, backoff_cap_s=0.6)) as (_, log):
        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            time.sleep(0.5)
            c.fail = True  # HTTP 500 / no ack
            time.sleep(2.0)
            c.fail = False
            c.delay_s = 1.5  # slower than the gateway's timeout
            time.sleep(2.5)
            c.delay_s = 0.0
            if uplink.https:  # the platform itself down: connection refused
                uplink.https.down()
                time.sleep(1.5)
                uplink.https.up()
            else:
                assert uplink.broker is not None
                uplink.broker.stop()
                time.sleep(1.5)
                uplink.broker.start()
            time.sleep(0.5)
        finally:
            stop_feed.set()
            feeder.join()
        assert c.wait_ids(produced, 30), f"{len(set(produced) - c.events.keys())} events missing"
        deadline = time.monotonic() + 10
        while backlog(db)["count"] and time.monotonic() < deadline:
            time.sleep(0.05)
    reasons = {x["reason"] for x in log.of("sync_failed")}
    assert "timeout" in reasons
    if uplink.kind == "https":
        assert "http_500" in reasons and reasons & {"refused", "connection"}
    assert log.of("sync_resumed")
    failed_after = M.REGISTRY.get_sample_value("postedge_sync_batches_total", {"outcome": "failed"}) or 0
    assert failed_after > failed_before
    assert sorted(c.events) == sorted(produced)  # nothing lost, one copy each
    assert backlog(db)["count"] == 0
    assert not c.bad_batches


def test_database_locked_while_marking_is_retried(tmp_path: Path, https_uplink: Uplink) -> None:
    db = tmp_path / "gw.db"
    fill(db, [event("lk01", 1)])
    with syncing(db, https_uplink.upstream()) as (_, log):
        log.wait("sync_batch", 5)
        # Another writer (as a long ingest transaction would) commits new
        # events and at once takes the write lock again, so the syncer can
        # read and send them but not mark them synced.
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        ids = [event("lk01", i) for i in range(2, 12)]
        for e in ids:
            holder.execute("INSERT INTO events(id,outlet,kind,device,inc,seq,cls,type,ts,received_at,"
                           "payload,size) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                           (e.id, e.outlet, e.kind, e.device, e.inc, e.seq, e.cls, e.type, e.ts, time.time(),
                            e.payload, len(e.payload)))
        holder.execute("COMMIT")
        holder.execute("BEGIN IMMEDIATE")
        assert https_uplink.central.wait_ids([e.id for e in ids], 5)  # sent and acked...
        busy = log.wait("sync_db_busy", 5)  # ...but the mark waits for the lock
        time.sleep(1.5)
        assert unsynced_ids(db) == {e.id for e in ids}
        holder.execute("COMMIT")
        holder.close()
        deadline = time.monotonic() + 10
        while backlog(db)["count"] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert busy["call"] == "mark_synced"
    assert backlog(db)["count"] == 0
    assert not log.of("sync_error")


# -------------------------------------------------------------- bandwidth
def test_bandwidth_cap_is_respected(tmp_path: Path, https_uplink: Uplink) -> None:
    db = tmp_path / "gw.db"
    rng = random.Random(2)
    ids = fill(db, [event("hh01", i, etype="handheld.photo", cls="audit", body=noisy(rng))
                    for i in range(1, 1601)])
    cap = 50_000
    link = https_uplink.link
    with syncing(db, https_uplink.upstream(bandwidth_bytes_per_s=cap, batch_max_events=200)):
        assert https_uplink.central.wait_ids(ids, 30)
    batches = https_uplink.central.batches
    assert len(batches) >= 5
    # what the uncapped link would carry in one go takes seconds instead
    span = batches[-1].at - batches[0].at
    body_rate = sum(b.wire_bytes for b in batches[:-1]) / span
    assert body_rate <= cap * 1.05, body_rate
    # measured on the wire (TLS records, HTTP headers, acks excluded):
    # everything after the first batch, over the time it took
    wire_rate = (link.up_bytes - batches[0].wire_bytes - 3000) / span
    assert wire_rate <= cap * 1.1, wire_rate
    assert body_rate >= cap * 0.6, body_rate  # paced, not stalled


# --------------------------------------------------------------------- TLS
@pytest.mark.parametrize("transport", ["https", "mqtt"])
@pytest.mark.parametrize("which", ["rogue", "wronghost"])
def test_untrusted_certificate_refused_and_never_plaintext(tmp_path: Path, certs: Certs, transport: str,
                                                           which: str) -> None:
    central = UplinkDouble()
    cert, key = (certs.rogue_cert, certs.rogue_key) if which == "rogue" else \
        (certs.wronghost_cert, certs.wronghost_key)
    srv = UplinkDoubleHttps(central, cert, key).up()
    db = tmp_path / "gw.db"
    ids = fill(db, [event("lk01", i) for i in range(1, 6)])
    url = srv.url if transport == "https" else f"mqtts://127.0.0.1:{srv.port}"
    try:
        up = {"url": url, "ca_file": str(certs.ca), **FAST, "backoff_cap_s": 0.2, "probe_interval_s": 0.1}
        if transport == "mqtt":
            up.update(username=GW_USER, password=GW_PASS)
        with syncing(db, up) as (_, log):
            time.sleep(1.5)
    finally:
        srv.down()
    failed = log.of("sync_failed")
    assert failed and failed[0]["reason"] == "tls_verify"
    assert "certificate" in failed[0]["error"] or "Hostname" in failed[0]["error"]
    # tried again and again, every time with a TLS ClientHello (0x16), never
    # an HTTP request line or an MQTT CONNECT (0x10) in the clear
    assert len(srv.first_bytes) >= 3
    assert set(srv.first_bytes) == {b"\x16"}
    assert central.batches == [] and not log.of("sync_batch")
    assert unsynced_ids(db) == set(ids)


def test_client_certificate_when_the_platform_requires_one(tmp_path: Path, certs: Certs) -> None:
    central = UplinkDouble()
    srv = UplinkDoubleHttps(central, certs.server_cert, certs.server_key, client_ca=certs.ca).up()
    db = tmp_path / "gw.db"
    ids = fill(db, [event("lk01", i) for i in range(1, 6)])
    try:
        with syncing(db, {"url": srv.url, "ca_file": str(certs.ca), **FAST}) as (_, log):
            log.wait("sync_failed", 5)
        assert central.batches == []
        up = {"url": srv.url, "ca_file": str(certs.ca), "cert_file": str(certs.client_cert),
              "key_file": str(certs.client_key), **FAST}
        with syncing(db, up):
            assert central.wait_ids(ids, 10)
    finally:
        srv.down()


# ------------------------------------------------------------------- codec
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**53 - 1), 2**53 - 1), st.text(max_size=12),
                      st.lists(st.integers(0, 9), max_size=3))
bodies = st.recursive(json_leaf, lambda inner: st.dictionaries(st.text(max_size=6), inner, max_size=4),
                      max_leaves=8).filter(lambda b: isinstance(b, dict))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["lk01", "sc01", "hh-02"]), st.integers(1, 10**6),
                          st.sampled_from(["custody", "alarm", "status"]), bodies, st.booleans()),
                min_size=1, max_size=25, unique_by=lambda t: (t[0], t[1])))
@pytest.mark.slow
def test_codec_rebuilds_every_event_byte_for_byte(rows: list[tuple[str, int, str, dict, bool]]) -> None:
    pairs = []
    for dev, seq, cls, body, canonical_form in rows:
        eid = format_event_id(dev, INC, seq)
        env = envelope.make(eid, 1795881163 + seq % 977, "t.x", cls, body, boot=seq % 3)
        payload = envelope.encode(env)
        if not canonical_form:  # as some firmware might send it: valid, not canonical
            payload = json.dumps(json.loads(payload), indent=1, ensure_ascii=False).encode()
            envelope.decode(payload)
        pairs.append((eid, payload))
    batch = encode_batch("o1", "bulk", pairs)
    got = decode_batch(batch.body)
    assert got.id == batch.id == batch_id([p[0] for p in pairs])
    assert sorted(got.events) == sorted(pairs)
    ack = decode_ack(encode_ack(batch.id, [p[0] for p in pairs[::2]]))
    assert ack.acked_of(batch.ids) == [p[0] for p in pairs[::2]]
    whole = encode_ack(batch.id, [p[0] for p in pairs], batch_ids=batch.ids)
    assert decode_ack(whole).all and decode_ack(whole).acked_of(batch.ids) == batch.ids
    # "all" of one batch never covers another set of ids
    assert len(pairs) < 2 or decode_ack(whole).acked_of(batch.ids[1:]) == []


def test_codec_refuses_tampered_and_oversized_batches() -> None:
    pairs = [(e.id, e.payload) for e in (event("lk01", i) for i in range(1, 50))]
    body = encode_batch("o1", "bulk", pairs).body
    doc = json.loads(zlib.decompress(body))
    doc["groups"][0]["seq"][3] += 1  # an event id changed in transit
    with pytest.raises(BatchError, match="batch id"):
        decode_batch(zlib.compress(json.dumps(doc).encode()))
    with pytest.raises(BatchError, match="truncated"):
        decode_batch(body[:-5])
    with pytest.raises(BatchError, match="size limit"):
        decode_batch(body, max_decoded=1000)
    with pytest.raises(BatchError):
        decode_batch(b"GET / HTTP/1.1")


# ------------------------------------------------- SIGKILLs of the gateway
class Device(threading.Thread):
    """A device publishing valid envelopes at QoS 1 until stopped."""

    def __init__(self, port: int, name: str, kind: str, password: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.name_, self.kind = name, kind
        self.rng = random.Random(seed)
        self.inc = f"{self.rng.getrandbits(32):08x}"
        self.sent: list[str] = []
        self.halt = threading.Event()
        self.error: BaseException | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(name, password)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def run(self) -> None:
        topic = topics.build("o1", self.kind, self.name_, "evt")
        seq = 0
        try:
            while not self.halt.is_set():
                seq += 1
                eid = format_event_id(self.name_, self.inc, seq)
                r = self.rng.random()
                if r < 0.05:
                    etype, cls, body = f"{self.kind}.alarm", "alarm", {"alarm": "door_left_open", "n": seq}
                elif r < 0.25:
                    etype, cls, body = f"{self.kind}.door", "status", {"compartment": seq % 24 + 1}
                else:
                    etype, cls, body = f"{self.kind}.deposit", "custody", {"parcel": "RB123456785CN",
                                                                           "compartment": seq % 24 + 1}
                env = envelope.make(eid, int(time.time()), etype, cls, body, boot=1)
                info = self.client.publish(topic, envelope.encode(env), qos=1)
                info.wait_for_publish(10)
                if not info.is_published():
                    raise TimeoutError(f"no PUBACK for {eid}")
                self.sent.append(eid)
                time.sleep(self.rng.uniform(0, 0.01))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def stop(self) -> None:
        self.halt.set()
        self.join(15)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.slow
def test_sigkill_gateway_20_times_while_ingesting_and_syncing(tmp_path: Path, broker: Mosquitto,
                                                              certs: Certs) -> None:
    rng = random.Random(4)
    central = UplinkDouble()
    central.delay_fn = lambda: rng.choice([0.0, 0.0, 0.0, 0.02, 0.05, 0.3])
    https = UplinkDoubleHttps(central, certs.server_cert, certs.server_key).up()
    cbroker = CentralBroker(tmp_path / "central-broker", certs, [(GW_USER, GW_PASS, "o1")])
    cbroker.start()
    acker = CentralMqtt(central, cbroker.port, certs.ca, *cbroker.acker).start()
    common = {"ca_file": str(certs.ca), "batch_max_events": 100, "batch_max_age_s": 0.2,
              "backoff_base_s": 0.05, "backoff_cap_s": 0.5, "probe_interval_s": 0.2, "timeout_s": 2.0}
    configs = [
        gateway_toml(tmp_path / "gw-https.toml", broker, {"url": https.url, **common}),
        gateway_toml(tmp_path / "gw-mqtt.toml", broker, {"url": f"mqtts://127.0.0.1:{cbroker.port}",
                                                         "username": GW_USER, "password": GW_PASS, **common}),
    ]
    devices = [Device(broker.port, "lk01", "locker", "lk01-pw", 1),
               Device(broker.port, "sc01", "scanner", "sc01-pw", 2)]
    logs: list[Path] = []

    def start_gateway(i: int) -> subprocess.Popen[bytes]:
        out = tmp_path / f"gw-{i}.log"
        logs.append(out)
        with open(out, "wb") as f:
            return subprocess.Popen([sys.executable, "-m", "postedge.cli", "gateway", "run", "--config",
                                     str(configs[i % 2])], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)

    kills = 0
    try:
        for i in range(22):
            gw = start_gateway(i)
            if i == 0:
                # The gateway's persistent session must exist before devices
                # publish, as it does at any outlet in service: until then the
                # broker has no subscriber to keep their events for.
                deadline = time.monotonic() + 20
                while '"gateway_started"' not in logs[0].read_text():
                    assert time.monotonic() < deadline and gw.poll() is None, logs[0].read_text()
                    time.sleep(0.05)
                for d in devices:
                    d.start()
            time.sleep(rng.uniform(0.4, 1.8))
            os.kill(gw.pid, signal.SIGKILL)
            gw.wait()
            kills += 1
        for d in devices:
            d.stop()
            assert d.error is None, d.error
        published = [e for d in devices for e in d.sent]
        gw = start_gateway(99)
        try:
            ok = central.wait_ids(published, 60)
            deadline = time.monotonic() + 20
            while (not (tmp_path / "gateway.db").exists() or backlog(tmp_path / "gateway.db")["count"]) \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            gw.send_signal(signal.SIGTERM)
            rc = gw.wait(20)
    finally:
        acker.stop()
        cbroker.kill()
        https.down()
    assert kills >= 20
    missing = set(published) - central.events.keys()
    assert ok and not missing, f"{len(missing)} of {len(published)} never reached the central side"
    assert rc == 0, logs[-1].read_text()[-2000:]
    # after dedup, exactly once: the ledger holds each published id once and
    # no other device event (the gateway's own events may travel beside them)
    from_devices = sorted(i for i in central.events if i.split(":")[0] in ("lk01", "sc01"))
    assert from_devices == sorted(published)
    assert not central.bad_batches and not central.quarantine
    # the gateway stored each exactly once and knows every one is synced
    s = EventStore(tmp_path / "gateway.db")
    try:
        assert sum(1 for r in s.events() if r["device"] in ("lk01", "sc01")) == len(published)
        assert s.backlog()["count"] == 0
    finally:
        s.close()
    # the kills really landed while the gateway was syncing
    syncing_runs = sum('"sync_batch"' in p.read_text() for p in logs[:-1])
    assert syncing_runs >= 10, syncing_runs
    assert len(published) > 1000
