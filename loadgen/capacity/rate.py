"""The connect-rate search: new chargers per second the CSMS connects and boots within the
connect SLOs, and the model of how Locust's spawn bursts queue at a CSMS that boots one
charger at a time (FIFO)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.capacity.config import CapacityConfig
from loadgen.capacity.judgement import (
    StepMeasurement,
    Verdict,
    fmt_ms,
    judge_admission,
    saturation_reasons,
)
from loadgen.capacity.search import LIMITED_BY_GENERATOR, REACHED_MAX, REFINED, START_FAILED
from loadgen.pacing import start_offset


def spawn_bursts(chargers: int, rate: float) -> list[tuple[float, int]]:
    """How Locust starts ``chargers`` users at ``rate`` a second: ``(seconds after the
    first, users)`` per burst. It starts floor(rate) users at once (at least one), every
    floor(rate) / rate seconds, the last burst holding what is left."""
    burst = max(1, math.floor(rate))
    interval = burst / rate
    return [
        (n * interval, min(burst, chargers - n * burst)) for n in range(math.ceil(chargers / burst))
    ]


def fifo_boots(
    chargers: int,
    rate: float,
    boot_rate: float,
    connect_s: float = 0.0,
    bursts: Sequence[tuple[float, int]] | None = None,
) -> tuple[float, float]:
    """A rate step at a CSMS that answers ``boot_rate`` BootNotifications a second, one
    after the other in arrival order, its chargers arriving the way Locust starts them
    (:func:`spawn_bursts`), the generator connecting a burst's chargers one after the other
    in ``connect_s`` each (after the process's own spreading of a burst,
    :func:`loadgen.pacing.start_offset`): ``(the longest a charger waits, when the last is
    answered)``, in
    seconds from the step's start. The first at an idle CSMS waits nothing (round trips
    are not in this). ``bursts``: the arrivals as they came, instead of as planned."""
    gap = 1 / boot_rate
    free, worst = 0.0, 0.0
    for at, users in bursts or spawn_bursts(chargers, rate):
        for n in range(users):
            # the process spreads a burst's starts (loadgen.pacing), then connects one by one
            arrived = at + max(start_offset(n, users), (n + 1) * connect_s)
            turn = max(arrived, free)
            worst, free = max(worst, turn - arrived), turn + gap
    return worst, free - gap


def fifo_boot_rate(
    chargers: int,
    rate: float,
    seconds: float,
    *,
    last: bool = True,
    connect_s: float = 0.0,
    bursts: Sequence[tuple[float, int]] | None = None,
) -> float:
    """The boot rate at which :func:`fifo_boots` answers the last boot after ``seconds``
    (``last=False``: at which the longest wait is ``seconds``): what a step says the CSMS
    admitted, in chargers/s (infinite when no boot rate is that slow)."""
    if seconds <= (fifo_boots(chargers, rate, 1e9, connect_s, bursts)[1] if last else 0):
        return math.inf
    low, high = 1e-3, 1e6
    for _ in range(60):  # both fall as the boot rate grows
        middle = math.sqrt(low * high)
        if fifo_boots(chargers, rate, middle, connect_s, bursts)[0 if not last else 1] > seconds:
            low = middle
        else:
            high = middle
    return high


@dataclass(frozen=True)
class RateStepMeasurement:
    """One step of fresh chargers arriving at ``rate`` a second.

    ``ramp``: the metrics from the step's start until its chargers were booted (or its
    time was up), judged by the connect SLOs. ``last_boot_s``: when the step's last boot
    was answered, in seconds from the step's start (Locust starts its first users then);
    ``last_connect_s``: when its last connection was made (its boot sent).
    ``late_boot_ms``: the slowest BootNotification of the step; ``quick_boot_ms``: the
    quickest (the CSMS's own round trip, with no one ahead). ``spawn_seconds``: how long
    the load generator took to start the step's users (None: it never did).
    ``batch_starts_s``: when the generator started each batch of the step's users, in
    seconds from the step's start (None: nothing says).
    """

    rate: float
    chargers: int
    booted: int
    seconds: float
    ramp: StepMeasurement
    late_boot_ms: float | None = None
    spawn_seconds: float | None = None
    quick_boot_ms: float | None = None
    last_boot_s: float | None = None
    last_connect_s: float | None = None
    batch_starts_s: tuple[float, ...] | None = None

    def bursts(self) -> list[tuple[float, int]]:
        """The step's arrivals, ``(seconds from its start, users)`` per burst: as Locust was
        asked to start them (:func:`spawn_bursts`), at the times the generator really
        started each when ``batch_starts_s`` says so burst for burst. A busy generator starts
        a burst late, and the boots that follow come late through no fault of the CSMS.
        (Several workers each start a share: then the counts differ and the plan stands.)"""
        planned = spawn_bursts(self.chargers, self.rate)
        if self.bursts_planned():
            return planned
        assert self.batch_starts_s is not None
        return [
            (start, users) for (_, users), start in zip(planned, self.batch_starts_s, strict=True)
        ]

    def bursts_planned(self) -> bool:
        """Whether :meth:`bursts` is the plan (nothing says when each burst came)."""
        starts = self.batch_starts_s
        return not starts or len(starts) != len(spawn_bursts(self.chargers, self.rate))

    @property
    def arrival_seconds(self) -> float:
        """The time the step's arrivals take at the offered rate."""
        return self.chargers / self.rate

    @property
    def last_arrival_seconds(self) -> float:
        """When Locust starts the step's last user (:func:`spawn_bursts`), the process
        spreading each burst (:func:`loadgen.pacing.start_offset`; with several workers each
        spreads its share, so their last users start a little sooner)."""
        at, users = self.bursts()[-1]
        return at + start_offset(users - 1, users)

    @property
    def connect_s(self) -> float:
        """The generator's time to connect one charger of a burst, from when the last
        burst's last connection was made (0 when unknown)."""
        if self.last_connect_s is None:
            return 0.0
        at, users = self.bursts()[-1]
        return max(0.0, self.last_connect_s - at) / users

    def pace(self, config: CapacityConfig) -> tuple[float, float] | None:
        """``(measured, allowed)`` in ms for "kept pace"; None with nothing to judge by.

        Allowed is what a CSMS booting ``rate / (1 + tolerance)`` a second one by one in
        arrival order would give under Locust's bursts (:func:`fifo_boots`), plus the
        quickest boot (a round trip) and a little jitter. Measured is, when known, when the
        step's last boot was answered: the generator's own time to connect a burst's
        chargers spreads their boots, which hides a backlog in their latency but not in
        when the last is answered; the model then connects a burst's chargers at the pace
        the generator connected the last burst's (:attr:`connect_s`), which delays the last
        boot at a CSMS that keeps up, and not at one that does not. Otherwise the step's
        slowest boot, judged on the whole step: a full burst's last boot waits longer than a
        smaller last burst's, however fast the CSMS keeps up.
        """
        service = self.rate / (1 + config.rate_pace_tolerance)
        worst, last = fifo_boots(self.chargers, self.rate, service, self.connect_s, self.bursts())
        extra = (self.quick_boot_ms or 0.0) + PACE_JITTER_MS
        if self.last_boot_s is not None:
            return self.last_boot_s * 1000, last * 1000 + extra
        if self.late_boot_ms is not None:
            return self.late_boot_ms, worst * 1000 + extra
        return None

    def kept_pace(self, config: CapacityConfig) -> bool:
        pace = self.pace(config)
        return pace is None or pace[0] <= pace[1]

    def figures(self) -> dict[str, Any]:
        """For the reports: chargers booted, the boot rate the step says the CSMS kept
        (None: no figure, or nothing waited), the p95 and slowest boot, the last boot."""
        boots = self.ramp.actions.get("BootNotification")
        admitted = self.admitted_rate()
        return {
            "chargers": self.chargers,
            "booted": self.booted,
            "admitted_per_s": None if admitted is None or math.isinf(admitted) else admitted,
            "boot_p95_ms": None if boots is None else boots.p95_ms,
            "slowest_boot_ms": self.late_boot_ms,
            "last_boot_s": self.last_boot_s,
            "last_connect_s": self.last_connect_s,
            # when each burst came (None: as planned), which the pace was judged against
            "batch_starts_s": None if self.bursts_planned() else [at for at, _ in self.bursts()],
        }

    def admitted_rate(self) -> float | None:
        """The boot rate the step says the CSMS kept (chargers/s), None without a figure."""
        quick = (self.quick_boot_ms or 0.0) / 1000
        if self.last_boot_s is not None:
            seconds = self.last_boot_s - quick
            return fifo_boot_rate(
                self.chargers, self.rate, seconds, connect_s=self.connect_s, bursts=self.bursts()
            )
        if self.late_boot_ms is not None:
            wait = self.late_boot_ms / 1000 - quick
            return fifo_boot_rate(self.chargers, self.rate, wait, last=False)
        return None


#: the load generator started a step's users this much slower than offered (and 1 s more,
#: Locust's spawn ticks): it, not the CSMS, set the pace
GENERATOR_SPAWN_SLACK = 0.25
#: jitter on top of the pace and the quickest boot (the generator's hub, a busy machine)
PACE_JITTER_MS = 20.0
#: a rate step that met a connection ceiling is repeated with this share of the chargers
#: the CSMS held, but never fewer than RATE_MIN_STEP_CHARGERS (too few to show a backlog)
RATE_CEILING_SHARE = 0.8
RATE_MIN_STEP_CHARGERS = 10


def judge_rate(step: RateStepMeasurement, config: CapacityConfig) -> Verdict:
    """A rate step against the connect SLOs, plus "keeps pace": the CSMS booted at least
    ``1 / (1 + rate_pace_tolerance)`` of the offered rate, judged by when the step's last
    boot was answered (or by its slowest boot) against a CSMS that boots that rate one by
    one in arrival order (:meth:`RateStepMeasurement.pace`). A CSMS that falls behind has
    a backlog its last arrivals wait through; one that keeps up has none beyond Locust's
    bursts.

    A step the load generator could not start at the offered rate, while the CSMS answered
    in time, is the generator's limit (``generator_saturated``), as are the lag/CPU guards.
    """
    saturation = saturation_reasons(step.ramp, config)
    reasons = judge_admission(step.ramp, config)
    missing = step.chargers - step.booted
    if missing > 0:
        reasons.append(
            f"only {step.booted} of {step.chargers} chargers booted within "
            f"{step.seconds:.0f} s at {step.rate:.3g}/s"
        )
    pace = step.pace(config)
    if pace is not None and pace[0] > pace[1]:
        what = (
            "the last boot was answered after"
            if step.last_boot_s is not None
            else ("the slowest boot took")
        )
        reasons.append(
            f"did not keep pace at {step.rate:.3g}/s: {what} {fmt_ms(pace[0])} ms "
            f"(> {fmt_ms(pace[1])} ms; about {step.admitted_rate() or 0:.3g} booted/s)"
        )
    expected = step.arrival_seconds * (1 + GENERATOR_SPAWN_SLACK) + 1.0
    if (step.spawn_seconds is None or step.spawn_seconds > expected) and not reasons:
        took = "never" if step.spawn_seconds is None else f"in {step.spawn_seconds:.1f} s"
        saturation.append(
            f"load generator saturated: started {step.chargers} chargers {took}, "
            f"not {step.arrival_seconds:.1f} s ({step.rate:.3g}/s)"
        )
    return Verdict(not saturation and not reasons, saturation + reasons, bool(saturation))


class RateSearch:
    """The connect-rate search as a state machine, like :class:`CapacitySearch` but in
    chargers per second: ``rate_start``, doubling while the steps keep pace (capped at
    ``rate_max``), then bisection between the last good and the first bad rate until they
    are at most :meth:`CapacityConfig.rate_resolution_at` apart."""

    def __init__(self, config: CapacityConfig) -> None:
        self.config = config
        self.steps: list[tuple[float, Verdict]] = []
        #: what each of ``steps`` measured (:meth:`RateStepMeasurement.figures`)
        self.figures: list[dict[str, Any]] = []
        self.measurements: list[RateStepMeasurement] = []
        self.good: float | None = None
        self.bad: float | None = None
        #: fewer chargers per step once a step met the CSMS's connection ceiling
        self.step_cap: int | None = None
        self._pending: float | None = config.rate_start
        self._answer: tuple[float | None, str, bool] | None = None

    @property
    def done(self) -> bool:
        return self._answer is not None

    @property
    def phase(self) -> str:
        if self.done:
            return "done"
        return "rate-ramp" if self.bad is None else "rate-bisect"

    def next_rate(self) -> float | None:
        """The rate to offer next; None when the search is over."""
        return None if self.done else self._pending

    def chargers_for(self, rate: float) -> int:
        """Fresh chargers of a step at ``rate``: the config's size, under :attr:`step_cap`."""
        size = self.config.rate_step_size(rate)
        return size if self.step_cap is None else min(size, self.step_cap)

    def _ceiling_cap(self, step: RateStepMeasurement) -> int | None:
        """A smaller step size when ``step`` failed only because the CSMS refused connections
        past a ceiling while it booted those it took at the pace offered: that measured its
        concurrency, not its admission rate (ten seconds of arrivals at 20/s are 200
        chargers, more than a CSMS holding 150 takes). None when the step says nothing of it."""
        refused = step.ramp.connect_failures > 0 and step.booted < step.chargers
        kept_pace = step.kept_pace(self.config)
        cap = math.floor(step.booted * RATE_CEILING_SHARE)
        if refused and kept_pace and RATE_MIN_STEP_CHARGERS <= cap < step.chargers:
            return cap
        return None

    def record(self, step: RateStepMeasurement) -> Verdict:
        if self.done:
            raise RuntimeError("the connect-rate search is over; nothing to record")
        rate = self._pending
        assert rate is not None
        if step.rate != rate:
            raise ValueError(f"a measurement at {step.rate:g}/s, but the rate is {rate:g}/s")
        verdict = judge_rate(step, self.config)
        cap = None if verdict.ok or verdict.generator_saturated else self._ceiling_cap(step)
        if cap is not None:
            # The same rate again with fewer chargers: not a verdict on the rate.
            self.step_cap = cap
            verdict = Verdict(
                False,
                [
                    f"the CSMS held only {step.booted} of {step.chargers} chargers: "
                    f"rate steps now use at most {cap} (not judged as a rate)",
                    *verdict.reasons,
                ],
            )
            self.measurements.append(step)
            return verdict
        self.steps.append((rate, verdict))
        self.figures.append(step.figures())
        self.measurements.append(step)
        if verdict.generator_saturated:
            self._answer = (
                None,
                f"{LIMITED_BY_GENERATOR} at {rate:.3g} chargers/s: " + "; ".join(verdict.reasons),
                True,
            )
        elif verdict.ok:
            self.good = rate
            self._advance()
        else:
            self.bad = rate
            if self.good is None:
                self._answer = (
                    None,
                    f"{START_FAILED} ({rate:.3g} chargers/s): " + "; ".join(verdict.reasons),
                    False,
                )
            else:
                self._advance()
        return verdict

    def answer(self) -> tuple[float | None, str, bool]:
        """(chargers/s or None, why it stopped, limited by the load generator)."""
        if self._answer is not None:
            return self._answer
        return self.good, f"unfinished (next rate {self._pending:g}/s)", False

    def _advance(self) -> None:
        config, good = self.config, self.good
        assert good is not None
        if self.bad is None:
            if good >= config.rate_max:
                self._answer = (good, f"{REACHED_MAX} ({config.rate_max:g} chargers/s)", False)
                return
            self._pending = min(good * 2, config.rate_max)
            return
        if self.bad - good <= config.rate_resolution_at(good) + 1e-9:
            failed = next(v for rate, v in self.steps if rate == self.bad)
            self._answer = (
                good,
                f"{REFINED}: {good:.3g}/s kept pace, {self.bad:.3g}/s did not "
                f"({'; '.join(failed.reasons)})",
                False,
            )
            return
        self._pending = round((good + self.bad) / 2, 3)
