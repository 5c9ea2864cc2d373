"""A scale-out central from its folder, with the commands an operator types:
``central init --scaleout`` (the cluster and database beside the master key),
the outlet and device registry in PostgreSQL, ``central run`` and a second
front process (``python -m central.scaleout.serve --central``) each issuing
device keys from the folder's master key, to the very client ``outlet init``
uses; a retired device gets none. The master key file must stay its owner's."""

from __future__ import annotations

import json
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from central.keys import KeyService
from central.scaleout import PgStore, ScaleOutConfig
from central.scaleout.local import LocalCluster
from central.scaleout.worker import WorkerThread
from common.ports import free_port
from common.uplink_codec import encode_batch
from gateway.outlet.central_keys import CentralKeysError, fetch
from gateway.uplink.https import HttpsTransport
from protocol import keys, signing
from tests.central.cli_rig import ROOT, add_outlet, pe
from tests.central.test_contract import events


def _stop(p: subprocess.Popen[str]) -> tuple[str, str]:
    p.send_signal(signal.SIGTERM)
    return p.communicate(timeout=30)


@pytest.mark.slow
def test_a_scaleout_folder_registers_serves_and_issues_keys_from_two_fronts(
        tmp_path: Path, scaleout_rig: LocalCluster) -> None:
    ns, dsn = scaleout_rig.namespace()
    cfg = ScaleOutConfig(scaleout_rig.nats.urls, dsn, ns, ack_wait_s=5.0)
    given = tmp_path / "cluster.json"
    given.write_text(cfg.to_json())
    d = tmp_path / "central"
    port = free_port()
    assert "is ready" in pe("init", str(d), "--host", "127.0.0.1", "--port", str(port),
                            "--scaleout", str(given)).stdout
    assert 'backend = "scaleout"' in (d / "central.toml").read_text()
    assert ScaleOutConfig.from_json((d / "scaleout.json").read_text()) == cfg
    for f in ("master.key", "scaleout.json"):  # the key, and the database's login
        assert (d / f).stat().st_mode & 0o777 == 0o600, f
    assert not (d / "data").exists()  # no embedded database beside it
    master = (d / "master.key").read_bytes()

    password = add_outlet(d)
    dev = pe("device", "add", str(d), "o1", "lk01", "--kind", "locker")
    assert json.loads(dev.stdout)["key"] == KeyService("o1", master).device_config("lk01")
    pe("device", "add", str(d), "o1", "hh01", "--kind", "handheld")
    assert "retired" in pe("device", "retire", str(d), "o1", "hh01").stdout
    again = pe("device", "retire", str(d), "o1", "hh01", check=False)
    assert again.returncode == 2 and "no active device hh01" in again.stderr
    assert "queued" in pe("sign", str(d), "o1", "lk01", "open", "--args", '{"compartment": 3}',
                          "--id", "cmd-7").stdout
    assert "PE-C:zhang:" in pe("courier", "add", str(d), "o1", "zhang").stdout  # for lk01 only
    pe("device", "add", str(d), "o2", "lk09", "--kind", "locker")
    pe("device", "rotate", str(d), "o2", "lk09", "--grace-days", "0")
    assert "lk09  locker  key version 2" in pe("device", "list", str(d), "o2").stdout
    # the 政讯通 registry is in PostgreSQL too
    pe("campaign", "add", str(d), "health-2026", "--poster", "健康海报", "--qr", "PE-CAMP:health-2026")
    assert "health-2026" in pe("campaign", "list", str(d)).stdout

    store = PgStore(cfg, pool_size=1)
    worker = WorkerThread(cfg)
    run = subprocess.Popen([sys.executable, "-m", "postedge.cli", "--lang", "en", "central", "run", str(d)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    second = subprocess.Popen([sys.executable, "-m", "central.scaleout.serve", "--central", str(d),
                               "127.0.0.1", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert "running" in (run.stdout.readline() if run.stdout else "")
        port2 = json.loads(second.stdout.readline() if second.stdout else "{}")["port"]
        ca = d / "pki" / "ca.pem"
        derived = KeyService("o1", master)
        for p in (port, port2):
            url = f"https://127.0.0.1:{p}/v1/batches"
            doc = fetch(url, "o1", "o1", password, ca, [("lk01", "locker"), (f"sc{p % 100:02d}", "scanner")])
            assert doc["keys"] == {"lk01": derived.device_config("lk01"),
                                   f"sc{p % 100:02d}": derived.device_config(f"sc{p % 100:02d}")}
            with pytest.raises(CentralKeysError, match="retired hh01"):
                fetch(url, "o1", "o1", password, ca, [("lk01", "locker"), ("hh01", "handheld")])
        # a device registered through one front is in the one registry every front reads
        listed = pe("device", "list", str(d), "o1").stdout
        assert f"sc{port % 100:02d}" in listed and f"sc{port2 % 100:02d}" in listed
        assert re.search(r"hh01\s+handheld\s+key version 1\s+retired", listed), listed
        ctx = ssl.create_default_context(cafile=str(ca))
        t = HttpsTransport(f"https://127.0.0.1:{port2}/v1/batches", "o1", ctx, 10.0, "o1", password)
        assert t.send(encode_batch("o1", "bulk", events("lk01", 10))).all
        down = t.pull(0)
        cmds = [signing.verify(raw, keys.from_config(derived.device_config("lk01")), "lk01", int(time.time()))
                for _, raw in down.commands]
        assert [(c["op"], c["id"]) for c in cmds][0] == ("open", "cmd-7")
        assert [c["op"] for c in cmds] == ["open", "credential"]
        assert "lk01" in pe("courier", "list", str(d), "o1").stdout  # the badge book is in PostgreSQL too
        assert "lk01" in pe("courier", "revoke", str(d), "o1", "zhang").stdout
        listed = pe("courier", "list", str(d), "o1").stdout
        assert "zhang" in listed and "revoked" in listed
        lk01 = keys.from_config(derived.device_config("lk01"))
        later = [signing.verify(raw, lk01, "lk01", int(time.time()))["op"]
                 for _, raw in t.pull(down.cursor).commands]
        assert later == ["credential", "revoke"]  # the badge taken back, then the courier's permits
        t.close()
        t.close()
        deadline = time.monotonic() + 30
        while store.count("o1") < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "10 events" in pe("outlet", "list", str(d)).stdout
        assert "retired" in pe("outlet", "retire", str(d), "o1").stdout
        with pytest.raises(CentralKeysError, match="401"):
            fetch(f"https://127.0.0.1:{port}/v1/keys", "o1", "o1", password, ca, [("lk01", "locker")])
    finally:
        outs = [_stop(run), _stop(second)]
        worker.stop()
        store.close()
    assert run.returncode == 0 and second.returncode == 0, outs
    assert "stopped" in outs[0][0]


def test_a_master_key_others_can_read_is_refused_and_named(tmp_path: Path) -> None:
    d = tmp_path / "central"
    pe("init", str(d), "--host", "127.0.0.1", "--port", str(free_port()))
    (d / "master.key").chmod(0o644)
    r = pe("run", str(d), check=False)
    assert r.returncode == 2 and "master key" in r.stderr and "0644" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "central.scaleout.serve", "--central", str(d)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "0644" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_database_from_before_the_registry_held_devices_keeps_its_outlets(
        scaleout_rig: LocalCluster) -> None:
    """An outlets table without ``notifier`` and no devices table (what a
    scale-out store was before): the column and the table are added on open,
    the outlet's login still works, and a second open changes nothing."""
    import psycopg

    from common.session import hash_password

    ns, dsn = scaleout_rig.namespace("r")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE outlets (id text PRIMARY KEY, pw_hash text NOT NULL, "
                  "created_at double precision NOT NULL, retired_at double precision)")
        c.execute("INSERT INTO outlets VALUES ('o1', %s, 1, NULL)", (hash_password("o1-secret-pw"),))
    cfg = ScaleOutConfig(scaleout_rig.nats.urls, dsn, ns)
    PgStore(cfg, pool_size=1).close()
    store = PgStore(cfg, pool_size=1)
    try:
        assert store.outlet_login("o1", "o1-secret-pw") and not store.outlet_login("o1", "guess")
        assert store.outlets() == [{"outlet": "o1", "created_at": 1.0, "retired": False}]
        assert store.notifier_outlets() == set() and store.devices("o1") == []
        store.add_outlet("o1", "o1-secret-pw", notifier=True)
        store.add_device("o1", "lk01", "locker")
        assert store.notifier_outlets() == {"o1"}
        assert store.devices("o1") == [{"device": "lk01", "kind": "locker", "kv": 1, "retired": False,
                                       "prev_until": 0}]
    finally:
        store.close()
