"""SMS PDUs (3GPP TS 23.040 / 23.038) for the notifier's modem: SMS-SUBMIT
out, SMS-STATUS-REPORT in, and the SUBMIT decoder the simulated modem uses.

Hand-written rather than taken from PyPI: ``smspdudecoder`` (MIT) decodes
received messages only and has no SUBMIT encoder or concatenation;
``python-gsmmodem-new`` (LGPL-3) encodes, but only as part of its own
threaded modem object with its own serial reader, which would fight the
driver's own timeouts, retries and unplug handling (gateway/notify/modem.py).
What is needed is small and fully specified: GSM 7-bit packing with the
default alphabet and its extension table, UCS-2 for anything else (Chinese),
the 8-bit-reference concatenation header (IEI 0x00) and the status report
layout. The tests check it against published PDUs written out by hand.

Length rules: one message holds 160 septets or 70 UCS-2 characters; a
concatenated part 153 septets (the 6-octet header plus one fill bit take 7
septets) or 67 characters. A part never ends in the middle of a GSM escape
pair or a UTF-16 surrogate pair.
"""

from __future__ import annotations

from dataclasses import dataclass

# TS 23.038 6.2.1: the default alphabet, by septet value.
GSM_BASIC = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
             "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
# 6.2.1.1: the extension table, reached with ESC (0x1B).
GSM_EXT = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E,
           "|": 0x40, "€": 0x65}
_BASIC_INDEX = {c: i for i, c in enumerate(GSM_BASIC) if c != "\x1b"}
_EXT_REVERSE = {v: k for k, v in GSM_EXT.items()}

DCS_GSM7 = 0x00
DCS_UCS2 = 0x08
SINGLE_SEPTETS, PART_SEPTETS = 160, 153
SINGLE_UCS2, PART_UCS2 = 70, 67
MAX_PARTS = 255


class PduError(ValueError):
    """A PDU that cannot be built or does not parse."""


def gsm7_septets(text: str) -> list[int] | None:
    """The text as default-alphabet septets, or None if it needs UCS-2."""
    out: list[int] = []
    for ch in text:
        if ch in _BASIC_INDEX:
            out.append(_BASIC_INDEX[ch])
        elif ch in GSM_EXT:
            out += [0x1B, GSM_EXT[ch]]
        else:
            return None
    return out


def pack_septets(septets: list[int], fill_bits: int = 0) -> bytes:
    """TS 23.038 6.1.2.1.1: septets packed into octets, least significant
    bit first, after ``fill_bits`` zero bits (padding after a header)."""
    acc = 0
    for i, s in enumerate(septets):
        acc |= (s & 0x7F) << (7 * i + fill_bits)
    nbits = 7 * len(septets) + fill_bits
    return acc.to_bytes((nbits + 7) // 8, "little")


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> list[int]:
    acc = int.from_bytes(data, "little")
    return [(acc >> (7 * i + fill_bits)) & 0x7F for i in range(count)]


def septets_text(septets: list[int]) -> str:
    out, esc = [], False
    for s in septets:
        if esc:
            out.append(_EXT_REVERSE.get(s, " "))
            esc = False
        elif s == 0x1B:
            esc = True
        else:
            out.append(GSM_BASIC[s])
    return "".join(out)


def encode_address(number: str) -> bytes:
    """TP-DA: length in digits, type (0x91 international, 0x81 unknown), BCD
    with swapped nibbles and an F filler. Digits only, after an optional +."""
    intl = number.startswith("+")
    digits = number[1:] if intl else number
    if not digits or not digits.isdigit() or not digits.isascii() or len(digits) > 20:
        raise PduError("a phone number is 1-20 digits with an optional leading +")
    padded = digits + ("F" if len(digits) % 2 else "")
    bcd = bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, len(padded), 2))
    return bytes([len(digits), 0x91 if intl else 0x81]) + bcd


def decode_address(data: bytes, pos: int) -> tuple[str, int]:
    """(number, position after it)."""
    n, toa = data[pos], data[pos + 1]
    octets = (n + 1) // 2
    raw = data[pos + 2:pos + 2 + octets]
    if len(raw) != octets:
        raise PduError("address runs past the end of the PDU")
    digits = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in raw)[:n]
    return ("+" if toa & 0x70 == 0x10 else "") + digits, pos + 2 + octets


@dataclass(frozen=True)
class Submit:
    """One SMS-SUBMIT ready for ``AT+CMGS``: the hex PDU (with a zero-length
    SMSC field, so the SIM's centre is used) and the TPDU length the command
    takes (octets after the SMSC field)."""

    hex: str
    tpdu_len: int


def _split(units: list[list[int]], single: int, part: int) -> list[list[list[int]]]:
    """Whole units (a septet or escape pair; a UTF-16 code unit or pair)
    into parts of at most ``part`` (``single`` when it fits in one)."""
    if sum(len(u) for u in units) <= single:
        return [units]
    parts: list[list[list[int]]] = [[]]
    size = 0
    for u in units:
        if size + len(u) > part:
            parts.append([])
            size = 0
        parts[-1].append(u)
        size += len(u)
    return parts


def encode_submit(number: str, text: str, ref: int = 0, status_report: bool = True,
                  validity: int = 0xA7) -> list[Submit]:
    """The SUBMIT PDUs for ``text`` to ``number``: GSM 7-bit when every
    character is in the default alphabet, UCS-2 otherwise; concatenated with
    reference ``ref`` (0-255) when it does not fit one. ``validity`` is the
    relative TP-VP (0xA7: 24 hours)."""
    if not text:
        raise PduError("an SMS needs text")
    da = encode_address(number)
    septets = gsm7_septets(text)
    if septets is not None:
        units: list[list[int]] = []
        i = 0
        while i < len(septets):
            n = 2 if septets[i] == 0x1B else 1
            units.append(septets[i:i + n])
            i += n
        parts = _split(units, SINGLE_SEPTETS, PART_SEPTETS)
        dcs = DCS_GSM7
    else:
        raw = text.encode("utf-16-be")
        cu = [raw[i:i + 2] for i in range(0, len(raw), 2)]
        units = []
        i = 0
        while i < len(cu):
            hi = 0xD800 <= int.from_bytes(cu[i], "big") <= 0xDBFF
            n = 2 if hi and i + 1 < len(cu) else 1
            units.append([int.from_bytes(c, "big") for c in cu[i:i + n]])
            i += n
        parts = _split(units, SINGLE_UCS2, PART_UCS2)
        dcs = DCS_UCS2
    if len(parts) > MAX_PARTS:
        raise PduError(f"text needs {len(parts)} parts, limit {MAX_PARTS}")
    out = []
    for seq, part in enumerate(parts, 1):
        flat = [x for u in part for x in u]
        udh = b"" if len(parts) == 1 else bytes([5, 0x00, 3, ref & 0xFF, len(parts), seq])
        if dcs == DCS_GSM7:
            fill = (7 - (len(udh) * 8) % 7) % 7 if udh else 0
            ud = udh + pack_septets(flat, fill)
            udl = (len(udh) * 8 + fill) // 7 + len(flat)
        else:
            ud = udh + b"".join(c.to_bytes(2, "big") for c in flat)
            udl = len(ud)
        first = 0x01 | 0x10 | (0x20 if status_report else 0) | (0x40 if udh else 0)
        tpdu = bytes([first, 0x00]) + da + bytes([0x00, dcs, validity, udl]) + ud
        out.append(Submit(("00" + tpdu.hex()).upper(), len(tpdu)))
    return out


@dataclass(frozen=True)
class DecodedSubmit:
    number: str
    text: str
    status_report: bool
    concat: tuple[int, int, int] | None  # (ref, total, seq)


def decode_submit(hex_pdu: str, tpdu_len: int | None = None) -> DecodedSubmit:
    """Parse an SMS-SUBMIT as a modem receives it after ``AT+CMGS`` (the
    simulated modem's side, and the tests' check of the encoder)."""
    try:
        data = bytes.fromhex(hex_pdu)
    except ValueError:
        raise PduError("PDU is not hex") from None
    try:
        pos = 1 + data[0]
        if tpdu_len is not None and len(data) - pos != tpdu_len:
            raise PduError(f"TPDU is {len(data) - pos} octets, AT+CMGS said {tpdu_len}")
        first = data[pos]
        if first & 0x03 != 0x01:
            raise PduError("not an SMS-SUBMIT")
        number, pos = decode_address(data, pos + 2)
        dcs = data[pos + 1]
        vpf = (first >> 3) & 0x03
        pos += 2 + {0: 0, 2: 1, 1: 7, 3: 7}[vpf]
        udl = data[pos]
        ud = data[pos + 1:]
    except IndexError:
        raise PduError("PDU ends early") from None
    concat = None
    hdr_octets = 0
    if first & 0x40:
        if not ud:
            raise PduError("UDHI set but no header")
        hdr_octets = ud[0] + 1
        h = ud[1:hdr_octets]
        j = 0
        while j + 1 < len(h):
            iei, ln = h[j], h[j + 1]
            if iei == 0x00 and ln == 3:
                concat = (h[j + 2], h[j + 3], h[j + 4])
            elif iei == 0x08 and ln == 4:
                concat = ((h[j + 2] << 8) | h[j + 3], h[j + 4], h[j + 5])
            j += 2 + ln
    if dcs & 0x0C == 0x08:
        body = ud[hdr_octets:udl]
        if len(body) % 2:
            raise PduError("UCS-2 text of odd length")
        text = body.decode("utf-16-be", errors="replace")
    elif dcs & 0x0C == 0x00:
        fill = (7 - (hdr_octets * 8) % 7) % 7 if hdr_octets else 0
        skip = (hdr_octets * 8 + fill) // 7
        if len(ud) * 8 < udl * 7:
            raise PduError("user data shorter than its length")
        text = septets_text(unpack_septets(ud[hdr_octets:], udl - skip, fill))
    else:
        raise PduError(f"data coding {dcs:#04x} not supported")
    return DecodedSubmit(number, text, bool(first & 0x20), concat)


# ---- status reports (TS 23.040 9.2.2.3)


@dataclass(frozen=True)
class StatusReport:
    mr: int          # TP-MR: the reference +CMGS returned for the part
    number: str
    status: int      # TP-ST
    delivered: bool  # 0x00-0x1F: the SMS-SUBMIT was completed
    final: bool      # anything but 0x20-0x3F (still trying)


def decode_status_report(hex_pdu: str) -> StatusReport:
    try:
        data = bytes.fromhex(hex_pdu)
        pos = 1 + data[0]
        first = data[pos]
        if first & 0x03 != 0x02:
            raise PduError("not an SMS-STATUS-REPORT")
        mr = data[pos + 1]
        number, pos = decode_address(data, pos + 2)
        st = data[pos + 14]  # after TP-SCTS and TP-DT, 7 octets each
    except (IndexError, ValueError):
        raise PduError("status report does not parse") from None
    return StatusReport(mr, number, st, st < 0x20, not 0x20 <= st < 0x40)


def _bcd_time(t: tuple[int, int, int, int, int, int]) -> bytes:
    return bytes(int(f"{v % 100:02d}"[::-1], 16) for v in t) + b"\x00"


def encode_status_report(mr: int, number: str, status: int = 0,
                         when: tuple[int, int, int, int, int, int] = (26, 1, 1, 12, 0, 0)) -> str:
    """A status report as a network would send it (for the simulated modem):
    SMSC field empty, first octet 0x06 (MTI 10, TP-MMS), MR, RA, SCTS, DT, ST."""
    t = _bcd_time(when)
    tpdu = bytes([0x06, mr & 0xFF]) + encode_address(number) + t + t + bytes([status])
    return ("00" + tpdu.hex()).upper()
