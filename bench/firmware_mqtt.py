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

TLS rows (issue 13), against the same Mosquitto's TLS listener with a server
certificate from an outlet CA made as ``provision`` makes it (common/pki.py),
the client verifying that CA and the host name (firmware/mqtt/tls.py):

- tls_msgs_per_s: QoS 1 rate, same messages and window (median of 3 runs);
- tls_handshake_s: from nothing to CONNACK (TCP, TLS handshake with ECDSA
  P-256 certificate verification, MQTT CONNECT), median of 10 connects;
- tls_peak_heap_bytes: the locker application's data peak with its broker
  link over TLS (GC heap, as above) plus mbedTLS's own peak: MicroPython's
  mbedTLS allocates with the C allocator, outside the GC heap (a connection
  costs the GC heap about 600 bytes; ESP32 builds likewise take it from the
  IDF heap), so that part is measured with valgrind's massif as the
  difference in peak C heap between the same client run over TLS and plain.

Goals: >= 1,000 msg/s, >= 0.25 of paho, <= 2 s, <= 64 KB; TLS >= 500 msg/s,
handshake <= 1.0 s, peak heap <= 100,000 bytes.
Last line: firmware_mqtt qos1_msgs_per_s=... paho_msgs_per_s=... ratio=...
reconnect_s=... peak_heap_bytes=... tls_msgs_per_s=... tls_handshake_s=...
tls_peak_heap_bytes=...
"""

from __future__ import annotations

import shutil
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

from common.pki import OutletPki, make_outlet_pki  # noqa: E402
from gateway.broker import Account, Mosquitto, tls_listener  # noqa: E402
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
    c.disconnect()
    c.loop_stop()
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


def peak_heap(tls: bool = False) -> dict[str, int]:
    from bench.locker_heap import measure

    r = measure(seconds=12, tls=tls)
    if tls and not r["connects"]:
        raise RuntimeError("the locker never connected over TLS")
    return r


def _mp(*args: str, timeout: float = 120) -> str:
    proc = unixport.run([str(BENCH / "mqtt_tls_mp.py"), *args], timeout=timeout)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return proc.stdout


def tls_rate(port: int, ca: Path) -> float:
    line = [x for x in _mp("rate", str(port), str(N), str(WINDOW), str(ca)).splitlines()
            if x.startswith("rate")][0]
    return float(line.split()[1])


def tls_handshakes(port: int, ca: Path, trials: int = 10) -> list[float]:
    line = [x for x in _mp("handshake", str(port), str(trials), str(ca)).splitlines()
            if x.startswith("handshake")][0]
    return [float(x) for x in line.split()[1:]]


def _massif_peak(args: list[str], out: Path) -> int:
    cmd = unixport.command([str(BENCH / "mqtt_tls_mp.py"), *args])
    subprocess.run(["valgrind", "--tool=massif", f"--massif-out-file={out}", *cmd], check=True,
                   capture_output=True, timeout=600, env=unixport.env())
    return max(int(x.split("=")[1]) for x in out.read_text().splitlines() if x.startswith("mem_heap_B="))


def mbedtls_heap(broker: Mosquitto, pki: OutletPki, tmp: Path) -> int | None:
    """Peak C heap of the client over TLS minus the same client plain (massif)."""
    if shutil.which("valgrind") is None:
        return None
    plain = _massif_peak(["load", str(broker.port), "-"], tmp / "massif.plain")
    tls = _massif_peak(["load", str(broker.tls_port), str(pki.ca)], tmp / "massif.tls")
    return tls - plain


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_outlet_pki(Path(tmp) / "pki")
        broker = Mosquitto(Path(tmp) / "broker", [Account("lk01", "lk01-pw", "o1", "locker")],
                           tls=tls_listener(pki.ca, pki.server.cert, pki.server.key))
        broker.start()
        try:
            ours, theirs, tls_runs = [], [], []
            for _ in range(3):
                ours.append(firmware_rate(broker.port))
                theirs.append(paho_rate(broker.port))
                tls_runs.append(tls_rate(broker.tls_port, pki.ca))
            fw, pa = statistics.median(ours), statistics.median(theirs)
            tr = statistics.median(tls_runs)
            hs = tls_handshakes(broker.tls_port, pki.ca)
            mbed = mbedtls_heap(broker, pki, Path(tmp))
            rec = reconnect_seconds(broker)
        finally:
            broker.stop()
    heap = peak_heap()
    tls_heap = peak_heap(tls=True)
    tls_peak = tls_heap["data_peak"] + (mbed or 0)
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
    hs_med = statistics.median(hs)
    print(f"TLS (outlet CA, verified): {tr:.0f} msg/s QoS 1 (goal >= 500)   runs: "
          f"{', '.join(f'{x:.0f}' for x in tls_runs)}")
    print(f"TLS connect to CONNACK: median {hs_med:.3f} s, worst {max(hs):.3f} s of {len(hs)} "
          "(goal <= 1.0 s)")
    print(f"TLS locker app data peak (GC heap): {tls_heap['data_peak']} bytes; mbedTLS C heap peak: "
          f"{'not measured (no valgrind)' if mbed is None else f'{mbed} bytes'}; "
          f"sum {tls_peak} bytes (goal <= 100000)")
    print(f"firmware_mqtt qos1_msgs_per_s={fw:.0f} paho_msgs_per_s={pa:.0f} ratio={ratio:.2f} "
          f"reconnect_s={rec:.2f} peak_heap_bytes={heap['data_peak']} code_heap_bytes={heap['code']} "
          f"unix_total_heap_bytes={heap['total_peak']} tls_msgs_per_s={tr:.0f} "
          f"tls_handshake_s={hs_med:.3f} tls_peak_heap_bytes={tls_peak} "
          f"tls_gc_heap_bytes={tls_heap['data_peak']} "
          f"tls_mbedtls_heap_bytes={mbed if mbed is not None else -1}")


if __name__ == "__main__":
    main()
