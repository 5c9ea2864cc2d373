"""The notifier in process on a real SQLite store and the simulated modem on
a pty: routing exactly once, restarts, retries, reminders, resends, and the
code never at rest or in a log."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, GatewayConfig
from gateway.notify.keys import load_keys
from gateway.notify.notifier import Notifier
from gateway.notify.state import inbox_put, request_resend
from gateway.store.events import EventStore
from protocol import envelope
from simulator.modem_sim import ModemSim
from tests.notify_rig import PHONE, contact, deposit, key_file, notify_table, pickup

PARCEL = "RB123456785GB"
CODE = "482913"


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Rig:
    def __init__(self, tmp: Path, **notify: Any) -> None:
        self.tmp = tmp
        self.sim = ModemSim(tmp / "ttyModem")
        self.clock = Clock()
        self.logs: list[tuple[str, dict[str, Any]]] = []
        table = {"delay_s": 60, "remind_hours": 24, **notify}
        self.cfg = GatewayConfig.from_dict({
            "outlet": "o1", "db": str(tmp / "gateway.db"),
            "upstream": {"url": "https://127.0.0.1:9/v1/batches"},
            "notify": notify_table(self.sim.path, key_file(tmp / "notify-keys.toml"), **table)})
        self.store = EventStore(self.cfg.db)
        self.n = self.start()

    def start(self) -> Notifier:
        return Notifier(self.cfg, log=lambda evt, **f: self.logs.append((evt, f)), clock=self.clock)

    def restart(self) -> None:
        self.n.modem.close()
        self.n.store.close()
        self.n = self.start()

    def ticks(self, n: int = 3) -> None:
        for _ in range(n):
            self.n.tick()

    def own(self, etype: str | None = None) -> list[dict[str, Any]]:
        rows = self.store.db.execute("SELECT payload FROM events WHERE kind='gateway' ORDER BY rowid")
        evs = [envelope.decode(bytes(r[0])) for r in rows]
        return [e for e in evs if etype is None or e["type"] == etype]

    def put(self, *events: Any) -> None:
        self.store.commit_events(list(events))

    def contact(self, payload: bytes) -> None:
        with self.store.tx():
            inbox_put(self.store.db, payload)

    def close(self) -> None:
        self.n.modem.close()
        self.n.store.close()
        self.store.close()
        self.sim.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def wait_texts(sim: ModemSim, n: int, timeout: float = 3.0) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while len(sim.texts()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return sim.texts()


def test_offline_deposit_is_texted_once_by_the_modem_across_restarts(rig: Rig) -> None:
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.ticks()
    # within delay_s: the platform may still ack
    assert rig.sim.received == [] and rig.own("notify.route") == []
    rig.clock.offset = 61
    rig.ticks()
    [(number, text)] = wait_texts(rig.sim, 1)
    assert number == PHONE and CODE in text and "石桥村邮站" in text and "3号格口" in text
    [route] = rig.own("notify.route")
    assert route["body"] == {"event": "lk01:0badcafe:1", "parcel": PARCEL, "purpose": "notice",
                             "by": "gateway"}
    [sent] = rig.own("notify.sent")
    assert sent["body"]["phone_tail"] == "8000" and sent["body"]["parts"] == 1
    # Now the platform acks the deposit: nothing changes, the route stands.
    rig.store.mark_synced(["lk01:0badcafe:1"])
    for _ in range(2):
        rig.restart()
        rig.ticks()
    assert len(rig.sim.received) == 1 and len(rig.own("notify.route")) == 1
    # The delivery report arrives and is recorded once.
    deadline = time.monotonic() + 3
    while not rig.own("notify.delivered") and time.monotonic() < deadline:
        rig.ticks(1)
        time.sleep(0.05)
    assert len(rig.own("notify.delivered")) == 1


def test_acked_deposit_is_the_platforms(rig: Rig) -> None:
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.store.mark_synced(["lk01:0badcafe:1"])
    rig.ticks()
    rig.clock.offset = 3600
    rig.ticks()
    [route] = rig.own("notify.route")
    assert route["body"]["by"] == "platform"
    assert rig.sim.received == []


def test_platform_coded_and_contactless_deposits_wait_for_the_platform(rig: Rig) -> None:
    rig.put(deposit("lk01", 1, PARCEL, CODE, code_by="platform"),
            deposit("lk01", 2, "RB000000001CN", "111111"))
    rig.clock.offset = 3600
    rig.ticks()
    assert rig.own("notify.route") == [] and rig.sim.received == []
    rig.store.mark_synced(["lk01:0badcafe:1", "lk01:0badcafe:2"])  # the link is back
    rig.ticks()
    assert sorted(r["body"]["by"] for r in rig.own("notify.route")) == ["platform", "platform"]
    assert rig.sim.received == []


def test_hundreds_of_waiting_deposits_hold_up_neither_a_sendable_one_nor_ingest(rig: Rig) -> None:
    rig.put(*[deposit("lk02", i, f"RB{i:09d}CN", "111111", code_by="platform") for i in range(1, 301)])
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.ticks(1)  # intake: a job row per deposit
    rig.clock.offset = 61
    before = rig.store.db.total_changes
    changes = rig.n.store.db.total_changes
    rig.ticks(3)
    assert len(wait_texts(rig.sim, 1)) == 1
    # The 300 waiting deposits were only read: the notifier wrote for the one it sent.
    assert rig.n.store.db.total_changes - changes < 40 and rig.store.db.total_changes == before


def test_a_parcel_picked_up_before_the_notice_gets_none(rig: Rig) -> None:
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.put(pickup("lk01", 2, PARCEL))
    rig.clock.offset = 3600
    rig.ticks()
    assert rig.sim.received == []
    assert [r["body"]["by"] for r in rig.own("notify.route")] == ["none"]  # the platform closes it


def test_a_text_queued_for_the_modem_then_picked_up_is_rerouted_to_none(rig: Rig) -> None:
    """Routed to the modem, but the villager was quicker than the modem's
    queue: the text is cancelled and the platform hears ``none``, so the
    deposit is not left as never told (it was: ``deposit_notified_once``
    failed in the simulator's outage scenario on a loaded machine)."""
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.n.router.intake()
    rig.n.absorb_contacts()
    rig.clock.offset = 61
    rig.n.router.route_notices()  # queued for the modem, not sent yet
    assert [r["body"]["by"] for r in rig.own("notify.route")] == ["gateway"]
    rig.put(pickup("lk01", 2, PARCEL))
    rig.ticks()
    time.sleep(0.2)
    assert rig.sim.received == [] and rig.own("notify.sent") == []
    routes = [r["body"] for r in rig.own("notify.route")]
    assert [(r["by"], r["purpose"]) for r in routes] == [("gateway", "notice"), ("none", "notice")]
    assert rig.store.db.execute("SELECT state FROM notify_sms").fetchall() == [("cancelled",)]
    rig.restart()
    rig.ticks()
    assert len(rig.own("notify.route")) == 2  # decided for good, across a restart


def test_cms_errors_are_retried_then_a_permanent_one_fails(rig: Rig) -> None:
    rig.sim.cms_errors = [38, 42]  # network out of order, congestion: transient
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.clock.offset = 61
    deadline = time.monotonic() + 5
    while not rig.own("notify.sent") and time.monotonic() < deadline:
        rig.ticks(1)
        time.sleep(0.05)
    assert len(wait_texts(rig.sim, 1)) == 1
    assert [f["reason"] for e, f in rig.logs if e == "notify_retry"] == ["cms_38", "cms_42"]
    rig.sim.cms_errors = [21]  # short message transfer rejected: permanent
    rig.put(deposit("lk01", 2, "RB000000001CN", "222222"))
    rig.contact(contact("RB000000001CN", phone="13900139000"))
    rig.ticks()
    [failed] = rig.own("notify.failed")
    assert failed["body"]["reason"] == "cms_21" and failed["body"]["phone_tail"] == "9000"
    # ... and goes to the platform, which may still reach the villager.
    assert [r["body"]["by"] for r in rig.own("notify.route") if r["body"]["parcel"] == "RB000000001CN"] == [
        "gateway", "platform"]


def test_silence_after_the_pdu_is_uncertain_and_never_resent(rig: Rig) -> None:
    rig.sim.swallow = True
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.clock.offset = 61
    rig.ticks()
    rig.sim.swallow = False
    rig.restart()
    rig.ticks()
    assert len(rig.sim.received) == 1
    assert len(rig.own("notify.uncertain")) == 1 and rig.own("notify.sent") == []


def test_a_gateway_killed_mid_send_never_sends_that_part_again(rig: Rig) -> None:
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.clock.offset = 61
    rig.n.router.intake()
    rig.n.absorb_contacts()
    rig.n.router.route_notices()
    # What a kill -9 between "sending" committed and +CMGS leaves behind:
    db = sqlite3.connect(rig.cfg.db)
    db.execute("INSERT INTO notify_parts(sms, seq, state) VALUES (1, 1, 'sending')")
    db.execute("UPDATE notify_sms SET parts=1 WHERE id=1")
    db.commit()
    db.close()
    rig.restart()
    rig.ticks()
    assert rig.sim.received == []
    [u] = rig.own("notify.uncertain")
    assert u["body"]["reason"] == "interrupted"


def test_unplugged_modem_never_stops_the_notifier(rig: Rig) -> None:
    rig.sim.unplug()
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.clock.offset = 61
    rig.ticks(5)
    assert rig.n.errors == 0 and rig.own("notify.sent") == []
    assert [e for e, _ in rig.logs].count("notify_modem_down") == 1
    rig.sim.plug()
    deadline = time.monotonic() + 5
    while not rig.own("notify.sent") and time.monotonic() < deadline:
        rig.ticks(1)
        time.sleep(0.05)
    assert len(wait_texts(rig.sim, 1)) == 1


def test_a_text_the_modem_never_started_goes_back_to_the_platform(rig: Rig) -> None:
    rig.sim.unplug()
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.clock.offset = 61
    rig.ticks()
    [route] = rig.own("notify.route")
    assert route["body"]["by"] == "gateway" and rig.own("notify.sent") == []
    # the backhaul is back: everything acked
    unsynced = rig.store.db.execute("SELECT id FROM events WHERE synced_at IS NULL")
    rig.store.mark_synced([r[0] for r in unsynced])
    rig.clock.offset = 200
    rig.ticks()
    rig.sim.plug()
    rig.ticks(5)
    time.sleep(0.2)
    assert rig.sim.received == []
    assert [r["body"]["by"] for r in rig.own("notify.route")] == ["gateway", "platform"]
    assert rig.store.db.execute("SELECT state FROM notify_sms").fetchall() == [("handed_back",)]


def test_reminder_once_before_expiry(rig: Rig) -> None:
    expires = int(time.time()) + 3 * 86400
    rig.put(deposit("lk01", 1, PARCEL, CODE, expires=expires))
    rig.contact(contact(PARCEL, lang="en"))
    rig.clock.offset = 61
    rig.ticks()
    assert len(wait_texts(rig.sim, 1)) == 1
    rig.clock.offset = 2 * 86400 - 3600  # 25 h before expiry: not yet
    rig.ticks()
    assert len(rig.sim.received) == 1
    rig.clock.offset = 2 * 86400 + 60  # inside the 24 h window
    rig.ticks()
    rig.restart()
    rig.ticks()
    texts = wait_texts(rig.sim, 2)
    assert len(texts) == 2 and texts[1][1].startswith("[China Post] Reminder") and CODE in texts[1][1]
    assert [r["body"]["purpose"] for r in rig.own("notify.route")] == ["notice", "reminder"]


def test_clerk_resend_is_audited_and_sent(rig: Rig) -> None:
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.clock.offset = 61
    rig.ticks()
    with rig.store.tx():
        request_resend(rig.store.db, PARCEL, "clerk-wang")
        request_resend(rig.store.db, "RB999999999CN", "clerk-wang")
    rig.ticks()
    texts = wait_texts(rig.sim, 2)
    assert len(texts) == 2 and "补发" in texts[1][1]
    resend = [r["body"] for r in rig.own("notify.route") if r["body"]["purpose"] == "resend"]
    assert resend == [{"event": "lk01:0badcafe:1", "parcel": PARCEL, "purpose": "resend", "by": "gateway",
                       "clerk": "clerk-wang"}]
    [refused] = rig.own("notify.resend_refused")
    assert refused["body"] == {"parcel": "RB999999999CN", "clerk": "clerk-wang", "reason": "unknown_parcel"}


def test_forged_and_bad_contacts_are_refused(rig: Rig) -> None:
    rig.contact(contact(PARCEL, key=b"k" * 32))  # not the notifier key
    rig.contact(b"{not json")
    rig.contact(contact(PARCEL, phone="12345"))
    rig.contact(contact(PARCEL, phone="139 0013 9000", cid="ct-good"))
    rig.ticks(1)
    codes = [f["code"] for e, f in rig.logs if e == "notify_contact_refused"]
    assert len(codes) == 3 and "bad_signature" in codes
    assert rig.store.db.execute("SELECT phone FROM notify_contacts").fetchall() == [("+8613900139000",)]
    assert rig.store.db.execute("SELECT count(*) FROM notify_inbox").fetchone()[0] == 0


def test_the_code_is_never_at_rest_or_in_a_log(rig: Rig) -> None:
    for i, (parcel, code) in enumerate([(PARCEL, CODE), ("RB000000001CN", "907315")], 1):
        rig.put(deposit("lk01", i, parcel, code))
        rig.contact(contact(parcel))
    rig.clock.offset = 61
    rig.ticks()
    assert len(wait_texts(rig.sim, 2)) == 2
    rig.n.store.close()
    rig.store.close()
    db = Path(rig.cfg.db)
    raw = db.read_bytes() + b"".join(p.read_bytes() for p in db.parent.glob("*.db-*"))
    logs = repr(rig.logs).encode()
    for code in (CODE, "907315"):
        assert code.encode() not in raw and code.encode("utf-16-be") not in raw
        assert code.encode() not in logs
    rig.store = EventStore(rig.cfg.db)
    rig.n.store = EventStore(rig.cfg.db)


def test_config(tmp_path: Path) -> None:
    base = {"outlet": "o1", "db": "g.db"}
    assert not GatewayConfig.from_dict(base).notify.enabled
    with pytest.raises(ConfigError, match="notify.key_file"):
        GatewayConfig.from_dict({**base, "notify": {"modem": "/dev/ttyUSB2"}})
    with pytest.raises(ConfigError, match="notify.delay_s"):
        GatewayConfig.from_dict({**base, "notify": {"delay_s": -1}})
    with pytest.raises(ConfigError, match="notify.bogus"):
        GatewayConfig.from_dict({**base, "notify": {"bogus": 1}})
    keys = key_file(tmp_path / "k.toml")
    cfg = GatewayConfig.from_dict({**base, "notify": {"modem": "/dev/ttyUSB2", "key_file": "k.toml"}},
                                  base=tmp_path)
    assert cfg.notify.enabled and cfg.notify.key_file == str(keys) and cfg.notify.delay_s == 900
    assert load_keys(keys)[1] == bytes.fromhex(keys.read_text().split('"')[3])
    (tmp_path / "bad.toml").write_text("[keys]\n'1' = 'zz'\n")
    with pytest.raises(ConfigError):
        load_keys(tmp_path / "bad.toml")


def test_phone_numbers_are_kept_only_while_needed(rig: Rig) -> None:
    rig.put(deposit("lk01", 1, PARCEL, CODE))
    rig.contact(contact(PARCEL))
    rig.contact(contact("RB000000001CN", phone="13900139000"))  # never deposited here
    rig.clock.offset = 61
    rig.ticks()
    assert len(wait_texts(rig.sim, 1)) == 1
    rig.put(pickup("lk01", 2, PARCEL))
    rig.ticks(1)
    rig.clock.offset = 8 * 86400
    rig.n.router._next_prune = 0
    rig.ticks(1)
    db = rig.store.db
    assert db.execute("SELECT count(*) FROM notify_contacts").fetchone()[0] == 0
    assert db.execute("SELECT phone FROM notify_sms").fetchall() == [("…8000",)]
