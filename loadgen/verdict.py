"""A plain run's verdict by the SLOs (``--check-slo``): pure, so it is tested without Locust.

The capacity search judges each step's hold by the SLOs and its ramp by the connect SLOs
(:func:`loadgen.capacity.hold_checks`, :func:`~loadgen.capacity.admission_checks`). A plain
run is judged by the same checks over the whole run, taken as one step of its ``--users``:
the latency p95 of every action but BootNotification, the CALL error ratio, the connect
failure ratio, the chargers not booted when the run ended and the unexpected disconnects;
and BootNotification by its connect SLOs (error ratio, ``--slo-boot-p95-ms``).

The load generator's guards (lag, CPU) are left to the capacity search, which measures
them over holds: over a whole run they catch the hiccups of its start (the first users'
imports), and a saturated generator can only make latencies worse, never a verdict pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loadgen.capacity.config import CapacityConfig
from loadgen.capacity.judgement import (
    SloCheck,
    StepMeasurement,
    admission_checks,
    hold_checks,
)


def run_checks(run: StepMeasurement, config: CapacityConfig) -> list[SloCheck]:
    """Every SLO that could be judged on ``run``, once each, in the order people read
    them: latency, errors, connects, then the connect SLOs of the BootNotifications."""
    checks = hold_checks(run, config)
    names = {check.name for check in checks}
    return checks + [check for check in admission_checks(run, config) if check.name not in names]


@dataclass(frozen=True)
class RunVerdict:
    """The SLO checks of a run, and what else failed it (exceptions in the load generator)."""

    checks: list[SloCheck]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(check.held for check in self.checks)

    @property
    def reasons(self) -> list[str]:
        return self.problems + [check.reason for check in self.checks if not check.held]

    def lines(self) -> list[str]:
        """The console's words: a headline, then one line per SLO."""
        held = sum(check.held for check in self.checks)
        if self.ok:
            head = f"SLO verdict: PASSED ({held} of {len(self.checks)} held)"
        else:
            head = f"SLO verdict: FAILED ({'; '.join(self.reasons)})"
        return [head, *(f"  {check.line()}" for check in self.checks), *self.problems_lines()]

    def problems_lines(self) -> list[str]:
        return [f"  FAILED: {problem}" for problem in self.problems]


def judge_run(
    run: StepMeasurement, config: CapacityConfig, problems: list[str] | None = None
) -> RunVerdict:
    return RunVerdict(run_checks(run, config), list(problems or []))
