"""Pickup notices on a scale-out central (``central/notices.py`` over
PostgreSQL through ``central/duty_store.py``, run by ``Duties``): a
folder made and served as an operator does (``central init --scaleout``,
``contacts import``, ``central run`` with an SMS provider in
``central.toml``), a deposit uploaded by the gateway's own HTTPS client
through the real 3-node NATS cluster and a worker, and its pickup code
texted through the provider double exactly once, while two front
processes run the duty at the same time against a slow provider (a pass
holds the turn for a second; without one pass at a time the other front
would find the notice claimed but not sent, and send it again)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from central.scaleout import PgStore, ScaleOutConfig
from central.scaleout.local import LocalCluster
from central.scaleout.worker import WorkerThread
from common.ports import free_port
from tests.central.cli_rig import ROOT, add_outlet, pe, upload
from tests.central.test_notices import Provider, deposit

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _run(folder: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "postedge.cli", "--lang", "en", "central", "run",
                          str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert "running" in (p.stdout.readline() if p.stdout else "")
    return p


def test_a_deposit_on_a_scaleout_central_is_texted_once_by_two_fronts_running_the_duty(
        tmp_path: Path, scaleout_rig: LocalCluster) -> None:
    sms = Provider(delay_s=1.0)
    ns, dsn = scaleout_rig.namespace("n")
    cfg = ScaleOutConfig(scaleout_rig.nats.urls, dsn, ns, ack_wait_s=5.0)
    given = tmp_path / "cluster.json"
    given.write_text(cfg.to_json())
    d, d2 = tmp_path / "central", tmp_path / "central-2"
    port, port2 = free_port(), free_port()
    worker = WorkerThread(cfg)
    store = PgStore(cfg, pool_size=1)
    fronts: list[subprocess.Popen[str]] = []
    try:
        pe("init", str(d), "--host", "127.0.0.1", "--port", str(port), "--scaleout", str(given))
        (d / "sms.token").write_text("tok\n")
        with (d / "central.toml").open("a", encoding="utf-8") as f:
            f.write(f'sms_url = "{sms.url}"\nsms_token_file = "sms.token"\nnotice_interval_s = 0.2\n')
        password = add_outlet(d)
        pe("device", "add", str(d), "o1", "lk01", "--kind", "locker")
        csv = tmp_path / "contacts.csv"
        csv.write_text("RB000000014CN,13800000001,en\nnot a parcel,123\n")
        r = pe("contacts", "import", str(d), "o1", str(csv), check=False)
        assert r.returncode == 1 and "1 numbers imported, 1 lines skipped" in r.stdout, r.stdout + r.stderr
        # a second front: the same cluster, database and master key, on its own port
        shutil.copytree(d, d2)
        toml = (d2 / "central.toml").read_text(encoding="utf-8")
        (d2 / "central.toml").write_text(toml.replace(f"port = {port}\n", f"port = {port2}\n"),
                                         encoding="utf-8")
        fronts = [_run(d), _run(d2)]

        master = (d / "master.key").read_bytes()
        row = deposit(1, "RB000000014CN", "552014", master=master)
        upload(d, port2, password, [row])
        deadline = time.monotonic() + 30
        while not sms.texts and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.0)  # fifteen more ticks on each front, some while the provider is answering
        [text] = sms.texts.values()
        assert text["to"] == "13800000001" and "552014" in text["text"] and "Pickup code" in text["text"]
        assert text["ref"] == f"o1/{row[0]}/notice"
        assert sms.calls == 1
        [notice] = store.rows("notices", {"outlet": "o1"})
        assert (notice["deposit"], notice["state"], notice["attempts"]) == (row[0], "sent", 1)
        assert "552014" not in str(notice)
    finally:
        outs = []
        for p in fronts:
            p.send_signal(signal.SIGTERM)
            outs.append(p.communicate(timeout=30))
        worker.stop()
        store.close()
        sms.srv.stop()
    for p, out in zip(fronts, outs, strict=True):
        assert p.returncode == 0, out
        assert "Traceback" not in out[1], out[1]
