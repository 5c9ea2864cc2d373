"""PDU encoding against PDUs written out by hand from TS 23.040 / 23.038
and the well-known published examples, not against the encoder's own output."""

from __future__ import annotations

import pytest

from gateway.notify.pdu import (
    PduError,
    decode_status_report,
    decode_submit,
    encode_address,
    encode_submit,
    gsm7_septets,
    pack_septets,
    unpack_septets,
)


def test_published_hellohello_submit() -> None:
    # The classic SMS-SUBMIT example (dreamfabric "SMS messages and the PDU
    # format"): to +46708251358, relative validity 0xAA, "hellohello".
    [p] = encode_submit("+46708251358", "hellohello", status_report=False, validity=0xAA)
    assert p.hex == "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"
    assert p.tpdu_len == 23  # what AT+CMGS= takes: octets after the SMSC field


def test_published_septet_packing() -> None:
    # TS 23.038 packing, the widely cited "How are you?" example.
    assert pack_septets(gsm7_septets("How are you?") or []).hex().upper() == "C8F71D14969741F977FD07"
    assert pack_septets(gsm7_septets("hellohello") or []).hex().upper() == "E8329BFD4697D9EC37"


def test_packing_after_a_header_with_one_fill_bit() -> None:
    # Worked by hand: "hello" shifted one bit (the fill after a 6-octet UDH).
    assert pack_septets(gsm7_septets("hello") or [], 1).hex().upper() == "D06536FB0D"
    assert unpack_septets(bytes.fromhex("D06536FB0D"), 5, 1) == gsm7_septets("hello")


def test_gsm_extension_and_non_gsm_text() -> None:
    assert gsm7_septets("[€]") == [0x1B, 0x3C, 0x1B, 0x65, 0x1B, 0x3E]
    assert gsm7_septets("a`b") is None  # backquote is not in the default alphabet
    assert gsm7_septets("取件") is None


def test_ucs2_chinese_by_hand() -> None:
    # SRR + VPF relative + SUBMIT = 0x31; MR 0; 13 digits, international;
    # PID 0; DCS 0x08 (UCS-2); VP 0xA7; UDL 4; 你 U+4F60 好 U+597D.
    [p] = encode_submit("+8613800138000", "你好")
    assert p.hex == "0031000D91683108108300F00008A7044F60597D"
    assert p.tpdu_len == 19


def test_national_number_and_bad_numbers() -> None:
    assert encode_address("13800138000").hex().upper() == "0B813108108300F0"
    for bad in ("", "+", "12a4", "+86 138", "１２３", "1" * 21):
        with pytest.raises(PduError):
            encode_address(bad)


def test_single_limits() -> None:
    assert len(encode_submit("+8613800138000", "a" * 160)) == 1
    assert len(encode_submit("+8613800138000", "a" * 161)) == 2
    assert len(encode_submit("+8613800138000", "取" * 70)) == 1
    assert len(encode_submit("+8613800138000", "取" * 71)) == 2


def test_concatenated_gsm7_header_by_hand() -> None:
    parts = encode_submit("+8613800138000", "a" * 306 + "hello", ref=0x2A, status_report=False)
    assert len(parts) == 3
    last = parts[2].hex
    # first octet 0x51: UDHI + VPF relative + SUBMIT; UDL 7 + 5 = 12 septets;
    # UDH 05 00 03 <ref> <total> <seq>; then "hello" after one fill bit.
    assert last == "0051000D91683108108300F00000A7" "0C" "0500032A0303" "D06536FB0D"
    first = decode_submit(parts[0].hex, parts[0].tpdu_len)
    assert first.concat == (0x2A, 3, 1) and first.text == "a" * 153


def test_concatenation_never_splits_an_escape_or_surrogate_pair() -> None:
    text = "a" * 152 + "€" + "b" * 10  # the euro sign's escape would straddle 153
    parts = encode_submit("+8613800138000", text)
    assert "".join(decode_submit(p.hex).text for p in parts) == text
    assert decode_submit(parts[0].hex).text == "a" * 152
    emoji = "取" * 66 + "📦" + "件" * 5  # a surrogate pair at code units 67-68
    parts = encode_submit("+8613800138000", emoji)
    assert "".join(decode_submit(p.hex).text for p in parts) == emoji


def test_long_chinese_roundtrip() -> None:
    text = "【邮政】您的包裹已到达村邮站智能柜，取件码 123456，请于 12月05日 前取件。" * 4
    parts = encode_submit("+8613800138000", text, ref=7)
    assert len(parts) == -(-len(text) // 67)
    decoded = [decode_submit(p.hex, p.tpdu_len) for p in parts]
    assert [d.concat for d in decoded] == [(7, len(parts), i + 1) for i in range(len(parts))]
    assert "".join(d.text for d in decoded) == text


def test_status_reports_by_hand() -> None:
    # No SMSC; first octet 0x06 (STATUS-REPORT); MR 0x2B; RA +8613800138000;
    # SCTS and DT 2026-12-01 12:00:00 +0; ST 0x00 (received by the phone).
    ok = decode_status_report("0006" "2B" "0D91683108108300F0" "62211021000000" "62211021000000" "00")
    assert (ok.mr, ok.number, ok.delivered, ok.final) == (0x2B, "+8613800138000", True, True)
    # With an SMSC address in front (+8613800200500), ST 0x41: incompatible destination, permanent.
    bad = decode_status_report("0891683108200005F0" "06" "05" "0B813108108300F0" "62211021000000"
                               "62211021000000" "41")
    assert (bad.mr, bad.number, bad.delivered, bad.final) == (5, "13800138000", False, True)
    # ST 0x30: the centre is still trying.
    later = decode_status_report("0006" "01" "0B813108108300F0" "62211021000000" "62211021000000" "30")
    assert not later.final
    for junk in ("", "zz", "0006", "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"):
        with pytest.raises(PduError):
            decode_status_report(junk)


def test_decode_submit_refuses_bad_pdus() -> None:
    for junk in ("", "xyz", "00", "0011", "0006"):
        with pytest.raises(PduError):
            decode_submit(junk)
    [p] = encode_submit("+8613800138000", "hi")
    with pytest.raises(PduError):
        decode_submit(p.hex, p.tpdu_len + 1)


def test_texts_in_both_languages_fit_one_sms() -> None:
    from gateway.notify.texts import render, when

    assert when(1796485963, "zh", 8) == "12月5日23:52" and when(1796485963, "en", 8) == "5 Dec 23:52"
    assert when(None, "zh", 8) == "?"
    for lang, outlet in (("zh", "石桥村邮站"), ("en", "Shiqiao post")):
        for purpose in ("notice", "reminder", "resend"):
            t = render(purpose, lang, parcel="RB123456785GB", outlet=outlet, compartment=3, code="123456",
                       expires=1796485963, tz_offset_h=8)
            assert "123456" in t and outlet in t and "RB123456785GB" in t
            assert len(encode_submit("+8613800138000", t)) == 1, (lang, purpose, len(t))
    with pytest.raises(ValueError):
        render("bogus", "zh", parcel="x", outlet="y", compartment=1, code="1", expires=1, tz_offset_h=8)
