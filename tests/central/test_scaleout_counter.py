"""Outbound parcels (寄件) on a scale-out central, as an operator and a
gateway meet them: ``postedge central docs publish`` on a scale-out folder
signs the tariff and box catalogue into PostgreSQL (the key kept in the
folder, beside the master key); the gateway's own uplink client fetches
them from the front and its counter desk installs them; the acceptances it
prices from them go up through the real NATS cluster and a worker, and
``postedge central run`` re-prices each (``central/postage_audit.py``, in
the shared duties): the honest one is ``ok``, a tampered postage is named.
A courier's round (``point``, ``manifest``, ``tokens``) is issued from the
same folder and comes down to the gateway signed with the handheld's key."""

from __future__ import annotations

import json
import re
import ssl
import time
from pathlib import Path

import pytest

from central.config import load
from central.documents import KEY_FILE, Documents
from central.keys import KeyService
from central.postage_audit import PostageAudit
from central.scaleout import PgStore
from central.scaleout.folder import read_config
from central.scaleout.local import LocalCluster
from common.uplink_codec import DOWN_COUNTER_DOC, encode_batch, read_counter_doc
from gateway.counter.acceptance import CounterDesk
from gateway.uplink.https import HttpsTransport
from protocol import keys, signing
from simulator.counter_sim import BOXES, RATES, ZONES
from tests.central.test_central_cli import pe
from tests.central.test_postage_audit import accept, accepted
from tests.central.test_scaleout_duties import scaleout_central

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_a_scaleout_folder_serves_and_audits_the_counters_documents_and_issues_rounds(
        tmp_path: Path, scaleout_rig: LocalCluster) -> None:
    with scaleout_central(tmp_path, scaleout_rig) as central:
        d = central.folder
        (tmp_path / "tariff.json").write_text(json.dumps({"zones": ZONES, "services": RATES}))
        (tmp_path / "boxes.json").write_text(json.dumps({"boxes": BOXES}))
        assert "version 1" in pe("docs", "publish", str(d), "tariff", str(tmp_path / "tariff.json")).stdout
        assert "version 1" in pe("docs", "publish", str(d), "box_catalogue", str(tmp_path / "boxes.json"),
                                 "--outlet", "o1").stdout
        assert (d / KEY_FILE).stat().st_mode & 0o777 == 0o600  # beside the master key, not in the database
        key_line = pe("docs", "key", str(d)).stdout
        listed = pe("docs", "list", str(d)).stdout
        assert "tariff version 1, for: *" in listed and "box_catalogue version 1, for: o1" in listed

        store = PgStore(read_config(d, load(d)), pool_size=2)
        docs = Documents(store, key_dir=d)  # the folder's key: what the CLI printed
        assert f'p1 = "{docs.public_keys()["p1"]}"' in key_line
        (tmp_path / "gw").mkdir()
        desk = CounterDesk(tmp_path / "gw" / "events.db", "o1", tmp_path / "gw" / "counter",
                           docs.public_keys(), None, None)
        ctx = ssl.create_default_context(cafile=str(d / "pki" / "ca.pem"))
        t = HttpsTransport(central.url, "o1", ctx, 10.0, "o1", central.password)
        try:
            down = t.pull(0)
            cites = [desk.install(read_counter_doc(raw)) for kind, raw in down.commands
                     if kind == DOWN_COUNTER_DOC]
            assert sorted((c["kind"], c["version"]) for c in cites) == [("box_catalogue", 1), ("tariff", 1)]
            assert desk.tariff is not None and desk.catalogue is not None

            good = accept(docs)  # priced from the documents the desk installed
            assert good["tariff"] == next(c for c in cites if c["kind"] == "tariff")
            rows = accepted(good, {**good, "postage_fen": good["postage_fen"] - 300})
            assert t.send(encode_batch("o1", "bulk", rows)).all

            audit = PostageAudit(store)
            deadline = time.monotonic() + 60
            while len(audit.verdicts("o1")) < 2 and time.monotonic() < deadline:  # central run's passes
                time.sleep(0.2)
            got = {v["event"]: v["verdict"] for v in audit.verdicts("o1")}
            assert got == {rows[0][0]: "ok", rows[1][0]: "postage_mismatch"}
            assert [v["event"] for v in audit.verdicts(failed_only=True, newest=5)] == [rows[1][0]]

            assert "PE-H:" in pe("point", str(d), "o1", "vp-xiakou", "--name", "下口小卖部",
                                 "--agent", "陈代办").stdout
            parcels = tmp_path / "round.json"
            parcels.write_text(json.dumps([{"parcel": "RB123456785GB", "to": "王芳"},
                                           {"parcel": "EA123456785CN", "to": "李伟", "point": "vp-xiakou"}]))
            issued = pe("manifest", str(d), "o1", "hh01", "r-1204", str(parcels))
            token = re.search(r"RB123456785GB (PE-H:\S+)", issued.stdout)  # no SMS provider: printed
            assert token is not None, issued
            assert "RB123456785GB  waiting to be texted" in pe("tokens", str(d), "o1").stdout
            [(kind, raw)] = t.pull(down.cursor).commands
            hh01 = keys.from_config(KeyService("o1", central.master).device_config("hh01"))
            manifest = signing.verify(raw, hh01, "hh01", int(time.time()))
            assert kind == "handheld" and manifest["op"] == "manifest"
            assert [p["point"] for p in manifest["args"]["points"]] == ["vp-xiakou"]
            assert token.group(1) not in raw.decode()  # only its salted hash goes down
        finally:
            t.close()
            desk.close()
            store.close()
