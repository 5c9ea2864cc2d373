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
    are discarded and the handheld starts that file again.
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
uploads per device, partial age, free disk kept in reserve. Every refusal
is a counted ``postedge_upload_rejected_total{reason}`` and a JSON error
with a code and a bilingual message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gateway import metrics as M
from gateway.ingest import emit
from gateway.store import EventStore
from postedge.durable import fsync_dir, write_durable

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
    partial_ttl_s: float = 7 * 24 * 3600.0
    max_meta_bytes: int = 8 * 1024
    disk_reserve_bytes: int = 256 * 1024 * 1024


@dataclass
class Reply:
    """An answer; ``code`` 0 means none (the client is gone: close)."""

    code: int
    body: bytes = b""
    headers: dict[str, str] | None = None
    close: bool = False


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

def verify_mosquitto_hash(stored: str, password: str) -> bool:
    """Check a password against one Mosquitto password-file hash.

    ``$7$<iterations>$<salt b64>$<hash b64>`` is Mosquitto 2.0's
    PBKDF2-HMAC-SHA512 (what ``mosquitto_passwd -U`` writes here);
    ``$6$<salt b64>$<hash b64>`` is 1.x's salted SHA-512 of password+salt,
    still found in old files. Anything else never matches."""
    parts = stored.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations = int(parts[2])
            if not 1 <= iterations <= 10_000_000:
                return False
            salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(want))
            return hmac.compare_digest(got, want)
        if len(parts) == 4 and parts[1] == "6":
            salt, want = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            return hmac.compare_digest(hashlib.sha512(password.encode() + salt).digest(), want)
    except (ValueError, binascii.Error):
        return False
    return False


@dataclass(frozen=True)
class Principal:
    username: str
    kind: str | None  # from the ACL: locker, scanner, handheld, gateway; None if not listed
    outlet: str | None


class Credentials:
    """Mosquitto's password file and ACL as the upload routes' user base.

    The handheld already has broker credentials (``provision`` wrote them),
    so uploads reuse them instead of a second secret to distribute. The
    account's kind comes from the ACL ``gateway/broker.py`` writes (a
    device's write topics are ``pe/v1/<outlet>/<kind>/<user>/...``, the
    gateway's is ``pe/v1/<outlet>/#``). Both files are re-read when they
    change, so a newly provisioned handheld can upload without a restart.
    A verified (user, password) pair is remembered, keyed by its hash line,
    so a slow PBKDF2 is paid once per login, not per chunk.
    """

    def __init__(self, passwd_file: Path, acl_file: Path | None = None) -> None:
        self.passwd_file = Path(passwd_file)
        self.acl_file = Path(acl_file) if acl_file else self.passwd_file.with_name("acl")
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._hashes: dict[str, str] = {}
        self._acl: dict[str, tuple[str, str | None]] = {}
        self._ok: dict[tuple[str, str], bytes] = {}

    @staticmethod
    def _stat(p: Path) -> tuple[float, int] | None:
        try:
            st = p.stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def _load(self) -> None:
        stamp = (self._stat(self.passwd_file), self._stat(self.acl_file))
        if stamp == self._stamp:
            return
        hashes: dict[str, str] = {}
        for line in self.passwd_file.read_text(encoding="utf-8").splitlines():  # OSError -> caller
            user, sep, h = line.strip().partition(":")
            if sep and user and not user.startswith("#"):
                hashes[user] = h
        acl: dict[str, tuple[str, str | None]] = {}
        try:
            text = self.acl_file.read_text(encoding="utf-8")
        except OSError:
            text = ""
        user = None
        for line in text.splitlines():
            words = line.split()
            if len(words) == 2 and words[0] == "user":
                user = words[1]
            elif user and len(words) == 3 and words[0] == "topic":
                seg = words[2].split("/")
                if len(seg) == 4 and seg[3] == "#":
                    acl[user] = ("gateway", seg[2])
                elif len(seg) == 6 and seg[4] == user and user not in acl:
                    acl[user] = (seg[3], seg[2])
        self._hashes, self._acl, self._ok, self._stamp = hashes, acl, {}, stamp

    def check(self, username: str, password: str) -> Principal | None:
        """The account if the password is right, else None. Raises OSError
        when the password file cannot be read (the caller answers 503)."""
        with self._lock:
            self._load()
            stored = self._hashes.get(username)
            kind, outlet = self._acl.get(username, (None, None))
            if stored is None:
                return None
            key = (username, stored)
            digest = hashlib.sha256(password.encode()).digest()
            known = self._ok.get(key)
        if known is not None:
            return Principal(username, kind, outlet) if hmac.compare_digest(known, digest) else None
        if not verify_mosquitto_hash(stored, password):
            return None
        with self._lock:
            self._ok[key] = digest
        return Principal(username, kind, outlet)


def handheld_login(creds: Credentials, header: str | None, err: Callable[..., Reply], forbidden_zh: str,
                   forbidden_en: str) -> Any:
    """The logged-in handheld account, or the refusal to send back (a Reply):
    one login check for every route a handheld uses."""
    who = basic_auth(header)
    if who is None:
        return err(401, "unauthorized", "需要登录（设备的用户名和密码）",
                   "Login required (the device's username and password)")
    try:
        principal = creds.check(*who)
    except OSError as e:
        return err(503, "passwd_unreadable", f"网关无法读取密码文件：{e}",
                   f"The gateway cannot read its password file: {e}")
    if principal is None:
        return err(401, "unauthorized", "用户名或密码错误", "Wrong username or password")
    if principal.kind != "handheld":
        return err(403, "forbidden", forbidden_zh, forbidden_en)
    return principal


def basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, sep, pw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return (user, pw) if sep else None


# ------------------------------------------------------------------ store

def photos_dir(db_path: Path | str) -> Path:
    return Path(db_path).resolve().parent / "photos"


def photo_path(db_path: Path | str, sha256: str) -> Path:
    return photos_dir(db_path) / f"{sha256}.jpg"


def chunks_dir(db_path: Path | str) -> Path:
    return Path(db_path).resolve().parent / "uploads"


def completed_unsynced(store: EventStore, limit: int = 10) -> list[dict[str, Any]]:
    """Finished photos not yet acknowledged upstream, oldest first (for photo_sync)."""
    cur = store.db.execute(
        "SELECT sha256, device, size, meta, completed_at FROM uploads WHERE completed_at IS NOT NULL "
        "AND synced_at IS NULL ORDER BY completed_at, sha256 LIMIT ?", (limit,))
    return [{"sha256": s, "device": d, "size": n, "meta": json.loads(m) if m else {}, "completed_at": c}
            for s, d, n, m, c in cur]


def mark_photo_synced(store: EventStore, sha256: str, at: float | None = None) -> bool:
    cur = store.db.execute("UPDATE uploads SET synced_at=? WHERE sha256=? AND synced_at IS NULL",
                           (time.time() if at is None else at, sha256))
    return cur.rowcount == 1


def photo_backlog(store: EventStore) -> dict[str, int]:
    n, size = store.db.execute("SELECT count(*), coalesce(sum(size),0) FROM uploads WHERE completed_at "
                               "IS NOT NULL AND synced_at IS NULL").fetchone()
    return {"count": int(n), "bytes": int(size)}


# ---------------------------------------------------------------- service

class UploadService:
    """The upload routes of one gateway. Thread-safe: the status server
    runs each request on its own thread; chunk files are written in
    parallel, the database and assembly are serialized by one lock (a
    handful of handhelds on an outlet LAN never needs more)."""

    def __init__(self, db_path: Path | str, passwd_file: Path | str | None,
                 acl_file: Path | str | None = None, limits: UploadLimits | None = None,
                 log: Any = emit) -> None:
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

    # -- entry point
    def handle(self, method: str, path: str, headers: Any, rfile: BinaryIO) -> Reply:
        """One request under ``/v1/uploads``; never raises for bad input."""
        try:
            return self._handle(method, path, headers, rfile)
        except sqlite3.OperationalError as e:
            return _err(503, "store_busy", f"网关数据库忙，请稍后重试（{e}）",
                        f"Gateway database busy, retry later ({e})")
        except OSError as e:
            self.log("upload_error", path=path, error=repr(e))
            return _err(503, "storage_error", f"网关存储出错，请稍后重试（{e}）",
                        f"Gateway storage error, retry later ({e})")

    def _handle(self, method: str, path: str, headers: Any, rfile: BinaryIO) -> Reply:
        if self.creds is None:
            return _err(503, "uploads_disabled", "网关未配置照片上传（缺少 web.passwd_file）",
                        "Photo uploads are not configured on this gateway (web.passwd_file is not set)")
        parts = path.split("?", 1)[0].rstrip("/").split("/")[3:]  # after "", "v1", "uploads"
        # Bodies are read (or the connection closed) before anything is
        # answered, so a refused request never leaves bytes in the socket.
        length = headers.get("Content-Length")
        body = b""
        if method in ("POST", "PUT"):
            try:
                n = int(length) if length is not None else -1
            except ValueError:
                n = -1
            if n < 0:
                return Reply(411, b'{"error":"length_required"}', close=True)
            cap = MAX_JSON if method == "POST" else self.limits.max_chunk
            if n > cap:
                r = _err(413, "too_large", f"请求过大（{n} 字节，上限 {cap}）",
                         f"Request too large ({n} bytes, limit {cap})")
                r.close = True
                return r
            try:
                body = rfile.read(n)
            except OSError:  # timed out or reset mid-body
                body = b""
            if len(body) < n:
                # The handheld died or walked out of Wi-Fi range mid-chunk:
                # nothing stored, nothing to answer.
                M.UPLOAD_CHUNKS.labels("truncated").inc()
                return Reply(0, close=True)
        got = handheld_login(self.creds, headers.get("Authorization"), _err,
                             "只有手持终端可以上传照片", "Only handhelds may upload photos")
        if isinstance(got, Reply):
            return got
        principal = got
        if method == "POST" and not parts:
            return self._begin(principal, body)
        if len(parts) == 1 and method in ("GET", "HEAD"):
            return self._get(parts[0], method == "GET")
        if len(parts) == 2 and method == "PUT":
            return self._put(principal, parts[0], parts[1], headers.get("X-Chunk-Sha256", ""), body)
        return _err(404 if method in ("GET", "HEAD", "PUT", "POST") else 405, "no_route",
                    "没有这个上传地址", f"No such upload route: {method} {path}")

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
        now = time.time()
        with self.lock:
            self._expire(now)
            row = self._row(sha)
            if row is not None:
                if row["size"] != size:
                    return _err(409, "size_conflict", "同一哈希的照片大小不一致",
                                f"{sha} is known with size {row['size']}, not {size}")
                if row["completed_at"] is not None:
                    M.PHOTOS.labels("deduplicated").inc()
                    self.log("upload_duplicate", sha256=sha, device=who.username, first=row["device"])
                    return self._state_reply(200, row)
                if row["received"] == row["chunks"]:
                    return self._assemble(row, begin=True)  # killed between the rename and the commit
                return self._state_reply(200, row)
            open_ = self.store.db.execute("SELECT count(*) FROM uploads WHERE device=? AND completed_at "
                                          "IS NULL", (who.username,)).fetchone()[0]
            if open_ >= lim.max_partial_per_device:
                return _err(429, "too_many_partial", f"未完成的上传过多（上限 {lim.max_partial_per_device}）",
                            f"Too many unfinished uploads from this device (limit "
                            f"{lim.max_partial_per_device}); finish one first")
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
            with self.store.tx():
                self.store.db.execute("DELETE FROM upload_chunks WHERE sha256=?", (sha,))
                self.store.db.execute("DELETE FROM uploads WHERE sha256=?", (sha,))
            self._drop_chunks(sha)
            M.PHOTOS.labels("expired").inc()
            self.log("upload_expired", sha256=sha)

    def _get(self, sha: str, body: bool) -> Reply:
        with self.lock:
            row = self._row(sha) if HEX64.match(sha) else None
            if row is None:
                return _err(404, "unknown_upload", "网关没有这张照片的上传记录", "No such upload",
                            count=False)
            return self._state_reply(200, row, body)

    def _put(self, who: Principal, sha: str, idx_s: str, chunk_hash: str, body: bytes) -> Reply:
        if not HEX64.match(sha) or not idx_s.isdigit():
            return _err(404, "no_route", "没有这个上传地址", f"No such chunk: {sha}/{idx_s}")
        idx = int(idx_s)
        self.puts[sha] += 1
        with self.lock:
            row = self._row(sha)
        if row is None:
            return _err(404, "unknown_upload", "网关没有这张照片的上传记录，请重新开始",
                        "Unknown upload: POST it first", count=False)
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
        if idx == 0 and not body.startswith(JPEG_SOI):
            return _err(415, "not_jpeg", "不是 JPEG 照片", "Not a JPEG photo")
        d = chunks_dir(self.db_path) / sha
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            fsync_dir(d.parent)
        write_durable(d / str(idx), body)  # durable before the row says "confirmed"
        with self.lock:
            row = self._row(sha)
            if row is None:  # discarded meanwhile (409 on a parallel PUT, expiry)
                return _err(404, "unknown_upload", "上传已被丢弃，请重新开始",
                            "Upload was discarded; start again", count=False)
            if row["completed_at"] is None:
                with self.store.tx():
                    cur = self.store.db.execute(
                        "INSERT OR IGNORE INTO upload_chunks(sha256,idx,size,sha256_chunk) VALUES (?,?,?,?)",
                        (sha, idx, len(body), got))
                    if cur.rowcount:
                        self.store.db.execute("UPDATE uploads SET received=received+1 WHERE sha256=?",
                                              (sha,))
                if cur.rowcount:
                    self.stored[sha] += 1
                    M.UPLOAD_CHUNKS.labels("stored").inc()
                    M.UPLOAD_BYTES.inc(len(body))
                else:
                    M.UPLOAD_CHUNKS.labels("duplicate").inc()
                row = self._row(sha)
                assert row is not None
                if row["received"] == row["chunks"]:
                    return self._assemble(row, begin=False)
            done = row["completed_at"] is not None
        return Reply(204, headers={"X-Upload-Complete": "true" if done else "false"})

    def _assemble(self, row: dict[str, Any], begin: bool) -> Reply:
        """All chunks confirmed: check the whole file's hash, write the
        photo, mark it complete, drop the chunks. Called under the lock."""
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
        h = hashlib.sha256()
        for p in parts:
            with open(p, "rb") as f:
                for block in iter(lambda f=f: f.read(1024 * 1024), b""):
                    h.update(block)
        if h.hexdigest() != sha:
            with self.store.tx():
                self.store.db.execute("DELETE FROM upload_chunks WHERE sha256=?", (sha,))
                self.store.db.execute("UPDATE uploads SET received=0 WHERE sha256=?", (sha,))
            self._drop_chunks(sha)
            M.PHOTOS.labels("hash_mismatch").inc()
            self.log("upload_hash_mismatch", sha256=sha, got=h.hexdigest())
            return _err(409, "file_hash", "照片校验失败，将从头重新上传",
                        "The photo's checksum does not match; it will be sent again from the start")
        out = photo_path(self.db_path, sha)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_durable(out, parts)
        with self.store.tx():
            self.store.db.execute("UPDATE uploads SET completed_at=? WHERE sha256=?", (time.time(), sha))
            self.store.db.execute("DELETE FROM upload_chunks WHERE sha256=?", (sha,))
        self._drop_chunks(sha)
        M.PHOTOS.labels("complete").inc()
        self.log("upload_complete", sha256=sha, device=row["device"], size=row["size"], chunks=row["chunks"])
        new = self._row(sha)
        assert new is not None
        if begin:
            return self._state_reply(200, new)
        return Reply(204, headers={"X-Upload-Complete": "true"})
