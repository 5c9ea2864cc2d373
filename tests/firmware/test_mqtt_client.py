"""The firmware MQTT client on the MicroPython unix port: deadlines on every
socket step, resend with the same packet id and DUP set, subscriptions
restored after the broker forgets them, keepalive pings; backoff that only a
healthy connection resets, a publish the broker keeps refusing given up in
bounded time, bad topics and payloads refused before anything is sent.
Scenarios in tests/firmware/aclient_mp_check.py run on the
unix port and on CPython alike."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from firmware.mqtt import packets as P
from gateway.broker import Account, Mosquitto
from simulator import unixport

TESTS = Path(__file__).parent


def run_mp(*args: str, timeout: float = 60) -> list[dict]:
    p = unixport.run([str(TESTS / "aclient_mp_check.py"), *args], extra_path=[TESTS], timeout=timeout)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def run_check(runtime: str, *args: str, timeout: float = 60) -> list[dict]:
    """tests/firmware/aclient_mp_check.py on the unix port or on CPython."""
    if runtime == "micropython":
        return run_mp(*args, timeout=timeout)
    env = {**os.environ, "PYTHONPATH": str(unixport.firmware_root())}
    p = subprocess.run([sys.executable, str(TESTS / "aclient_mp_check.py"), *args], env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


RUNTIMES = ["cpython", pytest.param("micropython", marks=pytest.mark.mpy)]


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
                if self.behaviour == "connack-close":
                    continue  # accepted, then closed at once (finally below)
                while True:
                    first, body = self._read_packet(conn)
                    if first & 0xF0 == P.PINGREQ:
                        conn.sendall(bytes([P.PINGRESP, 0]))
                    if first & 0xF0 == P.SUBSCRIBE:
                        conn.sendall(bytes([P.SUBACK, 3]) + body[:2] + b"\x01")
                    if first & 0xF0 == P.PUBLISH:
                        topic, payload, qos, pid, retain, dup = P.parse_publish(first, body)
                        self.publishes.append((first, pid, payload))
                        if self.behaviour == "ack":
                            conn.sendall(P.puback(pid))
                            continue
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


@pytest.mark.mpy
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


@pytest.mark.slow
@pytest.mark.mpy
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


@pytest.mark.slow
@pytest.mark.mpy
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



# ----------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_broker_that_closes_after_connack_meets_a_growing_backoff(runtime: str) -> None:
    """A broker that accepts the CONNECT and closes at once (as Mosquitto does
    after a refused packet): each such connection is a failure, so the
    device's settings (backoff_cap 1 s, full jitter) space the attempts out.
    The old client reconnected without waiting, about 2,000 times in 6 s."""
    b = ScriptedBroker("connack-close")
    try:
        lines = run_check(runtime, "flap", str(b.port), "6", timeout=40)
    finally:
        b.close()
    stats = [d for d in lines if d["evt"] == "stats"][0]
    assert 3 <= b.connects < 20, b.connects
    assert stats["connects"] <= b.connects and stats["failures"] >= 4
    delays = [d["retry_in"] for d in lines if d["evt"] == "mqtt_disconnected"]
    assert delays and all(0.02 <= x <= 1.0 for x in delays)


def _small_packet_broker(directory: Path, accounts: list[Account]) -> Mosquitto:
    # Mosquitto closes an MQTT 3.1.1 connection that sends a packet over
    # max_packet_size: it has no way to refuse one message on its own.
    b = Mosquitto(directory, accounts)
    with open(b.conf, "a") as f:
        f.write("max_packet_size 2048\n")
    b.start()
    return b


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_publish_the_broker_closes_every_connection_on_is_given_up(
        runtime: str, tmp_path: Path, accounts: list[Account]) -> None:
    """Real Mosquitto: the session would resend the oversized message after
    every reconnect and the broker close every connection on it; the publish
    now raises PublishRefused after max_refusals connections, within seconds,
    and the client goes on to deliver the next message. The SUBACK of the
    restored subscription on each connection must not reset the backoff."""
    b = _small_packet_broker(tmp_path / "broker", accounts)
    try:
        lines = run_check(runtime, "refused", str(b.port), "4000", timeout=60)
        log = b.log_path.read_text()
    finally:
        b.kill()
    outcome = [d for d in lines if d["evt"] in ("gave_up", "acked", "hung")][0]
    assert outcome["evt"] == "gave_up" and outcome["kind"] == "PublishRefused", outcome
    assert outcome["ms"] < 10_000
    assert [d["evt"] for d in lines if d["evt"] in ("acked_after", "hung_after")] == ["acked_after"]
    stats = [d for d in lines if d["evt"] == "stats"][0]
    assert stats["refused"] == 1 and stats["inflight"] == 0
    assert stats["connects"] <= 7  # five refusals, then the connection that delivers
    waits = [d["retry_in"] for d in lines if d["evt"] == "mqtt_disconnected"]
    fails = [d["failures"] for d in lines if d["evt"] == "mqtt_disconnected"]
    assert fails == sorted(fails) and fails[-1] >= 4, fails  # grew despite each SUBACK
    assert len(waits) == len(fails)
    assert "exceeded" in log.lower() or "disconnect" in log.lower()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bad_topics_and_payloads_raise_before_anything_is_sent(runtime: str, broker: Mosquitto) -> None:
    """Real Mosquitto closes the connection on an empty topic, a wildcard, NUL
    or bad UTF-8; the old client sent them, and its session resent them
    after every reconnect. Now each raises PacketError (an MQTTError) at
    once, the connection is never touched, and a good message still goes."""
    lines = run_check(runtime, "badargs", str(broker.port), timeout=60)
    outcomes = [d for d in lines if d["evt"] in ("bad", "hung", "accepted", "other_error")]
    assert len(outcomes) == 12
    assert all(d["evt"] == "bad" and d["mqtt_error"] for d in outcomes), outcomes
    assert all(d["ms"] < 500 for d in outcomes)
    assert [d for d in lines if d["evt"] == "acked"] != []
    stats = [d for d in lines if d["evt"] == "stats"][0]
    assert stats["connects"] == 1 and stats["disconnects"] == 0 and stats["failures"] == 0


def test_topic_and_payload_checks() -> None:
    for good in ["pe/v1/o1/locker/lk01/evt", "t/é/漢", "a", "/", "t" * 65535]:
        assert P.check_topic(good) == good.encode()
    bad = ["", "a/+", "#", "a/b#", "a\x00b", "a\x1fb", "a\x7fb", "a\x85b", "a\ud800b", "a\ufffeb",
           "t" * 65536, b"\xff\xfe", 42, None]
    for topic in bad:
        with pytest.raises(P.PacketError):
            P.check_topic(topic)
    for good in ["a/+/b", "#", "a/#", "+", "+/+"]:
        P.check_filter(good)
    for topic in ["a/#/b", "a#", "a/b+", ""]:
        with pytest.raises(P.PacketError):
            P.check_filter(topic)
    assert P.check_payload(bytearray(b"ab")) == b"ab" and P.check_payload("é") == b"\xc3\xa9"
    assert len(P.check_payload(b"x" * P.MAX_PAYLOAD)) == P.MAX_PAYLOAD
    for payload, limit in [(b"x" * 11, 10), (42, 10), (None, 10)]:
        with pytest.raises(P.PacketError):
            P.check_payload(payload, limit)
    for qos in (2, -1, None, "1"):
        with pytest.raises(P.PacketError):
            P.check_qos(qos)
    assert issubclass(P.PacketError, P.MQTTError)


def test_backoff_resets_only_after_a_healthy_connection() -> None:
    """In one process: while the broker closes after CONNACK the failure
    streak grows and a pending publish is given up in bounded time; the first
    PUBACK on a connection that stays up ends the streak."""
    from firmware.mqtt.aclient import AsyncClient, PublishRefused, PublishTimeout

    b = ScriptedBroker("connack-close")

    async def main() -> dict:
        c = AsyncClient("t3", "127.0.0.1", b.port, keepalive=30, timeout=2, backoff_cap=1.0)
        runner = asyncio.create_task(c.run())
        t0 = time.monotonic()
        with pytest.raises(PublishRefused):
            await asyncio.wait_for(c.publish("t/x", b"m0", 1), 15)
        out = {"refused_after": time.monotonic() - t0, "streak": c.failures, "connects": b.connects}
        b.behaviour = "ack"
        await asyncio.wait_for(c.publish("t/x", b"m1", 1), 10)
        out["after_ack"] = c.failures
        # A caller's own deadline: PublishTimeout, and the message leaves the session.
        b.behaviour = "connack-close"
        await c._close_stream()
        with pytest.raises(PublishTimeout):
            await c.publish("t/x", b"m2", 1, timeout=0.3)
        out["inflight"] = c.inflight
        await c.disconnect()
        runner.cancel()
        return out

    try:
        out = asyncio.run(main())
    finally:
        b.close()
    assert out["refused_after"] < 10 and out["connects"] <= 6
    assert out["streak"] >= 4
    assert out["after_ack"] == 0
    assert out["inflight"] == 0


# ----------------------------------------------
def popen_check(runtime: str, *args: str) -> subprocess.Popen[str]:
    """tests/firmware/aclient_mp_check.py on the unix port or on CPython, running on."""
    if runtime == "micropython":
        return popen_mp(*args)
    env = {**os.environ, "PYTHONPATH": str(unixport.firmware_root())}
    return subprocess.Popen([sys.executable, str(TESTS / "aclient_mp_check.py"), *args], env=env,
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.slow  # waits out the client's reconnect window to show no loop
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_retained_message_over_the_read_limit_is_dropped_not_a_reconnect_loop(
        runtime: str, tmp_path: Path, accounts: list[Account]) -> None:
    """Real Mosquitto that lets a 100 KB retained command through (a broker set
    up with a larger max_packet_size than the outlet's): the client cannot hold
    it (P.MAX_PACKET, 64 KiB), and used to drop the connection on it; the
    broker resent it on every resubscribe, so the client reconnected for ever
    and never saw another command. Now its bytes are skipped off the stream,
    its QoS 1 is acked so the session does not hold it, stats count it, and the
    connection carries the next command."""
    b = Mosquitto(tmp_path / "broker", accounts)
    with open(b.conf, "a") as f:
        f.write("max_packet_size 1048576\n")
    b.start()
    gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-gw")
    gw.username_pw_set("gw-o1", "gw-secret")
    p = None
    try:
        gw.connect("127.0.0.1", b.port)
        gw.loop_start()
        gw.publish("pe/v1/o1/locker/lk01/cmd", b"B" * 100_000, qos=1, retain=True).wait_for_publish(5)
        p = popen_check(runtime, "sub", str(b.port), "6")
        time.sleep(3)
        gw.publish("pe/v1/o1/locker/lk01/cmd", b"after", qos=1).wait_for_publish(5)
        out, _ = p.communicate(timeout=30)
    finally:
        gw.loop_stop()
        if p is not None:
            p.kill()
        b.kill()
    lines = [json.loads(x) for x in out.splitlines()]
    assert [d["payload"] for d in lines if d["evt"] == "message"] == ["after"]
    stats = [d for d in lines if d["evt"] == "stats"][0]
    assert stats["connects"] == 1 and stats["disconnects"] == 0, stats
    assert stats["oversized"] == 1 and stats["bad_packets"] == 0
    dropped = [d for d in lines if d["evt"] == "mqtt_oversized"]
    assert len(dropped) == 1 and dropped[0]["size"] > 100_000 and dropped[0]["retain"]
    assert dropped[0]["topic"] == "pe/v1/o1/locker/lk01/cmd"
