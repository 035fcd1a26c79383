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
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from loadgen.station import Station

__all__ = ["Backoff", "RetryBackOff", "StationRunner"]

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
        self._wake = gevent.event.Event()
        self._retry = False
        self._stopping = False
        self._greenlet: gevent.Greenlet | None = None
        #: real (monotonic) time until which a blackout keeps the station off the CSMS
        self._blackout_until = 0.0
        #: the loop runs in the caller's greenlet (run()), not one of its own (start())
        self._inline = False
        #: run() was killed before stop(): stop() resumes the loop (on the open link)
        self._interrupted = False
        #: stop(timeout=0): drop everything at once, flush nothing
        self._abandon = False

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
        self._greenlet = gevent.spawn(self._run)
        return self._greenlet

    def run(self) -> None:
        """Run the station in the calling greenlet instead of :meth:`start`'s own, until
        it stops (or gives up).

        Killing the caller (Locust stopping its user) leaves the connection open, a CALL
        cut short is sent again like a timed-out one: :meth:`stop`, from the same greenlet
        (``on_stop``), then resumes the loop to end transactions and flush the queue.
        """
        self._inline = True
        try:
            self._run()
        except BaseException:
            if not self._stopping:
                self._interrupted = True
            raise

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
        if self._in_blackout():
            return
        self._retry = True
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
        """End running transactions, send what is queued (within ``timeout``), close."""
        if end_transactions:
            for evse in self.station.evses.values():
                # also a session waiting for Authorize: it must not start while we flush
                if evse.transaction is not None or evse.authorizing is not None:
                    self.station.stop_session(evse.id, "Local")
        self._stopping = True
        self._abandon = timeout <= 0
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            if not self._greenlet.dead:
                self._greenlet.kill(block=True, timeout=1)
        elif self._interrupted and not self._abandon:
            with gevent.Timeout(timeout, False):
                self._run()
            self._interrupted = False
        if self.link is not None:
            self.link.close(1000, "station stopped")

    def _adopt_version(self, link: Link) -> None:
        """Speak the version the CSMS chose of the link's offer (``--ocpp-version 2.1,2.0.1``).

        2.0.1 and 2.1 stations behave alike, so the station switches between them at any
        connect; it changes to or from 1.6 only before its first connection (its transactions
        and queue are in one version's terms). Raises :class:`ConnectFailed` otherwise.
        """
        version, station = link.version, self.station
        if version is station.version:
            return
        if self.connects and (version is OCPP16) != station.is16:
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

    def _run(self) -> None:
        attempt = 0  # waits so far in this outage
        first = 0.0  # the outage's first wait, drawn once (OCPP doubles it)
        while True:
            if self._stopping and (self._abandon or not self.station.queue_depth):
                return
            if self._interrupted and self.link is not None and self.link.connected:
                link = self.link  # resume where a kill left run()
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
                    if self._stopping or (
                        backoff.max_tries is not None
                        and attempt >= backoff.max_tries
                        and not self._in_blackout()
                    ):
                        self.failed = str(exc)
                        self._emit(
                            "gave_up",
                            {"reason": str(exc), "attempts": attempt, "connect_failed": connecting},
                        )
                        return
                    if attempt == 1:
                        first = backoff.first_wait()
                    delay = backoff.wait(attempt, first)
                    self._emit(
                        "retry",
                        {
                            "attempt": attempt,
                            "delay": delay,
                            "reason": str(exc),
                            "connect_failed": connecting,
                        },
                    )
                    self._idle_until(self._real_now() + delay)
                    continue
                attempt = 0
                self.connects += 1
                self.link = link
                self.station.on_connected()
                self._emit("connected", {"count": self.connects})
            self._interrupted = False
            try:
                self._serve(link)
            except BaseException:
                if self._inline and not self._stopping and link.connected:
                    raise  # killed: stop() resumes on this connection
                self._end_connection(link)
                raise
            self._end_connection(link)
            if self.station.reset_requested:
                # A real charger is away for seconds while it reboots; one that came back
                # within milliseconds met the CSMS still holding its old connection.
                delay = reboot_delay(self.station.config.reboot_delay)
                self._emit("rebooting", {"reason": self.station.reset_requested, "delay": delay})
                self._idle_until(self._real_now() + delay, interruptible=False)
                self.station.reset_requested = None
                continue  # then it connects at once, no back-off
            if not self._stopping:
                attempt = 1
                first = self.backoff.first_wait()
                delay = self.backoff.wait(attempt, first)
                reason = "blackout" if self._in_blackout() else "connection lost"
                self._emit("retry", {"attempt": attempt, "delay": delay, "reason": reason})
                self._idle_until(self._real_now() + delay)

    def _end_connection(self, link: Link) -> None:
        if self.station.accepted:  # a booted station lost the CSMS (recovery counts these)
            self._emit("booted_lost", {"stopping": self._stopping})
        self.station.on_disconnected()
        if link.connected:
            link.close(1000, "station stopped" if self._stopping else "reconnecting")

    def _serve(self, link: Link) -> None:
        station = self.station
        while link.connected and not self._abandon:
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
            if station.reset_requested:
                return
            if self._stopping and (self._abandon or not station.queue_depth):
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

    def _idle_until(self, real_deadline: float, interruptible: bool = True) -> None:
        """Wait while disconnected, still ticking the station (meter values go on, into
        the offline queue). ``retry_now()`` cuts it short unless not ``interruptible``
        (a reboot takes its time)."""
        self._retry = False
        while not self._stopping:
            remaining = real_deadline - self._real_now()
            if remaining <= 0 or (self._retry and interruptible):
                self._retry = False
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
