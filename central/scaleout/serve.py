"""One HTTPS front process over the scale-out backend.

The front is stateless here (batches go to the log, everything else to
PostgreSQL), so a deployment runs as many front processes as it has cores
for checking batches, behind one address or with gateways spread over
several, which is how the front (one Python process checks about 10,000
events a second) stops being the limit. Each process has its own NATS
connection and PostgreSQL pool.

``python -m central.scaleout.serve --central DIR [HOST PORT]`` serves a
scale-out central folder (``central/scaleout/folder.py``): its cluster and
database, its certificate, and its master key, so the process issues device
keys (``POST /v1/keys``) and runs the folder's duties as ``postedge central
run`` does (one pass at a time across every process on the store); HOST and
PORT default to ``central.toml``'s.
``python -m central.scaleout.serve CONFIG_JSON HOST PORT CERT KEY`` serves
without a folder and so without the master key (``/v1/keys`` answers 503):
batches, commands, photos and time only, as a benchmark needs. Either prints
``{"port": N}`` once it listens (PORT 0 picks one) and stops on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from central import front
from central.config import CentralConfig
from central.duties import run_configured
from central.scaleout.backend import ScaleOut
from central.scaleout.config import ScaleOutConfig
from common.text import beside, pick_lang

TEXT = beside(__file__)


def _from_folder(args: list[str]) -> tuple[ScaleOutConfig, str, int, str, str, bytes, CentralConfig]:
    """(config, host, port, cert, key, master, the folder's central.toml) of
    ``--central DIR [HOST PORT]``; ValueError naming what is wrong."""
    from central.config import load
    from central.scaleout import folder
    from common.config import ConfigError

    d = Path(args[1])
    try:
        cfg = load(d)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    host, port = (args[2], int(args[3])) if len(args) == 4 else (cfg.host, cfg.port)
    try:
        master = folder.master(d, cfg)
    except OSError as e:
        raise ValueError(f"{e.filename}: {e.strerror}") from None
    return (folder.read_config(d, cfg), host, port, str(cfg.path(d, cfg.cert_file)),
            str(cfg.path(d, cfg.key_file)), master, cfg)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    by_folder = len(args) in (2, 4) and args[0] == "--central" and (len(args) == 2 or args[3].isdigit())
    if not by_folder and (len(args) != 5 or not args[2].isdigit()):
        print(TEXT.t("usage.serve", pick_lang()), file=sys.stderr)
        return 2
    master: bytes | None = None
    central: CentralConfig | None = None
    try:
        if by_folder:
            cfg, host, port, cert, key, master, central = _from_folder(args)
        else:
            cfg, host, port, cert, key = ScaleOutConfig.from_json(args[0]), args[1], int(args[2]), *args[3:]
    except (ValueError, TypeError) as e:
        print(TEXT.t("bad_config", pick_lang(), detail=str(e)), file=sys.stderr)
        return 2
    backend = ScaleOut(cfg)
    srv, _ = front.serve(backend, host, port, cert, key, master=master)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    if central is not None and master is not None:
        threading.Thread(target=run_configured, args=(central, Path(args[1]), backend, master, done),
                         name="duties", daemon=True).start()
    print(json.dumps({"port": srv.address[1]}), flush=True)
    done.wait()
    srv.stop()
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
