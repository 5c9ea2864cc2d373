# What every scan-engine family shares: the event kinds, the counters, the
# text check and the line framer that cuts barcode data out of a serial byte
# stream by suffix (CR, CRLF) and by idle gap.
#
# A scan engine sends a barcode as a run of bytes and, depending on its
# configuration, a suffix (CR, CRLF) or nothing. The host only ever sees a
# byte stream: noise on a long cable, an engine unplugged mid-frame, an
# engine configured for CRLF while we expect CR. Rules the framer keeps:
#
#   - the suffix ends a frame; an idle gap (nothing read for idle_ms) ends a
#     frame too. With suffix "none" the gap is the only boundary and the
#     frame before it is a scan; with a suffix, a frame cut by a gap before
#     its suffix arrived is *truncated*: rejected and counted, never glued to
#     the next frame (a scanner unplugged mid-frame and plugged back in must
#     not produce "half of A + B");
#   - a gap is only believed when we *saw* it: idle(now) is called after a
#     read that returned nothing, and the gap is measured from the last read
#     that returned data. Bytes that piled up in a buffer while nobody read
#     are never split on the reader's own stall (so one scan is never cut in
#     two because the application was busy);
#   - frames longer than max_len are dropped whole (oversize, counted once),
#     including their tail up to the next boundary, so a tail never becomes
#     a scan of its own;
#   - a frame must be text: no C0 control bytes other than the separators
#     GS1 and ISO/IEC 15434 use (FS, GS, RS, EOT), no DEL, valid UTF-8
#     (QR codes carry UTF-8). Binary garbage is rejected as bad_bytes;
#   - families whose command replies share the line (GM65 register replies,
#     Honeywell menu echoes, Newland STX replies) give a matcher tried at each
#     frame start; a reply is never taken for a scan.
#
# Events are tuples (kind, payload, extra) so the parser allocates little on
# a microcontroller:
#   (SCAN, data_bytes, symbology_hint_or_None)
#   (REPLY, payload_bytes, "ack" | "nak" | "enq" | "other")
#   (SEND, frame_bytes, None)     bytes the host must write back (SSI ACK/NAK)
#
# MicroPython subset: no typing, no dataclasses.

from drivers.hal.common import ticks_diff

SCAN = "scan"
REPLY = "reply"
SEND = "send"

# Matcher verdicts: (OK, length, event), (NEED, 0, None), (NOMATCH, 0, None),
# (BAD, length, None) = frame-shaped with a wrong checksum, drop `length`.
OK = 1
NEED = 0
NOMATCH = -1
BAD = -2

SUFFIXES = {"cr": b"\r", "crlf": b"\r\n", "none": b""}

MAX_LEN = 512  # longest scan accepted; a postal 2D code is well below this

# Reasons a frame is rejected; stats[reason] counts them.
REJECTS = ("truncated", "oversize", "checksum", "bad_bytes", "empty", "unknown",
           "duplicate", "overflow")

# Bytes allowed below 0x20 in a scan: FS, GS, RS (GS1 / ISO 15434) and EOT.
_CTRL_OK = (0x1C, 0x1D, 0x1E, 0x04)


def new_stats():
    s = {"scans": 0, "replies": 0, "garbage_bytes": 0, "acks_sent": 0, "naks_sent": 0,
         "io": 0}
    for k in REJECTS:
        s[k] = 0
    return s


def rejected(stats):
    """All frames rejected, whatever the reason."""
    n = 0
    for k in REJECTS:
        n += stats[k]
    return n


def suffix_bytes(suffix):
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    raise ValueError("suffix must be one of cr, crlf, none, not %r" % (suffix,))


def valid_text(frame):
    """True if frame is scan text (see the header for what that is)."""
    high = False
    for c in frame:
        if c < 0x20:
            if c not in _CTRL_OK:
                return False
        elif c >= 0x7F:
            if c == 0x7F:
                return False
            high = True
    if high:
        try:
            frame.decode("utf-8")
        except UnicodeError:
            return False
    return True


def _startmap(starts):
    m = bytearray(256)
    for c in starts:
        m[c] = 1
    return m


class LineFramer:
    """Byte stream in, events out, for engines that send barcodes as lines.

    feed(data, now) after every read that returned bytes, idle(now) after
    every read that returned none (now = ticks_ms()), flush() at the end of
    a stream (tests, a closed port). All three return a list of events.
    matcher(buf) -> (verdict, length, event) is tried when a frame starts
    with one of the bytes in `starts`.
    """

    def __init__(self, suffix="cr", idle_ms=50, max_len=MAX_LEN, stats=None, matcher=None,
                 starts=b""):
        self.term = suffix_bytes(suffix)
        self.idle_ms = idle_ms
        self.max_len = max_len
        self.stats = stats if stats is not None else new_stats()
        self.matcher = matcher
        self.starts = _startmap(starts)
        self.buf = b""
        self.last = 0
        self.skipping = False  # inside an oversize frame: drop up to the next boundary
        self.pending = False  # the buffer starts with a reply waiting for more bytes
        self.lf_skip = False  # suffix CR: an LF right after it is the rest of a CRLF

    def feed(self, data, now):
        out = []
        if data:
            self.buf = self.buf + bytes(data)
            self.last = now
            self._scan(out)
        return out

    def idle(self, now):
        out = []
        if (self.buf or self.skipping or self.lf_skip) and ticks_diff(now, self.last) >= self.idle_ms:
            self._boundary(out)
        return out

    def flush(self):
        out = []
        self._boundary(out)
        return out

    def reset(self):
        self.buf = b""
        self.skipping = self.pending = self.lf_skip = False

    def _boundary(self, out):
        buf = self.buf
        if self.skipping:
            self.skipping = False
        elif buf:
            if self.pending or self.term:
                self.stats["truncated"] += 1
                self.stats["garbage_bytes"] += len(buf)
            else:
                self._line(buf, out)
        self.buf = b""
        self.pending = False
        self.lf_skip = False

    def _scan(self, out):
        buf = self.buf
        term = self.term
        tlen = len(term)
        stats = self.stats
        max_len = self.max_len
        matcher = self.matcher
        starts = self.starts
        while buf:
            if self.skipping:
                k = buf.find(term) if tlen else -1
                if k < 0:
                    buf = b""
                    break
                buf = buf[k + tlen:]
                self.skipping = False
                continue
            c = buf[0]
            if self.lf_skip:
                self.lf_skip = False
                if c == 0x0A:
                    buf = buf[1:]
                    continue
            if matcher is not None and starts[c]:
                verdict, n, ev = matcher(buf)
                if verdict == NEED:
                    self.pending = True
                    break
                if verdict == OK:
                    self.pending = False
                    stats["replies"] += 1
                    out.append(ev)
                    buf = buf[n:]
                    continue
                if verdict == BAD:
                    self.pending = False
                    stats["checksum"] += 1
                    buf = buf[n:]
                    continue
            self.pending = False
            if not tlen:
                if len(buf) > max_len:
                    stats["oversize"] += 1
                    self.skipping = True
                    buf = b""
                break
            k = buf.find(term)
            if k < 0:
                if len(buf) > max_len + tlen:
                    stats["oversize"] += 1
                    self.skipping = True
                    buf = b""
                break
            frame = buf[:k]
            buf = buf[k + tlen:]
            if tlen == 1:
                self.lf_skip = True
            if k > max_len:
                stats["oversize"] += 1
                continue
            self._line(frame, out)
        self.buf = buf

    def _line(self, frame, out):
        stats = self.stats
        if not frame:
            stats["empty"] += 1
            return
        if len(frame) > self.max_len:
            stats["oversize"] += 1
            return
        if not valid_text(frame):
            stats["bad_bytes"] += 1
            return
        stats["scans"] += 1
        out.append((SCAN, frame, None))
