"""The MQTT encoders (firmware/mqtt/packets.py) refuse, with the client's own
PacketError, everything a broker would close the connection on and everything
that cannot be encoded: the client's checks run before them, but the
encoders are also what the simulator and tools import on CPython, and on
MicroPython struct.pack("!H", n) silently keeps the low 16 bits of a length.
tests/firmware/packets_mp_check.py runs on the unix port and on CPython."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.mqtt import packets as P
from simulator import unixport

TESTS = Path(__file__).parent


def run_check(runtime: str) -> list[dict]:
    script = str(TESTS / "packets_mp_check.py")
    if runtime == "micropython":
        # Encoders only, with 64 KiB strings: not a device-memory test.
        p = unixport.run([script], heap="1M", extra_path=[TESTS], timeout=60)
    else:
        env = {**os.environ, "PYTHONPATH": str(unixport.firmware_root())}
        p = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


@pytest.mark.parametrize("runtime", ["cpython", pytest.param("micropython", marks=pytest.mark.mpy)])
def test_every_encoder_refuses_with_packet_error(runtime: str) -> None:
    lines = run_check(runtime)
    assert len(lines) == 43
    wrong = {d["case"]: d["outcome"] for d in lines if d["outcome"] != "PacketError"}
    assert wrong == {}


def test_good_packets_still_encode_as_before() -> None:
    assert P.publish("a/b", b"hi", qos=1, retain=True, pid=10, dup=True) == (
        b"\x3b\x09\x00\x03a/b\x00\x0ahi")
    assert P.publish(b"a/b", bytearray(b"hi"), qos=0) == b"\x30\x07\x00\x03a/bhi"
    assert P.publish("t/é", b"", qos=1, pid=65535)[-2:] == b"\xff\xff"
    assert P.subscribe(7, "pe/v1/o1/+/+/evt", qos=1)[0] == 0x82
    assert P.subscribe(8, "#", qos=0)[-4:] == b"\x00\x01#\x00"
    assert P.puback(65535) == b"\x40\x02\xff\xff"
    assert P.connect("c", keepalive=30) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x1e\x00\x01c"
    # The longest topic there is still encodes: 65535 bytes.
    assert len(P.publish("t" * 65535, b"", qos=0)) == 1 + 3 + 2 + 65535
