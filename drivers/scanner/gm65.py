# Grow GM65 / GM861 (Hangzhou Grow Technology) serial scan modules.
#
# 9600 8N1 by default. Host commands (the "zone bit" protocol of the GM65
# user manual, section "serial port instruction"):
#
#   7E 00 <type> <len> <addr hi> <addr lo> <data...> <crc hi> <crc lo>
#     type 08 write <len> bytes of data to zone bits from addr
#          07 read: <len> = 01, data = how many bytes to read (00 = 256)
#          09 save zone bits to flash: 7E 00 09 01 00 00 00 DE C8
#     crc  CRC-CCITT, polynomial 0x1021, initial value 0, MSB first, no
#          final XOR (the CRC-16/XMODEM parameters) over type..data;
#          the manual lets the host write AB CD instead ("no check").
#
#   Module replies: 02 00 <status 00> <len, 00 = 256> <data...> <crc hi lo>
#   with the same CRC over status..data. A successful write answers
#   02 00 00 01 00 33 31. A command with a bad CRC or an unknown command gets
#   no reply at all.
#
#   Trigger (command-trigger mode): write 01 to zone 0x0002:
#     7E 00 08 01 00 02 01 AB CD  -> ACK 02 00 00 01 00 33 31, then the
#     barcode as plain data (+ the configured terminator) when one is read.
#   The ACK can arrive glued to the front of the barcode data, so the parser
#   strips replies at every frame start before cutting lines.
#   Stop: write 00 to zone 0x0002.
#
#   Zone 0x0000 bits 1-0: 00 manual, 01 command trigger, 10 continuous,
#   11 induction. Zone 0x0060 bits 6-5: terminator 00 CR, 01 CRLF, 10 TAB,
#   11 none (a public GM65 configuration tool read-modify-writes exactly
#   these bits and checks for the 33 31 ACK).
#
#   AIM identifiers: the driver read-modify-writes AIM_MASK in zone AIM_REG
#   and saves. Caveat: the bit position was not confirmed from a manual page
#   we could read (only the framing and the terminator bits were); check it
#   against the manual of the module fitted and pass aim_reg / aim_mask to
#   the driver if it differs.
#
# Sources: GM65 / GM66 user manual (Hangzhou Grow Technology, V1.3), serial
# port instruction chapter and its crc_cal_by_bit reference code; public
# GM65 configuration tools that use the 7E 00 08 ... AB CD commands.
# The vectors in tests/drivers/test_scan_engines.py were computed from these rules
# and match the manual's examples (33 31, DE C8).

from drivers.scanner.framing import BAD, NEED, NOMATCH, OK, REPLY, LineFramer

BAUD = 9600
FAMILY = "gm65"

WRITE = 0x08
READ = 0x07
SAVE = 0x09
NO_CRC = b"\xab\xcd"

TRIGGER_REG = 0x0002
MODE_REG = 0x0000
SUFFIX_REG = 0x0060
AIM_REG = 0x0060
AIM_MASK = 0x04

TRIGGER = b"\x7e\x00\x08\x01\x00\x02\x01\xab\xcd"
ACK = b"\x02\x00\x00\x01\x00\x33\x31"
SAVE_CMD = b"\x7e\x00\x09\x01\x00\x00\x00\xde\xc8"

MAX_REPLY = 256


def crc16(data, crc=0):
    """CRC-CCITT as the GM65 manual gives it (= CRC-16/XMODEM)."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def encode_command(kind, addr, data, crc=True):
    """A host command frame. For READ, data is the count byte (b"\\x01")."""
    body = bytes((kind, len(data) & 0xFF, (addr >> 8) & 0xFF, addr & 0xFF)) + bytes(data)
    if crc:
        c = crc16(body)
        tail = bytes((c >> 8, c & 0xFF))
    else:
        tail = NO_CRC
    return b"\x7e\x00" + body + tail


def write_reg(addr, value, crc=True):
    return encode_command(WRITE, addr, bytes((value,)), crc)


def read_reg(addr, count=1, crc=True):
    return encode_command(READ, addr, bytes((count & 0xFF,)), crc)


STOP = write_reg(TRIGGER_REG, 0)


def encode_reply(data):
    """A module reply carrying data (the simulator uses it)."""
    body = bytes((0x00, len(data) & 0xFF)) + bytes(data)
    c = crc16(body)
    return b"\x02\x00" + body + bytes((c >> 8, c & 0xFF))


def parse_command(frame):
    """(kind, addr, data) for a host command frame, or None if it is not one
    (bad head, bad length, bad CRC other than AB CD)."""
    if len(frame) < 9 or frame[0] != 0x7E or frame[1] != 0:
        return None
    n = frame[3] or 256
    if frame[2] == READ:
        n = 1
    if len(frame) != 6 + n + 2:
        return None
    tail = frame[6 + n:]
    if tail != NO_CRC:
        c = crc16(frame[2:6 + n])
        if tail[0] != c >> 8 or tail[1] != c & 0xFF:
            return None
    return frame[2], (frame[4] << 8) | frame[5], frame[6:6 + n]


def match_reply(buf):
    """Matcher for LineFramer: a module reply at a frame start."""
    n = len(buf)
    if n < 2:
        return NEED, 0, None
    if buf[1] != 0x00:
        return NOMATCH, 0, None
    if n < 4:
        return NEED, 0, None
    if buf[2] != 0x00:
        return NOMATCH, 0, None
    ln = buf[3] or 256
    total = 4 + ln + 2
    if n < total:
        return NEED, 0, None
    c = crc16(buf[2:4 + ln])
    if buf[4 + ln] != c >> 8 or buf[5 + ln] != c & 0xFF:
        return BAD, total, None
    return OK, total, (REPLY, buf[4:4 + ln], "ack")


def make_parser(suffix="cr", idle_ms=50, max_len=512, stats=None):
    return LineFramer(suffix, idle_ms, max_len, stats, match_reply, b"\x02")


def aim_commands(on, current):
    """The write that switches AIM identifiers on/off given the register's
    current value (read-modify-write keeps the terminator bits)."""
    value = (current | AIM_MASK) if on else (current & ~AIM_MASK & 0xFF)
    return write_reg(AIM_REG, value)
