"""The main job until the simulator lands: one outlet, for real, shown to a
person.

A real Mosquitto with passwords and ACLs, the gateway as its own process,
the locker firmware on the MicroPython unix port with a byte-accurate
simulated lock board and front panel. The platform provisions a courier; the
courier deposits a parcel through the panel; the recipient picks it up with
the code. The gateway is SIGKILLed between receiving the pickup and
committing it; after the restart the broker redelivers and every custody
event is stored exactly once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from firmware.locker import codes as C
from gateway.broker import Account, Mosquitto
from postedge.i18n import t
from protocol import seal
from simulator import unixport
from simulator.gateway_process import GatewayProcess, write_config
from simulator.lockboard_sim import Sim8ABus
from simulator.outlet import DoorCloser, Platform, locker_config, stored_events, wait_event
from simulator.panel_sim import SimPanel

OUTLET = "demo"
KEY = bytes(range(32))
PARCEL = "RB123456785GB"


def _say(lang: str, panel_line: dict[str, str]) -> str:
    return panel_line["zh"] if lang == "zh" else panel_line["en"]


def show(panel: SimPanel, lang: str, action: str, arg: str, until: str | None) -> None:
    """Type or scan at the panel; print what the display says until ``until``."""
    m = panel.mark()
    panel.keys(arg) if action == "keys" else panel.scan(arg)
    label = f"  {t(f'demo.{action}', lang)} {arg!r:26}"
    while True:
        shown = panel.wait_display(after=m)
        m = panel.shown.index(shown, m) + 1
        print(f"{label} ▸ {_say(lang, shown)} {shown['detail']}")
        label = " " * len(label)
        if until is None or shown["code"] == until:
            return


def run_demo(lang: str, workdir: Path | None = None) -> int:
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="postedge-demo-")
        workdir = Path(tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    print(t("demo.title", lang))
    accounts = [Account(f"gw-{OUTLET}", "gw-secret", OUTLET, "gateway"),
                Account("lk01", "lk01-secret", OUTLET, "locker")]
    broker = Mosquitto(workdir / "broker", accounts)
    bus = Sim8ABus(boards=(1,), locks=24)
    panel = SimPanel()
    gw = fw = platform = closer = None
    db = workdir / "gateway.db"
    try:
        broker.start()
        print(t("demo.broker", lang, port=broker.port))
        gwcfg = write_config(workdir / "gateway.toml", OUTLET, broker.port, f"gw-{OUTLET}", "gw-secret")
        gw = GatewayProcess(gwcfg)
        gw.wait_for("gateway_started")
        print(t("demo.gateway", lang, db=db))
        cfg = locker_config("lk01", OUTLET, broker.port, "lk01-secret",
                            f"socket://127.0.0.1:{bus.serve_tcp()}", workdir / "lk01-flash", KEY, panel.url)
        (workdir / "lk01.json").write_text(json.dumps(cfg, indent=1))
        fw = unixport.popen(["-m", "firmware.locker.main", str(workdir / "lk01.json")],
                            heap=unixport.APP_HEAP, stdout=open(workdir / "lk01.log", "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)
        panel.wait_connected()
        print(t("demo.locker", lang, n=len(cfg["compartments"]), heap=unixport.APP_HEAP))
        print("  ▸ " + _say(lang, panel.wait_display("ready")))

        platform = Platform(broker.port, OUTLET, f"gw-{OUTLET}", "gw-secret", KEY)
        salt = "5a17ab1e5a17ab1e"
        ack = platform.send("lk01", platform.command("lk01", "credential", {
            "courier": "c007", "salt": salt, "hash": C.salted_hash(salt, "badge-secret"),
            "exp": int(time.time()) + 3600}, "cred-c007"), "cred-c007")
        print(t("demo.credential", lang, ok=t("demo.accepted", lang) if ack["code"] == "ok" else ack["code"]))

        closer = DoorCloser(bus)
        print(t("demo.courier", lang))
        for action, arg, until in (("scan", "PE-C:c007:badge-secret", None),
                                   ("scan", "]C0" + PARCEL, None),
                                   ("keys", "2", "deposit_ok"), ("keys", "0", None)):
            show(panel, lang, action, arg, until)
        dep = wait_event(db, "locker.deposit")
        code = seal.open_box("platform", KEY, dep)  # the platform's copy: the body holds it sealed
        print(t("demo.deposited", lang, parcel=PARCEL, cid=dep["body"]["compartment"], code=code))

        # The fault: the gateway receives the pickup, then dies before committing.
        gw.stop()
        gw = GatewayProcess(gwcfg, "--hold-before-commit", "60")
        gw.wait_for("gateway_started")
        print(t("demo.recipient", lang))
        show(panel, lang, "keys", code, "pickup_ok")
        held = gw.wait_for("holding")
        time.sleep(1.0)  # the pickup's custody event is on its way in, uncommitted
        print(t("demo.kill", lang, n=held["n"]))
        gw.kill()
        print(t("demo.restart", lang))
        gw = GatewayProcess(gwcfg)
        gw.wait_for("gateway_started")
        wait_event(db, "locker.pickup")
        time.sleep(1.0)
        gw.stop()
        gw = None

        events = stored_events(db)
        print(t("demo.stored", lang))
        for e in events:
            body = {k: v for k, v in e["body"].items() if k in ("compartment", "parcel", "what", "result")}
            print(f"  {e['id']:<20} {e['type']:<20} {e['cls']:<9} {json.dumps(body, ensure_ascii=False)}")
        ids = [e["id"] for e in events]
        custody = [e["type"] for e in events if e["cls"] == "custody"]
        dups = len(ids) - len(set(ids))
        good = dups == 0 and custody.count("locker.deposit") == 1 and custody.count("locker.pickup") == 1
        print(t("demo.summary", lang, stored=len(ids), custody=len(custody), dups=dups,
                verdict=t("demo.ok" if good else "demo.fail", lang)))
        return 0 if good else 1
    finally:
        if closer is not None:
            closer.stop()
        if platform is not None:
            platform.close()
        if gw is not None:
            gw.kill()
        if fw is not None:
            fw.kill()
            fw.wait()
        panel.close()
        bus.close()
        broker.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

