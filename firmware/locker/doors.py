# The locker's view of its doors: compartments mapped onto lock-board
# channels, whichever board family drives them.

def make_driver(cfg, hal):
    """The lock-board driver for config["board"], on a UART from the HAL."""
    from drivers.lockboard import driver_class

    b = cfg["board"]
    cls = driver_class(b["driver"])
    boards = sorted(set(c["board"] for c in cfg["compartments"]))
    uart = hal.uart(b["uart"], b.get("baud", cls.BAUD))
    kw = {"boards": boards, "timeout_ms": b.get("timeout_ms", 300), "retries": b.get("retries", 2)}
    if "locks" in b:
        kw["locks"] = b["locks"]
    return cls(uart, **kw)


class Doors:
    def __init__(self, driver, compartments):
        self.driver = driver
        self.by_place = {}
        for c in compartments:
            self.by_place[(c["board"], c["lock"])] = c["id"]

    async def open(self, c):
        return await self.driver.open(c)

    async def status(self, c):
        return await self.driver.status(c)

    async def status_all(self):
        """{compartment id: status} for every configured compartment."""
        out = {}
        for e in await self.driver.status_all():
            cid = self.by_place.get((e["board"], e["channel"]))
            if cid is not None:
                out[cid] = e
        return out
