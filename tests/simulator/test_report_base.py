"""One base page for both HTML reports (``simulator/report/templates/base.html``):
one outlet's run (``report.html``) and a county's (``fleet.html``) extend it,
so the head, the style, the language switch and its script are written once
and the two pages cannot drift apart. Checked on the sources (only the base
carries the head, the style and the script) and on the pages rendered from
results made by hand: everything outside ``<main>`` is the same text on
both but for the title and the heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simulator.report import CSS, SCRIPT, render_fleet_html
from simulator.report.html_report import CSP, render_html
from simulator.report.text import t
from tests.simulator.test_county_report import county
from tests.simulator.test_sim_report import make_result, parse

TEMPLATES = Path(__file__).resolve().parents[2] / "simulator" / "report" / "templates"


def test_the_head_style_and_script_are_written_once_in_the_base_page() -> None:
    base = (TEMPLATES / "base.html").read_text(encoding="utf-8")
    for shared in ("<head>", 'http-equiv="Content-Security-Policy"', '{% include "report.css" %}',
                   '{% include "lang-switch.js" %}', 'id="lang-switch"'):
        assert base.count(shared) == 1, shared
    for page in ("report.html", "fleet.html"):
        src = (TEMPLATES / page).read_text(encoding="utf-8")
        assert '{% extends "base.html" %}' in src, page
        for shared in ("<head", "<html", "<style", "<script", "report.css", "lang-switch", "</main>"):
            assert shared not in src, (page, shared)


def _outside_main(page: str) -> tuple[str, str]:
    """The page before ``<main>`` and after ``</main>``, title and heading blanked."""
    before, rest = page.split("<main>", 1)
    after = rest.rsplit("</main>", 1)[1]
    before = re.sub(r"<title>.*?</title>", "<title></title>", before)
    before = re.sub(r"<h1>.*?</h1>", "<h1></h1>", before)
    return before, after


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_both_reports_carry_the_same_page_around_their_own_content(lang: str) -> None:
    single, fleet = render_html(make_result(drop_at_central=9), lang), render_fleet_html(county(), lang)
    assert _outside_main(single) == _outside_main(fleet)
    pages = ((single, "title.report", "village-day"), (fleet, "fleet.title", "county-day"))
    for page, key, scenario in pages:
        p = parse(page)
        assert p.scripts == [SCRIPT] and p.styles == [CSS]
        assert [a["content"] for a in p.find("meta") if a.get("http-equiv")] == [CSP]
        assert p.find("html")[0]["data-lang"] == lang and len(p.find("button")) == 1
        assert page.count("<main>") == 1 and page.startswith("<!doctype html>")
        assert page.endswith("</script></body></html>")
        # each page's own title (in the language shown first) and heading (in both)
        assert f"<title>{t(key, lang, scenario=scenario)} — FAIL</title>" in page
        assert "<h1>" + "".join(f'<span class="l-{lg}">{t(key, lg, scenario=scenario)}</span>'
                                for lg in ("zh", "en")) + "</h1>" in page
