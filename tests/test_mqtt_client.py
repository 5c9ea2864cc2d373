"""The firmware MQTT client on the MicroPython unix port: deadlines on every
socket step, resend with the same packet id and DUP set, subscriptions
restored after the broker forgets them, keepalive pings."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from firmware.mqtt import packets as P
from gateway.broker import Mosquitto
from postedge import unixport

TESTS = Path(__file__).parent


def run_mp(*args: str, timeout: float = 60) -> list[dict]:
    p = unixport.run([str(TESTS / "aclient_mp_check.py"), *args], extra_path=[TESTS], timeout=timeout)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def popen_mp(*args: str) -> subprocess.Popen[str]:
    return unixport.popen([str(TESTS / "aclient_mp_check.py"), *args], extra_path=[TESTS],
                          stdout=subprocess.PIPE)


class ScriptedBroker:
    """A peer that speaks just enough MQTT to misbehave on purpose."""

    def __init__(self, behaviour: str) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = int(self.srv.getsockname()[1])
        self.behaviour = behaviour
        self.publishes: list[tuple[int, int, bytes]] = []  # (first byte, pid, payload)
        self.connects = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _read_packet(self, conn: socket.socket) -> tuple[int, bytes]:
        first = conn.recv(1)
        if not first:
            raise EOFError
        n, shift = 0, 0
        while True:
            b = conn.recv(1)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        body = b""
        while len(body) < n:
            chunk = conn.recv(n - len(body))
            if not chunk:
                raise EOFError
            body += chunk
        return first[0], body

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.connects += 1
            try:
                if self.behaviour == "silent":
                    time.sleep(30)  # accept, never answer
                    continue
                self._read_packet(conn)  # CONNECT
                conn.sendall(bytes([P.CONNACK, 2, 0, 0]))
                while True:
                    first, body = self._read_packet(conn)
                    if first & 0xF0 == P.PINGREQ:
                        conn.sendall(bytes([P.PINGRESP, 0]))
                    if first & 0xF0 == P.PUBLISH:
                        topic, payload, qos, pid, retain, dup = P.parse_publish(first, body)
                        self.publishes.append((first, pid, payload))
                        if self.connects == 1 and self.behaviour == "swallow-ack":
                            continue  # alive, answering pings, but this PUBACK never comes
                        if self.connects == 1:
                            break  # drop the connection instead of acking
                        conn.sendall(P.puback(pid))
            except (EOFError, OSError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.srv.close()


def test_resend_keeps_packet_id_and_sets_dup() -> None:
    b = ScriptedBroker("drop-first")
    try:
        lines = run_mp("pub", str(b.port), "1", timeout=30)
    finally:
        b.close()
    assert [d["i"] for d in lines if d["evt"] == "acked"] == [0]
    (f1, pid1, m1), (f2, pid2, m2) = b.publishes[:2]
    assert pid1 == pid2 and m1 == m2 == b"m0"
    assert f1 & 0x08 == 0 and f2 & 0x08 == 0x08  # DUP only on the resend
    assert f1 & 0x06 == f2 & 0x06 == 0x02  # QoS 1 both times
    stats = [d for d in lines if d["evt"] == "stats"][0]
    assert stats["resent"] == 1 and stats["connects"] == 2


def test_a_swallowed_puback_is_resent_on_a_new_connection() -> None:
    """A broker (or middlebox) that keeps the link alive but never acks: MQTT
    3.1.1 resends only on reconnect, so the client drops the connection after
    ack_timeout and its session resends with DUP (found by the simulator)."""
    import asyncio

    from firmware.mqtt.aclient import AsyncClient

    b = ScriptedBroker("swallow-ack")

    async def main() -> dict:
        c = AsyncClient("t1", "127.0.0.1", b.port, keepalive=2, timeout=2, ack_timeout=1.0, backoff_cap=0.2)
        runner = asyncio.create_task(c.run())
        await asyncio.wait_for(c.publish("t/x", b"m0", 1), 10)
        await c.disconnect()
        runner.cancel()
        return c.stats

    try:
        t0 = time.monotonic()
        stats = asyncio.run(main())
        took = time.monotonic() - t0
    finally:
        b.close()
    assert stats["ack_timeouts"] == 1 and stats["resent"] == 1 and stats["connects"] == 2
    (f1, pid1, m1), (f2, pid2, m2) = b.publishes[:2]
    assert pid1 == pid2 and m1 == m2 == b"m0" and f2 & 0x08 and not f1 & 0x08
    assert took < 6


def test_silent_broker_never_hangs_the_client() -> None:
    b = ScriptedBroker("silent")
    t0 = time.monotonic()
    try:
        p = popen_mp("sub", str(b.port), "4")
        out, _ = p.communicate(timeout=30)
    finally:
        b.close()
    took = time.monotonic() - t0
    lines = [json.loads(x) for x in out.splitlines()]
    fails = [d for d in lines if d["evt"] == "mqtt_connect_failed"]
    assert len(fails) >= 2 and all("timed out" in d["error"] for d in fails)
    assert p.returncode == 0 and took < 15  # the program went on and finished


def test_subscriptions_restored_when_the_broker_forgets_them(broker: Mosquitto) -> None:
    p = popen_mp("sub", str(broker.port), "12")
    gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-gw")
    gw.username_pw_set("gw-o1", "gw-secret")
    try:
        time.sleep(1.5)
        gw.connect("127.0.0.1", broker.port)
        gw.publish("pe/v1/o1/locker/lk01/cmd", b"before", qos=1).wait_for_publish(5)
        gw.disconnect()
        # The broker loses its state entirely (disk wiped): only the client
        # re-subscribing can make the second message arrive.
        broker.kill()
        shutil.rmtree(broker.directory / "data")
        (broker.directory / "data").mkdir()
        broker.start()
        time.sleep(2.5)
        gw.connect("127.0.0.1", broker.port)
        gw.publish("pe/v1/o1/locker/lk01/cmd", b"after", qos=1).wait_for_publish(5)
        gw.disconnect()
        out, _ = p.communicate(timeout=30)
    finally:
        p.kill()
    lines = [json.loads(x) for x in out.splitlines()]
    assert [d["payload"] for d in lines if d["evt"] == "message"] == ["before", "after"]
    stats = [d for d in lines if d["evt"] == "stats"][0]
    assert stats["connects"] >= 2 and stats["pings"] >= 1
