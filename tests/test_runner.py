"""StationRunner: a real Station over a real Link, against a hostile CSMS (on gevent)."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import gevent
import pytest
from websockets.asyncio.server import ServerConnection

from loadgen import fleet as fleets
from loadgen.physics import ScaledClock
from loadgen.protocols import OCPP201
from loadgen.runner import RetryBackOff, StationRunner
from loadgen.station import Station, StationConfig
from tests.conftest import start_stub_process
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
            backoff=RetryBackOff(0.1, 0.0, cap=0.2),
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


# -- OCPP 2.0.1's reconnect back-off (pure) -----------------------------------------------


def test_first_reconnects_of_a_thousand_stations_spread_over_the_random_range() -> None:
    """After a mass disconnect the first attempts cover WaitMinimum .. WaitMinimum +
    RandomRange evenly, instead of arriving in one wave."""
    backoff = RetryBackOff(wait_minimum=5, random_range=30, repeat_times=3)
    rng = random.Random(11)
    firsts = [backoff.wait(1, backoff.first_wait(rng)) for _ in range(1000)]
    assert 5 <= min(firsts) < 5.5 and 34.5 < max(firsts) <= 35
    per_bucket = [sum(5 + 3 * i <= f < 8 + 3 * i for f in firsts) for i in range(10)]
    assert all(60 <= n <= 140 for n in per_bucket), per_bucket  # ~100 each: no wave


def test_the_wait_doubles_repeat_times_then_stays_and_never_exceeds_the_cap() -> None:
    backoff = RetryBackOff(wait_minimum=2, random_range=0, repeat_times=2, cap=60)
    first = backoff.first_wait()
    assert [backoff.wait(n, first) for n in range(1, 7)] == [2, 4, 8, 8, 8, 8]
    capped = RetryBackOff(wait_minimum=10, random_range=0, repeat_times=5, cap=30)
    assert [capped.wait(n, 10) for n in range(1, 5)] == [10, 20, 30, 30]
    never = RetryBackOff(wait_minimum=3, random_range=0, repeat_times=0)
    assert [never.wait(n, 3) for n in range(1, 4)] == [3, 3, 3]


def test_the_runner_follows_the_back_off_the_csms_set() -> None:
    station = Station(CHARGER, OCPP201, ScaledClock(1), StationConfig())
    runner = StationRunner(station, "ws://127.0.0.1:1", clock=ScaledClock(1))
    assert runner.backoff == RetryBackOff()  # a real charger's defaults
    data = [
        {
            "component": {"name": "OCPPCommCtrlr"},
            "variable": {"name": "RetryBackOffWaitMinimum"},
            "attributeValue": "1",
        }
    ]
    station.handle_csms_call("SetVariables", {"setVariableData": data})
    assert runner.backoff.wait_minimum == 1


def test_a_blackout_drops_the_connection_tries_nothing_then_reconnects_by_back_off() -> None:
    """--blackout-for D: no socket during D (the attempts that fall in it fail at once,
    and the wait doubles as after a refused connect), then the station boots again."""
    events: list[tuple[str, dict[str, Any]]] = []

    async def friendly(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        reply = {"currentTime": NOW, "interval": 300, "status": "Accepted"}
        await csms.answer(ws, call, reply if call[2] == "BootNotification" else {})

    clock = ScaledClock(1)
    station = Station(CHARGER, OCPP201, clock, StationConfig(meter_interval=600))
    with FakeCsms(friendly) as csms:
        runner = StationRunner(
            station,
            csms.url.rsplit("/", 1)[0],
            clock=clock,
            backoff=RetryBackOff(0.2, 0.0, repeat_times=2),
            on_event=lambda kind, detail: events.append((kind, detail)),
        )
        runner.start()
        wait_for(lambda: station.accepted)
        started = time.monotonic()
        runner.blackout(0.7)
        wait_for(lambda: not station.online)
        runner.retry_now()  # a capacity step's retry does not cut a blackout short
        wait_for(lambda: station.accepted, timeout=5)
        back_after = time.monotonic() - started
        runner.stop(timeout=2)
    assert len(csms.connections) == 2 and runner.connects == 2
    # waits 0.2 (in the blackout), 0.4 (in it too: 0.6 s), 0.8: back at ~1.4 s, not 0.7
    retries = [d for kind, d in events if kind == "retry"]
    assert [r["reason"] for r in retries] == ["blackout"] * 3
    assert [r["delay"] for r in retries] == pytest.approx([0.2, 0.4, 0.8])
    assert 1.3 < back_after < 3.0
    assert [kind for kind, _ in events].count("booted_lost") == 2  # the blackout and the stop


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST from a thread of gevent's pool: the hub (and the station) keeps running."""

    def post() -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            url, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    return gevent.get_hub().threadpool.spawn(post).get(timeout=15)


def test_csms_api_call_get_base_report_then_reset_reboots_after_the_delay(
    tmp_path: Path,
) -> None:
    """End to end against csms_stub: the API's GetBaseReport brings NotifyReport parts to
    the stub, its TriggerMessage a MeterValues per EVSE; its Reset keeps the station away
    for the reboot delay, then it boots again with reason RemoteReset."""
    events: list[tuple[float, str, dict[str, Any]]] = []
    clock = ScaledClock(1)

    def record(kind: str, detail: dict[str, Any]) -> None:
        events.append((time.monotonic(), kind, detail))

    station = Station(
        CHARGER,
        OCPP201,
        clock,
        StationConfig(reboot_delay=1.0, report_items_per_message=10),
        listener=record,
    )
    stub = start_stub_process(tmp_path)
    try:
        runner = StationRunner(
            station, stub.ws_url, clock=clock, backoff=RetryBackOff(0.1, 0.0), on_event=record
        )
        runner.start()
        wait_for(lambda: station.accepted, timeout=10)
        call_url = f"{stub.api_url}/chargers/{CHARGER.id}/call"
        status, body = _post(
            call_url,
            {"action": "GetBaseReport", "payload": {"requestId": 3, "reportBase": "FullInventory"}},
        )
        assert (status, body["reply"]) == (200, {"status": "Accepted"}), body
        parts = -(-len(station.device_model.variables) // 10)
        database = tmp_path / "x.db"

        def stored_parts() -> list[int]:
            with sqlite3.connect(database) as db:
                rows = db.execute(
                    "SELECT detail FROM event_log WHERE action = 'NotifyReport'"
                ).fetchall()
            return sorted(json.loads(detail)["seqNo"] for (detail,) in rows)

        wait_for(lambda: len(stored_parts()) == parts, timeout=10)
        assert stored_parts() == list(range(parts))

        # TriggerMessage MeterValues on an idle station: a reading per EVSE, stored by the
        # stub as readings outside any transaction
        trigger = {"action": "TriggerMessage", "payload": {"requestedMessage": "MeterValues"}}
        status, body = _post(call_url, trigger)
        assert (status, body["reply"]) == (200, {"status": "Accepted"}), body

        def idle_readings() -> int:
            with sqlite3.connect(database) as db:
                query = "SELECT COUNT(*) FROM power_consumption WHERE transaction_id IS NULL"
                return db.execute(query).fetchone()[0]

        wait_for(lambda: idle_readings() == len(station.evses), timeout=10)

        status, body = _post(call_url, {"action": "Reset", "payload": {"type": "Immediate"}})
        assert (status, body["reply"]) == (200, {"status": "Accepted"}), body
        wait_for(lambda: runner.connects == 2 and station.accepted, timeout=10)
        (rebooting,) = [(at, d) for at, kind, d in events if kind == "rebooting"]
        assert 0.75 <= rebooting[1]["delay"] <= 1.25
        assert rebooting[1]["reason"] == "RemoteReset"
        (reconnected,) = [at for at, kind, d in events if kind == "connected" and d["count"] == 2]
        assert reconnected - rebooting[0] >= rebooting[1]["delay"] - 0.05
        boots = [
            d["payload"] for _, kind, d in events
            if kind == "sent" and d["action"] == "BootNotification"
        ]  # fmt: skip
        assert [b["reason"] for b in boots] == ["PowerUp", "RemoteReset"]
        runner.stop(timeout=5)
    finally:
        stub.stop()
