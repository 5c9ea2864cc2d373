"""A cellular modem on a serial port, in PDU mode: the notifier's way out
when the backhaul is down (SMS still gets through where data does not).

The dialogue (3GPP TS 27.005): ``ATE0``, ``AT+CMEE=1``, ``AT+CMGF=0`` (PDU
mode), ``AT+CNMI=2,1,0,1,0`` (status reports pushed as ``+CDS``), then per
part ``AT+CMGS=<tpdu octets>``, wait for the ``> `` prompt, the PDU hex and
Ctrl-Z, and ``+CMGS: <mr>`` / ``OK`` or ``+CMS ERROR: <n>``.

Why each failure is told apart (``SendFailed.sent_maybe``): an error before
the PDU was written, or a ``+CMS ERROR`` after it, means nothing went out,
so the part may be sent again; silence after the PDU was written means it
may have gone out, and sending again could text the villager twice, so the
notifier records it as uncertain instead of retrying (the clerk can resend).

Nothing here raises anything but ``ModemError``: a modem that answers
garbage, stops answering (every read has a deadline) or is unplugged
(``serial.SerialException``/``OSError``) is closed, reported and opened
again on the next call, and the gateway never stops for it. Lines that
arrive unasked (``+CDS`` reports, ``RING``, noise) are sorted out by
``_line``: reports go to ``on_report``, everything else is counted.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

try:
    import serial
except ImportError:  # pyserial is needed only where a modem is configured
    serial = None

from gateway.notify.pdu import PduError, StatusReport, Submit, decode_status_report

INIT = ("ATE0", "AT+CMEE=1", "AT+CMGF=0", "AT+CNMI=2,1,0,1,0")
_CMGS = re.compile(rb"^\+CMGS:\s*(\d+)")
_CMS = re.compile(rb"^\+CMS ERROR:\s*(\d+)")
_CME = re.compile(rb"^\+CME ERROR:\s*(\d+)")
_CDS = re.compile(rb"^\+CDS:\s*(\d+)")
MAX_LINE = 1024
# A port that fails (unplugged: pyserial's SerialException, or the OSError under it).
_PORT_ERRORS: tuple[type[BaseException], ...] = (
    (OSError,) if serial is None else (serial.SerialException, OSError))
# +CMS ERROR codes (TS 27.005 3.2.5) worth retrying: network or modem busy,
# not a bad number or a missing SIM.
TRANSIENT_CMS = frozenset({38, 41, 42, 47, 300, 302, 304, 305, 314, 315, 320, 321, 322, 331, 332, 500, 512,
                           513, 514, 515, 516, 517, 535})


class ModemError(Exception):
    """``kind``: ``cms`` (with ``code``), ``error``, ``timeout``,
    ``unplugged``, ``garbage``. ``sent_maybe``: the PDU had been written
    and no answer said it was refused."""

    def __init__(self, kind: str, detail: str = "", code: int | None = None,
                 sent_maybe: bool = False) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.code = code
        self.sent_maybe = sent_maybe

    @property
    def transient(self) -> bool:
        return self.kind != "cms" or self.code in TRANSIENT_CMS


class Modem:
    """One serial modem. ``url`` is anything pyserial opens (a device path,
    a pty, ``loop://``). Not thread-safe: one notifier thread owns it."""

    def __init__(self, url: str, baud: int = 115200, timeout_s: float = 5.0, send_timeout_s: float = 60.0,
                 on_report: Callable[[StatusReport], None] | None = None) -> None:
        self.url = url
        self.baud = baud
        self.timeout_s = timeout_s
        self.send_timeout_s = send_timeout_s
        self.on_report = on_report or (lambda r: None)
        self.port: Any = None
        self.stats: Counter[str] = Counter()
        self._buf = b""

    # ---- connection

    def open(self) -> None:
        """Open and initialise; ModemError if the modem is not there or does
        not answer the setup."""
        self.close()
        if serial is None:
            raise ModemError("unplugged", "pyserial is not installed (pip install 'postedge[gateway]')")
        try:
            self.port = serial.serial_for_url(self.url, baudrate=self.baud, timeout=0.05, write_timeout=2.0)
        except (*_PORT_ERRORS, ValueError) as e:
            self.port = None
            raise ModemError("unplugged", str(e)) from None
        self._buf = b""
        try:
            # A modem left at the "> " prompt by a crash eats our first
            # command as PDU text; ESC cancels the prompt.
            self._write(b"\x1b\r")
            # What waited in the line while the port was closed: delivery
            # reports are handled, the rest (the answer to ESC) counted.
            self.poll(0.1)
            for cmd in INIT:
                self.command(cmd)
        except ModemError:
            self.close()
            raise
        self.stats["opened"] += 1

    def close(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            except _PORT_ERRORS:
                pass
        self.port = None

    @property
    def is_open(self) -> bool:
        return self.port is not None

    # ---- bytes

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except _PORT_ERRORS as e:
            self.close()
            raise ModemError("unplugged", str(e)) from None

    def _read_some(self) -> bytes:
        try:
            return bytes(self.port.read(256))
        except (*_PORT_ERRORS, TypeError) as e:
            # TypeError: pyserial's posix read after the fd was closed under it
            self.close()
            raise ModemError("unplugged", str(e)) from None

    def _next(self, deadline: float, prompt: bool = False) -> bytes | None:
        """The next line (without CR/LF), ``b">"`` for the send prompt when
        ``prompt``, or None at the deadline."""
        while True:
            if prompt:
                i = self._buf.find(b">")
                nl = self._buf.find(b"\n")
                if i >= 0 and (nl < 0 or i < nl):
                    self._buf = self._buf[i + 1:]
                    return b">"
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[:nl].strip(b"\r \x00"), self._buf[nl + 1:]
                if line:
                    return line
                continue
            if len(self._buf) > MAX_LINE:
                self.stats["garbage"] += 1
                self._buf = b""
            if time.monotonic() >= deadline:
                return None
            self._buf += self._read_some()

    def _line(self, line: bytes, deadline: float) -> bool:
        """Handle a line that was not the answer being waited for; True if
        it was an unsolicited report (consumed)."""
        m = _CDS.match(line)
        if m:
            pdu = self._next(deadline)
            if pdu is None:
                self.stats["report_truncated"] += 1
                return True
            try:
                self.on_report(decode_status_report(pdu.decode("ascii", "replace")))
                self.stats["reports"] += 1
            except PduError:
                self.stats["report_bad"] += 1
            return True
        if line in (b"RING", b"NO CARRIER") or line.startswith((b"+CMTI", b"^", b"+CREG", b"+CIEV")):
            self.stats["unsolicited"] += 1
            return True
        return False

    # ---- commands

    def command(self, cmd: str, timeout_s: float | None = None) -> list[bytes]:
        """Send one AT command; the lines of its answer before ``OK``."""
        if self.port is None:
            raise ModemError("unplugged", "port is not open")
        self._write(cmd.encode("ascii") + b"\r")
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        out: list[bytes] = []
        while True:
            line = self._next(deadline)
            if line is None:
                self.stats["timeouts"] += 1
                raise ModemError("timeout", f"no answer to {cmd}")
            if line == b"OK":
                return out
            if line == b"ERROR" or _CME.match(line) or _CMS.match(line):
                m = _CMS.match(line) or _CME.match(line)
                raise ModemError("cms" if _CMS.match(line) else "error", line.decode("ascii", "replace"),
                                 int(m.group(1)) if m else None)
            if line == cmd.encode("ascii"):  # echo, if ATE0 has not taken yet
                continue
            if self._line(line, deadline):
                continue
            if not line.isascii() or len(line) > 200:
                self.stats["garbage"] += 1
                continue
            out.append(line)

    def send_part(self, part: Submit) -> int:
        """Send one PDU; its TP-MR (which the delivery report names)."""
        if self.port is None:
            raise ModemError("unplugged", "port is not open")
        self._write(f"AT+CMGS={part.tpdu_len}\r".encode("ascii"))
        deadline = time.monotonic() + self.timeout_s
        while True:
            line = self._next(deadline, prompt=True)
            if line is None:
                self.stats["timeouts"] += 1
                self._write(b"\x1b")  # leave the prompt, should it come late
                raise ModemError("timeout", "no > prompt")
            if line == b">":
                break
            m = _CMS.match(line)
            if m:
                raise ModemError("cms", line.decode("ascii", "replace"), int(m.group(1)))
            if line == b"ERROR":
                raise ModemError("error", "AT+CMGS refused")
            if not self._line(line, deadline):
                self.stats["garbage"] += 1
        self._write(part.hex.encode("ascii") + b"\x1a")
        deadline = time.monotonic() + self.send_timeout_s
        mr: int | None = None
        while True:
            try:
                line = self._next(deadline)
            except ModemError as e:
                e.sent_maybe = True
                raise
            if line is None:
                self.stats["timeouts"] += 1
                raise ModemError("timeout", "no answer after the PDU", sent_maybe=True)
            m = _CMGS.match(line)
            if m:
                mr = int(m.group(1)) & 0xFF
                continue
            if line == b"OK" and mr is not None:
                return mr
            m = _CMS.match(line)
            if m:
                raise ModemError("cms", line.decode("ascii", "replace"), int(m.group(1)))
            if line == b"ERROR":
                raise ModemError("error", "PDU refused")
            if not self._line(line, deadline):
                self.stats["garbage"] += 1

    def poll(self, wait_s: float = 0.0) -> None:
        """Read what the modem sent unasked (delivery reports) for up to ``wait_s``."""
        if self.port is None:
            return
        deadline = time.monotonic() + wait_s
        self._buf += self._read_some()  # at least one look, however short the wait
        while True:
            line = self._next(deadline)
            if line is None:
                return
            if not self._line(line, deadline):
                self.stats["garbage"] += 1
