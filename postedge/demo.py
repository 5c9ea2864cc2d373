"""The thin slice end to end, shown to a person: what ``scripts/demo`` runs
until the simulator lands.

A real Mosquitto with passwords and ACLs, the gateway as its own process,
and the locker firmware on the MicroPython unix port under a device-sized
heap. Halfway through, the gateway is SIGKILLed between receiving an event
and committing it; after the restart the broker redelivers and the event is
stored exactly once.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from gateway.broker import Account, Mosquitto
from gateway.process import GatewayProcess, write_config
from gateway.store import EventStore
from postedge import unixport
from postedge.i18n import t

OUTLET = "demo"


def locker_config(workdir: Path, broker: Mosquitto, events: int) -> Path:
    cfg = workdir / "lk01.json"
    cfg.write_text(json.dumps({
        "outlet": OUTLET, "device": "lk01", "password": "lk01-secret", "port": broker.port,
        "state_dir": str(workdir / "lk01-flash"), "events": events,
    }))
    return cfg


def run_locker(cfg: Path, lang: str) -> list[str]:
    proc = unixport.run(["-m", "firmware.locker.thin", str(cfg)], timeout=120)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    acked = []
    for line in proc.stdout.splitlines():
        d = json.loads(line)
        if d["evt"] == "acked":
            acked.append(d["id"])
            print(t("demo.acked", lang, id=d["id"]))
    return acked


def run_demo(lang: str, events: int = 5, workdir: Path | None = None) -> int:
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="postedge-demo-")
        workdir = Path(tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    print(t("demo.title", lang))
    accounts = [Account(f"gw-{OUTLET}", "gw-secret", OUTLET, "gateway"),
                Account("lk01", "lk01-secret", OUTLET, "locker")]
    broker = Mosquitto(workdir / "broker", accounts)
    gw = None
    try:
        broker.start()
        print(t("demo.broker", lang, port=broker.port))
        cfg = write_config(workdir / "gateway.toml", OUTLET, broker.port, f"gw-{OUTLET}", "gw-secret")
        gw = GatewayProcess(cfg)
        gw.wait_for("gateway_started")
        print(t("demo.gateway", lang, db=workdir / "gateway.db"))
        lk = locker_config(workdir, broker, events)
        print(t("demo.locker", lang, n=events, heap=unixport.DEVICE_HEAP))
        sent = run_locker(lk, lang)
        gw.stop()

        # The fault: receive, then die before the commit.
        print(t("demo.kill", lang))
        gw = GatewayProcess(cfg, "--hold-before-commit", "30")
        gw.wait_for("gateway_started")
        lk.write_text(json.dumps({**json.loads(lk.read_text()), "events": 1}))
        sent += run_locker(lk, lang)
        gw.wait_for("holding")
        gw.kill()
        print(t("demo.restart", lang))
        gw = GatewayProcess(cfg)
        gw.wait_for("committed")
        gw.stop()
        gw = None

        store = EventStore(workdir / "gateway.db")
        rows = store.events()
        store.close()
        print(t("demo.stored", lang))
        for r in rows:
            print(f"  {r['id']:<28} {r['type']:<14} {r['cls']:<9} {r['payload'].decode()}")
        ids = [r["id"] for r in rows]
        dups = len(ids) - len(set(ids))
        good = sorted(ids) == sorted(sent) and dups == 0
        print(t("demo.summary", lang, sent=len(sent), stored=len(ids), dups=dups,
                verdict=t("demo.ok" if good else "demo.fail", lang)))
        return 0 if good else 1
    finally:
        if gw is not None:
            gw.kill()
        broker.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
