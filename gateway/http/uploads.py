"""Photo uploads from the couriers' handhelds: chunked, resumable, content-addressed.

Why HTTP to the gateway and not MQTT chunks:

1. The ``204`` answer to a chunk is sent by *this* code after the chunk's
   file is fsynced and its row committed: an end-to-end confirmation from
   the gateway's disk. An MQTT PUBACK comes from Mosquitto's memory, not
   from the gateway's disk, so a handheld could drop a chunk the gateway
   never stored.
2. ``HEAD``/``GET`` (and the answer to ``POST``) say exactly which chunks
   are confirmed, so a resumed upload sends only the missing ones (ODK
   Collect re-sends the whole file on retry, collect#7356).
3. Big bodies stay out of the broker: no fight with its message size limit,
   and no megabytes queued in its memory for offline subscribers.

The photo's evidence record still travels as an ordinary device event over
MQTT and names the photo by its SHA-256; this module only moves bytes.

Protocol (every route needs HTTP Basic with the handheld's *broker*
username and password, checked against Mosquitto's password file; only
``handheld`` accounts may upload):

``POST /v1/uploads``  JSON ``{sha256, size, chunk_size, meta}`` -> ``201``
    (new) or ``200`` (known) with ``{sha256, size, chunk_size, chunks,
    confirmed: [idx...], complete}``. Same hash again is idempotent; a
    photo the gateway already holds answers ``complete: true`` at once:
    that is the de-duplication by content hash. The gateway's
    ``chunk_size`` wins over the one asked for (a second handheld resuming
    the same bytes must cut them the same way).
``PUT /v1/uploads/<sha256>/<idx>``  body = the chunk, header
    ``X-Chunk-Sha256`` = its hex SHA-256 -> ``204`` after the durable
    commit, with ``X-Upload-Complete: true`` once the whole file is in.
    Wrong size or hash -> ``400`` (counted, nothing stored); the last chunk
    completing a file whose whole-file hash is wrong -> ``409``, the chunks
    are discarded and the handheld starts that file again; a file that is
    not a decodable photo of sane dimensions -> ``415``, discarded.
    A confirmed chunk is immutable: the same bytes again -> ``204``,
    other bytes -> ``409 chunk_conflict`` (another handheld's re-PUT must
    not overwrite it and fail the owner's file).

An upload belongs to the handheld that opened it: another account's
``PUT``/``HEAD``/``GET`` reads exactly as an unknown upload (``404``),
its ``POST`` of the same unfinished hash is ``409 in_progress_elsewhere``.
The login is checked from the request head (``admit``) before the web
server reads any body.
``HEAD|GET /v1/uploads/<sha256>``  the state: headers ``X-Upload-Chunks``,
    ``X-Upload-Received``, ``X-Upload-Complete`` and ``X-Upload-Confirmed``
    (index ranges such as ``0-11,14``); ``GET`` adds the JSON body.

Storage: one row per photo in ``uploads`` and one per confirmed chunk in
``upload_chunks`` (store migration 3); chunk *bytes* are files under
``<db dir>/uploads/<sha256>/<idx>``, written and fsynced (file and folder)
before the row commits, so a confirmed chunk is always on disk and a crash
before the commit leaves only an orphan file the resend overwrites. Files
rather than BLOBs keep the event database small (WAL checkpoints, the disk
budget's row arithmetic and the backup copy all stay about events), and a
finished photo is one plain file, ``<db dir>/photos/<sha256>.jpg``, written
to a temporary name, fsynced and renamed, after which the chunk files go.
A gateway killed between the rename and the commit finds every chunk still
confirmed and simply assembles again.

Limits (``UploadLimits``): photo size, chunk size range, open (partial)
uploads and their bytes per device, partial age, photo dimensions, the
photos' share of the disk budget (``gateway/budget.py`` publishes it), free
disk kept in reserve. A photo the platform has acknowledged is deleted
(``mark_photo_synced``). Every refusal
is a counted ``postedge_upload_rejected_total{reason}`` and a JSON error
with a code and a bilingual message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.clock import now as clock_now
from common.durable import fsync_dir, write_durable
from common.logs import recorder
from gateway import metrics as M
from gateway.http.auth import Credentials, Principal, handheld_login
from gateway.http.reply import Reply
from gateway.store.events import EventStore
from gateway.store.photos import chunks_dir, photo_bytes, photo_limit, photo_path

record = recorder(__name__)

HEX64 = re.compile(r"^[0-9a-f]{64}$")
JPEG_SOI = b"\xff\xd8\xff"
PREFIX = "/v1/uploads"
MAX_JSON = 16 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """What one outlet box accepts. A 20 MiB ceiling is far above a phone
    JPEG prepared by ``handheld/photo.py`` (1600 px, about 300 KB) and far
    below what would hurt a Raspberry Pi's SD card."""

    max_photo_bytes: int = 20 * 1024 * 1024
    min_chunk: int = 4 * 1024
    max_chunk: int = 1024 * 1024
    max_partial_per_device: int = 8
    # Bytes one handheld may hold in unfinished uploads (counted at their
    # announced size): one handheld cannot fill the gateway with halves.
    max_partial_bytes_per_device: int = 64 * 1024 * 1024
    partial_ttl_s: float = 7 * 24 * 3600.0
    max_meta_bytes: int = 8 * 1024
    disk_reserve_bytes: int = 256 * 1024 * 1024
    # The photos' share of the disk when no disk budget has published one
    # (``gateway/budget.py`` writes ``budget.photo_limit`` on every pass).
    max_photo_store_bytes: int = 512 * 1024 * 1024
    # A photo for evidence: ``handheld/photo.py`` makes 1600 px; a phone
    # camera makes at most about 50 MP. Anything outside is not a photo we want.
    min_side: int = 64
    max_side: int = 12_000
    max_pixels: int = 60_000_000


def _err(code: int, reason: str, zh: str, en: str, count: bool = True, **extra: Any) -> Reply:
    if count:
        M.UPLOAD_REJECTED.labels(reason).inc()
    doc = {"error": reason, "message": {"zh": zh, "en": en}, **extra}
    headers = {"WWW-Authenticate": 'Basic realm="postedge uploads"'} if code == 401 else None
    return Reply(code, json.dumps(doc, ensure_ascii=False).encode(), headers)


def ranges(idxs: list[int]) -> str:
    """``[0,1,2,5]`` -> ``"0-2,5"``: the confirmed set fits in a header."""
    out: list[str] = []
    i = 0
    s = sorted(idxs)
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        out.append(str(s[i]) if i == j else f"{s[i]}-{s[j]}")
        i = j + 1
    return ",".join(out)


def parse_ranges(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


# ------------------------------------------------------------ credentials

# ---------------------------------------------------------------- service

class UploadService:
    """The upload routes of one gateway. Thread-safe: the web server
    (``gateway/web.py``, aiohttp) runs ``admit`` and ``handle`` on its small
    thread pool; chunk files are written in parallel, the database and
    assembly are serialized by one lock (a handful of handhelds on an
    outlet LAN never needs more)."""

    def __init__(self, db_path: Path | str, passwd_file: Path | str | None,
                 acl_file: Path | str | None = None, limits: UploadLimits | None = None,
                 log: Any = record) -> None:
        self.db_path = Path(db_path)
        self.creds = Credentials(Path(passwd_file), Path(acl_file) if acl_file else None) \
            if passwd_file else None
        self.limits = limits or UploadLimits()
        self.log = log
        self.lock = threading.Lock()
        self._store: EventStore | None = None
        # Per-photo counts of PUTs whose body arrived whole, for tests and
        # the log: proof that a resume sent only the missing chunks.
        self.puts: Counter[str] = Counter()
        self.stored: Counter[str] = Counter()

    # -- plumbing
    @property
    def store(self) -> EventStore:
        if self._store is None:
            self._store = EventStore(self.db_path)  # migrates to the uploads schema if needed
        return self._store

    def close(self) -> None:
        with self.lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _row(self, sha: str) -> dict[str, Any] | None:
        r = self.store.db.execute("SELECT sha256, device, size, chunk_size, chunks, received, created, "
                                  "completed_at, synced_at FROM uploads WHERE sha256=?", (sha,)).fetchone()
        if r is None:
            return None
        keys = ("sha256", "device", "size", "chunk_size", "chunks", "received", "created", "completed_at",
                "synced_at")
        return dict(zip(keys, r, strict=True))

    def _confirmed(self, row: dict[str, Any]) -> list[int]:
        if row["completed_at"] is not None:
            return list(range(row["chunks"]))
        return [i for (i,) in self.store.db.execute(
            "SELECT idx FROM upload_chunks WHERE sha256=? ORDER BY idx", (row["sha256"],))]

    def _state(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"sha256": row["sha256"], "size": row["size"], "chunk_size": row["chunk_size"],
                "chunks": row["chunks"], "confirmed": self._confirmed(row),
                "complete": row["completed_at"] is not None}

    def _state_reply(self, code: int, row: dict[str, Any], body: bool = True) -> Reply:
        st = self._state(row)
        headers = {"X-Upload-Chunks": str(st["chunks"]), "X-Upload-Received": str(len(st["confirmed"])),
                   "X-Upload-Complete": "true" if st["complete"] else "false",
                   "X-Upload-Confirmed": ranges(st["confirmed"])}
        return Reply(code, json.dumps(st).encode() if body else b"", headers)

    def _drop_chunks(self, sha: str) -> None:
        shutil.rmtree(chunks_dir(self.db_path) / sha, ignore_errors=True)

    # -- entry points (called on the web server's thread pool)
    def admit(self, method: str, path: str, headers: Any) -> Reply | tuple[Principal, int]:
        """Everything that can be decided from the request head alone: the
        login, the method and the declared length. Returns the account and
        the number of body bytes to read, or the refusal. The web server
        calls this *before* reading any body, so a
        stranger's megabyte is never buffered. Never raises for bad input."""
        try:
            return self._admit(method, path, headers)
        except OSError as e:
            self.log("upload_error", path=path, error=repr(e))
            return _err(503, "storage_error", f"网关存储出错，请稍后重试（{e}）",
                        f"Gateway storage error, retry later ({e})")

    def _admit(self, method: str, path: str, headers: Any) -> Reply | tuple[Principal, int]:
        if self.creds is None:
            return _err(503, "uploads_disabled", "网关未配置照片上传（缺少 web.passwd_file）",
                        "Photo uploads are not configured on this gateway (web.passwd_file is not set)")
        if method not in ("POST", "PUT", "GET", "HEAD"):
            return _err(405, "method", "不支持的请求方法", f"Method {method} not allowed here")
        got = handheld_login(self.creds, headers.get("Authorization"), _err,
                             "只有手持终端可以上传照片", "Only handhelds may upload photos")
        if isinstance(got, Reply):
            return got
        if method not in ("POST", "PUT"):
            return got, 0
        length = headers.get("Content-Length")
        try:
            n = int(length) if length is not None else -1
        except ValueError:
            n = -1
        if n < 0:
            return _err(411, "length_required", "请求缺少 Content-Length", "Content-Length required")
        cap = MAX_JSON if method == "POST" else self.limits.max_chunk
        if n > cap:
            return _err(413, "too_large", f"请求过大（{n} 字节，上限 {cap}）",
                        f"Request too large ({n} bytes, limit {cap})")
        return got, n

    def handle(self, method: str, path: str, headers: Any, principal: Principal, body: bytes) -> Reply:
        """One admitted request under ``/v1/uploads`` with its body; never
        raises for bad input (store or disk trouble is a 503)."""
        try:
            return self._handle(method, path, headers, principal, body)
        except sqlite3.OperationalError as e:
            return _err(503, "store_busy", f"网关数据库忙，请稍后重试（{e}）",
                        f"Gateway database busy, retry later ({e})")
        except OSError as e:
            self.log("upload_error", path=path, error=repr(e))
            return _err(503, "storage_error", f"网关存储出错，请稍后重试（{e}）",
                        f"Gateway storage error, retry later ({e})")

    def _handle(self, method: str, path: str, headers: Any, principal: Principal, body: bytes) -> Reply:
        parts = path.split("?", 1)[0].rstrip("/").split("/")[3:]  # after "", "v1", "uploads"
        if method == "POST" and not parts:
            return self._begin(principal, body)
        if len(parts) == 1 and method in ("GET", "HEAD"):
            return self._get(principal, parts[0], method == "GET")
        if len(parts) == 2 and method == "PUT":
            return self._put(principal, parts[0], parts[1], headers.get("X-Chunk-Sha256", ""), body)
        return _err(404, "no_route", "没有这个上传地址", f"No such upload route: {method} {path}")

    # -- routes
    def _begin(self, who: Principal, body: bytes) -> Reply:
        lim = self.limits
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return _err(400, "bad_json", f"请求不是有效的 JSON：{e}", f"Request is not valid JSON: {e}")
        sha, size, csize = doc.get("sha256"), doc.get("size"), doc.get("chunk_size")
        meta = doc.get("meta", {})
        if not isinstance(sha, str) or not HEX64.match(sha):
            return _err(400, "bad_sha256", "sha256 必须是 64 位小写十六进制",
                        "sha256 must be 64 lowercase hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= lim.max_photo_bytes:
            return _err(400 if not isinstance(size, int) or size < 1 else 413, "bad_size",
                        f"照片大小不合法（上限 {lim.max_photo_bytes} 字节）",
                        f"Photo size must be 1 to {lim.max_photo_bytes} bytes, got {size!r}")
        if not isinstance(csize, int) or isinstance(csize, bool) or \
                not lim.min_chunk <= csize <= lim.max_chunk:
            return _err(400, "bad_chunk_size", f"分块大小须在 {lim.min_chunk}–{lim.max_chunk} 字节之间",
                        f"chunk_size must be {lim.min_chunk} to {lim.max_chunk} bytes, got {csize!r}")
        if not isinstance(meta, dict):
            return _err(400, "bad_meta", "meta 必须是 JSON 对象", "meta must be a JSON object")
        meta_s = json.dumps(meta, ensure_ascii=False, sort_keys=True)
        if len(meta_s.encode()) > lim.max_meta_bytes:
            return _err(413, "meta_too_large", "meta 过大", f"meta larger than {lim.max_meta_bytes} bytes")
        now = clock_now()
        with self.lock:
            self._expire(now)
            row = self._row(sha)
            if row is not None:
                if row["completed_at"] is not None and row["size"] == size:
                    # Content-addressed: whoever names these exact bytes by
                    # their hash had the photo; telling them it is here is
                    # the de-duplication, not a leak.
                    M.PHOTOS.labels("deduplicated").inc()
                    self.log("upload_duplicate", sha256=sha, device=who.username, first=row["device"])
                    return self._state_reply(200, row)
                if row["device"] != who.username:
                    # Someone else's partial upload: it stays theirs (finding
                    # 6). No detail of it (size, chunks, who) is given.
                    return _err(409, "in_progress_elsewhere",
                                "这张照片正由另一台手持终端上传，稍后自动重试",
                                "This photo is being uploaded by another handheld; it will be retried later")
                if row["size"] != size:
                    return _err(409, "size_conflict", "同一哈希的照片大小不一致",
                                f"{sha} is known with size {row['size']}, not {size}")
                if row["received"] == row["chunks"]:
                    return self._assemble(row, begin=True)  # killed between the rename and the commit
                return self._state_reply(200, row)
            open_, open_bytes = self.store.db.execute(
                "SELECT count(*), coalesce(sum(size),0) FROM uploads WHERE device=? AND completed_at IS NULL",
                (who.username,)).fetchone()
            if open_ >= lim.max_partial_per_device:
                return _err(429, "too_many_partial", f"未完成的上传过多（上限 {lim.max_partial_per_device}）",
                            f"Too many unfinished uploads from this device (limit "
                            f"{lim.max_partial_per_device}); finish one first")
            if open_bytes + size > lim.max_partial_bytes_per_device:
                mib = lim.max_partial_bytes_per_device // 2**20
                return _err(429, "partial_bytes",
                            f"本机未完成的上传总量超过上限（{mib} MiB），请先完成已开始的上传",
                            f"Unfinished uploads from this device would exceed {mib} MiB; finish one first")
            room = photo_limit(self.store, lim.max_photo_store_bytes)
            held = photo_bytes(self.store, reserved=True)
            if held + size > room:
                self.log("upload_photo_budget", device=who.username, held=held, limit=room, size=size)
                return _err(507, "photo_budget",
                            "网关照片存储已满（照片保留在手持终端上，同步后自动腾出空间）",
                            "The gateway's photo space is full; the photo stays on the handheld and is sent "
                            "once earlier photos have gone to head office")
            free = shutil.disk_usage(self.db_path.resolve().parent).free
            if free - 2 * size < lim.disk_reserve_bytes:
                return _err(507, "disk_full", "网关存储空间不足，照片保留在手持终端上",
                            "Gateway storage is full; the photo stays on the handheld")
            chunks = -(-size // csize)
            with self.store.tx():
                self.store.db.execute(
                    "INSERT INTO uploads(sha256,device,size,chunk_size,chunks,received,created,meta) "
                    "VALUES (?,?,?,?,?,0,?,?)", (sha, who.username, size, csize, chunks, now, meta_s))
            self.log("upload_started", sha256=sha, device=who.username, size=size, chunks=chunks)
            row = self._row(sha)
            assert row is not None
            return self._state_reply(201, row)

    def _expire(self, now: float) -> None:
        """Partials nobody finished within the TTL: their chunks go (the
        handheld, if it still has the photo, starts again after a 404)."""
        stale = [s for (s,) in self.store.db.execute(
            "SELECT sha256 FROM uploads WHERE completed_at IS NULL AND created < ?",
            (now - self.limits.partial_ttl_s,))]
        for sha in stale:
            self._discard(sha)
            M.PHOTOS.labels("expired").inc()
            self.log("upload_expired", sha256=sha)

    def _discard(self, sha: str) -> None:
        """Forget a partial upload: its row, its chunk rows, its chunk files."""
        with self.store.tx():
            self.store.db.execute("DELETE FROM upload_chunks WHERE sha256=?", (sha,))
            self.store.db.execute("DELETE FROM uploads WHERE sha256=? AND completed_at IS NULL", (sha,))
        self._drop_chunks(sha)

    def _owned(self, who: Principal, sha: str) -> dict[str, Any] | None:
        """The upload if this handheld opened it; another device's upload
        reads exactly as an unknown one (no existence oracle). Under the lock."""
        row = self._row(sha) if HEX64.match(sha) else None
        if row is None or row["device"] != who.username:
            return None
        return row

    def _get(self, who: Principal, sha: str, body: bool) -> Reply:
        with self.lock:
            row = self._owned(who, sha)
            if row is None:
                return _unknown()
            return self._state_reply(200, row, body)

    def _put(self, who: Principal, sha: str, idx_s: str, chunk_hash: str, body: bytes) -> Reply:
        if not HEX64.match(sha) or not idx_s.isdigit() or len(idx_s) > 9:
            return _err(404, "no_route", "没有这个上传地址", f"No such chunk: {sha}/{idx_s}")
        idx = int(idx_s)
        self.puts[sha] += 1
        with self.lock:
            row = self._owned(who, sha)
        if row is None:
            return _unknown("网关没有这张照片的上传记录，请重新开始", "Unknown upload: POST it first")
        if row["completed_at"] is not None:
            M.UPLOAD_CHUNKS.labels("duplicate").inc()
            return Reply(204, headers={"X-Upload-Complete": "true"})
        if idx >= row["chunks"]:
            return _err(400, "bad_index", "分块序号超出范围", f"Chunk index {idx} >= {row['chunks']}")
        want = row["chunk_size"] if idx < row["chunks"] - 1 else row["size"] - row["chunk_size"] * idx
        if len(body) != want:
            return _err(400, "chunk_size", "分块大小不对",
                        f"Chunk {idx} must be {want} bytes, got {len(body)}")
        got = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(got, chunk_hash.strip().lower()):
            return _err(400, "chunk_hash", "分块校验失败（传输损坏），请重传",
                        "Chunk checksum mismatch (damaged in transit); send it again")
        with self.lock:
            same = self._confirmed_chunk(sha, idx, got)
        if same is not None:
            return same
        if idx == 0:
            bad = check_jpeg_head(body, self.limits)
            if bad is not None:
                return _err(415, *bad)
        d = chunks_dir(self.db_path) / sha
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            fsync_dir(d.parent)
        # Written under a private name and renamed only by the PUT that
        # confirms the index: a confirmed chunk's file is never overwritten.
        tmp = d / f"{idx}.{secrets.token_hex(6)}.part"
        write_durable(tmp, body)
        try:
            with self.lock:
                row = self._owned(who, sha)
                if row is None:  # discarded meanwhile (409 on a parallel PUT, expiry)
                    return _unknown("上传已被丢弃，请重新开始", "Upload was discarded; start again")
                if row["completed_at"] is not None:
                    return Reply(204, headers={"X-Upload-Complete": "true"})
                same = self._confirmed_chunk(sha, idx, got)
                if same is not None:
                    return same
                os.replace(tmp, d / str(idx))
                fsync_dir(d)  # durable before the row says "confirmed"
                with self.store.tx():
                    self.store.db.execute(
                        "INSERT INTO upload_chunks(sha256,idx,size,sha256_chunk) VALUES (?,?,?,?)",
                        (sha, idx, len(body), got))
                    self.store.db.execute("UPDATE uploads SET received=received+1 WHERE sha256=?", (sha,))
                self.stored[sha] += 1
                M.UPLOAD_CHUNKS.labels("stored").inc()
                M.UPLOAD_BYTES.inc(len(body))
                row = self._row(sha)
                assert row is not None
                if row["received"] == row["chunks"]:
                    return self._assemble(row, begin=False)
                done = row["completed_at"] is not None
        finally:
            tmp.unlink(missing_ok=True)
        return Reply(204, headers={"X-Upload-Complete": "true" if done else "false"})

    def _confirmed_chunk(self, sha: str, idx: int, got: str) -> Reply | None:
        """A confirmed chunk is immutable (finding 6): the same bytes again
        are a harmless retry (204), different bytes are refused with 409 and
        stored nowhere. None: not confirmed yet. Under the lock."""
        r = self.store.db.execute("SELECT sha256_chunk FROM upload_chunks WHERE sha256=? AND idx=?",
                                  (sha, idx)).fetchone()
        if r is None:
            return None
        if hmac.compare_digest(r[0], got):
            M.UPLOAD_CHUNKS.labels("duplicate").inc()
            return Reply(204, headers={"X-Upload-Complete": "false"})
        self.log("upload_chunk_conflict", sha256=sha, idx=idx)
        return _err(409, "chunk_conflict", f"第 {idx} 块已确认，内容不能更改",
                    f"Chunk {idx} is already confirmed with other bytes; a confirmed chunk never changes")

    def _assemble(self, row: dict[str, Any], begin: bool) -> Reply:
        """All chunks confirmed: check the whole file's hash, check that it
        is a photo, write it, mark it complete, drop the chunks. Called
        under the lock."""
        sha = row["sha256"]
        d = chunks_dir(self.db_path) / sha
        parts = [d / str(i) for i in range(row["chunks"])]
        lost = [i for i, p in enumerate(parts) if not p.is_file()]
        if lost:
            # Confirmed rows whose files are gone (disk trouble, a hand
            # cleanup): un-confirm them, so the handheld's next POST is
            # told to send just those again.
            with self.store.tx():
                self.store.db.executemany("DELETE FROM upload_chunks WHERE sha256=? AND idx=?",
                                          [(sha, i) for i in lost])
                self.store.db.execute("UPDATE uploads SET received=received-? WHERE sha256=?",
                                      (len(lost), sha))
            self.log("upload_chunks_lost", sha256=sha, chunks=ranges(lost))
            new = self._row(sha)
            assert new is not None
            if begin:
                return self._state_reply(200, new)
            return Reply(204, headers={"X-Upload-Complete": "false"})
        data = b"".join(p.read_bytes() for p in parts)  # at most max_photo_bytes
        if hashlib.sha256(data).hexdigest() != sha:
            with self.store.tx():
                self.store.db.execute("DELETE FROM upload_chunks WHERE sha256=?", (sha,))
                self.store.db.execute("UPDATE uploads SET received=0 WHERE sha256=?", (sha,))
            self._drop_chunks(sha)
            M.PHOTOS.labels("hash_mismatch").inc()
            self.log("upload_hash_mismatch", sha256=sha, got=hashlib.sha256(data).hexdigest())
            return _err(409, "file_hash", "照片校验失败，将从头重新上传",
                        "The photo's checksum does not match; it will be sent again from the start")
        bad = check_photo(data, self.limits)
        if bad is not None:
            # Not a photo: it can never become one, so it goes at once and
            # frees the device's quota (the handheld marks it failed on 415).
            self._discard(sha)
            M.PHOTOS.labels(bad[0]).inc()
            self.log("upload_not_a_photo", sha256=sha, device=row["device"], reason=bad[0], detail=bad[2])
            return _err(415, *bad)
        out = photo_path(self.db_path, sha)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_durable(out, data)
        with self.store.tx():
            self.store.db.execute("UPDATE uploads SET completed_at=? WHERE sha256=?", (clock_now(), sha))
            self.store.db.execute("DELETE FROM upload_chunks WHERE sha256=?", (sha,))
        self._drop_chunks(sha)
        M.PHOTOS.labels("complete").inc()
        self.log("upload_complete", sha256=sha, device=row["device"], size=row["size"], chunks=row["chunks"])
        new = self._row(sha)
        assert new is not None
        if begin:
            return self._state_reply(200, new)
        return Reply(204, headers={"X-Upload-Complete": "true"})


def _unknown(zh: str = "网关没有这张照片的上传记录", en: str = "No such upload") -> Reply:
    """One answer for "no such upload" and "not your upload"."""
    return _err(404, "unknown_upload", zh, en, count=False)


# ------------------------------------------------------------- photo checks

# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the JPEG's frame header, read from the bytes
    without decoding: a 60000 x 60000 "photo" is refused before anything
    allocates its pixels. None if no frame header is found in ``data``."""
    if not data.startswith(JPEG_SOI):
        return None
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or entropy data before any frame header
            return None
        seg = int.from_bytes(data[i + 2:i + 4], "big")
        if seg < 2:
            return None
        if marker in _SOF:
            if i + 9 > n:
                return None
            h = int.from_bytes(data[i + 5:i + 7], "big")
            w = int.from_bytes(data[i + 7:i + 9], "big")
            return w, h
        i += 2 + seg
    return None


def _dims_problem(w: int, h: int, lim: UploadLimits) -> tuple[str, str, str] | None:
    if w < lim.min_side or h < lim.min_side or w > lim.max_side or h > lim.max_side \
            or w * h > lim.max_pixels:
        return ("bad_dimensions", f"照片尺寸不合理（{w}×{h} 像素）",
                f"Implausible photo size {w}x{h} px (allowed {lim.min_side}-{lim.max_side} px a side, "
                f"at most {lim.max_pixels // 1_000_000} megapixels)")
    return None


def check_jpeg_head(chunk0: bytes, lim: UploadLimits) -> tuple[str, str, str] | None:
    """The cheap check on the first chunk: a JPEG start, and sane
    dimensions if the frame header is already in it. (reason, zh, en) or None."""
    if not chunk0.startswith(JPEG_SOI):
        return ("not_jpeg", "不是 JPEG 照片", "Not a JPEG photo")
    dims = jpeg_size(chunk0)
    return _dims_problem(*dims, lim) if dims else None


def check_photo(data: bytes, lim: UploadLimits) -> tuple[str, str, str] | None:
    """The whole file must really be a picture: frame header found with
    plausible dimensions, and OpenCV must decode it to those dimensions.
    Three magic bytes prove nothing (finding 6: "FF D8 FF" + random passed).
    Decoded at 1/4 scale in grey: every entropy-coded block is still read,
    at a sixteenth of the memory. (reason, zh, en) or None."""
    dims = jpeg_size(data)
    if dims is None:
        return ("not_image", "文件不是可以打开的照片", "The file is not a photo that can be opened "
                "(no JPEG frame header)")
    bad = _dims_problem(*dims, lim)
    if bad is not None:
        return bad
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_4)
    w, h = dims
    if img is None or img.shape[0] != -(-h // 4) or img.shape[1] != -(-w // 4):
        return ("not_image", "文件不是可以打开的照片", "The file is not a photo that can be opened "
                "(it does not decode)")
    return None
