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

The protocol's client alone (``UploadClient`` in ``common/upload_client.py``,
stdlib only) is shared with the gateway, which pushes finished photos upstream
(``gateway/photo_sync.py``): the central side answers the same protocol.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.durable import write_durable
from common.upload_client import DEFAULT_CHUNK, UploadClient, upload_bytes
from handheld.text import TEXT

JPEG_SOI = b"\xff\xd8\xff"


def message(code: str) -> dict[str, str]:
    """The courier's text for an upload error (``upload.<code>``). Codes are kept in the
    queue's database, so one this version has no words for (written by another
    version of the upload client) gets the generic text naming it."""
    key = "upload." + code
    text = TEXT.both(key) if TEXT.has(key) else TEXT.both("upload.error", code=code)
    return {"code": code, **text}


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
