"""Byte-accurate simulated RS-485 lock-control boards for host tests and the
outlet simulator.

The firmware drivers in ``drivers/lockboard`` must be tested against the
bytes real boards put on the wire, not against a mock of the driver's own
expectations. So this module re-implements the *board* side of each protocol
independently of the driver code (its own request framing and reply encoding,
written from the protocol notes in ``drivers/lockboard/board8a.py`` and
``kerong.py``), keeps the physical state a driver can observe (lock released,
door open, compartment occupied) and serves it over the transports the HAL
ports use: a TCP socket for ``socket://127.0.0.1:PORT`` (the MicroPython unix
port HAL, pyserial) and a pty for a real serial device path.

Door physics: an open command releases the lock and the door then reads open
until ``close_door`` is called (a person shut it); ``force_open`` opens a door
with no command (a break-in), ``jam`` makes a lock ignore open commands,
``leave_open`` is a person who walks away from a door (it stays open,
whoever else would shut it, until ``shut_left_open``).

Faults (per bus or per board, see :class:`BoardFaults`): ``mute`` (no replies),
``garbage`` (random bytes before each reply), ``corrupt`` (wrong checksum),
``truncate`` (reply cut short), ``delay_ms``; ``replies=N`` limits a fault to
the next N replies so tests can check that a retry recovers.
"""

from __future__ import annotations

import os
import random
import select
import socket
import threading
import time
from collections.abc import Iterable

from simulator.serving import Served

__all__ = ["BoardFaults", "SimBoard", "Sim8ABus", "SimKerong"]


class BoardFaults:
    """Fault injection for the replies of one board or a whole bus.

    Kept as plain attributes so a test or a scenario file can flip them
    between transactions without a protocol of its own.
    """

    def __init__(self) -> None:
        self.mute = False
        self.garbage = 0
        self.corrupt = False
        self.truncate = False
        self.delay_ms = 0
        self.replies: int | None = None

    def set(self, *, mute: bool = False, garbage: int = 0, corrupt: bool = False,
            truncate: bool = False, delay_ms: int = 0, replies: int | None = None) -> BoardFaults:
        """Replace every fault at once, so an earlier test's fault never lingers."""
        self.mute, self.garbage, self.corrupt = mute, garbage, corrupt
        self.truncate, self.delay_ms, self.replies = truncate, delay_ms, replies
        return self

    def clear(self) -> None:
        self.set()

    def active(self) -> bool:
        return bool(self.mute or self.garbage or self.corrupt or self.truncate or self.delay_ms)

    def consume(self) -> None:
        """Count one affected reply; faults limited to N replies end here."""
        if self.replies is not None and self.active():
            self.replies -= 1
            if self.replies <= 0:
                self.clear()


class SimBoard:
    """One board's locks and doors. Channels are 1-based, as on the wire."""

    def __init__(self, address: int, locks: int) -> None:
        self.address = address
        self.locks = locks
        self.released = [False] * locks  # lock released by a command
        self.forced = [False] * locks  # door open without a command
        self.occupied = [False] * locks
        self.jammed = [False] * locks
        self.held = [False] * locks  # left open by a person: close_door does not shut it
        self.faults = BoardFaults()
        self.opens = [0] * locks  # open commands that released the lock

    def is_open(self, ch: int) -> bool:
        return self.released[ch - 1] or self.forced[ch - 1]

    def open_cmd(self, ch: int) -> None:
        if not self.jammed[ch - 1]:
            self.released[ch - 1] = True
            self.opens[ch - 1] += 1


class _SimBus(Served):
    """Board-side protocol engine shared by the families: request framing,
    fault injection, door physics and the TCP/pty servers."""

    STARTS = b""
    NOISE_EXCLUDES = b""
    BAUD = 9600
    FIRST_BOARD = 1
    LAST_BOARD = 31
    MAX_LOCKS = 255

    def __init__(self, boards: Iterable[int] = (1,), locks: int = 24, seed: int = 0,
                 invert: bool = False) -> None:
        boards = list(boards)
        if not boards or not all(self.FIRST_BOARD <= b <= self.LAST_BOARD for b in boards):
            raise ValueError(f"board addresses must be {self.FIRST_BOARD}..{self.LAST_BOARD}")
        if not 1 <= locks <= self.MAX_LOCKS:
            raise ValueError(f"locks must be 1..{self.MAX_LOCKS}")
        self.locks = locks
        self.invert = invert
        self._boards = {b: SimBoard(b, locks) for b in boards}
        self.faults = BoardFaults()
        self.rng = random.Random(seed)
        self.mutex = threading.RLock()
        self.requests: list[bytes] = []  # every well-formed request heard on the bus
        self.replies: list[bytes] = []  # every reply put on the bus, faults included
        self.bad_requests = 0
        self._rx = b""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closers: list[socket.socket | int] = []  # closed by close()

    # ---- physical state

    def board(self, address: int) -> SimBoard:
        return self._boards[address]

    def _ch(self, board: int, lock: int) -> SimBoard:
        b = self._boards[board]
        if not 1 <= lock <= b.locks:
            raise ValueError(f"lock {lock} outside 1..{b.locks}")
        return b

    def close_door(self, board: int, lock: int) -> None:
        """Someone shut the door: the lock latches again."""
        with self.mutex:
            b = self._ch(board, lock)
            if b.held[lock - 1]:
                return  # nobody is there to shut it (leave_open)
            b.released[lock - 1] = False
            b.forced[lock - 1] = False

    def leave_open(self, board: int, lock: int, value: bool = True) -> None:
        """The person at this door walks away from it once it opens: it stays
        open (``close_door`` does nothing) until ``shut_left_open``."""
        with self.mutex:
            self._ch(board, lock).held[lock - 1] = value

    def shut_left_open(self, board: int, lock: int) -> None:
        """Someone comes back and shuts a door left open."""
        with self.mutex:
            self._ch(board, lock).held[lock - 1] = False
            self.close_door(board, lock)

    def force_open(self, board: int, lock: int, value: bool = True) -> None:
        """The door is open without any command (forced, or a failed latch)."""
        with self.mutex:
            self._ch(board, lock).forced[lock - 1] = value

    def set_occupied(self, board: int, lock: int, value: bool = True) -> None:
        """What the compartment's infrared sensor sees (boards without one ignore it)."""
        with self.mutex:
            self._ch(board, lock).occupied[lock - 1] = value

    def jam(self, board: int, lock: int, value: bool = True) -> None:
        """A lock that no longer releases when commanded."""
        with self.mutex:
            self._ch(board, lock).jammed[lock - 1] = value

    def is_open(self, board: int, lock: int) -> bool:
        with self.mutex:
            return self._ch(board, lock).is_open(lock)

    # ---- the wire

    def feed(self, data: bytes) -> bytes:
        """Request bytes in, the reply bytes the boards would send out
        (delays are not applied here; the servers apply them)."""
        with self.mutex:
            self._rx, out = self._process(self._rx + data)
        return b"".join(chunk for _, chunk in out)

    def _process(self, buf: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
        """Frame requests out of buf; return the unconsumed tail and the
        replies with their delays. A malformed request gets no reply, as on a
        real board; only its first byte is dropped so a request inside it is
        still heard."""
        out: list[tuple[int, bytes]] = []
        i = 0
        while i < len(buf):
            if buf[i] not in self.STARTS:
                i += 1
                continue
            if len(buf) - i < 5:
                break
            req = buf[i:i + 5]
            if not self._valid_request(req):
                self.bad_requests += 1
                i += 1
                continue
            i += 5
            self.requests.append(req)
            addressed = self._respond(req)
            if addressed is None:
                continue
            board, reply = addressed
            sent = self._apply_faults(board, reply)
            if sent is not None:
                self.replies.append(sent[1])
                out.append(sent)
        return buf[i:], out

    def _apply_faults(self, board: SimBoard, reply: bytes) -> tuple[int, bytes] | None:
        fs = [f for f in (board.faults, self.faults) if f.active()]
        mute = any(f.mute for f in fs)
        garbage = max([f.garbage for f in fs], default=0)
        corrupt = any(f.corrupt for f in fs)
        truncate = any(f.truncate for f in fs)
        delay = max([f.delay_ms for f in fs], default=0)
        for f in fs:
            f.consume()
        if mute:
            return None
        if corrupt:
            reply = reply[:-1] + bytes([reply[-1] ^ 0x5A])
        if truncate:
            reply = reply[:-2]
        if garbage:
            # Noise that never contains a frame start byte: a test that
            # asserts recovery must not depend on the noise happening to
            # imitate a frame (the parser fuzz tests cover arbitrary bytes).
            noise = bytearray()
            while len(noise) < garbage:
                c = self.rng.randrange(256)
                if c not in self.NOISE_EXCLUDES:
                    noise.append(c)
            reply = bytes(noise) + reply
        return delay, reply

    def _valid_request(self, req: bytes) -> bool:
        raise NotImplementedError

    def _respond(self, req: bytes) -> tuple[SimBoard, bytes] | None:
        raise NotImplementedError

    # ---- servers

    def _serve_socket(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(0.05)
        except OSError:  # the bus was closed before this connection's thread ran
            return
        rx = b""
        while not self._stop.is_set():
            try:
                data = conn.recv(512)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with self.mutex:
                rx, out = self._process(rx + data)
            for delay, chunk in out:
                if delay:
                    time.sleep(delay / 1000)
                try:
                    conn.sendall(chunk)
                except OSError:
                    return

    def _serve_pty(self, master: int) -> None:
        rx = b""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(master, 512)
            except OSError:
                return
            with self.mutex:
                rx, out = self._process(rx + data)
            for delay, chunk in out:
                if delay:
                    time.sleep(delay / 1000)
                try:
                    os.write(master, chunk)
                except OSError:
                    return


def _xor(data: bytes) -> int:
    x = 0
    for c in data:
        x ^= c
    return x


class Sim8ABus(_SimBus):
    """One or more "8A" boards on one bus (9600 baud, XOR checksum).

    Replies, as the boards send them:
      8A b l 11 x -> 8A b l s x      (s = 00 released, 11 still latched)
      8A b 00 11 x -> every lock released, reply 8A b 00 11 x
      80 b l 33 x -> 80 b l s x
      80 b 00 33 x -> 80 b [bitmap, highest group first] 33 x (bit 1 = closed)
    A request for an address no board has, or a lock beyond the board's
    count, gets no reply. With invert=True the feedback wiring is reversed.
    """

    STARTS = bytes((0x8A, 0x80))
    NOISE_EXCLUDES = bytes((0x8A, 0x80, 0x82))  # 82 starts the boards' own state reports
    BAUD = 9600
    FIRST_BOARD = 1
    LAST_BOARD = 31

    def __init__(self, boards: Iterable[int] = (1,), locks: int = 24, seed: int = 0,
                 invert: bool = False, bitmap_bytes: int | None = None) -> None:
        super().__init__(boards, locks, seed, invert)
        self.bitmap_bytes = bitmap_bytes or (locks + 7) // 8

    def _valid_request(self, req: bytes) -> bool:
        return _xor(req[:4]) == req[4]

    def _state(self, b: SimBoard, ch: int) -> int:
        closed = not b.is_open(ch)
        return 0x11 if closed != self.invert else 0x00

    @staticmethod
    def _frame(*body: int) -> bytes:
        return bytes(body) + bytes([_xor(bytes(body))])

    def _respond(self, req: bytes) -> tuple[SimBoard, bytes] | None:
        head, addr, lock, fn = req[0], req[1], req[2], req[3]
        b = self._boards.get(addr)
        if b is None:
            return None
        if head == 0x8A and fn == 0x11:
            if lock == 0:
                for ch in range(1, b.locks + 1):
                    b.open_cmd(ch)
                return b, self._frame(0x8A, addr, 0, 0x11)
            if lock > b.locks:
                return None
            b.open_cmd(lock)
            return b, self._frame(0x8A, addr, lock, self._state(b, lock))
        if head == 0x80 and fn == 0x33:
            if lock == 0:
                groups = [0] * self.bitmap_bytes
                for ch in range(1, b.locks + 1):
                    if (not b.is_open(ch)) != self.invert:
                        groups[self.bitmap_bytes - 1 - (ch - 1) // 8] |= 1 << ((ch - 1) % 8)
                return b, self._frame(0x80, addr, *groups, 0x33)
            if lock > b.locks:
                return None
            return b, self._frame(0x80, addr, lock, self._state(b, lock))
        return None


class SimKerong(_SimBus):
    """Kerong KR-CU units on one bus (19200 baud, byte-sum checksum).

    Request 02 ADDR CMD 03 SUM with ADDR = CU << 4 | (lock - 1). Replies are
    02 ADDR 35|36 H1 H2 I1 I2 03 SUM: 35 for status (30) and unlock (31),
    36 for status-of-all (32) and unlock-all (33); hook bit 1 = locked,
    infrared bit 1 = occupied, bit 0 = lock 1. The unlock replies carry the
    state after the lock was released.
    """

    STARTS = bytes((0x02,))
    NOISE_EXCLUDES = STARTS
    BAUD = 19200
    FIRST_BOARD = 0
    LAST_BOARD = 15
    MAX_LOCKS = 16

    def __init__(self, boards: Iterable[int] = (0,), locks: int = 16, seed: int = 0,
                 invert: bool = False) -> None:
        super().__init__(boards, locks, seed, invert)

    def _valid_request(self, req: bytes) -> bool:
        return req[3] == 0x03 and sum(req[:4]) & 0xFF == req[4]

    def _reply(self, b: SimBoard, addr: int, cmd: int) -> bytes:
        hooks = 0
        ir = 0
        for ch in range(1, b.locks + 1):
            if (not b.is_open(ch)) != self.invert:
                hooks |= 1 << (ch - 1)
            if b.occupied[ch - 1]:
                ir |= 1 << (ch - 1)
        body = bytes([0x02, addr, cmd, hooks & 0xFF, hooks >> 8, ir & 0xFF, ir >> 8, 0x03])
        return body + bytes([sum(body) & 0xFF])

    def _respond(self, req: bytes) -> tuple[SimBoard, bytes] | None:
        addr, cmd = req[1], req[2]
        b = self._boards.get(addr >> 4)
        if b is None:
            return None
        ch = (addr & 0x0F) + 1
        if cmd in (0x30, 0x31) and ch > b.locks:
            return None
        if cmd == 0x30:
            return b, self._reply(b, addr, 0x35)
        if cmd == 0x31:
            b.open_cmd(ch)
            return b, self._reply(b, addr, 0x35)
        if cmd == 0x32:
            return b, self._reply(b, addr, 0x36)
        if cmd == 0x33:
            for c in range(1, b.locks + 1):
                b.open_cmd(c)
            return b, self._reply(b, addr, 0x36)
        return None
