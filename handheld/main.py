"""``python -m handheld.main --config handheld.toml``: run the courier handheld app.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM), 2 for a config problem (the message
names the key), 1 if the app could not start (e.g. the UI port is taken).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from common import logs
from handheld.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="handheld", description="postedge courier handheld app")
    ap.add_argument("--config", required=True, help="TOML config (see docs/handheld.md)")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logs.get("handheld").setLevel(args.log_level.upper())
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from handheld.app import HandheldApp
    from handheld.webui import serve

    try:
        app = HandheldApp(cfg, ui=serve).start()
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"cannot start: {e}", file=sys.stderr)
        return 1
    assert app.web is not None
    print(f"handheld {cfg.device} running; UI at {app.web.url}", flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stop.wait()
    app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
