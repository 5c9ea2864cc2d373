"""Reports of a simulator run: progress line, terminal summary, JSON, HTML.

The runner produces one JSON-able *run result* (see ``docs/simulator.md``,
"Reports and dashboard"); this package only reads it, one module per way of
showing it:

- ``progress``: the line on stderr while a run goes;
- ``summary``: the run in a screenful of text, verdict first;
- ``fleet_summary``: a county's (``simulator/fleet.py``): the dispatcher's view;
- ``fleet_html``: a county's HTML report, built as ``html_report``'s page;
- ``json_report``: the result as a file, and back;
- ``charts``: the plots, as inline SVG;
- ``html_report``: the self-contained, bilingual HTML page;
- ``text``: every word the reports and the live dashboard show, in Chinese
  and English; ``reading`` and ``formatting`` turn parts of the result and
  numbers into those words.

Callers import what they use from here.
"""

from simulator.report.charts import TIMELINE_MARKS, downsample, time_ticks
from simulator.report.fleet_html import render_fleet_html, write_fleet_html
from simulator.report.fleet_summary import fleet_summary, print_fleet_summary
from simulator.report.formatting import fmt_clock, fmt_dur, fmt_ms, size_text
from simulator.report.html_report import CSS, SCRIPT, render_html, write_html
from simulator.report.json_report import dumps, json_clean, read_json, write_json
from simulator.report.progress import ProgressBar
from simulator.report.reading import HOP_ORDER
from simulator.report.summary import print_summary, summary, use_colour

__all__ = [
    "CSS",
    "HOP_ORDER",
    "SCRIPT",
    "TIMELINE_MARKS",
    "ProgressBar",
    "downsample",
    "dumps",
    "fmt_clock",
    "fmt_dur",
    "fleet_summary",
    "fmt_ms",
    "json_clean",
    "read_json",
    "render_fleet_html",
    "render_html",
    "size_text",
    "print_fleet_summary",
    "print_summary",
    "summary",
    "time_ticks",
    "use_colour",
    "write_fleet_html",
    "write_html",
    "write_json",
]
