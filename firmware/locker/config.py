# Locker configuration, a JSON file on flash, validated at boot.
#
# A bad config must stop the boot with a message that names the field, not a
# KeyError twenty minutes later when the first courier arrives.
#
# {
#   "device": "lk01", "outlet": "o-0451",
#   "broker": {"host": "192.168.4.1", "port": 1883, "user": "lk01", "password": "..."},
#   "board": {"driver": "8a", "uart": "rs485", "baud": 9600},
#   "compartments": [{"id": 1, "size": "M", "board": 1, "lock": 1}, ...],
#   "key": {"kv": 2, "secret": "<hex: this locker's own key, version 2>",
#           "prev": {"kv": 1, "secret": "<hex>", "until": 1795881400}},
#   "state_dir": "/data",
#   "door_open_alarm_s": 120, "pickup_days": 7, "lockout_budget": 5,
#   "lockout_base_s": 30, "lockout_max_s": 3600, "lockout_forgive_s": 3600,
#   "panel": "socket://127.0.0.1:7001",
#   "time_source": "gateway", "time_skew_s": 60, "time_wait_s": 10,
#   "notify": {"kv": 1, "key": "<hex: this locker's key for sealing codes to the notifier>"}
#
# lockout_*: wrong pickup codes per source (keypad, QR scan) before a
# lockout, its first delay (doubling per further wrong code, up to max),
# and how long until one wrong code is forgiven (firmware/locker/codes.py).
# }
#
# notify: optional. The key this locker seals the codes it issues offline
# with for the outlet's notifier (protocol/seal.py locker_notify_key: derived
# by the platform from the outlet's notifier key, one per locker). Without it
# codes are sealed for the platform only, and the recipient hears of an
# offline deposit when the backhaul is back.
#
# time_*: trusted time from the gateway (firmware/devconfig.py, docs/protocol.md
# "Trusted time"); "local" trusts the device's own clock (rigs with no gateway).

import binascii

from firmware.devconfig import ConfigError, load_json, validate_common, with_defaults
from firmware.devconfig import need as _need
from protocol.keys import MIN_SECRET, valid_version

SIZES = ("S", "M", "L", "XL")
DRIVERS = ("8a", "kerong")
DEFAULTS = {
    "state_dir": "data",
    "door_open_alarm_s": 120,
    "pickup_days": 7,
    "lockout_budget": 5,
    "lockout_base_s": 30,
    "lockout_max_s": 3600,
    "lockout_forgive_s": 3600,
    "poll_ms": 500,
    "keepalive": 30,
    "watchdog_ms": 30000,
    "panel": None,
}


def validate(cfg):
    """Return the config with defaults filled in, or raise ConfigError."""
    validate_common(cfg)
    bd = _need(cfg, "board", dict, "config")
    if _need(bd, "driver", str, "board") not in DRIVERS:
        raise ConfigError("board.driver must be one of %s" % ", ".join(DRIVERS))
    _need(bd, "uart", str, "board")
    comps = _need(cfg, "compartments", list, "config")
    if not comps:
        raise ConfigError("config.compartments is empty")
    seen = {}
    places = {}
    for i in range(len(comps)):
        c = comps[i]
        where = "compartments[%d]" % i
        if not isinstance(c, dict):
            raise ConfigError(where + " must be an object")
        cid = _need(c, "id", int, where)
        if cid in seen:
            raise ConfigError("%s: compartment id %d appears twice" % (where, cid))
        seen[cid] = 1
        if _need(c, "size", str, where) not in SIZES:
            raise ConfigError("%s.size must be one of %s" % (where, " ".join(SIZES)))
        place = (_need(c, "board", int, where), _need(c, "lock", int, where))
        if place in places:
            raise ConfigError("%s: board %d lock %d is already compartment %d"
                              % (where, place[0], place[1], places[place]))
        places[place] = cid
    notify_key(cfg)
    out = with_defaults(cfg, DEFAULTS)
    for k in ("door_open_alarm_s", "pickup_days", "lockout_budget", "lockout_base_s", "lockout_max_s",
              "lockout_forgive_s"):
        if not isinstance(out[k], int) or out[k] <= 0:
            raise ConfigError("config.%s must be a positive integer" % k)
    return out


def notify_key(cfg):
    """(kv, key bytes) from config "notify", or None; ConfigError naming the field."""
    n = cfg.get("notify")
    if n is None:
        return None
    if not isinstance(n, dict):
        raise ConfigError("config.notify must be an object")
    if not valid_version(n.get("kv")):
        raise ConfigError("notify.kv must be a key version")
    try:
        key = binascii.unhexlify(_need(n, "key", str, "notify"))
    except ValueError:
        raise ConfigError("notify.key must be hex")
    if not MIN_SECRET <= len(key) <= 64:
        raise ConfigError("notify.key must be %d-64 bytes" % MIN_SECRET)
    return (n["kv"], key)


def load(path):
    return load_json(path, validate)
