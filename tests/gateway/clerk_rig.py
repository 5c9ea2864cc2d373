"""A gateway web server with the clerk console over a real SQLite store,
and a plain HTTP client that keeps one cookie jar (no redirects followed),
for tests/gateway/test_clerk_*.py."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from common import session as S
from gateway.broker import Account, write_config
from gateway.http.server import WebService, start_web
from gateway.store import clerks
from gateway.store.events import EventStore, StoredEvent
from protocol import envelope
from protocol.ids import format_event_id

INC = "0c1e2a3b"
OUTLET = "o1"
PARCEL = "RB123456785CN"
XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
PASSWORDS = {"anna": "anna-pass-1234", "bo": "bo-pass-12345", "chen": "chen-pass-123"}
ROLES = {"anna": "supervisor", "bo": "clerk", "chen": "clerk"}
#: A scanner the outlet's broker has a login for that never connected.
NEVER = "sc02"
LINK_SINCE_S = 2 * 3600 + 5 * 60  # the gateway's broker link came up this long ago
SYNCED_S = 7 * 60  # the last successful upload, this long ago


def event(dev: str, seq: int, etype: str, cls: str, body: dict[str, Any], kind: str = "locker",
          ts: int | None = None) -> StoredEvent:
    eid = format_event_id(dev, INC, seq)
    t = int(time.time()) if ts is None else ts
    return StoredEvent(eid, OUTLET, kind, dev, INC, seq, cls, etype, t,
                       envelope.encode(envelope.make(eid, t, etype, cls, body, boot=1)))


def locker_state() -> dict[str, Any]:
    comps = [{"id": i, "size": "M", "state": "free"} for i in range(1, 7)]
    comps[2]["state"] = "occupied"
    comps[4]["state"] = "overdue"
    return {"v": 1, "ts": int(time.time()), "compartments": comps, "retrieval": [5],
            "outbox": {"used": 0, "pending": 0, "capacity": 65536}}


def provisioned(root: Path, db: Path, upstream: bool = False) -> dict[str, Any]:
    """``start_web`` arguments for a gateway as provisioning leaves it: the outlet
    broker's files (``gateway/broker.py``, as ``postedge gateway provision`` writes them)
    with logins for the rig's locker and scanner and for :data:`NEVER`, ``[upstream]``
    configured or not; and in the store what the running gateway's ingest and syncer
    write: its broker link (up since :data:`LINK_SINCE_S` ago) and its last successful
    upload (:data:`SYNCED_S` ago). For ``Rig(root, web=lambda db: provisioned(root, db))``."""
    conf = write_config(root / "broker", 1883, [
        Account("gw-o1", "gw-secret", OUTLET, "gateway"), Account("lk01", "lk-secret", OUTLET, "locker"),
        Account("sc01", "sc-secret", OUTLET, "scanner"), Account(NEVER, "sc2-secret", OUTLET, "scanner")])
    store = EventStore(db)
    now = time.time()
    try:
        with store.tx():
            store.put("broker_link", json.dumps({"up": True, "since": now - LINK_SINCE_S}))
            store.put("last_sync_at", f"{now - SYNCED_S:.3f}")
    finally:
        store.close()
    return {"upstream": upstream,
            "cfg": {"passwd_file": str(conf.parent / "passwd"), "acl_file": str(conf.parent / "acl")}}


class Rig:
    """The store filled as a morning at the outlet: a locker with a parcel,
    two fresh alarms (one ordinary, one critical), a scan feed with a good,
    a misrouted and a refused scan, and device text that tries HTML."""

    def __init__(self, root: Path, web: Callable[[Path], dict[str, Any]] | None = None) -> None:
        """``web``: more ``start_web`` arguments (a counter desk, the
        notifier key file; ``cfg``: more of ``[web]``), made once the store
        exists."""
        self.db = root / "gw" / "gateway.db"
        store = EventStore(self.db)
        now = time.time()
        store.presence("lk01", OUTLET, "locker", True, now - 3600)
        store.device_state("lk01", OUTLET, "locker", json.dumps(locker_state()), now)
        store.presence("sc01", OUTLET, "scanner", True, now - 3600)
        self.alarm_ordinary = format_event_id("lk01", INC, 1)
        self.alarm_critical = format_event_id("lk01", INC, 2)
        store.commit_events([
            event("lk01", 1, "locker.alarm", "alarm", {"alarm": "door_left_open", "compartment": 2}),
            event("lk01", 2, "locker.alarm", "alarm", {"alarm": "door_forced", "compartment": 4}),
            event("lk01", 3, "locker.deposit", "custody",
                  {"compartment": 3, "parcel": PARCEL, "courier": "c007", "phone_tail": "5678",
                   "reason": XSS}),
            event("lk01", 4, "locker.deposit", "custody", {"compartment": 5, "parcel": "EE000000002CN"}),
            event("lk01", 5, "locker.overdue", "custody", {"compartment": 5, "parcel": "EE000000002CN"}),
            event("sc01", 1, "scanner.intake", "custody", {"parcel": "RR111111119CN", "kind": "s10"},
                  kind="scanner"),
            event("sc01", 2, "scanner.misrouted", "custody", {"parcel": "RR222222228CN", "kind": "s10"},
                  kind="scanner"),
            event("sc01", 3, "scanner.invalid", "telemetry",
                  {"reason": "s10_check_digit", "detail": "x", "text": XSS}, kind="scanner"),
            event("sc01", 4, "scanner.intake", "custody",
                  {"parcel": "RR333333337CN", "kind": "s10", "dest_outlet": "o9"}, kind="scanner"),
        ])
        with store.tx():
            clerks.ensure(store.db)
            for name, pw in PASSWORDS.items():
                # the lowest cost the checker accepts: the rig logs in hundreds of times
                clerks.add_clerk(store.db, name, ROLES[name], S.hash_password(pw, log_n=10))
        store.close()
        self.stop_event = threading.Event()
        more = web(self.db) if web else {}
        cfg = {"host": "127.0.0.1", "port": 0, **more.pop("cfg", {})}
        self.svc: WebService = start_web(self.db, cfg, self.stop_event, OUTLET, "gw-o1", **more)

    @property
    def port(self) -> int:
        return self.svc.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Client:
        return Client(self.port)

    def store(self) -> EventStore:
        return EventStore(self.db)

    def own_events(self, etype: str) -> list[dict[str, Any]]:
        store = self.store()
        try:
            rows = store.db.execute("SELECT id, payload, synced_at FROM events WHERE type=? ORDER BY rowid",
                                    (etype,)).fetchall()
        finally:
            store.close()
        return [{"id": i, **json.loads(p), "synced_at": s} for i, p, s in rows]

    def close(self) -> None:
        self.stop_event.set()
        self.svc.join(10)


class Client:
    """HTTP/1.1 with one cookie jar, redirects not followed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.last_set_cookie = ""

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None, raw: bytes | None = None
                ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = raw
        if form is not None:
            body = urlencode(form).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            text = r.read().decode()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            sc = r.getheader("Set-Cookie")
        finally:
            conn.close()
        if sc:
            self.last_set_cookie = sc
            name, _, rest = sc.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in sc:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return r.status, hdrs, text

    def get(self, path: str) -> tuple[int, dict[str, str], str]:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str], **kw: Any) -> tuple[int, dict[str, str], str]:
        return self.request("POST", path, form, **kw)

    def login(self, name: str, password: str | None = None) -> int:
        code, _, _ = self.post("/clerk/login", {"name": name, "password": password or PASSWORDS[name]})
        return code

    def csrf(self) -> str:
        code, _, html = self.get("/clerk?lang=en")
        assert code == 200, (code, html[:300])
        m = re.search(r'name="csrf" value="([^"]+)"', html)
        assert m, html[:500]
        return m.group(1)
