"""The gateway's HTTP server under hostile clients.

Real pieces only: ``start_web`` on a loopback port in this process (so the
process's own thread count and RSS are the server's), raw TCP sockets as
the hostile clients, a Mosquitto password file and ACL written by
``gateway/broker.py``, SQLite files, JPEGs made by OpenCV, and the
handheld's own ``Uploader`` as the honest client.

Numbers from one run on the 2-core CI box (old ``ThreadingHTTPServer`` in
brackets): 300 idle connections, +1 thread [+303]; 150 anonymous 1 MiB
PUTs, RSS +2 MiB [+158 MiB].
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from common.ports import free_port
from gateway.broker import Account, write_config
from gateway.http import status as gweb
from gateway.http.server import WebService, start_web
from gateway.http.uploads import jpeg_size
from gateway.store.budget import Budget, BudgetConfig
from gateway.store.events import EventStore, StoredEvent
from gateway.store.photos import PHOTO_LIMIT_KEY, mark_photo_synced, photo_path
from handheld.uploader import PhotoQueue, Uploader
from protocol import envelope
from protocol.ids import format_event_id

PW = {"hh01": "hh01-pw", "hh02": "hh02-pw", "lk01": "lk01-pw"}
CHUNK = 16 * 1024
INC = "0badc0de"


def jpeg(seed: int = 1, w: int = 480, h: int = 360) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def proc_status(field: str) -> int:
    """A number from /proc/self/status (Threads, VmRSS in kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def auth(user: str, pw: str | None = None) -> str:
    return "Basic " + base64.b64encode(f"{user}:{PW[user] if pw is None else pw}".encode()).decode()


class Web:
    """``start_web`` over a migrated store, stopped at the end."""

    def __init__(self, root: Path, passwd: Path | None = None, **web: Any) -> None:
        self.db = root / "gw" / "gateway.db"
        EventStore(self.db).close()
        cfg: dict[str, Any] = {"host": "127.0.0.1", "port": 0, **web}
        if passwd is not None:
            cfg["passwd_file"] = str(passwd)
        self.stop_event = threading.Event()
        self.svc: WebService = start_web(self.db, cfg, self.stop_event)

    @property
    def port(self) -> int:
        return self.svc.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | None = None, user: str | None = "hh01",
                headers: dict[str, str] | None = None, timeout: float = 5
                ) -> tuple[int, dict[str, str], bytes]:
        h = dict(headers or {})
        if user is not None:
            h["Authorization"] = auth(user)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def put_chunk(self, sha: str, idx: int, part: bytes, user: str = "hh01"
                  ) -> tuple[int, dict[str, str], bytes]:
        return self.request("PUT", f"/v1/uploads/{sha}/{idx}", part, user=user,
                            headers={"X-Chunk-Sha256": hashlib.sha256(part).hexdigest()})

    def begin(self, data: bytes, sha: str | None = None, user: str = "hh01") -> tuple[int, dict[str, Any]]:
        doc = {"sha256": sha or hashlib.sha256(data).hexdigest(), "size": len(data), "chunk_size": CHUNK}
        code, _, body = self.request("POST", "/v1/uploads", json.dumps(doc).encode(), user=user)
        return code, json.loads(body)

    def stop(self) -> None:
        self.stop_event.set()
        self.svc.join(10)
        assert not self.svc.is_alive()


@pytest.fixture
def passwd(tmp_path: Path) -> Path:
    accounts = [Account("gw-o1", "gw-secret", "o1", "gateway"), Account("hh01", PW["hh01"], "o1", "handheld"),
                Account("hh02", PW["hh02"], "o1", "handheld"), Account("lk01", PW["lk01"], "o1", "locker")]
    return write_config(tmp_path / "broker", free_port(), accounts).parent / "passwd"


@pytest.fixture
def gw(tmp_path: Path, passwd: Path) -> Iterator[Web]:
    w = Web(tmp_path, passwd)
    try:
        yield w
    finally:
        w.stop()


# ------------------------------------------------------ finding 3: one alarm, whole page down

def _alarm(store: EventStore, seq: int, body: dict[str, Any]) -> None:
    eid = format_event_id("lk01", INC, seq)
    now = int(time.time())
    payload = envelope.encode(envelope.make(eid, now, "locker.alarm", "alarm", body))
    store.commit_events([StoredEvent(eid, "o1", "locker", "lk01", INC, seq, "alarm", "locker.alarm", now,
                                     payload)])


def test_alarm_fields_named_like_formatter_arguments_do_not_break_the_page(tmp_path: Path) -> None:
    w = Web(tmp_path)
    try:
        store = EventStore(w.db)
        _alarm(store, 1, {"alarm": "x", "lang": "zh", "key": "..", "n": 3})
        _alarm(store, 2, {"alarm": "lockout", "seconds": 30, "lang": "en", "key": "title", "kw": 1})
        _alarm(store, 3, {"alarm": "where", "compartment": 4, "id": "{id}"})
        store.close()
        for path in ("/", "/?lang=en", "/fragment", "/fragment?lang=en", "/api/status"):
            code, _, body = w.request("GET", path, user=None)
            assert code == 200, (path, body[:300])
        doc = json.loads(w.request("GET", "/api/status", user=None)[2])
        texts = {a["id"].rsplit(":", 1)[1]: a["text"] for a in doc["alarms"]}
        assert texts["1"] == {"zh": "警报：x", "en": "Alarm: x"}
        assert texts["2"]["zh"] == "取件码错误次数过多，已暂停取件 30 秒"
        assert texts["3"]["en"] == "Compartment 4: alarm: where"  # not the location template
    finally:
        w.stop()


def test_a_row_that_cannot_render_is_a_placeholder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the next unforeseen failure in one row is, the rest of the
    page is served and the row says it could not be shown."""
    w = Web(tmp_path)
    try:
        store = EventStore(w.db)
        _alarm(store, 1, {"alarm": "door_forced", "compartment": 2})
        _alarm(store, 2, {"alarm": "door_left_open", "poison": True})
        store.close()
        real = gweb._alarm_text

        def fragile(body: dict[str, Any], lang: str) -> str:
            if body.get("poison"):
                raise RuntimeError("a shape nobody foresaw")
            return real(body, lang)

        monkeypatch.setattr(gweb, "_alarm_text", fragile)
        code, _, body = w.request("GET", "/?lang=en", user=None)
        assert code == 200
        page = body.decode()
        assert "Alarm (its details cannot be shown)" in page and "Compartment 2: door forced open" in page
        code, _, body = w.request("GET", "/fragment", user=None)
        assert code == 200 and "警报（内容无法显示）" in body.decode()
        assert w.request("GET", "/api/status", user=None)[0] == 200
    finally:
        w.stop()


# ------------------------------------------------------ finding 4: exhaustion without a login

def test_idle_connections_cost_no_threads_and_are_closed(tmp_path: Path) -> None:
    w = Web(tmp_path, idle_timeout_s=2)
    socks: list[socket.socket] = []
    try:
        assert w.request("GET", "/healthz", user=None)[0] == 200  # pool threads exist before counting
        threads0 = proc_status("Threads")
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", w.port), timeout=5)
            socks.append(s)
        # Half of them start a request and never finish its head (slowloris).
        for s in socks[::2]:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.5)
        t0 = time.monotonic()
        code, _, _ = w.request("GET", "/api/status", user=None, timeout=2)
        took = time.monotonic() - t0
        threads = proc_status("Threads")
        print(f"300 idle connections: +{threads - threads0} threads, GET in {took * 1000:.0f} ms")
        assert code == 200 and took < 1.0
        assert threads - threads0 <= 6, threads - threads0
        # Every one of them is closed by the server once idle for 2 s.
        deadline = time.monotonic() + 8
        open_ = set(range(len(socks)))
        for s in socks:
            s.setblocking(False)
        while open_ and time.monotonic() < deadline:
            for i in list(open_):
                try:
                    if socks[i].recv(4096) == b"":
                        open_.discard(i)
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(i)  # reset: closed too
            time.sleep(0.1)
        assert not open_, f"{len(open_)} idle connections still open"
        assert w.request("GET", "/healthz", user=None)[0] == 200
    finally:
        for s in socks:
            s.close()
        w.stop()


def _flood(port: int, n: int, body: bytes, head: bytes) -> dict[str, int]:
    """``n`` connections each sending ``head`` and then as much of ``body``
    as the server takes, all at once, from one thread; returns the status
    codes read back (or "reset"/"none")."""
    sel = selectors.DefaultSelector()
    state: dict[socket.socket, dict[str, Any]] = {}
    shared = memoryview(body)  # one copy of the body for every connection: the client costs no RSS
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        s.sendall(head)
        state[s] = {"out": shared, "in": b""}
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    codes: dict[str, int] = {}
    deadline = time.monotonic() + 30
    try:
        while state and time.monotonic() < deadline:
            for key, ev in sel.select(0.5):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                st = state[s]
                done = None
                try:
                    if ev & selectors.EVENT_READ:
                        chunk = s.recv(65536)
                        st["in"] += chunk
                        if b"\r\n" in st["in"]:
                            done = st["in"].split(b" ", 2)[1].decode()
                        elif chunk == b"":
                            done = "none"
                    if done is None and ev & selectors.EVENT_WRITE and st["out"]:
                        sent = s.send(st["out"][:262144])
                        st["out"] = st["out"][sent:]
                        if not st["out"]:
                            sel.modify(s, selectors.EVENT_READ)
                except (BrokenPipeError, ConnectionResetError):
                    done = st["in"].split(b" ", 2)[1].decode() if b"\r\n" in st["in"] else "reset"
                except BlockingIOError:
                    pass
                if done is not None:
                    codes[done] = codes.get(done, 0) + 1
                    sel.unregister(s)
                    s.close()
                    del state[s]
    finally:
        for s in state:
            s.close()
        codes["timeout"] = len(state)
    return codes


def test_anonymous_put_bodies_are_refused_unread(gw: Web) -> None:
    mib = bytes(os.urandom(1024 * 1024))
    sha = hashlib.sha256(b"x").hexdigest()
    head = (f"PUT /v1/uploads/{sha}/0 HTTP/1.1\r\nHost: gw\r\nContent-Length: {len(mib)}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    # The head alone, no body byte yet: answered at once, nothing awaited.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=2) as s:
        s.sendall(head)
        got = s.recv(4096)
    assert got.startswith(b"HTTP/1.1 401"), got[:100]
    assert b"connection: close" in got.lower()
    # With a wrong password too: the login is checked before the body.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=2) as s:
        s.sendall(head.replace(b"\r\n\r\n", f"\r\nAuthorization: {auth('hh01', 'nope')}\r\n\r\n".encode()))
        assert s.recv(4096).startswith(b"HTTP/1.1 401")

    _flood(gw.port, 5, mib, head)  # warm-up: allocator arenas, pool threads
    rss0 = proc_status("VmRSS")
    threads0 = proc_status("Threads")
    codes = _flood(gw.port, 150, mib, head)
    rss = proc_status("VmRSS")
    grew_mib = (rss - rss0) / 1024
    print(f"150 anonymous 1 MiB PUTs: {codes}, RSS +{grew_mib:.1f} MiB, "
          f"+{proc_status('Threads') - threads0} threads")
    # A refused client still sending when the server closes may see a reset
    # instead of the 401 (the kernel drops the unread answer): both are the
    # server refusing without reading. What may not happen is a wait.
    assert codes["timeout"] == 0, codes
    assert codes.get("401", 0) + codes.get("reset", 0) == 150, codes
    assert codes.get("401", 0) >= 30, codes
    assert grew_mib < 20, f"RSS grew {grew_mib:.1f} MiB"
    # And the server still serves its clerk and its handhelds.
    assert gw.request("GET", "/healthz", user=None)[0] == 200
    assert gw.begin(jpeg(1))[0] == 201


def test_connections_beyond_the_cap_evict_idle_ones_first(tmp_path: Path) -> None:
    w = Web(tmp_path, max_connections=8, idle_timeout_s=30)
    socks = [socket.create_connection(("127.0.0.1", w.port), timeout=5) for _ in range(20)]
    try:
        time.sleep(0.3)
        code, _, _ = w.request("GET", "/healthz", user=None, timeout=2)
        assert code == 200  # an idle connection made room
        closed = busy = 0
        for s in socks:
            s.settimeout(0.2)
            try:
                got = s.recv(64)
                closed += got == b""  # evicted: idle the longest
                busy += got.startswith(b"HTTP/1.1 503")  # arrived in one burst beyond the cap
            except TimeoutError:
                pass
            except OSError:
                closed += 1
        print(f"20 connections, cap 8: {closed} evicted, {busy} answered 503")
        assert closed + busy >= 20 - 8 + 1, (closed, busy)
        assert closed >= 1, (closed, busy)
    finally:
        for s in socks:
            s.close()
        w.stop()


def test_request_timeout_closes_a_slow_body(passwd: Path, tmp_path: Path) -> None:
    w = Web(tmp_path, passwd, request_timeout_s=1)
    try:
        sha = hashlib.sha256(b"y").hexdigest()
        with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
            s.sendall(f"PUT /v1/uploads/{sha}/0 HTTP/1.1\r\nHost: gw\r\nAuthorization: {auth('hh01')}\r\n"
                      f"Content-Length: {CHUNK}\r\n\r\n".encode() + b"\xff" * 100)
            t0 = time.monotonic()
            got = s.recv(4096)
            assert got.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 3, got[:80]
    finally:
        w.stop()


# ------------------------------------------------------ finding 6: uploads sabotaged, photos kept forever

def test_another_handheld_cannot_touch_an_upload_and_chunks_are_immutable(gw: Web, tmp_path: Path) -> None:
    photo = jpeg(2)
    sha = hashlib.sha256(photo).hexdigest()
    chunks = -(-len(photo) // CHUNK)
    assert gw.begin(photo)[0] == 201
    c0 = photo[:CHUNK]
    assert gw.put_chunk(sha, 0, c0)[0] == 204

    # hh02 re-PUTs the confirmed chunk with its own bytes and hash: it is
    # not hh02's upload, and it reads as unknown.
    evil = os.urandom(CHUNK)
    code, _, body = gw.put_chunk(sha, 0, evil, user="hh02")
    assert code == 404 and json.loads(body)["error"] == "unknown_upload"
    assert gw.put_chunk(sha, 1, evil, user="hh02")[0] == 404
    code, _, body = gw.request("GET", f"/v1/uploads/{sha}", user="hh02")
    unknown = gw.request("GET", f"/v1/uploads/{'a' * 64}", user="hh02")
    assert (code, body) == (unknown[0], unknown[2])  # nothing tells them apart
    code, doc = gw.begin(photo, user="hh02")
    assert code == 409 and doc["error"] == "in_progress_elsewhere" and "chunks" not in doc

    # The owner cannot change a confirmed chunk either; the same bytes are fine.
    code, _, body = gw.put_chunk(sha, 0, evil)
    doc = json.loads(body)
    assert code == 409 and doc["error"] == "chunk_conflict" and "不能更改" in doc["message"]["zh"]
    assert gw.put_chunk(sha, 0, c0)[0] == 204
    assert (gw.db.parent / "uploads" / sha / "0").read_bytes() == c0

    # The owner's upload completes, intact.
    q = PhotoQueue(tmp_path / "hh01" / "queue.db")
    q.add(photo, {})
    res = Uploader(q, gw.url, "hh01", PW["hh01"], chunk_size=CHUNK, timeout_s=3).run_once()
    assert res.done == [sha] and res.sent_chunks == chunks - 1
    assert photo_path(gw.db, sha).read_bytes() == photo
    # A finished photo is content-addressed: the same bytes from hh02 are a duplicate.
    code, doc = gw.begin(photo, user="hh02")
    assert code == 200 and doc["complete"] is True


def test_only_decodable_photos_of_sane_size_are_kept(gw: Web) -> None:
    # a JPEG start, one standalone marker (TEM) and then fixed noise with no 0xFF byte: no
    # marker after it, so never a frame header that happens to name a size (random bytes
    # right after the start did, now and then: refused as bad_dimensions instead)
    junk = b"\xff\xd8\xff\x01" + bytes(b % 255 for b in random.Random(14).randbytes(3 * CHUNK))
    sha = hashlib.sha256(junk).hexdigest()
    assert gw.begin(junk)[0] == 201
    n = -(-len(junk) // CHUNK)
    for i in range(n):
        code, _, body = gw.put_chunk(sha, i, junk[i * CHUNK:(i + 1) * CHUNK])
        if code != 204:
            break
    doc = json.loads(body)
    assert code == 415 and doc["error"] == "not_image", doc
    assert not photo_path(gw.db, sha).exists() and not (gw.db.parent / "uploads" / sha).exists()
    assert gw.request("HEAD", f"/v1/uploads/{sha}")[0] == 404  # gone, quota freed

    # A real JPEG whose frame header claims 60000 x 60000 px: refused on
    # its first chunk, before anything tries to decode it.
    real = bytearray(jpeg(3))
    assert jpeg_size(bytes(real)) == (480, 360)
    sof = next(i for i in range(2, len(real) - 1) if real[i] == 0xFF and real[i + 1] in (0xC0, 0xC2))
    real[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2
    bomb = bytes(real)
    bsha = hashlib.sha256(bomb).hexdigest()
    assert gw.begin(bomb)[0] == 201
    code, _, body = gw.put_chunk(bsha, 0, bomb[:CHUNK])
    doc = json.loads(body)
    assert code == 415 and doc["error"] == "bad_dimensions" and "60000" in doc["message"]["en"]


def test_per_device_quotas(gw: Web) -> None:
    big = 20 * 1024 * 1024
    codes = []
    for i in range(4):
        doc = {"sha256": hashlib.sha256(bytes([i])).hexdigest(), "size": big, "chunk_size": 1024 * 1024}
        code, _, body = gw.request("POST", "/v1/uploads", json.dumps(doc).encode())
        codes.append((code, json.loads(body).get("error")))
    assert codes[:3] == [(201, None)] * 3 and codes[3] == (429, "partial_bytes")
    # Another handheld has its own quota.
    doc = {"sha256": hashlib.sha256(b"hh02").hexdigest(), "size": big, "chunk_size": 1024 * 1024}
    assert gw.request("POST", "/v1/uploads", json.dumps(doc).encode(), user="hh02")[0] == 201
    for i in range(5):  # count of open uploads: 3 + 5 = 8 allowed, the 9th not
        doc = {"sha256": hashlib.sha256(bytes([10 + i])).hexdigest(), "size": 5000, "chunk_size": CHUNK}
        assert gw.request("POST", "/v1/uploads", json.dumps(doc).encode())[0] == 201
    doc = {"sha256": hashlib.sha256(b"ninth").hexdigest(), "size": 5000, "chunk_size": CHUNK}
    code, _, body = gw.request("POST", "/v1/uploads", json.dumps(doc).encode())
    assert code == 429 and json.loads(body)["error"] == "too_many_partial"


def test_photos_are_a_budget_class_and_leave_once_synced(gw: Web, tmp_path: Path) -> None:
    photo = jpeg(4)
    sha = hashlib.sha256(photo).hexdigest()
    q = PhotoQueue(tmp_path / "hh01" / "queue.db")
    q.add(photo, {})
    assert Uploader(q, gw.url, "hh01", PW["hh01"], chunk_size=CHUNK).run_once().done == [sha]
    store = EventStore(gw.db)
    try:
        budget = Budget(store, BudgetConfig(photos_bytes=len(photo) + 1000))
        assert budget.photos_used() == len(photo)
        assert budget.used() == budget.events_used() + len(photo)
        out = budget.enforce()
        assert out["photos"] == {"bytes": len(photo), "limit": len(photo) + 1000, "dropped": 0}
        assert store.get(PHOTO_LIMIT_KEY) == str(len(photo) + 1000)
        # The photo share is full: the next photo stays on the handheld (507).
        code, doc = gw.begin(jpeg(5))
        assert code == 507 and doc["error"] == "photo_budget"
        # Unsynced photos are never evicted, however tight the budget.
        Budget(store, BudgetConfig(max_bytes=0, reserve_bytes=0)).enforce()
        assert photo_path(gw.db, sha).read_bytes() == photo

        assert mark_photo_synced(store, sha)  # the platform acked it
        assert not photo_path(gw.db, sha).exists()
        assert budget.photos_used() == 0
        budget.enforce()  # publishes the share again (the tight pass above set it to 0)
        assert gw.begin(jpeg(5))[0] == 201  # room again
        # A synced photo a crash left on disk goes at the next budget pass.
        photo_path(gw.db, sha).write_bytes(photo)
        assert budget.enforce()["photos"]["dropped"] == 1 and not photo_path(gw.db, sha).exists()
        # The same bytes later still de-duplicate (the platform has them).
        code, doc = gw.begin(photo, user="hh02")
        assert code == 200 and doc["complete"] is True
    finally:
        store.close()
