"""csms_stub's persistence under hostile input and database faults (issue 14), over real
sockets against the real SQLite / PostgreSQL.

Each hostile message here is one bug class the fuzzer (benchmarks/fuzz_stub.py) looks for: a
value the schemas allow but the database cannot hold must be refused before it is
acknowledged, and must not stop the writer for everyone else. A database that goes away is
played by a TCP relay the test closes (the machine's PostgreSQL stays up for the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from csms_stub import store as tables
from csms_stub.app import Stub
from csms_stub.store import Store, StoreUnavailable
from loadgen.ocppj import ErrorCode
from loadgen.protocols import OCPP16, OCPP201, Version, v16, v201
from tests import scripted
from tests.aio_client import CallErrorReply, OcppClient
from tests.conftest import (
    Database,
    Dial,
    StubFactory,
    eventually,
    heartbeat_ok,
    metrics_text,
    sample,
    start_stub_process,
    transaction_burst,
)

T0 = 1_780_000_000.0
BIG = 2**31  # one past OCPP's (and PostgreSQL's) 32-bit integer

PROPERTY = ErrorCode.PROPERTY_CONSTRAINT_VIOLATION


def started(transaction_id: str = "tx", **kwargs: Any) -> tuple[str, dict[str, Any]]:
    return v201.transaction_event(
        "Started", transaction_id, 0, T0, "Authorized", evse_id=1, connector_id=1, **kwargs
    )


def hostile_201() -> list[tuple[str, tuple[str, dict[str, Any]], str]]:
    """(bug class, CALL, expected error code) for OCPP 2.0.1."""
    action, huge_evse = started("h1")
    huge_evse["evse"]["id"] = BIG
    _, huge_seq = started("h2")
    huge_seq["seqNo"] = BIG
    _, late = started("h3")
    late["timestamp"] = "9999-12-31T23:59:59-01:00"
    _, early = started("h4")
    early["timestamp"] = "0001-01-01T00:00:00+01:00"
    _, multiplier = started("h5", meter_values=[v201.meter_value(T0, v201.sampled_values(1000.0))])
    multiplier["meterValue"][0]["sampledValue"][0]["unitOfMeasure"]["multiplier"] = 400
    _, huge_reading = started("h6", meter_values=[v201.meter_value(T0, v201.sampled_values(1e300))])
    return [
        ("evse.id 2**31", (action, huge_evse), PROPERTY),
        ("seqNo 2**31", (action, huge_seq), PROPERTY),
        ("NUL in idToken", started("h7", token=v201.id_token("to\u0000ken")), PROPERTY),
        ("date past 9999 in UTC", (action, late), PROPERTY),
        ("date before year 1 in UTC", (action, early), PROPERTY),
        ("multiplier 400", (action, multiplier), PROPERTY),
        ("reading 1e300 Wh", (action, huge_reading), PROPERTY),
        ("NUL in vendorName", v201.boot_notification("ven\u0000dor", "m"), PROPERTY),
        ("NUL in DataTransfer data", v201.data_transfer("v", data="a\u0000b"), PROPERTY),
        ("huge int in DataTransfer data", v201.data_transfer("v", data=[BIG]), PROPERTY),
    ]


def hostile_16() -> list[tuple[str, tuple[str, dict[str, Any]], str]]:
    return [
        ("meterStart 2**31", v16.start_transaction(1, "tag", BIG, T0), PROPERTY),
        ("connectorId 2**31", v16.start_transaction(BIG, "tag", 0, T0), PROPERTY),
        ("transactionId 2**31", v16.stop_transaction(BIG, 10, T0), PROPERTY),
        ("NUL in idTag", v16.authorize("t\u0000g"), PROPERTY),
        (
            "date past 9999 in UTC",
            v16.start_transaction(1, "tag", 0, "9999-12-31T23:59:59-01:00"),
            PROPERTY,
        ),
    ]


@pytest.mark.parametrize(("version", "cases"), [(OCPP201, hostile_201), (OCPP16, hostile_16)])
async def test_values_the_database_cannot_hold_are_refused_before_the_acknowledgement(
    version: Version, cases: Any, stub: Stub, connect: Any, database: Database
) -> None:
    client = await connect("emart_jeju_01", version.subprotocol)
    for name, (action, payload), code in cases():
        with pytest.raises(CallErrorReply) as caught:
            await client.call(action, payload)
        assert caught.value.error_code == version.error_code(code), name
    # An unknown action with a NUL in its name is logged without breaking the log.
    with pytest.raises(CallErrorReply) as caught:
        await client.call("Hack\u0000" + "x" * 100, {})
    assert caught.value.error_code == ErrorCode.NOT_IMPLEMENTED
    await heartbeat_ok(client, version)

    # Nothing of them was stored, and the writer carries on for everyone.
    if version is OCPP201:
        await scripted.session_201(client, "after", [10_000], start_time=T0)
    else:
        reply = await client.call(*v16.start_transaction(1, "tag", 0, T0))
        await client.call(*v16.stop_transaction(reply["transactionId"], 5000, T0 + 60))
    await stub.store.flush(5)
    rows = await database.rows("SELECT transaction_id FROM charger_usage_log")
    assert len(rows) == 1
    assert stub.store.queue_depth == 0 and stub.store.stats.dropped == {}
    text = await metrics_text(stub)
    assert sample(text, "csms_stub_call_errors_total", error_code=version.error_code(PROPERTY))
    assert sample(text, "csms_stub_call_errors_total", error_code="InternalError") == 0


async def test_a_charger_id_the_stub_cannot_store_is_refused_at_the_handshake(
    stub: Stub, dial: Dial
) -> None:
    for charger_id in ("c" * 49, "nul%00id"):
        with pytest.raises(InvalidStatus) as caught:
            await dial(stub, charger_id)
        response = caught.value.response
        assert response.status_code == 400
        assert response.body.startswith(b"csms_stub: the charger id ")
    client = await dial(stub, "c" * 48)
    await heartbeat_ok(client)
    text = await metrics_text(stub)
    assert sample(text, "csms_stub_connections_total", outcome="bad_charger_id") == 2


async def test_a_value_too_long_for_its_column_is_left_out_not_retried_for_ever(
    stub: Stub, database: Database
) -> None:
    """A database whose column is narrower than the code's (made by an older version, or
    by hand): PostgreSQL refuses the longer value (SQLSTATE 22001) and asyncpg reports it
    as a plain driver error, not a DataError. The row is still at fault, so it is left out
    instead of its batch being retried for ever with every write behind it. SQLite does
    not enforce lengths and keeps it."""
    if database.backend == "postgresql":
        await database.execute("ALTER TABLE event_log ALTER COLUMN charger_id TYPE VARCHAR(8)")
    long_id = "c" * 20  # fits the code's 48 (check_row lets it through), not the column's 8
    stub.service.log_event(long_id, "test", None, {})
    for index in range(20):
        stub.service.log_event(f"c{index}", "test", None, {"i": index})
    await stub.store.flush(10)
    rows = await database.rows("SELECT charger_id FROM event_log WHERE kind = 'test'")
    stored = {row["charger_id"] for row in rows}
    assert {f"c{index}" for index in range(20)} <= stored
    assert stub.store.queue_depth == 0
    if database.backend == "postgresql":
        assert long_id not in stored and stub.store.stats.dropped == {"event_log": 1}
    else:
        assert long_id in stored and stub.store.stats.dropped == {}


async def test_a_row_the_database_refuses_is_left_out_and_every_other_row_written(
    stub: Stub, database: Database
) -> None:
    """The writer's last line of defence: a batch failing on its data is bisected."""
    for index in range(50):
        stub.service.log_event(f"c{index}", "test", None, {"i": index})
    # Both pass check_row, yet one breaks NOT NULL and the other lacks a column the batch's
    # statement binds: only the database (driver) can refuse them. The second is fine alone.
    bad = {"charger_id": "bad", "timestamp": None, "kind": "test", "action": None, "detail": None}
    odd = {"charger_id": "odd", "timestamp": datetime.now(UTC), "kind": "test", "action": None}
    stub.store.insert(tables.event_log, bad)
    stub.store.insert(tables.event_log, odd)
    for index in range(50, 100):
        stub.service.log_event(f"c{index}", "test", None, {"i": index})
    await stub.store.flush(10)
    rows = await database.rows("SELECT charger_id FROM event_log WHERE kind = 'test'")
    stored = {row["charger_id"] for row in rows}
    assert len(rows) == 101 and "odd" in stored and "bad" not in stored
    assert stub.store.stats.dropped == {"event_log": 1}
    assert stub.store.queue_depth == 0
    text = await metrics_text(stub)
    assert sample(text, "csms_stub_db_write_failures_total", table="event_log") == 1


# -- a database that goes away --------------------------------------------------------------


class Relay:
    """A TCP relay to PostgreSQL that the test can cut (every connection) and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@pytest.fixture
async def relay(database: Database) -> AsyncIterator[tuple[Relay, str]]:
    """A relay to the test's PostgreSQL, and the database URL through it."""
    assert database.backend == "postgresql", "the relay plays a database server"
    url = database.url.replace("127.0.0.1:5432", "127.0.0.1:{port}")
    assert "{port}" in url, database.url
    relay = Relay(5432)
    await relay.start()
    yield relay, url.format(port=relay.port)
    with contextlib.suppress(Exception):
        await relay.cut()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_a_database_outage_keeps_every_row_answers_503_and_stops_in_bounded_time(
    relay: tuple[Relay, str], make_stub: StubFactory, dial: Dial, database: Database
) -> None:
    proxy, url = relay
    stub = await make_stub(database_url=url, store_timeout=1.0, shutdown_timeout=3.0)
    client = await dial(stub, "emart_jeju_01")
    await proxy.cut()
    # Still answered (not --durable): the rows wait in the queue, none is dropped.
    await scripted.session_201(client, "during-outage", [10_000], start_time=T0)
    async with httpx.AsyncClient(base_url=stub.api_url) as http:
        loop = asyncio.get_running_loop()
        began = loop.time()
        response = await http.get("/transactions", timeout=30)
        assert loop.time() - began < 5
    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"
    await eventually(lambda: stub.store.stats.failures >= 2, timeout=10)
    assert stub.store.stats.dropped == {}
    assert stub.store.queue_depth > 0

    began = loop.time()
    unwritten = await stub.stop()
    assert loop.time() - began < 6
    assert unwritten["transaction_event"] == 3 and unwritten["charger_usage_log"] == 1
    assert await database.rows("SELECT * FROM transaction_event") == []


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_writes_resume_after_an_outage_with_nothing_lost(
    relay: tuple[Relay, str], make_stub: StubFactory, dial: Dial, database: Database
) -> None:
    proxy, url = relay
    stub = await make_stub(database_url=url)
    client = await dial(stub, "emart_jeju_01")
    await proxy.cut()
    await scripted.session_201(client, "across-outage", [10_000, 20_000], start_time=T0)
    await eventually(lambda: stub.store.stats.failures >= 1, timeout=10)
    await proxy.start()
    await stub.store.flush(30)
    rows = await database.rows("SELECT seq_no FROM transaction_event ORDER BY seq_no")
    assert [row["seq_no"] for row in rows] == [0, 1, 2, 3]
    assert stub.store.stats.dropped == {}


# -- --durable --------------------------------------------------------------------------------


async def test_durable_acknowledges_only_what_is_committed(
    make_stub: StubFactory, dial: Dial, database: Database
) -> None:
    # Without --durable the row is still queued when the reply arrives (a batch every 30 s);
    # with it the reply waits for the next batch.
    for durable, expected, interval in ((False, 0, 30.0), (True, 1, 0.3)):
        stub = await make_stub(durable=durable, flush_interval=interval)
        client = await dial(stub, f"durable_{durable}")
        await client.call(*started(f"tx-{durable}"))
        rows = await database.rows(
            "SELECT * FROM transaction_event WHERE transaction_id = :t", t=f"tx-{durable}"
        )
        assert len(rows) == expected, durable


async def test_durable_survives_sigkill(database: Database, tmp_path: Any) -> None:
    """Every TransactionEvent acknowledged before SIGKILL is in the database."""
    stub = start_stub_process(tmp_path, *database.stub_args(), "--durable")
    acknowledged = 0
    try:
        async with await OcppClient.connect(f"{stub.ws_url}/killed", "ocpp2.0.1") as client:
            for call in transaction_burst("killed-tx", 200, T0):
                await client.call(*call)
                acknowledged += 1
            stub.process.send_signal(signal.SIGKILL)
        assert stub.process.wait(timeout=10) == -signal.SIGKILL
    finally:
        stub.stop()
    (count,) = await database.rows("SELECT COUNT(*) AS n FROM transaction_event")
    assert count["n"] == acknowledged == 200


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_sigterm_with_the_database_gone_exits_1_naming_what_was_not_written(
    relay: tuple[Relay, str], database: Database, tmp_path: Any
) -> None:
    proxy, url = relay
    # In a thread: the relay it connects through runs on this event loop.
    stub = await asyncio.to_thread(
        start_stub_process,
        tmp_path,
        "--database-url",
        url.replace("+asyncpg", ""),
        "--database-schema",
        str(database.schema),
        "--shutdown-timeout",
        "2",
    )
    try:
        async with await OcppClient.connect(f"{stub.ws_url}/gone", "ocpp2.0.1") as client:
            await heartbeat_ok(client)
            await proxy.cut()
            await client.call(*started("gone-tx"))
            await asyncio.sleep(0.3)
            stub.process.send_signal(signal.SIGTERM)
            loop = asyncio.get_running_loop()
            began = loop.time()
            assert await asyncio.to_thread(stub.process.wait, 15) == 1
            assert loop.time() - began < 8
    finally:
        stub.stop()
    log = stub.log()
    assert "stopped without writing" in log and "transaction_event 1" in log
    assert log.count("database write failed") <= 2  # quiet: one line per interval


async def test_store_flush_and_fetch_are_bounded(database: Database) -> None:
    store = Store(database.url, schema=database.schema, flush_interval=0.01)
    await store.start()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.fetch(tables.event_log.select(), 1.0)
