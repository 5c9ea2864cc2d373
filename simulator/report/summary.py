"""The terminal summary: a run in a screenful, verdict first, then why.

What a tester reads after ``postedge sim run`` and what a failing test
prints: the verdict (with the English word kept in the Chinese line, so CI
logs can be grepped for PASS/FAIL whatever ``POSTEDGE_LANG`` was), the
ledger hop by hop with example ids of what went missing, the domain rules,
latency per hop, the faults and the expectations, and the verdict again at
the end, where a scrolled log stops. Plain text with CJK-aware column
alignment, so it reads the same in a terminal, a CI log and a mail.

The tables are laid out by rich (``Table``) and printed to a console of our
own with no colour, no markup, no emoji codes and a fixed, wide width, so
the text is the same whatever the terminal, ``COLUMNS`` or ``FORCE_COLOR``
say, and a device's text such as ``[red]`` or ``:box:`` is shown as sent.
rich measures cells as a terminal does: CJK takes two columns, combining
accents and zero-width characters none.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from simulator.report.formatting import fmt_ms
from simulator.report.reading import (
    LEDGER_COLS,
    expect_text,
    expect_title,
    fault_when,
    hop_label,
    latency_hops,
    ledger_rows,
    run_line,
    stats_text,
    verdict,
    violation_name,
)
from simulator.report.text import check_lang, fault_name, hop_name, rule_name, t


def _table(rows: list[list[str]], right: Iterable[int] = ()) -> list[str]:
    """Rows (the first is the header) as aligned lines: indented by two,
    two spaces between columns, the ``right`` ones right-aligned, never
    wrapped, no trailing blanks."""
    r = set(right)
    table = Table(box=None, header_style=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0))
    for i, head in enumerate(rows[0]):
        table.add_column(Text(head), justify="right" if i in r else "left", no_wrap=True)
    for row in rows[1:]:
        table.add_row(*(Text(c) for c in row))  # Text: shown as sent, never read as markup
    buf = io.StringIO()
    Console(file=buf, width=100_000, color_system=None, force_terminal=False, force_jupyter=False,
            force_interactive=False, markup=False, emoji=False, highlight=False).print(table)
    return ["  " + line.rstrip() for line in buf.getvalue().splitlines()]


def summary(result: dict[str, Any], lang: str = "zh") -> str:
    """The run in a screenful: verdict first, then why."""
    check_lang(lang)
    ok, failures = verdict(result)
    out = [t("verdict.pass" if ok else "verdict.fail", lang)]
    if failures:
        out.append(t("verdict.failures", lang, items=t("list.sep", lang).join(
            expect_title(f, lang) for f in failures)))
    out.append(run_line(result, lang))
    out.append(t("broker", lang, broker=result.get("broker") or t("unknown", lang)))
    out.append(t("trace", lang, hash=result.get("trace_hash") or "-"))

    ledger = result.get("ledger") or {}
    if ledger:
        out += ["", t("sec.ledger", lang) + "  " + t("ledger.events", lang, n=ledger.get("events", 0))]
        head = [t("col.hop", lang), t("col.seen", lang), t("col.unique", lang)] + \
            [t(f"col.{k}", lang) for k in LEDGER_COLS] + [t("col.result", lang)]
        rows = [head]
        notes: list[str] = []
        for h in ledger_rows(ledger):
            mark = t("ok", lang) if h.get("ok") else t("fail", lang)
            tol = [k for k in h.get("tolerated") or [] if h.get(k)]
            if tol:
                mark += t("tolerated", lang, items=", ".join(t(f"col.{k}", lang) for k in tol))
            rows.append([hop_label(h, lang), str(h.get("observations", 0)), str(h.get("unique", 0))]
                        + [str(h.get(k, 0)) for k in LEDGER_COLS] + [mark])
            for k, ex in (h.get("examples") or {}).items():
                if ex and h.get(k) and k not in (h.get("tolerated") or []):
                    more = " ..." if h[k] > len(ex) else ""
                    notes.append(f"    {hop_label(h, lang)} {t(f'col.{k}', lang)}: "
                                 f"{t('examples', lang, items=', '.join(map(str, ex[:5])))}{more}")
        out += _table(rows, right=range(1, 3 + len(LEDGER_COLS))) + notes

    domain = result.get("domain") or {}
    if domain.get("checks"):
        out += ["", t("sec.domain", lang)]
        rows = [[t("col.rule", lang), t("col.result", lang), t("col.violations", lang), t("col.stats", lang)]]
        notes = []
        for c in domain["checks"]:
            rows.append([rule_name(c.get("name"), lang), t("ok" if c.get("ok") else "fail", lang),
                         str(c.get("violations", 0)), stats_text(c.get("stats") or {}, lang)])
            for v in (c.get("examples") or [])[:3]:
                rest = ", ".join(f"{k}={v[k]}" for k in v if k not in ("rule", "kind"))
                notes.append(f"    {rule_name(c.get('name'), lang)}: {violation_name(v.get('kind'), lang)} "
                             f"{rest}")
        out += _table(rows, right=(2,)) + notes

    latency = result.get("latency") or {}
    if latency:
        out += ["", t("sec.latency", lang)]
        rows = [[t("col.hop", lang), t("col.samples", lang), "p50", "p99"]]
        for hop in latency_hops(latency):
            lat = latency[hop] or {}
            rows.append([hop_name(hop, lang), str(lat.get("n", 0)), fmt_ms(lat.get("p50_ms")),
                         fmt_ms(lat.get("p99_ms"))])
        out += _table(rows, right=(1, 2, 3))

    out += ["", t("sec.faults", lang)]
    faults = result.get("faults") or []
    if not faults:
        out.append("  " + t("no_faults", lang))
    for f in faults:
        detail = f" — {f['detail']}" if f.get("detail") else ""
        out.append(f"  {fault_when(f, lang)}  {fault_name(f.get('kind'), lang)}{detail}")

    exps = result.get("expectations") or []
    if exps:
        out += ["", t("sec.expect", lang)]
        for e in exps:
            out.append(f"  {'✓' if e.get('ok') else '✗'} {expect_text(e, lang)}")
    out += ["", t("verdict.pass" if ok else "verdict.fail", lang)]  # last too: what a scrolled log shows
    return "\n".join(out)
