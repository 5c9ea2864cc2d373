"""The customer's receipt and the villager's pickup slip on the counter's
ESC/POS receipt printer, built with python-escpos (its ``Dummy`` printer
collects the bytes; ``printers.Printer`` sends them after the paper check).

Chinese text: counter receipt printers sold in China print GB 18030 in
their Chinese character mode (``FS &``), so Chinese lines go out as GB
18030 bytes; python-escpos's own text encoder targets single-byte code
pages and is used only for ASCII. Control characters in anything a person
typed are dropped, so a name cannot smuggle an ``ESC``/``GS`` command.

The pickup slip is for villagers without a phone: the code as
a QR ``PE-P:<code>`` (what the locker's scanner reads,
``docs/security.md`` "Guessing a pickup code") and as digits. The code is
a parameter, never logged or stored here: the notifier owns it.
"""

from __future__ import annotations

from dataclasses import dataclass

from escpos.printer import Dummy

from gateway.counter.label import kg, yuan

CHINESE_MODE = b"\x1c\x26"  # FS &
MAX_LINE = 200


def clean(text: str) -> str:
    return "".join(c for c in text if c.isprintable())[:MAX_LINE]


def _line(p: Dummy, text: str) -> None:
    p._raw(clean(text).encode("gb18030", errors="replace") + b"\n")


@dataclass(frozen=True)
class Receipt:
    outlet: str
    when: str  # "2026-12-03 10:15"
    waybill: str
    service: str
    recipient: str  # name and place, no full phone
    weight_g: int
    postage_fen: int
    box: str
    charity: str = ""


def receipt(r: Receipt) -> bytes:
    p = Dummy()
    p._raw(CHINESE_MODE)
    p.set(align="center", bold=True, double_height=True, double_width=True)
    _line(p, "中国邮政 寄件收据")
    p.set(align="center", bold=False, normal_textsize=True)
    _line(p, "China Post - Receipt")
    _line(p, f"{r.outlet}  {r.when}")
    p.set(align="left")
    _line(p, f"运单 Waybill: {r.waybill}")
    _line(p, f"业务 Service: {r.service}")
    _line(p, f"收件人 To: {r.recipient}")
    if r.charity:
        _line(p, f"公益 Charity: {r.charity}")
    _line(p, f"箱型 Box: {r.box}")
    _line(p, f"重量 Weight: {kg(r.weight_g)}")
    p.set(bold=True)
    _line(p, f"邮资 Postage: {yuan(r.postage_fen)}")
    p.set(bold=False, align="center")
    # The hardware renderer (GS k) directly: ``barcode()`` would print
    # "Using hardware barcode renderer" to stdout, which is the gateway's log.
    p._hw_barcode("{B" + r.waybill, "CODE128", 64, 2, "BELOW", "A", True, "B", True)
    _line(p, "请保留本收据 Please keep this receipt")
    p.cut()
    return bytes(p.output)


def pickup_slip(code: str, parcel: str, locker: str, expires: str) -> bytes:
    """A slip with the pickup code's QR; ``code`` is 6 digits."""
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        raise ValueError("a pickup code is 6 digits")
    p = Dummy()
    p._raw(CHINESE_MODE)
    p.set(align="center", bold=True, double_height=True, double_width=True)
    _line(p, "取件码 Pickup code")
    p.set(align="center", bold=False, normal_textsize=True)
    p.qr(f"PE-P:{code}", native=True, size=8)
    p.set(align="center", bold=True, double_height=True, double_width=True)
    _line(p, f"{code[:3]} {code[3:]}")
    p.set(align="left", bold=False, normal_textsize=True)
    _line(p, f"包裹 Parcel: {parcel}")
    _line(p, f"柜 Locker: {locker}")
    _line(p, f"请于 {expires} 前取件 Collect before {expires}")
    _line(p, "在柜机扫描二维码或输入取件码 Scan the QR at the locker or type the code")
    p.cut()
    return bytes(p.output)
