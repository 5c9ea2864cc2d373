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
    other bytes -> ``409 chunk_conflict`` (issue 11, finding 6: another
    handheld's re-PUT used to overwrite it and fail the owner's file).

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

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.durable import fsync_dir, write_durable
from gateway import metrics as M
from gateway.ingest import emit
from gateway.store import EventStore

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
    """The platform has acknowledged this photo: record it, then delete the
    gateway's copy. Months of photos must not sit on the outlet box (issue
    11, finding 6); the row stays, so the same bytes from a handheld later
    are still answered "complete" (the platform has them). A crash between
    the commit and the unlink leaves a file ``drop_synced_photos`` removes.
    平台确认收到后删除网关上的照片文件；记录保留，用于去重。"""
    cur = store.db.execute("UPDATE uploads SET synced_at=? WHERE sha256=? AND synced_at IS NULL",
                           (time.time() if at is None else at, sha256))
    if cur.rowcount != 1:
        return False
    path = photo_path(store.path, sha256)
    try:
        path.unlink()
        fsync_dir(path.parent)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # the next budget pass tries again (drop_synced_photos)
    M.PHOTOS.labels("deleted_after_sync").inc()
    return True


def drop_synced_photos(store: EventStore) -> int:
    """Delete photo files whose upload is marked synced (left by a crash
    right after the mark). Only synced photos are ever deleted: an unsynced
    photo is evidence the platform does not have yet. Returns files removed."""
    d = photos_dir(store.path)
    try:
        names = [n for n in os.listdir(d) if n.endswith(".jpg") and HEX64.match(n[:-4])]
    except FileNotFoundError:
        return 0
    gone = 0
    for name in names:
        r = store.db.execute("SELECT synced_at FROM uploads WHERE sha256=?", (name[:-4],)).fetchone()
        if r is not None and r[0] is not None:
            try:
                (d / name).unlink()
                gone += 1
            except OSError:
                pass
    if gone:
        fsync_dir(d)
    return gone


def photo_bytes(store: EventStore, reserved: bool = False) -> int:
    """Bytes photos hold on the gateway's disk: finished photos not yet
    synced (synced ones are deleted) plus the chunks of unfinished uploads;
    with ``reserved``, unfinished uploads count at their announced size
    (what admitting one more must leave room for)."""
    done = store.db.execute("SELECT coalesce(sum(size),0) FROM uploads WHERE completed_at IS NOT NULL "
                            "AND synced_at IS NULL").fetchone()[0]
    if reserved:
        part = store.db.execute("SELECT coalesce(sum(size),0) FROM uploads WHERE completed_at IS NULL"
                                ).fetchone()[0]
    else:
        part = store.db.execute("SELECT coalesce(sum(size),0) FROM upload_chunks").fetchone()[0]
    return int(done) + int(part)


PHOTO_LIMIT_KEY = "budget.photo_limit"


def photo_limit(store: EventStore, default: int) -> int:
    """The photos' share of the disk budget, as the budget last published it
    (``gateway/budget.py``), else ``default``: the upload side refuses a new
    photo (507, it stays on the handheld) rather than let photos squeeze the
    event store."""
    raw = store.get(PHOTO_LIMIT_KEY)
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


# ---------------------------------------------------------------- service

class UploadService:
    """The upload routes of one gateway. Thread-safe: the web server
    (``gateway/web.py``, aiohttp) runs ``admit`` and ``handle`` on its small
    thread pool; chunk files are written in parallel, the database and
    assembly are serialized by one lock (a handful of handhelds on an
    outlet LAN never needs more)."""

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

    # -- entry points (called on the web server's thread pool)
    def admit(self, method: str, path: str, headers: Any) -> Reply | tuple[Principal, int]:
        """Everything that can be decided from the request head alone: the
        login, the method and the declared length. Returns the account and
        the number of body bytes to read, or the refusal. The web server
        calls this *before* reading any body (issue 11, finding 4), so a
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
        now = time.time()
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
