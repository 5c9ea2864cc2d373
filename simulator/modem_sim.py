"""A simulated cellular modem on a pty, byte for byte as a real one talks in
PDU mode (3GPP TS 27.005): echo until ``ATE0``, ``\\r\\nOK\\r\\n`` answers,
the ``\\r\\n> `` prompt after ``AT+CMGS=<n>``, the PDU ended by Ctrl-Z (ESC
cancels), ``+CMGS: <mr>``, and ``+CDS`` delivery reports afterwards. It
decodes every PDU it is sent (``gateway.notify.pdu.decode_submit``) and
reassembles concatenated texts, so tests read what a phone would show.

Faults, for tests and the simulator's scenarios: ``cms_errors`` (answer the
next sends with these ``+CMS ERROR`` codes), ``silent`` (read everything,
answer nothing), ``swallow`` (send the next PDU, then hang before
``+CMGS``), ``garbage()`` (noise on the line), ``unplug()`` (the pty
goes away: the driver's reads fail) and ``replug()`` (a new pty behind the
same path, as udev's stable name would be).

The driver opens ``path``, a symlink to the current pty slave.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

from gateway.notify.pdu import PduError, decode_submit, encode_status_report


@dataclass
class Received:
    number: str
    text: str
    mr: int
    concat: tuple[int, int, int] | None
    at: float = field(default_factory=time.time)


class ModemSim:
    def __init__(self, path: Path | str, report_delay_s: float = 0.05, report_status: int = 0) -> None:
        self.path = Path(path)
        self.report_delay_s = report_delay_s
        self.report_status = report_status
        self.received: list[Received] = []
        self.bad_pdus: list[str] = []
        self.commands: list[str] = []
        self.cms_errors: list[int] = []
        self.silent = False
        self.swallow = False  # take the next PDU, send it, and never answer (a hung modem)
        self.reports = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._mr = 0
        self._master = -1
        self._slave = -1
        self._thread: threading.Thread | None = None
        self._pending: list[tuple[float, bytes]] = []
        self.plug()

    # ---- life

    def plug(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        name = os.ttyname(self._slave)
        tmp = self.path.with_suffix(".tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(name, tmp)
        os.replace(tmp, self.path)
        self._echo = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(self._master,), name="modem-sim", daemon=True)
        self._thread.start()

    def unplug(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self._master = self._slave = -1

    def replug(self) -> None:
        self.unplug()
        self.plug()

    def close(self) -> None:
        self.unplug()
        if self.path.is_symlink():
            self.path.unlink()

    # ---- what the line carries

    def _send(self, data: bytes) -> None:
        try:
            os.write(self._master, data)
        except OSError:
            pass

    def garbage(self, data: bytes = b"\xff\x00\xfe~~~#\x80\r\n+CMGS\r\n\xc3(\r\n") -> None:
        self._send(data)

    def texts(self) -> list[tuple[str, str]]:
        """Whole texts as a phone shows them: (number, text), concatenated
        parts joined by reference, in order of the last part's arrival."""
        out: list[tuple[str, str]] = []
        parts: dict[tuple[str, int], dict[int, str]] = {}
        with self._lock:
            for r in self.received:
                if r.concat is None:
                    out.append((r.number, r.text))
                    continue
                ref, total, seq = r.concat
                got = parts.setdefault((r.number, ref), {})
                got[seq] = r.text
                if len(got) == total:
                    out.append((r.number, "".join(got[i] for i in sorted(got))))
                    del parts[(r.number, ref)]
        return out

    # ---- the dialogue

    def _run(self, fd: int) -> None:
        buf = b""
        pdu_len: int | None = None
        while not self._stop.is_set():
            self._due()
            try:
                r, _, _ = select.select([fd], [], [], 0.02)
                if not r:
                    continue
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            if self._echo and pdu_len is None and not self.silent:
                self._send(chunk)
            buf += chunk
            while True:
                if pdu_len is not None:
                    end = min((i for i in (buf.find(b"\x1a"), buf.find(b"\x1b")) if i >= 0), default=-1)
                    if end < 0:
                        break
                    body, term, buf = buf[:end], buf[end:end + 1], buf[end + 1:]
                    if term == b"\x1a" and not self.silent:
                        self._submit(body.decode("ascii", "replace").strip(), pdu_len)
                    pdu_len = None
                    continue
                i = buf.find(b"\r")
                if i < 0:
                    break
                line, buf = buf[:i].strip(b"\n \x1b").decode("ascii", "replace"), buf[i + 1:]
                if not line:
                    continue
                with self._lock:
                    self.commands.append(line)
                if self.silent:
                    continue
                pdu_len = self._command(line)

    def _command(self, line: str) -> int | None:
        up = line.upper()
        if up.startswith("AT+CMGS="):
            try:
                n = int(up[8:])
            except ValueError:
                self._send(b"\r\nERROR\r\n")
                return None
            self._send(b"\r\n> ")
            return n
        if up == "ATE0":
            self._echo = False
        elif up == "ATE1":
            self._echo = True
        elif not up.startswith("AT"):
            self._send(b"\r\nERROR\r\n")
            return None
        self._send(b"\r\nOK\r\n")
        return None

    def _submit(self, hex_pdu: str, n: int) -> None:
        if self.cms_errors:
            self._send(f"\r\n+CMS ERROR: {self.cms_errors.pop(0)}\r\n".encode())
            return
        try:
            d = decode_submit(hex_pdu, n)
        except PduError:
            with self._lock:
                self.bad_pdus.append(hex_pdu)
            self._send(b"\r\n+CMS ERROR: 304\r\n")  # invalid PDU mode parameter
            return
        self._mr = (self._mr + 1) % 256
        mr = self._mr
        with self._lock:
            self.received.append(Received(d.number, d.text, mr, d.concat))
        if self.swallow:
            return
        self._send(f"\r\n+CMGS: {mr}\r\n\r\nOK\r\n".encode())
        if d.status_report and self.reports:
            pdu = encode_status_report(mr, d.number, self.report_status)
            with self._lock:
                self._pending.append((time.monotonic() + self.report_delay_s,
                                      f"\r\n+CDS: {len(pdu) // 2 - 1}\r\n{pdu}\r\n".encode()))

    def _due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._pending if p[0] <= now]
            self._pending = [p for p in self._pending if p[0] > now]
        for _, data in due:
            self._send(data)
