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
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from common.clock import now as clock_now
from common.clock import simulated as simulated_clock
from common.logs import get, recorder
from gateway import metrics as M
from gateway.broker import read_acl
from gateway.config import GatewayConfig
from gateway.ingest.checks import Offenders, Reject, SeqTracker, validate
from gateway.ingest.quarantine import DeviceKey, Hold, Quarantine
from gateway.ingest.relay import Relay, store_command
from gateway.ingest.schedule import Schedule
from gateway.ingest.timebeacon import TimeBeacon
from gateway.store.budget import Budget
from gateway.store.events import EventStore, StoredEvent, is_storage_error
from gateway.store.own_events import OwnEvents
from protocol import confirm, presence, timesync, topics
from protocol.canonical import dumps, loads_object
from protocol.errors import BadField, ProtocolError

MAX_STATE = 16 * 1024
LOG_IDS = 20  # event ids named per log line; the counts cover the rest
FORWARD_TYPE = "handheld.forward_command"
# Commands waiting for devices are looked at this often (and at once when a
# device comes online).
RELAY_TICK_S = 1.0
# The channels devices publish on (the gateway publishes the others).
DEVICE_CHANNELS = ("evt", "presence", "state", "ack")
EXIT_STORE_DAMAGED = 75  # EX_TEMPFAIL: restart me; the start moves the damaged file aside

log = get(__name__)
record = recorder(__name__)


@dataclass
class CrashPoints:
    """Crash points for fault tests; all off in production."""

    hold_before_commit_s: float = 0.0
    exit_before_ack: bool = False


class Ingest:
    def __init__(self, cfg: GatewayConfig, faults: CrashPoints | None = None) -> None:
        self.cfg = cfg
        self.faults = faults or CrashPoints()
        self.store, self.damaged = EventStore.open_checked(cfg.db)
        self.metrics: Counter[str] = Counter()
        self.offenders = Offenders()
        q = cfg.quarantine
        self.quarantine = Quarantine(q.min_refused, q.window_s, q.first_s, q.max_s, q.forgive_s)
        # Devices the gateway knows (devices table, then every topic seen):
        # while a device is held the gateway subscribes to these one by one.
        self.known: set[DeviceKey] = {DeviceKey(d["outlet"], d["kind"], d["device"])
                                      for d in self.store.devices() if d["outlet"] == cfg.outlet}
        self._acl_stamp: tuple[float, int] | None = None
        self._subs: set[str] = set()
        self._subs_lock = threading.Lock()
        self.quarantine_dropped = 0  # counted by paho's thread only
        self._store_errors_in_row = 0
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
        self.budget = Budget(self.store, cfg.budget)
        self.on_ack: Any = self.relay.on_ack
        # The devices' trusted time (docs/protocol.md, "Trusted time"): every
        # PERIOD_S, and at once when a device comes online. Before the relay,
        # so a device hears the time before the commands waiting for it.
        self.time = TimeBeacon(self.store, cfg.outlet,
                               lambda topic, payload: self.client.publish(topic, payload, qos=0))
        self.schedule = Schedule(self._guard)
        self.schedule.every("time", timesync.PERIOD_S, self.time.tick,
                            ready=lambda: self.connected)
        self.schedule.every("relay", RELAY_TICK_S, self.relay.tick,
                            ready=lambda: self.subscribed.is_set())
        # the gateway's own broker link, for the page (gateway/http/status.py)
        self._link: tuple[bool, float] = (False, clock_now())
        self._link_written: tuple[bool, float] | None = None
        self.schedule.every("link", 1.0, self._write_link)
        self.schedule.every("quarantine", 1.0, self._release_due,
                            ready=lambda: bool(self.quarantine.held))
        self.schedule.every("budget", cfg.budget.interval_s, lambda: self.budget.enforce(self.own.emit),
                            then=self._budget_done)
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
        if b.ca_file:  # TLS, verifying the outlet CA (and the host name)
            ctx = ssl.create_default_context(cafile=b.ca_file)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self.client.tls_set_context(ctx)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.subscribed = threading.Event()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            record("broker_refused", reason=str(rc))
            return
        self.connected = True
        self._link = (True, clock_now())
        self._subscribe(reconnected=True)
        record("connected", session_present=bool(flags.session_present))

    def _wanted(self) -> set[str]:
        """The filters the gateway should hold: the outlet-wide wildcards, or,
        while a device is held, one set per known device but the held ones."""
        outlet = self.cfg.outlet
        if not self.quarantine.held:
            return {topics.subscription(outlet, ch) for ch in DEVICE_CHANNELS}
        return {topics.subscription(outlet, ch, k.kind, k.device)
                for k in self._devices() if not self.quarantine.is_held(k)
                for ch in DEVICE_CHANNELS}

    def _devices(self) -> tuple[DeviceKey, ...]:
        """The outlet's devices: every device login in the broker's ACL
        (re-read when it changes) and every device heard from."""
        path = self.cfg.broker.acl_file
        if path:
            try:
                st = os.stat(path)
                stamp = (st.st_mtime, st.st_size)
                if stamp != self._acl_stamp:
                    text = Path(path).read_text(encoding="utf-8")
                    self.known.update(DeviceKey(outlet, kind, user)
                                      for user, (kind, outlet) in read_acl(text).items()
                                      if kind != "gateway" and topics.valid_segment(kind)
                                      and topics.valid_segment(user))
                    self._acl_stamp = stamp
            except OSError as e:
                log.warning("broker ACL %s unreadable: %r", path, e)
        return tuple(k for k in tuple(self.known) if k.outlet == self.cfg.outlet)

    def _subscribe(self, reconnected: bool = False) -> None:
        """Bring the broker session's filters to what is wanted: new ones
        first, so no message falls between an unsubscribe and a subscribe
        (an overlap only delivers a copy, which the event id drops). After a
        connect the session's filters are unknown (a session left by a
        gateway that stopped while a device was held, or a broker that lost
        it), so everything wanted is asked for and everything else dropped."""
        with self._subs_lock:
            want = self._wanted()
            if reconnected:
                every = {topics.subscription(self.cfg.outlet, ch) for ch in DEVICE_CHANNELS}
                every |= {topics.subscription(k.outlet, ch, k.kind, k.device)
                          for k in self._devices() for ch in DEVICE_CHANNELS}
                add, drop = want, every - want
            else:
                add, drop = want - self._subs, self._subs - want
            if add:
                self.client.subscribe([(t, 1) for t in sorted(add)])
            if drop:
                self.client.unsubscribe(sorted(drop))
            self._subs = want

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      props: Any = None) -> None:
        if all(not rc.is_failure for rc in reason_codes):
            self.subscribed.set()
        else:
            record("subscribe_refused", reasons=[str(rc) for rc in reason_codes])

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        self.connected = False
        self._link = (False, clock_now())
        record("disconnected", reason=str(rc))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.quarantine.held and self._held(msg):
            # Queued at the broker before the hold began: dropped unread and
            # acked; the device keeps its events until confirmed.
            if msg.qos:
                client.ack(msg.mid, msg.qos)
            self.quarantine_dropped += 1
            M.QUARANTINE_DROPPED.inc()
            return
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

    def _held(self, msg: mqtt.MQTTMessage) -> bool:
        try:
            return self.quarantine.is_held(DeviceKey(*self._topic(msg.topic)[:3]))
        except Exception:  # an unparsable topic is refused by the ingest thread
            return False

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
        """Validate, commit and then ack everything pending, as one group.

        Each message is handled in isolation: whatever its content does
        (a protocol error, an integer SQLite cannot bind, a type the code did
        not expect) refuses that message alone, with a reason, and the others
        commit. Only a storage fault (full disk, I/O error, a locked or
        damaged file) holds the whole group back, unacked, for a retry."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            stored, rejects = self._commit_group(batch)
        except Exception as e:  # storage faults, and any bug the isolation missed
            self.pending = batch + self.pending
            self._store_failed(e)
            return
        self._store_errors_in_row = 0
        try:
            self._account(batch, stored, rejects)
        except Exception as e:  # bookkeeping must never cost the ack
            self.metrics["ingest_errors"] += 1
            log.exception("ingest bookkeeping failed: %r", e)
        self._guard("quarantine", lambda: self._watch_floods(batch, rejects))
        if self.faults.exit_before_ack:
            record("exiting_before_ack")
            os._exit(3)
        for msg in batch:
            self.client.ack(msg.mid, msg.qos)
        self._confirm(stored)

    def _store_failed(self, e: BaseException) -> None:
        # Disk full, database locked, I/O error: nothing is acked, so
        # nothing is lost. Keep the group, back off, try again; the
        # gateway never exits over it.
        self.metrics["store_errors"] += 1
        self._store_errors_in_row += 1
        M.STORE_ERRORS.inc()
        if not is_storage_error(e):
            log.error("group commit failed outside message isolation", exc_info=e)
        record("store_failed", error=str(e)[:300], waiting=len(self.pending))
        if type(e) is sqlite3.DatabaseError and self._damaged_now():
            # A file damaged under a running gateway: nothing of this group is
            # acked, so exiting loses nothing. The service restarts it
            # (Restart=always) and the start moves the file aside with an alarm.
            record("store_damaged_exit", error=str(e)[:300])
            self.client.disconnect()
            os._exit(EXIT_STORE_DAMAGED)
        time.sleep(min(5.0, 0.5 * min(10, self._store_errors_in_row)))

    def _damaged_now(self) -> bool:
        try:
            return self.store.db.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok"
        except sqlite3.DatabaseError:
            return True

    def _classify(self, batch: list[mqtt.MQTTMessage]) -> tuple[
            list[StoredEvent], list[tuple[str, bytes]], list[Reject], set[tuple[str, str, str]]]:
        """Validate every message without touching the store: events,
        side-channel messages, refusals, and the devices whose last message
        in the group was a valid event (alive, whatever presence said
        before it: side channels are applied first, so arrival order is
        kept here)."""
        events: list[StoredEvent] = []
        sides: list[tuple[str, bytes]] = []
        rejects: list[Reject] = []
        alive: set[tuple[str, str, str]] = set()
        for msg in batch:
            topic = "?"
            try:
                topic = msg.topic
                parsed = self._topic(topic)
                if parsed[3] == "evt":
                    events.append(validate(topic, msg.payload, parsed))
                    alive.add(parsed[:3])
                else:
                    sides.append((topic, msg.payload))
                    if parsed[3] == "presence":
                        alive.discard(parsed[:3])
            except ProtocolError as e:
                rejects.append(Reject(topic, e.code, e.detail, msg.payload))
            except UnicodeDecodeError:
                rejects.append(Reject(repr(msg._topic)[:200], "unknown_topic", "topic is not UTF-8",
                                      msg.payload))
            except Exception as e:
                rejects.append(self._internal(topic, e, msg.payload))
        return events, sides, rejects, alive

    def _internal(self, topic: str, e: BaseException, payload: bytes) -> Reject:
        log.warning("message on %s refused after an unexpected %s", topic, type(e).__name__, exc_info=e)
        return Reject(topic, "unprocessable", f"{type(e).__name__}: {e}"[:300], payload)

    def _commit_group(self, batch: list[mqtt.MQTTMessage]) -> tuple[
            list[tuple[StoredEvent, bool]], list[Reject]]:
        """One transaction for the group. Events go in with one multi-row
        insert; should that fail on a message's content, the group is done
        again one event per savepoint so only the culprit is refused."""
        events, sides, rejects, alive = self._classify(batch)
        if self.faults.hold_before_commit_s:
            record("holding", n=len(batch), ids=[e.id for e in events[:LOG_IDS]])
            time.sleep(self.faults.hold_before_commit_s)
        self.seq.prime(self.store, events)
        for isolate in (False, True):
            out_rejects = list(rejects)
            try:
                with self.store.tx():
                    # Side channels first: few messages, and the gateway's own
                    # events they cause (command outcomes) keep their place
                    # before the group's device events upstream.
                    for topic, payload in sides:
                        try:
                            with self.store.tx():  # a savepoint: this message alone
                                self.side_channel(topic, payload)
                        except ProtocolError as e:
                            out_rejects.append(Reject(topic, e.code, e.detail, payload))
                        except Exception as e:
                            if is_storage_error(e):
                                raise
                            out_rejects.append(self._internal(topic, e, payload))
                    stored = self._insert(events, out_rejects, isolate)
                    self.store.insert_rejects(out_rejects)
                    self._proof_of_life(alive)
                return stored, out_rejects
            except Exception as e:
                if isolate or is_storage_error(e):
                    raise
                log.warning("group insert failed (%r); isolating its events", e)
        raise AssertionError("unreachable")

    def _insert(self, events: list[StoredEvent], rejects: list[Reject], isolate: bool
                ) -> list[tuple[StoredEvent, bool]]:
        if not isolate:
            fresh = self.store.commit_events(events, (), self._forward)
            return list(zip(events, fresh, strict=True))
        stored: list[tuple[StoredEvent, bool]] = []
        for e in events:
            try:
                with self.store.tx():
                    stored.append((e, self.store.commit_events([e], (), self._forward)[0]))
            except Exception as err:
                if is_storage_error(err):
                    raise
                rejects.append(self._internal(topics.build(e.outlet, e.kind, e.device, "evt"), err,
                                              e.payload))
        return stored

    def _account(self, batch: list[mqtt.MQTTMessage], stored: list[tuple[StoredEvent, bool]],
                 rejects: list[Reject]) -> None:
        """Metrics and log lines for a committed group; misbehaving devices."""
        inserted = sum(1 for _, new in stored if new)
        dups = len(stored) - inserted
        self.metrics["received"] += len(batch)
        self.metrics["stored"] += inserted
        self.metrics["duplicates"] += dups
        self.metrics["group_commits"] += 1
        M.GROUP_COMMITS.inc()
        M.DUPLICATES.inc(dups)
        by_cls: Counter[str] = Counter()
        for e, new in stored:
            if new:
                by_cls[e.cls] += 1
                order = self.seq.observe(e.device, e.inc, e.seq)
                if order:
                    self.metrics[f"seq_{order}s"] += 1
                    M.SEQ_ANOMALIES.labels(order).inc()
        for cls, n in by_cls.items():
            M.INGESTED.labels(cls).inc(n)
        for r in rejects:
            self.metrics[f"rejected_{r.code}"] += 1
            M.REJECTED.labels(r.code).inc()
            record("rejected", topic=r.topic, code=r.code, detail=r.detail)
            self.offenders.note(r.topic, r.code, self.own.emit)
        record("committed", n=len(batch), stored=inserted, duplicates=dups,
             ids=[e.id for e, _ in stored[:LOG_IDS]])

    def _watch_floods(self, batch: list[mqtt.MQTTMessage], rejects: list[Reject]) -> None:
        """Count the group's messages and refusals per device; hold a device
        that floods refusals (gateway/ingest/quarantine.py)."""
        counts: dict[DeviceKey, list[int]] = {}
        for msg in batch:
            try:
                key = DeviceKey(*self._topic(msg.topic)[:3])
            except Exception:
                continue
            counts.setdefault(key, [0, 0])[0] += 1
        for r in rejects:
            try:
                key = DeviceKey(*self._topic(r.topic)[:3])
            except Exception:
                continue
            if key in counts:
                counts[key][1] += 1
        if not counts:
            return
        self.known.update(counts)
        newly = self.quarantine.observe({k: (n, bad) for k, (n, bad) in counts.items()})
        if newly:
            self._subscribe()
            M.QUARANTINED.set(len(self.quarantine.held))
            for key, hold, refused in newly:
                self._hold_alarm(key, hold, refused)

    def _hold_alarm(self, key: DeviceKey, hold: Hold, refused: int) -> None:
        for_s = round(hold.seconds)
        M.QUARANTINES.inc()
        self.metrics["quarantines"] += 1
        record("device_quarantined", device=key.device, kind=key.kind, refused=refused, for_s=for_s,
               strikes=hold.strikes)
        self._guard("quarantine_alarm", lambda: self.own.emit(
            "gateway.device_quarantined",
            {"alarm": "device_quarantined", "device": key.device, "kind": key.kind, "refused": refused,
             "window_ms": round(self.quarantine.window_s * 1000), "for_s": for_s,
             "strikes": hold.strikes},
            cls="alarm"))

    def _write_link(self) -> None:
        """Keep ``broker_link`` in the store when it changed: the page tells
        the gateway's own broker trouble from its devices' silence."""
        link = self._link
        if link != self._link_written:
            with self.store.tx():
                self.store.put("broker_link", json.dumps({"up": link[0], "since": link[1]}))
            self._link_written = link

    def _release_due(self) -> None:
        done = self.quarantine.release_due()
        if not done:
            return
        self._subscribe()
        M.QUARANTINED.set(len(self.quarantine.held))
        for key in done:
            record("device_released", device=key.device, kind=key.kind)

    def _confirm(self, stored: list[tuple[StoredEvent, bool]]) -> None:
        """Tell each device which of its events are now on disk (new ones and
        copies already held alike), so it can delete them from its flash.
        QoS 0: a lost confirmation only means the device sends the event
        again later and is confirmed then."""
        per_device: dict[tuple[str, str, str], dict[str, list[int]]] = {}
        for e, _ in stored:
            if e.kind == "gateway":
                continue
            per_device.setdefault((e.outlet, e.kind, e.device), {}).setdefault(e.inc, []).append(e.seq)
        for (outlet, kind, device), incs in per_device.items():
            try:
                self.client.publish(topics.build(outlet, kind, device, "conf"), confirm.encode(incs), qos=0)
                self.metrics["confirmations"] += 1
            except Exception as e:  # the device re-sends; never let this cost the loop
                log.warning("confirmation to %s failed: %r", device, e)

    def _forward(self, fresh: list[StoredEvent]) -> None:
        """Queue the permits handhelds forward (protocol/permits.py: deposit
        and retrieval at one locker, signed with that locker's own key): in
        the transaction that stores their event, so the permit is queued
        exactly when the event is. The gateway holds no keys, so it checks
        the shape only: a locker permit op (never ``open``, ``config``,
        ``credential`` or any other command), issued to the handheld that
        forwards it, short-lived. The locker checks the signature."""
        for e in fresh:
            if e.type != FORWARD_TYPE or e.kind != "handheld":
                continue
            try:
                body = loads_object(e.payload, "event")["body"]
                kind, cmd = body.get("kind"), body.get("cmd")
                if not isinstance(cmd, dict) or not isinstance(kind, str):
                    raise BadField("forward_command needs body.kind and body.cmd")
                # via: the forwarding handheld, the only one allowed to poll
                # GET /v1/commands/<id> for the locker's answer; store_command
                # refuses anything but a permit issued to it (not_a_permit)
                cid = store_command(self.store, self.cfg.outlet, kind, dumps(cmd), via=e.device)
            except Exception as err:
                # The event itself is kept (it is the handheld's record of
                # what it did); only the command it carries is refused.
                if is_storage_error(err):
                    raise
                code = err.code if isinstance(err, ProtocolError) else "unprocessable"
                detail = err.detail if isinstance(err, ProtocolError) else repr(err)[:300]
                self.metrics["forward_refused"] += 1
                M.COMMANDS.labels("forward_refused").inc()
                record("forward_refused", event=e.id, code=code, detail=detail)
                continue
            self.metrics["forwarded"] += 1
            record("forwarded", event=e.id, command=cid, device=cmd.get("dev"))

    def _proof_of_life(self, alive: set[tuple[str, str, str]]) -> None:
        """Any event is proof that its device is connected: a device whose
        presence says offline (a Will that won a race, a retained message
        from before a broker restart) is online again when its events
        arrive after that presence message."""
        now = clock_now()
        revived = [d for d in sorted(alive) if self.store.proof_of_life(d[2], d[0], d[1], now)]
        for _, _, device in revived:
            self.metrics["presence_revived"] += 1
            record("presence_revived", device=device)
        if revived:
            M.DEVICES_ONLINE.set(sum(d["online"] for d in self.store.devices()))

    def side_channel(self, topic: str, payload: bytes) -> None:
        """Presence, retained state and command acks: not events, but the
        status page, device list and downstream relay live on them."""
        outlet, kind, device, channel = topics.parse(topic)
        now = clock_now()
        if channel == "presence":
            online, tag = presence.decode(payload)
            if not self.store.presence(device, outlet, kind, online, now, tag):
                # A late Will of an older connection (protocol/presence.py).
                self.metrics["presence_stale"] += 1
                record("presence_stale", device=device, tag=tag)
                return
            M.DEVICES_ONLINE.set(sum(d["online"] for d in self.store.devices()))
            if online:
                self.schedule.due_now("time")  # the time first: commands need it
                self.schedule.due_now("relay")  # deliver its waiting commands now
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
        record("gateway_started", outlet=self.cfg.outlet, db=str(self.cfg.db),
               stored=self.store.count(), clock="simulated" if simulated_clock() else "wall")
        if self.damaged is not None:
            self._guard("store_damaged", lambda: self.own.emit(
                "gateway.store_damaged", {"alarm": "store_damaged", "moved_to": self.damaged.name},
                cls="alarm"))
            record("store_damaged", moved_to=str(self.damaged))
        try:
            while not self.stopping and (until is None or time.monotonic() < until):
                self.schedule.run_due()
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
        record("gateway_stopped", **dict(self.metrics), quarantine_dropped=self.quarantine_dropped)

    @staticmethod
    def _budget_done(done: dict[str, Any]) -> None:
        if done["evicted"] or done["freed_synced"] or done["threatened"]:
            record("budget", **done)

    def _guard(self, where: str, step: Callable[[], Any]) -> Any:
        """Run one periodic step (relay, budget, an alarm); a fault in it is
        logged and counted, and the step runs again on its next turn. The
        gateway never exits over a full disk or a bad row."""
        try:
            return step()
        except Exception as e:
            self.metrics[f"fault_{where}"] += 1
            M.GATEWAY_FAULTS.labels(where).inc()
            if is_storage_error(e):
                record("step_failed", step=where, error=str(e)[:300])
            else:
                log.error("%s step failed", where, exc_info=e)
                record("step_failed", step=where, error=repr(e)[:300])
            return None

    def stop(self) -> None:
        """Ask run() to finish its current group, disconnect and return."""
        self.stopping = True

    def close(self) -> None:
        self.store.close()
