"""Pickup-notices pass benchmark (embedded backend, SQLite).

How long one pass of the pickup notices (``central/notices.py``) takes
when one new deposit has come in since the last pass, on a store that holds
1,000 and then 100,000 earlier deposits whose notices are all decided.
Ours reads only what was stored since the last pass (``events_after``, a
cursor and an index) and the pending notices; the anchor is the pass as it
was before, which read every deposit and route ever stored and every
notice row on each pass (``FullRead`` below, the same steps over the same
store). Same file, same deposits, same machine, alternating runs.

The earlier deposits are written straight into the store's tables in one
transaction (the setup, not measured); the new one each pass goes through
the backend's ``store`` as a gateway's batch does. No contact is held for
it, so each pass decides one notice (``no_contact``) and texts nothing: the
time is the pass's reading, not a provider's.

Last line: notices_pass ours_1k_ms=... anchor_1k_ms=... ours_100k_ms=... anchor_100k_ms=... ratio_100k=...
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from central.embedded import Embedded  # noqa: E402
from central.intake import check_batch  # noqa: E402
from central.notices import NOTICES, TOKEN, TOKEN_NOTICES, Notices  # noqa: E402
from common.uplink_codec import encode_batch  # noqa: E402
from protocol import envelope  # noqa: E402
from protocol.ids import format_event_id  # noqa: E402

SIZES = (1_000, 100_000)
PASSES = 7  # timed passes per side and size; the median is reported


class Sms:
    def send(self, to: str, text: str, ref: str) -> str:  # never called: no contacts
        raise AssertionError("no text expected")


class FullRead(Notices):
    """The anchor: the pass as it was, every deposit, route and notice read."""

    def run_once(self) -> int:
        with_notifier = self.notifier_outlets()
        due: list[tuple[str, str, str]] = []
        for outlet, _, body in self.b.events_of("notify.route"):
            if (outlet in with_notifier and body.get("by") == "platform"
                    and isinstance(body.get("event"), str)):
                due.append((outlet, body["event"], str(body.get("purpose", "notice"))))
        for outlet, eid, _ in self.b.events_of("locker.deposit"):
            if outlet not in with_notifier:
                due.append((outlet, eid, "notice"))
        tokens = sorted(self.b.rows(TOKEN_NOTICES.name, {}),
                        key=lambda r: (r["at"], r["outlet"], r["parcel"]))
        due += [(r["outlet"], r["parcel"], TOKEN) for r in tokens]
        done = {(r["outlet"], r["deposit"], r["purpose"]) for r in self.b.rows(NOTICES.name, {})
                if r["state"] != "retry" and not (r["purpose"] == TOKEN and r["state"] == "no_contact")}
        sent = 0
        for outlet, deposit, purpose in (d for d in due if d not in done):
            sent += self._token(outlet, deposit) if purpose == TOKEN else self._one(outlet, deposit, purpose)
        return sent


def deposit(device: str, seq: int) -> tuple[str, bytes]:
    eid = format_event_id(device, "0dd0beef", seq)
    body = {"compartment": seq % 24 + 1, "parcel": f"RB{seq:09d}CN", "courier": "c001", "expires": 1796000000}
    return eid, envelope.encode(envelope.make(eid, 1795881163, "locker.deposit", "custody", body, boot=1))


def fill(b: Embedded, n: int) -> None:
    """``n`` earlier deposits, each with its notice decided, in one transaction."""
    now = time.time() - 3600
    rows = [deposit("lk01", i + 1) for i in range(n)]
    with b.lock:
        b.db.execute("BEGIN")
        b.db.executemany("INSERT INTO events (id, outlet, device, type, cls, ts, payload, batch, "
                         "received_at) VALUES (?, 'o1', 'lk01', 'locker.deposit', 'custody', 1795881163, "
                         "?, 'old', ?)",
                         [(eid, payload, now) for eid, payload in rows])
        b.db.executemany("INSERT INTO notices (deposit, purpose, outlet, parcel, state, attempts, at) "
                         "VALUES (?, 'notice', 'o1', ?, 'no_contact', 0, ?)",
                         [(eid, f"RB{i + 1:09d}CN", now) for i, (eid, _) in enumerate(rows)])
        b.db.execute("COMMIT")


def timed(b: Embedded, duty: Notices, seq: list[int]) -> float:
    """One new deposit stored, then one pass timed (ms)."""
    seq[0] += 1
    enc = encode_batch("o1", "bulk", [deposit("lk02", seq[0])])
    b.store("o1", check_batch("o1", enc.id, enc.body))
    t0 = time.perf_counter()
    duty.run_once()
    return (time.perf_counter() - t0) * 1000


def run(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        b = Embedded(Path(d))
        try:
            ours = Notices(b, bytes(32), Sms(), set)  # makes the tables
            fill(b, n)
            anchor = FullRead(b, bytes(32), Sms(), set)
            t0 = time.perf_counter()
            ours.run_once()  # the first pass reads everything once
            first = (time.perf_counter() - t0) * 1000
            seq = [0]
            times: dict[str, list[float]] = {"ours": [], "anchor": []}
            for _ in range(PASSES):
                times["ours"].append(timed(b, ours, seq))
                times["anchor"].append(timed(b, anchor, seq))
            states = {r["state"] for r in b.rows("notices", {"outlet": "o1"})}
            assert states == {"no_contact"} and len(b.rows("notices", {})) == n + 2 * PASSES
        finally:
            b.close()
    return {"first": first, **{k: statistics.median(v) for k, v in times.items()}}


def main() -> None:
    results = {n: run(n) for n in SIZES}
    print(f"{'deposits':>9} {'ours ms':>9} {'anchor ms':>10} {'anchor/ours':>12} {'our first pass ms':>18}")
    for n, r in results.items():
        ratio = r["anchor"] / r["ours"]
        print(f"{n:>9} {r['ours']:>9.2f} {r['anchor']:>10.2f} {ratio:>12.1f} {r['first']:>18.0f}")
    small, big = results[SIZES[0]], results[SIZES[1]]
    print(f"notices_pass ours_1k_ms={small['ours']:.2f} anchor_1k_ms={small['anchor']:.2f} "
          f"ours_100k_ms={big['ours']:.2f} anchor_100k_ms={big['anchor']:.2f} "
          f"ratio_100k={big['anchor'] / big['ours']:.0f}")


if __name__ == "__main__":
    main()
