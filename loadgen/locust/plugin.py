"""Locust event hooks: options, the run's shared context, the run id, ledger, leases.

Registered when :mod:`loadgen.locust` is imported (a locustfile imports it). Everything a
process's users share lives in one :class:`RunContext` on ``environment.ocpp``.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadgen import coordination
from loadgen.locust.settings import Settings, SettingsError, add_arguments, settings_from_options
from loadgen.metrics import (
    LagProbe,
    MergedCollector,
    Metrics,
    MetricsObserver,
    known_actions,
    known_statuses,
    serve,
)
from loadgen.physics import ScaledClock

log = logging.getLogger(__name__)

RUN_MESSAGE = "ocpp_run_id"


class OcppRequestFailure(Exception):
    """What Locust's statistics show for a failed CALL: outcome and error code only, so
    the failure table stays short (one row per action and kind)."""


@dataclass
class RunContext:
    settings: Settings
    environment: Environment
    clock: ScaledClock
    worker_id: str
    coordinator: coordination.Coordinator | None = None
    ready: gevent.event.Event = field(default_factory=gevent.event.Event)
    renewer: gevent.Greenlet | None = None
    #: this process's live users by charger id
    users: dict[str, Any] = field(default_factory=dict)
    metrics: Metrics | None = None
    metrics_observer: MetricsObserver | None = None

    def use_run(self, run_id: str) -> None:
        """Make (or re-make) the coordinator for ``run_id``; users wait until it exists."""
        if self.coordinator is not None and self.coordinator.run_id == run_id:
            return
        if self.coordinator is not None:
            self.coordinator.close()
        s = self.settings
        self.coordinator = coordination.create(
            list(s.fleet.chargers),
            s.tokens,
            redis_url=s.redis_url,
            run_id=run_id,
            lease_ttl=s.lease_ttl,
        )
        self.ready.set()
        if self.renewer is None:
            self.renewer = gevent.spawn(self._renew_leases)
        log.info("OCPP run %s (%s coordination)", run_id, "Redis" if s.redis_url else "in-process")

    def _renew_leases(self) -> None:
        while True:
            coordinator = self.coordinator
            ttl = getattr(coordinator, "lease_ttl", 30.0)
            gevent.sleep(ttl / 3)
            if coordinator is None:
                continue
            try:
                lost = coordinator.renew_all()
            except coordination.CoordinatorUnavailable as exc:
                log.warning("cannot renew leases: %s", exc)
                if self.metrics is not None:
                    self.metrics.coordination_failure("renew")
                continue
            for charger_id in lost.chargers:
                # Another worker may hold it now: this station must go, at once.
                user = self.users.pop(charger_id, None)
                log.error(
                    "lost the lease of %s (worker stalled longer than the lease "
                    "TTL?); stopping its station",
                    charger_id,
                )
                if user is not None:
                    user.lease_lost()

    # -- the link's CallObserver, as Locust statistics -----------------------------------

    def call_done(self, action: str, outcome: str, seconds: float, error_code: str | None) -> None:
        exception = None
        if outcome != "result":
            exception = OcppRequestFailure(f"{outcome} {error_code}" if error_code else outcome)
        if self.metrics_observer is not None:
            self.metrics_observer.call_done(action, outcome, seconds, error_code)
        self.environment.events.request.fire(
            request_type="OCPP",
            name=action,
            response_time=seconds * 1000,
            response_length=0,
            exception=exception,
            context={},
        )

    def message(self, direction: str, kind: str) -> None:
        if self.metrics_observer is not None:
            self.metrics_observer.message(direction, kind)

    def connect_done(self, outcome: str, seconds: float) -> None:
        if self.metrics_observer is not None:
            self.metrics_observer.connect_done(outcome, seconds)
        exception = None if outcome == "ok" else OcppRequestFailure(outcome)
        self.environment.events.request.fire(
            request_type="WebSocket",
            name="connect",
            response_time=seconds * 1000,
            response_length=0,
            exception=exception,
            context={},
        )

    def disconnected(self, reason: str) -> None:
        if self.metrics_observer is not None:
            self.metrics_observer.disconnected(reason)

    def protocol_error(self, kind: str) -> None:
        if self.metrics_observer is not None:
            self.metrics_observer.protocol_error(kind)
        log.debug("protocol error from the CSMS: %s", kind)


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    add_arguments(parser)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return  # an Environment made by hand (tests) calls setup() itself
    try:
        setup(environment, options)
    except SettingsError as exc:
        sys.stderr.write(f"loadgen: {exc}\n")
        _let_forked_workers_connect(environment, options)
        sys.exit(2)


def _let_forked_workers_connect(
    environment: Environment, options: Any, wait_s: float = 10.0
) -> None:
    """With ``--processes`` Locust forks the workers before ``init``; each stops at the same
    check once it has connected to this master. A master that exits before they connected
    leaves them retrying for minutes (and Locust does not kill them): wait for them first."""
    runner = environment.runner
    if not isinstance(runner, MasterRunner) or not getattr(options, "processes", None):
        return
    deadline = time.monotonic() + wait_s
    while len(runner.clients) < options.expect_workers and time.monotonic() < deadline:
        gevent.sleep(0.05)
    gevent.sleep(0.2)  # the last worker's acknowledgement is on its way


def setup(environment: Environment, options: Any) -> RunContext:
    """Check the options and attach the run's context to ``environment.ocpp``."""
    settings = settings_from_options(options)
    runner = environment.runner
    distributed = isinstance(runner, (MasterRunner, WorkerRunner))
    if distributed and not settings.redis_url:
        raise SettingsError(
            "--redis-url is required when Locust runs distributed "
            "(--master / --worker / --processes): workers must share "
            "charger ids and transaction ids"
        )
    worker_id = getattr(runner, "client_id", None) or "local"
    context = RunContext(settings, environment, ScaledClock(settings.time_scale), worker_id)
    environment.ocpp = context  # type: ignore[attr-defined]
    _setup_metrics(context, runner)
    if isinstance(runner, WorkerRunner):
        # Locust calls message listeners as ``listener(environment=..., msg=...)``.
        runner.register_message(RUN_MESSAGE, lambda msg, **_: context.use_run(msg.data))
    elif isinstance(runner, MasterRunner):

        @environment.events.test_start.add_listener
        def _share_run(environment: Environment, **_: Any) -> None:
            run_id = coordination.new_run_id()
            context.use_run(run_id)  # the master counts too (reports, reconciliation)
            runner.send_message(RUN_MESSAGE, run_id)
    else:
        context.use_run(coordination.new_run_id())
    if settings.redis_url and not isinstance(runner, WorkerRunner):
        log.info(
            "reconcile afterwards with: python -m loadgen.reconcile --redis-url %s "
            "--run <run id above> --csms-api http://<csms>:8080",
            settings.redis_url,
        )
    return context


def _setup_metrics(context: RunContext, runner: Any) -> None:
    """Collectors in every process; workers ship snapshots in their reports and the
    master serves the merge, so one scrape target covers every worker."""
    worker = "master" if isinstance(runner, MasterRunner) else context.worker_id
    metrics = Metrics(worker=worker)
    # Load the label vocabularies (the ocpp package's enums) now, not in the middle of the
    # ramp: done lazily it stalled the hub ~200 ms at the first request.
    known_actions()
    known_statuses()
    context.metrics = metrics
    context.metrics_observer = MetricsObserver(metrics, context.settings.fleet.sites)
    LagProbe(metrics).start()
    events = context.environment.events
    port = context.settings.prometheus_port
    if isinstance(runner, WorkerRunner):
        events.report_to_master.add_listener(
            lambda client_id, data, **_: data.__setitem__("ocpp_metrics", metrics.snapshot())
        )
        return
    if isinstance(runner, MasterRunner):
        merged = MergedCollector(metrics)

        def on_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
            merged.update(client_id, data.get("ocpp_metrics"))
            merged.retain(runner.clients.keys())  # a worker that left stops counting

        events.worker_report.add_listener(on_report)
        source: Any = merged
    else:
        source = metrics
    try:
        exporter = serve(source, port)
    except OSError as exc:
        raise SettingsError(f"--prometheus-port {port}: {exc.strerror or exc}") from None
    if exporter is not None:
        log.info("Prometheus metrics on %s", exporter.url)


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    context: RunContext | None = getattr(environment, "ocpp", None)
    if context is None or context.coordinator is None:
        return
    context.coordinator.close()  # releases leases, flushes the ledger
    if context.settings.csms_api and not isinstance(environment.runner, WorkerRunner):
        report = reconcile_run(context)
        if report is not None and report.lost:
            environment.process_exit_code = 1


def reconcile_run(context: RunContext, settle_s: float = 10.0) -> Any:
    """Compare this run's ledger with what the CSMS stored; print and return the report."""
    from loadgen import reconcile

    coordinator = context.coordinator
    assert coordinator is not None and context.settings.csms_api is not None
    csms = reconcile.StubApiRecords(context.settings.csms_api)
    try:
        if isinstance(coordinator, coordination.InProcessCoordinator):
            entries, retried = coordinator.ledger(), 0
        else:
            # Workers flush their ledgers as they quit: wait until the stream stops growing.
            source = reconcile.LedgerSource(context.settings.redis_url or "", coordinator.run_id)
            entries, deadline = source.entries(), time.monotonic() + settle_s
            while time.monotonic() < deadline:
                gevent.sleep(1.0)
                again = source.entries()
                if len(again) == len(entries):
                    break
                entries = again
            retried = source.retried
        report = reconcile.compare(coordinator.run_id, entries, csms, retried_appends=retried)
    except reconcile.SourceUnavailable as exc:
        sys.stderr.write(f"loadgen: cannot reconcile: {exc}\n")
        return None
    text = "\n== reconciliation: the run's ledger against the CSMS ==\n" + report.render()
    if not entries:
        # Nothing to compare is not proof of nothing lost (e.g. workers that never ran).
        text += "\nwarning: the ledger is empty: no transaction ended during this run"
    _final_words.append(text)
    return report


#: printed after Locust's own summary (the ``quit`` event comes after it)
_final_words: list[str] = []


@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    while _final_words:
        print(_final_words.pop(0), flush=True)
