"""``postedge sim serve-engine``: the tests' simulated scan engine for a
tester without Python. Typed labels come out of the TCP port framed as the
engine family frames them (AIM identifier, suffix); a typed fault spoils the
next scan on the wire."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from tests.cli.test_sim_serve_board import lines_of, next_line, port_of


def read_until(conn: socket.socket, end: bytes, timeout: float = 10) -> bytes:
    conn.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + timeout
    while not got.endswith(end) and time.monotonic() < deadline:
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            break
        got += chunk
    return got


def test_serve_engine_frames_typed_labels_and_spoils_one_on_request() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "postedge.cli", "--lang", "en", "sim", "serve-engine",
                             "--family", "gm65", "--aim", "--continuous"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        q = lines_of(proc)
        url = next_line(q, "simulated scan engine").split(": ", 1)[1]
        assert url.startswith("socket://127.0.0.1:")
        assert 'family = "gm65"' in next_line(q, "put in the counter scanner")
        conn = socket.create_connection(("127.0.0.1", port_of(url)), timeout=5)
        assert proc.stdin is not None

        def say(line: str) -> None:
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

        say("scan RB123456785GB")
        assert "RB123456785GB (code128)" in next_line(q, "under the engine")
        assert read_until(conn, b"\r") == b"]C0RB123456785GB\r"
        say("scan 9780471117094 ean13")
        assert read_until(conn, b"\r") == b"]E09780471117094\r"
        say("fault truncate")
        next_line(q, "the next scan goes wrong")
        say("scan CP123456785CN")
        spoiled = read_until(conn, b"\r", timeout=1.5)
        assert spoiled != b"]C0CP123456785CN\r" and not spoiled.endswith(b"\r")
        say("scan CP000000019CN")  # the fault was for one scan
        assert read_until(conn, b"]C0CP000000019CN\r").endswith(b"]C0CP000000019CN\r")
        say("stats")
        assert "3 scans sent" in next_line(q, "0 triggers")  # the spoiled one is not an intact scan
        say("fault explode")
        assert "not understood" in next_line(q, "not understood")
        say("quit")
        assert proc.wait(10) == 0
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
