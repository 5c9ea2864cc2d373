"""``outlet init --install``: what only root can do on the box, after the
files are written. The ``postedge`` service account and its folders come
first (provision hands files to the accounts that read them, so they must
exist before it runs); the units are installed and started after.

The broker is the outlet's own unit (``postedge-mosquitto.service``), on its
own plaintext port, not Debian's ``mosquitto.service``."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from gateway import provision as prov
from gateway.outlet.build import GATEWAY_UNIT

UNIT_DIR = Path("/etc/systemd/system")
STATE_DIR = Path("/var/lib/postedge")
BROKER_UNIT = "postedge-mosquitto.service"


class InstallError(RuntimeError):
    pass


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise InstallError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()}")


def is_root() -> bool:
    return os.geteuid() == 0


def accounts() -> list[str]:
    """The service account, its group and state folder; the gateway reads
    Mosquitto's password file through the mosquitto group. Returns what it did."""
    done = []
    try:
        pwd.getpwnam(prov.SERVICE_USER)
    except KeyError:
        _run(["useradd", "--system", "--user-group", "--home-dir", str(STATE_DIR), "--no-create-home",
              "--shell", "/usr/sbin/nologin", prov.SERVICE_USER])
        done.append(f"useradd {prov.SERVICE_USER}")
    try:
        members = grp.getgrnam(prov.BROKER_USER).gr_mem
    except KeyError as e:
        raise InstallError(f"no user {prov.BROKER_USER!r}: install the mosquitto package first "
                           "(apt-get install mosquitto mosquitto-clients)") from e
    if prov.SERVICE_USER not in members:
        _run(["usermod", "-aG", prov.BROKER_USER, prov.SERVICE_USER])
        done.append(f"usermod -aG {prov.BROKER_USER} {prov.SERVICE_USER}")
    if not STATE_DIR.exists():
        STATE_DIR.mkdir(mode=0o750, parents=True)
        done.append(f"mkdir {STATE_DIR}")
    svc = pwd.getpwnam(prov.SERVICE_USER)
    os.chown(STATE_DIR, svc.pw_uid, svc.pw_gid)
    return done


def units(out: Path, restart: bool) -> list[str]:
    """Install both units, enable and start them; restart them when init
    changed a file they read."""
    done = []
    for name in (BROKER_UNIT, GATEWAY_UNIT):
        src, dst = out / name, UNIT_DIR / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
            dst.chmod(0o644)
            done.append(f"install {dst}")
    _run(["systemctl", "daemon-reload"])
    for name in (BROKER_UNIT, GATEWAY_UNIT):
        _run(["systemctl", "enable", "--now", name])
        if restart:
            _run(["systemctl", "restart", name])
        done.append(f"systemctl {'restart' if restart else 'enable --now'} {name}")
    return done
