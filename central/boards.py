"""政讯通 on the platform: campaigns, the site registry, board jobs and the
review of what couriers send back.

- A **campaign** is a poster with the payload of the QR printed on it and the
  period it runs. A photo that should show the poster must carry a QR read
  that matches the payload (the handheld reads the stored JPEG and reports
  what it read, ``qr`` in ``handheld.photo``).
- A **site** is a place for a board: id, village, position (1e-7 degrees),
  the distance a photo may be taken from it (``tol_m``) and its status
  ``proposed`` -> ``approved`` -> ``installed`` -> ``retired``. A courier's
  survey (``handheld.site_survey``) proposes one; a dispatcher approves it;
  an install job whose photos pass review makes it installed.
- A **job** (``survey``, ``install``, ``post_poster``, ``maintain``) is for one
  outlet's handheld; :meth:`Boards.send_jobs` signs the device's open jobs
  and the approved sites (the registry handhelds cache) into one ``jobs``
  command with the device's own key and queues it for the outlet's gateway
  to pull, the way every command reaches a device (gateway downlink, MQTT).
- The **review** reads the courier's events as they are stored
  (:meth:`Boards.run_once`, from the embedded backend's ``events`` table,
  once each: a cursor on the table's rowid) and gives every evidence photo a
  verdict with a reason code: ``ok``, ``far_from_site`` (farther than the
  site's tolerance), ``no_position``, ``campaign_missing`` /
  ``campaign_wrong`` (the QR read is not the job's campaign),
  ``outside_period``, ``duplicate`` (the same photo hash already reviewed for
  another job or step), ``unknown_job``, ``unknown_site``, ``site_mismatch``.
  Condition reports (damaged, missing, poster torn or covered, site gone)
  and "could not complete" with its reason land here too.

Storage: tables of their own in the embedded backend's SQLite file, created
here like ``revocations.py`` and ``notices.py`` do, so the ``Backend``
protocol does not grow and the scale-out backend stays as it is. Boards is
the dispatcher's side (few writes, a county's worth of sites), not the ingest
path: a scale-out deployment would run it on a small SQLite of its own fed
with the same events (``feed``); that wiring is not built yet.
"""

from __future__ import annotations

import json
import math
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from central.embedded import Embedded, rekey
from central.keys import KeyService
from common.logs import recorder

record = recorder(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS board_campaigns (
    id TEXT PRIMARY KEY, poster TEXT NOT NULL, qr TEXT NOT NULL, starts REAL, ends REAL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS board_sites (
    id TEXT PRIMARY KEY, outlet TEXT NOT NULL, village TEXT NOT NULL, name TEXT NOT NULL,
    lat_e7 INTEGER NOT NULL, lon_e7 INTEGER NOT NULL, acc_cm INTEGER, tol_m REAL NOT NULL,
    status TEXT NOT NULL, landmark TEXT NOT NULL DEFAULT '', notes TEXT NOT NULL DEFAULT '',
    photos TEXT NOT NULL DEFAULT '[]', proposed_by TEXT, poster TEXT, cond TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, revisit_days REAL);
CREATE TABLE IF NOT EXISTS board_jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, outlet TEXT NOT NULL, device TEXT NOT NULL,
    site TEXT, village TEXT, campaign TEXT, status TEXT NOT NULL, reason TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
{reviews}
CREATE INDEX IF NOT EXISTS board_reviews_sha ON board_reviews (sha);
{reports}
CREATE TABLE IF NOT EXISTS board_cursor (k TEXT PRIMARY KEY, rowid INTEGER NOT NULL);
"""

# Keyed by (outlet, event id), as the events are (``central/embedded.py``):
# device names repeat from outlet to outlet, so two outlets' couriers can
# send the same event id. ``{t}`` is the table's name (``rekey``).
REVIEWS = """CREATE TABLE IF NOT EXISTS {t} (
    event TEXT NOT NULL, outlet TEXT NOT NULL, device TEXT NOT NULL, sha TEXT NOT NULL,
    job TEXT NOT NULL, site TEXT NOT NULL, step TEXT NOT NULL, pair TEXT, verdict TEXT NOT NULL,
    reason TEXT NOT NULL, distance_m REAL, at REAL NOT NULL, PRIMARY KEY (outlet, event));"""
REPORTS = """CREATE TABLE IF NOT EXISTS {t} (
    event TEXT NOT NULL, outlet TEXT NOT NULL, device TEXT NOT NULL, job TEXT, site TEXT NOT NULL,
    cond TEXT NOT NULL, note TEXT NOT NULL, photos TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (outlet, event));"""
SCHEMA = SCHEMA.replace("{reviews}", REVIEWS.format(t="board_reviews")).replace(
    "{reports}", REPORTS.format(t="board_reports"))

KINDS = ("survey", "install", "post_poster", "maintain")
SITE_STATES = ("proposed", "approved", "installed", "retired")
JOB_STATES = ("new", "sent", "submitted", "done", "refused", "could_not_complete")
CONDITIONS = ("damaged", "missing", "poster_torn", "poster_covered", "site_gone")
NOT_DONE = ("no_access", "site_gone", "no_poster", "unsafe", "weather", "other")
#: photo steps whose picture must show the job's campaign poster
CAMPAIGN_STEPS = ("photo", "photo_after")
DEFAULT_TOL_M = 50.0
LIFETIME_S = 7 * 24 * 3600  # a handheld may be out of reach for days
DAY_S = 86400
#: job kinds whose accepted completion is a visit to the site (the revisit clock starts again)
VISITS = ("install", "post_poster", "maintain")
# One review pass at a time per backend, however many Boards objects read it
# (the front's, the duties', the dispatcher's page): keyed by the backend.
_PASSES: weakref.WeakKeyDictionary[Embedded, threading.Lock] = weakref.WeakKeyDictionary()
_PASSES_LOCK = threading.Lock()
EVENT_TYPES = ("handheld.photo", "handheld.site_survey", "handheld.job_submitted",
               "handheld.board_condition", "handheld.job_not_done")


class BoardError(ValueError):
    """A dispatcher's request that cannot be done; ``code`` says why."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


def distance_m(lat1_e7: int, lon1_e7: int, lat2_e7: int, lon2_e7: int) -> float:
    """Great-circle distance (haversine, mean Earth radius) between two points in 1e-7 degrees."""
    p1, p2 = math.radians(lat1_e7 / 1e7), math.radians(lat2_e7 / 1e7)
    dp, dl = p2 - p1, math.radians((lon2_e7 - lon1_e7) / 1e7)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(a)))


def qr_matches(text: str, payload: str) -> bool:
    """The QR holds the campaign payload itself or a URL ending in it (as the handheld checks)."""
    text = text.strip()
    return text == payload or text.endswith("/" + payload) or text.endswith("=" + payload)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _s(v: Any, n: int = 200) -> str:
    return v[:n] if isinstance(v, str) else ""


class Boards:
    def __init__(self, backend: Embedded, master: bytes | None = None,
                 clock: Callable[[], float] = time.time,
                 device_clock: Callable[[str], float] | None = None) -> None:
        """``master``: the platform master key, needed only to sign job lists;
        ``device_clock``: an outlet's devices' time, which a signed job list
        carries (default ``clock``: the simulator's virtual outlets differ)."""
        self.b = backend
        self.db = backend.db
        self.master = master
        self.clock = clock
        self.device_clock = device_clock or (lambda outlet: clock())
        with _PASSES_LOCK:
            self._pass = _PASSES.setdefault(backend, threading.Lock())
        with self.b.lock:
            for table, create in (("board_reviews", REVIEWS), ("board_reports", REPORTS)):
                rekey(self.db, table, create, ["outlet", "event"])  # a file from before the key
            self.db.executescript(SCHEMA)
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(board_sites)")}
            if "revisit_days" not in cols:  # a file from before scheduled revisits
                try:
                    self.db.execute("ALTER TABLE board_sites ADD COLUMN revisit_days REAL")
                except sqlite3.OperationalError as e:  # another process added it meanwhile
                    if "duplicate column" not in str(e):
                        raise

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cur = self.db.execute(sql, tuple(args))
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # ------------------------------------------------------------ campaigns
    def add_campaign(self, cid: str, poster: str, qr: str, starts: float | None = None,
                     ends: float | None = None) -> None:
        if not cid or not qr or not poster:
            raise BoardError("bad_campaign", "id, poster and qr are needed")
        if starts is not None and ends is not None and ends <= starts:
            raise BoardError("bad_period", "the campaign ends before it starts")
        with self.b.lock:
            self.db.execute("INSERT INTO board_campaigns VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                            "poster=excluded.poster, qr=excluded.qr, starts=excluded.starts, "
                            "ends=excluded.ends", (cid, poster, qr, starts, ends, self.clock()))

    def campaigns(self) -> list[dict[str, Any]]:
        return self._rows("SELECT id, poster, qr, starts, ends FROM board_campaigns ORDER BY id")

    def campaign(self, cid: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT id, poster, qr, starts, ends FROM board_campaigns WHERE id=?", (cid,))
        return rows[0] if rows else None

    # ---------------------------------------------------------------- sites
    def add_site(self, sid: str, outlet: str, village: str, lat_e7: int, lon_e7: int,
                 name: str = "", tol_m: float = DEFAULT_TOL_M, status: str = "approved",
                 landmark: str = "", notes: str = "", photos: list[str] | None = None,
                 proposed_by: str | None = None, acc_cm: int | None = None) -> None:
        if status not in SITE_STATES:
            raise BoardError("bad_status", status)
        if not -900_000_000 <= lat_e7 <= 900_000_000 or not -1_800_000_000 <= lon_e7 <= 1_800_000_000:
            raise BoardError("bad_position", f"{lat_e7},{lon_e7}")
        if not 1.0 <= tol_m <= 1000.0:
            raise BoardError("bad_tolerance", str(tol_m))
        now = self.clock()
        with self.b.lock:
            self.db.execute(
                "INSERT INTO board_sites (id, outlet, village, name, lat_e7, lon_e7, acc_cm, tol_m, status, "
                "landmark, notes, photos, proposed_by, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
                (sid, outlet, village, name or village, lat_e7, lon_e7, acc_cm, tol_m, status, landmark,
                 notes, json.dumps(photos or []), proposed_by, now, now))

    def site(self, sid: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM board_sites WHERE id=?", (sid,))
        if not rows:
            return None
        rows[0]["photos"] = json.loads(rows[0]["photos"])
        return rows[0]

    def sites(self, status: str | None = None) -> list[dict[str, Any]]:
        where = " WHERE status=?" if status else ""
        rows = self._rows(f"SELECT * FROM board_sites{where} ORDER BY id", (status,) if status else ())
        for r in rows:
            r["photos"] = json.loads(r["photos"])
        return rows

    def _set_site(self, sid: str, want_from: tuple[str, ...], to: str, **extra: Any) -> None:
        s = self.site(sid)
        if s is None:
            raise BoardError("unknown_site", sid)
        if s["status"] not in want_from:
            raise BoardError("bad_status", f"site {sid} is {s['status']}")
        sets = ", ".join(f"{k}=?" for k in extra)
        with self.b.lock:
            self.db.execute(f"UPDATE board_sites SET status=?, updated_at=?{', ' + sets if sets else ''} "
                            "WHERE id=?", (to, self.clock(), *extra.values(), sid))
        record("site_" + to, site=sid)

    def approve_site(self, sid: str, tol_m: float | None = None) -> None:
        """A proposed site into the registry handhelds cache."""
        extra = {} if tol_m is None else {"tol_m": float(tol_m)}
        self._set_site(sid, ("proposed",), "approved", **extra)

    def retire_site(self, sid: str) -> None:
        self._set_site(sid, ("proposed", "approved", "installed"), "retired")

    # -------------------------------------------------------------- revisits
    def set_revisit(self, sid: str, days: float | None) -> None:
        """Revisit the site every ``days`` (None: only when a dispatcher adds a
        maintenance job). Counted from the last accepted visit."""
        if days is not None and not 1 <= float(days) <= 3650:
            raise BoardError("bad_interval", str(days))
        with self.b.lock:
            cur = self.db.execute("UPDATE board_sites SET revisit_days=?, updated_at=? WHERE id=?",
                                  (None if days is None else float(days), self.clock(), sid))
        if cur.rowcount != 1:
            raise BoardError("unknown_site", sid)

    def last_visit(self, sid: str) -> dict[str, Any] | None:
        """The site's last accepted visit: its newest install, post-poster or
        maintenance job that review settled as done (when and by whom)."""
        marks = ",".join("?" * len(VISITS))
        rows = self._rows(f"SELECT * FROM board_jobs WHERE site=? AND status='done' AND kind IN ({marks}) "
                          "ORDER BY updated_at DESC, id LIMIT 1", (sid, *VISITS))
        return rows[0] if rows else None

    def revisit_due(self, s: dict[str, Any]) -> float | None:
        """When an installed site with an interval is next due (None: never),
        from its last accepted visit, or from when it was registered if it
        has had none here (a board put up before postedge)."""
        if s["status"] != "installed" or not s.get("revisit_days"):
            return None
        last = self.last_visit(s["id"])
        return (last["updated_at"] if last else s["created_at"]) + s["revisit_days"] * DAY_S

    def schedule_revisits(self) -> list[str]:
        """A duty (``central/duties.py``): a ``maintain`` job for every
        installed site whose revisit is due, once per due date (the job's id
        is the site and the due time, so a second pass, a restart or a
        refused visit does not make another), and none while the site already
        has an open maintenance job. The job goes to the handheld that made
        the last accepted visit and reaches it with the next job list
        (:meth:`send_jobs`); it asks for the site's current poster when that
        campaign still runs. The ids of the jobs made."""
        made = []
        now = self.clock()
        for s in self.sites("installed"):
            due = self.revisit_due(s)
            if due is None or due > now:
                continue
            jid = f"rv-{s['id']}-{int(due)}"
            if self.job(jid) is not None or self.db.execute(
                    "SELECT 1 FROM board_jobs WHERE site=? AND kind='maintain' "
                    "AND status IN ('new','sent','submitted')", (s["id"],)).fetchone():
                continue
            last = self.last_visit(s["id"])
            device = last["device"] if last else None
            if device is None:
                anyone = self.db.execute("SELECT device FROM board_jobs WHERE site=? "
                                         "ORDER BY updated_at DESC LIMIT 1", (s["id"],)).fetchone()
                device = anyone[0] if anyone else None
            if device is None:
                record("revisit_no_device", site=s["id"])
                continue
            camp = self.campaign(s["poster"]) if s["poster"] else None
            running = camp is not None and (camp["ends"] is None or camp["ends"] >= now)
            self.add_job("maintain", s["outlet"], device, site=s["id"],
                         campaign=camp["id"] if camp is not None and running else None, jid=jid)
            record("revisit_scheduled", site=s["id"], job=jid, device=device)
            made.append(jid)
        return made

    # ----------------------------------------------------------------- jobs
    def add_job(self, kind: str, outlet: str, device: str, site: str | None = None,
                campaign: str | None = None, village: str | None = None, jid: str | None = None) -> str:
        """A job for one handheld; refused when the site or campaign does not allow it."""
        if kind not in KINDS:
            raise BoardError("bad_kind", kind)
        if kind == "survey":
            if not village:
                raise BoardError("need_village")
            site = None
        else:
            s = self.site(site or "")
            if s is None:
                raise BoardError("unknown_site", site or "")
            need = {"install": ("approved",), "post_poster": ("installed",), "maintain": ("installed",)}[kind]
            if s["status"] not in need:
                raise BoardError("bad_status", f"site {site} is {s['status']}, {kind} needs {need[0]}")
            village = s["village"]
        if kind in ("install", "post_poster"):
            c = self.campaign(campaign or "")
            if c is None:
                raise BoardError("unknown_campaign", campaign or "")
            if c["ends"] is not None and c["ends"] < self.clock():
                raise BoardError("campaign_over", campaign or "")
        elif campaign is not None and self.campaign(campaign) is None:
            raise BoardError("unknown_campaign", campaign)
        jid = jid or f"bj-{secrets.token_hex(5)}"
        now = self.clock()
        with self.b.lock:
            self.db.execute("INSERT INTO board_jobs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            (jid, kind, outlet, device, site, village, campaign, "new", None, now, now))
        return jid

    def jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM board_jobs" + (" WHERE status=?" if status else "") +
                          " ORDER BY created_at, id", (status,) if status else ())

    def job(self, jid: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM board_jobs WHERE id=?", (jid,))
        return rows[0] if rows else None

    def _site_doc(self, s: dict[str, Any]) -> dict[str, Any]:
        doc = {"id": s["id"], "name": s["name"], "village": s["village"], "lat_e7": s["lat_e7"],
               "lon_e7": s["lon_e7"], "tol_m": int(s["tol_m"]), "status": s["status"]}
        if s["landmark"]:
            doc["directions"] = s["landmark"]
        return doc

    def job_list(self, outlet: str, device: str) -> dict[str, Any]:
        """The ``jobs`` command's arguments for one handheld: its open jobs and
        the outlet's approved and installed sites (the cached registry)."""
        jobs = []
        for j in self._rows("SELECT * FROM board_jobs WHERE outlet=? AND device=? "
                            "AND status IN ('new','sent') ORDER BY created_at, id", (outlet, device)):
            kind = "maintenance" if j["kind"] == "maintain" else j["kind"]
            doc: dict[str, Any] = {"id": j["id"], "kind": kind}
            if j["site"]:
                s = self.site(j["site"])
                assert s is not None
                doc["site"] = self._site_doc(s)
            else:
                doc["site"] = {"id": "", "name": j["village"] or "", "village": j["village"] or ""}
            if j["campaign"]:
                doc["campaign"] = (self.campaign(j["campaign"]) or {}).get("qr", j["campaign"])
            doc["issued"] = int(j["created_at"])
            jobs.append(doc)
        sites = [self._site_doc(s) for s in self._rows(
            "SELECT * FROM board_sites WHERE outlet=? AND status IN ('approved','installed') ORDER BY id",
            (outlet,))]
        return {"round": f"r-{int(self.clock())}", "jobs": jobs, "sites": sites}

    def send_jobs(self, outlet: str, device: str) -> tuple[str, int, int]:
        """Sign the handheld's job list with its own key and queue it for the
        outlet's gateway; (command id, downlink cursor, jobs listed)."""
        if self.master is None:
            raise BoardError("no_master_key")
        args = self.job_list(outlet, device)
        cid = f"jl-{secrets.token_hex(8)}"
        keys = KeyService.registered(self.b, outlet, self.master)  # the device's own key version
        cmd = keys.command(device, "jobs", args, cid, now=int(self.device_clock(outlet)),
                           lifetime_s=LIFETIME_S)
        cursor = self.b.push_command(outlet, "handheld", cmd)
        ids = [j["id"] for j in args["jobs"]]
        with self.b.lock:
            self.db.executemany("UPDATE board_jobs SET status='sent', updated_at=? "
                                "WHERE id=? AND status='new'", [(self.clock(), j) for j in ids])
        record("jobs_sent", outlet=outlet, device=device, jobs=len(ids), cmd=cid)
        return cid, cursor, len(ids)

    # --------------------------------------------------------------- review
    def run_once(self) -> int:
        """Review every courier event stored since the last pass; how many."""
        with self._pass:  # one pass at a time (the duties thread and a dispatcher's GET)
            return self._run_once()

    def _run_once(self) -> int:
        row = self.db.execute("SELECT rowid FROM board_cursor WHERE k='events'").fetchone()
        after = row[0] if row else 0
        # the end first: an event stored during the pass is left for the next one, never skipped
        last = self.db.execute("SELECT max(rowid) FROM events").fetchone()[0] or after
        marks = ",".join("?" * len(EVENT_TYPES))
        rows = self.db.execute(
            "SELECT rowid, id, outlet, device, type, payload FROM events "
            f"WHERE rowid > ? AND rowid <= ? AND type IN ({marks}) ORDER BY rowid",
            (after, last, *EVENT_TYPES)).fetchall()
        for _rowid, eid, outlet, device, etype, payload in rows:
            try:
                body = json.loads(payload).get("body")
            except ValueError:
                body = None
            if isinstance(body, dict):
                self.feed(eid, outlet, device, etype, body)
        self._settle()
        with self.b.lock:
            self.db.execute("INSERT INTO board_cursor VALUES ('events', ?) ON CONFLICT(k) DO UPDATE SET "
                            "rowid=excluded.rowid", (last,))
        return len(rows)

    def feed(self, eid: str, outlet: str, device: str, etype: str, body: dict[str, Any]) -> None:
        """One courier event (idempotent on the outlet and event id)."""
        if etype == "handheld.photo":
            self._review_photo(eid, outlet, device, body)
        elif etype == "handheld.site_survey":
            self._survey(eid, outlet, device, body)
        elif etype == "handheld.job_submitted":
            self._job_status(_s(body.get("job"), 64), "submitted", None, ("new", "sent"))
        elif etype == "handheld.job_not_done":
            reason = _s(body.get("reason"), 32)
            self._job_status(_s(body.get("job"), 64), "could_not_complete",
                             reason if reason in NOT_DONE else "other", ("new", "sent", "submitted"))
        elif etype == "handheld.board_condition":
            self._report(eid, outlet, device, body)

    def _job_status(self, jid: str, status: str, reason: str | None, was: tuple[str, ...]) -> None:
        marks = ",".join("?" * len(was))
        with self.b.lock:
            self.db.execute(f"UPDATE board_jobs SET status=?, reason=?, updated_at=? WHERE id=? "
                            f"AND status IN ({marks})", (status, reason, self.clock(), jid, *was))

    def verdict_for(self, outlet: str, body: dict[str, Any]) -> tuple[str, float | None, str, str]:
        """(reason, distance in metres, job id, site id) for one photo event; reason ``ok`` accepts."""
        jid, sid, step = _s(body.get("job"), 64), _s(body.get("site"), 64), _s(body.get("step"), 32)
        job = self.job(jid)
        if job is not None and job["outlet"] != outlet:
            job = None
        if step == "photo_site":  # a survey photo: the site is what it proposes
            return ("ok" if _int(body.get("lat_e7")) is not None else "no_position"), None, jid, sid
        if job is not None and job["site"] and sid and sid != job["site"]:
            return "site_mismatch", None, jid, sid
        sid = job["site"] if job is not None and job["site"] else sid
        site = self.site(sid)
        if site is None or site["outlet"] != outlet:
            return ("unknown_job" if job is None and not sid else "unknown_site"), None, jid, sid
        lat, lon = _int(body.get("lat_e7")), _int(body.get("lon_e7"))
        if lat is None or lon is None:
            return "no_position", None, jid, sid
        dist = distance_m(lat, lon, site["lat_e7"], site["lon_e7"])
        if dist > site["tol_m"]:
            return "far_from_site", dist, jid, sid
        camp = self.campaign(job["campaign"]) if job is not None and job["campaign"] else None
        if camp is not None and step in CAMPAIGN_STEPS:
            read = [str(q) for q in body.get("qr", []) if isinstance(q, str)] if isinstance(
                body.get("qr"), list) else []
            if isinstance(body.get("campaign"), str):
                read.append(body["campaign"])
            if not read:
                return "campaign_missing", dist, jid, sid
            if not any(qr_matches(t, camp["qr"]) for t in read):
                return "campaign_wrong", dist, jid, sid
            taken = _int(body.get("taken_at"))
            if taken is not None and ((camp["starts"] is not None and taken < camp["starts"]) or
                                      (camp["ends"] is not None and taken > camp["ends"])):
                return "outside_period", dist, jid, sid
        return "ok", dist, jid, sid

    def _review_photo(self, eid: str, outlet: str, device: str, body: dict[str, Any]) -> None:
        sha = _s(body.get("sha256"), 64)
        if self.db.execute("SELECT 1 FROM board_reviews WHERE outlet=? AND event=?",
                           (outlet, eid)).fetchone():
            return
        reason, dist, jid, sid = self.verdict_for(outlet, body)
        step = _s(body.get("step"), 32)
        if reason == "ok":
            prior = self.db.execute("SELECT job, step FROM board_reviews WHERE sha=? "
                                    "AND NOT (outlet=? AND event=?)", (sha, outlet, eid)).fetchall()
            if any((j, s) != (jid, step) for j, s in prior):
                reason = "duplicate"
        with self.b.lock:
            self.db.execute("INSERT OR IGNORE INTO board_reviews VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                            (eid, outlet, device, sha, jid, sid, step, _s(body.get("pair"), 80) or None,
                             "accepted" if reason == "ok" else "refused", reason,
                             None if dist is None else round(dist, 1), self.clock()))
        record("photo_reviewed", event=eid, job=jid, site=sid, step=step, reason=reason)

    def _survey(self, eid: str, outlet: str, device: str, body: dict[str, Any]) -> None:
        sid = _s(body.get("survey"), 64)
        lat, lon = _int(body.get("lat_e7")), _int(body.get("lon_e7"))
        if not sid or lat is None or lon is None:
            record("survey_refused", event=eid, reason="no_position" if sid else "no_id")
            return
        photos = [p for p in body.get("photos", []) if isinstance(p, str)][:8] if isinstance(
            body.get("photos"), list) else []
        try:
            self.add_site(sid, outlet, _s(body.get("village"), 80) or "?", lat, lon,
                          name=_s(body.get("landmark"), 80), status="proposed",
                          landmark=_s(body.get("landmark"), 200), notes=_s(body.get("notes"), 500),
                          photos=photos, proposed_by=device, acc_cm=_int(body.get("acc_cm")))
        except BoardError as e:
            record("survey_refused", event=eid, reason=e.code)
            return
        jid = _s(body.get("job"), 64)
        if jid:
            self._job_status(jid, "done", None, ("new", "sent", "submitted"))

    def _report(self, eid: str, outlet: str, device: str, body: dict[str, Any]) -> None:
        cond = _s(body.get("condition"), 32)
        if cond not in CONDITIONS:
            record("report_refused", event=eid, reason="bad_condition")
            return
        sid = _s(body.get("site"), 64)
        photos = [p for p in body.get("photos", []) if isinstance(p, str)][:8] if isinstance(
            body.get("photos"), list) else []
        with self.b.lock:
            self.db.execute("INSERT OR IGNORE INTO board_reports VALUES (?,?,?,?,?,?,?,?,?)",
                            (eid, outlet, device, _s(body.get("job"), 64) or None, sid, cond,
                             _s(body.get("note"), 300), json.dumps(photos), self.clock()))
            self.db.execute("UPDATE board_sites SET cond=?, updated_at=? WHERE id=?",
                            (cond, self.clock(), sid))

    def _settle(self) -> None:
        """Submitted jobs whose photos are all reviewed: done (and the site's
        new state) or refused with the first photo's reason."""
        for j in self.jobs("submitted"):
            rows = self.db.execute("SELECT verdict, reason, step FROM board_reviews WHERE job=? ORDER BY at",
                                   (j["id"],)).fetchall()
            if not rows:
                continue
            bad = [r for v, r, _ in rows if v != "accepted"]
            if bad:
                self._job_status(j["id"], "refused", bad[0], ("submitted",))
                continue
            self._job_status(j["id"], "done", None, ("submitted",))
            if j["kind"] == "install":
                try:
                    self._set_site(j["site"], ("approved",), "installed", poster=j["campaign"], cond=None)
                except BoardError as e:  # retired meanwhile: the job stands, the site stays as it is
                    record("install_not_applied", job=j["id"], reason=e.code)
            elif j["kind"] == "post_poster":
                with self.b.lock:
                    self.db.execute("UPDATE board_sites SET poster=?, cond=NULL WHERE id=?",
                                    (j["campaign"], j["site"]))
            elif j["kind"] == "maintain":
                with self.b.lock:
                    self.db.execute("UPDATE board_sites SET cond=NULL WHERE id=?", (j["site"],))

    def reviews(self) -> list[dict[str, Any]]:
        """Photo verdicts, refused first; before/after photos of one visit share a ``pair``."""
        return self._rows("SELECT * FROM board_reviews ORDER BY verdict='accepted', at DESC")

    def reports(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM board_reports ORDER BY at DESC")
        for r in rows:
            r["photos"] = json.loads(r["photos"])
        return rows

    def overview(self) -> dict[str, Any]:
        """Everything the dispatcher's review needs, as JSON."""
        return {"campaigns": self.campaigns(), "sites": self.sites(), "jobs": self.jobs(),
                "reviews": self.reviews(), "reports": self.reports()}
