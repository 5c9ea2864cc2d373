"""The shipping label, as the bytes a thermal label printer reads: ZPL II
(Zebra and its clones) or TSPL (TSC, Xprinter, Gprinter, HPRT: the labels
most Chinese counters have). A 100 × 150 mm label at 203 dpi (8 dots/mm):
the waybill's Code 128 (ZPL ``^BC``, TSPL ``BARCODE "128"``) with its
digits, service, recipient, sender, weight, postage, box and outlet.

Everything on a label that came from a person is escaped so it can only
ever be text: a sender named ``^XZ^XA^FDx`` or ``"\\r\\nPRINT 99`` must not
become printer commands.

* ZPL: ``^CI28`` (UTF-8) and every field through ``^FH`` (field hex, ``_``
  as the indicator): ``^``, ``~``, ``_``, ``\\`` and control bytes are
  written as ``_XX``. Chinese needs a CJK font on the printer; the font is
  configurable (``zpl_font``, default ``E:SIMSUN.FNT`` as Zebra's
  Simplified Chinese kit installs it).
* TSPL: text in ``BLOCK`` boxes (they wrap); ``CODEPAGE`` is not used for Chinese; the resident Simplified
  Chinese font ``TSS24.BF2`` reads GB 18030/GBK bytes. A ``"`` in a field
  is TSPL's ``\\["]``, control characters are dropped, and a character GB
  18030 cannot encode (none in practice) becomes ``?``.

Amounts are formatted from integers: grams as ``1.234 kg``, fen as
``¥12.00``; no float ever touches them.
"""

from __future__ import annotations

from dataclasses import dataclass

DOTS_PER_MM = 8
WIDTH_MM = 100
HEIGHT_MM = 150
LANGUAGES = ("zpl", "tspl")


@dataclass(frozen=True)
class Label:
    waybill: str
    service: str  # a short, already translated name: "标准快递 Standard"
    sender: str  # one line: name, phone tail, place
    recipient_name: str
    recipient_phone: str
    recipient_address: str
    recipient_postcode: str
    weight_g: int
    postage_fen: int
    box: str
    outlet: str
    date: str  # YYYY-MM-DD
    charity: str = ""  # "donor → beneficiary" for a charity parcel


def kg(grams: int) -> str:
    sign = "-" if grams < 0 else ""
    g = abs(grams)
    return f"{sign}{g // 1000}.{g % 1000:03d} kg"


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    f = abs(fen)
    return f"{sign}¥{f // 100}.{f % 100:02d}"


def lines(label: Label) -> list[tuple[str, str]]:
    """(slot, text) in print order; both languages build from this, so
    they cannot disagree on what a label says."""
    out = [("service", label.service),
           ("to", f"收 {label.recipient_name}  {label.recipient_phone}"),
           ("to_addr", f"{label.recipient_address} {label.recipient_postcode}"),
           ("from", f"寄 {label.sender}")]
    if label.charity:
        out.append(("charity", f"公益 {label.charity}"))
    out += [("weight", f"重量 {kg(label.weight_g)}   邮资 {yuan(label.postage_fen)}"),
            ("box", f"箱 {label.box}   {label.outlet}   {label.date}")]
    return out


# -- ZPL
_ZPL_SPECIAL = set(b"^~_\\")


def zpl_field(text: str) -> str:
    """A field's data for ``^FH^FD``: UTF-8 with every special byte hex-escaped."""
    out = []
    for b in text.encode("utf-8"):
        if b in _ZPL_SPECIAL or b < 0x20 or b == 0x7F:
            out.append(f"_{b:02X}")
        else:
            out.append(chr(b))
    # The non-ASCII bytes were turned into latin-1 code points above; the
    # caller encodes the whole format as latin-1, which gives the UTF-8 back.
    return "".join(out)


def _check_waybill(waybill: str) -> None:
    # Validated before (protocol/barcodes.py); checked again because it is
    # the one field written into a command without escaping.
    if not (0 < len(waybill) <= 40 and waybill.isascii() and waybill.isalnum()):
        raise ValueError("a waybill on a label is 1-40 ASCII letters and digits")


def zpl(label: Label, font: str = "E:SIMSUN.FNT") -> bytes:
    _check_waybill(label.waybill)
    d = DOTS_PER_MM
    parts = ["^XA", "^CI28", f"^PW{WIDTH_MM * d}", f"^LL{HEIGHT_MM * d}", "^LH0,0",
             f"^CW1,{font}",
             # Code 128, 120 dots high, the digits printed below, no check digit added (UCC off)
             f"^FO{6 * d},{6 * d}^BY3^BCN,{15 * d},Y,N,N^FD{label.waybill}^FS"]
    y = 32 * d
    for slot, text in lines(label):
        size = 5 * d if slot == "service" else 4 * d
        parts.append(f"^FO{6 * d},{y}^A1N,{size},{size}^FB{88 * d},2,0,L^FH_^FD{zpl_field(text)}^FS")
        y += size * (2 if slot in ("to_addr", "from") else 1) + 2 * d
    parts.append("^PQ1")
    parts.append("^XZ")
    return "\n".join(parts).encode("latin-1") + b"\n"


# -- TSPL
def tspl_field(text: str) -> bytes:
    clean = "".join(c for c in text if ord(c) >= 0x20 and ord(c) != 0x7F)
    return clean.encode("gb18030", errors="replace").replace(b'"', b'\\["]')


def tspl(label: Label, font: str = "TSS24.BF2") -> bytes:
    _check_waybill(label.waybill)
    d = DOTS_PER_MM
    out = [f"SIZE {WIDTH_MM} mm,{HEIGHT_MM} mm".encode(), b"GAP 2 mm,0 mm", b"DIRECTION 1", b"CLS",
           f'BARCODE {6 * d},{6 * d},"128",{15 * d},1,0,3,6,"{label.waybill}"'.encode()]
    y = 32 * d
    for slot, text in lines(label):
        # BLOCK wraps within its box (TEXT would run off the label); two
        # lines for the addresses, like the ZPL field blocks
        mul = 2 if slot == "service" else 1
        rows = 2 if slot in ("to_addr", "from") else 1
        height = (24 * mul + 4) * rows
        out.append(f'BLOCK {6 * d},{y},{88 * d},{height},"{font}",0,{mul},{mul},"'.encode()
                   + tspl_field(text) + b'"')
        y += height + 2 * d
    out.append(b"PRINT 1,1")
    return b"\r\n".join(out) + b"\r\n"


def render(language: str, label: Label, font: str | None = None) -> bytes:
    if language == "zpl":
        return zpl(label, font or "E:SIMSUN.FNT")
    if language == "tspl":
        return tspl(label, font or "TSS24.BF2")
    raise ValueError(f"unknown label language {language!r} (known: {', '.join(LANGUAGES)})")
