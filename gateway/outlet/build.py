"""``postedge outlet init``: every file an outlet runs on, from its
description, written so that running it again changes nothing.

It calls ``gateway/provision.py`` (broker accounts and ACL, the outlet CA and
certificates, device credentials and keys, gateway.toml, the broker's unit)
in a staging copy of the output folder, then adds what provision does not
know: each locker's and scanner's complete firmware configuration
(``devices/<id>.json``: board, compartments, key, state folder, panel,
broker over TLS, time source), the gateway's ``[upstream]``, ``[counter]``
and a database path the user running it can write, a broker on its own
port, paths in ``mosquitto.conf`` relative to the folder (Mosquitto runs
with the folder as its working directory), and the gateway's unit.

Only then is the staging copy compared with the folder, file by file, and
what differs is copied over: the result lists each file added, changed or
removed, and a second run lists none. Secrets stay: provision keeps
passwords, keys and certificates it finds, and the broker's password file
(re-hashed with a fresh salt on every provision) is kept while its logins and
passwords are the same.

Keys: from the central service's key file (``[central] keys``); else, with
``[central] url`` and the outlet's login, asked of the central service
(``central_keys.py``: ``POST /v1/keys``, the master key stays there); else,
for a pilot with no central service yet, derived from a master key ``init``
keeps in ``pilot/master.key`` (0600) exactly as the platform derives them
(``protocol/keys.py``, ``protocol/seal.py``). ``Result.keys_from`` says which.

Pairing: on an installed outlet a handheld's ``devices/<id>.toml`` is given
to the gateway's group (0640), so the clerk's page can hand it to the
handheld that scans the pairing QR code (``gateway/http/pairing.py``)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.web_server import lan_address
from gateway import provision as prov
from gateway import revoke
from gateway.outlet import central_keys
from gateway.outlet.spec import Locker, OutletSpec, Scanner
from protocol import keys, seal

PILOT_MASTER = Path("pilot") / "master.key"
DB_INSTALLED = "/var/lib/postedge/gateway.db"
DB_LOCAL = "data/gateway.db"  # relative to gateway.toml: any user can run it from the folder
GATEWAY_UNIT = "postedge-gateway.service"
#: Written by the running parts, never by init: not compared, not copied.
RUNTIME = ("mosquitto/data", "mosquitto/mosquitto.log", "data")


class OutletError(ValueError):
    pass


@dataclass
class Result:
    out: Path
    address: str
    changes: list[tuple[str, str]] = field(default_factory=list)  # (added|changed|removed, path)
    access: list[str] = field(default_factory=list)  # what provision could not grant
    revoked: list[str] = field(default_factory=list)
    keys_from: str = "pilot"  # file | central | pilot


def _runtime(rel: str) -> bool:
    return any(rel == r or rel.startswith(r + "/") for r in RUNTIME)


def _files(root: Path) -> dict[str, Path]:
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and not _runtime(p.relative_to(root).as_posix())}


def _stage_from(out: Path, stage: Path) -> None:
    stage.mkdir(parents=True)
    for rel, src in _files(out).items():
        dst = stage / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def _inventory(spec: OutletSpec, address: str) -> str:
    lines = [f"outlet = {json.dumps(spec.outlet)}", f"broker_host = {json.dumps(address)}",
             f"gateway = {json.dumps('gw-' + spec.outlet)}", ""]
    for dev, kind in spec.devices():
        lines += ["[[devices]]", f"id = {json.dumps(dev)}", f"kind = {json.dumps(kind)}", ""]
    return "# written by postedge outlet init from the outlet's description\n" + "\n".join(lines)


def _resolve(spec_path: Path, p: str | None) -> Path | None:
    return None if p is None else (spec_path.parent / p)


def _pilot_keys(spec: OutletSpec, out: Path, stage: Path, tmp: Path) -> tuple[Path, Path]:
    """The key file and notifier key file a pilot's embedded backend issues."""
    master_path = stage / PILOT_MASTER
    if master_path.exists():
        master = bytes.fromhex(master_path.read_text().strip())
    else:
        master = secrets.token_bytes(32)
        master_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(master_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(master.hex() + "\n")
    doc = {dev: keys.config(1, keys.device_key(master, keys.fleet_id(spec.outlet, dev), 1))
           for dev, _ in spec.devices()}
    key_file = tmp / "keys.json"
    key_file.write_text(json.dumps(doc))
    notifier = tmp / "notifier.toml"
    notifier.write_text(f'[keys]\n"1" = "{seal.notifier_key(master, spec.outlet, 1).hex()}"\n')
    return key_file, notifier


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def locker_config(creds: dict[str, Any], lk: Locker) -> dict[str, Any]:
    """A locker's complete config.json (firmware/locker/config.py) from its
    provisioned credentials (login, TLS CA, key, notifier sealing key)."""
    doc = dict(creds)
    doc["board"] = {"driver": lk.board.driver, "uart": lk.board.uart, "baud": lk.board.baud}
    doc["compartments"] = lk.layout()
    doc.update(state_dir=lk.state_dir, time_source=lk.time_source, pickup_days=lk.pickup_days,
               door_open_alarm_s=lk.door_open_alarm_s, poll_ms=lk.poll_ms)
    if lk.panel:
        doc["panel"] = lk.panel
    return doc


def scanner_config(creds: dict[str, Any], sc: Scanner) -> dict[str, Any]:
    """A counter scanner's complete config.json (firmware/counter/config.py)."""
    doc = dict(creds)
    doc["scanner"] = {"family": sc.family, "uart": sc.uart, "suffix": sc.suffix, "mode": sc.mode}
    doc["state_dir"] = sc.state_dir
    return doc


def _gateway_toml(spec: OutletSpec, stage: Path, install: bool, spec_path: Path) -> None:
    """provision's gateway.toml with this outlet's database path, web port
    and language, ``[upstream]`` and ``[counter]``."""
    path = stage / "gateway.toml"
    text = path.read_text(encoding="utf-8")
    db_line, web = f'db = "{DB_INSTALLED}"', f"[web]\nhost = \"0.0.0.0\"\nport = {prov.WEB_PORT}\n"
    if db_line not in text or web not in text:  # provision's text changed: say so, never half-apply
        raise OutletError(f"{path.name} from provision has no {db_line!r} or [web] port line to set")
    text = text.replace(db_line, f'db = "{DB_INSTALLED if install else DB_LOCAL}"')
    text = text.replace(web, f'[web]\nhost = "0.0.0.0"\nport = {spec.web.port}\nlang = "{spec.web.lang}"\n')
    c = spec.central
    if c.url:
        text += ("\n# The central service (the description's [central]).\n[upstream]\n"
                 f"url = {json.dumps(c.url)}\n")
        if c.username:
            text += f"username = {json.dumps(c.username)}\npassword = {json.dumps(c.password)}\n"
        if c.ca_file:
            ca = _resolve(spec_path, c.ca_file)
            assert ca is not None
            shutil.copyfile(ca, stage / "central-ca.pem")
            text += 'ca_file = "central-ca.pem"\n'
    else:
        text += ("\n# No [upstream]: the description has no [central] url; events stay here\n"
                 "# until one is set and init runs again.\n")
    if spec.counter is not None:
        text += "\n[counter]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in spec.counter.items())
    # The mode and owner provision gave it stay: 0600, or 0640 root:postedge
    # where the service group exists (the gateway's account must read it;
    # the [upstream] password in it is for that account and root only).
    path.write_text(text, encoding="utf-8")
    if not install:
        (stage / "data").mkdir(exist_ok=True)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise OutletError(f"counter: cannot write {v!r}")


def _relative_broker(stage: Path, out: Path, port: int) -> None:
    """mosquitto.conf with paths relative to the folder (the unit runs
    Mosquitto there), and the broker's unit pointing at the folder."""
    conf = stage / "mosquitto" / "mosquitto.conf"
    conf.write_text(conf.read_text().replace(f"{stage}/", ""))
    unit = stage / "postedge-mosquitto.service"
    text = unit.read_text().replace(f"{stage}/mosquitto/mosquitto.conf", "mosquitto/mosquitto.conf")
    if port != 1883:
        # Its own port: Debian's mosquitto.service can run beside it, and an
        # upgrade of the package restarting that one must not stop this one.
        text = text.replace("Conflicts=mosquitto.service\n",
                            "# Not 1883: Debian's mosquitto.service may run beside it.\n")
    if "WorkingDirectory=" not in text:
        text = text.replace("[Service]\n", "[Service]\n# mosquitto.conf's paths are relative to this "
                                           f"folder.\nWorkingDirectory={out}\n", 1)
    unit.write_text(text)


def postedge_bin() -> str:
    """The ``postedge`` program the units and printed commands start."""
    return shutil.which("postedge") or str(Path(sys.prefix) / "bin" / "postedge")


def gateway_unit(out: Path) -> str:
    """The gateway's systemd unit (deploy/postedge-gateway.service) for this folder."""
    return f"""\
# systemd unit for the outlet gateway, written by postedge outlet init.
[Unit]
Description=postedge outlet gateway (ingest, sync, relay, status page)
After=network-online.target postedge-mosquitto.service
Wants=network-online.target postedge-mosquitto.service
StartLimitIntervalSec=0

[Service]
Type=simple
User={prov.SERVICE_USER}
Group={prov.SERVICE_GROUP}
SupplementaryGroups={prov.BROKER_USER}
WorkingDirectory={out}
ExecStart={postedge_bin()} gateway run --config {out}/gateway.toml
KillSignal=SIGTERM
TimeoutStopSec=20
Restart=always
RestartSec=2
LimitNOFILE=4096
StateDirectory=postedge
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
ReadWritePaths=/var/lib/postedge

[Install]
WantedBy=multi-user.target
"""


def _passwd_logins(path: Path) -> list[str]:
    if not path.exists():
        return []
    return sorted(line.split(":", 1)[0] for line in path.read_text().splitlines() if ":" in line)


def _creds_passwords(root: Path) -> dict[str, str]:
    """login -> password, from the credentials files provision keeps."""
    out: dict[str, str] = {}
    for p in [root / "gateway-credentials.json", *sorted((root / "devices").glob("*.json"))]:
        try:
            b = json.loads(p.read_text())["broker"]
            out[str(b["user"])] = str(b["password"])
        except (OSError, ValueError, KeyError):
            continue
    return out


def _keep_passwd(stage: Path, out: Path) -> None:
    """Mosquitto's hashes get a fresh salt on every run: keep the old file
    while it holds the same logins with the same passwords."""
    old, new = out / "mosquitto" / "passwd", stage / "mosquitto" / "passwd"
    if not old.exists() or _passwd_logins(old) != _passwd_logins(new):
        return
    was, now = _creds_passwords(out), _creds_passwords(stage)
    if all(was.get(u) == now.get(u) for u in _passwd_logins(new)):
        shutil.copy2(old, new)
        if os.geteuid() == 0:
            o = old.stat()
            os.chown(new, o.st_uid, o.st_gid)


def _diff(stage: Path, out: Path) -> list[tuple[str, str]]:
    before, after = _files(out), _files(stage)
    changes = []
    for rel, p in after.items():
        if rel not in before:
            changes.append(("added", rel))
        elif p.read_bytes() != before[rel].read_bytes() or p.stat().st_mode != before[rel].stat().st_mode:
            changes.append(("changed", rel))
    changes += [("removed", rel) for rel in before if rel not in after]
    return changes


def _apply(stage: Path, out: Path, changes: list[tuple[str, str]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for d in sorted(p for p in stage.rglob("*") if p.is_dir()):
        dst = out / d.relative_to(stage)
        dst.mkdir(parents=True, exist_ok=True)
        # provision hands mosquitto/ (log, persistence) to the broker's account
        st = d.stat()
        dst.chmod(st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(dst, st.st_uid, st.st_gid)
    for what, rel in changes:
        dst = out / rel
        if what == "removed":
            dst.unlink(missing_ok=True)
            continue
        src = stage / rel
        tmp = dst.with_name(dst.name + ".new")
        shutil.copy2(src, tmp)
        if os.geteuid() == 0:
            st = src.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, dst)


def init(spec: OutletSpec, spec_path: Path, out: Path, install: bool = False,
         dry_run: bool = False) -> Result:
    """Bring ``out`` in line with ``spec``; with ``dry_run`` only say what
    would change. ``install`` writes the paths a root install uses (the
    caller, ``gateway/outlet/system.py``, does the rest)."""
    out = Path(out).resolve()
    address = spec.address or lan_address()
    try:
        revoked = revoke.load(out)
    except revoke.RevokeError as e:
        raise OutletError(str(e)) from e
    with tempfile.TemporaryDirectory(prefix="postedge-outlet-") as t:
        tmp = Path(t).resolve()
        stage = tmp / "stage"
        _stage_from(out, stage)
        (stage / "inventory.toml").write_text(_inventory(spec, address), encoding="utf-8")
        key_file = _resolve(spec_path, spec.central.keys)
        notifier = _resolve(spec_path, spec.central.notifier_keys)
        keys_from = "file"
        c = spec.central
        if key_file is None and c.url and c.username:
            keys_from = "central"
            try:
                doc = central_keys.fetch(c.url, spec.outlet, c.username, c.password,
                                         _resolve(spec_path, c.ca_file),
                                         [(d, k) for d, k in spec.devices() if d not in revoked])
            except central_keys.CentralKeysError as e:
                raise OutletError(str(e)) from e
            key_file, central_notifier = central_keys.write(doc, tmp)
            notifier = notifier or central_notifier
        elif key_file is None:
            keys_from = "pilot"
            key_file, pilot_notifier = _pilot_keys(spec, out, stage, tmp)
            notifier = notifier or pilot_notifier
        try:
            res = prov.provision(stage / "inventory.toml", stage, spec.broker.listen, spec.broker.port,
                                 spec.broker.tls_port, key_file, notifier)
        except prov.ProvisionError as e:
            raise OutletError(str(e)) from e
        _gateway_toml(spec, stage, install, spec_path)
        _relative_broker(stage, out, spec.broker.port)
        (stage / GATEWAY_UNIT).write_text(gateway_unit(out), encoding="utf-8")
        for lk in spec.lockers:
            if lk.id not in revoked:
                p = stage / "devices" / f"{lk.id}.json"
                _write_json(p, locker_config(json.loads(p.read_text()), lk))
        for sc in spec.scanners:
            if sc.id not in revoked:
                p = stage / "devices" / f"{sc.id}.json"
                _write_json(p, scanner_config(json.loads(p.read_text()), sc))
        for hh in spec.handhelds:
            p = stage / "devices" / f"{hh.id}.toml"
            if hh.id not in revoked and p.exists():
                p.write_text(p.read_text().replace(f":{prov.WEB_PORT}\"", f":{spec.web.port}\""))
                if install:
                    _pairable(p)
        # A device taken out of the description: its login is gone from
        # provision's passwd and ACL; its files go too (retire-device also
        # records it upstream and keeps it out for good).
        ids = {dev for dev, _ in spec.devices()}
        for p in (stage / "devices").glob("*"):
            if p.suffix in (".json", ".toml") and p.stem not in ids:
                p.unlink()
        _keep_passwd(stage, out)
        changes = _diff(stage, out)
        if not dry_run:
            _apply(stage, out, changes)
        access = [a.replace(str(stage), str(out)) for a in res["access"]]
    return Result(out, address, changes, access, sorted(revoked), keys_from)


def _pairable(path: Path) -> None:
    """A handheld's file, readable by the gateway's group for pairing (as root)."""
    import grp

    path.chmod(0o640)
    if os.geteuid() == 0:
        try:
            os.chown(path, 0, grp.getgrnam(prov.SERVICE_GROUP).gr_gid)
        except KeyError:
            pass


def installed(out: Path) -> bool:
    """Whether ``out`` was set up with --install (its gateway.toml has the
    installed database path): a later run without either flag keeps it so."""
    try:
        return f'db = "{DB_INSTALLED}"' in (Path(out) / "gateway.toml").read_text(encoding="utf-8")
    except OSError:
        return False


def start_commands(out: Path, installed: bool = False) -> list[tuple[str, str]]:
    """(part, command) to start each part by hand: a files-only outlet as
    the user who made it; an installed one as its units do (root starts
    Mosquitto, which drops to its own account; the gateway runs as the
    service account, in the broker's group through that account's groups)."""
    gateway = f"{postedge_bin()} gateway run --config {out}/gateway.toml"
    if installed:
        gateway = f"cd {out} && runuser -u {prov.SERVICE_USER} -- {gateway}"
    return [("broker", f"cd {out} && mosquitto -c mosquitto/mosquitto.conf"), ("gateway", gateway)]


def device_commands(spec: OutletSpec, out: Path, revoked: list[str]) -> list[tuple[str, str]]:
    """(device, command) that puts each device's configuration on it; for a
    handheld, the file to copy to it."""
    cmds = []
    for lk in spec.lockers:
        if lk.id not in revoked:
            cmds.append((lk.id, f"postedge firmware deploy --port /dev/ttyUSB0 --device {lk.id} "
                                f"--outlet-dir {out}"))
    for sc in spec.scanners:
        if sc.id not in revoked:
            cmds.append((sc.id, f"postedge firmware deploy --port /dev/ttyUSB0 --device {sc.id} "
                                f"--outlet-dir {out}"))
    for hh in spec.handhelds:
        if hh.id not in revoked:
            cmds.append((hh.id, f"{out}/devices/{hh.id}.toml"))
    return cmds


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True)
