"""The run result read into the words of ``text.py``, for every report.

The terminal summary, the SVG charts and the HTML report each show the
verdict, the ledger's hops, the run line, the faults' times and the latency
per hop; reading those parts of the result here, once, keeps the three from
disagreeing about what a run said.
"""

from __future__ import annotations

from typing import Any

from simulator.report.formatting import fmt_clock, fmt_dur, num
from simulator.report.text import hop_name, t

HOP_ORDER = ("device", "broker", "gateway", "central")
LEDGER_COLS = ("lost", "duplicated", "unexpected", "skipped", "reordered", "bad_ids")


def verdict(result: dict[str, Any]) -> tuple[bool, list[str]]:
    """``(ok, failures)``; a result that says nothing of ``ok`` passes when nothing failed."""
    v = result.get("verdict") or {}
    failures = [str(f) for f in v.get("failures") or []]
    ok = bool(v.get("ok")) if "ok" in v else not failures
    return ok, failures


def hop_label(h: dict[str, Any], lang: str) -> str:
    """A ledger row's name: the first hop alone, then "previous -> hop", then end to end."""
    if h.get("hop") == "end_to_end":
        return hop_name("end_to_end", lang)
    if h.get("previous") is None:
        return hop_name(h.get("hop"), lang)
    return t("hop.arrow", lang, a=hop_name(h["previous"], lang), b=hop_name(h.get("hop"), lang))


def ledger_rows(ledger: dict[str, Any]) -> list[dict[str, Any]]:
    """The hops in order, end to end last."""
    rows = list(ledger.get("per_hop") or [])
    if ledger.get("end_to_end"):
        rows.append(ledger["end_to_end"])
    return rows


def run_line(result: dict[str, Any], lang: str) -> str:
    """Scenario, seed, time mode, simulated and wall time, in one line."""
    mode = result.get("time_mode")
    return t("run.line", lang, scenario=result.get("scenario", "?"), seed=result.get("seed", "?"),
             mode=t(f"mode.{mode}", lang) if mode in ("virtual", "real") else str(mode),
             virtual=fmt_dur(num(result.get("virtual_s"))), wall=fmt_dur(num(result.get("wall_s"))))


def stats_text(stats: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in stats.items())


def fault_when(f: dict[str, Any], lang: str) -> str:
    """"2:00:00 to 3:00:00" for a window, "at 2:00:00" for an instant."""
    a = fmt_clock(num(f.get("t")))
    until = f.get("until")
    if isinstance(until, (int, float)) and until > num(f.get("t")):
        return t("fault.span", lang, a=a, b=fmt_clock(until))
    return t("fault.at", lang, a=a)


def latency_hops(latency: dict[str, Any]) -> list[str]:
    """The hops in the order events travel them; unknown hops after, by name."""
    return sorted(latency, key=lambda h: (HOP_ORDER.index(h) if h in HOP_ORDER else 99, h))

