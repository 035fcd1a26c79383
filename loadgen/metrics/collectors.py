"""This process's collectors (:class:`Metrics`), built from :data:`~loadgen.metrics.SPECS` in
a registry of its own (never prometheus_client's global default), and their snapshot as
plain data (msgpack / JSON) for a Locust worker's report."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from loadgen.metrics import PREFIX, SPECS, Spec
from loadgen.metrics.labels import (
    COORDINATION_OPERATIONS,
    OCPP_VERSIONS,
    PROTOCOL_ERROR_KINDS,
    RECONNECT_REASONS,
)

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1


class Metrics:
    """This process's collectors, in a registry of its own.

    ``worker`` names the process in the per-worker series (schedule lag, CPU): Locust's
    ``runner.client_id`` on a worker, "master" or "local" otherwise.
    """

    def __init__(self, worker: str = "local", registry: CollectorRegistry | None = None) -> None:
        self.worker = worker
        #: the run id, exported as a ``run`` label on every series (dashboards select a run
        #: by it); None until the run starts
        self.run_id: str | None = None
        #: the chargers asked for (see :meth:`set_target`)
        self.target = 0
        self.registry = registry if registry is not None else CollectorRegistry()
        #: changes when the process (or this object) is new: the master tells a restarted
        #: worker (counters from zero) from one that comes back after a pause
        self.epoch = uuid.uuid4().hex
        self.collectors: dict[str, Any] = {}
        for spec in SPECS:
            if spec.kind == "counter":
                metric: Any = Counter(spec.name, spec.help, spec.labels, registry=self.registry)
            elif spec.kind == "gauge":
                metric = Gauge(spec.name, spec.help, spec.labels, registry=self.registry)
            else:
                metric = Histogram(
                    spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=self.registry
                )
            self.collectors[spec.name] = metric
        #: called before a snapshot, to bring computed gauges up to date
        self._refreshers: list[Callable[[], None]] = []
        c = self.collectors
        self.call_duration = c[f"{PREFIX}call_duration_seconds"]
        self.call_errors = c[f"{PREFIX}call_errors_total"]
        self.csms_calls = c[f"{PREFIX}csms_calls_total"]
        self.messages = c[f"{PREFIX}messages_total"]
        self.connect_duration = c[f"{PREFIX}connect_duration_seconds"]
        self.chargers_connected = c[f"{PREFIX}chargers_connected"]
        self.chargers_connected_peak = c[f"{PREFIX}chargers_connected_peak"]
        self.chargers_booted = c[f"{PREFIX}chargers_booted"]
        self.chargers_target = c[f"{PREFIX}chargers_target"]
        self.site_chargers = c[f"{PREFIX}site_chargers"]
        self.transactions_active = c[f"{PREFIX}transactions_active"]
        self.transactions = c[f"{PREFIX}transactions_total"]
        self.energy = c[f"{PREFIX}energy_delivered_wh_total"]
        self.power = c[f"{PREFIX}power_w"]
        self.reconnects = c[f"{PREFIX}reconnects_total"]
        self.disconnects = c[f"{PREFIX}disconnects_total"]
        self.offline_queue_depth = c[f"{PREFIX}offline_queue_depth"]
        self.schedule_lag = c[f"{PREFIX}schedule_lag_seconds"]
        self.capacity_max_chargers = c[f"{PREFIX}capacity_max_chargers"]
        self.capacity_max_connect_rate = c[f"{PREFIX}capacity_max_connect_rate"]
        self.capacity_limited = c[f"{PREFIX}capacity_limited_by_generator"]
        self.worker_cpu = c[f"{PREFIX}worker_cpu_ratio"]
        self.coordination_failures = c[f"{PREFIX}coordination_failures_total"]
        self.protocol_errors = c[f"{PREFIX}protocol_errors_total"]
        self.dropped_messages = c[f"{PREFIX}dropped_messages_total"]
        self.authorizations = c[f"{PREFIX}authorizations_total"]
        self.version_chargers = c[f"{PREFIX}version_chargers"]
        self.connections = c[f"{PREFIX}connections_total"]
        # Counters of closed label sets exist from the start at 0: a series that first
        # appears with its value already 1 shows no increase in rate() / increase().
        for reason in sorted(RECONNECT_REASONS):
            self.reconnects.labels(reason)
        for kind in sorted(PROTOCOL_ERROR_KINDS | {"other"}):
            self.protocol_errors.labels(kind)
        for operation in sorted(COORDINATION_OPERATIONS | {"other"}):
            self.coordination_failures.labels(operation)
        for version in OCPP_VERSIONS:
            self.connections.labels(version)

    # -- run-wide values, set by the Locust layer ----------------------------------------

    def set_target(self, chargers: int) -> None:
        """The number of chargers the load shape / the user count asks for (master or
        single process)."""
        self.target = chargers
        self.chargers_target.set(chargers)

    def set_capacity(self, chargers: int | None, limited_by_generator: bool = False) -> None:
        """The capacity search's answer; None (no CSMS figure) exports NaN."""
        self.capacity_max_chargers.set(math.nan if chargers is None else chargers)
        self.capacity_limited.set(1 if limited_by_generator else 0)

    def set_connect_rate(self, chargers_per_s: float | None) -> None:
        """The connect-rate search's answer; None (not searched, no answer) exports NaN."""
        self.capacity_max_connect_rate.set(math.nan if chargers_per_s is None else chargers_per_s)

    def coordination_failure(self, operation: str) -> None:
        """A Coordinator call failed (lease, release, renew, idToken, transaction_id,
        ledger, run); other names count as "other"."""
        label = operation if operation in COORDINATION_OPERATIONS else "other"
        self.coordination_failures.labels(label).inc()

    def add_refresher(self, refresh: Callable[[], None]) -> None:
        self._refreshers.append(refresh)

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every series as plain data (lists, strings, numbers: msgpack and JSON safe).

        ``{"v": 1, "worker": ..., "epoch": ..., "metrics": {name: [series, ...]}}`` where a
        series is ``[label values..., value]`` for counters and gauges and
        ``[label values..., [cumulative bucket counts..., count], sum]`` for histograms
        (bucket bounds as in :data:`SPECS`; the last count is the +Inf bucket).
        """
        for refresh in self._refreshers:
            try:
                refresh()
            except Exception:
                log.exception("refreshing a metric failed")
        metrics: dict[str, list[list[Any]]] = {}
        for spec in SPECS:
            metrics[spec.name] = _read(spec, self.collectors[spec.name])
        return {
            "v": SNAPSHOT_VERSION,
            "worker": self.worker,
            "epoch": self.epoch,
            "metrics": metrics,
        }


def _read(spec: Spec, collector: Any) -> list[list[Any]]:
    """The series of one prometheus_client collector, in snapshot form."""
    names = spec.labels
    series: list[list[Any]] = []
    if spec.kind == "histogram":
        buckets: dict[tuple[str, ...], list[float]] = {}
        sums: dict[tuple[str, ...], float] = {}
        for family in collector.collect():
            for sample in family.samples:
                key = tuple(sample.labels[name] for name in names)
                if sample.name.endswith("_bucket"):
                    buckets.setdefault(key, []).append(sample.value)
                elif sample.name.endswith("_sum"):
                    sums[key] = sample.value
        for key, counts in buckets.items():
            series.append([*key, counts, sums.get(key, 0.0)])
        return series
    suffix = "_total" if spec.kind == "counter" else ""
    for family in collector.collect():
        for sample in family.samples:
            if sample.name == family.name + suffix:
                series.append([*(sample.labels[name] for name in names), sample.value])
    return series
