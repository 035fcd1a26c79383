"""What one step measured and whether it held the SLOs: percentiles, the step's figures,
the verdict, and the load generator's saturation guards (a saturated generator is no
CSMS figure)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadgen.capacity.config import CapacityConfig

ADMISSION_LIMITED = "admission limited"
#: actions of a charger's admission: judged by the connect SLOs over the ramp, never by a
#: hold's latency SLO (a hold starts once every charger is booted; on a master the last
#: boots of the ramp may still arrive in the hold's first worker reports)
RAMP_ACTIONS = frozenset({"BootNotification"})


def percentile(samples: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, interpolated linearly between the
    closest ranks (numpy's default). Empty samples or q outside 0..100: ValueError."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be between 0 and 100, not {q}")
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def bucket_percentile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The ``q``-th percentile (0..100) from a cumulative histogram, the way Prometheus's
    ``histogram_quantile`` does it: ``buckets`` are ``(upper bound, cumulative count)``
    sorted by bound, the last one ``+Inf``; linear interpolation inside the bucket (from 0
    for the first). A rank in the +Inf bucket gives the largest finite bound. None when the
    histogram is empty.

    For a hold, pass the differences of the cumulative counts between its end and start.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be between 0 and 100, not {q}")
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = total * q / 100
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        if not math.isinf(bound):
            lower_bound = bound
        lower_count = count
    return lower_bound


def count_percentile(counts: Mapping[float, float], q: float) -> float | None:
    """The ``q``-th percentile (0..100, nearest rank) of values given as ``{value: count}``
    (Locust's ``StatsEntry.response_times``: ms rounded to 2 significant digits above
    100). None when there are none."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be between 0 and 100, not {q}")
    items = sorted((value, n) for value, n in counts.items() if n > 0)
    total = sum(n for _, n in items)
    if total <= 0:
        return None
    rank = max(1.0, math.ceil(total * q / 100 - 1e-9))
    seen = 0.0
    for value, n in items:
        seen += n
        if seen >= rank:
            return float(value)
    return float(items[-1][0])


@dataclass(frozen=True)
class ActionStats:
    """One action's CALLs during a hold: how many were sent, and latency percentiles (ms)."""

    count: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    #: CALLs of this action not answered with a CALLRESULT
    errors: int = 0

    @classmethod
    def from_samples(cls, samples_ms: Iterable[float]) -> ActionStats:
        values = list(samples_ms)
        if not values:
            return cls(0)
        return cls(
            len(values),
            percentile(values, 50),
            percentile(values, 95),
            percentile(values, 99),
        )


@dataclass(frozen=True)
class StepMeasurement:
    """What one hold of ``chargers`` (the target asked for) measured.

    ``actions``: per-action :class:`ActionStats` (or a list of latency samples in ms, turned
    into stats here); ``count`` is every CALL sent, whatever its outcome. ``call_errors``:
    CALLs not answered with a CALLRESULT (CALLERROR, invalid reply, timeout, connection
    lost). ``unexpected_disconnects``: connections the CSMS closed or lost (not the load
    generator's own). ``schedule_lag_p99_ms`` / ``cpu``: the worst worker's.
    """

    chargers: int
    actions: Mapping[str, ActionStats] = field(default_factory=dict)
    call_errors: int = 0
    connect_attempts: int = 0
    connect_failures: int = 0
    unexpected_disconnects: int = 0
    messages_per_s: float = 0.0
    schedule_lag_p99_ms: float | None = None
    cpu: float | None = None
    #: chargers connected at the end of the hold (None: not measured)
    connected: int | None = None
    #: chargers connected and booted (Accepted) at the end (None: not measured)
    booted: int | None = None
    #: seconds the measurement covers
    seconds: float | None = None
    #: CALLs not answered with a CALLRESULT, by error code (CALLERROR codes, or the outcome:
    #: "timeout", "disconnected")
    error_codes: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stats = {
            name: value if isinstance(value, ActionStats) else ActionStats.from_samples(value)
            for name, value in self.actions.items()
        }
        object.__setattr__(self, "actions", stats)
        object.__setattr__(self, "error_codes", dict(self.error_codes))

    @property
    def calls(self) -> int:
        return sum(stats.count for stats in self.actions.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "chargers": self.chargers,
            "connected": self.connected,
            "booted": self.booted,
            "seconds": self.seconds,
            "actions": {
                name: {
                    "count": s.count,
                    "errors": s.errors,
                    "p50_ms": s.p50_ms,
                    "p95_ms": s.p95_ms,
                    "p99_ms": s.p99_ms,
                }
                for name, s in sorted(self.actions.items())
            },
            "calls": self.calls,
            "call_errors": self.call_errors,
            "error_codes": dict(sorted(self.error_codes.items())),
            "connect_attempts": self.connect_attempts,
            "connect_failures": self.connect_failures,
            "unexpected_disconnects": self.unexpected_disconnects,
            "messages_per_s": self.messages_per_s,
            "schedule_lag_p99_ms": self.schedule_lag_p99_ms,
            "cpu": self.cpu,
        }


def with_count_percentiles(
    measurement: StepMeasurement,
    before: Mapping[str, Mapping[float, int]],
    after: Mapping[str, Mapping[float, int]],
) -> StepMeasurement:
    """``measurement`` with each action's percentiles taken from the difference of two
    ``{action: {ms: count}}`` views (Locust's own response times, ms to 2 significant
    digits) instead of histogram buckets, which are too coarse to judge an SLO by (a reply
    of 140 ms in a 100-250 ms bucket reads as a p95 of 242 ms). Actions without counts in
    the interval keep theirs."""
    actions = dict(measurement.actions)
    for action, stats in measurement.actions.items():
        start = before.get(action, {})
        delta = {v: n - start.get(v, 0) for v, n in after.get(action, {}).items()}
        if sum(n for n in delta.values() if n > 0) == 0:
            continue
        actions[action] = dataclasses.replace(
            stats,
            p50_ms=count_percentile(delta, 50),
            p95_ms=count_percentile(delta, 95),
            p99_ms=count_percentile(delta, 99),
        )
    return dataclasses.replace(measurement, actions=actions)


@dataclass(frozen=True)
class Verdict:
    """``ok``: the step held every SLO and the load generator was not saturated.
    ``reasons``: one line per violated SLO or guard (the saturation guard's first)."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    generator_saturated: bool = False


def fmt_ms(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.3g}"


def _pct(value: float) -> str:
    return f"{value * 100:.3g}%"


@dataclass(frozen=True)
class SloCheck:
    """One SLO (or load-generator guard) judged on one measurement: what it measured
    against its limit. A step's :class:`Verdict` keeps the ``reason`` of those that did not
    hold; a plain run's verdict (``--check-slo``) says every one."""

    #: what is judged: "p95 Heartbeat", "CALL error ratio", "chargers booted" ...
    name: str
    held: bool
    #: the measured figure and the limit, for people ("512 ms", "0.3% (3/1000)")
    figure: str
    limit: str
    #: the line a failed check gives (``Verdict.reasons``); empty when it held
    reason: str = ""
    #: a guard on the load generator, not an SLO of the CSMS
    guard: bool = False

    def line(self) -> str:
        """``SLO p95 Heartbeat: held (512 ms <= 1000 ms)`` or ``...: FAILED (reason)``."""
        kind = "guard" if self.guard else "SLO"
        if self.held:
            return f"{kind} {self.name}: held ({self.figure} <= {self.limit})"
        return f"{kind} {self.name}: FAILED ({self.reason})"


def _check(name: str, figure: str, limit: str, failed: str | None, guard: bool = False) -> SloCheck:
    return SloCheck(name, failed is None, figure, limit, failed or "", guard)


def saturation_checks(step: StepMeasurement, config: CapacityConfig) -> list[SloCheck]:
    """The load generator's guards that could be judged (its lag p99 and CPU)."""
    checks: list[SloCheck] = []
    lag, lag_guard = step.schedule_lag_p99_ms, config.max_schedule_lag_p99_ms
    if lag is not None and lag_guard is not None:
        failed = (
            f"load generator saturated: schedule lag p99 {fmt_ms(lag)} ms > {fmt_ms(lag_guard)} ms"
        )
        checks.append(
            _check(
                "load generator schedule lag p99",
                f"{fmt_ms(lag)} ms",
                f"{fmt_ms(lag_guard)} ms",
                failed if lag > lag_guard else None,
                guard=True,
            )
        )
    cpu, cpu_guard = step.cpu, config.max_generator_cpu
    if cpu is not None and cpu_guard is not None:
        failed = f"load generator saturated: CPU {cpu:.2f} > {cpu_guard:.2f}"
        checks.append(
            _check(
                "load generator CPU",
                f"{cpu:.2f}",
                f"{cpu_guard:.2f}",
                failed if cpu > cpu_guard else None,
                guard=True,
            )
        )
    return checks


def _ratio_check(
    name: str, part: int, whole: int, limit: float | None, what: str = ""
) -> SloCheck | None:
    """``part / whole`` against ``limit`` (None: no such SLO, or nothing to divide)."""
    if limit is None or whole <= 0:
        return None
    ratio = part / whole
    figure = f"{_pct(ratio)} ({part}/{whole}{what})"
    failed = f"{name} {figure} > {_pct(limit)}" if ratio > limit else None
    return _check(name, figure, _pct(limit), failed)


def _p95_check(action: str, p95_ms: float | None, slo: float | None) -> SloCheck | None:
    """An action's p95 against its limit (None: no such SLO, or no calls to judge)."""
    if slo is None or p95_ms is None:
        return None
    failed = f"p95 {action} {fmt_ms(p95_ms)} ms > {fmt_ms(slo)} ms" if p95_ms > slo else None
    return _check(f"p95 {action}", f"{fmt_ms(p95_ms)} ms", f"{fmt_ms(slo)} ms", failed)


def saturation_reasons(step: StepMeasurement, config: CapacityConfig) -> list[str]:
    """The saturation guards: one line per guard the load generator broke."""
    return [c.reason for c in saturation_checks(step, config) if not c.held]


def hold_checks(step: StepMeasurement, config: CapacityConfig) -> list[SloCheck]:
    """A hold's SLOs, one check each: p95 per action (not the ramp's), the CALL error
    ratio, the connect failure ratio, the chargers not there, the unexpected disconnects."""
    checks: list[SloCheck] = []
    for action, stats in sorted(step.actions.items()):
        if action in RAMP_ACTIONS:
            continue  # the ramp's connect SLOs judge these (judge_admission)
        if (check := _p95_check(action, stats.p95_ms, config.p95_slo_ms(action))) is not None:
            checks.append(check)
    calls = step.calls
    if calls == 0:
        checks.append(
            _check(
                "CALLs measured",
                "0",
                "at least 1",
                f"no CALLs measured at {step.chargers} chargers",
            )
        )
    else:
        check = _ratio_check(
            "CALL error ratio", step.call_errors, calls, config.max_call_error_ratio
        )
        if check is not None:
            checks.append(check)
    check = _ratio_check(
        "connect failure ratio",
        step.connect_failures,
        step.connect_attempts,
        config.max_connect_failure_ratio,
    )
    if check is not None:
        checks.append(check)
    there, what = (
        (step.booted, "booted") if step.booted is not None else (step.connected, "connected")
    )
    limit = config.max_connect_failure_ratio
    if limit is not None and there is not None and step.chargers > 0:
        # a CSMS that stops accepting may leave chargers waiting in back-off, attempting
        # nothing during the hold: count who is not there (connected and booted), too
        missing = max(0, step.chargers - there)
        share = missing / step.chargers
        failed = (
            f"only {there} of {step.chargers} chargers {what} "
            f"(missing {_pct(share)} > {_pct(limit)})"
        )
        checks.append(
            _check(
                f"chargers {what}",
                f"{there} of {step.chargers} (missing {_pct(share)})",
                f"{_pct(limit)} missing",
                failed if share > limit else None,
            )
        )
    if step.chargers > 0:
        check = _ratio_check(
            "unexpected disconnect ratio",
            step.unexpected_disconnects,
            step.chargers,
            config.max_disconnect_ratio,
            " chargers",
        )
        if check is not None:
            checks.append(check)
    return checks


def judge(step: StepMeasurement, config: CapacityConfig) -> Verdict:
    """Judge one step against the SLOs; a saturated load generator is never the CSMS's
    failure (``generator_saturated``: the search stops without a CSMS figure)."""
    saturation = saturation_reasons(step, config)
    reasons = [c.reason for c in hold_checks(step, config) if not c.held]
    return Verdict(not saturation and not reasons, saturation + reasons, bool(saturation))


def admission_checks(ramp: StepMeasurement, config: CapacityConfig) -> list[SloCheck]:
    """The ramp's connect SLOs, one check each: the connect failure ratio, and the
    BootNotifications' error ratio and p95."""
    checks: list[SloCheck] = []
    check = _ratio_check(
        "connect failure ratio",
        ramp.connect_failures,
        ramp.connect_attempts,
        config.max_connect_failure_ratio,
    )
    if check is not None:
        checks.append(check)
    for action in sorted(RAMP_ACTIONS & set(ramp.actions)):
        stats = ramp.actions[action]
        check = _ratio_check(
            f"{action} error ratio", stats.errors, stats.count, config.max_call_error_ratio
        )
        if check is not None:
            checks.append(check)
        if (check := _p95_check(action, stats.p95_ms, config.boot_p95_ms)) is not None:
            checks.append(check)
    return checks


def judge_admission(ramp: StepMeasurement, config: CapacityConfig) -> list[str]:
    """The ramp's connect SLOs (connect failure ratio, BootNotification error ratio and
    p95): one line per one broken; empty when the CSMS admitted the chargers in time.

    ``ramp`` covers the ramp of one step, from its start until its chargers were booted
    (or admission stalled).
    """
    return [c.reason for c in admission_checks(ramp, config) if not c.held]


def admission_note(reasons: Sequence[str], booted: int, seconds: float) -> str | None:
    """The words for a ramp that broke a connect SLO: ``admission limited: about 22
    chargers/s (...)``, the rate at which chargers were booted; None when none broke."""
    if not reasons:
        return None
    rate = booted / seconds if seconds > 0 else 0.0
    return f"{ADMISSION_LIMITED}: about {rate:.3g} chargers/s ({'; '.join(reasons)})"
