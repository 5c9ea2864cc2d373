"""What the ingest loop checks before it stores: a message against the
protocol (``validate``), each device's sequence order (``SeqTracker``), and
how often a device is refused (``Offenders``, which raises one alarm per
window for a broken or hostile device). ``Reject`` is one refused message.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from common.logs import get
from gateway import metrics as M
from gateway.store.events import EventStore, StoredEvent, is_storage_error
from protocol import envelope, outbound_bodies, topics

log = get(__name__)

# A device with this many refused messages within the window raises an alarm
# (at most one per device per window): one bad message is a bug report, a
# stream of them is a broken or hostile device the clerk should know about.
OFFENDER_LIMIT = 20
OFFENDER_WINDOW_S = 600.0


class Reject(NamedTuple):
    """One refused message: kept in ``rejected``, counted, acked."""

    topic: str
    code: str
    detail: str
    payload: bytes


class Offenders:
    """Counts refusals per device (the topic's device segment: the broker's
    ACL ties it to the login) and raises one alarm per window when a device
    passes the limit."""

    def __init__(self, limit: int = OFFENDER_LIMIT, window_s: float = OFFENDER_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self.seen: dict[str, tuple[float, int, Counter[str]]] = {}

    def note(self, topic: str, code: str, alarm: Callable[..., Any]) -> None:
        parts = topic.split("/")
        device = parts[4][:32] if len(parts) == 6 else "?"
        now = time.monotonic()
        start, n, codes = self.seen.get(device, (now, 0, Counter()))
        if now - start > self.window_s:
            start, n, codes = now, 0, Counter()
        n += 1
        codes[code] += 1
        if len(self.seen) > 10000:
            self.seen.clear()
        self.seen[device] = (start, n, codes)
        if n == self.limit:
            M.MISBEHAVING.inc()
            try:
                alarm("gateway.device_misbehaving",
                      {"alarm": "device_misbehaving", "device": device, "refused": n,
                       "window_s": int(self.window_s), "codes": dict(codes.most_common(5))}, cls="alarm")
            except Exception as e:
                if not is_storage_error(e):
                    raise
                log.warning("misbehaving-device alarm not stored: %r", e)


@dataclass
class SeqTracker:
    """Per-(device, incarnation) order check: gaps and reorders are metrics.

    Primed from the store *before* a group commits, so a group that holds
    later sequence numbers does not hide its own gaps.
    """

    last: dict[tuple[str, str], int] = field(default_factory=dict)

    def prime(self, store: EventStore, events: list[StoredEvent]) -> None:
        for e in events:
            key = (e.device, e.inc)
            if key not in self.last:
                prev = store.max_seq(e.device, e.inc)
                if prev is not None:
                    self.last[key] = prev

    def observe(self, device: str, inc: str, seq: int) -> str | None:
        key = (device, inc)
        prev = self.last.get(key)
        if prev is None or seq == prev + 1:
            self.last[key] = seq
            return None
        if seq > prev + 1:
            self.last[key] = seq
            return "gap"
        return "reorder"


def validate(topic: str, payload: bytes, parsed_topic: tuple[str, str, str, str] | None = None
             ) -> StoredEvent:
    """Check one message against the protocol; raise ProtocolError if bad.
    Event types with a body schema (the outbound custody events,
    protocol/outbound_bodies.py) are checked against it too: a malformed
    custody record is refused here, counted by its code, and kept in
    ``rejected``, rather than stored and synced into the platform's ledger."""
    outlet, kind, device, channel = parsed_topic or topics.parse(topic)
    env, (_, inc, seq) = envelope.decode_event(payload, device=device)
    outbound_bodies.check(env["type"], env["body"], kind, env["cls"])
    return StoredEvent(env["id"], outlet, kind, device, inc, seq, env["cls"], env["type"],
                       env["ts"], payload)


