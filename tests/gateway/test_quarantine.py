"""The quarantine rule (gateway/ingest/quarantine.py) on a clock the test
moves: refusals, not rates, hold a device; holds double and are forgiven."""

from __future__ import annotations

from gateway.ingest.quarantine import DeviceKey, Quarantine

LK = DeviceKey("o1", "locker", "lk09")
OK = DeviceKey("o1", "locker", "lk02")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def quarantine(clock: Clock) -> Quarantine:
    return Quarantine(min_refused=200, window_s=1.0, first_s=30.0, max_s=100.0, forgive_s=3600.0,
                      clock=clock)


def test_many_valid_messages_are_never_held() -> None:
    clock = Clock()
    q = quarantine(clock)
    for _ in range(50):  # 100,000 valid messages within one second
        assert q.observe({OK: (2000, 0)}) == []
    assert not q.held


def test_refusals_are_summed_within_the_window_only() -> None:
    clock = Clock()
    q = quarantine(clock)
    assert q.observe({LK: (150, 150)}) == []
    clock.t += 1.5  # the window has passed: the count starts again
    assert q.observe({LK: (150, 150)}) == []
    clock.t += 0.5
    newly = q.observe({LK: (60, 60), OK: (500, 0)})
    assert [(k, h.seconds, h.strikes, bad) for k, h, bad in newly] == [(LK, 30.0, 1, 210)]
    assert q.is_held(LK) and not q.is_held(OK)


def test_a_device_whose_refusals_are_a_minority_is_not_held() -> None:
    clock = Clock()
    q = quarantine(clock)
    assert q.observe({LK: (1000, 400)}) == []  # 40 % refused: a bug, not a flood
    assert q.observe({LK: (100, 100)}) == []   # 500 of 1100
    assert q.observe({LK: (100, 100)})         # 600 of 1200: half


def test_holds_double_up_to_the_cap_and_a_clean_hour_forgives() -> None:
    clock = Clock()
    q = quarantine(clock)
    lengths = []
    for _ in range(4):
        (_, hold, _), = q.observe({LK: (300, 300)})
        lengths.append(hold.seconds)
        assert q.observe({LK: (300, 300)}) == []  # already held: nothing new
        clock.t += hold.seconds - 0.1
        assert q.release_due() == []
        clock.t += 0.2
        assert q.release_due() == [LK]
    assert lengths == [30.0, 60.0, 100.0, 100.0]
    clock.t += 3601
    (_, hold, _), = q.observe({LK: (300, 300)})
    assert (hold.seconds, hold.strikes) == (30.0, 1)
