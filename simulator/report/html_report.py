"""The HTML report: one self-contained file, in both languages, safe to open.

A report is an artifact attached to a bug and read by the field tester in
Chinese and the developer in English; one file that both can read beats two
files that drift apart. So the page carries *both* languages and a switch
(``lang`` only picks the one shown first, and ``#en``/``#zh`` in the address
overrides it); the text costs a few kB, the plots are drawn once.

Self-contained: inline CSS, a tiny inline script for the language switch,
plots as inline SVG from ``charts.py``, no external JS, so it opens offline
from a mail attachment. A Content-Security-Policy with hashes of our own
script and style means text that came from a device (fault details, event
ids) can never run, even if an escape were missed.

The markup is in ``templates/`` (Jinja2, autoescaped): ``base.html`` is the
page every report extends (the head, the style, the language switch and the
script, once), ``report.html`` this report's content, ``bilingual.html`` the
two macros that put a text in both languages, ``report.css`` and
``lang-switch.js`` the style and the script, included as written (``CSS`` and
``SCRIPT`` are the same text, for the hashes). This module only reads the
result into words, per language where they differ; text from the run
reaches the page through the template's escaping, and the one piece of
markup handed in is the SVG that ``charts.py`` draws (it escapes the run's
text inside it).

Template sources are written one tag per line for reading; the line breaks
and the indentation at the start of each line are dropped when an ``.html``
template is loaded (``common.pages.OneLine``, as for every page), so the
page is as compact as it was built by hand. A space that matters is written inside a line.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from common.pages import OneLine
from common.text import LANGS
from simulator.report.charts import offline_spans, span_of, svg_backlog, svg_latency, svg_timeline
from simulator.report.files import atomic_write
from simulator.report.formatting import fmt_ms
from simulator.report.reading import (
    LEDGER_COLS,
    expect_text,
    fault_when,
    hop_label,
    latency_hops,
    ledger_rows,
    refused_text,
    run_line,
    stats_text,
    verdict,
)
from simulator.report.text import check_lang, fault_name, hop_name, kind_name, rule_name, t

# keep_trailing_newline: the style and the script end with a line break, and
# their hashes are taken over exactly the text the page carries.
ENV = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True,
                  undefined=StrictUndefined, keep_trailing_newline=True, extensions=[OneLine])
ENV.globals.update(t=t, langs=LANGS)

CSS = ENV.get_template("report.css").render()
SCRIPT = ENV.get_template("lang-switch.js").render()


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (f"default-src 'none'; style-src {_csp_hash(CSS)}; script-src {_csp_hash(SCRIPT)}; "
       "base-uri 'none'; form-action 'none'")


def both(fn: Callable[[str], str]) -> dict[str, str]:
    """Words in each language, for the template's ``both``."""
    return {lang: fn(lang) for lang in LANGS}


# ----------------------------------------------------------------- sections

def _ledger(ledger: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for h in ledger_rows(ledger):
        tol = [k for k in h.get("tolerated") or [] if h.get(k)]
        exs = [f"{k}: {', '.join(map(str, ex[:5]))}" for k, ex in (h.get("examples") or {}).items()
               if ex and h.get(k)]
        rows.append({
            "ok": bool(h.get("ok")), "hop": str(h.get("hop")),
            "label": both(lambda lang, h=h: hop_label(h, lang)),
            "tolerated": both(lambda lang, tol=tol: t("tolerated", lang, items=", ".join(
                t(f"col.{k}", lang) for k in tol))) if tol else None,
            "examples": "; ".join(exs),
            "counts": [h.get("observations", 0), h.get("unique", 0)] + [h.get(k, 0) for k in LEDGER_COLS],
        })
    return {"events": ledger.get("events", 0), "cols": LEDGER_COLS, "rows": rows}


def _domain(domain: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"ok": bool(c.get("ok")), "rule": str(c.get("name")),
             "name": both(lambda lang, c=c: rule_name(c.get("name"), lang)),
             "examples": ["; ".join(f"{k}={v[k]}" for k in v if k != "rule")
                          for v in (c.get("examples") or [])[:5]],
             "violations": c.get("violations", 0),
             "stats": both(lambda lang, c=c: stats_text(c.get("stats") or {}, lang))}
            for c in domain.get("checks") or []]


def _latency(latency: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for hop in latency_hops(latency):
        lat = latency[hop] or {}
        out.append({"name": both(lambda lang, hop=hop: hop_name(hop, lang)), "n": lat.get("n", 0),
                    "p50": fmt_ms(lat.get("p50_ms")), "p99": fmt_ms(lat.get("p99_ms"))})
    return out


def fault_rows(faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"when": both(lambda lang, f=f: fault_when(f, lang)),
             "name": both(lambda lang, f=f: fault_name(f.get("kind"), lang)),
             "detail": f.get("detail") or ""} for f in faults]


def _devices(result: dict[str, Any]) -> list[dict[str, Any]]:
    span = span_of(result)
    out = []
    for d in result.get("devices") or []:
        off = sum(b - a for a, b in offline_spans(d.get("online"), span))
        out.append({"device": d.get("device"), "events": d.get("events", ""),
                    "kind": both(lambda lang, d=d: kind_name(d.get("kind"), lang)),
                    "online_pct": round(100 * (span - off) / span)})
    return out


def expectation_rows(exps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each expectation as a sentence with the run's numbers, in both
    languages (the summary's words); its code stays for a search."""
    return [{"ok": bool(e.get("ok")), "name": e.get("name"),
             "text": both(lambda lang, e=e: expect_text(e, lang))} for e in exps]


# --------------------------------------------------------------------- page

def render_html(result: dict[str, Any], lang: str = "zh") -> str:
    """The whole report as one HTML string."""
    check_lang(lang)
    ok, failures = verdict(result)
    scenario = result.get("scenario", "?")
    return ENV.get_template("report.html").render(
        lang=lang, html_lang="zh-CN" if lang == "zh" else "en", csp=CSP,
        title=t("title.report", lang, scenario=scenario) + " — " + ("PASS" if ok else "FAIL"),
        scenario=scenario, ok=ok, failures=failures,
        run_line=both(lambda lg: run_line(result, lg)),
        broker=result.get("broker") or "?", trace_hash=result.get("trace_hash") or "-",
        # Markup for the plots alone: SVG that charts.py draws, escaping every
        # text of the run inside it (charts.esc).
        plots={"timeline": Markup(svg_timeline(result)), "backlog": Markup(svg_backlog(result)),
               "latency": Markup(svg_latency(result))},
        latency=_latency(result.get("latency") or {}),
        ledger=_ledger(result.get("ledger") or {}),
        domain=_domain(result.get("domain") or {}),
        faults=fault_rows(result.get("faults") or []),
        refused=[{"what": both(lambda lang, k=k: refused_text(k, lang)), "n": n, "code": k}
                 for k, n in (result.get("refused") or {}).items()],
        expectations=expectation_rows(result.get("expectations") or []),
        devices=_devices(result),
    )


def write_html(result: dict[str, Any], path: Path | str, lang: str = "zh") -> Path:
    return atomic_write(path, render_html(result, lang))
