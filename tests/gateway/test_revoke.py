"""``postedge gateway revoke``: a stolen handheld loses its broker
login at once, on a provisioned outlet's real Mosquitto over TLS, while
every other device keeps working; the revocation survives a broker restart
and a re-run of ``provision``; the permits it forwarded that still wait are
never delivered."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.ingest.relay import store_command
from gateway.provision import ProvisionError
from gateway.revoke import RevokeError, revoke
from gateway.store.events import EventStore
from protocol import signing, topics
from simulator.outlet import stored_events
from tests.locker_rig import PLATFORM
from tests.provisioned_rig import Outlet


class Session:
    """A device's live TLS session; ``dropped`` is set when the broker closes it."""

    def __init__(self, outlet: Outlet, dev: str, password: str | None = None) -> None:
        self.dev = dev
        self.ok = threading.Event()
        self.refused = threading.Event()
        self.dropped = threading.Event()
        self.answered = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=dev, protocol=mqtt.MQTTv311)
        c.username_pw_set(dev, password or outlet.creds(dev)["broker"]["password"])
        c.tls_set(ca_certs=str(outlet.ca))
        c.reconnect_delay_set(30, 30)

        def on_connect(cl: mqtt.Client, ud: object, fl: object, rc: mqtt.ReasonCode,
                       pr: object = None) -> None:
            (self.refused if rc.is_failure else self.ok).set()
            self.answered.set()

        c.on_connect = on_connect
        c.on_disconnect = lambda *a: self.dropped.set() if self.ok.is_set() else None
        c.connect("127.0.0.1", outlet.tls, keepalive=30)
        c.loop_start()
        self.client = c
        assert self.answered.wait(5), f"{dev}: no CONNACK"

    def publish(self, kind: str = "handheld") -> bool:
        info = self.client.publish(topics.build("o1", kind, self.dev, "state"), b"{}", qos=1)
        try:
            info.wait_for_publish(3)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def logs_in(outlet: Outlet, dev: str, password: str) -> bool:
    s = Session(outlet, dev, password)
    try:
        return s.ok.is_set()
    finally:
        s.close()


@pytest.fixture
def outlet(tmp_path: Path) -> Iterator[Outlet]:
    o = Outlet(tmp_path)
    o.start()
    try:
        yield o
    finally:
        o.stop()


@pytest.mark.slow
def test_a_revoked_handheld_loses_its_login_and_others_keep_theirs(outlet: Outlet) -> None:
    pw = {d: outlet.creds(d)["broker"]["password"] for d in ("lk01", "hh01", "hh02")}
    stolen, other, locker = Session(outlet, "hh01"), Session(outlet, "hh02"), Session(outlet, "lk01")
    try:
        assert stolen.ok.is_set() and other.ok.is_set() and locker.ok.is_set()
        assert outlet.proc is not None
        r = outlet.cli("revoke", "hh01", "--config", str(outlet.out / "gateway.toml"),
                       "--broker-pid", str(outlet.proc.pid))
        assert r.returncode == 0, r.stderr
        assert "revoked hh01" in r.stdout
        assert "will not hear" in r.stderr  # this outlet's gateway never ran: no database
        # The live session is dropped by the reload; the others stay up and publish.
        assert stolen.dropped.wait(5)
        time.sleep(0.5)
        assert not other.dropped.is_set() and not locker.dropped.is_set()
        assert other.publish() and locker.publish("locker")
    finally:
        for s in (stolen, other, locker):
            s.close()
    assert not logs_in(outlet, "hh01", pw["hh01"])
    assert logs_in(outlet, "hh02", pw["hh02"])
    passwd = (outlet.out / "mosquitto" / "passwd").read_text()
    acl = (outlet.out / "mosquitto" / "acl").read_text()
    assert "hh01" not in passwd and "hh01" not in acl
    assert "user hh02" in acl and "user lk01" in acl and "user gw-o1" in acl
    assert not (outlet.out / "devices" / "hh01.json").exists()
    # Survives a broker restart...
    outlet.stop()
    outlet.start()
    assert not logs_in(outlet, "hh01", pw["hh01"])
    assert logs_in(outlet, "lk01", pw["lk01"])
    # ... and a re-run of provision, which keeps everyone else's password.
    outlet.stop()
    r2 = outlet.provision()
    assert r2["revoked"] == ["hh01"] and r2["devices"] == 2
    assert not (outlet.out / "devices" / "hh01.json").exists()
    assert outlet.creds("hh02")["broker"]["password"] == pw["hh02"]
    outlet.start()
    assert not logs_in(outlet, "hh01", pw["hh01"])
    assert logs_in(outlet, "hh02", pw["hh02"])
    # Again: harmless, says so.
    assert outlet.proc is not None
    again = outlet.cli("revoke", "hh01", "--config", str(outlet.out / "gateway.toml"),
                       "--broker-pid", str(outlet.proc.pid))
    assert again.returncode == 0 and "already revoked" in again.stdout


def test_permits_it_forwarded_that_wait_are_never_delivered(outlet: Outlet) -> None:
    db = outlet.out / "gateway.db"
    store = EventStore(db)
    try:
        mine = PLATFORM.permit("lk01", "deposit", "RB123456785GB", "c007", "hh01", "p-1", size="M")
        theirs = PLATFORM.permit("lk01", "deposit", "EA123456785CN", "c007", "hh02", "p-2", size="M")
        store_command(store, "o1", "locker", signing.encode(mine), via="hh01")
        store_command(store, "o1", "locker", signing.encode(theirs), via="hh02")
        store.db.commit()
    finally:
        store.close()
    assert outlet.proc is not None
    r = outlet.cli("revoke", "hh01", "--config", str(outlet.out / "gateway.toml"),
                   "--broker-pid", str(outlet.proc.pid), lang="zh")
    assert r.returncode == 0, r.stderr
    assert "已吊销 hh01" in r.stdout and "1 条" in r.stdout
    store = EventStore(db)
    try:
        rows = dict(store.db.execute("SELECT via, status FROM commands").fetchall())
    finally:
        store.close()
    assert rows == {"hh01": "revoked", "hh02": "queued"}
    # The platform hears of it with the next sync: one event, under an id
    # sequence of its own (never the running gateway's), stored once.
    again = outlet.cli("revoke", "hh01", "--config", str(outlet.out / "gateway.toml"),
                       "--broker-pid", str(outlet.proc.pid))
    assert again.returncode == 0 and "already revoked" in again.stdout
    [ev] = [e for e in stored_events(db) if e["type"] == "gateway.device_revoked"]
    assert ev["id"].startswith("gw-o1-adm:") and ev["cls"] == "audit"
    assert ev["body"] == {"device": "hh01", "at": ev["body"]["at"], "cancelled": ["p-1"]}
    store = EventStore(db)
    try:
        assert store.backlog()["count"] == 1  # waiting to go upstream
    finally:
        store.close()


def test_revocations_the_platform_signed_for_the_lockers_reach_the_broker(outlet: Outlet) -> None:
    """The platform's path: its signed ``revoke`` commands for the lockers,
    held by the gateway, name the handhelds; ``--from-platform`` applies
    them to the broker. Garbage among them is skipped, not fatal."""
    db = outlet.out / "gateway.db"
    pw = {d: outlet.creds(d)["broker"]["password"] for d in ("hh01", "hh02")}
    store = EventStore(db)
    try:
        rv = PLATFORM.command("lk01", "revoke", {"handhelds": ["hh01"], "couriers": ["c007"]}, "rv-1")
        store_command(store, "o1", "locker", signing.encode(rv))
        bad = PLATFORM.command("lk01", "revoke", {"handhelds": "hh02"}, "rv-bad")
        store_command(store, "o1", "locker", signing.encode(bad))
        store.db.commit()
    finally:
        store.close()
    assert outlet.proc is not None
    r = outlet.cli("revoke", "--from-platform", "--config", str(outlet.out / "gateway.toml"),
                   "--broker-pid", str(outlet.proc.pid))
    assert r.returncode == 0, r.stderr
    assert "revoked hh01" in r.stdout and "hh02" not in r.stdout
    assert not logs_in(outlet, "hh01", pw["hh01"])
    assert logs_in(outlet, "hh02", pw["hh02"])
    again = outlet.cli("revoke", "--from-platform", "--config", str(outlet.out / "gateway.toml"),
                       "--broker-pid", str(outlet.proc.pid))
    assert again.returncode == 0 and "nothing to revoke" in again.stdout
    neither = outlet.cli("revoke", "--config", str(outlet.out / "gateway.toml"))
    both = outlet.cli("revoke", "hh02", "--from-platform", "--config", str(outlet.out / "gateway.toml"))
    assert neither.returncode == 2 and both.returncode == 2


@pytest.mark.parametrize("device", ["gw-o1", "nobody", "../passwd", "HH01", "", "hh01:x"])
def test_what_cannot_be_revoked_is_refused_and_changes_nothing(outlet: Outlet, device: str) -> None:
    before = {p.name: p.read_bytes() for p in (outlet.out / "mosquitto").glob("[pa]*")}
    assert outlet.proc is not None
    r = outlet.cli("revoke", device, "--config", str(outlet.out / "gateway.toml"),
                   "--broker-pid", str(outlet.proc.pid))
    assert r.returncode == 2 and "error" in r.stderr
    assert {p.name: p.read_bytes() for p in (outlet.out / "mosquitto").glob("[pa]*")} == before
    assert not (outlet.out / "revoked.json").exists()


def test_a_damaged_revocation_list_stops_provision_rather_than_forgetting(tmp_path: Path) -> None:
    o = Outlet(tmp_path)
    passwd, acl = o.out / "mosquitto" / "passwd", o.out / "mosquitto" / "acl"
    revoke(o.out, passwd, acl, "hh01")
    for bad in ("", "{", "[]", '{"devices": ["hh01"]}', '{"devices": {"../x": {}}}'):
        (o.out / "revoked.json").write_text(bad)
        with pytest.raises(ProvisionError, match="revoked.json"):
            o.provision()
        with pytest.raises(RevokeError):
            revoke(o.out, passwd, acl, "hh02")
    assert "hh02" in passwd.read_text()


def test_the_broker_files_keep_their_mode(tmp_path: Path) -> None:
    o = Outlet(tmp_path)
    passwd, acl = o.out / "mosquitto" / "passwd", o.out / "mosquitto" / "acl"
    passwd.chmod(0o640)
    acl.chmod(0o640)
    revoke(o.out, passwd, acl, "hh02")
    assert passwd.stat().st_mode & 0o777 == 0o640 and acl.stat().st_mode & 0o777 == 0o640
    assert (o.out / "revoked.json").stat().st_mode & 0o777 == 0o600
    assert not list(o.out.glob("**/*.tmp"))


def test_cli_without_a_reloadable_broker_says_so(tmp_path: Path) -> None:
    o = Outlet(tmp_path)
    r = o.cli("revoke", "hh01", "--config", str(o.out / "gateway.toml"), "--broker-pid", "999999999")
    assert r.returncode == 1 and "did not reload" in r.stderr
    assert "hh01" not in (o.out / "mosquitto" / "passwd").read_text()  # revoked all the same


def test_provision_with_the_platforms_key_file_leaves_a_revoked_handheld_out(tmp_path: Path) -> None:
    """The platform's key file may still hold the revoked handheld's key:
    provision takes it, and writes that key nowhere."""
    import json

    o = Outlet(tmp_path)
    revoke(o.out, o.out / "mosquitto" / "passwd", o.out / "mosquitto" / "acl", "hh01")
    keyfile = tmp_path / "keys.json"
    keyfile.write_text(json.dumps(PLATFORM.issue(["lk01", "hh01", "hh02"])))
    o.provision_kw = {"key_file": keyfile}
    r = o.provision()
    assert r["keys"] == 2 and r["revoked"] == ["hh01"]
    hh01_key = PLATFORM.key("hh01").hex()
    assert not any(hh01_key in p.read_text() for p in (o.out / "devices").iterdir())
    assert not (o.out / "devices" / "hh01.toml").exists()
    assert "hh01" not in (o.out / "mosquitto" / "passwd").read_text()
