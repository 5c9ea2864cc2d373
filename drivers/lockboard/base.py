# What every RS-485 lock-board driver shares: the error type, the counters,
# the byte-stream frame parser skeleton and the request/reply transaction.
#
# A lock board is a slave on a half-duplex bus: we send one request frame and
# the addressed board answers with one reply frame. The line is noisy (long
# unshielded runs in a steel cabinet, boards powering up mid-frame, adapters
# that echo what we send), so the parser treats the input as an untrusted
# byte stream:
#   - bytes before a frame start are skipped and counted (garbage_bytes);
#   - a frame-shaped run whose checksum fails is rejected and counted
#     (checksum_errors); only its first byte is dropped, so a real frame that
#     starts inside the rejected run is still found;
#   - a frame is emitted only whole (a frame split across reads waits for the
#     rest) and never glued to the next one (lengths come from the frame
#     grammar, never from how the bytes happened to arrive);
#   - every byte fed is accounted for: in an emitted frame, or counted as
#     garbage once flush() has resolved what is left.
#
# MicroPython subset: no typing, no dataclasses; asyncio only through
# sleep / sleep_ms (see firmware/aio.py) so the same code runs on an ESP32, on the
# unix port and on CPython.


from drivers.aio import sleep_ms
from drivers.hal.common import ticks_diff, ticks_ms

CODES = ("timeout", "checksum", "bad_reply", "not_opened", "bad_lock", "io")

# Frame matcher verdicts (see FrameParser._match).
NEED = 0  # not enough bytes yet to decide
GARBAGE = -1  # the start byte does not begin a frame
BAD_SUM = -2  # frame-shaped, checksum wrong

MAX_BUFFER = 256  # far above the longest frame; bounds RAM under a babbling bus


class LockBoardError(Exception):
    """A lock-board transaction that failed; `code` is one of CODES.

    timeout     nothing usable came back (mute board, wrong address, cable cut)
    checksum    replies came back but failed their checksum
    bad_reply   bytes came back but no valid reply for this request
                (garbage only, truncated frame, reply for another lock)
    not_opened  the board answered but the door never reported open
    bad_lock    the lock or board number is not on this bus (no I/O done)
    io          the UART itself failed (port closed, adapter unplugged)
    """

    def __init__(self, code, detail=""):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self):
        if self.detail:
            return "lockboard %s: %s" % (self.code, self.detail)
        return "lockboard " + self.code


def new_stats():
    return {"frames": 0, "garbage_bytes": 0, "checksum_errors": 0, "truncated": 0,
            "timeouts": 0, "retries": 0, "unexpected": 0, "stale_bytes": 0,
            "requests": 0}



def xor_of(data, start=0, end=None):
    if end is None:
        end = len(data)
    x = 0
    for i in range(start, end):
        x ^= data[i]
    return x


def sum_of(data, start=0, end=None):
    if end is None:
        end = len(data)
    s = 0
    for i in range(start, end):
        s += data[i]
    return s & 0xFF


class FrameParser:
    """Byte stream in, whole frames out. Subclasses give STARTS (the bytes a
    frame may begin with) and _match(buf, i, n, final) which returns a frame
    length (> 0), NEED, GARBAGE or BAD_SUM for a candidate at buf[i]."""

    STARTS = b""

    def __init__(self, stats=None):
        self.buf = b""
        self.stats = stats if stats is not None else new_stats()

    def feed(self, data):
        """Add received bytes; return the list of complete frames (bytes)."""
        if data:
            self.buf = self.buf + bytes(data)
        return self._scan(False)

    def flush(self):
        """End of a reply window: decide what was waiting for more bytes.
        A frame cut short is counted as truncated and its bytes as garbage."""
        return self._scan(True)

    def reset(self):
        """Drop buffered bytes (stale input before a new request)."""
        n = len(self.buf)
        self.stats["stale_bytes"] += n
        self.buf = b""
        return n

    def _scan(self, final):
        buf = self.buf
        n = len(buf)
        out = []
        i = 0
        starts = self.STARTS
        stats = self.stats
        while i < n:
            if buf[i] not in starts:
                j = i + 1
                while j < n and buf[j] not in starts:
                    j += 1
                stats["garbage_bytes"] += j - i
                i = j
                continue
            r = self._match(buf, i, n, final)
            if r > 0:
                out.append(buf[i:i + r])
                stats["frames"] += 1
                i += r
            elif r == NEED:
                if final:
                    stats["truncated"] += 1
                    stats["garbage_bytes"] += 1
                    i += 1
                    continue
                break
            else:
                if r == BAD_SUM:
                    stats["checksum_errors"] += 1
                stats["garbage_bytes"] += 1
                i += 1
        rest = buf[i:]
        if len(rest) > MAX_BUFFER:
            cut = len(rest) - MAX_BUFFER
            stats["garbage_bytes"] += cut
            rest = rest[cut:]
        self.buf = rest
        return out

    def _match(self, buf, i, n, final):
        raise NotImplementedError


def _place(lock, board):
    # A compartment record from the locker config ({"board": b, "lock": l})
    # is accepted as is, so the application can pass what it stores.
    if isinstance(lock, dict):
        return lock.get("lock"), lock.get("board")
    if isinstance(lock, tuple):
        return lock[1], lock[0]
    return lock, board


class LockBoard:
    """An async driver for one bus of lock boards of one family.

    boards: the board addresses on this bus, in the order their locks are
    numbered: with boards=(1, 2) and 24 locks each, lock 25 is board 2
    channel 1. Every method also takes board= to name a board's own channel,
    or a (board, lock) tuple, or a {"board": b, "lock": l} record.

    Each transaction drains stale input, writes one request frame, then
    polls the UART (it never blocks) until a matching reply or timeout_ms;
    it is retried `retries` times before a LockBoardError is raised.
    """

    FAMILY = ""
    LOCKS = 24
    MAX_LOCKS = 255
    FIRST_BOARD = 1
    LAST_BOARD = 31

    def __init__(self, uart, boards=None, locks=None, timeout_ms=300, retries=2,
                 open_attempts=2, verify_polls=3, verify_ms=150, poll_ms=5, invert=False):
        self.uart = uart
        self.boards = list(boards) if boards is not None else [self.FIRST_BOARD]
        self.locks = locks or self.LOCKS
        if not 1 <= self.locks <= self.MAX_LOCKS:
            raise ValueError("%d locks per board: this family has 1..%d" % (self.locks, self.MAX_LOCKS))
        for b in self.boards:
            if not self.FIRST_BOARD <= b <= self.LAST_BOARD:
                raise ValueError("board address %r outside %d..%d"
                                 % (b, self.FIRST_BOARD, self.LAST_BOARD))
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.open_attempts = open_attempts
        self.verify_polls = verify_polls
        self.verify_ms = verify_ms
        self.poll_ms = poll_ms
        # Feedback wiring: most boards read their lock switch as "closed" when
        # it is shorted; boards wired the other way report the inverse.
        self.invert = invert
        self.stats = new_stats()
        self.errors = {}
        for c in CODES:
            self.errors[c] = 0
        self.parser = self._make_parser()
        self._busy = False

    # ---- numbering

    def count(self):
        return self.locks * len(self.boards)

    def locate(self, lock, board=None):
        """(board, channel, global number) for a lock, or LockBoardError bad_lock."""
        lock, board = _place(lock, board)
        if not isinstance(lock, int):
            raise self._fail("bad_lock", "lock %r is not a number" % (lock,))
        if board is None:
            if not 1 <= lock <= self.count():
                raise self._fail("bad_lock", "lock %d outside 1..%d" % (lock, self.count()))
            idx = (lock - 1) // self.locks
            return self.boards[idx], (lock - 1) % self.locks + 1, lock
        if board not in self.boards:
            raise self._fail("bad_lock", "board %r is not on this bus" % (board,))
        if not 1 <= lock <= self.locks:
            raise self._fail("bad_lock", "lock %d outside 1..%d on board %d" % (lock, self.locks, board))
        return board, lock, self.boards.index(board) * self.locks + lock

    def _entry(self, board, ch, is_open, occupied):
        return {"lock": self.boards.index(board) * self.locks + ch, "board": board, "channel": ch,
                "open": is_open, "occupied": occupied}

    # ---- public API

    async def open(self, lock, board=None):
        """Release a lock, then query until the board reports it open.

        The reply to the open command is not trusted on its own (on an echoing
        adapter a request and a "still closed" reply can be the same bytes),
        so success means a status query saw the lock open. Returns that
        status. Raises LockBoardError("not_opened") if the board answered
        every query with "closed"; if no query was ever answered, the bus
        error instead (timeout, checksum, bad_reply, io): the door state is
        then unknown, which is a different alarm from a jammed lock."""
        b, ch, _ = self.locate(lock, board)
        bus_err = None
        answered = False
        for _attempt in range(self.open_attempts):
            try:
                await self._transact(self._req_open(b, ch), self._accept_open(b, ch))
            except LockBoardError as e:
                # The command may have worked and only its reply been lost:
                # the status query below decides.
                bus_err = e
            for poll in range(self.verify_polls):
                try:
                    st = await self._status(b, ch)
                except LockBoardError as e:
                    bus_err = e
                    break
                answered = True
                if st["open"]:
                    return st
                if poll + 1 < self.verify_polls:
                    await sleep_ms(self.verify_ms)
        if not answered and bus_err is not None:
            self.errors[bus_err.code] += 1
            raise bus_err
        raise self._fail("not_opened", "board %d lock %d never reported open" % (b, ch))

    async def status(self, lock, board=None):
        """{"lock", "board", "channel", "open", "occupied"} for one lock;
        occupied is None on boards without an occupancy sensor."""
        b, ch, _ = self.locate(lock, board)
        try:
            return await self._status(b, ch)
        except LockBoardError as e:
            self.errors[e.code] += 1
            raise

    async def status_all(self, board=None):
        """The status of every lock on the bus (or on one board), in lock order."""
        if board is not None and board not in self.boards:
            raise self._fail("bad_lock", "board %r is not on this bus" % (board,))
        out = []
        for b in ([board] if board is not None else self.boards):
            try:
                out.extend(await self._status_all(b))
            except LockBoardError as e:
                self.errors[e.code] += 1
                raise
        return out

    def close(self):
        self.uart.close()

    # ---- transactions

    def _fail(self, code, detail=""):
        self.errors[code] += 1
        return LockBoardError(code, detail)

    def _drain(self):
        """Throw away whatever arrived since the last transaction: a late
        reply to a timed-out request must not answer the next one."""
        self.parser.reset()
        for _ in range(32):
            data = self._read()
            if not data:
                return
            self.stats["stale_bytes"] += len(data)

    def _read(self):
        try:
            return self.uart.read(64)
        except OSError as e:
            raise LockBoardError("io", "uart read: %s" % (e,))

    async def _transact(self, request, accept, expect_long=False):
        """Send request; return accept(frame) for the first frame it does not
        answer None to. Raises LockBoardError (not counted in self.errors:
        the public method that gave up counts it once).

        One transaction at a time per bus: the locker's door task and its
        monitor task share the driver, and a second request sent while the
        first waits would drain (throw away) the first one's reply. A flag
        polled with sleep_ms, not asyncio.Lock: it binds to no event loop and
        behaves the same on MicroPython and CPython."""
        while self._busy:
            await sleep_ms(self.poll_ms)
        self._busy = True
        try:
            return await self._transact_once(request, accept, expect_long)
        finally:
            self._busy = False

    async def _transact_once(self, request, accept, expect_long):
        stats = self.stats
        parser = self.parser
        err = None
        for attempt in range(self.retries + 1):
            if attempt:
                stats["retries"] += 1
            self._drain()
            parser.expect_long = expect_long
            before = (stats["checksum_errors"], stats["garbage_bytes"], stats["truncated"],
                      stats["unexpected"])
            try:
                self.uart.write(request)
            except OSError as e:
                raise LockBoardError("io", "uart write: %s" % (e,))
            stats["requests"] += 1
            start = ticks_ms()
            wrong = None
            while True:
                data = self._read()
                expired = ticks_diff(ticks_ms(), start) >= self.timeout_ms
                frames = parser.feed(data) if data else []
                if expired:
                    frames.extend(parser.flush())
                for f in frames:
                    try:
                        r = accept(f)
                    except LockBoardError as e:
                        r = None
                        wrong = e.detail
                    if r is not None:
                        return r
                    if f != request:  # our own request echoed by a half-duplex adapter is no news
                        stats["unexpected"] += 1
                if expired:
                    break
                # Yield even while bytes keep coming: a babbling bus must not
                # starve the other tasks (and the watchdog feeder).
                await sleep_ms(0 if data else self.poll_ms)
            if stats["checksum_errors"] > before[0]:
                err = LockBoardError("checksum", "reply failed its checksum (%s)" % self.FAMILY)
            elif wrong is not None:
                err = LockBoardError("bad_reply", wrong)
            elif stats["truncated"] > before[2]:
                err = LockBoardError("bad_reply", "reply cut short")
            elif stats["garbage_bytes"] > before[1] or stats["unexpected"] > before[3]:
                err = LockBoardError("bad_reply", "no valid reply, only noise or other frames")
            else:
                stats["timeouts"] += 1
                err = LockBoardError("timeout", "no reply in %d ms" % self.timeout_ms)
        raise err

    # ---- family hooks

    def _make_parser(self):
        raise NotImplementedError

    async def _status(self, b, ch):
        raise NotImplementedError

    async def _status_all(self, b):
        raise NotImplementedError

    def _req_open(self, b, ch):
        raise NotImplementedError

    def _accept_open(self, b, ch):
        raise NotImplementedError
