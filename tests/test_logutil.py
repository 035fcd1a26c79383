"""RateLimitedLog on a fake clock: one line per interval and kind, with the count; Progress:
one line per interval while a phase lasts."""

from __future__ import annotations

import logging

import pytest

from loadgen.logutil import Progress, RateLimitedLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def quiet(clock: FakeClock) -> RateLimitedLog:
    return RateLimitedLog(logging.getLogger("test.quiet"), interval=10.0, clock=clock)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "test.quiet"]


def test_a_storm_of_one_kind_is_one_line_then_one_count_per_interval(
    quiet: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    logged = []
    for n in range(1396):  # 1,396 failures over 15 s
        clock.now = 1000.0 + n * 15 / 1396
        logged.append(quiet.warning("lease", "lease failed", f"Redis unavailable ({n})"))
    assert lines(caplog) == [
        "lease failed: Redis unavailable (0)",
        # the 931st after the first is the first one 10 s later
        "lease failed 931 times in the last 10 s: Redis unavailable (931)",
    ]
    assert logged.count(True) == 2
    caplog.clear()
    clock.now += 1
    assert quiet.flush() == 1  # what the last 5 s counted, said at the end
    [line] = lines(caplog)
    assert line == "lease failed 464 times in the last 6 s: Redis unavailable (1395)"
    assert quiet.flush() == 0


def test_kinds_are_limited_separately_and_keep_their_level(
    quiet: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    quiet.warning("lease", "lease failed", "fleet exhausted")
    quiet.error("connect", "connect failed", "too many open files")
    quiet.warning("lease", "lease failed", "fleet exhausted")
    quiet.error("connect", "connect failed", "too many open files")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "lease failed: fleet exhausted"),
        (logging.ERROR, "connect failed: too many open files"),
    ]
    caplog.clear()
    clock.now += 10
    quiet.warning("lease", "lease failed", "Redis unavailable")
    assert lines(caplog) == ["lease failed 2 times in the last 10 s: Redis unavailable"]


def test_after_a_quiet_interval_the_next_failure_is_said_at_once(
    quiet: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert quiet.warning("renew", "cannot renew leases", "Redis down")
    clock.now += 30
    assert quiet.warning("renew", "cannot renew leases", "Redis down again")
    assert lines(caplog) == [
        "cannot renew leases: Redis down",
        "cannot renew leases: Redis down again",
    ]


def test_one_counted_failure_says_once(
    quiet: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    quiet.warning("lease", "lease failed", "a")
    clock.now += 1
    quiet.warning("lease", "lease failed", "b")
    clock.now += 1
    quiet.flush()
    assert lines(caplog) == ["lease failed: a", "lease failed once in the last 2 s: b"]


def test_progress_says_a_long_phase_once_per_interval_from_its_start(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    progress = Progress(logging.getLogger("test.progress"), interval=5.0, clock=clock)
    said = []
    for second in range(23):  # a phase ticked once a second for 22 s
        clock.now = 1000.0 + second
        if progress.say("waiting for %d of %d to boot", 22 - second, 150):
            said.append(second)
    assert said == [5, 10, 15, 20]  # not at its start (its caller said that), then every 5 s
    messages = [r.getMessage() for r in caplog.records if r.name == "test.progress"]
    assert messages == [f"waiting for {22 - n} of 150 to boot" for n in said]
    clock.now = 1021.5
    progress.restart()  # the next phase: its first line 5 s from now, not from the last line
    clock.now = 1025.0
    assert not progress.say("holding")
    clock.now = 1026.5
    assert progress.say("holding")
