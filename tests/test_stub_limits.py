"""csms_stub's capacity ceiling over real sockets: --max-connections and --slow-above.

These knobs give a capacity search a CSMS whose limit is known in advance. Timings are
asserted as lower bounds (the machine is shared); "not held up" is shown by ordering or by
comfortable margins, never by tight upper bounds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from csms_stub.__main__ import build_parser, config_from_args
from csms_stub.app import Stub
from loadgen import ocppj
from loadgen.aio_client import OcppClient
from loadgen.protocols import OCPP16
from tests.conftest import (
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


# -- the command line ------------------------------------------------------------------------


def test_options_parse_into_the_config() -> None:
    parse = build_parser().parse_args
    config = config_from_args(parse([]))
    assert (config.max_connections, config.slow_above, config.slow_ms_per_charger) == (0, 0, 0)
    assert config.slow_max_ms == 60_000
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
    for option in ("--max-connections", "--slow-above", "--slow-ms-per-charger"):
        with pytest.raises(SystemExit):
            parse([option, "-1"])


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
