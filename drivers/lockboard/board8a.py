# Driver for the common "8A" RS-485 lock-control boards (the 2/8/12/16/24/
# 48-channel boards sold under many names; Guangzhou Shuoming's "485锁控板通讯
# 协议" describes the family). 9600 8N1, up to 31 boards on one bus (address
# 1..31 on the DIP switch), every frame ends with the XOR of all its
# preceding bytes.
#
# Frames we rely on (hex; b = board, l = lock 1..n, x = XOR):
#
#   open one lock     8A b l 11 x            e.g. 8A 01 01 11 9B
#     reply           8A b l s  x            s = lock state after the pulse
#   open all          8A b 00 11 x           reply 8A b 00 11 x
#   query one lock    80 b l 33 x            e.g. 80 01 01 33 B3
#     reply           80 b l s  x
#   query all locks   80 b 00 33 x           e.g. 80 01 00 33 B2
#     reply           80 b m(k-1) .. m0 33 x k bitmap bytes, highest group first:
#                                            24 locks: 80 b [17-24] [9-16] [1-8] 33 x
#   state report      82 b l s  x            sent by the board on its own when a
#                                            door changes (boards with that option)
#
#   s = 00: lock open (hook released), 11: lock closed.
#   bitmap bit (l-1)%8 of group (l-1)//8: 1 = closed, 0 = open.
#
# What the public sources agree on, and what we chose where they differ:
#   - state bytes 00 = open / 11 = closed, and bitmap 1 = locked, are what
#     vendor notes and several independent integrations use; the same sources
#     show boards wired for the other feedback polarity ("开锁短路" instead of
#     "上锁短路") reporting the inverse, hence the driver's `invert` option.
#   - query-all carries ceil(locks / 8) bitmap bytes: 3 on the common 24-lock
#     board, 2 on 12-lock boards (`bitmap_bytes` overrides).
#   - the open reply is not proof: some boards answer only after the pulse,
#     some echo the command, and on an echoing adapter the request and a
#     "still closed" reply are the same five bytes. The driver therefore
#     always verifies with a query (LockBoard.open).
#
# Framing ambiguity (the protocol has no length byte): a query-all reply
# 80 b m2 m1 m0 33 x can begin with five bytes that are themselves a valid
# short 80-frame. The parser resolves it by what the driver is waiting for:
# with expect_long set (a query-all is outstanding) the long reading wins
# whenever it is valid, otherwise the short one does. Either way a frame is
# emitted whole or not at all.

from drivers.lockboard.base import (
    BAD_SUM,
    GARBAGE,
    NEED,
    FrameParser,
    LockBoard,
    LockBoardError,
    xor_of,
)

OPEN = 0x8A
QUERY = 0x80
REPORT = 0x82
FN_OPEN = 0x11
FN_QUERY = 0x33
STATE_OPEN = 0x00
STATE_CLOSED = 0x11
BAUD = 9600


def _frame(*body):
    return bytes(body) + bytes((xor_of(body),))


def _check(board, lock=1):
    if not 0 <= board <= 0xFF or not 0 <= lock <= 0xFF:
        raise ValueError("board/lock out of byte range")


def encode_open(board, lock):
    _check(board, lock)
    return _frame(OPEN, board, lock, FN_OPEN)


def encode_open_all(board):
    _check(board)
    return _frame(OPEN, board, 0, FN_OPEN)


def encode_query(board, lock):
    _check(board, lock)
    return _frame(QUERY, board, lock, FN_QUERY)


def encode_query_all(board):
    _check(board)
    return _frame(QUERY, board, 0, FN_QUERY)


def bitmap_len(locks):
    return (locks + 7) // 8


def _is_open(state, invert):
    if state == STATE_OPEN:
        return not invert
    if state == STATE_CLOSED:
        return bool(invert)
    raise LockBoardError("bad_reply", "unknown lock state 0x%02x" % state)


def _valid(frame, length):
    return len(frame) == length and xor_of(frame, 0, length - 1) == frame[length - 1]


def parse_open_reply(frame, invert=False):
    """{"board", "lock", "open"} from an 8A reply, or None if it is not one."""
    if not _valid(frame, 5) or frame[0] != OPEN:
        return None
    return {"board": frame[1], "lock": frame[2], "open": _is_open(frame[3], invert)}


def parse_query_reply(frame, invert=False):
    """{"board", "lock", "open"} from a single-lock query reply, else None.
    Our own request (state byte 33) is not a reply."""
    if not _valid(frame, 5) or frame[0] != QUERY or frame[3] == FN_QUERY:
        return None
    return {"board": frame[1], "lock": frame[2], "open": _is_open(frame[3], invert)}


def parse_report(frame, invert=False):
    """A spontaneous 82 state report, or None."""
    if not _valid(frame, 5) or frame[0] != REPORT:
        return None
    return {"board": frame[1], "lock": frame[2], "open": _is_open(frame[3], invert)}


def parse_query_all_reply(frame, locks=24, invert=False, nbytes=None):
    """{"board", "open": [lock 1 .. lock n]} from a query-all reply, else None."""
    nb = nbytes or bitmap_len(locks)
    n = nb + 4
    if not _valid(frame, n) or frame[0] != QUERY or frame[n - 2] != FN_QUERY:
        return None
    states = []
    for i in range(locks):
        group = frame[1 + nb - i // 8]  # last bitmap byte holds locks 1-8
        closed = (group >> (i % 8)) & 1
        states.append((not closed) != bool(invert))
    return {"board": frame[1], "open": states}


def encode_query_all_reply(board, open_states, invert=False, nbytes=None):
    """The reply a board sends (used by the simulator and the tests)."""
    nb = nbytes or bitmap_len(len(open_states))
    groups = [0] * nb
    for i in range(len(open_states)):
        closed = (not open_states[i]) != bool(invert)
        if closed:
            groups[nb - 1 - i // 8] |= 1 << (i % 8)
    return _frame(QUERY, board, *(groups + [FN_QUERY]))


class Parser8A(FrameParser):
    """Frames of the 8A family from a byte stream (see the module notes)."""

    STARTS = bytes((OPEN, QUERY, REPORT))

    def __init__(self, bitmap_bytes=3, stats=None):
        super().__init__(stats)
        self.long_len = bitmap_bytes + 4
        self.expect_long = False

    def reset(self):
        self.expect_long = False
        return super().reset()

    def _match(self, buf, i, n, final):
        avail = n - i
        if avail < 5:
            return NEED
        code = buf[i + 3]
        short_sum = xor_of(buf, i, i + 4) == buf[i + 4]
        if buf[i] != QUERY:
            if code != STATE_OPEN and code != STATE_CLOSED:
                return GARBAGE
            return 5 if short_sum else BAD_SUM
        short_shape = code == STATE_OPEN or code == STATE_CLOSED or code == FN_QUERY
        short_ok = short_shape and short_sum
        L = self.long_len
        m = L - 2  # where a long frame has its 33 marker
        if avail >= L:
            long_ok = buf[i + m] == FN_QUERY and xor_of(buf, i, i + L - 1) == buf[i + L - 1]
            if self.expect_long:
                if long_ok:
                    return L
                if short_ok:
                    return 5
            else:
                if short_ok:
                    return 5
                if long_ok:
                    return L
            return BAD_SUM if (short_shape or buf[i + m] == FN_QUERY) else GARBAGE
        # Fewer bytes than a long frame.
        if self.expect_long:
            if short_ok and (avail > m and buf[i + m] != FN_QUERY or final):
                return 5
            return NEED
        if short_ok:
            return 5
        if final and short_shape:
            return BAD_SUM
        return NEED


class Board8A(LockBoard):
    """Driver for a bus of 8A boards. Boards have no occupancy sensor:
    "occupied" is always None."""

    FAMILY = "8a"
    BAUD = BAUD
    LOCKS = 24
    MAX_LOCKS = 255
    FIRST_BOARD = 1
    LAST_BOARD = 31

    def __init__(self, uart, boards=None, locks=None, bitmap_bytes=None, **kw):
        self.bitmap_bytes = bitmap_bytes or bitmap_len(locks or self.LOCKS)
        super().__init__(uart, boards, locks, **kw)

    def _make_parser(self):
        return Parser8A(self.bitmap_bytes, self.stats)

    def _req_open(self, b, ch):
        return encode_open(b, ch)

    def _accept_open(self, b, ch):
        inv = self.invert

        def accept(f):
            r = parse_open_reply(f, inv)
            if r is not None and r["board"] == b and r["lock"] == ch:
                return r
            return None

        return accept

    async def _status(self, b, ch):
        inv = self.invert

        def accept(f):
            r = parse_query_reply(f, inv)
            if r is not None and r["board"] == b and r["lock"] == ch:
                return r
            return None

        r = await self._transact(encode_query(b, ch), accept)
        return self._entry(b, ch, r["open"], None)

    async def _status_all(self, b):
        locks = self.locks
        inv = self.invert
        nb = self.bitmap_bytes

        def accept(f):
            r = parse_query_all_reply(f, locks, inv, nb)
            if r is not None and r["board"] == b:
                return r
            return None

        r = await self._transact(encode_query_all(b), accept, expect_long=True)
        out = []
        for i in range(locks):
            out.append(self._entry(b, i + 1, r["open"][i], None))
        return out
