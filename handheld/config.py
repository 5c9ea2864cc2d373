"""The handheld's TOML config, validated up front so a typo fails at start with the key's name.

A courier's handheld is set up once at the outlet and then carried for months; a
config mistake found on the road (a wrong broker port, a key that is not hex) costs a
whole round. So every key is checked when the app starts, unknown keys are refused
(a misspelt ``[brokr]`` would otherwise silently fall back to defaults), and every
error names the key it is about (``broker.port must be ...``).

Example (every key; relative paths are relative to the config file)::

    device = "hh01"            # MQTT account and event-id prefix
    outlet = "o1"
    courier = "c007"           # who carries it; goes into custody events
    lang = "zh"                # default UI language: zh | en
    state_dir = "state"        # outbox, id counter, jobs, photos
    camera = "frames/"         # device index ("0"), video file, stream URL or a folder of images
    camera_scan = false        # also read barcodes in the camera's frames (multi-frame voting)
    gnss = "/dev/ttyUSB1"      # pyserial URL of the NMEA receiver; "" = none
    scan_engine = ""           # pyserial URL of a serial scan engine; "" = none
    scan_engine_family = "gm65"
    require_position = true    # refuse evidence photos without a held GNSS fix

    [key]                      # this handheld's OWN key (protocol/keys.py), written by provisioning:
    kv = 1                     # it verifies platform commands to this handheld (jobs, manifest) and
    secret = "00112233..."     # no locker accepts it; a locker's doors open only for permits
    # [key.prev] kv = ..., secret = ..., until = <Unix s>: the previous version, in its grace period

    [broker]
    host = "192.168.1.2"
    port = 1883
    username = "hh01"
    password = "..."
    keepalive = 30

    [gateway]
    url = "http://192.168.1.2:8080"   # command status and photo upload
    username = "hh01"                 # for the photo uploader; default: the broker account
    password = "..."

    [web]
    host = "127.0.0.1"         # the handheld's own browser
    port = 8090

    [scan]
    same_window_s = 3.0        # the same symbol again within this: duplicate
    other_window_s = 0.3       # a different symbol this soon after a read: ignored

    [outbox]
    capacity_bytes = 8000000

    [gnss_gate]
    hold_s = 5.0
    max_accuracy_m = 10.0
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import keys
from protocol.errors import ProtocolError
from protocol.keys import Keyring
from protocol.topics import valid_segment

LANGS = ("zh", "en")
TOP_KEYS = ("device", "outlet", "courier", "lang", "state_dir", "camera", "camera_scan", "gnss", "gnss_baud",
            "scan_engine", "scan_engine_family", "require_position", "key", "broker",
            "gateway", "web", "scan", "outbox", "gnss_gate")
FAMILIES = ("gm65", "honeywell", "ssi", "newland")


class ConfigError(ValueError):
    """A config problem; the message names the key."""


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    keepalive: int = 30


@dataclass(frozen=True)
class GatewayConfig:
    url: str = "http://127.0.0.1:8080"
    username: str = ""
    password: str = ""


@dataclass(frozen=True)
class HandheldConfig:
    device: str
    outlet: str
    courier: str
    state_dir: Path
    keyring: Keyring
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    lang: str = "zh"
    camera: str = ""
    camera_scan: bool = False   # decode codes in the camera's frames and take them as scans
    gnss: str = ""
    gnss_baud: int = 9600
    scan_engine: str = ""
    scan_engine_family: str = "gm65"
    require_position: bool = True
    web_host: str = "127.0.0.1"
    web_port: int = 8090
    same_window_s: float = 3.0
    other_window_s: float = 0.3
    outbox_capacity: int = 8_000_000
    gnss_hold_s: float = 5.0
    gnss_max_accuracy_m: float = 10.0


def _table(d: dict[str, Any], name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    t = d.get(name, {})
    if not isinstance(t, dict):
        raise ConfigError(f"{name} must be a table")
    unknown = sorted(set(t) - set(keys))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(name + '.' + k for k in unknown)}; known: "
                          f"{', '.join(keys)}")
    return t


def _str(d: dict[str, Any], key: str, name: str, default: str | None = None, empty: bool = True) -> str:
    v = d.get(key, default)
    if v is None:
        raise ConfigError(f"{name} is required")
    if not isinstance(v, str) or (not empty and not v.strip()):
        raise ConfigError(f"{name} must be a{'' if empty else ' non-empty'} string, got {v!r}")
    return v.strip()


def _int(d: dict[str, Any], key: str, name: str, default: int, lo: int, hi: int) -> int:
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError(f"{name} must be an integer {lo}-{hi}, got {v!r}")
    return v


def _num(d: dict[str, Any], key: str, name: str, default: float, lo: float, hi: float) -> float:
    v = d.get(key, default)
    if not isinstance(v, int | float) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError(f"{name} must be a number {lo}-{hi}, got {v!r}")
    return float(v)


def _segment(d: dict[str, Any], key: str) -> str:
    v = _str(d, key, key)
    if not valid_segment(v):
        raise ConfigError(f"{key} must be 1-32 of a-z 0-9 _ - (it goes into MQTT topics), got {v!r}")
    return v


def parse_config(d: dict[str, Any], base: Path | None = None) -> HandheldConfig:
    """Validate a parsed TOML document; relative paths resolve against ``base``."""
    if not isinstance(d, dict):
        raise ConfigError("config must be a table")
    unknown = sorted(set(d) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(TOP_KEYS)}")
    base = base or Path.cwd()
    device = _segment(d, "device")
    outlet = _segment(d, "outlet")
    courier = _str(d, "courier", "courier", default=device, empty=False)
    lang = d.get("lang", "zh")
    if lang not in LANGS:
        raise ConfigError(f"lang must be one of {', '.join(LANGS)}, got {lang!r}")

    def path(key: str, default: str) -> str:
        v = _str(d, key, key, default=default)
        if not v or "://" in v or v.isdigit():
            return v
        p = Path(v)
        return str(p if p.is_absolute() else base / p)

    state_dir = Path(path("state_dir", "state"))
    if "command_keys" in d:
        raise ConfigError("command_keys: shared command keys are gone; provision this handheld's own [key]")
    try:
        ring = keys.from_config(d.get("key"), "key")
    except ProtocolError as e:
        raise ConfigError(e.detail + " (commands from the platform cannot be verified without it)") from None
    b = _table(d, "broker", ("host", "port", "username", "password", "keepalive"))
    broker = BrokerConfig(
        host=_str(b, "host", "broker.host", "127.0.0.1", empty=False),
        port=_int(b, "port", "broker.port", 1883, 1, 65535),
        username=_str(b, "username", "broker.username", device, empty=False),
        password=_str(b, "password", "broker.password", ""),
        keepalive=_int(b, "keepalive", "broker.keepalive", 30, 5, 3600),
    )
    g = _table(d, "gateway", ("url", "username", "password"))
    url = _str(g, "url", "gateway.url", "http://127.0.0.1:8080", empty=False)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"gateway.url must start with http:// or https://, got {url!r}")
    # The uploader logs in to the gateway with the handheld's broker account by default.
    gateway = GatewayConfig(url=url.rstrip("/"),
                            username=_str(g, "username", "gateway.username", broker.username),
                            password=_str(g, "password", "gateway.password", broker.password))
    w = _table(d, "web", ("host", "port"))
    s = _table(d, "scan", ("same_window_s", "other_window_s"))
    o = _table(d, "outbox", ("capacity_bytes",))
    gg = _table(d, "gnss_gate", ("hold_s", "max_accuracy_m"))
    family = _str(d, "scan_engine_family", "scan_engine_family", "gm65")
    if family not in FAMILIES:
        raise ConfigError(f"scan_engine_family must be one of {', '.join(FAMILIES)}, got {family!r}")
    cs = d.get("camera_scan", False)
    if not isinstance(cs, bool):
        raise ConfigError(f"camera_scan must be true or false, got {cs!r}")
    rp = d.get("require_position", True)
    if not isinstance(rp, bool):
        raise ConfigError(f"require_position must be true or false, got {rp!r}")
    return HandheldConfig(
        device=device, outlet=outlet, courier=courier, state_dir=state_dir, keyring=ring,
        broker=broker, gateway=gateway, lang=lang, camera=path("camera", ""), camera_scan=cs,
        gnss=_str(d, "gnss", "gnss", ""), gnss_baud=_int(d, "gnss_baud", "gnss_baud", 9600, 1200, 921600),
        scan_engine=_str(d, "scan_engine", "scan_engine", ""), scan_engine_family=family,
        require_position=rp,
        web_host=_str(w, "host", "web.host", "127.0.0.1", empty=False),
        web_port=_int(w, "port", "web.port", 8090, 0, 65535),
        same_window_s=_num(s, "same_window_s", "scan.same_window_s", 3.0, 0.0, 3600.0),
        other_window_s=_num(s, "other_window_s", "scan.other_window_s", 0.3, 0.0, 60.0),
        outbox_capacity=_int(o, "capacity_bytes", "outbox.capacity_bytes", 8_000_000, 64 * 1024, 1 << 40),
        gnss_hold_s=_num(gg, "hold_s", "gnss_gate.hold_s", 5.0, 0.0, 600.0),
        gnss_max_accuracy_m=_num(gg, "max_accuracy_m", "gnss_gate.max_accuracy_m", 10.0, 0.5, 1000.0),
    )


def load_config(path: str | Path) -> HandheldConfig:
    """Read and validate a TOML file; errors name the file and the key."""
    p = Path(path)
    try:
        d = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    try:
        return parse_config(d, p.parent.resolve())
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
