# Driver for Kerong KR-CU12 / KR-CU16 style lock-control units ("CU").
# 19200 8N1. A frame is STX ADDR CMD [DATA] ETX SUM with STX = 02,
# ETX = 03 and SUM the low byte of the sum of every preceding byte.
#
# ADDR packs the unit and the lock: high nibble = CU address (0..15, the DIP
# switch), low nibble = lock index 0..15 (lock 1 is index 0).
#
#   30 status         02 ADDR 30 03 SUM      e.g. 02 00 30 03 35
#   31 unlock         02 ADDR 31 03 SUM      e.g. 02 00 31 03 36
#   32 status of all  02 ADDR 32 03 SUM      ADDR = CU << 4
#   33 unlock all     02 ADDR 33 03 SUM      ADDR = CU << 4
#
#   reply             02 ADDR 35|36 H1 H2 I1 I2 03 SUM   (9 bytes)
#     35 answers 30/31 (one CU's data), 36 answers 32/33 (all-locks data);
#     both carry the whole unit: H1/H2 are the lock-hook bitmaps of locks
#     1-8 / 9-16 and I1/I2 the infrared (occupancy) bitmaps, bit 0 = lock 1.
#     Hook bit 1 = hook engaged (door locked), 0 = released; infrared bit 1 =
#     something in the compartment.
#
# What we relied on: the frame, checksum, command set, the 9-byte reply with
# hook bytes at offsets 3-4 and infrared at 5-6, and "hook bit set = locked"
# are what independent public integrations of CU12/CU16 units implement and
# agree on. Vendor documents name 35 "return single CU data" and 36 "return
# all CU data"; which of the two a given firmware uses for which request
# varies, so the driver accepts either (same layout). Feedback wiring can be
# inverted per installation (`invert`), as for the 8A boards.
#
# The grammar is unambiguous (the command byte fixes the length), so the
# parser needs no context: requests echoed by the adapter (5 bytes) and
# replies (9 bytes) are both recognised; the driver ignores the echoes.

from drivers.lockboard.base import BAD_SUM, GARBAGE, NEED, FrameParser, LockBoard, sum_of

STX = 0x02
ETX = 0x03
CMD_STATUS = 0x30
CMD_UNLOCK = 0x31
CMD_STATUS_ALL = 0x32
CMD_UNLOCK_ALL = 0x33
REPLY_ONE = 0x35
REPLY_ALL = 0x36
BAUD = 19200
REQUEST_CMDS = (CMD_STATUS, CMD_UNLOCK, CMD_STATUS_ALL, CMD_UNLOCK_ALL)
REPLY_CMDS = (REPLY_ONE, REPLY_ALL)


def address(board, lock=1):
    if not 0 <= board <= 15 or not 1 <= lock <= 16:
        raise ValueError("CU address 0..15 and lock 1..16")
    return (board << 4) | (lock - 1)


def _frame(addr, cmd, data=b""):
    body = bytes((STX, addr, cmd)) + bytes(data) + bytes((ETX,))
    return body + bytes((sum_of(body),))


def encode_query(board, lock):
    return _frame(address(board, lock), CMD_STATUS)


def encode_open(board, lock):
    return _frame(address(board, lock), CMD_UNLOCK)


def encode_query_all(board):
    return _frame(address(board), CMD_STATUS_ALL)


def encode_open_all(board):
    return _frame(address(board), CMD_UNLOCK_ALL)


def encode_reply(addr, cmd, hooks, infrared):
    """A unit's 9-byte reply; hooks/infrared are 16-bit bitmaps, bit 0 = lock 1
    (used by the simulator and the tests)."""
    return _frame(addr, cmd, bytes((hooks & 0xFF, (hooks >> 8) & 0xFF,
                                    infrared & 0xFF, (infrared >> 8) & 0xFF)))


def parse_reply(frame, locks=16, invert=False):
    """{"board", "addr", "cmd", "open": [..], "occupied": [..]} from a reply,
    or None for anything else (requests, other lengths, bad checksum)."""
    if len(frame) != 9 or frame[0] != STX or frame[7] != ETX or frame[2] not in REPLY_CMDS:
        return None
    if sum_of(frame, 0, 8) != frame[8]:
        return None
    hooks = frame[3] | (frame[4] << 8)
    ir = frame[5] | (frame[6] << 8)
    opened = []
    occupied = []
    for i in range(locks):
        opened.append((not ((hooks >> i) & 1)) != bool(invert))
        occupied.append(bool((ir >> i) & 1))
    return {"board": frame[1] >> 4, "addr": frame[1], "cmd": frame[2], "open": opened,
            "occupied": occupied}


class ParserKerong(FrameParser):
    STARTS = bytes((STX,))

    def __init__(self, stats=None):
        super().__init__(stats)
        self.expect_long = False  # unused: the command byte fixes the length

    def _match(self, buf, i, n, final):
        if n - i < 3:
            return NEED
        cmd = buf[i + 2]
        if cmd in REQUEST_CMDS:
            length = 5
        elif cmd in REPLY_CMDS:
            length = 9
        else:
            return GARBAGE
        if n - i < length:
            return NEED
        if buf[i + length - 2] != ETX:
            return GARBAGE
        if sum_of(buf, i, i + length - 1) != buf[i + length - 1]:
            return BAD_SUM
        return length


class Kerong(LockBoard):
    """Driver for a bus of Kerong CU units (CU16 by default; locks=12 for CU12)."""

    FAMILY = "kerong"
    BAUD = BAUD
    LOCKS = 16
    MAX_LOCKS = 16
    FIRST_BOARD = 0
    LAST_BOARD = 15

    def _make_parser(self):
        return ParserKerong(self.stats)

    def _accept(self, b):
        locks = self.locks
        inv = self.invert

        def accept(f):
            r = parse_reply(f, locks, inv)
            if r is not None and r["board"] == b:
                return r
            return None

        return accept

    def _req_open(self, b, ch):
        return encode_open(b, ch)

    def _accept_open(self, b, ch):
        return self._accept(b)

    async def _status(self, b, ch):
        r = await self._transact(encode_query(b, ch), self._accept(b))
        return self._entry(b, ch, r["open"][ch - 1], r["occupied"][ch - 1])

    async def _status_all(self, b):
        r = await self._transact(encode_query_all(b), self._accept(b))
        out = []
        for i in range(self.locks):
            out.append(self._entry(b, i + 1, r["open"][i], r["occupied"][i]))
        return out
