# The counter scanner application: parcel intake at the outlet counter.
#
# A scan becomes a verdict the clerk sees and hears at once (buzzer and LED
# patterns through the HAL), and, for a parcel, a custody event in the flash
# outbox *before* the "good" signal: a parcel the scanner confirmed is
# registered even if the gateway is down or the power goes next. Verdicts:
#
#   good          a parcel id (S10, China Post domestic, SSCC) for this outlet
#                 -> scanner.intake (custody)
#   duplicate     the same symbol within same_symbol_ms, or a parcel already
#                 registered here (recent list on flash) -> no event, counted
#   invalid       not a parcel id (bad check digit, a product EAN, garbage)
#                 -> scanner.invalid (telemetry), counted; it carries the
#                 reason, the symbology, the length and a short hash, never
#                 the content: a payment code, an ID card or a health code
#                 scanned by mistake must not travel upstream or sit in logs
#                 (protocol/scantrace.py, the rule the handheld follows too)
#   wrong_outlet  a valid parcel id not on this outlet's manifest, when the
#                 platform has sent one -> scanner.misrouted (custody: the
#                 parcel is physically here and must be sent on)
#
# A different symbol inside different_symbol_ms of the last read is
# suppressed silently (a second label on the same parcel), as DataWedge does.
# Commands (signed, at most once): manifest (replace or add expected
# parcels), config (the two windows).

import asyncio

from drivers.aio import sleep_ms
from drivers.hal.common import ticks_diff
from firmware.counter.config import RUNTIME_KEYS
from firmware.device import Device, FlowError
from firmware.outbox import OutboxFull
from protocol import barcodes
from protocol.scantrace import fingerprint  # shared with the handheld

MAX_MANIFEST = 2000


class Dedupe:
    """DataWedge-style same-symbol and different-symbol windows."""

    def __init__(self, same_ms, different_ms):
        self.same_ms = same_ms
        self.different_ms = different_ms
        self.last = None
        self.last_t = 0

    def check(self, text, now):
        """None if the read counts, else "duplicate" or "suppressed"."""
        if self.last is not None:
            dt = ticks_diff(now, self.last_t)
            if text == self.last and dt < self.same_ms:
                self.last_t = now  # still under the scanner: the window restarts
                return "duplicate"
            if text != self.last and dt < self.different_ms:
                return "suppressed"
        self.last = text
        self.last_t = now
        return None


class Counter(Device):
    def __init__(self, cfg, hal, engine, log=None):
        Device.__init__(self, cfg, hal, "scanner", log)
        for k in RUNTIME_KEYS:
            o = self._load_json("overrides", {})
            if k in o:
                cfg[k] = o[k]
        self.engine = engine
        self.dedupe = Dedupe(cfg["same_symbol_ms"], cfg["different_symbol_ms"])
        self.manifest = self._load_json("manifest", None)
        self.recent = self._load_json("recent", [])
        self.counts = {"good": 0, "duplicate": 0, "invalid": 0, "wrong_outlet": 0, "suppressed": 0,
                       "refused": 0}
        self.last = None
        self._state_dirty = True

    # ---- one scan
    def handle_scan(self, scan, now_ms=None):
        """Verdict for one scan dict from the engine driver; the event (if
        any) is in the outbox before the clerk gets the good signal."""
        text = scan["text"]
        now_ms = self.clock.ticks_ms() if now_ms is None else now_ms
        dup = self.dedupe.check(text, now_ms)
        if dup == "suppressed":
            self.counts["suppressed"] += 1
            self.last = {"verdict": "suppressed", "parcel": None, "t": self.now()}
            return {"verdict": "suppressed"}
        if dup == "duplicate":
            return self._verdict("duplicate", fingerprint(text))
        # The driver takes the AIM identifier off the data (scan["aim"]); the
        # rules need it back: the symbology decides what 13 digits are, and
        # ]C1 says the data is a GS1 element string.
        v = barcodes.classify((scan.get("aim") or "") + text)
        if not v["ok"] or v["kind"] not in barcodes.PARCEL_KINDS:
            body = fingerprint(text)
            body["reason"] = v["reason"] if not v["ok"] else "not_a_parcel"
            if v["ok"]:
                body["kind"] = v["kind"]  # what it is instead: "ean13", "gs1"...
            body["symbology"] = scan.get("symbology")
            self._event("scanner.invalid", "telemetry", body)
            return self._verdict("invalid", body)
        parcel = v["value"]
        if parcel in self.recent:
            return self._verdict("duplicate", {"parcel": parcel})
        body = {"parcel": parcel, "kind": v["kind"], "symbology": scan.get("symbology"),
                "engine": scan.get("family")}
        if self.manifest is not None and parcel not in self.manifest:
            eid = self._event("scanner.misrouted", "custody", body)
            if eid is None:
                return self._verdict("refused", body)
            self._remember(parcel)
            body["eid"] = eid
            return self._verdict("wrong_outlet", body)
        eid = self._event("scanner.intake", "custody", body)
        if eid is None:
            return self._verdict("refused", body)
        self._remember(parcel)
        body["eid"] = eid
        return self._verdict("good", body)

    def _event(self, etype, cls, body):
        try:
            return self.emit(etype, cls, body)
        except OutboxFull:
            # Custody is never dropped: the clerk is told to set the parcel
            # aside (error signal) rather than shown a registration that is
            # not on flash.
            self.log("outbox_full", type=etype)
            return None

    def _remember(self, parcel):
        self.recent.append(parcel)
        if len(self.recent) > self.cfg["recent"]:
            self.recent.pop(0)
        self._save_json("recent", self.recent)

    def _verdict(self, verdict, body):
        key = verdict if verdict in self.counts else "refused"
        self.counts[key] += 1
        self.hal.indicator.signal("error" if verdict == "refused" else verdict)
        self.last = {"verdict": verdict, "parcel": body.get("parcel"), "t": self.now()}
        self._state_dirty = True
        out = {"verdict": verdict}
        for k in body:
            out[k] = body[k]
        self.log("scan", **out)
        return out

    # ---- commands
    async def execute(self, cmd):
        op = cmd["op"]
        a = cmd["args"]
        if op == "manifest":
            parcels = a.get("parcels")
            if not isinstance(parcels, list):
                raise FlowError("bad_args", "parcels")
            for p in parcels:
                if not isinstance(p, str):
                    raise FlowError("bad_args", "parcels")
            base = [] if a.get("replace", True) or self.manifest is None else self.manifest
            merged = base + [p for p in parcels if p not in base]
            if len(merged) > MAX_MANIFEST:
                raise FlowError("too_many", "%d" % len(merged))
            self.manifest = merged
            self._save_json("manifest", merged)
            self._state_dirty = True
            return {"manifest": len(merged)}
        if op == "config":
            o = self._load_json("overrides", {})
            for k in a:
                if k not in RUNTIME_KEYS or not isinstance(a[k], int) or a[k] < 0:
                    raise FlowError("bad_args", k)
            for k in a:
                o[k] = a[k]
                self.cfg[k] = a[k]
            self._save_json("overrides", o)
            self.dedupe.same_ms = self.cfg["same_symbol_ms"]
            self.dedupe.different_ms = self.cfg["different_symbol_ms"]
            return {"applied": sorted(a)}
        raise FlowError("unknown_op", op)

    # ---- tasks
    async def scan_task(self):
        sc = self.cfg["scanner"]
        triggered = sc.get("mode", "continuous") == "triggered"
        every = sc.get("trigger_ms", 3000)
        while True:
            self.beat("scanner")
            try:
                if triggered:
                    scan = await self.engine.scan(every)
                else:
                    scan = await self.engine.read_scan(1000)
            except Exception as e:  # an unplugged engine: say so, keep trying
                self.stats["scanner_errors"] = self.stats.get("scanner_errors", 0) + 1
                self.log("scanner_error", error=repr(e))
                await sleep_ms(1000)
                continue
            if scan is not None:
                self.handle_scan(scan)

    def state_doc(self):
        st = self.engine.stats
        return {"v": 1, "ts": self.now(), "counts": self.counts, "last": self.last,
                "manifest": None if self.manifest is None else len(self.manifest),
                "engine": {"family": self.engine.family, "scans": st.get("scans", 0),
                           "rejected": sum(st[k] for k in st if k not in ("scans", "replies", "acks_sent"))},
                "outbox": {"used": self.outbox.live_bytes, "pending": self.outbox.count,
                           "capacity": self.outbox.capacity}}

    async def state_task(self):
        last = None
        while True:
            self.beat("state")
            now = self.now()
            due = last is None or now - last >= self.cfg["state_every_s"]
            if (self._state_dirty or due) and self.mqtt.connected.is_set():
                self._state_dirty = False
                last = now
                await self.publish_state(self.state_doc())
            await sleep_ms(500)

    async def run(self):
        sc = self.cfg["scanner"]
        self.emit("scanner.boot", "status", {"boot": self.seq.boot, "family": sc["family"],
                                             "hal": self.hal.NAME})
        tasks = [asyncio.create_task(self.mqtt.run()), asyncio.create_task(self.presence_task()),
                 asyncio.create_task(self.sender_task()), asyncio.create_task(self.command_task()),
                 asyncio.create_task(self.scan_task()), asyncio.create_task(self.state_task())]
        self.tasks = tasks
        wd = self.hal.watchdog(self.cfg["watchdog_ms"])
        await self.supervisor_task(wd, ("sender", "commands", "scanner", "state"))
