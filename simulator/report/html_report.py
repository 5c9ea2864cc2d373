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
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulator.report.charts import esc, offline_spans, span_of, svg_backlog, svg_latency, svg_timeline
from simulator.report.files import atomic_write
from simulator.report.formatting import fmt_ms
from simulator.report.reading import (
    LEDGER_COLS,
    fault_when,
    hop_label,
    latency_hops,
    ledger_rows,
    run_line,
    stats_text,
    verdict,
)
from simulator.report.text import check_lang, fault_name, hop_name, kind_name, rule_name, t


def _bi(key: str, **kw: Any) -> str:
    """Both languages of one text; CSS shows the chosen one."""
    return "".join(f'<span class="l-{lang}">{esc(t(key, lang, **kw))}</span>' for lang in ("zh", "en"))


def _bi_fn(fn: Callable[[str], str]) -> str:
    return "".join(f'<span class="l-{lang}">{esc(fn(lang))}</span>' for lang in ("zh", "en"))


CSS = """
:root{--ok:#1b7f3b;--ok-bg:#e3f4e8;--bad:#b3261e;--bad-bg:#fde7e5;--ink:#1a1a1a;--mute:#555;--line:#d0d0d0}
*{box-sizing:border-box}
html[data-lang=zh] .l-en,html[data-lang=en] .l-zh{display:none}
body{margin:0;font:17px/1.45 system-ui,"Noto Sans CJK SC","WenQuanYi Micro Hei","Microsoft YaHei",
"PingFang SC",sans-serif;color:var(--ink);background:#f6f6f4}
header{display:flex;align-items:center;gap:1em;padding:.6em 1em;background:#0b4f8a;color:#fff}
header h1{margin:0;font-size:1.4em;flex:1}
header button{font:inherit;color:#fff;background:none;border:2px solid #fff;border-radius:.4em;
padding:.1em .6em;cursor:pointer}
main{padding:0 1em 2em;max-width:1160px;margin:auto}
h2{font-size:1.25em;margin:1.3em 0 .4em;border-bottom:2px solid var(--line)}
.verdict{margin-top:1em;padding:.6em 1em;border:3px solid;border-radius:.5em;font-size:1.4em;font-weight:bold}
.verdict.pass{background:var(--ok-bg);border-color:var(--ok);color:var(--ok)}
.verdict.fail{background:var(--bad-bg);border-color:var(--bad);color:var(--bad)}
.verdict ul{font-size:.7em;margin:.2em 0 0;font-weight:normal;color:var(--ink)}
.meta{color:var(--mute);margin:.3em 0}.mono,.dev{font-family:ui-monospace,monospace}
.plot{max-width:100%;height:auto;background:#fff;border:1px solid var(--line);border-radius:.3em;
font:13px system-ui,"Noto Sans CJK SC",sans-serif}
.plot .note{fill:var(--mute)}.plot .flabel{fill:#b3261e;font-size:12px}.plot .axislabel{fill:var(--mute)}
.plot .val{font-size:12px}.plot .hopname{font-size:14px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.95em}
th,td{text-align:left;padding:.3em .5em;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:normal;color:var(--mute)}.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:var(--bad-bg)}.ok{color:var(--ok);font-weight:bold}
.bad-t{color:var(--bad);font-weight:bold}
.ex{color:var(--mute);font-size:.85em;font-family:ui-monospace,monospace;overflow-wrap:anywhere}
"""

SCRIPT = """
(function(){
var h=document.documentElement,b=document.getElementById('lang-switch'),m=/^#(zh|en)$/.exec(location.hash);
function set(l){h.setAttribute('data-lang',l);h.lang=l==='zh'?'zh-CN':'en';}
if(m){set(m[1]);}
b.addEventListener('click',function(){set(h.getAttribute('data-lang')==='zh'?'en':'zh');});
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _ledger_html(ledger: dict[str, Any]) -> str:
    head = ["col.hop", "col.seen", "col.unique"] + [f"col.{k}" for k in LEDGER_COLS] + ["col.result"]
    out = [f'<p class="meta">{_bi("ledger.events", n=ledger.get("events", 0))}</p>',
           '<table class="ledger"><thead><tr>' + "".join(
               f'<th{"" if k in ("col.hop", "col.result") else " class=num"}>{_bi(k)}</th>' for k in head)
           + "</tr></thead><tbody>"]
    for h in ledger_rows(ledger):
        ok = bool(h.get("ok"))
        tol = [k for k in h.get("tolerated") or [] if h.get(k)]
        mark = _bi("ok" if ok else "fail")
        if tol:
            mark += _bi_fn(lambda lang, tol=tol: t("tolerated", lang, items=", ".join(
                t(f"col.{k}", lang) for k in tol)))
        exs = [f"{k}: {', '.join(map(str, ex[:5]))}" for k, ex in (h.get("examples") or {}).items()
               if ex and h.get(k)]
        ex_html = f'<div class="ex">{esc("; ".join(exs))}</div>' if exs else ""
        out.append(f'<tr class="{"ok-row" if ok else "bad"}" data-hop="{esc(h.get("hop"))}">'
                   f"<td>{_bi_fn(lambda lang, h=h: hop_label(h, lang))}{ex_html}</td>"
                   f'<td class="num">{esc(h.get("observations", 0))}</td>'
                   f'<td class="num">{esc(h.get("unique", 0))}</td>'
                   + "".join(f'<td class="num">{esc(h.get(k, 0))}</td>' for k in LEDGER_COLS)
                   + f'<td class="{"ok" if ok else "bad-t"}">{mark}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _domain_html(domain: dict[str, Any]) -> str:
    out = ['<table class="domain"><thead><tr>' + "".join(
        f"<th>{_bi(k)}</th>" for k in ("col.rule", "col.result", "col.violations", "col.stats"))
        + "</tr></thead><tbody>"]
    for c in domain.get("checks") or []:
        ok = bool(c.get("ok"))
        exs = ["; ".join(f"{k}={v[k]}" for k in v if k != "rule") for v in (c.get("examples") or [])[:5]]
        ex_html = "".join(f'<div class="ex">{esc(e)}</div>' for e in exs)
        out.append(f'<tr class="{"ok-row" if ok else "bad"}" data-rule="{esc(c.get("name"))}">'
                   f"<td>{_bi_fn(lambda lang, c=c: rule_name(c.get('name'), lang))}{ex_html}</td>"
                   f'<td class="{"ok" if ok else "bad-t"}">{_bi("ok" if ok else "fail")}</td>'
                   f'<td class="num">{esc(c.get("violations", 0))}</td>'
                   f'<td>{esc(stats_text(c.get("stats") or {}))}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _latency_html(latency: dict[str, Any]) -> str:
    out = ['<table class="latency"><thead><tr>'
           f'<th>{_bi("col.hop")}</th><th class="num">{_bi("col.samples")}</th><th class="num">p50</th>'
           '<th class="num">p99</th></tr></thead><tbody>']
    for hop in latency_hops(latency):
        lat = latency[hop] or {}
        out.append(f"<tr><td>{_bi_fn(lambda lang, hop=hop: hop_name(hop, lang))}</td>"
                   f'<td class="num">{esc(lat.get("n", 0))}</td>'
                   f'<td class="num">{esc(fmt_ms(lat.get("p50_ms")))}</td>'
                   f'<td class="num">{esc(fmt_ms(lat.get("p99_ms")))}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _faults_html(faults: list[dict[str, Any]]) -> str:
    if not faults:
        return f'<p class="meta">{_bi("no_faults")}</p>'
    out = ['<table class="faults"><thead><tr>' + "".join(
        f"<th>{_bi(k)}</th>" for k in ("col.when", "col.fault", "col.detail")) + "</tr></thead><tbody>"]
    for f in faults:
        out.append(f"<tr><td>{_bi_fn(lambda lang, f=f: fault_when(f, lang))}</td>"
                   f"<td>{_bi_fn(lambda lang, f=f: fault_name(f.get('kind'), lang))}</td>"
                   f'<td class="ex">{esc(f.get("detail") or "")}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _devices_html(result: dict[str, Any]) -> str:
    span = span_of(result)
    out = ['<table class="devices"><thead><tr>' + "".join(
        f"<th>{_bi(k)}</th>" for k in ("col.device", "col.kind", "col.events", "col.online"))
        + "</tr></thead><tbody>"]
    for d in result.get("devices") or []:
        off = sum(b - a for a, b in offline_spans(d.get("online"), span))
        out.append(f'<tr><td class="dev">{esc(d.get("device"))}</td>'
                   f"<td>{_bi_fn(lambda lang, d=d: kind_name(d.get('kind'), lang))}</td>"
                   f'<td class="num">{esc(d.get("events", ""))}</td>'
                   f'<td class="num">{round(100 * (span - off) / span)}%</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _expect_html(exps: list[dict[str, Any]]) -> str:
    if not exps:
        return f'<p class="meta">{_bi("no_expect")}</p>'
    out = ['<table class="expect"><tbody>']
    for e in exps:
        ok = bool(e.get("ok"))
        out.append(f'<tr class="{"ok-row" if ok else "bad"}"><td class="{"ok" if ok else "bad-t"}">'
                   f'{"✓" if ok else "✗"}</td><td class="mono">{esc(e.get("name"))}</td>'
                   f'<td>{esc(e.get("detail") or "")}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def render_html(result: dict[str, Any], lang: str = "zh") -> str:
    """The whole report as one HTML string."""
    check_lang(lang)
    ok, failures = verdict(result)
    scenario = result.get("scenario", "?")
    fails = ("<ul>" + "".join(f"<li>{esc(f)}</li>" for f in failures) + "</ul>") if failures else ""
    body = [
        f'<header><h1>{_bi("title.report", scenario=scenario)}</h1>'
        f'<button id="lang-switch" type="button">{_bi("switch")}</button></header><main>',
        f'<section id="verdict" class="verdict {"pass" if ok else "fail"}" data-ok="{str(ok).lower()}">'
        f'{_bi("verdict.pass" if ok else "verdict.fail")}{fails}</section>',
        f'<p class="meta">{_bi_fn(lambda lg: run_line(result, lg))}</p>',
        f'<p class="meta">{_bi("broker", broker=result.get("broker") or "?")} · '
        f'<span class="mono">{_bi("trace", hash=result.get("trace_hash") or "-")}</span></p>',
        f'<section id="timeline"><h2>{_bi("sec.timeline")}</h2>{svg_timeline(result)}</section>',
        f'<section id="backlog"><h2>{_bi("sec.backlog")}</h2>{svg_backlog(result)}</section>',
        f'<section id="latency"><h2>{_bi("sec.latency")}</h2>{svg_latency(result)}'
        f'{_latency_html(result.get("latency") or {})}</section>',
        f'<section id="ledger"><h2>{_bi("sec.ledger")}</h2>'
        f'{_ledger_html(result.get("ledger") or {})}</section>',
        f'<section id="domain"><h2>{_bi("sec.domain")}</h2>'
        f'{_domain_html(result.get("domain") or {})}</section>',
        f'<section id="faults"><h2>{_bi("sec.faults")}</h2>'
        f'{_faults_html(result.get("faults") or [])}</section>',
        f'<section id="expect"><h2>{_bi("sec.expect")}</h2>{_expect_html(result.get("expectations") or [])}'
        "</section>",
        f'<section id="devices"><h2>{_bi("sec.devices")}</h2>{_devices_html(result)}</section>',
        "</main>",
    ]
    csp = (f"default-src 'none'; style-src {_csp_hash(CSS)}; script-src {_csp_hash(SCRIPT)}; "
           "base-uri 'none'; form-action 'none'")
    title = t("title.report", lang, scenario=scenario) + " — " + ("PASS" if ok else "FAIL")
    return ("<!doctype html>"
            f'<html lang="{"zh-CN" if lang == "zh" else "en"}" data-lang="{lang}">'
            '<head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            + "".join(body) + f"<script>{SCRIPT}</script></body></html>")


def write_html(result: dict[str, Any], path: Path | str, lang: str = "zh") -> Path:
    return atomic_write(path, render_html(result, lang))
