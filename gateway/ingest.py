"""Ingest: device events from the outlet broker into the durable store.

The gateway's promise to a device is that a PUBACK means "on disk". paho's
``manual_ack`` holds the PUBACK back; every message that arrives within one
group window is validated through the shared protocol module, committed in
one SQLite transaction, and only then acked. A gateway killed anywhere before
the ack leaves the message unacked in its persistent broker session, so the
broker redelivers it and ``INSERT OR IGNORE`` on the event id keeps exactly
one copy.

Bad input (unknown topic, malformed or oversized payload, an event whose id
names another device) is counted by error code, stored in ``rejected`` for
the clerk and acked, so it is never redelivered forever and never blocks the
messages behind it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from firmware.protocol import envelope, topics
from firmware.protocol.canonical import dumps, loads_object
from firmware.protocol.errors import BadField, ProtocolError
from gateway import metrics as M
from gateway.budget import Budget, BudgetConfig
from gateway.config import GatewayConfig
from gateway.own_events import OwnEvents
from gateway.relay import Relay, store_command
from gateway.store import EventStore, StoredEvent

MAX_STATE = 16 * 1024
LOG_IDS = 20  # event ids named per log line; the counts cover the rest
FORWARD_TYPE = "handheld.forward_command"


def emit(evt: str, **kw: Any) -> None:
    """One JSON line per notable step, for operators, the demo and tests."""
    sys.stdout.write(json.dumps({"evt": evt, **kw}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@dataclass
class Faults:
    """Crash points for fault tests; all off in production."""

    hold_before_commit_s: float = 0.0
    exit_before_ack: bool = False


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
    """Check one message against the protocol; raise ProtocolError if bad."""
    outlet, kind, device, channel = parsed_topic or topics.parse(topic)
    env, (_, inc, seq) = envelope.decode_event(payload, device=device)
    return StoredEvent(env["id"], outlet, kind, device, inc, seq, env["cls"], env["type"],
                       env["ts"], payload)


class Ingest:
    def __init__(self, cfg: GatewayConfig, faults: Faults | None = None) -> None:
        self.cfg = cfg
        self.faults = faults or Faults()
        self.store = EventStore(cfg.db)
        self.metrics: Counter[str] = Counter()
        self.seq = SeqTracker()
        self.pending: list[mqtt.MQTTMessage] = []
        # paho's thread appends, ours pops: a deque and an Event cost less per
        # message than queue.Queue's lock and condition, and the GIL is shared.
        self.inbox: deque[mqtt.MQTTMessage] = deque()
        self.arrived = threading.Event()
        self._topics: dict[str, tuple[str, str, str, str]] = {}
        self.connected = False
        self.stopping = False
        self.own = OwnEvents(self.store, cfg.outlet, cfg.broker.client_id, Path(cfg.db).parent)
        self.relay = Relay(self.store, cfg.outlet, self.own,
                           lambda topic, payload: self.client.publish(topic, payload, qos=1))
        self.budget = Budget(self.store, BudgetConfig.from_dict(cfg.budget))
        self._last_budget = 0.0
        self.on_ack: Any = self.relay.on_ack
        self._last_tick = 0.0
        b = cfg.broker
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=b.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if b.username:
            self.client.username_pw_set(b.username, b.password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.subscribed = threading.Event()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            emit("broker_refused", reason=str(rc))
            return
        self.connected = True
        client.subscribe([(topics.subscription(self.cfg.outlet, ch), 1)
                          for ch in ("evt", "presence", "state", "ack")])
        emit("connected", session_present=bool(flags.session_present))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      props: Any = None) -> None:
        if all(not rc.is_failure for rc in reason_codes):
            self.subscribed.set()
        else:
            emit("subscribe_refused", reasons=[str(rc) for rc in reason_codes])

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        self.connected = False
        emit("disconnected", reason=str(rc))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.inbox.append(msg)
        if not self.arrived.is_set():
            self.arrived.set()

    def _collect(self, timeout: float) -> bool:
        """Move what has arrived into pending, waiting up to ``timeout`` for
        something to arrive; False if nothing did."""
        if not self.inbox:
            self.arrived.clear()  # cleared before the check: a later append sets it again
            if not self.inbox and not self.arrived.wait(timeout):
                return False
        room = self.cfg.group_max - len(self.pending)
        pop = self.inbox.popleft
        while room > 0 and self.inbox:
            self.pending.append(pop())
            room -= 1
        return True

    def _topic(self, topic: str) -> tuple[str, str, str, str]:
        """topics.parse, remembered: a device publishes on few topics."""
        parsed = self._topics.get(topic)
        if parsed is None:
            parsed = topics.parse(topic)
            if len(self._topics) > 10000:
                self._topics.clear()
            self._topics[topic] = parsed
        return parsed

    def flush(self) -> None:
        """Validate, commit and then ack everything pending, as one group."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        events: list[StoredEvent] = []
        rejects: list[tuple[str, str, str, bytes]] = []
        for msg in batch:
            try:
                parsed = self._topic(msg.topic)
                if parsed[3] == "evt":
                    events.append(validate(msg.topic, msg.payload, parsed))
                else:
                    self.side_channel(msg.topic, msg.payload)
            except ProtocolError as e:
                self.reject(rejects, msg.topic, e.code, e.detail, msg.payload)
            except UnicodeDecodeError:
                self.reject(rejects, repr(msg._topic), "unknown_topic", "topic is not UTF-8",
                            msg.payload)
        if self.faults.hold_before_commit_s:
            emit("holding", n=len(batch), ids=[e.id for e in events[:LOG_IDS]])
            time.sleep(self.faults.hold_before_commit_s)
        try:
            self.seq.prime(self.store, events)
            fresh = self.store.commit_events(events, rejects, self._forward)
        except sqlite3.Error as e:
            # Disk full, database locked, I/O error: nothing is acked, so
            # nothing is lost. Keep the group, back off, try again; the
            # gateway never exits over it.
            self.pending = batch + self.pending
            self.metrics["store_errors"] += 1
            emit("store_failed", error=str(e), waiting=len(self.pending))
            time.sleep(min(5.0, 0.5 * (1 + self.metrics["store_errors"] % 10)))
            return
        inserted = sum(fresh)
        dups = len(fresh) - inserted
        self.metrics["received"] += len(batch)
        self.metrics["stored"] += inserted
        self.metrics["duplicates"] += dups
        self.metrics["group_commits"] += 1
        M.GROUP_COMMITS.inc()
        M.DUPLICATES.inc(dups)
        by_cls: Counter[str] = Counter()
        for e, new in zip(events, fresh, strict=True):
            if new:
                by_cls[e.cls] += 1
                order = self.seq.observe(e.device, e.inc, e.seq)
                if order:
                    self.metrics[f"seq_{order}s"] += 1
                    M.SEQ_ANOMALIES.labels(order).inc()
        for cls, n in by_cls.items():
            M.INGESTED.labels(cls).inc(n)
        emit("committed", n=len(batch), stored=inserted, duplicates=dups,
             ids=[e.id for e in events[:LOG_IDS]])
        if self.faults.exit_before_ack:
            emit("exiting_before_ack")
            os._exit(3)
        for msg in batch:
            self.client.ack(msg.mid, msg.qos)

    def _forward(self, fresh: list[StoredEvent]) -> None:
        """Queue the platform-signed commands handhelds forward (deposit
        permits): in the transaction that stores their event, so the command
        is queued exactly when the event is. The gateway checks addressing
        only; the locker checks the platform's signature."""
        for e in fresh:
            if e.type != FORWARD_TYPE or e.kind != "handheld":
                continue
            try:
                body = loads_object(e.payload, "event")["body"]
                kind, cmd = body.get("kind"), body.get("cmd")
                if not isinstance(cmd, dict) or not isinstance(kind, str):
                    raise BadField("forward_command needs body.kind and body.cmd")
                # via: the forwarding handheld, the only one allowed to poll
                # GET /v1/commands/<id> for the locker's answer
                cid = store_command(self.store, self.cfg.outlet, kind, dumps(cmd), via=e.device)
            except ProtocolError as err:
                self.metrics["forward_refused"] += 1
                M.COMMANDS.labels("forward_refused").inc()
                emit("forward_refused", event=e.id, code=err.code, detail=err.detail)
                continue
            self.metrics["forwarded"] += 1
            emit("forwarded", event=e.id, command=cid, device=cmd.get("dev"))

    def reject(self, rejects: list[tuple[str, str, str, bytes]], topic: str, code: str, detail: str,
               payload: bytes) -> None:
        rejects.append((topic, code, detail, payload))
        self.metrics[f"rejected_{code}"] += 1
        M.REJECTED.labels(code).inc()
        emit("rejected", topic=topic, code=code, detail=detail)

    def side_channel(self, topic: str, payload: bytes) -> None:
        """Presence, retained state and command acks: not events, but the
        status page, device list and downstream relay live on them."""
        outlet, kind, device, channel = topics.parse(topic)
        now = time.time()
        if channel == "presence":
            if payload not in (b"online", b"offline"):
                raise BadField(f"presence must be online or offline, got {payload[:20]!r}")
            self.store.presence(device, outlet, kind, payload == b"online", now)
            M.DEVICES_ONLINE.set(sum(d["online"] for d in self.store.devices()))
            if payload == b"online":
                self._last_tick = 0.0  # deliver its waiting commands now
        elif channel == "state":
            if len(payload) > MAX_STATE:
                raise BadField(f"state document over {MAX_STATE} bytes")
            doc = loads_object(payload, "state")
            self.store.device_state(device, outlet, kind, json.dumps(doc), now)
        elif channel == "ack":
            if self.on_ack is not None:
                self.on_ack(device, loads_object(payload, "ack"))
        else:
            raise BadField(f"devices do not publish on {channel}")

    def run(self, until: float | None = None, stop_after: int | None = None) -> None:
        """Serve until stop(), ``until`` (monotonic) or ``stop_after`` events stored.

        paho's network thread owns the connection (reconnects with backoff,
        restores the persistent session); this thread owns SQLite: it takes
        whatever arrived within the group window, commits it in one
        transaction and only then acks it. An ack that lands on a newer
        connection is still right: a persistent session redelivers an
        unacked message under the same packet id.
        """
        b = self.cfg.broker
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.connect_async(b.host, b.port, keepalive=b.keepalive)
        self.client.loop_start()
        # "started" means subscribed: from here on the broker keeps every
        # device event for this session, whether or not we are connected.
        while not self.stopping and not self.subscribed.wait(0.1):
            pass
        emit("gateway_started", outlet=self.cfg.outlet, db=str(self.cfg.db),
             stored=self.store.count())
        try:
            while not self.stopping and (until is None or time.monotonic() < until):
                if time.monotonic() - self._last_tick >= 1.0 and self.subscribed.is_set():
                    self._last_tick = time.monotonic()
                    self.relay.tick()
                if time.monotonic() - self._last_budget >= self.budget.cfg.interval_s:
                    self._last_budget = time.monotonic()
                    done = self.budget.enforce(self.own.emit)
                    if done["evicted"] or done["freed_synced"] or done["threatened"]:
                        emit("budget", **done)
                # (a failed group waits in pending for its retry)
                if not self.pending and not self._collect(0.1):
                    continue
                window_end = time.monotonic() + self.cfg.group_window_s
                while len(self.pending) < self.cfg.group_max:
                    left = window_end - time.monotonic()
                    if left <= 0 or not self._collect(left):
                        break
                self.flush()
                if stop_after is not None and self.store.count() >= stop_after:
                    break
        finally:
            self.client.disconnect()
            self.client.loop_stop()
        emit("gateway_stopped", **dict(self.metrics))

    def stop(self) -> None:
        """Ask run() to finish its current group, disconnect and return."""
        self.stopping = True

    def close(self) -> None:
        self.store.close()
