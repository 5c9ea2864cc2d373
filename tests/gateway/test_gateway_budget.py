"""The disk budget: eviction order under a small budget on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from common.config import ConfigError, parse
from gateway.config import BudgetConfig
from gateway.store.budget import ROW_OVERHEAD, Budget
from gateway.store.events import EventStore, StoredEvent
from gateway.store.own_events import OwnEvents
from protocol import envelope

PAD = "x" * 300


def fill(store: EventStore, cls: str, n: int, start: int) -> list[str]:
    evs = []
    for i in range(start, start + n):
        eid = f"lk01:0badc0de:{i}"
        payload = envelope.encode(envelope.make(eid, 1795881163, "locker.t", cls, {"pad": PAD}))
        evs.append(StoredEvent(eid, "o1", "locker", "lk01", "0badc0de", i, cls, "locker.t", 1795881163,
                               payload))
    store.commit_events(evs)
    return [e.id for e in evs]


def classes(store: EventStore) -> dict[str, int]:
    return dict(store.db.execute("SELECT cls, count(*) FROM events GROUP BY cls").fetchall())


def test_eviction_order_and_custody_is_never_evicted(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "gw.db")
    own = OwnEvents(store, "o1", "gw-o1", tmp_path)
    synced = fill(store, "telemetry", 100, 1)
    store.mark_synced(synced)
    custody = fill(store, "custody", 50, 101)
    telemetry = fill(store, "telemetry", 100, 151)
    status = fill(store, "status", 50, 251)
    budget = Budget(store, BudgetConfig(max_bytes=0, reserve_bytes=0))

    def weight(where: str) -> int:
        q = f"SELECT count(*), coalesce(sum(size),0) FROM events WHERE {where}"
        n, size = store.db.execute(q).fetchone()
        return size + n * ROW_OVERHEAD

    # Room for everything but the synced events: those go, and only those.
    budget.cfg.max_bytes = budget.used() - weight("synced_at IS NOT NULL")
    done = budget.enforce(own.emit)
    assert done["freed_synced"] == 100 and done["evicted"] == {} and not done["threatened"]
    assert classes(store) == {"custody": 50, "telemetry": 100, "status": 50}
    # Room for custody and 40 of the 150 status/telemetry: thinned, then oldest first.
    budget.cfg.max_bytes = weight("cls='custody'") + 40 * weight(f"id='{telemetry[0]}'")
    done = budget.enforce(own.emit)
    left = classes(store)
    assert left["custody"] == 50 and not done["threatened"]
    assert set(done["evicted"]) == {"telemetry", "status"}
    assert left.get("telemetry", 0) + left.get("status", 0) <= 40
    kept = {r[0] for r in store.db.execute("SELECT id FROM events WHERE cls IN ('telemetry','status')")}
    assert telemetry[0] not in kept and status[-1] in kept  # the oldest went, the newest stayed
    # The platform learns of the eviction (a gap, not a loss).
    ev = [envelope.decode(p) for (p,) in
          store.db.execute("SELECT payload FROM events WHERE type='gateway.evicted'")]
    assert ev and ev[-1]["body"]["evicted"] == done["evicted"]
    # Only custody (and the gateway's own audit) left, still over: an alarm, nothing more evicted.
    budget.cfg.max_bytes = 10 * weight(f"id='{custody[0]}'")
    done = budget.enforce(own.emit)
    assert done["threatened"] and classes(store)["custody"] == 50
    alarms = [envelope.decode(p)["body"] for (p,) in
              store.db.execute("SELECT payload FROM events WHERE cls='alarm'")]
    assert alarms == [{"alarm": "budget_threatened", "used": alarms[0]["used"], "limit": alarms[0]["limit"]}]
    # Alarmed once per episode.
    budget.enforce(own.emit)
    assert store.db.execute("SELECT count(*) FROM events WHERE cls='alarm'").fetchone()[0] == 1
    assert set(custody) <= {r[0] for r in store.db.execute("SELECT id FROM events")}
    store.close()


def test_hours_left_and_config_errors(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "gw.db")
    b = Budget(store, BudgetConfig(max_bytes=10 * 1024**2, reserve_bytes=0))
    assert b.hours_left() is None  # nothing ingested in the last hour
    fill(store, "custody", 100, 1)
    h = b.hours_left()
    assert h is not None and 0 < h < 24 * 365
    assert abs(b.limit() - 10 * 1024**2) < 1  # the configured max is the smaller here
    for bad, msg in [({"max_mb": -1}, "budget.max_mb: must be a non-negative number, got -1"),
                     ({"maxmb": 5},
                      "budget.maxmb: unknown key; did you mean 'max_mb'? "
                      "(known: interval_s, max_mb, photos_mb, reserve_mb)"),
                     ({"interval_s": "10"}, "budget.interval_s: must be a number at least 0.0, got '10'")]:
        try:
            parse(BudgetConfig, bad, "budget")
        except ConfigError as e:
            assert str(e) == msg
        else:
            raise AssertionError("accepted " + str(bad))
    store.close()


def test_a_typo_in_the_gateway_config_names_the_file_and_the_key_it_meant(tmp_path: Path) -> None:
    """Config errors name the file, and a near miss says
    which key was meant."""
    from gateway.config import GatewayConfig

    f = tmp_path / "gateway.toml"
    for text, want in [('[brokr]\nport = 1\n', "brokr: unknown key; did you mean 'broker'?"),
                       ('[web]\nprot = 8080\n', "web.prot: unknown key; did you mean 'port'?"),
                       ('[budget]\nreserve = 1\n', "budget.reserve: unknown key; did you mean 'reserve_mb'?"),
                       ('[web]\nzzz = 1\n', "web.zzz: unknown key (known: ")]:
        f.write_text(f'outlet = "o1"\ndb = "gw.db"\n{text}', encoding="utf-8")
        try:
            GatewayConfig.load(f)
        except ConfigError as e:
            assert str(e).startswith(f"{f}: {want}"), str(e)
        else:
            raise AssertionError(f"accepted {text!r}")
