"""The gateway's disk budget.

budget = min(configured maximum, bytes the store holds now + free disk −
reserve): a gateway must never fill the disk its OS and broker live on.
Over budget, the gateway frees space in this order:

1. events already acked upstream, oldest first;
2. unsynced status and telemetry, thinned: every other one of the older
   half per pass (a downsampled history beats a truncated one);
3. unsynced status and telemetry, oldest first.

Photos from the handhelds (``gateway/uploads.py``) are a data class of
their own: counted in ``used()`` (they take the same disk), held to a share
of the budget (``photos_mb``, at most a quarter of the budget) that the
upload side enforces by refusing new photos with 507 (the photo stays on the
handheld), and deleted once the platform has acknowledged them. An
unsynced photo is never evicted: it is evidence nobody else holds yet. So
photos can never squeeze the event store below three quarters of the
budget. Each pass publishes the photo share in the store
(``kv['budget.photo_limit']``) for the upload side, which runs in the web
thread, and removes any synced photo a crash left behind.
照片单独计入磁盘预算：上限为预算的四分之一；同步前绝不删除，平台确认后即删除。

Custody, alarm and audit events are never evicted: when only they are left
over budget the gateway raises a ``budget_threatened`` alarm instead (the
clerk and the platform see it) and keeps storing them — losing a custody
record is worse than a full disk warning. Every eviction is reported
upstream as a gateway audit event, so the platform can tell a gap from a loss.

"Buffer hours left" divides the room left by the last hour's ingest rate.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from common.clock import now as clock_now
from gateway import metrics as M
from gateway.config import BudgetConfig
from gateway.store.events import EventStore

EVICTABLE = ("status", "telemetry")
PHOTO_SHARE = 4  # photos get at most 1/PHOTO_SHARE of the budget
ROW_OVERHEAD = 160  # bytes per row beyond the payload: columns, indexes, page slack


class Budget:
    def __init__(self, store: EventStore, cfg: BudgetConfig) -> None:
        self.store = store
        self.cfg = cfg
        self.threatened = False

    def events_used(self) -> int:
        n, size = self.store.db.execute("SELECT count(*), coalesce(sum(size),0) FROM events").fetchone()
        return int(size) + int(n) * ROW_OVERHEAD

    def photos_used(self) -> int:
        """Unsynced photos and confirmed chunks of unfinished uploads."""
        from gateway.store.photos import photo_bytes

        return photo_bytes(self.store)

    def used(self) -> int:
        """Events and photos: both live on the disk the budget protects."""
        return self.events_used() + self.photos_used()

    def photo_limit(self) -> int:
        """The photos' share: ``photos_mb``, and never more than a quarter
        of the budget (which shrinks with the free disk)."""
        return max(0, min(self.cfg.photos_bytes, self.limit() // PHOTO_SHARE))

    def limit(self) -> int:
        used = self.used()
        free = shutil.disk_usage(Path(self.store.path).parent).free
        return max(0, min(self.cfg.max_bytes, used + free - self.cfg.reserve_bytes))

    def hours_left(self) -> float | None:
        since = clock_now() - 3600
        n, size = self.store.db.execute(
            "SELECT count(*), coalesce(sum(size),0) FROM events WHERE received_at >= ?", (since,)).fetchone()
        rate = int(size) + int(n) * ROW_OVERHEAD
        if rate <= 0:
            return None
        return max(0.0, (self.limit() - self.used()) / rate)

    def _delete(self, where: str, args: tuple[Any, ...], limit: int) -> dict[str, int]:
        rows = self.store.db.execute(
            f"SELECT rowid, cls FROM events WHERE {where} ORDER BY received_at, rowid LIMIT ?",
            (*args, limit)).fetchall()
        if not rows:
            return {}
        counts: dict[str, int] = {}
        for _, cls in rows:
            counts[cls] = counts.get(cls, 0) + 1
        with self.store.tx():
            for i in range(0, len(rows), 500):
                ids = [r[0] for r in rows[i:i + 500]]
                self.store.db.execute(f"DELETE FROM events WHERE rowid IN ({','.join('?' * len(ids))})", ids)
        return counts

    def enforce(self, report: Any = None) -> dict[str, Any]:
        """Bring the store under budget; returns what was done."""
        from gateway.store.photos import PHOTO_LIMIT_KEY, drop_synced_photos

        dropped = drop_synced_photos(self.store)  # synced photos first: the platform holds them
        photo_limit = self.photo_limit()
        if self.store.get(PHOTO_LIMIT_KEY) != str(photo_limit):
            self.store.put(PHOTO_LIMIT_KEY, str(photo_limit))
        limit = self.limit()
        freed_synced = 0
        evicted: dict[str, int] = {}
        marks = ",".join("?" * len(EVICTABLE))
        for step in ("synced", "thin", "evict"):
            while self.used() > limit:
                over_rows = max(1, (self.used() - limit) // ROW_OVERHEAD // 4 + 1)
                if step == "synced":
                    got = self._delete("synced_at IS NOT NULL", (), over_rows)
                    freed_synced += sum(got.values())
                elif step == "thin":
                    # Every other unsynced status/telemetry event of the older half.
                    n = self.store.db.execute(
                        f"SELECT count(*) FROM events WHERE synced_at IS NULL AND cls IN ({marks})",
                        EVICTABLE).fetchone()[0]
                    got = self._delete(f"synced_at IS NULL AND cls IN ({marks}) AND rowid % 2 = 0 AND "
                                       f"rowid <= (SELECT rowid FROM events WHERE synced_at IS NULL AND "
                                       f"cls IN ({marks}) ORDER BY rowid LIMIT 1 OFFSET ?)",
                                       (*EVICTABLE, *EVICTABLE, max(0, n // 2)), over_rows)
                    if not got:
                        break
                else:
                    got = self._delete(f"synced_at IS NULL AND cls IN ({marks})", EVICTABLE, over_rows)
                if not got:
                    break
                if step != "synced":
                    for cls, k in got.items():
                        evicted[cls] = evicted.get(cls, 0) + k
                        M.EVICTED.labels(cls).inc(k)
        over = self.used() > limit
        if over and not self.threatened and report is not None:
            report("gateway.alarm", {"alarm": "budget_threatened", "used": self.used(), "limit": limit},
                   cls="alarm")
        self.threatened = over
        if evicted and report is not None:
            report("gateway.evicted", {"evicted": evicted}, "audit")
        return {"limit": limit, "used": self.used(), "freed_synced": freed_synced, "evicted": evicted,
                "threatened": over,
                "photos": {"bytes": self.photos_used(), "limit": photo_limit, "dropped": dropped}}

