"""What the command line shows a Chinese reader has no English words in it:
every ``--help`` in the tree, ``gateway status`` and
``gateway devices``, and the simulator's summary.

The check (:func:`english_words`) looks at every run of printable ASCII and
lets through only what a Chinese screen rightly shows in Latin letters; the
rest is a word someone forgot to put through a catalogue. Allowed:

- anything with a digit in it: numbers, codes and ids (``S10``, ``lk01``,
  ``127.0.0.1``, ``0badc0de``), durations and units with a number (``5s``,
  ``3h05m``, ``p99``); an English word never has a digit;
- ALL-CAPS: metavars (``CONFIG``, ``TLS_PORT``), acronyms and codes
  (``TOML``, ``MQTT``, ``PASS``, ``SIGKILL``);
- code quoted in backticks (a command line, a TOML line);
- option names (``--config``, ``-march``), paths (``/dev/ttyUSB0``), file
  names with a known extension (``gateway.toml``, ``main.py``), a config
  table (``[upstream]``) and a placeholder (``<hex>``);
- for ``--help`` only, the names the parser tree itself defines (commands
  and choices: ``gateway``, ``locker``): they are what the reader types;
- ``PROPER``: product and program names, and a scenario's file name;
  ``SYMBOLOGY``: barcode symbologies by their names (``Code 128``);
  ``UNITS``: units that stand after a number.

What is *not* allowed is the point of the test: a lower-case word, and with
it every reason code and state (``door_forced``, ``still_inside``,
``ledger_ok``, ``locker`` in ``gateway devices``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.text import cells
from gateway.store.events import EventStore, StoredEvent
from postedge import cli, helptext
from simulator.report import summary
from tests.zh_words import english_words


def test_the_checker_catches_codes_and_passes_identifiers() -> None:
    assert english_words("  lk01  3 号格口：door_forced （0 秒前）") == ["door_forced"]
    assert english_words("快递柜 locker 在线") == ["locker"]
    assert english_words("✗ ledger_ok：still_inside 3") == ["ledger_ok", "still_inside"]
    assert english_words("记录：handheld.hand_delivery") == ["handheld.hand_delivery"]
    assert english_words("用法：postedge gateway [-h] --config CONFIG {run,status} gateway.toml /dev/x "
                         "[upstream] <hex> S10 3h05m 20.5 ms", names={"gateway", "run", "status"}) == []


# ------------------------------------------------------------------ --help

def tree() -> list[tuple[str, ...]]:
    return [path for path, _ in helptext.walk(cli.build_parser())]


def tree_names() -> set[str]:
    """Commands, choices and the names an epilog lists (shipped scenarios)
    the parser tree defines: what the reader types."""
    names: set[str] = set()
    for path, p in helptext.walk(cli.build_parser()):
        names.update(path)
        for v in getattr(p, "epilog_fields", {}).values():
            names.update(str(v).split())
        for a in p._actions:
            if a.choices is not None and not isinstance(a, argparse._SubParsersAction):
                names.update(str(c) for c in a.choices)
    return names


def render_help(path: tuple[str, ...], *lang: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        cli.main([*lang, *path, "--help"])
    assert e.value.code == 0
    return out.getvalue()


def test_every_command_and_option_has_help_in_both_languages() -> None:
    """A new command or option fails here until its catalogue entry lands
    (postedge/text_help.toml)."""
    missing = helptext.untranslated(cli.build_parser())
    stubs = "\n".join(f'[{k}]\nzh = ""\nen = ""\n' for k in missing)
    assert missing == [], "add these to postedge/text_help.toml:\n" + stubs


@pytest.mark.parametrize("path", tree(), ids=lambda p: " ".join(p) or "postedge")
def test_every_help_reads_in_chinese(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    zh = render_help(path, "--lang", "zh")
    assert zh.startswith("用法：postedge") and "显示此帮助并退出" in zh
    assert english_words(zh, tree_names()) == [], zh
    assert "positional arguments" not in zh and "options:" not in zh
    # wrapped by terminal columns: Chinese takes two, so a line is never wider than the terminal
    assert max(cells(line) for line in zh.splitlines()) <= 100, zh
    en = render_help(path, "--lang", "en")
    assert en.startswith("usage: postedge") and "show this help message and exit" in en
    assert not re.search(r"[\u4e00-\u9fff]", en), en


def test_help_follows_the_locale_and_argparse_speaks_chinese_in_errors() -> None:
    env = {**os.environ, "LANG": "zh_CN.UTF-8", "COLUMNS": "80"}
    env.pop("POSTEDGE_LANG", None)
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "gateway", "status", "--help"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("用法：postedge gateway status")
    assert "营业员需要知道的情况" in r.stdout and "网关配置文件" in r.stdout
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "gateway", "status"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "错误：缺少必需的参数：--config" in r.stderr
    r = subprocess.run([sys.executable, "-m", "postedge.cli", "sim", "run", "--dashboard", "x"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "参数 --dashboard：不是端口号：'x'" in r.stderr
    en = subprocess.run([sys.executable, "-m", "postedge.cli", "--lang", "en", "gateway", "status"],
                        capture_output=True, text=True, env=env, timeout=60)
    assert "the following arguments are required: --config" in en.stderr
    # argparse is itself again after the command line is parsed
    assert argparse._("usage: ") == "usage: "  # type: ignore[attr-defined]


# ------------------------------------------------------------------ gateway status and devices

@pytest.fixture
def outlet_db(tmp_path: Path) -> Path:
    """A gateway's database as a day leaves it: three kinds of device, one
    offline, and a forced door; the gateway itself is not running."""
    s = EventStore(tmp_path / "gateway.db")
    now = time.time()
    with s.tx():
        s.presence("lk01", "o1", "locker", True, now - 300)
        s.presence("sc01", "o1", "scanner", False, now - 7200)
        s.presence("hh01", "o1", "handheld", True, now - 5)
    body = {"alarm": "door_forced", "compartment": 3}
    for seq, b in ((1, body), (2, {"alarm": "something_new"})):
        env = {"v": 1, "id": f"lk01:0badc0de:{seq}", "ts": int(now), "type": "locker.alarm", "cls": "alarm",
               "body": b}
        s.commit_events([StoredEvent(env["id"], "o1", "locker", "lk01", "0badc0de", seq, "alarm",
                                     "locker.alarm", int(now), json.dumps(env).encode())])
    s.close()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('outlet = "o1"\ndb = "gateway.db"\n\n[broker]\nhost = "127.0.0.1"\nport = 1\n'
                   'username = "gw"\npassword = "pw"\n', encoding="utf-8")
    return cfg


def gateway(*args: str, lang: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LANG": "zh_CN.UTF-8" if lang == "zh" else "C.UTF-8"}
    env.pop("POSTEDGE_LANG", None)
    return subprocess.run([sys.executable, "-m", "postedge.cli", "gateway", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_status_and_devices_in_chinese_name_no_codes(outlet_db: Path) -> None:
    st = gateway("status", "--config", str(outlet_db), lang="zh")
    assert st.returncode == 3  # not running: the last figures, said so
    assert "3 号格口：柜门被强行打开" in st.stdout and "警报：something_new" in st.stdout
    # An alarm kind newer than this gateway is shown as sent, behind a Chinese label: a code, not a word.
    assert english_words(st.stdout.replace("something_new", "")) == [], st.stdout
    dev = gateway("devices", "--config", str(outlet_db), lang="zh")
    assert dev.returncode == 0
    lines = dev.stdout.splitlines()
    assert [line.split()[:3] for line in lines] == [["hh01", "手持终端", "在线"], ["lk01", "快递柜", "在线"],
                                                    ["sc01", "扫描枪", "离线"]]
    assert english_words(dev.stdout) == [], dev.stdout
    # the state column lines up in terminal columns, whatever the kind's width in characters
    states = ("在线", "在线", "离线")
    assert len({cells(line[:line.index(w)]) for line, w in zip(lines, states, strict=True)}) == 1
    en = gateway("devices", "--config", str(outlet_db), lang="en").stdout
    assert en.splitlines()[1].split()[:3] == ["lk01", "Locker", "online"]
    assert "Compartment 3: door forced open" in gateway("status", "--config", str(outlet_db),
                                                           lang="en").stdout


def test_status_counts_provisioned_devices_and_says_the_upload_is_not_configured(outlet_db: Path) -> None:
    """``gateway status`` counted only devices that had connected
    ("设备在线：1/2" beside a scanner that never came) and said nothing of a missing
    ``[upstream]``. It now counts from the broker's ACL (the provisioning inventory),
    names the device that never connected, and says the data stays on the gateway; in
    the same read model as the page (``status.snapshot``)."""
    from gateway.broker import Account

    accounts = [Account("gw", "pw", "o1", "gateway"), Account("lk01", "x", "o1", "locker"),
                Account("sc01", "x", "o1", "scanner"), Account("hh01", "x", "o1", "handheld"),
                Account("sc02", "x", "o1", "scanner")]
    (outlet_db.parent / "acl").write_text("\n\n".join("\n".join(a.acl_lines()) for a in accounts) + "\n",
                                          encoding="utf-8")
    with outlet_db.open("a", encoding="utf-8") as f:
        f.write('acl_file = "acl"\n')  # [broker] is the file's last table
    zh = gateway("status", "--config", str(outlet_db), lang="zh")
    assert zh.returncode == 3, zh.stderr
    assert "设备在线：2/4，其中 1 台已配置但从未连接：sc02" in zh.stdout, zh.stdout
    assert "没有配置上传到平台" in zh.stdout
    assert english_words(zh.stdout.replace("something_new", "")) == [], zh.stdout
    en = gateway("status", "--config", str(outlet_db), lang="en")
    assert "devices online: 2/4; 1 provisioned but never connected: sc02" in en.stdout, en.stdout
    assert "uploading to the platform is not configured" in en.stdout
    doc = json.loads(gateway("status", "--config", str(outlet_db), "--json", lang="en").stdout)
    assert doc["devices"] == 4 and doc["devices_never"] == ["sc02"] and doc["upstream"] is False


# ------------------------------------------------------------------ the simulator's summary

def test_simulator_summary_in_chinese_names_no_codes() -> None:
    from tests.simulator.test_sim_report import make_result

    for r in (make_result(), make_result(drop_at_central=9)):
        r["faults"] = [{**f, "detail": ""} for f in r["faults"]]  # the fixture's detail is hostile HTML
        zh = summary(r, "zh")
        assert english_words(zh) == [], zh


# ------------------------------------------------------------------ validate

def test_validate_says_why_in_chinese() -> None:
    """A "check digit is 4, expected 5" detail inside a Chinese line."""
    from tests.common.test_barcode_words import MORE

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["--lang", "zh", "validate", "RB123456784GB", "(00)106141412345678908(17)533110",
                       *MORE])
    assert rc == 1
    text = out.getvalue()
    assert "无效：S10 校验位错误（校验位是 4，应为 5）" in text
    assert "已忽略 (17)：GS1 日期或时间不存在（(17) 533110 不是存在的日期）" in text
    assert english_words(text) == [], text
