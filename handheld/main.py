"""Run the courier handheld app until SIGINT/SIGTERM (``postedge handheld run``).

The command line itself (its help in the courier's language, ``--lang``)
belongs to ``postedge/handheld_cmd.py``; this is the part that needs the
app: load the config, start the app and its UI, wait for a signal, stop.

Outcomes: :data:`OK` after a clean stop; :class:`ConfigError` propagates
for a config problem (the message names the file and the key); an OSError
(the UI port taken, the state folder not writable) propagates as the
environment's problem. The caller turns each into one line and an exit code.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from common import logs
from handheld.config import load_config

OK = 0


def run(config: str, log_level: str = "INFO", started: Callable[[str, str], None] | None = None) -> int:
    """Run the app from the TOML file ``config``; ``started(device, url)``
    is told once the UI answers."""
    logs.get("handheld").setLevel(log_level.upper())
    cfg = load_config(config)
    from handheld.app import HandheldApp
    from handheld.webui import serve

    app = HandheldApp(cfg, ui=serve).start()
    assert app.web is not None
    if started is not None:
        started(cfg.device, app.web.url)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stop.wait()
    app.stop()
    return OK
