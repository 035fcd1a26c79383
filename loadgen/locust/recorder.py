"""What a run's report is made of, gathered on the master (or the single process).

:class:`RunRecorder` remembers the merged metrics when a run starts, measures a window
every ``window`` seconds (the report's timeline: chargers, latency, errors over time;
percentiles from Locust's response times, as the capacity search judges them), collects
the capacity search's steps, and at the end of the run writes the JSON and HTML reports
(:mod:`loadgen.report`) into ``--report-dir``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent

from loadgen import report as reports
from loadgen.capacity.config import CapacityConfig
from loadgen.capacity.judgement import with_count_percentiles
from loadgen.capacity.measure import Merged, authorization_counts, measure
from loadgen.capacity.search import CapacityResult
from loadgen.locust.settings import option_names
from loadgen.locust.shape import latency_view

log = logging.getLogger(__name__)

#: Locust's own options worth a line in a report (the rest is about Locust's UI, files, ...)
_LOCUST_OPTIONS = (
    "host",
    "num_users",
    "spawn_rate",
    "run_time",
    "master",
    "expect_workers",
    "processes",
    "locustfile",
)


def report_settings(options: Any) -> dict[str, Any]:
    """The run's options as plain values for the report: ours and Locust's main ones.
    Secrets are redacted in one place, :func:`loadgen.report.build_report`."""
    settings: dict[str, Any] = {}
    values = vars(options)
    for name in (*_LOCUST_OPTIONS, *option_names()):
        if name not in values:
            continue
        value = values[name]
        if value is None or isinstance(value, bool | int | float | str):
            settings[name] = value
        elif isinstance(value, list | tuple) and all(
            isinstance(v, str | int | float) for v in value
        ):
            settings[name] = list(value)
    return settings


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


class RunRecorder:
    """One per master / single process; :meth:`start` and :meth:`finish` per run."""

    def __init__(
        self,
        merged: Callable[[], Merged],
        target: Callable[[], int],
        *,
        latencies: Callable[[], Mapping[str, Mapping[float, int]]] | None = None,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.merged = merged
        self.target = target
        self.window = window
        self.latencies = latencies
        self._start_latency: dict[str, dict[float, int]] = {}
        self._window_latency: dict[str, dict[float, int]] = {}
        self.clock = clock
        self.wall_clock = wall_clock
        self.timeline: list[dict[str, Any]] = []
        self._greenlet: gevent.Greenlet | None = None
        self._started = self._wall_started = 0.0
        self._start_view: Merged = {}
        self._window_view: Merged = {}
        self._window_started = 0.0

    def start(self) -> None:
        self.stop_sampling()
        self.timeline = []
        self._started, self._wall_started = self.clock(), self.wall_clock()
        self._start_view = self._window_view = self.merged()
        self._start_latency = self._window_latency = self._latency_view()
        self._window_started = self._started
        self._greenlet = gevent.spawn(self._sample_forever)

    def stop_sampling(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def sample(self) -> None:
        """Close the current timeline window (also called at the end of the run)."""
        now = self.clock()
        if now - self._window_started <= 0.5:
            return
        view, latency = self.merged(), self._latency_view()
        measured = measure(
            self._window_view, view, chargers=self.target(), seconds=now - self._window_started
        )
        window = with_count_percentiles(measured, self._window_latency, latency).to_dict()
        window["t_s"] = now - self._started
        self.timeline.append(window)
        self._window_view, self._window_latency, self._window_started = view, latency, now

    def _latency_view(self) -> dict[str, dict[float, int]]:
        return latency_view(self.latencies) if self.latencies is not None else {}

    def _sample_forever(self) -> None:
        while True:
            gevent.sleep(self.window)
            try:
                self.sample()
            except Exception:  # a report is not worth a dead run
                log.exception("sampling the report's timeline failed")

    def build(
        self,
        *,
        run: dict[str, Any],
        settings: dict[str, Any],
        steps: list[dict[str, Any]],
        capacity: CapacityResult | None,
        capacity_config: CapacityConfig | None,
        peak: int,
        recovery: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The report of the run so far (call :meth:`sample` first for the last window)."""
        now, view = self.clock(), self.merged()
        totals = with_count_percentiles(
            measure(self._start_view, view, chargers=peak, seconds=now - self._started),
            self._start_latency,
            self._latency_view(),
        ).to_dict()
        capacity_dict = None
        if capacity is not None and capacity_config is not None:
            capacity_dict = reports.capacity_dict(capacity, capacity_config)
        return reports.build_report(
            run={
                **run,
                "started": _iso(self._wall_started),
                "ended": _iso(self.wall_clock()),
                "duration_s": now - self._started,
            },
            settings=settings,
            steps=steps,
            timeline=self.timeline,
            totals=totals,
            capacity=capacity_dict,
            recovery=recovery or [],
            authorizations=authorization_counts(self._start_view, view),
        )
