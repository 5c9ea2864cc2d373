"""A barcode verdict in a person's words: its reason and its detail, in
Simplified Chinese and English (``common/text_barcodes.toml``).

``protocol/barcodes.py`` runs unchanged on the devices (MicroPython), where
a verdict is a reason code and one English detail for logs
("check digit is 4, expected 5"); a device has no room for two languages
and no screen that needs them. Whatever shows a verdict to a person (the
CLI's ``validate``, the handheld, the clerk's console) reads it here: the
reason by its code, and the detail by matching the checker's sentence to
one of ours and carrying its values over ("校验位是 4，应为 5").

The patterns are keyed by the checker's English, so they and the checker
must move together: ``tests/common/test_barcode_words.py`` runs every
golden vector and fails on a detail no pattern knows. One that slips
through anyway (a newer device) is shown as sent, never dropped.
"""

from __future__ import annotations

import re

from common.text import beside

TEXT = beside(__file__, "text_barcodes.toml")

# (pattern over the whole detail, key): the first match wins.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [(re.compile(p), k) for p, k in (
    (r"S10 ids are 13 characters, got (?P<n>\d+)", "detail.s10_length"),
    (r"S10 is 2 letters, 9 digits, 2 letters", "detail.s10_shape"),
    (r"check digit is (?P<got>.+), expected (?P<want>\d+)", "detail.check_digit"),
    (r"(?P<country>.*) is not an ISO 3166 country code", "detail.country"),
    (r"EAN/UPC codes are digits only", "detail.ean_digits_only"),
    (r"no EAN/UPC/GTIN code has (?P<n>\d+) digits", "detail.ean_no_such_length"),
    (r"UPC-E is 8 digits with number system 0 or 1", "detail.upce_shape"),
    (r"an EAN/UPC main symbol has 13, 12 or 8 digits", "detail.ean_main_length"),
    (r"EAN/UPC with add-on is 13, 12 or 8 digits and 2 or 5 more", "detail.ean_addon_length"),
    (r"\]E4 carries EAN-8: 8 digits", "detail.e4_length"),
    (r"\]E4 carries EAN-8: 8 digits, got (?P<n>\d+)", "detail.e4_length_got"),
    (r"\]E0 carries EAN-13, UPC-A or UPC-E: 13, 12 or 8 digits, got (?P<n>\d+)", "detail.e0_length_got"),
    (r"must be digits", "detail.digits_only"),
    (r"U\+(?P<cp>[0-9A-F]{4,6}) is outside GS1 character set (?P<set>\d+)", "detail.charset"),
    (r"(?P<part>.*) is not a real date and time", "detail.not_date_time"),
    (r"(?P<part>.*) is not a real date", "detail.not_date"),
    (r"(?P<part>.*) is not a real time", "detail.not_time"),
    (r"must be 0 or 1", "detail.zero_or_one"),
    (r"only '-' may follow", "detail.only_dash"),
    (r"unknown application identifier \((?P<ai>.*)\)", "detail.unknown_ai"),
    (r"\((?P<ai>\d+)\) has (?P<n>\d+) characters, expected up to (?P<want>\d+)", "detail.length_up_to"),
    (r"\((?P<ai>\d+)\) has (?P<n>\d+) characters, expected (?P<lo>\d+) to (?P<hi>\d+)",
     "detail.length_range"),
    (r"\((?P<ai>\d+)\) has (?P<n>\d+) characters, expected (?P<want>\d+)", "detail.length_exact"),
    (r"\((?P<ai>\d+)\) has (?P<n>\d+) characters, too few for its format", "detail.too_few"),
    (r"\((?P<ai>\d+)\) has (?P<n>\d+) characters, too many for its format", "detail.too_many"),
    (r"unclosed '\(' at (?P<i>\d+)", "detail.unclosed"),
    (r"\((?P<ai>\d+)\) appears twice with different values", "detail.twice"),
    (r"no application identifier starts with (?P<prefix>.*)", "detail.no_ai_prefix"),
    (r"empty GS1 element string", "detail.gs1_empty"),
    (r"China Post domestic waybills are 13 digits", "detail.cn_length"),
    (r"13-digit waybills start with 10, 11, 50, 56 \(EMS\) or 95, 96, 98, 99", "detail.cn_prefix"),
    (r"no data", "detail.no_data"),
    (r"no data after the symbology identifier", "detail.no_data_after_aim"),
    (r"control character 0x(?P<hex>[0-9a-f]{2}) in data", "detail.control_char"),
    (r"13 digits without a symbology identifier: .*", "detail.cn_symbology"),
    (r"not an S10, EAN/UPC, GS1 or domestic waybill code", "detail.unrecognised"),
)]
# "(17) 533110 is not a real date": an element's own detail behind its AI.
_IN_ELEMENT = re.compile(r"\((?P<ai>\d+)\) (?P<what>.+)")


def detail_key(detail: str) -> tuple[str, dict[str, str]] | None:
    """The catalogue key and values for a checker's detail; None for one we
    have no words for."""
    for pat, key in _PATTERNS:
        m = pat.fullmatch(detail)
        if m:
            return key, m.groupdict()
    return None


def detail_text(detail: object, lang: str) -> str:
    """The checker's detail in ``lang``; one no pattern knows, as sent."""
    text = str(detail)
    found = detail_key(text)
    if found is not None:
        return TEXT.t(found[0], lang, **found[1])
    m = _IN_ELEMENT.fullmatch(text)
    if m and detail_key(m["what"]) is not None:
        return TEXT.t("detail.in_element", lang, ai=m["ai"], what=detail_text(m["what"], lang))
    return text


def known(detail: object) -> bool:
    """Whether :func:`detail_text` has words for this detail."""
    text = str(detail)
    m = _IN_ELEMENT.fullmatch(text)
    return detail_key(text) is not None or (m is not None and detail_key(m["what"]) is not None)


def reason_text(reason: object, lang: str) -> str:
    """A verdict's reason code in words; an unknown one, as sent."""
    key = f"reason.{reason}"
    return TEXT.t(key, lang) if TEXT.has(key) else str(reason)
