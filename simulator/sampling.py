"""The gateway's backlog, sampled over the run for the report's backlog chart.

Read from the gateway's own SQLite store from outside, once per action
window and while the run settles; a sample the gateway could not give (it
is restarting after a kill) is skipped, not faked.
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
        finally:
            s.close()
    except Exception:  # noqa: BLE001 - a gateway restarting; sample next time
        return
    outlet.backlog.append([outlet.t_virtual, b["count"], b["bytes"]])
