"""The run result read into the words of ``text.py``, for every report.

The terminal summary, the SVG charts and the HTML report each show the
verdict, the ledger's hops, the run line, the faults' times and the latency
per hop; reading those parts of the result here, once, keeps the three from
disagreeing about what a run said.
"""

from __future__ import annotations

from typing import Any

from simulator.report.formatting import fmt_clock, fmt_dur, num
from simulator.report.text import fault_name, has, hop_name, rule_name, t

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


def stats_text(stats: dict[str, Any], lang: str | None = None) -> str:
    """A rule's counts, "包裹 12，仍在格口 0" (as sent, by key, without ``lang``)."""
    if lang is None:
        return ", ".join(f"{k} {v}" for k, v in stats.items())
    return t("list.sep", lang).join(
        t(f"stat.{k}", lang, n=v) if has(f"stat.{k}") else f"{k} {v}" for k, v in stats.items())


def violation_name(kind: object, lang: str) -> str:
    """What a broken domain rule's example is, in words; a kind this
    version does not know, as sent."""
    key = f"violation.{kind}"
    return t(key, lang) if has(key) else str(kind)


def expect_title(name: object, lang: str) -> str:
    """An expectation's short name ("投递账本"), for the list of failures."""
    key = f"expect.{name}"
    return t(key, lang) if has(key) else str(name)


def expect_text(e: dict[str, Any], lang: str) -> str:
    """An expectation in words: "中心平台收到 7 条，要求至少 100000 条".

    The runner gives each expectation its numbers in ``fields``; a result
    saved before it did has only the code and the English ``detail``,
    shown as they are."""
    name, fields = e.get("name"), e.get("fields")
    key = f"expect.{name}.{'ok' if e.get('ok') else 'fail'}"
    if not isinstance(fields, dict) or not has(key):
        detail = f": {e['detail']}" if e.get("detail") else ""
        return f"{expect_title(name, lang)}{detail}"
    sep = t("list.sep", lang)
    f = dict(fields)
    if isinstance(f.get("hops"), list):
        f["hops"] = sep.join(hop_name(h, lang) for h in f["hops"]) or "-"
    if isinstance(f.get("rules"), list):
        f["rules"] = sep.join(rule_name(r, lang) for r in f["rules"]) or "-"
    if isinstance(f.get("reason"), str):
        f["reason"] = refused_text(f["reason"], lang)
    if isinstance(f.get("wrong"), list):
        f["wrong"] = sep.join(map(str, f["wrong"])) or "-"
    if isinstance(f.get("offline"), list):
        f["offline"] = sep.join(map(str, f["offline"])) or "-"
    if isinstance(f.get("late"), list):
        f["late"] = sep.join(late_text(x, lang) for x in f["late"]) or "-"
    return t(key, lang, **f)


def late_text(late: object, lang: str) -> str:
    """A device not back online in time, ``[device, fault kind, seconds or None]``:
    "lk01（代理重启后 未恢复）"."""
    if not isinstance(late, list | tuple) or len(late) != 3:
        return str(late)
    device, kind, secs = late
    after = t("expect.devices_back_online.never", lang) if secs is None else \
        t("expect.devices_back_online.secs", lang, n=secs)
    return t("expect.devices_back_online.late", lang, device=device, fault=fault_name(kind, lang),
             after=after)


def uptime_pct(share: object) -> str:
    """0.9987 as "99.9%" (never rounded up to 100% while it was not)."""
    if not isinstance(share, int | float):
        return "-"
    pct = int(share * 1000) / 10
    return f"{pct:.1f}%"


def refused_text(key: str, lang: str) -> str:
    """"存件：柜满" for ``deposit.full``; a reason without words shows its code."""
    action, _, reason = key.partition(".")
    a = t(f"refused.action.{action}", lang) if has(f"refused.action.{action}") else action
    r = t(f"refused.reason.{reason}", lang) if has(f"refused.reason.{reason}") else reason
    return t("refused.what", lang, action=a, reason=r)


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

