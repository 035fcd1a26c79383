"""``ChargerUser``: one Locust user is one charging station.

Its life is a :class:`UserState` moved by :class:`UserEvent` along :data:`USER_STATES`:
starting (its turn, the run id, a slot in the open-file budget), leasing a charger id,
running the station, then stopping; or without a station when on_start could not get one,
or with its lease lost when another worker may now hold the id.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from enum import Enum
from typing import Any

import gevent
from locust import User, task
from locust.exception import StopUser
from locust.user.task import LOCUST_STATE_RUNNING, LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

from loadgen import coordination
from loadgen.idtokens import IdToken
from loadgen.locust.plugin import RunContext
from loadgen.logutil import RateLimitedLog
from loadgen.runner import Backoff, StationRunner
from loadgen.states import Machine
from loadgen.station import Station, StationConfig

log = logging.getLogger(__name__)
#: a fault fails every user at once: one line per kind and interval, with the count
quiet = RateLimitedLog(log)


def interruptible(user: User, blocking: Callable[[], Any]) -> None:
    """Run ``blocking`` the way Locust's own ``TaskSet.wait()`` sleeps: a stop request kills
    the user at once (running ``on_stop``) instead of waiting for the task to end.
    :class:`StopUser` if a stop was requested before or during it.

    Locust offers this only for its ``wait_time`` sleep, and a station's loop or a lease's
    back-off is no ``wait_time``: this is the one place that uses Locust's private
    ``User._state`` (tests/test_locust_user.py fails if Locust changes what it relies on).
    """
    if user._state == LOCUST_STATE_STOPPING:
        raise StopUser()
    user._state = LOCUST_STATE_WAITING  # User.stop() kills a waiting user's greenlet
    blocking()
    if user._state == LOCUST_STATE_STOPPING:
        raise StopUser()
    user._state = LOCUST_STATE_RUNNING


class UserState(Enum):
    """Where a :class:`ChargerUser` is in its life (``user.state``)."""

    NEW = "new"
    STARTING = "starting"  # on_start: its turn, the run id, a slot in the open-file budget
    LEASING = "leasing"  # asking the fleet for a charger id (retried with back-off)
    RUNNING = "running"  # its station runs
    NO_STATION = "no station"  # on_start got none (a failure counted, or a stop came)
    LEASE_LOST = "lease lost"  # the id was reclaimed: the station dropped, the user going
    STOPPING = "stopping"  # on_stop: ends the transaction, flushes, releases the id
    STOPPED = "stopped"


class UserEvent(Enum):
    """What moves a :class:`UserState`."""

    START = "start"  # on_start
    LEASE = "lease"
    LEASED = "leased"  # a charger id, its station and runner made
    NO_STATION = "no station"
    LOSE_LEASE = "lose lease"
    STOP = "stop"  # on_stop
    STOPPED = "stopped"


_U, _W = UserState, UserEvent
#: which event moves which state where; anything else raises TransitionError. Locust may
#: stop a user at any point of on_start (its on_stop then runs).
USER_STATES: dict[UserState, dict[UserEvent, UserState]] = {
    _U.NEW: {_W.START: _U.STARTING, _W.STOP: _U.STOPPING},
    _U.STARTING: {_W.LEASE: _U.LEASING, _W.NO_STATION: _U.NO_STATION, _W.STOP: _U.STOPPING},
    _U.LEASING: {_W.LEASED: _U.RUNNING, _W.NO_STATION: _U.NO_STATION, _W.STOP: _U.STOPPING},
    _U.RUNNING: {_W.LOSE_LEASE: _U.LEASE_LOST, _W.STOP: _U.STOPPING},
    _U.NO_STATION: {_W.STOP: _U.STOPPING},
    _U.LEASE_LOST: {_W.STOP: _U.STOPPING},
    # the lease lost while on_stop flushes: the flush is abandoned
    _U.STOPPING: {_W.LOSE_LEASE: _U.STOPPING, _W.STOPPED: _U.STOPPED},
    _U.STOPPED: {},
}


class ChargerUser(User):
    """Leases a charger id from the fleet, runs its station for as long as the user lives,
    and on stop ends its transaction, closes the WebSocket and releases the id."""

    #: seconds ``on_stop`` may take to end a transaction and flush the queue
    stop_timeout_s = 10.0
    #: the profile's random draws; one for all users (greenlets never interleave inside a
    #: draw). A ``random.Random`` each cost 2.5 KB per charger and an ``os.urandom`` read
    #: per spawn; assign ``user.rng`` to seed one user.
    rng = random.Random()
    #: a lease that failed for a transient reason (fleet momentarily all leased, e.g.
    #: while Locust re-sends a dead worker's users; Redis unavailable) is tried again
    #: after 1, 2, 4 ... at most 30 s, +-20 %
    lease_backoff = Backoff(initial=1.0, cap=30.0)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.context: RunContext = environment.ocpp
        self.lifecycle: Machine[UserState, UserEvent] = Machine(
            "charger user", USER_STATES, UserState.NEW
        )
        self.charger_id: str | None = None
        #: the station this user runs; kept when a lost lease drops its runner, whose
        #: greenlet may still hand on what the CSMS acknowledged (the run ledger wants it)
        self.station: Station | None = None
        self.runner: StationRunner | None = None
        self.profile: str | None = None
        self.token: str | None = None
        #: counted in the process's open-file budget (RunContext.admit)
        self.admitted = False
        #: a boot Accepted before: the next one is a re-boot (recovery figures)
        self.booted_before = False
        #: Locust makes a second's users at once: when this one's start is due
        self._start_ticket = self.context.pacer.arrive()

    @property
    def state(self) -> UserState:
        return self.lifecycle.state

    def on_start(self) -> None:
        self.lifecycle.fire(UserEvent.START)
        # A user that cannot get an id stops quietly in its task (NO_STATION): StopUser
        # raised here would make Locust log a traceback per user (thousands during a Redis
        # outage).
        if not self._start():
            self.lifecycle.fire(UserEvent.NO_STATION)

    def _start(self) -> bool:
        """Get a charger id and make its station and runner; False if it got none."""
        context = self.context
        wait = context.pacer.delay(self._start_ticket)
        if wait > 0 and not self._wait(wait):
            return False  # stopped before its turn came
        context.collector.hold()
        if not context.ready.wait(30):
            self._failure("lease", "no run id from the master within 30 s")
            return False
        refused = context.admit()
        if refused is not None:  # more users than open files: it would not connect anyway
            self._failure("open files", "open-file limit: no room for this charger", refused)
            return False
        self.admitted = True
        coordinator = context.coordinator
        assert coordinator is not None
        self.lifecycle.fire(UserEvent.LEASE)
        self.charger_id = self._lease(coordinator)
        if self.charger_id is None:
            return False  # a stop request came while it waited
        settings = context.settings
        charger = settings.fleet.chargers[self.charger_id]
        station = Station(
            charger,
            settings.version,
            context.clock,
            StationConfig(
                heartbeat_interval=settings.heartbeat_interval,
                meter_interval=settings.meter_interval,
                offline_replay_rate=settings.offline_replay_rate,
                retry_backoff=settings.retry_backoff,
                reboot_delay=settings.reboot_delay,
                connector_status=settings.connector_status,
            ),
            new_transaction_id=coordinator.next_transaction_id,
            listener=self._on_station_event,
        )
        self.station = station
        password = charger.password or settings.password
        observer = context.metrics_observer
        link_options: dict[str, Any] = {}
        if len(settings.versions) > 1:
            link_options["offer"] = settings.versions  # the CSMS chooses; the runner adapts
        if observer is not None:
            observer.add_station(station)
            # counts the CSMS's CALLs with the status the station answered
            link_options["link_factory"] = observer.link_factory()
        self.runner = StationRunner(
            station,
            settings.host,
            clock=context.clock,
            observer=context,
            on_event=self._on_runner_event,
            call_timeout=settings.call_timeout,
            connect_timeout=settings.connect_timeout,
            basic_auth=(charger.id, password) if password else None,
            ssl_context=settings.ssl_context,
            validate=settings.validate,
            **link_options,
        )
        context.users[self.charger_id] = self
        self.lifecycle.fire(UserEvent.LEASED)
        self.profile = settings.profile.choose(self.rng)
        if self.profile == "sessions":
            self.runner.start()  # its own greenlet: this one sleeps between sessions
        return True

    def _lease(self, coordinator: coordination.Coordinator) -> str | None:
        """A charger id; transient failures are counted and retried with back-off until
        one is leased or the user is asked to stop (None)."""
        attempt = 0
        while True:
            try:
                charger_id = coordinator.lease_charger(self.context.worker_id)
            except coordination.CoordinatorUnavailable as exc:
                self._failure("lease", "coordinator unavailable", str(exc))
            else:
                if charger_id is not None:
                    return charger_id
                self._failure(
                    "lease",
                    "fleet exhausted: every charger id is leased",
                    "fleet exhausted: every charger id is leased (users > chargers, or a "
                    "dead worker's leases not expired yet); retrying",
                )
            attempt += 1
            if not self._wait(self.lease_backoff.delay(attempt, self.rng)):
                return None

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` (real) so that a stop request kills the user at once, as
        Locust's own ``wait()`` does; False if a stop was requested."""
        try:
            interruptible(self, lambda: gevent.sleep(seconds))
        except StopUser:
            return False
        return True

    def lease_lost(self) -> None:
        """The id was reclaimed (this worker stalled past the lease TTL): drop the
        connection without ending anything, since another station may now use the id."""
        if not self.lifecycle.can(UserEvent.LOSE_LEASE):
            log.debug("%s: lease lost when %s: nothing to drop", self.charger_id, self.state)
            return
        self.lifecycle.fire(UserEvent.LOSE_LEASE)
        if self.runner is not None:
            gevent.spawn(self.runner.stop, 0, False)
            self.runner = None
        if self.charger_id is not None and self.context.metrics_observer is not None:
            self.context.metrics_observer.remove_station(self.charger_id)
        self.charger_id = None
        gevent.spawn(self.stop, True)

    @task
    def live(self) -> None:
        """Run the station's profile until Locust stops this user."""
        if self.state is not UserState.RUNNING or self.runner is None:
            raise StopUser()  # no charger id (see on_start); already counted as a failure
        if self.profile == "sessions":
            while True:
                self._one_session()
        # idle and remote: the station heartbeats and answers the CSMS on its own, so its
        # loop runs in this greenlet (a second one would cost ~8.5 KB per charger). Waiting,
        # as in _sleep: a stop request kills the user at once; on_stop resumes the loop.
        interruptible(self, self.runner.run)
        while True:  # the runner gave up (reconnect tries exhausted)
            self._sleep(self.context.settings.time_scale * 3600)

    def _one_session(self) -> None:
        assert self.runner is not None
        context = self.context
        plan = context.settings.session_plan
        self._sleep(plan.next_arrival(self.rng))
        station = self.runner.station
        evse = station.free_evse()
        if evse is None or not station.accepted:
            return  # busy (a remote start?) or not connected: try at the next arrival
        assert self.charger_id is not None
        # its fleet table's tokens, else its site's, else the run's pool
        group = context.settings.fleet.chargers[self.charger_id].token_group
        try:
            self.token = context.coordinator.acquire_token(group) if context.coordinator else None
        except coordination.CoordinatorUnavailable as exc:
            self._failure("idToken", "coordinator unavailable", str(exc))
            return
        if self.token is None:
            self._failure("idToken", "idToken pool exhausted")
            return
        token = IdToken.from_item(self.token)
        try:
            started = station.start_session(
                evse.id,
                token.value,
                plan.new_ev(self.rng),
                authorize=plan.authorize,
                token_type=token.type,
            )
        except coordination.CoordinatorUnavailable as exc:  # no transaction id block
            self._failure("transactionId", "coordinator unavailable", str(exc))
            self._release_token()
            return
        if started is None:
            self._release_token()
            return
        self.runner.wake()
        self._sleep(plan.next_stay(self.rng))
        # The driver comes back and ends the session with the same card.
        station.stop_session(evse.id, "Local", trigger="StopAuthorized")
        self.runner.wake()
        self._release_token()

    def _sleep(self, simulated: float) -> None:
        """Sleep the way Locust's own ``wait()`` does: a stop request kills the user at
        once (running ``on_stop``) instead of waiting for the profile's next step."""
        if not self._wait(self.context.clock.real_seconds(simulated)):
            raise StopUser()

    def on_stop(self) -> None:
        self.lifecycle.fire(UserEvent.STOP)
        self._stop()
        self.lifecycle.fire(UserEvent.STOPPED)

    def _stop(self) -> None:
        self.context.collector.release()  # its station's cycles must be collectable
        if self.admitted:
            self.admitted = False
            self.context.dismiss()
        if self.runner is not None:
            self.runner.stop(timeout=self.stop_timeout_s)
        self._release_token()
        coordinator = self.context.coordinator
        if self.charger_id is not None and self.context.metrics_observer is not None:
            self.context.metrics_observer.remove_station(self.charger_id)
        if self.charger_id is not None and coordinator is not None:
            self.context.users.pop(self.charger_id, None)
            try:
                coordinator.release(self.charger_id)
            except coordination.CoordinatorUnavailable as exc:
                quiet.warning(
                    "release", "could not release a charger id (its lease will expire)", str(exc)
                )
            self.charger_id = None

    def _release_token(self) -> None:
        if self.token is not None and self.context.coordinator is not None:
            with contextlib.suppress(coordination.CoordinatorUnavailable):
                self.context.coordinator.release_token(self.token)  # else: its lease expires
            self.token = None

    def _on_station_event(self, kind: str, detail: dict[str, Any]) -> None:
        if kind == "boot":
            self.context.count_recovery(self, kind, detail)
        elif kind == "authorization" and detail.get("status") != "Accepted":
            self._rejected(str(detail.get("message")), str(detail.get("status")))
        observer = self.context.metrics_observer
        if observer is not None and self.charger_id is not None:  # None: the lease lost
            observer.station_event(self.charger_id, kind, detail)
        # The run ledger: one entry when the CSMS acknowledged a start, one for the end;
        # also late, from a station whose lease was just lost: the CSMS has it.
        station = self.station
        if (
            kind in coordination.LEDGER_EVENTS
            and self.context.coordinator is not None
            and station is not None
        ):
            entry = coordination.LedgerEntry.from_station_event(
                station.charger.id, station.version.name, kind, detail
            )
            assert entry is not None
            self.context.coordinator.record_transaction(entry)

    def _on_runner_event(self, kind: str, detail: dict[str, Any]) -> None:
        self.context.connect_retries.runner_event(kind, detail)
        if kind == "booted_lost":
            self.context.count_recovery(self, kind, detail)
        observer = self.context.metrics_observer
        if observer is not None and self.state is not UserState.LEASE_LOST:
            # after a lost lease this process may lease the id again, to another station
            observer.runner_event(detail["charger_id"], kind, detail)
        coordinator = self.context.coordinator
        if coordinator is None:
            return
        if kind == "connected":
            coordinator.station_connected()
        elif kind == "disconnected":
            coordinator.station_disconnected()

    def _rejected(self, message: str, status: str) -> None:
        """The CSMS rejected a token: a row of Locust's failure table per message and status
        (request type ``Authorization``, kept out of the CALL latencies)."""
        self._failure_row("Authorization", message, status)

    def _failure(self, name: str, reason: str, detail: str | None = None) -> None:
        """Count a coordination failure in Locust's table (one row per kind: a fixed text)
        and the metric, and log the detail (one line per kind and interval)."""
        if detail is not None:
            quiet.warning(name, f"{name} failed", detail)
        if self.context.metrics is not None:
            self.context.metrics.coordination_failure(name)
        self._failure_row("Coordination", name, reason)

    def _failure_row(self, request_type: str, name: str, reason: str) -> None:
        """A row of Locust's failure table that is no CALL (no latency)."""
        from loadgen.locust.plugin import OcppRequestFailure

        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=0,
            response_length=0,
            exception=OcppRequestFailure(reason),
            context={},
        )
