"""Prometheus metrics: collectors per process, worker snapshots merged on the master.

The names, kinds and labels are a public contract (DESIGN.md, "Metrics (Prometheus)");
:data:`SPECS` is the one list of them and everything here is built from it.

Pieces, and who uses them:

- :class:`Metrics`: the collectors, in a registry of this process's own (never
  prometheus_client's global default). :meth:`Metrics.snapshot` turns them into plain data
  (msgpack / JSON) for a Locust worker's report.
- :class:`MetricsObserver`: feeds a :class:`Metrics` from the link (it *is* a
  :class:`~loadgen.link.CallObserver`), from the station runners
  (:meth:`~MetricsObserver.runner_event`) and from the stations
  (:meth:`~MetricsObserver.station_event`). Per-charger state stays inside it; the series
  are per site at most (per-charger labels are forbidden).
- :class:`LagProbe`: a greenlet that sleeps a fixed interval and records how late it woke
  (``ocpp_loadgen_schedule_lag_seconds``) and the process's CPU use: the load generator's
  own saturation signal.
- :class:`MergedCollector`: on the master, the latest snapshot of every worker (plus the
  master's own :class:`Metrics`) merged into one set of series: counters and histogram
  buckets add, gauges add (the peak, target and capacity gauges take the maximum). A worker
  that stops reporting stops counting towards the gauges; its counters stay, so they never
  go down.
- :func:`serve`: ``/metrics`` over HTTP on gevent (``gevent.pywsgi``), no threads.

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

import dataclasses
import enum
import functools
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import gevent
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from loadgen import link as links
from loadgen.capacity import ActionStats, StepMeasurement, bucket_percentile
from loadgen.fleet import Site

log = logging.getLogger(__name__)

__all__ = [
    "CALL_BUCKETS",
    "DEFAULT_PORT",
    "LAG_BUCKETS",
    "SPECS",
    "Exporter",
    "LagProbe",
    "MergedCollector",
    "Metrics",
    "MetricsObserver",
    "serve",
]

DEFAULT_PORT = 9646
SNAPSHOT_VERSION = 1
OTHER = "Other"

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


_P = "ocpp_loadgen_"

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
    # not in DESIGN.md's table, added for load-generator health and diagnosis
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
)  # fmt: skip

SPEC_BY_NAME: dict[str, Spec] = {spec.name: spec for spec in SPECS}
_LOCAL_SPECS = tuple(spec for spec in SPECS if spec.merge == "local")

# -- label values: closed sets ------------------------------------------------------------

OUTCOMES = (links.RESULT, links.ERROR, links.TIMEOUT, links.DISCONNECTED)
SITE_STATES = ("offline", "booting", "available", "charging", "unavailable", "failed")
DISCONNECT_REASONS = frozenset(
    {
        links.CLOSED_LOCALLY,
        links.CLOSED_BY_SERVER,
        links.CONNECTION_LOST,
        links.MESSAGE_TOO_BIG,
        links.WEBSOCKET_ERROR,
        links.INTERNAL_ERROR,
    }
)
#: reconnect reasons: the disconnect reasons, "reset" (the CSMS asked) and "other"
RECONNECT_REASONS = DISCONNECT_REASONS | {"reset", "other"}
CONNECT_OUTCOMES = frozenset(
    {"ok", "refused", "timeout", "dns", "network", "tls", "handshake", "subprotocol"}
    | {"too_many_open_files"}
    | {f"http_{code}" for code in (400, 401, 403, 404, 426, 429, 500, 502, 503, 504)}
)
PROTOCOL_ERROR_KINDS = frozenset(
    {
        "malformed_frame",
        "binary_frame",
        "late_reply",
        "unknown_reply_id",
        "invalid_result",
        "invalid_call",
        # OCPP 2.1: the CSMS rejected a CALLRESULT of ours; a CSMS SEND was invalid / failed
        "callresulterror",
        "invalid_send",
        "send_failed",
        links.MESSAGE_TOO_BIG,
        links.WEBSOCKET_ERROR,
    }
)
COORDINATION_OPERATIONS = frozenset(
    {"lease", "release", "renew", "idToken", "transaction_id", "ledger", "run"}
)
TRANSACTION_OUTCOMES = ("completed", "dropped", "unacknowledged")
#: idTokenInfo / idTagInfo statuses: 2.0.1's AuthorizationStatusEnumType and 1.6's
#: AuthorizationStatus (a subset); anything else is "other"
AUTHORIZATION_STATUSES = (
    "Accepted",
    "Blocked",
    "ConcurrentTx",
    "Expired",
    "Invalid",
    "NoCredit",
    "NotAllowedTypeEVSE",
    "NotAtThisLocation",
    "NotAtThisTime",
    "Unknown",
)
#: the messages whose replies carry a verdict
AUTHORIZATION_MESSAGES = ("Authorize", "TransactionEvent", "StartTransaction")
MESSAGE_DIRECTIONS = ("sent", "received")
#: OCPP-J message types; SEND and CALLRESULTERROR exist in 2.1 only
MESSAGE_TYPES = ("call", "result", "error", "send", "callresulterror")
#: fleets with up to this many sites export every site's series from the start
MAX_PRESET_SITES = 1000
_UNAVAILABLE = frozenset({"Unavailable", "Faulted", "Inoperative"})


@functools.cache
def known_actions() -> frozenset[str]:
    """Every action OCPP 1.6, 2.0.1 and 2.1 define (from the ``ocpp`` package)."""
    names: set[str] = set()
    for module in ("ocpp.v16.enums", "ocpp.v201.enums", "ocpp.v21.enums"):
        try:
            action = __import__(module, fromlist=["Action"]).Action
        except (ImportError, AttributeError):
            continue
        names.update(member.value for member in action)
    return frozenset(names)


@functools.cache
def known_statuses() -> frozenset[str]:
    """Every value of the ``ocpp`` package's status enumerations (Accepted, Rejected, ...)."""
    values: set[str] = set()
    for module in ("ocpp.v16.enums", "ocpp.v201.enums", "ocpp.v21.enums"):
        try:
            namespace = vars(__import__(module, fromlist=["Action"]))
        except ImportError:
            continue
        for name, value in namespace.items():
            if isinstance(value, type) and issubclass(value, enum.Enum) and "Status" in name:
                values.update(str(member.value) for member in value)
    return frozenset(values)


def action_label(action: str) -> str:
    return action if action in known_actions() else OTHER


def error_code_label(code: str | None) -> str:
    return code if code in links.KNOWN_ERROR_CODES else OTHER


def status_label(reply: Any) -> str:
    """The ``status`` of a CALLRESULT payload; "result" when it has none."""
    status = reply.get("status") if isinstance(reply, dict) else None
    if status is None:
        return "result"
    return status if isinstance(status, str) and status in known_statuses() else OTHER


def authorization_labels(status: Any, message: Any) -> tuple[str, str]:
    """``authorizations_total``'s labels, each from its closed set ("other" outside it)."""
    return (
        status if status in AUTHORIZATION_STATUSES else OTHER,
        message if message in AUTHORIZATION_MESSAGES else OTHER,
    )


def connect_outcome_label(outcome: str) -> str:
    if outcome in CONNECT_OUTCOMES:
        return outcome
    if outcome.startswith("http_"):
        return "http_other"
    return "other"


def disconnect_reason_label(reason: str) -> str:
    return reason if reason in DISCONNECT_REASONS else "other"


def reconnect_reason(text: str) -> str:
    """Why a connection ended, from the reason text a runner's "disconnected" event carries
    (the link's own wording, see ``Link._down``)."""
    if text.startswith("closed by the station"):
        # the runner closes with "reconnecting" only to reboot after a Reset
        return "reset" if text.endswith("reconnecting") else links.CLOSED_LOCALLY
    if text.startswith("closed by the CSMS"):
        return links.CLOSED_BY_SERVER
    if text.startswith(("connection lost", "a write was interrupted")):
        return links.CONNECTION_LOST
    if text.startswith("internal error"):
        return links.INTERNAL_ERROR
    for reason in (links.MESSAGE_TOO_BIG, links.WEBSOCKET_ERROR):
        if text.startswith(reason):
            return reason
    return "other"


def _coordinate(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


# -- the collectors ---------------------------------------------------------------------


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
        self.call_duration = c[f"{_P}call_duration_seconds"]
        self.call_errors = c[f"{_P}call_errors_total"]
        self.csms_calls = c[f"{_P}csms_calls_total"]
        self.messages = c[f"{_P}messages_total"]
        self.connect_duration = c[f"{_P}connect_duration_seconds"]
        self.chargers_connected = c[f"{_P}chargers_connected"]
        self.chargers_connected_peak = c[f"{_P}chargers_connected_peak"]
        self.chargers_booted = c[f"{_P}chargers_booted"]
        self.chargers_target = c[f"{_P}chargers_target"]
        self.site_chargers = c[f"{_P}site_chargers"]
        self.transactions_active = c[f"{_P}transactions_active"]
        self.transactions = c[f"{_P}transactions_total"]
        self.energy = c[f"{_P}energy_delivered_wh_total"]
        self.power = c[f"{_P}power_w"]
        self.reconnects = c[f"{_P}reconnects_total"]
        self.disconnects = c[f"{_P}disconnects_total"]
        self.offline_queue_depth = c[f"{_P}offline_queue_depth"]
        self.schedule_lag = c[f"{_P}schedule_lag_seconds"]
        self.capacity_max_chargers = c[f"{_P}capacity_max_chargers"]
        self.capacity_max_connect_rate = c[f"{_P}capacity_max_connect_rate"]
        self.capacity_limited = c[f"{_P}capacity_limited_by_generator"]
        self.worker_cpu = c[f"{_P}worker_cpu_ratio"]
        self.coordination_failures = c[f"{_P}coordination_failures_total"]
        self.protocol_errors = c[f"{_P}protocol_errors_total"]
        self.dropped_messages = c[f"{_P}dropped_messages_total"]
        self.authorizations = c[f"{_P}authorizations_total"]
        # Counters of closed label sets exist from the start at 0: a series that first
        # appears with its value already 1 shows no increase in rate() / increase().
        for reason in sorted(RECONNECT_REASONS):
            self.reconnects.labels(reason)
        for kind in sorted(PROTOCOL_ERROR_KINDS | {"other"}):
            self.protocol_errors.labels(kind)
        for operation in sorted(COORDINATION_OPERATIONS | {"other"}):
            self.coordination_failures.labels(operation)

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


# -- feeding the collectors -------------------------------------------------------------


class _Charger:
    """What the observer remembers of one charger (never a label)."""

    __slots__ = (
        "active",
        "booted",
        "connected",
        "failed",
        "last_disconnect",
        "pending",
        "site",
        "state",
        "station",
        "unavailable",
    )

    def __init__(self, site: str, station: Any) -> None:
        self.site = site
        self.station = station
        self.connected = False
        self.booted = False
        self.failed = False
        self.unavailable: set[tuple[int, int]] = set()
        self.last_disconnect = "other"
        #: running transactions, by local id
        self.active: dict[str, _Transaction] = {}
        #: ended transactions waiting for the CSMS's acknowledgement, by local id
        self.pending: dict[str, Any] = {}
        self.state = "offline"

    def compute_state(self) -> str:
        if self.failed:
            return "failed"
        if not self.connected:
            return "offline"
        if not self.booted:
            return "booting"
        if self.active:
            return "charging"
        if self.unavailable:
            return "unavailable"
        return "available"


class _Transaction:
    __slots__ = ("last_wh", "power_w", "site")

    def __init__(self, site: str, start_wh: float) -> None:
        self.site = site
        self.last_wh = start_wh
        self.power_w = 0.0


class MetricsObserver:
    """Feeds :class:`Metrics` from the link, the station runners and the stations.

    The link's :class:`~loadgen.link.CallObserver` methods (``call_done``, ``message``,
    ``connect_done``, ``disconnected``, ``protocol_error``) are the hot path: label children
    are resolved once and cached, so a CALL costs two dict lookups and an observe.

    Per-charger events need the charger registered first with :meth:`add_station` (it
    gives the site) and forgotten with :meth:`remove_station`; events for chargers it does
    not know are ignored.
    """

    def __init__(self, metrics: Metrics, sites: Mapping[str, Site] | None = None) -> None:
        self.metrics = metrics
        self.sites = dict(sites or {})
        self._chargers: dict[str, _Charger] = {}
        self._connected = 0
        self._booted = 0
        self._peak = 0
        self._active = 0
        m = metrics
        # hot-path caches: raw value -> prometheus child
        self._durations: dict[str, dict[str, Any]] = {}
        self._errors: dict[tuple[str, str], Any] = {}
        self._messages = {
            direction: {kind: m.messages.labels(direction, kind) for kind in MESSAGE_TYPES}
            for direction in MESSAGE_DIRECTIONS
        }
        self._connects: dict[str, Any] = {}
        self._disconnects = {
            reason: m.disconnects.labels(reason) for reason in (*DISCONNECT_REASONS, "other")
        }
        self._site_states: dict[tuple[str, str], Any] = {}
        self._site_power: dict[str, list[Any]] = {}  # site -> [gauge child, running count]
        self._site_energy: dict[str, Any] = {}
        self._transactions_total = {
            outcome: m.transactions.labels(outcome) for outcome in TRANSACTION_OUTCOMES
        }
        self._csms_calls: dict[tuple[str, str], Any] = {}
        if len(self.sites) <= MAX_PRESET_SITES:
            # every site of the fleet on the map from the start, not once a charger is there
            for site in self.sites:
                self._site_state(site, "offline")
                self._site_power_entry(site)
                self._energy_child(site)
        self._station_handlers: dict[str, Callable[[_Charger, str, Mapping[str, Any]], None]] = {
            "boot": self._on_boot,
            "status": self._on_status,
            "started": self._on_started,
            "meter": self._on_meter,
            "stopped": self._on_stopped,
            "acknowledged": self._on_acknowledged,
            "dropped": self._on_dropped,
            "authorization": self._on_authorization,
            "rejected": self._on_rejected,
        }
        metrics.add_refresher(self.refresh)

    # -- the link's CallObserver (hot path) ----------------------------------------------

    def call_done(self, action: str, outcome: str, seconds: float, error_code: str | None) -> None:
        try:
            self._durations[action][outcome].observe(seconds)
        except KeyError:
            self._duration_child(action, outcome).observe(seconds)
        if error_code is not None:
            self._call_error(action, error_code)

    def message(self, direction: str, kind: str) -> None:
        try:  # noqa: SIM105 (contextlib.suppress costs more on this hot path)
            self._messages[direction][kind].inc()
        except KeyError:
            pass  # not a direction / type the link reports

    def connect_done(self, outcome: str, seconds: float) -> None:
        child = self._connects.get(outcome)
        if child is None:
            child = self.metrics.connect_duration.labels(connect_outcome_label(outcome))
            if len(self._connects) < 64:
                self._connects[outcome] = child
        child.observe(seconds)
        if outcome == "ok":
            self._connected += 1
            self.metrics.chargers_connected.set(self._connected)
            if self._connected > self._peak:
                self._peak = self._connected
                self.metrics.chargers_connected_peak.set(self._peak)

    def disconnected(self, reason: str) -> None:
        child = self._disconnects.get(reason) or self._disconnects["other"]
        child.inc()
        if self._connected > 0:
            self._connected -= 1
            self.metrics.chargers_connected.set(self._connected)

    def protocol_error(self, kind: str) -> None:
        self.metrics.protocol_errors.labels(kind if kind in PROTOCOL_ERROR_KINDS else "other").inc()

    def _duration_child(self, action: str, outcome: str) -> Any:
        label = action_label(action)
        children = {o: self.metrics.call_duration.labels(label, o) for o in OUTCOMES}
        if label != OTHER:
            self._durations[action] = children  # unknown actions are not cached: bounded
        return children.get(outcome, children[links.ERROR])

    def _call_error(self, action: str, error_code: str) -> None:
        key = (action, error_code)
        child = self._errors.get(key)
        if child is None:
            action_value, code = action_label(action), error_code_label(error_code)
            child = self.metrics.call_errors.labels(action_value, code)
            if action_value != OTHER and code != OTHER:
                self._errors[key] = child
        child.inc()

    # -- CSMS-initiated CALLs ------------------------------------------------------------

    def csms_call(self, action: str, status: str) -> None:
        """The chargers answered a CSMS CALL: ``status`` is the answer's ``status`` field,
        "result" when it has none, "error" for a CALLERROR (see :meth:`link_factory`)."""
        key = (action, status)
        child = self._csms_calls.get(key)
        if child is None:
            action_value = action_label(action)
            known = status in ("result", "error") or status in known_statuses()
            child = self.metrics.csms_calls.labels(action_value, status if known else OTHER)
            if action_value != OTHER and known:
                self._csms_calls[key] = child
        child.inc()

    def link_factory(self, base: Callable[..., Any] = links.Link) -> Callable[..., Any]:
        """A ``link_factory`` for :class:`~loadgen.runner.StationRunner` that counts the
        CSMS's CALLs and how the station answered them (``csms_calls_total``)."""

        def make(url: str, version: Any, handler: Any, **options: Any) -> Any:
            return base(url, version, _CountingHandler(handler, self), **options)

        return make

    # -- chargers ------------------------------------------------------------------------

    def add_station(self, station: Any) -> None:
        """Start following a station (a :class:`~loadgen.station.Station`): its site, its
        state for ``site_chargers`` and its offline queue."""
        charger_id = station.charger.id
        if charger_id in self._chargers:
            self.remove_station(charger_id)
        charger = _Charger(station.charger.site_id, station)
        self._chargers[charger_id] = charger
        self._site_state(charger.site, charger.state).inc()

    def remove_station(self, charger_id: str) -> None:
        """The station is gone (its user stopped): it leaves the site counts; transactions
        it still had running or unacknowledged are accounted for."""
        charger = self._chargers.pop(charger_id, None)
        if charger is None:
            return
        self._site_state(charger.site, charger.state).dec()
        self._set_booted(charger, False)
        for local_id in list(charger.active):
            self._end_transaction(charger, local_id)
            self._active -= 1
        self.metrics.transactions_active.set(self._active)
        if charger.pending:
            self._transactions_total["unacknowledged"].inc(len(charger.pending))

    def runner_event(self, charger_id: str, kind: str, detail: Mapping[str, Any]) -> None:
        """A :class:`~loadgen.runner.StationRunner` ``on_event``: connected, disconnected,
        retry, gave_up."""
        charger = self._chargers.get(charger_id)
        if charger is None:
            return
        if kind == "connected":
            if detail.get("count", 1) > 1:
                self.metrics.reconnects.labels(charger.last_disconnect).inc()
            charger.connected = True
            self._set_booted(charger, False)
            charger.failed = False
        elif kind == "disconnected":
            charger.connected = False
            self._set_booted(charger, False)
            charger.last_disconnect = reconnect_reason(str(detail.get("reason", "")))
        elif kind == "gave_up":
            charger.failed = True
        else:
            return
        self._update_state(charger)

    def station_event(self, charger_id: str, kind: str, detail: Mapping[str, Any]) -> None:
        """A :class:`~loadgen.station.Station` listener event (boot, status, started, meter,
        stopped, acknowledged, dropped; the others are ignored)."""
        handler = self._station_handlers.get(kind)
        if handler is None:
            return
        charger = self._chargers.get(charger_id)
        if charger is not None:
            handler(charger, charger_id, detail)

    def refresh(self) -> None:
        """Bring the computed gauges up to date (called before each snapshot)."""
        depth = 0
        for charger in self._chargers.values():
            depth += charger.station.queue_depth
        self.metrics.offline_queue_depth.set(depth)

    # -- station events ------------------------------------------------------------------

    def _on_boot(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        self._set_booted(charger, detail.get("status") == "Accepted")
        self._update_state(charger)

    def _set_booted(self, charger: _Charger, booted: bool) -> None:
        """Keep ``chargers_booted`` in step: it counts transitions, not a scan of chargers."""
        if booted == charger.booted:
            return
        charger.booted = booted
        self._booted += 1 if booted else -1
        self.metrics.chargers_booted.set(self._booted)

    def _on_status(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        where = (detail.get("evse_id", 0), detail.get("connector_id", 0))
        if detail.get("status") in _UNAVAILABLE:
            charger.unavailable.add(where)
        else:
            charger.unavailable.discard(where)
        self._update_state(charger)

    def _on_started(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        transaction = detail["transaction"]
        if transaction.local_id in charger.active:
            return
        charger.active[transaction.local_id] = _Transaction(charger.site, transaction.start_wh)
        self._site_power_entry(charger.site)[1] += 1
        self._active += 1
        self.metrics.transactions_active.set(self._active)
        self._update_state(charger)

    def _on_meter(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        entry = charger.active.get(detail["transaction"].local_id)
        if entry is None:
            return
        energy = detail.get("energy_wh")
        if energy is not None and energy > entry.last_wh:
            self._energy_child(entry.site).inc(energy - entry.last_wh)
            entry.last_wh = energy
        power = detail.get("power_w")
        if power is not None and power != entry.power_w:
            self._site_power_entry(entry.site)[0].inc(power - entry.power_w)
            entry.power_w = power

    def _on_stopped(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        transaction = detail["transaction"]
        entry = charger.active.get(transaction.local_id)
        if entry is None:
            return
        stop_wh = transaction.stop_wh
        if stop_wh is not None and stop_wh > entry.last_wh:
            self._energy_child(entry.site).inc(stop_wh - entry.last_wh)
            entry.last_wh = stop_wh
        self._end_transaction(charger, transaction.local_id)
        self._active -= 1
        self.metrics.transactions_active.set(self._active)
        charger.pending[transaction.local_id] = transaction
        self._update_state(charger)

    def _on_acknowledged(
        self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]
    ) -> None:
        transaction = detail["transaction"]
        if charger.pending.pop(transaction.local_id, None) is not None:
            self._transactions_total["completed"].inc()

    def _on_dropped(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        action = str(detail.get("action", ""))
        self.metrics.dropped_messages.labels(action_label(action)).inc()
        payload = detail.get("payload") or {}
        if action == "StopTransaction":
            csms_id = payload.get("transactionId")
            match = [k for k, t in charger.pending.items() if t.csms_id == csms_id]
        elif action == "TransactionEvent" and payload.get("eventType") == "Ended":
            local_id = (payload.get("transactionInfo") or {}).get("transactionId")
            match = [local_id] if local_id in charger.pending else []
        else:
            return
        for local_id in match:
            del charger.pending[local_id]
            self._transactions_total["dropped"].inc()

    def _on_authorization(
        self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]
    ) -> None:
        labels = authorization_labels(detail.get("status"), detail.get("message"))
        self.metrics.authorizations.labels(*labels).inc()

    def _on_rejected(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        transaction = detail["transaction"]
        rules = getattr(charger.station, "rules", None)
        if rules is not None and rules.unknown_to_csms(transaction):
            # 1.6, no transaction id from the CSMS: no end to wait for (not unacknowledged)
            charger.pending.pop(transaction.local_id, None)

    # -- helpers -------------------------------------------------------------------------

    def _end_transaction(self, charger: _Charger, local_id: str) -> None:
        entry = charger.active.pop(local_id)
        power = self._site_power_entry(entry.site)
        power[1] -= 1
        if power[1] <= 0:
            power[1] = 0
            power[0].set(0.0)  # no float residue once a site is idle
        elif entry.power_w:
            power[0].dec(entry.power_w)

    def _update_state(self, charger: _Charger) -> None:
        state = charger.compute_state()
        if state != charger.state:
            self._site_state(charger.site, charger.state).dec()
            self._site_state(charger.site, state).inc()
            charger.state = state

    def _site_state(self, site: str, state: str) -> Any:
        child = self._site_states.get((site, state))
        if child is None:
            known = self.sites.get(site)
            lat = _coordinate(known.lat) if known else ""
            lon = _coordinate(known.lon) if known else ""
            for each in SITE_STATES:  # a site shows every state, zeros included
                self._site_states[(site, each)] = self.metrics.site_chargers.labels(
                    site, lat, lon, each
                )
            child = self._site_states[(site, state)]
        return child

    def _site_power_entry(self, site: str) -> list[Any]:
        entry = self._site_power.get(site)
        if entry is None:
            entry = self._site_power[site] = [self.metrics.power.labels(site), 0]
        return entry

    def _energy_child(self, site: str) -> Any:
        child = self._site_energy.get(site)
        if child is None:
            child = self._site_energy[site] = self.metrics.energy.labels(site)
        return child


class _CountingHandler:
    """Wraps a link's CallHandler (the station runner) to count the CSMS's CALLs."""

    __slots__ = ("inner", "observer")

    def __init__(self, inner: Any, observer: MetricsObserver) -> None:
        self.inner = inner
        self.observer = observer

    def on_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = self.inner.on_call(action, payload)
        except Exception:  # CallErrorReply, or a failure the link answers as InternalError
            self.observer.csms_call(action, "error")
            raise
        self.observer.csms_call(action, status_label(reply))
        return reply

    def on_disconnect(self, code: int | None, reason: str) -> None:
        self.inner.on_disconnect(code, reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# -- the load generator's own health ------------------------------------------------------


class LagProbe:
    """A greenlet that sleeps ``interval`` seconds at a time and records how late it woke
    (``schedule_lag_seconds{worker}``), and every ``cpu_window`` seconds the CPU the process
    used per second (``worker_cpu_ratio{worker}``).

    A late wake-up means the hub was busy elsewhere: every timer of every charger in this
    process is that late too. That is the load generator's saturation signal.
    """

    def __init__(self, metrics: Metrics, interval: float = 0.25, cpu_window: float = 2.0) -> None:
        self.metrics = metrics
        self.interval = interval
        self.cpu_window = cpu_window
        self.greenlet: gevent.Greenlet | None = None

    def start(self) -> LagProbe:
        if self.greenlet is None or self.greenlet.dead:
            self.greenlet = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=True, timeout=1)
            self.greenlet = None

    def _run(self) -> None:
        worker = self.metrics.worker
        lag = self.metrics.schedule_lag.labels(worker)
        cpu = self.metrics.worker_cpu.labels(worker)
        interval = self.interval
        monotonic, process_time = time.monotonic, time.process_time
        window_started, cpu_started = monotonic(), process_time()
        while True:
            started = monotonic()
            gevent.sleep(interval)
            now = monotonic()
            lag.observe(max(0.0, now - started - interval))
            if now - window_started >= self.cpu_window:
                used = process_time()
                cpu.set((used - cpu_started) / (now - window_started))
                window_started, cpu_started = now, used


# -- merging workers' snapshots on the master --------------------------------------------


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
            for series in source.metrics.get(f"{_P}chargers_connected", ()):
                connected += series[-1]
            for series in source.metrics.get(f"{_P}chargers_connected_peak", ()):
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
            result[f"{_P}chargers_connected_peak"] = {(): self._peak}
            if local is not None:
                for spec in _LOCAL_SPECS:
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


# -- HTTP ----------------------------------------------------------------------------------


class Exporter:
    """A running ``/metrics`` server; :meth:`stop` ends it."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.host, self.port = server.address[0], server.server_port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.stop(timeout=1)


def serve(source: Any, port: int = DEFAULT_PORT, host: str = "0.0.0.0") -> Exporter | None:
    """Serve ``source`` (a :class:`Metrics`, a :class:`MergedCollector`, a
    ``CollectorRegistry`` or any collector) on ``http://host:port/metrics`` in greenlets of
    this process's hub; ``port`` 0 serves nothing and returns None.

    gevent's WSGI server rather than prometheus_client's ``start_http_server``: that one
    runs a thread, which under Locust's monkey patching is a greenlet anyway, and whose
    locks would not mix with a real thread's. A scrape waits for its turn on the hub like
    any greenlet, so a saturated process answers slowly (the lag metric says why).
    """
    if not port:
        return None
    from gevent.pywsgi import WSGIServer
    from prometheus_client import make_wsgi_app

    if isinstance(source, Metrics):
        source = MergedCollector(source, stale_after=None)
    if isinstance(source, CollectorRegistry):
        registry = source
    else:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(source)
    server = WSGIServer((host, port), make_wsgi_app(registry), log=None, error_log=log)
    try:
        server.start()
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
    return Exporter(server)


# -- measuring an interval (a capacity hold, a report window) ------------------------------

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
    deltas = _counter_deltas(before, after, f"{_P}authorizations_total")
    return [
        {"message": message, "status": status, "count": int(count)}
        for (status, message), count in sorted(deltas.items(), key=lambda item: item[0][::-1])
        if count > 0
    ]


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
    :class:`~loadgen.capacity.StepMeasurement` (``chargers``: the target then).

    Percentiles are computed from the histogram buckets the way Prometheus's
    ``histogram_quantile`` does, so the report and the dashboards agree. On the master the
    workers' snapshots arrive every few seconds: an interval's edges are that fuzzy.
    ``cpu``: the load generator's CPU over the interval if the caller tracked it, else the
    busiest process's latest reading.
    """
    name = f"{_P}call_duration_seconds"
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
    for (_action, code), value in _counter_deltas(before, after, f"{_P}call_errors_total").items():
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

    connects = f"{_P}connect_duration_seconds"
    attempts = failures = 0
    earlier = before.get(connects, {})
    for (outcome,), value in after.get(connects, {}).items():
        n = int(_delta_histogram(earlier.get((outcome,)), value)[-1])
        attempts += n
        if outcome != "ok":
            failures += n
    unexpected = sum(
        value
        for (reason,), value in _counter_deltas(before, after, f"{_P}disconnects_total").items()
        if reason != links.CLOSED_LOCALLY
    )
    messages = sum(_counter_deltas(before, after, f"{_P}messages_total").values())

    lag_name = f"{_P}schedule_lag_seconds"
    lag_bounds = _bounds(lag_name)
    worst_lag: float | None = None
    earlier = before.get(lag_name, {})
    for key, value in after.get(lag_name, {}).items():
        counts = _delta_histogram(earlier.get(key), value)
        p99 = bucket_percentile(list(zip(lag_bounds, counts, strict=True)), 99)
        if p99 is not None:
            worst_lag = max(worst_lag or 0.0, p99 * 1000)
    if cpu is None:
        readings = after.get(f"{_P}worker_cpu_ratio", {}).values()
        cpu = max(readings) if readings else None
    connected = sum(after.get(f"{_P}chargers_connected", {}).values())
    booted = sum(after.get(f"{_P}chargers_booted", {}).values())
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
