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
    geolocation = false        # also take the browser's navigator.geolocation fixes (same gate)

    [key]                      # this handheld's OWN key (protocol/keys.py), written by provisioning:
    kv = 1                     # it verifies platform commands to this handheld (jobs, manifest) and
    secret = "00112233..."     # no locker accepts it; a locker's doors open only for permits
    # [key.prev] kv = ..., secret = ..., until = <Unix s>: the previous version, in its grace period

    [broker]
    host = "192.168.1.2"       # a name the broker's certificate carries (provision: broker_host)
    port = 8883                # MQTT over TLS; the outlet's plaintext port is loopback only
    username = "hh01"
    password = "..."
    keepalive = 30
    ca_file = "outlet-ca.pem"  # the outlet CA (provision writes it): TLS, verified; or
    # ca = "-----BEGIN CERTIFICATE-----..." the same PEM inline. Neither: plain MQTT (rigs)

    [gateway]
    url = "https://192.168.1.2:8080"  # command status and photo upload
    username = "hh01"                 # for the photo uploader; default: the broker account
    password = "..."
    # ca_file: the CA the gateway's HTTPS certificate chains to; default: the broker's.
    # With a CA the url must be https:// (the login is the broker password).

    [web]
    host = "127.0.0.1"         # the handheld's own browser
    port = 8090

    [scan]
    same_window_s = 3.0        # the same symbol again within this: duplicate
    other_window_s = 0.3       # a different symbol this soon after a read: ignored

    [wedge]                    # a scan engine in keyboard emulation, typing into the page
    prefix = ""                # what the engine is set to send before / after each code
    suffix = ""                # (vendors' "prefix/suffix" settings; stripped, and required when set)
    max_key_gap_ms = 50        # a burst whose keys (and the Enter/Tab) come this fast on average is a scan
    burst_break_ms = 200       # a pause longer than this starts a new burst
    min_length = 4             # shorter bursts are typing

    [outbox]
    capacity_bytes = 8000000

    [gnss_gate]
    hold_s = 5.0
    max_accuracy_m = 10.0
"""

from __future__ import annotations

import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from common import config
from common.config import ConfigError, KeyProblem, Problem, Section
from common.text import LANGS
from handheld import tls
from handheld.text import TEXT
from protocol import keys
from protocol.errors import ProtocolError
from protocol.keys import Keyring
from protocol.topics import valid_segment

__all__ = ["ConfigError", "HandheldConfig", "load_config", "parse_config"]

FAMILIES = ("gm65", "honeywell", "ssi", "newland")


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    keepalive: int = 30
    ca_pem: str = ""  # the outlet CA: MQTT over TLS, verified (handheld/tls.py)


@dataclass(frozen=True)
class GatewayConfig:
    url: str = "http://127.0.0.1:8080"
    username: str = ""
    password: str = ""
    ca_pem: str = ""  # the CA the gateway's HTTPS certificate chains to


@dataclass(frozen=True)
class HandheldConfig:
    """What the app runs with: the file's sections, checked, with defaults
    that depend on other keys (the broker account is the device's, the
    uploader logs in with it) filled in and paths made absolute."""

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
    wedge: WedgeSection = field(default_factory=lambda: WedgeSection())
    geolocation: bool = False   # the page posts navigator.geolocation fixes (handheld/position.py gate)


# The file's shape, declared (common/config.py); errors name the key.

NonEmpty = Annotated[str, Field(min_length=1)]


def _segment(v: str) -> str:
    if not valid_segment(v):
        raise ValueError(f"must be 1-32 of a-z 0-9 _ - (it goes into MQTT topics), got {v!r}")
    return v


def _pem(v: str) -> str:
    """A CA certificate in PEM, checked now rather than at the first connect."""
    if v and "-----BEGIN CERTIFICATE-----" not in v:
        raise ValueError("must be a PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        tls.context(v)
    except ssl.SSLError as e:
        raise ValueError(f"not a usable PEM certificate: {e.reason or e}") from None
    return v


class BrokerSection(Section):
    host: NonEmpty = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: NonEmpty | None = None  # default: the device id
    password: str = ""
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    ca: str = ""
    ca_file: str = ""

    _ca = field_validator("ca")(_pem)


class GatewaySection(Section):
    url: NonEmpty = "http://127.0.0.1:8080"
    username: str | None = None  # default: the broker account
    password: str | None = None
    ca_file: str = ""

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {url!r}")
        return url.rstrip("/")


class WebSection(Section):
    host: NonEmpty = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8090


class ScanSection(Section):
    same_window_s: Annotated[float, Field(ge=0.0, le=3600.0)] = 3.0
    other_window_s: Annotated[float, Field(ge=0.0, le=60.0)] = 0.3


def _affix(v: str) -> str:
    """A wedge prefix/suffix: printable characters a scan engine can type, no Enter/Tab
    (those end the burst), at most 8 (vendors allow 10-20; a longer one is a mistake)."""
    if len(v) > 8 or any(not c.isprintable() or c in "\t\r\n" for c in v):
        raise ValueError(" / ".join(reversed(list(TEXT.both("config.wedge_affix", got=repr(v)).values()))))
    return v


class WedgeSection(Section):
    """Keyboard-emulation scanning (handheld/wedge.py says why these numbers)."""

    prefix: str = ""
    suffix: str = ""
    max_key_gap_ms: Annotated[int, Field(ge=5, le=200)] = 50
    burst_break_ms: Annotated[int, Field(ge=20, le=1000)] = 200
    min_length: Annotated[int, Field(ge=2, le=64)] = 4

    _affixes = field_validator("prefix", "suffix")(_affix)

    @model_validator(mode="after")
    def _break_after_gap(self) -> WedgeSection:
        if self.burst_break_ms < self.max_key_gap_ms:
            raise KeyProblem("burst_break_ms", " / ".join(reversed(list(TEXT.both(
                "config.wedge_break", gap=self.max_key_gap_ms, got=self.burst_break_ms).values()))))
        return self


class OutboxSection(Section):
    capacity_bytes: Annotated[int, Field(ge=64 * 1024, le=1 << 40)] = 8_000_000


class GnssGateSection(Section):
    hold_s: Annotated[float, Field(ge=0.0, le=600.0)] = 5.0
    max_accuracy_m: Annotated[float, Field(ge=0.5, le=1000.0)] = 10.0


class HandheldFile(Section):
    device: str
    outlet: str
    courier: NonEmpty | None = None  # default: the device id
    lang: Literal[LANGS] = "zh"  # type: ignore[valid-type]
    state_dir: str = "state"
    camera: str = ""
    camera_scan: bool = False
    gnss: str = ""
    gnss_baud: Annotated[int, Field(ge=1200, le=921600)] = 9600
    scan_engine: str = ""
    scan_engine_family: Literal[FAMILIES] = "gm65"  # type: ignore[valid-type]
    require_position: bool = True
    key: dict[str, Any]
    broker: BrokerSection = BrokerSection()
    gateway: GatewaySection = GatewaySection()
    web: WebSection = WebSection()
    scan: ScanSection = ScanSection()
    outbox: OutboxSection = OutboxSection()
    gnss_gate: GnssGateSection = GnssGateSection()
    wedge: WedgeSection = WedgeSection()
    geolocation: bool = False

    _segments = field_validator("device", "outlet")(_segment)

    @field_validator("key")
    @classmethod
    def _keyring(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            keys.from_config(v, "key")
        except ProtocolError as e:
            why = "commands from the platform cannot be verified without it"
            raise ValueError(f"{e.detail} ({why})") from None
        return v


def parse_config(d: dict[str, Any], base: Path | None = None) -> HandheldConfig:
    """Validate a parsed TOML document; relative paths resolve against ``base``."""
    if isinstance(d, dict) and "command_keys" in d:
        raise ConfigError("command_keys: shared command keys are gone; provision this handheld's own [key]")
    f = config.parse(HandheldFile, d, "")
    base = base or Path.cwd()

    def path(v: str) -> str:
        if not v or "://" in v or v.isdigit():
            return v
        p = Path(v)
        return str(p if p.is_absolute() else base / p)

    b, g = f.broker, f.gateway
    if b.ca and b.ca_file:
        raise ConfigError("broker.ca and broker.ca_file: give the outlet CA once")
    broker_ca = b.ca or (_read_ca(path(b.ca_file), "broker.ca_file") if b.ca_file else "")
    gateway_ca = _read_ca(path(g.ca_file), "gateway.ca_file") if g.ca_file else broker_ca
    if gateway_ca and not g.url.startswith("https://"):
        raise ConfigError(f"gateway.url: must be https:// when the outlet CA is given (the login would "
                          f"travel in clear), got {g.url!r}")
    broker = BrokerConfig(host=b.host.strip(), port=b.port, username=b.username or f.device,
                          password=b.password, keepalive=b.keepalive, ca_pem=broker_ca)
    # The uploader logs in to the gateway with the handheld's broker account by default.
    gateway = GatewayConfig(url=g.url, username=broker.username if g.username is None else g.username,
                            password=broker.password if g.password is None else g.password, ca_pem=gateway_ca)
    return HandheldConfig(
        device=f.device, outlet=f.outlet, courier=(f.courier or f.device).strip(),
        state_dir=Path(path(f.state_dir)), keyring=keys.from_config(f.key, "key"),
        broker=broker, gateway=gateway, lang=f.lang, camera=path(f.camera), camera_scan=f.camera_scan,
        gnss=f.gnss.strip(), gnss_baud=f.gnss_baud, scan_engine=f.scan_engine.strip(),
        scan_engine_family=f.scan_engine_family, require_position=f.require_position,
        web_host=f.web.host.strip(), web_port=f.web.port,
        same_window_s=f.scan.same_window_s, other_window_s=f.scan.other_window_s,
        outbox_capacity=f.outbox.capacity_bytes,
        gnss_hold_s=f.gnss_gate.hold_s, gnss_max_accuracy_m=f.gnss_gate.max_accuracy_m,
        wedge=f.wedge, geolocation=f.geolocation,
    )


def _read_ca(p: str, key: str) -> str:
    try:
        text = Path(p).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError.at(key, Problem("cannot_read", path=p, why=e)) from None
    try:
        return _pem(text)
    except ValueError as e:
        raise ConfigError(f"{key}: {p}: {e}") from None


def load_config(path: str | Path) -> HandheldConfig:
    """Read and validate a TOML file; errors name the file and the key."""
    p = Path(path)
    try:
        d = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(problem=Problem("cannot_read", path=p, why=e.strerror or e)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError.at(str(p), Problem("not_toml", why=e)) from None
    try:
        return parse_config(d, p.parent.resolve())
    except ConfigError as e:
        raise e.within(p) from None
