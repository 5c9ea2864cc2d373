"""What the dispatcher's page reads from a store, worked out the same way on
both backends: each store runs its own queries (SQLite, PostgreSQL) and
hands the rows here, so the page's rules live once.

- ``review_rows``: complete photos with every claim made for them; a photo
  claimed for two jobs or sites is a duplicate to look at.
- ``unresolved``: the alarms no clerk has resolved yet (an acknowledged
  alarm is still open), oldest first.
- ``lag_batches``: which batch of each outlet measures how far behind its
  gateway was at its last upload (the bulk lane's, which drains oldest first,
  when there is one).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from central.duty_store import body_of

#: What an upload's metadata may say a photo was for, as the page shows it.
CLAIMED = ("job", "site", "step", "device")
#: A device's clock before 2001 is a device that did not know the time yet.
KNOWN_TIME = 1_000_000_000


def claim(outlet: str, meta: str | None) -> dict[str, Any]:
    """One upload's claim on a photo: its outlet and what it said the photo was for."""
    try:
        m = json.loads(meta) if meta else None
    except ValueError:
        m = None
    said = {k: str(v)[:64] for k, v in m.items() if k in CLAIMED} if isinstance(m, dict) else {}
    return {"outlet": outlet, **said}


def review_rows(photos: Iterable[tuple[str, int, float, str | None, str | None, str | None]],
                claims: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``photos``: (sha, size, created_at, verdict, reason, by), in the page's
    order; ``claims``: each photo's claims (``claim``), oldest first."""
    out = []
    for sha, size, at, verdict, reason, by in photos:
        mine = claims.get(sha, [])
        distinct = {(c.get("job"), c.get("site")) for c in mine}
        out.append({"sha": sha, "size": size, "at": at, "verdict": verdict, "reason": reason, "by": by,
                    "claims": mine, "duplicate": len(distinct) > 1})
    return out


def unresolved(resolutions: Iterable[tuple[str, bytes | str]],
               alarms: Iterable[tuple[str, str, str, int, float, bytes | str]],
               limit: int) -> list[dict[str, Any]]:
    """``resolutions``: (outlet, payload) of every ``gateway.alarm_resolved``;
    ``alarms``: (outlet, id, device, ts, received_at, payload) of every alarm
    event, oldest first. Each open alarm: outlet, id, device, alarm kind, ts
    (the device's clock), received_at; at most ``limit`` (0: all)."""
    resolved: set[tuple[str, str]] = set()
    for outlet, payload in resolutions:
        body = body_of(payload or "")
        if isinstance(body.get("alarm_id"), str):
            resolved.add((outlet, body["alarm_id"]))
    out = []
    for outlet, eid, device, ts, at, payload in alarms:
        if (outlet, eid) in resolved:
            continue
        kind = body_of(payload or "").get("alarm")
        out.append({"outlet": outlet, "id": eid, "device": device,
                    "alarm": str(kind)[:40] if kind is not None else "", "ts": ts, "received_at": at})
        if limit and len(out) >= limit:
            break
    return out


def lag_batches(rows: Iterable[tuple[str, str, str, float]]) -> dict[str, tuple[str, float]]:
    """``rows``: (outlet, lane, batch id, first_at) of each outlet's newest
    batch per lane that brought new events; per outlet the (batch id,
    first_at) to measure by: the bulk lane's when there is one."""
    newest: dict[str, tuple[str, str, float]] = {}
    for outlet, lane, bid, at in rows:
        have = newest.get(outlet)
        if have is None or (lane == "bulk") > (have[0] == "bulk") or (
                (lane == "bulk") == (have[0] == "bulk") and at > have[2]):
            newest[outlet] = (lane, bid, at)
    return {outlet: (bid, at) for outlet, (_, bid, at) in newest.items()}
