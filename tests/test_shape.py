"""The capacity search as a Locust load shape (loadgen/locust/shape.py), driven tick by tick
with a fake clock against a simulated fleet whose metrics go through a real
:class:`~loadgen.metrics.collectors.Metrics` and :class:`~loadgen.metrics.merge.MergedCollector`.

Importing loadgen.locust.shape imports Locust, which monkey-patches the standard library
(gevent), and tests/test_link.py checks that nothing patched pytest's process. So the cases
below run in one child process (``import locust`` first, then this module), which answers
with each case's traceback or nothing; the tests here only look at those answers.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadgen.capacity.config import CapacityConfig
from loadgen.capacity.search import CapacityResult
from loadgen.metrics.collectors import Metrics
from loadgen.metrics.merge import MergedCollector
from loadgen.metrics.observer import MetricsObserver
from loadgen.physics import FakeClock

pytestmark = pytest.mark.seconds(20)  # conftest.py: the start order

ROOT = Path(__file__).resolve().parent.parent

#: the cases, run in the child process: name -> function
CASES: dict[str, Callable[[], None]] = {}


def case(function: Callable[[], None]) -> Callable[[], None]:
    CASES[function.__name__] = function
    return function


# -- the simulated fleet --------------------------------------------------------------------


class World:
    """Chargers against a CSMS that accepts at most ``ceiling`` connections.

    The users follow the shape's ``(target, rate)`` the way Locust's runner does (at most
    ``max_users`` of them); each user opens a connection, refused above the ceiling (once:
    the charger then waits in its back-off and attempts nothing more); every connected
    charger is booted (its BootNotification Accepted) at once, or at most ``boot_rate`` a
    second in arrival order, and then sends one Heartbeat a second, answered in
    ``latency(now)`` seconds. With ``refuse_until`` the CSMS refuses every connection until
    then, and the chargers it refused come back only when the shape tells them to retry
    (``on_target``; their OCPP back-off would take longer). It all goes
    through a real MetricsObserver; the shape sees it through ``MergedCollector.merged``.
    The world also stands in for Locust's runner (``user_count``) and stats
    (``latencies``: ms -> count, like ``StatsEntry.response_times``) and records the
    shape's callbacks.
    """

    def __init__(
        self,
        ceiling: int = 1_000_000,
        latency: Callable[[float], float] = lambda now: 0.02,
        max_users: int | None = None,
        cpu: Callable[[float], float] | None = None,
        boot_rate: float | None = None,
        spawn_limit: float | None = None,
        refuse_until: float | None = None,
    ) -> None:
        self.clock = FakeClock(start=5000.0)
        self.metrics = Metrics(worker="local")
        self.observer = MetricsObserver(self.metrics)
        self.collector = MergedCollector(self.metrics, stale_after=None)
        self.ceiling = ceiling
        self.latency = latency
        self.max_users = max_users
        self.cpu = cpu
        self.users = 0.0
        self.want = 0
        self.rate = 0.0
        self.connected = 0
        self.booted = 0.0
        self.boot_rate = boot_rate
        #: the most users a second the load generator starts, whatever the rate asked
        self.spawn_limit = spawn_limit
        self.refuse_until = refuse_until
        self.waiting = 0  # refused, in back-off
        self.last_boot: float | None = None
        self.response_times: dict[str, dict[int, int]] = {}
        #: (time, connected) whenever the connected chargers changed
        self.changes: list[tuple[float, int]] = [(self.clock.now(), 0)]
        #: the shape's callbacks: (time, ...)
        self.targets: list[int] = []
        self.target_times: list[float] = []
        self.on_targets: list[tuple[float, int, int]] = []
        self.steps: list[dict[str, Any]] = []
        self.results: list[tuple[float, CapacityResult]] = []

    # Locust's side
    @property
    def user_count(self) -> int:
        return int(self.users)

    def latencies(self) -> dict[str, dict[int, int]]:
        return self.response_times  # live, as Locust's are

    def merged(self) -> Any:
        return self.collector.merged()

    # the shape's callbacks
    def set_target(self, chargers: int) -> None:
        self.targets.append(chargers)
        self.target_times.append(self.clock.now())
        self.metrics.set_target(chargers)

    def on_target(self, chargers: int) -> None:
        self.on_targets.append((self.clock.now(), chargers, self.user_count))

    def on_step(self, step: dict[str, Any]) -> None:
        self.steps.append(step)

    def on_done(self, result: CapacityResult) -> None:
        self.results.append((self.clock.now(), result))

    # one second (or more) of the fleet
    def follow(self, tick: tuple[int, float] | None) -> None:
        self.want, self.rate = (0, 0.0) if tick is None else tick

    def advance(self, seconds: float = 1.0) -> None:
        now = self.clock.advance(seconds)
        if self.users < self.want:
            rate = self.rate if self.spawn_limit is None else min(self.rate, self.spawn_limit)
            self.users = min(float(self.want), self.users + rate * seconds)
        else:
            self.users = max(float(self.want), self.users - self.rate * seconds)
        if self.max_users is not None:
            self.users = min(self.users, float(self.max_users))
        users = self.user_count
        before = self.connected
        while self.connected > users:
            self.observer.disconnected("closed")  # a stopped user: the generator's own
            self.connected -= 1
        admitted = min(users, self.ceiling)
        if self.refuse_until is not None and not any(
            at >= self.refuse_until for at, _, _ in self.on_targets
        ):
            admitted = min(admitted, self.connected)  # refused, or not yet told to retry
        while self.connected < admitted:
            self.observer.connect_done("ok", 0.01)
            self.connected += 1
        self.waiting = min(self.waiting, users - self.connected)
        while self.waiting < users - self.connected:
            self.observer.connect_done("refused", 0.001)
            self.waiting += 1
        if self.connected != before:
            self.changes.append((now, self.connected))
        self._boot(seconds)
        if self.cpu is not None:
            self.metrics.worker_cpu.labels("local").set(self.cpu(now))
        times = self.response_times.setdefault("Heartbeat", {})
        for _ in range(int(self.connected * seconds)):
            reply = self.latency(now)
            self.observer.message("sent", "call")
            self.observer.call_done("Heartbeat", "result", reply, None)
            self.observer.message("received", "result")
            ms = round(reply * 1000)
            times[ms] = times.get(ms, 0) + 1

    def _boot(self, seconds: float) -> None:
        """Boot the connected chargers (a stopped user's charger leaves booted ones)."""
        booted = min(float(self.connected), self.booted)
        more = self.connected - booted
        if self.boot_rate is not None:
            more = min(more, self.boot_rate * seconds)
        times = self.response_times.setdefault("BootNotification", {})
        for n in range(int(more)):
            # a boot waits for those queued before it: the backlog at the boot rate
            wait = (
                0.01 if self.boot_rate is None else (self.connected - booted - n) / self.boot_rate
            )
            self.observer.call_done("BootNotification", "result", wait, None)
            ms = round(wait * 1000, -1)
            times[ms] = times.get(ms, 0) + 1
        self.booted = booted + int(more)
        self.metrics.chargers_booted.set(int(self.booted))
        if int(more) > 0:
            self.last_boot = self.clock.now()

    def last_boot_at(self) -> float | None:
        """When the latest BootNotification was answered (Locust's last_request_timestamp)."""
        return self.last_boot

    def connected_at(self, when: float) -> int:
        return [count for at, count in self.changes if at <= when][-1]

    def last_change(self, when: float) -> float:
        return [at for at, _ in self.changes if at <= when][-1]


def make_shape(world: World, config: CapacityConfig, runner: bool = True, **options: Any) -> Any:
    """A CapacityShape wired to ``world`` (Locust is imported here: in the child only)."""
    from loadgen.locust.shape import CapacityShape

    settings: dict[str, Any] = {
        "merged": world.merged,
        "set_target": world.set_target,
        "on_target": world.on_target,
        "on_step": world.on_step,
        "on_done": world.on_done,
        "clock": world.clock.now,
        "spawn_rate": 5.0,
        "connect_timeout": 10.0,
        "reconnect_cap": 30.0,
        "min_settle": 2.0,
        "stall": 5.0,
        "linger": 0.0,
    }
    settings.update(options)
    shape = CapacityShape(config, **settings)
    if runner:
        shape.runner = world  # user_count: the world's users
    return shape


Tick = tuple[float, "tuple[int, float] | None", str]


def drive(shape: Any, world: World, max_ticks: int = 20_000) -> list[Tick]:
    """Locust's shape greenlet: a tick a second, the users follow, until tick() is None."""
    ticks: list[Tick] = []
    for _ in range(max_ticks):
        result = shape.tick()
        ticks.append((world.clock.now(), result, shape.phase))
        if result is None:
            return ticks
        world.follow(result)
        world.advance(1.0)
    raise AssertionError(f"the shape did not end within {max_ticks} ticks")


def hold_started(shape: Any, step: dict[str, Any]) -> float:
    return shape.run_started + step["started_s"]


def config(**changes: Any) -> CapacityConfig:
    settings: dict[str, Any] = {
        "start": 10,
        "step": "x2",
        "max_chargers": 1000,
        "hold_seconds": 20.0,
        "p95_ms": 1000.0,
        "max_connect_failure_ratio": 0.01,
        "max_schedule_lag_p99_ms": None,
    }
    settings.update(changes)
    return CapacityConfig(**settings)


# -- the cases ------------------------------------------------------------------------------


@case
def full_search_against_a_connection_ceiling() -> None:
    world = World(ceiling=137)
    search = config(resolution_ratio=0.05)
    shape = make_shape(world, search, linger=15.0)
    ticks = drive(shape, world)

    targets = [step["chargers"] for step in world.steps]
    # 160 and 140 fail; 135 - 130 = 5 <= ceil(5 % of 135) = 7: done
    assert targets == [10, 20, 40, 80, 160, 120, 140, 130, 135], targets
    assert world.targets == targets  # set_target follows every target
    assert world.metrics.target == 135
    assert [s["phase"] for s in world.steps] == ["ramp"] * 5 + ["bisect"] * 4
    assert [s["ok"] for s in world.steps] == [c <= 137 for c in targets]
    assert shape.steps == world.steps
    started = [s["started_s"] for s in world.steps]
    assert started == sorted(started) and started[0] > 0
    for step in world.steps:
        assert step["seconds"] == 20.0  # the hold
        assert step["generator_saturated"] is False
        assert step["connected"] == min(step["chargers"], 137)
        assert step["connect_attempts"] == 0  # the refused ones wait in back-off
        assert step["unexpected_disconnects"] == 0  # stopped users close themselves
        assert step["actions"]["Heartbeat"]["count"] == 20 * step["connected"]
        assert step["call_errors"] == 0 and step["error_codes"] == {}
        assert step["messages_per_s"] == 2 * step["connected"]
        if step["ok"]:
            assert step["reasons"] == []
    failed = {s["chargers"]: s["reasons"] for s in world.steps if not s["ok"]}
    assert failed == {
        160: ["only 137 of 160 chargers booted (missing 14.4% > 1%)"],
        140: ["only 137 of 140 chargers booted (missing 2.14% > 1%)"],
    }

    # connected stalled below the target: the hold started `stall` seconds after the last
    # change (or after the users were all there, whichever came later), long before the
    # settle timeout
    for step, asked in zip(world.steps, world.target_times, strict=True):
        start = hold_started(shape, step)
        on_target = next(t for t, c, _ in world.on_targets if c == step["chargers"])
        assert world.connected_at(start) == min(step["chargers"], 137)
        if step["chargers"] > 137:
            assert start == max(world.last_change(start), on_target) + 5.0
        else:  # held as soon as all were there (and min_settle had passed)
            assert start == on_target == max(asked + 2.0, world.last_change(start))
        assert start - asked < step["chargers"] / 5.0 + 30 + 10  # no settle timeout

    # on_target: once the users of a step were there, in order; then, while chargers were
    # missing and no more came in, every 2 s until the stall (5 s) started the hold
    told: dict[int, list[float]] = {}
    for at, chargers, _ in world.on_targets:
        told.setdefault(chargers, []).append(at)
    assert list(told) == targets
    for step in world.steps:
        first = told[step["chargers"]][0]
        retries = [0.0, 2.0, 4.0] if step["chargers"] > 137 else [0.0]
        assert [at - first for at in told[step["chargers"]]] == retries, step["chargers"]
    assert all(users == target for _, target, users in world.on_targets)

    # the answer: within the resolution of the ceiling, never above it
    assert len(world.results) == 1
    done_at, result = world.results[0]
    assert result is shape.result
    assert result.max_chargers == 135
    assert 0 <= 137 - 135 < search.resolution_at(135)
    assert result.stopped_because == (
        "refined by bisection: 135 held, 140 failed "
        "(only 137 of 140 chargers booted (missing 2.14% > 1%))"
    )
    assert [c for c, _ in result.steps] == targets

    # linger: the same (target, rate) for 15 s, then None, and None from then on
    after = [(at, tick) for at, tick, _ in ticks if at >= done_at]
    assert after == [(done_at + n, (135, 5.0)) for n in range(15)] + [(done_at + 15, None)]
    assert ticks[-1][2] == "done"
    assert shape.tick() is None and shape.tick() is None


@case
def settle_waits_min_settle() -> None:
    world = World()
    shape = make_shape(
        world, config(start=50, max_chargers=50), spawn_rate=1000.0, min_settle=7.0, stall=3.0
    )
    drive(shape, world)
    (step,) = world.steps
    assert world.changes[1][1] == 50  # all there after one second
    assert step["started_s"] == 7.0 and step["ok"]
    assert [t - shape.run_started for t, _, _ in world.on_targets] == [7.0]


@case
def settle_waits_for_connected_to_reach_the_target() -> None:
    # no runner: the user count is taken as the target; the chargers connect 2 a second,
    # never stalling for 5 s, all there after 25 s
    world = World()
    shape = make_shape(world, config(start=50, max_chargers=50), runner=False, spawn_rate=2.0)
    drive(shape, world)
    (step,) = world.steps
    assert step["started_s"] == 25.0
    assert world.connected_at(hold_started(shape, step)) == 50
    assert world.last_change(hold_started(shape, step)) == hold_started(shape, step)
    assert [t - shape.run_started for t, _, _ in world.on_targets] == [2.0]  # min_settle
    assert [users for _, _, users in world.on_targets] == [4]  # no runner: not checked
    assert step["ok"] and step["connected"] == 50


@case
def hold_is_at_least_one_cycle() -> None:
    for cycle, expected in ((45.0, 45.0), (5.0, 20.0), (0.0, 20.0)):
        world = World()
        shape = make_shape(world, config(start=20, max_chargers=20), cycle=lambda c=cycle: c)
        drive(shape, world)
        (step,) = world.steps
        assert step["seconds"] == expected, (cycle, step["seconds"])
        assert step["actions"]["Heartbeat"]["count"] == 20 * expected


@case
def a_csms_that_refuses_briefly_is_no_ceiling() -> None:
    # Every connection refused for the step's first 5 s: the chargers refused wait out a
    # back-off longer than the stall. Told to retry every 2 s while none get in, they are
    # in as soon as the CSMS takes them again, before the stall (5 s) would hold the step.
    world = World()
    world.refuse_until = world.clock.now() + 5.0
    shape = make_shape(world, config(start=10, max_chargers=10), spawn_rate=5.0)
    drive(shape, world)
    (step,) = world.steps
    assert step["ok"] and step["booted"] == 10, step
    told = [at - shape.run_started for at, _, _ in world.on_targets]
    assert told == [2.0, 4.0, 6.0]  # users there at 2 s; then every 2 s until they are in
    assert step["started_s"] == 7.0
    assert world.results[0][1].max_chargers == 10
    # a CSMS refusing longer than the stall (5 s of retries for nothing) is a finding
    world = World()
    world.refuse_until = world.clock.now() + 60.0
    shape = make_shape(world, config(start=10, max_chargers=10), spawn_rate=5.0)
    drive(shape, world)
    (step,) = world.steps
    assert not step["ok"] and step["started_s"] == 7.0, step
    assert "only 0 of 10 chargers booted (missing 100% > 1%)" in step["reasons"], step
    assert [at - shape.run_started for at, _, _ in world.on_targets] == [2.0, 4.0, 6.0]


@case
def settle_timeout_starts_the_hold() -> None:
    # the second step (50 -> 100) never gets its users (at most 80): it is held once the
    # spawn time (50 / 10 s) plus max(30, reconnect_cap) + connect_timeout have passed
    for reconnect_cap, grace in ((45.0, 45.0), (20.0, 30.0)):
        world = World(max_users=80)
        search = config(start=50, step="+50", max_chargers=100)
        shape = make_shape(
            world,
            search,
            spawn_rate=10.0,
            connect_timeout=5.0,
            reconnect_cap=reconnect_cap,
            stall=3.0,
        )
        drive(shape, world)
        first, second = world.steps[:2]
        assert first["ok"] and second["chargers"] == 100
        waited = hold_started(shape, second) - world.target_times[1]
        assert waited == 50 / 10 + grace + 5.0, (reconnect_cap, waited)
        assert second["reasons"] == ["only 80 of 100 chargers booted (missing 20% > 1%)"]
        # on_target for every step: once its users are all there, or at the timeout
        assert [c for _, c, _ in world.on_targets] == [s["chargers"] for s in world.steps]
        assert world.results[0][1].max_chargers == 80


@case
def linger_then_none_and_reset_time_restarts() -> None:
    world = World()
    shape = make_shape(world, config(start=10, max_chargers=10, hold_seconds=5.0), linger=15.0)
    ticks = drive(shape, world)
    ((done_at, result),) = world.results
    assert result.max_chargers == 10 and result.stopped_because.startswith("reached")
    lingering = [tick for at, tick, _ in ticks if at >= done_at]
    assert lingering == [(10, 5.0)] * 15 + [None]
    assert shape.phase == "done" and shape.tick() is None

    # Locust starts a new run: a new search from the start
    world.clock.advance(100)
    shape.reset_time()
    assert shape.run_started == world.clock.now()
    assert shape.phase == "step" and shape.steps == [] and shape.result.steps == []
    assert shape.tick() == (10, 5.0)
    assert world.targets == [10, 10]
    drive(shape, world)
    assert len(world.steps) == 2 and len(shape.steps) == 1
    assert shape.steps[0]["started_s"] == world.steps[0]["started_s"]
    assert [r.max_chargers for _, r in world.results] == [10, 10]

    # no linger: None as soon as the search is over
    world = World()
    shape = make_shape(world, config(start=10, max_chargers=10, hold_seconds=5.0), linger=0.0)
    ticks = drive(shape, world)
    assert ticks[-1][0] == world.results[0][0] and ticks[-1][1] is None


@case
def latencies_replace_the_bucket_percentiles() -> None:
    def latency(now: float) -> float:  # slow while connecting, 140 ms during the hold
        return 0.9 if now < 5003.0 else 0.14

    search = config(start=10, max_chargers=10, hold_seconds=10.0, p95_ms=150.0)
    answers = {}
    for precise in (False, True):
        world = World(latency=latency)
        options = {"latencies": world.latencies} if precise else {}
        shape = make_shape(world, search, spawn_rate=100.0, min_settle=5.0, **options)
        drive(shape, world)
        (step,) = world.steps
        answers[precise] = (step, world.results[0][1])
        assert step["actions"]["Heartbeat"]["count"] == 100  # the hold's replies only
        assert world.response_times["Heartbeat"][900] == 20  # before the hold: not counted

    coarse, coarse_result = answers[False]
    # every reply in the (100 ms, 250 ms] bucket: p95 interpolated to 242.5 ms
    assert coarse["actions"]["Heartbeat"]["p95_ms"] == 100 + 150 * 0.95
    assert coarse["reasons"] == ["p95 Heartbeat 242 ms > 150 ms"]
    assert coarse_result.max_chargers is None

    precise, precise_result = answers[True]
    heartbeat = precise["actions"]["Heartbeat"]
    assert (heartbeat["p50_ms"], heartbeat["p95_ms"], heartbeat["p99_ms"]) == (140, 140, 140)
    assert precise["ok"] and precise["reasons"] == []
    assert precise_result.max_chargers == 10


@case
def cpu_over_the_hold_is_averaged() -> None:
    world = World(cpu=lambda now: 0.5 if now % 2 else 1.4)
    search = config(start=10, max_chargers=40, hold_seconds=10.0, max_generator_cpu=0.9)
    shape = make_shape(world, search)
    drive(shape, world)
    (step,) = world.steps  # the first step saturates the generator: no CSMS figure
    assert math.isclose(step["cpu"], (0.5 + 1.4) / 2)
    assert step["generator_saturated"] and step["reasons"] == [
        "load generator saturated: CPU 0.95 > 0.90"
    ]
    result = world.results[0][1]
    assert result.max_chargers is None and result.limited_by_generator


@case
def a_hold_starts_once_the_chargers_are_booted_and_a_slow_admission_is_said_in_words() -> None:
    # the CSMS boots 2 chargers a second, the users arrive at 5: the hold waits for the
    # boots, the hold holds, and the ramp's slow boots are an admission note, no failure
    world = World(boot_rate=2.0)
    search = config(start=20, max_chargers=20, hold_seconds=5.0, boot_p95_ms=2000)
    shape = make_shape(world, search, spawn_rate=5.0, stall=30.0)
    drive(shape, world)
    (step,) = world.steps
    assert step["ok"], step["reasons"]
    assert step["booted"] == 20
    booted_at = world.clock.now()
    started = hold_started(shape, step)
    assert started >= world.target_times[0] + 20 / 2.0  # not before the last boot
    assert booted_at > started
    note = step["admission"]
    assert note.startswith("admission limited: about "), note
    assert "p95 BootNotification" in note and "> 2000 ms" in note
    rate = float(note.split("about ")[1].split(" ")[0])
    assert 1.5 <= rate <= 2.2  # the CSMS's boot rate, roughly
    assert world.results[0][1].max_chargers == 20


@case
def the_admission_rate_is_counted_until_the_last_boot_not_the_settle() -> None:
    # 20 chargers at once, booted 10 a second: the last boot is answered 2 s after the step
    # began, but a master's settle lasts 7 s at least. The note says 10/s, not 20/7.
    world = World(boot_rate=10.0)
    search = config(start=20, max_chargers=20, hold_seconds=5.0, boot_p95_ms=1000)
    shape = make_shape(
        world,
        search,
        spawn_rate=100.0,
        min_settle=7.0,
        latencies=world.latencies,
        last_boot_at=world.last_boot_at,
        wall_clock=world.clock.now,
    )
    drive(shape, world)
    (step,) = world.steps
    assert step["ok"] and step["started_s"] == 7.0, step
    note = step["admission"]
    assert note.startswith("admission limited: about 10 chargers/s (p95 BootNotification"), note


@case
def a_quick_admission_has_no_note() -> None:
    world = World()
    shape = make_shape(world, config(start=10, max_chargers=10, hold_seconds=5.0))
    drive(shape, world)
    (step,) = world.steps
    assert step["ok"] and step["admission"] is None and step["booted"] == 10


@case
def both_capacities_whatever_the_spawn_rate() -> None:
    # a CSMS that holds 30 connections and boots 10 chargers a second: the connect rate
    # first (fresh chargers per step, all stopped before the next), then the concurrency
    # steps ramp at half that rate, whatever --spawn-rate said, unless it was pinned
    def both(rate_start: float) -> CapacityConfig:
        return config(
            mode="both",
            start=10,
            max_chargers=60,
            hold_seconds=5.0,
            resolution_ratio=0.05,
            rate_start=rate_start,
            rate_step_chargers=25,  # below the connection ceiling
        )

    for spawn_rate in (5.0, 20.0, 100.0):
        world = World(ceiling=30, boot_rate=10.0)
        search = both(rate_start=2.5)
        shape = make_shape(world, search, spawn_rate=spawn_rate, latencies=world.latencies)
        ticks = drive(shape, world)
        ((_, result),) = world.results
        assert result.max_chargers is not None and 28 <= result.max_chargers <= 30, result
        rate = result.max_connect_rate
        # the world lives in whole seconds (arrivals and boots): within 10 % here; the
        # 5 % of a Locust-like arrival is tested in test_capacity.py and end to end
        assert rate is not None and 9.5 <= rate <= 11.0, result.connect_rate_line()
        assert result.connect_rate_stopped_because.startswith("refined by bisection")
        assert shape.spawn_rate == rate / 2
        rates = [step["rate"] for step in shape.rate_steps]
        assert rates[:3] == [2.5, 5.0, 10.0] and len(set(rates)) == len(rates)
        assert [r for r, _ in result.connect_rate_steps] == rates
        for step in shape.rate_steps:
            assert step["chargers"] == 25
            assert step["ok"] or step["rate"] > 10.0, step
            assert not step["ok"] or step["rate"] < 11.0, step
        # each rate step started from no chargers at all: the previous ones were gone
        starts = [shape.run_started + step["started_s"] for step in shape.rate_steps]
        assert all(world.connected_at(at) == 0 for at in starts)
        # the concurrency steps came after, at the connect rate's half
        first_hold = hold_started(shape, world.steps[0])
        assert first_hold > starts[-1]
        assert all(tick[1] == rate / 2 for at, tick, _ in ticks if at >= first_hold and tick)
        # each judged rate step's chargers were stopped at once, not at the step's rate
        from loadgen.locust.shape import RATE_DRAIN_STOP_RATE

        drains = [tick for at, tick, _ in ticks if tick and tick[0] == 0 and at < first_hold]
        assert drains and all(tick[1] == RATE_DRAIN_STOP_RATE for tick in drains)

    # a pinned --spawn-rate is kept for the concurrency steps (the rate steps offer their
    # own rate): below, at and far above the CSMS's 10 boots/s, the same two answers
    for spawn_rate in (3.0, 5.0, 20.0, 100.0):
        world = World(ceiling=30, boot_rate=10.0)
        search = both(rate_start=5.0)
        shape = make_shape(
            world, search, spawn_rate=spawn_rate, spawn_rate_pinned=True, latencies=world.latencies
        )
        ticks = drive(shape, world)
        result = shape.result
        assert shape.spawn_rate == spawn_rate
        assert result.max_chargers is not None and 28 <= result.max_chargers <= 30, result
        rate = result.max_connect_rate
        assert rate is not None and 9.5 <= rate <= 11.0, result.connect_rate_line()
        offered = {tick[1] for _, tick, phase in ticks if tick and phase == "rate-step"}
        assert offered == {r for r, _ in result.connect_rate_steps}, offered


@case
def a_master_starting_the_first_step_does_not_restart_the_search() -> None:
    # A MasterRunner's start() calls reset_time() for the shape's first target once it has
    # dispatched its users (10 s at 5/s here); a single process's does not.
    world = World(boot_rate=20.0)
    search = config(mode="connect-rate", max_chargers=500, resolution_ratio=0.05, rate_start=5.0)
    shape = make_shape(world, search, latencies=world.latencies)
    shape.reset_time()  # the runner's start_shape(), before the first tick
    first = shape.tick()
    assert first == (50, 5.0) and shape.phase == "rate-step"
    started = shape._since
    world.follow(first)
    for _ in range(10):
        world.advance(1.0)
    shape.reset_time()  # MasterRunner.start(), the first target dispatched
    assert shape.phase == "rate-step" and shape._since == started
    ticks = drive(shape, world)
    assert ticks[-1][1] is None
    steps = shape.result.to_dict()["connect_rate_steps"]
    assert steps[0]["rate"] == 5.0 and steps[0]["ok"], steps[0]
    assert steps[0]["booted"] == 50
    # a second run (the web UI) searches anew
    shape.reset_time()
    assert shape.phase == "rate" and shape.rates.steps == []


@case
def connect_rate_alone() -> None:
    world = World(boot_rate=20.0)
    search = config(mode="connect-rate", max_chargers=500, resolution_ratio=0.05, rate_start=5.0)
    shape = make_shape(world, search, linger=3.0, latencies=world.latencies)
    ticks = drive(shape, world)
    ((_, result),) = world.results
    assert result.max_chargers is None and result.stopped_because.startswith("not searched")
    assert result.max_connect_rate is not None and 19 <= result.max_connect_rate <= 22
    assert world.steps == []  # no concurrency step
    assert ticks[-1][1] is None and ticks[-2][1][0] == 0  # lingered with no chargers
    assert [phase for _, _, phase in ticks[-4:-1]] == ["linger"] * 3
    first = result.to_dict()["connect_rate_steps"][0]
    assert {k: first[k] for k in ("rate", "ok", "generator_saturated", "reasons")} == {
        "rate": 5.0,
        "ok": True,
        "generator_saturated": False,
        "reasons": [],
    }
    assert first["booted"] == first["chargers"] and first["boot_p95_ms"] is not None


@case
def a_generator_that_cannot_keep_the_rate_is_no_csms_figure() -> None:
    # a CSMS that admits anything, a load generator that starts at most 30 users a second
    world = World(spawn_limit=30.0)
    search = config(mode="connect-rate", rate_start=10.0, rate_step_chargers=100)
    shape = make_shape(world, search, latencies=world.latencies)
    drive(shape, world)
    ((_, result),) = world.results
    assert result.max_connect_rate is None and result.connect_rate_limited_by_generator
    line = result.connect_rate_line()
    assert line.startswith("capacity: connect rate: no answer: limited by the load generator")
    assert "load generator saturated: started 100 chargers in" in line, line
    steps = result.to_dict()["connect_rate_steps"]
    assert [s["ok"] for s in steps[:-1]] == [True] * (len(steps) - 1)
    assert steps[-1]["generator_saturated"] and steps[-1]["rate"] > 30


# -- the phases and what the console hears ------------------------------------------------


@case
def the_phases_move_only_as_their_table_says() -> None:
    from loadgen.locust.shape import PHASES, Phase, ShapeEvent
    from loadgen.states import Machine, TransitionError, transitions

    assert set(PHASES) == set(Phase) and PHASES[Phase.DONE] == {}
    for phase, event, after in transitions(PHASES):
        assert Machine("capacity search", PHASES, phase).fire(event) is after
    for phase in Phase:
        for event in ShapeEvent:
            if event not in PHASES[phase]:
                machine = Machine("capacity search", PHASES, phase)
                try:
                    machine.fire(event)
                except TransitionError as exc:
                    assert str(exc) == (
                        f"capacity search: {event.name.lower()} is not allowed when "
                        f"{phase.name.lower()}"
                    )
                else:
                    raise AssertionError(f"{event} moved {phase}")
    assert Phase.RATE_STEP == "rate-step" and f"{Phase.HOLD}" == "hold"  # reports and tests


@case
def searches_go_through_every_transition_of_the_table() -> None:
    """Real searches (the world, a fake clock), followed by the shape's trace: together they
    take every move the table lists, --run-time ending each phase a tick can end in."""
    from loadgen.locust.shape import PHASES, Phase
    from loadgen.states import transitions

    both = {"mode": "both", "rate_start": 5.0, "rate_step_chargers": 25, "resolution_ratio": 0.1}
    taken: set[tuple[Any, Any, Any]] = set()

    def search(linger: float, run_time: float | None = None, **changes: Any) -> Any:
        world = World(ceiling=30, boot_rate=10.0)
        search = config(start=10, max_chargers=40, hold_seconds=5.0, **changes)
        shape = make_shape(world, search, linger=linger, run_time=run_time)
        assert shape.lifecycle.trace is None  # off unless asked
        shape.lifecycle.trace = []
        return world, shape

    for linger, changes in ((3.0, both), (0.0, both), (3.0, {}), (0.0, {})):
        world, shape = search(linger, **changes)
        drive(shape, world)
        taken |= set(shape.lifecycle.trace)
    for mode in ("connect-rate", "chargers"):
        for linger in (0.0, 3.0):
            world, shape = search(linger, mode=mode, rate_start=5.0, rate_step_chargers=25)
            drive(shape, world)
            taken |= set(shape.lifecycle.trace)
    # --run-time up in each phase a tick can end in
    for phase in (Phase.RATE_STEP, Phase.DRAIN, Phase.SETTLE, Phase.HOLD, Phase.LINGER):
        world, shape = search(3.0, **both)
        for _ in range(5000):
            if shape.phase is phase:
                break
            world.follow(shape.tick())
            world.advance(1.0)
        assert shape.phase is phase
        shape.run_time = world.clock.now() - shape.run_started
        assert shape.tick() is None and shape.phase is Phase.DONE
        assert shape.lifecycle.trace[-1][0] is phase
        taken |= set(shape.lifecycle.trace)
    for changes in (both, {}):  # up before the first tick: from rate, from step
        world, shape = search(3.0, run_time=0.0, **changes)
        assert shape.tick() is None
        taken |= set(shape.lifecycle.trace)
    missing = set(transitions(PHASES)) - taken
    assert not missing, sorted((a.name, e.name, b.name) for a, e, b in missing)


@case
def long_phases_say_what_they_wait_for_every_five_seconds() -> None:
    """The console: a settle waiting for boots, a hold, a rate step and its drain each say
    what they do, never twice within 5 (fake) seconds."""
    import logging

    world = World(boot_rate=2.0)
    search = config(
        mode="both",
        start=40,
        max_chargers=40,
        hold_seconds=30.0,
        rate_start=2.0,
        rate_step_chargers=20,
        rate_max=2.0,
    )
    shape = make_shape(world, search, spawn_rate=20.0, spawn_rate_pinned=True, stall=60.0)
    lines: list[tuple[float, str]] = []

    class Console(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append((world.clock.now(), record.getMessage()))

    logger = logging.getLogger("loadgen.locust.shape")
    console, level = Console(), logger.level
    logger.addHandler(console)
    logger.setLevel(logging.INFO)
    try:
        drive(shape, world)
    finally:
        logger.removeHandler(console)
        logger.setLevel(level)

    def said(prefix: str) -> list[tuple[float, str]]:
        return [(at, text) for at, text in lines if text.startswith(prefix)]

    rate = said("capacity: rate step 1 (2/s): waiting for ")
    drain = said("capacity: rate step 1: waiting for its chargers to be gone")
    settle = said("capacity: step 1 (40 chargers): waiting for ")
    hold = said("capacity: step 1 (40 chargers): holding, ")
    assert rate and settle and hold, lines
    assert rate[0][1].endswith(" to boot (10 users, 5 s)"), rate[0]
    # 40 chargers booted 2 a second: ~20 s of waiting, a line each 5 s
    assert 3 <= len(settle) <= 5, settle
    assert (
        settle[0][1]
        == "capacity: step 1 (40 chargers): waiting for 30 of 40 to boot (40 users, 5 s)"
    )
    assert [text for _, text in hold] == [
        f"capacity: step 1 (40 chargers): holding, {n} of 30 s" for n in (5, 10, 15, 20, 25)
    ]
    assert said("capacity search: holding step 1 (40 chargers) for 30 s")
    for group in (rate, drain, settle, hold):
        times = [at for at, _ in group]
        assert all(b - a >= 5.0 for a, b in itertools.pairwise(times)), group
    # the whole search said fewer lines than it ticked seconds, by far
    assert len(lines) < (world.clock.now() - shape.run_started) / 3


# -- running the cases in a child process ---------------------------------------------------


def run_cases(names: list[str]) -> None:
    """In the child (Locust imported first): run the cases, answer in one line."""
    failures: dict[str, str | None] = {}
    for name in names:
        try:
            CASES[name]()
            failures[name] = None
        except BaseException:
            failures[name] = traceback.format_exc()
    sys.stdout.write("@@ " + json.dumps(failures) + "\n")


@pytest.fixture(scope="module")
def failures(request: pytest.FixtureRequest) -> dict[str, str | None]:
    here = Path(__file__).resolve()
    wanted = sorted(
        {
            item.callspec.params["name"]
            for item in request.session.items
            if Path(str(item.path)).resolve() == here and hasattr(item, "callspec")
        }
    )
    code = (
        "import json, sys\n"
        "import locust  # patches the standard library before anything else is imported\n"
        "from tests.test_shape import run_cases\n"
        "run_cases(json.loads(sys.argv[1]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(wanted)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    answers = [line[3:] for line in done.stdout.splitlines() if line.startswith("@@ ")]
    assert done.returncode == 0 and answers, f"the child failed:\n{done.stderr[-5000:]}"
    return json.loads(answers[-1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_shape(name: str, failures: dict[str, str | None]) -> None:
    failure = failures[name]
    if failure is not None:
        pytest.fail(failure, pytrace=False)


def test_pytest_itself_is_not_patched() -> None:
    """The point of the child process: nothing here imported Locust."""
    import gevent.monkey

    assert "locust" not in sys.modules
    assert not gevent.monkey.is_module_patched("socket")
