"""The durable log: one JetStream stream per deployment, replicated
(``num_replicas=3``: a PubAck means a quorum of nodes has the message), with
one durable pull consumer the ingest workers share.

The front publishes and waits for the PubAck before it answers a gateway.
While a node is down or a stream leader is being elected a publish can time
out or find no responder; it is retried with the same Nats-Msg-Id until a
deadline, which cannot store it twice (JetStream drops the copy inside its
duplicate window; a worker's ``ON CONFLICT`` catches anything later).

What the PubAck promises: the stream's leader and at least one more node
have the message in their file store (a quorum of three). nats-server
flushes its files to disk on its own schedule (``sync_interval``), so the
guarantee is "survives any one node", not "survives a power cut of all
three at once"; the nodes of a real deployment are on separate machines.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from central.scaleout.config import ScaleOutConfig
from common.logs import get

log = get(__name__)


class LogUnavailable(RuntimeError):
    """The log did not take a batch before the deadline (the gateway retries)."""


async def _quiet(e: Exception) -> None:
    log.debug("nats: %s", e)


async def connect(cfg: ScaleOutConfig, name: str) -> Client:
    """A connection that fails over between the nodes and never gives up
    reconnecting (a worker or a front outlives a node restart)."""
    return await nats.connect(servers=cfg.nats, name=name, connect_timeout=2, reconnect_time_wait=0.2,
                              max_reconnect_attempts=-1, allow_reconnect=True, error_cb=_quiet,
                              disconnected_cb=None, ping_interval=5, max_outstanding_pings=3)


def stream_config(cfg: ScaleOutConfig) -> api.StreamConfig:
    return api.StreamConfig(name=cfg.stream, subjects=[cfg.subjects], num_replicas=cfg.replicas,
                            storage=api.StorageType.FILE, retention=api.RetentionPolicy.LIMITS,
                            max_age=cfg.max_age_s, duplicate_window=cfg.duplicate_window_s)


def consumer_config(cfg: ScaleOutConfig) -> api.ConsumerConfig:
    return api.ConsumerConfig(durable_name=cfg.durable, ack_policy=api.AckPolicy.EXPLICIT,
                              deliver_policy=api.DeliverPolicy.ALL, ack_wait=cfg.ack_wait_s,
                              max_ack_pending=20000, max_deliver=-1)


async def ensure(js: JetStreamContext, cfg: ScaleOutConfig, deadline_s: float = 30.0) -> None:
    """Create the stream and the consumer if missing; retried while the
    cluster is still electing its meta leader."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            try:
                await js.stream_info(cfg.stream)
            except NotFoundError:
                await js.add_stream(stream_config(cfg))
            await js.add_consumer(cfg.stream, consumer_config(cfg))
            return
        except (APIError, NoStreamResponseError, nats.errors.TimeoutError) as e:
            if time.monotonic() > end:
                raise LogUnavailable(f"cannot set up stream {cfg.stream}: {e}") from e
            await asyncio.sleep(0.25)


async def publish(js: JetStreamContext, subject: str, data: bytes, msg_id: str,
                  deadline_s: float) -> api.PubAck:
    """Publish until JetStream acks it (or the deadline passes)."""
    end = time.monotonic() + deadline_s
    attempt = 0
    while True:
        try:
            return await js.publish(subject, data, timeout=min(2.0, max(0.2, end - time.monotonic())),
                                    headers={"Nats-Msg-Id": msg_id})
        except (TimeoutError, nats.errors.Error) as e:  # a node down, an election
            attempt += 1
            if time.monotonic() >= end:
                raise LogUnavailable(f"{msg_id}: {e!r} after {attempt} tries") from e
            log.debug("publish %s retry %d: %r", msg_id, attempt, e)
            await asyncio.sleep(min(0.05 * attempt, 0.5))


async def backlog(js: JetStreamContext, cfg: ScaleOutConfig) -> dict[str, Any]:
    """What the workers still have to write: messages not yet delivered and
    delivered but not acked; ``acked_to``: the stream sequence every message
    up to which the workers have acked (written)."""
    info = await js.consumer_info(cfg.stream, cfg.durable, timeout=2)
    return {"pending": info.num_pending or 0, "ack_pending": info.num_ack_pending or 0,
            "redelivered": info.num_redelivered or 0,
            "acked_to": (info.ack_floor.stream_seq or 0) if info.ack_floor else 0}


async def logged_to(js: JetStreamContext, cfg: ScaleOutConfig) -> int:
    """The stream's last sequence: every batch acked to a gateway so far is at or below it."""
    info = await js.stream_info(cfg.stream)
    return int(info.state.last_seq or 0)
