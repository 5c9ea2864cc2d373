# Boot the counter scanner: config from flash, HAL for this platform, the
# scan engine on its UART, then the application's tasks forever.
#
#   board:     main.py on flash calls main(["main", "config.json"])
#   unix port: MICROPYPATH=.frozen:<repo> micropython -X heapsize=128k \
#                  -m firmware.counter.main config.json

import asyncio
import sys

from drivers.hal import load
from drivers.scanner.engine import connect
from firmware.counter import config as config_mod
from firmware.counter.app import Counter
from firmware.devconfig import log


def build(cfg, hal=None, logger=log):
    hal = hal or load()
    sc = cfg["scanner"]
    engine = connect(hal, sc["family"], sc["uart"], sc.get("baud"), suffix=sc.get("suffix", "cr"),
                     idle_ms=sc.get("idle_ms", 50), aim=sc.get("aim", True))
    return Counter(cfg, hal, engine, log=logger)


def main(argv):
    path = argv[1] if len(argv) > 1 else "config.json"
    try:
        cfg = config_mod.load(path)
    except config_mod.ConfigError as e:
        log("config_error", error=str(e))
        sys.exit(78)
    counter = build(cfg)
    log("counter_start", device=cfg["device"], family=cfg["scanner"]["family"])
    asyncio.run(counter.run())


if __name__ == "__main__":
    main(sys.argv)
