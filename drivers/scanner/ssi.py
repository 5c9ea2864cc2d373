# Zebra / Symbol SSI (Simple Serial Interface) scan engines (SE955, SE4500,
# SE4710, DS457, ... in SSI mode), packeted decode data.
#
# 9600 8N1 by default. Every message is a packet:
#   <len> <opcode> <source> <status> <data...> <cksum hi> <cksum lo>
#   len     bytes before the checksum (4..255)
#   source  00 decoder (engine), 04 host
#   status  bit 0 retransmit, bit 1 continuation (more packets of this
#           message follow), bit 3 change type (PARAM_SEND: 1 = permanent)
#   cksum   16-bit two's complement of the sum of the len..data bytes
#
# Host -> engine: START_DECODE 04 E4 04 00 FF 14, STOP_DECODE 04 E5 04 00 FF 13,
#   PARAM_SEND <len> C6 04 <status> <beep FF = none> <param> <value>...,
#   CMD_ACK 04 D0 04 00 FF 28, CMD_NAK <05> D1 04 00 <cause> (01 = resend).
# Engine -> host: CMD_ACK / CMD_NAK (D0 / D1) to each command, and decoded
#   bar codes as DECODE_DATA:
#   <len> F3 00 <status> <bar code type> <data...> <cksum>
# The host must ACK every DECODE_DATA packet (CMD_ACK) and NAK one whose
# checksum fails (CMD_NAK, cause 01 RESEND); the engine then sends it again
# with the retransmit bit set. Data longer than one packet arrives as
# several DECODE_DATA packets, each acknowledged, the continuation bit set
# on all but the last; the host concatenates their data.
#
# A retransmission of a packet we already accepted (our ACK was lost on the
# line) is ACKed again and not delivered twice; a retransmission after our
# NAK is new data and is delivered.
#
# AIM identifiers: parameter 0x2D "Transmit Code ID Character", 01 = AIM.
# Decode data packet format: parameter 0xEE, 01 = packeted.
#
# Sources: Zebra "Simple Serial Interface Programmer's Guide" 72E-40451
# (packet format, opcodes, ACK/NAK), Symbol SE 923 integration guide
# (DECODE_DATA field table), public SSI host implementations (opcode
# constants, the status bits seen on the wire).

from drivers.hal.common import ticks_diff
from drivers.scanner.framing import REPLY, SCAN, SEND, new_stats, valid_text

BAUD = 9600
FAMILY = "ssi"

SRC_DECODER = 0x00
SRC_HOST = 0x04
ST_RETRANSMIT = 0x01
ST_CONTINUATION = 0x02
ST_PERMANENT = 0x08

DECODE_DATA = 0xF3
CMD_ACK_OP = 0xD0
CMD_NAK_OP = 0xD1
START_OP = 0xE4
STOP_OP = 0xE5
PARAM_SEND = 0xC6

PARAM_CODE_ID = 0x2D  # Transmit Code ID Character: 00 none, 01 AIM, 02 Symbol
NAK_RESEND = 0x01

ORPHAN_MS = 5000
MAX_CHUNK = 250  # data bytes per DECODE_DATA packet (len 255 = 5 header + 250)

# Bar code types (Programmer's Guide, "Code Types").
TYPES = {
    0x01: "code39", 0x02: "codabar", 0x03: "code128", 0x04: "code2of5", 0x06: "itf",
    0x07: "code93", 0x08: "upca", 0x09: "upce", 0x0A: "ean8", 0x0B: "ean13",
    0x0C: "code11", 0x0E: "msi", 0x0F: "gs1_128", 0x11: "pdf417", 0x1B: "datamatrix",
    0x1C: "qr", 0x2D: "aztec",
}


def checksum(body):
    s = 0
    for c in body:
        s += c
    return (0x10000 - (s & 0xFFFF)) & 0xFFFF


def packet(opcode, data=b"", source=SRC_HOST, status=0):
    body = bytes((4 + len(data), opcode, source, status)) + bytes(data)
    c = checksum(body)
    return body + bytes((c >> 8, c & 0xFF))


CMD_ACK = packet(CMD_ACK_OP)
CMD_NAK_RESEND = packet(CMD_NAK_OP, bytes((NAK_RESEND,)))
TRIGGER = packet(START_OP)
STOP = packet(STOP_OP)


def param_send(params, permanent=True):
    return packet(PARAM_SEND, b"\xff" + bytes(params), SRC_HOST, ST_PERMANENT if permanent else 0)


def aim_command(on):
    return param_send(bytes((PARAM_CODE_ID, 1 if on else 0)))


def type_code(name):
    for k in TYPES:
        if TYPES[k] == name:
            return k
    return 0x03


def decode_packets(data, btype, retransmit=False):
    """The DECODE_DATA packets an engine sends for one bar code."""
    out = []
    i = 0
    n = len(data)
    while True:
        chunk = data[i:i + MAX_CHUNK]
        i += MAX_CHUNK
        status = (ST_CONTINUATION if i < n else 0) | (ST_RETRANSMIT if retransmit else 0)
        out.append(packet(DECODE_DATA, bytes((btype,)) + chunk, SRC_DECODER, status))
        if i >= n:
            return out


def split(buf, source=None):
    """Whole, checksum-valid packets in buf (a helper for the simulator,
    which hears host packets): returns (packets, rest)."""
    out = []
    i = 0
    n = len(buf)
    while i < n:
        ln = buf[i]
        if ln < 4 or (n - i > 2 and source is not None and buf[i + 2] != source):
            i += 1
            continue
        if n - i < ln + 2:
            break
        p = buf[i:i + ln + 2]
        c = checksum(p[:ln])
        if p[ln] == c >> 8 and p[ln + 1] == c & 0xFF:
            out.append(p)
            i += ln + 2
        else:
            out.append(None)  # a bad packet the engine NAKs
            i += 1
    return out, buf[i:]


class SSIParser:
    """Engine byte stream in, events out (same contract as LineFramer):
    SCAN for each complete bar code (hint = SSI type name), REPLY for the
    engine's ACK/NAK to our commands, SEND for the ACK/NAK we owe it."""

    def __init__(self, idle_ms=50, max_len=4096, stats=None, assembly_ms=1000):
        self.idle_ms = idle_ms
        self.max_len = max_len
        self.assembly_ms = assembly_ms
        self.stats = stats if stats is not None else new_stats()
        self.buf = b""
        self.last = 0
        self.parts = []
        self.parts_len = 0
        self.parts_type = 0
        self.parts_t = 0
        self.parts_bad = False  # assembly already over max_len: drop to its last packet
        self.last_key = None
        self.nak_pending = False
        # A multi-packet message dropped unfinished leaves its last packet
        # in flight; that packet alone looks like a whole bar code. The next
        # final packet of the same type within ORPHAN_MS is rejected, so the
        # tail of a cut message is never delivered as a scan of its own.
        self.orphan_type = -1
        self.orphan_t = 0

    def feed(self, data, now):
        out = []
        if data:
            self.buf = self.buf + bytes(data)
            self.last = now
            self._scan(out, False, now)
        return out

    def idle(self, now):
        out = []
        if self.buf and ticks_diff(now, self.last) >= self.idle_ms:
            self._scan(out, True, now)
            self.buf = b""
        if self.parts and ticks_diff(now, self.parts_t) >= self.assembly_ms:
            self._drop_parts()
        return out

    def flush(self):
        out = []
        self._scan(out, True, self.last)
        self.buf = b""
        if self.parts:
            self._drop_parts()
        return out

    def reset(self):
        self.buf = b""
        self.parts = []
        self.parts_len = 0
        self.parts_bad = False

    def _drop_parts(self):
        if not self.parts_bad:
            self.stats["truncated"] += 1
        self.orphan_type = self.parts_type
        self.orphan_t = self.parts_t
        self.parts = []
        self.parts_len = 0
        self.parts_bad = False

    def _scan(self, out, final, now):
        buf = self.buf
        n = len(buf)
        stats = self.stats
        i = 0
        cut = False
        while i < n:
            ln = buf[i]
            if ln < 4 or (n - i > 2 and buf[i + 2] != SRC_DECODER):
                stats["garbage_bytes"] += 1
                i += 1
                continue
            if n - i < ln + 2:
                if not final:
                    break
                if not cut:
                    stats["truncated"] += 1
                    cut = True
                stats["garbage_bytes"] += 1
                i += 1
                continue
            c = checksum(buf[i:i + ln])
            if buf[i + ln] != c >> 8 or buf[i + ln + 1] != c & 0xFF:
                stats["checksum"] += 1
                stats["garbage_bytes"] += 1
                if buf[i + 1] == DECODE_DATA:
                    out.append((SEND, CMD_NAK_RESEND, None))
                    stats["naks_sent"] += 1
                    self.nak_pending = True
                i += 1
                continue
            self._packet(buf[i:i + ln], out, now)
            i += ln + 2
        self.buf = buf[i:]

    def _packet(self, p, out, now):
        stats = self.stats
        op = p[1]
        status = p[3]
        if op == DECODE_DATA:
            out.append((SEND, CMD_ACK, None))
            stats["acks_sent"] += 1
            if len(p) < 5:
                stats["unknown"] += 1
                return
            key = p[:3] + p[4:]
            if status & ST_RETRANSMIT and not self.nak_pending and key == self.last_key:
                stats["duplicate"] += 1
                return
            self.nak_pending = False
            self.last_key = key
            data = p[5:]
            btype = p[4]
            if self.parts and btype != self.parts_type:
                self._drop_parts()
            if status & ST_CONTINUATION:
                self.orphan_type = -1
                self.parts_type = btype
                self.parts_t = now
                if self.parts_bad:
                    return
                self.parts_len += len(data)
                if self.parts_len > self.max_len:
                    stats["oversize"] += 1
                    self.parts_bad = True
                    self.parts = [b""]  # keeps the assembly open until its last packet
                    return
                self.parts.append(data)
                return
            if not self.parts and btype == self.orphan_type:
                self.orphan_type = -1
                if ticks_diff(now, self.orphan_t) < ORPHAN_MS:
                    stats["truncated"] += 1
                    return
            if self.parts:
                bad = self.parts_bad
                data = b"".join(self.parts) + data
                self.parts = []
                self.parts_len = 0
                self.parts_bad = False
                if bad:
                    return
            if len(data) > self.max_len:
                stats["oversize"] += 1
                return
            if not data:
                stats["empty"] += 1
                return
            if not valid_text(data):
                stats["bad_bytes"] += 1
                return
            stats["scans"] += 1
            out.append((SCAN, data, TYPES.get(btype, "ssi_%02x" % btype)))
        elif op == CMD_ACK_OP:
            stats["replies"] += 1
            out.append((REPLY, b"", "ack"))
        elif op == CMD_NAK_OP:
            stats["replies"] += 1
            out.append((REPLY, p[4:], "nak"))
        else:
            stats["replies"] += 1
            out.append((REPLY, p[1:], "other"))


def make_parser(suffix="none", idle_ms=50, max_len=4096, stats=None):
    """SSI packets carry their own length: the suffix does not apply."""
    return SSIParser(idle_ms, max_len, stats)
