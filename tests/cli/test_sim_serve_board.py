"""``postedge sim serve-board``: the tests' simulated lock board and front
panel for a tester without Python. The board answers the 8A protocol on its
TCP port, typed lines reach the panel's locker, display lines are printed."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time

from drivers.lockboard.board8a import encode_open


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    q: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line.rstrip("\n"))
    threading.Thread(target=read, daemon=True).start()
    return q


def next_line(q: queue.Queue[str], starts: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        line = q.get(timeout=max(0.01, deadline - time.monotonic()))
        if line.strip().startswith(starts):
            return line


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_serve_board_answers_the_bus_and_relays_the_panel() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "postedge.cli", "--lang", "en", "sim", "serve-board",
                             "--locks", "4"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    q = lines_of(proc)

    def type_(line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    try:
        board = next_line(q, "simulated lock board").split(": ", 1)[1]
        panel = next_line(q, "simulated front panel").split(": ", 1)[1]
        type_("keys 12")
        assert "no locker" in next_line(q, "no locker")
        with socket.create_connection(("127.0.0.1", port_of(board)), timeout=5) as bus:
            bus.sendall(encode_open(1, 2))
            assert bus.recv(64)  # the board's reply to the open command
        type_("doors")
        assert next_line(q, "open doors") == "open doors: 1/2"
        type_("close 1 2")
        assert next_line(q, "closed") == "closed: board 1 lock 2"
        type_("doors")
        assert next_line(q, "open doors") == "open doors: -"
        with socket.create_connection(("127.0.0.1", port_of(panel)), timeout=5) as lk:
            lk.sendall("D:ready|请输入取件码或扫码|Enter code or scan|\n".encode())
            assert next_line(q, "▸").strip() == "▸ Enter code or scan  [ready]"
            time.sleep(0.2)
            type_("keys 1234")
            assert lk.recv(64) == b"K:1234#\n"
            type_("scan PE-C:c007:x")
            assert lk.recv(64) == b"Q:PE-C:c007:x\n"
        type_("quit")
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
