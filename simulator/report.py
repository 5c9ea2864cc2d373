"""Reports of a simulator run: progress bar, terminal summary, JSON, HTML.

The runner produces one JSON-able *run result* (see ``docs/simulator.md``,
"Reports and dashboard"); everything here only reads it, so a result saved
with ``write_json`` can be turned into a summary or an HTML report later, on
another machine, by someone who was not there when it ran.

Choices, and why:

- The terminal summary starts with the verdict, in the chosen language with
  the English word kept in the Chinese line (``结论：未通过（FAIL）``), so CI
  logs can be grepped for PASS/FAIL whatever ``POSTEDGE_LANG`` was.
- The HTML report carries *both* languages and a switch (``lang`` only picks
  the one shown first, and ``#en``/``#zh`` in the address overrides it). A
  report is an artifact attached to a bug and read by the field tester in
  Chinese and the developer in English; one file that both can read beats
  two files that drift apart. The text costs a few kB; the plots, which are
  the bulk, are drawn once.
- The HTML is self-contained: inline CSS, a tiny inline script for the
  language switch, plots as inline SVG drawn here (no matplotlib, no
  external JS), so it opens offline from a mail attachment. A
  Content-Security-Policy with hashes of our own script and style means
  text that came from a device (fault details, event ids) can never run, even
  if an escape were missed.
- Timelines may hold 10^5 events: up to ``TIMELINE_MARKS`` events are drawn
  one by one with a tooltip each; above that, events are merged per pixel
  column and class into one SVG path per device and class, so the file stays
  small (a few hundred kB at most) and nothing is hidden: a single alarm
  still gets its pixel. The backlog line is downsampled to the minimum and
  maximum per pixel column, which keeps the peaks a tester looks for.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from simulator.report_text import (
    check_lang,
    cls_name,
    fault_name,
    hop_name,
    kind_name,
    rule_name,
    t,
)

CLASS_ORDER = ("alarm", "custody", "audit", "status", "telemetry")
CLASS_COLOUR = {"alarm": "#c62828", "custody": "#1565c0", "audit": "#7b1fa2", "status": "#2e7d32",
                "telemetry": "#e08a00", "other": "#555555"}
HOP_ORDER = ("device", "broker", "gateway", "central")
LEDGER_COLS = ("lost", "duplicated", "unexpected", "skipped", "reordered", "bad_ids")
TIMELINE_MARKS = 1500  # above this, events are merged per pixel column
PLOT_W = 1100


# ------------------------------------------------------------------ formatting

def fmt_dur(s: float | None) -> str:
    """A compact duration for axes and tables: 45s, 12m30s, 3h05m, 2d04h.
    Short enough for a tick label, unambiguous in both languages."""
    if s is None or not math.isfinite(s):
        return "?"
    neg = "-" if s < 0 else ""
    s = abs(s)
    if s < 10 and s != int(s):
        return f"{neg}{s:.1f}s"
    n = int(round(s))
    if n < 60:
        return f"{neg}{n}s"
    if n < 3600:
        return f"{neg}{n // 60}m" + (f"{n % 60:02d}s" if n % 60 else "")
    if n < 86400:
        return f"{neg}{n // 3600}h" + (f"{n % 3600 // 60:02d}m" if n % 3600 // 60 else "")
    return f"{neg}{n // 86400}d" + (f"{n % 86400 // 3600:02d}h" if n % 86400 // 3600 else "")


def fmt_clock(s: float) -> str:
    """Simulated time of day as H:MM:SS (hours run past 24 on long runs)."""
    n = max(0, int(s))
    return f"{n // 3600}:{n % 3600 // 60:02d}:{n % 60:02d}"


def fmt_ms(ms: float | None) -> str:
    """Latencies span milliseconds (LAN) to hours (a WAN outage)."""
    if ms is None or not isinstance(ms, (int, float)) or not math.isfinite(ms):
        return "-"
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 100:
        return f"{ms:.1f} ms"
    if ms < 10_000:
        return f"{ms:.0f} ms"
    return fmt_dur(ms / 1000)


def size_text(n: float) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def _width(s: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _pad(s: str, w: int, right: bool = False) -> str:
    fill = " " * max(0, w - _width(s))
    return fill + s if right else s + fill


def _table(rows: list[list[str]], right: Iterable[int] = ()) -> list[str]:
    """Rows (the first is the header) as aligned lines, CJK-aware."""
    r = set(right)
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(_pad(c, widths[i], i in r) for i, c in enumerate(row)).rstrip()
            for row in rows]


def _num(v: Any, default: float = 0.0) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
        else default


# ------------------------------------------------------------------ progress bar

class ProgressBar:
    """One line on stderr while a run goes: simulated time, % done, events,
    faults active.

    On a terminal the line is redrawn in place with ``\\r`` (at most every
    ``redraw_s``); in a CI log, where ``\\r`` turns into one enormous line, a
    plain line is printed every ``every_s`` of wall time instead, plus one at
    the end. The runner calls ``update`` as often as it likes: it is cheap
    when nothing is drawn.
    """

    def __init__(self, total_s: float, *, stream: TextIO | None = None, lang: str = "zh",
                 tty: bool | None = None, every_s: float = 10.0, redraw_s: float = 0.1,
                 width: int = 24, clock: Callable[[], float] = time.monotonic) -> None:
        self.total_s = max(float(total_s), 1e-9)
        self.stream = stream if stream is not None else sys.stderr
        self.lang = check_lang(lang)
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.every_s = every_s
        self.redraw_s = redraw_s
        self.width = width
        self.clock = clock
        self.started = clock()
        self._last_draw = -math.inf
        self._last_len = 0
        self._state = (0.0, 0, 0)
        self.closed = False

    def line(self, t_virtual: float, events: int, faults_active: int) -> str:
        frac = min(1.0, max(0.0, t_virtual / self.total_s))
        filled = int(frac * self.width)
        bar = "[" + "#" * filled + "." * (self.width - filled) + "]"
        return t("progress", self.lang, bar=bar, pct=int(frac * 100), t=fmt_dur(t_virtual),
                 total=fmt_dur(self.total_s), events=events, faults=faults_active)

    def update(self, t_virtual: float, events: int = 0, faults_active: int = 0, force: bool = False) -> None:
        self._state = (t_virtual, events, faults_active)
        now = self.clock()
        gap = self.redraw_s if self.tty else self.every_s
        if self.closed or (not force and now - self._last_draw < gap):
            return
        self._last_draw = now
        self._draw(self.line(t_virtual, events, faults_active))

    def _draw(self, text: str) -> None:
        if self.tty:
            w = _width(text)
            self.stream.write("\r" + text + " " * max(0, self._last_len - w))
            self._last_len = w
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """The last state once more, then the wall time; ends the line."""
        if self.closed:
            return
        tv, ev, fa = self._state
        wall = t("progress.done", self.lang, wall=fmt_dur(self.clock() - self.started))
        self._draw(self.line(tv, ev, fa) + "  " + wall)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self.closed = True

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ terminal summary

def _verdict(result: dict[str, Any]) -> tuple[bool, list[str]]:
    v = result.get("verdict") or {}
    failures = [str(f) for f in v.get("failures") or []]
    ok = bool(v.get("ok")) if "ok" in v else not failures
    return ok, failures


def _hop_label(h: dict[str, Any], lang: str) -> str:
    if h.get("hop") == "end_to_end":
        return hop_name("end_to_end", lang)
    if h.get("previous") is None:
        return hop_name(h.get("hop"), lang)
    return t("hop.arrow", lang, a=hop_name(h["previous"], lang), b=hop_name(h.get("hop"), lang))


def _ledger_rows(ledger: dict[str, Any]) -> list[dict[str, Any]]:
    rows = list(ledger.get("per_hop") or [])
    if ledger.get("end_to_end"):
        rows.append(ledger["end_to_end"])
    return rows


def _run_line(result: dict[str, Any], lang: str) -> str:
    mode = result.get("time_mode")
    return t("run.line", lang, scenario=result.get("scenario", "?"), seed=result.get("seed", "?"),
             mode=t(f"mode.{mode}", lang) if mode in ("virtual", "real") else str(mode),
             virtual=fmt_dur(_num(result.get("virtual_s"))), wall=fmt_dur(_num(result.get("wall_s"))))


def _stats_text(stats: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in stats.items())


def _fault_when(f: dict[str, Any], lang: str) -> str:
    a = fmt_clock(_num(f.get("t")))
    until = f.get("until")
    if isinstance(until, (int, float)) and until > _num(f.get("t")):
        return t("fault.span", lang, a=a, b=fmt_clock(until))
    return t("fault.at", lang, a=a)


def _latency_hops(latency: dict[str, Any]) -> list[str]:
    return sorted(latency, key=lambda h: (HOP_ORDER.index(h) if h in HOP_ORDER else 99, h))


def summary(result: dict[str, Any], lang: str = "zh") -> str:
    """The run in a screenful: verdict first, then why."""
    check_lang(lang)
    ok, failures = _verdict(result)
    out = [t("verdict.pass" if ok else "verdict.fail", lang)]
    if failures:
        out.append(t("verdict.failures", lang, items=", ".join(failures)))
    out.append(_run_line(result, lang))
    out.append(t("broker", lang, broker=result.get("broker") or t("unknown", lang)))
    out.append(t("trace", lang, hash=result.get("trace_hash") or "-"))

    ledger = result.get("ledger") or {}
    if ledger:
        out += ["", t("sec.ledger", lang) + "  " + t("ledger.events", lang, n=ledger.get("events", 0))]
        head = [t("col.hop", lang), t("col.seen", lang), t("col.unique", lang)] + \
            [t(f"col.{k}", lang) for k in LEDGER_COLS] + [t("col.result", lang)]
        rows = [head]
        notes: list[str] = []
        for h in _ledger_rows(ledger):
            mark = t("ok", lang) if h.get("ok") else t("fail", lang)
            tol = [k for k in h.get("tolerated") or [] if h.get(k)]
            if tol:
                mark += t("tolerated", lang, items=", ".join(t(f"col.{k}", lang) for k in tol))
            rows.append([_hop_label(h, lang), str(h.get("observations", 0)), str(h.get("unique", 0))]
                        + [str(h.get(k, 0)) for k in LEDGER_COLS] + [mark])
            for k, ex in (h.get("examples") or {}).items():
                if ex and h.get(k) and k not in (h.get("tolerated") or []):
                    more = " ..." if h[k] > len(ex) else ""
                    notes.append(f"    {_hop_label(h, lang)} {t(f'col.{k}', lang)}: "
                                 f"{t('examples', lang, items=', '.join(map(str, ex[:5])))}{more}")
        out += _table(rows, right=range(1, 3 + len(LEDGER_COLS))) + notes

    domain = result.get("domain") or {}
    if domain.get("checks"):
        out += ["", t("sec.domain", lang)]
        rows = [[t("col.rule", lang), t("col.result", lang), t("col.violations", lang), t("col.stats", lang)]]
        notes = []
        for c in domain["checks"]:
            rows.append([rule_name(c.get("name"), lang), t("ok" if c.get("ok") else "fail", lang),
                         str(c.get("violations", 0)), _stats_text(c.get("stats") or {})])
            for v in (c.get("examples") or [])[:3]:
                rest = ", ".join(f"{k}={v[k]}" for k in v if k not in ("rule", "kind"))
                notes.append(f"    {rule_name(c.get('name'), lang)}: {v.get('kind')} {rest}")
        out += _table(rows, right=(2,)) + notes

    latency = result.get("latency") or {}
    if latency:
        out += ["", t("sec.latency", lang)]
        rows = [[t("col.hop", lang), t("col.samples", lang), "p50", "p99"]]
        for hop in _latency_hops(latency):
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
        out.append(f"  {_fault_when(f, lang)}  {fault_name(f.get('kind'), lang)}{detail}")

    exps = result.get("expectations") or []
    if exps:
        out += ["", t("sec.expect", lang)]
        for e in exps:
            detail = f": {e['detail']}" if e.get("detail") else ""
            out.append(f"  {'✓' if e.get('ok') else '✗'} {e.get('name')}{detail}")
    out += ["", t("verdict.pass" if ok else "verdict.fail", lang)]  # last too: what a scrolled log shows
    return "\n".join(out)


# ------------------------------------------------------------------ JSON

def json_clean(v: Any) -> Any:
    """NaN and infinities as null: strict JSON parsers (jq, browsers) reject them."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_clean(x) for x in v]
    return v


def dumps(result: dict[str, Any]) -> str:
    """One top-level key per line, each value compact: ``less`` and ``grep``
    find the verdict at once, and a 10^5-event timeline stays one line
    instead of half a million."""
    try:
        parts = [f"{json.dumps(str(k))}: {json.dumps(v, ensure_ascii=False, allow_nan=False)}"
                 for k, v in result.items()]
    except ValueError:
        return dumps(json_clean(result))
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _atomic_write(path: Path | str, text: str) -> Path:
    """Write beside the target and rename, so a reader (a CI artifact
    collector, the dashboard) never sees half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_json(result: dict[str, Any], path: Path | str) -> Path:
    return _atomic_write(path, dumps(result))


def read_json(path: Path | str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ------------------------------------------------------------------ SVG plots

def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _n(x: float) -> str:
    """Coordinates with one decimal: enough for a screen, small files."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _both_svg(x: float, y: float, key: str, cls: str = "", anchor: str = "start", **kw: Any) -> str:
    """A label in both languages: two <text>, the page shows one."""
    a = f' text-anchor="{anchor}"' if anchor != "start" else ""
    return "".join(f'<text class="l-{lang} {cls}" x="{_n(x)}" y="{_n(y)}"{a}>{esc(t(key, lang, **kw))}</text>'
                   for lang in ("zh", "en"))


def _both_title(fn: Callable[[str], str]) -> str:
    """A tooltip: SVG titles cannot be hidden per language, so both, on two lines."""
    return f"<title>{esc(fn('zh'))}\n{esc(fn('en'))}</title>"


def span_of(result: dict[str, Any]) -> float:
    """The time axis: the run's simulated length, stretched to cover any
    sample or fault the runner recorded after it."""
    ends = [_num(result.get("virtual_s"))]
    tl = result.get("timeline") or []
    if tl:
        ends.append(max(_num(e.get("t")) for e in tl))
    bl = result.get("backlog") or []
    if bl:
        ends.append(max(_num(s[0]) for s in bl if s))
    for f in result.get("faults") or []:
        ends += [_num(f.get("t")), _num(f.get("until"))]
    return max(ends + [1.0])


NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
              172800, 604800)


def time_ticks(span: float, most: int = 10) -> list[float]:
    step = next((s for s in NICE_STEPS if span / s <= most), NICE_STEPS[-1] * math.ceil(span / 604800 / most))
    return [i * step for i in range(int(span // step) + 1)]


def _nice_ceil(v: float) -> float:
    if v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    return next(m * e for m in (1, 2, 2.5, 5, 10) if m * e >= v)


def _fault_windows(faults: list[dict[str, Any]], x: Callable[[float], float], top: float, bottom: float,
                   label_y: float | None) -> str:
    out = ['<g class="faults">']
    for f in faults:
        t0 = _num(f.get("t"))
        until = f.get("until")
        t1 = _num(until, t0) if until is not None else t0
        x0, x1 = x(t0), x(max(t0, t1))
        tip = _both_title(lambda lang, f=f: f"{fault_name(f.get('kind'), lang)} {_fault_when(f, lang)}"
                          + (f" — {f['detail']}" if f.get("detail") else ""))
        if x1 - x0 >= 1:
            out.append(f'<rect class="fault" x="{_n(x0)}" y="{_n(top)}" width="{_n(x1 - x0)}" '
                       f'height="{_n(bottom - top)}" fill="#e53935" fill-opacity="0.13">{tip}</rect>')
        else:  # an instant fault (a kill, a restart): a line
            out.append(f'<line class="fault" x1="{_n(x0)}" x2="{_n(x0)}" y1="{_n(top)}" y2="{_n(bottom)}" '
                       f'stroke="#e53935" stroke-width="2" stroke-dasharray="4 2">{tip}</line>')
        if label_y is not None:
            out += [f'<text class="l-{lang} flabel" x="{_n(x0 + 2)}" y="{_n(label_y)}">'
                    f"{esc(fault_name(f.get('kind'), lang))}</text>" for lang in ("zh", "en")]
    out.append("</g>")
    return "".join(out)


def _time_axis(span: float, x: Callable[[float], float], y: float, top: float) -> str:
    out = [f'<g class="axis"><line x1="{_n(x(0))}" x2="{_n(x(span))}" y1="{_n(y)}" y2="{_n(y)}" '
           f'stroke="#333"/>']
    for tk in time_ticks(span):
        out.append(f'<line x1="{_n(x(tk))}" x2="{_n(x(tk))}" y1="{_n(top)}" y2="{_n(y + 4)}" '
                   f'stroke="#000" stroke-opacity="0.08"/>'
                   f'<text x="{_n(x(tk))}" y="{_n(y + 18)}" text-anchor="middle">{esc(fmt_dur(tk))}</text>')
    out.append(_both_svg(x(span), y + 36, "plot.time", "axislabel", "end"))
    out.append("</g>")
    return "".join(out)


def _offline_spans(online: list[list[float]] | None, span: float) -> list[tuple[float, float]]:
    """The complement of the online spans within [0, span]. A device with no
    spans at all is taken as online throughout: the runner could not say,
    and greying a whole row would claim an outage nobody saw."""
    if not online:
        return []
    spans = sorted((_num(a), _num(b, span)) for a, b, *_ in online)
    out: list[tuple[float, float]] = []
    cur = 0.0
    for a, b in spans:
        if a > cur:
            out.append((cur, a))
        cur = max(cur, b)
    if cur < span:
        out.append((cur, span))
    return out


def svg_timeline(result: dict[str, Any]) -> str:
    """A row per device, a lane per event class, fault windows shaded,
    offline spans greyed."""
    span = span_of(result)
    timeline = result.get("timeline") or []
    devices = [dict(d) for d in result.get("devices") or []]
    known = {d.get("device") for d in devices}
    for dev in sorted({str(e.get("device")) for e in timeline} - {str(k) for k in known}):
        devices.append({"device": dev, "kind": "?", "events": None, "online": None})
    present = {e.get("cls") if e.get("cls") in CLASS_COLOUR else "other" for e in timeline}
    lanes = [c for c in CLASS_ORDER + ("other",) if c in present] or ["custody"]
    left, right, top, row_h = 130, 20, 40, 30
    pw = PLOT_W - left - right
    n = max(1, len(devices))
    plot_bottom = top + n * row_h
    height = plot_bottom + 80

    def x(tv: float) -> float:
        return left + pw * min(1.0, max(0.0, tv / span))

    lane_h = (row_h - 8) / len(lanes)
    lane_y = {c: 4 + i * lane_h for i, c in enumerate(lanes)}
    row_of = {str(d.get("device")): i for i, d in enumerate(devices)}
    out = [f'<svg class="plot plot-timeline" viewBox="0 0 {PLOT_W} {height}" width="{PLOT_W}" '
           f'height="{height}" xmlns="http://www.w3.org/2000/svg" role="img">']
    binned = len(timeline) > TIMELINE_MARKS
    by_dev: dict[int, list[dict[str, Any]]] = {}
    for e in timeline:
        r = row_of.get(str(e.get("device")))
        if r is not None:
            by_dev.setdefault(r, []).append(e)
    for i, d in enumerate(devices):
        y0 = top + i * row_h
        dev = str(d.get("device"))
        evs = by_dev.get(i, [])
        count = d.get("events") if isinstance(d.get("events"), int) else len(evs)
        offline = _offline_spans(d.get("online"), span)
        up = span - sum(b - a for a, b in offline)
        pct = round(100 * up / span) if span else 100
        tip = _both_title(lambda lang, d=d, count=count, pct=pct, dev=dev: t(
            "plot.row", lang, device=dev, kind=kind_name(d.get("kind"), lang), events=count, pct=pct))
        out.append(f'<g class="row" data-device="{esc(dev)}">{tip}'
                   f'<rect x="{left}" y="{y0}" width="{pw}" height="{row_h}" '
                   f'fill="{"#f7f7f7" if i % 2 else "#ffffff"}"/>')
        for a, b in offline:
            out.append(f'<rect class="offline" x="{_n(x(a))}" y="{y0}" width="{_n(max(1.0, x(b) - x(a)))}" '
                       f'height="{row_h}" fill="#bdbdbd" fill-opacity="0.75"/>')
        out.append(f'<text class="dev" x="{left - 8}" y="{y0 + row_h / 2 + 5}" text-anchor="end">'
                   f"{esc(dev)}</text>")
        if binned:
            cols: dict[str, dict[int, int]] = {}
            for e in evs:
                c = e.get("cls") if e.get("cls") in CLASS_COLOUR else "other"
                col = min(pw - 1, int(pw * _num(e.get("t")) / span))
                cc = cols.setdefault(c, {})
                cc[col] = cc.get(col, 0) + 1
            for c in lanes:
                if c not in cols:
                    continue
                ly = y0 + lane_y[c]
                d_attr = "".join(f"M{left + col + 0.5} {_n(ly)}v{_n(lane_h)}" for col in sorted(cols[c]))
                out.append(f'<path class="ev ev-{c}" d="{d_attr}" stroke="{CLASS_COLOUR[c]}" '
                           f'stroke-width="1.3"/>')
        else:
            for e in evs:
                c = e.get("cls") if e.get("cls") in CLASS_COLOUR else "other"
                tv = _num(e.get("t"))
                tip_ev = f"{fmt_clock(tv)} {e.get('type', '')} {e.get('id', '')}"
                out.append(f'<rect class="ev ev-{c}" x="{_n(x(tv) - 1)}" y="{_n(y0 + lane_y[c])}" '
                           f'width="2.5" height="{_n(lane_h)}" fill="{CLASS_COLOUR[c]}">'
                           f"<title>{esc(tip_ev)}</title></rect>")
        out.append("</g>")
    out.append(_fault_windows(result.get("faults") or [], x, top, plot_bottom, top - 8))
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{plot_bottom - top}" fill="none" '
               f'stroke="#999"/>')
    out.append(_time_axis(span, x, plot_bottom, top))
    # legend
    lx, ly = left, height - 12
    for c in lanes:
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{CLASS_COLOUR[c]}"/>')
        out += [f'<text class="l-{lang}" x="{lx + 16}" y="{ly}">{esc(cls_name(c, lang))}</text>'
                for lang in ("zh", "en")]
        lx += 110
    out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="#bdbdbd"/>')
    out.append(_both_svg(lx + 16, ly, "plot.offline"))
    lx += 110
    out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="#e53935" fill-opacity="0.3"/>')
    out.append(_both_svg(lx + 16, ly, "plot.fault"))
    if binned:
        out.append(_both_svg(PLOT_W - right, ly, "plot.binned", "note", "end", n=len(timeline)))
    out.append("</svg>")
    return "".join(out)


def downsample(points: list[tuple[float, float]], x0: float, span: float,
               cols: int) -> list[tuple[float, float]]:
    """At most two points per pixel column, the lowest and the highest, in
    time order: the line looks the same, peaks included."""
    if len(points) <= 2 * cols:
        return points
    buckets: dict[int, list[tuple[float, float]]] = {}
    for p in points:
        col = min(cols - 1, max(0, int(cols * (p[0] - x0) / span)))
        b = buckets.get(col)
        if b is None:
            buckets[col] = [p, p]
        else:
            if p[1] < b[0][1]:
                b[0] = p
            if p[1] > b[1][1]:
                b[1] = p
    out: list[tuple[float, float]] = []
    for col in sorted(buckets):
        lo, hi = buckets[col]
        out += sorted({lo, hi}, key=lambda q: q[0])
    return out


def svg_backlog(result: dict[str, Any]) -> str:
    """Events waiting at the gateway (line) and their bytes (dashed, right
    axis) over simulated time, with the fault windows that caused them."""
    span = span_of(result)
    samples = [s for s in result.get("backlog") or [] if isinstance(s, (list, tuple)) and len(s) >= 2]
    left, right, top, ph = 80, 90, 30, 200
    pw = PLOT_W - left - right
    height = top + ph + 70

    def x(tv: float) -> float:
        return left + pw * min(1.0, max(0.0, tv / span))

    counts = downsample([(_num(s[0]), _num(s[1])) for s in samples], 0.0, span, pw)
    sizes = downsample([(_num(s[0]), _num(s[2])) for s in samples if len(s) >= 3], 0.0, span, pw)
    cmax = _nice_ceil(max((c for _, c in counts), default=0))
    bmax = _nice_ceil(max((b for _, b in sizes), default=0))
    out = [f'<svg class="plot plot-backlog" viewBox="0 0 {PLOT_W} {height}" width="{PLOT_W}" '
           f'height="{height}" xmlns="http://www.w3.org/2000/svg" role="img">']
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>')
    for i in range(5):
        gy = top + ph - ph * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{_n(gy)}" y2="{_n(gy)}" stroke="#000" '
                   f'stroke-opacity="0.08"/><text x="{left - 6}" y="{_n(gy + 5)}" text-anchor="end">'
                   f"{esc(_short_num(cmax * i / 4))}</text>")
        if sizes:
            out.append(f'<text x="{left + pw + 6}" y="{_n(gy + 5)}" fill="#b36b00">'
                       f"{esc(size_text(bmax * i / 4))}</text>")
    out.append(_fault_windows(result.get("faults") or [], x, top, top + ph, top - 8))
    if sizes:
        pts = " ".join(f"{_n(x(tv))},{_n(top + ph - ph * b / bmax)}" for tv, b in sizes)
        out.append(f'<polyline class="bytes" points="{pts}" fill="none" stroke="#e08a00" '
                   f'stroke-width="1.5" stroke-dasharray="5 3"/>')
    if counts:
        pts = " ".join(f"{_n(x(tv))},{_n(top + ph - ph * c / cmax)}" for tv, c in counts)
        out.append(f'<polyline class="count" points="{pts}" fill="none" stroke="#1565c0" stroke-width="2"/>')
    else:
        out.append(_both_svg(left + pw / 2, top + ph / 2, "no_data", "note", "middle"))
    out.append(_time_axis(span, x, top + ph, top))
    ly = height - 12
    out.append(f'<line x1="{left}" x2="{left + 24}" y1="{ly - 5}" y2="{ly - 5}" stroke="#1565c0" '
               f'stroke-width="2"/>')
    out.append(_both_svg(left + 30, ly, "plot.count"))
    out.append(f'<line x1="{left + 190}" x2="{left + 214}" y1="{ly - 5}" y2="{ly - 5}" stroke="#e08a00" '
               f'stroke-width="1.5" stroke-dasharray="5 3"/>')
    out.append(_both_svg(left + 220, ly, "plot.bytes"))
    if samples:
        peak = max(samples, key=lambda s: _num(s[1]))
        end = samples[-1]
        out.append(_both_svg(PLOT_W - right, ly, "plot.peak", "note", "end", n=int(_num(peak[1])),
                             size=size_text(_num(peak[2]) if len(peak) > 2 else 0), end=int(_num(end[1]))))
    out.append("</svg>")
    return "".join(out)


def _short_num(v: float) -> str:
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    return f"{v:.0f}" if v == int(v) else f"{v:.1f}"


def svg_latency(result: dict[str, Any]) -> str:
    """p50 and p99 per hop, as bars on a log scale: the LAN hop is a few
    milliseconds, the central hop across a WAN outage hours, and both must
    be readable on one plot."""
    latency = result.get("latency") or {}
    hops = _latency_hops(latency)
    left, right, top, ph = 80, 20, 30, 220
    width = 760
    pw = width - left - right
    height = top + ph + 90
    vals = [_num((latency[h] or {}).get(k), -1) for h in hops for k in ("p50_ms", "p99_ms")]
    pos = [v for v in vals if v > 0]
    lo = 10 ** math.floor(math.log10(min(pos))) if pos else 0.1
    hi = 10 ** math.ceil(math.log10(max(pos))) if pos else 100.0
    if hi <= lo:
        hi = lo * 10

    def y(v: float) -> float:
        v = min(max(v, lo), hi)
        return top + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    out = [f'<svg class="plot plot-latency" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" xmlns="http://www.w3.org/2000/svg" role="img">']
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>')
    e = math.log10(lo)
    while e <= math.log10(hi) + 1e-9:
        gy = y(10 ** e)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{_n(gy)}" y2="{_n(gy)}" stroke="#000" '
                   f'stroke-opacity="0.1"/><text x="{left - 6}" y="{_n(gy + 5)}" text-anchor="end">'
                   f"{esc(fmt_ms(10 ** e))}</text>")
        e += 1
    out.append(f'<g transform="translate(18 {top + ph / 2}) rotate(-90)">'
               f'{_both_svg(0, 0, "lat.axis", "axislabel", "middle")}</g>')
    gw = pw / max(1, len(hops))
    bw = min(56.0, gw * 0.3)
    for i, hop in enumerate(hops):
        lat = latency[hop] or {}
        cx = left + gw * (i + 0.5)
        out.append(f'<g class="hop" data-hop="{esc(hop)}">')
        for j, (k, colour) in enumerate((("p50_ms", "#64b5f6"), ("p99_ms", "#1565c0"))):
            v = lat.get(k)
            bx = cx - bw - 3 + j * (bw + 6)
            if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0:
                by = y(v) if v > 0 else top + ph
                out.append(f'<rect class="bar {k[:3]}" x="{_n(bx)}" y="{_n(by)}" width="{_n(bw)}" '
                           f'height="{_n(max(1.0, top + ph - by))}" fill="{colour}">'
                           f"<title>{esc(hop)} {k[:3]} {esc(fmt_ms(v))}</title></rect>"
                           f'<text x="{_n(bx + bw / 2)}" y="{_n(by - 5)}" text-anchor="middle" class="val">'
                           f"{esc(fmt_ms(v))}</text>")
            out.append(f'<text x="{_n(bx + bw / 2)}" y="{top + ph + 16}" text-anchor="middle" class="note">'
                       f"{k[:3]}</text>")
        out += [f'<text class="l-{lg} hopname" x="{_n(cx)}" y="{top + ph + 38}" text-anchor="middle">'
                f"{esc(hop_name(hop, lg))}</text>" for lg in ("zh", "en")]
        out.append(f'<text x="{_n(cx)}" y="{top + ph + 58}" text-anchor="middle" class="note">'
                   f'n={esc(lat.get("n", 0))}</text></g>')
    if not hops:
        out.append(_both_svg(left + pw / 2, top + ph / 2, "no_data", "note", "middle"))
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------ HTML report

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
    for h in _ledger_rows(ledger):
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
                   f"<td>{_bi_fn(lambda lang, h=h: _hop_label(h, lang))}{ex_html}</td>"
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
                   f'<td>{esc(_stats_text(c.get("stats") or {}))}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _latency_html(latency: dict[str, Any]) -> str:
    out = ['<table class="latency"><thead><tr>'
           f'<th>{_bi("col.hop")}</th><th class="num">{_bi("col.samples")}</th><th class="num">p50</th>'
           '<th class="num">p99</th></tr></thead><tbody>']
    for hop in _latency_hops(latency):
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
        out.append(f"<tr><td>{_bi_fn(lambda lang, f=f: _fault_when(f, lang))}</td>"
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
        off = sum(b - a for a, b in _offline_spans(d.get("online"), span))
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
    """The whole report as one HTML string (see the module docstring)."""
    check_lang(lang)
    ok, failures = _verdict(result)
    scenario = result.get("scenario", "?")
    fails = ("<ul>" + "".join(f"<li>{esc(f)}</li>" for f in failures) + "</ul>") if failures else ""
    body = [
        f'<header><h1>{_bi("title.report", scenario=scenario)}</h1>'
        f'<button id="lang-switch" type="button">{_bi("switch")}</button></header><main>',
        f'<section id="verdict" class="verdict {"pass" if ok else "fail"}" data-ok="{str(ok).lower()}">'
        f'{_bi("verdict.pass" if ok else "verdict.fail")}{fails}</section>',
        f'<p class="meta">{_bi_fn(lambda lg: _run_line(result, lg))}</p>',
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
    return _atomic_write(path, render_html(result, lang))
