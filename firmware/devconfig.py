# What every device's JSON config shares, checked the same way for all: who
# it is, where its broker is, and the keys its signed commands verify with.
# A bad config must stop the boot with a message that names the field.

import binascii
import json

from protocol.topics import valid_segment


class ConfigError(ValueError):
    pass


def need(d, key, kind, where):
    if key not in d:
        raise ConfigError("%s: missing %r" % (where, key))
    v = d[key]
    if kind is int and (not isinstance(v, int) or isinstance(v, bool)):
        raise ConfigError("%s.%s must be an integer" % (where, key))
    if kind is str and not isinstance(v, str):
        raise ConfigError("%s.%s must be a string" % (where, key))
    if kind is dict and not isinstance(v, dict):
        raise ConfigError("%s.%s must be an object" % (where, key))
    if kind is list and not isinstance(v, list):
        raise ConfigError("%s.%s must be a list" % (where, key))
    return v


def validate_common(cfg):
    """Check device, outlet, broker and keys; raise ConfigError naming the field."""
    if not isinstance(cfg, dict):
        raise ConfigError("config must be a JSON object")
    for key in ("device", "outlet"):
        if not valid_segment(need(cfg, key, str, "config")):
            raise ConfigError("config.%s must be 1-32 of a-z 0-9 _ -" % key)
    b = need(cfg, "broker", dict, "config")
    need(b, "host", str, "broker")
    port = need(b, "port", int, "broker")
    if not 0 < port < 65536:
        raise ConfigError("broker.port out of range")
    need(b, "user", str, "broker")
    need(b, "password", str, "broker")
    keys = need(cfg, "keys", dict, "config")
    if not keys:
        raise ConfigError("config.keys is empty: signed commands could never verify")
    for kid in keys:
        try:
            k = binascii.unhexlify(keys[kid])
        except Exception:
            raise ConfigError("keys.%s must be hex" % kid)
        if len(k) < 16:
            raise ConfigError("keys.%s is shorter than 16 bytes" % kid)
    # Trusted time (firmware/device.py): "gateway" unless a rig has none.
    if cfg.get("time_source", "gateway") not in ("gateway", "local"):
        raise ConfigError("config.time_source must be gateway or local")
    for key in ("time_skew_s", "time_wait_s"):
        if key in cfg:
            v = cfg[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if key == "time_skew_s" else 0):
                raise ConfigError("config.%s must be a %s integer"
                                  % (key, "positive" if key == "time_skew_s" else "non-negative"))


def load_json(path, validate):
    """Read a JSON config from flash and validate it; ConfigError if either fails."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e))
    try:
        cfg = json.loads(text)
    except Exception:
        raise ConfigError("%s is not valid JSON" % path)
    return validate(cfg)


def with_defaults(cfg, defaults):
    """A copy of cfg with every default it leaves out filled in."""
    out = {}
    for k in defaults:
        out[k] = defaults[k]
    for k in cfg:
        out[k] = cfg[k]
    return out


def log(evt, **kw):
    """One JSON line per notable step on stdout (the board's USB serial; the
    unix port's pipe, which tests and the simulator read)."""
    kw["evt"] = evt
    try:
        print(json.dumps(kw))
    except Exception:
        print('{"evt":"log_failed"}')
