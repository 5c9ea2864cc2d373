"""Peak heap of the full locker application on the MicroPython unix port,
24 compartments, driven through real flows: a courier deposits parcels via
the panel, recipients pick them up, wrong codes, signed commands, all over a
real Mosquitto. Used by bench/firmware_mqtt.py."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from common.pki import make_outlet_pki
from firmware.locker import codes as C
from gateway.broker import Account, Mosquitto, tls_listener
from simulator import unixport
from simulator.lockboard_sim import Sim8ABus
from simulator.outlet import DoorCloser, Platform, locker_config
from simulator.panel_sim import SimPanel

KEY = b"k" * 32
# Domestic waybills count only as read from Code 128 (]C0): protocol/barcodes.py.
PARCELS = ["RB123456785GB", "EA123456785CN", "CP000000270CN", "LX000000005CN", "]C09876543210128",
           "]C01012345678901"]


def measure(seconds: float = 12, tls: bool = False) -> dict[str, int]:
    """Run the app through its flows; return code, data-peak and total-peak bytes.

    ``tls``: the locker connects to the broker's TLS listener and verifies
    the outlet CA (common/pki.py), as a provisioned locker does; the
    platform stand-in stays on the loopback plaintext listener."""
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        accounts = [Account("lk01", "lk01-pw", "o1", "locker"),
                    Account("gw-o1", "gw-secret", "o1", "gateway")]
        pki = make_outlet_pki(tmpd / "pki") if tls else None
        listener = tls_listener(pki.ca, pki.server.cert, pki.server.key) if pki else None
        broker = Mosquitto(tmpd / "broker", accounts, tls=listener)
        broker.start()
        bus = Sim8ABus(boards=(1,), locks=24)
        panel = SimPanel()
        cfg = locker_config("lk01", "o1", broker.tls_port if pki else broker.port, "lk01-pw",
                            f"socket://127.0.0.1:{bus.serve_tcp()}", tmpd / "flash", KEY, panel.url,
                            mem_log_ms=5)
        if pki is not None:
            cfg["broker"].update(host="localhost", ca=pki.ca_pem)
        (tmpd / "config.json").write_text(json.dumps(cfg))
        fw = unixport.popen(["-m", "firmware.locker.main", str(tmpd / "config.json")],
                            heap=unixport.APP_HEAP, stdout=subprocess.PIPE)
        closer = DoorCloser(bus, after_s=0.1)
        platform = Platform(broker.port, "o1", "gw-o1", "gw-secret", KEY)
        try:
            panel.wait_connected()
            salt = "0011223344556677"
            platform.send("lk01", platform.command("lk01", "credential", {
                "courier": "c1", "salt": salt, "hash": C.salted_hash(salt, "pw"),
                "exp": int(time.time()) + 3600}, "cred-1"), "cred-1")
            panel.do("scan", "PE-C:c1:pw")
            deadline = time.monotonic() + seconds
            i = 0
            while time.monotonic() < deadline:
                panel.do("scan", PARCELS[i % len(PARCELS)])
                panel.do("keys", "1234"[i % 4])
                panel.do("keys", "000000")
                i += 1
        finally:
            platform.close()
            closer.stop()
            fw.kill()
            out, _ = fw.communicate()
            panel.close()
            bus.close()
            broker.stop()
    code = 0
    peak = 0
    connects = 0
    for line in out.splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("evt") == "locker_start":
            code = d["code_heap"]
        elif d.get("evt") == "mem":
            peak = max(peak, d["peak"])
        elif d.get("evt") == "mqtt_connected":
            connects += 1
    return {"code": code, "total_peak": peak, "data_peak": peak - code, "connects": connects}


if __name__ == "__main__":
    print(measure())
