"""The scale-out store's tables in PostgreSQL: the embedded backend's
(``central/embedded.py``) in PostgreSQL's types, so both answer the same
questions. Events and quarantined events are keyed by event id, which is
what makes a redelivered log message harmless (``ON CONFLICT DO NOTHING``).
Photos are kept whole in ``photos.data`` once complete: the store is the one
place every front process can read them from."""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS outlets (
    id text PRIMARY KEY, pw_hash text NOT NULL, created_at double precision NOT NULL,
    retired_at double precision);
CREATE TABLE IF NOT EXISTS events (
    id text PRIMARY KEY, outlet text NOT NULL, device text NOT NULL, type text NOT NULL,
    cls text NOT NULL, ts bigint NOT NULL, payload bytea NOT NULL, batch text NOT NULL,
    received_at double precision NOT NULL);
CREATE INDEX IF NOT EXISTS events_outlet ON events (outlet, received_at);
CREATE TABLE IF NOT EXISTS quarantine (
    id text PRIMARY KEY, outlet text NOT NULL, reason text NOT NULL, payload bytea NOT NULL,
    received_at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id text NOT NULL, outlet text NOT NULL, lane text NOT NULL, n integer NOT NULL,
    parts integer NOT NULL, wire_bytes integer NOT NULL, first_at double precision NOT NULL,
    PRIMARY KEY (outlet, id));
CREATE TABLE IF NOT EXISTS commands (
    cursor bigserial PRIMARY KEY, outlet text NOT NULL, kind text NOT NULL, cmd text NOT NULL,
    created_at double precision NOT NULL);
CREATE INDEX IF NOT EXISTS commands_outlet ON commands (outlet, cursor);
CREATE TABLE IF NOT EXISTS pulled (
    outlet text PRIMARY KEY, after bigint NOT NULL, at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    sha text PRIMARY KEY, size integer NOT NULL, chunk_size integer NOT NULL, chunks integer NOT NULL,
    complete boolean NOT NULL DEFAULT false, data bytea, created_at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS photo_parts (
    sha text NOT NULL, idx integer NOT NULL, data bytea NOT NULL, PRIMARY KEY (sha, idx));
CREATE TABLE IF NOT EXISTS photo_claims (
    sha text NOT NULL, outlet text NOT NULL, meta text, at double precision NOT NULL);
"""

# One statement per fetched group of messages: arrays in, rows out, and an
# event already held (a redelivery, a gateway's resend) is skipped.
INSERT_EVENTS = """
INSERT INTO events (id, outlet, device, type, cls, ts, payload, batch, received_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[],
                     %s::bytea[], %s::text[], %s::double precision[])
ON CONFLICT (id) DO NOTHING
"""
INSERT_QUARANTINE = """
INSERT INTO quarantine (id, outlet, reason, payload, received_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::double precision[])
ON CONFLICT (id) DO NOTHING
"""
INSERT_BATCHES = """
INSERT INTO batches (id, outlet, lane, n, parts, wire_bytes, first_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::integer[], %s::integer[], %s::integer[],
                     %s::double precision[])
ON CONFLICT (outlet, id) DO NOTHING
"""
