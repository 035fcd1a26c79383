"""ChargerUser's lifecycle and its use of Locust's internals, with Locust's real User and
Environment (tests/locust_driver.py's ``make_environment``).

Importing Locust monkey-patches the standard library, and tests/test_link.py checks that
nothing patched pytest's process: each scenario below runs in a child process of its own
(``import locust`` first) and fails there with its traceback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-01-01T00:00:00.000Z"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def in_child(scenario: str, *args: str) -> None:
    code = (
        "import sys\n"
        "import locust  # patches the standard library before anything else is imported\n"
        f"from tests.test_locust_user import {scenario}\n"
        f"{scenario}(*sys.argv[1:])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{scenario} failed in its child:\n{done.stderr[-5000:]}"


# -- the table (pure: Locust is imported in the child) -----------------------------------------


def every_user_transition_is_listed_and_nothing_else_moves() -> None:
    from loadgen.locust.user import USER_STATES, UserEvent, UserState
    from loadgen.states import Machine, TransitionError, transitions

    assert set(USER_STATES) == set(UserState) and USER_STATES[UserState.STOPPED] == {}
    for state, event, after in transitions(USER_STATES):
        assert Machine("charger user", USER_STATES, state).fire(event) is after
    for state in UserState:
        for event in UserEvent:
            if event in USER_STATES[state]:
                continue
            machine = Machine("charger user", USER_STATES, state)
            try:
                machine.fire(event)
            except TransitionError:
                assert machine.state is state
            else:
                raise AssertionError(f"{event} moved {state}")
    # Locust may stop a user anywhere in on_start, and only once
    stoppable = {s for s in UserState if UserEvent.STOP in USER_STATES[s]}
    assert stoppable == set(UserState) - {UserState.STOPPING, UserState.STOPPED}


def test_every_user_transition_is_listed_and_nothing_else_moves() -> None:
    in_child("every_user_transition_is_listed_and_nothing_else_moves")


# -- Locust's private User._state, in one place ------------------------------------------------


def locust_kills_a_waiting_user_at_once_and_stops_a_busy_one_at_its_next_wait() -> None:
    import time

    import gevent
    import gevent.pool
    from locust import User, task
    from locust.env import Environment

    from loadgen.locust.user import interruptible

    events: list[str] = []

    class Waiter(User):
        busy = 0.0

        @task
        def work(self) -> None:
            gevent.sleep(self.busy)  # not waiting: a stop request waits for this
            events.append("busy done")
            interruptible(self, lambda: gevent.sleep(60))
            events.append("woke")  # never: stopped first

        def on_stop(self) -> None:
            events.append("on_stop")

    environment = Environment(user_classes=[Waiter])
    group = gevent.pool.Group()
    for busy, killed_at_once in ((0.0, True), (0.5, False)):
        events.clear()
        user = Waiter(environment)
        user.busy = busy
        user.start(group)
        gevent.sleep(0.1)
        started = time.monotonic()
        # Locust's stop(): kills a user whose _state is "waiting" at once, marks a
        # "running" one "stopping" (the next interruptible() raises StopUser)
        assert user.stop() is killed_at_once
        assert group.join(timeout=5)
        assert events == ["busy done", "on_stop"], (busy, events)
        assert time.monotonic() - started < 2  # not the 60 s wait
    # a stop requested before the wait: no wait at all
    user = Waiter(environment)
    user._state = "stopping"  # what User.stop() sets for a running user
    try:
        interruptible(user, lambda: events.append("waited"))
    except Exception as exc:
        assert type(exc).__name__ == "StopUser"
    else:
        raise AssertionError("no StopUser")
    assert "waited" not in events


def test_locust_kills_a_waiting_user_at_once_and_stops_a_busy_one_at_its_next_wait() -> None:
    """Fails if Locust changes the private ``User._state`` protocol interruptible() uses."""
    in_child("locust_kills_a_waiting_user_at_once_and_stops_a_busy_one_at_its_next_wait")


# -- a lost lease ----------------------------------------------------------------------------


def answer_until(station: object, action: str) -> None:
    """Hand the station's queued CALLs their results, as its link would, up to ``action``."""
    replies = {
        "BootNotification": {"currentTime": NOW, "interval": 300, "status": "Accepted"},
        "Heartbeat": {"currentTime": NOW},
    }
    for _ in range(50):
        call = station.next_call()  # type: ignore[attr-defined]
        assert call is not None, f"no {action} queued"
        station.on_call_result(call, replies.get(call.action, {}))  # type: ignore[attr-defined]
        if call.action == action:
            return
    raise AssertionError(f"no {action} within 50 CALLs")


def a_late_acknowledgement_after_a_lost_lease_goes_to_the_ledger(port: str) -> None:
    import gevent
    import gevent.pool

    from loadgen.locust.user import ChargerUser, UserState
    from loadgen.runner import RunnerState
    from tests.locust_driver import make_environment

    argv = ["--host", f"ws://127.0.0.1:{port}", "--fleet-size", "2", "--ocpp-profile", "idle"]
    environment, _, context = make_environment(argv)
    user = ChargerUser(environment)
    user.lifecycle.trace = []
    group = gevent.pool.Group()
    user.start(group)  # the station's loop runs in the user's greenlet, backing off
    for _ in range(100):
        if user.state is UserState.RUNNING:
            break
        gevent.sleep(0.05)
    assert user.state is UserState.RUNNING
    station, runner = user.station, user.runner
    assert station is not None and runner is not None
    station.on_connected()  # this test is its link: the runner only backs off (no CSMS)
    answer_until(station, "BootNotification")
    station.start_session(1, "token_user_001")

    # what the plugin does for a lease its renewal found lost
    assert context.users.pop(station.charger.id) is user
    user.lease_lost()  # the runner is dropped at once; its stop runs when this greenlet yields
    assert user.runner is None and user.state is UserState.LEASE_LOST
    user.lease_lost()  # again: nothing more to drop
    # ... and the CSMS's answer to the start arrives before it does (it asserted here)
    answer_until(station, "TransactionEvent")
    ledger = context.coordinator.ledger()  # type: ignore[union-attr]
    assert [(e.kind, e.charger_id) for e in ledger] == [("start", station.charger.id)], ledger

    assert group.join(timeout=10)  # Locust's stop(force) ran on_stop
    assert user.state is UserState.STOPPED and runner.state is RunnerState.STOPPED
    assert [(a.name, e.name, b.name) for a, e, b in user.lifecycle.trace] == [
        ("NEW", "START", "STARTING"),
        ("STARTING", "LEASE", "LEASING"),
        ("LEASING", "LEASED", "RUNNING"),
        ("RUNNING", "LOSE_LEASE", "LEASE_LOST"),
        ("LEASE_LOST", "STOP", "STOPPING"),
        ("STOPPING", "STOPPED", "STOPPED"),
    ]
    # the station left untouched: its transaction not ended, its id not released by this
    # worker (another may hold it now)
    assert station.evses[1].transaction is not None
    assert station.charger.id in context.coordinator.held()  # type: ignore[union-attr]


def test_a_late_acknowledgement_after_a_lost_lease_goes_to_the_ledger() -> None:
    """lease_lost() cleared the runner while its greenlet could still hand on what the
    CSMS acknowledged: the listener asserted (and the ledger lost the entry)."""
    in_child("a_late_acknowledgement_after_a_lost_lease_goes_to_the_ledger", str(closed_port()))


@pytest.mark.parametrize("profile", ["idle", "sessions"])
def test_a_user_stopped_by_locust_runs_through_its_states(profile: str) -> None:
    in_child("a_user_stopped_by_locust_runs_through_its_states", str(closed_port()), profile)


def a_user_stopped_by_locust_runs_through_its_states(port: str, profile: str) -> None:
    import gevent
    import gevent.pool

    from loadgen.locust.user import ChargerUser, UserState
    from loadgen.runner import RunnerState
    from tests.locust_driver import make_environment

    argv = ["--host", f"ws://127.0.0.1:{port}", "--fleet-size", "2", "--ocpp-profile", profile]
    environment, _, context = make_environment(argv)
    user = ChargerUser(environment)
    user.lifecycle.trace = []
    group = gevent.pool.Group()
    user.start(group)
    for _ in range(100):
        if user.state is UserState.RUNNING:
            break
        gevent.sleep(0.05)
    runner = user.runner
    assert runner is not None and runner.state is not RunnerState.NEW
    gevent.sleep(0.2)
    user.stop()  # Locust's own stop: the user waits (a back-off, a session arrival)
    assert group.join(timeout=15)
    assert user.state is UserState.STOPPED
    assert runner.state in (RunnerState.STOPPED, RunnerState.FAILED)  # no CSMS to flush to
    assert [(a.name, b.name) for a, _, b in user.lifecycle.trace] == [
        ("NEW", "STARTING"),
        ("STARTING", "LEASING"),
        ("LEASING", "RUNNING"),
        ("RUNNING", "STOPPING"),
        ("STOPPING", "STOPPED"),
    ]
    assert not context.users and not context.coordinator.held()  # type: ignore[union-attr]
