"""The report's plots as inline SVG: event timeline, gateway backlog, latency.

Drawn here as text, with no plotting library and no JavaScript, so the HTML
report stays one self-contained file that opens offline from a mail
attachment. Every label is drawn in both languages and the page's CSS shows
one, so the plots (the bulk of the file) are drawn once.

Timelines may hold 10^5 events: up to ``TIMELINE_MARKS`` events are drawn one
by one with a tooltip each; above that, events are merged per pixel column
and class into one SVG path per device and class, so the file stays small (a
few hundred kB at most) and nothing is hidden: a single alarm still gets its
pixel. The backlog line is downsampled to the minimum and maximum per pixel
column, which keeps the peaks a tester looks for.

The page around the plots is a Jinja2 template (``templates/report.html``);
the plots are built here as strings because each is hundreds to thousands
of elements whose every attribute is a computed coordinate: a template
would only wrap the same arithmetic in markup, once per mark. Every text
from a device or a result goes through :func:`esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

from simulator.report.formatting import fmt_clock, fmt_dur, fmt_ms, num, size_text
from simulator.report.reading import fault_when, latency_hops
from simulator.report.text import cls_name, fault_name, hop_name, kind_name, t

CLASS_ORDER = ("alarm", "custody", "audit", "status", "telemetry")
CLASS_COLOUR = {"alarm": "#c62828", "custody": "#1565c0", "audit": "#7b1fa2", "status": "#2e7d32",
                "telemetry": "#e08a00", "other": "#555555"}
TIMELINE_MARKS = 1500  # above this, events are merged per pixel column
PLOT_W = 1100


def esc(v: Any) -> str:
    """Text from a device or a result, safe inside markup and attributes."""
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
    ends = [num(result.get("virtual_s"))]
    tl = result.get("timeline") or []
    if tl:
        ends.append(max(num(e.get("t")) for e in tl))
    bl = result.get("backlog") or []
    if bl:
        ends.append(max(num(s[0]) for s in bl if s))
    for f in result.get("faults") or []:
        ends += [num(f.get("t")), num(f.get("until"))]
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
        t0 = num(f.get("t"))
        until = f.get("until")
        t1 = num(until, t0) if until is not None else t0
        x0, x1 = x(t0), x(max(t0, t1))
        tip = _both_title(lambda lang, f=f: f"{fault_name(f.get('kind'), lang)} {fault_when(f, lang)}"
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


def offline_spans(online: list[list[float]] | None, span: float) -> list[tuple[float, float]]:
    """The complement of the online spans within [0, span]. A device with no
    spans at all is taken as online throughout: the runner could not say,
    and greying a whole row would claim an outage nobody saw."""
    if not online:
        return []
    spans = sorted((num(a), num(b, span)) for a, b, *_ in online)
    out: list[tuple[float, float]] = []
    cur = 0.0
    for a, b in spans:
        if a > cur:
            out.append((cur, a))
        cur = max(cur, b)
    if cur < span:
        out.append((cur, span))
    return out


def svg_timeline(result: dict[str, Any], classes: tuple[str, ...] = ()) -> str:
    """A row per device, a lane per event class, fault windows shaded,
    offline spans greyed. ``classes``: only these lanes, drawn (and in the
    legend) even when empty, as the county's report draws each outlet's
    alarms: a day without one still says what the plot would show."""
    span = span_of(result)
    timeline = result.get("timeline") or []
    if classes:
        timeline = [e for e in timeline
                    if (e.get("cls") if e.get("cls") in CLASS_COLOUR else "other") in classes]
    devices = [dict(d) for d in result.get("devices") or []]
    known = {d.get("device") for d in devices}
    for dev in sorted({str(e.get("device")) for e in timeline} - {str(k) for k in known}):
        devices.append({"device": dev, "kind": "?", "events": None, "online": None})
    present = {e.get("cls") if e.get("cls") in CLASS_COLOUR else "other" for e in timeline}
    lanes = list(classes) or [c for c in CLASS_ORDER + ("other",) if c in present] or ["custody"]
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
        offline = offline_spans(d.get("online"), span)
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
                col = min(pw - 1, int(pw * num(e.get("t")) / span))
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
                tv = num(e.get("t"))
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

    counts = downsample([(num(s[0]), num(s[1])) for s in samples], 0.0, span, pw)
    sizes = downsample([(num(s[0]), num(s[2])) for s in samples if len(s) >= 3], 0.0, span, pw)
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
        peak = max(samples, key=lambda s: num(s[1]))
        end = samples[-1]
        out.append(_both_svg(PLOT_W - right, ly, "plot.peak", "note", "end", n=int(num(peak[1])),
                             size=size_text(num(peak[2]) if len(peak) > 2 else 0), end=int(num(end[1]))))
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
    hops = latency_hops(latency)
    left, right, top, ph = 80, 20, 30, 220
    width = 760
    pw = width - left - right
    height = top + ph + 90
    vals = [num((latency[h] or {}).get(k), -1) for h in hops for k in ("p50_ms", "p99_ms")]
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


