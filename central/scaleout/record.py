"""A checked batch as JetStream messages, and back.

The log carries what ``central.intake.check_batch`` already decided (good
events with their parsed fields, quarantined ones with their reason), so a
worker writes rows and never parses an envelope again: checking is paid once,
in the front. A message is one zlib stream of a small JSON head followed by
the payloads back to back (no base64). A batch whose events would make a
message bigger than NATS's default 1 MiB payload limit is split into parts;
each part is its own message with its own Nats-Msg-Id (``outlet/batch/part``)
and is written independently, since every row is idempotent anyway.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from central.intake import Checked

PART_RAW_BYTES = 512 * 1024  # before zlib; far under NATS's 1 MiB max_payload
_LEN = struct.Struct(">I")


@dataclass
class Part:
    outlet: str
    batch: str
    lane: str
    n: int  # events in the whole batch
    part: int
    parts: int
    wire_bytes: int
    good: list[tuple[str, str, str, str, int, bytes]]  # id, device, type, cls, ts, payload
    quarantined: list[tuple[str, str, bytes]]  # id, reason, payload


def _encode(head: dict[str, object], payloads: list[bytes]) -> bytes:
    h = json.dumps(head, separators=(",", ":")).encode()
    return zlib.compress(_LEN.pack(len(h)) + h + b"".join(payloads), 1)


def pack(outlet: str, checked: Checked) -> list[bytes]:
    """The messages for one checked batch (at least one, even when empty, so
    the batch itself is on record)."""
    b = checked.batch
    chunks: list[tuple[list[list[object]], list[list[object]], list[bytes]]] = [([], [], [])]
    size = 0
    items: list[tuple[bool, list[object], bytes]] = \
        [(True, [e.id, e.device, e.type, e.cls, e.ts, len(e.payload)], e.payload) for e in checked.good] + \
        [(False, [i, r, len(p)], p) for i, p, r in checked.quarantined]
    for good, row, payload in items:
        if size and size + len(payload) + 64 > PART_RAW_BYTES:
            chunks.append(([], [], []))
            size = 0
        g, q, pl = chunks[-1]
        (g if good else q).append(row)
        pl.append(payload)
        size += len(payload) + 64
    out = []
    for i, (g, q, pl) in enumerate(chunks):
        head = {"v": 1, "outlet": outlet, "batch": b.id, "lane": b.lane, "n": len(b.events),
                "part": i, "parts": len(chunks), "wire": checked.wire_bytes, "good": g, "quar": q}
        out.append(_encode(head, pl))
    return out


def unpack(data: bytes) -> Part:
    """One message back into rows. Raises ValueError for a message that is
    not one of ours (the worker parks it instead of retrying it forever)."""
    try:
        raw = zlib.decompress(data)
        (hl,) = _LEN.unpack_from(raw)
        head = json.loads(raw[4:4 + hl])
    except (zlib.error, struct.error, ValueError) as e:
        raise ValueError(f"not a batch record: {e}") from e
    if not isinstance(head, dict) or head.get("v") != 1:
        raise ValueError("not a batch record: version")
    pos = 4 + hl
    good = []
    for eid, dev, typ, cls, ts, ln in head["good"]:
        good.append((eid, dev, typ, cls, ts, raw[pos:pos + ln]))
        pos += ln
    quar = []
    for eid, reason, ln in head["quar"]:
        quar.append((eid, reason, raw[pos:pos + ln]))
        pos += ln
    if pos != len(raw):
        raise ValueError("not a batch record: payload lengths")
    return Part(head["outlet"], head["batch"], head["lane"], head["n"], head["part"], head["parts"],
                head["wire"], good, quar)
