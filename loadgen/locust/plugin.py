"""Locust event hooks: options, the run's shared context, the run id, ledger, leases.

Registered when :mod:`loadgen.locust` is imported (a locustfile imports it). Everything a
process's users share lives in one :class:`RunContext` on ``environment.ocpp``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadgen import coordination, limits, logutil, recovery
from loadgen.capacity.search import CapacityResult
from loadgen.locust import stopping, verdicts, webui
from loadgen.locust.recorder import RunRecorder, report_settings
from loadgen.locust.settings import Settings, SettingsError, add_arguments, settings_from_options
from loadgen.locust.shape import (
    LOCAL_MIN_SETTLE_S,
    LOCAL_STALL_S,
    MIN_SETTLE_S,
    STALL_S,
    CapacityShape,
)
from loadgen.logutil import RateLimitedLog
from loadgen.metrics.collectors import Metrics
from loadgen.metrics.exporter import serve
from loadgen.metrics.labels import known_actions, known_statuses
from loadgen.metrics.merge import MergedCollector
from loadgen.metrics.observer import MetricsObserver
from loadgen.metrics.probe import LagProbe
from loadgen.pacing import BATCH_STARTS_KEPT, CollectorFreeze, StartPacer, starts_since
from loadgen.physics import ScaledClock
from loadgen.report import write_reports

log = logging.getLogger(__name__)
#: repeated failures (renewals, refused users) as one line per interval with a count
quiet = RateLimitedLog(log)

RUN_MESSAGE = "ocpp_run_id"
#: worker -> master: this worker has no run id (it came before Locust fired ``init``)
RUN_REQUEST = "ocpp_run_id_request"
#: master -> workers: a capacity step began; chargers in reconnect back-off retry now
RETRY_MESSAGE = "ocpp_retry_now"
#: master -> workers: --blackout-at came; every charger drops its connection for N s
BLACKOUT_MESSAGE = "ocpp_blackout"

# The label vocabularies (the ocpp package's enums: ~0.5 s of imports, seconds on a loaded
# machine), loaded with this module: lazily, they stalled the hub ~200 ms at the first
# request; in ``init``, a worker the master had acknowledged sent no heartbeat meanwhile,
# and the master counted it missing and stopped the test. Locust imports the locustfile
# before a worker connects (and before ``--processes`` forks).
known_actions()
known_statuses()


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
    #: the run-wide metrics (master: every worker's merged; single process: its own)
    merged: MergedCollector | None = None
    shape: CapacityShape | None = None
    recorder: RunRecorder | None = None
    #: the heartbeat interval the CSMS gave, as each worker last reported it
    worker_heartbeats: dict[str, float] = field(default_factory=dict)
    #: this process's soft open-file limit (raised to the hard one at start)
    open_files: int = field(default_factory=limits.open_file_limit)
    #: users admitted under that limit and not stopped yet (leased, or still leasing)
    admitted: int = 0
    #: per-second counts of lost connections and boots (the master: every worker's)
    recovery: recovery.RecoveryCounter = field(default_factory=recovery.RecoveryCounter)
    #: wall-clock start of the current test (recovery events are said relative to it)
    started: float = field(default_factory=time.time)
    #: spreads each batch of users Locust starts at once (pacing.StartPacer)
    pacer: StartPacer = field(default_factory=lambda: StartPacer(time.monotonic))
    #: keeps the collector off the stations while users start (pacing.CollectorFreeze)
    collector: CollectorFreeze = field(default_factory=lambda: CollectorFreeze(time.monotonic))
    #: failed connects of stations that connected afterwards (not failures for the exit code)
    connect_retries: verdicts.ConnectRetries = field(default_factory=verdicts.ConnectRetries)
    #: on a master: when its workers' recent batches of users came (wall clock)
    worker_batch_starts: deque[float] = field(
        default_factory=lambda: deque(maxlen=4 * BATCH_STARTS_KEPT)
    )

    def batch_starts_since(self, since: float) -> list[float]:
        """When the batches of users at or after ``since`` came, in order: this process's,
        or on a master its workers' (as they last reported)."""
        starts = self.worker_batch_starts or self.pacer.batch_starts
        return starts_since(starts, since)

    def admit(self) -> str | None:
        """None (and one more user admitted) if one more charger fits under the open-file
        limit; else the line that says why not. ``dismiss`` when the user stops.

        A worker learns its share only when the master dispatches users, and a web-UI run
        its user count only when it starts: past the limit each further user is refused
        (counted) instead of a socket failing with EMFILE somewhere in Locust.
        """
        if limits.files_needed(self.admitted + 1) <= self.open_files:
            self.admitted += 1
            return None
        runner = self.environment.runner
        target = max(getattr(runner, "target_user_count", 0) or 0, self.admitted + 1)
        return limits.refusal(target, self.open_files, who=f"worker {self.worker_id}")

    def dismiss(self) -> None:
        self.admitted -= 1

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
        if self.metrics is not None:
            self.metrics.run_id = run_id
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
                quiet.warning("renew", "cannot renew leases", str(exc))
                if self.metrics is not None:
                    self.metrics.coordination_failure("renew")
                continue
            for charger_id in lost.chargers:
                # Another worker may hold it now: this station must go, at once.
                user = self.users.pop(charger_id, None)
                quiet.error(
                    "lease lost",
                    "lost a charger's lease (worker stalled longer than the lease TTL?)",
                    f"stopping the station of {charger_id}",
                )
                if user is not None:
                    user.lease_lost()

    def retry_now(self) -> None:
        """Every station of this process waiting out a reconnect back-off tries now."""
        for user in list(self.users.values()):
            runner = getattr(user, "runner", None)
            if runner is not None and (runner.link is None or not runner.link.connected):
                runner.retry_now()

    def blackout(self, seconds: float) -> None:
        """Every station of this process drops its connection and stays off ``seconds``."""
        users = [user for user in list(self.users.values()) if user.runner is not None]
        log.warning("blackout: %d chargers drop their connection for %g s", len(users), seconds)
        for user in users:
            user.runner.blackout(seconds)

    def count_recovery(self, user: Any, kind: str, detail: dict[str, Any]) -> None:
        """A station's boot or lost connection, counted for the recovery figures."""
        now = time.time()
        if kind == "boot":
            if detail.get("status") == "Accepted":
                again = getattr(user, "booted_before", False)
                self.recovery.count(recovery.REBOOTS if again else recovery.FIRST_BOOTS, now)
                user.booted_before = True
            elif detail.get("status") == "Rejected":
                self.recovery.count(recovery.BOOT_FAILURES, now)
        elif kind == "booted_lost":
            lost = recovery.STOPPED if detail.get("stopping") else recovery.LOST
            self.recovery.count(lost, now)

    def recoveries(self) -> list[recovery.Recovery]:
        return recovery.find_recoveries(self.recovery.series, self.started)

    def heartbeat_interval(self) -> float:
        """Simulated seconds between heartbeats: the override, else the longest the CSMS
        gave this process's stations (or, on the master, any worker's)."""
        if self.settings.heartbeat_interval:
            return self.settings.heartbeat_interval
        local = max(
            (
                user.runner.station.heartbeat_interval
                for user in list(self.users.values())
                if getattr(user, "runner", None) is not None
            ),
            default=0.0,
        )
        return max(local, *self.worker_heartbeats.values(), 0.0)

    def cycle_seconds(self) -> float:
        """Real seconds of one full heartbeat / meter cycle: a capacity hold is never
        shorter, so every charger has sent what it sends periodically."""
        s = self.settings
        meter = s.meter_interval if set(s.profile.weights) - {"idle"} else 0.0
        return max(self.heartbeat_interval(), meter) / s.time_scale

    # -- the link's CallObserver, as Locust statistics -----------------------------------

    def call_done(self, action: str, outcome: str, seconds: float, error_code: str | None) -> None:
        exception = None
        if outcome != "result":
            if action == "BootNotification":
                self.recovery.count(recovery.BOOT_FAILURES, time.time())
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
        if exception is not None:
            self.recovery.count(recovery.CONNECT_FAILURES, time.time())
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
    # Locust's --run-time timer (gevent.spawn_later, next) counts from the event loop's
    # cached clock, last read before the start-up's imports and set-up blocked: seconds on
    # a busy machine, by which a run came out shorter (a 5 s run ended at once).
    gevent.get_hub().loop.update_now()


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
    runner = environment.runner
    # A worker says it is ready before ``init``, and what follows yields (Redis): the
    # master's run id can arrive meanwhile, and Locust drops a message nobody listens to.
    early = _EarlyMessages(runner) if isinstance(runner, WorkerRunner) else None
    before, after = limits.raise_open_file_limit()
    if after > before:
        log.debug("open-file limit raised from %d to %d", before, after)
    settings = settings_from_options(options)
    _check_open_files(settings, options, after)
    distributed = isinstance(runner, (MasterRunner, WorkerRunner))
    if distributed and not settings.redis_url:
        raise SettingsError(
            "--redis-url is required when Locust runs distributed "
            "(--master / --worker / --processes): workers must share "
            "charger ids and transaction ids"
        )
    if settings.reconcile_db_url and not isinstance(runner, WorkerRunner):
        _check_reconcile_source(settings)
    worker_id = getattr(runner, "client_id", None) or "local"
    context = RunContext(settings, environment, ScaledClock(settings.time_scale), worker_id)
    context.open_files = after
    environment.ocpp = context  # type: ignore[attr-defined]
    _setup_metrics(context, runner)
    _setup_recovery(context, environment)
    # The verdict takes the run's figures as the stop begins, before the wind-down's (both
    # listen to test_stopping, in this order), so the stations' goodbyes are not judged.
    verdicts.install(context, environment, _final_words.append)
    stopping.install(environment, context.users)  # the summary counts until stations stop
    context.collector.hold()  # what is loaded by now lives as long as the process
    if not isinstance(runner, WorkerRunner):
        _setup_capacity_and_reports(context, environment, options)
        if getattr(environment, "web_ui", None) is not None:  # our tabs in Locust's UI
            webui.install(environment.web_ui, context, environment)
    if early is not None:
        early.deliver(RUN_MESSAGE, context.use_run)
        early.deliver(RETRY_MESSAGE, lambda _: context.retry_now())
        if context.coordinator is None:
            # Locust handles the master's messages from the moment it is acknowledged, not
            # from ``init``: a run id that came before then was dropped. Ask again.
            runner.send_message(RUN_REQUEST)
    elif isinstance(runner, MasterRunner):

        @environment.events.test_start.add_listener
        def _share_run(environment: Environment, **_: Any) -> None:
            run_id = coordination.new_run_id()
            context.use_run(run_id)  # the master counts too (reports, reconciliation)
            runner.send_message(RUN_MESSAGE, run_id)

        def _answer(msg: Any, **_: Any) -> None:
            if context.coordinator is not None:  # else test_start sends it to every worker
                runner.send_message(RUN_MESSAGE, context.coordinator.run_id, msg.node_id)

        runner.register_message(RUN_REQUEST, _answer)
    else:
        context.use_run(coordination.new_run_id())
    if settings.redis_url and not isinstance(runner, WorkerRunner):
        log.info(
            "reconcile afterwards with: python -m loadgen.reconcile --redis-url %s "
            "--run <run id above> --csms-api http://<csms>:8080",
            settings.redis_url,
        )
    return context


class _EarlyMessages:
    """A worker's listeners for the master's messages, registered before anything yields;
    what arrives before its handler is known is kept and handed over then."""

    def __init__(self, runner: Any) -> None:
        self._handlers: dict[str, Callable[[Any], None]] = {}
        self._kept: list[tuple[str, Any]] = []
        for name in (RUN_MESSAGE, RETRY_MESSAGE):
            # Locust calls message listeners as ``listener(environment=..., msg=...)``.
            runner.register_message(name, lambda msg, name=name, **_: self._receive(name, msg))

    def _receive(self, name: str, msg: Any) -> None:
        handler = self._handlers.get(name)
        if handler is None:
            self._kept.append((name, msg.data))
        else:
            handler(msg.data)

    def deliver(self, name: str, handler: Callable[[Any], None]) -> None:
        self._handlers[name] = handler
        kept, self._kept = self._kept, []
        for kept_name, data in kept:
            if kept_name == name:
                handler(data)
            else:
                self._kept.append((kept_name, data))


def _check_open_files(settings: Settings, options: Any, limit: int) -> None:
    """Refuse at start a ``--users`` count this process could not hold open.

    A single process checks all of its users; with ``--processes N`` the master and each
    worker check one worker's share (forked, they share the limit). A worker started on its
    own does not know its share until users are dispatched: ``RunContext.admit`` refuses
    the users past its limit then. A capacity search grows until something gives; there the
    limit is also only enforced per user.
    """
    users = getattr(options, "num_users", None)
    if not users or settings.capacity is not None:
        return
    processes = getattr(options, "processes", None) or 0
    if processes <= 0 and (getattr(options, "master", False) or getattr(options, "worker", False)):
        return
    line = limits.refusal(users, limit, max(1, processes))
    if line is not None:
        raise SettingsError(line)


def _setup_metrics(context: RunContext, runner: Any) -> None:
    """Collectors in every process; workers ship snapshots in their reports and the
    master serves the merge, so one scrape target covers every worker."""
    worker = "master" if isinstance(runner, MasterRunner) else context.worker_id
    metrics = Metrics(worker=worker)
    context.metrics = metrics
    context.metrics_observer = MetricsObserver(metrics, context.settings.fleet.sites)
    LagProbe(metrics).start()
    events = context.environment.events
    port = context.settings.prometheus_port
    if isinstance(runner, WorkerRunner):

        def report(client_id: str, data: dict[str, Any], **_: Any) -> None:
            data["ocpp_metrics"] = metrics.snapshot()
            data["ocpp_heartbeat_interval"] = context.heartbeat_interval()
            starts = context.pacer.batch_starts
            data["ocpp_batch_starts"] = list(starts)  # the master keeps them: sent once
            starts.clear()

        events.report_to_master.add_listener(report)
        return
    if isinstance(runner, MasterRunner):
        merged = MergedCollector(metrics)

        def on_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
            merged.update(client_id, data.get("ocpp_metrics"))
            merged.retain(runner.clients.keys())  # a worker that left stops counting
            interval = data.get("ocpp_heartbeat_interval")
            if isinstance(interval, int | float):
                context.worker_heartbeats[client_id] = float(interval)
            starts = data.get("ocpp_batch_starts")
            if isinstance(starts, list):
                context.worker_batch_starts.extend(
                    at for at in starts if isinstance(at, int | float) and math.isfinite(at)
                )

        events.worker_report.add_listener(on_report)
    else:
        merged = MergedCollector(metrics, stale_after=None)
    context.merged = merged

    def follow_users() -> None:
        if context.shape is None and runner is not None:  # the shape sets its own
            metrics.set_target(getattr(runner, "target_user_count", 0) or 0)

    metrics.add_refresher(follow_users)
    try:
        exporter = serve(merged, port)
    except OSError as exc:
        raise SettingsError(f"--prometheus-port {port}: {exc.strerror or exc}") from None
    if exporter is not None:
        log.info("Prometheus metrics on %s", exporter.url)


def _setup_recovery(context: RunContext, environment: Environment) -> None:
    """Recovery figures (workers send their per-second counts, the master merges them and
    says what it found after Locust's summary) and ``--blackout-at`` (the master or the
    single process keeps the time, so every worker drops its chargers at once)."""
    runner, events = environment.runner, environment.events
    if isinstance(runner, WorkerRunner):

        def report(client_id: str, data: dict[str, Any], **_: Any) -> None:
            data["ocpp_recovery"] = context.recovery.drain()

        events.report_to_master.add_listener(report)
        runner.register_message(
            BLACKOUT_MESSAGE, lambda msg, **_: context.blackout(float(msg.data))
        )
        return
    if isinstance(runner, MasterRunner):

        def on_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
            context.recovery.merge(data.get("ocpp_recovery"))

        events.worker_report.add_listener(on_report)
    blackout = context.settings.blackout
    timer: list[gevent.Greenlet] = []

    def black_out(duration: float) -> None:
        if isinstance(runner, MasterRunner):  # its workers have the chargers
            runner.send_message(BLACKOUT_MESSAGE, duration)
        else:
            context.blackout(duration)

    @events.test_start.add_listener
    def _start(**_: Any) -> None:
        context.started = time.time()
        context.recovery = recovery.RecoveryCounter()
        if blackout is not None:
            timer.append(gevent.spawn_later(blackout[0], black_out, blackout[1]))

    @events.test_stop.add_listener
    def _stop(**_: Any) -> None:
        while timer:
            timer.pop().kill(block=False)
        _final_words.extend(event.summary() for event in context.recoveries())


def _setup_capacity_and_reports(
    context: RunContext, environment: Environment, options: Any
) -> None:
    """The capacity shape (``--capacity-search``) and the run's recorder (reports)."""
    settings, metrics, merged = context.settings, context.metrics, context.merged
    assert metrics is not None and merged is not None
    config = settings.capacity

    def latencies() -> dict[str, Any]:
        """Locust's response-time counts per OCPP action (the master's: every worker's)."""
        return verdicts.ocpp_latencies(environment)

    def latest(name: str, method: str) -> Callable[[], float | None]:
        """When the latest of these requests ended (wall clock; a master's: the latest of
        every worker's)."""

        def at() -> float | None:
            entry = environment.stats.entries.get((name, method))
            return None if entry is None else entry.last_request_timestamp

        return at

    distributed = isinstance(environment.runner, MasterRunner)
    events = environment.events
    if config is not None:
        if environment.shape_class is not None:
            raise SettingsError(
                f"--capacity-search: the locustfile has a load shape of its own "
                f"({type(environment.shape_class).__name__}); use one or the other"
            )

        def done(result: CapacityResult) -> None:
            metrics.set_capacity(result.max_chargers, result.limited_by_generator)
            metrics.set_connect_rate(result.max_connect_rate)
            _final_words.append(result.summary())
            _final_words.append(result.connect_rate_line())
            # Refused connections and failed CALLs are what a search provokes: the exit
            # code says whether there is an answer (and, as always, no exceptions).
            runner = environment.runner
            found = (not config.searches_chargers or result.max_chargers is not None) and (
                not config.searches_connect_rate or result.max_connect_rate is not None
            )
            environment.process_exit_code = 0 if found and not runner.exceptions else 1

        def retry_now(target: int) -> None:
            context.retry_now()
            if isinstance(environment.runner, MasterRunner):
                environment.runner.send_message(RETRY_MESSAGE, target)

        shape = CapacityShape(
            config,
            merged=merged.merged,
            set_target=metrics.set_target,
            spawn_rate=settings.capacity_spawn_rate,
            spawn_rate_pinned=settings.capacity_spawn_rate_pinned,
            connect_timeout=settings.connect_timeout,
            reconnect_cap=settings.reconnect_cap,
            cycle=context.cycle_seconds,
            linger=settings.capacity_linger,
            on_target=retry_now,
            # a single process sees its own metrics at once; a master waits for reports
            min_settle=MIN_SETTLE_S if distributed else LOCAL_MIN_SETTLE_S,
            stall=STALL_S if distributed else LOCAL_STALL_S,
            latencies=latencies,
            last_boot_at=latest("BootNotification", "OCPP"),
            last_connect_at=latest("connect", "WebSocket"),
            batch_starts_since=context.batch_starts_since,
            run_time=getattr(options, "run_time", None) or None,
            on_done=done,
        )
        shape.runner = environment.runner
        environment.shape_class = shape
        context.shape = shape

        @events.test_stop.add_listener
        def _unfinished(**_: Any) -> None:
            if not shape.done:
                so_far = shape.result.max_chargers
                _final_words.append(
                    "capacity: no answer: the run ended before the search did"
                    + (f" ({so_far} chargers held so far)" if so_far is not None else "")
                )
                environment.process_exit_code = 1

    if settings.report_dir is None:
        return
    recorder = RunRecorder(merged.merged, lambda: metrics.target, latencies=latencies)
    context.recorder = recorder

    @events.test_start.add_listener
    def _record(**_: Any) -> None:
        recorder.start()

    @events.test_stop.add_listener
    def _report(**_: Any) -> None:
        recorder.stop_sampling()
        shape = context.shape
        try:
            recorder.sample()
            report = recorder.build(
                run=_run_facts(context, environment),
                settings=report_settings(options),
                steps=list(shape.steps) if shape is not None else [],
                capacity=shape.result if shape is not None else None,
                capacity_config=config,
                peak=int(merged.merged().get(_PEAK, {}).get((), 0)),
                recovery=[event.to_json() for event in context.recoveries()],
            )
            json_path, html_path = write_reports(report, settings.report_dir)
        except Exception as exc:  # the run's figures are still in Locust's and Prometheus's
            log.exception("writing the report failed")
            _final_words.append(f"loadgen: could not write the report: {exc}")
            return
        log.info("reports written: %s and %s", html_path, json_path)
        _final_words.append(f"reports: {html_path}\n         {json_path}")


_PEAK = "ocpp_loadgen_chargers_connected_peak"


def _run_facts(context: RunContext, environment: Environment) -> dict[str, Any]:
    import locust

    import loadgen

    runner = environment.runner
    s = context.settings
    return {
        "run_id": context.coordinator.run_id if context.coordinator else "",
        "host": s.host,  # credentials in it are redacted by report.build_report
        "ocpp_version": ",".join(v.name for v in s.versions or (s.version,)),
        "profile": getattr(environment.parsed_options, "ocpp_profile", ""),
        "workers": len(runner.clients) if isinstance(runner, MasterRunner) else 1,
        "locust_version": locust.__version__,
        "loadgen_version": getattr(loadgen, "__version__", ""),
        "exit_code": None,
    }


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    context: RunContext | None = getattr(environment, "ocpp", None)
    logutil.flush_all()  # what was counted since the last line of each kind
    if context is None or context.coordinator is None:
        return
    context.coordinator.close()  # releases leases, flushes the ledger
    settings = context.settings
    reconciles = settings.csms_api or settings.reconcile_db_url
    if reconciles and not isinstance(environment.runner, WorkerRunner):
        report = reconcile_run(context)
        if report is not None and report.lost:
            environment.process_exit_code = 1


def _check_reconcile_source(settings: Settings) -> None:
    """The CSMS's database is read once for no charger: an unreachable database, a wrong
    table or column name stops the run at its start, not after it."""
    from loadgen import reconcile

    csms = reconcile.records(
        settings.csms_api, settings.reconcile_db_url, mapping=settings.reconcile_mapping
    )
    try:
        csms.check()  # type: ignore[attr-defined]
    except reconcile.SourceUnavailable as exc:
        raise SettingsError(f"--reconcile-db-url: {exc}") from None


def reconcile_run(context: RunContext, settle_s: float = 10.0) -> Any:
    """Compare this run's ledger with what the CSMS stored; print and return the report."""
    from loadgen import reconcile

    coordinator, settings = context.coordinator, context.settings
    assert coordinator is not None
    csms = reconcile.records(
        settings.csms_api, settings.reconcile_db_url, mapping=settings.reconcile_mapping
    )
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
        # A CSMS's database may lag its answers (batched writes): read until nothing is
        # lost, or for settle_s. csms_stub's API answers only after its writes are flushed.
        deadline = time.monotonic() + settle_s
        while settings.reconcile_db_url and report.lost and time.monotonic() < deadline:
            gevent.sleep(1.0)
            report = reconcile.compare(coordinator.run_id, entries, csms, retried_appends=retried)
    except reconcile.SourceUnavailable as exc:
        sys.stderr.write(f"loadgen: cannot reconcile: {exc}\n")
        return None
    text = "\n== reconciliation: the run's ledger against the CSMS ==\n" + report.render()
    if not any(entry.kind == "end" for entry in entries):
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
