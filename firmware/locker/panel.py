# The locker's front panel: a keypad and a QR/barcode scan module, read as
# lines from a UART, and a display written back as lines. A board port turns
# keypad presses into the same "K:" lines; the unix port and the simulator
# connect the UART to a socket.
#
#   in   K:<keys>#        a keypad entry, e.g. K:493027#
#        Q:<text>         a scan (badge PE-C:<courier>:<secret>, pickup QR
#                         PE-P:<code>, send QR PE-S:<code>, or a parcel
#                         barcode). A send code may be typed like a pickup
#                         code: the locker tells them apart by their hashes.
#   out  D:<code>|<zh>|<en>|<detail>
#
# Garbage, over-long lines and unknown prefixes are counted and answered with
# "unknown_input"; they never stop the panel.


from drivers.aio import sleep_ms
from firmware.locker.app import FlowError
from firmware.locker.texts import line

MAX_LINE = 256
SIZE_KEYS = {"1": "S", "2": "M", "3": "L", "4": "XL"}
SESSION_S = 180



class Panel:
    def __init__(self, uart):
        self.uart = uart
        self.buf = b""
        self.pending_parcel = None
        self.last_action = 0
        self.stats = {"lines": 0, "bad_lines": 0, "overflows": 0}

    def show(self, code, detail=""):
        try:
            self.uart.write(line(code, detail).encode())
        except OSError:
            pass

    def _lines(self):
        out = []
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                if len(self.buf) > MAX_LINE:
                    self.stats["overflows"] += 1
                    self.buf = b""
                return out
            raw = self.buf[:i].strip()
            self.buf = self.buf[i + 1:]
            if len(raw) > MAX_LINE:
                self.stats["overflows"] += 1
                continue
            try:
                out.append(raw.decode())
            except Exception:
                self.stats["bad_lines"] += 1
                self.show("unknown_input")

    async def run(self, locker):
        locker.display = self.show
        self.show("ready")
        while True:
            locker.beat("panel")
            try:
                data = self.uart.read(128)
            except OSError:
                data = b""
                await sleep_ms(1000)
            if data:
                self.buf += data
                for text in self._lines():
                    await self.handle(locker, text)
            else:
                await sleep_ms(20)

    async def handle(self, locker, text):
        """Act on one panel line; returns the display code shown."""
        self.stats["lines"] += 1
        now = locker.now()
        if locker.session is not None and now - self.last_action > SESSION_S:
            locker.courier_logout()
            self.pending_parcel = None
        self.last_action = now
        code, detail = "unknown_input", ""
        try:
            code, detail = await self._dispatch(locker, text)
        except FlowError as e:
            code, detail = e.code, e.detail
        except Exception as e:
            locker.log("panel_error", error=repr(e))
            code = "error"
        self.show(code, detail)
        return code

    async def _dispatch(self, locker, text):
        if text.startswith("K:") and text.endswith("#"):
            keys = text[2:-1]
            if locker.session is not None:
                if keys == "0":
                    locker.courier_logout()
                    self.pending_parcel = None
                    return "logged_out", ""
                if keys == "9":
                    done = await locker.retrieve_all()
                    return ("retrieved" if done else "nothing_to_retrieve"), str(len(done))
                if keys in SIZE_KEYS:
                    if self.pending_parcel is None:
                        return "scan_parcel", ""
                    parcel, self.pending_parcel = self.pending_parcel, None
                    cid = await locker.deposit(parcel, SIZE_KEYS[keys])
                    return "deposit_ok", str(cid)
                return "unknown_input", ""
            if not keys.isdigit() or not 4 <= len(keys) <= 12:
                self.stats["bad_lines"] += 1
                return "wrong_code", ""
            shown, cid = await locker.enter_code(keys, via="keypad")
            return shown, str(cid)
        if text.startswith("Q:"):
            scan = text[2:]
            if scan.startswith("PE-C:"):
                courier = locker.courier_login(scan)
                return "courier_ok", courier
            if scan.startswith("PE-P:") or scan.startswith("PE-S:"):
                code = scan[5:]
                if not code.isdigit() or not 4 <= len(code) <= 12:
                    self.stats["bad_lines"] += 1
                    return "bad_code" if scan[3] == "S" else "wrong_code", ""
                shown, cid = await locker.enter_code(code, via="qr")
                return shown, str(cid)
            if locker.session is not None:
                from protocol import barcodes

                v = barcodes.classify(scan)
                if not v["ok"] or v["kind"] not in barcodes.PARCEL_KINDS:
                    locker.hal.indicator.signal("invalid")
                    return "invalid_parcel", v.get("reason", v.get("kind", ""))
                self.pending_parcel = scan
                return "choose_size", v["value"]
            return "no_courier", ""
        self.stats["bad_lines"] += 1
        return "unknown_input", ""
