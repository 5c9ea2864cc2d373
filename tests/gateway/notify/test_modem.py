"""The modem driver against the simulated modem over a real pty: the AT
dialogue byte for byte, delivery reports, and every way a modem misbehaves."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.notify.modem import INIT, Modem, ModemError
from gateway.notify.pdu import StatusReport, encode_submit
from simulator.modem_sim import ModemSim

PHONE = "+8613800138000"
Rig = tuple[Modem, list[StatusReport]]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[ModemSim]:
    s = ModemSim(tmp_path / "ttyModem")
    yield s
    s.close()


@pytest.fixture
def modem(sim: ModemSim) -> Iterator[Rig]:
    reports: list[StatusReport] = []
    m = Modem(str(sim.path), timeout_s=0.5, send_timeout_s=1.0, on_report=reports.append)
    m.open()
    yield m, reports
    m.close()


def test_setup_dialogue_and_a_long_chinese_text(sim: ModemSim, modem: Rig) -> None:
    m, reports = modem
    assert sim.commands[-len(INIT):] == list(INIT)
    text = "【邮政】取件码 654321，请到村邮站智能柜取件。" * 5
    parts = encode_submit(PHONE, text, ref=9)
    mrs = [m.send_part(p) for p in parts]
    assert len(mrs) == len(parts) > 1 and len(set(mrs)) == len(mrs)
    assert sim.texts() == [(PHONE, text)]
    assert [c for c in sim.commands if c.startswith("AT+CMGS")] == [f"AT+CMGS={p.tpdu_len}" for p in parts]
    deadline = time.monotonic() + 3
    while len(reports) < len(parts) and time.monotonic() < deadline:
        m.poll(0.1)
    assert sorted(r.mr for r in reports) == sorted(mrs) and all(r.delivered for r in reports)


def test_garbage_on_the_line_is_counted_and_skipped(sim: ModemSim, modem: Rig) -> None:
    m, _ = modem
    sim.garbage()
    sim.garbage(os.urandom(3000).replace(b">", b"").replace(b"\n", b""))  # a line that never ends
    assert m.send_part(encode_submit(PHONE, "hello")[0]) >= 0
    assert sim.texts() == [(PHONE, "hello")]
    assert m.stats["garbage"] >= 2
    # a +CDS whose PDU is noise is counted, not raised
    sim._send(b"\r\n+CDS: 25\r\nZZZZ\r\n")
    m.poll(0.2)
    assert m.stats["report_bad"] == 1


def test_cms_error_is_reported_as_not_sent(sim: ModemSim, modem: Rig) -> None:
    m, _ = modem
    sim.cms_errors = [38, 21]
    part = encode_submit(PHONE, "hello")[0]
    with pytest.raises(ModemError) as e:
        m.send_part(part)
    assert (e.value.kind, e.value.code, e.value.transient, e.value.sent_maybe) == ("cms", 38, True, False)
    with pytest.raises(ModemError) as e:
        m.send_part(part)
    assert (e.value.code, e.value.transient) == (21, False)  # short message transfer rejected: permanent
    assert m.send_part(part) >= 0
    assert sim.texts() == [(PHONE, "hello")]


def test_silence_before_the_prompt_is_a_safe_timeout(sim: ModemSim, modem: Rig) -> None:
    m, _ = modem
    sim.silent = True
    with pytest.raises(ModemError) as e:
        m.send_part(encode_submit(PHONE, "hello")[0])
    assert (e.value.kind, e.value.sent_maybe) == ("timeout", False)
    assert sim.received == []
    sim.silent = False
    m.open()  # the notifier reopens after a timeout
    assert m.send_part(encode_submit(PHONE, "again")[0]) >= 0


def test_silence_after_the_pdu_may_have_sent(sim: ModemSim, modem: Rig) -> None:
    m, _ = modem
    sim.swallow = True
    with pytest.raises(ModemError) as e:
        m.send_part(encode_submit(PHONE, "hello")[0])
    assert (e.value.kind, e.value.sent_maybe) == ("timeout", True)
    assert sim.texts() == [(PHONE, "hello")]  # it did go out: a retry would text twice


def test_unplug_and_replug(sim: ModemSim, modem: Rig) -> None:
    m, _ = modem
    sim.unplug()
    with pytest.raises(ModemError) as e:
        m.send_part(encode_submit(PHONE, "hello")[0])
    assert e.value.kind == "unplugged" and not m.is_open
    with pytest.raises(ModemError) as e:
        m.send_part(encode_submit(PHONE, "hello")[0])
    assert e.value.kind == "unplugged"
    sim.plug()
    m.open()
    assert m.send_part(encode_submit(PHONE, "back")[0]) >= 0
    assert sim.texts() == [(PHONE, "back")]


def test_no_device_at_all(tmp_path: Path) -> None:
    m = Modem(str(tmp_path / "nothing"), timeout_s=0.2)
    with pytest.raises(ModemError) as e:
        m.open()
    assert e.value.kind == "unplugged"
