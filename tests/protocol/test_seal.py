"""Sealed pickup codes (protocol/seal.py): who can open a box, and that
nothing else can, or can change one unnoticed. The bytes themselves are
pinned by golden vectors on CPython and the unix port (tests/golden)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from protocol import keys, seal, signing
from protocol.errors import BadSeal, BadSignature
from simulator.platform_keys import PlatformKeys

PLATFORM = PlatformKeys("o1")
OTHER_OUTLET = PlatformKeys("o2")
EID = "lk01:0badc0de:17"
PARCEL = "RB123456785GB"


def deposit(code: str = "042917", eid: str = EID, kv: int = 1) -> dict[str, Any]:
    """A locker.deposit as lk01 builds it (firmware/locker/app.py seal_code)."""
    note = seal.locker_notify_key(PLATFORM.notifier_key(), "lk01")
    boxes = {"platform": seal.seal("platform", PLATFORM.key("lk01", kv), kv, eid, PARCEL, code),
             "notifier": seal.seal("notifier", note, 1, eid, PARCEL, code)}
    return {"v": 1, "id": eid, "ts": 1795881163, "type": "locker.deposit", "cls": "custody",
            "body": {"compartment": 3, "parcel": PARCEL, "code_by": "locker", "code_sealed": boxes}}


def test_the_platform_and_the_notifier_open_it_and_no_other_key_does() -> None:
    ev = deposit()
    assert PLATFORM.open_code(ev) == "042917"
    assert seal.open_for_notifier({1: PLATFORM.notifier_key()}, ev) == "042917"
    assert "042917" not in repr(ev["body"])
    wrong = [
        lambda: OTHER_OUTLET.open_code(ev),  # another outlet's platform derivation
        lambda: seal.open_box("platform", PLATFORM.key("lk02"), ev),  # another locker's key
        lambda: seal.open_box("platform", PLATFORM.key("lk01", 2), ev),  # another key version
        lambda: seal.open_for_notifier({1: OTHER_OUTLET.notifier_key()}, ev),
        lambda: seal.open_for_notifier({1: PLATFORM.notifier_key(2)}, ev),
        lambda: seal.open_for_notifier({2: PLATFORM.notifier_key()}, ev),  # no key for kv 1
        # lk02's notify key is derived from the same notifier key, but is not lk01's
        lambda: seal.open_box("notifier", seal.locker_notify_key(PLATFORM.notifier_key(), "lk02"), ev),
        # the notifier key itself is not what the locker sealed with
        lambda: seal.open_box("notifier", PLATFORM.notifier_key(), ev),
    ]
    for i, attempt in enumerate(wrong):
        with pytest.raises(BadSeal):
            attempt()
            pytest.fail(f"attempt {i} opened the box")


@pytest.mark.parametrize("reader", seal.READERS)
def test_every_changed_byte_of_a_box_is_refused(reader: str) -> None:
    ev = deposit()
    opener = PLATFORM.open_code if reader == "platform" else \
        (lambda e: seal.open_for_notifier({1: PLATFORM.notifier_key()}, e))
    box = ev["body"]["code_sealed"][reader]["box"]
    for i in range(len(box)):
        bad = copy.deepcopy(ev)
        bad["body"]["code_sealed"][reader]["box"] = box[:i] + ("1" if box[i] == "0" else "0") + box[i + 1:]
        with pytest.raises(BadSeal):
            opener(bad)
    for change in (lambda e: e.update(id="lk01:0badc0de:18"),  # moved to another event
                   lambda e: e["body"].update(parcel="CP000000270CN"),  # or parcel
                   lambda e: e["body"]["code_sealed"][reader].update(kv=2),
                   lambda e: e["body"]["code_sealed"].update({reader: ev["body"]["code_sealed"][
                       "notifier" if reader == "platform" else "platform"]}),  # boxes swapped
                   lambda e: e["body"].pop("code_sealed"),
                   lambda e: e["body"]["code_sealed"][reader].update(box=box + "00"),
                   lambda e: e["body"]["code_sealed"][reader].update(box=box.upper())):
        bad = copy.deepcopy(ev)
        change(bad)
        with pytest.raises(BadSeal):
            opener(bad)


def test_nonce_is_the_event_id_so_a_replay_resends_the_same_box_and_events_never_share_one() -> None:
    a, again, b = deposit("042917"), deposit("042917"), deposit("042917", eid="lk01:0badc0de:18")
    assert a["body"]["code_sealed"] == again["body"]["code_sealed"]  # a journal replay: same bytes
    for reader in seal.READERS:
        ca = bytes.fromhex(a["body"]["code_sealed"][reader]["box"])[:6]
        cb = bytes.fromhex(b["body"]["code_sealed"][reader]["box"])[:6]
        assert ca != cb  # same code, same key, another event: another keystream
    # A new incarnation (a wiped counter) is another nonce too.
    c = deposit("042917", eid="lk01:0badc0df:17")
    box = "platform"
    assert c["body"]["code_sealed"][box]["box"][:12] != a["body"]["code_sealed"][box]["box"][:12]


def test_the_notifier_key_opens_no_door() -> None:
    """Neither the outlet's notifier key nor a locker's sealing key for it
    signs a command or permit the locker accepts: they are not derived
    from, and do not lead to, any device key."""
    ring = keys.from_config(PLATFORM.device_config("lk01"))
    notifier = PLATFORM.notifier_key()
    note_lk01 = seal.locker_notify_key(notifier, "lk01")
    now = 1795881200
    for forged_with in (notifier, note_lk01):
        assert forged_with not in (PLATFORM.key("lk01"), PLATFORM.key("lk01", 2))
        cmd = signing.sign({"id": "open-1", "dev": "lk01", "op": "open", "args": {"compartment": 3},
                            "iat": now, "exp": now + 60}, forged_with, kv=1)
        with pytest.raises(BadSignature):
            signing.verify(signing.encode(cmd), ring, "lk01", now)
    # And the platform's box cannot be made with it: a box sealed with the
    # notifier's keys does not open as the platform's.
    ev = deposit()
    ev["body"]["code_sealed"]["platform"] = seal.seal("platform", note_lk01, 1, EID, PARCEL, "111111")
    with pytest.raises(BadSeal):
        PLATFORM.open_code(ev)


def test_bad_inputs_are_refused_with_a_protocol_error() -> None:
    with pytest.raises(BadSeal):
        PLATFORM.open_code({"id": "not an id", "body": {}})
    with pytest.raises(BadSeal):
        seal.open_box("platform", PLATFORM.key("lk01"), {"id": EID, "body": "x"})
    for reader, key, kv, eid in (("gateway", PLATFORM.key("lk01"), 1, EID), ("platform", b"short", 1, EID),
                                 ("platform", PLATFORM.key("lk01"), 0, EID),
                                 ("platform", PLATFORM.key("lk01"), 1, "lk01")):
        with pytest.raises(ValueError):
            seal.seal(reader, key, kv, eid, PARCEL, "042917")
