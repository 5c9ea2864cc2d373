"""The counter scanner: verdicts, duplicate windows and
feedback on CPython; then the real firmware on the MicroPython unix port with
a simulated GM65 engine over TCP, real Mosquitto and the gateway, including a
scan made while the broker is down and a manifest sent as a signed command.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from drivers.hal import host
from firmware.counter import config as counter_config_mod
from firmware.counter.app import Counter, Dedupe
from firmware.devconfig import ConfigError
from gateway.broker import Mosquitto
from protocol import envelope, signing
from simulator import unixport
from simulator.gateway_process import GatewayProcess, write_config
from simulator.outlet import counter_config, stored_events
from simulator.scan_engine_sim import SimScanEngine
from tests.locker_rig import KEY

S10_OK = "RB123456785CN"
S10_OK2 = "EE123456785CN"
S10_BAD = "RB123456784CN"  # wrong check digit
EAN = "4006381333931"       # a product, not a parcel


def make_counter(tmp: Path, **extra: Any) -> Counter:
    extra.setdefault("time_source", "local")  # no gateway to take the time from
    cfg = counter_config_mod.validate(counter_config("sc01", "o1", 1, "x", "loop://", tmp / "flash", KEY,
                                                      **extra))
    hal = type("Hal", (), {"clock": host.clock, "storage": staticmethod(host.storage),
                           "indicator": host.Indicator(), "NAME": "host",
                           "watchdog": staticmethod(host.watchdog)})()
    return Counter(cfg, hal, engine=None)


def outbox_events(c: Counter) -> list[dict[str, Any]]:
    c.outbox.flush()  # telemetry waits in RAM for company; custody is already on flash
    c.outbox.poll()
    return [envelope.decode(r[3]) for r in c.outbox.pending(100) if r[2].endswith("/evt")]


def test_dedupe_windows_like_datawedge() -> None:
    d = Dedupe(same_ms=1000, different_ms=200)
    assert d.check("A", 0) is None
    assert d.check("A", 500) == "duplicate"
    assert d.check("A", 1400) == "duplicate"     # held under the scanner: the window restarted at 500
    assert d.check("B", 1500) == "suppressed"    # a second label right after
    assert d.check("B", 1700) is None
    assert d.check("A", 1750) == "suppressed"
    assert d.check("A", 2000) is None            # A's window belongs to the last read (B), so A counts


def test_verdicts_events_and_feedback(tmp_path: Path) -> None:
    c = make_counter(tmp_path)
    t = 10_000
    good = c.handle_scan({"text": "]C0" + S10_OK, "symbology": "code128", "family": "gm65"}, t)
    assert good["verdict"] == "good" and good["parcel"] == S10_OK and good["kind"] == "s10"
    assert c.handle_scan({"text": "]C0" + S10_OK}, t + 100)["verdict"] == "duplicate"
    assert c.handle_scan({"text": S10_BAD}, t + 5000)["verdict"] == "invalid"
    assert c.handle_scan({"text": "]E0" + EAN, "symbology": "ean_upc"}, t + 9000)["verdict"] == "invalid"
    # Long after the same-symbol window: still a duplicate, the parcel is registered here.
    again = c.handle_scan({"text": S10_OK}, t + 60_000)
    assert again == {"verdict": "duplicate", "parcel": S10_OK}
    assert c.handle_scan({"text": "\x00\x01garbage"}, t + 70_000)["verdict"] == "invalid"
    assert c.hal.indicator.history == ["good", "duplicate", "invalid", "invalid", "duplicate", "invalid"]
    evs = outbox_events(c)
    assert [e["type"] for e in evs] == ["scanner.intake", "scanner.invalid", "scanner.invalid",
                                        "scanner.invalid"]
    assert evs[0]["cls"] == "custody" and evs[0]["body"]["parcel"] == S10_OK
    assert evs[1]["body"]["reason"] == "s10_check_digit"
    assert evs[2]["body"]["reason"] == "not_a_parcel"
    assert c.counts["good"] == 1 and c.counts["duplicate"] == 2 and c.counts["invalid"] == 3
    # The registered list survives a restart: no second intake after a reboot.
    c2 = make_counter(tmp_path)
    assert c2.handle_scan({"text": S10_OK}, 0)["verdict"] == "duplicate"


def test_verdicts_use_the_aim_identifier_the_driver_split_off(tmp_path: Path) -> None:
    """The engine driver hands over {"text": data, "aim": "]C0", ...}: the rules see both:
    13 digits are a domestic waybill only from Code 128, GS1-128 data is GS1."""
    c = make_counter(tmp_path)
    t = 10_000
    scan = {"text": "9876543210128", "aim": "]C0", "symbology": "code128", "family": "gm65"}
    v = c.handle_scan(scan, t)
    assert v["verdict"] == "good" and v["parcel"] == "9876543210128" and v["kind"] == "cn_parcel"
    v = c.handle_scan({"text": "9780471117094", "aim": "]E0", "symbology": "ean13"}, t + 5000)
    assert v["verdict"] == "invalid" and v["reason"] == "not_a_parcel"
    v = c.handle_scan({"text": "9780471117094", "aim": "]C0", "symbology": "code128"}, t + 10_000)
    assert v["verdict"] == "invalid"  # an ISBN is no waybill, whatever it is printed in
    v = c.handle_scan({"text": "00106141412345678908" "3302001234\r", "aim": "]C1", "gs1": True,
                       "symbology": "code128"}, t + 15_000)
    assert v["verdict"] == "good" and v["parcel"] == "106141412345678908" and v["kind"] == "sscc"
    v = c.handle_scan({"text": "1012345678901", "aim": None}, t + 20_000)  # AIM identifiers off
    assert v["verdict"] == "invalid" and v["reason"] == "cn_symbology"


def test_manifest_command_and_wrong_outlet(tmp_path: Path) -> None:
    c = make_counter(tmp_path)
    now = int(time.time())
    cmd = signing.encode(signing.sign({"id": "m1", "dev": "sc01", "op": "manifest", "iat": now,
                                       "exp": now + 60, "args": {"parcels": [S10_OK2]}}, KEY, kv=1))
    import asyncio

    assert asyncio.run(c.handle_command(cmd)) == "ok"
    v = c.handle_scan({"text": S10_OK}, 0)
    assert v["verdict"] == "wrong_outlet"
    assert c.handle_scan({"text": S10_OK2}, 10_000)["verdict"] == "good"
    assert c.hal.indicator.history[-2:] == ["wrong_outlet", "good"]
    types = [e["type"] for e in outbox_events(c)]
    assert types.count("scanner.misrouted") == 1 and types.count("scanner.intake") == 1
    assert asyncio.run(c.handle_command(cmd)) == "replayed"  # at most once


@pytest.mark.parametrize("cfg, key", [
    ({"scanner": {"family": "zebra", "uart": "x"}}, "scanner.family"),
    ({"scanner": {"family": "gm65"}}, "uart"),
    ({"scanner": {"family": "gm65", "uart": "x", "suffix": "tab"}}, "scanner.suffix"),
    ({"same_symbol_ms": -1}, "config.same_symbol_ms"),
])
def test_config_errors_name_the_field(tmp_path: Path, cfg: dict[str, Any], key: str) -> None:
    base = counter_config("sc01", "o1", 1, "x", "loop://", tmp_path, KEY)
    for k, v in cfg.items():
        base[k] = v if k != "scanner" else v
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        counter_config_mod.validate(base)


class Lines:
    """The firmware's JSON log lines, read on a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.t.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.lines.append(d)
                self.cond.notify_all()

    def scans(self) -> list[dict[str, Any]]:
        with self.cond:
            return [x for x in self.lines if x.get("evt") == "scan"]

    def wait_scans(self, n: int, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len([x for x in self.lines if x.get("evt") == "scan"]) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{n} scans not seen; log tail {self.lines[-10:]}")
                self.cond.wait(left)
        return self.scans()


def wait_types(db: Path, want: list[str], timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # (and not the audit of its first time sync: docs/protocol.md, "Trusted time")
        evs = [e for e in stored_events(db)
               if e["type"].startswith("scanner.") and e["type"] != "scanner.boot"
               and not (e["type"] == "scanner.audit" and e["body"].get("what") == "time_synced")]
        if sorted(e["type"] for e in evs) == sorted(want):
            return evs
        time.sleep(0.2)
    raise TimeoutError(f"gateway holds {[e['type'] for e in stored_events(db)]}, want {want}")


@pytest.mark.e2e
@pytest.mark.mpy
def test_counter_firmware_on_the_unix_port_with_broker_outage(tmp_path: Path, broker: Mosquitto) -> None:
    gw = GatewayProcess(write_config(tmp_path / "gw.toml", "o1", broker.port, "gw-o1", "gw-secret"))
    db = tmp_path / "gateway.db"
    eng = SimScanEngine("gm65", suffix="cr", aim=True, continuous=True)
    cfg = counter_config("sc01", "o1", broker.port, "sc01-pw", f"socket://127.0.0.1:{eng.serve_tcp()}",
                         tmp_path / "flash", KEY, same_symbol_ms=800, different_symbol_ms=100)
    cfg["broker"]["backoff_cap"] = 0.5
    (tmp_path / "sc01.json").write_text(json.dumps(cfg))
    fw = unixport.popen(["-m", "firmware.counter.main", str(tmp_path / "sc01.json")], heap=unixport.APP_HEAP,
                        stdout=subprocess.PIPE)
    lines = Lines(fw)
    try:
        gw.wait_for("gateway_started", timeout=30)
        time.sleep(1.0)
        eng.present(S10_OK)
        lines.wait_scans(1)
        eng.present(S10_OK)                      # held under the scanner
        eng.faults.set(noise=40, scans=1)        # line noise before the next label
        time.sleep(0.3)
        eng.present(S10_BAD)
        lines.wait_scans(3)
        got = [(x["verdict"], x.get("parcel")) for x in lines.scans()]
        assert got == [("good", S10_OK), ("duplicate", None), ("invalid", None)]
        wait_types(db, ["scanner.intake", "scanner.invalid"])
        # The broker goes away; a parcel registered now is kept on flash and
        # reaches the gateway when the broker is back.
        broker.stop()
        time.sleep(0.5)
        eng.present(S10_OK2)
        assert lines.wait_scans(4)[-1]["verdict"] == "good"
        time.sleep(1.0)
        assert not any(e["body"].get("parcel") == S10_OK2 for e in stored_events(db))
        broker.start()
        evs = wait_types(db, ["scanner.intake", "scanner.invalid", "scanner.intake"], timeout=40)
        assert {e["body"]["parcel"] for e in evs if e["type"] == "scanner.intake"} == {S10_OK, S10_OK2}
        assert all(e["body"]["symbology"] == "code128" for e in evs if e["type"] == "scanner.intake")
    finally:
        fw.kill()
        fw.wait()
        gw.stop()
        eng.close()


def test_a_non_parcel_scan_leaves_no_content_behind(tmp_path: Path) -> None:
    """A customer's payment code, an ID card number or a
    health code scanned by mistake travelled upstream in scanner.invalid and
    sat in the device log. Only the reason, the symbology, the length and a
    short hash may leave the scanner."""
    c = make_counter(tmp_path)
    logged: list[dict[str, Any]] = []
    c.log = lambda evt, **kw: logged.append({"evt": evt, **kw})
    secrets_scanned = ["134567890123456789",          # a mobile payment code (18 digits)
                       "11010519491231002X",          # an ID card number
                       "https://hc.example.cn/q?t=AbCdEf0123456789"]  # a health-code link
    t = 10_000
    for i, text in enumerate(secrets_scanned):
        v = c.handle_scan({"text": text, "symbology": "qrcode"}, t + i * 5000)
        assert v["verdict"] == "invalid"
        assert v["length"] == len(text) and len(v["sha8"]) == 8
    # the same code again: a duplicate, and still no content
    again = c.handle_scan({"text": secrets_scanned[2], "symbology": "qrcode"}, t + 10_100)
    assert again["verdict"] == "duplicate"
    evs = outbox_events(c)
    assert [e["type"] for e in evs] == ["scanner.invalid"] * 3
    assert evs[0]["body"]["sha8"] != evs[1]["body"]["sha8"]
    everything = json.dumps(evs) + json.dumps(logged) + json.dumps(c.last)
    for text in secrets_scanned:
        for piece in (text, text[:8], text[-8:]):
            assert piece not in everything, piece
