"""The courier handheld's photo queue and its resumable upload to the gateway.

A photo taken as evidence is copied into the queue (fsynced) before anything
else happens, so from then on it survives the app being killed, the battery
dying or the courier walking out of Wi-Fi range. Each photo is uploaded on
its own, in chunks, over HTTP to the outlet gateway (protocol and the reasons
for HTTP rather than MQTT chunks: ``gateway/uploads.py`` and
docs/gateway.md "Photo uploads"):

1. ``POST /v1/uploads`` announces the photo by SHA-256; the answer lists the
   chunks the gateway already has durably. A photo it already holds (the
   same bytes from this or another handheld) answers ``complete`` and no
   chunk is sent: de-duplication by content hash.
2. ``PUT`` only the chunks not confirmed, each with its own SHA-256; a chunk
   is recorded as confirmed in the local SQLite only when its ``204``
   arrives (the gateway sends it after its fsync). After a crash the
   gateway's list is the truth, so a chunk confirmed on the wire but not yet
   recorded here is not sent again either.
3. ``409`` (the assembled file's hash was wrong): start the file again.

The gateway's web server speaks plain HTTP on the outlet LAN: the Wi-Fi is
WPA2 with the outlet's key, the handheld logs in with its broker account
(HTTP Basic), and every chunk and the whole file are hash-checked, so
tampering shows; confidentiality of a bulletin-board photo on the outlet's
own Wi-Fi was judged not worth a private CA on every handheld. ``https://``
URLs work too (pass an ``ssl_context``) should an outlet terminate TLS in
front of the gateway.

``UploadClient`` is the protocol's client alone (stdlib only), also used by
the gateway to push finished photos upstream (``gateway/photo_sync.py``),
since the central side answers the same protocol.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import sqlite3
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from postedge.durable import write_durable

DEFAULT_CHUNK = 64 * 1024
JPEG_SOI = b"\xff\xd8\xff"

# Courier-facing messages, Simplified Chinese first (the courier's
# language), English for support staff.
MESSAGES: dict[str, tuple[str, str]] = {
    "gateway_unreachable": ("网关暂时无法连接，照片已保存，稍后自动重传",
                            "Gateway unreachable: the photo is kept and will be sent later"),
    "gateway_timeout": ("网关没有及时响应，照片已保存，稍后自动重传",
                        "The gateway did not answer in time: the photo is kept and will be sent later"),
    "unauthorized": ("网关拒绝了本机的登录（用户名或密码错误），照片已保存；请联系网点管理员",
                     "The gateway refused this handheld's login: photos are kept; call the outlet "
                     "administrator"),
    "forbidden": ("此账号不允许上传照片，照片已保存；请联系网点管理员",
                  "This account may not upload photos: photos are kept; call the outlet administrator"),
    "restarted": ("照片在网关校验失败，正在从头重新上传",
                  "The gateway found the photo damaged: sending it again from the start"),
    "gateway_full": ("网关存储空间已满，照片保留在本机，稍后重试",
                     "The gateway's storage is full: the photo stays on this handheld and is retried later"),
    "gateway_busy": ("网关正忙，照片已保存，稍后自动重传",
                     "The gateway is busy: the photo is kept and will be sent later"),
    "rejected": ("网关拒绝了这张照片，请联系网点管理员",
                 "The gateway refused this photo: call the outlet administrator"),
    "queue_damaged": ("本机保存的照片文件已损坏，无法上传，请重新拍摄",
                      "The photo file on this handheld is damaged and cannot be sent: take it again"),
}


def message(code: str) -> dict[str, str]:
    zh, en = MESSAGES.get(code, (f"上传出错（{code}）", f"Upload error ({code})"))
    return {"code": code, "zh": zh, "en": en}


class Unreachable(Exception):
    """No answer from the server (refused, reset, timed out, DNS)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


# ----------------------------------------------------------------- client

class UploadClient:
    """The upload protocol's client over one kept connection (when the
    server keeps it: the gateway's HTTP/1.0 server closes after each
    request, the central side keeps alive)."""

    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        path = u.path.rstrip("/")
        self.path = path if path.endswith("/uploads") else path + "/v1/uploads"
        self.timeout_s = timeout_s
        self.ctx = ssl_context
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": "Basic " + token, **(headers or {})}
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        hdrs = {**self.headers, **(headers or {})}
        for attempt in (0, 1):
            fresh = self.conn is None
            if self.conn is None:
                self.conn = (http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                                         context=self.ctx)
                             if self.https else
                             http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s))
            try:
                self.conn.request(method, self.path + path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except TimeoutError as e:
                self.close()
                raise Unreachable("gateway_timeout", str(e) or "timed out") from e
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if fresh or attempt:  # a kept connection closed while idle gets one retry
                    raise Unreachable("gateway_unreachable", f"{type(e).__name__}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise Unreachable("gateway_unreachable", f"{type(e).__name__}: {e}") from e
        raise Unreachable("gateway_unreachable", "no answer")  # pragma: no cover

    def begin(self, sha256: str, size: int, chunk_size: int, meta: dict[str, Any]
              ) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"sha256": sha256, "size": size, "chunk_size": chunk_size, "meta": meta}).encode()
        code, _, data = self.request("POST", "", body, {"Content-Type": "application/json"})
        return code, _json(data)

    def put(self, sha256: str, idx: int, chunk: bytes) -> tuple[int, bool, dict[str, Any]]:
        """(status, complete, error document)."""
        code, hdrs, data = self.request("PUT", f"/{sha256}/{idx}", chunk, {
            "Content-Type": "application/octet-stream", "X-Chunk-Sha256": hashlib.sha256(chunk).hexdigest()})
        return code, hdrs.get("x-upload-complete") == "true", _json(data)

    def state(self, sha256: str) -> tuple[int, dict[str, Any]]:
        code, _, data = self.request("GET", f"/{sha256}")
        return code, _json(data)


def _json(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data) if data else {}
    except ValueError:
        return {"raw": data[:200].decode("utf-8", "replace")}
    return doc if isinstance(doc, dict) else {"raw": doc}


@dataclass
class Outcome:
    """What one photo's attempt came to. ``stop``: do not try further
    photos in this run (the gateway is gone, full or refuses us)."""

    state: str  # done | partial | failed
    sent: int = 0
    error: str | None = None
    detail: str = ""
    stop: bool = False
    restarted: int = 0


def upload_bytes(client: UploadClient, data: bytes, sha256: str, meta: dict[str, Any], chunk_size: int,
                 known: Callable[[int, int, list[int]], None] = lambda cs, n, c: None,
                 confirmed: Callable[[int], None] = lambda idx: None,
                 restart: Callable[[], None] = lambda: None,
                 between: Callable[[], bool] = lambda: True) -> Outcome:
    """Upload one file's missing chunks: the protocol, without any queue.

    The callbacks let a caller record progress durably: ``known`` (the
    server's chunk size, count and confirmed list), ``confirmed`` (one chunk's
    204 arrived), ``restart`` (409: the file starts over). ``between`` is
    asked before every chunk; False pauses (``partial``), which is how the
    gateway yields the uplink to custody events.
    """
    out = Outcome("partial")
    for _ in range(3):  # POST again after a 409 or a 404 (partial expired), a few times at most
        try:
            code, st = client.begin(sha256, len(data), chunk_size, meta)
        except Unreachable as e:
            return Outcome("partial", out.sent, e.code, e.detail, stop=True, restarted=out.restarted)
        if code not in (200, 201):
            return _refused(code, st, out)
        if st.get("complete"):
            out.state = "done"
            return out
        cs, n = int(st["chunk_size"]), int(st["chunks"])
        have = {int(i) for i in st.get("confirmed", [])}
        known(cs, n, sorted(have))
        again = False
        for idx in range(n):
            if idx in have:
                continue
            if not between():
                return out
            try:
                code, complete, err = client.put(sha256, idx, data[idx * cs:(idx + 1) * cs])
            except Unreachable as e:
                out.error, out.detail, out.stop = e.code, e.detail, True
                return out
            if code == 204:
                out.sent += 1
                confirmed(idx)
                if complete:
                    out.state = "done"
                    return out
                continue
            if code in (404, 409):
                if code == 409:
                    out.restarted += 1
                    restart()
                again = True
                break
            return _refused(code, err, out)
        if not again:
            # Every chunk confirmed without the completing answer (another
            # handheld finished it meanwhile): ask.
            try:
                code, st = client.state(sha256)
            except Unreachable as e:
                return Outcome("partial", out.sent, e.code, e.detail, stop=True, restarted=out.restarted)
            if code == 200 and st.get("complete"):
                out.state = "done"
                return out
    out.error = out.error or "restarted"
    return out


def _refused(code: int, doc: dict[str, Any], out: Outcome) -> Outcome:
    detail = str(doc.get("message", {}).get("en") if isinstance(doc.get("message"), dict) else doc)[:300]
    out.detail = f"HTTP {code}: {detail}"
    if code == 401:
        out.error, out.stop = "unauthorized", True
    elif code == 403:
        out.error, out.stop = "forbidden", True
    elif code == 507:
        out.error, out.stop = "gateway_full", True
    elif code in (429, 503) or code >= 500:
        out.error, out.stop = "gateway_busy", True
    elif code in (413, 415):
        out.error, out.state = "rejected", "failed"  # this photo can never go; the next one may
    else:
        out.error = "rejected"  # 400: damaged in transit, or a bug; retried next run
    return out


# ------------------------------------------------------------------ queue

SCHEMA = """
CREATE TABLE IF NOT EXISTS photo_queue (
    sha256 TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    meta TEXT NOT NULL,
    added REAL NOT NULL,
    chunk_size INTEGER,
    chunks INTEGER,
    done_at REAL,
    failed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_detail TEXT,
    error_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS photo_chunks (
    sha256 TEXT NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (sha256, idx)
)
"""


class PhotoQueue:
    """Photos waiting for the gateway, in SQLite (WAL, ``synchronous=FULL``)
    next to a folder of their bytes. Its own table in its own file: the
    handheld's event outbox is a different module with different rules."""

    def __init__(self, db_path: Path | str, queue_dir: Path | str | None = None) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(queue_dir) if queue_dir else self.db_path.parent / "photo-queue"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.db_path), isolation_level=None, timeout=10)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                self.db.execute(stmt)

    def close(self) -> None:
        self.db.close()

    def add(self, photo: bytes | str | Path, meta: dict[str, Any] | None = None) -> str:
        """Queue a JPEG (bytes or a file); returns its SHA-256. The same
        bytes twice are queued once."""
        data = photo if isinstance(photo, bytes) else Path(photo).read_bytes()
        if not data.startswith(JPEG_SOI):
            raise ValueError("not a JPEG photo")
        sha = hashlib.sha256(data).hexdigest()
        if self.db.execute("SELECT 1 FROM photo_queue WHERE sha256=?", (sha,)).fetchone():
            return sha
        path = self.dir / f"{sha}.jpg"
        write_durable(path, data)  # the bytes are safe before the row says they are queued
        self.db.execute("INSERT OR IGNORE INTO photo_queue(sha256,file,size,meta,added) VALUES (?,?,?,?,?)",
                        (sha, path.name, len(data), json.dumps(meta or {}, ensure_ascii=False), time.time()))
        return sha

    def pending(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT sha256, file, size, meta FROM photo_queue WHERE done_at IS NULL AND "
                              "failed=0 ORDER BY added, rowid")
        return [{"sha256": s, "path": self.dir / f, "size": n, "meta": json.loads(m)} for s, f, n, m in cur]

    def status(self) -> list[dict[str, Any]]:
        """Per photo: chunks confirmed of total, done, and the last error as
        a courier message (zh/en)."""
        cur = self.db.execute(
            "SELECT q.sha256, q.size, q.chunks, q.done_at, q.failed, q.error, q.error_detail, q.error_at, "
            "(SELECT count(*) FROM photo_chunks c WHERE c.sha256=q.sha256) FROM photo_queue q "
            "ORDER BY q.added, q.rowid")
        out = []
        for sha, size, chunks, done_at, failed, err, detail, err_at, n in cur:
            done = done_at is not None
            out.append({"sha256": sha, "size": size, "chunks": chunks,
                        "confirmed": chunks if done and chunks else n, "done": done, "failed": bool(failed),
                        "error": None if err is None or done else {**message(err), "detail": detail,
                                                                   "at": err_at}})
        return out

    def confirmed(self, sha256: str) -> list[int]:
        return [i for (i,) in self.db.execute("SELECT idx FROM photo_chunks WHERE sha256=? ORDER BY idx",
                                              (sha256,))]

    # -- progress, each a committed transaction
    def plan(self, sha256: str, chunk_size: int, chunks: int, confirmed: list[int]) -> None:
        """The gateway's view replaces ours: it is the one that has the bytes."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("UPDATE photo_queue SET chunk_size=?, chunks=?, attempts=attempts+1 WHERE sha256=?",
                        (chunk_size, chunks, sha256))
        self.db.execute("DELETE FROM photo_chunks WHERE sha256=?", (sha256,))
        self.db.executemany("INSERT INTO photo_chunks(sha256,idx) VALUES (?,?)",
                            [(sha256, i) for i in confirmed])
        self.db.execute("COMMIT")

    def confirm(self, sha256: str, idx: int) -> None:
        self.db.execute("INSERT OR IGNORE INTO photo_chunks(sha256,idx) VALUES (?,?)", (sha256, idx))

    def restart(self, sha256: str) -> None:
        self.db.execute("DELETE FROM photo_chunks WHERE sha256=?", (sha256,))
        self.error(sha256, "restarted", "409 from the gateway")

    def error(self, sha256: str, code: str, detail: str = "") -> None:
        self.db.execute("UPDATE photo_queue SET error=?, error_detail=?, error_at=? WHERE sha256=?",
                        (code, detail[:500], time.time(), sha256))

    def done(self, sha256: str) -> None:
        """Confirmed complete by the gateway: drop the queued copy (the
        evidence store keeps its own), keep the row for status."""
        row = self.db.execute("SELECT file FROM photo_queue WHERE sha256=?", (sha256,)).fetchone()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("UPDATE photo_queue SET done_at=?, error=NULL, error_detail=NULL WHERE sha256=?",
                        (time.time(), sha256))
        self.db.execute("DELETE FROM photo_chunks WHERE sha256=?", (sha256,))
        self.db.execute("COMMIT")
        if row is not None:
            (self.dir / row[0]).unlink(missing_ok=True)

    def fail(self, sha256: str, code: str, detail: str = "") -> None:
        self.db.execute("UPDATE photo_queue SET failed=1 WHERE sha256=?", (sha256,))
        self.error(sha256, code, detail)


# --------------------------------------------------------------- uploader

@dataclass
class RunResult:
    done: list[str] = field(default_factory=list)
    sent_chunks: int = 0
    pending: int = 0
    error: dict[str, str] | None = None  # the courier's message when the run stopped early


class Uploader:
    """Sends the queue to the gateway, one photo at a time, oldest first.

    ``run_once`` returns after one pass; the app calls it on a timer and when
    Wi-Fi comes back. A stopped pass (gateway unreachable, login refused,
    gateway full) keeps every byte and every confirmed chunk, and says why in
    the courier's words. ``on_chunk`` and ``chunk_delay_s`` are test hooks."""

    def __init__(self, queue: PhotoQueue, base_url: str, username: str, password: str,
                 chunk_size: int = DEFAULT_CHUNK, timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None,
                 on_chunk: Callable[[str, int], None] | None = None, chunk_delay_s: float = 0.0) -> None:
        self.queue = queue
        self.client = UploadClient(base_url, username, password, timeout_s, ssl_context)
        self.chunk_size = chunk_size
        self.on_chunk = on_chunk
        self.chunk_delay_s = chunk_delay_s

    def run_once(self) -> RunResult:
        res = RunResult()
        try:
            for item in self.queue.pending():
                sha = item["sha256"]
                try:
                    data = item["path"].read_bytes()
                except OSError as e:
                    self.queue.fail(sha, "queue_damaged", str(e))
                    continue
                if hashlib.sha256(data).hexdigest() != sha:
                    self.queue.fail(sha, "queue_damaged", "hash of the queued file changed")
                    continue

                def confirmed(idx: int, sha: str = sha) -> None:
                    self.queue.confirm(sha, idx)
                    if self.on_chunk:
                        self.on_chunk(sha, idx)

                def between() -> bool:
                    if self.chunk_delay_s:
                        time.sleep(self.chunk_delay_s)
                    return True

                out = upload_bytes(self.client, data, sha, item["meta"], self.chunk_size,
                                   known=lambda cs, n, c, sha=sha: self.queue.plan(sha, cs, n, c),
                                   confirmed=confirmed,
                                   restart=lambda sha=sha: self.queue.restart(sha), between=between)
                res.sent_chunks += out.sent
                if out.state == "done":
                    self.queue.done(sha)
                    res.done.append(sha)
                elif out.state == "failed":
                    self.queue.fail(sha, out.error or "rejected", out.detail)
                elif out.error:
                    self.queue.error(sha, out.error, out.detail)
                if out.stop:
                    res.error = {**message(out.error or "gateway_unreachable"), "detail": out.detail}
                    break
        finally:
            self.client.close()
        res.pending = len(self.queue.pending())
        return res


def main(argv: list[str] | None = None) -> int:
    """``python -m handheld.uploader``: one pass over the queue (also the
    tests' kill target: it prints a line per confirmed chunk)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--db", type=Path, required=True, help="the photo queue's SQLite file")
    ap.add_argument("--url", required=True, help="the gateway, e.g. http://192.168.4.1:8080")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--add", type=Path, action="append", default=[], help="queue this JPEG first")
    ap.add_argument("--meta", default="{}", help="JSON meta for --add")
    ap.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    ap.add_argument("--chunk-delay", type=float, default=0.0, help="test hook: sleep before each chunk")
    args = ap.parse_args(argv)
    q = PhotoQueue(args.db)
    for p in args.add:
        print(json.dumps({"evt": "queued", "sha256": q.add(p, json.loads(args.meta))}), flush=True)

    def on_chunk(sha: str, idx: int) -> None:
        print(json.dumps({"evt": "chunk", "sha256": sha, "idx": idx}), flush=True)

    res = Uploader(q, args.url, args.user, args.password, args.chunk_size, on_chunk=on_chunk,
                   chunk_delay_s=args.chunk_delay).run_once()
    print(json.dumps({"evt": "run", "done": res.done, "sent_chunks": res.sent_chunks, "pending": res.pending,
                      "error": res.error}, ensure_ascii=False), flush=True)
    q.close()
    return 0 if res.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
