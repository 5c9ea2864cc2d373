"""Revoke a device at the outlet: a stolen handheld loses its
broker login at once, and with it every way to reach the gateway.

``postedge gateway revoke DEVICE`` (run as root on the gateway box, where
``provision`` wrote its files) does, in this order, so that a crash between
steps is finished by running it again:

1. records the device in ``revoked.json`` beside ``gateway.toml`` (written
   whole, then renamed): ``provision`` leaves a revoked device out from then
   on, so re-provisioning the outlet cannot bring it back;
2. removes its line from Mosquitto's ``passwd`` and its block from ``acl``
   (each file replaced whole, keeping its owner and mode), and deletes its
   credentials files ``devices/<id>.json`` and ``.toml`` (its broker
   password, and its key if the platform gave one);
3. marks the commands it forwarded that wait for delivery (its permits) as
   ``revoked`` in the gateway's database, so the relay never sends them, and
   stores the event ``gateway.device_revoked`` (``{"device", "at",
   "cancelled"}``) that goes upstream with the next sync, so the platform
   learns of it and can sign the lockers' half. The event's id comes from a
   sequence of its own (``<gateway>-adm``), never the running gateway's;
   it is stored once per device (``kv`` ``revoked_reported:<device>``);
4. tells Mosquitto to reload (SIGHUP): the broker re-reads both files and
   drops the device's live connection; every later login is refused. The
   gateway's HTTP API reads the same two files, so the handheld's uploads
   and command status are refused too.

Because the gateway relays a permit only from the handheld it was issued to
(``protocol/permits.py`` ``forwardable``), a handheld without a login can no
longer get any permit it carried to a locker. Lockers also keep their own
revocation list (``protocol/revocation.py``), filled by ``revoke`` commands
the platform signs with each locker's key: the gateway holds no key, so the
lockers' half comes from the platform and reaches them through the relay.

From the platform: the platform revokes by signing a ``revoke`` command for
each locker (``protocol/revocation.py``); the gateway stores those like any
command. ``postedge gateway revoke --from-platform`` (root; for example from
a systemd timer) applies the handhelds they name to the broker as above
(:func:`from_platform`). The gateway cannot check the platform's signature
(it holds no key), so it trusts its uplink for these as it does for every
command it queues; a revocation can only take access away.

To bring a device back (a handheld found again): remove it from
``revoked.json`` and run ``provision`` again, which gives it a new password.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from common.clock import now as clock_now
from gateway.store.events import EventStore
from gateway.store.own_events import OwnEvents
from protocol import revocation, topics
from protocol.errors import ProtocolError

REVOKED_FILE = "revoked.json"
BROKER_UNIT = "postedge-mosquitto.service"


class RevokeError(ValueError):
    pass


def load(directory: Path) -> dict[str, dict[str, Any]]:
    """device id -> {"at": Unix seconds, ...} from ``revoked.json``; empty if
    there is none. A damaged file is an error, never an empty list: treating
    it as empty would bring every revoked device back."""
    path = Path(directory) / REVOKED_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise RevokeError(f"cannot read {path}: {e}") from e
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise RevokeError(f"{path} is damaged ({e}); fix or restore it before provisioning") from e
    devices = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(devices, dict) or not all(topics.valid_segment(d) and isinstance(v, dict)
                                                 for d, v in devices.items()):
        raise RevokeError(f"{path} is damaged (no devices map); fix or restore it before provisioning")
    return devices


def _replace(path: Path, text: str, like: Path | None = None) -> None:
    """Write ``path`` whole through a temporary file and a rename, with the
    mode and owner of ``like`` (the file it replaces)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if like is not None and like.exists():
        st = like.stat()
        os.chmod(tmp, st.st_mode & 0o777)
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _without_passwd(text: str, device: str) -> tuple[str, bool]:
    lines = text.splitlines()
    kept = [ln for ln in lines if ln.split(":", 1)[0] != device]
    return "".join(ln + "\n" for ln in kept), len(kept) != len(lines)


def _without_acl(text: str, device: str) -> tuple[str, bool]:
    """Drop the ``user <device>`` block (up to the next ``user`` line)."""
    out: list[str] = []
    skipping = found = False
    for ln in text.splitlines():
        words = ln.split()
        if len(words) == 2 and words[0] == "user":
            skipping = words[1] == device
            found = found or skipping
        if not skipping:
            out.append(ln)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n", found


def admin_id(gateway_id: str) -> str:
    """The event-id prefix of what the operator's commands report: a
    sequence of their own, so they never take an id the running gateway's
    sequence hands out."""
    return f"{gateway_id[:28]}-adm"


def _record(db: Path, outlet: str, gateway_id: str, device: str, at: int) -> tuple[list[str], bool]:
    """(ids of the permits cancelled, whether the upstream event is stored).
    Only into an existing database: one this command created as root would
    be unreadable to the gateway's service account."""
    if not db.exists():
        return [], False
    store = EventStore(db)
    adm = admin_id(gateway_id)
    try:
        with store.tx():
            waiting = "WHERE via=? AND status IN ('queued','sent')"
            rows = store.db.execute(f"SELECT id FROM commands {waiting}", (device,)).fetchall()
            store.db.execute(f"UPDATE commands SET status='revoked' {waiting}", (device,))
        cancelled = [str(r[0]) for r in rows]
        key = f"revoked_reported:{device}"
        if store.get(key) is None:
            OwnEvents(store, outlet, adm, db.parent).emit(
                "gateway.device_revoked", {"device": device, "at": at, "cancelled": cancelled})
            with store.tx():
                store.put(key, str(at))
    finally:
        store.close()
    _same_owner(db, [db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
                     db.parent / f"{adm}.seq"])
    return cancelled, True


def _same_owner(like: Path, paths: list[Path]) -> None:
    """Run as root, hand what this command wrote beside the database to the
    database's owner (the gateway's service account)."""
    if os.geteuid() != 0:
        return
    st = like.stat()
    for p in paths:
        if p.exists():
            os.chown(p, st.st_uid, st.st_gid)


def from_platform(db: Path, directory: Path) -> list[str]:
    """Handhelds named by the platform's ``revoke`` commands held in the
    gateway's database (queued, delivered or not) that are not revoked here
    yet, in the order the commands arrived."""
    if not Path(db).exists():
        return []
    done = load(directory)
    store = EventStore(db)
    try:
        rows = store.db.execute("SELECT payload FROM commands WHERE op='revoke' AND via IS NULL "
                                "ORDER BY created").fetchall()
    finally:
        store.close()
    out: list[str] = []
    for (payload,) in rows:
        try:
            cmd = json.loads(bytes(payload))
            names = revocation.parse_args(cmd.get("args") if isinstance(cmd, dict) else None)
        except (ValueError, ProtocolError):
            continue  # the locker refuses it too (bad_args); nothing to apply
        for kind, ident in names:
            if kind == "handheld" and ident not in done and ident not in out:
                out.append(ident)
    return out


def reload_broker(pid: int | None = None) -> str:
    """SIGHUP to Mosquitto (``pid``, or the systemd unit ``provision`` wrote):
    it re-reads passwd and acl and drops connections they no longer allow."""
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        return f"pid {pid}"
    r = subprocess.run(["systemctl", "reload", BROKER_UNIT], capture_output=True, text=True)
    if r.returncode != 0:
        raise RevokeError(f"systemctl reload {BROKER_UNIT} failed: {(r.stderr or r.stdout).strip()}; "
                          "reload Mosquitto by hand (kill -HUP its pid)")
    return BROKER_UNIT


def revoke(directory: Path, passwd: Path, acl: Path, device: str, db: Path | None = None,
           gateway_user: str | None = None, now: float | None = None, outlet: str = "",
           gateway_id: str = "") -> dict[str, Any]:
    """Steps 1-3 of the module docstring (the reload is the caller's, see
    :func:`reload_broker`). Running it again for a revoked device is
    harmless and finishes what a crash left undone."""
    if not topics.valid_segment(device):
        raise RevokeError(f"{device!r} is not a device id (1-32 of a-z 0-9 _ -)")
    if gateway_user is not None and device == gateway_user:
        raise RevokeError(f"{device} is the gateway's own login")
    directory = Path(directory)
    revoked = load(directory)
    try:
        passwd_text = passwd.read_text(encoding="utf-8")
        acl_text = acl.read_text(encoding="utf-8")
    except OSError as e:
        raise RevokeError(f"cannot read the broker's files: {e}") from e
    new_passwd, had_login = _without_passwd(passwd_text, device)
    new_acl, had_acl = _without_acl(acl_text, device)
    if device not in revoked and not had_login:
        raise RevokeError(f"{device} has no broker login here (not in {passwd})")
    already = device in revoked
    if not already:
        revoked[device] = {"at": int(clock_now() if now is None else now)}
        _replace(directory / REVOKED_FILE, json.dumps({"devices": revoked}, indent=1, sort_keys=True) + "\n")
    if had_login:
        _replace(passwd, new_passwd, like=passwd)
    if had_acl:
        _replace(acl, new_acl, like=acl)
    for suffix in (".json", ".toml"):
        (directory / "devices" / f"{device}{suffix}").unlink(missing_ok=True)
    at = int(revoked[device]["at"])
    cancelled, reported = (_record(db, outlet, gateway_id or f"gw-{outlet}", device, at)
                           if db is not None and outlet else ([], False))
    return {"device": device, "already": already, "at": at, "login_removed": had_login,
            "cancelled": cancelled, "reported": reported}
