"""The stub's own Prometheus metrics, served on ``GET /metrics`` of its HTTP API.

A registry per stub (not the process-wide default) so that tests can run several stubs in
one process. Names start with ``csms_stub_``; the load generator's are ``ocpp_loadgen_``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
_DB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "csms_stub_messages",
            "OCPP messages received, by action and outcome",
            ["version", "action", "outcome"],
            registry=r,
        )
        self.handler_seconds = Histogram(
            "csms_stub_handler_duration_seconds",
            "Time from a CALL's arrival to its reply being queued",
            ["action"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.call_errors = Counter(
            "csms_stub_call_errors",
            "CALLERRORs the stub sent, by error code",
            ["error_code"],
            registry=r,
        )
        self.protocol_errors = Counter(
            "csms_stub_protocol_errors",
            "Frames that were not valid OCPP-J or broke the connection, by kind",
            ["kind"],
            registry=r,
        )
        self.connections = Counter(
            "csms_stub_connections",
            "WebSocket connection attempts, by outcome",
            ["outcome"],
            registry=r,
        )
        self.chargers_connected = Gauge(
            "csms_stub_chargers_connected", "Chargers with an open OCPP connection", registry=r
        )
        self.reply_delay_seconds = Gauge(
            "csms_stub_reply_delay_seconds",
            "Delay added to every reply by --slow-above / --slow-ms-per-charger",
            registry=r,
        )
        self.boots_queued = Counter(
            "csms_stub_boots_queued",
            "BootNotifications whose reply waited for its turn under --max-boot-rate",
            registry=r,
        )
        self.boot_queue_seconds = Gauge(
            "csms_stub_boot_queue_seconds",
            "How long the latest BootNotification waits for its turn under --max-boot-rate",
            registry=r,
        )
        self.csms_calls = Counter(
            "csms_stub_csms_calls",
            "CALLs the stub sent to chargers, by action and outcome",
            ["action", "outcome"],
            registry=r,
        )
        self.db_write_seconds = Histogram(
            "csms_stub_db_write_duration_seconds",
            "Time to write one batch to the database",
            buckets=_DB_BUCKETS,
            registry=r,
        )
        self.db_rows = Counter("csms_stub_db_rows_written", "Rows written", registry=r)
        self.db_write_failures = Counter(
            "csms_stub_db_write_failures",
            "Rows the database refused and that were left out of their batch, by table",
            ["table"],
            registry=r,
        )
        self.authorizations = Counter(
            "csms_stub_authorizations",
            "The stub's verdicts on idTokens (Authorize, transaction messages), by status: "
            "Accepted, Blocked, Invalid, Malformed (--strict-id-tokens: CALLERROR)",
            ["status"],
            registry=r,
        )
        self.db_queue_depth = Gauge(
            "csms_stub_db_queue_depth", "Rows waiting for the batch writer", registry=r
        )

    def batch_written(self, rows: int, seconds: float) -> None:
        self.db_write_seconds.observe(seconds)
        self.db_rows.inc(rows)

    def write_failed(self, table: str) -> None:
        self.db_write_failures.labels(table).inc()

    def authorized(self, status: str) -> None:
        self.authorizations.labels(status).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
