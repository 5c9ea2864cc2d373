"""Bulletin-board jobs: the list from the platform, one site at a time, photos as evidence.

The job list arrives as a platform-signed command to this handheld (op ``jobs``,
verified in :mod:`handheld.app`), e.g.::

    {"op": "jobs", "args": {"round": "r-0501", "jobs": [
        {"id": "j-17", "kind": "install", "campaign": "PE-CAMP:health-2025",
         "site": {"id": "s-0451-03", "name": "Xiakou village square",
                  "lat_e7": 275012345, "lon_e7": 1099123456,
                  "directions": "Behind the clinic, left of the shop"}},
        {"id": "j-18", "kind": "maintenance", "campaign": "PE-CAMP:health-2025", "site": {...}}]}}

Coordinates are 1e-7 degrees (the protocol carries no floats). Each kind is a fixed
sequence of steps, done in order:

- ``install``: install_board -> post_poster -> photo (must show the campaign QR) -> submit
- ``post_poster``: post_poster -> photo (campaign QR) -> submit
- ``maintenance`` (the platform also says ``maintain``): photo_before -> maintain ->
  photo_after (campaign QR if the job names one) -> submit; the before and after photos
  of one visit carry the same ``pair`` so they stay together up to the review
- ``survey``: photo_site -> submit, which proposes a new site (``handheld.site_survey``:
  the photo's position and accuracy, village, landmark, notes) for the platform to
  approve. A survey is a job the platform sent or the courier's own (:meth:`Jobs.propose`);
  it shows as waiting for approval until the site comes back in a job list's ``sites``.

The job list also carries ``sites``, the approved and installed sites of the outlet
(the registry the handheld caches for ad-hoc condition reports, :meth:`Jobs.adhoc`).
A photo taken farther from the job's site than its tolerance (``tol_m``) is refused on
the spot (``far_from_site``); a site sent without one is checked against 50 m and a
photo beyond only flagged (``far_unverified``). The platform checks the distance again.
During a job the courier can report the board's condition (:meth:`Jobs.report`:
damaged, missing, poster torn or covered, site gone; ``handheld.board_condition`` with
the job's photos) or give up with a reason code (:meth:`Jobs.cannot`,
``handheld.job_not_done``). Jobs and the list show how old they are.

Every step is an ``audit`` event (``handheld.board_step``); every accepted photo a
``handheld.photo`` event carrying the evidence record's hashes and position, and its
JPEG goes to the upload queue; submit is ``handheld.job_submitted``. A job shows
``submitted`` until the outbox has been acked for its submit event, then ``sent``.

The campaign check reads the QR codes in the *stored* JPEG (what a reviewer will see)
with :func:`handheld.decode.decode_image`: no QR at all, or a QR for another campaign,
refuses the photo with a message that says what to do, and the photo is retracted from
the duplicate index so the retake is not called a duplicate of a refused picture.

State (``jobs.json`` in the state dir, written atomically) survives restarts; a new job
list replaces jobs not yet started and keeps those in progress, so no work is lost to
a re-sent list.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common import logs
from common.durable import write_durable
from common.text import Localized
from handheld import decode as _decode
from handheld import photo as _photo
from handheld.evidence import EvidenceRefused, capture_evidence
from handheld.photo_index import PhotoIndex
from handheld.text import TEXT, Refused

log = logs.get(__name__)

STEPS: dict[str, tuple[str, ...]] = {
    "install": ("install_board", "post_poster", "photo"),
    "post_poster": ("post_poster", "photo"),
    "maintenance": ("photo_before", "maintain", "photo_after"),
    "survey": ("photo_site",),
}
ALIASES = {"maintain": "maintenance"}
PHOTO_STEPS = ("photo", "photo_before", "photo_after", "photo_site")
CAMPAIGN_STEPS = ("photo", "photo_after")
PAIR_STEPS = ("photo_before", "photo_after")
CONDITIONS = ("damaged", "missing", "poster_torn", "poster_covered", "site_gone")
NOT_DONE = ("no_access", "site_gone", "no_poster", "unsafe", "weather", "other")
DEFAULT_TOL_M = 50.0

Emit = Callable[[str, str, dict[str, Any]], tuple[str, int]]


def step_name(step: str) -> Localized:
    """A job step as the courier reads it ("张贴海报"), in each language; a
    step this version does not know, as sent."""
    key = f"step.{step}"
    return Localized(TEXT.both(key) if TEXT.has(key) else {"zh": step, "en": step})


def atomic_json(path: Path, doc: Any) -> None:
    """A power cut leaves the old or the new file, never half."""
    write_durable(path, json.dumps(doc, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError):
        log.error("state file %s unreadable; kept aside as .bad", path)
        try:
            os.replace(path, path.with_name(path.name + ".bad"))
        except OSError:
            pass
        return default


def campaign_matches(text: str, campaign: str) -> bool:
    """The QR holds the campaign id itself or a URL ending in it (``.../c/<id>``, ``?c=<id>``)."""
    text = text.strip()
    return text == campaign or text.endswith("/" + campaign) or text.endswith("=" + campaign)


def age(at: float | None, lang: str, now: float | None = None) -> str:
    """How old something is, as a courier reads it ("3 天前", "5 hours ago")."""
    if at is None:
        return TEXT.t("age.never", lang)
    s = max(0, int((time.time() if now is None else now) - at))
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= n:
            return TEXT.t("age." + unit, lang, n=s // n)
    return TEXT.t("age.now", lang)


def check_job(job: Any) -> dict[str, Any]:
    """Validate one job from the list; raise ValueError naming the field."""
    if not isinstance(job, dict):
        raise ValueError("job must be an object")
    jid = job.get("id")
    if not isinstance(jid, str) or not 0 < len(jid) <= 64:
        raise ValueError("job.id must be a string of 1-64 characters")
    if job.get("kind") in ALIASES:
        job = {**job, "kind": ALIASES[job["kind"]]}
    if job.get("kind") not in STEPS:
        raise ValueError(f"job {jid}: kind must be one of {', '.join(STEPS)}")
    if job["kind"] == "survey" and not isinstance(job.get("site"), dict):
        job = {**job, "site": {"id": "", "name": str(job.get("village", ""))[:80]}}
    site = job.get("site")
    if not isinstance(site, dict) or not isinstance(site.get("id"), str):
        raise ValueError(f"job {jid}: site must be an object with an id")
    if "tol_m" in site and (not isinstance(site["tol_m"], int | float) or not 0 < site["tol_m"] <= 1000):
        raise ValueError(f"job {jid}: site.tol_m must be 1-1000 metres")
    for k in ("lat_e7", "lon_e7"):
        if k in site and (not isinstance(site[k], int) or isinstance(site[k], bool)):
            raise ValueError(f"job {jid}: site.{k} must be an integer (1e-7 degrees)")
    camp = job.get("campaign")
    if camp is not None and (not isinstance(camp, str) or not camp):
        raise ValueError(f"job {jid}: campaign must be a non-empty string")
    if job["kind"] in ("install", "post_poster") and not camp:
        raise ValueError(f"job {jid}: an {job['kind']} job needs the poster's campaign")
    return job


def check_site(site: Any) -> dict[str, Any]:
    """One cached site from the list's ``sites``; ValueError naming the field."""
    if not isinstance(site, dict) or not isinstance(site.get("id"), str) or not site["id"]:
        raise ValueError("each site needs an id")
    for k in ("lat_e7", "lon_e7"):
        if not isinstance(site.get(k), int) or isinstance(site[k], bool):
            raise ValueError(f"site {site['id']}: {k} must be an integer (1e-7 degrees)")
    return site


class PhotoSink:
    """Where accepted photos go for upload (implemented in :mod:`handheld.app`)."""

    def add(self, path: Path, meta: dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class Jobs:
    def __init__(self, state_dir: Path, device: str, emit: Emit, delivered: Callable[[int], bool],
                 index: PhotoIndex, gnss: Callable[[], Any], photos: PhotoSink,
                 require_position: bool = True, scope: str = "") -> None:
        """``scope``: what makes this install unique beyond the device id (its outlet and
        incarnation): the ids of the courier's own jobs and site proposals carry a tag
        of it, because the platform's site registry spans every outlet, and another
        outlet's ``hh01``, or this one after a reinstall, counts from 1 again."""
        self.path = state_dir / "jobs.json"
        self._tag = hashlib.sha256(scope.encode()).hexdigest()[:6] if scope else ""
        self.photo_dir = state_dir / "photos"
        self.device = device
        self.emit = emit
        self.delivered = delivered
        self.index = index
        self.gnss = gnss
        self.photos = photos
        self.require_position = require_position
        self._lock = threading.RLock()
        self.state: dict[str, Any] = read_json(self.path, {"round": None, "order": [], "jobs": {}})
        self.last_photo: dict[str, Any] | None = None

    def _save(self) -> None:
        atomic_json(self.path, self.state)

    # ------------------------------------------------------------------ the list
    def load_list(self, args: dict[str, Any]) -> int:
        """Apply a verified ``jobs`` command; returns how many jobs are listed. ValueError if bad."""
        raw = args.get("jobs")
        if not isinstance(raw, list):
            raise ValueError("args.jobs must be a list")
        new = [check_job(j) for j in raw]
        sites = args.get("sites")
        if sites is not None and not isinstance(sites, list):
            raise ValueError("args.sites must be a list")
        cached = {s["id"]: s for s in (check_site(x) for x in sites or [])}
        with self._lock:
            old = self.state["jobs"]
            jobs: dict[str, Any] = {}
            for j in new:
                prev = old.get(j["id"])
                if prev is not None and prev["status"] != "open":
                    jobs[j["id"]] = prev  # work in progress is never replaced
                else:
                    jobs[j["id"]] = {"def": j, "status": "open", "steps": {}, "photos": {}}
            for jid, prev in old.items():  # started jobs dropped from the list stay until sent
                if jid not in jobs and (prev["status"] in ("active", "submitted", "not_done")
                                        or prev.get("local")):
                    jobs[jid] = prev
            self.state.update(round=args.get("round"), order=list(jobs), jobs=jobs, received=int(time.time()))
            if sites is not None:
                self.state["sites"] = cached
                self.state["sites_received"] = int(time.time())
            self._save()
        return len(new)

    def _job(self, jid: str) -> dict[str, Any]:
        job = self.state["jobs"].get(jid)
        if job is None:
            raise Refused("no_job")
        return job

    def next_step(self, job: dict[str, Any]) -> str | None:
        for s in STEPS[job["def"]["kind"]]:
            if s not in job["steps"]:
                return s
        return None

    def list(self) -> list[dict[str, Any]]:
        """Jobs for the UI, with ``sent`` worked out from the outbox."""
        with self._lock:
            out = []
            changed = False
            for jid in self.state["order"]:
                job = self.state["jobs"][jid]
                if job["status"] == "submitted" and self.delivered(job.get("submit_seq", 0)):
                    job["status"] = "sent"
                    changed = True
                if job["status"] == "not_done" and self.delivered(job.get("submit_seq", 0)):
                    job["status"] = "not_done_sent"
                    changed = True
                d = job["def"]
                pair = None
                if any(s in job["photos"] for s in PAIR_STEPS):
                    pair = {"id": job.get("pair"), **{s[6:]: job["photos"].get(s, {}).get("sha256")
                                                      for s in PAIR_STEPS}}
                out.append({"id": jid, "kind": d["kind"], "site": d["site"], "campaign": d.get("campaign"),
                            "status": job["status"], "steps": list(STEPS[d["kind"]]),
                            "done": sorted(job["steps"], key=STEPS[d["kind"]].index),
                            "next": self.next_step(job), "photos": job["photos"], "pair": pair,
                            "issued": d.get("issued"), "received": job.get("received",
                                                                           self.state.get("received")),
                            "reports": job.get("reports", []), "not_done": job.get("not_done"),
                            "survey": job.get("survey"), "local": bool(job.get("local"))})
            if changed:
                self._save()
            return out

    # ------------------------------------------------------------------ steps
    def pick(self, jid: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(jid)
            if job["status"] in ("submitted", "sent"):
                raise Refused("job_done")
            if job["status"] == "open":
                job["status"] = "active"
                job["started"] = int(time.time())
                self._board_event(job, "arrive")
                self._save()
            return {"ok": True, "job": jid}

    def _board_event(self, job: dict[str, Any], step: str, **extra: Any) -> str:
        d = job["def"]
        body = {"job": d["id"], "site": d["site"]["id"], "step": step, "kind": d["kind"], **extra}
        eid, _ = self.emit("handheld.board_step", "audit", body)
        return eid

    def _expect(self, job: dict[str, Any], step: str) -> None:
        if job["status"] in ("submitted", "sent"):
            raise Refused("job_done")
        if job["status"] == "open":
            raise Refused("bad_step", step=step_name(step))
        if self.next_step(job) != step:
            raise Refused("bad_step", step=step_name(step))

    def do_step(self, jid: str, step: str) -> dict[str, Any]:
        """A manual step (install_board, post_poster, maintain)."""
        with self._lock:
            job = self._job(jid)
            if step in PHOTO_STEPS:
                raise Refused("bad_step", step=step_name(step))
            self._expect(job, step)
            eid = self._board_event(job, step)
            job["steps"][step] = {"at": int(time.time()), "event": eid}
            self._save()
            return {"ok": True, "step": step, **TEXT.both("ok.step", step=step_name(step))}

    def photo(self, jid: str, step: str, image: np.ndarray | bytes | None) -> dict[str, Any]:
        """Take the evidence photo for ``step``; raises Refused / EvidenceRefused with courier text."""
        with self._lock:
            job = self._job(jid)
            if step not in PHOTO_STEPS:
                raise Refused("bad_step", step=step_name(step))
            self._expect(job, step)
            d = job["def"]
            fix = self.gnss()
            site = d["site"]
            near = None
            if step != "photo_site" and all(isinstance(site.get(k), int) for k in ("lat_e7", "lon_e7")):
                # the platform's tolerance refuses; without one (an older list) the photo is only flagged
                near = (site["lat_e7"] / 1e7, site["lon_e7"] / 1e7, float(site.get("tol_m", DEFAULT_TOL_M)),
                        "tol_m" in site)
            site_id = site["id"] or (job.get("survey") or {}).get("id") or d["id"]
            try:
                rec = capture_evidence(image, d["id"], site_id, step, fix, self.index, self.device,
                                       require_position=self.require_position, store_dir=self.photo_dir,
                                       near=near)
            except EvidenceRefused as e:
                q = e.detail.get("quality") if isinstance(e.detail, dict) else None
                self.last_photo = {"ok": False, "step": step, "job": jid, "refusal": e.as_dict(),
                                   "quality": q}
                raise
            sha = rec["photo"]["sha256"]
            campaign = d.get("campaign")
            found: list[str] = []
            if campaign and step in CAMPAIGN_STEPS:
                img = _photo.decode_image(rec["jpeg"])
                found = [c.text for c in _decode.decode_image(img, thorough=True) if not c.linear]
                if not any(campaign_matches(t, campaign) for t in found):
                    self._retract(sha)
                    self.last_photo = {"ok": False, "step": step, "job": jid,
                                       "quality": {"ok": True, "metrics": rec["quality"]}}
                    if not found:
                        raise Refused("campaign_missing")
                    raise Refused("campaign_wrong", found=found[0][:60], expected=campaign)
            body = photo_event_body(rec, campaign if found else None)
            if found:
                body["qr"] = [t[:120] for t in found[:3]]
            if step in PAIR_STEPS:
                job.setdefault("pair", f"{d['id']}:1")
                body["pair"] = job["pair"]
            eid, _ = self.emit("handheld.photo", "audit", body)
            meta = {k: v for k, v in rec.items() if k != "jpeg"}
            meta["event_id"] = eid
            if step in PAIR_STEPS:
                meta["pair"] = job["pair"]
            self.photos.add(Path(rec["file"]), meta)
            job["photos"][step] = {"sha256": sha, "record_id": rec["record_id"], "event": eid,
                                   "campaign": campaign if found else None,
                                   "position": {k: body.get(k) for k in ("lat_e7", "lon_e7", "acc_cm")}}
            job["steps"][step] = {"at": int(time.time()), "event": eid}
            self._save()
            result = {"ok": True, "step": step, "job": jid, "sha256": sha,
                      "quality": {"ok": True, "metrics": rec["quality"]}, "flags": rec["flags"],
                      **TEXT.both("ok.photo")}
            if found:
                result["campaign"] = TEXT.both("ok.campaign", campaign=campaign)
            self.last_photo = result
            return result

    def _retract(self, sha: str) -> None:
        try:
            self.index.retract(sha)
        except Exception:  # noqa: BLE001 - a failed retract only makes a retake look like a copy
            log.exception("retract failed")
        for ext in (".jpg", ".json"):
            try:
                (self.photo_dir / f"{sha}{ext}").unlink()
            except OSError:
                pass

    def submit(self, jid: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(jid)
            if job["status"] in ("submitted", "sent"):
                raise Refused("job_done")
            missing = [s for s in STEPS[job["def"]["kind"]] if s not in job["steps"]]
            if job["status"] == "open" or missing:
                raise Refused("need_steps", steps=", ".join(missing or ["arrive"]))
            d = job["def"]
            if d["kind"] == "survey":
                eid, seq = self._submit_survey(job)
            else:
                body = {"job": d["id"], "site": d["site"]["id"], "kind": d["kind"],
                        "photos": [p["sha256"] for p in job["photos"].values()],
                        "steps": [[s, job["steps"][s]["at"]] for s in STEPS[d["kind"]]]}
                if d.get("campaign"):
                    body["campaign"] = d["campaign"]
                if job.get("pair"):
                    body["pair"] = job["pair"]
                eid, seq = self.emit("handheld.job_submitted", "audit", body)
            job["status"] = "submitted"
            job["submit_event"] = eid
            job["submit_seq"] = seq
            self._save()
            return {"ok": True, "job": jid, **TEXT.both("ok.survey_sent" if d["kind"] == "survey"
                                                        else "ok.submitted")}

    # ------------------------------------------------------------------ 政讯通 lifecycle
    def _next_local(self, prefix: str) -> str:
        n = int(self.state.get("local_seq", 0)) + 1
        self.state["local_seq"] = n
        return f"{prefix}-{self.device}-{self._tag}-{n}" if self._tag else f"{prefix}-{self.device}-{n}"

    def _add_local(self, d: dict[str, Any], **extra: Any) -> dict[str, Any]:
        job = {"def": d, "status": "active", "steps": {}, "photos": {}, "local": True,
               "started": int(time.time()), "received": int(time.time()), **extra}
        self.state["jobs"][d["id"]] = job
        self.state["order"] = [d["id"], *self.state["order"]]
        return job

    def propose(self, village: str, landmark: str = "", notes: str = "",
                job: str | None = None) -> dict[str, Any]:
        """Start a site survey: the platform's survey job ``job`` or the courier's own.
        Then the photo of the spot (step ``photo_site``) and submit send the proposal."""
        village, landmark, notes = str(village).strip(), str(landmark).strip(), str(notes).strip()
        if not 0 < len(village) <= 80 or len(landmark) > 200 or len(notes) > 500:
            raise Refused("bad_survey")
        with self._lock:
            survey = {"id": self._next_local("sv"), "village": village, "landmark": landmark, "notes": notes,
                      "status": "draft"}
            if job:
                j = self._job(job)
                if j["def"]["kind"] != "survey":
                    raise Refused("bad_step", step=step_name("photo_site"))
                if j["status"] in ("submitted", "sent"):
                    raise Refused("job_done")
                j["survey"] = survey
                if j["status"] == "open":
                    j["status"] = "active"
                    j["started"] = int(time.time())
                    self._board_event(j, "arrive")
                jid = job
            else:
                jid = survey["id"]
                self._add_local({"id": jid, "kind": "survey", "site": {"id": "", "name": village}},
                                survey=survey)
            self._save()
            return {"ok": True, "job": jid, "survey": survey["id"], **TEXT.both("ok.survey_started")}

    def _submit_survey(self, job: dict[str, Any]) -> tuple[str, int]:
        sv = job.get("survey")
        if not sv:
            raise Refused("need_steps", steps=TEXT.t("jobs.survey_details", "en"))
        shot = job["photos"]["photo_site"]
        pos = shot.get("position") or {}
        if pos.get("lat_e7") is None:
            raise Refused("position_missing")
        body = {"survey": sv["id"], "village": sv["village"], "landmark": sv["landmark"],
                "notes": sv["notes"], "lat_e7": pos["lat_e7"], "lon_e7": pos["lon_e7"],
                "photos": [shot["sha256"]]}
        if pos.get("acc_cm") is not None:
            body["acc_cm"] = pos["acc_cm"]
        if not job.get("local"):
            body["job"] = job["def"]["id"]
        eid, seq = self.emit("handheld.site_survey", "audit", body)
        sv["status"] = "waiting"
        sv["sent_at"] = int(time.time())
        return eid, seq

    def surveys(self) -> list[dict[str, Any]]:
        """The courier's proposals: ``waiting`` for approval until the site is in the cached registry."""
        with self._lock:
            sites = self.state.get("sites", {})
            out = []
            for job in self.state["jobs"].values():
                sv = job.get("survey")
                if sv and sv.get("status") in ("waiting", "approved"):
                    out.append({**sv, "job": job["def"]["id"],
                                "status": "approved" if sv["id"] in sites else "waiting"})
            return out

    def sites(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.state.get("sites", {}).values())

    def adhoc(self, site_id: str) -> dict[str, Any]:
        """An unplanned visit to a cached site (a condition report on the courier's own initiative):
        a local maintenance job, already started."""
        with self._lock:
            site = self.state.get("sites", {}).get(site_id)
            if site is None:
                raise Refused("no_site", site=site_id[:64])
            jid = self._next_local("adhoc")
            job = self._add_local({"id": jid, "kind": "maintenance", "site": site})
            self._board_event(job, "arrive")
            self._save()
            return {"ok": True, "job": jid}

    def report(self, jid: str, condition: str, note: str = "") -> dict[str, Any]:
        """The board's condition as found, with the photos taken in this job so far."""
        with self._lock:
            job = self._job(jid)
            if condition not in CONDITIONS:
                raise Refused("bad_condition")
            if job["status"] != "active":
                raise Refused("job_done" if job["status"] != "open" else "bad_step",
                              step=step_name("photo_before"))
            photos = [p["sha256"] for p in job["photos"].values()]
            if not photos:
                raise Refused("report_needs_photo")
            d = job["def"]
            body = {"job": d["id"], "site": d["site"]["id"], "condition": condition, "note": str(note)[:300],
                    "photos": photos}
            if job.get("pair"):
                body["pair"] = job["pair"]
            eid, _ = self.emit("handheld.board_condition", "audit", body)
            job.setdefault("reports", []).append({"condition": condition, "note": body["note"],
                                                  "at": int(time.time()), "event": eid})
            self._save()
            return {"ok": True, "job": jid,
                    **TEXT.both("ok.reported", condition=Localized(TEXT.both("cond." + condition)))}

    def cannot(self, jid: str, reason: str, note: str = "") -> dict[str, Any]:
        """The courier could not complete the job: recorded with a reason code, sent like a submit."""
        with self._lock:
            job = self._job(jid)
            if reason not in NOT_DONE:
                raise Refused("bad_reason")
            if job["status"] not in ("open", "active"):
                raise Refused("job_done")
            d = job["def"]
            body = {"job": d["id"], "site": d["site"]["id"], "kind": d["kind"], "reason": reason,
                    "note": str(note)[:300]}
            eid, seq = self.emit("handheld.job_not_done", "audit", body)
            job.update(status="not_done", submit_event=eid, submit_seq=seq,
                       not_done={"reason": reason, "note": body["note"], "at": int(time.time())})
            self._save()
            return {"ok": True, "job": jid,
                    **TEXT.both("ok.not_done", reason=Localized(TEXT.both("nd." + reason)))}


def _e7(v: Any) -> int | None:
    return None if v is None else int(round(float(v) * 1e7))


def photo_event_body(rec: dict[str, Any], campaign: str | None) -> dict[str, Any]:
    """The evidence record as an event body: integers only (no floats on the wire), small enough
    for one envelope; the full record travels with the photo upload."""
    pos = rec.get("position") or {}
    q = rec.get("quality") or {}
    body: dict[str, Any] = {
        "sha256": rec["photo"]["sha256"], "phash": rec["photo"]["phash"], "record": rec["record_id"],
        "job": rec["job"], "site": rec["site"], "step": rec["step"], "taken_at": int(rec["taken_at"]),
        "bytes": rec["photo"]["bytes"], "w": rec["photo"]["width"], "h": rec["photo"]["height"],
        "flags": list(rec.get("flags", [])),
    }
    if rec["photo"].get("source_sha256"):
        body["source_sha256"] = rec["photo"]["source_sha256"]
    if pos.get("lat") is not None:
        body["lat_e7"] = _e7(pos["lat"])
        body["lon_e7"] = _e7(pos["lon"])
        if pos.get("accuracy_m") is not None:
            body["acc_cm"] = int(round(float(pos["accuracy_m"]) * 100))
        body["pos_src"] = pos.get("accuracy_source") or ""
    if "sharpness" in q:
        body["sharpness"] = int(round(float(q["sharpness"])))
    if campaign:
        body["campaign"] = campaign
    return body


def board_context(jobs: Jobs, permits_received: float | None, sel: dict[str, Any] | None,
                  lang: str) -> dict[str, Any]:
    """What ``jobs.html`` shows beside the job list and steps: how old the job list, the
    site list and the locker permits are, the courier's proposals, the cached sites, and
    for the open job its issue age, before/after pair, reports and "could not complete"."""
    st = jobs.state
    ctx: dict[str, Any] = {
        "ages": {"list": age(st.get("received"), lang), "sites": age(st.get("sites_received"), lang),
                 "permits": age(permits_received, lang)},
        "surveys": jobs.surveys(), "sites": jobs.sites(), "conditions": CONDITIONS, "not_done": NOT_DONE,
        "board": None,
    }
    if sel is not None:
        job = st["jobs"].get(sel["id"], {})
        ctx["board"] = {
            "issued": age(sel.get("issued"), lang) if sel.get("issued") else None,
            "received": age(sel.get("received"), lang),
            "pair": sel.get("pair"), "reports": sel.get("reports", []), "not_done": sel.get("not_done"),
            "can_report": sel["status"] == "active" and bool(job.get("photos")),
            "can_cannot": sel["status"] in ("open", "active"),
            "needs_survey": sel["kind"] == "survey" and not job.get("survey")
                            and sel["status"] in ("open", "active"),
            "survey": job.get("survey"),
        }
    return ctx
