"""One HTTPS front process over the scale-out backend.

The front is stateless here (batches go to the log, everything else to
PostgreSQL), so a deployment runs as many front processes as it has cores
for checking batches, behind one address or with gateways spread over
several, which is how the front (one Python process checks about 10,000
events a second) stops being the limit. Each process has its own NATS
connection and PostgreSQL pool.

``python -m central.scaleout.serve CONFIG_JSON HOST PORT CERT KEY`` prints
``{"port": N}`` once it listens (PORT 0 picks one) and stops on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

from central import front
from central.scaleout.backend import ScaleOut
from central.scaleout.config import ScaleOutConfig
from common.text import beside, pick_lang

TEXT = beside(__file__)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 5 or not args[2].isdigit():
        print(TEXT.t("usage.serve", pick_lang()), file=sys.stderr)
        return 2
    try:
        cfg = ScaleOutConfig.from_json(args[0])
    except (ValueError, TypeError) as e:
        print(TEXT.t("bad_config", pick_lang(), detail=str(e)), file=sys.stderr)
        return 2
    backend = ScaleOut(cfg)
    srv, _ = front.serve(backend, args[1], int(args[2]), args[3], args[4])
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(json.dumps({"port": srv.address[1]}), flush=True)
    done.wait()
    srv.stop()
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
