"""A code the locker issues offline leaves it only sealed (protocol/seal.py):
never in the deposit body, the event log or the journal on flash, and a
replay after a power cut re-sends the very same boxes. The platform and the
outlet's notifier open them; the locker's keypad takes the code they read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from firmware.locker import compartments as K
from protocol import seal
from protocol.errors import BadSeal
from tests.locker_rig import PLATFORM, Rig

PARCEL = "RB123456785GB"


def clear(code: str, text: str | bytes) -> bool:
    """Whether `code` stands on its own in `text` (not inside a longer run
    of hex digits such as a sealed box, where 6 digits turn up by chance)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return re.search(rf"(?<![0-9a-fA-F]){code}(?![0-9a-fA-F])", text) is not None


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path, log_events=True)
    yield r
    r.close()


def _deposit(rig: Rig, lines: list[dict[str, Any]]) -> dict[str, Any]:
    lk = rig.locker
    lk.log = lambda evt, **kw: lines.append({"evt": evt, **kw})
    lk.courier_login(rig.provision_courier())
    rig.run(rig.with_person(lk.deposit(PARCEL, "M")))
    lk.courier_logout()
    [dep] = rig.events("locker.deposit")
    return dep


def test_offline_code_leaves_the_locker_sealed_and_opens_the_door(rig: Rig) -> None:
    lines: list[dict[str, Any]] = []
    dep = _deposit(rig, lines)
    body = dep["body"]
    assert body["code_by"] == "locker" and "code" not in body
    assert set(body["code_sealed"]) == {"platform", "notifier"}
    code = PLATFORM.open_code(dep)
    assert seal.open_for_notifier({1: PLATFORM.notifier_key()}, dep) == code
    assert re.fullmatch(r"\d{6}", code)
    # Nowhere in clear: the outbox record, the event log, any file on flash.
    raw = [p for _, _, t, p in rig.locker.outbox.pending(10_000) if t.endswith("/evt")]
    assert raw and not any(clear(code, p) for p in raw)
    assert any(d["evt"] == "event" and d["type"] == "locker.deposit" for d in lines)
    assert not any(clear(code, repr(d)) for d in lines)
    flash = [f for f in (rig.tmp / "flash").rglob("*") if f.is_file()]
    assert flash and not any(clear(code, f.read_bytes()) for f in flash)
    # The code the platform read is the one the keypad takes.
    cid = body["compartment"]
    assert rig.run(rig.with_person(rig.locker.pickup(code))) == cid
    assert rig.locker.comps.get(cid)["state"] == K.FREE


def test_a_wrong_key_or_a_tampered_box_is_refused(rig: Rig) -> None:
    dep = _deposit(rig, [])
    with pytest.raises(BadSeal):
        seal.open_box("platform", PLATFORM.key("lk02"), dep)
    with pytest.raises(BadSeal):
        seal.open_for_notifier({1: seal.notifier_key(b"\x01" * 32, "o1", 1)}, dep)
    box = dep["body"]["code_sealed"]["platform"]["box"]
    dep["body"]["code_sealed"]["platform"]["box"] = box[:-1] + ("0" if box[-1] != "0" else "1")
    with pytest.raises(BadSeal):
        PLATFORM.open_code(dep)


def test_without_a_notifier_key_the_code_is_sealed_for_the_platform_only(tmp_path: Path) -> None:
    r = Rig(tmp_path, notify=None)
    try:
        dep = _deposit(r, [])
        assert set(dep["body"]["code_sealed"]) == {"platform"}
        assert re.fullmatch(r"\d{6}", PLATFORM.open_code(dep))
    finally:
        r.close()


def test_a_replay_after_a_power_cut_resends_the_same_boxes(rig: Rig) -> None:
    """The boxes are sealed once, into the journal, before the door cycle
    is applied: a replay after a cut re-sends them under the same event id
    (and so the same nonce), never a second sealing of a new code."""
    lk = rig.locker
    lk.courier_login(rig.provision_courier())

    class Cut(Exception):
        pass

    real = lk.journal.write

    def write(entry: dict) -> None:
        real(entry)
        if entry["step"] == "closing":
            raise Cut()

    lk.journal.write = write
    with pytest.raises(Cut):
        rig.run(rig.with_person(lk.deposit(PARCEL, "M")))
    journal = (rig.tmp / "flash" / "journal").read_text()
    assert '"sealed"' in journal and '"plain"' not in journal
    lk2 = rig.boot()
    assert rig.run(lk2.recover()) == "replayed"
    [dep] = rig.events("locker.deposit")
    code = PLATFORM.open_code(dep)
    assert not clear(code, journal)
    assert rig.run(rig.with_person(lk2.pickup(code))) == dep["body"]["compartment"]


def test_a_journal_from_older_firmware_with_the_code_in_clear_goes_up_sealed(rig: Rig) -> None:
    """Firmware before this change kept the code in the journal ("plain"); a
    locker updated with such an entry pending seals it on the replay."""
    lk = rig.locker
    lk.courier_login(rig.provision_courier())

    class Cut(Exception):
        pass

    real = lk.journal.write

    def write(entry: dict) -> None:
        if entry["step"] == "closing":
            code = entry["code"]
            sealed = code.pop("sealed")
            code["plain"] = PLATFORM.open_code({"id": entry["eid"], "body": {
                "parcel": entry["info"]["parcel"], "code_sealed": sealed}})
            real(entry)
            raise Cut()
        real(entry)

    lk.journal.write = write
    with pytest.raises(Cut):
        rig.run(rig.with_person(lk.deposit(PARCEL, "M")))
    lk2 = rig.boot()
    assert rig.run(lk2.recover()) == "replayed"
    [dep] = rig.events("locker.deposit")
    assert "code" not in dep["body"] and set(dep["body"]["code_sealed"]) == {"platform", "notifier"}
    assert rig.run(rig.with_person(lk2.pickup(PLATFORM.open_code(dep)))) == dep["body"]["compartment"]
