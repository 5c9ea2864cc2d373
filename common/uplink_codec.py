"""The uplink wire format (``pe-batch/1``): batches, acks and the downlink answer.

Both sides import this module: the gateway's syncer encodes batches and reads
acks with it, and the central service (``central/intake.py``,
``central/front.py``) and the gateway tests' uplink double decode batches and
write acks with it, so there is one codec. Events inside a batch are rebuilt
byte for byte and then parsed by the shared protocol module
(``protocol.envelope.decode``); nothing here parses an envelope's
meaning.

Batch
-----
One zlib stream (RFC 1950, which is exactly HTTP's ``deflate`` content
coding) of one JSON document::

    {"v":1, "batch":"<32 hex>", "outlet":"o1", "lane":"bulk", "n":3,
     "src":["lk01:3fa2c0de", "sc01:0badcafe"],
     "groups":[{"type":"locker.deposit",
                "keys":[["body","compartment"],["body","parcel"],["boot"],["cls"],["v"]],
                "src":[0,0], "seq":[17,1], "ts":[1795881163,12],
                "cols":[[3,5], ["RB123456785CN","EA000000005CN"], [4,4],
                        ["custody","custody"], [1,1]]}],
     "raw":["{...an envelope verbatim...}"]}

Why columns and not one envelope per line: measured on a realistic
locker/scanner/handheld mix (``bench/gateway_wan.py``), zlib over
newline-joined envelopes gives about 8x fewer bytes than one JSON MQTT message
per event; grouping events by type and shape and sending each field as a
column (values of one field side by side, ``seq`` as a per-device delta,
``ts`` as a delta) gives zlib long runs to match and reaches 12x. lzma (also
stdlib) squeezes another ~20% out of the columns at ~15x the CPU, too much
for a Raspberry Pi draining a days-long backlog; zstd is not in the standard
library before Python 3.14 and lzma bounds what it could add, so zlib it is.

Every event is rebuilt on the central side as ``canonical.dumps(object)``.
The encoder checks that this reproduces the stored payload exactly; an event
that would not (non-canonical JSON from some firmware) travels verbatim in
``raw``. So the central side always receives the device's exact bytes.

``seq`` is the delta from the previous event of the same ``src`` in decode
order (groups in order, rows in order; each source starts at 0); ``ts`` is
the delta from the previous row of the same group (the first is absolute).

The batch id is the first 32 hex digits of SHA-256 over the batch's sorted
event ids joined by newlines: a batch resent after a lost ack carries the
same id, and the central side recomputes it as an integrity check.

Ack
---
JSON, uncompressed (it is small)::

    {"v":1, "batch":"<id>", "all":true, "rejected":{}}
    {"v":1, "batch":"<id>", "acked":{"lk01:3fa2c0de":[[17,45],[47,47]]},
     "rejected":{"lk01:3fa2c0de:46":"bad_field: ..."}}

The ack names every event of the batch the central side now holds,
including ones it already had (resends) and ones it quarantined as invalid
(also listed in ``rejected`` so the gateway can log them; acking them stops
a poison event from being resent forever). ``"all": true`` names all of
them: the batch id is a hash of the batch's exact id set, so it is a precise
reference, and the usual ack costs ~80 bytes whatever the batch size. Only
when the central side holds a part does it list ``acked`` as inclusive seq
ranges per device incarnation. Downlink bytes are billed on metered links
too. The gateway marks synced only ids that were *in the batch* and are
covered.

Downlink
--------
Commands for the outlet's devices (signed by the platform; the gateway holds
no device keys) come down by *pull*: the gateway asks for everything after
its cursor and the answer is::

    {"v":1, "cursor":1042, "more":false,
     "commands":[{"kind":"locker", "cmd":{...signed command...}}, ...]}

Asking with ``after=N`` acks every command up to N: the gateway moves its
cursor only after the commands are committed to its outbox, so a gateway
killed in between asks again and de-duplicates by command id. Pull rather
than push because a push over a clean MQTT session is lost while the
gateway is away, and an HTTPS platform cannot push at all; one small
request per ``down_interval_s`` (and at once after a batch or a probe
succeeds) costs a few hundred bytes.

- MQTT: the pull is ``{"after":N}`` on ``<prefix>/<outlet>/pull/<ch>/<n>``;
  the answer comes on ``<prefix>/<outlet>/down/<ch>/<n>``.
- HTTPS: ``GET <url>`` with ``X-Postedge-Outlet`` and ``X-Postedge-After``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from protocol import canonical, confirm
from protocol.errors import ProtocolError
from protocol.ids import parse_event_id

WIRE_VERSION = 1
CONTENT_TYPE = "application/vnd.postedge.batch+json"
ZLIB_LEVEL = 6
# A decoded batch may not exceed this: guards the central side against a
# decompression bomb (the gateway's own batches are capped far below it).
MAX_DECODED = 64 * 1024 * 1024


class BatchError(ValueError):
    """A batch or ack that does not follow the wire format."""


# ---------------------------------------------------------------- batch codec
def batch_id(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:32]


@dataclass
class EncodedBatch:
    id: str
    lane: str
    ids: list[str]
    body: bytes  # compressed, what goes on the wire
    raw_bytes: int  # sum of the events' stored sizes


def _flatten(obj: dict[str, Any], prefix: tuple[str, ...], keys: list[tuple[str, ...]],
             vals: list[Any]) -> None:
    for k in sorted(obj):
        v = obj[k]
        if isinstance(v, dict) and v:
            _flatten(v, prefix + (k,), keys, vals)
        else:
            keys.append(prefix + (k,))
            vals.append(v)


def encode_batch(outlet: str, lane: str, rows: list[tuple[str, bytes]]) -> EncodedBatch:
    """Build one compressed batch from (event id, stored payload) pairs."""
    src_index: dict[str, int] = {}
    groups: dict[tuple[Any, ...], list[tuple[int, int, int, list[Any]]]] = {}
    raw: list[str] = []
    ids: list[str] = []
    total = 0
    for eid, payload in rows:
        ids.append(eid)
        total += len(payload)
        try:
            env = json.loads(payload)
            if (not isinstance(env, dict) or env.get("id") != eid or not isinstance(env.get("ts"), int)
                    or isinstance(env.get("ts"), bool) or not isinstance(env.get("type"), str)
                    or canonical.dumps(env) != payload):
                raise ValueError("not canonical")
            dev, inc, seq = parse_event_id(eid)
        except (ValueError, ProtocolError):
            raw.append(payload.decode("utf-8"))
            continue
        rest = {k: v for k, v in env.items() if k not in ("id", "ts", "type")}
        keys: list[tuple[str, ...]] = []
        vals: list[Any] = []
        _flatten(rest, (), keys, vals)
        src = src_index.setdefault(f"{dev}:{inc}", len(src_index))
        groups.setdefault((env["type"], tuple(keys)), []).append((src, seq, env["ts"], vals))
    last_seq: dict[int, int] = {}
    out_groups = []
    for (etype, keys), members in groups.items():
        g_src, g_seq, g_ts = [], [], []
        cols: list[list[Any]] = [[] for _ in keys]
        prev_ts = 0
        for src, seq, ts, vals in members:
            g_src.append(src)
            g_seq.append(seq - last_seq.get(src, 0))
            last_seq[src] = seq
            g_ts.append(ts - prev_ts)
            prev_ts = ts
            for col, v in zip(cols, vals, strict=True):
                col.append(v)
        out_groups.append({"type": etype, "keys": [list(k) for k in keys], "src": g_src,
                           "seq": g_seq, "ts": g_ts, "cols": cols})
    bid = batch_id(ids)
    doc = {"v": WIRE_VERSION, "batch": bid, "outlet": outlet, "lane": lane, "n": len(ids),
           "src": list(src_index), "groups": out_groups, "raw": raw}
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return EncodedBatch(bid, lane, ids, zlib.compress(text, ZLIB_LEVEL), total)


@dataclass
class DecodedBatch:
    id: str
    outlet: str
    lane: str
    events: list[tuple[str, bytes]]  # (id, exact payload bytes)
    decoded_bytes: int


def _set_path(obj: dict[str, Any], path: list[str], value: Any) -> None:
    for k in path[:-1]:
        obj = obj.setdefault(k, {})
    obj[path[-1]] = value


def decode_batch(body: bytes, max_decoded: int = MAX_DECODED) -> DecodedBatch:
    """Decompress and rebuild a batch; raise BatchError if it is not well formed.

    The events come back as exact payload bytes; validating them is the
    caller's job, with the shared protocol module.
    """
    try:
        d = zlib.decompressobj()
        text = d.decompress(body, max_decoded)
        if d.unconsumed_tail or not d.eof:
            raise BatchError("batch is truncated or decompresses past the size limit")
        doc = json.loads(text)
    except (zlib.error, ValueError) as e:
        raise BatchError(f"batch is not a zlib-compressed JSON document: {e}") from None
    try:
        if doc["v"] != WIRE_VERSION:
            raise BatchError(f"batch wire version {doc['v']!r}, this side speaks {WIRE_VERSION}")
        srcs = [str(s) for s in doc["src"]]
        events: list[tuple[str, bytes]] = []
        last_seq: dict[int, int] = {}
        for g in doc["groups"]:
            keys = g["keys"]
            cols = g["cols"]
            n = len(g["src"])
            if len(g["seq"]) != n or len(g["ts"]) != n or len(cols) != len(keys) or \
                    any(len(c) != n for c in cols):
                raise BatchError("group columns differ in length")
            ts = 0
            for i in range(n):
                src = g["src"][i]
                seq = last_seq.get(src, 0) + g["seq"][i]
                last_seq[src] = seq
                ts += g["ts"][i]
                obj: dict[str, Any] = {"id": f"{srcs[src]}:{seq}", "ts": ts, "type": g["type"]}
                for path, col in zip(keys, cols, strict=True):
                    _set_path(obj, path, col[i])
                events.append((obj["id"], canonical.dumps(obj)))
        for r in doc["raw"]:
            payload = r.encode("utf-8")
            env = json.loads(payload)
            events.append((str(env.get("id")) if isinstance(env, dict) else "?", payload))
        header = (str(doc["batch"]), str(doc["outlet"]), str(doc["lane"]))
        n_declared = doc["n"]
    except BatchError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, ProtocolError) as e:
        raise BatchError(f"malformed batch document: {type(e).__name__}: {e}") from None
    if n_declared != len(events):
        raise BatchError(f"batch declares {n_declared} events, holds {len(events)}")
    if batch_id([e[0] for e in events]) != header[0]:
        raise BatchError("batch id does not match the events it holds")
    return DecodedBatch(header[0], header[1], header[2], events, len(text))


# ------------------------------------------------------------------------ acks
def encode_ack(bid: str, acked: list[str], rejected: dict[str, str] | None = None,
               batch_ids: list[str] | None = None) -> bytes:
    """The ack of batch ``bid``; given the batch's ``batch_ids``, an ack that
    covers all of them is written as ``"all": true``."""
    if batch_ids is not None and set(acked) == set(batch_ids):
        return json.dumps({"v": WIRE_VERSION, "batch": bid, "all": True, "rejected": dict(rejected or {})},
                          separators=(",", ":"), sort_keys=True).encode()
    by_src: dict[str, list[int]] = {}
    for eid in acked:
        dev, inc, seq = parse_event_id(eid)
        by_src.setdefault(f"{dev}:{inc}", []).append(seq)
    doc = {"v": WIRE_VERSION, "batch": bid,
           "acked": {src: confirm.ranges(seqs) for src, seqs in sorted(by_src.items())},
           "rejected": dict(rejected or {})}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class Ack:
    batch: str
    ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    all: bool = False  # every event of the batch whose id is ``batch``

    def covers(self, eid: str) -> bool:
        try:
            dev, inc, seq = parse_event_id(eid)
        except ProtocolError:
            return False
        rs = self.ranges.get(f"{dev}:{inc}")
        if not rs:
            return False
        i = bisect_right(rs, (seq, float("inf"))) - 1
        return i >= 0 and rs[i][0] <= seq <= rs[i][1]

    def acked_of(self, ids: list[str]) -> list[str]:
        """The ids of a sent batch that this ack covers (never ids we did not send)."""
        if self.all:
            return list(ids) if batch_id(ids) == self.batch else []
        return [i for i in ids if self.covers(i)]


def decode_ack(data: bytes) -> Ack:
    try:
        doc = json.loads(data)
        if doc["v"] != WIRE_VERSION:
            raise BatchError(f"ack wire version {doc['v']!r}")
        rejected = {str(k): str(v) for k, v in doc.get("rejected", {}).items()}
        if doc.get("all") is True:
            return Ack(str(doc["batch"]), {}, rejected, all=True)
        ranges = {str(src): sorted((int(a), int(b)) for a, b in rs) for src, rs in doc["acked"].items()}
        return Ack(str(doc["batch"]), ranges, rejected)
    except BatchError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise BatchError(f"malformed ack: {type(e).__name__}: {e}") from None


# ------------------------------------------------------------------------- TLS
@dataclass
class Down:
    """One downlink answer: commands after the cursor, and the new cursor."""

    cursor: int
    commands: list[tuple[str, bytes]]  # (device kind, canonical command bytes)
    more: bool = False


MAX_DOWN = 1024 * 1024

#: Downlink kinds addressed to the gateway itself, not relayed to a device:
#: a recipient's contact for the notifier, the platform's refusal of a
#: clerk's request (a granted one comes back as the signed command instead),
#: and the counter's signed documents.
DOWN_NOTIFY = "notify"
DOWN_CLERK_DECISION = "clerk_decision"
#: a box catalogue or tariff the platform signed (``common/platform_docs.py``)
#: for the outlet's counter: the gateway checks its signature, as for one
#: posted to its counter API
DOWN_COUNTER_DOC = "counter_doc"
#: Why the platform refuses a clerk's request (``central/clerk_requests.py``).
CLERK_REFUSALS = ("malformed", "not_supervisor", "unknown_locker", "no_note", "too_many_opens")


def counter_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``counter_doc`` message for a signed document: the document as its
    canonical text, so its own nesting (a tariff's bands) does not count
    against the downlink answer's depth limit and the gateway checks the
    very bytes the platform signed."""
    return {"doc": canonical.dumps(doc).decode()}


def read_counter_doc(payload: bytes) -> bytes:
    """The signed document's bytes from a ``counter_doc`` message; BatchError if it is not one."""
    try:
        doc = canonical.loads_object(payload, "counter document message").get("doc")
    except ProtocolError as e:
        raise BatchError(str(e)) from e
    if not isinstance(doc, str):
        raise BatchError("a counter document message needs its document as text in 'doc'")
    return doc.encode()


def clerk_refusal(request: str, reason: str) -> dict[str, Any]:
    """The ``clerk_decision`` message the platform sends down for a refusal."""
    return {"request": request, "verdict": "refused", "reason": reason}


def read_clerk_refusal(payload: bytes) -> tuple[str, str]:
    """(request event id, reason) from a ``clerk_decision`` message;
    BatchError if it is not one. It is not signed (it opens nothing: it
    only changes what the clerk's page says about a request), so it is
    checked for shape and its reason must be one the platform gives."""
    try:
        doc = canonical.loads_object(payload, "clerk decision")
    except ProtocolError as e:
        raise BatchError(str(e)) from e
    req, verdict, reason = doc.get("request"), doc.get("verdict"), doc.get("reason")
    if not isinstance(req, str) or not 0 < len(req) <= 96 or verdict != "refused" \
            or reason not in CLERK_REFUSALS:
        raise BatchError("a clerk decision needs a request id, verdict 'refused' and a known reason")
    return req, str(reason)


def encode_down(cursor: int, commands: list[tuple[str, dict[str, Any]]], more: bool = False) -> bytes:
    return canonical.dumps({"v": WIRE_VERSION, "cursor": cursor, "more": more,
                            "commands": [{"kind": k, "cmd": c} for k, c in commands]})


def decode_down(data: bytes) -> Down:
    """Parse a downlink answer; BatchError if it is not one."""
    if len(data) > MAX_DOWN:
        raise BatchError(f"downlink answer of {len(data)} bytes, limit {MAX_DOWN}")
    try:
        doc = canonical.loads_object(data, "downlink answer")
    except ProtocolError as e:
        raise BatchError(str(e)) from e
    cursor, cmds = doc.get("cursor"), doc.get("commands")
    if doc.get("v") != WIRE_VERSION or not isinstance(cursor, int) or isinstance(cursor, bool) \
            or cursor < 0 or not isinstance(cmds, list):
        raise BatchError("downlink answer needs v=1, an integer cursor and a commands list")
    out: list[tuple[str, bytes]] = []
    for c in cmds:
        if not isinstance(c, dict) or not isinstance(c.get("kind"), str) \
                or not isinstance(c.get("cmd"), dict):
            raise BatchError("each downlink command needs a kind and a cmd object")
        try:
            out.append((c["kind"], canonical.dumps(c["cmd"])))
        except ProtocolError as e:
            raise BatchError(f"downlink command: {e}") from e
    return Down(cursor, out, bool(doc.get("more")))


