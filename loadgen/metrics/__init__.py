"""Prometheus metrics of the load generator: the metric contract, and the modules that
feed, merge and serve it.

The names, kinds and labels are a public contract (dashboards, alerts and reports select
series by them; docs/design.md, "Metrics: the contract"): :data:`SPECS` is the one list of
them and everything in this package is built from it.
Each process has its collectors (:mod:`~loadgen.metrics.collectors`), fed by an observer
(:mod:`~loadgen.metrics.observer`) and the lag probe (:mod:`~loadgen.metrics.probe`);
a Locust worker sends their snapshot to the master, which merges every worker's
(:mod:`~loadgen.metrics.merge`) and serves the result (:mod:`~loadgen.metrics.exporter`).

Wiring it into Locust (one of each per process)::

    metrics = Metrics(worker=runner.client_id or "local")   # "master" on the master
    observer = MetricsObserver(metrics, settings.fleet.sites)
    LagProbe(metrics).start()
    # the link's observer (RunContext): forward call_done, message, connect_done,
    #   disconnected, protocol_error to the observer's methods of the same name
    # each user: StationRunner(..., link_factory=observer.link_factory(), on_event=...)
    #   on_event(kind, d)        -> observer.runner_event(d["charger_id"], kind, d)
    #   Station listener(kind, d) -> observer.station_event(charger_id, kind, d)
    #   observer.add_station(station) before runner.start(); remove_station(id) in on_stop
    # worker, report_to_master:  data["ocpp_metrics"] = metrics.snapshot()
    # master:  merged = MergedCollector(metrics); serve(merged, port)
    #   worker_report:  merged.update(client_id, data.get("ocpp_metrics"))
    # single process:  serve(metrics, port)

Everything runs on one gevent hub: no locks of our own are needed (greenlets switch only on
I/O and nothing here does I/O); the merged collector takes one anyway in case a scrape comes
from a real thread (prometheus_client's own threaded server, say).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CALL_BUCKETS",
    "LAG_BUCKETS",
    "LOCAL_SPECS",
    "PREFIX",
    "SPECS",
    "SPEC_BY_NAME",
    "Spec",
]

#: CALL and connect latencies: 1 ms (a CSMS on the same host) to 60 s (past any timeout)
CALL_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
#: how late a timer fires: a healthy hub stays under a few ms
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Spec:
    """One metric: what it is called, its kind, labels and how workers' values merge."""

    name: str  # as exported; counters end in _total
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    #: gauges only: "sum" over workers, "max" (peaks), or "local": what the master (or
    #: the single process) set, workers' values ignored (run-wide settings and answers)
    merge: str = "sum"


#: every metric's name starts with it
PREFIX = "ocpp_loadgen_"
_P = PREFIX

SPECS: tuple[Spec, ...] = (
    Spec(f"{_P}call_duration_seconds", "histogram",
         "OCPP CALLs of the chargers: CALL sent to reply received (or timeout / disconnect)",
         ("action", "outcome"), CALL_BUCKETS),
    Spec(f"{_P}call_errors_total", "counter",
         "CALLs answered with a CALLERROR or an invalid reply, by RPC error code",
         ("action", "error_code")),
    Spec(f"{_P}csms_calls_total", "counter",
         "CALLs the CSMS sent to the chargers, by the status of the chargers' answer",
         ("action", "status")),
    Spec(f"{_P}messages_total", "counter", "OCPP-J messages sent and received",
         ("direction", "type")),
    Spec(f"{_P}connect_duration_seconds", "histogram",
         "Opening a connection: TCP + TLS + WebSocket handshake", ("outcome",), CALL_BUCKETS),
    Spec(f"{_P}chargers_connected", "gauge", "Chargers with an open WebSocket"),
    Spec(f"{_P}chargers_booted", "gauge",
         "Chargers connected whose BootNotification the CSMS accepted on this connection"),
    Spec(f"{_P}chargers_connected_peak", "gauge",
         "Most chargers connected at once during the run", merge="max"),
    Spec(f"{_P}chargers_target", "gauge", "Chargers the load shape asks for", merge="local"),
    Spec(f"{_P}site_chargers", "gauge", "Chargers per site and state (fleet map)",
         ("site", "lat", "lon", "state")),
    Spec(f"{_P}transactions_active", "gauge", "Transactions running on the chargers"),
    Spec(f"{_P}transactions_total", "counter",
         "Ended transactions: completed (the CSMS acknowledged the end), dropped (an ending "
         "message given up), unacknowledged (the charger went away first)", ("outcome",)),
    Spec(f"{_P}energy_delivered_wh_total", "counter", "Energy delivered to EVs (Wh)",
         ("site",)),
    Spec(f"{_P}power_w", "gauge", "Charging power of the running transactions (W)",
         ("site",)),
    Spec(f"{_P}reconnects_total", "counter",
         "Chargers connected again, by why the previous connection ended", ("reason",)),
    Spec(f"{_P}disconnects_total", "counter", "Connections that ended, by reason",
         ("reason",)),
    Spec(f"{_P}offline_queue_depth", "gauge",
         "Transaction messages the chargers hold to send (the offline queue)"),
    Spec(f"{_P}schedule_lag_seconds", "histogram",
         "How late a timer fires in the load generator (saturation when it grows)",
         ("worker",), LAG_BUCKETS),
    Spec(f"{_P}capacity_max_chargers", "gauge",
         "The last capacity search's answer: most chargers the CSMS held within SLOs",
         merge="local"),
    Spec(f"{_P}capacity_max_connect_rate", "gauge",
         "The last capacity search's answer: most new chargers per second the CSMS connected "
         "and booted within the connect SLOs", merge="local"),
    # beyond the first design's table: the load generator's health and diagnosis
    Spec(f"{_P}capacity_limited_by_generator", "gauge",
         "1 when the last capacity search stopped because the load generator was saturated "
         "(its answer is then no CSMS figure: add workers)", merge="local"),
    Spec(f"{_P}worker_cpu_ratio", "gauge",
         "CPU seconds per second used by a load generator process (1 = one core busy)",
         ("worker",)),
    Spec(f"{_P}coordination_failures_total", "counter",
         "Coordinator (Redis) operations that failed", ("operation",)),
    Spec(f"{_P}protocol_errors_total", "counter",
         "Broken things the CSMS sent (malformed frames, late or unknown replies, ...)",
         ("kind",)),
    Spec(f"{_P}dropped_messages_total", "counter",
         "Transaction messages a charger gave up after repeated CALLERRORs", ("action",)),
    Spec(f"{_P}authorizations_total", "counter",
         "The CSMS's verdicts on idTokens, by status and the message that carried the verdict",
         ("status", "message")),
    # issue 13: which OCPP version each connection speaks (of those offered, the CSMS's pick)
    Spec(f"{_P}version_chargers", "gauge",
         "Chargers connected, by the OCPP version their connection speaks", ("version",)),
    Spec(f"{_P}connections_total", "counter",
         "Connections opened (WebSocket handshake done), by the OCPP version the CSMS picked",
         ("version",)),
)  # fmt: skip

SPEC_BY_NAME: dict[str, Spec] = {spec.name: spec for spec in SPECS}
#: gauges the master sets itself; workers' values are ignored
LOCAL_SPECS = tuple(spec for spec in SPECS if spec.merge == "local")
