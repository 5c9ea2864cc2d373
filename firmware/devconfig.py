# What every device's JSON config shares, checked the same way for all: who
# it is, where its broker is, and its own key (protocol/keys.py: derived by
# the platform for this device alone) that its signed commands verify with.
# A bad config must stop the boot with a message that names the field.
#
# broker.ca: the outlet CA's certificate as PEM, as `provision`
# writes it; with it the device connects over TLS (broker.port is then the
# TLS port, 8883) and verifies the broker's certificate against that CA and
# the name broker.server_hostname (default broker.host). Without it the
# device speaks plain MQTT (tests, the simulator's plain outlets).

import json

from protocol import keys as K
from protocol.errors import ProtocolError
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
    if "ca" in b:
        from firmware.mqtt.tls import TLSConfigError, pem_to_der  # only TLS devices load ssl

        try:
            pem_to_der(need(b, "ca", str, "broker"))
        except TLSConfigError as e:
            raise ConfigError("broker.ca: %s" % e)
    if "server_hostname" in b and not need(b, "server_hostname", str, "broker"):
        raise ConfigError("broker.server_hostname is empty")
    if "keys" in cfg:
        raise ConfigError("config.keys: shared command keys are gone; provision this device's own key")
    keyring(cfg)
    # Trusted time (firmware/device.py): "gateway" unless a rig has none.
    if cfg.get("time_source", "gateway") not in ("gateway", "local"):
        raise ConfigError("config.time_source must be gateway or local")
    for key in ("time_skew_s", "time_wait_s"):
        if key in cfg:
            v = cfg[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if key == "time_skew_s" else 0):
                raise ConfigError("config.%s must be a %s integer"
                                  % (key, "positive" if key == "time_skew_s" else "non-negative"))


def keyring(cfg):
    """The device's own key (config "key": {"kv", "secret", "prev"?}) as a
    protocol.keys.Keyring; ConfigError naming the field."""
    try:
        return K.from_config(need(cfg, "key", dict, "config"), "key")
    except ProtocolError as e:
        raise ConfigError(e.detail)


def broker_tls(b):
    """(SSLContext or None, server_hostname) for a validated broker section."""
    if "ca" not in b:
        return None, None
    from firmware.mqtt.tls import TLSConfigError, client_context

    try:
        return client_context(b["ca"]), b.get("server_hostname") or b["host"]
    except TLSConfigError as e:
        raise ConfigError("broker.ca: %s" % e)


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
