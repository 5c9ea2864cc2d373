"""The central service's text for people (``central/text.toml``, zh and en)."""

from __future__ import annotations

from common.text import beside

TEXT = beside(__file__)
