"""Byte-accurate simulated serial scan engines for host tests and the outlet
simulator.

The drivers in ``drivers/scanner`` must be tested against the bytes real
engines put on the wire, so the *engine* side of each protocol is written
here again from the protocol notes (docs/scanner.md), sharing only the
checksum helpers and command constants with the firmware: host commands are
framed and checked here, replies and scans encoded here.

A simulated engine has a label in front of it (``present(text, symbology)``).
In triggered mode a trigger command reads the next presented label; in
continuous mode presenting a label emits it at once. Each scan is framed as
the family does it: optional GM65 ACK glued in front, optional AIM
identifier, the configured suffix (CR, CRLF or none); SSI engines send
DECODE_DATA packets (several for long data), wait for the host's ACK before
the next packet and resend on NAK with the retransmit bit set.

Faults (:class:`ScanFaults`), applied to the next scan(s): ``noise`` (random
bytes without frame starts or suffix bytes, then an idle gap), ``truncate``
(the frame cut short, then an idle gap), ``bad_checksum`` (SSI packet
checksum, GM65 ACK CRC; line families get a byte turned into a control
character), ``oversize`` (a frame of that many bytes), ``unplug`` (half a
frame, then silence for ``unplug_ms``). ``scans=N`` limits them to N scans.

Served like the simulated lock boards: ``serve_tcp()`` for
``socket://127.0.0.1:PORT`` (MicroPython unix HAL, pyserial) and
``serve_pty()`` for a real serial device path. Output is a schedule of
(bytes, pause_ms) chunks so idle gaps are real gaps on the wire.
"""

from __future__ import annotations

import os
import random
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from drivers.scanner import gm65, honeywell, newland, ssi
from simulator.serving import Served

__all__ = ["AIM_IDS", "ScanFaults", "SimScanEngine"]

# The AIM identifier an engine prefixes to each symbology (ISO/IEC 15424).
AIM_IDS = {
    "code128": "]C0", "gs1_128": "]C1", "ean13": "]E0", "ean8": "]E4", "upca": "]E0",
    "qr": "]Q1", "datamatrix": "]d1", "gs1_datamatrix": "]d2", "code39": "]A0",
    "pdf417": "]L2", "itf": "]I0", "aztec": "]z0", "codabar": "]F0", "code93": "]G0",
}

SUFFIX = {"cr": b"\r", "crlf": b"\r\n", "none": b""}
Chunk = tuple[bytes, int]


class ScanFaults:
    """What goes wrong with the next scans; plain attributes so a scenario
    can flip them between scans."""

    def __init__(self) -> None:
        self.set()

    def set(self, *, noise: int = 0, truncate: bool = False, bad_checksum: bool = False,
            oversize: int = 0, unplug: bool = False, scans: int | None = None) -> ScanFaults:
        """Replace every fault at once, so an earlier test's fault never lingers."""
        self.noise, self.truncate, self.bad_checksum = noise, truncate, bad_checksum
        self.oversize, self.unplug, self.scans = oversize, unplug, scans
        return self

    def clear(self) -> None:
        self.set()

    def active(self) -> bool:
        return bool(self.noise or self.truncate or self.bad_checksum or self.oversize or self.unplug)

    def consume(self) -> None:
        if self.scans is not None and self.active():
            self.scans -= 1
            if self.scans <= 0:
                self.clear()


class SimScanEngine(Served):
    """One simulated engine of a family ("gm65", "honeywell", "ssi", "newland")."""

    def __init__(self, family: str, suffix: str = "cr", aim: bool = False, continuous: bool = False,
                 seed: int = 0, gap_ms: int = 120, unplug_ms: int = 300, gm65_ack: bool = True) -> None:
        if family not in ("gm65", "honeywell", "ssi", "newland"):
            raise ValueError(f"unknown family {family!r}")
        self.family = family
        self.suffix = suffix
        self.aim = aim
        self.continuous = continuous
        self.gap_ms = gap_ms
        self.unplug_ms = unplug_ms
        self.gm65_ack = gm65_ack
        self.rng = random.Random(seed)
        self.faults = ScanFaults()
        self.labels: list[tuple[str, str]] = []  # presented, not yet read
        self.triggers = 0
        self.stops = 0
        self.commands: list[bytes] = []  # every well-formed host command heard
        self.bad_commands = 0
        self.acks_heard = 0
        self.naks_heard = 0
        self.emitted: list[str] = []  # texts sent intact (the ground truth for tests)
        self.regs = {gm65.MODE_REG: 0x01, gm65.AIM_REG: {"cr": 0x00, "crlf": 0x20, "none": 0x60}[suffix]}
        if aim:
            self.regs[gm65.AIM_REG] |= gm65.AIM_MASK
        self._ssi_queue: list[bytes] = []  # packets of the message being sent
        self._ssi_sent: bytes | None = None
        self._rx = b""
        self._out: list[Chunk] = []
        self.mutex = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closers: list[socket.socket | int] = []

    # ---- the label in front of the engine

    def present(self, text: str, symbology: str = "code128") -> None:
        """Put a label under the engine: emitted now in continuous mode,
        read by the next trigger otherwise."""
        with self.mutex:
            if self.continuous:
                self._emit_scan(text, symbology, ack=False)
            else:
                self.labels.append((text, symbology))

    # ---- encoding a scan

    def payload(self, text: str, symbology: str) -> bytes:
        """The scan data as the engine sends it (AIM identifier included)."""
        prefix = AIM_IDS.get(symbology, "]X0") if self.aim else ""
        return (prefix + text).encode("utf-8")

    def frame(self, text: str, symbology: str = "code128") -> bytes:
        """One intact scan, exactly as it goes on the wire (no faults)."""
        if self.family == "ssi":
            return b"".join(ssi.decode_packets(self.payload(text, symbology), ssi.type_code(symbology)))
        return self.payload(text, symbology) + SUFFIX[self.suffix]

    def _noise(self, n: int) -> bytes:
        # Never a suffix byte, a frame start or printable text only: noise the
        # host must reject, not noise that happens to imitate a frame.
        bad = set(b"\r\n\x02\x7e\x16\x04\x05\x06\x07\x08\x09\x15")
        out = bytearray([0x00])
        while len(out) < n:
            c = self.rng.randrange(256)
            if c not in bad and not 0x20 <= c < 0x7F:
                out.append(c)
        return bytes(out[:n])

    def _emit_scan(self, text: str, symbology: str, ack: bool) -> None:
        f = self.faults
        chunks: list[Chunk] = []
        if f.noise:
            chunks.append((self._noise(f.noise), self.gap_ms))
        lead = gm65.ACK if ack and self.family == "gm65" and self.gm65_ack else b""
        if f.bad_checksum and lead:
            lead = lead[:-1] + bytes([lead[-1] ^ 0x55])
        if f.oversize:
            body = b"9" * f.oversize
            wire = self.frame(body.decode(), symbology)
            chunks.append((lead + wire, self.gap_ms))
        elif self.family == "ssi":
            packets = ssi.decode_packets(self.payload(text, symbology), ssi.type_code(symbology))
            first = packets[0]
            if f.truncate or f.unplug:
                chunks.append((first[:len(first) // 2], self.unplug_ms if f.unplug else self.gap_ms))
            else:
                # The rest go out one by one as the host ACKs; a NAK gets a resend.
                self._ssi_queue = packets[1:]
                self._ssi_sent = first
                if f.bad_checksum:
                    first = first[:-1] + bytes([first[-1] ^ 0x55])
                chunks.append((first, self.gap_ms))
                self.emitted.append(text)
        else:
            wire = self.frame(text, symbology)
            if f.truncate or f.unplug:
                cut = max(1, len(wire) - len(SUFFIX[self.suffix]) - 3) if f.truncate else len(wire) // 2
                chunks.append((lead + wire[:cut], self.unplug_ms if f.unplug else self.gap_ms))
            elif f.bad_checksum and not lead:
                # No checksum on line data: line noise turns a byte into a control byte.
                i = len(self.payload(text, symbology)) // 2
                chunks.append((wire[:i] + b"\x01" + wire[i + 1:], self.gap_ms))
            else:
                chunks.append((lead + wire, self.gap_ms))
                self.emitted.append(text)
        f.consume()
        self._push(chunks)

    def _push(self, chunks: list[Chunk]) -> None:
        self._out.extend(chunks)
        self._wake.set()

    # ---- host commands

    def feed(self, data: bytes) -> bytes:
        """Host bytes in; everything the engine would send now out (pauses
        dropped; the servers keep them)."""
        with self.mutex:
            self._rx = self._process(self._rx + data)
            out = b"".join(c for c, _ in self._out)
            self._out.clear()
        return out

    def take(self) -> list[Chunk]:
        """The pending output schedule: (bytes, pause_ms after them)."""
        with self.mutex:
            out, self._out = self._out, []
        return out

    def _trigger(self, ack: bool) -> None:
        self.triggers += 1
        if self.labels:
            text, sym = self.labels.pop(0)
            self._emit_scan(text, sym, ack)
        elif ack and self.family == "gm65" and self.gm65_ack:
            self._push([(gm65.ACK, 0)])

    def _process(self, buf: bytes) -> bytes:
        fam = self.family
        if fam == "ssi":
            packets, rest = ssi.split(buf, ssi.SRC_HOST)
            for p in packets:
                self._ssi_command(p)
            return rest
        while buf:
            if fam == "gm65":
                i = buf.find(b"\x7e\x00")
                if i < 0:
                    return buf[-1:] if buf[-1:] == b"\x7e" else b""
                buf = buf[i:]
                if len(buf) < 4:
                    return buf
                n = 1 if buf[2] == gm65.READ else (buf[3] or 256)
                if len(buf) < 6 + n + 2:
                    return buf
                cmd = gm65.parse_command(buf[:6 + n + 2])
                if cmd is None:
                    self.bad_commands += 1
                    buf = buf[1:]
                    continue
                self.commands.append(buf[:6 + n + 2])
                buf = buf[6 + n + 2:]
                self._gm65(*cmd)
            elif fam == "honeywell":
                i = buf.find(b"\x16")
                if i < 0:
                    return b""
                buf = buf[i:]
                if len(buf) < 3:
                    return buf
                if buf[:3] == honeywell.TRIGGER:
                    self.commands.append(buf[:3])
                    buf = buf[3:]
                    self._trigger(False)
                elif buf[:3] == honeywell.STOP:
                    self.commands.append(buf[:3])
                    buf = buf[3:]
                    self.stops += 1
                elif buf[:3] == honeywell.MENU:
                    ends = [k for k in (buf.find(b".", 3), buf.find(b"!", 3)) if k >= 0]
                    if not ends:
                        return buf
                    k = min(ends)
                    cmd = buf[3:k + 1]
                    self.commands.append(buf[:k + 1])
                    buf = buf[k + 1:]
                    self._honeywell_menu(cmd)
                else:
                    self.bad_commands += 1
                    buf = buf[1:]
            else:
                i = buf.find(newland.HEAD)
                if i < 0:
                    return buf[-1:] if buf[-1:] == b"\x7e" else b""
                buf = buf[i:]
                k = buf.find(newland.END)
                if k < 0:
                    return buf
                frame = buf[:k + 2]
                buf = buf[k + 2:]
                parsed = newland.parse_command(frame)
                if parsed is None:
                    self.bad_commands += 1
                    continue
                self.commands.append(frame)
                self._newland(*parsed)
        return b""

    def _gm65(self, kind: int, addr: int, data: bytes) -> None:
        if kind == gm65.WRITE:
            for k, v in enumerate(data):
                self.regs[addr + k] = v
            if addr == gm65.TRIGGER_REG and data[:1] == b"\x01":
                self._trigger(True)
                return
            if addr == gm65.TRIGGER_REG:
                self.stops += 1
            if addr <= gm65.AIM_REG < addr + len(data):
                self.aim = bool(self.regs[gm65.AIM_REG] & gm65.AIM_MASK)
            self._push([(gm65.ACK, 0)])
        elif kind == gm65.READ:
            count = data[0] or 256
            self._push([(gm65.encode_reply(bytes(self.regs.get(addr + k, 0) for k in range(count))), 0)])
        elif kind == gm65.SAVE:
            self._push([(gm65.ACK, 0)])

    def _honeywell_menu(self, cmd: bytes) -> None:
        body = cmd[:-1]
        if body == honeywell.AIM_ON:
            self.aim, status = True, honeywell.ACK
        elif body == honeywell.AIM_OFF:
            self.aim, status = False, honeywell.ACK
        else:
            status = honeywell.ENQ
        self._push([(honeywell.encode_reply(cmd, status), 0)])

    def _newland(self, storage: bytes, cmds: list[bytes]) -> None:
        statuses = []
        trigger = False
        for c in cmds:
            st = newland.ACK
            if c == b"SCNTRG1":
                trigger = True
            elif c == b"SCNTRG0":
                self.stops += 1
            elif c in (b"AIDENA1", b"AIDENA0"):
                self.aim = c == b"AIDENA1"
            else:
                st = newland.ENQ
            statuses.append(st)
        self._push([(newland.encode_reply(storage, cmds, statuses), 0)])
        if trigger:
            self._trigger(False)

    def _ssi_command(self, p: bytes | None) -> None:
        if p is None:
            self.bad_commands += 1
            self._push([(ssi.packet(ssi.CMD_NAK_OP, b"\x01", ssi.SRC_DECODER), 0)])
            return
        self.commands.append(p)
        op = p[1]
        ack = ssi.packet(ssi.CMD_ACK_OP, b"", ssi.SRC_DECODER)
        if op == ssi.CMD_ACK_OP:
            self.acks_heard += 1
            if self._ssi_queue:
                nxt = self._ssi_queue.pop(0)
                self._ssi_sent = nxt
                self._push([(nxt, 0)])
            else:
                self._ssi_sent = None
        elif op == ssi.CMD_NAK_OP:
            self.naks_heard += 1
            if self._ssi_sent is not None:
                p0 = self._ssi_sent
                ln = p0[0]
                body = p0[:3] + bytes([p0[3] | ssi.ST_RETRANSMIT]) + p0[4:ln]
                c = ssi.checksum(body)
                self._push([(body + bytes([c >> 8, c & 0xFF]), 0)])
        elif op == ssi.START_OP:
            self._push([(ack, 0)])
            self._trigger(False)
        elif op == ssi.STOP_OP:
            self.stops += 1
            self._push([(ack, 0)])
        elif op == ssi.PARAM_SEND:
            params = p[5:p[0]]
            if params[:1] == bytes([ssi.PARAM_CODE_ID]) and len(params) >= 2:
                self.aim = params[1] == 1
            self._push([(ack, 0)])
        else:
            self._push([(ssi.packet(ssi.CMD_NAK_OP, b"\x02", ssi.SRC_DECODER), 0)])

    # ---- servers

    def _serve_socket(self, conn: socket.socket) -> None:
        self._pump((conn.fileno(), lambda: conn.recv(512), conn.sendall))

    def _serve_pty(self, master: int) -> None:
        def write(b: bytes) -> None:
            view = memoryview(b)
            while view:
                n = os.write(master, view)
                view = view[n:]

        self._pump((master, lambda: os.read(master, 512), write))

    def _pump(self, io: tuple[int, Callable[[], bytes], Callable[[bytes], Any]]) -> None:
        """Serve one connection: hear commands, send the output schedule with
        its pauses (real idle gaps on the wire)."""
        fd, read, write = io
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.01)
                if ready:
                    data = read()
                    if not data:
                        return
                    with self.mutex:
                        self._rx = self._process(self._rx + data)
                for chunk, pause in self.take():
                    write(chunk)
                    if pause:
                        time.sleep(pause / 1000)
            except OSError:
                return
