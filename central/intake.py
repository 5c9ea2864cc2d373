"""Checking one uploaded batch, the same way for every backend.

A batch is decoded with the shared wire codec (``common/uplink_codec.py``)
and every event in it through the shared protocol module, so a backend only
has to store what this module hands it. Three outcomes per event:

* good: a well-formed envelope whose id matches the batch's; stored once.
* quarantined: a parseable id whose envelope is not valid (a device bug or
  tampering). Kept aside with the reason and *acked*, so the gateway stops
  resending a poison event forever; named in the ack's ``rejected``.
* refused: an id that does not even parse; not acked, named in ``rejected``.

The outlet a batch claims must be the outlet that logged in: a gateway can
upload only for itself (the front checks the login, this module the body).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.uplink_codec import BatchError, DecodedBatch, decode_batch
from protocol import envelope
from protocol.errors import BadField, ProtocolError
from protocol.ids import parse_event_id

# Larger than any batch a gateway builds (common/uplink_codec.py caps the
# decoded size too); a body over it is refused before it is read whole.
MAX_BATCH_BYTES = 16 * 1024 * 1024


@dataclass
class Event:
    id: str
    device: str
    type: str
    cls: str
    ts: int
    payload: bytes


@dataclass
class Checked:
    batch: DecodedBatch
    wire_bytes: int
    good: list[Event] = field(default_factory=list)
    quarantined: list[tuple[str, bytes, str]] = field(default_factory=list)  # id, payload, reason
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def acked(self) -> list[str]:
        """What the ack covers: every good and every quarantined event."""
        return [e.id for e in self.good] + [q[0] for q in self.quarantined]

    @property
    def ids(self) -> list[str]:
        return [eid for eid, _ in self.batch.events]


def check_batch(outlet: str, header_batch: str, body: bytes) -> Checked:
    """Decode and check one batch for ``outlet`` (the logged-in one).
    Raises BatchError for a batch that is not well formed or not the
    outlet's (HTTP 400)."""
    batch = decode_batch(body)
    if header_batch and batch.id != header_batch:
        raise BatchError(f"batch id {batch.id} arrived as {header_batch}")
    if batch.outlet != outlet:
        raise BatchError(f"batch of outlet {batch.outlet} arrived for {outlet}")
    out = Checked(batch, len(body))
    for eid, payload in batch.events:
        try:
            device, _, _ = parse_event_id(eid)
        except ProtocolError:
            out.rejected[eid] = "bad_field: unparseable id"
            continue
        try:
            env: dict[str, Any] = envelope.decode(payload)
            if env["id"] != eid:
                raise BadField(f"rebuilt id {env['id']} != {eid}")
        except ProtocolError as e:
            reason = f"{e.code}: {e.detail}"
            out.rejected[eid] = reason
            out.quarantined.append((eid, payload, reason))
            continue
        out.good.append(Event(eid, device, env["type"], env["cls"], env["ts"], payload))
    return out
