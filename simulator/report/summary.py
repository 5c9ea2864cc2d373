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
``summary`` is the same text whatever the terminal, ``COLUMNS`` or
``FORCE_COLOR`` say, and a device's text such as ``[red]`` or ``:box:`` is
shown as sent. Only :func:`print_summary` on a terminal differs: it fits
the terminal's width (a table's last column wraps, long lines wrap under
their indent) and colours the verdict and the ✓/✗ marks, unless
``NO_COLOR`` is set.
rich measures cells as a terminal does: CJK takes two columns, combining
accents and zero-width characters none.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from common.text import cells, wrap_cells
from simulator.report.formatting import fmt_ms
from simulator.report.reading import (
    LEDGER_COLS,
    expect_text,
    expect_title,
    fault_when,
    hop_label,
    latency_hops,
    ledger_rows,
    refused_text,
    run_line,
    stats_text,
    uptime_pct,
    verdict,
    violation_name,
)
from simulator.report.text import check_lang, fault_name, hop_name, rule_name, t


def _table(rows: list[list[str]], right: Iterable[int] = (), width: int | None = None) -> list[str]:
    """Rows (the first is the header) as aligned lines: indented by two,
    two spaces between columns, the ``right`` ones right-aligned, no
    trailing blanks. Never wrapped without ``width``; with it, the last
    column (results, counts: words) wraps to fit, the numbers never do."""
    lines = _render(rows, set(right), None)
    if width is None or max(map(cells, lines)) + 2 <= width:
        return lines
    # Only the last column gives way, down to a dozen columns; a terminal
    # too narrow for the rest gets the table whole (the terminal wraps it)
    # rather than numbers cut to "…".
    last = max(cells(row[-1]) for row in rows)
    if max(map(cells, lines)) - last + min(last, 12) + 2 > width:
        return lines
    return _render(rows, set(right), width - 2)


def _render(rows: list[list[str]], right: set[int], width: int | None) -> list[str]:
    table = Table(box=None, header_style=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0))
    last = len(rows[0]) - 1
    for i, head in enumerate(rows[0]):
        table.add_column(Text(head), justify="right" if i in right else "left",
                         no_wrap=width is None or i != last, overflow="fold")
    for row in rows[1:]:
        table.add_row(*(Text(c) for c in row))  # Text: shown as sent, never read as markup
    buf = io.StringIO()
    Console(file=buf, width=100_000 if width is None else width, color_system=None,
            force_terminal=False, force_jupyter=False, force_interactive=False, markup=False, emoji=False,
            highlight=False).print(table)
    return ["  " + line.rstrip() for line in buf.getvalue().splitlines()]


class _Row(str):
    """A line of a table: laid out by :func:`_table`, never rewrapped."""


def _fit(lines: list[str], width: int) -> list[str]:
    """Lines wider than the terminal wrapped at words, the rest of a line
    indented under its start: a wrapped line the terminal breaks runs into
    the left margin and loses the table's shape."""
    out = []
    for line in lines:
        if isinstance(line, _Row) or cells(line) <= width:  # a table fits itself or stays whole
            out.append(line)
            continue
        body = line.lstrip(" ")
        indent = " " * (len(line) - len(body))
        parts = wrap_cells(body, max(10, width - len(indent) - 2))
        out.append(indent + parts[0])
        out += [indent + "  " + p for p in parts[1:]]
    return out


def summary(result: dict[str, Any], lang: str = "zh", width: int | None = None) -> str:
    """The run in a screenful: verdict first, then why. ``width``: fit
    a terminal this wide; without it the lines are as long as they need
    (a CI log, a mail, a test)."""
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
                    ids = t("examples", lang, items=", ".join(map(str, ex[:5]))) + more
                    notes.append("    " + t("ledger.note", lang, hop=hop_label(h, lang),
                                            what=t(f"col.{k}", lang), examples=ids))
        table = _table(rows, right=range(1, 3 + len(LEDGER_COLS)), width=width)
        if width is not None and max(map(cells, table)) > width:
            # Too wide for the terminal: the columns that are 0 in every
            # row go, and one line says which (a narrow terminal still
            # learns that nothing was skipped or reordered).
            zero = [i for i in range(3, 3 + len(LEDGER_COLS)) if all(r[i] == "0" for r in rows[1:])]
            if zero:
                rows = [[c for i, c in enumerate(r) if i not in zero] for r in rows]
                table = _table(rows, right=range(1, len(rows[0]) - 1), width=width)
                notes.insert(0, "    " + t("ledger.zero", lang, cols=t("list.sep", lang).join(
                    t(f"col.{LEDGER_COLS[i - 3]}", lang) for i in zero)))
        out += [_Row(line) for line in table] + notes

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
        out += [_Row(line) for line in _table(rows, right=(2,), width=width)] + notes

    latency = result.get("latency") or {}
    if latency:
        out += ["", t("sec.latency", lang)]
        lc = result.get("latency_clock") or {}
        if lc.get("clock") == "simulated":
            out.append("  " + t("latency.simulated", lang, minutes=int(lc.get("window_s", 0)) // 60))
        rows = [[t("col.hop", lang), t("col.samples", lang), "p50", "p99"]]
        for hop in latency_hops(latency):
            lat = latency[hop] or {}
            rows.append([hop_name(hop, lang), str(lat.get("n", 0)), fmt_ms(lat.get("p50_ms")),
                         fmt_ms(lat.get("p99_ms"))])
        out += [_Row(line) for line in _table(rows, right=(1, 2, 3), width=width)]

    out += ["", t("sec.refused", lang)]
    refused = result.get("refused") or {}
    if not refused:
        out.append("  " + t("refused.none", lang))
    for key, n in refused.items():
        out.append("  " + t("refused.line", lang, what=refused_text(key, lang), n=n))

    out += ["", t("sec.faults", lang)]
    faults = result.get("faults") or []
    if not faults:
        out.append("  " + t("no_faults", lang))
    for f in faults:
        detail = f" — {f['detail']}" if f.get("detail") else ""
        out.append(f"  {fault_when(f, lang)}  {fault_name(f.get('kind'), lang)}{detail}")

    out += _uptime_lines(result, lang, width)

    exps = result.get("expectations") or []
    if exps:
        out += ["", t("sec.expect", lang)]
        for e in exps:
            out.append(f"  {'✓' if e.get('ok') else '✗'} {expect_text(e, lang)}")
    out += ["", t("verdict.pass" if ok else "verdict.fail", lang)]  # last too: what a scrolled log shows
    return "\n".join(out if width is None else _fit(out, width))


#: Devices listed one per line in the uptime table; the rest in one line.
UPTIME_ROWS = 10


def _uptime_lines(result: dict[str, Any], lang: str, width: int | None) -> list[str]:
    """Each device's share of the run online in the gateway, lowest first
    (a locker shown offline while it sent is what this catches); a large fleet shows
    its lowest ``UPTIME_ROWS`` and one line for the rest."""
    devs = [d for d in result.get("devices") or [] if isinstance(d.get("uptime"), int | float)]
    if not devs:
        return []
    devs.sort(key=lambda d: (d["uptime"], str(d.get("device"))))
    rows = [[t("col.device", lang), t("col.uptime", lang)]]
    rows += [[str(d.get("device", "?")), uptime_pct(d["uptime"])] for d in devs[:UPTIME_ROWS]]
    out = ["", t("sec.uptime", lang)] + [_Row(line) for line in _table(rows, right=(1,), width=width)]
    if len(devs) > UPTIME_ROWS:
        out.append("  " + t("uptime.more", lang, n=len(devs) - UPTIME_ROWS,
                            pct=uptime_pct(devs[UPTIME_ROWS]["uptime"])))
    return out


def use_colour(stream: TextIO) -> bool:
    """Colour on a terminal only, and never when NO_COLOR is set
    (https://no-color.org): a log or a pipe gets the plain text."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


def print_summary(result: dict[str, Any], lang: str, stream: TextIO, colour: bool | None = None,
                  render: Callable[..., str] | None = None) -> None:
    """The summary as ``postedge sim run`` prints it: on a terminal, fitted
    to its width with the verdict in green or red and each expectation's
    ✓/✗ coloured; elsewhere exactly :func:`summary`'s text (``render``'s:
    a county's is ``fleet_summary.fleet_summary``).

    rich writes the colour (it is already the tables' layout engine) from
    :class:`rich.text.Text` spans, so nothing in a device's or scenario's
    text is ever read as markup."""
    if colour is None:
        colour = use_colour(stream)
    tty = bool(getattr(stream, "isatty", None) and stream.isatty())
    width = Console(file=stream).size.width if tty else None
    text = (render or summary)(result, lang, width=width)
    if not colour:
        stream.write(text + "\n")
        stream.flush()
        return
    console = Console(file=stream, force_terminal=True, color_system="standard", markup=False, emoji=False,
                      highlight=False, soft_wrap=True)
    verdicts = {t("verdict.pass", lang): "bold green", t("verdict.fail", lang): "bold red"}
    for line in text.split("\n"):
        styled = Text(line)
        if line in verdicts:
            styled.stylize(verdicts[line])
        elif line.startswith("  ✓ "):
            styled.stylize("green", 2, 3)
        elif line.startswith("  ✗ "):
            styled.stylize("bold red", 2, 3)
        console.print(styled)
