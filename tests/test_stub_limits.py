"""csms_stub's capacity ceiling over real sockets: --max-connections, --max-boot-rate,
--slow-above and --error-ratio / --errors-above.

These knobs give a capacity search a CSMS whose limit is known in advance. Timings are
asserted as lower bounds (the machine is shared); "not held up" is shown by ordering or by
comfortable margins, never by tight upper bounds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from csms_stub.__main__ import build_parser, config_from_args
from csms_stub.app import Stub
from loadgen import ocppj
from loadgen.ocppj import ErrorCode
from loadgen.protocols import OCPP16, v201
from loadgen.protocols.v201 import boot_notification
from tests.aio_client import CallErrorReply, OcppClient
from tests.conftest import (
    Database,
    Dial,
    StubFactory,
    closed,
    eventually,
    heartbeat_ok,
    metrics_text,
    sample,
    start_stub_process,
)


async def refused(dial: Dial, stub: Stub, charger_id: str) -> bytes:
    """Dial ``charger_id``, expect the handshake to be refused with 503; the body."""
    with pytest.raises(InvalidStatus) as caught:
        await dial(stub, charger_id)
    response = caught.value.response
    assert response.status_code == 503
    return response.body or b""


async def refusals(stub: Stub) -> float:
    return sample(
        await metrics_text(stub), "csms_stub_connections_total", outcome="max_connections"
    )


async def timed_heartbeat(client: OcppClient) -> float:
    started = time.perf_counter()
    await heartbeat_ok(client)
    return time.perf_counter() - started


# -- --max-connections ---------------------------------------------------------------------


async def test_max_connections_refuses_with_503_until_a_slot_frees(
    make_stub: StubFactory, dial: Dial
) -> None:
    stub = await make_stub(max_connections=3)
    first, second, third = [await dial(stub, f"limit_{i}") for i in (1, 2, 3)]
    for client in (first, second, third):
        await heartbeat_ok(client)

    body = await refused(dial, stub, "limit_4")
    assert body == b"csms_stub: --max-connections 3 reached\n"
    assert "limit_4" not in stub.service.connections

    # A charger replacing its own connection at the cap is let in, and takes no extra slot.
    again = await dial(stub, "limit_1", "ocpp1.6")
    assert (await closed(first))[0] == 4000
    await heartbeat_ok(again, OCPP16)
    assert len(stub.service.connections) == 3
    await refused(dial, stub, "limit_4")

    # A clean close frees exactly one slot.
    await second.close()
    await eventually(lambda: len(stub.service.connections) == 2)
    fourth = await dial(stub, "limit_4")
    await heartbeat_ok(fourth)
    await refused(dial, stub, "limit_5")

    # So does an abnormal one (the TCP connection dropped, no close frame).
    third.ws.transport.abort()
    await eventually(lambda: len(stub.service.connections) == 2)
    fifth = await dial(stub, "limit_5")
    await heartbeat_ok(fifth)
    await refused(dial, stub, "limit_6")

    text = await metrics_text(stub)
    assert sample(text, "csms_stub_connections_total", outcome="max_connections") == 4
    assert sample(text, "csms_stub_chargers_connected") == 3
    assert sample(text, "csms_stub_connections_total", outcome="accepted") == 6


async def test_concurrent_handshakes_do_not_squeeze_past_the_cap(
    make_stub: StubFactory, dial: Dial
) -> None:
    stub = await make_stub(max_connections=3)
    results = await asyncio.gather(
        *(dial(stub, f"rush_{i}") for i in range(12)), return_exceptions=True
    )
    clients = [result for result in results if isinstance(result, OcppClient)]
    errors = [result for result in results if not isinstance(result, OcppClient)]
    assert len(clients) == 3
    assert all(
        isinstance(error, InvalidStatus) and error.response.status_code == 503 for error in errors
    ), errors
    for client in clients:
        await heartbeat_ok(client)
    assert len(stub.service.connections) == 3
    assert await refusals(stub) == 9


async def test_a_refused_or_failed_handshake_keeps_no_slot(
    make_stub: StubFactory, dial: Dial
) -> None:
    """A handshake let through but closed before it completes must not hold a slot."""
    stub = await make_stub(max_connections=1)
    # No supported subprotocol: the handshake completes, then the stub closes it (1002).
    await closed(await dial(stub, "limit_1", "ocpp1.5"))
    # A raw HTTP request that hangs up before the stub answers.
    _, writer = await asyncio.open_connection("127.0.0.1", stub.port)
    writer.write(
        b"GET /limit_2 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: ocpp2.0.1\r\n\r\n"
    )
    writer.transport.abort()
    await eventually(lambda: not stub.ocpp._opening)
    await heartbeat_ok(await dial(stub, "limit_3"))
    await refused(dial, stub, "limit_4")


# -- --slow-above / --slow-ms-per-charger ----------------------------------------------------


async def test_replies_slow_down_with_the_number_of_chargers(
    make_stub: StubFactory, dial: Dial
) -> None:
    stub = await make_stub(slow_above=2, slow_ms_per_charger=100)
    clients = [await dial(stub, f"slow_{i}") for i in range(2)]
    assert await timed_heartbeat(clients[0]) < 0.25  # at the threshold: no added delay
    assert sample(await metrics_text(stub), "csms_stub_reply_delay_seconds") == 0

    clients += [await dial(stub, f"slow_{i}") for i in range(2, 5)]
    assert await timed_heartbeat(clients[0]) >= 0.3  # (5 - 2) * 100 ms
    assert await timed_heartbeat(clients[4]) >= 0.3
    assert sample(await metrics_text(stub), "csms_stub_reply_delay_seconds") == pytest.approx(0.3)

    # Back under the threshold, replies are immediate again.
    for client in clients[2:]:
        await client.close()
    await eventually(lambda: len(stub.service.connections) == 2)
    assert await timed_heartbeat(clients[1]) < 0.25


async def test_slow_max_ms_caps_the_delay(make_stub: StubFactory, dial: Dial) -> None:
    stub = await make_stub(slow_above=0, slow_ms_per_charger=10_000, slow_max_ms=300)
    client = await dial(stub, "slow_1")
    elapsed = await timed_heartbeat(client)
    assert 0.3 <= elapsed < 5  # capped at 300 ms, far from 10 s
    assert sample(await metrics_text(stub), "csms_stub_reply_delay_seconds") == pytest.approx(0.3)


async def test_a_delayed_reply_holds_up_no_one_else(make_stub: StubFactory, dial: Dial) -> None:
    stub = await make_stub(slow_above=0, slow_ms_per_charger=1000)
    one, two = await dial(stub, "slow_1"), await dial(stub, "slow_2")  # 2 s per reply
    started = time.perf_counter()
    calls = [asyncio.create_task(heartbeat_ok(client)) for client in (one, two)]
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{stub.api_url}/healthz")
    assert response.status_code == 200
    assert not any(call.done() for call in calls)  # the loop answered while both waited
    await asyncio.gather(*calls)
    elapsed = time.perf_counter() - started
    assert elapsed >= 2.0
    assert elapsed < 3.8, "the two connections' delays ran one after the other"


async def test_delayed_replies_keep_their_order_on_a_connection(
    make_stub: StubFactory, dial: Dial
) -> None:
    """A later reply due sooner (the load dropped) still waits for the one before it;
    CALLERRORs are delayed like CALLRESULTs."""
    stub = await make_stub(slow_above=0, slow_ms_per_charger=1000)
    client, other = await dial(stub, "slow_1"), await dial(stub, "slow_2")
    started = time.perf_counter()
    await client.send_raw(ocppj.Call("first", "Heartbeat", {}).encode())  # due in 2 s
    await other.close()
    await eventually(lambda: stub.ocpp.reply_delay == 1.0)
    await client.send_raw(ocppj.Call("second", "FlyToTheMoon", {}).encode())  # due in 1 s
    replies = [await client.next_unmatched(timeout=10) for _ in range(2)]
    assert time.perf_counter() - started >= 2.0
    assert [reply.message_id for reply in replies] == ["first", "second"]
    assert isinstance(replies[0], ocppj.CallResult)
    assert isinstance(replies[1], ocppj.CallError)
    await heartbeat_ok(client)  # and the connection carries on


# -- --max-boot-rate -------------------------------------------------------------------------


async def timed_boot(client: OcppClient) -> float:
    """Seconds from sending a BootNotification to its Accepted reply."""
    started = time.perf_counter()
    reply = await client.call(*boot_notification("ABB", "Terra"))
    assert reply["status"] == "Accepted"
    return time.perf_counter() - started


async def test_boots_are_answered_at_the_rate_in_arrival_order(
    make_stub: StubFactory, dial: Dial
) -> None:
    stub = await make_stub(max_boot_rate=10)
    clients = [await dial(stub, f"boot_{i}") for i in range(8)]
    other = await dial(stub, "boot_other")
    started = time.perf_counter()
    boots = [asyncio.create_task(timed_boot(client)) for client in clients]
    await asyncio.sleep(0.05)
    # replies of other actions and other connections are not held up by the queue
    assert await timed_heartbeat(other) < 0.25
    waits = await asyncio.gather(*boots)
    assert time.perf_counter() - started >= 0.7  # 8 boots at 10/s: the last after 0.7 s
    assert waits == sorted(waits), "boots were not answered in arrival order"
    assert waits[0] < 0.25
    text = await metrics_text(stub)
    assert sample(text, "csms_stub_boots_queued_total") == 7  # all but the first waited


async def test_boots_within_the_rate_do_not_wait(make_stub: StubFactory, dial: Dial) -> None:
    stub = await make_stub(max_boot_rate=20)
    client = await dial(stub, "boot_slow_1")
    for _ in range(3):
        assert await timed_boot(client) < 0.25
        await asyncio.sleep(0.1)  # 10/s, under 20/s
    assert sample(await metrics_text(stub), "csms_stub_boots_queued_total") == 0


# -- --error-ratio / --errors-above ----------------------------------------------------------

INJECTED = "csms_stub --error-ratio"


async def injected(client: OcppClient, action: str = "Heartbeat", payload: Any = None) -> None:
    """Send one CALL; expect the injected CALLERROR InternalError."""
    with pytest.raises(CallErrorReply) as caught:
        await client.call(action, {} if payload is None else payload)
    assert (caught.value.error_code, caught.value.description) == (
        ErrorCode.INTERNAL_ERROR,
        INJECTED,
    )


async def answered(client: OcppClient) -> bool:
    """One Heartbeat: True for a CALLRESULT, False for the injected CALLERROR."""
    try:
        await heartbeat_ok(client)
    except CallErrorReply as exc:
        assert (exc.error_code, exc.description) == (ErrorCode.INTERNAL_ERROR, INJECTED)
        return False
    return True


async def test_error_ratio_1_answers_every_call_with_internal_error(
    make_stub: StubFactory, dial: Dial
) -> None:
    stub = await make_stub(error_ratio=1)
    client, old = await dial(stub, "err_1"), await dial(stub, "err_2", "ocpp1.6")
    for _ in range(10):
        await injected(client)
        await injected(old)
    # Only CALLs the stub would handle: a broken one still gets its own error.
    await client.send_raw(ocppj.Call("moon", "FlyToTheMoon", {}).encode())
    reply = await client.next_unmatched()
    assert isinstance(reply, ocppj.CallError)
    assert reply.error_code == ErrorCode.NOT_IMPLEMENTED
    text = await metrics_text(stub)
    for version in ("2.0.1", "1.6"):
        labels = {"version": version, "action": "Heartbeat"}
        assert sample(text, "csms_stub_messages_total", **labels, outcome="injected_error") == 10
        assert sample(text, "csms_stub_messages_total", **labels, outcome="result") == 0
    assert sample(text, "csms_stub_call_errors_total", error_code="InternalError") == 20


async def test_error_ratio_is_a_share_of_the_calls(make_stub: StubFactory, dial: Dial) -> None:
    stub = await make_stub(error_ratio=0.5, error_seed=1234)
    client = await dial(stub, "err_1")
    outcomes = [await answered(client) for _ in range(200)]
    errors = outcomes.count(False)
    assert 60 <= errors <= 140, errors
    text = await metrics_text(stub)
    labels = {"version": "2.0.1", "action": "Heartbeat"}
    assert sample(text, "csms_stub_messages_total", **labels, outcome="injected_error") == errors
    assert sample(text, "csms_stub_messages_total", **labels, outcome="result") == 200 - errors
    # The same seed draws the same CALLs.
    again = await make_stub(error_ratio=0.5, error_seed=1234)
    client = await dial(again, "err_1")
    assert [await answered(client) for _ in range(200)] == outcomes


async def test_errors_start_above_the_threshold(make_stub: StubFactory, dial: Dial) -> None:
    stub = await make_stub(error_ratio=1, errors_above=2)
    clients = [await dial(stub, f"err_{i}") for i in range(2)]
    for client in clients:
        for _ in range(5):
            await heartbeat_ok(client)  # at the threshold: no errors

    clients.append(await dial(stub, "err_2"))
    for client in clients:  # the third connection makes every charger's CALLs fail
        for _ in range(5):
            await injected(client)

    # Back at the threshold, every CALL is answered again.
    await clients[2].close()
    await eventually(lambda: len(stub.service.connections) == 2)
    for client in clients[:2]:
        await heartbeat_ok(client)
    text = await metrics_text(stub)
    labels = {"version": "2.0.1", "action": "Heartbeat"}
    assert sample(text, "csms_stub_messages_total", **labels, outcome="injected_error") == 15
    assert sample(text, "csms_stub_messages_total", **labels, outcome="result") == 12


async def test_a_refused_call_stores_nothing_and_the_stub_stays_healthy(
    make_stub: StubFactory, dial: Dial, database: Database
) -> None:
    """A refused BootNotification leaves the charger unbooted, a refused TransactionEvent
    leaves no trace; resent once errors stop, each is handled once."""
    stub = await make_stub(error_ratio=1, errors_above=1)
    first = await dial(stub, "emart_jeju_01")
    boot = v201.boot_notification("ABB", "ABB Terra 53", "SN-emart_jeju_02-001", "1.0.0")
    assert (await first.call(*boot))["status"] == "Accepted"
    second = await dial(stub, "emart_jeju_02")  # two connected: above the threshold
    started = v201.transaction_event(
        "Started",
        "inj-1",
        0,
        time.time(),
        "Authorized",
        evse_id=1,
        connector_id=1,
        meter_values=[v201.meter_value(time.time(), v201.sampled_values(1000, 0))],
    )
    await injected(second, *boot)
    await injected(second, *started)
    async with httpx.AsyncClient(base_url=stub.api_url) as http:
        assert (await http.get("/healthz")).status_code == 200
        charger = (await http.get("/chargers/emart_jeju_02")).json()
        assert charger["connected"] is True
    assert stub.service.chargers["emart_jeju_02"].boot_status is None
    await stub.store.flush()
    refused_rows = await database.rows(
        "SELECT kind FROM event_log WHERE charger_id = 'emart_jeju_02' AND kind <> 'connect'"
    )
    assert refused_rows == []
    assert await database.rows("SELECT * FROM transaction_event") == []
    (info,) = await database.rows(
        "SELECT boot_count FROM charger_info WHERE charger_id = 'emart_jeju_02'"
    )
    assert info["boot_count"] == 0

    # Errors stop at the threshold: the charger's resends are handled, and stored once.
    await first.close()
    await eventually(lambda: len(stub.service.connections) == 1)
    assert (await second.call(*boot))["status"] == "Accepted"
    await second.call(*started)
    await second.call(*started)  # a duplicate seqNo: answered, stored once
    await stub.store.flush()
    events = await database.rows("SELECT seq_no FROM transaction_event")
    assert [row["seq_no"] for row in events] == [0]
    (info,) = await database.rows(
        "SELECT boot_count FROM charger_info WHERE charger_id = 'emart_jeju_02'"
    )
    assert info["boot_count"] == 1


# -- the command line ------------------------------------------------------------------------


def test_options_parse_into_the_config() -> None:
    parse = build_parser().parse_args
    config = config_from_args(parse([]))
    assert (config.max_connections, config.slow_above, config.slow_ms_per_charger) == (0, 0, 0)
    assert config.slow_max_ms == 60_000
    assert config.max_boot_rate == 0
    assert config_from_args(parse(["--max-boot-rate", "12.5"])).max_boot_rate == 12.5
    config = config_from_args(
        parse(
            [
                "--max-connections",
                "50",
                "--slow-above",
                "20",
                "--slow-ms-per-charger",
                "2.5",
                "--slow-max-ms",
                "1000",
            ]
        )
    )
    assert config.max_connections == 50
    assert config.slow_above == 20
    assert config.slow_ms_per_charger == 2.5
    assert config.slow_max_ms == 1000
    for option in (
        "--max-connections",
        "--max-boot-rate",
        "--slow-above",
        "--slow-ms-per-charger",
    ):
        with pytest.raises(SystemExit):
            parse([option, "-1"])


def test_error_options_parse_and_refuse_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    parse = build_parser().parse_args
    config = config_from_args(parse([]))
    assert (config.error_ratio, config.errors_above, config.error_seed) == (0, 0, None)
    config = config_from_args(parse(["--error-ratio", "0.25", "--errors-above", "10"]))
    assert (config.error_ratio, config.errors_above) == (0.25, 10)
    assert config_from_args(parse(["--error-ratio", "1"])).error_ratio == 1
    bad = {
        ("--error-ratio", "1.5"): "argument --error-ratio: must be from 0 to 1, not 1.5",
        ("--error-ratio", "-0.1"): "argument --error-ratio: must be from 0 to 1, not -0.1",
        ("--error-ratio", "nan"): "argument --error-ratio: must be from 0 to 1, not nan",
        ("--error-ratio", "lots"): "argument --error-ratio: invalid float value: 'lots'",
        ("--errors-above", "-1"): "argument --errors-above: must be 0 or more, not -1",
        ("--errors-above", "2.5"): "argument --errors-above: invalid int value: '2.5'",
    }
    for argv, message in bad.items():
        with pytest.raises(SystemExit) as caught:
            parse(list(argv))
        assert caught.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"csms_stub: error: {message}"


async def test_the_command_enforces_max_connections(tmp_path: Path) -> None:
    process = await asyncio.to_thread(start_stub_process, tmp_path, "--max-connections", "1")
    try:
        async with await OcppClient.connect(f"{process.ws_url}/cli_1") as client:
            await heartbeat_ok(client)
            with pytest.raises(InvalidStatus) as caught:
                await OcppClient.connect(f"{process.ws_url}/cli_2")
            assert caught.value.response.status_code == 503
            assert caught.value.response.body == b"csms_stub: --max-connections 1 reached\n"
    finally:
        await asyncio.to_thread(process.stop)
    assert "capacity ceiling: at most 1 connections" in process.log()


async def test_the_command_injects_errors(tmp_path: Path) -> None:
    process = await asyncio.to_thread(
        start_stub_process, tmp_path, "--error-ratio", "1", "--errors-above", "1"
    )
    try:
        async with await OcppClient.connect(f"{process.ws_url}/cli_1") as client:
            await heartbeat_ok(client)
            async with await OcppClient.connect(f"{process.ws_url}/cli_2") as other:
                await injected(client)
                await injected(other)
    finally:
        await asyncio.to_thread(process.stop)
    assert (
        "capacity ceiling: CALLERROR InternalError for 1 of CALLs while more than 1 chargers"
        in process.log()
    )
