"""loadgen.pacing: how a process starts a batch of users (pure, on a fake clock)."""

from __future__ import annotations

import gc

import pytest

from loadgen.pacing import (
    MAX_START_SPACING_S,
    CollectorFreeze,
    StartPacer,
    start_offset,
    starts_since,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_big_batch_is_spread_over_the_second_a_small_one_keeps_its_pace() -> None:
    assert start_offset(0, 1) == 0.0
    # 1,000 at once (--spawn-rate 1000): one a millisecond, the last at 0.999 s
    assert start_offset(999, 1000) == pytest.approx(0.999)
    # 4,000 at once: all within the second, not over four
    assert start_offset(3999, 4000) == pytest.approx(0.99975)
    # a capacity rate step of 25 chargers at 1,000/s: 24 ms, not spread over a second
    assert start_offset(24, 25) == pytest.approx(24 * MAX_START_SPACING_S)
    assert start_offset(9, 10) == pytest.approx(0.009)


def test_users_made_together_are_one_batch_and_start_in_turn() -> None:
    clock = Clock()
    pacer = StartPacer(clock)
    tickets = [pacer.arrive() for _ in range(500)]  # Locust's spawn loop: no yield between
    clock.now += 0.0002  # the first user runs once the loop yielded
    waits = [pacer.delay(t) for t in tickets]
    assert waits[0] == 0.0
    assert waits[1] == pytest.approx(0.0008)
    assert waits[-1] == pytest.approx(499 * 0.001 - 0.0002)
    # the next second's users are a batch of their own, though some of the first still wait
    clock.now += 0.8
    second = [pacer.arrive() for _ in range(2)]
    assert [pacer.delay(t) for t in second] == [0.0, pytest.approx(0.001)]
    # a user whose turn passed while it was being made starts at once
    late = pacer.arrive()
    clock.now += 1.0
    assert pacer.delay(late) == 0.0


def test_each_batch_says_when_it_came_so_a_rate_step_knows_when_its_users_started() -> None:
    clock, wall = Clock(), Clock()
    wall.now = 1_700_000_000.0
    pacer = StartPacer(clock, wall)
    step_began = wall.now  # a master began the step; its worker got the users 0.3 s later
    wall.now += 0.3
    first = [pacer.arrive() for _ in range(20)]
    [pacer.delay(t) for t in first]
    wall.now += 1.0
    second = [pacer.arrive() for _ in range(20)]
    [pacer.delay(t) for t in second]
    assert list(pacer.batch_starts) == [step_began + 0.3, step_began + 1.3]  # one per batch
    assert starts_since(pacer.batch_starts, step_began) == [step_began + 0.3, step_began + 1.3]
    assert starts_since(pacer.batch_starts, step_began + 0.5) == [step_began + 1.3]
    assert starts_since(pacer.batch_starts, step_began + 2) == []  # not yet


def test_the_collector_is_frozen_at_most_every_interval_and_let_go_when_users_stop() -> None:
    clock, events = Clock(), []
    collector = CollectorFreeze(
        clock, 0.1, freeze=lambda: events.append("freeze"), unfreeze=lambda: events.append("thaw")
    )
    collector.release()
    assert events == []  # nothing frozen: nothing to give back
    for _ in range(100):  # a batch starting within 50 ms: one freeze
        collector.hold()
        clock.now += 0.0005
    assert events == ["freeze"] and collector.frozen
    clock.now += 0.1
    collector.hold()
    assert events == ["freeze", "freeze"]
    collector.release()
    collector.release()  # every stopping user says so: one unfreeze
    assert events == ["freeze", "freeze", "thaw"] and not collector.frozen


def test_frozen_objects_are_out_of_the_collectors_sight_until_released() -> None:
    clock = Clock()
    collector = CollectorFreeze(clock)
    stations = [{"id": n, "queue": []} for n in range(1000)]

    def seen(thing: object) -> bool:
        return any(o is thing for generation in range(3) for o in gc.get_objects(generation))

    assert seen(stations[0])
    try:
        collector.hold()
        assert gc.get_freeze_count() >= len(stations)
        assert not seen(stations[0])
    finally:
        collector.release()
    assert gc.get_freeze_count() == 0
    assert seen(stations[0])
