"""Barcode rules (protocol/barcodes.py, protocol/aim.py): domestic
waybills that no product code can pass for, real GS1 dates, character sets and
the AI table, EAN add-ons and UPC-E under their AIM identifiers, GS1 modifiers
and scanner suffixes. Each case here failed on an earlier, looser rule set."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol import aim, barcodes
from protocol.errors import InvalidBarcode

QUICK = settings(max_examples=150, deadline=None)
GS = "\x1d"


def ean13_of(body12: str) -> str:
    return body12 + str(barcodes.gs1_check_digit(body12))


def parcel_or_reason(text: str) -> str:
    try:
        return "parcel:" + barcodes.require_parcel_id(text)
    except InvalidBarcode as e:
        return e.reason


# ---------------------------------------------------------------- domestic waybills

@pytest.mark.parametrize("text", [
    "9780471117094",        # ISBN-13 (EAN-13 Bookland), no identifier
    "]C09780471117094",     # the same in a Code 128 symbol
    "]E09780471117094",     # read as what it is
    "9780471117095",        # a corrupted ISBN: wrong check digit
    "]C09790471117093",
    "9771234567003",        # ISSN
    "5012345678900",        # a UK EAN-13 (prefix 50), no identifier
    "1234567890128",        # an EAN-13 under US prefix 123, no identifier
    "1012345678901",        # 13 digits with an EMS-like prefix but no symbology: cannot tell
    "]C01234567890128",     # Code 128, but 12 is no China Post prefix
])
def test_product_codes_and_unattributed_digits_are_never_parcel_ids(text: str) -> None:
    assert not parcel_or_reason(text).startswith("parcel:"), text


@QUICK
@given(st.text(alphabet="0123456789", min_size=12, max_size=12),
       st.sampled_from(["", "]E0", "]C0", "]X0", "]I0", "]A0", "]Q1"]))
@example("978047111709", "")
@example("978047111709", "]C0")
def test_no_valid_ean13_without_code128_is_a_parcel(body: str, prefix: str) -> None:
    code = ean13_of(body)
    got = parcel_or_reason(prefix + code)
    if prefix != "]C0":
        assert not got.startswith("parcel:"), (prefix, code)
    elif got.startswith("parcel:"):
        # Only a Code 128 symbol with a China Post domestic prefix, and never a
        # publication (Bookland/ISSN 977-979) number.
        assert code[:2] in ("10", "11", "50", "56", "95", "96", "98", "99"), code


@pytest.mark.parametrize(("text", "kind"), [
    ("]C01012345678901", "cn_ems"),
    ("]C01100000000019", "cn_ems"),
    ("]C05012345678900", "cn_ems"),
    ("]C09876543210128", "cn_parcel"),
    ("]C09912345678901", "cn_parcel"),
])
def test_domestic_waybills_in_code128_are_parcels(text: str, kind: str) -> None:
    v = barcodes.classify(text)
    assert v["ok"] and v["kind"] == kind and v["check"] == "none" and v["symbology"] == "code128"
    assert barcodes.require_parcel_id(text) == text[3:]


def test_domestic_rules_on_their_own() -> None:
    assert barcodes.cn_domestic("1012345678901")["kind"] == "cn_ems"
    assert barcodes.cn_domestic("9876543210123")["kind"] == "cn_parcel"
    for bad in ("9780471117094", "9712345678901", "1234567890128", "3012345678901",
                "101234567890", "10123456789012", "10123456789O1"):
        assert barcodes.cn_domestic(bad)["reason"] == "cn_format", bad


def test_bare_domestic_looking_digits_say_why() -> None:
    v = barcodes.classify("1012345678901")
    assert not v["ok"] and v["reason"] == "cn_symbology"
    # A valid EAN-13 without an identifier stays a product code.
    assert barcodes.classify("9780471117094")["kind"] == "ean13"


# ---------------------------------------------------------------- GS1 element strings

@pytest.mark.parametrize("text", [
    "(17)533110",   # month 31
    "(17)280071",   # month 00
    "(11)250230",   # 30 February
    "(15)230229",   # 2023 is no leap year
    "(13)2513",     # short
    "(7006)250100",  # day 00 is for 11-17 only
])
def test_gs1_dates_must_be_real(text: str) -> None:
    v = barcodes.gs1(text)
    assert not v["ok"] and v["reason"] in ("gs1_date", "gs1_length"), v


@pytest.mark.parametrize(("text", "value"), [
    ("(17)280200", "280200"),   # DD=00: end of month (GS1 General Specifications 3.4.2)
    ("(17)240229", "240229"),   # leap day
    ("(11)991231", "991231"),
    ("(7006)250131", "250131"),
])
def test_gs1_real_dates_pass(text: str, value: str) -> None:
    v = barcodes.gs1(text)
    assert v["ok"] and "problems" not in v, v
    assert list(v["ais"].values()) == [value]


@pytest.mark.parametrize("text", ["(30)12A4", "(37)1.5", "(37)-3", "(30) 12", "(3302)00123A",
                                  "(00)10614141234567890A"])
def test_gs1_numeric_ais_reject_non_digits(text: str) -> None:
    v = barcodes.gs1(text)
    assert not v["ok"] and v["reason"] == "gs1_format", v


@pytest.mark.parametrize("text", ["(10)AB CD", "(21)ab#1", "(400)PO@123", "(10)\u00e9t\u00e9",
                                  "(21)x~y", "(420)[1]"])
def test_gs1_free_text_is_character_set_82(text: str) -> None:
    v = barcodes.gs1(text)
    assert not v["ok"] and v["reason"] == "gs1_charset", v


def test_gs1_character_set_82_itself_passes() -> None:
    cset82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
    assert len(cset82) == 82
    for i in range(0, 82, 20):
        chunk = cset82[i:i + 20]
        v = barcodes.gs1("10" + chunk)  # raw: '(' and ')' are data here
        assert v["ok"] and v["ais"] == {"10": chunk} and "problems" not in v, (chunk, v)


def test_an_unknown_or_bad_element_keeps_the_valid_ones() -> None:
    v = barcodes.gs1("(00)106141412345678908(3302)001234")
    assert v["ok"] and v["kind"] == "sscc" and v["value"] == "106141412345678908"
    assert v["ais"] == {"00": "106141412345678908", "3302": "001234"}
    v = barcodes.classify("]C1(00)106141412345678908(8999)X(17)533110(10)LOT-1")
    assert v["ok"] and v["kind"] == "sscc"
    assert v["ais"] == {"00": "106141412345678908", "10": "LOT-1"}
    assert [(p["ai"], p["reason"]) for p in v["problems"]] == [("8999", "gs1_unknown_ai"),
                                                                ("17", "gs1_date")]
    assert barcodes.require_parcel_id("]C1(00)106141412345678908(8999)X") == "106141412345678908"
    # Raw data: an unknown AI costs only its own field up to the next separator.
    v = barcodes.classify("]C1" + "00106141412345678908" + "8999ABC" + GS + "10LOT" + GS + "3302001234")
    assert v["ok"] and v["ais"] == {"00": "106141412345678908", "10": "LOT", "3302": "001234"}
    assert [p["reason"] for p in v["problems"]] == ["gs1_unknown_ai"]
    # Nothing valid at all: the first problem is the verdict.
    v = barcodes.gs1("(17)533110(8999)X")
    assert not v["ok"] and v["reason"] == "gs1_date"


@pytest.mark.parametrize(("raw", "ais"), [
    # SSCC, gross weight kg (3302), ship-to postal code (420), count (37), ship-to company (4300)
    ("00106141412345678908" "3302001234" "420" "100000" + GS + "37" "12" + GS + "4300ACME" + GS,
     {"00": "106141412345678908", "3302": "001234", "420": "100000", "37": "12", "4300": "ACME"}),
    # GTIN, expiry, batch, net weight in lb with 2 decimals (3202), serial
    ("01095060001343521725123110ABC123" + GS + "3202000150" "21SN1",
     {"01": "09506000134352", "17": "251231", "10": "ABC123", "3202": "000150", "21": "SN1"}),
    # ship-to GLN (410, predefined length), route (403), price per unit (3955: 39xx needs
    # a GS after it), shipment id (402)
    ("4101234567890128" "403ROUTE-7" + GS + "3955001250" + GS + "40212345678901234560",
     {"410": "1234567890128", "403": "ROUTE-7", "3955": "001250", "402": "12345678901234560"}),
    # 7xxx / 8xxx / 9x
    ("7003250131120" "0" + GS + "8005000123" + GS + "91internal" + GS + "7011250131",
     {"7003": "2501311200", "8005": "000123", "91": "internal", "7011": "250131"}),
])
def test_logistics_label_ais(raw: str, ais: dict[str, str]) -> None:
    v = barcodes.classify("]C1" + raw)
    assert v["ok"] and "problems" not in v, v
    assert v["ais"] == ais


@pytest.mark.parametrize("text", [
    "(3106)000100",       # 31xx measures take 0-5 decimals
    "(3180)000100",       # no 318n
    "(3942)12345",        # 394n is four digits
    "(402)12345678901234567",  # check digit
    "(414)1234567890123",
    "(4307)ZZ",           # not an ISO 3166 country
    "(4321)2",            # a yes/no flag
    "(8008)2501311270",   # minute 70
    "(8008)2501312500",   # hour 25
    "(4330)001234+",      # the optional sign is '-'
])
def test_gs1_element_formats_from_the_table(text: str) -> None:
    v = barcodes.gs1(text)
    assert not v["ok"], v


@pytest.mark.parametrize("text", ["(3103)000100", "(3375)000100", "(3941)1234", "(402)12345678901234560",
                                  "(4307)CN", "(4321)1", "(8008)25013112", "(8008)2501311259",
                                  "(8008)250131125959",
                                  "(4330)001234-", "(4330)001234", "(253)1234567890128ABC",
                                  "(7007)250101251231", "(8006)095060001343520102", "(90)x", "(99)ABC"])
def test_gs1_element_formats_that_pass(text: str) -> None:
    v = barcodes.gs1(text)
    assert v["ok"] and "problems" not in v, v


def test_gs1_duplicates() -> None:
    same = barcodes.gs1("(00)106141412345678908(00)106141412345678908")
    assert same["ok"] and "problems" not in same
    v = barcodes.gs1("(00)106141412345678908(00)006141411234567890(10)X")
    assert v["ok"] and v["kind"] == "gs1" and v["ais"] == {"10": "X"}
    assert [p["reason"] for p in v["problems"]] == ["gs1_format"]


# ---------------------------------------------------------------- EAN/UPC under AIM

ADDON_CASES = [
    ("]E3" + "978047111709490000", "ean13", "9780471117094", "90000"),
    ("]E3" + "400638133393112", "ean13", "4006381333931", "12"),
    ("]E3" + "9780471117094 90000", "ean13", "9780471117094", "90000"),  # zxing-cpp's space
    ("]E3" + "03600029145212", "upca", "036000291452", "12"),
    ("]E3" + "0123456551234", "upce", "01234565", "51234"),
]


@pytest.mark.parametrize(("text", "kind", "main", "addon"), ADDON_CASES)
def test_ean_with_addon_is_split(text: str, kind: str, main: str, addon: str) -> None:
    v = barcodes.classify(text)
    assert v["ok"] and v["kind"] == kind and v["value"] == main and v["addon"] == addon, v
    assert parcel_or_reason(text) == "not_parcel"


@QUICK
@given(st.text(alphabet="0123456789", min_size=12, max_size=12),
       st.text(alphabet="0123456789", min_size=2, max_size=5).filter(lambda s: len(s) in (2, 5)))
def test_no_ean13_with_addon_is_an_sscc_or_a_parcel(body: str, addon: str) -> None:
    code = ean13_of(body)
    v = barcodes.classify("]E3" + code + addon)
    assert v["ok"] and v["kind"] == "ean13" and (v["value"], v["addon"]) == (code, addon)
    assert parcel_or_reason("]E3" + code + addon) == "not_parcel"


def test_addon_main_code_check_digit_and_lengths() -> None:
    assert barcodes.classify("]E3" + "978047111709590000")["reason"] == "ean_check_digit"
    assert barcodes.classify("]E3" + "9780471117094123")["reason"] == "ean_format"  # 16 digits
    assert barcodes.classify("]E3" + "97804711170")["reason"] == "ean_format"  # 11 digits


@pytest.mark.parametrize(("upce", "upca"), [
    ("01234565", "012345000065"),   # 5-9: NS d1-d5 0000 d6 (the common textbook example)
    ("01234505", "012000003455"),   # 0-2: NS d1 d2 d6 0000 d3 d4 d5
    ("12345610", "123100004560"),   # number system 1
    ("01234531", "012300000451"),   # 3: NS d1 d2 d3 00000 d4 d5
    ("01234543", "012340000053"),   # 4: NS d1-d4 00000 d5
])
def test_upce_as_8_digits_under_e0(upce: str, upca: str) -> None:
    assert barcodes.upce_to_upca(upce) == upca
    v = barcodes.classify("]E0" + upce)
    assert v["ok"] and v["kind"] == "upce" and v["value"] == upce and v["upca"] == upca, v


def test_upce_check_digit_and_number_system() -> None:
    assert barcodes.classify("]E0" + "01234566")["reason"] == "ean_check_digit"
    assert barcodes.classify("]E0" + "21234565")["reason"] == "ean_format"  # number system 0 or 1
    # EAN-8 comes under ]E4, never ]E0.
    assert barcodes.classify("]E4" + "96385074")["kind"] == "ean8"
    assert barcodes.classify("]E0" + "96385074").get("kind") != "ean8"
    assert barcodes.classify("]E4" + "9638507")["reason"] == "ean_format"


# ---------------------------------------------------------------- AIM identifiers and suffixes

@pytest.mark.parametrize("ident", ["]C1", "]d2", "]d5", "]d8", "]Q3", "]Q4", "]z1", "]z4", "]e0"])
def test_gs1_modifiers(ident: str) -> None:
    assert aim.parse(ident + "00106141412345678908")[3] is True
    v = barcodes.classify(ident + "00106141412345678908")
    assert v["ok"] and v["kind"] == "sscc", v


@pytest.mark.parametrize("ident", ["]C0", "]d1", "]d4", "]d7", "]Q1", "]Q2", "]z0", "]E0"])
def test_non_gs1_modifiers(ident: str) -> None:
    assert aim.parse(ident + "123")[3] is False


@pytest.mark.parametrize("suffix", ["\r", "\n", "\r\n", "\t"])
def test_gs1_scanner_suffixes_are_not_data(suffix: str) -> None:
    v = barcodes.classify("]C1" + "00106141412345678908" + suffix)
    assert v["ok"] and v["kind"] == "sscc" and "problems" not in v, v
    v = barcodes.classify("]C1" + "0109506000134352" + "10LOT7" + suffix)
    assert v["ok"] and v["ais"] == {"01": "09506000134352", "10": "LOT7"}, v
    # A control character inside the data is still refused.
    assert barcodes.classify("]C1" + "10LO\rT")["ok"] is False
