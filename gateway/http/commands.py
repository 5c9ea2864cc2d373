"""``GET /v1/commands/<id>``: a courier's handheld asks what became of a command it forwarded.

A deposit permit is signed by the platform, handed to the courier's
handheld, and forwarded through the gateway as the event
``handheld.forward_command`` (``gateway/ingest.py`` queues it with
``store_command(..., via=<handheld>)``). The locker's answer comes back to
the gateway as an MQTT ack, which the handheld cannot read (its ACL allows
only its own topics), so the handheld polls this route to learn it:

``GET|HEAD /v1/commands/<id>`` -> ``200`` ``{"id", "device", "op", "status",
"ack"}``: ``status`` is the outbox's ``queued|sent|acked|refused|expired``,
``ack`` the device's ack object once there is one, else ``null``.

Logins are those of the photo uploads (``gateway/uploads.py``): HTTP Basic
with the handheld's broker account, checked against Mosquitto's password
file by the same ``Credentials`` object, so there is one password checker
and one PBKDF2 cache. ``401`` wrong or missing login, ``403`` an account that
is not a handheld, ``503`` no ``web.passwd_file``.

A handheld sees only the commands it forwarded itself (``commands.via``,
store migration 4). Someone else's command, a command from the central side
(``via`` NULL) and an unknown id all get the *same* ``404``, so a handheld
cannot probe which ids exist: command ids name parcels and lockers.

Each request reads through its own read-only connection (as the status page
does): this route can never change the outbox, and WAL lets it read while
ingest and the relay commit.
"""

from __future__ import annotations

import json
import sqlite3
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from common.logs import recorder
from gateway.http.auth import Credentials, handheld_login
from gateway.http.reply import Reply
from gateway.store.readonly import ReadOnlyStore, StoreUnavailable

record = recorder(__name__)

PREFIX = "/v1/commands"
MAX_ID = 128  # far above any id the platform issues; keeps junk out of the query
SCHEMA_NEEDED = 4  # commands.via


def _err(code: int, reason: str, zh: str, en: str) -> Reply:
    """The upload routes' error shape, ``{error, message: {zh, en}}``, so the
    handheld shows either language the same way for both APIs."""
    doc = {"error": reason, "message": {"zh": zh, "en": en}}
    headers = {"WWW-Authenticate": 'Basic realm="postedge"'} if code == 401 else None
    return Reply(code, json.dumps(doc, ensure_ascii=False).encode(), headers)


def _not_found() -> Reply:
    """One answer for "no such id" and "not yours": nothing to tell them apart by."""
    return _err(404, "unknown_command", "网关没有这条指令的记录", "No such command")


class CommandAPI:
    """The ``/v1/commands`` routes of one gateway; thread-safe (no shared
    connection, and ``Credentials`` locks itself)."""

    def __init__(self, db_path: Path | str, creds: Credentials | None) -> None:
        self.db_path = Path(db_path)
        self.creds = creds

    def handle(self, method: str, path: str, headers: Any) -> Reply:
        """One request under ``/v1/commands``. Never raises: the web server's
        handler thread gets an answer for every outcome, store trouble included."""
        try:
            return self._handle(method, path, headers)
        except (sqlite3.Error, StoreUnavailable) as e:
            return _err(503, "store_unavailable", f"网关数据库暂时不可用，请稍后重试（{e}）",
                        f"Gateway database unavailable, retry later ({e})")
        except Exception as e:
            record("web_error", path=path, error=repr(e), trace=traceback.format_exc(limit=5))
            return _err(500, "internal", "网关内部错误", "Internal error")

    def _handle(self, method: str, path: str, headers: Any) -> Reply:
        if method not in ("GET", "HEAD"):
            return _err(405, "method", "不支持的请求方法", f"Method {method} not allowed here")
        if self.creds is None:
            return _err(503, "commands_disabled", "网关未配置登录（缺少 web.passwd_file）",
                        "Command status is not configured on this gateway (web.passwd_file is not set)")
        # Authenticate before looking at the id: an anonymous caller learns
        # nothing, not even whether the route shape was right.
        got = handheld_login(self.creds, headers.get("Authorization"), _err,
                             "只有手持终端可以查询指令状态", "Only handhelds may read command status")
        if isinstance(got, Reply):
            return got
        principal = got
        rest = path.split("?", 1)[0][len(PREFIX):]
        if not rest.startswith("/") or "/" in rest[1:]:
            return _err(404, "no_route", "没有这个地址", f"No such route: {path}")
        cid = unquote(rest[1:])  # GatewayClient quotes the id; bad escapes become U+FFFD: 404
        if not cid or len(cid) > MAX_ID:
            return _not_found()
        return self._status(cid, principal.username)

    def _status(self, cid: str, handheld: str) -> Reply:
        store = ReadOnlyStore(self.db_path)
        try:
            if store.schema_version < SCHEMA_NEEDED:
                # The gateway's ingest migrates at start; until it has, no
                # command can name its forwarder.
                return _err(503, "store_not_migrated", "网关数据库尚未升级，请稍后重试",
                            "The gateway has not migrated its database yet; retry later")
            row = store.db.execute("SELECT id, device, op, status, ack FROM commands WHERE id=? AND via=?",
                                   (cid, handheld)).fetchone()
        finally:
            store.close()
        if row is None:
            return _not_found()
        i, device, op, status, ack = row
        try:
            ack_doc = json.loads(ack) if ack else None
        except ValueError:
            ack_doc = None  # relay.on_ack writes JSON; never fail the poll over one bad row
        doc = {"id": i, "device": device, "op": op, "status": status, "ack": ack_doc}
        return Reply(200, json.dumps(doc, ensure_ascii=False).encode())
