"""The postedge command as a person runs it, in both languages."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common import barcode_words
from postedge import i18n
from protocol import barcodes

GOLDEN = Path(__file__).parent.parent / "golden" / "vectors.jsonl"


def postedge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "postedge.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_validate_english_and_exit_code() -> None:
    ok = postedge("--lang", "en", "validate", "RB123456785GB", "]E04006381333931")
    assert ok.returncode == 0
    assert ok.stdout.splitlines() == ["valid UPU S10 item id: RB123456785GB",
                                      "valid EAN-13: 4006381333931"]
    bad = postedge("--lang", "en", "validate", "RB123456785GB", "RB123456784GB")
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[1].startswith("invalid: wrong S10 check digit (check digit is 4")


def test_validate_chinese_from_locale() -> None:
    env = {"PATH": "/usr/bin:/bin", "LANG": "zh_CN.UTF-8"}
    r = postedge("validate", "]C01012345678901", "RB123456785ZZ", env=env)
    assert r.stdout.splitlines() == ["有效 国内 EMS 单号：1012345678901",
                                     "无效：国家代码无效（ZZ 不是 ISO 3166 国家代码）"]


def test_validate_json() -> None:
    r = postedge("validate", "--json", "(00)106141412345678908")
    assert json.loads(r.stdout) == {"input": "(00)106141412345678908", "ok": True, "kind": "sscc",
                                    "value": "106141412345678908",
                                    "ais": {"00": "106141412345678908"}}


def test_validate_keeps_valid_gs1_elements_and_says_what_it_left_out() -> None:
    r = postedge("--lang", "en", "validate", "(00)106141412345678908(3302)001234(17)533110")
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        "valid SSCC: 106141412345678908",
        "  ignored (17): GS1 date or time that does not exist ((17) 533110 is not a real date)"]
    r = postedge("--lang", "zh", "validate", "1012345678901")
    assert r.returncode == 1
    assert r.stdout.startswith("无效：13 位数字无法确认是国内单号")


def test_gateway_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('outlet = "o1"\n')
    r = postedge("--lang", "zh", "gateway", "run", "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.strip() == f"错误：{cfg}: db: 必须填写"
    cfg.write_text('outlet = "o1"\ndb = "gw.db"\n[brokr]\n')
    r = postedge("--lang", "zh", "gateway", "run", "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.startswith(f"错误：{cfg}: brokr: 没有这个键，是不是 'broker'？"), r.stderr
    cfg.write_text("outlet = [unclosed\n")
    r = postedge("--lang", "en", "gateway", "run", "--config", str(cfg))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot read")


def test_every_validator_verdict_has_words_in_both_languages() -> None:
    """Every reason and kind a validator can produce, per the golden vectors."""
    reasons, kinds = set(), set()
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        case = json.loads(line)
        out = case["expect"].get("ok")
        if case["fn"].startswith("barcode.") and isinstance(out, dict):
            (kinds if out["ok"] else reasons).add(out.get("kind") or out.get("reason"))
    assert reasons and kinds
    for r in reasons:
        assert barcode_words.TEXT.has(f"reason.{r}"), r
    for k in kinds | set(barcodes.PARCEL_KINDS):
        assert i18n.TEXT.has(f"kind.{k}"), k


@pytest.mark.e2e
@pytest.mark.parametrize("lang,marker", [("en", "every event stored exactly once"),
                                         ("zh", "每条事件恰好存储一次")])
def test_demo_runs_end_to_end(tmp_path: Path, lang: str, marker: str) -> None:
    r = postedge("--lang", lang, "demo", "--workdir", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert marker in r.stdout.splitlines()[-1]
    assert (tmp_path / "gateway.db").exists()


@pytest.mark.slow
def test_sim_dashboard_port_mistakes_are_one_line_before_the_run(tmp_path: Path) -> None:
    """`--dashboard 99999` ran on a random port, and a
    taken port ended the run in a traceback with exit 1, as if it had failed."""
    r = postedge("--lang", "en", "sim", "run", "--dashboard", "99999")
    assert r.returncode == 2 and "a port is 0 to 65535, got 99999" in r.stderr
    assert "Traceback" not in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = postedge("--lang", "zh", "sim", "run", "--dashboard", str(port),
                     "--workdir", str(tmp_path / "w"))
    assert r.returncode == 3
    assert r.stderr.strip() == (f"错误：实时看板的端口 {port} 已被占用；"
                                "请换一个端口，或用 --dashboard 0 自动选择")
    assert not (tmp_path / "w").exists()  # refused before anything started
