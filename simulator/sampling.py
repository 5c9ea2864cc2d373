"""The gateway's backlog, sampled over the run for the report's backlog chart
and the live dashboard.

Read from the gateway's own SQLite store from outside, once per action
window and while the run settles; a sample the gateway could not give (it
is restarting after a kill) is skipped, not faked. The same read gives the
dashboard the gateway's and the platform's stored counts and the oldest
waiting event's age (``outlet.live``), so a page poll never opens a store.
"""

from __future__ import annotations

from gateway.store.events import EventStore
from simulator.assembly import Outlet


def sample_backlog(outlet: Outlet) -> None:
    """``[virtual second, events waiting, bytes waiting]`` onto ``outlet.backlog``."""
    try:
        s = EventStore(outlet.gw_db)
        try:
            b = s.backlog()
            stored = s.count()
        finally:
            s.close()
    except Exception:  # noqa: BLE001 - a gateway restarting; sample next time
        return
    outlet.backlog.append([outlet.t_virtual, b["count"], b["bytes"]])
    outlet.live.update(gateway=stored, oldest_age_s=b["oldest_age_s"], central=outlet.central_stored())
