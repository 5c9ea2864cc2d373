"""Firmware MQTT client benchmark (issue 3).

Measured side by side in one run against the same Mosquitto on loopback:

- QoS 1 publish rate of the firmware client on the MicroPython unix port
  (128 KiB heap) and of paho-mqtt on CPython publishing the same messages
  with the same in-flight window; the ratio ours/paho;
- seconds from the broker coming back (listening again after a SIGKILL) to
  the firmware client's first PUBACK;
- peak live heap (``gc.collect()`` then ``gc.mem_alloc()``) while the full
  locker application runs 24 compartments (simulated lock board, panel
  flows, broker traffic). On a board the firmware's bytecode is frozen into
  flash (firmware/manifest.py); the unix port cannot freeze, so the ~125 KB
  of bytecode sits in the heap too and the app runs under
  ``-X heapsize=256k`` there. peak_heap_bytes is the data part, what a
  board's heap holds; code and the unix-port total are printed beside it.

Goals: >= 1,000 msg/s, >= 0.25 of paho, <= 2 s, <= 64 KB.
Last line: firmware_mqtt qos1_msgs_per_s=... paho_msgs_per_s=... ratio=...
reconnect_s=... peak_heap_bytes=...
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.broker import Account, Mosquitto  # noqa: E402
from simulator import unixport  # noqa: E402

N = 5000
WINDOW = 8
PAYLOAD = b"x" * 180
TOPIC = "pe/v1/o1/locker/lk01/evt"
BENCH = Path(__file__).resolve().parent


def firmware_rate(port: int) -> float:
    proc = unixport.run([str(BENCH / "mqtt_pub_mp.py"), str(port), str(N), str(WINDOW), "rate"],
                        timeout=120)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    line = [x for x in proc.stdout.splitlines() if x.startswith("rate")][0]
    return float(line.split()[1])


def paho_rate(port: int) -> float:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho", protocol=mqtt.MQTTv311)
    c.username_pw_set("lk01", "lk01-pw")
    c.max_inflight_messages_set(WINDOW)
    c.max_queued_messages_set(0)
    done = threading.Event()
    acked = [0]

    def on_publish(client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        acked[0] += 1
        if acked[0] == N:
            done.set()

    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    for _ in range(N):
        c.publish(TOPIC, PAYLOAD, qos=1)
    if not done.wait(120):
        raise RuntimeError(f"paho: only {acked[0]} of {N} acked")
    dt = time.perf_counter() - t0
    c.loop_stop()
    c.disconnect()
    return N / dt


def reconnect_seconds(broker: Mosquitto, trials: int = 3) -> float:
    results = []
    for _ in range(trials):
        proc = unixport.popen([str(BENCH / "mqtt_pub_mp.py"), str(broker.port), "0", "1", "watch"],
                              stdout=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            while proc.stdout.readline().strip() != "ready":
                pass
            for _ in range(10):
                proc.stdout.readline()
            broker.kill()
            time.sleep(1.5)
            broker.start()
            t_up = time.time()
            while True:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError("firmware client exited")
                if line.startswith("ack ") and float(line.split()[1]) >= t_up:
                    results.append(float(line.split()[1]) - t_up)
                    break
        finally:
            proc.kill()
            proc.wait()
    return max(results)


def peak_heap() -> dict[str, int]:
    from bench.locker_heap import measure

    return measure(seconds=12)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "broker", [Account("lk01", "lk01-pw", "o1", "locker")])
        broker.start()
        try:
            ours, theirs = [], []
            for _ in range(3):
                ours.append(firmware_rate(broker.port))
                theirs.append(paho_rate(broker.port))
            fw, pa = statistics.median(ours), statistics.median(theirs)
            rec = reconnect_seconds(broker)
        finally:
            broker.stop()
    heap = peak_heap()
    ratio = fw / pa
    print(f"{'':28}{'msg/s':>10}")
    print(f"{'firmware client (MicroPython)':28}{fw:>10.0f}   runs: {', '.join(f'{x:.0f}' for x in ours)}")
    print(f"{'paho-mqtt (CPython)':28}{pa:>10.0f}   runs: {', '.join(f'{x:.0f}' for x in theirs)}")
    print(f"ratio ours/paho = {ratio:.2f} (goal >= 0.25); goal >= 1000 msg/s")
    print(f"broker back -> first PUBACK: {rec:.2f} s (worst of 3; goal <= 2 s)")
    print("locker app, 24 compartments, live heap (gc.collect() then gc.mem_alloc(), every 5 ms):")
    print(f"  code (frozen into flash on a board; in the heap on the unix port): {heap['code']} bytes")
    print(f"  data peak, what a board's heap holds: {heap['data_peak']} bytes (goal <= 65536)")
    print(f"  total peak on the unix port: {heap['total_peak']} bytes (heap {unixport.APP_HEAP})")
    print(f"firmware_mqtt qos1_msgs_per_s={fw:.0f} paho_msgs_per_s={pa:.0f} ratio={ratio:.2f} "
          f"reconnect_s={rec:.2f} peak_heap_bytes={heap['data_peak']} code_heap_bytes={heap['code']} "
          f"unix_total_heap_bytes={heap['total_peak']}")


if __name__ == "__main__":
    main()
