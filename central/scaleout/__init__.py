"""The scale-out central backend: NATS JetStream as the durable log,
stateless ingest workers, PostgreSQL as the store.

Why three parts: the HTTPS front must answer a gateway quickly and only once
the batch is safe, which a replicated log does (three JetStream nodes, a
quorum has the batch before the PubAck); writing into PostgreSQL is the slow,
bursty part and is done behind the log by workers that can be added, killed
and restarted without losing or doubling anything (event id is the primary
key, a message is acked only after its transaction commits). Everything that
is not the event stream (the outlet registry, commands, photos) is small and
goes to PostgreSQL directly.

Modules: ``config`` (where the cluster and the database are), ``bridge``
(nats-py's asyncio on one loop thread for the synchronous front), ``record``
(a checked batch as log messages), ``log`` (the stream and its consumer),
``schema`` and ``pg`` (the tables and a small connection pool), ``backend``
(the ``central.backend.Backend`` itself), ``worker`` (the ingest worker, in a
thread or its own process). Gateways' MQTT uplink comes in through
nats-server's own MQTT listener: ``mqtt_topics`` (the carrier's topics as
subjects), ``nats_auth`` (one NATS user per outlet, bound to its topics) and
``mqtt_front`` (captured batches checked, logged and acked on the ack topic).
"""

from central.scaleout.backend import PgStore, ScaleOut
from central.scaleout.config import ScaleOutConfig

__all__ = ["PgStore", "ScaleOut", "ScaleOutConfig"]
