"""What the simulator's reports and live dashboard say, in Simplified Chinese and English.

One catalogue for the terminal summary, the progress bar, the HTML report and
the live dashboard, because they share their vocabulary (hops, fault kinds,
domain rules, verdict) and a tester reads them side by side: the same fault
must have the same name in the summary, the report and on the dashboard.
The words are in ``simulator/report/text.toml``, loaded by ``common/text.py``.

Words the outlet's devices use (compartment states, alarm kinds, device
kinds) are not repeated here: ``label`` falls back to the clerk's page
catalogue, so a locker state reads the same in the simulator as on the
status page in a real outlet. Anything neither catalogue knows (a new fault
kind, a state a newer firmware sends) is shown as sent, behind a generic
label, so a runner that grows a fault never breaks a report.
"""

from __future__ import annotations

from common.text import LANGS, beside
from gateway.http.status import TEXT as web_text

# This catalogue (simulator/report/text.toml), then the clerk page's.
CATALOG = beside(__file__)
TEXT = CATALOG.entries


def check_lang(lang: str) -> str:
    """Refuse a language we have no text for, loudly: a report in the wrong
    language is worse than an error the caller sees at once."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}, got {lang!r}")
    return lang


def has(key: str) -> bool:
    return key in TEXT or web_text.has(key)


def t(key: str, lang: str, **kw: object) -> str:
    """Text for ``key``; this catalogue first, then the status page's. A
    key in neither raises KeyError, so a typo fails the tests."""
    return (CATALOG if CATALOG.has(key) else web_text).t(key, lang, **kw)


def fault_name(kind: object, lang: str) -> str:
    key = f"fault.{kind}"
    return t(key, lang) if key in TEXT else t("fault.unknown", lang, kind=kind)


def hop_name(hop: object, lang: str) -> str:
    key = f"hop.{hop}"
    return t(key, lang) if key in TEXT else str(hop)


def rule_name(name: object, lang: str) -> str:
    key = f"rule.{name}"
    return t(key, lang) if key in TEXT else str(name)


def cls_name(cls: object, lang: str) -> str:
    key = f"cls.{cls}"
    return t(key, lang) if key in TEXT else str(cls)


def state_name(state: object, lang: str) -> str:
    """A compartment state as the clerk's page names it."""
    key = f"state.{state}"
    return t(key, lang) if has(key) and key != "state.unknown" else t("state.unknown", lang, state=state)


def kind_name(kind: object, lang: str) -> str:
    key = f"kind.{kind}"
    return t(key, lang) if has(key) else str(kind)


def alarm_text(alarm: dict[str, object], lang: str) -> str:
    """"3 号格口：柜门未关", with the clerk page's words for known alarms."""
    kind = alarm.get("alarm")
    key = f"alarm.{kind}"
    fields = {k: v for k, v in alarm.items() if k != "alarm"}
    what = t(key, lang, **fields) if has(key) and key != "alarm.unknown" else t("alarm.unknown", lang,
                                                                                   alarm=kind)
    cid = alarm.get("compartment")
    return (t("alarm.where", lang, id=cid) if cid is not None else "") + what
