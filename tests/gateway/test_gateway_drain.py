"""``postedge gateway drain``: the whole backlog upstream, then exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.store.events import EventStore, StoredEvent
from protocol import envelope
from simulator.central import make_certs
from simulator.uplink_double import UplinkDouble, UplinkDoubleHttps


def test_drain_syncs_the_backlog_and_reports_it(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    store = EventStore(db)
    evs = []
    for i in range(1, 301):
        eid = f"lk01:0badc0de:{i}"
        cls = "alarm" if i % 50 == 0 else "custody"
        p = envelope.encode(envelope.make(eid, 1795881163, "locker.x", cls, {"i": i}))
        evs.append(StoredEvent(eid, "o1", "locker", "lk01", "0badc0de", i, cls, "locker.x", 1795881163, p))
    store.commit_events(evs)
    store.close()
    certs = make_certs(tmp_path / "certs")
    central = UplinkDouble()
    https = UplinkDoubleHttps(central, certs.server_cert, certs.server_key).up()
    try:
        cfg = tmp_path / "gw.toml"
        cfg.write_text(f'outlet = "o1"\ndb = "{db}"\n[broker]\nusername = "gw-o1"\npassword = "x"\n'
                       f'[upstream]\ntransport = "https"\nurl = "https://127.0.0.1:{https.port}/v1/batches"\n'
                       f'ca_file = "{certs.ca}"\n')
        r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "zh", "gateway", "drain",
                            "--config", str(cfg), "--timeout", "60"], capture_output=True, text=True,
                           timeout=120)
    finally:
        https.down()
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "已上传 300 条，剩余 0 条"
    assert set(central.events) == {e.id for e in evs}
    store = EventStore(db)
    assert store.backlog()["count"] == 0
    store.close()


def test_drain_without_upstream_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'outlet = "o1"\ndb = "{tmp_path / "gw.db"}"\n')
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "en", "gateway", "drain",
                        "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().endswith("has no [upstream] table")
