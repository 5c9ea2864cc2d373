"""The embedded backend's read side for reports (the simulator's ledger and
dispatcher's view): events paged by store order and kept per outlet, a
reader that asks again reads only what is new, and whole photos only."""

from __future__ import annotations

import hashlib
from pathlib import Path

from central.embedded import Embedded
from central.intake import check_batch
from common.uplink_codec import encode_batch
from tests.central.test_contract import events


def _store(b: Embedded, outlet: str, rows: list[tuple[str, bytes]]) -> None:
    enc = encode_batch(outlet, "bulk", rows)
    b.store(outlet, check_batch(outlet, enc.id, enc.body))


def test_events_since_pages_in_store_order_per_outlet(tmp_path: Path) -> None:
    b = Embedded(tmp_path / "c")
    try:
        a_rows, b_rows = events("lk01", 5, inc="aaaa0001"), events("lk01", 3, inc="bbbb0002")
        _store(b, "o1", a_rows)
        _store(b, "o2", b_rows)
        _store(b, "o1", a_rows[:2])  # a resend: nothing new to read
        got = b.events_since(0)
        want = [("o1", i) for i, _ in a_rows] + [("o2", i) for i, _ in b_rows]
        assert [(o, i) for _, o, i, _, _ in got] == want
        assert [p for _, _, _, p, _ in got] == [p for _, p in a_rows + b_rows]
        last = got[-1][0]
        assert b.events_since(last) == []
        more = events("lk02", 2, inc="cccc0003")
        _store(b, "o2", more)
        assert [i for _, _, i, _, _ in b.events_since(last)] == [i for i, _ in more]
        assert [i for _, _, i, _, _ in b.events_since(0, outlet="o2")][:3] == [i for i, _ in b_rows]
        assert len(b.events_since(0, limit=4)) == 4
    finally:
        b.close()


def test_complete_photos_are_only_the_whole_ones(tmp_path: Path) -> None:
    b = Embedded(tmp_path / "c")
    try:
        whole, half = b"x" * 2048, b"y" * 2048
        sw, sh = hashlib.sha256(whole).hexdigest(), hashlib.sha256(half).hexdigest()
        b.photo_begin("o1", sw, 2048, 1024, {})
        b.photo_begin("o1", sh, 2048, 1024, {})
        for i in range(2):
            part = whole[i * 1024:(i + 1) * 1024]
            b.photo_chunk(sw, i, part, hashlib.sha256(part).hexdigest())
        b.photo_chunk(sh, 0, half[:1024], hashlib.sha256(half[:1024]).hexdigest())
        assert b.complete_photos() == {sw}
    finally:
        b.close()
