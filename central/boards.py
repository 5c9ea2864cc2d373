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
  (:meth:`Boards.run_once`, each type from where the last pass stopped:
  ``DutyStore.events_after``) and gives every evidence photo a
  verdict with a reason code: ``ok``, ``far_from_site`` (farther than the
  site's tolerance), ``no_position``, ``campaign_missing`` /
  ``campaign_wrong`` (the QR read is not the job's campaign),
  ``outside_period``, ``duplicate`` (the same photo hash already reviewed for
  another job or step), ``unknown_job``, ``unknown_site``, ``site_mismatch``.
  Condition reports (damaged, missing, poster torn or covered, site gone)
  and "could not complete" with its reason land here too.

Storage: the duty store (``central/duty_store.py``), so the registry and
the review run on either backend (SQLite embedded, PostgreSQL scale-out)
with no SQL here. Every state change is one conditional ``update`` (a job
moves to ``submitted`` only from ``new`` or ``sent``), and every event is
handled idempotently (a review or report is recorded once per outlet and
event id), because a scale-out pass may read an event again (a store whose
writers commit out of order re-reads a window) and the dispatcher's page
writes while the duties' pass runs.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from central.duty_store import Column, DutyStore, DutyTable
from central.keys import KeyService
from common.logs import recorder
from protocol.errors import BadField
from protocol.ids import parse_event_id

record = recorder(__name__)

EVENT_TYPES = ("handheld.photo", "handheld.site_survey", "handheld.job_submitted",
               "handheld.board_condition", "handheld.job_not_done")

CAMPAIGNS = DutyTable("board_campaigns", "", (
    Column("id", "text"), Column("poster", "text"), Column("qr", "text"), Column("starts", "real", True),
    Column("ends", "real", True), Column("created_at", "real")), key=("id",))
SITES = DutyTable("board_sites", "", (
    Column("id", "text"), Column("outlet", "text"), Column("village", "text"), Column("name", "text"),
    Column("lat_e7", "int"), Column("lon_e7", "int"), Column("acc_cm", "int", True), Column("tol_m", "real"),
    Column("status", "text"), Column("landmark", "text"), Column("notes", "text"), Column("photos", "text"),
    Column("proposed_by", "text", True), Column("poster", "text", True), Column("cond", "text", True),
    Column("created_at", "real"), Column("updated_at", "real"), Column("revisit_days", "real", True)),
    key=("id",))
JOBS = DutyTable("board_jobs", "", (
    Column("id", "text"), Column("kind", "text"), Column("outlet", "text"), Column("device", "text"),
    Column("site", "text", True), Column("village", "text", True), Column("campaign", "text", True),
    Column("status", "text"), Column("reason", "text", True), Column("created_at", "real"),
    Column("updated_at", "real")), key=("id",))
# Keyed by (outlet, event id), as the events are: device names repeat from
# outlet to outlet, so two outlets' couriers can send the same event id.
REVIEWS = DutyTable("board_reviews", "handheld.photo", (
    Column("event", "text"), Column("outlet", "text"), Column("device", "text"), Column("sha", "text"),
    Column("job", "text"), Column("site", "text"), Column("step", "text"), Column("pair", "text", True),
    Column("verdict", "text"), Column("reason", "text"), Column("distance_m", "real", True),
    Column("at", "real")), indexes=(("sha",),))  # a photo's earlier reviews, by its hash (duplicates)
REPORTS = DutyTable("board_reports", "handheld.board_condition", (
    Column("event", "text"), Column("outlet", "text"), Column("device", "text"), Column("job", "text", True),
    Column("site", "text"), Column("cond", "text"), Column("note", "text"), Column("photos", "text"),
    Column("at", "real")))
# Where each pass stopped reading a courier event type (``events_after``'s cursor).
CURSORS = DutyTable("board_cursors", "", (Column("stream", "text"), Column("after", "real")),
                    key=("stream",), reads=EVENT_TYPES)
TABLES = (CAMPAIGNS, SITES, JOBS, REVIEWS, REPORTS, CURSORS)

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
# One review pass at a time per backend in this process, however many Boards
# objects read it (the front's, the duties', the dispatcher's page): keyed by
# the backend. Across scale-out processes the duties' turn does it.
_PASSES: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_PASSES_LOCK = threading.Lock()


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


def _device(eid: str) -> str:
    """The device an event id names (``hh01:1a2b3c4d:7``): the courier's
    handheld (the store checked the id against its publisher when it took it)."""
    try:
        return parse_event_id(eid)[0]
    except BadField:
        return ""


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _s(v: Any, n: int = 200) -> str:
    return v[:n] if isinstance(v, str) else ""


class Boards:
    def __init__(self, backend: DutyStore, master: bytes | None = None,
                 clock: Callable[[], float] = time.time,
                 device_clock: Callable[[str], float] | None = None) -> None:
        """``master``: the platform master key, needed only to sign job lists;
        ``device_clock``: an outlet's devices' time, which a signed job list
        carries (default ``clock``: the simulator's virtual outlets differ)."""
        self.b = backend
        self.master = master
        self.clock = clock
        self.device_clock = device_clock or (lambda outlet: clock())
        with _PASSES_LOCK:
            self._pass = _PASSES.setdefault(backend, threading.Lock())
        for table in TABLES:
            self.b.duty_table(table)
        self._seen: set[tuple[str, str]] = set()  # what the last pass read (outlet, event id)

    def _all(self, table: DutyTable, where: dict[str, Any] | None = None,
             order: tuple[str, ...] = ("id",)) -> list[dict[str, Any]]:
        """Rows of ``table`` whose columns equal ``where``, ordered by ``order``
        (the registry is a county's sites and jobs: small enough to sort here)."""
        return sorted(self.b.rows(table.name, where or {}), key=lambda r: tuple(r[k] for k in order))

    def _one(self, table: DutyTable, key: str) -> dict[str, Any] | None:
        rows = self.b.rows(table.name, {table.key[0]: key})
        return rows[0] if rows else None

    # ------------------------------------------------------------ campaigns
    def add_campaign(self, cid: str, poster: str, qr: str, starts: float | None = None,
                     ends: float | None = None) -> None:
        if not cid or not qr or not poster:
            raise BoardError("bad_campaign", "id, poster and qr are needed")
        if starts is not None and ends is not None and ends <= starts:
            raise BoardError("bad_period", "the campaign ends before it starts")
        if self.campaign(cid) is None:
            self.b.upsert(CAMPAIGNS, {"id": cid, "poster": poster, "qr": qr, "starts": starts, "ends": ends,
                                      "created_at": self.clock()})
        else:  # changed: its creation time stays
            self.b.update(CAMPAIGNS, {"id": cid},
                          {"poster": poster, "qr": qr, "starts": starts, "ends": ends})

    @staticmethod
    def _campaign_doc(c: dict[str, Any]) -> dict[str, Any]:
        return {k: c[k] for k in ("id", "poster", "qr", "starts", "ends")}

    def campaigns(self) -> list[dict[str, Any]]:
        return [self._campaign_doc(c) for c in self._all(CAMPAIGNS)]

    def campaign(self, cid: str) -> dict[str, Any] | None:
        c = self._one(CAMPAIGNS, cid)
        return None if c is None else self._campaign_doc(c)

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
        self.b.decide(SITES.name, {  # a site already registered stays as it is
            "id": sid, "outlet": outlet, "village": village, "name": name or village, "lat_e7": lat_e7,
            "lon_e7": lon_e7, "acc_cm": acc_cm, "tol_m": float(tol_m), "status": status, "landmark": landmark,
            "notes": notes, "photos": json.dumps(photos or []), "proposed_by": proposed_by, "poster": None,
            "cond": None, "created_at": now, "updated_at": now, "revisit_days": None})

    def site(self, sid: str) -> dict[str, Any] | None:
        s = self._one(SITES, sid)
        if s is not None:
            s["photos"] = json.loads(s["photos"])
        return s

    def sites(self, status: str | None = None) -> list[dict[str, Any]]:
        rows = self._all(SITES, {"status": status} if status else None)
        for r in rows:
            r["photos"] = json.loads(r["photos"])
        return rows

    def _set_site(self, sid: str, want_from: tuple[str, ...], to: str, **extra: Any) -> None:
        s = self.site(sid)
        if s is None:
            raise BoardError("unknown_site", sid)
        moved = s["status"] in want_from and self.b.update(
            SITES, {"id": sid}, {"status": to, "updated_at": self.clock(), **extra}, {"status": want_from})
        if not moved:  # or another writer moved it meanwhile
            raise BoardError("bad_status", f"site {sid} is {s['status']}")
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
        if not self.b.update(SITES, {"id": sid}, {"revisit_days": None if days is None else float(days),
                                                  "updated_at": self.clock()}):
            raise BoardError("unknown_site", sid)

    def last_visit(self, sid: str) -> dict[str, Any] | None:
        """The site's last accepted visit: its newest install, post-poster or
        maintenance job that review settled as done (when and by whom)."""
        done = [j for j in self.b.rows(JOBS.name, {"site": sid, "status": "done"}) if j["kind"] in VISITS]
        return min(done, key=lambda j: (-j["updated_at"], j["id"]), default=None)

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
            at_site = self.b.rows(JOBS.name, {"site": s["id"]})
            if self.job(jid) is not None or any(
                    j["kind"] == "maintain" and j["status"] in ("new", "sent", "submitted") for j in at_site):
                continue
            last = self.last_visit(s["id"])
            device = last["device"] if last else None
            if device is None:
                anyone = max(at_site, key=lambda j: j["updated_at"], default=None)
                device = anyone["device"] if anyone else None
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
        if not self.b.decide(JOBS.name, {"id": jid, "kind": kind, "outlet": outlet, "device": device,
                                         "site": site, "village": village, "campaign": campaign,
                                         "status": "new", "reason": None, "created_at": now,
                                         "updated_at": now}):
            raise BoardError("job_exists", jid)
        return jid

    def jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._all(JOBS, {"status": status} if status else None, ("created_at", "id"))

    def job(self, jid: str) -> dict[str, Any] | None:
        return self._one(JOBS, jid)

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
        for j in [j for j in self._all(JOBS, {"outlet": outlet, "device": device}, ("created_at", "id"))
                  if j["status"] in ("new", "sent")]:
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
        sites = [self._site_doc(s) for s in self._all(SITES, {"outlet": outlet})
                 if s["status"] in ("approved", "installed")]
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
        for jid in ids:
            self.b.update(JOBS, {"id": jid}, {"status": "sent", "updated_at": self.clock()},
                          {"status": ("new",)})
        record("jobs_sent", outlet=outlet, device=device, jobs=len(ids), cmd=cid)
        return cid, cursor, len(ids)

    # --------------------------------------------------------------- review
    def run_once(self) -> int:
        """Review every courier event stored since the last pass; how many
        were new to this registry's passes."""
        with self._pass:  # one pass at a time (the duties thread and a dispatcher's GET)
            return self._run_once()

    def _run_once(self) -> int:
        # each type from where the last pass stopped; the cursors are saved
        # once the pass is done, so a pass that failed reads the same again
        read: list[tuple[str, str, str, dict[str, Any]]] = []
        moved = {}
        for etype in EVENT_TYPES:
            found = self.b.rows(CURSORS.name, {"stream": etype})
            cursor = float(found[0]["after"]) if found else None
            events, after = self.b.events_after(etype, cursor)
            read += [(etype, outlet, eid, body) for outlet, eid, body in events]
            if after != cursor:
                moved[etype] = after
        # a store that re-reads a window answers again what the last pass
        # read: handled already (every step is idempotent; this saves the work)
        seen, self._seen = self._seen, {(outlet, eid) for _, outlet, eid, _ in read}
        fresh = [r for r in read if (r[1], r[2]) not in seen]
        # surveys and photos before submissions and reports: a job whose
        # events came in one batch settles in this pass
        for etype, outlet, eid, body in sorted(fresh, key=lambda r: EVENT_TYPES.index(r[0])):
            if body:
                self.feed(eid, outlet, _device(eid), etype, body)
        self._settle()
        for etype, after in moved.items():
            self.b.upsert(CURSORS, {"stream": etype, "after": after})
        return len(fresh)

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
        self.b.update(JOBS, {"id": jid}, {"status": status, "reason": reason, "updated_at": self.clock()},
                      {"status": was})

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
        if self.b.rows(REVIEWS.name, {"outlet": outlet, "event": eid}):
            return
        reason, dist, jid, sid = self.verdict_for(outlet, body)
        step = _s(body.get("step"), 32)
        if reason == "ok":
            prior = [r for r in self.b.rows(REVIEWS.name, {"sha": sha})
                     if (r["outlet"], r["event"]) != (outlet, eid)]
            if any((r["job"], r["step"]) != (jid, step) for r in prior):
                reason = "duplicate"
        if self.b.decide(REVIEWS.name, {
                "event": eid, "outlet": outlet, "device": device, "sha": sha, "job": jid, "site": sid,
                "step": step, "pair": _s(body.get("pair"), 80) or None,
                "verdict": "accepted" if reason == "ok" else "refused", "reason": reason,
                "distance_m": None if dist is None else round(dist, 1), "at": self.clock()}):
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
        # the site's condition only when the report is new: a report read
        # again must not undo a maintenance settled since
        if self.b.decide(REPORTS.name, {"event": eid, "outlet": outlet, "device": device,
                                        "job": _s(body.get("job"), 64) or None, "site": sid, "cond": cond,
                                        "note": _s(body.get("note"), 300), "photos": json.dumps(photos),
                                        "at": self.clock()}):
            self.b.update(SITES, {"id": sid}, {"cond": cond, "updated_at": self.clock()})

    def _settle(self) -> None:
        """Submitted jobs whose photos are all reviewed: done (and the site's
        new state) or refused with the first photo's reason."""
        for j in self.jobs("submitted"):
            rows = sorted(self.b.rows(REVIEWS.name, {"job": j["id"]}), key=lambda r: (r["at"], r["event"]))
            if not rows:
                continue
            bad = [r["reason"] for r in rows if r["verdict"] != "accepted"]
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
                self.b.update(SITES, {"id": j["site"]}, {"poster": j["campaign"], "cond": None})
            elif j["kind"] == "maintain":
                self.b.update(SITES, {"id": j["site"]}, {"cond": None})

    def reviews(self) -> list[dict[str, Any]]:
        """Photo verdicts, refused first; before/after photos of one visit share a ``pair``."""
        return sorted(self.b.rows(REVIEWS.name, {}), key=lambda r: (r["verdict"] == "accepted", -r["at"]))

    def reports(self) -> list[dict[str, Any]]:
        rows = sorted(self.b.rows(REPORTS.name, {}), key=lambda r: -r["at"])
        for r in rows:
            r["photos"] = json.loads(r["photos"])
        return rows

    def overview(self) -> dict[str, Any]:
        """Everything the dispatcher's review needs, as JSON."""
        return {"campaigns": self.campaigns(), "sites": self.sites(), "jobs": self.jobs(),
                "reviews": self.reviews(), "reports": self.reports()}
