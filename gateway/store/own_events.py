"""The gateway's own events (command outcomes, evictions, budget alarms):
stored beside the devices' events and synced upstream the same way, with
ids from the gateway's own persistent sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.clock import now as clock_now
from drivers.storage import FileStorage
from gateway.store.events import EventStore, StoredEvent
from protocol import envelope
from protocol.ids import SeqCounter, format_event_id


class OwnEvents:
    def __init__(self, store: EventStore, outlet: str, gateway_id: str, state_dir: Path) -> None:
        self.store = store
        self.outlet = outlet
        self.gateway_id = gateway_id
        self.state_dir = state_dir
        self._seq: SeqCounter | None = None

    @property
    def seq(self) -> SeqCounter:
        # Opened on first use: tools that share the config (enqueue) never
        # touch the running gateway's counter file.
        if self._seq is None:
            self._seq = SeqCounter(FileStorage(str(self.state_dir)), name=f"{self.gateway_id}.seq", block=16)
        return self._seq

    def emit(self, etype: str, body: dict[str, Any], cls: str = "audit") -> str:
        n = self.seq.next()
        now = int(clock_now())
        eid = format_event_id(self.gateway_id, self.seq.incarnation, n)
        payload = envelope.encode(envelope.make(eid, now, etype, cls, body, boot=self.seq.boot))
        self.store.commit_events([StoredEvent(eid, self.outlet, "gateway", self.gateway_id,
                                              self.seq.incarnation, n, cls, etype, now, payload)])
        return eid
