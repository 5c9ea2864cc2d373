"""The counters' box catalogue and tariff, issued by the platform
(``central/documents.py``): signed with a key only the platform holds, read
first by the same parsers the counters price with, versions that only grow,
and delivered down the real gateway's downlink into its counter, where a
forged, stale or misdirected document changes nothing. The duty's tests run
on both backends (the ``duty_store`` fixture: SQLite, and PostgreSQL behind
the JetStream log), and a real front of each hands the documents to the
gateway's own uplink client and counter desk."""

from __future__ import annotations

import json
import ssl
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.documents import KEY_FILE, DocumentRefused, Documents, resend
from common import platform_docs as pd
from common.uplink_codec import DOWN_COUNTER_DOC, counter_doc, read_counter_doc
from gateway.broker import Mosquitto
from gateway.counter.acceptance import CounterDesk
from gateway.uplink.https import HttpsTransport
from protocol import canonical
from simulator.counter_sim import BOXES, RATES, ZONES
from simulator.gateway_process import GatewayProcess
from tests.central.conftest import CentralUnderTest, StoreUnderTest
from tests.central.test_contract import PW
from tests.uplink_rig import Certs, gateway_toml, make_central_uplink
from tests.waiting import until

TARIFF = {"zones": ZONES, "services": RATES}
CATALOGUE = {"boxes": BOXES}


@dataclass
class Platform:
    """A backend under test and the folder its documents' key is kept in:
    the embedded backend's own, or on scale-out the one its caller names."""

    name: str
    b: Any
    key_dir: Path | None

    def documents(self, **kw: Any) -> Documents:
        return Documents(self.b, key_dir=self.key_dir, **kw)


@pytest.fixture
def platform(duty_store: StoreUnderTest, tmp_path: Path) -> Platform:
    b = duty_store.b
    for o in ("o1", "o2", "o3"):
        b.add_outlet(o, f"password-of-{o}")
    b.retire_outlet("o3")
    return Platform(duty_store.name, b, None if duty_store.name == "embedded" else tmp_path)


def sent(b: Any, outlet: str) -> list[dict[str, Any]]:
    """The documents queued down to ``outlet``, as the gateway reads them off the wire."""
    return [json.loads(read_counter_doc(canonical.dumps(cmd)))
            for kind, cmd in b.pull(outlet, 0, 100)[1] if kind == DOWN_COUNTER_DOC]


def test_versions_grow_and_go_to_the_outlets_named(platform: Platform) -> None:
    b = platform.b
    docs = platform.documents(clock=lambda: 1_795_881_000)
    t1 = docs.publish("tariff", TARIFF)  # every outlet still open
    c1 = docs.publish("box_catalogue", CATALOGUE, ["o2"])
    t2 = docs.publish("tariff", TARIFF, ["o1"])
    assert (t1["version"], c1["version"], t2["version"]) == (1, 1, 2)
    assert [(d["kind"], d["version"]) for d in sent(b, "o1")] == [("tariff", 1), ("tariff", 2)]
    assert [(d["kind"], d["version"]) for d in sent(b, "o2")] == [("tariff", 1), ("box_catalogue", 1)]
    assert sent(b, "o3") == []  # retired
    keys = pd.load_public_keys(docs.public_keys())
    for d in sent(b, "o1"):  # what a gateway checks: the platform's key, its outlet
        assert pd.verify(json.dumps(d).encode(), keys, d["kind"], "o1").body == TARIFF
    with pytest.raises(pd.DocError, match="wrong_outlet"):
        pd.verify(c1, keys, "box_catalogue", "o1")
    # an outlet registered later gets the latest of each kind meant for it
    b.add_outlet("o4", "password-of-o4")
    assert resend(b, "o4") == 1 and [(d["kind"], d["version"]) for d in sent(b, "o4")] == [
        ("tariff", 1)]
    assert [(d["kind"], d["version"]) for d in docs.latest()] == [("box_catalogue", 1), ("tariff", 2)]


def test_two_publishers_never_sign_the_same_version(platform: Platform) -> None:
    """Two operators (or two ``docs publish`` on one scale-out database) at
    once: each version of a kind is taken by one publisher, the other signs
    the next, and every version reaches the outlet."""
    pubs = [platform.documents(), platform.documents()]
    got: list[int] = []
    errors: list[BaseException] = []

    def publish(docs: Documents) -> None:
        try:
            for _ in range(4):
                got.append(docs.publish("tariff", TARIFF, ["o1"])["version"])
        except BaseException as e:  # noqa: BLE001 - the assertion below names it
            errors.append(e)

    threads = [threading.Thread(target=publish, args=(d,)) for d in pubs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sorted(got) == list(range(1, 9))
    assert sorted(d["version"] for d in sent(platform.b, "o1")) == list(range(1, 9))
    assert [d["version"] for d in pubs[0].latest()] == [8]


def test_what_the_counters_would_refuse_is_never_signed(platform: Platform) -> None:
    docs = platform.documents()
    bad = {
        "no services": {"zones": ZONES, "services": {}},
        "a float price": {"zones": ZONES, "services": {**RATES, "standard": {**RATES["standard"],
                                                                            "step_fen": {"z1": 1.5}}}},
    }
    for why, body in bad.items():
        with pytest.raises(DocumentRefused):
            docs.publish("tariff", body)
        assert docs.latest() == [], why
    with pytest.raises(DocumentRefused):
        docs.publish("box_catalogue", {"boxes": [{"code": "X"}]})
    with pytest.raises(DocumentRefused):
        docs.publish("tariff", TARIFF, ["o1", "../o2"])
    with pytest.raises(DocumentRefused):
        docs.publish("receipt", TARIFF)
    assert sent(platform.b, "o1") == [] and docs.latest() == []


def test_a_command_the_downlink_cannot_carry_is_refused_at_the_door(platform: Platform) -> None:
    """Queued, a command nested past the wire's depth (or holding a float) would make
    every later pull of that outlet fail: it is refused when pushed, the rest flows."""
    deep: dict[str, Any] = {"x": 1}
    for k in "abcdefgh":
        deep = {k: deep}
    for bad in (deep, {"op": "open", "t": 1.5}):
        with pytest.raises(ValueError, match="cannot carry"):
            platform.b.push_command("o1", "locker", bad)
    cursor = platform.b.push_command("o1", "locker", {"op": "open"})
    assert platform.b.pull("o1", 0, 10)[:2] == (cursor, [("locker", {"op": "open"})])


def test_the_key_is_made_once_and_kept_private(platform: Platform) -> None:
    first = platform.documents().public_keys()
    assert platform.documents().public_keys() == first
    mode = stat.S_IMODE(((platform.key_dir or platform.b.dir) / KEY_FILE).stat().st_mode)
    assert mode == 0o600, oct(mode)
    if platform.name == "scaleout":  # the database has no folder: a private key is never put in it
        with pytest.raises(ValueError, match="key_dir"):
            Documents(platform.b)


@pytest.mark.e2e
def test_a_front_hands_the_documents_to_a_gateways_counter(central: CentralUnderTest, tmp_path: Path) -> None:
    """What the gateway's own uplink client fetches from a real front (the
    embedded one, or a scale-out one reading PostgreSQL) is what its counter
    desk installs and prices with; another outlet's document is not fetched."""
    central.add_outlet("o1", PW)
    central.add_outlet("o2", PW)
    docs = Documents(central.registry, key_dir=tmp_path)
    tariff = docs.publish("tariff", TARIFF, ["o1"])
    docs.publish("tariff", TARIFF, ["o2"])
    catalogue = docs.publish("box_catalogue", CATALOGUE)
    (tmp_path / "gw").mkdir()
    desk = CounterDesk(tmp_path / "gw" / "events.db", "o1", tmp_path / "gw" / "counter", docs.public_keys(),
                       None, None)
    t = HttpsTransport(central.url, "o1", ssl.create_default_context(cafile=str(central.ca)), 10.0, "o1", PW)
    try:
        down = t.pull(0)
        fetched = [read_counter_doc(raw) for kind, raw in down.commands if kind == DOWN_COUNTER_DOC]
        assert [json.loads(d) for d in fetched] == [tariff, catalogue]
        cites = [desk.install(d) for d in fetched]
        assert [(c["kind"], c["version"]) for c in cites] == [("tariff", 1), ("box_catalogue", 1)]
        assert desk.tariff is not None and desk.catalogue is not None
        assert desk.tariff.quote("standard", "552300", 1000).fen > 0
        assert json.loads((tmp_path / "gw" / "counter" / "tariff.json").read_text()) == tariff
        assert t.pull(down.cursor).commands == []
    finally:
        t.close()
        desk.close()


@pytest.mark.slow
@pytest.mark.e2e
def test_documents_reach_a_real_gateways_counter_and_forgeries_do_not(tmp_path: Path, broker: Mosquitto,
                                                                      certs: Certs) -> None:
    up = make_central_uplink(tmp_path, certs)
    docs = Documents(up.central.backend)
    cfg = gateway_toml(tmp_path / "gateway.toml", broker, up.upstream(down_interval_s=0.3))
    keys = ", ".join(f'{k} = "{v}"' for k, v in docs.public_keys().items())
    with cfg.open("a", encoding="utf-8") as f:
        f.write(f'\n[web]\nhost = "127.0.0.1"\nport = 0\n\n[counter]\nplatform_keys = {{ {keys} }}\n')
    installed = tmp_path / "counter"
    gw = GatewayProcess(cfg)
    try:
        gw.wait_for("gateway_started")
        tariff = docs.publish("tariff", TARIFF, ["o1"])
        catalogue = docs.publish("box_catalogue", CATALOGUE)
        until(lambda: (installed / "tariff.json").exists() and (installed / "box_catalogue.json").exists())
        assert json.loads((installed / "tariff.json").read_text()) == tariff
        assert json.loads((installed / "box_catalogue.json").read_text()) == catalogue
        # a document signed by anyone else, an old version again, another outlet's: refused, counted
        rogue = pd.sign({"v": 1, "kind": "tariff", "version": 9, "outlets": ["o1"], "iat": 1,
                         "body": TARIFF}, Ed25519PrivateKey.generate(), "p1")
        other = Documents(up.central.backend).publish("tariff", TARIFF, ["o2"])
        for d in (rogue, tariff, other):
            up.central.backend.push_command("o1", DOWN_COUNTER_DOC, counter_doc(d))

        def refused() -> list[dict[str, Any]]:
            return [d for d in gw.lines
                    if d.get("evt") == "down_invalid" and d.get("kind") == DOWN_COUNTER_DOC]

        until(lambda: len(refused()) == 3)
        why = " ".join(d["error"] for d in refused())
        assert "bad_signature" in why and "stale_version" in why and "wrong_outlet" in why, why
        assert json.loads((installed / "tariff.json").read_text()) == tariff
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        up.close()


def test_a_file_from_before_keeps_its_documents_and_verdicts(tmp_path: Path) -> None:
    """An embedded folder whose tables were made by the SQL the duties once
    carried: the same tables, read and continued as they are (a tariff
    published then is still the latest, the next is version 2, a verdict
    kept then is still listed)."""
    from central.embedded import Embedded
    from central.postage_audit import PostageAudit

    b = Embedded(tmp_path / "central")
    b.add_outlet("o1", "password-of-o1")
    old = Documents(b).publish("tariff", TARIFF)
    b.db.executescript("""
        DROP TABLE platform_docs;
        CREATE TABLE platform_docs (
            kind TEXT NOT NULL, version INTEGER NOT NULL, outlets TEXT NOT NULL, doc TEXT NOT NULL,
            digest TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (kind, version));
        CREATE TABLE postage_checks (
            outlet TEXT NOT NULL, event TEXT NOT NULL, verdict TEXT NOT NULL, detail TEXT NOT NULL,
            at REAL NOT NULL, PRIMARY KEY (outlet, event));
        INSERT INTO postage_checks VALUES ('o1', 'gw:1', 'no_document', '{}', 1.0);
    """)
    signed = pd.verify(old, pd.load_public_keys(Documents(b).public_keys()), "tariff", "o1")
    b.db.execute("INSERT INTO platform_docs VALUES ('tariff', 1, '[\"*\"]', ?, ?, 1.0)",
                 (json.dumps(old), signed.digest))
    b.close()
    b = Embedded(tmp_path / "central")
    try:
        docs = Documents(b)
        assert docs.latest() == [old]
        assert docs.publish("tariff", TARIFF)["version"] == 2
        audit = PostageAudit(b)
        assert [(v["event"], v["verdict"], v["detail"]) for v in audit.verdicts()] == [
            ("gw:1", "no_document", {})]
    finally:
        b.close()


def test_a_duty_table_key_is_text_or_int_and_never_null() -> None:
    """The documents' key (kind, version) is the first without the outlet;
    what both databases key by stays checked before any table is made."""
    from central.documents import DOCS
    from central.duty_store import Column, DutyTable

    assert DOCS.key == ("kind", "version")
    for why, cols, key in (
            ("a real in the key", (Column("outlet", "text"), Column("w", "real")), ("outlet", "w")),
            ("a key column that may be null", (Column("outlet", "text"), Column("p", "text", null=True)),
             ("outlet", "p")),
            ("a key column not declared", (Column("outlet", "text"),), ("outlet", "p")),
            ("an outlet that is a number", (Column("outlet", "int"), Column("p", "text")), ("outlet", "p")),
            ("answers with no time", (Column("outlet", "text"), Column("event", "text")),
             ("outlet", "event")),
            ("no key", (Column("outlet", "text"),), ())):
        with pytest.raises(ValueError):
            DutyTable("t", "", cols, key=key)
            raise AssertionError(why)
