"""The scale-out store's tables in PostgreSQL: the embedded backend's
(``central/embedded.py``) in PostgreSQL's types, so both answer the same
questions. Events and quarantined events are keyed by (outlet, event id),
which is what makes a redelivered log message harmless (``ON CONFLICT DO
NOTHING``). The outlet is in the key because ids are made by devices and
device names (``lk01``) repeat in every outlet: keyed by the id alone, the
second outlet's event was taken for a resend and lost, acked but never
stored. The registry (outlets, with ``notifier``, and devices with their
key version) is the embedded one's too (``central/registry.py``); a
database from before the registry held devices gets the column and the
table where the schema is created (``IF NOT EXISTS``). Photos are kept whole in ``photos.data`` once complete:
the store is the one place every front process can read them from.
The platform duties that run here (``central/duty_store.py``) create their
own tables of answers, and a partial index of the events each answers,
where they start (``PgStore.duty_table``).

Indexes (``INDEXES``, and the duties') are made after their tables: in the
same transaction on a table just created (empty: nothing waits), and on a
table that was there already with ``CREATE INDEX CONCURRENTLY``, outside
any transaction (``PgStore.build_concurrently``): a plain build stops every
insert into the table until it is done: on a large event log, the workers
wait for as long as the build takes. One such build at a time
(``INDEX_LOCK``); an index an interrupted build left invalid is dropped and
built again. A start that finds every index there and valid builds nothing.

A database made before that key is upgraded where the schema is created
(``MIGRATE``, run by every front and worker under the schema lock): the old
primary key on ``id`` is dropped and ``(outlet, id)`` added in one ``ALTER
TABLE``, in the same transaction, and only when the table's key is not
already that, so it runs once and a second run changes nothing. No row is
copied or lost: a key that was unique on ``id`` is unique on ``(outlet,
id)`` too. The new key's index is built while the table is locked, so on a
large store the first start after the upgrade waits for it (writers queue,
nothing is refused: the log holds the batches meanwhile)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

SCHEMA = """
CREATE TABLE IF NOT EXISTS outlets (
    id text PRIMARY KEY, pw_hash text NOT NULL, created_at double precision NOT NULL,
    retired_at double precision, notifier boolean NOT NULL DEFAULT false);
ALTER TABLE outlets ADD COLUMN IF NOT EXISTS notifier boolean NOT NULL DEFAULT false;
ALTER TABLE outlets ADD COLUMN IF NOT EXISTS mqtt_hash text;
CREATE TABLE IF NOT EXISTS devices (
    id text NOT NULL, outlet text NOT NULL, kind text NOT NULL, kv integer NOT NULL DEFAULT 1,
    created_at double precision NOT NULL, retired_at double precision,
    prev_until bigint NOT NULL DEFAULT 0, PRIMARY KEY (outlet, id));
ALTER TABLE devices ADD COLUMN IF NOT EXISTS prev_until bigint NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS courier_badges (
    outlet text NOT NULL, courier text NOT NULL, lockers text NOT NULL, exp bigint NOT NULL,
    issued_at double precision NOT NULL, revoked_at double precision, PRIMARY KEY (outlet, courier));
CREATE TABLE IF NOT EXISTS events (
    id text NOT NULL, outlet text NOT NULL, device text NOT NULL, type text NOT NULL,
    cls text NOT NULL, ts bigint NOT NULL, payload bytea NOT NULL, batch text NOT NULL,
    received_at double precision NOT NULL, PRIMARY KEY (outlet, id));
CREATE TABLE IF NOT EXISTS quarantine (
    id text NOT NULL, outlet text NOT NULL, reason text NOT NULL, payload bytea NOT NULL,
    received_at double precision NOT NULL, PRIMARY KEY (outlet, id));
CREATE TABLE IF NOT EXISTS batches (
    id text NOT NULL, outlet text NOT NULL, lane text NOT NULL, n integer NOT NULL,
    parts integer NOT NULL, wire_bytes integer NOT NULL, first_at double precision NOT NULL,
    PRIMARY KEY (outlet, id));
CREATE TABLE IF NOT EXISTS commands (
    cursor bigserial PRIMARY KEY, outlet text NOT NULL, kind text NOT NULL, cmd text NOT NULL,
    created_at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS pulled (
    outlet text PRIMARY KEY, after bigint NOT NULL, at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    sha text PRIMARY KEY, size integer NOT NULL, chunk_size integer NOT NULL, chunks integer NOT NULL,
    complete boolean NOT NULL DEFAULT false, data bytea, created_at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS photo_parts (
    sha text NOT NULL, idx integer NOT NULL, data bytea NOT NULL, PRIMARY KEY (sha, idx));
CREATE TABLE IF NOT EXISTS photo_reviews (
    sha text PRIMARY KEY, verdict text NOT NULL, reason text NOT NULL, "by" text NOT NULL,
    at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS dispatchers (
    name text PRIMARY KEY, pw_hash text NOT NULL, created_at double precision NOT NULL,
    disabled_at double precision);
CREATE TABLE IF NOT EXISTS photo_claims (
    sha text NOT NULL, outlet text NOT NULL, meta text, at double precision NOT NULL);
"""

# Upgrade a database whose events / quarantine are keyed by id alone (see
# the module doc); a no-op once the key is (outlet, id).
MIGRATE = """
DO $$
DECLARE
    t text;
    k record;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'quarantine'] LOOP
        SELECT conname, pg_get_constraintdef(oid) AS def INTO k FROM pg_constraint
            WHERE conrelid = t::regclass AND contype = 'p';
        IF k.def IS DISTINCT FROM 'PRIMARY KEY (outlet, id)' THEN
            IF k.conname IS NULL THEN
                EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (outlet, id)', t);
            ELSE
                EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I, ADD PRIMARY KEY (outlet, id)',
                               t, k.conname);
            END IF;
        END IF;
    END LOOP;
END
$$;
"""


@dataclass(frozen=True)
class Index:
    """An index the store keeps on one of its tables: ``columns`` its
    column list, ``where`` a partial index's condition (SQL, ours alone,
    never a value from outside)."""

    name: str
    table: str
    columns: sql.Composable
    where: sql.Composable | None = None

    def create(self, concurrently: bool = False) -> sql.Composed:
        q = sql.SQL("CREATE INDEX {}IF NOT EXISTS {} ON {} ({})").format(
            sql.SQL("CONCURRENTLY " if concurrently else ""), sql.Identifier(self.name),
            sql.Identifier(self.table), self.columns)
        return q + sql.SQL(" WHERE ") + self.where if self.where is not None else q


# The tables' indexes (besides their keys), made after SCHEMA (``PgStore.indexes``):
# in its transaction on a table it has just created, concurrently on one that was
# there already.
INDEXES = (
    Index("events_outlet", "events", sql.SQL("outlet, received_at")),
    Index("commands_outlet", "commands", sql.SQL("outlet, cursor")),
    Index("events_alarms", "events", sql.SQL("ts"), sql.SQL("cls = 'alarm'")),
    Index("events_alarms_resolved", "events", sql.SQL("received_at"),
          sql.SQL("type = 'gateway.alarm_resolved'")),
    Index("events_batch", "events", sql.SQL("outlet, batch")),
)
# Each index's name and whether it is valid (an interrupted concurrent build
# leaves one that is not: nothing reads it, every write still updates it).
INDEX_STATES = """
SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%s)
"""
SCHEMA_LOCK = 7170017  # pg_advisory_xact_lock key: one schema creator at a time
INDEX_LOCK = 7170019  # pg_try_advisory_lock key (a session's): one concurrent index build at a time
DUTIES_LOCK = 7170018  # pg_try_advisory_xact_lock key: one platform duty pass at a time
# A platform duty's table of answers (``central.duty_store.DutyTable``), column types.
PG_TYPES = {"text": "text", "int": "bigint", "real": "double precision"}

# One statement per fetched group of messages: arrays in, rows out, and an
# event already held (a redelivery, a gateway's resend) is skipped.
INSERT_EVENTS = """
INSERT INTO events (id, outlet, device, type, cls, ts, payload, batch, received_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[],
                     %s::bytea[], %s::text[], %s::double precision[])
ON CONFLICT (outlet, id) DO NOTHING
"""
INSERT_QUARANTINE = """
INSERT INTO quarantine (id, outlet, reason, payload, received_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::double precision[])
ON CONFLICT (outlet, id) DO NOTHING
"""
INSERT_BATCHES = """
INSERT INTO batches (id, outlet, lane, n, parts, wire_bytes, first_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::integer[], %s::integer[], %s::integer[],
                     %s::double precision[])
ON CONFLICT (outlet, id) DO NOTHING
"""
