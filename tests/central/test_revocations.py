"""The platform answers a revoked handheld (central/revocations.py): a
``revoke`` signed with each locker's own key, queued once for the outlet's
gateway, which each locker verifies and parses as a revocation of that
handheld; the handheld is retired in the registry."""

from __future__ import annotations

import time
from pathlib import Path

from central.embedded import Embedded
from central.intake import check_batch
from central.keys import KeyService
from central.revocations import Revocations
from common.uplink_codec import encode_batch
from protocol import envelope, keys, revocation, signing
from protocol.ids import format_event_id

MASTER = bytes(range(32, 64))


def revoked_event(seq: int, device: str) -> tuple[str, bytes]:
    eid = format_event_id("gw-o1-admin", "0000beef", seq)
    body = {"device": device, "at": int(time.time()), "cancelled": []}
    return eid, envelope.encode(envelope.make(eid, int(time.time()), "gateway.device_revoked", "alarm", body,
                                              boot=1))


def test_each_locker_gets_one_revoke_signed_with_its_own_key(tmp_path: Path) -> None:
    b = Embedded(tmp_path / "central")
    for dev, kind in (("lk01", "locker"), ("lk02", "locker"), ("hh01", "handheld"), ("sc01", "scanner")):
        b.add_device("o1", dev, kind)
    rows = [revoked_event(1, "hh01")]
    enc = encode_batch("o1", "bulk", rows)
    b.store("o1", check_batch("o1", enc.id, enc.body))
    r = Revocations(b, MASTER)
    assert r.run_once() == 2
    b.store("o1", check_batch("o1", enc.id, enc.body))  # the batch again: nothing new
    assert r.run_once() == 0
    _, commands, _ = b.pull("o1", 0, 100)
    assert sorted(json_cmd["dev"] for _, json_cmd in commands) == ["lk01", "lk02"]
    ks = KeyService("o1", MASTER)
    for kind, cmd in commands:
        ring = keys.from_config(ks.device_config(cmd["dev"]))
        ok = signing.verify(cmd, ring, cmd["dev"], int(time.time()))
        assert kind == "locker" and ok["op"] == "revoke"
        assert revocation.parse_args(ok["args"]) == [("handheld", "hh01")]
        other = "lk02" if cmd["dev"] == "lk01" else "lk01"
        try:
            signing.verify(cmd, keys.from_config(ks.device_config(other)), other, int(time.time()))
        except Exception:  # noqa: BLE001 - any refusal: the command is bound to its locker
            pass
        else:
            raise AssertionError("a locker accepted another locker's revoke")
    assert {d["device"]: d["retired"] for d in b.devices("o1")}["hh01"] is True


def test_a_report_for_an_outlet_without_lockers_is_answered_with_nothing(tmp_path: Path) -> None:
    b = Embedded(tmp_path / "central")
    enc = encode_batch("o1", "bulk", [revoked_event(1, "hh07")])
    b.store("o1", check_batch("o1", enc.id, enc.body))
    r = Revocations(b, MASTER)
    assert r.run_once() == 0
    assert b.db.execute("SELECT device, lockers FROM revocations_answered").fetchall() == [("hh07", 0)]
