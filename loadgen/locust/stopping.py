"""The end of a run: the final summary counts what the stations did until they stopped.

Locust stops a run by killing its users; each user's ``on_stop`` then ends its station's
transactions. Left alone, two things made Locust's final table, the reports and the CSMS
disagree (at 5,000 chargers the CSMS had answered ~940 more heartbeats than the table showed):

- stations kept heartbeating and sending meter values while the stop went on, and a CALL
  cut short by the kill was answered by the CSMS but never counted;
- a master printed its table and wrote its report as soon as the stop began, with the
  workers' figures of their last report, 0-3 s old, before their users had stopped.

So, once a stop begins (Locust's ``test_stopping``), every process with stations winds them
down (:meth:`loadgen.station.Station.wind_down`: no more heartbeats, meter values or new
sessions) and waits, a few seconds at most, until no station has a CALL on the wire: the
kill then cuts nothing short and ``on_stop`` only ends transactions. A master first asks
each worker to do that and stop its users, and waits for its final report before Locust
goes on, so ``test_stop`` (the reports) and the table see every worker's last figures.
What remains is the messages still in flight when a bound ran out, and the log says how
many stations that was.

Ctrl-C and SIGTERM take another path through Locust: it fires ``quitting`` (where the
ledger is reconciled and the verdict given) before it stops the users. So a run still
going when Locust quits is stopped first, the same way as at the end of ``--run-time``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
import gevent.event
from locust.env import Environment
from locust.runners import (
    STATE_MISSING,
    STATE_RUNNING,
    STATE_SPAWNING,
    MasterRunner,
    WorkerRunner,
)

log = logging.getLogger(__name__)

#: master -> workers: the run stops; wind the stations down, stop the users, report, answer
WIND_DOWN_MESSAGE = "ocpp_wind_down"
#: worker -> master: stopped, and the final report went out before this
WOUND_DOWN_MESSAGE = "ocpp_wound_down"
#: the longest a process waits for its stations' CALLs on the wire to be answered
SETTLE_S = 5.0
#: the longest a master waits for its workers: their users' ``on_stop`` (10 s), the settle
#: and the report on the way
WORKERS_S = 30.0


def wind_down(users: dict[str, Any], settle_s: float = SETTLE_S) -> int:
    """Wind every station of ``users`` (a process's live users by charger id) down and wait
    until none of the connected ones has a CALL on the wire, at most ``settle_s``; return
    how many still had one then (their answers may come after the final counts)."""
    stations = [
        user.runner.station
        for user in list(users.values())
        if getattr(user, "runner", None) is not None
    ]
    for station in stations:
        station.wind_down()
    deadline = time.monotonic() + settle_s
    while True:
        # Offline stations send nothing; a connected one drains what it had queued (status
        # notifications, transaction messages) and then waits: nothing new is queued.
        busy = sum(1 for station in stations if station.online and not station.settled)
        if not busy or time.monotonic() >= deadline:
            break
        gevent.sleep(0.05)
    if stations:
        log.info(
            "stopping: %d stations wound down (no more heartbeats, meter values or sessions)%s",
            len(stations),
            f"; {busy} still had a CALL on the wire after {settle_s:g} s" if busy else "",
        )
    return busy


def install(environment: Environment, users: dict[str, Any]) -> None:
    """Hook the wind-down into Locust's stop for this process's kind of runner. Install it
    after every other ``quitting`` listener: Locust calls them last-installed first."""
    runner = environment.runner
    events = environment.events

    @events.quitting.add_listener
    def _stop_first(**_: Any) -> None:
        if not isinstance(runner, WorkerRunner) and runner.state in (STATE_SPAWNING, STATE_RUNNING):
            log.info("stopping: Locust is quitting while the run goes on: stopping it first")
            runner.stop()  # test_stopping winds down, the users end their transactions

    if isinstance(runner, MasterRunner):
        _install_master(environment, runner)
        return

    @events.test_stopping.add_listener
    def _wind_down(**_: Any) -> None:
        spawning = getattr(runner, "spawning_greenlet", None)
        if spawning is not None and not spawning.ready() and spawning is not gevent.getcurrent():
            spawning.kill(block=True)  # what Locust does next: no new station starts meanwhile
        wind_down(users)

    if isinstance(runner, WorkerRunner):

        def stop_and_answer(**_: Any) -> None:
            try:
                runner.stop()  # test_stopping winds the stations down, then the users stop
                runner._send_stats()  # the final figures, before the answer (same socket)
            finally:  # the master waits for it in any case
                runner.send_message(WOUND_DOWN_MESSAGE, None)

        runner.register_message(WIND_DOWN_MESSAGE, stop_and_answer, concurrent=True)


def _install_master(environment: Environment, runner: MasterRunner) -> None:
    waiting: set[str] = set()
    all_in = gevent.event.Event()

    def answered(msg: Any, **_: Any) -> None:
        waiting.discard(msg.node_id)
        if not waiting:
            all_in.set()

    runner.register_message(WOUND_DOWN_MESSAGE, answered)

    @environment.events.test_stopping.add_listener
    def _ask_workers(**_: Any) -> None:
        workers = {client.id for client in runner.clients.all if client.state != STATE_MISSING}
        if not workers:
            return
        waiting.clear()
        waiting.update(workers)
        all_in.clear()
        runner.send_message(WIND_DOWN_MESSAGE, None)
        started = time.monotonic()
        if all_in.wait(WORKERS_S):
            log.info(
                "stopping: %d workers stopped their stations and sent their final figures "
                "in %.1f s",
                len(workers),
                time.monotonic() - started,
            )
        else:
            log.warning(
                "stopping: no final figures from %s within %.0f s: the summary misses what "
                "they did since their last report",
                ", ".join(sorted(waiting)),
                WORKERS_S,
            )
