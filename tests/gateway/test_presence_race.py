"""The presence race, reproduced: the broker restarts
20 times while every device publishes, and at the end every device is online
in the gateway and no event was lost.

Why it raced: after a broker restart a device reconnects within a second, and
the broker can then publish the Will of the device's old connection (or hand
the gateway a retained "offline" saved before the stop) after the new
"online". The gateway used to take that "offline" and showed a locker that
kept sending as offline for hours. Now presence names its connection
(``protocol/presence.py``) and any event proves life.

Real parts: Mosquitto restarted on the same port with its persistence, the
gateway process and its SQLite store, the real locker and counter firmware in
process (the simulator's pytest plugin), the courier handheld's real link.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from gateway.store.events import EventStore
from simulator.ledger import delivery_summary
from simulator.outlet import stored_events
from simulator.pytest_plugin import SimHandheld, SimOutlet
from simulator.scenario import day_start

RESTARTS = 20


def gateway_online(sim: SimOutlet) -> dict[str, bool]:
    s = EventStore(sim.outlet.gw_db)
    try:
        return {d["device"]: bool(d["online"]) for d in s.devices() if d["kind"] != "gateway"}
    finally:
        s.close()


@pytest.mark.slow
# Today's virtual start: the gateway holds the courier badge's command to the wall clock.
@pytest.mark.outlet(lockers=2, scanners=2, compartments=24, start=day_start())
def test_every_device_is_online_after_twenty_broker_restarts(outlet: SimOutlet,
                                                             handheld: SimHandheld) -> None:
    devices = sorted([*outlet.lockers, *outlet.scanners, "hh01"])
    stop = threading.Event()
    errors: list[BaseException] = []
    sent = {"intake": 0, "handheld": 0, "deposit": 0}
    hh_ids: list[str] = []

    def scanners() -> None:
        try:
            while not stop.is_set():
                for sc in outlet.scanners:
                    outlet.intake(sc, outlet.new_parcel())
                    sent["intake"] += 1
                hh_ids.append(handheld.emit("handheld.intake", "custody", {"parcel": outlet.new_parcel()}))
                sent["handheld"] += 1
                time.sleep(0.25)
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(RuntimeError(f"scanning: {e!r}"))

    def lockers() -> None:
        try:
            i = 0
            while not stop.is_set():
                lk = outlet.lockers[i % len(outlet.lockers)]
                p = outlet.new_parcel()
                outlet.deposit(lk, p, size="S")
                outlet.pickup(lk, p)
                sent["deposit"] += 1
                i += 1
                time.sleep(0.25)
        except BaseException as e:  # noqa: BLE001
            errors.append(RuntimeError(f"deposits: {e!r}"))

    assert outlet.wait_for(lambda: all(gateway_online(outlet).get(d) for d in devices), 30), \
        gateway_online(outlet)
    workers = [threading.Thread(target=scanners, daemon=True), threading.Thread(target=lockers, daemon=True)]
    for w in workers:
        w.start()
    broker = outlet.outlet.broker
    rng = random.Random(20261204)
    t0 = time.monotonic()
    try:
        for _ in range(RESTARTS):
            # Some restarts inside the devices' reconnect back-off; half of
            # them SIGKILL, so the broker comes back with what it last saved
            # (a retained "offline" of an older connection among it).
            time.sleep(rng.uniform(0.1, 1.2))
            if rng.random() < 0.5:
                broker.kill()
            else:
                broker.stop()
            time.sleep(rng.uniform(0.0, 0.3))
            broker.start()
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    restarts_s = time.monotonic() - t0
    assert not errors, errors
    assert sent["intake"] and sent["handheld"] and sent["deposit"], sent

    assert outlet.settle(60), outlet.missing()[:5]
    # No event lost: every one a device emitted is in the gateway's store and
    # at the platform. (The ledger's broker hop is the simulator's own
    # subscriber, which a SIGKILLed broker can rob of what it had not saved,
    # and resends after a kill reorder; neither is a loss.)
    ledger = outlet.ledger()
    hops = {h["hop"]: h for h in ledger["per_hop"]}
    assert hops["gateway"]["lost"] == 0 and ledger["end_to_end"]["lost"] == 0, delivery_summary(ledger)
    assert ledger["events"] >= sent["intake"] + sent["deposit"], (ledger["events"], sent)
    # The handheld's events (its own outbox, not on the ledger's device hop).
    at_platform = {e["id"] for e in outlet.central_events()}
    at_gateway = {e["id"] for e in stored_events(outlet.outlet.gw_db)}
    assert [e for e in hh_ids if e not in at_gateway or e not in at_platform] == []
    # The gateway's own view, as the clerk's page and `gateway status` read it.
    assert outlet.wait_for(lambda: all(gateway_online(outlet).get(d) for d in devices), 15), \
        gateway_online(outlet)
    time.sleep(2)  # a late Will still on its way would land now
    final = gateway_online(outlet)
    assert all(final.get(d) for d in devices), (final, restarts_s)
