"""The security duties on a scale-out central (``central/duties.py``
``SecurityDuties`` over PostgreSQL, ``central/duty_store.py``): started by
``postedge central run`` on a scale-out folder, a clerk's request and a
revoked-device report uploaded by the gateway's own HTTPS client reach
PostgreSQL through the real 3-node NATS cluster and a worker, and their
signed answers come down on the gateway's next pull, which the real locker
application runs. Several front processes may run the duties: one pass at a
time across all of them."""

from __future__ import annotations

import json
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from central.duties import SecurityDuties
from central.keys import KeyService
from central.scaleout import PgStore, ScaleOut, ScaleOutConfig
from central.scaleout.worker import WorkerThread
from common.uplink_codec import DOWN_CLERK_DECISION, encode_batch, read_clerk_refusal
from firmware.locker import compartments as K
from gateway.broker import free_port
from gateway.uplink.https import HttpsTransport
from protocol import keys, revocation, signing
from tests.central.conftest import StoreUnderTest
from tests.central.rig import ScaleOutRig
from tests.central.test_central_cli import ROOT, pe
from tests.central.test_clerk_requests import request
from tests.central.test_revocations import revoked_event
from tests.locker_rig import Rig

pytestmark = pytest.mark.slow


@pytest.mark.e2e
def test_a_gateways_request_and_revocation_are_answered_by_a_scaleout_central_run(
        tmp_path: Path, scaleout_rig: ScaleOutRig) -> None:
    ns, dsn = scaleout_rig.namespace("e")
    cfg = ScaleOutConfig(scaleout_rig.nats.urls, dsn, ns, ack_wait_s=5.0)
    given = tmp_path / "cluster.json"
    given.write_text(cfg.to_json())
    d = tmp_path / "central"
    port = free_port()
    pe("init", str(d), "--host", "127.0.0.1", "--port", str(port), "--scaleout", str(given))
    with (d / "central.toml").open("a", encoding="utf-8") as f:
        f.write("notice_interval_s = 0.3\n")
    master = (d / "master.key").read_bytes()
    password = re.search(r"shown only now\): (\S+)",  # type: ignore[union-attr]
                         pe("outlet", "add", str(d), "o1").stdout).group(1)
    for dev, kind in (("lk01", "locker"), ("lk02", "locker"), ("hh01", "handheld")):
        pe("device", "add", str(d), "o1", dev, "--kind", kind)

    worker = WorkerThread(cfg)
    run = subprocess.Popen([sys.executable, "-m", "postedge.cli", "--lang", "en", "central", "run", str(d)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    t = None
    try:
        assert "running" in (run.stdout.readline() if run.stdout else "")
        ctx = ssl.create_default_context(cafile=str(d / "pki" / "ca.pem"))
        t = HttpsTransport(f"https://127.0.0.1:{port}/v1/batches", "o1", ctx, 10.0, "o1", password)
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
        run.send_signal(signal.SIGTERM)
        out = run.communicate(timeout=30)
        worker.stop()
    assert run.returncode == 0, out
    assert "Traceback" not in out[1], out[1]


def test_one_duty_pass_at_a_time_across_front_processes(scaleout_rig: ScaleOutRig) -> None:
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
