"""A full disk under the gateway: nothing acked is lost, the gateway keeps
running, and it catches up by itself once there is room again. The store
lives on a real 1 MiB tmpfs (the tests run as root, as CI does)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.broker import Mosquitto
from gateway.store.events import EventStore
from protocol import envelope, topics
from simulator.gateway_process import GatewayProcess, write_config


@pytest.fixture
def tiny_fs(tmp_path: Path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_disk_full_loses_nothing_and_recovers(tmp_path: Path, broker: Mosquitto, tiny_fs: Path) -> None:
    cfg = write_config(tmp_path / "gw.toml", "o1", broker.port, "gw-o1", "gw-secret",
                       db=str(tiny_fs / "gw.db"))
    gw = GatewayProcess(cfg)
    gw.wait_for("gateway_started")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lk01-t")
    c.username_pw_set("lk01", "lk01-pw")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    n = 1500
    pad = "p" * 900
    try:
        for i in range(1, n + 1):
            env = envelope.make(f"lk01:0badc0de:{i}", 1795881163, "locker.deposit", "custody",
                                {"i": i, "pad": pad})
            c.publish(topics.build("o1", "locker", "lk01", "evt"), envelope.encode(env), qos=1)
        failed = gw.wait_for("store_failed", timeout=60)
        assert "full" in failed["error"]
        time.sleep(2)
        assert gw.proc.poll() is None  # still running
        subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_fs)], check=True)
        deadline = time.monotonic() + 90
        count = 0
        while time.monotonic() < deadline:
            s = EventStore(tiny_fs / "gw.db")
            count = s.count()
            s.close()
            if count >= n:
                break
            time.sleep(0.5)
    finally:
        c.disconnect()
        c.loop_stop()
        last = gw.stop()
    assert count == n  # every event, after the disk had room again
    assert last["stored"] == n and last.get("store_errors", 0) >= 1


@pytest.mark.slow
def test_side_channels_and_a_restart_on_a_full_disk_keep_the_gateway_up(
        tmp_path: Path, broker: Mosquitto, tiny_fs: Path, connect) -> None:
    """Presence, state and acks on a full disk are held back like events, not
    fatal; a gateway restarted on the full disk (budget alarm, sequence file)
    stays up too, and every message lands once there is room."""
    cfg = write_config(tmp_path / "gw.toml", "o1", broker.port, "gw-o1", "gw-secret",
                       db=str(tiny_fs / "gw.db"))
    gw = GatewayProcess(cfg)
    gw.wait_for("gateway_started")
    c = connect("lk01").client
    pad = "p" * 900
    try:
        # Fill the tmpfs beside the database so the next writes fail.
        filler = tiny_fs / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        for i in range(1, 41):
            c.publish(topics.build("o1", "locker", "lk01", "presence"),
                      b"online" if i % 2 else b"offline", qos=1, retain=True)
            c.publish(topics.build("o1", "locker", "lk01", "state"), b'{"v":1,"n":%d}' % i, qos=1)
            env = envelope.make(f"lk01:0badc0de:{i}", 1795881163, "locker.deposit", "custody",
                                {"i": i, "pad": pad})
            c.publish(topics.build("o1", "locker", "lk01", "evt"), envelope.encode(env), qos=1)
        gw.wait_for("store_failed", timeout=60)
        time.sleep(2)
        assert gw.proc.poll() is None, "the gateway exited on a full disk"
        gw.kill()
        gw = GatewayProcess(cfg)  # a restart on the full disk
        time.sleep(4)
        assert gw.proc.poll() is None, "the restarted gateway exited on a full disk"
        filler.unlink()
        deadline = time.monotonic() + 60
        count = 0
        while time.monotonic() < deadline:
            s = EventStore(tiny_fs / "gw.db")
            count = s.count()
            devices = s.devices()
            s.close()
            if count >= 40 and devices and devices[0]["state"] == {"v": 1, "n": 40}:
                break
            time.sleep(0.5)
        assert count >= 40
        assert devices[0]["state"] == {"v": 1, "n": 40}
    finally:
        gw.stop()
