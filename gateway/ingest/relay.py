"""Downstream relay: commands from the central side to devices.

The platform signs every command with the key of the one device it is for
(protocol/keys.py; the gateway holds no device keys, so a compromised
gateway cannot forge one); the gateway only stores and forwards. From a
handheld (``via``) it takes only permits issued to that handheld
(protocol/permits.py): never ``open``, ``config`` or ``credential``.
Each command waits in a durable per-device outbox (the
``commands`` table) until its device is online, is published at QoS 1 on the
device's ``cmd`` topic, is re-sent while unacked (a device that already ran
it answers ``replayed``, which counts as delivered; one still waiting for
the gateway's time answers ``time_not_synced`` and gets it again later), and
ends as ``acked``,
``refused`` (with the device's reason) or ``expired``. Outcomes go upstream
as the gateway's own audit events, so the platform learns what happened.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from common.clock import now as clock_now
from gateway import metrics as M
from gateway.store.events import EventStore
from gateway.store.own_events import OwnEvents
from protocol import permits, topics
from protocol.canonical import loads_object
from protocol.errors import BadField, ProtocolError

RESEND_S = 30.0
# Refusals that say "not now" rather than "no": the command stays sent and is
# sent again after RESEND_S (a device waiting for the gateway's time).
TRANSIENT = ("time_not_synced",)
KINDS = topics.KINDS
MAX_ID = 64
MAX_OP = 32
MAX_COMMAND = 4096


class CommandConflict(ProtocolError):
    """A command id already held, with other bytes: refused, never ignored."""

    code = "id_conflict"


def namespace(via: str | None) -> str:
    """Platform commands share one id space; each forwarding handheld has its
    own, so a handheld cannot take an id the platform will use later."""
    return "" if via is None else "fwd:" + via


def store_command(store: EventStore, outlet: str, kind: str, payload: bytes, via: str | None = None) -> str:
    """Check one signed command's addressing and put it in the device's
    outbox; returns its id.

    The same command again (a redelivered downlink answer, a handheld that
    forwards twice) queues nothing twice. The same id with other bytes in
    the same namespace raises CommandConflict: the first copy stays and the
    sender is told, rather than told "queued" for a command that will never
    run. ``via`` is the handheld that forwarded it, if one did: only that
    handheld may then read its status (gateway/command_api.py), and the
    command must be a locker permit issued to it (``not_a_permit``)."""
    if kind not in KINDS:
        raise BadField(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if len(payload) > MAX_COMMAND:
        raise BadField(f"command is {len(payload)} bytes, limit {MAX_COMMAND}")
    cmd = loads_object(payload, "command")  # also bounds every integer
    for key in ("id", "dev", "op", "exp"):
        if key not in cmd:
            raise BadField(f"command has no {key!r}")
    cid, op, exp = cmd["id"], cmd["op"], cmd["exp"]
    if not isinstance(cid, str) or not isinstance(cmd["dev"], str) or not isinstance(op, str) \
            or not isinstance(exp, int) or isinstance(exp, bool):
        raise BadField("command id, dev and op must be strings and exp an integer")
    if not 0 < len(cid) <= MAX_ID or not 0 < len(op) <= MAX_OP:
        raise BadField(f"command id must be 1-{MAX_ID} and op 1-{MAX_OP} characters")
    topics.build(outlet, kind, cmd["dev"], "cmd")  # validates the device id
    if via is not None:
        permits.forwardable(cmd, kind, via)
    ns = namespace(via)
    cur = store.db.execute(
        "INSERT OR IGNORE INTO commands(ns,id,device,kind,op,payload,exp,created,via) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        (ns, cid, cmd["dev"], kind, op, bytes(payload), exp, clock_now(), via))
    if cur.rowcount:
        M.COMMANDS.labels("queued").inc()
        return cid
    held = store.db.execute("SELECT payload FROM commands WHERE ns=? AND id=?", (ns, cid)).fetchone()
    if held is not None and bytes(held[0]) != bytes(payload):
        M.COMMANDS.labels("id_conflict").inc()
        raise CommandConflict(f"command id {cid!r} is already held with a different payload")
    return cid


class Relay:
    def __init__(self, store: EventStore, outlet: str, own: OwnEvents,
                 publish: Callable[[str, bytes], None], resend_s: float = RESEND_S) -> None:
        self.store = store
        self.outlet = outlet
        self.report = own.emit
        self.publish = publish
        self.resend_s = resend_s

    # ---- in from the central side
    def enqueue(self, kind: str, payload: bytes) -> str:
        """Store one signed command for delivery; returns its id."""
        return store_command(self.store, self.outlet, kind, payload)

    # ---- out to devices
    def tick(self, now: float | None = None) -> int:
        """Expire what is overdue; (re)send what online devices have not acked.
        Returns how many commands were published."""
        now = clock_now() if now is None else now
        expired = self.store.db.execute(
            "SELECT rowid, id, device, op FROM commands WHERE status IN ('queued','sent') AND exp <= ?",
            (int(now),)).fetchall()
        for rowid, cid, device, op in expired:
            with self.store.tx():
                self.store.db.execute("UPDATE commands SET status='expired' WHERE rowid=?", (rowid,))
                self.report("gateway.command_expired", {"id": cid, "device": device, "op": op})
            M.COMMANDS.labels("expired").inc()
        rows = self.store.db.execute(
            "SELECT c.rowid, c.device, c.kind, c.payload, c.sent_at FROM commands c JOIN devices d "
            "ON d.device = c.device WHERE d.online = 1 AND c.status IN ('queued','sent') "
            "ORDER BY c.created").fetchall()
        sent = 0
        for rowid, device, kind, payload, sent_at in rows:
            if sent_at is not None and now - sent_at < self.resend_s:
                continue
            self.publish(topics.build(self.outlet, kind, device, "cmd"), payload)
            self.store.db.execute("UPDATE commands SET status='sent', sent_at=? WHERE rowid=?",
                                  (now, rowid))
            sent += 1
        return sent

    def on_ack(self, device: str, ack: dict[str, Any]) -> None:
        """A device's answer; ``replayed`` means an earlier copy already ran.

        Field types are checked before any SQL: an ack is device input. The
        same id may be open in two namespaces (a handheld's forward and the
        platform's); the answer goes to the one sent first, as the device
        answers in the order it received them."""
        cid, code, detail, ok = ack.get("id"), ack.get("code", "?"), ack.get("detail", ""), ack.get("ok")
        if not isinstance(cid, str) or not 0 < len(cid) <= MAX_ID:
            raise BadField(f"ack id must be a string of 1-{MAX_ID} characters")
        if not isinstance(code, str) or not isinstance(detail, str) or not isinstance(ok, bool | None):
            raise BadField("ack code and detail must be strings and ok a boolean")
        row = self.store.db.execute(
            "SELECT rowid, op FROM commands WHERE device=? AND id=? AND status IN ('queued','sent') "
            "ORDER BY sent_at IS NULL, sent_at, created LIMIT 1", (device, cid)).fetchone()
        if row is None:
            return
        rowid = row[0]
        code, detail = code[:64], detail[:300]
        if not ok and code in TRANSIENT:
            M.COMMANDS.labels("deferred").inc()
            return
        ok = bool(ok) or code == "replayed"
        status = "acked" if ok else "refused"
        self.store.db.execute("UPDATE commands SET status=?, acked_at=?, ack=? WHERE rowid=?",
                              (status, clock_now(), json.dumps(ack)[:2000], rowid))
        M.COMMANDS.labels(status).inc()
        self.report("gateway.command_" + status, {"id": cid, "device": device, "op": row[1],
                                                   "code": code, "detail": detail})

    def commands(self, device: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT id, device, op, status, exp, sent_at, acked_at, ack FROM commands"
        args: tuple[Any, ...] = ()
        if device:
            q += " WHERE device=?"
            args = (device,)
        cur = self.store.db.execute(q + " ORDER BY created", args)
        return [{"id": i, "device": d, "op": o, "status": s, "exp": e, "sent_at": sa, "acked_at": aa,
                 "ack": json.loads(a) if a else None} for i, d, o, s, e, sa, aa, a in cur]
