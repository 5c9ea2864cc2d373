"""The platform's own work on a timer, in one place for ``postedge central
run`` and for the simulator's central service (``simulator/central.py``),
so both run the same steps in the same order:

- answering revoked devices (``central/revocations.py``);
- deciding the clerks' requests (``central/clerk_requests.py``);
- reviewing board evidence (``central/boards.py``);
- making the boards' scheduled maintenance jobs once a site's revisit is due
  (``Boards.schedule_revisits``; after the review, so a visit accepted in
  this tick already counts);
- re-checking the postage of counter acceptances against the documents
  they cite (``central/postage_audit.py``);
- with an SMS provider, pickup notices and villagers' delivery tokens
  (``central/notices.py``).

A step that fails is logged and tried again on the next tick; one failing
step does not keep the others from running.

The first two are security-relevant (``SecurityDuties``); every duty asks
only for ``central/duty_store.py``, so a scale-out ``postedge central run``
runs them all (``Duties``), as the embedded one does. One pass at a time
per store (``duties_turn``): a scale-out deployment may run the duties in
several front processes, and a tick that finds another process's pass
running is skipped (the embedded backend's waits for it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from central.boards import Boards
from central.clerk_requests import ClerkRequests
from central.config import CentralConfig
from central.duty_store import DutyStore
from central.notices import HttpSms, Notices, SmsProvider
from central.postage_audit import PostageAudit
from central.revocations import Revocations

log = logging.getLogger(__name__)


class SecurityDuties:
    """Answering revoked devices and deciding clerks' requests, on any backend."""

    def __init__(self, backend: DutyStore, master: bytes, clock: Callable[[], float] = time.time,
                 device_clock: Callable[[str], float] | None = None) -> None:
        """``device_clock``: an outlet's devices' time, which the commands
        signed for its lockers carry (in the simulator's virtual time it is
        not the wall's; default ``clock``)."""
        self.store = backend
        self.revocations = Revocations(backend, master, clock=clock, device_clock=device_clock)
        self.clerk_requests = ClerkRequests(backend, master, clock=clock, device_clock=device_clock)
        self.failures = 0
        self.passes = 0  # passes run (a tick skipped for another process's pass is not one)

    def steps(self) -> list[Callable[[], object]]:
        return [self.revocations.run_once, self.clerk_requests.run_once]

    def run_once(self) -> bool:
        """One pass over every step; False when another process's pass was running."""
        with self.store.duties_turn() as mine:
            if not mine:
                return False
            for step in self.steps():
                try:
                    step()
                except Exception:  # the next tick tries again
                    self.failures += 1
                    log.warning("central duty %s failed", getattr(step, "__qualname__", step), exc_info=True)
            self.passes += 1
            return True

    def run_until(self, stop: threading.Event, interval_s: float) -> None:
        while not stop.wait(interval_s):
            try:
                self.run_once()
            except Exception:  # the store itself failed (the database restarting): the next tick
                self.failures += 1
                log.warning("central duties: no pass this tick", exc_info=True)


class Duties(SecurityDuties):
    """Every duty, on either backend: the security ones, the boards' review
    and revisits, the postage audit and, with an SMS provider, the pickup
    notices and delivery tokens (each asks only for the duty store)."""

    def __init__(self, backend: DutyStore, master: bytes, sms: SmsProvider | None = None,
                 clock: Callable[[], float] = time.time, boards: Boards | None = None,
                 device_clock: Callable[[str], float] | None = None) -> None:
        """``sms``: the provider pickup notices go through (none: no notices);
        ``boards``: the registry the front serves, when it has one (else a
        new one); ``device_clock``: as ``SecurityDuties``."""
        super().__init__(backend, master, clock=clock, device_clock=device_clock)
        self.boards = boards or Boards(backend, master, clock=clock, device_clock=device_clock)
        self.postage = PostageAudit(backend, clock=clock)
        self.notices = (Notices(backend, master, sms, backend.notifier_outlets, clock=clock)
                        if sms is not None else None)

    def steps(self) -> list[Callable[[], object]]:
        out = super().steps() + [self.boards.run_once, self.boards.schedule_revisits, self.postage.run_once]
        if self.notices is not None:
            out.append(self.notices.run_once)
        return out


def run_configured(cfg: CentralConfig, folder: Path, backend: Any, master: bytes,
                   stop: threading.Event) -> None:
    """The duties a central folder's configuration asks for, every
    ``notice_interval_s`` until ``stop``: all of them on the embedded
    backend; on the scale-out one the answers to revoked devices and clerks'
    requests, the postage audit, and pickup notices with an SMS provider
    configured. Every
    process serving a scale-out folder may run this (``postedge central
    run`` and ``python -m central.scaleout.serve --central``): the store's
    ``duties_turn`` lets one pass run at a time across them. A store that
    cannot be reached at start is tried again on the next tick."""
    duties: SecurityDuties | None = None
    while duties is None:
        try:
            sms = None
            if cfg.sms_url and cfg.sms_token_file:
                sms = HttpSms(cfg.sms_url,
                              cfg.path(folder, cfg.sms_token_file).read_text(encoding="utf-8").strip())
            duties = Duties(backend, master, sms)
        except Exception:  # the database restarting, the token file not there yet: the next tick tries again
            log.warning("central duties not started", exc_info=True)
            if stop.wait(cfg.notice_interval_s):
                return
    duties.run_until(stop, cfg.notice_interval_s)
