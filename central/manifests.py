"""The round manifests the platform issues to couriers' handhelds, and the
village points (村邮站) with their agents.

A courier's handheld works from a manifest: the parcels of its round, each
with the recipient's name and, for hand delivery, the salted hash of the
villager's delivery token (``protocol/codes.py``: the handheld checks a token
offline and never records it); the outlet's village points, each with its
agent and the salted hash of the agent's code, which confirms a handover to
the point; and group orders with their shares. The platform signs it with the
handheld's own key (``central/keys.py``; no locker accepts that key) and
queues it down as a ``handheld`` command; the handheld checks every part
before it takes any (``handheld/app.py``, op ``manifest``).

Secrets leave only to their owner: ``add_point`` returns the agent's code,
made here at random, for the caller to hand over; a villager's delivery
token is derived from the master key for the outlet and parcel
(``KeyService.delivery_token``), so the same parcel on a round issued again
keeps the token the villager already has, and ``issue`` queues the text
that tells it to them (``central/notices.py`` ``queue_tokens``, sent through
the SMS provider in their language) and returns the tokens for the caller
(the CLI prints those it cannot text). The platform keeps only salts and
hashes.

It runs on either backend: its tables are kept through
``central/duty_store.py`` (``POINTS``, ``MANIFESTS``), never by SQL of its
own, so a scale-out folder issues rounds into PostgreSQL and its fronts
hand them to the gateway as any other command.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

from central.duty_store import Column, DutyStore, DutyTable
from central.keys import KeyService
from central.notices import queue_tokens
from common.logs import recorder
from protocol import barcodes, codes
from protocol.topics import valid_segment

record = recorder(__name__)
LIFETIME_S = 3 * 24 * 3600  # a courier out of reach for days still takes the round's list
MAX_PARCELS = 500  # a round; the handheld's command limit (64 KiB) holds about that many
MAX_NAME = 40  # what the handheld shows and keeps of a name

# The tables, in the duty store's vocabulary (``central/duty_store.py``), so
# either backend keeps them: SQLite beside the embedded one's events,
# PostgreSQL on scale-out.
POINTS = DutyTable("village_points", "", (
    Column("outlet", "text"), Column("point", "text"), Column("name", "text"),
    Column("agent", "text", null=True), Column("agent_salt", "text", null=True),
    Column("agent_hash", "text", null=True), Column("at", "real")),
    key=("outlet", "point"))
MANIFESTS = DutyTable("manifests", "", (
    Column("outlet", "text"), Column("device", "text"), Column("round", "text"), Column("cmd", "text"),
    Column("parcels", "int"), Column("at", "real")), key=("outlet", "device", "round"))


class ManifestRefused(ValueError):
    """A manifest or point the platform will not issue, and why (nothing is kept)."""


class Manifests:
    def __init__(self, backend: DutyStore, master: bytes, clock: Callable[[], float] = time.time,
                 urandom: Callable[[int], bytes] = os.urandom) -> None:
        self.b = backend
        self.master = master
        self.clock = clock
        self.urandom = urandom
        for table in (POINTS, MANIFESTS):
            self.b.duty_table(table)

    # ------------------------------------------------------------------ points
    def add_point(self, outlet: str, point: str, name: str, agent: str | None = None) -> str | None:
        """Register (or change) a village point of ``outlet``; with ``agent``, a new code
        for the agent, returned formatted (``XXXX-XXXX-XXXX-XXXX``) and never kept."""
        if not valid_segment(outlet) or not valid_segment(point):
            raise ManifestRefused(f"outlet and point ids: 1-32 of a-z 0-9 _ - ({outlet!r}, {point!r})")
        name = str(name).strip()
        if not 0 < len(name) <= MAX_NAME:
            raise ManifestRefused(f"a point's name: 1-{MAX_NAME} characters")
        salt = digest = code = None
        if agent is not None:
            agent = str(agent).strip()
            if not 0 < len(agent) <= MAX_NAME:
                raise ManifestRefused(f"an agent's name: 1-{MAX_NAME} characters")
            token = codes.new_token(self.urandom)
            salt = codes.new_salt(self.urandom)
            digest = codes.salted_hash(salt, token)
            code = codes.format_token(token)
        self.b.upsert(POINTS, {"outlet": outlet, "point": point, "name": name, "agent": agent,
                               "agent_salt": salt, "agent_hash": digest, "at": self.clock()})
        record("village_point_added", outlet=outlet, point=point, agent=agent is not None)
        return code

    def points(self, outlet: str) -> list[dict[str, Any]]:
        """The outlet's points as a manifest carries them."""
        rows = sorted(self.b.rows(POINTS.name, {"outlet": outlet}), key=lambda r: r["point"])
        out = []
        for r in rows:
            point, name, agent = r["point"], r["name"], r["agent"]
            salt, digest = r["agent_salt"], r["agent_hash"]
            p: dict[str, Any] = {"point": point, "name": name}
            if agent:
                p["agent"] = agent
                if salt and digest:
                    p.update(agent_salt=salt, agent_hash=digest)
            out.append(p)
        return out

    # ------------------------------------------------------------------ manifests
    def issue(self, outlet: str, device: str, round_id: str, parcels: list[dict[str, Any]],
              groups: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
        """Sign the round's manifest for handheld ``device`` and queue it down.

        ``parcels``: ``{"parcel", "to", "point"?, "token"?: bool}`` (a token is made
        unless ``token`` is false). Returns the signed command and the villagers'
        delivery tokens (parcel -> formatted token); each token's text to its
        villager is queued (``queue_tokens``)."""
        if not valid_segment(round_id):
            raise ManifestRefused(f"a round id: 1-32 of a-z 0-9 _ - ({round_id!r})")
        handhelds = {d["device"] for d in self.b.devices(outlet)
                     if d["kind"] == "handheld" and not d["retired"]}
        if device not in handhelds:
            raise ManifestRefused(f"{device!r} is not a registered handheld of {outlet!r}")
        if not isinstance(parcels, list) or not 0 < len(parcels) <= MAX_PARCELS:
            raise ManifestRefused(f"a round has 1-{MAX_PARCELS} parcels")
        points = self.points(outlet)
        known_points = {p["point"] for p in points}
        keys = KeyService.registered(self.b, outlet, self.master)
        entries, tokens, seen = [], {}, set()
        for i, p in enumerate(parcels, start=1):
            entry = self._entry(i, p, known_points)
            if entry["parcel"] in seen:
                raise ManifestRefused(f"parcel {i}: {entry['parcel']} is on the round twice")
            seen.add(entry["parcel"])
            if p.get("token", True) is not False:
                token = keys.delivery_token(entry["parcel"])
                salt = codes.new_salt(self.urandom)
                entry.update(token_salt=salt, token_hash=codes.salted_hash(salt, token))
                tokens[entry["parcel"]] = codes.format_token(token)
            entries.append(entry)
        args: dict[str, Any] = {"round": round_id, "parcels": entries, "retrieval": [], "points": points}
        if groups:
            args["groups"] = groups
        cmd_id = "mf" + hashlib.sha256(f"{outlet}/{device}/{round_id}".encode()).hexdigest()[:24]
        cmd = keys.command(device, "manifest", args, cmd_id, now=int(self.clock()), lifetime_s=LIFETIME_S)
        try:
            self.b.push_command(outlet, "handheld", cmd)
        except ValueError as e:  # more than the downlink carries
            raise ManifestRefused(str(e)) from e
        self.b.upsert(MANIFESTS, {"outlet": outlet, "device": device, "round": round_id,
                                  "cmd": json.dumps(cmd), "parcels": len(entries), "at": self.clock()})
        queue_tokens(self.b, outlet, device, round_id, list(tokens))
        record("manifest_issued", outlet=outlet, device=device, round=round_id, parcels=len(entries),
               tokens=len(tokens))
        return cmd, tokens

    @staticmethod
    def _entry(i: int, p: Any, points: set[str]) -> dict[str, Any]:
        if not isinstance(p, dict):
            raise ManifestRefused(f"parcel {i}: an object with parcel and to")
        v = barcodes.classify(str(p.get("parcel", "")).strip())
        if not v["ok"] or v["kind"] not in barcodes.PARCEL_KINDS:
            raise ManifestRefused(f"parcel {i}: {p.get('parcel')!r} is not a parcel id ({v.get('reason')})")
        to = str(p.get("to", "")).strip()
        if not 0 < len(to) <= MAX_NAME:
            raise ManifestRefused(f"parcel {i}: the recipient's name, 1-{MAX_NAME} characters")
        entry: dict[str, Any] = {"parcel": v["value"], "to": to}
        point = p.get("point")
        if point is not None:
            if point not in points:
                raise ManifestRefused(f"parcel {i}: no village point {point!r} at this outlet")
            entry["point"] = point
        return entry
