# The flash outbox on the MicroPython unix port (run by tests/firmware/test_outbox.py
# under -X heapsize=128k): the same file logic as on CPython - reboots, power
# cuts and corruption in the last and a middle record, eviction and
# OutboxFull - and a full 64 KiB outbox booted, indexed and evicted within a
# device-sized heap. Prints OUTBOX_MP_OK; any failure raises.
#
#   micropython -X heapsize=128k tests/firmware/outbox_mp_check.py <scratch dir>

import gc
import os
import sys

from firmware.outbox import HDR, Outbox, OutboxFull
from protocol import envelope

TOPIC = "pe/v1/o1/locker/lk01/evt"
BASE = sys.argv[1] if len(sys.argv) > 1 else "/tmp/outbox_mp"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        if os.stat(p)[0] & 0x4000:
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def mkdirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            cur = "/"
            continue
        cur = cur + part if cur.endswith("/") else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def env_bytes(i, cls, pad=0):
    return envelope.encode(envelope.make(f"lk01:3fa2c0de:{i + 1}", 1795881163 + i,
                                         "locker.test", cls, {"n": i, "pad": "x" * pad}))


def rec_size(p):
    return HDR + len(TOPIC) + len(p)


def seg_names(root):
    names = [int(n[:-4]) for n in os.listdir(root) if n.endswith(".seg")]
    names.sort()
    return [f"{root}/{n}.seg" for n in names]


def seqs(ob):
    return [r[0] for r in ob.pending(10000)]


def fresh(name):
    root = BASE + "/" + name
    rmtree(root)
    mkdirs(BASE)
    return root


def fill(root, n, **kw):
    ob = Outbox(root, meta_batch=1000, **kw)
    allr = []
    for i in range(n):
        cls = ("custody", "telemetry", "audit", "status")[i % 4]
        p = env_bytes(i, cls, (7 * i) % 40)
        allr.append((ob.append(cls, TOPIC, p), cls, TOPIC, p))
    ob.flush()
    delivered = (allr[1][0], allr[2][0], allr[5][0])
    for s in delivered:
        ob.mark_delivered(s)
    ob.commit()
    return allr, delivered


def test_round_trip():
    root = fresh("rt")
    ob = Outbox(root, segment_size=1024)
    sent = []
    for i in range(30):
        cls = ("telemetry", "custody", "status", "audit", "alarm")[i % 5]
        p = env_bytes(i, cls, i)
        sent.append((ob.append(cls, TOPIC, p), cls, TOPIC, p))
    ob.flush()
    check(ob.pending(100) == sent, "pending after flush")
    check(len(seg_names(root)) > 1, "several segments")
    ob = Outbox(root, segment_size=1024)
    check(ob.pending(100) == sent, "pending after reboot")
    check(ob.pending(3, after=sent[10][0]) == sent[11:14], "pending after a seq")
    for r in sent[::3]:
        check(ob.mark_delivered(r[0]), "mark")
    ob.close()
    ob = Outbox(root, segment_size=1024)
    rest = [r for i, r in enumerate(sent) if i % 3]
    check(ob.pending(100) == rest, "delivered marks survive")
    s = ob.append("custody", TOPIC, b"{}")
    check(s > sent[-1][0], "seq monotonic")
    check(ob.mark_delivered_through(rest[3][0]) == 4, "delivered through")
    rest = rest[4:]
    ob.commit()
    # a crash loses only what was never flushed, and no seq is reused
    t = ob.append("telemetry", TOPIC, b"{}")
    ob = Outbox(root, segment_size=1024)
    check(seqs(ob) == [r[0] for r in rest] + [s], "unflushed telemetry gone")
    check(ob.append("custody", TOPIC, b"{}") > t, "no seq reused after a crash")


def test_torn_last_record():
    root = fresh("torn")
    allr, delivered = fill(root, 8, segment_size=4096)
    ob = Outbox(root, segment_size=4096)
    last_p = env_bytes(100, "custody", 20)
    ob.append("custody", TOPIC, last_p)
    head = seg_names(root)[-1]
    data = read(head)
    meta = read(root + "/meta")
    start = len(data) - rec_size(last_p)
    expect = [r for r in allr if r[0] not in delivered]
    cuts = list(range(start, len(data), 7)) + [start + 1, start + HDR - 1, start + HDR, len(data) - 1]
    for cut in cuts:
        write(head, data[:cut])
        write(root + "/meta", meta)
        ob = Outbox(root, segment_size=4096)
        check(ob.pending(100) == expect, f"cut at {cut}")
        check(ob.stats["torn"] == (1 if cut > start else 0), f"torn counted at {cut}")
        check(os.stat(head)[6] == start, "torn bytes cut off")
        s = ob.append("custody", TOPIC, b"{}")
        ob = Outbox(root, segment_size=4096)
        check(ob.stats["torn"] == 0, "clean after the cut")
        check(ob.pending(100) == expect + [(s, "custody", TOPIC, b"{}")], "append after cut")
    # a flipped byte in the last record: discarded the same way
    for pos in range(start, len(data), 11):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        write(head, bytes(bad))
        write(root + "/meta", meta)
        ob = Outbox(root, segment_size=4096)
        check(ob.pending(100) == expect, f"flip at {pos}")
        check(ob.stats["torn"] == 1, "flip counted")


def test_corrupt_middle_record():
    root = fresh("mid")
    allr, delivered = fill(root, 8, segment_size=4096)
    head = seg_names(root)[0]
    data = read(head)
    meta = read(root + "/meta")
    start = sum(rec_size(r[3]) for r in allr[:3])
    size = rec_size(allr[3][3])
    want = [r for r in allr if r[0] not in delivered and r is not allr[3]]
    for pos in range(start, start + size, 9):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        write(head, bytes(bad))
        write(root + "/meta", meta)
        ob = Outbox(root, segment_size=4096)
        check(ob.pending(100) == want, f"middle flip at {pos}")
        check(ob.stats["corrupt"] == 1 and ob.stats["torn"] == 0, "middle counted")
        check(ob.take_alarm()["lost"] == 1, "lost alarm")


def test_capacity():
    root = fresh("cap")
    ob = Outbox(root, capacity=8192, segment_size=1024, reserve=512, evict_slack=0)
    kinds = {}
    for i in range(150):
        cls = "custody" if i % 5 == 0 else "telemetry"
        kinds[ob.append(cls, TOPIC, env_bytes(i, cls, 20))] = cls
        check(ob.used <= 8192 - 512, "bounded")
    ob.flush()
    have = seqs(ob)
    custody = [s for s in kinds if kinds[s] == "custody"]
    check(all(s in have for s in custody), "custody kept")
    tel = sorted(s for s in kinds if kinds[s] == "telemetry")
    gone = [s for s in tel if s not in have]
    check(gone and gone == tel[:len(gone)], "oldest telemetry evicted first")
    check(ob.alarm_pending, "eviction raises the alarm")
    refused = False
    try:
        for i in range(100):
            ob.append("custody", TOPIC, env_bytes(i, "custody", 20))
    except OutboxFull:
        refused = True
    check(refused, "OutboxFull when only custody remains")
    check(all(kinds.get(r[0], "custody") == "custody" for r in ob.pending(1000)), "only custody left")
    ob.append("alarm", TOPIC, env_bytes(1, "alarm"))  # the reserve
    a = ob.take_alarm()
    check(a["evicted"] > 0 and a["refused"] == 1, "alarm counts")
    ob.close()
    check(seqs(Outbox(root, capacity=8192, segment_size=1024, reserve=512)) == seqs(ob), "after reboot")


def test_full_64k_in_a_small_heap():
    root = fresh("big")
    ob = Outbox(root)  # the defaults: 64 KiB in 8 KiB segments
    n = 0
    while ob.live_bytes < ob.capacity - ob.reserve - 600:
        cls = "custody" if n % 4 == 0 else "telemetry"
        ob.append(cls, TOPIC, env_bytes(n, cls, 120))
        n += 1
    ob.close()
    check(len(seg_names(root)) >= 7, "spans the ring")
    ob = None
    gc.collect()
    before = gc.mem_alloc()
    ob = Outbox(root)
    gc.collect()
    index = gc.mem_alloc() - before
    check(ob.count == n, f"all {n} records indexed")
    check(index < 12 * 1024, f"index of {n} records takes {index} bytes")
    # keep appending: telemetry is evicted, custody stays, all within the heap
    for i in range(150):
        cls = "custody" if i % 4 == 0 else "telemetry"
        ob.append(cls, TOPIC, env_bytes(n + i, cls, 120))
    check(ob.stats["evicted"] > 0, "evicted when full")
    check(ob.used <= ob.capacity - ob.reserve, "within capacity")
    got = ob.pending(8)
    check(len(got) == 8 and got[0][1] == "custody", "oldest surviving first")
    gc.collect()
    print(f"outbox 64k: {ob.count} records, index {index} bytes, heap in use {gc.mem_alloc()}")


test_round_trip()
test_torn_last_record()
test_corrupt_middle_record()
test_capacity()
test_full_64k_in_a_small_heap()
rmtree(BASE)
print("OUTBOX_MP_OK")
