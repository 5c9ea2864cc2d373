"""The MQTT front: gateways' MQTT uplink, taken straight from nats-server's
MQTT listener, into the same log the HTTPS front writes.

Why no MQTT broker of our own: nats-server speaks MQTT 3.1.1 (QoS 1 kept in
JetStream) and turns topic ``pe-up/v1/<outlet>/batch/<ch>/<id>`` into the
subject ``pe-up.v1.<outlet>.batch.<ch>.<id>``. The outlet's NATS user
(``central/scaleout/nats_auth.py``) may publish only under its own outlet,
so a forged outlet never gets a message in. A replicated stream captures
every batch and pull the gateways publish (``<NS>_MQTT_UP``, work-queue
retention: a message is gone once this front has answered it), so a batch
published while no front runs waits in the log instead of being dropped.

For each captured message this front does what the HTTPS front does for a
request: the batch is checked with ``central.intake.check_batch`` (the
outlet is the topic's, which the server bound to the login), stored with
``ScaleOut.store`` (it answers only once JetStream holds the batch records;
the ingest workers write them into PostgreSQL, idempotent on (outlet, event
id) and (outlet, batch id)), and the ack document is published on the
topic the gateway waits on. Only then is the captured message acked, so a
front killed in between leaves it to be redelivered: stored again as a
no-op, answered again. A batch that cannot be taken is answered with an
ack that covers nothing, names the reason in ``refused`` (and, for the
gateway's log, in ``rejected`` under the batch id), and is counted. A pull
is answered with the downlink page after its cursor.

Answers are core NATS publishes: nats-server hands them to the gateway's
QoS 1 subscription as QoS 0 (a NATS message carries no QoS). A lost answer
costs the gateway a timeout and a resend, which is answered without a
second copy (JetStream's duplicate window, then the store's keys).

``python -m central.scaleout.mqtt_front CONFIG_JSON`` runs one (one JSON line
on stdout once it is bound, its counts as another on SIGTERM); fronts can be
added, they share the durable consumer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from central.front import DOWN_PAGE  # the same page as over HTTPS
from central.intake import check_batch
from central.scaleout import log as jlog
from central.scaleout import mqtt_topics as topics
from central.scaleout.backend import ScaleOut
from central.scaleout.bridge import LoopThread
from central.scaleout.config import ScaleOutConfig
from common.logs import get, recorder
from common.uplink_codec import WIRE_VERSION, BatchError, encode_ack, encode_down
from protocol import canonical
from protocol.errors import ProtocolError

log = get(__name__)
record = recorder(__name__)

# A batch over this is refused with ``too_large`` (the gateway's default
# batch is 256 KiB). nats-server's ``max_payload`` must be above it, or the
# server drops the gateway's connection instead of letting us say why.
MQTT_MAX_BATCH = 1024 * 1024
MAX_PULL = 256

FETCH = 32
LANES = 2


class Refused(Exception):
    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def refusal(bid: str, code: str, detail: str) -> bytes:
    """The ack of a batch that was not taken: it covers nothing, says why."""
    return json.dumps({"v": WIRE_VERSION, "batch": bid, "acked": {},
                       "rejected": {bid: f"{code}: {detail}"[:300]},
                       "refused": {"code": code, "detail": detail[:300]}},
                      separators=(",", ":"), sort_keys=True).encode()


def stream_config(cfg: ScaleOutConfig) -> api.StreamConfig:
    return api.StreamConfig(
        name=cfg.mqtt_stream,
        subjects=[cfg.mqtt_subject("*", what) for what in topics.TO_PLATFORM],
        num_replicas=cfg.replicas, storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.WORK_QUEUE, max_age=24 * 3600.0)


def consumer_config(cfg: ScaleOutConfig) -> api.ConsumerConfig:
    return api.ConsumerConfig(durable_name=cfg.mqtt_durable, ack_policy=api.AckPolicy.EXPLICIT,
                              deliver_policy=api.DeliverPolicy.ALL, ack_wait=cfg.ack_wait_s,
                              max_ack_pending=5000, max_deliver=-1)


async def ensure(js: JetStreamContext, cfg: ScaleOutConfig, deadline_s: float = 30.0) -> None:
    end = asyncio.get_running_loop().time() + deadline_s
    while True:
        try:
            try:
                await js.stream_info(cfg.mqtt_stream)
            except NotFoundError:
                await js.add_stream(stream_config(cfg))
            await js.add_consumer(cfg.mqtt_stream, consumer_config(cfg))
            return
        except (APIError, NoStreamResponseError, nats.errors.TimeoutError) as e:
            if asyncio.get_running_loop().time() > end:
                raise jlog.LogUnavailable(f"cannot set up stream {cfg.mqtt_stream}: {e}") from e
            await asyncio.sleep(0.25)


class MqttFront:
    def __init__(self, cfg: ScaleOutConfig, backend: ScaleOut | None = None, name: str = "mqtt-front",
                 lanes: int = LANES, max_batch: int = MQTT_MAX_BATCH) -> None:
        self.cfg = cfg
        self.name = name
        self.lanes = lanes
        self.max_batch = max_batch
        self._own = backend is None
        self.backend = backend if backend is not None else ScaleOut(cfg)
        self.counts: Counter[str] = Counter()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix=name)
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------ one message (a thread)
    def handle(self, subject: str, data: bytes) -> tuple[str, bytes] | None:
        """The answer (subject, payload) to one captured message; None for a
        subject that is not the carrier's (nobody to answer). Raises
        LogUnavailable when the log did not take the batch (retried later)."""
        try:
            outlet, what, channel, mid = topics.parse(self.cfg.mqtt_prefix, subject)
        except topics.TopicError as e:
            self._count_refusal("bad_topic", subject, str(e))
            return None
        to = topics.answer(self.cfg.mqtt_prefix, outlet, what, channel, mid)
        try:
            if what == topics.BATCH:
                return to, self._batch(outlet, mid, data)
            return to, self._pull(outlet, data)
        except Refused as e:
            self._count_refusal(e.code, subject, e.detail)
            if what == topics.BATCH:
                return to, refusal(mid, e.code, e.detail)
            return to, json.dumps({"v": WIRE_VERSION, "error": {"code": e.code, "detail": e.detail[:300]}},
                                  separators=(",", ":")).encode()

    def _count_refusal(self, code: str, subject: str, detail: str) -> None:
        self.counts[code] += 1
        record("refused", code=code, subject=subject[:160], detail=detail[:200], via="mqtt")

    def _batch(self, outlet: str, bid: str, data: bytes) -> bytes:
        if len(data) > self.max_batch:
            raise Refused("too_large", f"{len(data)} bytes, limit {self.max_batch}")
        if not self.backend.outlet_active(outlet):
            raise Refused("unknown_outlet", f"{outlet} is not a registered, active outlet")
        try:
            checked = check_batch(outlet, bid, data)
        except BatchError as e:
            raise Refused("bad_batch", str(e)) from e
        stored = self.backend.store(outlet, checked)
        self.counts["batches"] += 1
        record("batch", outlet=outlet, batch=checked.batch.id, n=len(checked.ids), new=stored.new,
               dup=stored.dup, quarantined=len(checked.quarantined), via="mqtt")
        return encode_ack(checked.batch.id, checked.acked, checked.rejected, batch_ids=checked.ids)

    def _pull(self, outlet: str, data: bytes) -> bytes:
        if len(data) > MAX_PULL:
            raise Refused("too_large", f"pull of {len(data)} bytes")
        try:
            doc = canonical.loads_object(data, "pull")
        except ProtocolError as e:
            raise Refused("bad_pull", str(e)) from e
        after = doc.get("after")
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 10 ** 18:
            raise Refused("bad_pull", "after must be a whole number")
        if not self.backend.outlet_active(outlet):
            raise Refused("unknown_outlet", f"{outlet} is not a registered, active outlet")
        cursor, commands, more = self.backend.pull(outlet, after, DOWN_PAGE)
        self.counts["pulls"] += 1
        return encode_down(cursor, commands, more)

    # ---------------------------------------------------------- the loop
    async def run(self) -> None:
        nc = await jlog.connect(self.cfg, f"central-{self.name}")
        try:
            js = nc.jetstream(timeout=5)
            await ensure(js, self.cfg)
            subs = [await js.pull_subscribe_bind(durable=self.cfg.mqtt_durable, stream=self.cfg.mqtt_stream)
                    for _ in range(self.lanes)]
            self.ready.set()
            await asyncio.gather(*(self._lane(nc, sub) for sub in subs))
        finally:
            await nc.close()
            self._pool.shutdown(wait=False)
            if self._own:
                self.backend.close()

    async def _lane(self, nc: Any, sub: Any) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            try:
                msgs: list[Msg] = await sub.fetch(FETCH, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except nats.errors.Error as e:  # a node down, the consumer's leader moving
                self.counts["retries"] += 1
                log.debug("%s: fetch: %r", self.name, e)
                await asyncio.sleep(0.1)
                continue
            results = await asyncio.gather(
                *(loop.run_in_executor(self._pool, self.handle, m.subject, m.data) for m in msgs),
                return_exceptions=True)
            for m, res in zip(msgs, results, strict=True):
                try:
                    if isinstance(res, BaseException):
                        # the log did not take it (or the store is down): later, again
                        self.counts["retries"] += 1
                        log.warning("%s: %s not taken yet: %r", self.name, m.subject, res)
                        await m.nak(delay=1.0)
                        continue
                    if res is not None:
                        await nc.publish(res[0], res[1])
                    await m.ack()
                except nats.errors.Error as e:  # redelivered later; storing again is a no-op
                    log.debug("%s: answer/ack: %r", self.name, e)
            if nc.is_connected:
                try:
                    await nc.flush(timeout=5)  # the answers out now, not on the next tick
                except (TimeoutError, nats.errors.Error):
                    pass


class MqttFrontThread:
    """An MQTT front on its own event loop thread (tests, one-process use)."""

    def __init__(self, cfg: ScaleOutConfig, backend: ScaleOut | None = None, name: str = "mqtt-front",
                 **kw: Any) -> None:
        self.front = MqttFront(cfg, backend, name, **kw)
        self.bridge = LoopThread(f"central-{name}")
        self.future = asyncio.run_coroutine_threadsafe(self.front.run(), self.bridge.loop)
        self.bridge.run(self._ready(), 60)

    async def _ready(self) -> None:
        waiter = asyncio.ensure_future(self.front.ready.wait())
        while not waiter.done():
            if self.future.done():
                waiter.cancel()
                self.future.result()  # raises what stopped it
                raise RuntimeError("MQTT front stopped before it was ready")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.bridge.loop.is_closed():
            return  # stopped before
        self.bridge.loop.call_soon_threadsafe(self.front.stop)
        try:
            self.future.result(15)
        finally:
            self.bridge.stop()


def main(argv: list[str] | None = None) -> int:
    from common.text import beside, pick_lang

    text = beside(__file__)
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(text.t("usage.mqtt_front", pick_lang()), file=sys.stderr)
        return 2
    try:
        cfg = ScaleOutConfig.from_json(args[0])
    except (ValueError, TypeError) as e:
        print(text.t("bad_config", pick_lang(), detail=str(e)), file=sys.stderr)
        return 2
    front = MqttFront(cfg, name=f"mqtt-front-{os.getpid()}")

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, front.stop)
        task = asyncio.create_task(front.run())
        ready = asyncio.create_task(front.ready.wait())
        await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
        if front.ready.is_set():
            print(json.dumps({"ready": front.name}), flush=True)
        ready.cancel()
        await task

    asyncio.run(go())
    print(json.dumps(dict(front.counts)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
