"""Every catalogue a person's text comes from has both languages for every
key, with the same placeholders, and the loader's rules hold: a missing key
fails, device fields fill placeholders and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.text import LANGS, Catalog, CatalogError, placeholders

ROOT = Path(__file__).resolve().parents[2]
CATALOGUES = sorted(p for pkg in ("postedge", "gateway", "handheld", "central", "simulator", "common")
                    for p in (ROOT / pkg).rglob("text*.toml"))


def test_every_component_has_a_catalogue() -> None:
    owners = {p.relative_to(ROOT).parts[0] for p in CATALOGUES}
    assert {"postedge", "gateway"} <= owners, CATALOGUES


@pytest.mark.parametrize("path", CATALOGUES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_both_languages_with_the_same_placeholders(path: Path) -> None:
    cat = Catalog(path)  # raises CatalogError on an entry missing a language
    assert len(cat) > 0
    for key, texts in cat.entries.items():
        assert set(texts) == set(LANGS), key
        assert all(t.strip() for t in texts.values()), f"{key}: empty text"
        assert placeholders(texts["zh"]) == placeholders(texts["en"]), key


def test_an_entry_missing_a_language_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "text.toml"
    p.write_text('[a.b]\nzh = "好"\n', encoding="utf-8")
    with pytest.raises(CatalogError, match="a.b"):
        Catalog(p)
    p.write_text('[a]\nzh = "好"\nen = "good"\nfr = "bon"\n', encoding="utf-8")
    with pytest.raises(CatalogError, match="'a.fr'"):
        Catalog(p)


def test_missing_key_fails_and_device_fields_only_fill(tmp_path: Path) -> None:
    p = tmp_path / "text.toml"
    p.write_text('[alarm]\nzh = "格口 {cid}：{lang}"\nen = "compartment {cid}: {lang}"\n', encoding="utf-8")
    cat = Catalog(p)
    with pytest.raises(KeyError):
        cat.t("alarn", "zh")
    # A device field named like the formatter's own arguments only fills.
    assert cat.t("alarm", "en", lang="xx", key="k") == "compartment ?: xx"
    assert cat.both("alarm", cid="{0}{x}") == {"zh": "格口 {0}{x}：?", "en": "compartment {0}{x}: ?"}
    assert cat.t("alarm", "fr", cid=3) == "compartment 3: ?"
