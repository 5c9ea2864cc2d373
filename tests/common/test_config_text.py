"""Config errors read in the reader's language: every problem pydantic or a
section's own rule finds is shown in Chinese for a Chinese reader (the key's
path and the values stay as the file spells them), and in the same English
as before for everyone else."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field, model_validator

from common.config import ConfigError, KeyProblem, Problem, Section, describe, parse


class Inner(Section):
    size: Annotated[int, Field(ge=1, le=8)] = 4
    name: str = "a"


class Outer(Section):
    inner: Inner = Inner()
    ratio: Annotated[float, Field(gt=0, lt=1)] = 0.5
    base_s: float = 1.0
    cap_s: float = 2.0
    ca_file: str = ""
    lang: str = "zh"

    @model_validator(mode="after")
    def _rules(self) -> Outer:
        if self.cap_s < self.base_s:
            raise KeyProblem("cap_s", Problem("not_below", other="outer.base_s"))
        if self.ca_file and not Path(self.ca_file).exists():
            raise KeyProblem("ca_file", Problem("no_file", path=self.ca_file))
        return self


CASES = [
    ({"inner": {"sise": 3}}, "outer.inner.sise: unknown key; did you mean 'size'? (known: name, size)",
     "outer.inner.sise: 没有这个键，是不是 'size'？（可用的键：name, size）"),
    ({"inner": {"size": 9}}, "outer.inner.size: must be an integer from 1 to 8, got 9",
     "outer.inner.size: 必须是整数，在 1 到 8 之间，现在是 9"),
    ({"ratio": 2.0}, "outer.ratio: must be a number above 0 and below 1, got 2.0",
     "outer.ratio: 必须是数字，大于 0 且小于 1，现在是 2.0"),
    ({"inner": {"name": 5}}, "outer.inner.name: must be a string (in quotes), got 5",
     "outer.inner.name: 必须是字符串（加引号），现在是 5"),
    ({"inner": "x"}, "outer.inner: must be a table ([section] or {...}), got 'x'",
     "outer.inner: 必须是表（[节] 或 {...}），现在是 'x'"),
    ({"cap_s": 0.5}, "outer.cap_s: must not be below outer.base_s", "outer.cap_s: 不能小于 outer.base_s"),
    ({"ca_file": "/nonexistent/ca.pem"}, "outer.ca_file: no such file: /nonexistent/ca.pem",
     "outer.ca_file: 文件不存在：/nonexistent/ca.pem"),
]


@pytest.mark.parametrize(("data", "en", "zh"), CASES)
def test_problem_in_both_languages(data: dict, en: str, zh: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(Outer, data, "outer")
    assert str(e.value) == en
    assert e.value.text("en") == en
    assert e.value.text("zh") == zh


def test_the_file_name_goes_in_front_and_the_problem_stays_translatable() -> None:
    with pytest.raises(ConfigError) as e:
        parse(Outer, {"inner": {"size": 0}}, "outer")
    err = e.value.within(Path("/etc/postedge/gateway.toml"))
    assert describe(err, "zh") == ("/etc/postedge/gateway.toml: outer.inner.size: "
                                   "必须是整数，在 1 到 8 之间，现在是 0")
    assert describe(err, "en").startswith("/etc/postedge/gateway.toml: outer.inner.size: must be an integer")
    # anything that is not a config error describes itself
    assert describe(OSError("disk full"), "zh") == "disk full"


def test_a_validator_sentence_without_a_catalogue_entry_is_carried_as_it_is() -> None:
    class One(Section):
        v: str = ""

        @model_validator(mode="after")
        def _rule(self) -> One:
            if self.v == "bad":
                raise ValueError("v cannot be bad")
            return self

    with pytest.raises(ConfigError) as e:
        parse(One, {"v": "bad"}, "one")
    assert e.value.text("zh").startswith("one: ") and "v cannot be bad" in e.value.text("zh")


@pytest.mark.parametrize(("load", "text", "zh"), [
    ("scenario", {"name": "x", "faults": [{"kind": "wan_down", "at_h": 1}]}, "需要持续时间"),
    ("scenario", {"name": "x", "faults": [{"kind": "mqtt", "at_h": 1, "for_h": 1}]}, "必须是以下之一"),
    ("outlet", 'outlet = "o1"\n[[lockers]]\nid = "lk01"\n[[lockers]]\nid = "lk01"\n', "出现了两次"),
    ("outlet", 'outlet = "o1"\n', "没有任何设备"),
    ("outlet", 'outlet = "o1"\n[broker]\nport = 9000\ntls_port = 9000\n[[lockers]]\nid = "lk01"\n',
     "必须不同"),
])
def test_the_roles_own_rules_read_in_chinese(tmp_path: Path, load: str, text: object, zh: str) -> None:
    """A rule a section checks itself (a fault without its hours, a device
    twice in an outlet's description) is a catalogued problem, not an
    English sentence: a Chinese reader gets it in Chinese."""
    from gateway.outlet import spec
    from simulator import scenario

    with pytest.raises(ConfigError) as e:
        if load == "scenario":
            scenario.parse(text)  # type: ignore[arg-type]
        else:
            p = tmp_path / "outlet.toml"
            p.write_text(str(text))
            spec.load(p)
    assert zh in describe(e.value, "zh")
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in describe(e.value, "en"))
