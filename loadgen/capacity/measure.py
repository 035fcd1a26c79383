"""Measuring an interval (a capacity hold, a report window): the difference of two merged
metric views as a capacity :class:`~loadgen.capacity.judgement.StepMeasurement`, and the
idTokens' verdicts and the OCPP versions spoken for the reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from loadgen import link as links
from loadgen.capacity.judgement import ActionStats, StepMeasurement, bucket_percentile
from loadgen.metrics import PREFIX, SPEC_BY_NAME
from loadgen.protocols import VERSIONS

Merged = Mapping[str, Mapping[tuple[str, ...], Any]]
#: outcomes whose duration is a reply time of the CSMS (a timeout is the slowest answer);
#: the time until a connection dropped is not
_LATENCY_OUTCOMES = (links.RESULT, links.ERROR, links.TIMEOUT)


def _delta_histogram(before: Any, after: Any) -> list[float]:
    counts = list(after[0])
    if before is None:
        return counts
    return [max(0.0, a - b) for a, b in zip(counts, before[0], strict=True)]


def _counter_deltas(before: Merged, after: Merged, name: str) -> dict[tuple[str, ...], float]:
    earlier = before.get(name, {})
    return {
        key: max(0.0, value - earlier.get(key, 0.0)) for key, value in after.get(name, {}).items()
    }


def authorization_counts(before: Merged, after: Merged) -> list[dict[str, Any]]:
    """The CSMS's verdicts on idTokens between two merged views, for the reports: one
    ``{"message", "status", "count"}`` per pair that occurred."""
    deltas = _counter_deltas(before, after, f"{PREFIX}authorizations_total")
    return [
        {"message": message, "status": status, "count": int(count)}
        for (status, message), count in sorted(deltas.items(), key=lambda item: item[0][::-1])
        if count > 0
    ]


def versions_spoken(before: Merged, after: Merged) -> dict[str, int]:
    """Connections opened between two merged views, by the OCPP version the CSMS picked
    (of those the chargers offered), for the reports; versions without one left out."""
    deltas = _counter_deltas(before, after, f"{PREFIX}connections_total")
    order = {version: n for n, version in enumerate(VERSIONS)}
    return {
        version: int(count)
        for (version,), count in sorted(
            deltas.items(), key=lambda item: (-order.get(item[0][0], -1), item[0])
        )
        if count > 0
    }


def _bounds(name: str) -> list[float]:
    return [*SPEC_BY_NAME[name].buckets, math.inf]


def measure(
    before: Merged,
    after: Merged,
    *,
    chargers: int,
    seconds: float,
    cpu: float | None = None,
) -> StepMeasurement:
    """What happened between two :meth:`MergedCollector.merged` views: the deltas of the
    counters and histogram buckets over the interval, as a capacity
    :class:`~loadgen.capacity.judgement.StepMeasurement` (``chargers``: the target then).

    Percentiles are computed from the histogram buckets the way Prometheus's
    ``histogram_quantile`` does, so the report and the dashboards agree. On the master the
    workers' snapshots arrive every few seconds: an interval's edges are that fuzzy.
    ``cpu``: the load generator's CPU over the interval if the caller tracked it, else the
    busiest process's latest reading.
    """
    name = f"{PREFIX}call_duration_seconds"
    bounds = _bounds(name)
    per_action: dict[str, list[float]] = {}
    latency: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    error_codes: dict[str, int] = {}
    earlier = before.get(name, {})
    for (action, outcome), value in after.get(name, {}).items():
        counts = _delta_histogram(earlier.get((action, outcome)), value)
        total = per_action.setdefault(action, [0.0] * len(counts))
        per_action[action] = [a + b for a, b in zip(total, counts, strict=True)]
        if outcome in _LATENCY_OUTCOMES:
            kept = latency.setdefault(action, [0.0] * len(counts))
            latency[action] = [a + b for a, b in zip(kept, counts, strict=True)]
        if outcome != links.RESULT and counts[-1] > 0:
            errors[action] = errors.get(action, 0) + int(counts[-1])
            if outcome != links.ERROR:  # CALLERROR codes come from call_errors_total
                error_codes[outcome] = error_codes.get(outcome, 0) + int(counts[-1])
    call_errors = _counter_deltas(before, after, f"{PREFIX}call_errors_total")
    for (_action, code), value in call_errors.items():
        if value > 0:
            error_codes[code] = error_codes.get(code, 0) + int(value)
    actions: dict[str, ActionStats] = {}
    for action, counts in per_action.items():
        count = int(counts[-1])
        if count <= 0:
            continue
        cumulative = list(zip(bounds, latency.get(action, [0.0] * len(counts)), strict=True))
        p50, p95, p99 = (bucket_percentile(cumulative, q) for q in (50, 95, 99))
        actions[action] = ActionStats(
            count,
            None if p50 is None else p50 * 1000,
            None if p95 is None else p95 * 1000,
            None if p99 is None else p99 * 1000,
            errors.get(action, 0),
        )

    connects = f"{PREFIX}connect_duration_seconds"
    attempts = failures = 0
    earlier = before.get(connects, {})
    for (outcome,), value in after.get(connects, {}).items():
        n = int(_delta_histogram(earlier.get((outcome,)), value)[-1])
        attempts += n
        if outcome != "ok":
            failures += n
    unexpected = sum(
        value
        for (reason,), value in _counter_deltas(before, after, f"{PREFIX}disconnects_total").items()
        if reason != links.CLOSED_LOCALLY
    )
    messages = sum(_counter_deltas(before, after, f"{PREFIX}messages_total").values())

    lag_name = f"{PREFIX}schedule_lag_seconds"
    lag_bounds = _bounds(lag_name)
    worst_lag: float | None = None
    earlier = before.get(lag_name, {})
    for key, value in after.get(lag_name, {}).items():
        counts = _delta_histogram(earlier.get(key), value)
        p99 = bucket_percentile(list(zip(lag_bounds, counts, strict=True)), 99)
        if p99 is not None:
            worst_lag = max(worst_lag or 0.0, p99 * 1000)
    if cpu is None:
        readings = after.get(f"{PREFIX}worker_cpu_ratio", {}).values()
        cpu = max(readings) if readings else None
    connected = sum(after.get(f"{PREFIX}chargers_connected", {}).values())
    booted = sum(after.get(f"{PREFIX}chargers_booted", {}).values())
    return StepMeasurement(
        chargers=chargers,
        actions=actions,
        call_errors=sum(errors.values()),
        connect_attempts=attempts,
        connect_failures=failures,
        unexpected_disconnects=int(unexpected),
        messages_per_s=messages / seconds if seconds > 0 else 0.0,
        schedule_lag_p99_ms=worst_lag,
        cpu=cpu,
        connected=int(connected),
        booted=int(booted),
        seconds=seconds,
        error_codes=error_codes,
    )
