"""Provision an outlet: the broker's config with per-device credentials
(hashed with mosquitto_passwd) and an ACL confining each device to its own
topics, the gateway's TOML, and each device's credentials file.

Keys: the platform, which alone holds the master key, derives each device's
own command key (``protocol/keys.py``) and hands provisioning a key file for
the outlet (JSON: device id -> that device's ``key`` section, ``{"kv",
"secret", "prev"?}``). Each device's credentials file gets its own section
and nothing else; ``gateway.toml`` and the gateway's credentials get none (the
gateway verifies nothing and can sign nothing). A file that holds a master
key, or keys for devices not in the inventory, is refused: a device must
never be able to read another's key from what it was given.

Re-running keeps existing passwords (deployed devices keep working) and adds
new devices; delete a device's credentials file to rotate its password.

The broker config is the hardened outlet one (``gateway/broker.py``
``OutletLimits``: client id = username, so a device cannot take over the
gateway's session; packet size and queue caps; persistence saved every
minute), and ``postedge-mosquitto.service`` next to it runs Mosquitto on it
with restart and descriptor limits (the same text as
``deploy/postedge-mosquitto.service`` when the output is ``/etc/postedge``).
Devices log in as their device id and the gateway as ``gw-<outlet>``;
because the broker keys sessions by login, each login must be used by one
connection at a time (a second one takes the first one's session over).

File access: everything is written 0600 first. Mosquitto 2.0 reads its
password file and ACL *after* dropping to its ``user`` (``mosquitto``), and
the gateway (``deploy/postedge-gateway.service``: ``User=postedge``,
``SupplementaryGroups=mosquitto``) reads the same two files to log in
handhelds for photo uploads and command status. Run as root, ``provision``
therefore hands ``mosquitto/`` to ``mosquitto:mosquitto`` (passwd and acl
0640: owner and group, never world) and ``gateway.toml`` to
``root:postedge`` 0640, for whichever of those accounts exist; what it could
not grant is listed in the result's ``access`` for the operator.

TLS (issue 13): ``provision`` keeps an outlet certificate authority in
``pki/`` (``gateway/pki.py``; the CA key is root's, 0600, and no service
reads it) and issues from it Mosquitto's server certificate
(``mosquitto/tls/``) and the gateway's HTTPS certificate (``web/``), each
naming ``broker_host`` (and ``broker_names`` from the inventory) besides
localhost. Mosquitto listens for TLS 1.2+ on ``tls_port`` (8883) on
``listen``; its plaintext listener is bound to 127.0.0.1, for the gateway
on the same box only. Every device's credentials file carries the CA
certificate (``broker.ca``, PEM) and the TLS port, so a device verifies the
broker and nothing on the LAN speaks plain MQTT. Key files are 0600; as
root each goes to the one account that reads it (Mosquitto's to
``mosquitto``, the HTTPS key to ``postedge``).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import tomllib
from pathlib import Path
from typing import Any

from gateway import pki
from gateway.broker import TLS_PORT, Account, TlsListener, find_mosquitto, systemd_unit, write_config
from gateway.config import ConfigError
from protocol import keys, seal, topics
from protocol.errors import ProtocolError

BROKER_USER = "mosquitto"  # the ``user`` line of the generated mosquitto.conf
SERVICE_GROUP = "postedge"  # Group= of deploy/postedge-gateway.service
SERVICE_USER = "postedge"  # User= of deploy/postedge-gateway.service: reads the HTTPS key


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


def _device_keys(path: Path | None, devices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The platform's key file: one valid key section per inventory device."""
    if path is None:
        return {}
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ProvisionError(f"cannot read the key file {path}: {e}") from e
    if not isinstance(doc, dict):
        raise ProvisionError("key file: must map device id -> key section")
    ids = {d["id"] for d in devices}
    extra = sorted(set(doc) - ids)
    if extra:
        raise ProvisionError(f"key file: keys for devices not in the inventory ({', '.join(extra)}), "
                             "or a master key: the platform must issue this outlet's device keys only")
    for dev in sorted(ids):
        if dev not in doc:
            raise ProvisionError(f"key file: no key for {dev}")
        try:
            keys.from_config(doc[dev], f"{dev}.key")
        except ProtocolError as e:
            raise ProvisionError(f"key file: {e.detail}") from e
    return doc


def _names(inv: dict[str, Any], host: str) -> list[str]:
    extra = inv.get("broker_names", [])
    if not isinstance(extra, list) or not all(isinstance(n, str) and n for n in extra):
        raise ProvisionError("inventory: broker_names must be a list of host names or addresses")
    return [host, *extra, "localhost", "127.0.0.1"]


def _notifier_keys(path: Path | None) -> dict[int, bytes]:
    """The platform's outlet notifier key file (``[keys]`` ``"<kv>" = "<hex>"``)."""
    if path is None:
        return {}
    from gateway.notify.notifier import load_keys

    try:
        return load_keys(path)
    except ConfigError as e:
        raise ProvisionError(str(e)) from e


def provision(inventory: Path, out: Path, listen: str = "0.0.0.0", port: int = 1883,
              tls_port: int = TLS_PORT, key_file: Path | None = None,
              notifier_file: Path | None = None) -> dict[str, Any]:
    """``port``: the plaintext listener, on 127.0.0.1 only (the gateway);
    ``tls_port``: the TLS listener on ``listen`` (devices, handhelds);
    ``key_file``: the platform's per-device keys for this outlet;
    ``notifier_file``: the platform's outlet notifier key(s) for SMS
    (``gateway/notify/``): copied for the gateway's notifier
    (``notify-keys.toml``, 0600), and each locker gets only its own sealing
    key derived from the newest (``notify`` in its credentials,
    ``protocol.seal.locker_notify_key``)."""
    inv = _inventory(inventory)
    device_keys = _device_keys(key_file, inv["devices"])
    notifier = _notifier_keys(notifier_file)
    outlet = inv["outlet"]
    gw_user = inv.get("gateway", f"gw-{outlet}")
    host = inv.get("broker_host", "127.0.0.1")
    names = _names(inv, host)
    out.mkdir(parents=True, exist_ok=True)
    (out / "devices").mkdir(exist_ok=True)
    # The outlet CA and the two server certificates (kept when still good).
    ca, ca_key = pki.ensure_ca(out / "pki", outlet)
    mq = pki.issue_server(ca, ca_key, out / "mosquitto" / "tls" / "server.pem",
                          out / "mosquitto" / "tls" / "server.key", names)
    web = pki.issue_server(ca, ca_key, out / "web" / "server.pem", out / "web" / "server.key", names)
    ca_pem = ca.read_text()
    accounts = []
    gw_creds = out / "gateway-credentials.json"
    gw_pw = _password(gw_creds)
    accounts.append(Account(gw_user, gw_pw, outlet, "gateway"))
    for d in inv["devices"]:
        creds = out / "devices" / f"{d['id']}.json"
        pw = _password(creds)
        accounts.append(Account(d["id"], pw, outlet, d["kind"]))
        # TLS only on the LAN: the TLS port and the CA the device verifies
        # the broker with (firmware/devconfig.py broker.ca).
        doc: dict[str, Any] = {"device": d["id"], "outlet": outlet, "kind": d["kind"],
                               "broker": {"host": host, "port": tls_port, "user": d["id"], "password": pw,
                                          "ca": ca_pem}}
        old_doc = json.loads(creds.read_text()) if creds.exists() else {}
        if d["id"] in device_keys:
            doc["key"] = device_keys[d["id"]]  # its own key, never another device's
        elif old_doc.get("key") is not None:
            doc["key"] = old_doc["key"]  # re-run without a key file: keep the key it has
        if d["kind"] == "locker" and notifier:
            kv = max(notifier)
            doc["notify"] = {"kv": kv, "key": seal.locker_notify_key(notifier[kv], d["id"]).hex()}
        elif d["kind"] == "locker" and old_doc.get("notify") is not None:
            doc["notify"] = old_doc["notify"]
        creds.write_text(json.dumps(doc, indent=1))
        creds.chmod(0o600)
    gw_creds.write_text(json.dumps({"broker": {"user": gw_user, "password": gw_pw}}))
    gw_creds.chmod(0o600)
    # The hardened outlet broker (gateway/broker.py OutletLimits): client id =
    # username, packet size cap, bounded queues, persistence saved every minute.
    # Plaintext on loopback for the gateway, TLS on `listen` for everyone else.
    conf = write_config(out / "mosquitto", port, accounts, bind=listen, run_as="mosquitto",
                        tls=TlsListener(tls_port, ca.resolve(), mq.cert.resolve(), mq.key.resolve(),
                                        bind=listen))
    unit = out / "postedge-mosquitto.service"
    unit.write_text(systemd_unit(conf.resolve(), _mosquitto_path()), encoding="utf-8")
    gw_toml = out / "gateway.toml"
    # passwd_file/acl_file relative to gateway.toml (gateway/config.py resolves
    # them there), so the folder can be copied to /etc/postedge as a whole.
    gw_toml.write_text(
        f'outlet = "{outlet}"\ndb = "/var/lib/postedge/gateway.db"\n\n'
        '# The broker\'s plaintext listener: loopback only, this box only.\n'
        f'[broker]\nhost = "127.0.0.1"\n'
        f'port = {port}\nusername = "{gw_user}"\npassword = "{gw_pw}"\n\n'
        '[web]\nhost = "0.0.0.0"\nport = 8080\n'
        '# HTTPS with a certificate from the outlet CA (pki/ca.pem)\n'
        'cert_file = "web/server.pem"\nkey_file = "web/server.key"\n'
        '# handheld logins for /v1/uploads and /v1/commands: the broker\'s own accounts\n'
        'passwd_file = "mosquitto/passwd"\nacl_file = "mosquitto/acl"\n',
        encoding="utf-8")
    if notifier:
        nk = out / "notify-keys.toml"
        lines = "".join(f'"{kv}" = "{k.hex()}"\n' for kv, k in sorted(notifier.items()))
        nk.write_text(f"# The outlet notifier key(s), from the platform: [notify] key_file\n[keys]\n{lines}",
                      encoding="utf-8")
        nk.chmod(0o600)
    if notifier or (out / "notify-keys.toml").exists():
        with gw_toml.open("a", encoding="utf-8") as f:
            f.write('\n# SMS while the backhaul is down (docs/gateway.md "Notifications"):\n'
                    '# set modem to the modem\'s AT port to turn it on.\n'
                    '[notify]\n# modem = "/dev/ttyUSB2"\nkey_file = "notify-keys.toml"\n')
    access = _grant(conf.parent, gw_toml, mq, web)
    return {"devices": len(inv["devices"]), "keys": len(device_keys), "mosquitto_conf": str(conf),
            "gateway_toml": str(gw_toml),
            "passwd_file": str(conf.parent / "passwd"), "broker_unit": str(unit), "access": access,
            "ca": str(ca), "broker_cert": str(mq.cert), "web_cert": str(web.cert),
            "tls_port": tls_port, "plain_port": port}


def _mosquitto_path() -> str:
    """The broker binary for the unit: Debian's path unless this host has it
    elsewhere (provision runs on the outlet box itself)."""
    try:
        return find_mosquitto()
    except FileNotFoundError:
        return "/usr/sbin/mosquitto"


def _grant(broker_dir: Path, gw_toml: Path, mq: pki.ServerCert, web: pki.ServerCert) -> list[str]:
    """Hand the files to the accounts that read them (see the module
    docstring); only possible as root. Returns what is left to do by hand."""
    todo: list[str] = []
    if os.geteuid() != 0:
        return [f"not root: files stay owned by uid {os.geteuid()}, mode 0600; see docs/gateway.md "
                "(Service accounts and files)"]
    try:
        broker = pwd.getpwnam(BROKER_USER)
    except KeyError:
        broker = None
        todo.append(f"no user {BROKER_USER!r}: chown -R {BROKER_USER}: {broker_dir}")
    shared = [broker_dir / "passwd", broker_dir / "acl"]
    if broker is not None:
        # The TLS key stays 0600, owned by the account that reads it.
        for p in [broker_dir, broker_dir / "data", *shared, mq.cert.parent, mq.cert, mq.key]:
            os.chown(p, broker.pw_uid, broker.pw_gid)
        for p in shared:
            p.chmod(0o640)  # the gateway reads them through the mosquitto group
    try:
        svc = pwd.getpwnam(SERVICE_USER)
        os.chown(web.key, svc.pw_uid, svc.pw_gid)  # 0600: the gateway's HTTPS key
        nk = gw_toml.parent / "notify-keys.toml"
        if nk.exists():
            os.chown(nk, svc.pw_uid, svc.pw_gid)  # 0600: the notifier's key, its service account only
    except KeyError:
        todo.append(f"no user {SERVICE_USER!r}: chown {SERVICE_USER} {web.key} (mode 0600)")
    try:
        os.chown(gw_toml, 0, grp.getgrnam(SERVICE_GROUP).gr_gid)
        gw_toml.chmod(0o640)
    except KeyError:
        todo.append(f"no group {SERVICE_GROUP!r}: chgrp {SERVICE_GROUP} {gw_toml} && chmod 0640 {gw_toml}")
    return todo
