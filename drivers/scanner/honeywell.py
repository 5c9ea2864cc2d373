# Honeywell serial scan engines and scanners (N-series engines, Xenon,
# Granit, Voyager in RS-232 mode).
#
# Default 115200 8N1 on current engines (older products 9600: pass the
# rate the engine is set to). Serial trigger commands:
#   trigger  SYN T CR   16 54 0D
#   release  SYN U CR   16 55 0D
# The barcode comes back as plain data with the configured suffix (CR by
# default on RS-232).
#
# Menu commands: SYN M CR, then Tag SubTag Data, then "!" (temporary, RAM)
# or "." (permanent, flash); several commands are joined with "," (same tag)
# or ";" (another tag). The engine answers by echoing the command with a
# status byte inserted before each "," ";" and the final "." / "!":
#   ACK 06 good   ENQ 05 invalid tag/subtag   NAK 15 value out of range
# e.g. PRECA2,BK2995C80.  ->  PRECA2<ACK>,BK2995C80<ACK>.
#
# AIM identifiers: PRECA2 clears all prefixes, BK2 99 5C80 adds the AIM
# identifier ("5C80") as prefix to all symbologies ("99").
#
# Sources: Honeywell user guides (Xenon, 1450g, 2020, N431x), chapter
# "Serial Programming Commands" (menu command syntax and responses) and
# "Serial Trigger Mode"; the prefix/AIM tags from the "Data Editing"
# chapter.

from drivers.scanner.framing import NOMATCH, OK, REPLY, LineFramer

BAUD = 115200
FAMILY = "honeywell"

TRIGGER = b"\x16T\r"
STOP = b"\x16U\r"
MENU = b"\x16M\r"
ACK, ENQ, NAK = 0x06, 0x05, 0x15

AIM_ON = b"PRECA2,BK2995C80"
AIM_OFF = b"PRECA2"

MAX_REPLY = 128
_STATUS = {ACK: "ack", ENQ: "enq", NAK: "nak"}


def menu(cmd, permanent=True):
    return MENU + cmd + (b"." if permanent else b"!")


def aim_command(on):
    return menu(AIM_ON if on else AIM_OFF)


def encode_reply(cmd, status=ACK):
    """The engine's echo of a menu command (cmd ends with "." or "!")."""
    out = bytearray()
    st = bytes((status,))
    for i in range(len(cmd)):
        c = cmd[i:i + 1]
        if c in (b",", b";") or (i == len(cmd) - 1 and c in (b".", b"!")):
            out += st
        out += c
    return bytes(out)


def match_reply(buf):
    """Matcher for LineFramer: a menu echo ends at "." or "!" right after a
    status byte, before any CR/LF. Never waits (NEED): a scan that starts
    like a tag must not be held back; the framer retries on the next feed."""
    if buf.find(b"\x06") < 0 and buf.find(b"\x15") < 0 and buf.find(b"\x05") < 0:
        return NOMATCH, 0, None
    start = 3 if buf[:3] == MENU else 0
    n = len(buf)
    if n > MAX_REPLY:
        n = MAX_REPLY
    worst = ACK
    body = bytearray()
    for j in range(start, n):
        c = buf[j]
        if c == 0x0D or c == 0x0A:
            return NOMATCH, 0, None
        if c in _STATUS:
            if c != ACK:
                worst = c
            continue
        if c < 0x20 or c > 0x7E:
            return NOMATCH, 0, None
        body.append(c)
        if (c == 0x2E or c == 0x21) and j > start and buf[j - 1] in _STATUS:
            return OK, j + 1, (REPLY, bytes(body), _STATUS[worst])
    return NOMATCH, 0, None


def make_parser(suffix="cr", idle_ms=50, max_len=512, stats=None):
    return LineFramer(suffix, idle_ms, max_len, stats, match_reply, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ\x16")
