"""Merging workers' snapshots on the master: :class:`MergedCollector`.

Counters and histogram buckets add, gauges add (the peak, target and capacity gauges take
the maximum or the master's own). A worker that stops reporting stops counting towards the
gauges; its counters stay, so they never go down.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from loadgen.metrics import LOCAL_SPECS, PREFIX, SPEC_BY_NAME, SPECS, Spec
from loadgen.metrics.collectors import SNAPSHOT_VERSION, Metrics

log = logging.getLogger(__name__)


class _Source:
    __slots__ = ("epoch", "metrics", "received")

    def __init__(self, epoch: str, metrics: dict[str, Any], received: float) -> None:
        self.epoch = epoch
        self.metrics = metrics
        self.received = received


class MergedCollector:
    """The master's view: its own :class:`Metrics` plus the latest snapshot of each worker.

    Counters and histograms add over live and departed workers; gauges add over live
    workers only (``merge="max"`` gauges take the maximum; ``merge="local"`` ones are the
    master's own). ``chargers_connected_peak`` is
    the highest merged ``chargers_connected`` seen, and never below any worker's own peak.

    A worker departs when :meth:`forget` is called (e.g. it quit) or when it has not
    reported for ``stale_after`` seconds. Its counters are kept, so the merged counters
    never go down; if the same worker process reports again (same epoch) it is live again
    and its kept counters are replaced by the new snapshot, so nothing is counted twice.
    A worker id reporting with a new epoch is a new process: the old one's last counters
    are kept and the new one's add to them.
    """

    #: departed processes remembered one by one (to let them come back); older ones fold
    #: into one base that can no longer be told apart
    max_departed = 256

    def __init__(
        self,
        local: Metrics | None = None,
        stale_after: float | None = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self.stale_after = stale_after
        self.clock = clock
        self._live: dict[str, _Source] = {}
        self._departed: dict[tuple[str, str], dict[str, Any]] = {}
        self._base: dict[str, dict[tuple[str, ...], Any]] = {}
        self._peak = 0.0
        self._lock = threading.RLock()

    @property
    def workers(self) -> list[str]:
        """The workers counted as live."""
        with self._lock:
            return list(self._live)

    def update(self, worker: str, snapshot: Mapping[str, Any] | None) -> None:
        """The latest snapshot from ``worker`` (Locust's ``worker_report`` data)."""
        if not isinstance(snapshot, Mapping) or snapshot.get("v") != SNAPSHOT_VERSION:
            return
        metrics = snapshot.get("metrics")
        if not isinstance(metrics, Mapping):
            return
        epoch = str(snapshot.get("epoch", ""))
        with self._lock:
            previous = self._live.get(worker)
            if previous is not None and previous.epoch != epoch:
                self._depart(worker, previous)  # restarted: the old process is over
            self._departed.pop((worker, epoch), None)  # back: the new snapshot has it all
            self._live[worker] = _Source(epoch, dict(metrics), self.clock())
            self._note_peak(self._live.values())

    def forget(self, worker: str) -> None:
        """The worker is gone: its gauges stop counting, its counters stay."""
        with self._lock:
            source = self._live.pop(worker, None)
            if source is not None:
                self._depart(worker, source)

    def retain(self, workers: Iterable[str]) -> None:
        """Forget every live worker not in ``workers`` (e.g. the master runner's clients)."""
        keep = set(workers)
        with self._lock:
            for worker in [w for w in self._live if w not in keep]:
                self.forget(worker)

    def expire(self) -> None:
        """Forget the workers that have not reported for ``stale_after`` seconds."""
        if self.stale_after is None:
            return
        deadline = self.clock() - self.stale_after
        with self._lock:
            for worker in [w for w, s in self._live.items() if s.received < deadline]:
                log.info("worker %s stopped reporting metrics; forgetting it", worker)
                self.forget(worker)

    def _depart(self, worker: str, source: _Source) -> None:
        kept = {
            name: series
            for name, series in source.metrics.items()
            if (spec := SPEC_BY_NAME.get(name)) is not None and spec.kind != "gauge"
        }
        self._departed[(worker, source.epoch)] = kept
        while len(self._departed) > self.max_departed:
            oldest = next(iter(self._departed))
            _accumulate(self._base, self._departed.pop(oldest), gauges=False)

    def _note_peak(self, sources: Iterable[_Source]) -> None:
        connected = 0.0
        for source in sources:
            for series in source.metrics.get(f"{PREFIX}chargers_connected", ()):
                connected += series[-1]
            for series in source.metrics.get(f"{PREFIX}chargers_connected_peak", ()):
                self._peak = max(self._peak, series[-1])
        self._peak = max(self._peak, connected)

    def merged(self) -> dict[str, dict[tuple[str, ...], Any]]:
        """name -> label values -> value (histograms: ``[counts, sum]``), merged."""
        self.expire()
        local = self.local.snapshot() if self.local is not None else None
        with self._lock:
            live = list(self._live.values())
            if local is not None:
                live.append(_Source(local["epoch"], local["metrics"], self.clock()))
            self._note_peak(live)
            result: dict[str, dict[tuple[str, ...], Any]] = {}
            _accumulate_merged(result, self._base)
            for kept in self._departed.values():
                _accumulate(result, kept, gauges=False)
            for source in live:
                _accumulate(result, source.metrics, gauges=True)
            result[f"{PREFIX}chargers_connected_peak"] = {(): self._peak}
            if local is not None:
                for spec in LOCAL_SPECS:
                    result[spec.name] = {
                        tuple(str(v) for v in series[:-1]): float(series[-1])
                        for series in local["metrics"].get(spec.name, ())
                    }
            return result

    def collect(self) -> Iterator[Metric]:
        merged = self.merged()
        run_id = self.local.run_id if self.local is not None else None
        constant = {"run": run_id} if run_id else {}
        for spec in SPECS:
            yield _family(spec, merged.get(spec.name, {}), constant)

    def describe(self) -> Iterator[Metric]:
        for spec in SPECS:
            yield _family(spec, {})


def _accumulate(
    into: dict[str, dict[tuple[str, ...], Any]], metrics: Mapping[str, Any], gauges: bool
) -> None:
    for name, series_list in metrics.items():
        spec = SPEC_BY_NAME.get(name)
        if spec is None or (spec.kind == "gauge" and not gauges):
            continue
        width = len(spec.labels)
        target = into.setdefault(name, {})
        for series in series_list:
            try:
                key = tuple(str(value) for value in series[:width])
                if len(key) != width:
                    continue
                if spec.kind == "histogram":
                    counts, total = series[width], float(series[width + 1])
                    if len(counts) != len(spec.buckets) + 1:
                        continue  # another version's buckets: cannot be merged
                    current = target.get(key)
                    if current is None:
                        target[key] = [[float(c) for c in counts], total]
                    else:
                        current[0] = [a + float(b) for a, b in zip(current[0], counts, strict=True)]
                        current[1] += total
                else:
                    value = float(series[width])
                    if spec.kind == "gauge" and spec.merge == "max":
                        target[key] = max(target.get(key, value), value)
                    else:
                        target[key] = target.get(key, 0.0) + value
            except (TypeError, ValueError, IndexError):
                continue  # a malformed series from a worker: skip it, keep the rest


def _accumulate_merged(
    into: dict[str, dict[tuple[str, ...], Any]], merged: Mapping[str, Mapping[tuple, Any]]
) -> None:
    for name, series in merged.items():
        rows = [
            [*key, value[0], value[1]] if isinstance(value, list) else [*key, value]
            for key, value in series.items()
        ]
        _accumulate(into, {name: rows}, gauges=False)


def _family(
    spec: Spec, series: Mapping[tuple[str, ...], Any], constant: Mapping[str, str] | None = None
) -> Metric:
    """One metric family; ``constant`` labels (the run id) are added to every series."""
    if constant:
        extra_names, extra_values = tuple(constant), tuple(constant.values())
        spec = dataclasses.replace(spec, labels=spec.labels + extra_names)
        series = {key + extra_values: value for key, value in series.items()}
        if not series and spec.kind != "histogram" and len(spec.labels) == len(extra_names):
            series = {extra_values: 0.0}  # an unlabelled gauge / counter is always there
    labels = list(spec.labels)
    if spec.kind == "counter":
        family: Any = CounterMetricFamily(spec.name, spec.help, labels=labels)
        for key, value in series.items():
            family.add_metric(list(key), value)
    elif spec.kind == "gauge":
        family = GaugeMetricFamily(spec.name, spec.help, labels=labels)
        for key, value in series.items():
            family.add_metric(list(key), value)
        if not labels and not series:
            family.add_metric([], 0.0)
    else:
        family = HistogramMetricFamily(spec.name, spec.help, labels=labels)
        bounds = [floatToGoString(bound) for bound in spec.buckets] + ["+Inf"]
        for key, (counts, total) in series.items():
            family.add_metric(list(key), list(zip(bounds, counts, strict=True)), total)
    if not labels and not series and spec.kind == "counter":
        family.add_metric([], 0.0)
    return family
