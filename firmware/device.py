# What every MQTT device of the outlet shares, whatever it drives: the
# persistent event sequence, the flash outbox and its sender, presence with a
# Last Will, alarms and audit records, signed commands verified, executed at
# most once and acked, trusted time from the gateway, and the watchdog
# supervisor. The locker and the counter scanner are subclasses that add
# their own flows and `execute`.
#
# Time. A board's RTC forgets (a locker whose clock reset to 2000 accepted
# an expired courier badge and refused every fresh command as
# not_yet_valid), so the device does not trust it: it keeps an offset over
# its own clock, taken from the gateway's `time` messages (protocol/timesync.py),
# and until the first one arrives after a boot every time-based decision
# (badge expiry, command validity, overdue parcels) is refused with
# `time_not_synced`. See docs/protocol.md ("Trusted time").

import asyncio
import binascii
import json

from drivers.aio import sleep_ms
from firmware.devconfig import broker_tls, keyring
from firmware.mqtt.aclient import AsyncClient
from firmware.outbox import Outbox, OutboxFull
from firmware.sender import Sender
from protocol import envelope, presence, signing, timesync, topics
from protocol.errors import ProtocolError
from protocol.ids import SeqCounter, format_event_id


class FlowError(Exception):
    """A flow refused for a reason the person at the device is told."""

    def __init__(self, code, detail=""):
        super().__init__(code)
        self.code = code
        self.detail = detail


class _Refusal:
    """An ack error for a flow refusal (same shape as a ProtocolError)."""

    def __init__(self, code, detail):
        self.code = code
        self.detail = detail


class Device:
    def __init__(self, cfg, hal, kind, log=None):
        self.cfg = cfg
        self.hal = hal
        self.kind = kind
        self.clock = hal.clock
        self.log = log or (lambda evt, **kw: None)
        st = hal.storage(cfg["state_dir"])
        self.storage = st
        self.device = cfg["device"]
        self.outlet = cfg["outlet"]
        self.seq = SeqCounter(st)
        self.outbox = Outbox(cfg["state_dir"] + "/outbox", capacity=cfg.get("outbox_bytes", 64 * 1024))
        self.keys = keyring(cfg)  # this device's own key: no other device's commands verify
        self.guard = signing.ReplayGuard(cfg.get("replay_window", 64))
        self.alarms_active = {}
        self.beats = {}
        # Every event on the log too (stdout on the unix port): a host that
        # runs the firmware as a process, the simulator, follows ids from here.
        self.log_events = bool(cfg.get("log_events"))
        self.stats = {"events": 0, "commands": 0, "commands_refused": 0, "time_syncs": 0,
                      "time_refused": 0}
        self.t_evt = topics.build(self.outlet, kind, self.device, "evt")
        self.t_state = topics.build(self.outlet, kind, self.device, "state")
        self.t_presence = topics.build(self.outlet, kind, self.device, "presence")
        self.t_cmd = topics.build(self.outlet, kind, self.device, "cmd")
        self.t_ack = topics.build(self.outlet, kind, self.device, "ack")
        self.t_conf = topics.build(self.outlet, kind, self.device, "conf")
        self.t_time = topics.build(self.outlet, kind, self.device, "time")
        # "gateway": take time from the gateway (the default); "local": trust
        # the device's own clock (benches and rigs with no gateway, and the
        # simulator's virtual clock).
        self.time_source = cfg.get("time_source", "gateway")
        self.time_skew_s = cfg.get("time_skew_s", timesync.SKEW_S)
        self.time_wait_s = cfg.get("time_wait_s", 10)
        self._time_offset = None  # gateway time minus the device clock, once synced
        self._time_floor = 0  # now() never goes below what it has handed out
        self.time_steps = 0  # syncs that stepped the time (the first one included)
        self._synced_ev = asyncio.Event()
        if self.time_source != "gateway":
            self._synced_ev.set()
        b = cfg["broker"]
        self._cmds = []
        self._cmd_ev = asyncio.Event()
        self._send_ev = asyncio.Event()
        self._presence_tag = None  # set by _will at each CONNECT
        ctx, hostname = broker_tls(b)  # TLS when the config carries the outlet CA
        self.mqtt = AsyncClient(
            "pe-" + self.device, b["host"], b["port"], b["user"], b["password"],
            keepalive=cfg["keepalive"], timeout=b.get("timeout", 5.0), clean=False,
            will_topic=self.t_presence, will_msg=self._will, on_message=self._on_message,
            log=self.log, backoff_cap=b.get("backoff_cap", 1.0), ssl=ctx, server_hostname=hostname,
        )
        # confirm: events leave flash only when the gateway has committed them
        self.sender = Sender(self.outbox, self.mqtt, self._send_ev, lambda: self.beat("sender"),
                             confirm=cfg.get("confirm", True), clock=self.clock)
        self._floor_needs_time = False
        self._load_replay()

    async def execute(self, cmd):
        raise FlowError("unknown_op", cmd["op"])

    def _load_json(self, name, default):
        raw = self.storage.read(name)
        if not raw:
            return default
        try:
            return json.loads(raw)
        except Exception:
            self.log("state_corrupt", name=name)
            return default

    def _save_json(self, name, obj):
        self.storage.write(name, json.dumps(obj).encode())

    # The replay window on flash: "<crc32 hex> <json>". Forgetting it would
    # let an already-run command run again, so a window that is damaged, or
    # missing on a device that has booted before, is replaced by a floor
    # past every command that could have run (ReplayGuard.forget), and an
    # alarm says so (docs/security.md, "The replay floor").
    def _load_replay(self):
        raw = self.storage.read("replay")
        if not raw and self.seq.boot == 1 and not self.seq.corrupt:
            self._save_replay()  # a new device: from now on the file exists
            return
        why = "missing"
        if raw:
            try:
                if raw[:1] == b"{":
                    st = json.loads(raw)  # written before the checksum
                else:
                    body = raw[9:]
                    if raw[8:9] != b" " or int(raw[:8].decode(), 16) != binascii.crc32(body) & 0xFFFFFFFF:
                        raise ValueError("checksum")
                    st = json.loads(body)
                self.guard.restore(st)
                return
            except Exception:
                why = "damaged"
        self.guard.forget(self.now())
        # Before the gateway's time the device clock may be anything (an RTC
        # back at 2000): the floor is raised again from the first trusted
        # time (on_time). Commands wait for that sync anyway.
        self._floor_needs_time = self.time_source == "gateway" and not self._synced_ev.is_set()
        self._save_replay()
        self.log("state_corrupt", name="replay")
        self.alarm("replay_state_corrupt", reason=why, floor=self.guard.floor)

    def _save_replay(self):
        body = json.dumps(self.guard.state()).encode()
        self.storage.write("replay", ("%08x " % (binascii.crc32(body) & 0xFFFFFFFF)).encode() + body)


    # ---- time
    def now(self):
        """Unix seconds: the gateway's time once synced, else the device's
        own clock (what an event made before the first sync carries)."""
        raw = self.clock.time()
        off = self._time_offset
        if off is None:
            return raw
        t = raw + off
        if t < self._time_floor:
            return self._time_floor  # a small step back is waited out, not taken
        self._time_floor = t
        return t

    @property
    def synced(self):
        return self._synced_ev.is_set()

    def trusted_now(self):
        """now() for a decision that depends on the time; refused until synced."""
        if not self._synced_ev.is_set():
            raise FlowError("time_not_synced", "waiting for the gateway's time")
        return self.now()

    def on_time(self, t):
        """One time sample from the gateway (Unix seconds)."""
        if self.time_source != "gateway":
            return
        cur = self.now()
        first = self._time_offset is None
        self._time_offset = t - self.clock.time()
        self.stats["time_syncs"] += 1
        skew = t - cur
        if skew > self.time_skew_s or -skew > self.time_skew_s:
            # A step, backwards too: the device's clock (or the gateway's)
            # jumped. Taken at once, with an alarm; small differences are
            # only slewed by the floor in now().
            self._time_floor = t
            self.time_steps += 1
            self.alarm("clock_skew", device_t=cur, gateway_t=t, skew=skew)
        if self._floor_needs_time:
            self._floor_needs_time = False
            self.guard.forget(t)
            self._save_replay()
            self.log("replay_floor", floor=self.guard.floor)
        if first:
            self.time_steps += 1
            # Events made before this carry the device's own clock; the offset
            # lets the platform correct them (same boot, see their `boot`).
            self.audit("time_synced", offset=self._time_offset, skew=skew)
            self._synced_ev.set()
            self.log("time_synced", offset=self._time_offset, skew=skew)


    def next_event_id(self):
        return format_event_id(self.device, self.seq.incarnation, self.seq.next())

    def emit(self, etype, cls, body, eid=None):
        """Put an event into the outbox; custody and alarms hit flash at once."""
        eid = eid or self.next_event_id()
        env = envelope.make(eid, self.now(), etype, cls, body, boot=self.seq.boot)
        self.outbox.append(cls, self.t_evt, envelope.encode(env))
        if cls in envelope.NEVER_EVICT:
            self.outbox.flush()
        if self.log_events:
            self.log("event", id=eid, type=etype, cls=cls, body=body)
        self.stats["events"] += 1
        self._send_ev.set()
        self._after_outbox()
        return eid

    def _after_outbox(self):
        ob = self.outbox
        if ob.nearly_full and "outbox_nearly_full" not in self.alarms_active:
            self.alarms_active["outbox_nearly_full"] = self.now()
            self._alarm_record("outbox_nearly_full", {"used": ob.live_bytes, "capacity": ob.capacity})
        elif not ob.nearly_full:
            self.alarms_active.pop("outbox_nearly_full", None)
        if ob.alarm_pending:
            # Evicted telemetry, refused records or records lost to flash
            # corruption: say so upstream, with the counts.
            self._alarm_record("outbox_full", ob.take_alarm())

    def _alarm_record(self, kind, body):
        b = {"alarm": kind}
        for k in body:
            b[k] = body[k]
        try:
            eid = format_event_id(self.device, self.seq.incarnation, self.seq.next())
            env = envelope.make(eid, self.now(), self.kind + ".alarm", "alarm", b, boot=self.seq.boot)
            self.outbox.append("alarm", self.t_evt, envelope.encode(env))
            self.outbox.flush()
            if self.log_events:
                self.log("event", id=eid, type=self.kind + ".alarm", cls="alarm", body=b)
        except OutboxFull:
            self.log("alarm_lost_outbox_full", alarm=kind)
        self.log("alarm", **b)
        self.hal.indicator.signal("alarm")
        self._send_ev.set()

    def alarm(self, kind, **body):
        self._alarm_record(kind, body)

    def audit(self, what, **body):
        body["what"] = what
        try:
            return self.emit(self.kind + ".audit", "audit", body)
        except OutboxFull:
            self.log("audit_lost_outbox_full", what=what)

    # ---- door cycles (journaled)

    def _on_message(self, topic, payload, retained):
        if topic == self.t_time:
            try:
                self.on_time(timesync.decode(payload))
            except ProtocolError as e:
                self.stats["time_refused"] += 1
                self.log("time_bad", code=e.code, detail=e.detail)
            return
        if topic == self.t_conf:
            try:
                doc = json.loads(payload)
                self.sender.on_confirm(doc.get("stored") if isinstance(doc, dict) else None)
            except Exception as e:
                self.log("confirm_bad", error=repr(e))
            return
        if topic == self.t_cmd:
            if len(self._cmds) >= 32:
                self.stats["commands_refused"] += 1
                self.log("command_queue_full")
                return
            self._cmds.append(payload)
            self._cmd_ev.set()

    def _ack(self, cmd_id, error=None, result=None):
        try:
            self.outbox.append("audit", self.t_ack, signing.ack(cmd_id, self.now(), error, result))
            self.outbox.flush()
        except OutboxFull:
            self.log("ack_lost_outbox_full", id=cmd_id)
        self._send_ev.set()

    async def handle_command(self, payload):
        self.stats["commands"] += 1
        cmd_id = None
        try:
            probe = json.loads(payload)
            if isinstance(probe, dict) and isinstance(probe.get("id"), str):
                cmd_id = probe["id"][:32]
        except Exception:
            pass
        if not self._synced_ev.is_set():
            # iat, exp and the replay window all need the time: refused, not
            # run and not remembered, so the gateway sends it again later.
            self.stats["commands_refused"] += 1
            self.audit("command", id=cmd_id, result="time_not_synced")
            self._ack(cmd_id or "?", _Refusal("time_not_synced", "waiting for the gateway's time"))
            return "time_not_synced"
        try:
            cmd = signing.verify(payload, self.keys, self.device, self.now(), self.guard)
        except ProtocolError as e:
            self.stats["commands_refused"] += 1
            self.audit("command", id=cmd_id, result=e.code)
            self._ack(cmd_id or "?", e)
            return e.code
        # At most once: the replay window is on flash before anything runs.
        self._save_replay()
        try:
            result = await self.execute(cmd)
        except FlowError as e:
            self.audit("command", id=cmd["id"], op=cmd["op"], result=e.code)
            self._ack(cmd["id"], _Refusal(e.code, e.detail))
            return e.code
        self.audit("command", id=cmd["id"], op=cmd["op"], result="ok")
        self._ack(cmd["id"], None, result)
        return "ok"


    def beat(self, name):
        self.beats[name] = self.clock.ticks_ms()

    async def command_task(self):
        while True:
            self.beat("commands")
            if not self._cmds:
                self._cmd_ev.clear()
                try:
                    await asyncio.wait_for(self._cmd_ev.wait(), 1)
                except asyncio.TimeoutError:
                    pass
                continue
            # A command that arrives with the connection usually comes just
            # before the first time message: give the sync a moment.
            waited = 0
            while not self._synced_ev.is_set() and waited < self.time_wait_s:
                self.beat("commands")
                try:
                    await asyncio.wait_for(self._synced_ev.wait(), 1)
                except asyncio.TimeoutError:
                    waited += 1
            await self.handle_command(self._cmds.pop(0))

    async def sender_task(self):
        await self.sender.run()


    def _will(self):
        # Called by the client as it sends each CONNECT: the Will names the
        # connection it belongs to, and "online" below names the same one, so
        # a Will the broker publishes late for an older connection is told
        # apart from this one's (protocol/presence.py).
        self._presence_tag = presence.tag(self.seq.incarnation, self.seq.boot,
                                          self.mqtt.stats["connects"] + 1)
        return presence.encode(presence.OFFLINE, self._presence_tag)

    async def presence_task(self):
        announced = -1
        while True:
            await self.mqtt.connected.wait()
            n = self.mqtt.stats["connects"]
            if n != announced:
                # Every new connection is announced, even one that replaced
                # the last between two looks here. Subscribe first: the
                # gateway sends waiting commands as soon as it sees "online",
                # and the broker handles our packets in order.
                announced = n
                await self.mqtt.subscribe(self.t_cmd, 1)
                await self.mqtt.subscribe(self.t_conf, 0)
                if self.time_source == "gateway":
                    await self.mqtt.subscribe(self.t_time, 0)
                await self.mqtt.publish(self.t_presence,
                                        presence.encode(presence.ONLINE, self._presence_tag), 1,
                                        retain=True)
            await sleep_ms(200)

    async def supervisor_task(self, watchdog, tasks):
        """Feed the watchdog only while every task has beaten recently."""
        limit = max(5000, self.cfg.get("poll_ms", 500) * 10)
        while True:
            now = self.clock.ticks_ms()
            stale = [t for t in tasks if self.clock.ticks_diff(now, self.beats.get(t, now)) > limit]
            if not stale:
                watchdog.feed()
            else:
                self.log("watchdog_starved", tasks=stale)
            if watchdog.check():
                return
            await sleep_ms(1000)

    async def mem_task(self, every_ms):
        """Heap figures for benchmarks and field diagnostics (MicroPython only)."""
        import gc

        if not hasattr(gc, "mem_alloc"):
            return
        peak = 0
        n = 0
        while True:
            # Live bytes: mem_alloc() alone counts garbage not yet collected
            # and so reads as "the whole heap" under steady churn.
            gc.collect()
            a = gc.mem_alloc()
            if a > peak:
                peak = a
            n += 1
            if n % 20 == 1:
                self.log("mem", alloc=a, free=gc.mem_free(), peak=peak)
            await sleep_ms(every_ms)

    async def publish_state(self, doc):
        """The retained state document (the clerk's page and the gateway's
        device list read it); a failure is logged and retried next time."""
        try:
            await self.mqtt.publish(self.t_state, json.dumps(doc).encode(), 1, retain=True)
        except Exception as e:
            self.log("state_publish_failed", error=repr(e))

    async def halt(self):
        """Stop every task and drop the connection without a DISCONNECT, as
        a power cut does (the broker publishes the Last Will). For hosts
        that run devices in-process: the simulator's power switch."""
        for t in getattr(self, "tasks", ()):
            t.cancel()
        for t in self.sender.batch_tasks:
            t.cancel()
        await self.mqtt.abort()
