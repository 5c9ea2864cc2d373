# Newland scan engines (EM20, EM3080, EM2037, NLS-FM series) on a serial line.
#
# 9600 8N1 by default. Serial programming commands:
#   7E 01 "0000" <storage> <command> ";" 03
#     storage "#" = temporary (RAM), "@" = permanent (flash)
#   trigger   ~<SOH>0000#SCNTRG1;<ETX>   (SCNTRG1 start, SCNTRG0 stop)
#   scan mode @SCNMOD0 level/trigger, @SCNMOD2 continuous (sense)
#   AIM id    @AIDENA1 on, @AIDENA0 off
# Replies: STX SOH "0000" <storage> <command> <status> ";" ETX, status
# ACK 06 (done), NAK 15 (bad value), ENQ 05 (unknown command); several
# commands separated by ";" each get a status. The barcode comes back as
# plain data with the configured suffix.
#
# Sources: Newland EM20/EM3080 user guides, "Serial Programming Command"
# (prefix 7E 01 30 30 30 30, storage types, suffix 3B 03); the command
# names SCNTRG/SCNMOD from public integrations that drive Newland engines.
# Caveat: the exact reply prefix (STX SOH 0000) and the AIDENA tag were not
# confirmed on a manual page we could read; the parser accepts any reply
# that starts with STX and ends with ";" ETX and takes the status byte
# before the ";".

from drivers.scanner.framing import NEED, NOMATCH, OK, REPLY, LineFramer

BAUD = 9600
FAMILY = "newland"

ACK, ENQ, NAK = 0x06, 0x05, 0x15
HEAD = b"\x7e\x01"
REPLY_HEAD = b"\x02\x01"
END = b";\x03"
MAX_REPLY = 128
_STATUS = {ACK: "ack", ENQ: "enq", NAK: "nak"}


def command(body, permanent=False):
    return HEAD + b"0000" + (b"@" if permanent else b"#") + body + END


TRIGGER = command(b"SCNTRG1")
STOP = command(b"SCNTRG0")


def aim_command(on):
    return command(b"AIDENA1" if on else b"AIDENA0", permanent=True)


def parse_command(frame):
    """(storage, [command, ...]) of a host command frame, or None."""
    if len(frame) < 10 or frame[:2] != HEAD or frame[-2:] != END:
        return None
    if frame[2:6] != b"0000" or frame[6:7] not in (b"#", b"@"):
        return None
    return frame[6:7], frame[7:-2].split(b";")


def encode_reply(storage, commands, statuses):
    """The engine's reply to a command frame, one status per command."""
    parts = []
    for i in range(len(commands)):
        parts.append(commands[i] + bytes((statuses[i],)))
    return REPLY_HEAD + b"0000" + storage + b";".join(parts) + END


def match_reply(buf):
    """Matcher for LineFramer: STX ... ";" ETX at a frame start."""
    n = len(buf)
    if n < 2:
        return NEED, 0, None
    k = buf.find(END)
    if k < 0:
        if n >= MAX_REPLY:
            return NOMATCH, 0, None
        return NEED, 0, None
    if k > MAX_REPLY or k < 2:
        return NOMATCH, 0, None
    st = buf[k - 1]
    if st not in _STATUS:
        return NOMATCH, 0, None
    body = buf[1:k - 1]
    if body[:1] == b"\x01":
        body = body[1:]
    worst = ACK
    for c in body:
        if c in _STATUS and c != ACK:
            worst = c
    if st != ACK:
        worst = st
    return OK, k + 2, (REPLY, body, _STATUS[worst])


def make_parser(suffix="cr", idle_ms=50, max_len=512, stats=None):
    return LineFramer(suffix, idle_ms, max_len, stats, match_reply, b"\x02")
