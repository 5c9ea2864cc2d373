"""``[counter]`` in gateway.toml: checked at load, naming the key, and the
desk it describes works (documents, a file label printer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, GatewayConfig
from gateway.counter.from_config import build_desk
from protocol.canonical import dumps
from tests.gateway.counter.platform_rig import KEYS, catalogue_doc, tariff_doc


def test_a_counter_table_builds_a_working_desk(tmp_path: Path) -> None:
    cfg = GatewayConfig.from_dict({"outlet": "o1", "db": "gw/gateway.db", "counter": {
        "platform_keys": KEYS, "label_url": f"file:{tmp_path / 'labels.tspl'}", "label_language": "tspl",
        "scale_url": "/dev/ttyUSB-postedge-missing", "scale_format": "eq-reversed"}}, base=tmp_path)
    assert cfg.counter is not None and cfg.counter.login_kinds == ["gateway"]
    desk = build_desk(cfg.counter, cfg.db, cfg.outlet)
    try:
        assert desk.install(dumps(catalogue_doc()))["version"] == 1
        desk.install(dumps(tariff_doc()))
        assert (tmp_path / "gw" / "counter" / "tariff.json").exists()
        assert len(desk.boxes()) == 3
        assert desk.label_printer is not None and desk.label_printer.check() is None  # a file: no status
    finally:
        desk.close()
    again = build_desk(cfg.counter, cfg.db, cfg.outlet)  # documents survive a restart
    try:
        assert again.tariff is not None and again.catalogue is not None
    finally:
        again.close()


@pytest.mark.parametrize("counter,key", [
    ({}, "counter.platform_keys"),
    ({"platform_keys": {}}, "counter.platform_keys"),
    ({"platform_keys": {"p1": "00" * 31}}, "counter.platform_keys"),
    ({"platform_keys": {"P 1": "00" * 32}}, "counter.platform_keys"),
    ({"platform_keys": KEYS, "scale_format": "auto"}, "counter.scale_format"),
    ({"platform_keys": KEYS, "label_language": "epl"}, "counter.label_language"),
    ({"platform_keys": KEYS, "stable_window_s": 0}, "counter.stable_window_s"),
    ({"platform_keys": KEYS, "login_kinds": ["locker"]}, "counter.login_kinds"),
    ({"platform_keys": KEYS, "printer": "x"}, "counter.printer"),
])
def test_bad_counter_tables_name_the_key(counter: dict, key: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as e:
        GatewayConfig.from_dict({"outlet": "o1", "db": "gw.db", "counter": counter})
    assert key in str(e.value)
