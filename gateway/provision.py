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
Devices listed in ``revoked.json`` (``postedge gateway revoke``,
``gateway/revoke.py``) are left out, whatever the inventory says, so a
re-run cannot bring a stolen handheld back.

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

The notifier key (``--notifier-key``): the platform derives one outlet
notifier key per version (``protocol/seal.py`` ``notifier_key``) and hands
it over as TOML, ``[keys]`` with ``"<kv>" = "<hex>"`` (older versions kept
so the notifier still opens boxes lockers sealed before a rotation).
``provision`` writes it to ``notifier/keys.toml`` (0600; as root, owned by
the gateway's service account: the SMS notifier's ``[notify] key_file``)
and gives each locker only its own sealing key derived from the newest
version (``seal.locker_notify_key``), as its config's ``notify`` section.
No device file holds the outlet key; handhelds and scanners get nothing.
Without the option a re-run keeps what ``notifier/keys.toml`` holds.

TLS: ``provision`` keeps an outlet certificate authority in
``pki/`` (``common/pki.py``; the CA key is root's, 0600, and no service
reads it) and issues from it Mosquitto's server certificate
(``mosquitto/tls/``) and the gateway's HTTPS certificate (``web/``), each
naming ``broker_host`` (and ``broker_names`` from the inventory) besides
localhost. Mosquitto listens for TLS 1.2+ on ``tls_port`` (8883) on
``listen``; its plaintext listener is bound to 127.0.0.1, for the gateway
on the same box only. Every device's credentials file carries the CA
certificate (``broker.ca``, PEM) and the TLS port, so a device verifies the
broker and nothing on the LAN speaks plain MQTT. A handheld also gets
``devices/<id>.toml``, the provisioned part of its config
(``handheld/config.py``): login, key, ``[broker] ca`` and an ``https://``
gateway URL, so its MQTT and its HTTPS calls verify the outlet CA. Key files are 0600; as
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

from common import pki
from gateway import revoke
from gateway.broker import TLS_PORT, Account, TlsListener, find_mosquitto, systemd_unit, write_config
from gateway.config import ConfigError
from gateway.notify.keys import load_keys
from protocol import keys, seal, topics
from protocol.errors import ProtocolError

BROKER_USER = "mosquitto"  # the ``user`` line of the generated mosquitto.conf
SERVICE_GROUP = "postedge"  # Group= of deploy/postedge-gateway.service
SERVICE_USER = "postedge"  # User= of deploy/postedge-gateway.service: reads the HTTPS key
WEB_PORT = 8080  # [web] port of the gateway.toml provision writes; handhelds' gateway URL


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


def _device_keys(path: Path | None, devices: list[dict[str, Any]],
                 revoked: Any = ()) -> dict[str, dict[str, Any]]:
    """The platform's key file: one valid key section per inventory device
    (a revoked device's key, if the file still has it, is not written out)."""
    if path is None:
        return {}
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ProvisionError(f"cannot read the key file {path}: {e}") from e
    if not isinstance(doc, dict):
        raise ProvisionError("key file: must map device id -> key section")
    doc = {dev: sec for dev, sec in doc.items() if dev not in revoked}
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


NOTIFIER_KEYS = Path("notifier") / "keys.toml"  # [notify] key_file, relative to gateway.toml


def _notifier_keys(path: Path | None, out: Path) -> dict[int, bytes]:
    """The outlet notifier key(s) the platform issued (``protocol/seal.py``
    ``notifier_key``), read as the notifier reads them
    (``gateway/notify/keys.py``). Without a file, the ones an earlier run wrote."""
    src = path if path is not None else out / NOTIFIER_KEYS
    if path is None and not src.exists():
        return {}
    try:
        return load_keys(src)
    except ConfigError as e:
        raise ProvisionError(str(e)) from e


def _names(inv: dict[str, Any], host: str) -> list[str]:
    extra = inv.get("broker_names", [])
    if not isinstance(extra, list) or not all(isinstance(n, str) and n for n in extra):
        raise ProvisionError("inventory: broker_names must be a list of host names or addresses")
    return [host, *extra, "localhost", "127.0.0.1"]


def provision(inventory: Path, out: Path, listen: str = "0.0.0.0", port: int = 1883,
              tls_port: int = TLS_PORT, key_file: Path | None = None,
              notifier_file: Path | None = None) -> dict[str, Any]:
    """``port``: the plaintext listener, on 127.0.0.1 only (the gateway);
    ``tls_port``: the TLS listener on ``listen`` (devices, handhelds);
    ``key_file``: the platform's per-device keys for this outlet;
    ``notifier_file``: the outlet notifier key(s) (see the module docstring)."""
    inv = _inventory(inventory)
    # Revoked devices (gateway/revoke.py) stay out: no login, no ACL, no file.
    try:
        revoked = revoke.load(out)
    except revoke.RevokeError as e:
        raise ProvisionError(str(e)) from e
    inv["devices"] = [d for d in inv["devices"] if d["id"] not in revoked]
    if not inv["devices"]:
        raise ProvisionError("inventory: every device is revoked")
    device_keys = _device_keys(key_file, inv["devices"], revoked)
    notifier = _notifier_keys(notifier_file, out)
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
        if d["id"] in device_keys:
            doc["key"] = device_keys[d["id"]]  # its own key, never another device's
        elif creds.exists():
            old = json.loads(creds.read_text()).get("key")
            if old is not None:
                doc["key"] = old  # re-run without a key file: keep the key it has
        if notifier and d["kind"] == "locker":
            # Its own sealing key for the notifier at the newest version,
            # derived from the outlet's key: never the outlet key itself.
            kv = max(notifier)
            doc["notify"] = {"kv": kv, "key": seal.locker_notify_key(notifier[kv], d["id"]).hex()}
        creds.write_text(json.dumps(doc, indent=1))
        creds.chmod(0o600)
        if d["kind"] == "handheld":
            _handheld_toml(out / "devices" / f"{d['id']}.toml", doc, host, WEB_PORT)
    gw_creds.write_text(json.dumps({"broker": {"user": gw_user, "password": gw_pw}}))
    gw_creds.chmod(0o600)
    notifier_path = out / NOTIFIER_KEYS
    if notifier:
        notifier_path.parent.mkdir(exist_ok=True)
        fd = os.open(notifier_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("# The outlet notifier key(s) from the platform, by version: opens the codes\n"
                    "# lockers seal for the notifier. The notifier's alone (docs/security.md).\n[keys]\n"
                    + "".join(f'"{kv}" = "{notifier[kv].hex()}"\n' for kv in sorted(notifier)))
        notifier_path.chmod(0o600)
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
        f'port = {port}\nusername = "{gw_user}"\npassword = "{gw_pw}"\n'
        '# every device login, for holding one that floods (docs/gateway.md)\n'
        'acl_file = "mosquitto/acl"\n\n'
        f'[web]\nhost = "0.0.0.0"\nport = {WEB_PORT}\n'
        '# HTTPS with a certificate from the outlet CA (pki/ca.pem)\n'
        'cert_file = "web/server.pem"\nkey_file = "web/server.key"\n'
        '# handheld logins for /v1/uploads and /v1/commands: the broker\'s own accounts\n'
        'passwd_file = "mosquitto/passwd"\nacl_file = "mosquitto/acl"\n'
        + ('\n# SMS while the backhaul is down (docs/gateway.md "Notifications"): set\n'
           '# modem to the modem\'s AT port to turn it on. The key opens the codes\n'
           '# lockers seal for the notifier.\n'
           f'[notify]\n# modem = "/dev/ttyUSB2"\nkey_file = "{NOTIFIER_KEYS.as_posix()}"\n'
           if notifier or (out / NOTIFIER_KEYS).exists() else ''),
        encoding="utf-8")
    gw_toml.chmod(0o600)
    access = _grant(conf.parent, gw_toml, mq, web, notifier_path if notifier else None)
    for dev in revoked:
        (out / "devices" / f"{dev}.json").unlink(missing_ok=True)
        (out / "devices" / f"{dev}.toml").unlink(missing_ok=True)
    return {"devices": len(inv["devices"]), "keys": len(device_keys), "mosquitto_conf": str(conf),
            "notifier_keys": sorted(notifier), "notifier_key_file": str(notifier_path) if notifier else None,
            "revoked": sorted(revoked),
            "gateway_toml": str(gw_toml),
            "passwd_file": str(conf.parent / "passwd"), "broker_unit": str(unit), "access": access,
            "ca": str(ca), "broker_cert": str(mq.cert), "web_cert": str(web.cert),
            "tls_port": tls_port, "plain_port": port}


def _handheld_toml(path: Path, doc: dict[str, Any], host: str, web_port: int) -> None:
    """The provisioned part of a handheld's config (handheld/config.py): its
    login, its own key, and the outlet CA it verifies the broker (MQTT over
    TLS) and the gateway's HTTPS with. The rest (camera, GNSS, courier) is
    the device's own. JSON strings are TOML basic strings."""
    b = doc["broker"]
    lines = [f"device = {json.dumps(doc['device'])}", f"outlet = {json.dumps(doc['outlet'])}", ""]
    key = doc.get("key")
    if key is not None:
        lines += ["[key]", f"kv = {int(key['kv'])}", f"secret = {json.dumps(key['secret'])}"]
        prev = key.get("prev")
        if prev:
            lines += ["", "[key.prev]", f"kv = {int(prev['kv'])}", f"secret = {json.dumps(prev['secret'])}",
                      f"until = {int(prev.get('until', 0))}"]
        lines.append("")
    else:
        lines += ["# [key]: none yet; run provision with --keys (the platform's key file)", ""]
    lines += ["[broker]", f"host = {json.dumps(b['host'])}", f"port = {int(b['port'])}",
              f"username = {json.dumps(b['user'])}", f"password = {json.dumps(b['password'])}",
              f"ca = {json.dumps(b['ca'])}", "",
              "[gateway]", f"url = {json.dumps(f'https://{host}:{web_port}')}", ""]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    path.chmod(0o600)


def _mosquitto_path() -> str:
    """The broker binary for the unit: Debian's path unless this host has it
    elsewhere (provision runs on the outlet box itself)."""
    try:
        return find_mosquitto()
    except FileNotFoundError:
        return "/usr/sbin/mosquitto"


def _grant(broker_dir: Path, gw_toml: Path, mq: pki.ServerCert, web: pki.ServerCert,
           notifier: Path | None = None) -> list[str]:
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
        if notifier is not None:
            os.chown(notifier, svc.pw_uid, svc.pw_gid)  # 0600: the notifier runs in the gateway service
    except KeyError:
        todo.append(f"no user {SERVICE_USER!r}: chown {SERVICE_USER} {web.key} (mode 0600)")
        if notifier is not None:
            todo.append(f"no user {SERVICE_USER!r}: chown {SERVICE_USER} {notifier} (mode 0600)")
    try:
        os.chown(gw_toml, 0, grp.getgrnam(SERVICE_GROUP).gr_gid)
        gw_toml.chmod(0o640)
    except KeyError:
        todo.append(f"no group {SERVICE_GROUP!r}: chgrp {SERVICE_GROUP} {gw_toml} && chmod 0640 {gw_toml}")
    return todo
