# The locker application: parcel flows, signed commands, alarms, recovery.
#
# Everything that must survive a power cut goes through flash before it is
# acted on: the door-cycle journal before a lock opens, the replay window
# before a command runs, custody events into the outbox before the state
# they describe is reported. The same code runs on a board, on the unix port
# and (for the simulator) on CPython; hardware comes from the HAL and the
# lock board from a driver.

import asyncio
import binascii
import json

from drivers.aio import sleep_ms
from firmware.device import Device, FlowError
from firmware.locker import codes as C
from firmware.locker import compartments as K
from firmware.locker.config import notify_key
from firmware.locker.journal import Journal
from firmware.outbox import OutboxFull
from protocol import barcodes, permits, revocation, seal
from protocol.errors import InvalidBarcode, ProtocolError
from protocol.outbound import valid_order

DAY = 86400
# Live send codes a locker keeps (each ~150 bytes of RAM and flash); used ones
# are kept, fewer, only to tell a villager who types one again that it is used.
MAX_SENDS = 64
KEEP_USED = 16
SERVICE_STATES = ("out_of_service", "in_service")
RECOVER_TRIES = 3  # board queries after a power cut before the compartment is left for inspection
RUNTIME_KEYS = ("door_open_alarm_s", "pickup_days", "lockout_budget", "lockout_base_s", "lockout_forgive_s")

__all__ = ("FlowError", "Locker")


class Locker(Device):
    def __init__(self, cfg, hal, board, log=None):
        Device.__init__(self, cfg, hal, "locker", log)
        self.board = board
        # The panel shows what the person at the locker should do next.
        self.display = lambda code, detail="": None
        st = self.storage
        self._load_overrides()
        self.comps = K.Compartments(st, cfg["compartments"])
        self.journal = Journal(st)
        self.lockout = C.Lockout(self.cfg["lockout_budget"], self.cfg["lockout_base_s"],
                                 self.cfg["lockout_max_s"], self.cfg["lockout_forgive_s"])
        self.lockout.restore(self._load_json("lockout", {}), self.now())
        self.couriers = self._load_json("couriers", {})
        self.codes = self._load_json("codes", {})
        # Send codes (寄件): order -> {salt, hash, exp, size[, used]}; only hashes.
        self.sends = self._load_json("sends", {})
        self._sending = {}  # order -> compartment while its door stands open
        self.notify = notify_key(cfg)  # (kv, key) to seal codes for the notifier, or None
        self.revoked = revocation.Revocations()
        self._revoked_lost = self._load_revoked()
        self.session = None
        self.expected_open = {}
        self.active = {}
        self._forced = {}
        self._board_fault = False
        self._refused = 0
        self.stats["board_errors"] = 0
        self._state_dirty = True

    # ---- runtime configuration
    def _load_overrides(self):
        o = self._load_json("overrides", {})
        for k in RUNTIME_KEYS:
            if k in o:
                self.cfg[k] = o[k]

    # ---- revocations (protocol/revocation.py): "<crc32 hex> <json>" on flash
    def _load_revoked(self):
        """False when the list loaded (or there is none yet); True when the
        file is damaged: the locker then refuses every permit issued before
        its first trusted time (a floor), as it cannot know whom it forgot."""
        raw = self.storage.read("revoked")
        if not raw:
            return False
        try:
            body = raw[9:]
            if raw[8:9] != b" " or int(raw[:8].decode(), 16) != binascii.crc32(body) & 0xFFFFFFFF:
                raise ValueError("checksum")
            self.revoked.restore(json.loads(body))
            return False
        except Exception:
            self.log("state_corrupt", name="revoked")
            self.alarm("revocations_lost")
            return True

    def _save_revoked(self):
        body = json.dumps(self.revoked.state()).encode()
        self.storage.write("revoked", ("%08x " % (binascii.crc32(body) & 0xFFFFFFFF)).encode() + body)

    def _check_revoked(self, cmd, now):
        if self._revoked_lost:
            # The first decision made on trusted time: every permit issued
            # before now may name someone the lost list held.
            self._revoked_lost = False
            self.revoked.raise_floor(now)
            self._save_revoked()
        try:
            self.revoked.check(cmd)
        except ProtocolError as e:
            raise FlowError(e.code, e.detail)

    def _revoke(self, cmd, now):
        """The platform's signed `revoke`: persisted before the ack, so a
        power cut right after cannot bring a revoked handheld back."""
        try:
            names = revocation.parse_args(cmd["args"])
        except ProtocolError as e:
            raise FlowError("bad_args", e.detail)
        for kind, ident in names:
            self.revoked.add(kind, ident, cmd["iat"], now)
        folded = self.revoked.prune(now)
        self._save_revoked()
        if folded or self.revoked.dropped:
            # Full: the oldest live revocations became a floor (fails closed).
            self.alarm("revocations_full", floor=self.revoked.floor, dropped=self.revoked.dropped)
            self.revoked.dropped = 0
        return {"revoked": len(names), "held": len(self.revoked.entries), "floor": self.revoked.floor}

    # ---- events
    def seal_code(self, eid, parcel, code):
        """A code this locker issued, sealed for the platform (with its own
        device key) and, when provisioned, the outlet's notifier."""
        out = {"platform": seal.seal("platform", self.keys.secret, self.keys.kv, eid, parcel, code)}
        if self.notify is not None:
            out["notifier"] = seal.seal("notifier", self.notify[1], self.notify[0], eid, parcel, code)
        return out

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
            if action in ("pickup", "deposit", "return", "retrieve", "send", "collect"):
                self.display("door_open_" + action, str(cid))
            action, info = self._outcome(action, info, await self.wait_closed(c))
            self.close_cycle(cid, action, info)
            return action
        finally:
            self.active.pop(cid, None)

    def _outcome(self, action, info, st):
        """A send whose door closed on an empty compartment (the occupancy
        sensor says so) did not happen: the code stays valid and the
        compartment free."""
        if action == "send" and st.get("occupied") is False:
            return "send_abort", {"order": info.get("order"), "reason": "empty"}
        return action, info

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
                # Issued offline: the recipient still needs it, so it goes up
                # sealed for the platform and the outlet's notifier only. The
                # journal keeps the boxes, never the code (a replay re-sends
                # the same boxes under the same event id: protocol/seal.py).
                code = C.new_code(self.hal.urandom)
                salt = C.new_salt(self.hal.urandom)
                entry["code"] = {"salt": salt, "hash": C.salted_hash(salt, code), "by": "locker",
                                 "sealed": self.seal_code(entry["eid"], info["parcel"], code)}
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
                # A journal written by firmware that kept the code in clear.
                code["sealed"] = self.seal_code(entry["eid"], info["parcel"], code.pop("plain"))
            if "sealed" in code:
                body["code_sealed"] = code["sealed"]
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
            if info.get("cmd"):
                body["permit"] = info["cmd"]
            self.comps.set(cid, K.FREE)
            etype = "locker.retrieve"
        elif action == "return":
            self.comps.set(cid, K.RETURN_WAITING, parcel=info["parcel"], deposited=now)
            self.codes.pop(info["parcel"], None)
            body["parcel"] = info["parcel"]
            etype = "locker.return_dropoff"
        elif action == "send":
            order = info["order"]
            self.comps.set(cid, K.SEND_WAITING, order=order, deposited=now)
            r = self.sends.get(order)
            if r is not None:
                r["used"] = now  # used up: the same code never opens a door again
            self._trim_sends()
            body["order"] = order
            body["size"] = self.comps.get(cid)["size"]
            body["booked"] = info.get("size")
            body["via"] = info.get("via")
            etype = "locker.send_dropoff"
        elif action == "send_abort":
            self.comps.set(cid, K.FREE)
            body["order"] = info.get("order")
            body["reason"] = info.get("reason")
            etype = "locker.send_aborted"
        elif action == "collect":
            c = self.comps.get(cid)
            body["order"] = c.get("order")
            body["courier"] = info.get("courier")
            self.comps.set(cid, K.FREE)
            etype = "locker.send_collected"
        elif action == "abort":
            self.comps.set(cid, info.get("back_to", K.FREE))
            body["parcel"] = info.get("parcel")
            etype = "locker.deposit_aborted"
        elif action == "inspect":
            self.comps.set(cid, K.INSPECT)
            body["parcel"] = info.get("parcel")
            body["reason"] = info.get("reason")
            if info.get("order"):
                body["order"] = info["order"]  # a drop-off cut by a power loss
            etype = "locker.inspect_needed"
        else:  # remote open: the compartment keeps its state
            body["cmd"] = info.get("cmd")
            etype = "locker.remote_open"
        self._save_json("codes", self.codes)
        if action == "send":
            self._save_json("sends", self.sends)
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
        # A board just powered up may miss the first query or two: ask again
        # before sending a courier to inspect a compartment that is fine.
        st = None
        for attempt in range(RECOVER_TRIES):
            try:
                st = await self.board.status(c)
                break
            except Exception as e:
                err = e
                await sleep_ms(200 * (attempt + 1))
        if st is None:
            self.close_cycle(cid, "inspect", {"parcel": info.get("parcel"), "reason": "board:" + str(err)})
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
                action, info = self._outcome(action, info, await self.wait_closed(c))
                self.close_cycle(cid, action, info)
            finally:
                self.active.pop(cid, None)
            return "resumed"
        if step == "open":
            # Verified open before the cut and closed now: the cycle happened
            # (unless the sensor saw a send compartment left empty).
            if action == "send" and occ is False:
                self.close_cycle(cid, "send_abort", {"order": info.get("order"), "reason": "empty"})
                return "aborted"
            self.close_cycle(cid, action, info, occupied=occ if action == "pickup" else None)
            return "completed"
        # step == "opening": the lock may or may not have opened.
        if occ is None:
            # A send code stays unused: the villager may try again, and the
            # courier checks this compartment (it is on the retrieval list).
            self.close_cycle(cid, "inspect", {"parcel": info.get("parcel"), "order": info.get("order"),
                                              "reason": "power_cut"})
            self.alarm("recovered_inconsistent", compartment=cid)
            return "inspect"
        if action == "deposit":
            if occ:
                self.close_cycle(cid, "deposit", info)
                return "completed"
            self.close_cycle(cid, "abort", {"parcel": info.get("parcel"),
                                            "back_to": info.get("back_to", K.FREE)})
            return "aborted"
        if action == "send":
            if occ:
                self.close_cycle(cid, "send", info)
                return "completed"
            self.close_cycle(cid, "send_abort", {"order": info.get("order"), "reason": "power_cut"})
            return "aborted"
        if action in ("pickup", "retrieve", "collect"):
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
        """A code from `via`; returns the compartment that opened."""
        return (await self.enter_code(code, via))[1]

    async def enter_code(self, code, via="keypad"):
        """A pickup, return or send code from `via` (codes.SOURCES: the
        lockout counts wrong codes per source, whatever kind of code was
        meant). Returns (display code, compartment)."""
        now = self.now()
        if self.lockout.locked(now, via):
            # Every refused attempt is counted, but a brute-forcer must not
            # fill the outbox with never-evicted audit records and so block
            # custody events: one record per 100 refusals, and the rest in
            # the summary written when the lockout ends.
            self._refused += 1
            if self._refused % 100 == 1:
                self.audit("pickup_attempt", result="locked_out", via=via, refused=self._refused)
            raise FlowError("locked_out", "%d" % self.lockout.remaining(now, via))
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
                if r.get("kind") == "return" and C.matches(r["salt"], r["hash"], code):
                    # A return code expires: whether it has needs the time.
                    if r.get("exp", 0) > self.trusted_now():
                        ret = parcel
                        break
        send = None
        if hit is None and ret is None:
            send = self._match_send(code, via)
        if hit is None and ret is None and send is None:
            n = self.lockout.fail(now, via)
            self._save_json("lockout", self.lockout.state())
            self.audit("pickup_attempt", result="wrong", via=via, failures=n)
            if n == self.lockout.warn_at:
                # Someone may be guessing: the clerk hears of it before the
                # lockout turns anyone away.
                self.alarm("code_guessing", via=via, failures=n, budget=self.lockout.budget)
            if self.lockout.locked(now, via):
                self.alarm("lockout", via=via, failures=n, seconds=self.lockout.remaining(now, via))
            raise FlowError("wrong_code")
        # A right code resets nothing: on a shared keypad it may be someone
        # else's (codes.py).
        self._need_room()
        if send is not None:
            return await self._send_dropoff(send, via)
        if ret is not None:
            c = self.comps.pick_free(self.codes[ret].get("size", "S"))
            if c is None:
                raise FlowError("full")
            self.audit("return_attempt", result="ok", via=via, parcel=ret)
            await self.door_cycle(c, "return", {"parcel": ret})
            return "pickup_ok", c["id"]
        self.audit("pickup_attempt", result="ok", via=via, compartment=hit["id"])
        await self.door_cycle(hit, "pickup", {"parcel": hit.get("parcel")})
        return "pickup_ok", hit["id"]

    # ---- outbound (寄件)
    def _match_send(self, code, via):
        """The send order whose live code this is, or None. A used or expired
        code is refused with its reason and not counted as a guess: it was a
        real code, typed again by its villager (a guesser hits one with the
        odds of hitting a live code)."""
        for order in self.sends:
            r = self.sends[order]
            if not C.matches(r["salt"], r["hash"], code):
                continue
            if r.get("used"):
                self.audit("send_attempt", result="used", via=via, order=order)
                raise FlowError("code_used")
            if r["exp"] <= self.trusted_now():
                self.audit("send_attempt", result="expired", via=via, order=order)
                raise FlowError("code_expired")
            return order
        return None

    async def _send_dropoff(self, order, via):
        """Open a free compartment of the booked size (or bigger) for the
        villager's parcel; the code is used up when the door closes on it."""
        if order in self._sending:  # typed again while its door stands open
            raise FlowError("busy", order)
        r = self.sends[order]
        c = self.comps.pick_free(r["size"])
        if c is None:
            # The code stays valid: the villager can come back, or go to the counter.
            self.audit("send_attempt", result="full", via=via, order=order, size=r["size"])
            raise FlowError("full", r["size"])
        self.audit("send_attempt", result="ok", via=via, order=order, compartment=c["id"])
        self._sending[order] = c["id"]
        try:
            done = await self.door_cycle(c, "send", {"order": order, "size": r["size"], "via": via})
        finally:
            self._sending.pop(order, None)
        return ("send_ok" if done == "send" else "send_empty"), c["id"]

    def _trim_sends(self):
        """Forget the oldest used codes beyond KEEP_USED."""
        used = sorted([(self.sends[o]["used"], o) for o in self.sends if self.sends[o].get("used")])
        for _, o in used[:max(0, len(used) - KEEP_USED)]:
            del self.sends[o]

    def _provision_send(self, a):
        order = a.get("order")
        if not valid_order(order):
            raise FlowError("bad_args", "order")
        if a.get("revoke"):
            self.sends.pop(order, None)
            self._save_json("sends", self.sends)
            return {"revoked": order}
        for k in ("salt", "hash", "exp"):
            if not isinstance(a.get(k), (str, int)) or isinstance(a.get(k), bool):
                raise FlowError("bad_args", k)
        size = a.get("size", "S")
        if size not in K.SIZES or not isinstance(a["exp"], int):
            raise FlowError("bad_args", "size" if size not in K.SIZES else "exp")
        old = self.sends.get(order)
        if (old is not None and old.get("used")) or self.comps.find_order(order) is not None:
            raise FlowError("already_used", order)
        if old is None and len(self.sends) >= MAX_SENDS:
            if self.synced:  # drop expired codes to make room
                now = self.now()
                for o in [o for o in self.sends if not self.sends[o].get("used") and
                          self.sends[o]["exp"] <= now]:
                    del self.sends[o]
            if len(self.sends) >= MAX_SENDS:
                raise FlowError("too_many_codes", "%d" % MAX_SENDS)
        self.sends[order] = {"salt": a["salt"], "hash": a["hash"], "exp": a["exp"], "size": size}
        self._save_json("sends", self.sends)
        return {"stored": order}

    def courier_login(self, badge):
        """Badge QR: PE-C:<courier>:<secret>; credentials come from the gateway."""
        parts = badge.split(":")
        if len(parts) != 3 or parts[0] != "PE-C":
            raise FlowError("bad_badge")
        cred = self.couriers.get(parts[1])
        # The badge's expiry needs the time: refused until synced, not guessed
        # from a clock that may have reset to 2000.
        if not self.synced:
            self.audit("courier_login", result="time_not_synced", courier=parts[1])
        now = self.trusted_now()
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
            c = self.comps.get(cid)
            # Outbound parcels are collected with the rest, each recorded as
            # its own locker.send_collected.
            await self.door_cycle(c, "collect" if c["state"] == K.SEND_WAITING else "retrieve",
                                  {"courier": self.session["courier"]})
            done.append(cid)
        return done

    # ---- commands
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
        if op == "provision_send":
            return self._provision_send(a)
        if op == "service":
            return self._service(cmd["id"], a)
        if op in permits.OPS:
            return self._permit(cmd)
        if op == "revoke":
            return self._revoke(cmd, now)
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
            self.lockout.forgive_s = self.cfg["lockout_forgive_s"]
            return {"applied": sorted(a)}
        raise FlowError("unknown_op", op)

    def _service(self, cmd_id, a):
        # A compartment out of service (a faulty door or lock: never offered
        # for a deposit, a return or a send) or back in service, as a
        # supervisor asked and the platform signed. Only an empty compartment
        # leaves service: one holding a parcel is emptied first (a remote open
        # or the courier's retrieval), so no parcel is stranded where no flow
        # reaches it. Asking for the state it is in already is done, not an
        # error (the platform may send the command again).
        cid = a.get("compartment")
        want = a.get("state")
        if cid not in self.comps.by_id or want not in SERVICE_STATES:
            raise FlowError("bad_args")
        c = self.comps.get(cid)
        target = K.FREE if want == "in_service" else K.OUT_OF_SERVICE
        if c["state"] == target:
            return {"compartment": cid, "state": c["state"]}
        if cid in self.active:
            raise FlowError("busy", cid)
        if c["state"] != (K.OUT_OF_SERVICE if want == "in_service" else K.FREE):
            raise FlowError("not_empty" if want == "out_of_service" else "bad_state", c["state"])
        self.comps.set(cid, target)
        self.comps.save()
        self._state_dirty = True
        rid = a.get("request")
        self.emit("locker.service", "audit", {"compartment": cid, "state": want, "cmd": cmd_id,
                                              "request": rid if isinstance(rid, str) else None})
        return {"compartment": cid, "state": target}

    def _permit(self, cmd):
        """A courier's permit, forwarded by the handheld it was issued to
        through the gateway. The platform signed it with this locker's own
        key (verified before execute), for one parcel, courier and handheld,
        with a short lifetime. The door opens now; the custody event is
        written when it closes, as at the panel."""
        try:
            permits.check(cmd)
        except ProtocolError as e:
            raise FlowError(e.code, e.detail)
        self._check_revoked(cmd, self.now())
        a = cmd["args"]
        try:
            parcel = barcodes.require_parcel_id(a["parcel"])
        except InvalidBarcode as e:
            raise FlowError("invalid_parcel", e.reason)
        info = {"parcel": parcel, "courier": a["courier"], "handheld": a["handheld"], "cmd": cmd["id"]}
        if cmd["op"] == "retrieve":
            c = self.comps.find_parcel(parcel)
            if c is None or c["state"] not in K.RETRIEVAL:
                raise FlowError("not_for_retrieval", parcel)
            self._need_room()
            asyncio.create_task(self._permit_cycle(c, cmd["id"], "retrieve", info))
            return {"compartment": c["id"]}
        size = a.get("size")
        if size not in K.SIZES:
            raise FlowError("bad_args", "size")
        held = self.comps.find_parcel(parcel)
        if held is not None and held["state"] != K.RESERVED:
            raise FlowError("already_in_locker", "%d" % held["id"])
        c = held if held is not None else self.comps.pick_free(size)
        if c is None:
            raise FlowError("full", size)
        self._need_room()
        info["size"] = size
        info["back_to"] = c["state"]
        asyncio.create_task(self._permit_cycle(c, cmd["id"], "deposit", info))
        return {"compartment": c["id"], "size": c["size"]}

    async def _permit_cycle(self, c, cmd_id, action, info):
        try:
            await self.door_cycle(c, action, info)
        except FlowError as e:
            self.log("permit_" + action + "_failed", compartment=c["id"], cmd=cmd_id, error=e.code)

    async def _remote_cycle(self, c, cmd_id):
        try:
            await self.door_cycle(c, "remote", {"cmd": cmd_id})
        except FlowError as e:
            self.log("remote_open_failed", compartment=c["id"], error=e.code)

    # ---- tasks
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
        """Overdue parcels onto the retrieval list; stale reservations freed.
        Not before the time is synced: a clock at 2000 would never find a
        parcel overdue, one running ahead would find them all."""
        if not self.synced:
            return
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
        steps = 0
        while True:
            self.beat("monitor")
            await self.check_doors()
            now = self.now()
            if steps != self.time_steps:  # the gateway's time stepped (back, perhaps): start again
                steps = self.time_steps
                last_expiry = None
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
            "retrieval": self.comps.retrieval_list(), "outbound": self.comps.outbound(),
            "summary": self.comps.summary(),
            "outbox": {"used": self.outbox.live_bytes, "pending": self.outbox.count,
                       "capacity": self.outbox.capacity}}

    async def _publish_state(self):
        await self.publish_state(self.state_doc())

    async def _recover_task(self):
        entry = self.journal.read() or {}
        try:
            outcome = await self.recover()
        finally:
            if self.active.get(entry.get("cid")) == "recovery":
                del self.active[entry["cid"]]
            self._sending.pop((entry.get("info") or {}).get("order"), None)
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
            order = (entry.get("info") or {}).get("order")
            if entry.get("action") == "send" and order:
                self._sending[order] = entry["cid"]  # its code must not open a second door
        tasks = [asyncio.create_task(self._recover_task()), asyncio.create_task(self.mqtt.run()),
                 asyncio.create_task(self.presence_task()),
                 asyncio.create_task(self.sender_task()), asyncio.create_task(self.command_task()),
                 asyncio.create_task(self.monitor_task())]
        if panel is not None:
            tasks.append(asyncio.create_task(panel.run(self)))
        if self.cfg.get("mem_log_ms"):
            tasks.append(asyncio.create_task(self.mem_task(self.cfg["mem_log_ms"])))
        self.tasks = tasks
        wd = self.hal.watchdog(self.cfg["watchdog_ms"])
        await self.supervisor_task(wd, ("sender", "commands", "monitor"))
