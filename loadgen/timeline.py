"""The run over time, for the report: windows of a few seconds and the first things that
went wrong, measured from merged metric views (on a master: every worker's snapshots).

A plain run has no capacity steps to explain it, so its report draws the run over time:
per-action latency, failures, chargers connected against booted. :class:`Timeline` turns
successive :meth:`~loadgen.metrics.merge.MergedCollector.merged` views into those windows, and
notes the earliest appearance of each distinct problem (a connect refused, a timeout, a
rejected idToken, a protocol error, ...) with the window it appeared in.

Memory is bounded whatever the run's length: past ``max_windows`` windows, neighbours merge
in pairs and new windows are twice as long (counts add; a merged window's percentiles are
the worse of the two, so a spike stays visible). The problems kept are the first
``max_problems`` distinct ones; the label sets behind them are closed (metrics.py).

Pure (no gevent, no Locust): the recorder calls :meth:`Timeline.sample` every
:attr:`Timeline.window` seconds and hands :meth:`Timeline.windows` and
:meth:`Timeline.problems` to the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen import link as links
from loadgen.capacity.judgement import with_count_percentiles
from loadgen.capacity.measure import Merged, measure

_P = "ocpp_loadgen_"
#: the OCPP protocol-error kinds that are a message breaking its JSON schema
SCHEMA_KINDS = frozenset({"invalid_result", "invalid_call", "invalid_send"})

#: problem categories, in the order a report lists them, and how a person reads one
WHAT = {
    "connect_failures": "connect failed: {label}",
    "timeouts": "{label}: no reply within the call timeout",
    "lost_replies": "{label}: the connection ended before the reply",
    "call_errors": "CALLERROR or invalid reply: {label}",
    "rejections": "idToken rejected: {label}",
    "schema_violations": "schema violation: {label}",
    "protocol_errors": "protocol error: {label}",
    "disconnects": "connection ended unexpectedly: {label}",
    "dropped_messages": "{label} given up after repeated CALLERRORs",
    "coordination_failures": "coordination (Redis) failed: {label}",
}
_ORDER = {category: i for i, category in enumerate(WHAT)}


def _total(value: Any) -> float:
    """A counter's value, or a histogram's count (``[counts, sum]``: the +Inf bucket)."""
    if isinstance(value, list | tuple):
        return float(value[0][-1]) if value and value[0] else 0.0
    return float(value)


def problem_counts(view: Merged) -> dict[tuple[str, str], float]:
    """Every problem counter in a merged view, as ``(category, label) -> count``."""
    counts: dict[tuple[str, str], float] = {}

    def add(category: str, label: str, value: Any) -> None:
        n = _total(value)
        if n > 0:
            key = (category, label)
            counts[key] = counts.get(key, 0.0) + n

    for (outcome,), value in view.get(f"{_P}connect_duration_seconds", {}).items():
        if outcome != "ok":
            add("connect_failures", outcome, value)
    for (action, outcome), value in view.get(f"{_P}call_duration_seconds", {}).items():
        if outcome == links.TIMEOUT:
            add("timeouts", action, value)
        elif outcome == links.DISCONNECTED:
            add("lost_replies", action, value)
    for (action, code), value in view.get(f"{_P}call_errors_total", {}).items():
        add("call_errors", f"{action} {code}", value)
    for (status, message), value in view.get(f"{_P}authorizations_total", {}).items():
        if status != "Accepted":
            add("rejections", f"{message} {status}", value)
    for (kind,), value in view.get(f"{_P}protocol_errors_total", {}).items():
        add("schema_violations" if kind in SCHEMA_KINDS else "protocol_errors", kind, value)
    for (reason,), value in view.get(f"{_P}disconnects_total", {}).items():
        if reason != links.CLOSED_LOCALLY:  # the load generator's own closes are no problem
            add("disconnects", reason, value)
    for (action,), value in view.get(f"{_P}dropped_messages_total", {}).items():
        add("dropped_messages", action, value)
    for (operation,), value in view.get(f"{_P}coordination_failures_total", {}).items():
        add("coordination_failures", operation, value)
    return counts


def _delta(
    before: Mapping[tuple[str, str], float], after: Mapping[tuple[str, str], float]
) -> dict[tuple[str, str], int]:
    changed = {key: int(n - before.get(key, 0.0)) for key, n in after.items()}
    return {key: n for key, n in changed.items() if n > 0}


def _sum(counts: Mapping[tuple[str, str], int], category: str) -> int:
    return sum(n for (kind, _), n in counts.items() if kind == category)


def _worse(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def merge_windows(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two neighbouring windows as one: counts add, the gauges are the later window's,
    rates are weighted by time, percentiles and the generator's health are the worse."""
    seconds_a, seconds_b = a.get("seconds") or 0.0, b.get("seconds") or 0.0
    seconds = seconds_a + seconds_b
    merged = dict(b)
    merged["seconds"] = seconds
    for key in (
        "calls",
        "call_errors",
        "connect_attempts",
        "connect_failures",
        "unexpected_disconnects",
        "protocol_errors",
        "schema_violations",
        "rejections",
    ):
        merged[key] = (a.get(key) or 0) + (b.get(key) or 0)
    codes = dict(a.get("error_codes") or {})
    for code, n in (b.get("error_codes") or {}).items():
        codes[code] = codes.get(code, 0) + n
    merged["error_codes"] = dict(sorted(codes.items()))
    rate_a, rate_b = a.get("messages_per_s") or 0.0, b.get("messages_per_s") or 0.0
    merged["messages_per_s"] = (
        (rate_a * seconds_a + rate_b * seconds_b) / seconds if seconds > 0 else 0.0
    )
    for key in ("schedule_lag_p99_ms", "cpu"):
        merged[key] = _worse(a.get(key), b.get(key))
    actions: dict[str, dict[str, Any]] = {}
    for name in sorted({*(a.get("actions") or {}), *(b.get("actions") or {})}):
        one = (a.get("actions") or {}).get(name) or {}
        two = (b.get("actions") or {}).get(name) or {}
        actions[name] = {
            "count": (one.get("count") or 0) + (two.get("count") or 0),
            "errors": (one.get("errors") or 0) + (two.get("errors") or 0),
            **{q: _worse(one.get(q), two.get(q)) for q in ("p50_ms", "p95_ms", "p99_ms")},
        }
    merged["actions"] = actions
    return merged


class Timeline:
    """Windows of ``window`` seconds from merged views; see the module's docstring."""

    def __init__(
        self, *, window: float = 5.0, max_windows: int = 720, max_problems: int = 12
    ) -> None:
        #: the length of the windows being measured now (doubles when the series thins)
        self.window = window
        self.max_windows = max(2, max_windows)
        self.max_problems = max_problems
        self._windows: list[dict[str, Any]] = []
        self._first: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()
        self._t0 = self._last = 0.0
        self._view: Merged = {}
        self._latency: Mapping[str, Mapping[float, int]] = {}
        self._start_counts: dict[tuple[str, str], float] = {}
        self._counts: dict[tuple[str, str], float] = {}

    def start(
        self, t: float, view: Merged, latency: Mapping[str, Mapping[float, int]] | None = None
    ) -> None:
        """Begin at ``t`` (seconds, any clock): what ``view`` counted already is not the
        run's (a previous run's, or a worker's from before the start)."""
        self._windows, self._first, self._seen = [], [], set()
        self._t0 = self._last = t
        self._view, self._latency = view, latency or {}
        self._start_counts = self._counts = problem_counts(view)

    def sample(
        self,
        t: float,
        view: Merged,
        *,
        target: int,
        latency: Mapping[str, Mapping[float, int]] | None = None,
    ) -> dict[str, Any] | None:
        """Close the window ending at ``t``; returns it (None when less than half a second
        passed: the end of a run right after a window)."""
        seconds = t - self._last
        if seconds <= 0.5:
            return None
        latency = latency or {}
        measured = measure(self._view, view, chargers=target, seconds=seconds)
        window = with_count_percentiles(measured, self._latency, latency).to_dict()
        window["t_s"] = t - self._t0
        counts = problem_counts(view)
        new = _delta(self._counts, counts)
        window["protocol_errors"] = _sum(new, "protocol_errors")
        window["schema_violations"] = _sum(new, "schema_violations")
        window["rejections"] = _sum(new, "rejections")
        self._note_first(new, self._last - self._t0, t - self._t0)
        self._windows.append(window)
        if len(self._windows) > self.max_windows:
            self._thin()
        self._view, self._latency, self._counts, self._last = view, latency, counts, t
        return window

    def windows(self) -> list[dict[str, Any]]:
        return list(self._windows)

    def problems(self, view: Merged | None = None) -> dict[str, Any]:
        """``{"first": [...], "counts": {category: {label: n}}}``: the first distinct
        problems in the order they appeared, and every problem counted since the start
        (up to ``view``, else the last sample)."""
        counts = _delta(self._start_counts, problem_counts(view) if view else self._counts)
        grouped: dict[str, dict[str, int]] = {category: {} for category in WHAT}
        for (category, label), n in sorted(counts.items()):
            grouped[category][label] = n
        return {"first": [dict(item) for item in self._first], "counts": grouped}

    def _note_first(self, new: Mapping[tuple[str, str], int], from_s: float, to_s: float) -> None:
        fresh = sorted(
            (key for key in new if key not in self._seen),
            key=lambda key: (_ORDER.get(key[0], len(_ORDER)), key[1]),
        )
        for category, label in fresh:
            self._seen.add((category, label))
            if len(self._first) >= self.max_problems:
                continue
            self._first.append(
                {
                    "from_s": round(from_s, 3),
                    "t_s": round(to_s, 3),
                    "category": category,
                    "label": label,
                    "what": WHAT[category].format(label=label),
                    "count": new[(category, label)],
                }
            )

    def _thin(self) -> None:
        """Halve the series: neighbours merge in pairs, and new windows are twice as long."""
        pairs = [self._windows[i : i + 2] for i in range(0, len(self._windows), 2)]
        self._windows = [merge_windows(*pair) if len(pair) == 2 else pair[0] for pair in pairs]
        self.window *= 2
