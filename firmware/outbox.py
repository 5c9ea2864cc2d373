# The device's flash outbox: events wait here, on flash, until the far end
# confirms them, through power cuts and backhaul outages of days.
#
# API. `append(cls, topic, payload, sync=None)` returns the record's sequence
# number (seq). A record is *acked* (durable) once a `flush()` that started
# after its append has returned, i.e. once its seq <= `durable_seq`; nothing
# else is promised. Classes in `sync_classes` (by default custody, alarm,
# audit: the never-evicted ones) flush inside `append`, so their seq is
# durable when `append` returns; status and telemetry wait in RAM for
# `batch_records` records, `batch_bytes` bytes or `batch_ms` (the app calls
# `poll()`), so one flash write carries many of them - a power cut loses
# those unacked ones. `pending(limit, after)` lists durable, undelivered
# records oldest-first as (seq, cls, topic, payload); `mark_delivered(seq)`
# drops one (acks may arrive in any order), `mark_delivered_through(seq)`
# all up to seq (e.g. from the gateway's end-to-end high-water mark). Marks
# reach flash in batches (every `meta_batch` marks, `commit()`, `close()`):
# a power cut before that causes a redelivery, never a loss; the gateway
# drops duplicates by event id. `append` raises `OutboxFull` when a record
# cannot be stored even after evicting every status/telemetry record: it is
# then *not* stored and nothing was evicted for it; the caller must act
# (refuse the deposit, raise an alarm). `alarm_pending`/`take_alarm()` report
# evictions, refusals and records lost to flash corruption, for the app to
# turn into an alarm event; `nearly_full` is true at `nearly_full_pct`.
# `stats` counts torn/corrupt/duplicate bytes and records found at boot,
# evictions, refusals, and flash writes (flushes, bytes, meta, rewrites).
#
# On flash, in directory `root`:
#
#   <first seq>.seg   segment files, appended to; a ring of them
#   meta              delivery marks, written atomically (temp + rename)
#
# A record is a 14-byte header, the topic, the payload (little-endian):
#
#   0  2  magic FE 01 (0xFE never occurs in UTF-8, so a resync scan never
#         locks onto text inside a JSON payload or a topic)
#   2  1  class code: 0 custody, 1 alarm, 2 audit, 3 status, 4 telemetry
#   3  1  topic length (bytes)
#   4  4  record seq (1, 2, ...; strictly increasing, never reused)
#   8  2  payload length
#   10 4  CRC-32 of bytes 0-9, the topic and the payload
#
# `meta` is text: "OBM1 <next> <base> <evicted> <refused> <lost>", a line of
# delivered seq ranges above base ("5-9 12"), a line with the CRC-32 of the
# rest. Seqs below next may have been handed out; every seq <= base and in
# the ranges is delivered (or evicted); the counters are alarms not yet
# taken. A meta that fails its CRC is ignored: everything is delivered again.
#
# Boot scans every segment and keeps only an index in RAM (12 bytes a record:
# seq, offset, length|class|done) - never the payloads. Each record's CRC is
# checked. Where a record does not check out, the scan looks for the next
# offset at which a whole valid record starts: if there is one, the bytes in
# between are a corrupt middle record, skipped and counted (`corrupt`, and a
# `lost` alarm), and everything after it is kept; if there is none, the rest
# of the file is a record torn by a power cut (or corrupted at the end): it is
# cut off (rewritten via temp + rename, as MicroPython files cannot truncate)
# and counted (`torn`). Only the record being written when the power went can
# be torn, and it was not acked because flush() had not returned. Telling
# "torn tail" from "corrupt middle" by whether a valid record follows (not by
# the length field, which may itself be the corrupt byte) means a flipped
# length can never make the scan throw away the records behind it. On
# LittleFS (ESP32) a file's new contents are committed at flush/close, so a
# power cut should tear nothing there; FAT and the unix port can tear,
# hence the format.
#
# Design choices, and why:
# - Space is reclaimed by rewriting segments (temp + rename) without their
#   delivered and evicted records, merging small neighbours, instead of only
#   deleting fully delivered segments: one undelivered custody record must
#   not pin 8 KiB of delivered telemetry, and the number of files and index
#   entries stays bounded. This only happens when room is needed, so flash
#   is not rewritten while there is space.
# - Before evicting anything, `append` checks that evicting *all* evictable
#   records would make room; if not it raises OutboxFull without evicting, so
#   telemetry is never thrown away for a custody record that still will not
#   fit. When it evicts, it frees `evict_slack` bytes more than needed, so a
#   full outbox under telemetry load is not rewritten on every append.
# - `reserve` bytes at the top are for alarm records only, so the
#   "outbox_full" alarm itself can still be stored after custody was refused.
# - `max_records` bounds the RAM index (default capacity // 64 records, at 12
#   bytes each) in the same way bytes are bounded.
# - Alarm counters live in `meta`, so an eviction is still reported after a
#   reboot that came before the app emitted the alarm.
# - Seqs are reserved in `meta` before they are handed out, `seq_block` at a
#   time (as SeqCounter does for event ids), so not even the seq of an
#   unacked record lost in a power cut is ever reused.
# - Corrupt bytes found at boot are rewritten away once (after the `lost`
#   alarm is in meta), so one bad byte is not reported again at every boot.
# - Order of writes: `meta` (with the next seq and the delivered marks) is
#   written before any segment is deleted or rewritten, so seqs stay
#   monotonic across reboots and a record marked evicted stays evicted. A
#   power cut between a rewrite and deleting the merged-in files leaves
#   duplicates, which the boot scan skips (`duplicates`).
#
# Flash needed: capacity + one segment (the rewrite's temporary file) + meta.
# If `append` or `flush` raises OSError the record may or may not be on
# flash: treat it as not acked (it stays buffered; the next flush retries, in
# a new segment).

import binascii
import os
import struct
from array import array

from drivers.hal.common import ticks_diff, ticks_ms
from drivers.storage import FileStorage
from protocol.confirm import contains
from protocol.envelope import NEVER_EVICT

# Class codes on flash: pinned here, independent of the order of
# envelope.CLASSES, because records outlive firmware updates.
CODES = ("custody", "alarm", "audit", "status", "telemetry")
MAGIC = b"\xfe\x01"
HDR = 14
_HFMT = "<BBBBIH"  # header without its CRC
SEG_EXT = ".seg"
META = "meta"
MAX_TOPIC = 255
MAX_PAYLOAD = 0xFFFF

_LEN_MASK = 0xFFFFF
_CLS_SHIFT = 20
_DONE = 1 << 24


class OutboxFull(Exception):
    """The record does not fit even after evicting all status/telemetry
    records. It was not stored; nothing was evicted for it."""

    def __init__(self, msg):
        super().__init__(msg)


def _crc(data, crc=0):
    return binascii.crc32(data, crc) & 0xFFFFFFFF


def encode_record(seq, code, topic, payload):
    """The bytes of one record (topic and payload are bytes)."""
    h = struct.pack(_HFMT, 0xFE, 0x01, code, len(topic), seq, len(payload))
    crc = _crc(payload, _crc(topic, _crc(h)))
    return h + struct.pack("<I", crc) + topic + payload


def decode_record(raw):
    """(seq, code, topic_len) if `raw` is exactly one valid record, else None."""
    if len(raw) < HDR or raw[0] != 0xFE or raw[1] != 0x01:
        return None
    _, _, code, tlen, seq, plen = struct.unpack(_HFMT, raw[:10])
    if code >= len(CODES) or seq == 0 or len(raw) != HDR + tlen + plen:
        return None
    crc = struct.unpack("<I", raw[10:14])[0]
    if _crc(raw[14:], _crc(raw[:10])) != crc:
        return None
    return (seq, code, tlen)


def _read_record(f, off, fsz):
    """The valid record at `off` as (seq, code, total), or None."""
    if off + HDR > fsz:
        return None
    f.seek(off)
    h = f.read(HDR)
    if len(h) < HDR or h[0] != 0xFE or h[1] != 0x01:
        return None
    total = HDR + h[3] + (h[8] | (h[9] << 8))
    if off + total > fsz:
        return None
    r = decode_record(h + f.read(total - HDR))
    if r is None:
        return None
    return (r[0], r[1], total)


def _resync(f, pos, fsz):
    """Offset of the next valid record at or after `pos`, or -1."""
    while pos < fsz - 1:
        f.seek(pos)
        chunk = f.read(256)
        if len(chunk) < 2:
            return -1
        i = chunk.find(MAGIC)
        while i >= 0:
            if _read_record(f, pos + i, fsz) is not None:
                return pos + i
            i = chunk.find(MAGIC, i + 1)
        pos += len(chunk) - 1
    return -1


class _Seg:
    # idx holds 3 words a record: seq, offset, length | class << 20 | done.
    def __init__(self, name):
        self.name = name
        self.size = 0
        self.idx = array("I")
        self.live = 0
        self.live_bytes = 0
        self.sealed = False  # a write failed here: append no more
        self.bad = False  # the boot scan skipped corrupt bytes here

    def add(self, seq, off, total, code, done):
        self.idx.append(seq)
        self.idx.append(off)
        self.idx.append(total | (code << _CLS_SHIFT) | (_DONE if done else 0))
        if not done:
            self.live += 1
            self.live_bytes += total

    def n(self):
        return len(self.idx) // 3

    def find(self, seq):
        idx = self.idx
        lo, hi = 0, len(idx) // 3
        while lo < hi:
            mid = (lo + hi) // 2
            s = idx[mid * 3]
            if s == seq:
                return mid
            if s < seq:
                lo = mid + 1
            else:
                hi = mid
        return -1

    def set_done(self, k):
        info = self.idx[k * 3 + 2]
        if info & _DONE:
            return 0
        self.idx[k * 3 + 2] = info | _DONE
        total = info & _LEN_MASK
        self.live -= 1
        self.live_bytes -= total
        return total


def _parse_meta(raw):
    """(next, base, ranges, evicted, refused, lost) or None if unreadable."""
    try:
        lines = raw.decode().split("\n")
        if len(lines) != 4 or lines[3]:
            return None
        body = lines[0] + "\n" + lines[1] + "\n"
        if int(lines[2], 16) != _crc(body.encode()):
            return None
        head = lines[0].split()
        if len(head) != 6 or head[0] != "OBM1":
            return None
        nxt, base, ev, ref, lost = [int(x) for x in head[1:]]
        ranges = []
        for tok in lines[1].split():
            if "-" in tok:
                a, b = tok.split("-")
                ranges.append((int(a), int(b)))
            else:
                ranges.append((int(tok), int(tok)))
        if nxt < 1 or base < 0 or min(ev, ref, lost) < 0:
            return None
        return (nxt, base, ranges, ev, ref, lost)
    except Exception:
        return None


class Outbox:
    def __init__(self, root, capacity=64 * 1024, segment_size=8 * 1024, reserve=1024,
                 max_records=None, batch_records=16, batch_bytes=2048, batch_ms=5000,
                 meta_batch=16, sync_classes=NEVER_EVICT, evict_slack=None,
                 nearly_full_pct=80, seq_block=64):
        if segment_size < 512 or capacity < segment_size or not 0 <= reserve < capacity // 2:
            raise ValueError("need 512 <= segment_size <= capacity, 0 <= reserve < capacity/2")
        self.root = root
        self.capacity = capacity
        self.segment_size = segment_size
        self.reserve = reserve
        self.max_records = max_records or capacity // 64
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.batch_ms = batch_ms
        self.meta_batch = meta_batch
        self.sync_classes = sync_classes
        self.evict_slack = segment_size // 2 if evict_slack is None else evict_slack
        self.nearly_full_pct = nearly_full_pct
        self.seq_block = seq_block
        self._meta = FileStorage(root)
        self._segs = []
        self._buf = []
        self._buf_bytes = 0
        self._buf_t0 = 0
        self._next = 1
        self._reserved = 1  # seqs below this are promised by meta on flash
        self._durable = 0
        self._marks = 0
        self._dirty = False
        self._alarm = [0, 0, 0]  # evicted, refused, lost
        self.stats = {
            "torn": 0, "torn_bytes": 0, "corrupt": 0, "corrupt_bytes": 0, "duplicates": 0,
            "meta_corrupt": 0, "evicted": 0, "evicted_bytes": 0, "refused": 0, "lost": 0,
            "flushes": 0, "bytes_written": 0, "meta_writes": 0, "rewrites": 0,
        }
        self._boot()

    # ------------------------------------------------------------------ files

    def _path(self, name):
        return "%s/%d%s" % (self.root, name, SEG_EXT)

    def _open(self, path, mode):
        # One place every segment write goes through (tests cut power here).
        return open(path, mode)

    def _sync(self, f):
        f.flush()
        if hasattr(os, "fsync"):
            os.fsync(f.fileno())

    def _remove(self, path):
        try:
            os.remove(path)
        except OSError:
            pass

    # ------------------------------------------------------------------- boot

    def _boot(self):
        nxt, base, ranges = 1, 0, []
        raw = self._meta.read(META)
        if raw is not None:
            m = _parse_meta(raw)
            if m is None:
                # Delivery marks unknown: everything on flash is delivered again.
                self.stats["meta_corrupt"] += 1
                self._dirty = True
            else:
                nxt, base, ranges = m[0], m[1], m[2]
                self._alarm = [m[3], m[4], m[5]]
        names = []
        for n in os.listdir(self.root):
            if n.endswith(".tmp"):
                self._remove(self.root + "/" + n)
            elif n.endswith(SEG_EXT):
                try:
                    name = int(n[: -len(SEG_EXT)])
                except ValueError:
                    continue
                if name > 0:
                    names.append(name)
        names.sort()
        last = 0
        for name in names:
            seg = _Seg(name)
            last = self._scan(seg, last, base, ranges)
            self._segs.append(seg)
            if name >= nxt:
                nxt = name + 1
        if last >= nxt:
            nxt = last + 1
        self._next = self._reserved = nxt
        self._durable = nxt - 1
        redo = False
        for seg in self._segs:
            if seg.live == 0 or seg.bad:
                redo = True
        if redo or self._dirty:
            # Meta first (next seq, alarms), then delete dead segments and
            # rewrite ones with corrupt bytes, so the next boot finds them clean.
            self._dirty = True
            self.commit()
            i = 0
            while i < len(self._segs):
                if self._segs[i].bad and not self._rewrite(i, i + 1):
                    continue
                i += 1

    def _scan(self, seg, last, base, ranges):
        path = self._path(seg.name)
        st = self.stats
        try:
            fsz = os.stat(path)[6]
            f = open(path, "rb")
        except OSError:
            return last
        off = 0
        with f:
            while off < fsz:
                r = _read_record(f, off, fsz)
                if r is None:
                    nxt = _resync(f, off + 1, fsz)
                    if nxt < 0:
                        break
                    st["corrupt"] += 1
                    st["corrupt_bytes"] += nxt - off
                    self._alarm[2] += 1
                    seg.bad = True
                    self._dirty = True
                    off = nxt
                    continue
                seq, code, total = r
                if seq <= last:
                    st["duplicates"] += 1
                else:
                    seg.add(seq, off, total, code, seq <= base or contains(ranges, seq))
                    last = seq
                off += total
        seg.size = off
        if off < fsz:
            st["torn"] += 1
            st["torn_bytes"] += fsz - off
            self._cut(path, off)
        return last

    def _cut(self, path, n):
        """Keep the first n bytes of a file (temp + rename)."""
        if n == 0:
            self._remove(path)
            return
        tmp = path + ".tmp"
        with open(path, "rb") as src:
            with self._open(tmp, "wb") as dst:
                left = n
                while left:
                    chunk = src.read(min(512, left))
                    if not chunk:
                        break
                    dst.write(chunk)
                    left -= len(chunk)
                self._sync(dst)
        os.rename(tmp, path)

    # ------------------------------------------------------------- properties

    @property
    def durable_seq(self):
        """Every record appended with seq <= this is on flash (acked)."""
        return self._durable

    @property
    def next_seq(self):
        return self._next

    @property
    def used(self):
        """Bytes taken against capacity: segment files plus the RAM batch."""
        u = self._buf_bytes
        for s in self._segs:
            u += s.size
        return u

    @property
    def live_bytes(self):
        """Bytes of undelivered records, on flash and in the RAM batch."""
        u = self._buf_bytes
        for s in self._segs:
            u += s.live_bytes
        return u

    @property
    def count(self):
        """Undelivered records, durable and buffered."""
        n = len(self._buf)
        for s in self._segs:
            n += s.live
        return n

    @property
    def buffered(self):
        return len(self._buf)

    @property
    def nearly_full(self):
        pct = self.nearly_full_pct
        return (self.live_bytes * 100 >= self.capacity * pct
                or self.count * 100 >= self.max_records * pct)

    @property
    def alarm_pending(self):
        a = self._alarm
        return bool(a[0] or a[1] or a[2])

    def take_alarm(self):
        """None, or {"evicted": n, "refused": n, "lost": n} since the last
        take (persisted across reboots until taken and committed)."""
        if not self.alarm_pending:
            return None
        a = self._alarm
        out = {"evicted": a[0], "refused": a[1], "lost": a[2]}
        self._alarm = [0, 0, 0]
        self._dirty = True
        return out

    # ----------------------------------------------------------------- append

    def append(self, cls, topic, payload, sync=None):
        """Queue one record; return its seq. Durable once seq <= durable_seq
        (at once for `sync_classes` or sync=True). Raises OutboxFull if it
        cannot be stored, ValueError if it is malformed."""
        try:
            code = CODES.index(cls)
        except ValueError:
            raise ValueError("unknown class %r" % (cls,))
        if not isinstance(topic, str):
            raise ValueError("topic must be a str")
        tb = topic.encode()
        if isinstance(payload, str):
            payload = payload.encode()
        if len(tb) > MAX_TOPIC or len(payload) > MAX_PAYLOAD:
            raise ValueError("topic or payload too long")
        size = HDR + len(tb) + len(payload)
        if size > self.segment_size:
            raise ValueError("record of %d bytes exceeds segment_size" % size)
        self._make_room(size, cls == "alarm")
        seq = self._next
        if seq >= self._reserved:
            # Write-ahead reservation (as SeqCounter): a seq is on flash before
            # it is handed out, so none is reused even if its record was lost.
            self._reserved = seq + self.seq_block
            self._write_meta()
        rec = encode_record(seq, code, tb, bytes(payload))
        self._next = seq + 1
        if not self._buf:
            self._buf_t0 = ticks_ms()
        self._buf.append(rec)
        self._buf_bytes += size
        if sync is None:
            sync = cls in self.sync_classes
        if sync or len(self._buf) >= self.batch_records or self._buf_bytes >= self.batch_bytes:
            self.flush()
        return seq

    def poll(self, now=None):
        """Flush a batch that has waited batch_ms; True if it flushed."""
        if self._buf and ticks_diff(ticks_ms() if now is None else now, self._buf_t0) >= self.batch_ms:
            self.flush()
            return True
        return False

    def flush(self):
        """Write every buffered record (one write per segment touched) and
        sync. When it returns, all appended records are acked."""
        buf = self._buf
        if not buf:
            return self._durable
        i = 0
        try:
            while i < len(buf):
                head = self._segs[-1] if self._segs else None
                if head is not None and head.sealed and not head.n():
                    # A failed write left nothing acked here: start afresh.
                    self._remove(self._path(head.name))
                    self._segs.pop()
                    head = self._segs[-1] if self._segs else None
                if (head is None or head.sealed
                        or (head.size and head.size + len(buf[i]) > self.segment_size)):
                    head = _Seg(struct.unpack("<I", buf[i][4:8])[0])
                    self._segs.append(head)
                j = i + 1
                total = head.size + len(buf[i])
                while j < len(buf) and total + len(buf[j]) <= self.segment_size:
                    total += len(buf[j])
                    j += 1
                data = buf[i] if j == i + 1 else b"".join(buf[i:j])
                self._write(head, data)
                for k in range(i, j):
                    rec = buf[k]
                    head.add(struct.unpack("<I", rec[4:8])[0], head.size, len(rec), rec[2], False)
                    head.size += len(rec)
                i = j
        finally:
            if i:
                self._durable = struct.unpack("<I", buf[i - 1][4:8])[0]
                for k in range(i):
                    self._buf_bytes -= len(buf[k])
                del buf[:i]
        self.stats["flushes"] += 1
        return self._durable

    def _write(self, seg, data):
        path = self._path(seg.name)
        try:
            f = self._open(path, "ab")
            try:
                f.write(data)
                self._sync(f)
            finally:
                f.close()
        except Exception:
            # How much reached flash is unknown: never append here again. The
            # batch is retried in a new segment; a boot scan skips duplicates.
            seg.sealed = True
            try:
                seg.size = os.stat(path)[6]
            except OSError:
                pass
            raise
        self.stats["bytes_written"] += len(data)

    # ------------------------------------------------------------------- read

    def pending(self, limit=8, after=0):
        """Up to `limit` durable undelivered records with seq > after,
        oldest first, as (seq, cls, topic, payload)."""
        out = []
        for seg in self._segs:
            if not seg.live or (seg.n() and seg.idx[-3] <= after):
                continue
            f = None
            try:
                idx = seg.idx
                for k in range(seg.n()):
                    seq, off, info = idx[k * 3], idx[k * 3 + 1], idx[k * 3 + 2]
                    if info & _DONE or seq <= after:
                        continue
                    if f is None:
                        f = open(self._path(seg.name), "rb")
                    f.seek(off)
                    raw = f.read(info & _LEN_MASK)
                    r = decode_record(raw)
                    if r is None or r[0] != seq:
                        self._lose(seg, k)
                        continue
                    tl = r[2]
                    out.append((seq, CODES[r[1]], raw[HDR:HDR + tl].decode(), raw[HDR + tl:]))
                    if len(out) >= limit:
                        return out
            except OSError as e:
                if not e.args or e.args[0] != 2:  # ENOENT
                    raise
                # The file vanished: its records are lost.
                for k in range(seg.n()):
                    self._lose(seg, k)
            finally:
                if f is not None:
                    f.close()
        return out

    def _lose(self, seg, k):
        if seg.set_done(k):
            self.stats["lost"] += 1
            self._alarm[2] += 1
            self._dirty = True

    # ---------------------------------------------------------------- deliver

    def _locate(self, seq):
        # Linear over segments (a few dozen at most): a power cut during a
        # retried write can leave a segment holding seqs above the next
        # segment's name, so names are not a search key.
        for seg in self._segs:
            n = seg.n()
            if n and seg.idx[(n - 1) * 3] >= seq:
                return seg, seg.find(seq)
        return None, -1

    def mark_delivered(self, seq):
        """The far end has `seq`. True if it was pending. The mark reaches
        flash with the next commit (every meta_batch marks)."""
        seg, k = self._locate(seq)
        if k < 0 or not seg.set_done(k):
            return False
        self._mark()
        return True

    def mark_delivered_through(self, seq):
        """Every durable record with seq <= `seq` is delivered; returns how
        many were pending."""
        n = 0
        for s in self._segs:
            for k in range(s.n()):
                if s.idx[k * 3] > seq:
                    break
                if s.set_done(k):
                    n += 1
        if n:
            self._marks += n - 1
            self._mark()
        return n

    def _mark(self):
        self._marks += 1
        self._dirty = True
        if self._marks >= self.meta_batch:
            self.commit()

    def commit(self):
        """Write delivery marks and alarm counters, then delete segments with
        nothing left to deliver."""
        if self._dirty:
            self._write_meta()
        keep = []
        for s in self._segs:
            if s.live == 0:
                self._remove(self._path(s.name))
            else:
                keep.append(s)
        self._segs = keep

    def close(self):
        self.flush()
        self.commit()

    def _write_meta(self):
        base = self._next - 1
        if self._buf:
            base = struct.unpack("<I", self._buf[0][4:8])[0] - 1
        for s in self._segs:
            if s.live:
                idx = s.idx
                for k in range(s.n()):
                    if not idx[k * 3 + 2] & _DONE:
                        base = min(base, idx[k * 3] - 1)
                        break
                break
        parts = []
        start = prev = 0
        for s in self._segs:
            idx = s.idx
            for k in range(s.n()):
                seq = idx[k * 3]
                if seq <= base:
                    continue
                if idx[k * 3 + 2] & _DONE:
                    if not start:
                        start = seq
                    prev = seq
                elif start:
                    parts.append("%d-%d" % (start, prev) if prev != start else "%d" % start)
                    start = 0
        if start:
            parts.append("%d-%d" % (start, prev) if prev != start else "%d" % start)
        a = self._alarm
        body = "OBM1 %d %d %d %d %d\n%s\n" % (self._reserved, base, a[0], a[1], a[2], " ".join(parts))
        self._meta.write(META, (body + "%08x\n" % _crc(body.encode())).encode())
        self._dirty = False
        self._marks = 0
        self.stats["meta_writes"] += 1

    # ------------------------------------------------------------------- room

    def _fits(self, size, limit):
        used = self._buf_bytes
        n = len(self._buf)
        for s in self._segs:
            used += s.size
            n += s.n()
        return used + size <= limit and n < self.max_records

    def _make_room(self, size, is_alarm):
        limit = self.capacity if is_alarm else self.capacity - self.reserve
        if self._fits(size, limit):
            return
        if self._buf:
            self.flush()  # so buffered status/telemetry can be evicted too
        self.commit()
        if self._fits(size, limit):
            return
        # What is left if every delivered byte is reclaimed, and if every
        # evictable record goes too?
        live_b = prot_b = live_n = prot_n = 0
        for s in self._segs:
            idx = s.idx
            for k in range(s.n()):
                info = idx[k * 3 + 2]
                if info & _DONE:
                    continue
                live_b += info & _LEN_MASK
                live_n += 1
                if CODES[info >> _CLS_SHIFT & 7] in NEVER_EVICT:
                    prot_b += info & _LEN_MASK
                    prot_n += 1
        if prot_b + size > limit or prot_n >= self.max_records:
            # Counted for the alarm, but no meta write of its own: the caller
            # hears of it now, and refusals must not wear the flash.
            self._alarm[1] += 1
            self.stats["refused"] += 1
            raise OutboxFull("outbox full: %d bytes in %d records that are never evicted"
                             % (prot_b, prot_n))
        need_b = live_b + size - limit
        need_n = live_n + 1 - self.max_records
        if need_b > 0 or need_n > 0:
            want_b = need_b + self.evict_slack if need_b > 0 else 0
            want_n = need_n + self.max_records // 32 if need_n > 0 else 0
            self._evict(want_b, want_n)
            self.commit()  # evictions and the alarm reach flash before the data goes
        self._compact(size, limit)
        if not self._fits(size, limit):
            raise OutboxFull("outbox full after compaction")

    def _evict(self, want_b, want_n):
        got_b = got_n = 0
        for s in self._segs:
            idx = s.idx
            for k in range(s.n()):
                info = idx[k * 3 + 2]
                if info & _DONE or CODES[info >> _CLS_SHIFT & 7] in NEVER_EVICT:
                    continue
                got_b += s.set_done(k)
                got_n += 1
                if got_b >= want_b and got_n >= want_n:
                    break
            if got_b >= want_b and got_n >= want_n:
                break
        self._alarm[0] += got_n
        self.stats["evicted"] += got_n
        self.stats["evicted_bytes"] += got_b
        self._dirty = True

    def _compact(self, size, limit):
        """Rewrite segments without their dead bytes until `size` fits: the
        segment with the most dead bytes first (the least copying per byte
        won back), merged with neighbours that have dead bytes or are at most
        half full while the live records fit one segment, so rewrites never
        leave a trail of small files."""
        segs = self._segs
        half = self.segment_size // 2
        while not self._fits(size, limit):
            best, dead = -1, 0
            for k in range(len(segs)):
                d = segs[k].size - segs[k].live_bytes
                if d > dead:
                    best, dead = k, d
            if best < 0:
                return
            i, j = best, best + 1
            total = segs[best].live_bytes
            while i > 0:
                t = segs[i - 1]
                if total + t.live_bytes > self.segment_size or (t.size == t.live_bytes and t.size > half):
                    break
                total += t.live_bytes
                i -= 1
            while j < len(segs):
                t = segs[j]
                if total + t.live_bytes > self.segment_size or (t.size == t.live_bytes and t.size > half):
                    break
                total += t.live_bytes
                j += 1
            self._rewrite(i, j)

    def _rewrite(self, i, j):
        """Replace segs[i:j] by one file of their live records; True if a
        segment remains."""
        run = self._segs[i:j]
        new = _Seg(run[0].name)
        path = self._path(new.name)
        if any(s.live for s in run):
            tmp = path + ".tmp"
            with self._open(tmp, "wb") as out:
                for s in run:
                    if not s.live:
                        continue
                    with open(self._path(s.name), "rb") as f:
                        idx = s.idx
                        for k in range(s.n()):
                            seq, off, info = idx[k * 3], idx[k * 3 + 1], idx[k * 3 + 2]
                            if info & _DONE:
                                continue
                            f.seek(off)
                            raw = f.read(info & _LEN_MASK)
                            r = decode_record(raw)
                            if r is None or r[0] != seq:
                                self.stats["lost"] += 1
                                self._alarm[2] += 1
                                self._dirty = True
                                continue
                            out.write(raw)
                            new.add(seq, new.size, len(raw), r[1], False)
                            new.size += len(raw)
                self._sync(out)
            os.rename(tmp, path)
            self.stats["rewrites"] += 1
            self.stats["bytes_written"] += new.size
        else:
            self._remove(path)
        for s in run[1:]:
            self._remove(self._path(s.name))
        if new.n():
            self._segs[i:j] = [new]
            return True
        del self._segs[i:j]
        return False
