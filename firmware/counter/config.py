# Counter scanner configuration, a JSON file on flash, validated at boot.
#
# {
#   "device": "sc01", "outlet": "o1",
#   "broker": {"host": "192.168.4.1", "port": 1883, "user": "sc01", "password": "..."},
#   "scanner": {"family": "gm65", "uart": "socket://127.0.0.1:7002", "suffix": "cr",
#               "idle_ms": 50, "mode": "continuous"},
#   "key": {"kv": 1, "secret": "<hex: this scanner's own key>"},
#   "state_dir": "/data",
#   "same_symbol_ms": 3000, "different_symbol_ms": 300
# }
#
# The two windows are Zebra DataWedge's: the same symbol is not read again
# within same_symbol_ms (a parcel held under the scanner registers once; the
# window restarts while it stays there); a different symbol is not read
# within different_symbol_ms of the last read (a stray second label on the
# same parcel).

from firmware.devconfig import ConfigError, load_json, need, validate_common, with_defaults

FAMILIES = ("gm65", "honeywell", "ssi", "newland")
SUFFIXES = ("cr", "crlf", "none")
MODES = ("continuous", "triggered")
DEFAULTS = {
    "state_dir": "data",
    "same_symbol_ms": 3000,
    "different_symbol_ms": 300,
    "keepalive": 30,
    "watchdog_ms": 30000,
    "state_every_s": 60,
    "recent": 200,
}
RUNTIME_KEYS = ("same_symbol_ms", "different_symbol_ms")


def validate(cfg):
    """Return the config with defaults filled in, or raise ConfigError."""
    validate_common(cfg)
    sc = need(cfg, "scanner", dict, "config")
    if need(sc, "family", str, "scanner") not in FAMILIES:
        raise ConfigError("scanner.family must be one of %s" % ", ".join(FAMILIES))
    need(sc, "uart", str, "scanner")
    if sc.get("suffix", "cr") not in SUFFIXES:
        raise ConfigError("scanner.suffix must be one of %s" % ", ".join(SUFFIXES))
    if sc.get("mode", "continuous") not in MODES:
        raise ConfigError("scanner.mode must be one of %s" % ", ".join(MODES))
    for k in ("idle_ms", "trigger_ms"):
        if k in sc and (not isinstance(sc[k], int) or isinstance(sc[k], bool) or sc[k] <= 0):
            raise ConfigError("scanner.%s must be a positive integer" % k)
    out = with_defaults(cfg, DEFAULTS)
    for k in ("same_symbol_ms", "different_symbol_ms", "state_every_s", "recent"):
        v = out[k]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError("config.%s must be a non-negative integer" % k)
    return out


def load(path):
    return load_json(path, validate)
