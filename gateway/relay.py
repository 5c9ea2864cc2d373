"""Downstream relay: commands from the central side to devices.

The platform signs every command for its device (the gateway holds no device
keys, so a compromised gateway cannot forge one); the gateway only stores
and forwards. Each command waits in a durable per-device outbox (the
``commands`` table) until its device is online, is published at QoS 1 on the
device's ``cmd`` topic, is re-sent while unacked (a device that already ran
it answers ``replayed``, which counts as delivered), and ends as ``acked``,
``refused`` (with the device's reason) or ``expired``. Outcomes go upstream
as the gateway's own audit events, so the platform learns what happened.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from firmware.protocol import topics
from firmware.protocol.canonical import loads_object
from firmware.protocol.errors import BadField
from gateway import metrics as M
from gateway.own_events import OwnEvents
from gateway.store import EventStore

RESEND_S = 30.0
KINDS = topics.KINDS


def store_command(store: EventStore, outlet: str, kind: str, payload: bytes, via: str | None = None) -> str:
    """Check one signed command's addressing and put it in the device's
    outbox; returns its id. A command id already stored is not stored again,
    so a redelivered downlink answer queues nothing twice (and keeps its
    first ``via``). ``via`` is the handheld that forwarded it, if one did:
    only that handheld may then read its status (gateway/command_api.py)."""
    if kind not in KINDS:
        raise BadField(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    cmd = loads_object(payload, "command")
    for key in ("id", "dev", "op", "exp"):
        if key not in cmd:
            raise BadField(f"command has no {key!r}")
    if not isinstance(cmd["id"], str) or not isinstance(cmd["dev"], str) or not isinstance(cmd["op"], str) \
            or not isinstance(cmd["exp"], int):
        raise BadField("command id, dev and op must be strings and exp an integer")
    topics.build(outlet, kind, cmd["dev"], "cmd")  # validates the device id
    cur = store.db.execute(
        "INSERT OR IGNORE INTO commands(id,device,kind,op,payload,exp,created,via) VALUES (?,?,?,?,?,?,?,?)",
        (cmd["id"], cmd["dev"], kind, cmd["op"], payload, cmd["exp"], time.time(), via))
    if cur.rowcount:
        M.COMMANDS.labels("queued").inc()
    return cmd["id"]


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
        now = time.time() if now is None else now
        expired = self.store.db.execute(
            "SELECT id, device, op FROM commands WHERE status IN ('queued','sent') AND exp <= ?",
            (int(now),)).fetchall()
        for cid, device, op in expired:
            self.store.db.execute("UPDATE commands SET status='expired' WHERE id=?", (cid,))
            self.report("gateway.command_expired", {"id": cid, "device": device, "op": op})
            M.COMMANDS.labels("expired").inc()
        rows = self.store.db.execute(
            "SELECT c.id, c.device, c.kind, c.payload, c.sent_at FROM commands c JOIN devices d "
            "ON d.device = c.device WHERE d.online = 1 AND c.status IN ('queued','sent') "
            "ORDER BY c.created").fetchall()
        sent = 0
        for cid, device, kind, payload, sent_at in rows:
            if sent_at is not None and now - sent_at < self.resend_s:
                continue
            self.publish(topics.build(self.outlet, kind, device, "cmd"), payload)
            self.store.db.execute("UPDATE commands SET status='sent', sent_at=? WHERE id=?", (now, cid))
            sent += 1
        return sent

    def on_ack(self, device: str, ack: dict[str, Any]) -> None:
        """A device's answer; ``replayed`` means an earlier copy already ran."""
        cid = ack.get("id")
        row = self.store.db.execute("SELECT status, op FROM commands WHERE id=? AND device=?",
                                    (cid, device)).fetchone()
        if row is None or row[0] in ("acked", "refused", "expired"):
            return
        code = str(ack.get("code", "?"))
        ok = bool(ack.get("ok")) or code == "replayed"
        status = "acked" if ok else "refused"
        self.store.db.execute("UPDATE commands SET status=?, acked_at=?, ack=? WHERE id=?",
                              (status, time.time(), json.dumps(ack), cid))
        M.COMMANDS.labels(status).inc()
        self.report("gateway.command_" + status, {"id": cid, "device": device, "op": row[1],
                                                   "code": code, "detail": ack.get("detail", "")})

    def commands(self, device: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT id, device, op, status, exp, sent_at, acked_at, ack FROM commands"
        args: tuple[Any, ...] = ()
        if device:
            q += " WHERE device=?"
            args = (device,)
        cur = self.store.db.execute(q + " ORDER BY created", args)
        return [{"id": i, "device": d, "op": o, "status": s, "exp": e, "sent_at": sa, "acked_at": aa,
                 "ack": json.loads(a) if a else None} for i, d, o, s, e, sa, aa, a in cur]
