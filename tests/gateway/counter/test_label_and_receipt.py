"""Labels (ZPL, TSPL) and receipts (ESC/POS) parsed back from their bytes,
hostile text kept as text, and the printers' status over a pty: out of
paper is reported before anything is printed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from gateway.counter.label import Label, kg, render, yuan
from gateway.counter.printers import Printer, PrinterError
from gateway.counter.receipt import Receipt, pickup_slip, receipt
from tests.gateway.counter.printer_rig import HS_HEAD_UP, HS_OK, HS_PAPER_OUT, PtyPrinter

LABEL = Label(waybill="9512345678903", service="标准快递 Standard", sender="李四 ****1234 贵州省黔东南州",
              recipient_name="王五", recipient_phone="138****5678",
              recipient_address="北京市朝阳区建国路 1 号",
              recipient_postcode="100020", weight_g=2345, postage_fen=1650, box="PE-BOX-F5", outlet="o1",
              date="2026-12-03")


def zpl_fields(data: bytes) -> tuple[str, list[str]]:
    text = data.decode("latin-1")
    barcode = re.findall(r"\^BC[^\^]*\^FD([^\^]*)\^FS", text)
    fields = []
    for raw in re.findall(r"\^FH_\^FD([^\^]*)\^FS", text):
        b = re.sub(r"_([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), raw).encode("latin-1")
        fields.append(b.decode("utf-8"))
    assert len(barcode) == 1
    return barcode[0], fields


def tspl_fields(data: bytes) -> tuple[str, list[str]]:
    barcode, fields = [], []
    for line in data.split(b"\r\n"):
        m = re.match(rb'^BARCODE \d+,\d+,"128",\d+,1,0,\d+,\d+,"([^"]*)"$', line)
        if m:
            barcode.append(m.group(1).decode())
        m = re.match(rb'^BLOCK \d+,\d+,\d+,\d+,"TSS24.BF2",0,\d,\d,"((?:\\\["\]|[^"])*)"$', line)
        if m:
            fields.append(m.group(1).replace(b'\\["]', b'"').decode("gb18030"))
    assert len(barcode) == 1
    return barcode[0], fields


@pytest.mark.parametrize("lang,parse", [("zpl", zpl_fields), ("tspl", tspl_fields)])
def test_label_carries_the_waybill_code128_and_every_field(lang: str, parse) -> None:  # type: ignore[no-untyped-def]
    data = render(lang, LABEL)
    code, fields = parse(data)
    assert code == "9512345678903"
    text = "\n".join(fields)
    for want in ("标准快递 Standard", "王五", "138****5678", "北京市朝阳区建国路 1 号 100020", "李四",
                 "2.345 kg", "¥16.50", "PE-BOX-F5"):
        assert want in text, want
    if lang == "zpl":
        assert data.startswith(b"^XA") and data.count(b"^XA") == 1 and data.count(b"^XZ") == 1
        assert b"^BCN," in data and b"^CI28" in data
    else:
        assert data.count(b"PRINT ") == 1 and b'"128"' in data


def test_charity_parcels_name_donor_and_beneficiary() -> None:
    lab = Label(**{**LABEL.__dict__, "charity": "爱心企业 → 黔东南州某小学"})
    _, fields = zpl_fields(render("zpl", lab))
    assert any("爱心企业 → 黔东南州某小学" in f for f in fields)


HOSTILE = ['^XZ^XA^FO0,0^FDpwn^FS~JR^XZ', 'x"\r\nPRINT 99\r\nCLS', "_5E \\ ~ ^", "\x1b@\x1dV\x00",
           "𠀀𪚥 emoji 📦", "\u202eRTL", "名" * 300]


@pytest.mark.parametrize("evil", HOSTILE)
def test_hostile_text_stays_text_on_both_label_languages(evil: str) -> None:
    lab = Label(**{**LABEL.__dict__, "recipient_name": evil, "sender": evil})
    z = render("zpl", lab)
    assert z.count(b"^XA") == 1 and z.count(b"^XZ") == 1 and b"~JR" not in z and b"\x1b" not in z
    _, zf = zpl_fields(z)
    assert any(evil.replace("\r", "").replace("\n", "") in f.replace("\r", "").replace("\n", "")
               or evil in f for f in zf)
    t = render("tspl", lab)
    lines = t.split(b"\r\n")
    assert sum(1 for ln in lines if ln.startswith(b"PRINT")) == 1 and b"\x1b" not in t
    assert not any(ln.startswith(b"CLS") for ln in lines[4:])
    _, tf = tspl_fields(t)
    assert len(tf) == len(tspl_fields(render("tspl", LABEL))[1])  # no field split or lost


def test_a_waybill_that_is_not_alphanumeric_never_reaches_a_label() -> None:
    for bad in ("951^XZ", '95"1', "", "9" * 41, "９５１２"):
        with pytest.raises(ValueError):
            render("zpl", Label(**{**LABEL.__dict__, "waybill": bad}))
        with pytest.raises(ValueError):
            render("tspl", Label(**{**LABEL.__dict__, "waybill": bad}))


def test_amounts_format_from_integers() -> None:
    assert kg(1) == "0.001 kg" and kg(12345) == "12.345 kg" and kg(0) == "0.000 kg"
    assert yuan(5) == "¥0.05" and yuan(1650) == "¥16.50" and yuan(10**9) == "¥10000000.00"


# -- receipts
def test_receipt_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    data = receipt(Receipt("o1", "2026-12-03 10:15", "9512345678903", "公益包裹 Charity", "王五 北京",
                           2345, 0, "PE-BOX-F5", charity="爱心企业 → 小学"))
    assert data.startswith(b"\x1c\x26")  # Chinese mode
    assert "中国邮政 寄件收据".encode("gb18030") in data
    assert "邮资 Postage: ¥0.00".encode("gb18030") in data
    assert "公益 Charity: 爱心企业 → 小学".encode("gb18030") in data
    # GS k 73 (CODE128), length, "{B" + the waybill
    assert b"\x1dkI\x0f{B9512345678903" in data
    assert data.endswith(b"\x1dV\x00")  # cut
    assert capsys.readouterr().out == ""  # stdout is the gateway's JSON log: nothing else goes there


def test_receipt_drops_control_characters_from_names() -> None:
    data = receipt(Receipt("o1", "t", "9512345678903", "s", "王\x1b@五\x1dV\x00", 1, 1, "B"))
    assert "收件人 To: 王@五V".encode("gb18030") in data


def test_pickup_slip_has_the_code_qr() -> None:
    data = pickup_slip("042917", "9512345678903", "lk01", "2026-12-10")
    # GS ( k ... store data in the symbol area: pL pH cn=49 fn=80 m=48, then the data
    payload = b"PE-P:042917"
    n = len(payload) + 3
    assert bytes([0x1D, 0x28, 0x6B, n & 0xFF, n >> 8, 0x31, 0x50, 0x30]) + payload in data
    assert b"\x1d(k\x03\x001Q0" in data  # print the symbol
    assert "042 917".encode("gb18030") in data
    for bad in ("12345", "1234567", "12a456", "١٢٣٤٥٦"):
        with pytest.raises(ValueError):
            pickup_slip(bad, "p", "l", "d")


# -- printer status over a pty
@pytest.fixture
def printers() -> Iterator[list[PtyPrinter]]:
    made: list[PtyPrinter] = []
    yield made
    for p in made:
        p.close()


def pty_printer(made: list[PtyPrinter], answers: dict[bytes, bytes]) -> PtyPrinter:
    p = PtyPrinter(answers)
    made.append(p)
    return p


@pytest.mark.parametrize("lang,query,answer,reason", [
    ("tspl", b"\x1b!?", b"\x04", "out_of_paper"), ("tspl", b"\x1b!?", b"\x01", "head_open"),
    ("tspl", b"\x1b!?", b"\x08", "ribbon_out"), ("tspl", b"\x1b!?", b"\x05", "out_of_paper"),
    ("zpl", b"~HS", HS_PAPER_OUT, "out_of_paper"), ("zpl", b"~HS", HS_HEAD_UP, "head_open"),
    ("zpl", b"~HS", b"\x02garbage\x03\r\n\x02x\x03\r\n\x02y\x03\r\n", "printer_error"),
    ("escpos", b"\x10\x04\x04", b"\x72", "out_of_paper"),
    ("zpl", b"~HS", b"", "no_answer"), ("escpos", b"\x10\x04\x04", b"", "no_answer"),
])
def test_printer_problems_are_reported_and_nothing_is_printed(printers, lang: str, query: bytes,  # type: ignore[no-untyped-def]
                                                              answer: bytes, reason: str) -> None:
    p = pty_printer(printers, {query: answer})
    pr = Printer(lang, p.path, lang, status_timeout_s=0.4)
    job = render(lang, LABEL) if lang != "escpos" else pickup_slip("042917", "x", "lk01", "d")
    with pytest.raises(PrinterError) as e:
        pr.send(job)
    assert e.value.reason == reason
    import time
    time.sleep(0.1)
    assert p.received.endswith(query) and job not in p.received


@pytest.mark.parametrize("lang,query,answer", [
    ("tspl", b"\x1b!?", b"\x00"), ("tspl", b"\x1b!?", b"\x20"), ("zpl", b"~HS", HS_OK),
    ("escpos", b"\x10\x04\x04", b"\x12"),
])
def test_a_ready_printer_gets_the_job(printers, lang: str, query: bytes, answer: bytes) -> None:  # type: ignore[no-untyped-def]
    p = pty_printer(printers, {query: answer})
    job = render(lang, LABEL) if lang != "escpos" else receipt(
        Receipt("o1", "t", "9512345678903", "s", "r", 1, 1, "B"))
    assert Printer(lang, p.path, lang, status_timeout_s=0.5).send(job) is None
    import time
    deadline = time.monotonic() + 2
    while job not in p.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job in p.received


def test_near_end_paper_prints_and_says_so(printers) -> None:  # type: ignore[no-untyped-def]
    p = pty_printer(printers, {b"\x10\x04\x04": b"\x1e"})
    assert Printer("receipt", p.path, "escpos", status_timeout_s=0.5).send(b"hello") == "paper_near_end"


def test_an_unplugged_printer_and_a_file_printer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PrinterError) as e:
        Printer("label", "/dev/ttyUSB-postedge-missing", "zpl").send(b"^XA^XZ")
    assert e.value.reason == "unplugged"
    out = tmp_path / "labels.zpl"
    Printer("label", f"file:{out}", "zpl").send(render("zpl", LABEL))
    assert zpl_fields(out.read_bytes())[0] == "9512345678903"
