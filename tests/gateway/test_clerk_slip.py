"""The clerk's "print a pickup slip" (gateway/http/clerk_slip.py and
gateway/counter/slip.py) through the real gateway web server, a real SQLite
store and an ESC/POS receipt printer on a pty (tests/gateway/counter/
printer_rig.py answers its paper-status query like a real one): the slip's
bytes are parsed as ESC/POS, with the code only when the gateway's notifier
key opens the box the locker sealed, and the code never in an event, a page
or the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import metrics as M
from gateway.counter.acceptance import CounterDesk
from gateway.counter.printers import Printer
from gateway.counter.slip import LockerSlip, locker_slip
from gateway.store.events import EventStore
from tests.gateway.clerk_rig import PARCEL, Rig
from tests.gateway.counter.platform_rig import KEYS as PLATFORM_KEYS
from tests.gateway.counter.printer_rig import PtyPrinter
from tests.notify_rig import deposit, key_file, pickup

SEALED = "RB987654321CN"  # deposited at lk02 with a code sealed for the notifier
GONE = "RB555555555CN"  # deposited and picked up
CODE = "482913"
PAPER_OK, PAPER_OUT = b"\x12", b"\x72"  # DLE EOT 4 answers: roll fine / bits 5-6 set, out of paper


class SlipRig:
    def __init__(self, root: Path) -> None:
        self.receipt = PtyPrinter({b"\x10\x04\x04": PAPER_OK})
        self.desk: CounterDesk | None = None
        keys = key_file(root / "notify-keys.toml")

        def web(db: Path) -> dict[str, object]:
            self.desk = CounterDesk(db, "o1", root / "gw" / "counter", PLATFORM_KEYS, None, None,
                                    Printer("receipt", self.receipt.path, "escpos", status_timeout_s=0.5))
            return {"counter": self.desk, "notify_key_file": str(keys)}

        self.rig = Rig(root, web)
        store = EventStore(self.rig.db)
        try:
            store.commit_events([deposit("lk02", 1, SEALED, CODE, expires=int(time.time()) + 2 * 86400),
                                 deposit("lk02", 2, GONE, "111111"), pickup("lk02", 3, GONE)])
        finally:
            store.close()

    def printed(self, before: int, timeout: float = 3.0) -> bytes:
        """The job the printer got after ``before`` bytes (the status query stripped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.receipt.received[before:]
            if got.endswith(b"\x1dV\x00"):  # GS V 0: the cut ends every slip
                return got.replace(b"\x10\x04\x04", b"")
            time.sleep(0.05)
        raise AssertionError(f"nothing printed: {self.receipt.received[before:]!r}")

    def close(self) -> None:
        self.rig.close()
        if self.desk is not None:
            self.desk.close()
        self.receipt.close()


@pytest.fixture
def slips(tmp_path: Path) -> Iterator[SlipRig]:
    r = SlipRig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def counted(outcome: str) -> float:
    labels = {"action": "slip", "outcome": outcome}
    return M.REGISTRY.get_sample_value("postedge_clerk_actions_total", labels) or 0.0


def qr_data(job: bytes) -> bytes | None:
    """The data of an ESC/POS QR symbol (GS ( k, cn 49, fn 80: store), or None."""
    at = job.find(b"\x1d(k")
    while at >= 0:
        pl, ph, cn, fn = job[at + 3], job[at + 4], job[at + 5], job[at + 6]
        if cn == 0x31 and fn == 0x50:
            n = pl + 256 * ph
            return job[at + 8:at + 5 + n]
        at = job.find(b"\x1d(k", at + 1)
    return None


def all_payloads(db: Path) -> bytes:
    store = EventStore(db)
    try:
        return b"".join(bytes(r[0]) for r in store.db.execute("SELECT payload FROM events "
                                                               "WHERE type LIKE 'gateway.%'"))
    finally:
        store.close()


def test_a_clerk_prints_a_slip_with_the_code_the_gateway_can_open(slips: SlipRig) -> None:
    c = slips.rig.client()
    assert c.login("bo") == 303  # a clerk, not a supervisor
    code, _, html = c.get(f"/clerk?lang=en&q={SEALED}")
    assert code == 200 and 'action="/clerk/slip"' in html and "Print a pickup slip" in html
    before, n0 = len(slips.receipt.received), counted("code")
    code, _, html = c.post("/clerk/slip", {"csrf": c.csrf(), "parcel": SEALED, "lang": "en"})
    assert code == 200, html
    assert "with the pickup code" in html and CODE not in html
    job = slips.printed(before)
    assert job.startswith(b"\x1c&")  # FS &: the printer's Chinese mode, then GB 18030 text
    assert qr_data(job) == f"PE-P:{CODE}".encode()
    assert b"\x1d(k\x03\x001Q0" in job  # print the stored symbol
    assert f"{CODE[:3]} {CODE[3:]}".encode() in job
    assert b"Locker lk02, compartment 3" in job
    assert "智能柜 lk02  3 号格口".encode("gb18030") in job
    assert "包裹尾号 …4321CN".encode("gb18030") in job and SEALED.encode() not in job
    assert b"Collect before " in job and "请于 ".encode("gb18030") in job
    assert "取件码将通过短信".encode("gb18030") not in job
    assert counted("code") == n0 + 1
    [ev] = slips.rig.own_events("gateway.clerk_slip")
    body = ev["body"]
    assert body == {"by": "bo", "role": "clerk", "parcel": SEALED, "device": "lk02", "compartment": 3,
                    "with_code": True, "why": "opened", "printed": True}
    assert ev["cls"] == "audit"
    assert CODE.encode() not in all_payloads(slips.rig.db)
    assert CODE.encode() not in slips.rig.db.read_bytes()


def test_no_code_on_the_slip_when_the_gateway_cannot_open_it(slips: SlipRig) -> None:
    c = slips.rig.client()
    c.login("bo")
    # The rig's parcel was coded by the platform: only the platform can read it.
    before, n0 = len(slips.receipt.received), counted("no_code")
    code, _, html = c.post("/clerk/slip", {"csrf": c.csrf(), "parcel": PARCEL, "lang": "en"})
    assert code == 200 and "without the code" in html and "only the platform" in html
    job = slips.printed(before)
    assert qr_data(job) is None
    assert "取件码将通过短信或邮政平台发送给您".encode("gb18030") in job
    assert b"Your pickup code comes by SMS or through the China Post platform" in job
    assert b"Locker lk01, compartment 3" in job
    assert counted("no_code") == n0 + 1
    # A gateway without the notifier key: a sealed code stays sealed.
    clerk = slips.rig.svc.http.clerk
    assert clerk is not None and clerk.slips is not None
    clerk.slips.key_file = None
    before = len(slips.receipt.received)
    code, _, html = c.post("/clerk/slip", {"csrf": c.csrf(), "parcel": SEALED, "lang": "zh"})
    assert code == 200 and "本网关没有通知密钥" in html
    job = slips.printed(before)
    assert qr_data(job) is None and CODE.encode() not in job and b"482 913" not in job
    whys = [e["body"]["why"] for e in slips.rig.own_events("gateway.clerk_slip")]
    assert whys == ["platform_code", "no_key"]


def test_refusals_are_clear_counted_and_print_nothing(slips: SlipRig) -> None:
    c = slips.rig.client()
    # not logged in, then no CSRF token, then from another site
    code, _, _ = c.post("/clerk/slip", {"parcel": SEALED})
    assert code == 401
    c.login("bo")
    code, _, html = c.post("/clerk/slip", {"parcel": SEALED, "lang": "en"})
    assert code == 403
    code, _, _ = c.post("/clerk/slip", {"csrf": c.csrf(), "parcel": SEALED},
                        headers={"Origin": "http://evil.example"})
    assert code == 403
    n0 = counted("not_in_locker")
    code, _, html = c.post("/clerk/slip", {"csrf": c.csrf(), "parcel": GONE, "lang": "en"})
    assert code == 404 and "not in a locker now" in html
    assert counted("not_in_locker") == n0 + 1
    code, _, html = c.post("/clerk/slip", {"csrf": c.csrf(), "parcel": "<b>x</b>", "lang": "en"})
    assert code == 400 and "Not a parcel id" in html and "<b>x" not in html
    assert slips.rig.own_events("gateway.clerk_slip") == []
    assert b"\x1dV\x00" not in slips.receipt.received  # nothing was printed


def test_an_empty_roll_is_reported_and_audited(slips: SlipRig) -> None:
    c = slips.rig.client()
    c.login("bo")
    slips.receipt.answers[b"\x10\x04\x04"] = PAPER_OUT
    n0 = counted("printer_out_of_paper")
    code, _, html = c.post("/clerk/slip", {"csrf": c.csrf(), "parcel": SEALED, "lang": "en"})
    assert code == 503 and "out of paper" in html
    assert counted("printer_out_of_paper") == n0 + 1
    [ev] = slips.rig.own_events("gateway.clerk_slip")
    assert ev["body"]["printed"] is False and ev["body"]["error"] == "out_of_paper"
    assert b"\x1dV\x00" not in slips.receipt.received  # the job was never sent
    slips.receipt.answers[b"\x10\x04\x04"] = PAPER_OK
    before = len(slips.receipt.received)
    code, _, _ = c.post("/clerk/slip", {"csrf": c.csrf(), "parcel": SEALED, "lang": "en"})
    assert code == 200 and qr_data(slips.printed(before)) == f"PE-P:{CODE}".encode()


def test_no_receipt_printer_no_slip_button(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        c = rig.client()
        c.login("bo")
        code, _, html = c.get(f"/clerk?lang=en&q={PARCEL}")
        assert code == 200 and 'action="/clerk/slip"' not in html
        code, _, html = c.post("/clerk/slip", {"csrf": c.csrf(), "parcel": PARCEL, "lang": "en"})
        assert code == 503 and "receipt_url" in html
    finally:
        rig.close()


def test_the_slip_refuses_a_code_that_is_not_six_digits() -> None:
    for bad in ("12345", "1234567", "12a456", "١٢٣٤٥٦"):
        with pytest.raises(ValueError):
            locker_slip(LockerSlip("lk01", 3, "RB123456785CN", {"zh": "?", "en": "?"}, bad))
    job = locker_slip(LockerSlip("lk01", "?", "RB1", {"zh": "?", "en": "?"}, None))
    assert qr_data(job) is None and b"Parcel ending RB1" in job and b"compartment ?" in job
    assert "取件码将通过短信".encode("gb18030") in job
