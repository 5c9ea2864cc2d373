"""The counter's printers as ports: a serial line (``/dev/ttyUSB1``, a USB
printer's ``/dev/usb/lp0`` works as a path too), a network printer
(``socket://192.168.1.50:9100``, pyserial's URL), pyserial's ``loop://``
for tests, or a file (``file:/var/lib/postedge/labels.out``, no status).

Before a label or receipt is printed the printer is asked for its status,
so an empty roll is reported to the clerk *before* the parcel is taken
(``PrinterError.reason``), never discovered when nothing comes out:

* TSPL ``<ESC>!?`` (TSPL/TSPL2 programming manual, "Status polling"): one
  byte back: 0x01 head opened, 0x02 paper jam, 0x04 out of paper, 0x08
  out of ribbon, 0x10 pause, 0x20 printing (busy, fine), 0x80 other error.
* ZPL ``~HS`` (ZPL II programming guide, "Host Status Return"): three
  ``<STX>…<ETX><CR><LF>`` strings; string 1's second field is the paper
  out flag and its third the pause flag, string 2's third field the head
  up flag and its fourth the ribbon out flag.
* ESC/POS ``DLE EOT 4`` (transmit real-time status, paper roll sensor):
  bits 5 and 6 (0x60) set means the paper has run out; bits 2 and 3
  (0x0C) the paper is near its end (reported, printing goes on).

Reasons: ``out_of_paper``, ``paper_jam``, ``head_open``, ``ribbon_out``,
``paused``, ``printer_error``, ``no_answer`` (nothing came back in time: a
printer that is off, or one that does not answer status), ``unplugged``.
Counted in ``postedge_counter_printer_total{printer,result}``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import serial
from prometheus_client import Counter

from gateway import metrics as M

PRINTER = Counter("postedge_counter_printer", "Label and receipt printer jobs and status checks, by result",
                  ["printer", "result"], registry=M.REGISTRY)
TSPL_STATUS = b"\x1b!?"
ZPL_STATUS = b"~HS"
ESCPOS_PAPER = b"\x10\x04\x04"  # escpos.constants.RT_STATUS_PAPER
STX, ETX = 0x02, 0x03


class PrinterError(RuntimeError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class FilePort:
    """A printer that is a file: jobs appended, no status to read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, data: bytes) -> int:
        with self.path.open("ab") as f:
            f.write(data)
        return len(data)

    def read(self, n: int) -> bytes:
        return b""

    def reset_input_buffer(self) -> None:
        pass

    def close(self) -> None:
        pass


def open_port(url: str, baudrate: int = 9600) -> Any:
    if url.startswith("file:"):
        return FilePort(Path(url[5:]))
    return serial.serial_for_url(url, baudrate=baudrate, timeout=0.1, write_timeout=2.0)


def tspl_status(b: int) -> str | None:
    """The problem a TSPL status byte names, or None when it can print."""
    for bit, reason in ((0x04, "out_of_paper"), (0x02, "paper_jam"), (0x01, "head_open"),
                        (0x08, "ribbon_out"), (0x10, "paused"), (0x80, "printer_error")):
        if b & bit:
            return reason
    return None


def zpl_status(answer: bytes) -> str | None:
    """The problem a ``~HS`` answer names, or None; PrinterError when it
    is not one."""
    strings = []
    for part in answer.split(bytes([STX]))[1:]:
        end = part.find(bytes([ETX]))
        if end < 0:
            break
        strings.append(part[:end].decode("ascii", "replace").split(","))
    if len(strings) < 2 or len(strings[0]) < 3 or len(strings[1]) < 4:
        raise PrinterError("printer_error", f"not a ~HS answer: {answer[:40]!r}")
    s1, s2 = strings[0], strings[1]
    if s1[1].strip() == "1":
        return "out_of_paper"
    if s2[2].strip() == "1":
        return "head_open"
    if s2[3].strip() == "1":
        return "ribbon_out"
    if s1[2].strip() == "1":
        return "paused"
    return None


def escpos_paper(b: int) -> str | None:
    if b & 0x60:
        return "out_of_paper"
    return None


class Printer:
    """One printer on one port: ``check`` the status, ``send`` a job.
    ``language`` is zpl, tspl or escpos. The port is opened per job and
    closed after it, so a printer that was unplugged and plugged back in
    prints the next job; every read has a deadline."""

    def __init__(self, name: str, url: str, language: str, baudrate: int = 9600,
                 status_timeout_s: float = 1.0) -> None:
        self.name = name
        self.url = url
        self.language = language
        self.baudrate = baudrate
        self.status_timeout_s = status_timeout_s
        self._lock = threading.RLock()  # one job at a time on one port

    def _open(self) -> Any:
        try:
            return open_port(self.url, self.baudrate)
        except (serial.SerialException, OSError, ValueError) as e:
            PRINTER.labels(self.name, "unplugged").inc()
            raise PrinterError("unplugged", f"cannot open {self.name} printer: {e}") from e

    def _ask(self, port: Any, query: bytes, want: int, done: Any) -> bytes:
        port.reset_input_buffer()
        port.write(query)
        got = b""
        deadline = time.monotonic() + self.status_timeout_s
        while time.monotonic() < deadline and len(got) < 4096:
            chunk = port.read(want)
            if chunk:
                got += chunk
                if done(got):
                    break
        return got

    def check(self, port: Any | None = None) -> str | None:
        """None when the printer can print (or is a file); else raises
        PrinterError naming why not. A near-end roll is returned as
        ``paper_near_end`` (printing goes on)."""
        if isinstance(port, FilePort) or (port is None and self.url.startswith("file:")):
            return None
        with self._lock:
            return self._check(port)

    def _check(self, port: Any | None) -> str | None:
        own = port is None
        p = self._open() if own else port
        try:
            try:
                if self.language == "tspl":
                    got = self._ask(p, TSPL_STATUS, 1, lambda g: len(g) >= 1)
                    problem = tspl_status(got[-1]) if got else None
                elif self.language == "zpl":
                    got = self._ask(p, ZPL_STATUS, 256, lambda g: g.count(bytes([ETX])) >= 3)
                    problem = zpl_status(got) if got else None
                else:
                    got = self._ask(p, ESCPOS_PAPER, 1, lambda g: len(g) >= 1)
                    problem = escpos_paper(got[-1]) if got else None
            except (serial.SerialException, OSError) as e:
                PRINTER.labels(self.name, "unplugged").inc()
                raise PrinterError("unplugged", f"{self.name} printer stopped answering: {e}") from e
            if not got:
                PRINTER.labels(self.name, "no_answer").inc()
                raise PrinterError("no_answer", f"{self.name} printer did not answer its status query")
            if problem is not None:
                PRINTER.labels(self.name, problem).inc()
                raise PrinterError(problem, f"{self.name} printer reports {problem}")
            if self.language == "escpos" and got[-1] & 0x0C:
                return "paper_near_end"
            return None
        finally:
            if own:
                p.close()

    def send(self, job: bytes) -> str | None:
        """Check, then write the job; what ``check`` returns."""
        with self._lock:
            return self._send(job)

    def _send(self, job: bytes) -> str | None:
        port = self._open()
        try:
            note = self.check(port)
            try:
                port.write(job)
                if hasattr(port, "flush"):
                    port.flush()
            except (serial.SerialException, OSError) as e:
                PRINTER.labels(self.name, "unplugged").inc()
                raise PrinterError("unplugged", f"{self.name} printer: write failed: {e}") from e
            PRINTER.labels(self.name, "printed").inc()
            return note
        finally:
            port.close()
