"""Peak heap of the full locker application on the MicroPython unix port,
24 compartments, driven through real flows: a courier deposits parcels via
the panel, recipients pick them up, wrong codes, signed commands, all over a
real Mosquitto. Used by bench/firmware_mqtt.py."""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from firmware.locker import codes as C
from firmware.protocol import signing, topics
from gateway.broker import Account, Mosquitto
from postedge import unixport
from simulator.lockboard_sim import Sim8ABus
from simulator.panel_sim import SimPanel

KEY = b"k" * 32
PARCELS = ["RB123456785GB", "EA123456785CN", "CP000000270CN", "LX000000005CN", "9876543210128",
           "1012345678901"]


def _closer(bus: Sim8ABus, stop: threading.Event) -> None:
    while not stop.is_set():
        for ch in range(1, 25):
            if bus.is_open(1, ch):
                time.sleep(0.1)
                bus.close_door(1, ch)
        time.sleep(0.03)


def measure(seconds: float = 12) -> dict[str, int]:
    """Run the app through its flows; return code, data-peak and total-peak bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        broker = Mosquitto(tmpd / "broker", [Account("lk01", "lk01-pw", "o1", "locker"),
                                             Account("gw-o1", "gw-secret", "o1", "gateway")])
        broker.start()
        bus = Sim8ABus(boards=(1,), locks=24)
        bport = bus.serve_tcp()
        panel = SimPanel()
        sizes = ["S"] * 8 + ["M"] * 8 + ["L"] * 6 + ["XL"] * 2
        cfg = {"device": "lk01", "outlet": "o1",
               "broker": {"host": "127.0.0.1", "port": broker.port, "user": "lk01", "password": "lk01-pw"},
               "board": {"driver": "8a", "uart": f"socket://127.0.0.1:{bport}"},
               "compartments": [{"id": i, "size": sizes[i - 1], "board": 1, "lock": i} for i in range(1, 25)],
               "keys": {"k1": KEY.hex()}, "state_dir": str(tmpd / "flash"), "panel": panel.url,
               "poll_ms": 100, "mem_log_ms": 5}
        (tmpd / "config.json").write_text(json.dumps(cfg))
        fw = unixport.popen(["-m", "firmware.locker.main", str(tmpd / "config.json")],
                            heap=unixport.APP_HEAP, stdout=subprocess.PIPE)
        stop = threading.Event()
        threading.Thread(target=_closer, args=(bus, stop), daemon=True).start()
        try:
            panel.wait_connected()
            gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-gw")
            gw.username_pw_set("gw-o1", "gw-secret")
            gw.connect("127.0.0.1", broker.port)
            gw.loop_start()
            now = int(time.time())
            salt = "0011223344556677"
            cmd = signing.sign({"id": "cred-1", "dev": "lk01", "op": "credential",
                                "args": {"courier": "c1", "salt": salt, "hash": C.salted_hash(salt, "pw"),
                                         "exp": now + 3600}, "iat": now, "exp": now + 600}, KEY, kid="k1")
            for _ in range(10):
                gw.publish(topics.build("o1", "locker", "lk01", "cmd"), signing.encode(cmd), qos=1)
                time.sleep(0.5)
                if panel.do("scan", "PE-C:c1:pw")["code"] == "courier_ok":
                    break
            deadline = time.monotonic() + seconds
            i = 0
            while time.monotonic() < deadline:
                panel.do("scan", PARCELS[i % len(PARCELS)])
                panel.do("keys", "1234"[i % 4])
                panel.do("keys", "000000")
                i += 1
            gw.loop_stop()
            gw.disconnect()
        finally:
            stop.set()
            fw.kill()
            out, _ = fw.communicate()
            panel.close()
            bus.close()
            broker.stop()
    code = 0
    peak = 0
    for line in out.splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("evt") == "locker_start":
            code = d["code_heap"]
        elif d.get("evt") == "mem":
            peak = max(peak, d["peak"])
    return {"code": code, "total_peak": peak, "data_peak": peak - code}


if __name__ == "__main__":
    print(measure())
