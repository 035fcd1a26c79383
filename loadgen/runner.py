"""Runs a :class:`~loadgen.station.Station` on gevent: the glue between it and its link.

One greenlet per station drives the pure state machine: a greenlet of its own
(:meth:`StationRunner.start`) or the caller's (:meth:`StationRunner.run`: a Locust user
whose profile has nothing else to do saves a parked greenlet, ~8.5 KB). It connects the
:class:`~loadgen.link.Link`, hands the station's CALLs to it one at a time, feeds the station
time (``tick``) and reconnects after any drop with OCPP 2.0.1's back-off
(:class:`~loadgen.backoff.RetryBackOff`, which the CSMS may change). The
link answers the CSMS's CALLs through :meth:`StationRunner.on_call`, from a greenlet it
spawns only while there are some.
Greenlets switch only on I/O, and the station never does I/O, so no locks are needed.

Its life is a :class:`RunnerState` moved by :class:`RunnerEvent` along :data:`TRANSITIONS`
(listed there: connecting, open, backing off, rebooting; interrupted when a killed
:meth:`~StationRunner.run` left its connection for :meth:`~StationRunner.stop`; stopping or
abandoning, then stopped; failed when it gave up).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import gevent
import gevent.event

from loadgen.backoff import RetryBackOff
from loadgen.link import (
    CallErrorResponse,
    CallObserver,
    CallTimeout,
    ConnectFailed,
    Disconnected,
    InvalidResponse,
    Link,
)
from loadgen.physics import ScaledClock
from loadgen.protocols import OCPP16
from loadgen.states import Machine
from loadgen.station import Station

__all__ = ["TRANSITIONS", "Backoff", "RetryBackOff", "RunnerEvent", "RunnerState", "StationRunner"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Retry delays: ``initial * factor**(n-1)`` capped at ``cap``, ± ``jitter``.

    For the load generator's own retries (a charger id's lease); a station reconnects by
    OCPP's :class:`~loadgen.backoff.RetryBackOff` instead.
    """

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.2  # fraction of the delay, both ways
    max_tries: int | None = None  # None: forever (load tests); the seed's station: 5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.cap, self.initial * self.factor ** max(0, attempt - 1))
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))


#: a reboot lasts the configured delay +- this fraction
REBOOT_JITTER = 0.25


def reboot_delay(seconds: float, rng: random.Random | None = None) -> float:
    """How long one reboot keeps a station away: ``seconds`` +- 25 %."""
    spread = seconds * REBOOT_JITTER
    return max(0.0, seconds + (rng or random).uniform(-spread, spread))


class RunnerState(Enum):
    """Where a :class:`StationRunner` is in its life (``runner.state``)."""

    NEW = "new"  # made; neither start() nor run() yet
    CONNECTING = "connecting"  # opening a link (or about to)
    OPEN = "open"  # serving the station on an open link
    BACKING_OFF = "backing off"  # waiting out the reconnect back-off (retry_now cuts it)
    REBOOTING = "rebooting"  # away for the reboot a Reset asked for (nothing cuts it)
    INTERRUPTED = "interrupted"  # run()'s greenlet killed: its link stays for stop()
    STOPPING = "stopping"  # stop(): ends transactions, flushes the queue, then closes
    ABANDONING = "abandoning"  # stop(timeout=0): closes at once, flushes nothing
    STOPPED = "stopped"
    FAILED = "failed"  # gave up connecting (``failed`` says why)


class RunnerEvent(Enum):
    """What moves a :class:`RunnerState`."""

    START = "start"  # start() or run()
    CONNECTED = "connected"
    CONNECT_FAILED = "connect failed"  # and it will try again after the back-off
    GIVE_UP = "give up"  # connect tries exhausted, or a connect failed while stopping
    LINK_LOST = "link lost"  # the connection ended (dropped, closed, blackout)
    RESET = "reset"  # the connection ended for a reboot the CSMS asked for
    WAITED = "waited"  # the back-off or reboot is over
    RETRY = "retry"  # retry_now()
    INTERRUPT = "interrupt"  # run()'s greenlet killed before stop()
    KILLED = "killed"  # start()'s greenlet killed before its loop ended
    STOP = "stop"
    ABANDON = "abandon"
    DONE = "done"  # the loop ended: the queue flushed, or abandoned


_S, _E = RunnerState, RunnerEvent
#: while the loop runs, stop() and a kill can come at any time
_ENDINGS = {
    _E.STOP: _S.STOPPING,
    _E.ABANDON: _S.ABANDONING,
    _E.INTERRUPT: _S.INTERRUPTED,
    _E.KILLED: _S.STOPPED,
}
#: once stopping, the connection still comes and goes (a flush may need a connect) but the
#: runner stays on its way out
_STAY = (_E.CONNECTED, _E.LINK_LOST, _E.RESET, _E.WAITED, _E.STOP)

#: which event moves which state where; anything else raises TransitionError
TRANSITIONS: dict[RunnerState, dict[RunnerEvent, RunnerState]] = {
    _S.NEW: {_E.START: _S.CONNECTING, _E.STOP: _S.STOPPED, _E.ABANDON: _S.STOPPED},
    _S.CONNECTING: {
        _E.CONNECTED: _S.OPEN,
        _E.CONNECT_FAILED: _S.BACKING_OFF,
        _E.GIVE_UP: _S.FAILED,
        **_ENDINGS,
    },
    _S.OPEN: {_E.LINK_LOST: _S.BACKING_OFF, _E.RESET: _S.REBOOTING, **_ENDINGS},
    _S.BACKING_OFF: {_E.WAITED: _S.CONNECTING, _E.RETRY: _S.CONNECTING, **_ENDINGS},
    _S.REBOOTING: {_E.WAITED: _S.CONNECTING, **_ENDINGS},
    # stop() resumes the loop on the link the kill left open (or abandons it)
    _S.INTERRUPTED: {_E.STOP: _S.STOPPING, _E.ABANDON: _S.ABANDONING},
    _S.STOPPING: {
        **dict.fromkeys(_STAY, _S.STOPPING),
        _E.ABANDON: _S.ABANDONING,
        _E.GIVE_UP: _S.FAILED,
        _E.DONE: _S.STOPPED,
        _E.KILLED: _S.STOPPED,
    },
    _S.ABANDONING: {
        **dict.fromkeys((*_STAY, _E.ABANDON), _S.ABANDONING),
        _E.GIVE_UP: _S.FAILED,
        _E.DONE: _S.STOPPED,
        _E.KILLED: _S.STOPPED,
    },
    # stop() again is a no-op
    _S.STOPPED: {_E.STOP: _S.STOPPED, _E.ABANDON: _S.STOPPED},
    _S.FAILED: {_E.STOP: _S.FAILED, _E.ABANDON: _S.FAILED},
}
#: the loop is running (in start()'s greenlet or run()'s caller)
_LOOPING = frozenset({_S.CONNECTING, _S.OPEN, _S.BACKING_OFF, _S.REBOOTING})
_ENDING = frozenset({_S.STOPPING, _S.ABANDONING})


class StationRunner:
    """One station's life on gevent. ``start()``; ``stop()`` ends it cleanly."""

    def __init__(
        self,
        station: Station,
        url: str,
        *,
        clock: ScaledClock,
        backoff: RetryBackOff | None = None,
        observer: CallObserver | None = None,
        link_factory: Callable[..., Link] = Link,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        **link_options: Any,
    ) -> None:
        self.station = station
        self.url = f"{url.rstrip('/')}/{station.charger.id}"
        self.clock = clock
        if backoff is not None:  # else the station's own (StationConfig, the CSMS's)
            station.retry_backoff = backoff
        self.observer = observer
        self.link_factory = link_factory
        self.link_options = link_options
        self.on_event = on_event
        self.link: Link | None = None
        self.failed: str | None = None  # why the runner gave up, if it did
        self.connects = 0
        self.lifecycle: Machine[RunnerState, RunnerEvent] = Machine(
            station.charger.id, TRANSITIONS, RunnerState.NEW
        )
        self._wake = gevent.event.Event()
        #: start()'s greenlet; None when the loop runs in run()'s caller
        self._greenlet: gevent.Greenlet | None = None
        #: the greenlet the loop runs in now, if it runs (its end says DONE, not stop())
        self._loop_owner: Any = None
        #: real (monotonic) time until which a blackout keeps the station off the CSMS
        self._blackout_until = 0.0

    @property
    def state(self) -> RunnerState:
        return self.lifecycle.state

    # -- the link's CallHandler ----------------------------------------------------------

    def on_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.station.handle_csms_call(action, payload)
        finally:
            self._wake.set()  # the answer may have queued CALLs (a remote start, ...)

    def on_disconnect(self, code: int | None, reason: str) -> None:
        self._emit("disconnected", {"code": code, "reason": reason})
        self._wake.set()

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> gevent.Greenlet:
        self.lifecycle.fire(RunnerEvent.START)
        self._greenlet = gevent.spawn(self._own_loop)
        return self._greenlet

    def _own_loop(self) -> None:
        self._loop_owner = gevent.getcurrent()
        try:
            self._run()
        finally:
            self._loop_owner = None
            self._loop_ended(interrupted=False)

    def run(self) -> None:
        """Run the station in the calling greenlet instead of :meth:`start`'s own, until
        it stops (or gives up).

        Killing the caller (Locust stopping its user) leaves the connection open, a CALL
        cut short is sent again like a timed-out one: :meth:`stop`, from the same greenlet
        (``on_stop``), then resumes the loop to end transactions and flush the queue.
        """
        self.lifecycle.fire(RunnerEvent.START)
        self._loop_owner = gevent.getcurrent()
        try:
            self._run()
        except BaseException:
            self._loop_owner = None
            self._loop_ended(interrupted=True)
            raise
        self._loop_owner = None
        self._loop_ended(interrupted=False)

    def _loop_ended(self, interrupted: bool) -> None:
        """The loop returned (flushed, abandoned, gave up) or was killed: which state now."""
        state = self.state
        if state in _ENDING:
            self.lifecycle.fire(RunnerEvent.DONE if not interrupted else RunnerEvent.KILLED)
        elif state in _LOOPING:  # killed before stop()
            event = RunnerEvent.INTERRUPT if interrupted else RunnerEvent.KILLED
            self.lifecycle.fire(event)

    def wake(self) -> None:
        """Call after driving the station from outside (a profile starting a session)."""
        self._wake.set()

    @property
    def backoff(self) -> RetryBackOff:
        """The back-off in force: the station's, which the CSMS may have changed."""
        return self.station.retry_backoff

    def retry_now(self) -> None:
        """Cut a reconnect back-off short: a capacity step wants every one of its chargers
        trying, not waiting out the back-off a failed step above put them in."""
        if self._in_blackout() or self.state is not RunnerState.BACKING_OFF:
            return  # nothing to cut short (a reboot is not cut short either)
        self.lifecycle.fire(RunnerEvent.RETRY)
        self._wake.set()

    def blackout(self, seconds: float) -> None:
        """Drop the connection now and make no attempt for ``seconds``, as if the CSMS were
        down (a restart); then reconnect by the back-off, whose attempts during the
        blackout failed. Takes effect in the runner's own greenlet (no cross-greenlet
        close): within the CALL it may be waiting on."""
        self._blackout_until = self._real_now() + seconds
        self._wake.set()

    def _in_blackout(self) -> bool:
        return self._blackout_until > self._real_now()

    def stop(self, timeout: float = 10.0, end_transactions: bool = True) -> None:
        """End running transactions, send what is queued (within ``timeout``), close.

        ``timeout`` 0 or less abandons: close at once, flush nothing. Stopping a stopped
        (or failed) runner does nothing more.
        """
        if end_transactions:
            for evse in self.station.evses.values():
                # also a session waiting for Authorize: it must not start while we flush
                if evse.transaction is not None or evse.authorizing is not None:
                    self.station.stop_session(evse.id, "Local")
        before = self.state
        abandon = timeout <= 0
        self.lifecycle.fire(RunnerEvent.ABANDON if abandon else RunnerEvent.STOP)
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            if not self._greenlet.dead:
                self._greenlet.kill(block=True, timeout=1)
        elif before is RunnerState.INTERRUPTED and not abandon:
            # run() was killed (Locust stopping its user) and this is its on_stop, in the
            # same greenlet: go on where it left off, on the connection it left open
            with gevent.Timeout(timeout, False):
                self._run(resume=True)
        if self.link is not None:
            self.link.close(1000, "station stopped")
        if self.state in _ENDING and self._loop_owner is None:
            # no loop left to say it ended (start()'s greenlet is over, or killed before it
            # ran; run() was interrupted): this call ends it. A loop still running in
            # another greenlet (run() while a lost lease abandons it) ends it there.
            self.lifecycle.fire(RunnerEvent.DONE)

    def _adopt_version(self, link: Link) -> None:
        """Speak the version the CSMS chose of the link's offer (``--ocpp-version 2.1,2.0.1``).

        2.0.1 and 2.1 stations behave alike, so the station switches between them at any
        connect; it changes to or from 1.6 only before its first connection (its transactions
        and queue are in one version's terms). Raises :class:`ConnectFailed` otherwise.
        """
        version, station = link.version, self.station
        if version is station.version:
            return
        if self.connects and (version is OCPP16) != (station.version is OCPP16):
            link.close()
            raise ConnectFailed(
                f"the CSMS chose {version.subprotocol} after {station.version.subprotocol}: "
                "a station does not change between 1.6 and 2.x",
                "subprotocol",
            )
        log.info("%s: the CSMS chose %s", station.charger.id, version.subprotocol)
        station.use_version(version)

    def join(self, timeout: float | None = None) -> None:
        if self._greenlet is not None:
            self._greenlet.join(timeout)

    # -- the loop ------------------------------------------------------------------------

    def _flushed(self) -> bool:
        """Stopping and nothing left to send, or abandoning: the loop is over."""
        state = self.state
        return state is RunnerState.ABANDONING or (
            state is RunnerState.STOPPING and not self.station.queue_depth
        )

    def _run(self, resume: bool = False) -> None:
        attempt = 0  # waits so far in this outage
        first = 0.0  # the outage's first wait, drawn once (OCPP doubles it)
        while True:
            if self._flushed():
                return
            if resume and self.link is not None and self.link.connected:
                link = self.link  # go on where a kill left run()
                resume = False
            else:
                connecting = False  # a failed link.connect() told its observer (Locust)
                try:
                    if self._in_blackout():  # the CSMS is "down": no socket at all
                        raise ConnectFailed("blackout", "blackout")
                    link = self.link_factory(
                        self.url,
                        self.station.version,
                        self,
                        observer=self.observer,
                        **self.link_options,
                    )
                    connecting = True
                    link.connect()
                    connecting = False
                    self._adopt_version(link)
                except ConnectFailed as exc:
                    attempt += 1
                    backoff = self.backoff
                    if self.state in _ENDING or (
                        backoff.max_tries is not None
                        and attempt >= backoff.max_tries
                        and not self._in_blackout()
                    ):
                        self.failed = str(exc)
                        self.lifecycle.fire(RunnerEvent.GIVE_UP)
                        self._emit(
                            "gave_up",
                            {"reason": str(exc), "attempts": attempt, "connect_failed": connecting},
                        )
                        return
                    if attempt == 1:
                        first = backoff.first_wait()
                    delay = backoff.wait(attempt, first)
                    self.lifecycle.fire(RunnerEvent.CONNECT_FAILED)
                    self._emit(
                        "retry",
                        {
                            "attempt": attempt,
                            "delay": delay,
                            "reason": str(exc),
                            "connect_failed": connecting,
                        },
                    )
                    self._idle_until(self._real_now() + delay, RunnerState.BACKING_OFF)
                    continue
                attempt = 0
                self.connects += 1
                self.link = link
                self.station.on_connected()
                self.lifecycle.fire(RunnerEvent.CONNECTED)
                self._emit("connected", {"count": self.connects})
            try:
                self._serve(link)
            except BaseException:
                if self._greenlet is None and self.state in _LOOPING and link.connected:
                    raise  # run() killed: stop() resumes on this connection
                self._end_connection(link)
                raise
            self._end_connection(link)
            if self.station.reset_requested:
                # A real charger is away for seconds while it reboots; one that came back
                # within milliseconds met the CSMS still holding its old connection.
                self.lifecycle.fire(RunnerEvent.RESET)
                delay = reboot_delay(self.station.config.reboot_delay)
                self._emit("rebooting", {"reason": self.station.reset_requested, "delay": delay})
                self._idle_until(self._real_now() + delay, RunnerState.REBOOTING)
                self.station.reset_requested = None
                continue  # then it connects at once, no back-off
            self.lifecycle.fire(RunnerEvent.LINK_LOST)
            if self.state is RunnerState.BACKING_OFF:  # not when stopping
                attempt = 1
                first = self.backoff.first_wait()
                delay = self.backoff.wait(attempt, first)
                reason = "blackout" if self._in_blackout() else "connection lost"
                self._emit("retry", {"attempt": attempt, "delay": delay, "reason": reason})
                self._idle_until(self._real_now() + delay, RunnerState.BACKING_OFF)

    def _end_connection(self, link: Link) -> None:
        stopping = self.state in _ENDING
        if self.station.accepted:  # a booted station lost the CSMS (recovery counts these)
            self._emit("booted_lost", {"stopping": stopping})
        self.station.on_disconnected()
        if link.connected:
            link.close(1000, "station stopped" if stopping else "reconnecting")

    def _serve(self, link: Link) -> None:
        station = self.station
        while link.connected and self.state is not RunnerState.ABANDONING:
            if self._in_blackout():
                return
            station.tick()
            call = station.next_call()
            if call is not None:
                assert call.payload is not None
                try:
                    reply = link.call(call.action, call.payload)
                except CallErrorResponse as exc:
                    station.on_call_failed(call, "error", exc.error_code)
                except InvalidResponse as exc:  # a garbled or schema-breaking reply
                    station.on_call_failed(call, "error", exc.error_code)
                except CallTimeout:
                    station.on_call_failed(call, "timeout")
                except Disconnected:
                    station.on_call_failed(call, "disconnected")
                    return
                except BaseException:
                    # Killed mid-CALL (run() in a stopping Locust user): send it again
                    # when resumed, as after a timeout (same seqNo; the CSMS deduplicates).
                    station.on_call_failed(call, "timeout")
                    raise
                else:
                    self._deliver(call, reply)
                continue
            if station.reset_requested or self._flushed():
                return
            self._wait_for_deadline()

    def _deliver(self, call: Any, reply: dict[str, Any]) -> None:
        """Hand a CALLRESULT to the station; one it cannot use fails the CALL instead.

        Without ``validate`` the link does not check replies against the schema (it costs
        ~20 µs a message), so a CSMS's broken reply (a missing ``status``, an ``interval``
        that is no number) reaches the station here. It must not end the station's loop: it
        is counted as ``invalid_result`` and handled like a CALLERROR FormatViolation.
        """
        try:
            self.station.on_call_result(call, reply)
        except Exception as exc:
            log.debug("%s: unusable %s result: %r", self.url, call.action, exc)
            if self.observer is not None:
                self.observer.protocol_error("invalid_result")
            self.station.on_call_failed(call, "error", "FormatViolation")

    def _wait_for_deadline(self) -> None:
        deadline = self.station.next_deadline()
        timeout = None
        if deadline is not None:
            timeout = max(0.0, self.clock.real_seconds(deadline - self.clock.now()))
        self._wake.wait(timeout)
        self._wake.clear()

    def _idle_until(self, real_deadline: float, waiting: RunnerState) -> None:
        """Wait while disconnected (in state ``waiting``), still ticking the station (meter
        values go on, into the offline queue). Over when the state changes (``retry_now()``
        while backing off; a stop) or at the deadline (WAITED)."""
        while self.state is waiting:
            remaining = real_deadline - self._real_now()
            if remaining <= 0:
                self.lifecycle.fire(RunnerEvent.WAITED)
                return
            deadline = self.station.next_deadline()
            timeout = remaining
            if deadline is not None:
                timeout = min(
                    timeout, max(0.0, self.clock.real_seconds(deadline - self.clock.now()))
                )
            self._wake.wait(timeout)
            self._wake.clear()
            self.station.tick()

    _real_now = staticmethod(time.monotonic)

    def _emit(self, kind: str, detail: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(kind, {"charger_id": self.station.charger.id, **detail})
