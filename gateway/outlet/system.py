"""``outlet init --install``: what only root can do on the box, after the
files are written. The ``postedge`` service account and its folders come
first (provision hands files to the accounts that read them, so they must
exist before it runs); the units are installed and started after.

The broker is the outlet's own unit (``postedge-mosquitto.service``), on its
own plaintext port, not Debian's ``mosquitto.service``; on a bare box the
Mosquitto package is installed from Debian first (its files and the
``mosquitto`` account, which the broker drops to).

On a box where systemd is not the init system (a container, a chroot being
prepared for an image) the units are installed and enabled offline, so they
start on the first boot under systemd, and the caller is told that nothing
was started now and how to start each part by hand."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from gateway import provision as prov
from gateway.broker import find_mosquitto
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


def systemd_running() -> bool:
    """True when systemd is the box's init (sd_booted(3)'s test)."""
    return Path("/run/systemd/system").is_dir()


def broker_package() -> list[str]:
    """Install Debian's ``mosquitto`` package when the box has no broker or
    no ``mosquitto`` account. Returns what it did."""
    try:
        find_mosquitto()
        grp.getgrnam(prov.BROKER_USER)
        return []
    except (FileNotFoundError, KeyError):
        pass
    if shutil.which("apt-get") is None:
        raise InstallError("no mosquitto and no apt-get to install it: install the mosquitto package first")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "mosquitto"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise InstallError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()[-400:]}")
    return ["apt-get install mosquitto"]


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


def service_can_run(program: str) -> None:
    """Raise InstallError unless the service account can start ``program``
    (the gateway unit's ``ExecStart``): a checkout or a Python in a home
    folder only root may enter (pyenv under /root, a 0700 temporary folder)
    would make the unit fail on every start, far from this command."""
    r = subprocess.run(["runuser", "-u", prov.SERVICE_USER, "--", program, "--help"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise InstallError(f"the {prov.SERVICE_USER} account cannot run {program} "
                           f"(its Python: {Path(program).parent / 'python'} -> "
                           f"{Path(program).parent.joinpath('python').resolve()}): "
                           f"{(r.stderr or r.stdout).strip()[-300:]}; install postedge where that "
                           "account can read it, e.g. /opt/postedge")


def units(out: Path, restart: bool) -> tuple[list[str], bool]:
    """Install both units, enable and start them; restart them when init
    changed a file they read. Returns (what it did, whether they run now):
    without systemd as init they are only enabled (see the module doc)."""
    done = []
    for name in (BROKER_UNIT, GATEWAY_UNIT):
        src, dst = out / name, UNIT_DIR / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
            dst.chmod(0o644)
            done.append(f"install {dst}")
    if not systemd_running():
        for name in (BROKER_UNIT, GATEWAY_UNIT):
            _run(["systemctl", "enable", name])  # offline: the wants/ links only
            done.append(f"systemctl enable {name}")
        return done, False
    _run(["systemctl", "daemon-reload"])
    for name in (BROKER_UNIT, GATEWAY_UNIT):
        _run(["systemctl", "enable", "--now", name])
        if restart:
            _run(["systemctl", "restart", name])
        done.append(f"systemctl {'restart' if restart else 'enable --now'} {name}")
    return done, True
