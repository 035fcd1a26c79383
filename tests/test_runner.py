"""StationRunner: a real Station over a real Link, against a hostile CSMS (on gevent)."""

from __future__ import annotations

import asyncio
from typing import Any

import gevent
from websockets.asyncio.server import ServerConnection

from loadgen import fleet as fleets
from loadgen.physics import ScaledClock
from loadgen.protocols import OCPP201
from loadgen.runner import Backoff, StationRunner
from loadgen.station import Station, StationConfig
from tests.fake_csms import FakeCsms, wait_for

CHARGER = fleets.load(fleets.SEED_FLEET).chargers["emart_jeju_01"]
NOW = "2026-01-01T00:00:00.000Z"


async def hostile(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
    """Boots fine, then answers everything else as badly as it can."""
    action = call[2]
    if action == "BootNotification":
        await csms.answer(ws, call, {"currentTime": NOW, "interval": 1, "status": "Accepted"})
    elif action == "StatusNotification":
        await ws.send('[3, "' + call[1] + '", "not an object"]')  # a garbled CALLRESULT
    elif action == "TransactionEvent":
        await csms.error(ws, call, "InternalError", "database on fire")
    elif action == "Heartbeat":
        await asyncio.sleep(5)  # never in time
    await ws.send("}{ garbage")  # and some noise after every CALL


def test_station_survives_a_hostile_csms_and_reconnects() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    clock = ScaledClock(10)
    station = Station(
        CHARGER,
        OCPP201,
        clock,
        StationConfig(meter_interval=2, max_attempts=2),
        listener=lambda kind, detail: events.append((kind, detail)),
    )
    with FakeCsms(hostile) as csms:
        runner = StationRunner(
            station,
            csms.url.rsplit("/", 1)[0],
            clock=clock,
            backoff=Backoff(initial=0.1, cap=0.2),
            call_timeout=0.3,
            on_event=lambda kind, detail: events.append((kind, detail)),
        )
        runner.start()
        wait_for(lambda: station.accepted, timeout=10)
        station.start_session(1, "token_user_001")
        runner.wake()
        # Every TransactionEvent is refused twice, then given up (and reported).
        wait_for(lambda: sum(kind == "dropped" for kind, _ in events) >= 3, timeout=15)
        # Garbage did not kill the connection; a heartbeat timed out and nothing hung.
        assert runner.connects == 1 and station.online
        csms.close_with(1011, "going down hard")
        wait_for(lambda: runner.connects == 2 and station.accepted, timeout=10)
        station.stop_session(1)
        runner.stop(timeout=5)
    dropped = [detail for kind, detail in events if kind == "dropped"]
    assert {d["action"] for d in dropped} == {"TransactionEvent"}
    assert {d["error_code"] for d in dropped} == {"InternalError"}
    assert any(kind == "disconnected" and detail["code"] == 1011 for kind, detail in events)
    answered = csms.frames()
    assert sum(1 for frame in answered if frame[0] == 2 and frame[2] == "BootNotification") == 2
    # The garbage was answered as OCPP-J says (a CALLERROR with id "-1"), never crashed.
    assert any(frame[:3] == [4, "-1", "RpcFrameworkError"] for frame in answered)
    assert not gevent.getcurrent().dead


def test_run_in_a_killed_greenlet_resumes_in_stop_and_ends_the_transaction() -> None:
    """run() is how a Locust user runs its station without a second greenlet: Locust kills
    the user (maybe mid-CALL), then its on_stop calls stop() in the same greenlet."""
    held: list[str] = []

    async def slow_first_event(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        action = call[2]
        if action == "BootNotification":
            reply = {"currentTime": NOW, "interval": 300, "status": "Accepted"}
        elif action == "Heartbeat":
            reply = {"currentTime": NOW}
        else:
            reply = {}
        if action == "TransactionEvent" and not held:
            held.append(call[1])
            await asyncio.sleep(0.5)  # the user is killed while this CALL waits
        await csms.answer(ws, call, reply)

    clock = ScaledClock(1)
    station = Station(CHARGER, OCPP201, clock, StationConfig(meter_interval=600))
    with FakeCsms(slow_first_event) as csms:
        runner = StationRunner(station, csms.url.rsplit("/", 1)[0], clock=clock, call_timeout=5)

        def user() -> None:  # what Locust does with ChargerUser.live and on_stop
            try:
                runner.run()
            except gevent.GreenletExit:
                runner.stop(timeout=5)

        greenlet = gevent.spawn(user)
        wait_for(lambda: station.accepted)
        station.start_session(1, "token_user_001")
        runner.wake()
        wait_for(lambda: held and held[0] in csms.open_calls)
        greenlet.kill(block=True, timeout=10)
        assert greenlet.dead and runner.link is not None and not runner.link.connected
    events = [
        frame[3] for frame in csms.frames() if frame[0] == 2 and frame[2] == "TransactionEvent"
    ]
    # Started cut short, sent again (same seqNo) on the same connection, then Ended.
    assert [(e["eventType"], e["seqNo"]) for e in events] == [
        ("Started", 0),
        ("Started", 0),
        ("Ended", 1),
    ]
    assert runner.connects == 1 and len(csms.connections) == 1
    assert station.queue_depth == 0


def test_a_boot_reply_the_station_cannot_use_fails_the_call_not_the_runner() -> None:
    """benchmarks/fuzz_csms.py: {"status": 42} or an interval "soon" (no --ocpp-validate)
    raised out of the station and ended the runner's greenlet for good."""
    boots: list[str] = []

    async def broken_then_fine(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        if call[2] == "BootNotification":
            boots.append(call[1])
            if len(boots) == 1:
                await csms.answer(ws, call, {"currentTime": NOW, "interval": "soon"})
                return
            await csms.answer(ws, call, {"currentTime": NOW, "interval": 300, "status": "Accepted"})
        else:
            await csms.answer(ws, call, {})

    class Errors:
        def __init__(self) -> None:
            self.kinds: list[str] = []

        def protocol_error(self, kind: str) -> None:
            self.kinds.append(kind)

        def __getattr__(self, name: str) -> Any:
            return lambda *args: None

    clock = ScaledClock(100)  # the boot retry interval (30 s) passes in 0.3 s
    station = Station(CHARGER, OCPP201, clock, StationConfig())
    errors = Errors()
    with FakeCsms(broken_then_fine) as csms:
        runner = StationRunner(station, csms.url.rsplit("/", 1)[0], clock=clock, observer=errors)
        greenlet = runner.start()
        wait_for(lambda: station.accepted, timeout=5)
        runner.stop(timeout=2)
    assert len(boots) == 2 and errors.kinds == ["invalid_result"]
    assert greenlet.exception is None and runner.connects == 1
