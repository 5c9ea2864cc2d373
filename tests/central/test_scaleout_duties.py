"""The security duties on a scale-out central (``central/duties.py``
``SecurityDuties`` over PostgreSQL, ``central/duty_store.py``): started by
``postedge central run`` on a scale-out folder, a clerk's request and a
revoked-device report uploaded by the gateway's own HTTPS client reach
PostgreSQL through the real 3-node NATS cluster and a worker, and their
signed answers come down on the gateway's next pull, which the real locker
application runs; a supervisor's request in a real gateway process's console
comes back as a command relayed to the locker's topic. Several front
processes may run the duties: one pass at a time across all of them."""

from __future__ import annotations

import json
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from central.duties import SecurityDuties
from central.keys import KeyService
from central.scaleout import PgStore, ScaleOut, ScaleOutConfig
from central.scaleout.local import LocalCluster
from central.scaleout.worker import WorkerThread
from common.ports import free_port
from common.uplink_codec import DOWN_CLERK_DECISION, encode_batch, read_clerk_refusal
from firmware.locker import compartments as K
from gateway.broker import Mosquitto
from gateway.uplink.https import HttpsTransport
from protocol import keys, revocation, signing, topics
from simulator.gateway_process import GatewayProcess
from tests.central.cli_rig import ROOT, add_outlet, pe
from tests.central.conftest import StoreUnderTest
from tests.central.test_clerk_requests import request
from tests.central.test_revocations import revoked_event
from tests.gateway.clerk_rig import Client, locker_state
from tests.gateway.test_status_page import device_client
from tests.locker_rig import Rig
from tests.uplink_rig import FAST, gateway_toml
from tests.waiting import until

pytestmark = pytest.mark.slow


@dataclass
class Central:
    folder: Path
    port: int
    password: str  # o1's
    master: bytes

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1/batches"


@contextmanager
def scaleout_central(tmp_path: Path, rig: LocalCluster, front: str = "run") -> Iterator[Central]:
    """A scale-out folder made and served as an operator does (``central
    init --scaleout``, ``outlet add``, ``device add``, ``central run``, or
    with ``front="serve"`` an added front process, ``python -m
    central.scaleout.serve --central DIR``), the duties every 0.3 s, with one
    ingest worker; o1 has lockers lk01 and lk02 and the handheld hh01.
    Stopped cleanly on the way out."""
    ns, dsn = rig.namespace("e")
    cfg = ScaleOutConfig(rig.nats.urls, dsn, ns, ack_wait_s=5.0)
    given = tmp_path / "cluster.json"
    given.write_text(cfg.to_json())
    d = tmp_path / "central"
    port = free_port()
    pe("init", str(d), "--host", "127.0.0.1", "--port", str(port), "--scaleout", str(given))
    with (d / "central.toml").open("a", encoding="utf-8") as f:
        f.write("notice_interval_s = 0.3\n")
    password = add_outlet(d)
    for dev, kind in (("lk01", "locker"), ("lk02", "locker"), ("hh01", "handheld")):
        pe("device", "add", str(d), "o1", dev, "--kind", kind)
    worker = WorkerThread(cfg)
    cmd = ([sys.executable, "-m", "postedge.cli", "--lang", "en", "central", "run", str(d)] if front == "run"
           else [sys.executable, "-m", "central.scaleout.serve", "--central", str(d)])
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        first = run.stdout.readline() if run.stdout else ""
        assert ("running" in first) if front == "run" else (json.loads(first)["port"] == port), first
        yield Central(d, port, password, (d / "master.key").read_bytes())
    finally:
        run.send_signal(signal.SIGTERM)
        out = run.communicate(timeout=30)
        worker.stop()
    assert run.returncode == 0, out
    assert "Traceback" not in out[1], out[1]


@pytest.mark.e2e
@pytest.mark.parametrize("front", ["run", "serve"])
def test_a_gateways_request_and_revocation_are_answered_by_a_scaleout_central_run(
        tmp_path: Path, scaleout_rig: LocalCluster, front: str) -> None:
    """By ``postedge central run`` and by an added front process alike."""
    t = None
    with scaleout_central(tmp_path, scaleout_rig, front) as central:
        d, master = central.folder, central.master
        try:
            ctx = ssl.create_default_context(cafile=str(d / "pki" / "ca.pem"))
            t = HttpsTransport(central.url, "o1", ctx, 10.0, "o1", central.password)
            oos, by_clerk, stolen = request("out_of_service", compartment=3), request("open", role="clerk"), \
                revoked_event(1, "hh01")
            assert t.send(encode_batch("o1", "bulk", [oos, by_clerk, stolen])).all

            got: list[tuple[str, bytes]] = []
            cursor, deadline = 0, time.monotonic() + 60
            while len(got) < 4 and time.monotonic() < deadline:  # the gateway's next pulls
                down = t.pull(cursor)
                got += down.commands
                cursor = down.cursor
                time.sleep(0.2)
            now = int(time.time())
            derived = KeyService("o1", master)
            signed: dict[str, list[dict[str, Any]]] = {}
            refused = {}
            for kind, raw in got:
                if kind == DOWN_CLERK_DECISION:
                    req, reason = read_clerk_refusal(raw)
                    refused[req] = reason
                    continue
                assert kind == "locker"
                dev = json.loads(raw)["dev"]
                signed.setdefault(dev, []).append(
                    signing.verify(raw, keys.from_config(derived.device_config(dev)), dev, now))
            assert refused == {by_clerk[0]: "not_supervisor"}
            assert [(c["op"], c["args"]["request"]) for c in signed["lk01"] if c["op"] == "service"] == [
                ("service", oos[0])]
            for dev in ("lk01", "lk02"):
                revokes = [c for c in signed[dev] if c["op"] == "revoke"]
                assert [revocation.parse_args(c["args"]) for c in revokes] == [[("handheld", "hh01")]], dev
            listed = pe("device", "list", str(d), "o1").stdout
            assert re.search(r"hh01\s+handheld\s+key version 1\s+retired", listed), listed

            (tmp_path / "locker").mkdir()
            rig = Rig(tmp_path / "locker", key=derived.device_config("lk01"))  # the folder's key for lk01
            try:
                service = next(raw for kind, raw in got if kind == "locker" and b'"service"' in raw)
                assert rig.run(rig.locker.handle_command(service)) == "ok"
                assert rig.locker.comps.get(3)["state"] == K.OUT_OF_SERVICE
            finally:
                rig.close()

            time.sleep(1.0)  # several more passes: nothing is answered twice
            assert t.pull(cursor).commands == []
        finally:
            if t is not None:
                t.close()


@pytest.mark.e2e
def test_a_clerks_request_in_a_gateway_process_is_signed_by_a_scaleout_central_and_relayed(
        tmp_path: Path, scaleout_rig: LocalCluster, broker: Mosquitto) -> None:
    """The whole way: a supervisor's request in a real gateway's clerk
    console (``postedge gateway run``, its own uplink and downlink over
    HTTPS), decided on a scale-out ``central run``, the signed command pulled
    by the gateway, shown on the console and relayed to the locker's topic."""
    with scaleout_central(tmp_path, scaleout_rig) as central:
        cfg = gateway_toml(tmp_path / "gateway.toml", broker, {
            "url": central.url, "ca_file": str(central.folder / "pki" / "ca.pem"), "username": "o1",
            "password": central.password, **FAST})
        with cfg.open("a", encoding="utf-8") as f:
            f.write('\n[web]\nhost = "127.0.0.1"\nport = 0\nlang = "en"\n')
        r = subprocess.run([sys.executable, "-m", "postedge.cli", "gateway", "clerk", "add", "mei", "--role",
                            "supervisor", "--config", str(cfg)], input="mei-password-1\n",
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr
        gw = GatewayProcess(cfg)
        lk = None
        try:
            gw.wait_for("gateway_started")
            port = next(d for d in gw.lines if d.get("evt") == "web_started")["port"]
            relayed: list[bytes] = []
            lk = device_client("lk01", broker.port)
            lk.on_message = lambda _c, _u, m: relayed.append(m.payload)
            lk.subscribe(topics.build("o1", "locker", "lk01", "cmd"), qos=1)
            lk.publish(topics.build("o1", "locker", "lk01", "presence"), b"online", qos=1, retain=True)
            lk.publish(topics.build("o1", "locker", "lk01", "state"), json.dumps(locker_state()).encode(),
                       qos=1, retain=True).wait_for_publish(5)
            c = Client(port)
            until(lambda: c.login("mei", "mei-password-1") == 303, 20, "the console")
            _, _, html = c.get("/clerk?lang=en")
            csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
            assert c.post("/clerk/compartment", {"csrf": csrf, "device": "lk01", "compartment": "2",
                                                 "action": "out_of_service", "note": "door will not latch"}
                          )[0] == 303
            until(lambda: re.search(r'data-stage="cmd_\w+"', c.get("/clerk?lang=en")[2]) is not None, 60,
                  "the platform's signed command on the console")
            until(lambda: bool(relayed), 30, "the command relayed to lk01")
            ring = keys.from_config(KeyService("o1", central.master).device_config("lk01"))
            cmd = signing.verify(relayed[0], ring, "lk01", int(time.time()))
            assert cmd["op"] == "service" and cmd["args"]["state"] == "out_of_service"
            assert cmd["args"]["compartment"] == 2 and cmd["args"]["request"].startswith("gw-o1-clerk:")
            assert gw.proc.poll() is None
        finally:
            if lk is not None:
                lk.disconnect()
                lk.loop_stop()
            if gw.proc.poll() is None:
                gw.stop()


def test_one_duty_pass_at_a_time_across_front_processes(scaleout_rig: LocalCluster) -> None:
    """Another process's pass holds the turn: this one skips its tick and
    decides nothing (two passes at once would both sign, and count the
    remote-open budget twice); once it is over, the next tick does the work."""
    ns, dsn = scaleout_rig.namespace("l")
    cfg = ScaleOutConfig(scaleout_rig.nats.urls, dsn, ns, ack_wait_s=5.0)
    scale = ScaleOut(cfg)
    other = PgStore(cfg, pool_size=2)  # a second front process's store
    worker = WorkerThread(cfg)
    try:
        here = StoreUnderTest("scaleout", scale, scale.wait_written)
        scale.add_device("o1", "lk01", "locker")
        here.store("o1", request("out_of_service"))
        duties = SecurityDuties(scale, bytes(32))
        with other.duties_turn() as theirs:
            assert theirs
            assert duties.run_once() is False and duties.passes == 0
            assert scale.pull("o1", 0, 10)[1] == []
        assert duties.run_once() is True
        assert [c["op"] for _, c in scale.pull("o1", 0, 10)[1]] == ["service"]
        assert duties.run_once() is True and len(scale.pull("o1", 0, 10)[1]) == 1
    finally:
        worker.stop()
        scale.bridge.run(scale.js.delete_stream(cfg.stream), 10)
        scale.close()
        other.close()


def test_the_duty_loop_outlives_a_database_restart(scaleout_rig: LocalCluster) -> None:
    """PostgreSQL killed under a running duty loop (``run_until``, what
    ``central run`` starts): the ticks fail meanwhile and the loop keeps
    going, so a request stored after the restart is still decided. Were the
    loop to end at the first failure, a front would run for months answering
    no revocation again, and say nothing."""
    ns, dsn = scaleout_rig.namespace("k")
    cfg = ScaleOutConfig(scaleout_rig.nats.urls, dsn, ns, ack_wait_s=5.0)
    scale = ScaleOut(cfg)
    worker: WorkerThread | None = None
    stop = threading.Event()
    pg = scaleout_rig.pg
    try:
        scale.add_device("o1", "lk01", "locker")
        duties = SecurityDuties(scale, bytes(32))
        loop = threading.Thread(target=duties.run_until, args=(stop, 0.1), daemon=True)
        loop.start()
        pg.kill()
        time.sleep(1.0)  # ten ticks into a dead database
        pg.start_server()
        # the ingest worker only now: this test is the duty loop's, and a
        # worker whose start met the kill gives up (the faults suite covers it)
        worker = WorkerThread(cfg)
        StoreUnderTest("scaleout", scale, lambda: scale.wait_written(60)).store("o1", request("in_service"))
        until(lambda: bool(scale.pull("o1", 0, 10)[1]), 30, "the request decided after the restart")
        assert duties.failures > 0 and loop.is_alive()
    finally:
        stop.set()
        if pg.proc is not None and pg.proc.poll() is not None:
            pg.start_server()  # the session's database stays up for the next test
        if worker is not None:
            worker.stop()
        scale.bridge.run(scale.js.delete_stream(cfg.stream), 10)
        scale.close()
