"""What ``postedge sim run`` leaves in a terminal:
lines that fit the terminal's width, 100 % at the end of a run, the verdict
in colour on a terminal only (never with NO_COLOR, never in a log), and the
expectations in words with the run's numbers."""

from __future__ import annotations

import copy
import io
import re

import pytest

from common.text import cells
from simulator.report import ProgressBar, print_summary, render_html, summary
from tests.simulator.test_sim_report import DAY, make_result

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def drawn(out: str) -> list[str]:
    """What each redraw put on the line."""
    return [seg.rstrip() for seg in re.split(r"[\r\n]", out) if seg.strip()]


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("columns", [80, 60, 40])
def test_the_progress_line_fits_the_terminal_and_ends_at_100(lang: str, columns: int) -> None:
    now = [0.0]
    out = Terminal()
    bar = ProgressBar(DAY, stream=out, lang=lang, tty=True, clock=lambda: now[0], columns=lambda: columns)
    for k in range(1, 20):
        now[0] = k * 0.2
        bar.update(DAY * k / 20, events=k * 12345, faults_active=k % 3)  # stops at 95 %
    bar.close(complete=True)
    lines = drawn(out.getvalue())
    assert lines and all(cells(x) < columns for x in lines), [(cells(x), x) for x in lines]
    last = lines[-1]
    assert "100%" in last and ("完成，用时" in last or "done in" in last), last
    if columns == 80:  # room for the bar, made shorter than its 24 cells when need be
        assert "[" in last and "#" in last


def test_a_log_keeps_the_whole_line_and_an_interrupted_run_its_last_percent() -> None:
    log = io.StringIO()
    bar = ProgressBar(DAY, stream=log, lang="zh", every_s=0, clock=lambda: 0.0)
    bar.update(DAY * 0.5, events=1, faults_active=0)
    bar.close()  # the run did not reach its end: no 100 %
    lines = log.getvalue().splitlines()
    assert lines[-1].startswith("[############............]  50%") and "完成" in lines[-1]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_summary_fits_an_80_column_terminal(lang: str) -> None:
    r = make_result(drop_at_central=9)
    r["faults"] = [{**f, "detail": ""} for f in r["faults"]]
    wide = summary(r, lang)
    assert max(cells(x) for x in wide.splitlines()) > 80  # the case this is about
    fit = summary(r, lang, width=80)
    assert max(cells(x) for x in fit.splitlines()) <= 80, fit
    # the ledger drops the columns that are 0 everywhere, and says so
    assert ("来历不明、跳过、乱序、坏编号：每个环节都是 0" in fit) if lang == "zh" else \
        ("unexpected, skipped, reordered, bad ids: 0 at every hop" in fit)
    lost = r["ledger"]["per_hop"][3]["examples"]["lost"][0]
    assert lost in fit and fit.splitlines()[0] == wide.splitlines()[0]


def test_colour_on_a_terminal_only_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    r = make_result(drop_at_central=9)
    tty = Terminal()
    print_summary(r, "zh", tty)
    coloured = tty.getvalue()
    assert "\x1b[1;31m结论：未通过（FAIL）\x1b[0m" in coloured
    assert "\x1b[1;31m✗\x1b[0m 投递账本" in coloured and "\x1b[32m✓\x1b[0m 业务规则" in coloured
    assert ANSI.sub("", coloured) == summary(r, "zh", width=120) + "\n"
    ok = Terminal()
    print_summary(make_result(), "en", ok)
    assert "\x1b[1;32mVerdict: PASS\x1b[0m" in ok.getvalue()

    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    print_summary(r, "zh", plain)
    assert not ANSI.search(plain.getvalue())
    monkeypatch.delenv("NO_COLOR")
    log = io.StringIO()  # a pipe or a file: the summary's text, byte for byte
    print_summary(r, "zh", log)
    assert log.getvalue() == summary(r, "zh") + "\n"


def test_device_text_is_never_read_as_markup_in_colour() -> None:
    r = make_result(drop_at_central=9)
    r["faults"][0]["detail"] = "[red]x[/red] :box:"
    tty = Terminal()
    print_summary(r, "en", tty, colour=True)
    assert "[red]x[/red] :box:" in ANSI.sub("", tty.getvalue())


def test_expectations_are_sentences_with_the_run_numbers() -> None:
    r = make_result()
    r["expectations"] = copy.deepcopy(r["expectations"]) + [
        {"name": "min_central_events", "ok": False, "detail": "7 >= 100000",
         "fields": {"got": 7, "want": 100000}},
        {"name": "max_lost", "ok": True, "detail": "0 <= 3", "fields": {"got": 0, "want": 3}},
        {"name": "photos_arrived", "ok": False, "detail": "2/3 photo files at the platform",
         "fields": {"got": 2, "want": 3}},
        {"name": "deposit_notified_once", "ok": False, "detail": "...",
         "fields": {"deposits": 4, "platform": 2, "modem": 1, "texts": 1, "wrong": ["p9=[]"]}},
        {"name": "a_rule_from_a_newer_runner", "ok": True, "detail": "fine"},
    ]
    failures = ["min_central_events", "photos_arrived", "deposit_notified_once"]
    r["verdict"] = {"ok": False, "failures": failures}
    zh, en = summary(r, "zh"), summary(r, "en")
    assert "  ✗ 中心平台收到 7 条，要求至少 100000 条" in zh
    assert "  ✗ the platform received 7 events, at least 100000 required" in en
    assert "  ✓ 端到端丢失 0 条，最多允许 3 条" in zh
    assert "  ✗ 照片：提交 3 张，平台只收到 2 张" in zh
    assert "没有恰好通知一次的：p9=[]" in zh
    assert "未通过：中心平台收到的事件数、照片到达、投递通知" in zh
    assert "  ✓ a_rule_from_a_newer_runner: fine" in en  # unknown to this version: as sent
    assert "min_central_events" not in zh and ">=" not in zh
    page = render_html(r, "zh")  # the HTML report says the same, in both languages
    assert "中心平台收到 7 条，要求至少 100000 条" in page and "at least 100000 required" in page
    assert "包裹 12、仍在格口 0" in page and "still_inside" not in page
