# The async scan-engine driver: one API over every family, the same code on
# an ESP32, on the MicroPython unix port and on CPython (pyserial).
#
#   eng = open_engine(uart, "gm65", suffix="cr", idle_ms=50, aim=True)
#   await eng.trigger()                 # triggered mode; continuous engines need none
#   scan = await eng.read_scan(3000)    # dict or None after 3 s
#   await eng.stop()
#
# A scan is a dict:
#   text       the bar code data as str, AIM identifier removed
#   data       the bytes as received (AIM identifier included, suffix removed)
#   aim        the AIM identifier ("]C0") or None
#   symbology  "code128", "ean13", "qr", ... from the AIM identifier, else
#              from the engine's own type field (SSI), else None
#   gs1        True when the identifier says the data is a GS1 element string
#   family     the engine family
#
# The driver never blocks: it polls the UART (read(n) returns what arrived)
# and yields with sleep_ms between polls. Only the driver's own reads decide
# idle gaps (see framing.py), so call read_scan (or service()) steadily
# while scans may arrive: bytes that pile up while nobody reads cannot be
# told apart by time. Scans that arrive while a command waits for its reply
# are queued, never lost (bounded: `queue` scans, then counted as overflow).
# Rejected frames are counted in `stats` by reason (framing.REJECTS).
#
# MicroPython subset: no typing, no dataclasses.

from drivers.aio import sleep_ms
from drivers.hal.common import ticks_diff, ticks_ms
from drivers.scanner import framing
from protocol import aim as aimmod

FAMILIES = ("gm65", "honeywell", "ssi", "newland")


class ScannerError(Exception):
    """The UART itself failed (port closed, adapter unplugged): code "io"."""

    def __init__(self, code, detail=""):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self):
        return "scanner %s: %s" % (self.code, self.detail)


def family_module(name):
    if name == "gm65":
        from drivers.scanner import gm65 as m
    elif name == "honeywell":
        from drivers.scanner import honeywell as m
    elif name == "ssi":
        from drivers.scanner import ssi as m
    elif name == "newland":
        from drivers.scanner import newland as m
    else:
        raise ValueError("unknown scan engine family %r (have: %s)" % (name, ", ".join(FAMILIES)))
    return m


def make_parser(family, suffix="cr", idle_ms=50, max_len=framing.MAX_LEN, stats=None):
    """The pure byte-stream parser of a family (feed / idle / flush)."""
    return family_module(family).make_parser(suffix, idle_ms, max_len, stats)


def scan_dict(family, data, hint=None, aim=True):
    """The scan record for one accepted frame (see the header)."""
    text = data.decode("utf-8")
    sym = None
    ident = None
    gs1 = False
    if aim:
        sym, _mod, rest, gs1 = aimmod.parse(text)
        if sym is not None:
            ident = text[:3]
            text = rest
    if sym is None:
        sym = hint
    return {"text": text, "data": data, "symbology": sym, "aim": ident, "gs1": gs1,
            "family": family}


class ScanEngine:
    """One scan engine on one UART. See the module header for the API."""

    def __init__(self, uart, family, suffix="cr", idle_ms=50, aim=True, max_len=framing.MAX_LEN,
                 queue=16, poll_ms=5, reply_ms=500, aim_reg=None, aim_mask=None):
        self.uart = uart
        self.family = family
        self.mod = family_module(family)
        self.aim = aim
        self.stats = framing.new_stats()
        self.parser = self.mod.make_parser(suffix, idle_ms, max_len, self.stats)
        self.queue = queue
        self.poll_ms = poll_ms
        self.reply_ms = reply_ms
        self.aim_reg = aim_reg
        self.aim_mask = aim_mask
        self._scans = []
        self._replies = []

    # ---- the byte pump

    def _read(self):
        try:
            return self.uart.read(256)
        except OSError as e:
            self.stats["io"] += 1
            raise ScannerError("io", "uart read: %s" % (e,))

    def _write(self, frame):
        try:
            self.uart.write(frame)
        except OSError as e:
            self.stats["io"] += 1
            raise ScannerError("io", "uart write: %s" % (e,))

    def service(self):
        """Read what arrived and process it; returns the number of scans
        waiting. Bounded work per call so a babbling line cannot starve
        other tasks."""
        got = False
        for _ in range(16):
            data = self._read()
            if not data:
                break
            got = True
            self._handle(self.parser.feed(data, ticks_ms()))
        if not got:
            self._handle(self.parser.idle(ticks_ms()))
        return len(self._scans)

    def _handle(self, events):
        for kind, payload, extra in events:
            if kind == framing.SCAN:
                if len(self._scans) >= self.queue:
                    self.stats["overflow"] += 1
                    continue
                try:
                    self._scans.append(scan_dict(self.family, payload, extra, self.aim))
                except UnicodeError:  # valid_text already checked; belt and braces
                    self.stats["bad_bytes"] += 1
            elif kind == framing.SEND:
                self._write(payload)
            else:
                self._replies.append((payload, extra))
                if len(self._replies) > 4:
                    self._replies.pop(0)

    # ---- public API

    def pending(self):
        """Scans already received and not yet read."""
        return len(self._scans)

    async def read_scan(self, timeout_ms=None):
        """The next scan (dict), or None when timeout_ms passes without one
        (None = wait forever)."""
        start = ticks_ms()
        while True:
            if self._scans:
                return self._scans.pop(0)
            n = self.service()
            if n:
                return self._scans.pop(0)
            if timeout_ms is not None and ticks_diff(ticks_ms(), start) >= timeout_ms:
                return None
            await sleep_ms(self.poll_ms)

    async def trigger(self):
        """Start a read (triggered mode). The engine's acknowledgement, if
        its family sends one, is consumed by the parser, never read as a scan."""
        self.service()
        self._write(self.mod.TRIGGER)

    async def stop(self):
        """End a read started by trigger() (the engine also stops by itself
        after a decode or its own timeout)."""
        self.service()
        self._write(self.mod.STOP)

    async def scan(self, timeout_ms=3000):
        """Trigger, wait for one scan, stop if none came: one counter read."""
        await self.trigger()
        s = await self.read_scan(timeout_ms)
        if s is None:
            await self.stop()
        return s

    async def command(self, frame, timeout_ms=None):
        """Write a raw command frame and wait for the engine's reply:
        (payload, "ack" | "nak" | "enq" | "other") or None on timeout."""
        self.service()
        self._replies = []
        self._write(frame)
        start = ticks_ms()
        limit = self.reply_ms if timeout_ms is None else timeout_ms
        while True:
            self.service()
            if self._replies:
                return self._replies.pop(0)
            if ticks_diff(ticks_ms(), start) >= limit:
                return None
            await sleep_ms(self.poll_ms)

    async def configure_aim(self, on=True):
        """Switch AIM identifiers on or off in the engine (saved to its
        flash); True if the engine acknowledged."""
        if self.family == "gm65":
            m = self.mod
            reg = m.AIM_REG if self.aim_reg is None else self.aim_reg
            mask = m.AIM_MASK if self.aim_mask is None else self.aim_mask
            r = await self.command(m.read_reg(reg))
            if r is None or r[1] != "ack" or len(r[0]) != 1:
                return False
            cur = r[0][0]
            value = (cur | mask) if on else (cur & ~mask & 0xFF)
            r = await self.command(m.write_reg(reg, value))
            if r is None or r[1] != "ack":
                return False
            r = await self.command(m.SAVE_CMD)
            return r is not None and r[1] == "ack"
        r = await self.command(self.mod.aim_command(on))
        return r is not None and r[1] == "ack"

    def close(self):
        self.uart.close()


def open_engine(uart, family, **kw):
    """A driver for an engine on an already open UART (HAL contract:
    non-blocking read(n), write(data), close()). kw: suffix ("cr", "crlf",
    "none"), idle_ms, aim, max_len, queue, poll_ms, reply_ms."""
    return ScanEngine(uart, family, **kw)


def connect(hal, family, url, baudrate=None, **kw):
    """Open the UART at url through the HAL at the family's default rate."""
    m = family_module(family)
    return ScanEngine(hal.uart(url, baudrate or m.BAUD), family, **kw)
