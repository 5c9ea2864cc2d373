"""The county's HTML report: the dispatcher's view as one self-contained page.

What the terminal's dispatcher's view says (``fleet_summary.py``), for a
file attached to a ticket and read by the field team in Chinese and the
developers in English: the county's verdict, the outlets ranked as the
dispatcher ranks them (most backlog, then most alarms) with their verdict,
events, peak backlog, alarms, last upload and own faults, and then a section
per outlet, linked from its row: its failing checks in words, its backlog
and its alarms over virtual time, the fault windows shaded.

Built exactly as the single outlet's report (``html_report.py``): the same
Jinja2 environment, autoescaping, bilingual macros, base page
(``templates/base.html``: head, style, language switch, script) and
Content-Security-Policy, and the same chart code (``charts.py``): each
outlet's backlog is ``svg_backlog`` of the outlet, its alarms are
``svg_timeline`` of the outlet's alarm events (a row per device, offline
spans greyed). Every outlet's charts share one time axis, so a window at
one outlet lines up with the same hours at another. Each backlog plot is
scaled to its own outlet's peak (its axis says the numbers): on the
county's scale, an outlet with a few events waiting would be a flat line
next to one whose uplink was down for hours.

"Last upload" is the platform's wall clock (when it stored the outlet's
last batch, ``Embedded.health``), shown as how long before the county's
run ended: each outlet's virtual clock runs on its own, so the wall clock
is the one the outlets share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from markupsafe import Markup

from simulator.report.charts import span_of, svg_backlog, svg_timeline
from simulator.report.files import atomic_write
from simulator.report.formatting import fmt_dur, num
from simulator.report.html_report import CSP, ENV, both, expectation_rows, fault_rows
from simulator.report.reading import expect_title
from simulator.report.text import check_lang, t


def _outlet_view(p: dict[str, Any], virtual_s: float) -> dict[str, Any]:
    """One outlet as a single run's result, for the chart code: its backlog
    samples, its alarm events, its devices and its fault windows."""
    return {"virtual_s": virtual_s, "backlog": p.get("backlog") or [], "faults": p.get("faults") or [],
            "timeline": [e for e in p.get("alarm_events") or [] if isinstance(e, dict)],
            "devices": [d for d in p.get("devices") or [] if isinstance(d, dict)]}


def _last_upload(p: dict[str, Any], ended_at: Any) -> dict[str, str]:
    last = p.get("last_batch_at")
    if not isinstance(last, (int, float)):
        return both(lambda lang: t("fleet.never", lang))
    if not isinstance(ended_at, (int, float)):
        return both(lambda lang: "-")  # a result saved before the run's end was recorded
    ago = fmt_dur(max(0.0, ended_at - last))
    return both(lambda lang: t("fleet.last_upload", lang, ago=ago))


def _outlet(p: dict[str, Any], view: dict[str, Any], ended_at: Any) -> dict[str, Any]:
    failures = [str(f) for f in p.get("failures") or []]
    return {
        "outlet": str(p.get("outlet", "?")), "ok": bool(p.get("ok")),
        "emitted": p.get("emitted", 0), "held": p.get("held", 0), "lost": p.get("lost", 0),
        "backlog_max": p.get("backlog_max", 0), "alarms": p.get("alarms", 0),
        "last_upload": _last_upload(p, ended_at),
        "faults": fault_rows(p.get("faults") or []),
        "failing": both(lambda lang: t("fleet.failing_checks", lang, items=t("list.sep", lang).join(
            expect_title(f, lang) for f in failures))) if failures else None,
        "line": both(lambda lang: t("fleet.outlet_line", lang, emitted=p.get("emitted", 0),
                                    held=p.get("held", 0), lost=p.get("lost", 0),
                                    duplicated=p.get("duplicated", 0), backlog=p.get("backlog_max", 0),
                                    alarms=p.get("alarms", 0))),
        "expectations": expectation_rows([e for e in p.get("expectations") or [] if isinstance(e, dict)]),
        # Markup for the plots alone: SVG that charts.py draws, escaping every
        # text of the run inside it (charts.esc).
        "plots": {"backlog": Markup(svg_backlog(view)),
                  "alarms": Markup(svg_timeline(view, classes=("alarm",)))},
    }


def render_fleet_html(result: dict[str, Any], lang: str = "zh") -> str:
    """The county's report as one HTML string."""
    check_lang(lang)
    per = [p for p in result.get("dispatcher") or [] if isinstance(p, dict)]
    ok = bool((result.get("verdict") or {}).get("ok"))
    scenario = result.get("scenario", "?")
    views = [_outlet_view(p, num(result.get("virtual_s"))) for p in per]
    span = max((span_of(v) for v in views), default=1.0)  # one time axis for the county
    for v in views:
        v["virtual_s"] = span
    outlets = [_outlet(p, v, result.get("ended_at")) for p, v in zip(per, views, strict=True)]
    return ENV.get_template("fleet.html").render(
        lang=lang, html_lang="zh-CN" if lang == "zh" else "en", csp=CSP,
        title=t("fleet.title", lang, scenario=scenario) + " — " + ("PASS" if ok else "FAIL"),
        scenario=scenario, ok=ok, outlets=outlets, failing=[o for o in outlets if not o["ok"]],
        run_line=both(lambda lang: t(
            "fleet.run", lang, scenario=scenario, outlets=result.get("outlets", len(per)),
            seed=result.get("seed", "?"), virtual=fmt_dur(num(result.get("virtual_s"))),
            wall=fmt_dur(num(result.get("wall_s"))), up=fmt_dur(num(result.get("up_s"))),
            day=fmt_dur(num(result.get("day_s"))))),
        events_line=both(lambda lang: t("fleet.events", lang, emitted=result.get("events_emitted", 0),
                                        held=result.get("events_held", 0), lost=result.get("lost", 0))),
    )


def write_fleet_html(result: dict[str, Any], path: Path | str, lang: str = "zh") -> Path:
    return atomic_write(path, render_fleet_html(result, lang))
