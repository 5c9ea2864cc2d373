"""The gateway as one service: which parts run for a configuration, and the
operator's one-shot jobs on the same store. The command line formats what
these return; it holds no wiring and no SQL.

Running parts: the ingest loop on the main thread (device messages in,
commands out, confirmations, the disk budget); with ``[upstream]`` the
syncer, the downlink and the photo sync; with ``[web]`` the HTTP server;
with ``[notify] modem`` the SMS notifier.
A SIGTERM (systemd's stop) finishes the group in hand and exits cleanly.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from common import clock
from common.config import ConfigError
from gateway.config import GatewayConfig
from gateway.ingest.loop import CrashPoints, Ingest
from gateway.ingest.relay import Relay
from gateway.running import RunningLock, is_running
from gateway.store.events import EventStore
from gateway.store.own_events import OwnEvents


class _Service(Protocol):
    def join(self, timeout: float | None = None) -> None: ...


def run(cfg: GatewayConfig, faults: CrashPoints | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    try:  # a simulation's clock file that cannot be used stops the gateway here, not mid-run
        clock.configure()
    except clock.ClockError as e:
        raise ConfigError.at(clock.ENV, e) from e
    # `gateway status` tells a stopped gateway by this lock; a second gateway
    # on the same database (two ingest loops, two syncers) is refused by it.
    alive = RunningLock(cfg.db)  # BlockingIOError: one is running
    ing = Ingest(cfg, faults or CrashPoints())
    stop = threading.Event()
    services: list[_Service] = []
    counter = None
    if cfg.web is not None and cfg.counter is not None:  # the counter's desk answers through the web server
        from gateway.counter.from_config import build_desk

        counter = build_desk(cfg.counter, Path(cfg.db), cfg.outlet)
    if cfg.upstream is not None:
        from gateway.uplink.downlink import Downlink
        from gateway.uplink.photo_sync import start_photo_sync
        from gateway.uplink.sync import start_syncer

        services.append(start_syncer(cfg.db, cfg.outlet, cfg.upstream, stop))
        services.append(Downlink(cfg.db, cfg.outlet, cfg.upstream, stop,
                                 documents=counter.install if counter is not None else None).start())
        # Photos go up only while the event backlog is empty (HTTPS uplinks).
        services.append(start_photo_sync(cfg.db, cfg.outlet, cfg.upstream, stop))
    if cfg.web is not None:
        from gateway.http.server import start_web

        services.append(start_web(cfg.db, cfg.web, stop, cfg.outlet, cfg.broker.client_id, counter=counter,
                                  notify_key_file=cfg.notify.key_file, tz_offset_h=cfg.notify.tz_offset_h,
                                  upstream=cfg.upstream is not None))
    if cfg.notify.enabled:
        from gateway.notify.notifier import Notifier

        services.append(Notifier(cfg, stop).start())

    def shutdown(*_: object) -> None:
        stop.set()
        ing.stop()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        ing.run()
    finally:
        stop.set()
        for svc in services:
            svc.join(10)
        ing.close()
        alive.release()
    return 0


def _inventory(cfg: GatewayConfig) -> tuple[tuple[str, str], ...]:
    """The provisioned devices (the broker's ACL, as ``[web]`` or ``[broker]``
    names it); none when neither names one or it cannot be read."""
    from gateway.http.status import inventory

    for acl in (cfg.web.acl_file if cfg.web else None, cfg.broker.acl_file):
        if acl:
            try:
                return inventory(Path(acl).read_text(encoding="utf-8"))
            except OSError:
                continue
    return ()


def status(cfg: GatewayConfig) -> dict[str, Any]:
    """What the clerk needs to know: devices, backlog, sync, commands, alarms.

    Device counts come from the status page's read model (``status.snapshot``)
    with the provisioning inventory, so ``gateway status`` and the page count
    the same devices, a provisioned one that never connected included."""
    from gateway.http.status import Setup, snapshot

    store = EventStore(cfg.db)
    try:
        snap = snapshot(store, setup=Setup(cfg.upstream is not None, _inventory(cfg)))
        summary = snap["summary"]
        last_sync = store.get("last_sync_at")
        return {"outlet": cfg.outlet, "running": is_running(cfg.db),
                "devices_online": summary["devices_online"], "devices": summary["devices_total"],
                "devices_never": sorted(d["device"] for d in snap["devices"] if d["never"]),
                "broker_link": snap["gateway"]["broker"], "upstream": cfg.upstream is not None,
                "backlog": store.backlog(), "alarms": store.recent("alarm", 5),
                "commands_pending": store.pending_commands(),
                "last_sync_at": float(last_sync) if last_sync else None}
    finally:
        store.close()


def devices(cfg: GatewayConfig) -> list[dict[str, Any]]:
    store = EventStore(cfg.db)
    try:
        return store.devices()
    finally:
        store.close()


class Enqueuer:
    """Queues signed commands for devices from outside the running gateway
    (the relay delivers them when the device is online)."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.store = EventStore(cfg.db)
        own = OwnEvents(self.store, cfg.outlet, cfg.broker.client_id, Path(cfg.db).parent)
        self.relay = Relay(self.store, cfg.outlet, own, lambda *_: None)

    def enqueue(self, kind: str, payload: bytes) -> str:
        """The command's id; ProtocolError for a command that is refused."""
        return self.relay.enqueue(kind, payload)

    def close(self) -> None:
        self.store.close()


def drain(cfg: GatewayConfig, timeout_s: float) -> tuple[int, int]:
    """Sync the whole backlog now: (sent, left). Run with the gateway
    stopped, before swapping or moving a box (a running gateway's syncer
    would send the same batches; the central side drops the duplicates, but
    the link pays twice)."""
    from gateway.uplink.sync import start_syncer

    assert cfg.upstream is not None
    store = EventStore(cfg.db)
    try:
        before = store.backlog()["count"]
        stop = threading.Event()
        syncer = start_syncer(cfg.db, cfg.outlet, cfg.upstream, stop)
        deadline = time.monotonic() + timeout_s
        try:
            while store.backlog()["count"] and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            stop.set()
            syncer.join(15)
        left = int(store.backlog()["count"])
        return int(before) - left, left
    finally:
        store.close()
