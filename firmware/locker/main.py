# Boot the locker: config from flash, HAL for this platform, lock-board
# driver, front panel, then the application's tasks forever.
#
#   board:     main.py on flash calls main(["main", "config.json"])
#   unix port: MICROPYPATH=.frozen:<repo> micropython -X heapsize=128k \
#                  -m firmware.locker.main config.json

import asyncio
import sys

from drivers.hal import load
from firmware.devconfig import log
from firmware.locker import config as config_mod
from firmware.locker.app import Locker
from firmware.locker.doors import Doors, make_driver
from firmware.locker.panel import Panel


def build(cfg, hal=None, logger=log):
    hal = hal or load()
    doors = Doors(make_driver(cfg, hal), cfg["compartments"])
    panel = Panel(hal.uart(cfg["panel"])) if cfg.get("panel") else None
    return Locker(cfg, hal, doors, log=logger), panel


def main(argv):
    path = argv[1] if len(argv) > 1 else "config.json"
    try:
        cfg = config_mod.load(path)
    except config_mod.ConfigError as e:
        log("config_error", error=str(e))
        sys.exit(78)
    import gc

    gc.collect()
    # What the code itself takes (frozen into flash on a board, in the heap
    # on the unix port), so heap figures can tell code from data.
    code = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    locker, panel = build(cfg)
    log("locker_start", device=cfg["device"], compartments=len(cfg["compartments"]), code_heap=code)
    asyncio.run(locker.run(panel))


if __name__ == "__main__":
    main(sys.argv)
