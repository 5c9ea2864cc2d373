"""Barcode validators: UPU S10 item ids, EAN-13/EAN-8/UPC-A/UPC-E (with
add-ons), GS1 element strings, and China Post domestic waybills.

MicroPython code shared by the firmware and CPython: no re counted repetition
({n}), which MicroPython's re lacks, no dataclasses or typing. Every verdict
is a dict: {"ok": True, "kind": ..., "value": ..., ...} or {"ok": False,
"reason": <code>, "detail": ...}; bad barcodes are ordinary input at a
counter, so validators return verdicts instead of raising. Reason codes have
words in Simplified Chinese and English in postedge/text.toml.

China Post domestic waybills (cn_domestic, classify)
----------------------------------------------------
China Post publishes no rule for its 13-digit domestic waybill numbers and
no check digit for them. What is public: the waybills (国内标准快递 EMS,
快递包裹) carry the number as a Code 128 barcode, and parcel-tracking
services that guess the carrier from the number alone use 13 digits with
leading 10, 11, 50 or 56 for EMS and 95-99 for 邮政快递包裹 (e.g. the
"detect carrier" tables of kuaidi100-style tools). A 13-digit number is
also what every EAN-13 product code is, so the number alone can never tell
a waybill from a product. The rule here is therefore deliberately
conservative, and says so:

* The symbology decides. Only data read from a Code 128 symbol whose AIM
  identifier says so (]C0) can be a domestic waybill. GS1 never carries a
  GTIN in plain Code 128 (GS1 General Specifications 5.1: GTINs are in
  EAN/UPC, ITF-14, GS1-128 with AI (01), GS1 DataBar or GS1 2D symbols), so
  a product code printed as its standard says is never a waybill. Bare
  digits (a scanner without AIM identifiers, a typed number) are not
  accepted: a valid EAN-13 among them is a product, anything else is
  refused with cn_symbology (an EAN-13 with one wrong digit must not
  become a parcel). Turn on AIM identifiers in the scan engine.
* Prefixes: 10, 11, 50, 56 (EMS) and 95, 96, 98, 99 (parcels), 13 digits.
  97 is left out on purpose: 977-979 are the ISSN/ISBN (Bookland) GS1
  prefixes, and a book's EAN-13 must not pass even if it is re-printed in
  Code 128. The list is narrower than the "1, 5 or 9" used before: a real
  waybill outside it is refused (counted as invalid) rather than a product
  code being taken into custody. Widen it only from China Post's own data.
* No check digit is verified (none is public); verdicts say check="none".
  Code 128 itself has a mandatory mod-103 symbol check, so a misread is
  caught by the decoder, not here. Domestic registered items with an S10
  id and "CN" (XA.../KA...CN) go through s10().

GS1 element strings (gs1)
-------------------------
The AI table below carries the GS1 General Specifications' AIs (release 24,
section 3.2, with the GS1 Syntax Dictionary's format and check notes):
fixed and variable lengths per component, N (digits), X (GS1 AI encodable
character set 82), Y (set 39, AI 8010), Z (set 64, AI 8030), check digits
of the GS1 keys, real dates (YYMMDD; DD=00 means the end of the month and is
allowed only where the Syntax Dictionary says yymmd0, i.e. AIs 11-17), times,
yes/no flags and ISO 3166 alpha-2 countries (4307, 4317). Not checked: ISO
3166 numeric and ISO 4217 codes (421-426, 391n, 393n, 703n), IBAN (8007),
piece-of-total (8006, 8026) and the GS1 rules on which AIs must or must not
appear together. Two-digit years are read as 20YY for leap years.

Raw data (FNC1 sent as GS, 0x1d) is split by the AI's length, found from its
first two digits (all AIs sharing two leading digits have one length), and
by the predefined-length list (GS1 General Specifications 7.8), whose fields
alone need no GS after them; every other field ends at a GS or the end.

An element that is unknown or invalid does not reject the scan: the verdict
keeps every valid element in "ais" and lists the others in "problems", each
{"ai": ..., "reason": <code>, "detail": ...}, in the order read ("problems"
is present only when there are some). A scan with no valid element is a bad
verdict with the first problem's reason. Two elements with one AI and
different values are both dropped (which one is meant is unknown); an
identical repeat is harmless. The kind is "sscc" when a valid (00) is there
(a parcel id), "gtin" for a valid (01), else "gs1".

EAN/UPC under AIM identifiers (classify)
----------------------------------------
]E0 carries the EAN-13 family: 13 digits (EAN-13), 12 (UPC-A) or 8 (UPC-E,
validated by expanding it to UPC-A). ]E4 is EAN-8. ]E3 is a main symbol
with its 2- or 5-digit add-on, concatenated (ISO/IEC 15420) or separated by
a space (zxing-cpp): it is split, the main code validated, the add-on
returned in "addon". No EAN/UPC is ever a parcel id.
"""

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


def upce_to_upca(text):
    """The 12-digit UPC-A that an 8-digit UPC-E (number system, 6 digits,
    check digit) stands for; the check digit is carried over unchanged."""
    d = text[1:7]
    last = d[5]
    if last in "012":
        body = d[0:2] + last + "0000" + d[2:5]
    elif last == "3":
        body = d[0:3] + "00000" + d[3:5]
    elif last == "4":
        body = d[0:4] + "00000" + d[4]
    else:
        body = d[0:5] + "0000" + last
    return text[0] + body + text[7]


def upce(text):
    """UPC-E as its 8 digits: number system 0 or 1, checked through UPC-A."""
    if len(text) != 8 or not _digits(text) or text[0] not in "01":
        return bad("ean_format", "UPC-E is 8 digits with number system 0 or 1")
    a = upce_to_upca(text)
    if not _gs1_ok(a):
        return bad("ean_check_digit",
                   "check digit is %s, expected %d" % (text[7], gs1_check_digit(a[:-1])))
    return ok("upce", text, upca=a)


def _ean_main(main):
    if len(main) == 8:
        return upce(main)
    if len(main) in (12, 13):
        return ean(main)
    return bad("ean_format", "an EAN/UPC main symbol has 13, 12 or 8 digits")


# ]E3 data length without a separator -> main symbol length (the rest is the add-on).
_ADDON_SPLIT = ((15, 13), (18, 13), (14, 12), (17, 12), (10, 8), (13, 8))


def ean_aim(mod, data):
    """EAN/UPC data as sent under the AIM identifier ]E<mod> (see the header)."""
    if mod == "3" or (mod == "4" and " " in data):
        sp = data.find(" ")
        if sp >= 0:
            main, add = data[:sp], data[sp + 1:]
        else:
            main = add = ""
            for n, m in _ADDON_SPLIT:
                if len(data) == n:
                    main, add = data[:m], data[m:]
        if not _digits(main) or not _digits(add) or len(add) not in (2, 5):
            return bad("ean_format", "EAN/UPC with add-on is 13, 12 or 8 digits and 2 or 5 more")
        if mod == "4":
            v = ean(main) if len(main) == 8 else bad("ean_format", "]E4 carries EAN-8: 8 digits")
        else:
            v = _ean_main(main)
        if v["ok"]:
            v["addon"] = add
        return v
    if mod == "4":
        if len(data) != 8:
            return bad("ean_format", "]E4 carries EAN-8: 8 digits, got %d" % len(data))
        return ean(data)
    if mod == "0":
        if len(data) == 8:
            return upce(data)
        if len(data) not in (12, 13):
            return bad("ean_format", "]E0 carries EAN-13, UPC-A or UPC-E: 13, 12 or 8 digits, got %d"
                       % len(data))
    return ean(data)


# ---------------------------------------------------------------- GS1

GS = "\x1d"

# The GS1 AI table: " AI=spec" entries; "ABC*n=spec" is the family ABC0..ABCn
# (the 4th digit is the decimal point position for measures and amounts).
# spec: comma-separated components, "?" first for an optional one; a type
# N X Y Z, a length ("18" fixed, "..20" up to, "3..15" from-to), then checks:
# c check digit, d YYMMDD with DD=00, D YYMMDD, T YYMMDDhhmm, H YYMMDDhh,
# h hhmm, m mm or mmss, Y YYYYMMDD, W YYYYMMDDhhmm, b 0/1, k ISO 3166
# alpha-2, - the character "-".
_AIS = (
    " 00=N18c 01=N14c 02=N14c 03=N14c 10=X..20 11=N6d 12=N6d 13=N6d 15=N6d 16=N6d 17=N6d"
    " 20=N2 21=X..20 22=X..20 235=X..28 240=X..30 241=X..30 242=N..6 243=X..20 250=X..30"
    " 251=X..30 253=N13c,?X..17 254=X..20 255=N13c,?N..12 30=N..8 37=N..8"
    " 310*5=N6 311*5=N6 312*5=N6 313*5=N6 314*5=N6 315*5=N6 316*5=N6"
    " 320*5=N6 321*5=N6 322*5=N6 323*5=N6 324*5=N6 325*5=N6 326*5=N6 327*5=N6 328*5=N6"
    " 329*5=N6 330*5=N6 331*5=N6 332*5=N6 333*5=N6 334*5=N6 335*5=N6 336*5=N6 337*5=N6"
    " 340*5=N6 341*5=N6 342*5=N6 343*5=N6 344*5=N6 345*5=N6 346*5=N6 347*5=N6 348*5=N6"
    " 349*5=N6 350*5=N6 351*5=N6 352*5=N6 353*5=N6 354*5=N6 355*5=N6 356*5=N6 357*5=N6"
    " 360*5=N6 361*5=N6 362*5=N6 363*5=N6 364*5=N6 365*5=N6 366*5=N6 367*5=N6 368*5=N6"
    " 369*5=N6 390*9=N..15 391*9=N3,N..15 392*9=N..15 393*9=N3,N..15 394*3=N4 395*5=N6"
    " 400=X..30 401=X..30 402=N17c 403=X..30 410=N13c 411=N13c 412=N13c 413=N13c 414=N13c"
    " 415=N13c 416=N13c 417=N13c 420=X..20 421=N3,X..9 422=N3 423=N3..15 424=N3 425=N3..15"
    " 426=N3 427=X..3 4300=X..35 4301=X..35 4302=X..70 4303=X..70 4304=X..70 4305=X..70"
    " 4306=X..70 4307=X2k 4308=X..30 4309=N20 4310=X..35 4311=X..35 4312=X..70 4313=X..70"
    " 4314=X..70 4315=X..70 4316=X..70 4317=X2k 4318=X..20 4319=X..30 4320=X..35 4321=N1b"
    " 4322=N1b 4323=N1b 4324=N10T 4325=N10T 4326=N6D 4330=N6,?X1- 4331=N6,?X1- 4332=N6,?X1-"
    " 4333=N6,?X1- 7001=N13 7002=X..30 7003=N10T 7004=N..4 7005=X..12 7006=N6D 7007=N6D,?N6D"
    " 7008=X..3 7009=X..10 7010=X..2 7011=N6D,?N4h 7020=X..20 7021=X..20 7022=X..20"
    " 7023=X..30 703*9=N3,X..27 7040=N1,X3 7041=X..4 710=X..20 711=X..20 712=X..20"
    " 713=X..20 714=X..20 715=X..20 716=X..20 717=X..20 723*9=X2,X..28 7240=X..20 7241=N2"
    " 7242=X..25 7250=N8Y 7251=N12W 7252=N1 7253=X..40 7254=X..40 7255=X..10 7256=X..90"
    " 7257=X..70 7258=N1,X1,N1 7259=X..40 8001=N14 8002=X..20 8003=N14c,?X..16 8004=X..30"
    " 8005=N6 8006=N14c,N2,N2 8007=X..34 8008=N8H,?N..4m 8009=X..50 8010=Y..30 8011=N..12"
    " 8012=X..20 8013=X..25 8014=X..25 8017=N18c 8018=N18c 8019=N..10 8020=X..25"
    " 8026=N14c,N2,N2 8030=Z..90 8110=X..70 8111=N4 8112=X..70 8200=X..70 90=X..30 91=X..90"
    " 92=X..90 93=X..90 94=X..90 95=X..90 96=X..90 97=X..90 98=X..90 99=X..90 "
)

# AI length from the AI's first two digits (0: no AI starts so).
_AI2 = " 00 01 02 03 04 10 11 12 13 14 15 16 17 18 19 20 21 22 30 37 90 91 92 93 94 95 96 97 98 99 "
_AI3 = " 23 24 25 40 41 42 71 "
_AI4 = " 31 32 33 34 35 36 39 43 70 72 80 81 82 "

# Predefined-length fields (data length after the AI): no GS needed after them.
_PREDEF = " 00:18 01:14 02:14 03:14 04:16 11:6 12:6 13:6 14:6 15:6 16:6 17:6 18:6 19:6 20:2" \
          " 31:6 32:6 33:6 34:6 35:6 36:6 41:13 "

# GS1 AI encodable character sets 82 (X), 39 (Y) and 64 (Z).
_CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_CSET39 = "#-/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CSET64 = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz="


def _ai_len(two):
    key = " " + two + " "
    if key in _AI2:
        return 2
    if key in _AI3:
        return 3
    if key in _AI4:
        return 4
    return 0


def _predef(two):
    i = _PREDEF.find(" " + two + ":")
    if i < 0:
        return 0
    return int(_PREDEF[i + 4:_PREDEF.find(" ", i + 4)])


def ai_spec(ai):
    """The table's spec string for an AI, or None if GS1 assigns no such AI."""
    if not 2 <= len(ai) <= 4 or not _digits(ai):
        return None
    i = _AIS.find(" " + ai + "=")
    if i >= 0:
        i += len(ai) + 2
    elif len(ai) == 4:
        i = _AIS.find(" " + ai[:3] + "*")
        if i < 0 or ai[3] > _AIS[i + 5]:
            return None
        i += 7
    else:
        return None
    return _AIS[i:_AIS.find(" ", i)]


def _components(spec):
    """[(optional, type, min, max, checks)] of a spec string."""
    out = []
    for comp in spec.split(","):
        opt = comp[0] == "?"
        if opt:
            comp = comp[1:]
        k = 1
        while k < len(comp) and comp[k] in "0123456789.":
            k += 1
        size = comp[1:k]
        d = size.find("..")
        if d < 0:
            lo = hi = int(size)
        else:
            lo = int(size[:d]) if d else 1
            hi = int(size[d + 2:])
        out.append((opt, comp[0], lo, hi, comp[k:]))
    return out


def _leap(year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _date_ok(year, mm, dd, zero_day):
    if not 1 <= mm <= 12:
        return False
    if dd == 0:
        return zero_day
    if mm == 2:
        days = 29 if _leap(year) else 28
    elif mm in (4, 6, 9, 11):
        days = 30
    else:
        days = 31
    return dd <= days


def _hhmm_ok(t):
    # "hh", "hhmm" or "hhmmss" (digits already checked)
    if int(t[0:2]) > 23:
        return False
    return all(int(t[i:i + 2]) <= 59 for i in range(2, len(t), 2))


def _check_part(typ, checks, part):
    """None, or (reason, detail) for one component's value."""
    if typ == "N":
        if not _digits(part):
            return ("gs1_format", "must be digits")
    else:
        cset = _CSET39 if typ == "Y" else _CSET64 if typ == "Z" else _CSET82
        for c in part:
            if cset.find(c) < 0:
                return ("gs1_charset", "U+%04X is outside GS1 character set %s"
                        % (ord(c), "39" if typ == "Y" else "64" if typ == "Z" else "82"))
    for f in checks:
        if f == "c" and not _gs1_ok(part):
            return ("gs1_check_digit", "check digit is %s, expected %d"
                    % (part[-1], gs1_check_digit(part[:-1])))
        if f in "dDTH" and not (_date_ok(2000 + int(part[0:2]), int(part[2:4]), int(part[4:6]), f == "d")
                                and (f in "dD" or _hhmm_ok(part[6:]))):
            return ("gs1_date", "%s is not a real date%s" % (part, "" if f in "dD" else " and time"))
        if f in "YW" and not (_date_ok(int(part[0:4]), int(part[4:6]), int(part[6:8]), False)
                              and (f == "Y" or _hhmm_ok(part[8:]))):
            return ("gs1_date", "%s is not a real date%s" % (part, "" if f == "Y" else " and time"))
        if f in "hm" and (len(part) not in (2, 4) or not _hhmm_ok(("00" if f == "m" else "") + part)):
            return ("gs1_date", "%s is not a real time" % part)
        if f == "b" and part not in ("0", "1"):
            return ("gs1_format", "must be 0 or 1")
        if f == "k" and not is_country(part):
            return ("gs1_format", "%s is not an ISO 3166 country code" % part)
        if f == "-" and part != "-":
            return ("gs1_format", "only '-' may follow")
    return None


def gs1_element(ai, val):
    """None if val is a valid value for AI ai, else (reason, detail)."""
    spec = ai_spec(ai)
    if spec is None:
        return ("gs1_unknown_ai", "unknown application identifier (%s)" % ai)
    comps = _components(spec)
    lo = hi = 0
    for opt, _t, a, b, _c in comps:
        lo += 0 if opt else a
        hi += b
    if not lo <= len(val) <= hi:
        want = "%d" % lo if lo == hi else ("up to %d" % hi if lo <= 1 else "%d to %d" % (lo, hi))
        return ("gs1_length", "(%s) has %d characters, expected %s" % (ai, len(val), want))
    pos = 0
    for opt, typ, a, b, checks in comps:
        if opt and pos == len(val):
            break
        part = val[pos:pos + b]
        if len(part) < a:
            return ("gs1_length", "(%s) has %d characters, too few for its format" % (ai, len(val)))
        pos += len(part)
        e = _check_part(typ, checks, part)
        if e is not None:
            return (e[0], "(%s) %s" % (ai, e[1]))
    if pos != len(val):
        return ("gs1_length", "(%s) has %d characters, too many for its format" % (ai, len(val)))
    return None


def _problem(ai, reason, detail):
    return {"ai": ai, "reason": reason, "detail": detail}


def _split_gs1(text):
    """([(ai, value)], [problem]) from bracketed '(01)...' or raw GS-separated data."""
    out = []
    problems = []
    n = len(text)
    if text.startswith("("):
        i = 0
        while i < n:
            j = text.find(")", i)
            if j < 0:
                problems.append(_problem("", "gs1_format", "unclosed '(' at %d" % i))
                break
            k = text.find("(", j)
            if k < 0:
                k = n
            out.append((text[i + 1:j], text[j + 1:k]))
            i = k
        return out, problems
    i = 0
    while i < n:
        if text[i] == GS:  # the leading FNC1, or an empty field's separator
            i += 1
            continue
        two = text[i:i + 2]
        size = _ai_len(two) if _digits(two) else 0
        ai = text[i:i + size]
        if not size or not _digits(ai):
            # No AI starts so: its length is unknown, the field ends at the next GS.
            j = text.find(GS, i)
            j = n if j < 0 else j
            problems.append(_problem(text[i:min(j, i + 4)], "gs1_unknown_ai",
                                     "no application identifier starts with %s" % text[i:min(j, i + 4)]))
            i = j + 1
            continue
        i += size
        fixed = _predef(two)
        j = text.find(GS, i)
        j = n if j < 0 else j
        if fixed and i + fixed < j:
            j = i + fixed  # predefined length: the next AI may follow at once
        out.append((ai, text[i:j]))
        i = j + 1 if j < n and text[j] == GS else j
    return out, problems


def gs1(text):
    """GS1 element string: the valid elements, and problems with the others (see the header)."""
    pairs, problems = _split_gs1(text)
    fields = {}
    dropped = []
    for ai, val in pairs:
        e = gs1_element(ai, val)
        if e is not None:
            problems.append(_problem(ai, e[0], e[1]))
            continue
        if ai in dropped:
            continue
        if ai in fields:
            if fields[ai] != val:
                problems.append(_problem(ai, "gs1_format", "(%s) appears twice with different values" % ai))
                del fields[ai]
                dropped.append(ai)
            continue
        fields[ai] = val
    if not fields:
        if problems:
            return bad(problems[0]["reason"], problems[0]["detail"])
        return bad("gs1_format", "empty GS1 element string")
    if "00" in fields:
        v = ok("sscc", fields["00"], ais=fields)
    elif "01" in fields:
        v = ok("gtin", fields["01"], ais=fields)
    else:
        v = ok("gs1", text, ais=fields)
    if problems:
        v["problems"] = problems
    return v


# ---------------------------------------------------------------- China Post domestic

# See the header for where these come from and why 97 is not among them.
CN_EMS_PREFIXES = ("10", "11", "50", "56")
CN_PARCEL_PREFIXES = ("95", "96", "98", "99")


def cn_domestic(text):
    """China Post domestic waybill number: format only (no public check digit).

    13 digits with an EMS (10, 11, 50, 56) or parcel (95, 96, 98, 99)
    prefix. The number alone is not enough: classify() also requires a
    Code 128 symbol (]C0). See the module header.
    """
    if len(text) != 13 or not _digits(text):
        return bad("cn_format", "China Post domestic waybills are 13 digits")
    head = text[:2]
    if head in CN_EMS_PREFIXES:
        return ok("cn_ems", text, check="none")
    if head in CN_PARCEL_PREFIXES:
        return ok("cn_parcel", text, check="none")
    return bad("cn_format", "13-digit waybills start with 10, 11, 50, 56 (EMS) or 95, 96, 98, 99")


def _looks_s10(t):
    return len(t) == 13 and _upper(t[:2]) and _digits(t[2:11]) and _upper(t[11:])


def _trim(s, chars=" \t\r\n\x0b\x0c"):
    # str.strip() without an argument differs between ports (CPython strips GS too).
    i, j = 0, len(s)
    while i < j and s[i] in chars:
        i += 1
    while j > i and s[j - 1] in chars:
        j -= 1
    return s[i:j]


def classify(text):
    """Verdict for one scan as read, with or without an AIM identifier.

    The AIM identifier disambiguates: 13 digits in an EAN-13 symbol are a
    product code; the same digits in a Code 128 symbol may be a domestic
    waybill; without an identifier they are never one (see the header).
    """
    if not isinstance(text, str) or not text:
        return bad("empty", "no data")
    sym, mod, data, is_gs1 = aim.parse(text)
    letter = text[1] if sym is not None else None
    if is_gs1:
        # Scanner suffixes (CR, LF, TAB) are not data; GS1 data has no other trimming.
        j = len(data)
        while j and data[j - 1] in "\r\n\t":
            j -= 1
        data = data[:j]
    else:
        data = _trim(data)
    if not data:
        return bad("empty", "no data after the symbology identifier")
    for c in data:
        if ord(c) < 0x20 and c != GS:
            return bad("bad_chars", "control character 0x%02x in data" % ord(c))
    if is_gs1 or data[0] == "(":
        v = gs1(data)
    elif letter == "E":
        v = ean_aim(mod, data)
    elif _looks_s10(data):
        v = s10(data)
    elif _digits(data):
        head = data[:2]
        domestic = len(data) == 13 and (head in CN_EMS_PREFIXES or head in CN_PARCEL_PREFIXES)
        if domestic and letter == "C" and mod == "0":
            v = cn_domestic(data)
        elif domestic and sym is None and not _gs1_ok(data):
            v = bad("cn_symbology", "13 digits without a symbology identifier: a domestic waybill is "
                    "accepted only from a Code 128 symbol read with its AIM identifier (]C0)")
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
