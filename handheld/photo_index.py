"""SQLite index of the photos already taken on this handheld, and the duplicate rule.

Why a rule and not a single threshold: a perceptual hash only says "these two pictures
look alike at 32x32". For evidence that is sometimes fraud and sometimes exactly what
we asked for:

* the same file submitted twice, or a gallery photo re-used for another job - fraud;
* the maintenance "before" photo of a board taken months after the install "after"
  photo - the same board from the same spot; it *should* look alike;
* a maintenance visit's "after" photo next to its "before": the only change is the
  poster, and a poster swap moves the 64-bit pHash by only a few bits (the tests
  measure 2), so pHash alone cannot tell "work done" from "same photo sent twice".

The rule (first match wins; ``d`` = pHash Hamming distance):

1. **Exact copy** - SHA-256 of the stored JPEG *or* of the file the courier fed in
   equals one already indexed, anywhere: **refuse** (``duplicate_exact``). Identical
   bytes are never a new photograph.
2. **Same job and same step**, ``d <= near_threshold`` (10): **refuse**
   (``duplicate_same_step``). One photo per step; a retake must first ``retract`` the
   old one (the app does that when the courier taps "retake").
3. **Same visit** (same job, or same site within ``visit_window_s``, 12 h, of the
   other photo) but a different step: ``d <= copy_threshold`` (4, what re-encoding,
   resizing or brightening the same picture gives: 0-2 bits) **refuse**
   (``duplicate_same_visit``) - the "after" is a copy of the "before". The courier is
   still on site, so a false refusal costs one retake. ``copy_threshold < d <=
   near_threshold``: **flag** (``similar_same_visit``) for the reviewer.
4. **Same site, another visit** (older than the window): **flag** only
   (``similar_earlier_visit``). This is the maintenance case; the link is recorded
   so a reviewer can put the two side by side, but nobody is stopped.
5. **Another site**: ``d <= copy_threshold`` **refuse** (``reused_other_site``) - the
   same picture claimed for a different village; otherwise **flag**
   (``similar_other_site``): standard boards in look-alike villages can collide.

Thresholds: unrelated scenes land at 14-32 bits; re-encode/resize/brightness at 0-2;
a 2-5 % crop at 6-10. ``near_threshold`` 10 therefore catches "slightly cropped"
copies while keeping a margin to unrelated photos; ``copy_threshold`` 4 leaves a
margin above re-encoding noise and below what two hand-held shots of the same scene
typically differ by (framing alone shifts 5+ bits).

The search is a linear scan of 64-bit ints in Python: a handheld keeps at most tens
of thousands of photos (about 20 ms per 10 000), so an index structure (BK-tree,
multi-index hashing) would add code without a user-visible gain.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handheld.photo import hamming, messages, phash_hex
from handheld.text import TEXT

_SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    id            INTEGER PRIMARY KEY,
    sha256        TEXT NOT NULL UNIQUE,
    source_sha256 TEXT,
    phash         TEXT NOT NULL,
    job           TEXT NOT NULL,
    site          TEXT NOT NULL,
    step          TEXT NOT NULL,
    taken_at      REAL NOT NULL,
    device        TEXT,
    record_id     TEXT,
    flags         TEXT NOT NULL DEFAULT '',
    retracted_at  REAL
);
CREATE INDEX IF NOT EXISTS photos_source_sha ON photos(source_sha256);
CREATE INDEX IF NOT EXISTS photos_site ON photos(site);
"""


@dataclass(frozen=True)
class DuplicateRule:
    """Thresholds of the rule in the module docstring."""

    near_threshold: int = 10
    copy_threshold: int = 4
    visit_window_s: float = 12 * 3600.0


class DuplicatePhotoError(Exception):
    """``add`` was asked to index bytes already indexed for another job/step."""

    def __init__(self, code: str, existing: dict[str, Any]) -> None:
        self.code = code
        self.existing = existing
        super().__init__(f"{code}: {TEXT.t('photo_index.' + code, 'en')} (existing: {existing})")


class PhotoIndex:
    """Durable index of accepted photos; ``check`` applies the rule, ``add`` records.

    ``check`` and ``add`` are separate so the caller can persist the JPEG between
    them (write file, then index): a crash in between leaves an un-indexed file that a
    retry re-adds, never an index row pointing at nothing. ``add`` is idempotent for
    the same bytes, job and step, so that retry is safe.
    """

    def __init__(self, path: str | Path = ":memory:", rule: DuplicateRule | None = None) -> None:
        self.path = str(path)
        self.rule = rule or DuplicateRule()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # evidence index: survive a power cut
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> PhotoIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _row(self, row: sqlite3.Row, distance: int | None = None) -> dict[str, Any]:
        out = {
            k: row[k] for k in ("sha256", "phash", "job", "site", "step", "taken_at", "device", "record_id")
        }
        if distance is not None:
            out["distance"] = distance
        return out

    def check(
        self,
        sha256: str,
        phash: int | str,
        job: str,
        site: str,
        step: str,
        taken_at: float,
        source_sha256: str | None = None,
    ) -> dict[str, Any]:
        """Decide on a new photo: ``{"action", "code", "flags", "matches", "messages"}``.

        ``action`` is "accept", "flag" (accept, with notes for the reviewer) or "refuse".

        ``code`` is the refusal reason (None unless refused); ``flags`` lists the
        non-blocking notes; ``matches`` names the indexed photos involved, nearest first.
        """
        hashes = {sha256} | ({source_sha256} if source_sha256 else set())
        ph = int(phash, 16) if isinstance(phash, str) else phash
        rule = self.rule
        with self._lock:
            q = ",".join("?" * len(hashes))
            # Retracted rows still count as exact copies (deleting a photo must not
            # free its bytes for another job), except when re-submitted to their own step.
            exact = [
                r
                for r in self._db.execute(
                    f"SELECT * FROM photos WHERE sha256 IN ({q}) OR source_sha256 IN ({q})",
                    [*hashes, *hashes],
                ).fetchall()
                if r["retracted_at"] is None or (r["job"], r["step"]) != (job, step)
            ]
            rows = self._db.execute("SELECT * FROM photos WHERE retracted_at IS NULL").fetchall()
        if exact:
            matches = [self._row(r, 0) for r in exact]
            return self._decision("refuse", "duplicate_exact", [], matches)

        near: list[tuple[int, sqlite3.Row]] = []
        for r in rows:
            d = hamming(ph, r["phash"])
            if d <= rule.near_threshold:
                near.append((d, r))
        near.sort(key=lambda t: (t[0], -t[1]["taken_at"]))
        refuse: tuple[str, list[dict[str, Any]]] | None = None
        flags: dict[str, list[dict[str, Any]]] = {}
        for d, r in near:
            same_job = r["job"] == job
            same_site = r["site"] == site
            same_visit = same_job or (same_site and abs(taken_at - r["taken_at"]) <= rule.visit_window_s)
            code: str
            blocking: bool
            if same_job and r["step"] == step:
                code, blocking = "duplicate_same_step", True
            elif same_visit:
                blocking = d <= rule.copy_threshold
                code = "duplicate_same_visit" if blocking else "similar_same_visit"
            elif same_site:
                code, blocking = "similar_earlier_visit", False
            else:
                blocking = d <= rule.copy_threshold
                code = "reused_other_site" if blocking else "similar_other_site"
            if blocking and refuse is None:
                refuse = (code, [self._row(r, d)])
            elif not blocking:
                flags.setdefault(code, []).append(self._row(r, d))
        all_matches = [self._row(r, d) for d, r in near]
        if refuse is not None:
            return self._decision("refuse", refuse[0], list(flags), all_matches)
        if flags:
            return self._decision("flag", None, list(flags), all_matches)
        return self._decision("accept", None, [], [])

    @staticmethod
    def _decision(
        action: str, code: str | None, flags: list[str], matches: list[dict[str, Any]]
    ) -> dict[str, Any]:
        codes = ([code] if code else []) + flags
        return {
            "action": action,
            "code": code,
            "flags": flags,
            "matches": matches,
            "messages": messages(codes, "photo_index."),
        }

    def add(
        self,
        sha256: str,
        phash: int | str,
        job: str,
        site: str,
        step: str,
        taken_at: float | None = None,
        *,
        source_sha256: str | None = None,
        device: str | None = None,
        record_id: str | None = None,
        flags: list[str] | None = None,
    ) -> int:
        """Index an accepted photo; returns its row id. Same bytes + job + step again -> same id."""
        ph = phash if isinstance(phash, str) else phash_hex(phash)
        taken = time.time() if taken_at is None else float(taken_at)
        with self._lock:
            row = self._db.execute("SELECT * FROM photos WHERE sha256 = ?", (sha256,)).fetchone()
            if row is not None:
                if row["job"] == job and row["step"] == step:
                    if row["retracted_at"] is not None:
                        self._db.execute("UPDATE photos SET retracted_at = NULL WHERE id = ?", (row["id"],))
                    return int(row["id"])
                raise DuplicatePhotoError("duplicate_exact", self._row(row))
            cur = self._db.execute(
                "INSERT INTO photos"
                " (sha256, source_sha256, phash, job, site, step, taken_at, device, record_id, flags)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sha256, source_sha256, ph, job, site, step, taken, device, record_id, ",".join(flags or [])),
            )
            return int(cur.lastrowid or 0)

    def retract(self, sha256: str, at: float | None = None) -> bool:
        """Withdraw a photo the courier deleted before submitting (a retake).

        The row is kept, marked retracted, so the audit trail shows the retake, but it
        no longer blocks the replacement photo.
        """
        with self._lock:
            cur = self._db.execute(
                "UPDATE photos SET retracted_at = ? WHERE sha256 = ? AND retracted_at IS NULL",
                (time.time() if at is None else at, sha256),
            )
            return cur.rowcount > 0

    def count(self) -> int:
        """Number of photos currently indexed (not retracted)."""
        with self._lock:
            return int(
                self._db.execute("SELECT COUNT(*) FROM photos WHERE retracted_at IS NULL").fetchone()[0]
            )

    def photos(self, job: str | None = None) -> list[dict[str, Any]]:
        """Indexed photos, oldest first, optionally for one job."""
        sql = "SELECT * FROM photos WHERE retracted_at IS NULL"
        args: tuple[str, ...] = ()
        if job is not None:
            sql += " AND job = ?"
            args = (job,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY taken_at, id", args).fetchall()
        return [self._row(r) for r in rows]
