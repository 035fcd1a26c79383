"""What a run's report is made of, gathered on the master (or the single process).

:class:`RunRecorder` remembers the merged metrics when a run starts, measures a window
every few seconds (the report's timeline, :mod:`loadgen.timeline`: chargers, latency,
failures over time and the first problems; percentiles from Locust's response times, as
the capacity search judges them), collects
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
from loadgen.capacity.measure import Merged, authorization_counts, measure, versions_spoken
from loadgen.capacity.search import CapacityResult
from loadgen.locust.settings import option_names
from loadgen.locust.shape import latency_view
from loadgen.timeline import Timeline

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
        window: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.merged = merged
        self.target = target
        self.latencies = latencies
        self._start_latency: dict[str, dict[float, int]] = {}
        self.clock = clock
        self.wall_clock = wall_clock
        #: the run over time: windows and the first problems (bounded, see loadgen.timeline)
        self.timeline = Timeline(window=window)
        self._greenlet: gevent.Greenlet | None = None
        self._started = self._wall_started = 0.0
        self._start_view: Merged = {}

    def start(self) -> None:
        self.stop_sampling()
        self._started, self._wall_started = self.clock(), self.wall_clock()
        self._start_view = self.merged()
        self._start_latency = self._latency_view()
        self.timeline.start(self._started, self._start_view, self._start_latency)
        self._greenlet = gevent.spawn(self._sample_forever)

    def stop_sampling(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def sample(self) -> None:
        """Close the current timeline window (also called at the end of the run)."""
        self.timeline.sample(
            self.clock(), self.merged(), target=self.target(), latency=self._latency_view()
        )

    def _latency_view(self) -> dict[str, dict[float, int]]:
        return latency_view(self.latencies) if self.latencies is not None else {}

    def _sample_forever(self) -> None:
        while True:
            gevent.sleep(self.timeline.window)  # it grows as a long run's timeline thins
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
                "versions_spoken": versions_spoken(self._start_view, view),
            },
            settings=settings,
            steps=steps,
            timeline=self.timeline.windows(),
            totals=totals,
            capacity=capacity_dict,
            recovery=recovery or [],
            authorizations=authorization_counts(self._start_view, view),
            problems=self.timeline.problems(view),
        )
