"""Provision an outlet: the broker's config with per-device credentials
(hashed with mosquitto_passwd) and an ACL confining each device to its own
topics, the gateway's TOML, and each device's credentials file.

Re-running keeps existing passwords (deployed devices keep working) and adds
new devices; delete a device's credentials file to rotate its password.
"""

from __future__ import annotations

import json
import secrets
import tomllib
from pathlib import Path
from typing import Any

from firmware.protocol import topics
from gateway.broker import Account, write_config


class ProvisionError(ValueError):
    pass


def _inventory(path: Path) -> dict[str, Any]:
    try:
        inv = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ProvisionError(f"cannot read {path}: {e}") from e
    outlet = inv.get("outlet")
    if not isinstance(outlet, str) or not topics.valid_segment(outlet):
        raise ProvisionError("inventory: outlet must be 1-32 of a-z 0-9 _ -")
    devices = inv.get("devices")
    if not isinstance(devices, list) or not devices:
        raise ProvisionError("inventory: [[devices]] is empty")
    seen = set()
    for i, d in enumerate(devices):
        dev, kind = d.get("id"), d.get("kind")
        if not isinstance(dev, str) or not topics.valid_segment(dev):
            raise ProvisionError(f"inventory: devices[{i}].id must be 1-32 of a-z 0-9 _ -")
        if kind not in ("locker", "scanner", "handheld"):
            raise ProvisionError(f"inventory: devices[{i}].kind must be locker, scanner or handheld")
        if dev in seen:
            raise ProvisionError(f"inventory: devices[{i}].id {dev!r} appears twice")
        seen.add(dev)
    return inv


def _password(creds: Path) -> str:
    if creds.exists():
        try:
            return str(json.loads(creds.read_text())["broker"]["password"])
        except (ValueError, KeyError):
            pass
    return secrets.token_urlsafe(18)


def provision(inventory: Path, out: Path, listen: str = "0.0.0.0", port: int = 1883) -> dict[str, Any]:
    inv = _inventory(inventory)
    outlet = inv["outlet"]
    gw_user = inv.get("gateway", f"gw-{outlet}")
    host = inv.get("broker_host", "127.0.0.1")
    out.mkdir(parents=True, exist_ok=True)
    (out / "devices").mkdir(exist_ok=True)
    accounts = []
    gw_creds = out / "gateway-credentials.json"
    gw_pw = _password(gw_creds)
    accounts.append(Account(gw_user, gw_pw, outlet, "gateway"))
    for d in inv["devices"]:
        creds = out / "devices" / f"{d['id']}.json"
        pw = _password(creds)
        accounts.append(Account(d["id"], pw, outlet, d["kind"]))
        creds.write_text(json.dumps({"device": d["id"], "outlet": outlet, "kind": d["kind"],
                                     "broker": {"host": host, "port": port, "user": d["id"],
                                                "password": pw}}, indent=1))
        creds.chmod(0o600)
    gw_creds.write_text(json.dumps({"broker": {"user": gw_user, "password": gw_pw}}))
    gw_creds.chmod(0o600)
    conf = write_config(out / "mosquitto", port, accounts, bind=listen, run_as="mosquitto")
    gw_toml = out / "gateway.toml"
    gw_toml.write_text(
        f'outlet = "{outlet}"\ndb = "/var/lib/postedge/gateway.db"\n\n[broker]\nhost = "127.0.0.1"\n'
        f'port = {port}\nusername = "{gw_user}"\npassword = "{gw_pw}"\n\n'
        '[web]\nhost = "0.0.0.0"\nport = 8080\n',
        encoding="utf-8")
    gw_toml.chmod(0o600)
    return {"devices": len(inv["devices"]), "mosquitto_conf": str(conf), "gateway_toml": str(gw_toml)}
