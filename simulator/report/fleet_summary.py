"""The terminal summary of a county (``simulator/fleet.py``): the dispatcher's view.

What a dispatcher at the platform wants from a day of many outlets: which
outlets fell behind and which raised alarms, and when. So, verdict first,
then one row per outlet, most backlog first and then most alarms (its
verdict, events emitted, held at the platform and lost, peak backlog,
alarms, its own faults), then two strips per outlet over the day: the
backlog waiting at its gateway by the hour, scaled to the county's peak
so outlets compare at a glance, and the alarms raised each hour. The
verdict again at the end, where a scrolled log stops. Reads only the
county's result, so a saved ``--json`` prints the same later.
"""

from __future__ import annotations

import math
from typing import Any, TextIO

from simulator.report.formatting import fmt_dur, num
from simulator.report.reading import expect_title, fault_when
from simulator.report.summary import _fit, _Row, _table, print_summary
from simulator.report.text import check_lang, fault_name, t

#: Strip cells from low to high; a blank for nothing waiting.
LEVELS = " ▁▂▃▄▅▆▇█"
#: At most this many cells in a strip: a two-week county shows a cell per several hours.
CELLS = 48


def _step(hours: int) -> int:
    """Hours per strip cell."""
    return max(1, math.ceil(hours / CELLS))


def _cells(values: list[int], step: int, how: Any) -> list[int]:
    return [how(values[i:i + step]) for i in range(0, len(values), step)]


def backlog_strip(values: list[int], step: int, top: int) -> str:
    """Peaks per cell as block heights against the county's ``top`` (a
    non-zero backlog never shows as blank)."""
    out = []
    for v in _cells(values, step, max):
        out.append(LEVELS[0] if v <= 0 or top <= 0 else LEVELS[max(1, round(v / top * (len(LEVELS) - 1)))])
    return "".join(out)


def alarm_strip(values: list[int], step: int) -> str:
    """Alarms per cell: · for none, the count up to 9, + for more."""
    return "".join("·" if n == 0 else str(n) if n < 10 else "+" for n in _cells(values, step, sum))


def ruler(hours: int, step: int) -> str:
    """Hour marks above the strips, every six cells."""
    n = math.ceil(hours / step)
    out = [" "] * n
    for i in range(0, n, 6):
        mark = f"{i * step}h"
        if i + len(mark) <= n:
            out[i:i + len(mark)] = mark
    return "".join(out)


def fleet_summary(result: dict[str, Any], lang: str = "zh", width: int | None = None) -> str:
    """The county in a screenful (see the module docstring)."""
    check_lang(lang)
    v = result.get("verdict") or {}
    ok = bool(v.get("ok"))
    per = [p for p in result.get("dispatcher") or [] if isinstance(p, dict)]
    out = [t("verdict.pass" if ok else "verdict.fail", lang)]
    failing = [p for p in per if not p.get("ok")]
    if failing:
        out.append(t("fleet.failing", lang, items=t("list.sep", lang).join(
            t("fleet.failing_item", lang, outlet=p.get("outlet"), checks=t("list.sep", lang).join(
                expect_title(f, lang) for f in p.get("failures") or [])) for p in failing)))
    out.append(t("fleet.run", lang, scenario=result.get("scenario", "?"), outlets=result.get("outlets", 0),
                 seed=result.get("seed", "?"), virtual=fmt_dur(num(result.get("virtual_s"))),
                 wall=fmt_dur(num(result.get("wall_s"))), up=fmt_dur(num(result.get("up_s"))),
                 day=fmt_dur(num(result.get("day_s")))))
    out.append(t("fleet.events", lang, emitted=result.get("events_emitted", 0),
                 held=result.get("events_held", 0), lost=result.get("lost", 0)))

    out += ["", t("fleet.sec.dispatcher", lang)]
    rows = [[t("fleet.col.outlet", lang), t("col.result", lang), t("fleet.col.emitted", lang),
             t("fleet.col.held", lang), t("fleet.col.lost", lang), t("fleet.col.backlog_max", lang),
             t("fleet.col.alarms", lang), t("fleet.col.faults", lang)]]
    for p in per:
        faults = t("list.sep", lang).join(f"{fault_when(f, lang)} {fault_name(f.get('kind'), lang)}"
                                          for f in p.get("faults") or []) or "-"
        rows.append([str(p.get("outlet", "?")), t("ok" if p.get("ok") else "fail", lang),
                     str(p.get("emitted", 0)), str(p.get("held", 0)), str(p.get("lost", 0)),
                     str(p.get("backlog_max", 0)), str(p.get("alarms", 0)), faults])
    out += [_Row(line) for line in _table(rows, right=range(2, 7), width=width)]

    hours = int(num(result.get("hours"))) or max((len(p.get("backlog_by_h") or []) for p in per),
                                                  default=0)
    if hours and per:
        step = _step(hours)
        top = max((max(p.get("backlog_by_h") or [0]) for p in per), default=0)
        name = max(len(str(p.get("outlet", ""))) for p in per)
        out += ["", t("fleet.sec.backlog", lang, step=step, top=top)]
        out.append(_Row("  " + " " * name + "  " + ruler(hours, step)))
        for p in per:
            out.append(_Row(f"  {str(p.get('outlet', '?')):<{name}}  "
                            f"{backlog_strip(list(p.get('backlog_by_h') or []), step, top)}  "
                            f"{p.get('backlog_max', 0)}"))
        out += ["", t("fleet.sec.alarms", lang, step=step)]
        out.append(_Row("  " + " " * name + "  " + ruler(hours, step)))
        for p in per:
            out.append(_Row(f"  {str(p.get('outlet', '?')):<{name}}  "
                            f"{alarm_strip(list(p.get('alarms_by_h') or []), step)}  "
                            f"{sum(p.get('alarms_by_h') or [])}"))
    out += ["", t("verdict.pass" if ok else "verdict.fail", lang)]
    return "\n".join(out if width is None else _fit(out, width))


def print_fleet_summary(result: dict[str, Any], lang: str, stream: TextIO,
                        colour: bool | None = None) -> None:
    """The county's summary as ``postedge sim run`` prints it (fitted and
    coloured on a terminal, as a single outlet's)."""
    print_summary(result, lang, stream, colour, render=fleet_summary)
