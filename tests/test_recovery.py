"""The recovery tracker on synthetic per-second series (pure)."""

from __future__ import annotations

from loadgen.recovery import (
    BOOT_FAILURES,
    CONNECT_FAILURES,
    FIRST_BOOTS,
    KINDS,
    LOST,
    REBOOTS,
    STOPPED,
    RecoveryCounter,
    find_recoveries,
)

T0 = 1_800_000_000  # a wall-clock second


def ramp(counter: RecoveryCounter, chargers: int, per_s: int = 50) -> int:
    """Boot ``chargers`` at ``per_s`` from T0; the second after the last boot."""
    second = T0
    while chargers > 0:
        counter.count(FIRST_BOOTS, second, min(per_s, chargers))
        chargers -= per_s
        second += 1
    return second


def test_a_restart_is_found_with_its_recovery_time_peak_rate_and_failures() -> None:
    counter = RecoveryCounter()
    after = ramp(counter, 1000)  # 20 s of ramp
    drop = after + 30
    counter.count(LOST, drop, 700)
    counter.count(LOST, drop + 1, 300)  # every charger within 2 s
    # they come back over 12 s, 40 then up to 120 a second; some fail on the way
    back = [40, 60, 80, 100, 120, 120, 110, 100, 90, 80, 60, 30, 10]
    for k, n in enumerate(back):
        counter.count(REBOOTS, drop + 2 + k, n)
    counter.count(CONNECT_FAILURES, drop + 3, 25)
    counter.count(BOOT_FAILURES, drop + 4, 4)
    (event,) = find_recoveries(counter.series, start=T0)
    assert event.at_s == drop - T0 and event.lost == 1000 and event.booted_before == 1000
    # 99 % = 990 rebooted: reached in the 12th second of re-boots (sum of the first 12)
    assert sum(back[:11]) < 990 <= sum(back[:12])
    assert event.recovered_s == 2 + 12
    assert event.peak_reboots_per_s == 120
    assert (event.connect_failures, event.boot_failures) == (25, 4)
    assert "1000 of 1000 chargers lost" in event.summary()
    assert "99% booted again after 14 s" in event.summary()


def test_scattered_drops_and_ramp_down_are_not_mass_disconnects() -> None:
    counter = RecoveryCounter()
    after = ramp(counter, 200)
    for k in range(60):  # 2 a second for a minute: 120 in all, never half in 5 s
        counter.count(LOST, after + k, 2)
        counter.count(REBOOTS, after + k + 1, 2)
    # Locust stopping every user is not a CSMS failure
    counter.count(STOPPED, after + 100, 200)
    assert find_recoveries(counter.series, start=T0) == []
    small = RecoveryCounter()
    small.count(FIRST_BOOTS, T0, 4)
    small.count(LOST, T0 + 5, 4)  # all of them, but only 4 chargers
    assert find_recoveries(small.series, start=T0) == []


def test_a_recovery_not_finished_by_the_end_says_so_and_two_events_are_two() -> None:
    counter = RecoveryCounter()
    after = ramp(counter, 100)
    counter.count(LOST, after + 10, 100)
    counter.count(REBOOTS, after + 15, 100)
    counter.count(LOST, after + 40, 80)
    counter.count(REBOOTS, after + 45, 50)
    first, second = find_recoveries(counter.series, start=T0)
    assert (first.lost, first.recovered_s) == (100, 6)
    assert (second.lost, second.booted_before, second.rebooted) == (80, 100, 50)
    assert second.recovered_s is None
    assert "not recovered by the end of the run (50 booted again)" in second.summary()


def test_workers_counts_merge_by_wall_clock_second() -> None:
    """Each worker sees half of the fleet: the master's merge finds the one event."""
    master = RecoveryCounter()
    for _ in range(2):
        worker = RecoveryCounter()
        after = ramp(worker, 50)
        worker.count(LOST, after + 5, 50)
        worker.count(REBOOTS, after + 7, 50)
        master.merge(worker.drain())
        assert worker.series == {}
    master.merge({"garbage": [1], str(T0): "x", "1": None})  # a broken report is ignored
    (event,) = find_recoveries(master.series, start=T0)
    assert (event.lost, event.booted_before, event.rebooted, event.recovered_s) == (
        100,
        100,
        100,
        3,
    )
    assert len(master.series[T0]) == len(KINDS)
