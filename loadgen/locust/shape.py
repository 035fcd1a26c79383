"""The capacity search as a Locust load shape (``--capacity-search``).

:class:`~loadgen.capacity.search.CapacitySearch` decides; this drives it from Locust's shape
greenlet (``tick()`` about once a second on the master or the single process):

1. **step**: ask for the search's next target (``chargers_target`` follows it);
2. **settle**: wait until the chargers are there (connected and booted, Accepted, and
   Locust's user count at the target), until admission stalls (no more chargers booted for
   ``stall`` seconds though the missing ones were told to retry every
   :data:`SETTLE_RETRY_S`: a CSMS that refused them a moment ago is no ceiling) or until a
   timeout, since a CSMS that refuses connections never gets there and
   that is a finding, not a reason to wait for ever. The ramp (step start to settled) is
   judged by the connect SLOs only: a ramp that broke them is an admission limit, said in
   words on the step ("admission limited: about 22 chargers/s"), not a concurrency failure;
3. **hold**: remember the merged metrics, wait ``max(--capacity-hold, one heartbeat / meter
   cycle)``, and turn the differences into a :class:`~loadgen.capacity.judgement.StepMeasurement`
   (:func:`loadgen.capacity.measure.measure`); the search judges it;
4. when the search is over: the answer goes to ``ocpp_loadgen_capacity_max_chargers``, the
   console and the reports; the shape keeps the load for ``--capacity-linger`` seconds so
   Prometheus scrapes the answer, then ends the run.

With ``--capacity-search both`` or ``connect-rate``, a connect-rate search comes first
(:class:`~loadgen.capacity.rate.RateSearch`): each rate step starts
:meth:`CapacityConfig.rate_step_size` fresh chargers at the offered rate, waits until they
are booted (or their time is up), judges the step (connect SLOs, and whether the boots
kept pace: :func:`~loadgen.capacity.rate.judge_rate`, by when its last boot was answered), then
stops them all and waits until they are gone before the next rate. With ``both``, the
concurrency steps then ramp at half the answer (at least 1/s), safely below what the CSMS
admits, unless the user pinned ``--spawn-rate``: so the concurrency answer does not depend
on the ramp.

The phases are a :class:`Phase`, moved by a :class:`ShapeEvent` along :data:`PHASES`
(rate -> rate-step -> drain -> rate ..., then step -> settle -> hold -> step ..., then
linger -> done). Long phases say on the console what they wait for, at most every
:data:`PROGRESS_S` seconds. The clock is injectable so the state machine can be tested
without waiting.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from enum import Enum, StrEnum
from typing import Any

from locust import LoadTestShape

from loadgen.capacity.config import CapacityConfig
from loadgen.capacity.judgement import (
    StepMeasurement,
    admission_note,
    count_percentile,
    judge_admission,
    with_count_percentiles,
)
from loadgen.capacity.measure import Merged, measure
from loadgen.capacity.rate import RateSearch, RateStepMeasurement
from loadgen.capacity.search import CHARGERS_NOT_SEARCHED, CapacityResult, CapacitySearch
from loadgen.logutil import Progress
from loadgen.report import step_dict
from loadgen.states import Machine

log = logging.getLogger(__name__)

#: the least time between a step's change and its hold: Locust workers report every 3 s,
#: so the master's merged view needs that long to show the new step (a single process
#: sees its own at once: LOCAL_MIN_SETTLE_S)
MIN_SETTLE_S = 7.0
LOCAL_MIN_SETTLE_S = 2.0
#: a step whose connected chargers stopped growing this long (all users spawned) is held:
#: the CSMS refuses the rest, which the hold measures
STALL_S = 10.0
LOCAL_STALL_S = 5.0
#: how long the chargers of a step may take to connect beyond the spawn time (at least a
#: full reconnect back-off: chargers refused at a failed step retry only after theirs)
SETTLE_GRACE_S = 30.0
#: while a step's chargers stop coming in, those waiting out a reconnect back-off are told
#: to retry this often: a CSMS that refused them a moment ago may take them now, and the
#: OCPP back-off (5-35 s, doubling) would outlast the stall that ends the settle
SETTLE_RETRY_S = 2.0
#: the most seconds to wait for a rate step's chargers to be gone
RATE_DRAIN_S = 30.0
#: a judged rate step's chargers are stopped at this rate (Locust ramps down at the spawn
#: rate too): all at once, not at the step's rate, since the next step waits for none left
RATE_DRAIN_STOP_RATE = 1000.0
#: with ``both``: the concurrency steps ramp at this share of the connect rate found
RAMP_SHARE_OF_CONNECT_RATE = 0.5
#: the least seconds between two console lines saying what a long phase waits for
PROGRESS_S = 5.0


class Phase(StrEnum):
    """Where the capacity search is (``shape.phase``; equal to its string)."""

    RATE = "rate"  # choose the next connect rate
    RATE_STEP = "rate-step"  # fresh chargers start at that rate; wait for their boots
    DRAIN = "drain"  # the rate step's chargers stop; wait until they are gone
    STEP = "step"  # choose the next number of chargers
    SETTLE = "settle"  # wait until they are there (or admission stalls, or time is up)
    HOLD = "hold"  # keep them, then judge the step
    LINGER = "linger"  # the answer is out: keep the load for Prometheus to scrape it
    DONE = "done"  # tick() says None: Locust ends the run


class ShapeEvent(Enum):
    """What moves a :class:`Phase`."""

    NEXT_RATE = "next rate"
    RATE_STEP_OVER = "rate step over"  # booted or out of time: judged
    DRAINED = "drained"
    RATES_OVER = "rates over"  # the connect rate is found; the chargers are next
    NEXT_TARGET = "next target"
    SETTLED = "settled"
    JUDGED = "judged"
    ANSWERED = "answered"  # every search asked for is over (and there is a linger)
    ENDED = "ended"  # answered without linger, linger over, or --run-time up


_P, _V = Phase, ShapeEvent
#: --run-time can end the search in any phase
_TIME_UP = {_V.ENDED: _P.DONE}
#: which event moves which phase where; anything else raises TransitionError
PHASES: dict[Phase, dict[ShapeEvent, Phase]] = {
    _P.RATE: {
        _V.NEXT_RATE: _P.RATE_STEP,
        _V.RATES_OVER: _P.STEP,
        _V.ANSWERED: _P.LINGER,
        **_TIME_UP,
    },
    _P.RATE_STEP: {_V.RATE_STEP_OVER: _P.DRAIN, **_TIME_UP},
    _P.DRAIN: {_V.DRAINED: _P.RATE, **_TIME_UP},
    _P.STEP: {_V.NEXT_TARGET: _P.SETTLE, _V.ANSWERED: _P.LINGER, **_TIME_UP},
    _P.SETTLE: {_V.SETTLED: _P.HOLD, **_TIME_UP},
    _P.HOLD: {_V.JUDGED: _P.STEP, **_TIME_UP},
    _P.LINGER: {**_TIME_UP},
    _P.DONE: {},
}


def latency_view(
    latencies: Callable[[], Mapping[str, Mapping[float, int]]],
) -> dict[str, dict[float, int]]:
    """A copy of the response-time counts now (Locust's dicts keep growing)."""
    return {action: dict(counts) for action, counts in latencies().items()}


class CapacityShape(LoadTestShape):
    """Steps the chargers up, holds, judges, bisects; see the module's docstring.

    ``merged`` returns the run-wide metrics (:meth:`MergedCollector.merged`), ``cycle``
    the seconds of one heartbeat / meter cycle as known now, ``on_step`` and ``on_done``
    are told about every judged step and the final answer.
    """

    # Locust instantiates every non-abstract shape it finds in a locustfile; this one is
    # set up by the plugin only with --capacity-search.
    abstract = True
    use_common_options = True  # --spawn-rate and --run-time (``run_time``) still apply

    def __init__(
        self,
        config: CapacityConfig,
        *,
        merged: Callable[[], Merged],
        set_target: Callable[[int], None],
        spawn_rate: float = 100.0,
        spawn_rate_pinned: bool = False,
        connect_timeout: float = 10.0,
        reconnect_cap: float = 60.0,
        cycle: Callable[[], float] = lambda: 0.0,
        linger: float = 15.0,
        latencies: Callable[[], Mapping[str, Mapping[float, int]]] | None = None,
        last_boot_at: Callable[[], float | None] | None = None,
        last_connect_at: Callable[[], float | None] | None = None,
        batch_starts_since: Callable[[float], list[float]] | None = None,
        wall_clock: Callable[[], float] = time.time,
        on_target: Callable[[int], None] = lambda target: None,
        on_step: Callable[[dict[str, Any]], None] = lambda step: None,
        on_done: Callable[[CapacityResult], None] = lambda result: None,
        clock: Callable[[], float] = time.monotonic,
        min_settle: float = MIN_SETTLE_S,
        stall: float = STALL_S,
        run_time: float | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.merged = merged
        self.set_target = set_target
        self.on_target = on_target
        self.latencies = latencies
        self.last_boot_at = last_boot_at
        self.last_connect_at = last_connect_at
        #: when the batches of a step's users came (a master's workers start them late; a
        #: busy generator starts a burst late)
        self.batch_starts_since = batch_starts_since
        self.wall_clock = wall_clock
        self.spawn_rate = self.given_spawn_rate = spawn_rate
        self.spawn_rate_pinned = spawn_rate_pinned
        self.connect_timeout = connect_timeout
        self.reconnect_cap = reconnect_cap
        self.cycle = cycle
        self.linger = linger
        self.on_step = on_step
        self.on_done = on_done
        self.clock = clock
        self.min_settle = min_settle
        self.stall = stall
        self.run_time = run_time
        self._restart()

    def _restart(self) -> None:
        self._ticks = 0
        self.search = CapacitySearch(self.config)
        self.rates = RateSearch(self.config)
        self.spawn_rate = self.given_spawn_rate
        first = Phase.RATE if self.config.searches_connect_rate else Phase.STEP
        self.lifecycle: Machine[Phase, ShapeEvent] = Machine("capacity search", PHASES, first)
        self.progress = Progress(log, PROGRESS_S, self.clock)
        self.rate_steps: list[dict[str, Any]] = []
        self._rate = 0.0
        self._spawned_s: float | None = None
        self._rate_wall = 0.0
        self._rate_latency: dict[str, dict[float, int]] = {}
        self._booted_before = 0.0
        self.target: int | None = None
        self.previous = 0
        self.steps: list[dict[str, Any]] = []
        self.run_started = self.clock()
        self._since = self.run_started
        self._hold_seconds = 0.0
        self._baseline: Merged = {}
        self._latency_baseline: dict[str, dict[float, int]] = {}
        self._cpu: list[float] = []
        self._booted = -1.0
        self._retried = False
        self._retried_at = self.run_started
        self._booted_since = self.run_started
        # the ramp: the merged metrics when the step began, and the admission note
        self._ramp_baseline: Merged = {}
        self._ramp_latency: dict[str, dict[float, int]] = {}
        self._step_wall = 0.0
        self._admission: str | None = None

    @property
    def phase(self) -> Phase:
        return self.lifecycle.state

    def _move(self, event: ShapeEvent, now: float) -> Phase:
        """Into the next phase, which starts now (its progress lines count from now)."""
        self._since = now
        self.progress.restart()
        return self.lifecycle.fire(event)

    def reset_time(self) -> None:
        """Locust calls this when a run starts: a second run (web UI) searches anew.

        A master calls it again from its runner's ``start()`` for the first target the
        shape returned, once that target's users are all dispatched: the search has begun
        then, and starting it again would measure its first step from that moment on.
        """
        super().reset_time()
        if self._ticks == 1:
            return
        self._restart()

    # -- the shape ---------------------------------------------------------------------

    def tick(self) -> tuple[int, float] | None:
        """Locust asks about once a second: ``(users, spawn rate)`` to have, or None to end.

        Each phase's branch either stays (the current target again) or moves on by one
        event and returns the new target. Only the connect-rate search hands over within
        the tick: its last judged rate goes straight to the first concurrency target, so
        the switch costs no idle second.
        """
        now = self.clock()
        self._ticks += 1
        if self.phase is Phase.DONE:
            return None
        if self.run_time is not None and now - self.run_started >= self.run_time:
            # Locust leaves --run-time to the shape (it joins the shape's greenlet first)
            if self.phase is not Phase.LINGER:
                log.warning("capacity search: --run-time is up before the search ended")
            self._move(ShapeEvent.ENDED, now)
            return None
        if self.phase in (Phase.RATE, Phase.RATE_STEP, Phase.DRAIN):
            self._rate_tick(now)  # may hand over to the chargers' steps or to the answer
        if self.phase is Phase.STEP:
            self._next_step(now)  # the next target, or the answer (linger, done)
        elif self.phase is Phase.SETTLE:
            if self._settled(now):
                self._start_hold(now)
        elif self.phase is Phase.HOLD:
            self._hold_tick(now)
        elif self.phase is Phase.LINGER and now - self._since >= self.linger:
            self._move(ShapeEvent.ENDED, now)
        return None if self.phase is Phase.DONE else self._current()

    def _next_step(self, now: float) -> None:
        target = self.search.next_target()
        if target is None:
            self._finish(now)
            return
        self.previous, self.target = self.target or 0, target
        self._move(ShapeEvent.NEXT_TARGET, now)
        self.set_target(target)
        # the users of this target are told to retry (on_target) once they are all there
        self._retried = False
        # the ramp is judged from here to the hold (connect SLOs: admission)
        self._ramp_baseline = self.merged()
        self._ramp_latency = self._latency_view()
        self._step_wall = self.wall_clock()
        log.info("capacity search (%s): %d chargers", self.search.phase, target)

    def _start_hold(self, now: float) -> None:
        # the hold is measured from here: what the ramp did is not the CSMS's steady state
        self._baseline = self.merged()
        self._latency_baseline = self._latency_view()
        self._judge_ramp(now - self._since)
        self._move(ShapeEvent.SETTLED, now)
        self._cpu = []
        # a hold shorter than one heartbeat / meter cycle would see only part of the load
        cycle = self.cycle()
        self._hold_seconds = max(self.config.hold_seconds, cycle)
        if cycle > self.config.hold_seconds and not self.steps:
            log.info(
                "capacity search: holds last %.0f s, one full heartbeat / meter "
                "cycle (--capacity-hold %.0f is shorter; --heartbeat-interval "
                "shortens the cycle)",
                cycle,
                self.config.hold_seconds,
            )
        log.info(
            "capacity search: holding step %d (%d chargers) for %.0f s",
            self._step_number,
            self.target,
            self._hold_seconds,
        )

    def _hold_tick(self, now: float) -> None:
        after = self.merged()
        # the busiest worker's CPU: one saturated generator spoils the step's figures
        readings = after.get("ocpp_loadgen_worker_cpu_ratio", {}).values()
        if readings:
            self._cpu.append(max(readings))
        held = now - self._since
        if held >= self._hold_seconds:
            self._judge(now, after)
            return
        self.progress.say(
            "capacity: step %d (%d chargers): holding, %.0f of %.0f s",
            self._step_number,
            self.target,
            held,
            self._hold_seconds,
        )

    @property
    def _step_number(self) -> int:
        """The concurrency step under way, from 1."""
        return len(self.steps) + 1

    # -- the connect-rate search -------------------------------------------------------

    def _rate_tick(self, now: float) -> None:
        """One tick of the connect-rate search (``phase`` says where it went: after the
        last rate, to the chargers' steps or the answer)."""
        if self.phase is Phase.DRAIN:
            # every step starts from no chargers: the last one's must be gone first
            merged = self.merged()
            connected = sum(merged.get("ocpp_loadgen_chargers_connected", {}).values())
            booted = sum(merged.get("ocpp_loadgen_chargers_booted", {}).values())
            users = self.runner.user_count if self.runner is not None else 0
            waited = now - self._since
            # No settle minimum: the figures say "gone" only from a report made after the
            # stop (a master's older ones still count the step's chargers), and each second
            # waited here is a second of every rate step.
            gone = users == 0 and connected == 0 and booted == 0
            if not (gone or waited >= RATE_DRAIN_S):
                self.progress.say(
                    "capacity: rate step %d: waiting for its chargers to be gone "
                    "(%d users, %d connected)",
                    len(self.rate_steps),
                    users,
                    connected,
                )
                return
            self._move(ShapeEvent.DRAINED, now)  # and on to the next rate at once
        if self.phase is Phase.RATE:
            rate = self.rates.next_rate()
            if rate is None:
                self._rates_done(now)
            else:
                self._start_rate_step(now, rate)
            return
        # rate-step
        if self._rate_step_over(now):
            self._judge_rate_step(now)
            self._move(ShapeEvent.RATE_STEP_OVER, now)
            self.target, self.spawn_rate = 0, max(self._rate, RATE_DRAIN_STOP_RATE)
            self.set_target(0)

    def _start_rate_step(self, now: float, rate: float) -> None:
        chargers = self.rates.chargers_for(rate)
        self.target, self._rate, self.spawn_rate = chargers, rate, rate
        self._move(ShapeEvent.NEXT_RATE, now)
        self.set_target(chargers)
        self._ramp_baseline = self.merged()
        self._booted_before = sum(
            self._ramp_baseline.get("ocpp_loadgen_chargers_booted", {}).values()
        )
        self._rate_latency = self._latency_view()
        self._rate_wall = self.wall_clock()  # Locust starts the first users now
        self._spawned_s = None
        log.info(
            "capacity search (%s): %d fresh chargers at %.3g/s",
            self.rates.phase,
            chargers,
            rate,
        )

    def _rate_step_over(self, now: float) -> bool:
        """All the step's chargers booted, or their time is up."""
        assert self.target is not None
        waited = now - self._since
        users = self.runner.user_count if self.runner is not None else self.target
        if self._spawned_s is None and users >= self.target:
            self._spawned_s = waited
        booted = sum(self.merged().get("ocpp_loadgen_chargers_booted", {}).values())
        if waited < self.min_settle:
            return False
        if self._spawned_s is not None and booted - self._booted_before >= self.target:
            return True
        # a CSMS that never boots them all: twice the arrival time, the boot SLO, a connect
        boot_slo = (self.config.boot_p95_ms or 10_000.0) / 1000
        bound = 2 * self.target / self._rate + boot_slo + self.connect_timeout + self.min_settle
        if waited >= bound:
            return True
        self.progress.say(
            "capacity: rate step %d (%.3g/s): waiting for %d of %d chargers to boot (%d users, "
            "%.0f s)",
            len(self.rate_steps) + 1,
            self._rate,
            max(0, self.target - int(booted - self._booted_before)),
            self.target,
            users,
            waited,
        )
        return False

    def _judge_rate_step(self, now: float) -> None:
        assert self.target is not None
        after = self.merged()
        seconds = now - self._since
        ramp = measure(self._ramp_baseline, after, chargers=self.target, seconds=seconds)
        view = self._latency_view()
        if self.latencies is not None:
            ramp = with_count_percentiles(ramp, self._rate_latency, view)
        booted = sum(after.get("ocpp_loadgen_chargers_booted", {}).values())
        starts = self._batch_starts(self._rate_wall, seconds)
        started = starts[0] if starts else self._rate_wall
        step = RateStepMeasurement(
            rate=self._rate,
            chargers=self.target,
            booted=min(self.target, max(0, int(booted - self._booted_before))),
            seconds=seconds,
            ramp=ramp,
            late_boot_ms=_boot_percentile(self._rate_latency, view, 100),
            spawn_seconds=self._spawned_s,
            quick_boot_ms=_boot_percentile(self._rate_latency, view, 0),
            last_boot_s=self._since_rate_start(self.last_boot_at, started),
            last_connect_s=self._since_rate_start(self.last_connect_at, started),
            batch_starts_s=tuple(round(at - started, 4) for at in starts) or None,
        )
        phase = self.rates.phase
        verdict = self.rates.record(step)
        entry = {
            "phase": phase,
            "rate": step.rate,
            "chargers": step.chargers,
            "booted": step.booted,
            "seconds": round(seconds, 3),
            "started_s": round(self._since - self.run_started, 3),
            "spawn_seconds": step.spawn_seconds,
            "late_boot_ms": step.late_boot_ms,
            "quick_boot_ms": step.quick_boot_ms,
            "last_boot_s": step.last_boot_s,
            "last_connect_s": step.last_connect_s,
            "ok": verdict.ok,
            "generator_saturated": verdict.generator_saturated,
            "reasons": list(verdict.reasons),
        }
        self.rate_steps.append(entry)
        log.info(
            "capacity rate step %.3g/s (%d chargers): %s",
            step.rate,
            step.chargers,
            "kept pace" if verdict.ok else "FAILED: " + "; ".join(verdict.reasons),
        )

    def _first_start(self, wall: float, seconds: float) -> float:
        """When (wall clock) the first users of a step begun at ``wall`` came: a master's
        workers get a step's users 0.15-0.5 s after the master began it (its first step's,
        a second or more), a delay of the generator that the pace model, or an admission
        rate, would otherwise take for a CSMS falling behind. ``wall`` when nothing says (or
        what it says is not within the step's ``seconds``)."""
        starts = self._batch_starts(wall, seconds)
        return starts[0] if starts else wall

    def _batch_starts(self, wall: float, seconds: float) -> list[float]:
        """When (wall clock) each batch of users of a step begun at ``wall`` came, within
        its ``seconds``: the arrivals as the generator made them, which a busy one makes
        later than Locust was asked to."""
        if self.batch_starts_since is None:
            return []
        return [at for at in self.batch_starts_since(wall) if at <= wall + seconds]

    def _since_rate_start(
        self, latest: Callable[[], float | None] | None, started: float
    ) -> float | None:
        """When the rate step's last boot was answered (or its last connection made), in
        seconds from its first users' start (None when none was, or nothing says when)."""
        at = latest() if latest is not None else None
        if at is None or at <= started:
            return None
        return at - started

    def _rates_done(self, now: float) -> None:
        rate, why, _ = self.rates.answer()
        log.info(
            "capacity search: connect rate %s (%s)", "-" if rate is None else f"{rate:.3g}/s", why
        )
        if not self.config.searches_chargers:
            self._finish(now)
            return
        if rate is not None and not self.spawn_rate_pinned:
            # below what the CSMS admits: the concurrency answer must not hang on the ramp
            self.spawn_rate = max(1.0, RAMP_SHARE_OF_CONNECT_RATE * rate)
            log.info("capacity search: concurrency steps ramp at %.3g/s", self.spawn_rate)
        else:
            self.spawn_rate = self.given_spawn_rate
        self._move(ShapeEvent.RATES_OVER, now)

    def _current(self) -> tuple[int, float]:
        return (self.target or 0, self.spawn_rate)

    def _settled(self, now: float) -> bool:
        """The step's chargers are there, or they had their time."""
        waited = now - self._since
        assert self.target is not None
        change = abs(self.target - self.previous)
        grace = max(SETTLE_GRACE_S, self.reconnect_cap) + self.connect_timeout
        if waited >= change / self.spawn_rate + grace:
            if not self._retried:
                self._retried = True
                self.on_target(self.target)
            log.warning(
                "capacity search: %d chargers asked for, not all there after %.0f s; "
                "holding anyway (the CSMS refusing them is a finding)",
                self.target,
                waited,
            )
            return True
        if waited < self.min_settle:
            return False
        # Booted, not just connected: a CSMS that admits chargers slowly has open
        # WebSockets waiting for their BootNotification's answer, not stations.
        booted = sum(self.merged().get("ocpp_loadgen_chargers_booted", {}).values())
        if booted != self._booted:
            self._booted, self._booted_since = booted, now
        users = self.runner.user_count if self.runner is not None else self.target
        if users != self.target:
            self._say_waiting(booted, users, waited)
            return False
        if not self._retried:
            # Only now: the users of a step down are gone and their connections free.
            self._retried, self._retried_at = True, now
            self.on_target(self.target)
            self._booted, self._booted_since = booted, now
        # Down a step too: every remaining charger booted and the stopped ones gone.
        if booted == self.target:
            return True
        stalled = now - self._booted_since
        if booted < self.target and stalled >= self.stall:
            log.info(
                "capacity search: %d of %d chargers booted, no more for %.0f s though those "
                "missing retried every %.0f s (admission stalled); holding",
                booted,
                self.target,
                stalled,
                SETTLE_RETRY_S,
            )
            return True
        if min(stalled, now - self._retried_at) >= SETTLE_RETRY_S:
            # A CSMS that refused them a moment ago may take them now: admission stalls
            # only when no charger got in for `stall` s though the missing ones kept trying.
            self._retried_at = now
            self.on_target(self.target)
        self._say_waiting(booted, users, waited)
        return False

    def _say_waiting(self, booted: float, users: int, waited: float) -> None:
        assert self.target is not None
        self.progress.say(
            "capacity: step %d (%d chargers): waiting for %d of %d to boot (%d users, %.0f s)",
            self._step_number,
            self.target,
            max(0, self.target - int(booted)),
            self.target,
            users,
            waited,
        )

    def _judge_ramp(self, seconds: float) -> None:
        """The ramp by the connect SLOs: its note says whether admission was the limit."""
        assert self.target is not None
        ramp = measure(self._ramp_baseline, self._baseline, chargers=self.target, seconds=seconds)
        if self.latencies is not None:
            ramp = with_count_percentiles(ramp, self._ramp_latency, self._latency_baseline)
        before = sum(self._ramp_baseline.get("ocpp_loadgen_chargers_booted", {}).values())
        admitted = max(0, (ramp.booted or 0) - int(before))
        # The rate the CSMS admitted at: until its last boot of the step, not until the
        # settle saw it (at least min_settle; on a master, a worker report later).
        started = self._first_start(self._step_wall, seconds)
        last = self.last_boot_at() if self.last_boot_at is not None else None
        if last is not None and started < last < started + seconds:
            seconds = last - started
        self._admission = admission_note(judge_admission(ramp, self.config), admitted, seconds)
        if self._admission is not None:
            log.info("capacity step %d chargers: %s", self.target, self._admission)

    def _judge(self, now: float, after: Merged) -> None:
        assert self.target is not None
        cpu = sum(self._cpu) / len(self._cpu) if self._cpu else None
        measurement: StepMeasurement = measure(
            self._baseline, after, chargers=self.target, seconds=now - self._since, cpu=cpu
        )
        if self.latencies is not None:
            measurement = self._precise(measurement)
        phase = self.search.phase
        verdict = self.search.record(measurement)
        step = step_dict(
            measurement, verdict, phase=phase, started_s=self._since - self.run_started
        )
        step["admission"] = self._admission
        self.steps.append(step)
        worst = max(
            (s.p95_ms for s in measurement.actions.values() if s.p95_ms is not None),
            default=None,
        )
        log.info(
            "capacity step %d chargers: %s (%d CALLs, %d errors, worst p95 %s)",
            self.target,
            "held" if verdict.ok else "FAILED: " + "; ".join(verdict.reasons),
            measurement.calls,
            measurement.call_errors,
            "-" if worst is None else f"{worst:.0f} ms",
        )
        self.on_step(step)
        self._move(ShapeEvent.JUDGED, now)

    def _latency_view(self) -> dict[str, dict[float, int]]:
        return latency_view(self.latencies) if self.latencies is not None else {}

    def _precise(self, measurement: StepMeasurement) -> StepMeasurement:
        return with_count_percentiles(measurement, self._latency_baseline, self._latency_view())

    def _finish(self, now: float) -> None:
        result = self.result
        log.info("%s", result.summary())
        log.info("%s", result.connect_rate_line())
        self.on_done(result)
        self._move(ShapeEvent.ANSWERED if self.linger > 0 else ShapeEvent.ENDED, now)

    @property
    def done(self) -> bool:
        """Every capacity asked for has its answer."""
        return (not self.config.searches_chargers or self.search.done) and (
            not self.config.searches_connect_rate or self.rates.done
        )

    @property
    def result(self) -> CapacityResult:
        """Both capacities as far as they were searched (``not searched`` where not)."""
        if self.config.searches_chargers:
            result = self.search.result()
        else:
            result = CapacityResult(None, False, CHARGERS_NOT_SEARCHED, [])
        if not self.config.searches_connect_rate:
            return result
        rate, why, by_generator = self.rates.answer()
        return dataclasses.replace(
            result,
            max_connect_rate=rate,
            connect_rate_stopped_because=why,
            connect_rate_steps=list(self.rates.steps),
            connect_rate_figures=list(self.rates.figures),
            connect_rate_limited_by_generator=by_generator,
        )


def _boot_percentile(
    before: Mapping[str, Mapping[float, int]], after: Mapping[str, Mapping[float, int]], q: float
) -> float | None:
    """A percentile of the BootNotifications (ms) between two response-time views: 100
    the slowest, 0 the quickest."""
    start = before.get("BootNotification", {})
    delta = {v: n - start.get(v, 0) for v, n in after.get("BootNotification", {}).items()}
    return count_percentile(delta, q)
