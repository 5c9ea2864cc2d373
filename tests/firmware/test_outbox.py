"""The flash outbox (firmware/outbox.py): durability across reboots and power
cuts at every byte, corruption, delivery marks, capacity and eviction, a
random-operation model check on CPython, and the same file logic on the
MicroPython unix port under a device-sized heap."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from firmware import outbox as ob_mod
from firmware.outbox import HDR, MAGIC, Outbox, OutboxFull
from protocol import envelope
from simulator import unixport

TOPIC = "pe/v1/o1/locker/lk01/evt"
TESTS = Path(__file__).parent


def env_bytes(i: int, cls: str, pad: int = 0) -> bytes:
    env = envelope.make(f"lk01:3fa2c0de:{i + 1}", 1795881163 + i, "locker.test", cls,
                        {"n": i, "pad": "x" * pad})
    return envelope.encode(env)


def rec_size(payload: bytes, topic: str = TOPIC) -> int:
    return HDR + len(topic.encode()) + len(payload)


def seqs(ob: Outbox) -> list[int]:
    return [r[0] for r in ob.pending(10_000)]


def segs(root: Path) -> list[Path]:
    return sorted(root.glob("*.seg"), key=lambda p: int(p.stem))


class PowerCut(Exception):
    pass


class CutFile:
    """A real file that lets only `budget[0]` more bytes through, then
    'loses power' (raises) - what reached the file stays, as on flash."""

    def __init__(self, f, budget: list[int]) -> None:
        self.f = f
        self.budget = budget

    def write(self, data: bytes) -> int:
        n = min(len(data), self.budget[0])
        self.f.write(data[:n])
        self.f.flush()
        self.budget[0] -= n
        if n < len(data):
            raise PowerCut(f"power cut after {n} bytes")
        return n

    def flush(self) -> None:
        self.f.flush()

    def fileno(self) -> int:
        return self.f.fileno()

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> CutFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


class CuttableOutbox(Outbox):
    """Every segment write goes through CutFile when `budget` is set."""

    budget: list[int] | None = None
    only: str = ""

    def _open(self, path, mode):
        f = open(path, mode)
        if self.budget is not None and self.only in path:
            return CutFile(f, self.budget)
        return f


# --------------------------------------------------------------------------
# basics


def test_class_codes_cover_the_protocol_classes() -> None:
    assert set(ob_mod.CODES) == set(envelope.CLASSES)
    assert set(envelope.NEVER_EVICT) == {"custody", "alarm", "audit"}
    # pinned on flash: reordering them would misread every stored record
    assert ob_mod.CODES == ("custody", "alarm", "audit", "status", "telemetry")
    assert MAGIC[0] == 0xFE  # never a byte of UTF-8 text


def test_round_trip_across_reboots(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = Outbox(str(root), segment_size=1024)
    sent = {}
    for i in range(40):
        cls = ("telemetry", "custody", "status", "audit", "alarm")[i % 5]
        p = env_bytes(i, cls, pad=i)
        s = ob.append(cls, TOPIC, p)
        sent[s] = (s, cls, TOPIC, p)
    ob.flush()
    assert ob.durable_seq == max(sent)
    got = ob.pending(1000)
    assert got == [sent[s] for s in sorted(sent)]
    assert len(segs(root)) > 1, "40 records of ~150 B must span several 1 KiB segments"
    ob = Outbox(str(root), segment_size=1024)  # reboot
    assert ob.pending(1000) == got
    assert ob.pending(3) == got[:3]
    assert ob.pending(3, after=got[10][0]) == got[11:14]
    # out-of-order delivery, then a clean shutdown
    done = set(list(sent)[::3]) | {got[-1][0]}
    for s in sorted(done, reverse=True):
        assert ob.mark_delivered(s)
    assert not ob.mark_delivered(got[-1][0]), "already delivered"
    assert not ob.mark_delivered(10_000), "unknown"
    ob.close()
    ob = Outbox(str(root), segment_size=1024)
    assert ob.pending(1000) == [sent[s] for s in sorted(sent) if s not in done]
    assert ob.stats["torn"] == ob.stats["corrupt"] == ob.stats["meta_corrupt"] == 0
    s = ob.append("custody", TOPIC, env_bytes(99, "custody"))
    assert s > max(sent)
    assert ob.durable_seq == s


def test_batching_and_what_is_acked(tmp_path: Path) -> None:
    root = str(tmp_path / "ob")
    ob = Outbox(root, batch_records=4, batch_ms=1000)
    a = ob.append("telemetry", TOPIC, env_bytes(1, "telemetry"))
    b = ob.append("status", TOPIC, env_bytes(2, "status"))
    assert ob.durable_seq < a and ob.buffered == 2
    assert ob.pending() == [], "only durable records are offered"
    assert not ob.poll(now=ob._buf_t0 + 999)
    assert ob.poll(now=ob._buf_t0 + 1000)
    assert ob.durable_seq == b and ob.stats["flushes"] == 1
    # telemetry waits for a batch; a custody record flushes it all in one write
    t = [ob.append("telemetry", TOPIC, env_bytes(i, "telemetry")) for i in range(3, 6)]
    assert ob.durable_seq == b and ob.buffered == 3
    c = ob.append("custody", TOPIC, env_bytes(6, "custody"))
    assert ob.durable_seq == c and ob.buffered == 0 and ob.stats["flushes"] == 2
    # batch_records reached -> flushed without being asked
    more = [ob.append("telemetry", TOPIC, env_bytes(i, "telemetry")) for i in range(7, 11)]
    assert ob.durable_seq == more[-1] and ob.stats["flushes"] == 3
    lost = ob.append("telemetry", TOPIC, env_bytes(11, "telemetry"))
    audit = ob.append("audit", TOPIC, env_bytes(12, "audit"), sync=False)
    assert ob.durable_seq < lost
    # power cut: records not yet flushed were never acked and are gone
    ob = Outbox(root)
    assert seqs(ob) == [a, b, *t, c, *more]
    assert ob.append("alarm", TOPIC, b"{}") > audit


def test_append_rejects_bad_input(tmp_path: Path) -> None:
    ob = Outbox(str(tmp_path / "ob"), segment_size=1024)
    with pytest.raises(ValueError):
        ob.append("gossip", TOPIC, b"{}")
    with pytest.raises(ValueError):
        ob.append("custody", "t" * 256, b"{}")
    with pytest.raises(ValueError):
        ob.append("custody", TOPIC.encode(), b"{}")
    with pytest.raises(ValueError):
        ob.append("custody", TOPIC, b"x" * 1024)
    assert ob.next_seq == 1 and ob.pending() == []


# --------------------------------------------------------------------------
# power cuts and corruption


def _fill(root: Path, n: int, segment_size: int = 4096) -> tuple[list[tuple], set[int]]:
    """n records (some delivered and committed); returns (all, delivered)."""
    ob = Outbox(str(root), segment_size=segment_size, meta_batch=1000)
    allr = []
    for i in range(n):
        cls = ("custody", "telemetry", "audit", "status")[i % 4]
        p = env_bytes(i, cls, pad=(7 * i) % 40)
        allr.append((ob.append(cls, TOPIC, p), cls, TOPIC, p))
    ob.flush()
    delivered = {allr[1][0], allr[2][0], allr[5][0]}
    for s in delivered:
        ob.mark_delivered(s)
    ob.commit()
    return allr, delivered


@pytest.mark.parametrize("new_segment", [False, True], ids=["same-segment", "new-segment"])
def test_power_cut_at_every_byte_of_the_last_record(tmp_path: Path, new_segment: bool) -> None:
    root = tmp_path / "ob"
    allr, delivered = _fill(root, 8)
    ob = Outbox(str(root), segment_size=4096)
    if new_segment:  # the last record opens a segment of its own
        ob.segment_size = ob._segs[-1].size + 1
    last_p = env_bytes(100, "custody", pad=20)
    last = ob.append("custody", TOPIC, last_p)
    head = segs(root)[-1]
    end = head.stat().st_size
    start = end - rec_size(last_p)
    assert (start == 0) == new_segment
    expect = [r for r in allr if r[0] not in delivered]
    snap = tmp_path / "snap"
    shutil.copytree(root, snap)
    for cut in range(start, end + 1):
        shutil.rmtree(root)
        shutil.copytree(snap, root)
        with open(head, "r+b") as f:
            f.truncate(cut)
        ob = Outbox(str(root), segment_size=4096)
        got = ob.pending(100)
        if cut == end:
            assert got == expect + [(last, "custody", TOPIC, last_p)]
            assert ob.stats["torn"] == 0
            continue
        assert got == expect, f"cut at {cut}: an acked record was lost or a delivered one came back"
        assert ob.stats["torn"] == (1 if cut > start else 0)
        assert ob.stats["torn_bytes"] == cut - start
        assert ob.stats["corrupt"] == 0 and not ob.alarm_pending
        assert (head.stat().st_size if head.exists() else 0) == start, "torn bytes cut off"
        s = ob.append("custody", TOPIC, b'{"after":1}')
        assert s > allr[-1][0]
        ob = Outbox(str(root), segment_size=4096)
        assert ob.stats["torn"] == 0
        assert ob.pending(100) == expect + [(s, "custody", TOPIC, b'{"after":1}')]


def test_corruption_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    allr, delivered = _fill(root, 8)
    head = segs(root)[-1]
    data = head.read_bytes()
    meta = (root / "meta").read_bytes()
    start = len(data) - rec_size(allr[-1][3])
    expect = [r for r in allr[:-1] if r[0] not in delivered]
    for pos in range(start, len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        head.write_bytes(bytes(bad))
        (root / "meta").write_bytes(meta)
        ob = Outbox(str(root), segment_size=4096)
        assert ob.pending(100) == expect, f"flip at {pos}"
        assert ob.stats["torn"] == 1 and ob.stats["corrupt"] == 0
        assert head.stat().st_size == start
        s = ob.append("custody", TOPIC, b"{}")
        assert s > allr[-1][0]
        assert Outbox(str(root), segment_size=4096).pending(100) == expect + [(s, "custody", TOPIC, b"{}")]


def test_corruption_at_every_byte_of_a_middle_record(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    allr, delivered = _fill(root, 8)
    head = segs(root)[0]
    data = head.read_bytes()
    sizes = [rec_size(r[3]) for r in allr]
    victim = 3  # an audit record, never evicted: its loss must be reported
    start = sum(sizes[:victim])
    meta = (root / "meta").read_bytes()
    for pos in range(start, start + sizes[victim]):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        head.write_bytes(bytes(bad))
        (root / "meta").write_bytes(meta)
        ob = Outbox(str(root), segment_size=4096)
        got = ob.pending(100)
        assert got == [r for r in allr if r[0] not in delivered and r is not allr[victim]], pos
        assert ob.stats["corrupt"] == 1 and ob.stats["torn"] == 0
        assert ob.stats["corrupt_bytes"] == sizes[victim]
        assert ob.take_alarm() == {"evicted": 0, "refused": 0, "lost": 1}
        ob.commit()
        ob = Outbox(str(root), segment_size=4096)  # the bad bytes were rewritten away
        assert ob.stats["corrupt"] == 0 and not ob.alarm_pending
        assert ob.pending(100) == got
        head.write_bytes(data)


def test_resync_finds_a_header_that_straddles_a_read_chunk(tmp_path: Path) -> None:
    # the scan after a bad record reads 256-byte chunks from the byte after
    # it; a 256-byte bad record puts the next header's magic across two chunks
    root = tmp_path / "ob"
    ob = Outbox(str(root))
    pad = 0
    while rec_size(env_bytes(1, "custody", pad)) < 256:
        pad += 1
    victim = env_bytes(1, "custody", pad)
    assert rec_size(victim) == 256
    s = [ob.append("custody", TOPIC, p) for p in (env_bytes(0, "custody"), victim,
                                                   env_bytes(2, "custody"), env_bytes(3, "custody"))]
    head = segs(root)[0]
    data = bytearray(head.read_bytes())
    data[rec_size(env_bytes(0, "custody")) + 100] ^= 1
    head.write_bytes(bytes(data))
    ob = Outbox(str(root))
    assert seqs(ob) == [s[0], s[2], s[3]]
    assert ob.stats["corrupt_bytes"] == 256


def test_lost_alarm_survives_a_reboot_until_taken(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    allr, _ = _fill(root, 6)
    head = segs(root)[0]
    data = bytearray(head.read_bytes())
    data[HDR + 3] ^= 1  # inside the first record's topic
    head.write_bytes(bytes(data))
    Outbox(str(root))  # finds it, records the alarm, power goes
    ob = Outbox(str(root))
    assert ob.stats["corrupt"] == 0
    assert ob.take_alarm() == {"evicted": 0, "refused": 0, "lost": 1}
    ob.commit()
    assert not Outbox(str(root)).alarm_pending


def test_garbage_files_never_raise(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    allr, delivered = _fill(root, 8)
    rng = random.Random(7)
    (root / "999999.seg").write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    (root / "junk.seg").write_bytes(b"\xfe\x01" * 50)
    (root / "7.seg.tmp").write_bytes(b"half a rewrite")
    (root / "notes.txt").write_text("hello")
    (root / "meta").write_bytes(b"\xff\xfe garbage")
    ob = Outbox(str(root))
    assert ob.stats["meta_corrupt"] == 1
    # a corrupt meta forgets delivery marks: everything is delivered again
    assert ob.pending(100) == allr
    assert not (root / "7.seg.tmp").exists()
    assert not (root / "999999.seg").exists(), "a segment with no valid record is dropped"
    assert ob.next_seq > 999999, "seq numbers never go back below a segment's name"
    ob.close()
    ob = Outbox(str(root))
    assert ob.stats["meta_corrupt"] == 0 and ob.pending(100) == allr


def test_a_corrupt_meta_forgets_marks_rather_than_inventing_them(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    allr, delivered = _fill(root, 8)
    meta = (root / "meta").read_bytes()
    first = meta.split(b"\n")[0].split()
    assert first[0] == b"OBM1" and int(first[2]) == 0  # base: record 1 is undelivered
    # a flipped bit that still parses would mark records 1-9 delivered
    (root / "meta").write_bytes(meta.replace(b" 0 ", b" 9 ", 1))
    ob = Outbox(str(root))
    assert ob.stats["meta_corrupt"] == 1
    assert ob.pending(100) == allr


@pytest.mark.slow
def test_power_cut_at_every_byte_of_a_batched_flush(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = CuttableOutbox(str(root), segment_size=1024)
    acked = [ob.append("custody", TOPIC, env_bytes(i, "custody")) for i in range(3)]
    snap = tmp_path / "snap"
    shutil.copytree(root, snap)
    batch = [env_bytes(10 + i, "telemetry", pad=30) for i in range(8)]
    total = sum(rec_size(p) for p in batch)
    for cut in range(total + 1):
        shutil.rmtree(root)
        shutil.copytree(snap, root)
        ob = CuttableOutbox(str(root), segment_size=1024, batch_records=100)
        new = [ob.append("telemetry", TOPIC, p) for p in batch]
        ob.budget = [cut]
        try:
            ob.flush()
        except PowerCut:
            assert cut < total
        ob = Outbox(str(root), segment_size=1024)
        got = seqs(ob)
        assert got[:3] == acked, "acked records survive"
        assert got[3:] == new[: len(got) - 3], "a prefix of the unacked batch, in order"
        assert ob.stats["corrupt"] == 0 and ob.stats["torn"] <= 1
        if cut >= total:
            assert got[3:] == new
    assert len(segs(root)) > 1, "the batch spans two segments"


def test_write_error_then_retry_leaves_no_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = CuttableOutbox(str(root), segment_size=4096, batch_records=100)
    ob.append("custody", TOPIC, env_bytes(0, "custody"))
    new = [ob.append("telemetry", TOPIC, env_bytes(i, "telemetry")) for i in range(1, 6)]
    half = sum(rec_size(env_bytes(i, "telemetry")) for i in range(1, 4)) + 5
    ob.budget = [half]
    with pytest.raises(PowerCut):
        ob.flush()
    ob.budget = None
    assert ob.flush() == new[-1]  # retried in a fresh segment
    assert seqs(ob) == [1, *new]
    ob = Outbox(str(root), segment_size=4096)
    assert seqs(ob) == [1, *new]
    assert ob.stats["duplicates"] == 3 and ob.stats["torn"] == 1


# --------------------------------------------------------------------------
# delivery marks


def test_delivery_marks_are_batched_and_a_lost_batch_only_redelivers(tmp_path: Path) -> None:
    root = str(tmp_path / "ob")
    ob = Outbox(root, meta_batch=4)
    s = [ob.append("custody", TOPIC, env_bytes(i, "custody")) for i in range(10)]
    writes = ob.stats["meta_writes"]
    for x in (s[1], s[3], s[5]):
        ob.mark_delivered(x)
    assert ob.stats["meta_writes"] == writes
    ob = Outbox(root, meta_batch=4)  # power cut before the marks were written
    assert seqs(ob) == s, "redelivered, not lost"
    for x in (s[1], s[3], s[5]):
        ob.mark_delivered(x)
    assert ob.stats["meta_writes"] == 0
    ob.mark_delivered(s[6])
    assert ob.stats["meta_writes"] == 1, "the 4th mark writes them"
    ob.mark_delivered(s[0])
    ob = Outbox(root, meta_batch=4)
    assert seqs(ob) == [s[0], s[2], s[4], *s[7:]]
    assert ob.mark_delivered_through(s[4]) == 3
    ob.commit()
    meta = (tmp_path / "ob" / "meta").read_text()
    assert meta.split("\n")[0].split()[2] == str(s[6]), "base advanced over the delivered prefix"
    ob = Outbox(root)
    assert seqs(ob) == s[7:]


def test_a_meta_write_never_covers_records_still_in_the_ram_batch(tmp_path: Path) -> None:
    root = str(tmp_path / "ob")
    ob = Outbox(root, batch_records=100)
    c = ob.append("custody", TOPIC, env_bytes(0, "custody"))
    ob.mark_delivered(c)  # nothing durable is pending now
    t = [ob.append("telemetry", TOPIC, env_bytes(i, "telemetry")) for i in range(1, 3)]
    ob.commit()  # meta written while t sits in RAM
    ob.flush()  # t acked
    ob = Outbox(root)  # power cut
    assert seqs(ob) == t


def test_everything_delivered_deletes_segments_and_seq_keeps_counting(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    last = 0
    for boot in range(6):
        ob = Outbox(str(root), segment_size=512)
        assert ob.pending(100) == []
        new = [ob.append("custody", TOPIC, env_bytes(i, "custody")) for i in range(boot + 3)]
        assert new[0] > last and new == sorted(new)
        last = new[-1]
        for x in reversed(new):
            ob.mark_delivered(x)
        ob.close()
        assert segs(root) == []


def test_meta_write_cut_midway_keeps_the_old_marks(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = Outbox(str(root))
    s = [ob.append("custody", TOPIC, env_bytes(i, "custody")) for i in range(5)]
    ob.mark_delivered(s[0])
    ob.commit()
    ob.mark_delivered(s[1])
    # FileStorage writes meta.tmp then renames: a cut leaves a partial tmp
    (root / "meta.tmp").write_bytes(b"OBM1 9 ")
    ob = Outbox(str(root))
    assert seqs(ob) == s[1:]
    assert ob.stats["meta_corrupt"] == 0


# --------------------------------------------------------------------------
# capacity


def small(root: Path, **kw) -> Outbox:
    args = {"capacity": 8192, "segment_size": 1024, "reserve": 512, "evict_slack": 0}
    args.update(kw)
    return Outbox(str(root), **args)


def test_full_evicts_oldest_telemetry_never_custody(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = small(root)
    kinds = {}
    for i in range(200):
        cls = "custody" if i % 5 == 0 else ("telemetry" if i % 2 else "status")
        s = ob.append(cls, TOPIC, env_bytes(i, cls, pad=20))
        kinds[s] = cls
        assert ob.used <= ob.capacity - ob.reserve
    ob.flush()
    have = seqs(ob)
    custody = [s for s, c in kinds.items() if c == "custody"]
    assert set(custody) <= set(have), "custody is never evicted"
    evictable = [s for s, c in kinds.items() if c != "custody"]
    gone = [s for s in evictable if s not in have]
    assert gone and gone == evictable[: len(gone)], "oldest evictable records go first"
    assert ob.alarm_pending
    a = ob.take_alarm()
    assert a["evicted"] == len(gone) == ob.stats["evicted"] and a["refused"] == 0
    assert ob.take_alarm() is None and not ob.alarm_pending
    ob.close()
    assert seqs(small(root)) == have
    assert sum(p.stat().st_size for p in segs(root)) <= 8192 - 512


def test_outbox_full_when_only_never_evict_records_remain(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = small(root)
    p = env_bytes(0, "custody", pad=100)
    stored = []
    with pytest.raises(OutboxFull):
        for _ in range(1000):
            stored.append(ob.append("custody", TOPIC, p))
    assert ob.live_bytes + rec_size(p) > ob.capacity - ob.reserve
    nxt = ob.next_seq
    assert ob.take_alarm() == {"evicted": 0, "refused": 1, "lost": 0}
    assert ob.nearly_full
    # the reserve keeps room for the alarm that says so
    al = ob.append("alarm", TOPIC, env_bytes(1, "alarm"))
    assert al == nxt, "a refused record takes no seq"
    assert seqs(ob) == stored + [al]
    # audit is never evicted either
    with pytest.raises(OutboxFull):
        ob.append("audit", TOPIC, p)
    assert ob.take_alarm() == {"evicted": 0, "refused": 1, "lost": 0}
    # delivering makes room again
    ob.mark_delivered(stored[0])
    ob.mark_delivered(stored[1])
    s = ob.append("custody", TOPIC, p)
    assert seqs(ob) == stored[2:] + [al, s]
    ob.close()
    ob = small(root)  # reboot: custody is all there
    assert seqs(ob) == stored[2:] + [al, s]
    assert ob.take_alarm() is None


def test_refusal_evicts_nothing_in_vain(tmp_path: Path) -> None:
    big = env_bytes(0, "custody", pad=400)
    tp = env_bytes(1, "telemetry")
    P, T, k, R = rec_size(big), rec_size(tp), 12, 512
    limit = (k + 1) * P + T + 1  # room for one more custody record if two telemetry go
    ob = small(tmp_path / "ob", capacity=limit + R, reserve=R)
    for _ in range(k):
        ob.append("custody", TOPIC, big)
    tel = [ob.append("telemetry", TOPIC, tp) for _ in range(3)]
    ob.flush()
    assert ob.stats["evicted"] == 0
    c = ob.append("custody", TOPIC, big)
    assert ob.stats["evicted"] == 2, "the two oldest telemetry records, no more"
    assert seqs(ob)[-2:] == [tel[2], c]
    before = seqs(ob)
    with pytest.raises(OutboxFull):
        ob.append("custody", TOPIC, big)  # would not fit even with all telemetry gone
    assert ob.stats["evicted"] == 2 and seqs(ob) == before
    assert ob.take_alarm() == {"evicted": 2, "refused": 1, "lost": 0}


def test_alarm_of_an_eviction_survives_a_power_cut(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = small(root)
    for i in range(120):
        ob.append("telemetry", TOPIC, env_bytes(i, "telemetry", pad=30))
    assert ob.stats["evicted"] > 0
    ob = small(root)  # no close
    a = ob.take_alarm()
    assert a is not None and a["evicted"] > 0


def test_evicted_records_stay_evicted_after_a_power_cut(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    # a big slack marks records in several segments, only some get rewritten
    ob = small(root, evict_slack=3000, meta_batch=1000, seq_block=10**6)
    i = 0
    while not ob.stats["evicted"]:
        ob.append("telemetry", TOPIC, env_bytes(i, "telemetry", pad=20))
        i += 1
    before = seqs(ob)
    evicted = ob.stats["evicted"]
    assert evicted > 10
    ob = small(root)  # power cut right after
    assert seqs(ob) == before
    assert ob.take_alarm()["evicted"] == evicted


def test_max_records_bounds_the_index(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = small(root, max_records=40)
    for i in range(100):
        ob.append("telemetry" if i % 3 else "custody", "t", b"%d" % i)
        assert sum(s.n() for s in ob._segs) + ob.buffered <= 40
    assert ob.stats["evicted"] > 0
    with pytest.raises(OutboxFull):
        for _ in range(100):
            ob.append("custody", "t", b"c")
    assert ob.count == 40 and {r[1] for r in ob.pending(100)} == {"custody"}


def test_rewrites_merge_small_segments(tmp_path: Path) -> None:
    # one custody record among five telemetry per 1 KiB segment: evicting the
    # telemetry leaves ~170 B per segment, which must not stay one file each
    root = tmp_path / "ob"
    ob = small(root)
    for i in range(200):
        cls = "custody" if i % 6 == 0 else "telemetry"
        ob.append(cls, TOPIC, env_bytes(i, cls, pad=20))
    ob.flush()
    files = segs(root)
    assert ob.stats["evicted"] > 100
    assert len(files) <= ob.used // (ob.segment_size // 2) + 2, [f.stat().st_size for f in files]


def test_refusals_do_not_wear_the_flash(tmp_path: Path) -> None:
    ob = small(tmp_path / "ob")
    p = env_bytes(0, "custody", pad=100)
    with pytest.raises(OutboxFull):
        while True:
            ob.append("custody", TOPIC, p)
    writes, flushes = ob.stats["meta_writes"], ob.stats["flushes"]
    for i in range(50):
        with pytest.raises(OutboxFull):
            ob.append("telemetry" if i % 2 else "custody", TOPIC, p)
    assert ob.stats["meta_writes"] - writes <= 1 and ob.stats["flushes"] == flushes
    assert ob.take_alarm()["refused"] == 51


@pytest.mark.slow
def test_long_run_stays_bounded(tmp_path: Path) -> None:
    # a backhaul that delivers custody late and telemetry never: files,
    # bytes and index entries stay bounded while rewrites make room
    root = tmp_path / "ob"
    ob = Outbox(str(root))
    rng = random.Random(3)
    custody = []
    max_files = 0
    for i in range(2500):
        cls = rng.choice(("custody", "telemetry", "telemetry", "status", "audit"))
        s = ob.append(cls, TOPIC, env_bytes(i, cls, pad=rng.randrange(150)))
        if cls == "custody":
            custody.append(s)
        if len(custody) > 30:
            ob.mark_delivered(custody.pop(rng.randrange(10)))
        if cls == "audit" and rng.random() < 0.5:
            ob.mark_delivered(s)
        assert ob.used <= ob.capacity - ob.reserve
        assert sum(x.n() for x in ob._segs) + ob.buffered <= ob.max_records
        max_files = max(max_files, len(segs(root)))
    assert ob.stats["evicted"] > 100 and ob.stats["rewrites"] > 10
    assert max_files <= 2 * ob.capacity // ob.segment_size + 2
    ob.close()
    got = seqs(ob)
    assert set(custody) <= set(got)
    assert seqs(Outbox(str(root))) == got


def test_nearly_full(tmp_path: Path) -> None:
    ob = small(tmp_path / "ob")
    p = env_bytes(0, "custody", pad=60)
    while not ob.nearly_full:
        ob.append("custody", TOPIC, p)
    assert ob.live_bytes * 100 >= 80 * ob.capacity
    assert (ob.live_bytes - rec_size(p)) * 100 < 80 * ob.capacity


def test_a_compaction_cut_by_power_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = small(root)
    for i in range(40):
        ob.append("custody", TOPIC, env_bytes(i, "custody", pad=20))
    ob.close()
    snap = tmp_path / "snap"
    shutil.copytree(root, snap)
    want = seqs(small(root))
    extra = env_bytes(999, "custody", pad=20)
    rewrites = 0
    for cut in list(range(0, 3000, 41)) + [10**6]:
        shutil.rmtree(root)
        shutil.copytree(snap, root)
        ob = CuttableOutbox(str(root), capacity=8192, segment_size=1024, reserve=512, evict_slack=0)
        for s in want[::2]:  # delivered: appending must rewrite segments to reclaim them
            ob.mark_delivered(s)
        ob.commit()
        ob.only = ".tmp"
        ob.budget = [cut]
        acked = []
        try:
            for _ in range(60):
                acked.append(ob.append("custody", TOPIC, extra))
        except PowerCut:
            pass
        except OutboxFull:
            assert cut == 10**6
        rewrites += ob.stats["rewrites"]
        ob = small(root)
        got = seqs(ob)
        assert got == want[1::2] + acked, f"cut at byte {cut} of the rewrites"
        assert ob.stats["corrupt"] == 0 and ob.stats["torn"] == 0
    assert rewrites > 10


def test_a_cut_between_rewrite_and_delete_leaves_only_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "ob"

    class NoDelete(Outbox):
        stop = False

        def _remove(self, path):
            # power goes right after the first rewrite's rename
            if self.stop and path.endswith(".seg") and self.stats["rewrites"]:
                raise PowerCut(path)
            super()._remove(path)

    ob = NoDelete(str(root), capacity=8192, segment_size=1024, reserve=512, evict_slack=0)
    kinds = {}
    for i in range(60):
        cls = "custody" if i % 3 == 0 else "telemetry"
        kinds[ob.append(cls, TOPIC, env_bytes(i, cls, pad=25))] = cls
    ob.flush()
    delivered = [s for s, c in kinds.items() if c == "telemetry"][:20]
    for s in delivered:
        ob.mark_delivered(s)
    ob.commit()
    before = seqs(ob)
    ob.stop = True
    with pytest.raises(PowerCut):
        for i in range(100):
            ob.append("custody", TOPIC, env_bytes(100 + i, "custody", pad=25))
    ob = Outbox(str(root), capacity=8192, segment_size=1024, reserve=512)
    assert ob.stats["duplicates"] > 0, "the merged-in segment was still there"
    got = seqs(ob)
    assert got == sorted(set(got)), "no record twice"
    assert not set(delivered) & set(got), "delivered records stay delivered"
    assert set(s for s in before if kinds[s] == "custody") <= set(got)


# --------------------------------------------------------------------------
# random operations against a model


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(ob_mod.CODES), st.integers(0, 200)),
        st.tuples(st.just("append"), st.sampled_from(ob_mod.CODES), st.integers(0, 200)),
        st.tuples(st.just("append"), st.sampled_from(ob_mod.CODES), st.integers(0, 200)),
        st.tuples(st.just("flush")),
        st.tuples(st.just("deliver"), st.integers(0, 50)),
        st.tuples(st.just("commit")),
        st.tuples(st.just("reboot")),
        st.tuples(st.just("crash")),
        st.tuples(st.just("torn_flush"), st.integers(0, 700)),
    ),
    min_size=30,
    max_size=120,
)

MODEL_KW = {"capacity": 2048, "segment_size": 512, "reserve": 256, "batch_records": 4,
            "meta_batch": 3, "max_records": 14, "seq_block": 8, "evict_slack": 64}


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_operations_against_a_model(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:
    root = str(tmp_path_factory.mktemp("ob"))
    kw = MODEL_KW
    ob = CuttableOutbox(root, **kw)
    content = {}  # seq -> (cls, payload): every record ever accepted
    alive = set()  # accepted, not delivered, not evicted (durable or in the RAM batch)
    unsure = set()  # delivered, mark perhaps not on flash yet
    delivered = set()  # delivered and the mark committed: must never come back
    evicted = set()
    last_seq = 0

    def size(s: int) -> int:
        return rec_size(content[s][1])

    def protected(s: int) -> bool:
        return content[s][0] in envelope.NEVER_EVICT

    for op in ops:
        kind = op[0]
        if kind == "append":
            cls, p = op[1], b"{%s}" % (b"x" * op[2])
            limit = kw["capacity"] - (0 if cls == "alarm" else kw["reserve"])
            prot = [s for s in alive if protected(s)]
            must_refuse = (sum(size(s) for s in prot) + rec_size(p) > limit
                           or len(prot) + 1 > kw["max_records"])
            try:
                s = ob.append(cls, TOPIC, p)
            except OutboxFull:
                assert must_refuse, "refused although evicting would make room"
                event("refused")
                continue
            assert not must_refuse, "stored beyond capacity"
            assert s > last_seq, "seqs strictly increase, across reboots too"
            last_seq = s
            content[s] = (cls, p)
            alive.add(s)
        elif kind == "flush":
            ob.flush()
        elif kind == "deliver":
            pend = ob.pending(100)
            if pend:
                s = pend[op[1] % len(pend)][0]
                assert ob.mark_delivered(s)
                alive.discard(s)
                unsure.add(s)
        elif kind == "commit":
            ob.commit()
            delivered |= unsure
            unsure.clear()
        else:  # reboot, crash, or a power cut in the middle of a flush
            if kind == "reboot":
                ob.close()
                delivered |= unsure
                unsure.clear()
            acked = ob.durable_seq
            cut = []
            if kind == "torn_flush":
                cut = sorted(s for s in alive if s > acked)
                ob.budget = [op[1]]
                try:
                    ob.flush()
                except PowerCut:
                    pass
            ob = CuttableOutbox(root, **kw)
            got = {r[0] for r in ob.pending(1000)}
            # marks not yet on flash may come back: pending again, not lost
            back = unsure & got
            alive |= back
            delivered |= unsure - back
            unsure.clear()
            survivors = [s for s in cut if s in got]
            if back:
                event("uncommitted delivery came back")
            if cut and len(survivors) not in (0, len(cut)):
                event("torn batch kept a part")
            assert survivors == cut[: len(survivors)], "a torn batch keeps a prefix"
            lost = {s for s in alive if s > acked} - set(survivors)
            assert all(s not in got for s in lost)
            alive -= lost
        pend = ob.pending(1000)
        ps = [r[0] for r in pend]
        assert ps == sorted(set(ps)), "oldest first, each once"
        for s, cls, topic, payload in pend:
            assert (cls, payload) == content[s] and topic == TOPIC
        assert not set(ps) & (delivered | evicted), "a delivered or evicted record came back"
        durable = {s for s in alive if s <= ob.durable_seq}
        missing = sorted(durable - set(ps))
        assert not [s for s in missing if protected(s)], "a never-evict record was lost"
        evictable = sorted(s for s in durable if not protected(s))
        assert missing == evictable[: len(missing)], "evictions go oldest first"
        if missing:
            event("evicted")
        alive -= set(missing)
        evicted |= set(missing)
        assert set(ps) == durable - set(missing)
        assert ob.used <= kw["capacity"] and ob.stats["corrupt"] == 0 and ob.stats["lost"] == 0
    ob.close()


# --------------------------------------------------------------------------
# MicroPython


@pytest.mark.mpy
def test_on_the_micropython_unix_port(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = unixport.run([str(TESTS / "outbox_mp_check.py"), str(tmp_path / "mp")],
                        extra_path=[TESTS], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "OUTBOX_MP_OK", proc.stdout
    assert time.monotonic() - t0 < 60


@pytest.mark.mpy
def test_compiles_for_esp32(tmp_path: Path) -> None:
    out = tmp_path / "outbox.mpy"
    proc = subprocess.run(
        [unixport.find_mpy_cross(), "-march=xtensawin", "-o", str(out),
         str(unixport.firmware_root() / "firmware" / "outbox.py")],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
