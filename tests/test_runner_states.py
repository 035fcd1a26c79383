"""StationRunner's lifecycle: the transition table (pure), then real runners over real
sockets followed through their states with the machine's trace."""

from __future__ import annotations

import socket
from typing import Any

import gevent
import pytest
from websockets.asyncio.server import ServerConnection

from loadgen import fleet as fleets
from loadgen.physics import ScaledClock
from loadgen.protocols import OCPP201
from loadgen.runner import TRANSITIONS, RetryBackOff, RunnerEvent, RunnerState, StationRunner
from loadgen.states import Machine, TransitionError, transitions
from loadgen.station import Station, StationConfig
from tests.fake_csms import FakeCsms, wait_for

CHARGER = fleets.load(fleets.SEED_FLEET).chargers["emart_jeju_01"]
NOW = "2026-01-01T00:00:00.000Z"
S, E = RunnerState, RunnerEvent


async def friendly(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
    reply = {"currentTime": NOW, "interval": 300, "status": "Accepted"}
    await csms.answer(ws, call, reply if call[2] == "BootNotification" else {})


def make_runner(url: str, backoff: RetryBackOff | None = None) -> StationRunner:
    clock = ScaledClock(1)
    station = Station(CHARGER, OCPP201, clock, StationConfig(meter_interval=600))
    runner = StationRunner(
        station, url, clock=clock, backoff=backoff or RetryBackOff(0.1, 0.0), call_timeout=2
    )
    runner.lifecycle.trace = []
    return runner


def moves(runner: StationRunner) -> list[tuple[str, str, str]]:
    assert runner.lifecycle.trace is not None
    return [(a.name, e.name, b.name) for a, e, b in runner.lifecycle.trace]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the table (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "event", "after"), list(transitions(TRANSITIONS)))
def test_every_listed_transition_moves_where_the_table_says(
    state: RunnerState, event: RunnerEvent, after: RunnerState
) -> None:
    machine = Machine("emart_jeju_01", TRANSITIONS, state)
    assert machine.can(event)
    assert machine.fire(event) is after and machine.state is after


def test_every_unlisted_event_is_a_clear_error_and_leaves_the_state() -> None:
    unlisted = [(s, e) for s in RunnerState for e in RunnerEvent if e not in TRANSITIONS[s]]
    assert (S.NEW, E.CONNECTED) in unlisted and (S.STOPPED, E.START) in unlisted
    for state, event in unlisted:
        machine = Machine("emart_jeju_01", TRANSITIONS, state)
        assert not machine.can(event)
        with pytest.raises(TransitionError) as raised:
            machine.fire(event)
        assert machine.state is state
        assert str(raised.value) == (
            f"emart_jeju_01: {event.name.lower()} is not allowed when {state.name.lower()}"
        )


def test_every_state_is_in_the_table_reachable_and_ends_stopped_or_failed() -> None:
    assert set(TRANSITIONS) == set(RunnerState)
    reached, frontier = {S.NEW}, [S.NEW]
    while frontier:
        for after in TRANSITIONS[frontier.pop()].values():
            if after not in reached:
                reached.add(after)
                frontier.append(after)
    assert reached == set(RunnerState)
    # only stop() again (a no-op) once over
    for end in (S.STOPPED, S.FAILED):
        assert TRANSITIONS[end] == {E.STOP: end, E.ABANDON: end}


# -- real runners ---------------------------------------------------------------------------


def test_a_runner_connects_loses_the_link_backs_off_reconnects_and_stops() -> None:
    with FakeCsms(friendly) as csms:
        runner = make_runner(csms.url.rsplit("/", 1)[0])
        assert runner.state is S.NEW
        runner.start()
        wait_for(lambda: runner.station.accepted)
        assert runner.state is S.OPEN
        csms.close_with(1011, "restart")
        wait_for(lambda: runner.connects == 2 and runner.station.accepted)
        runner.stop(timeout=5)
    assert runner.state is S.STOPPED
    assert moves(runner) == [
        ("NEW", "START", "CONNECTING"),
        ("CONNECTING", "CONNECTED", "OPEN"),
        ("OPEN", "LINK_LOST", "BACKING_OFF"),
        ("BACKING_OFF", "WAITED", "CONNECTING"),
        ("CONNECTING", "CONNECTED", "OPEN"),
        ("OPEN", "STOP", "STOPPING"),
        ("STOPPING", "LINK_LOST", "STOPPING"),  # the loop closes its own link
        ("STOPPING", "DONE", "STOPPED"),
    ]
    runner.stop()  # again: nothing happens
    assert runner.state is S.STOPPED


def test_retry_now_cuts_a_back_off_short_and_a_reboot_is_not_cut() -> None:
    with FakeCsms(friendly) as csms:
        runner = make_runner(csms.url.rsplit("/", 1)[0], RetryBackOff(30.0, 0.0))
        runner.start()
        wait_for(lambda: runner.station.accepted)
        runner.retry_now()  # open: nothing to cut short
        assert runner.state is S.OPEN
        csms.close_with(1011, "restart")
        wait_for(lambda: runner.state is S.BACKING_OFF)
        runner.retry_now()  # a 30 s wait cut short
        wait_for(lambda: runner.connects == 2 and runner.station.accepted)
        # a Reset the CSMS asked for (what the link's CALL handler does)
        runner.station.config.reboot_delay = 0.4
        assert runner.on_call("Reset", {"type": "Immediate"}) == {"status": "Accepted"}
        wait_for(lambda: runner.state is S.REBOOTING)
        runner.retry_now()
        assert runner.state is S.REBOOTING
        wait_for(lambda: runner.connects == 3 and runner.station.accepted)
        runner.stop(timeout=5)
    assert [m for m in moves(runner) if m[1] in ("RETRY", "RESET", "WAITED")] == [
        ("BACKING_OFF", "RETRY", "CONNECTING"),
        ("OPEN", "RESET", "REBOOTING"),
        ("REBOOTING", "WAITED", "CONNECTING"),
    ]


def test_a_runner_whose_tries_run_out_fails_and_stays_failed() -> None:
    backoff = RetryBackOff(0.05, 0.0, max_tries=2)
    runner = make_runner(f"ws://127.0.0.1:{closed_port()}", backoff)
    runner.start().join(timeout=10)
    assert runner.state is S.FAILED and runner.failed
    assert moves(runner) == [
        ("NEW", "START", "CONNECTING"),
        ("CONNECTING", "CONNECT_FAILED", "BACKING_OFF"),
        ("BACKING_OFF", "WAITED", "CONNECTING"),
        ("CONNECTING", "GIVE_UP", "FAILED"),
    ]
    runner.stop(timeout=1)
    assert runner.state is S.FAILED


def test_a_killed_run_is_interrupted_until_stop_resumes_it() -> None:
    with FakeCsms(friendly) as csms:
        runner = make_runner(csms.url.rsplit("/", 1)[0])
        greenlet = gevent.spawn(runner.run)
        wait_for(lambda: runner.station.accepted)
        greenlet.kill(block=True, timeout=5)
        assert runner.state is S.INTERRUPTED and runner.link is not None
        assert runner.link.connected  # left open for stop()
        runner.stop(timeout=5)
    assert runner.state is S.STOPPED and len(csms.connections) == 1
    assert moves(runner)[2:] == [
        ("OPEN", "INTERRUPT", "INTERRUPTED"),
        ("INTERRUPTED", "STOP", "STOPPING"),  # nothing queued: stop() just closes
        ("STOPPING", "DONE", "STOPPED"),
    ]


def test_abandoning_a_run_from_another_greenlet_ends_its_loop() -> None:
    """What a lost lease does: stop(0) from elsewhere while run() loops in the user's."""
    with FakeCsms(friendly) as csms:
        runner = make_runner(csms.url.rsplit("/", 1)[0])
        greenlet = gevent.spawn(runner.run)
        wait_for(lambda: runner.station.accepted)
        # two stops at once (a lost lease's and another): the loop still ends it, once
        stops = [gevent.spawn(runner.stop, 0, False), gevent.spawn(runner.stop, 0, False)]
        gevent.joinall(stops, timeout=5, raise_error=True)
        greenlet.join(timeout=5)
        assert greenlet.dead and greenlet.exception is None
    assert runner.state is S.STOPPED
    assert moves(runner)[2:] == [
        ("OPEN", "ABANDON", "ABANDONING"),
        ("ABANDONING", "ABANDON", "ABANDONING"),
        ("ABANDONING", "LINK_LOST", "ABANDONING"),
        ("ABANDONING", "DONE", "STOPPED"),
    ]


def test_a_started_runner_killed_without_stop_is_stopped_and_a_new_one_stops_at_once() -> None:
    with FakeCsms(friendly) as csms:
        runner = make_runner(csms.url.rsplit("/", 1)[0])
        greenlet = runner.start()
        wait_for(lambda: runner.station.accepted)
        greenlet.kill(block=True, timeout=5)
        assert runner.state is S.STOPPED
        assert moves(runner)[-1] == ("OPEN", "KILLED", "STOPPED")
    never = make_runner("ws://127.0.0.1:1")
    never.stop(timeout=0)
    assert never.state is S.STOPPED and moves(never) == [("NEW", "ABANDON", "STOPPED")]
    with pytest.raises(TransitionError, match="start is not allowed when stopped"):
        never.start()
