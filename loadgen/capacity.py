"""Capacity search, the pure core: configuration, SLO judgement of one step, and the search.

The question answered: the largest number of concurrent chargers the CSMS holds while its
answers stay within SLOs. The search steps the chargers up from ``start`` (a factor such as
``x1.5`` or an increment such as ``+100``) until the first step that fails its SLOs or
``max_chargers``, then bisects between the last good and the first bad step until they are
at most ``max(1, resolution, resolution_ratio * good)`` apart. A step where the load
generator itself was saturated (schedule-lag p99 over the guard, or CPU over its guard)
stops the search with "limited by the load generator (add workers)" and no CSMS figure.

Nothing here does I/O or imports Locust / gevent; the caller drives the state machine.
How a Locust ``LoadTestShape`` would drive it::

    search = CapacitySearch(config)
    # tick(): at the start of each hold
    target = search.next_target()          # None: finished -> report search.result()
    metrics.set_target(target)             # and return (target, spawn_rate) from tick()
    # ... wait until the chargers are connected, then hold config.hold_seconds (at least one
    # full heartbeat / meter cycle), remembering the merged histograms / counters at the
    # start of the hold ...
    # at the end of the hold: the differences over the hold become one StepMeasurement
    #   per-action p50/p95/p99: bucket_percentile() over call_duration_seconds{action}
    #   call_errors: CALLs not answered with a CALLRESULT; connect attempts / failures;
    #   unexpected disconnects; messages/s; schedule-lag p99 (the worst worker); CPU
    search.record(measurement)
    # finished: result = search.result(); metrics.set_capacity(result.max_chargers) when it
    # is not None; result.summary() for the console; result.to_dict() for the reports

Calling :meth:`CapacitySearch.next_target` again before :meth:`CapacitySearch.record`
returns the same target, so a shape may ask on every tick.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadgen.pacing import start_offset

#: why the search stopped (the start of :attr:`CapacityResult.stopped_because`)
REACHED_MAX = "reached --capacity-max"
LIMITED_BY_GENERATOR = "limited by the load generator (add workers)"
START_FAILED = "even the start failed"
REFINED = "refined by bisection"
CONNECT_RATE_NOT_SEARCHED = "not searched"
CHARGERS_NOT_SEARCHED = "not searched (--capacity-search connect-rate)"
#: what ``--capacity-search`` searches; the bare flag means "both"
SEARCH_MODES = ("both", "chargers", "connect-rate")
ADMISSION_LIMITED = "admission limited"
#: actions of a charger's admission: judged by the connect SLOs over the ramp, never by a
#: hold's latency SLO (a hold starts once every charger is booted; on a master the last
#: boots of the ramp may still arrive in the hold's first worker reports)
RAMP_ACTIONS = frozenset({"BootNotification"})

_ACTION = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")
_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_FACTOR = re.compile(rf"[xX×*]\s*({_NUMBER})\Z")  # noqa: RUF001
_INCREMENT = re.compile(r"\+\s*([0-9]+)\Z")


# -- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """How the ramp grows: ``factor`` (``x1.5``: times 1.5) or ``increment`` (``+100``)."""

    kind: str  # "factor" | "increment"
    value: float

    def __post_init__(self) -> None:
        if self.kind == "factor":
            if not (math.isfinite(self.value) and self.value > 1):
                raise ValueError(f"a step factor must be more than 1, not {self.value:g}")
        elif self.kind == "increment":
            if self.value != int(self.value) or self.value < 1:
                raise ValueError(f"a step increment must be a whole number >= 1, not {self.value}")
        else:
            raise ValueError(f"a step is a 'factor' or an 'increment', not {self.kind!r}")

    @classmethod
    def parse(cls, text: str) -> Step:
        """``x1.5`` (also ``X``, ``*`` or the multiplication sign) or ``+100``; anything
        else is a ValueError."""
        stripped = str(text).strip()
        if match := _FACTOR.match(stripped):
            return cls("factor", float(match.group(1)))
        if match := _INCREMENT.match(stripped):
            return cls("increment", int(match.group(1)))
        raise ValueError(
            f"capacity step {text!r}: write a factor like 'x1.5' or an increment like '+100'"
        )

    def after(self, chargers: int) -> int:
        """The next target above ``chargers`` (always at least one more)."""
        if self.kind == "increment":
            return chargers + int(self.value)
        # a small tolerance so that 100 x 1.1 is 110, not 111
        return max(chargers + 1, math.ceil(chargers * self.value - 1e-9))

    def __str__(self) -> str:
        return f"x{self.value:g}" if self.kind == "factor" else f"+{int(self.value)}"


def parse_step(text: str) -> Step:
    return Step.parse(text)


def parse_slo_overrides(text: str, known: Iterable[str] | None = None) -> dict[str, float]:
    """``BootNotification=2000,Heartbeat=500`` -> ``{"BootNotification": 2000.0, ...}`` (ms).

    Blank text is no overrides. ``known``, when given, is the set of valid action names
    (``loadgen.metrics.known_actions()``); a name outside it is an error with a suggestion.
    """
    overrides: dict[str, float] = {}
    known_set = frozenset(known) if known is not None else None
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep:
            raise ValueError(
                f"SLO override {item!r}: write Action=milliseconds, e.g. Heartbeat=500"
            )
        if not _ACTION.match(name):
            raise ValueError(f"SLO override {item!r}: {name!r} is not an OCPP action name")
        if known_set is not None and name not in known_set:
            close = difflib.get_close_matches(name, sorted(known_set), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"SLO override {item!r}: unknown action {name!r}{hint}")
        if name in overrides:
            raise ValueError(f"SLO override for {name} given twice")
        try:
            ms = float(value)
        except ValueError:
            raise ValueError(
                f"SLO override {item!r}: {value!r} is not a number of milliseconds"
            ) from None
        if not (math.isfinite(ms) and ms > 0):
            raise ValueError(f"SLO override {item!r}: the p95 must be a positive number of ms")
        overrides[name] = ms
    return overrides


def parse_p95_slo(
    text: str, known: Iterable[str] | None = None
) -> tuple[float | None, dict[str, float]]:
    """``--slo-p95-ms``: ``1000`` (every action), ``1000,Heartbeat=500`` (with overrides),
    ``Heartbeat=500`` (only that action has a latency SLO) or ``none``.

    Returns ``(default ms or None, overrides)``.
    """
    default: float | None = None
    rest: list[str] = []
    seen_default = False
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            rest.append(item)
            continue
        if seen_default:
            raise ValueError(f"--slo-p95-ms {text!r}: give the default p95 only once")
        seen_default = True
        if item.lower() == "none":
            continue
        try:
            default = float(item)
        except ValueError:
            raise ValueError(
                f"--slo-p95-ms {text!r}: {item!r} is not a number of milliseconds "
                "(write e.g. 1000 or 1000,Heartbeat=500)"
            ) from None
        if not (math.isfinite(default) and default > 0):
            raise ValueError(f"--slo-p95-ms must be positive, not {item}")
    if not seen_default and not rest:
        raise ValueError("--slo-p95-ms is empty: give milliseconds (1000), overrides or none")
    return default, parse_slo_overrides(",".join(rest), known)


# -- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityConfig:
    """What the search does and the SLOs a step is judged against.

    ``step`` and ``p95_ms_by_action`` may be given as text (``"x1.5"``,
    ``"Heartbeat=500"``); they are parsed here. Ratios are fractions (0.01 = 1 %). A
    guard that is ``None`` is off. Invalid values raise ValueError with one line.
    """

    start: int = 100
    step: Step | str = "x1.5"
    max_chargers: int = 100_000
    hold_seconds: float = 300.0
    #: the default p95 SLO per action (ms); None: only the per-action overrides apply
    p95_ms: float | None = 1000.0
    p95_ms_by_action: Mapping[str, float] | str = field(default_factory=dict)
    #: connect SLO: the p95 of the ramp's BootNotifications (ms); None: no such SLO
    boot_p95_ms: float | None = 10_000.0
    #: CALLs not answered with a CALLRESULT / CALLs sent during the hold
    max_call_error_ratio: float | None = 0.01
    #: failed connection attempts / attempts during the hold
    max_connect_failure_ratio: float | None = 0.01
    #: connections the CSMS closed or lost during the hold / chargers
    max_disconnect_ratio: float | None = 0.01
    #: saturation guard: the load generator's schedule-lag p99 (worst worker), ms
    max_schedule_lag_p99_ms: float | None = 100.0
    #: saturation guard: CPU of the busiest load-generator process (1.0 = one core)
    max_generator_cpu: float | None = None
    #: stop bisecting when bad - good <= max(1, resolution, resolution_ratio * good)
    resolution: int = 1
    resolution_ratio: float = 0.0
    #: "both" (connect rate first, then concurrent chargers), "chargers" or "connect-rate"
    mode: str = "chargers"
    #: the connect-rate search: the first offered rate (new chargers/s) and the most
    rate_start: float = 5.0
    rate_max: float = 10_000.0
    #: chargers per rate step; 0: max(rate x 10 s, 20), never more than max_chargers
    rate_step_chargers: int = 0
    #: a rate step keeps pace when the boots' lateness grew by at most this share of the
    #: step's arrival time (0.025: the CSMS boots at least 1/1.025 of the offered rate)
    rate_pace_tolerance: float = 0.025

    def __post_init__(self) -> None:
        step = self.step if isinstance(self.step, Step) else Step.parse(self.step)
        object.__setattr__(self, "step", step)
        overrides = self.p95_ms_by_action
        if isinstance(overrides, str):
            overrides = parse_slo_overrides(overrides)
        else:
            overrides = dict(overrides)
            for name, ms in overrides.items():
                if not (isinstance(ms, int | float) and math.isfinite(ms) and ms > 0):
                    raise ValueError(f"the p95 SLO for {name} must be a positive number of ms")
        object.__setattr__(self, "p95_ms_by_action", overrides)
        if not (isinstance(self.start, int) and self.start >= 1):
            raise ValueError(f"--capacity-start must be a whole number >= 1, not {self.start}")
        if not (isinstance(self.max_chargers, int) and self.max_chargers >= self.start):
            raise ValueError(
                f"--capacity-max ({self.max_chargers}) must be a whole number "
                f">= --capacity-start ({self.start})"
            )
        if not (math.isfinite(self.hold_seconds) and self.hold_seconds > 0):
            raise ValueError(f"--capacity-hold must be positive, not {self.hold_seconds}")
        if self.p95_ms is not None and not (math.isfinite(self.p95_ms) and self.p95_ms > 0):
            raise ValueError(f"--slo-p95-ms must be positive, not {self.p95_ms}")
        if self.boot_p95_ms is not None and not (
            math.isfinite(self.boot_p95_ms) and self.boot_p95_ms > 0
        ):
            raise ValueError(f"--slo-boot-p95-ms must be positive, not {self.boot_p95_ms}")
        for name, ratio in (
            ("the CALL error ratio", self.max_call_error_ratio),
            ("the connect failure ratio", self.max_connect_failure_ratio),
            ("the disconnect ratio", self.max_disconnect_ratio),
        ):
            if ratio is not None and not 0 <= ratio <= 1:
                raise ValueError(f"{name} SLO must be between 0 and 1, not {ratio}")
        for name, value in (
            ("the schedule-lag guard", self.max_schedule_lag_p99_ms),
            ("the CPU guard", self.max_generator_cpu),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, not {value}")
        if not (isinstance(self.resolution, int) and self.resolution >= 0):
            raise ValueError(f"the resolution must be a whole number >= 0, not {self.resolution}")
        if not (math.isfinite(self.resolution_ratio) and 0 <= self.resolution_ratio < 1):
            raise ValueError(f"the resolution ratio must be 0 to 1, not {self.resolution_ratio}")
        if self.mode not in SEARCH_MODES:
            raise ValueError(
                f"--capacity-search {self.mode!r}: write both, chargers or connect-rate"
            )
        if not (math.isfinite(self.rate_start) and self.rate_start > 0):
            raise ValueError(f"--connect-rate-start must be positive, not {self.rate_start}")
        if not (math.isfinite(self.rate_max) and self.rate_max >= self.rate_start):
            raise ValueError(
                f"--connect-rate-max ({self.rate_max:g}) must be >= --connect-rate-start "
                f"({self.rate_start:g})"
            )
        if not (isinstance(self.rate_step_chargers, int) and self.rate_step_chargers >= 0):
            raise ValueError(
                "--connect-rate-step-chargers must be a whole number >= 0, "
                f"not {self.rate_step_chargers}"
            )
        if not (math.isfinite(self.rate_pace_tolerance) and 0 < self.rate_pace_tolerance < 1):
            raise ValueError(
                f"the pace tolerance must be between 0 and 1, not {self.rate_pace_tolerance}"
            )

    @property
    def searches_chargers(self) -> bool:
        return self.mode in ("both", "chargers")

    @property
    def searches_connect_rate(self) -> bool:
        return self.mode in ("both", "connect-rate")

    def rate_step_size(self, rate: float) -> int:
        """Fresh chargers of one rate step: about ten seconds of arrivals (enough for a
        backlog to show), at least 20, never more than the fleet allows."""
        wanted = self.rate_step_chargers or max(20, math.ceil(rate * 10 - 1e-9))
        return max(1, min(wanted, self.max_chargers))

    def rate_resolution_at(self, good: float) -> float:
        """How close the rate bisection gets (the share of --capacity-resolution, 5 %
        when that is given in chargers)."""
        return (self.resolution_ratio or 0.05) * good

    def resolution_at(self, good: int) -> int:
        """How close the bisection gets: good and bad at most this far apart."""
        return max(1, self.resolution, math.ceil(self.resolution_ratio * good - 1e-9))

    def p95_slo_ms(self, action: str) -> float | None:
        """The p95 SLO of one action (ms), None when it has none."""
        return self.p95_ms_by_action.get(action, self.p95_ms)  # type: ignore[union-attr]


# -- measurement and judgement --------------------------------------------------------------


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


def _ms(value: float) -> str:
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
        failed = f"load generator saturated: schedule lag p99 {_ms(lag)} ms > {_ms(lag_guard)} ms"
        checks.append(
            _check(
                "load generator schedule lag p99",
                f"{_ms(lag)} ms",
                f"{_ms(lag_guard)} ms",
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


def _saturation(step: StepMeasurement, config: CapacityConfig) -> list[str]:
    """The saturation guards: one line per guard the load generator broke."""
    return [c.reason for c in saturation_checks(step, config) if not c.held]


def hold_checks(step: StepMeasurement, config: CapacityConfig) -> list[SloCheck]:
    """A hold's SLOs, one check each: p95 per action (not the ramp's), the CALL error
    ratio, the connect failure ratio, the chargers not there, the unexpected disconnects."""
    checks: list[SloCheck] = []
    for action, stats in sorted(step.actions.items()):
        if action in RAMP_ACTIONS:
            continue  # the ramp's connect SLOs judge these (judge_admission)
        slo = config.p95_slo_ms(action)
        if slo is not None and stats.p95_ms is not None:
            failed = f"p95 {action} {_ms(stats.p95_ms)} ms > {_ms(slo)} ms"
            checks.append(
                _check(
                    f"p95 {action}",
                    f"{_ms(stats.p95_ms)} ms",
                    f"{_ms(slo)} ms",
                    failed if stats.p95_ms > slo else None,
                )
            )
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
    saturation = _saturation(step, config)
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
        slo = config.boot_p95_ms
        if slo is not None and stats.p95_ms is not None:
            failed = f"p95 {action} {_ms(stats.p95_ms)} ms > {_ms(slo)} ms"
            checks.append(
                _check(
                    f"p95 {action}",
                    f"{_ms(stats.p95_ms)} ms",
                    f"{_ms(slo)} ms",
                    failed if stats.p95_ms > slo else None,
                )
            )
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


# -- the search -----------------------------------------------------------------------------


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


# -- the connect-rate search ----------------------------------------------------------------


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
    chargers: int, rate: float, boot_rate: float, connect_s: float = 0.0
) -> tuple[float, float]:
    """A rate step at a CSMS that answers ``boot_rate`` BootNotifications a second, one
    after the other in arrival order, its chargers arriving the way Locust starts them
    (:func:`spawn_bursts`), the generator connecting a burst's chargers one after the other
    in ``connect_s`` each (after the process's own spreading of a burst,
    :func:`loadgen.pacing.start_offset`): ``(the longest a charger waits, when the last is
    answered)``, in
    seconds from the step's start. The first at an idle CSMS waits nothing (round trips
    are not in this)."""
    gap = 1 / boot_rate
    free, worst = 0.0, 0.0
    for at, users in spawn_bursts(chargers, rate):
        for n in range(users):
            # the process spreads a burst's starts (loadgen.pacing), then connects one by one
            arrived = at + max(start_offset(n, users), (n + 1) * connect_s)
            turn = max(arrived, free)
            worst, free = max(worst, turn - arrived), turn + gap
    return worst, free - gap


def fifo_boot_rate(
    chargers: int, rate: float, seconds: float, *, last: bool = True, connect_s: float = 0.0
) -> float:
    """The boot rate at which :func:`fifo_boots` answers the last boot after ``seconds``
    (``last=False``: at which the longest wait is ``seconds``): what a step says the CSMS
    admitted, in chargers/s (infinite when no boot rate is that slow)."""
    if seconds <= (fifo_boots(chargers, rate, 1e9, connect_s)[1] if last else 0):
        return math.inf
    low, high = 1e-3, 1e6
    for _ in range(60):  # both fall as the boot rate grows
        middle = math.sqrt(low * high)
        if fifo_boots(chargers, rate, middle, connect_s)[0 if not last else 1] > seconds:
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

    @property
    def arrival_seconds(self) -> float:
        """The time the step's arrivals take at the offered rate."""
        return self.chargers / self.rate

    @property
    def last_arrival_seconds(self) -> float:
        """When Locust starts the step's last user (:func:`spawn_bursts`), the process
        spreading each burst (:func:`loadgen.pacing.start_offset`; with several workers each
        spreads its share, so their last users start a little sooner)."""
        at, users = spawn_bursts(self.chargers, self.rate)[-1]
        return at + start_offset(users - 1, users)

    @property
    def connect_s(self) -> float:
        """The generator's time to connect one charger of a burst, from when the last
        burst's last connection was made (0 when unknown)."""
        if self.last_connect_s is None:
            return 0.0
        at, users = spawn_bursts(self.chargers, self.rate)[-1]
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
        worst, last = fifo_boots(self.chargers, self.rate, service, self.connect_s)
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
        }

    def admitted_rate(self) -> float | None:
        """The boot rate the step says the CSMS kept (chargers/s), None without a figure."""
        quick = (self.quick_boot_ms or 0.0) / 1000
        if self.last_boot_s is not None:
            seconds = self.last_boot_s - quick
            return fifo_boot_rate(self.chargers, self.rate, seconds, connect_s=self.connect_s)
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
    saturation = _saturation(step.ramp, config)
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
            f"did not keep pace at {step.rate:.3g}/s: {what} {_ms(pace[0])} ms "
            f"(> {_ms(pace[1])} ms; about {step.admitted_rate() or 0:.3g} booted/s)"
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
