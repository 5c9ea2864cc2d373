"""The gateway's configuration (``postedge gateway --config gateway.toml``),
declared once and checked at load: every command that reads the file
refuses a bad table with a message naming the key, and the services get
the typed sections (``cfg.upstream``, ``cfg.web``, ``cfg.budget``) as they
are. Paths in the file are relative to the file's folder."""

from __future__ import annotations

import binascii
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from common.config import ConfigError, KeyProblem, Problem, Section, parse, unknown_key
from common.text import LANGS
from protocol.topics import valid_segment

__all__ = ["BrokerConfig", "BudgetConfig", "ConfigError", "CounterConfig", "GatewayConfig", "NotifyConfig",
           "UpstreamConfig", "WebConfig", "parse_upstream", "parse_web"]

# The upstream MQTT topic prefix: pe-up/v1/<outlet>/... on the central broker.
DEFAULT_PREFIX = "pe-up/v1"
PLAINTEXT = {"mqtt": "mqtts", "http": "https", "tcp": "mqtts", "ws": "https"}


def _relative_to_file(v: str | None, info: ValidationInfo) -> str | None:
    base = (info.context or {}).get("base")
    if v and base is not None and not Path(v).is_absolute():
        return str(Path(base) / v)
    return v


class UpstreamConfig(Section):
    """``[upstream]``: the TLS link to the central side. Sizes are bytes,
    times seconds."""

    transport: Literal["mqtt", "https", ""] = ""
    url: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str = ""
    password: str = ""
    client_id: str = ""
    topic_prefix: str = DEFAULT_PREFIX
    batch_max_events: Annotated[int, Field(ge=1, le=100_000)] = 1000
    batch_max_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    batch_max_age_s: Annotated[float, Field(ge=0.0, le=3600.0)] = 2.0
    bandwidth_bytes_per_s: Annotated[int, Field(ge=0, le=10**10)] = 0
    backoff_base_s: Annotated[float, Field(ge=0.001, le=3600.0)] = 0.5
    backoff_cap_s: Annotated[float, Field(ge=0.001, le=86400.0)] = 60.0
    # A probe of a dead link costs a SYN; of a live one, a HEAD or CONNECT on
    # a kept connection. Half a second keeps "link back -> first acked batch"
    # under a second.
    probe_interval_s: Annotated[float, Field(ge=0.01, le=3600.0)] = 0.5
    timeout_s: Annotated[float, Field(ge=0.1, le=600.0)] = 10.0
    # Batches on the wire at once, each on its own connection: 2 hides one
    # round trip and the central side's work behind the next upload.
    max_in_flight: Annotated[int, Field(ge=1, le=8)] = 2
    # How often the downlink asks for commands when nothing else prompts it.
    down_interval_s: Annotated[float, Field(ge=0.05, le=86400.0)] = 15.0

    _files = field_validator("ca_file", "cert_file", "key_file")(_relative_to_file)

    @field_validator("url")
    @classmethod
    def _tls_url(cls, url: str) -> str:
        if not url:
            raise ValueError("required (mqtts://host:port or https://host/path)")
        u = urlsplit(url)
        scheme = u.scheme.lower()
        if scheme in PLAINTEXT:
            raise ValueError(f"{scheme}:// is plaintext and refused; the uplink is TLS only "
                             f"(use {PLAINTEXT[scheme]}://)")
        if scheme not in ("mqtts", "https"):
            raise ValueError(f"scheme must be mqtts or https, got {url!r}")
        try:
            host = u.hostname
            u.port  # noqa: B018 - raises on a bad port
        except ValueError as e:
            raise ValueError(str(e)) from None
        if not host:
            raise ValueError(f"no host in {url!r}")
        if u.username or u.password:
            raise ValueError("put credentials in upstream.username/password, not the URL")
        return url

    @field_validator("topic_prefix")
    @classmethod
    def _plain_prefix(cls, prefix: str) -> str:
        if not prefix or any(c in prefix for c in "+#") or prefix.startswith("/"):
            raise ValueError(f"not a plain topic prefix: {prefix!r}")
        return prefix

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamConfig:
        implied = "mqtt" if urlsplit(self.url).scheme.lower() == "mqtts" else "https"
        if self.transport and self.transport != implied:
            raise KeyProblem("transport", Problem("transport_url", transport=self.transport,
                                                  scheme=urlsplit(self.url).scheme))
        object.__setattr__(self, "transport", implied)
        for k in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, k)
            if path and not Path(path).is_file():
                raise KeyProblem(k, Problem("no_file", path=path))
        if self.key_file and not self.cert_file:
            raise KeyProblem("key_file", Problem("given_without", other="upstream.cert_file"))
        if self.password and not self.username:
            raise KeyProblem("password", Problem("given_without", other="upstream.username"))
        if self.backoff_cap_s < self.backoff_base_s:
            raise KeyProblem("backoff_cap_s", Problem("not_below", other="upstream.backoff_base_s"))
        return self


class WebConfig(Section):
    """``[web]``: the clerk's page, /metrics, photo uploads and the command
    API. ``port = 0`` takes any free port (tests); the port actually bound is
    logged as ``web_started``."""

    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    lang: Literal[LANGS] = "zh"  # type: ignore[valid-type]
    refresh_s: Annotated[int, Field(ge=1, le=3600)] = 5
    # Mosquitto's password file (and ACL, default: ``acl`` beside it): photo
    # uploads log in with the handheld's broker account. Unset: uploads 503.
    passwd_file: Annotated[str, Field(min_length=1)] | None = None
    acl_file: Annotated[str, Field(min_length=1)] | None = None
    # Protection against clients that hold connections or send slowly. A
    # handful of handhelds and one clerk's browser need a few connections;
    # 256 still leaves the gateway process three quarters of its 1024 file
    # descriptors for the broker connection, SQLite and the upstream link,
    # and rides out a burst of 150 bad requests without dropping a good one.
    max_connections: Annotated[int, Field(ge=4, le=10_000)] = 256
    # Keep-alive, and a request head that never completes.
    idle_timeout_s: Annotated[float, Field(ge=0.5, le=3600.0)] = 15.0
    # One request, body included (a 1 MiB chunk on weak Wi-Fi).
    request_timeout_s: Annotated[float, Field(ge=1.0, le=3600.0)] = 60.0

    # HTTPS: the server certificate ``provision`` issues from the
    # outlet CA, and its key. Unset: plain HTTP.
    cert_file: Annotated[str, Field(min_length=1)] | None = None
    key_file: Annotated[str, Field(min_length=1)] | None = None

    _files = field_validator("passwd_file", "acl_file", "cert_file", "key_file")(_relative_to_file)

    @field_validator("host")
    @classmethod
    def _strip(cls, host: str) -> str:
        if not host.strip():
            raise ValueError(f"must be a non-empty string, got {host!r}")
        return host.strip()

    @model_validator(mode="after")
    def _acl_needs_passwd(self) -> WebConfig:
        if self.acl_file and not self.passwd_file:
            raise KeyProblem("acl_file", Problem("given_without", other="web.passwd_file"))
        if bool(self.cert_file) != bool(self.key_file):
            raise KeyProblem("cert_file" if not self.cert_file else "key_file",
                             "web.cert_file and web.key_file go together")
        for k in ("cert_file", "key_file"):
            path = getattr(self, k)
            if path and not Path(path).is_file():
                raise KeyProblem(k, Problem("no_file", path=path))
        return self


MIB = 1024**2
FILE_KEYS = ("interval_s", "max_mb", "photos_mb", "reserve_mb")


class BudgetConfig(Section):
    """``[budget]``, in MiB in the file (``max_mb``, ``reserve_mb``,
    ``photos_mb``) and in bytes here; ``interval_s`` between checks."""

    model_config = Section.model_config | {"frozen": False}

    max_bytes: Annotated[int, Field(ge=0)] = 2048 * MIB
    reserve_bytes: Annotated[int, Field(ge=0)] = 512 * MIB
    interval_s: Annotated[float, Field(ge=0.0)] = 10.0
    photos_bytes: Annotated[int, Field(ge=0)] = 512 * MIB

    @model_validator(mode="before")
    @classmethod
    def _from_mib(cls, d: Any) -> Any:
        """The file's MiB keys to bytes; Python callers may pass bytes."""
        if not isinstance(d, dict) or set(d) <= set(cls.model_fields):
            return d
        out: dict[str, Any] = {}
        for k, v in d.items():
            if k not in FILE_KEYS:
                raise KeyProblem(str(k), unknown_key(str(k), FILE_KEYS))
            if k.endswith("_mb"):
                if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                    raise KeyProblem(k, f"must be a non-negative number, got {v!r}")
                out[k[:-3] + "_bytes"] = int(v * MIB)
            else:
                out[k] = v
        return out


class BrokerConfig(Section):
    """``[broker]``: the outlet's Mosquitto, as the gateway logs in to it."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str = ""
    password: str = ""
    client_id: str = ""
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    # TLS to the broker: the outlet CA's certificate (relative to
    # gateway.toml). Unset: plain MQTT, which an outlet's Mosquitto offers
    # on 127.0.0.1 only, for a gateway on the same box.
    # The broker's certificate must name ``host``.
    ca_file: Annotated[str, Field(min_length=1)] | None = None
    # The broker's ACL (relative to gateway.toml): every login that can
    # publish at the outlet. While a flooding device is held
    # (gateway/ingest/quarantine.py) the gateway subscribes to each of them;
    # without it, only to the devices it has heard from.
    acl_file: Annotated[str, Field(min_length=1)] | None = None

    _files = field_validator("ca_file", "acl_file")(_relative_to_file)

    @model_validator(mode="after")
    def _ca_exists(self) -> BrokerConfig:
        if self.ca_file and not Path(self.ca_file).is_file():
            raise KeyProblem("ca_file", Problem("no_file", path=self.ca_file))
        return self

class CounterConfig(Section):
    """``[counter]``: counter acceptance (``gateway/counter/``): the
    counter's devices and the platform's public keys. Without the table the
    gateway runs no counter and ``/v1/counter/...`` answers 503::

        [counter]
        platform_keys = { p1 = "<64 hex: the platform's Ed25519 public key>" }
        scale_url = "/dev/ttyUSB0"          # or socket://host:port; unset: no scale
        scale_format = "eq-reversed"        # mt-sics | eq-reversed | st-gs (never guessed)
        label_url = "/dev/usb/lp0"          # or socket://192.168.1.50:9100, file:/path
        label_language = "tspl"             # tspl | zpl
        receipt_url = "/dev/ttyUSB1"        # ESC/POS; unset: no receipts

    ``docs_dir`` (default ``counter`` beside the database) holds the
    installed catalogue and tariff."""
    platform_keys: Annotated[dict[str, str], Field(min_length=1)]
    docs_dir: Annotated[str, Field(min_length=1)] | None = None
    counter_id: Annotated[str, Field(min_length=1, max_length=32)] = "counter"
    # Mosquitto account kinds that may use the API until the clerk's login exists
    login_kinds: Annotated[list[Literal["gateway", "scanner", "handheld"]], Field(min_length=1)] = ["gateway"]

    scale_url: Annotated[str, Field(min_length=1)] | None = None
    scale_format: Literal["mt-sics", "eq-reversed", "st-gs"] = "st-gs"
    scale_unit: Literal["kg", "g"] = "kg"  # what eq-reversed frames mean (they carry no unit)
    scale_baud: Annotated[int, Field(ge=1200, le=115200)] = 9600
    stable_window_s: Annotated[float, Field(ge=0.1, le=10.0)] = 1.0
    stable_tolerance_g: Annotated[int, Field(ge=0, le=100)] = 0
    scale_timeout_s: Annotated[float, Field(ge=0.5, le=30.0)] = 5.0

    label_url: Annotated[str, Field(min_length=1)] | None = None
    label_language: Literal["zpl", "tspl"] = "tspl"
    label_baud: Annotated[int, Field(ge=1200, le=115200)] = 9600
    receipt_url: Annotated[str, Field(min_length=1)] | None = None
    receipt_baud: Annotated[int, Field(ge=1200, le=115200)] = 9600

    @field_validator("platform_keys")
    @classmethod
    def _keys(cls, keys: dict[str, str]) -> dict[str, str]:
        for kid, h in keys.items():
            if not valid_segment(kid):
                raise ValueError(f"key id {kid!r} must be 1-32 of a-z 0-9 _ -")
            try:
                raw = binascii.unhexlify(h)
            except (ValueError, binascii.Error):
                raw = b""
            if len(raw) != 32:
                raise ValueError(f"key {kid!r} must be 64 hex digits (an Ed25519 public key)")
        return keys

    @field_validator("counter_id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not valid_segment(v):
            raise ValueError("must be 1-32 of a-z 0-9 _ -")
        return v


class NotifyConfig(Section):
    """``[notify]``: the SMS notifier (``gateway/notify/``). Off unless
    ``modem`` names the modem's serial port; then ``key_file`` must hold the
    outlet notifier key(s) the platform issued (TOML: ``[keys]`` with
    ``"<kv>" = "<hex>"``). Times are seconds unless named hours."""

    modem: Annotated[str, Field(min_length=1)] | None = None  # /dev/ttyUSB2, or any pyserial URL
    baud: Annotated[int, Field(ge=1200, le=4_000_000)] = 115200
    key_file: Annotated[str, Field(min_length=1)] | None = None
    # The outlet as a villager knows it, in each language (default: the outlet id).
    name_zh: str = ""
    name_en: str = ""
    # How long a deposit stays unacknowledged by the platform before this
    # outlet texts the villager itself: long enough that a short backhaul
    # hiccup costs nothing (the platform's text is free and carries its
    # branding), short enough that a villager is not kept waiting for hours.
    delay_s: Annotated[float, Field(ge=0.0, le=7 * 86400.0)] = 900.0
    # A reminder this many hours before a parcel expires (once); 0: none.
    remind_hours: Annotated[float, Field(ge=0.0, le=24 * 30.0)] = 24.0
    tz_offset_h: Annotated[float, Field(ge=-12.0, le=14.0)] = 8.0  # dates in texts: China Standard Time
    interval_s: Annotated[float, Field(ge=0.05, le=60.0)] = 1.0
    retries: Annotated[int, Field(ge=1, le=100)] = 6
    backoff_base_s: Annotated[float, Field(ge=0.01, le=3600.0)] = 5.0
    backoff_cap_s: Annotated[float, Field(ge=0.01, le=86400.0)] = 600.0
    timeout_s: Annotated[float, Field(ge=0.05, le=120.0)] = 5.0
    # A send waits for the network: TS 27.005 allows a modem minutes.
    send_timeout_s: Annotated[float, Field(ge=0.1, le=600.0)] = 60.0

    _files = field_validator("key_file")(_relative_to_file)

    @property
    def enabled(self) -> bool:
        return self.modem is not None

    @model_validator(mode="after")
    def _keys_with_modem(self) -> NotifyConfig:
        if self.modem and not self.key_file:
            raise KeyProblem("key_file", Problem("modem_needs_key"))
        if self.key_file and not Path(self.key_file).is_file():
            raise KeyProblem("key_file", Problem("no_file", path=self.key_file))
        if self.backoff_cap_s < self.backoff_base_s:
            raise KeyProblem("backoff_cap_s", Problem("not_below", other="notify.backoff_base_s"))
        return self


class QuarantineConfig(Section):
    """``[quarantine]``: when a device that floods refused messages stops
    being routed to the gateway (gateway/ingest/quarantine.py explains the
    rule and why it counts refusals, not rates)."""

    min_refused: Annotated[int, Field(ge=1)] = 200
    window_s: Annotated[float, Field(gt=0.0, le=60.0)] = 1.0
    first_s: Annotated[float, Field(gt=0.0)] = 30.0
    max_s: Annotated[float, Field(gt=0.0)] = 900.0
    forgive_s: Annotated[float, Field(ge=0.0)] = 3600.0

    @model_validator(mode="after")
    def _order(self) -> QuarantineConfig:
        if self.max_s < self.first_s:
            raise KeyProblem("max_s", Problem("not_below", other="quarantine.first_s"))
        return self


class GatewayConfig(Section):
    outlet: Annotated[str, Field(min_length=1)]
    db: Path
    broker: BrokerConfig = BrokerConfig()
    # Group commit: keep reading for up to this long (or this many messages)
    # before one transaction commits them all.
    group_window_s: Annotated[float, Field(gt=0.0, le=10.0)] = 0.02
    group_max: Annotated[int, Field(ge=1, le=100_000)] = 2000
    upstream: UpstreamConfig | None = None
    web: WebConfig | None = None
    budget: BudgetConfig = BudgetConfig()
    counter: CounterConfig | None = None  # counter acceptance (gateway/counter/config.py)
    notify: NotifyConfig = NotifyConfig()
    quarantine: QuarantineConfig = QuarantineConfig()

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None) -> GatewayConfig:
        for k in ("outlet", "db"):
            if k not in d:
                raise ConfigError.at(k, Problem("required"))
        known = set(cls.model_fields)
        unknown = sorted(k for k in d if k not in known)
        if unknown:
            raise ConfigError.at(unknown[0], unknown_key(unknown[0], known))
        db = Path(str(d["db"]))
        if base is not None and not db.is_absolute():
            db = base / db
        broker = parse(BrokerConfig, d.get("broker", {}), "broker", base=base)
        if not broker.client_id:
            broker = broker.model_copy(update={"client_id": f"gw-{d['outlet']}"})
        return parse(cls, {
            "outlet": str(d["outlet"]), "db": db, "broker": broker,
            "group_window_s": d.get("group_window_s", 0.02),
            "group_max": d.get("group_max", 2000),
            "upstream": None if d.get("upstream") is None else parse_upstream(d["upstream"], base),
            "web": None if d.get("web") is None else parse_web(d["web"], base),
            "budget": parse(BudgetConfig, d.get("budget") or {}, "budget"),
            "counter": None if d.get("counter") is None else parse(CounterConfig, d["counter"], "counter"),
            "notify": parse(NotifyConfig, d.get("notify") or {}, "notify", base=base),
            "quarantine": parse(QuarantineConfig, d.get("quarantine") or {}, "quarantine"),
        }, "gateway")

    @classmethod
    def load(cls, path: Path) -> GatewayConfig:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(problem=Problem("cannot_read", path=path, why=e)) from e
        try:
            return cls.from_dict(data, base=Path(path).parent)
        except ConfigError as e:
            raise e.within(path) from None  # the file's name on every config error


def parse_upstream(d: Any, base: Path | None = None) -> UpstreamConfig:
    """``[upstream]`` from its TOML table; certificate paths relative to ``base``."""
    return parse(UpstreamConfig, d, "upstream", base=base)


def parse_web(d: Any, base: Path | None = None) -> WebConfig:
    """``[web]`` from its TOML table; password and ACL files relative to ``base``."""
    return parse(WebConfig, d, "web", base=base)
