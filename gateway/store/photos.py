"""Where the gateway keeps photos and what it knows of them: the files under
``photos/`` beside the database, the ``uploads`` rows, the photos' share of
the disk. Used by the upload routes (writing), the photo sync (reading,
marking synced) and the disk budget (counting, deleting what is synced)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from common.clock import now as clock_now
from common.durable import fsync_dir
from gateway import metrics as M
from gateway.store.events import EventStore

HEX64 = re.compile(r"^[0-9a-f]{64}$")
PHOTO_LIMIT_KEY = "budget.photo_limit"


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
                           (clock_now() if at is None else at, sha256))
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


