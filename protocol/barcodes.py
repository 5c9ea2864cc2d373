# Barcode validators: UPU S10 item ids, EAN-13/EAN-8/UPC-A, GS1 element
# strings with (00) SSCC and (01) GTIN, and China Post domestic waybills.
#
# Written without re counted repetition ({n}), which MicroPython's re lacks.
# Every verdict is a dict: {"ok": True, "kind": ..., "value": ..., ...} or
# {"ok": False, "reason": <code>, "detail": ...}; bad barcodes are ordinary
# input at a counter, so validators return verdicts instead of raising.

from protocol import aim
from protocol.errors import InvalidBarcode

# ISO 3166-1 alpha-2, the country part of an S10 identifier.
_ISO = (
    "ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZ"
    "CACCCDCFCGCHCICKCLCMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERESETFIFJFKFMFO"
    "FRGAGBGDGEGFGGGHGIGLGMGNGPGQGRGSGTGUGWGYHKHMHNHRHTHUIDIEILIMINIOIQIRISITJE"
    "JMJOJPKEKGKHKIKMKNKPKRKWKYKZLALBLCLILKLRLSLTLULVLYMAMCMDMEMFMGMHMKMLMMMNMO"
    "MPMQMRMSMTMUMVMWMXMYMZNANCNENFNGNINLNONPNRNUNZOMPAPEPFPGPHPKPLPMPNPRPSPTPW"
    "PYQARERORSRURWSASBSCSDSESGSHSISJSKSLSMSNSOSRSSSTSVSXSYSZTCTDTFTGTHTJTKTLTM"
    "TNTOTRTTTVTWTZUAUGUMUSUYUZVAVCVEVGVIVNVUWFWSYEYTZAZMZW"
)


def is_country(code):
    """ISO 3166 membership by scanning one string: no 249-entry set in RAM."""
    if len(code) != 2:
        return False
    i = _ISO.find(code)
    while i >= 0 and i % 2:
        i = _ISO.find(code, i + 1)
    return i >= 0


S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)


def _digits(s):
    if not s:
        return False
    for c in s:
        if not "0" <= c <= "9":
            return False
    return True


def _upper(s):
    for c in s:
        if not "A" <= c <= "Z":
            return False
    return len(s) > 0


def ok(kind, value, **extra):
    v = {"ok": True, "kind": kind, "value": value}
    for k in extra:
        v[k] = extra[k]
    return v


def bad(reason, detail):
    return {"ok": False, "reason": reason, "detail": detail}


def s10_check_digit(serial8):
    s = 0
    for i in range(8):
        s += int(serial8[i]) * S10_WEIGHTS[i]
    c = 11 - s % 11
    if c == 10:
        return 0
    if c == 11:
        return 5
    return c


def s10(text):
    """UPU S10: 2 letters, 8 digits, check digit, ISO country, e.g. RB123456785GB."""
    if len(text) != 13:
        return bad("s10_format", "S10 ids are 13 characters, got %d" % len(text))
    service, serial, check, country = text[:2], text[2:10], text[10], text[11:]
    if not _upper(service) or not _digits(serial + check) or not _upper(country):
        return bad("s10_format", "S10 is 2 letters, 9 digits, 2 letters")
    want = s10_check_digit(serial)
    if int(check) != want:
        return bad("s10_check_digit", "check digit is %s, expected %d" % (check, want))
    if not is_country(country):
        return bad("s10_country", "%s is not an ISO 3166 country code" % country)
    return ok("s10", text, service=service, country=country)


def gs1_check_digit(body):
    """Mod-10 check digit of the GS1 family (EAN/UPC/GTIN/SSCC) for body digits."""
    s = 0
    w = 3
    for i in range(len(body) - 1, -1, -1):
        s += int(body[i]) * w
        w = 4 - w
    return (10 - s % 10) % 10


def _gs1_ok(digits):
    return int(digits[-1]) == gs1_check_digit(digits[:-1])


_EAN_KINDS = {8: "ean8", 12: "upca", 13: "ean13", 14: "gtin14", 18: "sscc"}


def ean(text):
    """EAN-13, EAN-8, UPC-A (and GTIN-14, SSCC-18 as bare digits)."""
    if not _digits(text):
        return bad("ean_format", "EAN/UPC codes are digits only")
    kind = _EAN_KINDS.get(len(text))
    if kind is None:
        return bad("ean_format", "no EAN/UPC/GTIN code has %d digits" % len(text))
    if not _gs1_ok(text):
        return bad(
            "ean_check_digit",
            "check digit is %s, expected %d" % (text[-1], gs1_check_digit(text[:-1])),
        )
    return ok(kind, text)


# AI -> (length, fixed?). Predefined fixed-length AIs need no GS separator.
GS1_AIS = {
    "00": (18, True), "01": (14, True), "02": (14, True), "10": (20, False),
    "11": (6, True), "12": (6, True), "13": (6, True), "15": (6, True),
    "16": (6, True), "17": (6, True), "20": (2, True), "21": (20, False),
    "22": (20, False), "30": (8, False), "37": (8, False), "400": (30, False),
    "401": (30, False), "402": (17, True), "403": (30, False), "410": (13, True),
    "411": (13, True), "412": (13, True), "413": (13, True), "414": (13, True),
    "420": (20, False), "421": (12, False),
}
_CHECKED = ("00", "01", "02", "402", "410", "411", "412", "413", "414")
GS = "\x1d"


def _split_gs1(text):
    """Yield (ai, value) from bracketed '(01)...' or raw GS-separated data."""
    out = []
    if text.startswith("("):
        i = 0
        while i < len(text):
            if text[i] != "(":
                raise InvalidBarcode("gs1_format", "expected '(' at %d" % i)
            j = text.find(")", i)
            if j < 0:
                raise InvalidBarcode("gs1_format", "unclosed '(' at %d" % i)
            ai = text[i + 1:j]
            k = text.find("(", j)
            if k < 0:
                k = len(text)
            out.append((ai, text[j + 1:k]))
            i = k
        return out
    i = 0
    if text.startswith(GS):
        i = 1
    while i < len(text):
        ai = None
        for n in (2, 3):
            if text[i:i + n] in GS1_AIS:
                ai = text[i:i + n]
                break
        if ai is None:
            raise InvalidBarcode("gs1_unknown_ai", "unknown application identifier at %r" % text[i:i + 4])
        length, fixed = GS1_AIS[ai]
        i += len(ai)
        if fixed:
            val = text[i:i + length]
            i += length
            if i < len(text) and text[i] == GS:
                i += 1
        else:
            j = text.find(GS, i)
            if j < 0:
                j = len(text)
            val = text[i:j]
            i = j + 1
        out.append((ai, val))
    return out


def gs1(text):
    """GS1 element string; (00) SSCC and (01) GTIN check digits are verified."""
    try:
        pairs = _split_gs1(text)
    except InvalidBarcode as e:
        return bad(e.reason, e.detail)
    if not pairs:
        return bad("gs1_format", "empty GS1 element string")
    fields = {}
    for ai, val in pairs:
        if ai not in GS1_AIS:
            return bad("gs1_unknown_ai", "unknown application identifier (%s)" % ai)
        length, fixed = GS1_AIS[ai]
        if (fixed and len(val) != length) or (not fixed and not 0 < len(val) <= length):
            return bad("gs1_length", "(%s) has %d characters, expected %s%d" % (
                ai, len(val), "" if fixed else "up to ", length))
        if ai in _CHECKED or fixed:
            if not _digits(val):
                return bad("gs1_format", "(%s) must be digits" % ai)
        if ai in _CHECKED and not _gs1_ok(val):
            return bad("gs1_check_digit", "(%s) check digit is %s, expected %d" % (
                ai, val[-1], gs1_check_digit(val[:-1])))
        if ai in fields:
            return bad("gs1_format", "(%s) appears twice" % ai)
        fields[ai] = val
    if "00" in fields:
        return ok("sscc", fields["00"], ais=fields)
    if "01" in fields:
        return ok("gtin", fields["01"], ais=fields)
    return ok("gs1", text, ais=fields)


def cn_domestic(text):
    """China Post domestic waybills (format only: no public check digit).

    13 digits: leading 1 or 5 for domestic EMS (国内标准快递), 9 for
    domestic parcels (快递包裹/普通包裹). Domestic registered items with an
    S10 id and "CN" (e.g. XA.../KA...CN) go through s10().
    """
    if len(text) != 13 or not _digits(text):
        return bad("cn_format", "China Post domestic waybills are 13 digits")
    head = text[0]
    if head in "15":
        return ok("cn_ems", text, check="none")
    if head == "9":
        return ok("cn_parcel", text, check="none")
    return bad("cn_format", "13-digit waybills start with 1, 5 or 9")


def _looks_s10(t):
    return len(t) == 13 and _upper(t[:2]) and _digits(t[2:11]) and _upper(t[11:])


def classify(text):
    """Verdict for one scan as read, with or without an AIM identifier.

    The AIM identifier disambiguates: 13 digits in an EAN-13 symbol are a
    product code; the same digits in a Code 128 symbol are a domestic waybill.
    """
    if not isinstance(text, str) or not text:
        return bad("empty", "no data")
    sym, mod, data, is_gs1 = aim.parse(text)
    data = data.strip() if not is_gs1 else data
    if not data:
        return bad("empty", "no data after the symbology identifier")
    for c in data:
        if ord(c) < 0x20 and c != GS:
            return bad("bad_chars", "control character 0x%02x in data" % ord(c))
    if is_gs1 or data[0] == "(":
        v = gs1(data)
    elif _looks_s10(data):
        v = s10(data)
    elif _digits(data):
        if len(data) == 13 and sym not in ("ean13", "ean_upc") and data[0] in "159":
            v = cn_domestic(data)
        else:
            v = ean(data)
    else:
        v = bad("unrecognised", "not an S10, EAN/UPC, GS1 or domestic waybill code")
    if sym is not None:
        v["symbology"] = sym
    return v


PARCEL_KINDS = ("s10", "cn_ems", "cn_parcel", "sscc")


def require_parcel_id(text):
    """The parcel id in a scan, or InvalidBarcode naming why it isn't one."""
    v = classify(text)
    if not v["ok"]:
        raise InvalidBarcode(v["reason"], v["detail"])
    if v["kind"] not in PARCEL_KINDS:
        raise InvalidBarcode("not_parcel", "%s code is not a parcel id" % v["kind"])
    return v["value"]
