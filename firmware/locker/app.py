# The locker application: parcel flows, signed commands, alarms, recovery.
#
# Everything that must survive a power cut goes through flash before it is
# acted on: the door-cycle journal before a lock opens, the replay window
# before a command runs, custody events into the outbox before the state
# they describe is reported. The same code runs on a board, on the unix port
# and (for the simulator) on CPython; hardware comes from the HAL and the
# lock board from a driver.

import asyncio
import json

from firmware.aio import sleep_ms
from firmware.locker import codes as C
from firmware.locker import compartments as K
from firmware.locker.config import secret_keys
from firmware.locker.journal import Journal
from firmware.locker.sender import Sender
from firmware.mqtt.aclient import AsyncClient
from firmware.outbox import Outbox, OutboxFull
from firmware.protocol import barcodes, envelope, signing, topics
from firmware.protocol.errors import InvalidBarcode, ProtocolError
from firmware.protocol.ids import SeqCounter, format_event_id

DAY = 86400
RUNTIME_KEYS = ("door_open_alarm_s", "pickup_days", "lockout_budget", "lockout_base_s")



class FlowError(Exception):
    """A flow refused for a reason the person at the locker is told."""

    def __init__(self, code, detail=""):
        super().__init__(code)
        self.code = code
        self.detail = detail


class Locker:
    def __init__(self, cfg, hal, board, log=None):
        self.cfg = cfg
        self.hal = hal
        self.board = board
        self.clock = hal.clock
        self.log = log or (lambda evt, **kw: None)
        # The panel shows what the person at the locker should do next.
        self.display = lambda code, detail="": None
        st = hal.storage(cfg["state_dir"])
        self.storage = st
        self.device = cfg["device"]
        self.outlet = cfg["outlet"]
        self._load_overrides()
        self.seq = SeqCounter(st)
        self.comps = K.Compartments(st, cfg["compartments"])
        self.journal = Journal(st)
        self.outbox = Outbox(cfg["state_dir"] + "/outbox", capacity=cfg.get("outbox_bytes", 64 * 1024))
        self.keys = secret_keys(cfg)
        self.guard = signing.ReplayGuard(cfg.get("replay_window", 64))
        self.guard.restore(self._load_json("replay", {}))
        self.lockout = C.Lockout(self.cfg["lockout_budget"], self.cfg["lockout_base_s"],
                                 self.cfg["lockout_max_s"])
        self.lockout.restore(self._load_json("lockout", {}))
        self.couriers = self._load_json("couriers", {})
        self.codes = self._load_json("codes", {})
        self.session = None
        self.expected_open = {}
        self.active = {}
        self.alarms_active = {}
        self._forced = {}
        self._board_fault = False
        self._refused = 0
        self.beats = {}
        self.stats = {"events": 0, "commands": 0, "commands_refused": 0, "board_errors": 0}
        self.t_evt = topics.build(self.outlet, "locker", self.device, "evt")
        self.t_state = topics.build(self.outlet, "locker", self.device, "state")
        self.t_presence = topics.build(self.outlet, "locker", self.device, "presence")
        self.t_cmd = topics.build(self.outlet, "locker", self.device, "cmd")
        self.t_ack = topics.build(self.outlet, "locker", self.device, "ack")
        b = cfg["broker"]
        self._cmds = []
        self._cmd_ev = asyncio.Event()
        self._send_ev = asyncio.Event()
        self.mqtt = AsyncClient(
            "pe-" + self.device, b["host"], b["port"], b["user"], b["password"],
            keepalive=cfg["keepalive"], timeout=b.get("timeout", 5.0), clean=False,
            will_topic=self.t_presence, will_msg=b"offline", on_message=self._on_message,
            log=self.log, backoff_cap=b.get("backoff_cap", 1.0),
        )
        self._state_dirty = True
        self.sender = Sender(self.outbox, self.mqtt, self._send_ev, lambda: self.beat("sender"))

    # ---- persistence helpers
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

    def _load_overrides(self):
        o = self._load_json("overrides", {})
        for k in RUNTIME_KEYS:
            if k in o:
                self.cfg[k] = o[k]

    def now(self):
        return self.clock.time()

    # ---- events
    def next_event_id(self):
        return format_event_id(self.device, self.seq.incarnation, self.seq.next())

    def emit(self, etype, cls, body, eid=None):
        """Put an event into the outbox; custody and alarms hit flash at once."""
        eid = eid or self.next_event_id()
        env = envelope.make(eid, self.now(), etype, cls, body, boot=self.seq.boot)
        self.outbox.append(cls, self.t_evt, envelope.encode(env))
        if cls in envelope.NEVER_EVICT:
            self.outbox.flush()
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
            env = envelope.make(eid, self.now(), "locker.alarm", "alarm", b, boot=self.seq.boot)
            self.outbox.append("alarm", self.t_evt, envelope.encode(env))
            self.outbox.flush()
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
            return self.emit("locker.audit", "audit", body)
        except OutboxFull:
            self.log("audit_lost_outbox_full", what=what)

    # ---- door cycles (journaled)
    async def door_cycle(self, c, action, info):
        cid = c["id"]
        if cid in self.active:
            raise FlowError("busy", "compartment %d is in use" % cid)
        self.active[cid] = action
        try:
            self.journal.write({"cid": cid, "action": action, "step": "opening", "info": info,
                                "t": self.now()})
            self.expected_open[cid] = self.now()
            try:
                await self.board.open(c)
            except Exception as e:
                self.journal.clear()
                self.expected_open.pop(cid, None)
                self.stats["board_errors"] += 1
                self.alarm("lock_board_fault", compartment=cid, code=getattr(e, "code", "error"),
                           detail=str(e))
                raise FlowError("door_fault", str(e))
            self.journal.write({"cid": cid, "action": action, "step": "open", "info": info,
                                "t": self.now()})
            self.emit("locker.door", "status", {"compartment": cid, "door": "open", "action": action})
            self.hal.indicator.signal("door_open")
            if action in ("pickup", "deposit", "return", "retrieve"):
                self.display("door_open_" + action, str(cid))
            await self.wait_closed(c)
            self.close_cycle(cid, action, info)
        finally:
            self.active.pop(cid, None)

    async def wait_closed(self, c):
        cid = c["id"]
        opened = self.clock.ticks_ms()
        alarmed = False
        while True:
            self.beat("door")
            try:
                st = await self.board.status(c)
                if not st["open"]:
                    return st
            except Exception as e:
                self.stats["board_errors"] += 1
                self.log("board_status_failed", compartment=cid, error=str(e))
            if not alarmed and self.clock.ticks_diff(self.clock.ticks_ms(), opened) > \
                    self.cfg["door_open_alarm_s"] * 1000:
                alarmed = True
                self.alarm("door_left_open", compartment=cid)
            await sleep_ms(self.cfg["poll_ms"])

    def close_cycle(self, cid, action, info, occupied=None):
        """Fix the outcome and its event id in the journal, then apply it."""
        entry = {"cid": cid, "action": action, "step": "closing", "info": info,
                 "eid": self.next_event_id(), "t": self.now()}
        if action == "deposit" and "code_hash" not in info:
            pre = self.codes.get(info["parcel"])
            if pre is not None:
                entry["code"] = {"salt": pre["salt"], "hash": pre["hash"], "by": "platform"}
            else:
                code = C.new_code(self.hal.urandom)
                salt = C.new_salt(self.hal.urandom)
                entry["code"] = {"salt": salt, "hash": C.salted_hash(salt, code), "by": "locker",
                                 "plain": code}
        if occupied is not None:
            entry["occupied"] = occupied
        self.journal.write(entry)
        self.apply_closing(entry)

    def apply_closing(self, entry):
        """Idempotent: replaying a 'closing' entry re-sends the same event id."""
        cid = entry["cid"]
        action = entry["action"]
        info = entry["info"]
        now = entry["t"]
        body = {"compartment": cid}
        if action == "deposit":
            code = entry["code"]
            self.comps.set(cid, K.OCCUPIED, parcel=info["parcel"], salt=code["salt"],
                           hash=code["hash"], deposited=now, courier=info.get("courier"),
                           expires=now + self.cfg["pickup_days"] * DAY, code_by=code["by"])
            body["parcel"] = info["parcel"]
            body["courier"] = info.get("courier")
            body["expires"] = now + self.cfg["pickup_days"] * DAY
            body["code_by"] = code["by"]
            if info.get("cmd"):
                body["permit"] = info["cmd"]  # deposited under a platform-signed permit
            if "plain" in code:
                # Issued offline: the platform needs it to notify the recipient.
                body["code"] = code["plain"]
            etype = "locker.deposit"
        elif action == "pickup":
            c = self.comps.get(cid)
            body["parcel"] = c.get("parcel")
            if entry.get("occupied"):
                etype = "locker.pickup_unconfirmed"
                self.comps.set(cid, K.INSPECT)
            else:
                self.comps.set(cid, K.FREE)
                self.codes.pop(body["parcel"], None)
                etype = "locker.pickup"
        elif action == "retrieve":
            c = self.comps.get(cid)
            body["parcel"] = c.get("parcel")
            body["courier"] = info.get("courier")
            body["reason"] = c["state"]
            self.comps.set(cid, K.FREE)
            etype = "locker.retrieve"
        elif action == "return":
            self.comps.set(cid, K.RETURN_WAITING, parcel=info["parcel"], deposited=now)
            self.codes.pop(info["parcel"], None)
            body["parcel"] = info["parcel"]
            etype = "locker.return_dropoff"
        elif action == "abort":
            self.comps.set(cid, info.get("back_to", K.FREE))
            body["parcel"] = info.get("parcel")
            etype = "locker.deposit_aborted"
        elif action == "inspect":
            self.comps.set(cid, K.INSPECT)
            body["parcel"] = info.get("parcel")
            body["reason"] = info.get("reason")
            etype = "locker.inspect_needed"
        else:  # remote open: the compartment keeps its state
            body["cmd"] = info.get("cmd")
            etype = "locker.remote_open"
        self._save_json("codes", self.codes)
        self.comps.save()
        try:
            self.emit(etype, "custody", body, eid=entry["eid"])
        except OutboxFull:
            # Refused before the door opened whenever possible; if it happens
            # here the journal keeps the entry and boot replays it.
            self.log("custody_event_waiting_for_room", eid=entry["eid"])
            self.alarm("outbox_full", waiting=entry["eid"])
            return
        self.journal.clear()
        self.expected_open.pop(cid, None)
        self._state_dirty = True

    async def recover(self):
        """Resolve a door cycle that a power cut interrupted."""
        entry = self.journal.read()
        if entry is None:
            return None
        step = entry.get("step")
        if step == "corrupt" or "cid" not in entry or entry["cid"] not in self.comps.by_id:
            self.journal.clear()
            self.alarm("journal_corrupt")
            return "corrupt"
        cid = entry["cid"]
        action = entry["action"]
        info = entry.get("info", {})
        if step == "closing":
            self.apply_closing(entry)
            return "replayed"
        c = self.comps.get(cid)
        try:
            st = await self.board.status(c)
        except Exception as e:
            self.close_cycle(cid, "inspect", {"parcel": info.get("parcel"), "reason": "board:" + str(e)})
            self.alarm("recovered_inconsistent", compartment=cid)
            return "inspect"
        occ = st.get("occupied")
        if st["open"]:
            # The door is still open: carry on with the cycle where it was.
            self.expected_open[cid] = self.now()
            self.journal.write({"cid": cid, "action": action, "step": "open", "info": info,
                                "t": self.now()})
            self.active[cid] = action
            try:
                await self.wait_closed(c)
                self.close_cycle(cid, action, info)
            finally:
                self.active.pop(cid, None)
            return "resumed"
        if step == "open":
            # Verified open before the cut and closed now: the cycle happened.
            self.close_cycle(cid, action, info, occupied=occ if action == "pickup" else None)
            return "completed"
        # step == "opening": the lock may or may not have opened.
        if occ is None:
            self.close_cycle(cid, "inspect", {"parcel": info.get("parcel"), "reason": "power_cut"})
            self.alarm("recovered_inconsistent", compartment=cid)
            return "inspect"
        if action == "deposit":
            if occ:
                self.close_cycle(cid, "deposit", info)
                return "completed"
            self.close_cycle(cid, "abort", {"parcel": info.get("parcel"),
                                            "back_to": info.get("back_to", K.FREE)})
            return "aborted"
        if action in ("pickup", "retrieve"):
            if occ:
                self.journal.clear()  # nothing happened; the parcel is still there
                self.expected_open.pop(cid, None)
                return "untouched"
            self.close_cycle(cid, action, info)
            return "completed"
        self.journal.clear()
        return "cleared"

    # ---- flows
    def _need_room(self):
        """Refuse a door cycle before the door opens if its custody event
        could not be stored: a parcel must never move without its record."""
        ob = self.outbox
        if ob.capacity - ob.reserve - ob.live_bytes < 1024:
            self.alarm("outbox_full", refused="door_cycle")
            raise FlowError("outbox_full", "the event store is full; call support")

    async def pickup(self, code, via="keypad"):
        now = self.now()
        if self.lockout.locked(now):
            # Every refused attempt is counted, but a brute-forcer must not
            # fill the outbox with never-evicted audit records and so block
            # custody events: one record per 100 refusals, and the rest in
            # the summary written when the lockout ends.
            self._refused += 1
            if self._refused % 100 == 1:
                self.audit("pickup_attempt", result="locked_out", via=via, refused=self._refused)
            raise FlowError("locked_out", "%d" % self.lockout.remaining(now))
        if self._refused:
            self.audit("lockout_summary", refused=self._refused)
            self._refused = 0
        hit = None
        for c in self.comps.all():
            if c["state"] in (K.OCCUPIED, K.OVERDUE) and "hash" in c and \
                    C.matches(c["salt"], c["hash"], code):
                hit = c
                break
        ret = None
        if hit is None:
            for parcel in self.codes:
                r = self.codes[parcel]
                if r.get("kind") == "return" and r.get("exp", 0) > now and \
                        C.matches(r["salt"], r["hash"], code):
                    ret = parcel
                    break
        if hit is None and ret is None:
            was_locked = self.lockout.locked(now)
            self.lockout.fail(now)
            self._save_json("lockout", self.lockout.state())
            self.audit("pickup_attempt", result="wrong", via=via, failures=self.lockout.failures)
            if self.lockout.locked(now) and not was_locked:
                self.alarm("lockout", failures=self.lockout.failures,
                           seconds=self.lockout.remaining(now))
            raise FlowError("wrong_code")
        self.lockout.success()
        self._save_json("lockout", self.lockout.state())
        self._need_room()
        if ret is not None:
            c = self.comps.pick_free(self.codes[ret].get("size", "S"))
            if c is None:
                raise FlowError("full")
            self.audit("return_attempt", result="ok", via=via, parcel=ret)
            await self.door_cycle(c, "return", {"parcel": ret})
            return c["id"]
        self.audit("pickup_attempt", result="ok", via=via, compartment=hit["id"])
        await self.door_cycle(hit, "pickup", {"parcel": hit.get("parcel")})
        return hit["id"]

    def courier_login(self, badge):
        """Badge QR: PE-C:<courier>:<secret>; credentials come from the gateway."""
        parts = badge.split(":")
        if len(parts) != 3 or parts[0] != "PE-C":
            raise FlowError("bad_badge")
        cred = self.couriers.get(parts[1])
        now = self.now()
        if cred is None or cred.get("exp", 0) <= now or not C.matches(cred["salt"], cred["hash"], parts[2]):
            self.audit("courier_login", result="refused", courier=parts[1])
            raise FlowError("bad_badge")
        self.session = {"courier": parts[1], "since": now}
        self.audit("courier_login", result="ok", courier=parts[1])
        return parts[1]

    def courier_logout(self):
        if self.session:
            self.audit("courier_logout", courier=self.session["courier"])
        self.session = None

    async def deposit(self, scanned, size):
        if self.session is None:
            raise FlowError("no_courier")
        try:
            parcel = barcodes.require_parcel_id(scanned)
        except InvalidBarcode as e:
            self.hal.indicator.signal("invalid")
            raise FlowError("invalid_parcel", e.reason)
        if size not in K.SIZES:
            raise FlowError("bad_size")
        held = self.comps.find_parcel(parcel)
        if held is not None and held["state"] != K.RESERVED:
            self.hal.indicator.signal("duplicate")
            raise FlowError("already_in_locker", "%d" % held["id"])
        c = held if held is not None else self.comps.pick_free(size)
        if c is None:
            raise FlowError("full", size)
        self._need_room()
        back = c["state"]
        await self.door_cycle(c, "deposit", {"parcel": parcel, "courier": self.session["courier"],
                                             "size": size, "back_to": back})
        self.hal.indicator.signal("good")
        return c["id"]

    async def retrieve_all(self):
        if self.session is None:
            raise FlowError("no_courier")
        done = []
        for cid in self.comps.retrieval_list():
            self._need_room()
            await self.door_cycle(self.comps.get(cid), "retrieve",
                                  {"courier": self.session["courier"]})
            done.append(cid)
        return done

    # ---- commands
    def _on_message(self, topic, payload, retained):
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
        try:
            cmd = signing.verify(payload, self.keys, self.device, self.now(), self.guard)
        except ProtocolError as e:
            self.stats["commands_refused"] += 1
            self.audit("command", id=cmd_id, result=e.code)
            self._ack(cmd_id or "?", e)
            return e.code
        # At most once: the replay window is on flash before anything runs.
        self._save_json("replay", self.guard.state())
        try:
            result = await self.execute(cmd)
        except FlowError as e:
            self.audit("command", id=cmd["id"], op=cmd["op"], result=e.code)
            self._ack(cmd["id"], _Refusal(e.code, e.detail))
            return e.code
        self.audit("command", id=cmd["id"], op=cmd["op"], result="ok")
        self._ack(cmd["id"], None, result)
        return "ok"

    async def execute(self, cmd):
        op = cmd["op"]
        a = cmd["args"]
        now = self.now()
        if op == "open":
            cid = a.get("compartment")
            if cid not in self.comps.by_id:
                raise FlowError("bad_compartment")
            self._need_room()
            c = self.comps.get(cid)
            asyncio.create_task(self._remote_cycle(c, cmd["id"]))
            return {"compartment": cid}
        if op in ("provision_code", "provision_return"):
            for k in ("parcel", "salt", "hash", "exp"):
                if k not in a:
                    raise FlowError("bad_args", k)
            rec = {"salt": a["salt"], "hash": a["hash"], "exp": a["exp"],
                   "kind": "return" if op == "provision_return" else "pickup"}
            if op == "provision_return":
                rec["size"] = a.get("size", "S")
            self.codes[a["parcel"]] = rec
            c = self.comps.find_parcel(a["parcel"])
            if c is not None and op == "provision_code" and c["state"] in K.HOLDS_PARCEL:
                self.comps.set(c["id"], c["state"], salt=a["salt"], hash=a["hash"], code_by="platform")
                self.comps.save()
            self._save_json("codes", self.codes)
            return {"stored": a["parcel"]}
        if op == "credential":
            if a.get("revoke"):
                self.couriers.pop(a.get("courier"), None)
            else:
                for k in ("courier", "salt", "hash", "exp"):
                    if k not in a:
                        raise FlowError("bad_args", k)
                self.couriers[a["courier"]] = {"salt": a["salt"], "hash": a["hash"], "exp": a["exp"]}
            self._save_json("couriers", self.couriers)
            return {"couriers": len(self.couriers)}
        if op == "reserve":
            parcel = a.get("parcel")
            size = a.get("size")
            if size not in K.SIZES or not parcel:
                raise FlowError("bad_args")
            held = self.comps.find_parcel(parcel)
            if held is not None:
                return {"compartment": held["id"], "state": held["state"]}
            c = self.comps.pick_free(size)
            if c is None:
                raise FlowError("full", size)
            self.comps.set(c["id"], K.RESERVED, parcel=parcel,
                           reserved_until=min(a.get("until", now + 3600), now + DAY))
            self.comps.save()
            self._state_dirty = True
            return {"compartment": c["id"], "size": c["size"]}
        if op == "deposit":
            # A deposit permit: the platform signed it for this parcel and
            # courier, the courier's handheld forwarded it through the
            # gateway. The door opens now; the deposit is registered when
            # it closes, as at the panel.
            try:
                parcel = barcodes.require_parcel_id(a.get("parcel", ""))
            except InvalidBarcode as e:
                raise FlowError("invalid_parcel", e.reason)
            size = a.get("size")
            if size not in K.SIZES or not isinstance(a.get("courier"), str):
                raise FlowError("bad_args")
            held = self.comps.find_parcel(parcel)
            if held is not None and held["state"] != K.RESERVED:
                raise FlowError("already_in_locker", "%d" % held["id"])
            c = held if held is not None else self.comps.pick_free(size)
            if c is None:
                raise FlowError("full", size)
            self._need_room()
            asyncio.create_task(self._permit_cycle(c, cmd["id"], {
                "parcel": parcel, "courier": a["courier"], "size": size, "back_to": c["state"],
                "cmd": cmd["id"]}))
            return {"compartment": c["id"], "size": c["size"]}
        if op == "config":
            o = self._load_json("overrides", {})
            for k in a:
                if k not in RUNTIME_KEYS or not isinstance(a[k], int) or a[k] <= 0:
                    raise FlowError("bad_args", k)
            for k in a:
                o[k] = a[k]
                self.cfg[k] = a[k]
            self._save_json("overrides", o)
            self.lockout.budget = self.cfg["lockout_budget"]
            self.lockout.base_s = self.cfg["lockout_base_s"]
            return {"applied": sorted(a)}
        raise FlowError("unknown_op", op)

    async def _permit_cycle(self, c, cmd_id, info):
        try:
            await self.door_cycle(c, "deposit", info)
        except FlowError as e:
            self.log("permit_deposit_failed", compartment=c["id"], cmd=cmd_id, error=e.code)

    async def _remote_cycle(self, c, cmd_id):
        try:
            await self.door_cycle(c, "remote", {"cmd": cmd_id})
        except FlowError as e:
            self.log("remote_open_failed", compartment=c["id"], error=e.code)

    # ---- tasks
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
            await self.handle_command(self._cmds.pop(0))

    async def sender_task(self):
        await self.sender.run()

    async def check_doors(self):
        """One poll of every door: forced doors and board faults become alarms."""
        try:
            states = await self.board.status_all()
        except Exception as e:
            self.stats["board_errors"] += 1
            if not self._board_fault:
                self._board_fault = True
                self.alarm("lock_board_fault", code=getattr(e, "code", "error"), detail=str(e))
            return None
        if self._board_fault:
            self._board_fault = False
            self.audit("board_recovered")
        for c in self.comps.all():
            st = states.get(c["id"])
            if st is None:
                continue
            cid = c["id"]
            if st["open"] and cid not in self.expected_open and cid not in self.active:
                if cid not in self._forced:
                    self._forced[cid] = 1
                    self.alarm("door_forced", compartment=cid, state=c["state"])
            elif not st["open"]:
                self._forced.pop(cid, None)
        return states

    def check_expiry(self):
        """Overdue parcels onto the retrieval list; stale reservations freed."""
        now = self.now()
        for cid in self.comps.mark_overdue(now):
            self.emit("locker.overdue", "custody",
                      {"compartment": cid, "parcel": self.comps.get(cid).get("parcel")})
            self._state_dirty = True
        for cid in self.comps.release_expired_reservations(now):
            self.audit("reservation_expired", compartment=cid)
            self._state_dirty = True
        if self._state_dirty:
            self.comps.save()

    async def monitor_task(self):
        last_expiry = None
        while True:
            self.beat("monitor")
            await self.check_doors()
            now = self.now()
            if last_expiry is None or now - last_expiry >= 60:
                last_expiry = now
                self.check_expiry()
            if self._state_dirty and self.mqtt.connected.is_set():
                self._state_dirty = False
                asyncio.create_task(self._publish_state())
            await sleep_ms(self.cfg["poll_ms"])

    def state_doc(self):
        return {"v": 1, "ts": self.now(), "compartments": [
            {"id": c["id"], "size": c["size"], "state": c["state"]} for c in self.comps.all()],
            "retrieval": self.comps.retrieval_list(), "summary": self.comps.summary(),
            "outbox": {"used": self.outbox.live_bytes, "pending": self.outbox.count,
                       "capacity": self.outbox.capacity}}

    async def _publish_state(self):
        try:
            await self.mqtt.publish(self.t_state, json.dumps(self.state_doc()).encode(), 1, retain=True)
        except Exception as e:
            self.log("state_publish_failed", error=repr(e))

    async def presence_task(self):
        while True:
            await self.mqtt.connected.wait()
            # Subscribe first: the gateway sends waiting commands as soon as
            # it sees "online", and the broker handles our packets in order.
            await self.mqtt.subscribe(self.t_cmd, 1)
            await self.mqtt.publish(self.t_presence, b"online", 1, retain=True)
            while self.mqtt.connected.is_set():
                await sleep_ms(200)

    async def supervisor_task(self, watchdog, tasks):
        """Feed the watchdog only while every task has beaten recently."""
        limit = max(5000, self.cfg["poll_ms"] * 10)
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

    async def _recover_task(self):
        entry = self.journal.read() or {}
        try:
            outcome = await self.recover()
        finally:
            if self.active.get(entry.get("cid")) == "recovery":
                del self.active[entry["cid"]]
        if outcome:
            self.audit("recovery", outcome=outcome)

    async def run(self, panel=None):
        self.emit("locker.boot", "status", {"boot": self.seq.boot, "compartments": len(self.comps.by_id),
                                            "hal": self.hal.NAME})
        # A cycle cut by a power loss may have to wait for its door: that
        # must not keep the locker offline, so recovery runs beside the other
        # tasks. Its door is expected open (no "forced" alarm) and busy.
        entry = self.journal.read()
        if entry and entry.get("cid") in self.comps.by_id:
            self.expected_open[entry["cid"]] = self.now()
            self.active[entry["cid"]] = "recovery"
        tasks = [asyncio.create_task(self._recover_task()), asyncio.create_task(self.mqtt.run()),
                 asyncio.create_task(self.presence_task()),
                 asyncio.create_task(self.sender_task()), asyncio.create_task(self.command_task()),
                 asyncio.create_task(self.monitor_task())]
        if panel is not None:
            tasks.append(asyncio.create_task(panel.run(self)))
        if self.cfg.get("mem_log_ms"):
            tasks.append(asyncio.create_task(self.mem_task(self.cfg["mem_log_ms"])))
        wd = self.hal.watchdog(self.cfg["watchdog_ms"])
        await self.supervisor_task(wd, ("sender", "commands", "monitor"))


class _Refusal:
    """An ack error for a flow refusal (same shape as a ProtocolError)."""

    def __init__(self, code, detail):
        self.code = code
        self.detail = detail
