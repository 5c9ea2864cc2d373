"""A barcode verdict in words (common/barcode_words.py): every reason and
every detail the checker gives for the golden vectors has Chinese and
English words, and the values in a detail are carried over."""

from __future__ import annotations

import json
import re
from pathlib import Path

from common import barcode_words as bw
from protocol import barcodes

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "vectors.jsonl"

# Inputs that reach the details the golden vectors may not.
MORE = ["RB12345678GB", "RB1234567890B", "RB123456784GB", "RB123456785ZZ", "40063813339", "4006381333932",
        "12345670", "]E41234", "]E012345", "(00)1234", "(99)", "(17)991399", "(01)0950600013435",
        "(8008)2301011399", "(4321)2", "(422)XX", "(00)106141412345678908(00)106141412345678915",
        "(9912", "1012345678901", "9012345678901", "12345", "]C0", "RB\x01", "]C01234567890123",
        "(21)a\u00e9", "(01)0950600013435X", "(7003)2301011399", "(4321)5", "(4330)123456+",
        "(7011)2301011399X", "(8200)"]


FN = {"barcode.classify": barcodes.classify, "barcode.cn": barcodes.cn_domestic, "barcode.ean": barcodes.ean,
      "barcode.gs1": barcodes.gs1, "barcode.s10": barcodes.s10}


def verdicts() -> list[dict]:
    """The checker run again on every golden input (the vectors keep only
    the reasons), and on ``MORE``."""
    out = []
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        case = json.loads(line)
        if case["fn"] in FN and isinstance(case["in"], str):
            out.append(FN[case["fn"]](case["in"]))
    out += [barcodes.classify(x) for x in MORE]
    return out


def test_every_detail_and_reason_of_the_checker_has_words() -> None:
    seen = 0
    for v in verdicts():
        items = [v] if not v.get("ok") else []
        items += v.get("problems") or []
        for p in items:
            seen += 1
            assert bw.TEXT.has(f"reason.{p['reason']}"), p
            assert bw.known(p["detail"]), p["detail"]
            zh = bw.detail_text(p["detail"], "zh")
            assert re.search(r"[\u4e00-\u9fff]", zh) or zh.startswith("("), (p["detail"], zh)
            # the English words are the checker's own sentence
            assert bw.detail_text(p["detail"], "en") == p["detail"]
    assert seen > 40


def test_values_are_carried_over() -> None:
    assert bw.detail_text("check digit is 4, expected 5", "zh") == "校验位是 4，应为 5"
    assert bw.detail_text("(17) 533110 is not a real date", "zh") == "(17) 533110 不是存在的日期"
    assert bw.detail_text("(01) has 3 characters, expected 14", "zh") == "(01) 有 3 个字符，应为 14 个"
    assert bw.reason_text("s10_check_digit", "zh") == "S10 校验位错误"
    # a detail or reason from a newer device: as sent, never dropped
    assert bw.detail_text("a brand new rule", "zh") == "a brand new rule"
    assert bw.reason_text("brand_new", "zh") == "brand_new"
