"""The chargers search: step the chargers up until a step fails its SLOs, then bisect
between the last good and the first bad step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loadgen.capacity.config import CapacityConfig
from loadgen.capacity.judgement import StepMeasurement, Verdict, judge

#: why the search stopped (the start of :attr:`CapacityResult.stopped_because`)
REACHED_MAX = "reached --capacity-max"
LIMITED_BY_GENERATOR = "limited by the load generator (add workers)"
START_FAILED = "even the start failed"
REFINED = "refined by bisection"
CONNECT_RATE_NOT_SEARCHED = "not searched"
CHARGERS_NOT_SEARCHED = "not searched (--capacity-search connect-rate)"


@dataclass(frozen=True)
class CapacityResult:
    """``max_chargers``: the most chargers that held every SLO, None when there is no CSMS
    figure (the start failed, or the load generator was the limit)."""

    max_chargers: int | None
    limited_by_generator: bool
    stopped_because: str
    steps: list[tuple[int, Verdict]]
    #: the other capacity: new chargers per second connected and booted within the connect
    #: SLOs; None when not searched or not found (``connect_rate_stopped_because`` says)
    max_connect_rate: float | None = None
    connect_rate_stopped_because: str = CONNECT_RATE_NOT_SEARCHED
    #: the connect-rate search's steps: (offered chargers/s, verdict)
    connect_rate_steps: list[tuple[float, Verdict]] = field(default_factory=list)
    #: the connect-rate search's generator limit (as ``limited_by_generator``)
    connect_rate_limited_by_generator: bool = False
    #: what each of ``connect_rate_steps`` measured (:meth:`RateStepMeasurement.figures`)
    connect_rate_figures: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the console: concurrent chargers (the connect rate has its own)."""
        if self.max_chargers is None:
            return f"capacity: no answer: {self.stopped_because}"
        return f"capacity: {self.max_chargers} chargers ({self.stopped_because})"

    def connect_rate_line(self) -> str:
        """The connect-rate answer as one console line."""
        if self.max_connect_rate is None:
            return f"capacity: connect rate: no answer: {self.connect_rate_stopped_because}"
        return (
            f"capacity: connect rate {self.max_connect_rate:.3g} chargers/s "
            f"({self.connect_rate_stopped_because})"
        )

    def to_dict(self) -> dict[str, Any]:
        figures = self.connect_rate_figures
        return {
            "max_chargers": self.max_chargers,
            "limited_by_generator": self.limited_by_generator,
            "stopped_because": self.stopped_because,
            "max_connect_rate": self.max_connect_rate,
            "connect_rate_stopped_because": self.connect_rate_stopped_because,
            "steps": [
                {
                    "chargers": chargers,
                    "ok": verdict.ok,
                    "generator_saturated": verdict.generator_saturated,
                    "reasons": list(verdict.reasons),
                }
                for chargers, verdict in self.steps
            ],
            "connect_rate_limited_by_generator": self.connect_rate_limited_by_generator,
            "connect_rate_steps": [
                {
                    "rate": rate,
                    "ok": verdict.ok,
                    "generator_saturated": verdict.generator_saturated,
                    "reasons": list(verdict.reasons),
                    **(figures[i] if i < len(figures) else {}),
                }
                for i, (rate, verdict) in enumerate(self.connect_rate_steps)
            ],
        }


class CapacitySearch:
    """The search as a state machine: :meth:`next_target`, hold, :meth:`record`, repeat
    until :meth:`next_target` is None, then :meth:`result`.

    Ramp: ``start``, then ``step.after(previous)`` capped at ``max_chargers``, while the
    steps hold. Bisection: the midpoint of the last good and first bad targets, until they
    are at most :meth:`CapacityConfig.resolution_at` apart. Targets are never repeated.
    """

    def __init__(self, config: CapacityConfig) -> None:
        self.config = config
        self.steps: list[tuple[int, Verdict]] = []
        self.measurements: list[StepMeasurement] = []
        self.good: int | None = None  # the largest target that held
        self.bad: int | None = None  # the smallest target that failed
        self._pending: int | None = config.start
        self._result: CapacityResult | None = None

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def phase(self) -> str:
        """ "ramp", "bisect" or "done"."""
        if self.done:
            return "done"
        return "ramp" if self.bad is None else "bisect"

    def next_target(self) -> int | None:
        """The chargers to hold next; None when the search is over. Asking again before
        :meth:`record` gives the same target."""
        return None if self.done else self._pending

    def record(self, measurement: StepMeasurement) -> Verdict:
        """The measurement of the pending target's hold; returns its verdict."""
        if self.done:
            raise RuntimeError("the capacity search is over; nothing to record")
        target = self._pending
        assert target is not None
        if measurement.chargers != target:
            raise ValueError(
                f"a measurement of {measurement.chargers} chargers, but the target is {target}"
            )
        verdict = judge(measurement, self.config)
        self.steps.append((target, verdict))
        self.measurements.append(measurement)
        if verdict.generator_saturated:
            self._finish(
                None,
                f"{LIMITED_BY_GENERATOR} at {target} chargers: " + "; ".join(verdict.reasons),
                limited_by_generator=True,
            )
        elif verdict.ok:
            self.good = target
            self._advance()
        else:
            self.bad = target
            if self.good is None:
                self._finish(
                    None,
                    f"{START_FAILED} ({target} chargers): " + "; ".join(verdict.reasons),
                )
            else:
                self._advance()
        return verdict

    def result(self) -> CapacityResult:
        """The answer; while the search runs, the answer so far (``stopped_because``
        says it is unfinished)."""
        if self._result is not None:
            return self._result
        return CapacityResult(
            self.good, False, f"unfinished (next target {self._pending})", list(self.steps)
        )

    def _advance(self) -> None:
        config = self.config
        good = self.good
        assert good is not None
        if self.bad is None:  # ramp
            if good >= config.max_chargers:
                self._finish(good, f"{REACHED_MAX} ({config.max_chargers} chargers held)")
                return
            self._pending = min(config.step.after(good), config.max_chargers)
            return
        bad = self.bad
        if bad - good <= config.resolution_at(good):
            failed = next(v for chargers, v in self.steps if chargers == bad)
            self._finish(
                good,
                f"{REFINED}: {good} held, {bad} failed ({'; '.join(failed.reasons)})",
            )
            return
        self._pending = (good + bad) // 2

    def _finish(self, chargers: int | None, why: str, limited_by_generator: bool = False) -> None:
        self._pending = None
        self._result = CapacityResult(chargers, limited_by_generator, why, list(self.steps))
