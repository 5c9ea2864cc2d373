"""Every event the courier handheld records has words on the clerk's page
and console.

The types are read from the handheld's source, so a new event without an
entry in ``gateway/http/text.toml`` fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.http.clerk import event_words
from gateway.http.status import TEXT

ROOT = Path(__file__).resolve().parents[2]
TYPES = sorted({m for p in (ROOT / "handheld").glob("*.py")
                for m in re.findall(r"\"(handheld\.[a-z_]+)\"", p.read_text(encoding="utf-8"))})


def test_the_handheld_records_events() -> None:
    assert {"handheld.hand_delivery", "handheld.collect", "handheld.intake"} <= set(TYPES)


@pytest.mark.parametrize("etype", TYPES)
def test_each_handheld_event_has_words(etype: str) -> None:
    assert TEXT.has(f"evt.{etype}"), etype
    for lang in ("zh", "en"):
        words = event_words(etype, lang)
        assert etype not in words, words
    assert not re.search(r"[A-Za-z]", event_words(etype, "zh"))


def test_a_type_nobody_knows_is_shown_behind_a_label() -> None:
    assert event_words("handheld.from_the_future", "zh") == "记录：handheld.from_the_future"
