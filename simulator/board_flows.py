"""The 政讯通 bulletin-board lifecycle in the workload.

A courier's simulated handheld runs the app's own job logic
(``handheld/jobs.py``: steps, evidence photos with the position gate and
the campaign QR read back, condition reports) against the real central
service's registry and review (``central/boards.py``), with the outlet's
gateway carrying everything between them: the events and photo files up,
the platform's signed job lists down to the handheld over MQTT.

Per site (``board_sites``), three actions on the first handheld:

- ``board_survey``: the courier proposes a site (photo of the spot, its
  position); once the proposal is at the platform, the dispatcher approves
  it into the registry and gives the courier an install job.
- ``board_install``: the job list arrives (verified with the handheld's key,
  acknowledged); install the board, post the poster, the photo with the
  campaign's QR, submit.
- ``board_maintain``: once review accepted the install (the site is
  installed), a maintenance job. The courier's first "before" photo is
  taken from the road, too far from the board: the handheld refuses it on
  the spot (``far_from_site``, counted as ``board_photo_refused_far_from_site``);
  then the photo at the board, a condition report (poster torn), the
  repair, the "after" photo, submit. The same job list brings a
  post-poster job for a second campaign whose posters never came with the
  mail: the courier reports it could not be done (``no_poster``). Then a
  post-poster job for the first campaign again, in a list whose sites
  carry no tolerance (as one cached from before the platform gave sites
  one): the handheld only flags the photo taken from the road
  (``far_unverified``) and sends it, and the platform's review must refuse
  it as ``far_from_site``, the job with it.

What the handheld did is kept in ``outlet.flows["boards"]`` for the
``board_jobs_reviewed`` check (``simulator/results.py``). The courier's
position is a GNSS fix the flow sets (a village in Leishan county).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from pathlib import Path
from typing import Any

from common import logs
from handheld.evidence import EvidenceRefused
from handheld.jobs import Jobs, PhotoSink
from handheld.photo_index import PhotoIndex
from handheld.text import Refused as HandheldRefused
from simulator import handheld_commands
from simulator.assembly import Outlet
from simulator.handheld_sim import SimHandheld
from simulator.refusal import Refused
from simulator.workload import Action

CAMPAIGN = "sim-health-2026"
CAMPAIGN_QR = "PE-CAMP:sim-health-2026"
#: A second campaign, whose posters the courier does not have (a job not done).
CAMPAIGN_2 = ("sim-fire-2026", "PE-CAMP:sim-fire-2026")
#: The first site's board (1e-7 degrees): Xijiang, Leishan county; each next site 0.001° east.
SITE_E7 = (264_960_000, 1_081_720_000)
TOL_M = 30.0  # how far from the board the dispatcher accepts a photo
FAR_E7 = 30_000  # the road the first "before" photo is taken from: ~330 m south
# Wall seconds a step waits for the other side (events up, a job list
# down): only a step that fails waits this long, and a loaded box took over 20.
WAIT_S = 60.0


class _Uploads(PhotoSink):
    """Accepted evidence photos into the simulated handheld's upload queue."""

    def __init__(self, h: SimHandheld) -> None:
        self.h = h

    def add(self, path: Path, meta: dict[str, Any]) -> None:
        self.h.queue_photo(Path(path).read_bytes(), {k: meta.get(k) for k in ("job", "site", "step")})


class Courier:
    """The courier's job app on one simulated handheld, and where the courier stands."""

    def __init__(self, outlet: Outlet, h: SimHandheld) -> None:
        # each photo's verdict is in the run's result; the terminal keeps its progress line
        logs.get("handheld.evidence").setLevel(logging.WARNING)
        state = outlet.dir / "handheld" / h.name / "jobs"
        state.mkdir(parents=True, exist_ok=True)
        self.h = h
        # each outlet's couriers photograph their own boards: a mark of the
        # outlet in a corner, so a county's outlets never send the same bytes
        self.mark = zlib.crc32(outlet.outlet_id.encode())
        self.fix: dict[str, Any] | None = None
        self.index = PhotoIndex(state / "photo_index.db")
        self.jobs = Jobs(state, h.name, lambda t, c, b: (h.emit(t, c, b), 0), lambda seq: True, self.index,
                         lambda: self.fix, _Uploads(h), scope=outlet.outlet_id)
        self.seen: set[bytes] = set()  # job-list commands already applied

    def stand(self, lat_e7: int, lon_e7: int) -> None:
        """A good GNSS fix here (4 m)."""
        self.fix = {"ok": True, "lat": lat_e7 / 1e7, "lon": lon_e7 / 1e7, "accuracy_m": 4.0,
                    "accuracy_source": "hdop", "sats": 9, "hdop": 0.9, "fix_type": "3d", "flags": []}


def _courier(outlet: Outlet, a: Action) -> Courier:
    if a.device not in outlet.hh:
        raise Refused("device_down")
    couriers: dict[str, Courier] = outlet.flows.setdefault("couriers", {})
    if a.device not in couriers:
        couriers[a.device] = Courier(outlet, outlet.hh[a.device])
    return couriers[a.device]


def _record(outlet: Outlet) -> dict[str, Any]:
    """What the handheld did, for the check: surveys, submitted jobs and their
    photos, reports, photos refused on the spot."""
    return outlet.flows.setdefault("boards", {"sites": {}, "jobs": {}, "reports": [], "refused": [],
                                              "not_done": [], "far_sent": []})


def site_e7(n: int) -> tuple[int, int]:
    return SITE_E7[0], SITE_E7[1] + (n - 1) * 10_000


def _photo(c: Courier, jid: str, step: str, qr: str | None, seed: int) -> str:
    """Take the evidence photo of ``step`` (a rendered board, the QR on its
    poster if ``qr``); its SHA-256. Refusals raise as the app raises them."""
    res = c.jobs.photo(jid, step, _board(qr, seed, c.mark))
    return str(res["sha256"])


def _refused(e: Exception) -> Refused:
    return Refused(getattr(e, "code", "refused"))


async def _off(fn: Any, *args: Any) -> Any:
    """A handheld call off the event loop, its refusal as the workload's."""
    try:
        return await asyncio.to_thread(fn, *args)
    except (HandheldRefused, EvidenceRefused) as e:
        raise _refused(e) from None


async def _until(probe: Any, reason: str) -> Any:
    """Poll ``probe`` (blocking, run off the loop) until it answers; Refused(reason) after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        got = await asyncio.to_thread(probe)
        if got:
            return got
        if time.monotonic() > deadline:
            raise Refused(reason)
        await asyncio.sleep(0.1)


async def _job_list(outlet: Outlet, c: Courier, jid: str) -> None:
    """Wait for the platform's job list naming ``jid`` on the handheld; verify
    it with the handheld's key, apply it and acknowledge it, as the app does."""
    named = False

    def apply(args: dict[str, Any]) -> int:
        nonlocal named
        named = named or any(j.get("id") == jid for j in args.get("jobs", []))
        return int(c.jobs.load_list(args))

    await handheld_commands.until(outlet, c.h, "jobs", c.seen, apply,
                                  lambda: named or jid in c.jobs.state["jobs"], "no_job_list",
                                  "board_commands_refused", WAIT_S)


async def _submit(outlet: Outlet, c: Courier, jid: str, kind: str, site: str, photos: dict[str, str]) -> None:
    await _off(c.jobs.submit, jid)
    _record(outlet)["jobs"][jid] = {"kind": kind, "site": site, "photos": photos}
    await asyncio.to_thread(c.h.upload)


async def board_survey(outlet: Outlet, a: Action) -> None:
    """The courier proposes a site; the dispatcher approves it and sends an install job."""
    c = _courier(outlet, a)
    n = int(a.args["n"])
    lat, lon = site_e7(n)
    c.stand(lat + 20, lon + 20)  # at the spot, a few metres from where the board will stand
    r = await _off(c.jobs.propose, a.args["village"], f"村委会门口 {n} 号公告栏", "墙面平整，过往人多")
    jid, sid = r["job"], r["survey"]
    sha = await _off(_photo, c, jid, "photo_site", None, 1000 + n)
    await _submit(outlet, c, jid, "survey", sid, {"photo_site": sha})
    _record(outlet)["sites"][n] = {"site": sid, "survey_job": jid}
    boards = outlet.central.duties.boards

    await _until(lambda: boards.site(sid), "not_at_platform")
    await asyncio.to_thread(_dispatch_install, outlet, a.device, sid, n)
    outlet.stats["board_survey"] += 1


def _dispatch_install(outlet: Outlet, device: str, sid: str, n: int) -> None:
    """The dispatcher approves the proposed site and gives the courier its install job."""
    boards = outlet.central.duties.boards
    if boards.campaign(CAMPAIGN) is None:
        boards.add_campaign(CAMPAIGN, "健康乡村宣传海报", CAMPAIGN_QR)
    boards.approve_site(sid, tol_m=TOL_M)
    boards.add_job("install", outlet.outlet_id, device, site=sid, campaign=CAMPAIGN, jid=f"bj-{sid}-install")
    boards.send_jobs(outlet.outlet_id, device)


async def board_install(outlet: Outlet, a: Action) -> None:
    """The install job: the board put up, the poster on it, the photo, submit."""
    c = _courier(outlet, a)
    n = int(a.args["n"])
    site = _record(outlet)["sites"].get(n)
    if site is None:
        raise Refused("no_site")
    sid = site["site"]
    jid = f"bj-{sid}-install"
    await _job_list(outlet, c, jid)
    await _off(c.jobs.pick, jid)
    await _off(c.jobs.do_step, jid, "install_board")
    await _off(c.jobs.do_step, jid, "post_poster")
    lat, lon = site_e7(n)
    c.stand(lat + 30, lon - 10)
    sha = await _off(_photo, c, jid, "photo", CAMPAIGN_QR, 2000 + n)
    await _submit(outlet, c, jid, "install", sid, {"photo": sha})
    outlet.stats["board_install"] += 1


async def board_maintain(outlet: Outlet, a: Action) -> None:
    """Once the install is accepted, a maintenance job with a condition report
    and a first photo taken too far away (refused on the handheld)."""
    c = _courier(outlet, a)
    n = int(a.args["n"])
    site = _record(outlet)["sites"].get(n)
    if site is None:
        raise Refused("no_site")
    sid = site["site"]
    boards = outlet.central.duties.boards
    install = await _until(lambda: _settled(boards.job(f"bj-{sid}-install")), "not_reviewed")
    if install["status"] != "done":  # the review's reason is in the platform's record (the check shows it)
        raise Refused("install_not_accepted")
    jid = f"bj-{sid}-maintain"
    await asyncio.to_thread(_dispatch_maintain, outlet, a.device, sid, jid)
    await _job_list(outlet, c, jid)
    await _off(c.jobs.pick, jid)
    # the list without tolerances goes down while the courier works (taken after it)
    await asyncio.to_thread(_dispatch_untolerated, outlet, c.h.name, f"bj-{sid}-repost")
    lat, lon = site_e7(n)
    c.stand(lat - FAR_E7, lon)  # from the road below the village
    try:
        await _off(_photo, c, jid, "photo_before", CAMPAIGN_QR, 3000 + n)
        outlet.stats["board_photo_far_accepted"] += 1  # the check shows it: the gate let it through
    except Refused as e:
        outlet.stats[f"board_photo_refused_{e.reason}"] += 1
        _record(outlet)["refused"].append({"job": jid, "step": "photo_before", "code": e.reason})
    c.stand(lat - 40, lon + 20)
    photos = {"photo_before": await _off(_photo, c, jid, "photo_before", CAMPAIGN_QR, 3100 + n)}
    await _off(c.jobs.report, jid, "poster_torn", "海报右下角被雨水打破")
    _record(outlet)["reports"].append({"job": jid, "site": sid, "condition": "poster_torn"})
    await _off(c.jobs.do_step, jid, "maintain")
    photos["photo_after"] = await _off(_photo, c, jid, "photo_after", CAMPAIGN_QR, 3200 + n)
    await _submit(outlet, c, jid, "maintain", sid, photos)
    await _off(c.jobs.cannot, f"bj-{sid}-poster", "no_poster", "海报没有随邮袋送到")
    _record(outlet)["not_done"].append({"job": f"bj-{sid}-poster", "reason": "no_poster"})
    await _far_at_platform(outlet, c, n, sid)
    outlet.stats["board_maintain"] += 1


async def _far_at_platform(outlet: Outlet, c: Courier, n: int, sid: str) -> None:
    """A poster job from a list without the site's tolerance (as a list
    cached from before the platform gave sites one reads): the handheld
    cannot refuse a far photo then, only flags it (``far_unverified``) and
    sends it; the photo is taken from the road below the village and the
    platform's review must refuse it (``far_from_site``), and the job with it.
    Remembered in ``far_sent`` for the check; the review's verdict lands in
    the platform's record, not here."""
    jid = f"bj-{sid}-repost"  # dispatched when the maintenance began
    await _job_list(outlet, c, jid)
    await _off(c.jobs.pick, jid)
    await _off(c.jobs.do_step, jid, "post_poster")
    lat, lon = site_e7(n)
    c.stand(lat - FAR_E7, lon)
    res = await _off(c.jobs.photo, jid, "photo", _board(CAMPAIGN_QR, 3300 + n, c.mark))
    if "far_unverified" not in res.get("flags", []):
        raise Refused("far_not_flagged")  # the handheld's gate changed: the check cannot bite
    _record(outlet)["far_sent"].append({"job": jid, "step": "photo", "sha": res["sha256"]})
    await _off(c.jobs.submit, jid)
    await asyncio.to_thread(c.h.upload)
    outlet.stats["board_photo_far_sent"] += 1  # reviewed once it is stored; the check reads the verdict


def _board(qr: str | None, seed: int, mark: int) -> Any:
    """The rendered board, the QR on its poster if ``qr``, the outlet's
    ``mark`` in its top-left corner (a few pixels no reader looks at)."""
    from simulator.imagegen import board_with_qr

    img = board_with_qr(qr, seed=seed, w=1280, h=960)
    img[:8, :8] = (mark & 0xFF, (mark >> 8) & 0xFF, (mark >> 16) & 0xFF)
    return img


def _dispatch_untolerated(outlet: Outlet, device: str, jid: str) -> None:
    """The dispatcher's poster job for the first campaign again, sent in a
    list whose sites carry no tolerance (``tol_m``): signed with the
    handheld's key as the platform signs every list."""
    boards = outlet.central.duties.boards
    sid = jid.removeprefix("bj-").removesuffix("-repost")
    boards.add_job("post_poster", outlet.outlet_id, device, site=sid, campaign=CAMPAIGN, jid=jid)
    args = boards.job_list(outlet.outlet_id, device)
    # the others are under way on the handheld (started jobs stay when a list leaves them out)
    args["jobs"] = [j for j in args["jobs"] if j["id"] == jid]
    for s in [*(j["site"] for j in args["jobs"]), *args["sites"]]:
        s.pop("tol_m", None)
    cid = f"jl-old-{zlib.crc32(jid.encode()):08x}"  # a command id is at most 32 characters
    cmd = outlet.keys.command(device, "jobs", args, cid, now=int(outlet.clock.time()))
    outlet.central.push_command(outlet.outlet_id, "handheld", cmd)


def _settled(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """The job once review has settled it (done, refused), else None."""
    return job if job is not None and job["status"] in ("done", "refused") else None


def _dispatch_maintain(outlet: Outlet, device: str, sid: str, jid: str) -> None:
    """The maintenance job, and a new poster for the board, in one job list."""
    boards = outlet.central.duties.boards
    boards.add_job("maintain", outlet.outlet_id, device, site=sid, campaign=CAMPAIGN, jid=jid)
    if boards.campaign(CAMPAIGN_2[0]) is None:
        boards.add_campaign(CAMPAIGN_2[0], "森林防火宣传海报", CAMPAIGN_2[1])
    boards.add_job("post_poster", outlet.outlet_id, device, site=sid, campaign=CAMPAIGN_2[0],
                   jid=f"bj-{sid}-poster")
    boards.send_jobs(outlet.outlet_id, device)


BOARD_FLOWS = {"board_survey": board_survey, "board_install": board_install, "board_maintain": board_maintain}
