"""``postedge central``: from an empty folder to a serving central service,
with the commands an operator types, and the gateway's own client talking
to it. A signed command it queues is one the device's own key verifies."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.ports import free_port
from common.uplink_codec import encode_batch
from gateway.uplink.transport import TransportError
from protocol import keys, signing
from tests.central.cli_rig import ROOT, add_outlet, gateway_client, pe, registered, upload
from tests.central.test_contract import events


@pytest.mark.slow
def test_init_register_sign_run_and_a_gateway_uploads(tmp_path: Path) -> None:
    d = tmp_path / "central"
    port = free_port()
    assert "is ready" in pe("init", str(d), "--host", "127.0.0.1", "--port", str(port)).stdout
    master = (d / "master.key").read_bytes()
    assert len(master) == 32 and (d / "master.key").stat().st_mode & 0o777 == 0o600
    assert "nothing changed" in pe("init", str(d)).stdout
    assert (d / "master.key").read_bytes() == master
    password = add_outlet(d)
    dev = pe("device", "add", str(d), "o1", "lk01", "--kind", "locker")
    ring = keys.from_config(json.loads(dev.stdout)["key"])
    assert "queued" in pe("sign", str(d), "o1", "lk01", "open", "--args", '{"compartment": 3}',
                          "--id", "cmd-7").stdout
    srv = subprocess.Popen([sys.executable, "-m", "postedge.cli", "--lang", "en", "central", "run", str(d)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert "running" in (srv.stdout.readline() if srv.stdout else "")
        t = gateway_client(d, port, password)
        ack = t.send(encode_batch("o1", "bulk", events("lk01", 10)))
        assert ack.all
        down = t.pull(0)
        [(kind, raw)] = down.commands
        cmd = signing.verify(raw, ring, "lk01", int(time.time()))
        assert (kind, cmd["op"], cmd["args"], cmd["id"]) == ("locker", "open", {"compartment": 3}, "cmd-7")
        t.close()
        listed = pe("outlet", "list", str(d)).stdout
        assert "o1" in listed and "10 events" in listed
        assert "retired" in pe("outlet", "retire", str(d), "o1").stdout
        t = gateway_client(d, port, password)
        with pytest.raises(TransportError) as e:
            t.send(encode_batch("o1", "bulk", events("lk01", 2, start=50)))
        assert e.value.reason == "http_401"
        t.close()
    finally:
        srv.send_signal(signal.SIGTERM)
        out, err = srv.communicate(timeout=20)
    assert srv.returncode == 0, err
    assert "stopped" in out


@pytest.mark.slow
def test_ordinary_mistakes_get_one_line_and_the_right_exit_code(tmp_path: Path) -> None:
    r = pe("run", str(tmp_path / "nothing"), check=False)
    assert r.returncode == 2 and "central init" in r.stderr and "Traceback" not in r.stderr
    d = tmp_path / "c"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        pe("init", str(d), "--host", "127.0.0.1", "--port", str(busy.getsockname()[1]))
        r = pe("run", str(d), check=False)
    assert r.returncode == 3 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
    r = pe("outlet", "add", str(d), "Bad Name!", check=False)
    assert r.returncode == 2 and "cannot be used" in r.stderr
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "en", "central", "dispatcher", "add",
                        str(d), "wang", "--password-stdin"], input="short\n", capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "password must be" in r.stderr
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "en", "central", "dispatcher", "add",
                        str(d), "wang", "--password-stdin"], input="long-enough-pw\n", capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and "wang" in r.stdout
    r = pe("sign", str(d), "o1", "lk01", "open", "--args", "[1]", check=False)
    assert r.returncode == 2 and "JSON object" in r.stderr
    (d / "central.toml").write_text((d / "central.toml").read_text() + "prot = 1\n")
    r = pe("outlet", "list", str(d), check=False)
    assert r.returncode == 2 and "central.toml" in r.stderr and "prot" in r.stderr
    zh = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "zh", "central", "run",
                         str(tmp_path / "nothing")], capture_output=True, text=True, timeout=60, cwd=ROOT,
                        env={**os.environ})
    assert zh.returncode == 2 and "不是中心服务目录" in zh.stderr


@pytest.mark.slow
def test_central_run_texts_villagers_from_imported_contacts(tmp_path: Path) -> None:
    from central.keys import KeyService
    from tests.central.test_notices import Provider, deposit

    sms = Provider()
    d = tmp_path / "central"
    port = free_port()
    try:
        pe("init", str(d), "--host", "127.0.0.1", "--port", str(port))
        (d / "sms.token").write_text("tok\n")
        with (d / "central.toml").open("a") as f:
            f.write(f'sms_url = "{sms.url}"\nsms_token_file = "sms.token"\nnotice_interval_s = 0.2\n')
        password = add_outlet(d)
        csv = tmp_path / "contacts.csv"
        csv.write_text("RB000000014CN,13800000001,zh\nnot a parcel,123\n")
        r = pe("contacts", "import", str(d), "o1", str(csv), check=False)
        assert r.returncode == 1 and "1 numbers imported, 1 lines skipped" in r.stdout
        assert "line 2" in r.stderr
        row = deposit(1, "RB000000014CN", "552014", master=(d / "master.key").read_bytes())
        assert KeyService("o1", (d / "master.key").read_bytes()).open_code(json.loads(row[1])) == "552014"
        srv = subprocess.Popen([sys.executable, "-m", "postedge.cli", "--lang", "en", "central", "run",
                                str(d)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert "running" in (srv.stdout.readline() if srv.stdout else "")
            upload(d, port, password, [row])
            deadline = time.monotonic() + 20
            while not sms.texts and time.monotonic() < deadline:
                time.sleep(0.1)
            [text] = sms.texts.values()
            assert text["to"] == "13800000001" and "552014" in text["text"]
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.communicate(timeout=20)
    finally:
        sms.srv.stop()


@pytest.mark.slow
def test_points_manifests_and_documents_from_the_command_line(tmp_path: Path) -> None:
    """The operator's side of what the platform issues: an agent's code and villagers'
    delivery codes printed once, a signed manifest queued for the handheld, the counters'
    documents signed and listed; a manifest it will not issue is one line and exit 2."""
    d = tmp_path / "central"
    registered(d, {"hh01": "handheld"})
    r = pe("point", str(d), "o1", "vp-xiakou", "--name", "下口小卖部", "--agent", "陈代办")
    assert re.fullmatch(r"PE-H:(\w{4}-){3}\w{4}", r.stdout.strip().splitlines()[-1]), r.stdout
    parcels = tmp_path / "round.json"
    parcels.write_text(json.dumps([{"parcel": "RB123456785GB", "to": "王芳"},
                                   {"parcel": "EA123456785CN", "to": "李伟", "point": "vp-xiakou"}]))
    r = pe("manifest", str(d), "o1", "hh01", "r-1204", str(parcels))
    assert "signed (2 parcels)" in r.stdout
    assert {line.split()[0] for line in r.stdout.splitlines() if " PE-H:" in line} == {
        "RB123456785GB", "EA123456785CN"}
    parcels.write_text(json.dumps([{"parcel": "9780471117094", "to": "王芳"}]))
    r = pe("manifest", str(d), "o1", "hh01", "r-1205", str(parcels), check=False)
    assert r.returncode == 2 and "not a parcel id" in r.stderr and "Traceback" not in r.stderr
    body = tmp_path / "tariff.json"
    from simulator.counter_sim import RATES, ZONES

    body.write_text(json.dumps({"zones": ZONES, "services": RATES}))
    assert "version 1" in pe("docs", "publish", str(d), "tariff", str(body)).stdout
    assert "platform_keys = { p1 = " in pe("docs", "key", str(d)).stdout
    assert "tariff version 1, for: *" in pe("docs", "list", str(d)).stdout
    # an outlet registered after the publish gets it queued; a new password for it does not again
    assert "Queued 1 counter documents for o5" in pe("outlet", "add", str(d), "o5").stdout
    assert "Queued" not in pe("outlet", "add", str(d), "o5").stdout
    body.write_text(json.dumps({"zones": ZONES, "services": {}}))
    r = pe("docs", "publish", str(d), "tariff", str(body), check=False)
    assert r.returncode == 2 and "Not signed" in r.stderr
