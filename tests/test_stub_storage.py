"""The seed's database checks against csms_stub, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime

import pytest

from loadgen.protocols import v201
from tests import scripted
from tests.aio_client import OcppClient
from tests.conftest import Database, eventually, start_stub_process, transaction_burst

T0 = 1_780_000_000.0  # a fixed simulated start time: timestamps in the tables are exact


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


async def test_201_session_fills_the_three_tables(
    stub, connect, database: Database, seed_fleet
) -> None:
    client = await connect("emart_jeju_01")
    assert (await scripted.boot(client, seed_fleet.chargers["emart_jeju_01"]))["status"] == (
        "Accepted"
    )
    await client.call(*v201.heartbeat())
    # 0 -> 100 kW, held, then tapering as in seed scenario 2.
    power = [25_000, 50_000, 100_000, 100_000, 100_000, 80_000, 40_000]
    record = await scripted.session_201(client, "abc12345", power, start_wh=12_000, start_time=T0)
    await stub.store.flush()

    (usage,) = await database.rows("SELECT * FROM charger_usage_log")
    assert usage["charger_id"] == "emart_jeju_01"
    assert usage["station_id"] == "emart_jeju_main"
    assert usage["transaction_id"] == "abc12345"
    assert usage["id_token"] == "token_user_001"
    assert usage["energy_consumed"] == pytest.approx(record.energy_kwh, abs=1e-3)
    assert usage["cost"] == pytest.approx(record.energy_kwh * 150, abs=0.01)
    assert usage["stop_reason"] == "Local"
    assert usage["event_count"] == len(power) + 2
    start, end = usage["start_time"], usage["end_time"]
    start = start if isinstance(start, datetime) else datetime.fromisoformat(start)
    end = end if isinstance(end, datetime) else datetime.fromisoformat(end)
    assert start.replace(tzinfo=UTC) == at(T0)
    assert end.replace(tzinfo=UTC) == at(record.end_time)
    # The CSMS returned the running cost, and the final one on Ended.
    assert record.replies[-1]["totalCost"] == pytest.approx(usage["cost"], abs=0.01)
    assert [r["totalCost"] for r in record.replies[1:]] == sorted(
        r["totalCost"] for r in record.replies[1:]
    )

    rows = await database.rows(
        "SELECT power_reading, energy_register_wh FROM power_consumption "
        "WHERE transaction_id = 'abc12345' ORDER BY timestamp"
    )
    assert [row["power_reading"] for row in rows] == [0, *power, 0]
    registers = [row["energy_register_wh"] for row in rows]
    assert registers == sorted(registers)
    assert registers[-1] - registers[0] == pytest.approx(record.energy_kwh * 1000, abs=1)

    (info,) = await database.rows("SELECT * FROM charger_info WHERE charger_id = 'emart_jeju_01'")
    assert info["boot_count"] == 1 and info["session_count"] == 1
    assert info["energy_total_kwh"] == pytest.approx(record.energy_kwh, abs=1e-3)
    assert info["serial_number"] == "SN-emart_jeju_01-001"
    assert info["last_heartbeat_at"] is not None
    kinds = {
        row["kind"]
        for row in await database.rows(
            "SELECT kind FROM event_log WHERE charger_id = 'emart_jeju_01'"
        )
    }
    assert {"connect", "boot", "heartbeat", "status"} <= kinds


async def test_duplicate_seq_no_is_stored_once(stub, connect, database: Database) -> None:
    client = await connect("emart_jeju_02")
    started = v201.transaction_event(
        "Started",
        "dup-1",
        0,
        T0,
        "Authorized",
        evse_id=1,
        connector_id=1,
        meter_values=[v201.meter_value(T0, v201.sampled_values(1000, 0))],
    )
    updated = v201.transaction_event(
        "Updated",
        "dup-1",
        1,
        T0 + 5,
        "MeterValuePeriodic",
        meter_values=[v201.meter_value(T0 + 5, v201.sampled_values(1500, 50_000))],
    )
    await client.call(*started)
    first = await client.call(*updated)
    again = await client.call(*updated)  # e.g. a retry after a lost reply
    replayed = await client.call(*started)
    assert first == again and first["totalCost"] == pytest.approx(75.0)
    assert "totalCost" not in replayed
    await stub.store.flush()
    events = await database.rows("SELECT seq_no FROM transaction_event ORDER BY seq_no")
    assert [row["seq_no"] for row in events] == [0, 1]
    powers = await database.rows("SELECT power_reading FROM power_consumption")
    assert len(powers) == 2
    (usage,) = await database.rows("SELECT energy_consumed, event_count FROM charger_usage_log")
    assert usage == {"energy_consumed": pytest.approx(0.5), "event_count": 2}


async def test_16_session_gets_csms_assigned_ids(
    stub, connect, database: Database, seed_fleet
) -> None:
    client = await connect("emart_shinjeju_01", "ocpp1.6")
    await scripted.boot(client, seed_fleet.chargers["emart_shinjeju_01"], "1.6")
    first = await scripted.session_16(client, [50_000, 50_000], start_wh=1000, start_time=T0)
    second = await scripted.session_16(
        client, [40_000], start_wh=first.stop_wh, start_time=T0 + 100
    )
    assert int(second.transaction_id) == int(first.transaction_id) + 1
    await stub.store.flush()
    rows = await database.rows(
        "SELECT transaction_id, energy_consumed, cost, ocpp_version, end_time "
        "FROM charger_usage_log ORDER BY start_time"
    )
    assert [row["transaction_id"] for row in rows] == [first.transaction_id, second.transaction_id]
    for row, record in zip(rows, (first, second), strict=True):
        assert row["ocpp_version"] == "1.6"
        assert row["end_time"] is not None
        assert row["energy_consumed"] == pytest.approx(record.energy_kwh, abs=1e-3)
        assert row["cost"] == pytest.approx(record.energy_kwh * 150, abs=0.01)


async def test_scenario_4_power_peaks_at_350_kw(
    stub, connect, database: Database, seed_fleet
) -> None:
    # All five chargers at once; emart_jeju_03's EV has passed 80 % SoC and tapers to half
    # power, so the fleet peaks at 100 + 100 + 50 + 50 + 50 = 350 kW.
    tapering = {"emart_jeju_03": 0.5}

    async def charge(charger_id: str) -> scripted.SessionRecord:
        charger = seed_fleet.chargers[charger_id]
        power = charger.rated_power_w * tapering.get(charger_id, 1.0)
        client = await connect(charger_id)
        await scripted.boot(client, charger)
        return await scripted.session_201(client, f"tx-{charger_id}", [power] * 3, start_time=T0)

    records = await asyncio.gather(*(charge(charger_id) for charger_id in seed_fleet.chargers))
    await stub.store.flush()
    (peak,) = await database.rows(
        "SELECT timestamp, SUM(power_reading) AS total FROM power_consumption "
        "GROUP BY timestamp ORDER BY total DESC LIMIT 1"
    )
    assert peak["total"] == 350_000
    assert stub.service.stats()["peak_power_w"] == 350_000
    sessions = await database.rows(
        "SELECT charger_id, energy_consumed FROM charger_usage_log ORDER BY charger_id"
    )
    assert len(sessions) == 5
    by_charger = {record.transaction_id: record.energy_kwh for record in records}
    for row in sessions:
        assert row["energy_consumed"] == pytest.approx(
            by_charger[f"tx-{row['charger_id']}"], abs=1e-5
        )


async def test_restarted_stub_continues_open_transaction(make_stub, database: Database) -> None:
    from tests.aio_client import OcppClient

    first = await make_stub()
    client = await OcppClient.connect(f"{first.url}/emart_jeju_03", "ocpp2.0.1")
    await client.call(
        *v201.transaction_event(
            "Started",
            "survivor",
            0,
            T0,
            "Authorized",
            evse_id=1,
            connector_id=1,
            meter_values=[v201.meter_value(T0, v201.sampled_values(5000, 0))],
        )
    )
    await client.call(
        *v201.transaction_event(
            "Updated",
            "survivor",
            1,
            T0 + 5,
            "MeterValuePeriodic",
            meter_values=[v201.meter_value(T0 + 5, v201.sampled_values(6000, 100_000))],
        )
    )
    await first.stop()  # the CSMS goes away mid-transaction
    await client.close()

    second = await make_stub()
    assert ("emart_jeju_03", "survivor") in second.service.transactions
    async with await OcppClient.connect(f"{second.url}/emart_jeju_03", "ocpp2.0.1") as client:
        # Replayed after the reconnect (e.g. unsure whether seqNo 1 arrived): stored once.
        await client.call(
            *v201.transaction_event(
                "Updated",
                "survivor",
                1,
                T0 + 5,
                "MeterValuePeriodic",
                offline=True,
                meter_values=[v201.meter_value(T0 + 5, v201.sampled_values(6000, 100_000))],
            )
        )
        ended = await client.call(
            *v201.transaction_event(
                "Ended",
                "survivor",
                2,
                T0 + 10,
                "StopAuthorized",
                stopped_reason="Local",
                meter_values=[v201.meter_value(T0 + 10, v201.sampled_values(7000, 0))],
            )
        )
    assert ended["totalCost"] == pytest.approx(2.0 * 150)
    await second.store.flush()
    (usage,) = await database.rows("SELECT * FROM charger_usage_log")
    assert usage["energy_consumed"] == pytest.approx(2.0)
    assert usage["event_count"] == 3 and usage["end_time"] is not None
    assert second.service.stats()["transactions_closed"] == 1


async def test_graceful_stop_writes_everything_acknowledged(database: Database, tmp_path) -> None:
    """SIGTERM right after a burst: every acknowledged TransactionEvent is in the database."""
    from tests.aio_client import OcppClient

    stub = start_stub_process(tmp_path, *database.stub_args())
    try:
        acknowledged = 0
        async with await OcppClient.connect(f"{stub.ws_url}/burst", "ocpp2.0.1") as c:
            for call in transaction_burst("burst-tx", 400, T0, meter_values=True):
                await c.call(*call)
                acknowledged += 1
            stub.process.send_signal(signal.SIGTERM)
        assert stub.process.wait(timeout=30) == 0
    finally:
        stub.stop()
    (count,) = await database.rows("SELECT COUNT(*) AS n FROM transaction_event")
    assert count["n"] == acknowledged
    (power,) = await database.rows("SELECT COUNT(*) AS n FROM power_consumption")
    assert power["n"] == acknowledged


async def test_api_reads_include_everything_acknowledged(stub, connect) -> None:
    import httpx

    client = await connect("emart_jeju_01")
    await scripted.session_201(client, "visible", [10_000], start_time=T0)
    async with httpx.AsyncClient(base_url=stub.api_url) as http:
        rows = (await http.get("/transactions", params={"state": "closed"})).json()
    assert [row["transaction_id"] for row in rows] == ["visible"]
    await eventually(lambda: stub.store.queue_depth == 0)


async def test_a_database_of_the_36_character_tables_is_widened_and_keeps_its_rows(
    make_stub, database: Database
) -> None:
    """A database made when ``charger_usage_log.id_token`` held 36 characters (2.0.1's
    limit): the stub starts on it, keeps its rows and stores a 2.1 idToken of 255."""
    import httpx
    import sqlalchemy as sa

    from csms_stub import store

    old = sa.MetaData()
    for table in store.metadata.sorted_tables:
        table.to_metadata(old)
    old.tables["charger_usage_log"].c.id_token.type = sa.String(36)
    engine = database.engine()
    try:
        async with engine.begin() as connection:
            if database.schema:
                await connection.exec_driver_sql(f'CREATE SCHEMA "{database.schema}"')
            await connection.run_sync(old.create_all)
            await connection.execute(
                old.tables["charger_usage_log"].insert(),
                {"charger_id": "emart_jeju_03", "transaction_id": "before", "id_token": "A" * 36,
                 "start_time": at(T0), "end_time": at(T0 + 60), "stop_reason": "Local"},
            )  # fmt: skip
    finally:
        await engine.dispose()

    stub = await make_stub()  # not the `stub` fixture: that one would make the tables first
    client = await OcppClient.connect(f"{stub.url}/emart_jeju_03", "ocpp2.1")
    longest = ("0123456789ABCDEF" * 16)[:255]
    try:
        await scripted.session_201(client, "after", [10_000], token=longest, start_time=T0 + 120)
    finally:
        await client.close()
    async with httpx.AsyncClient(base_url=stub.api_url) as http:
        rows = (await http.get("/transactions", params={"charger_id": "emart_jeju_03"})).json()
    assert sorted((row["transaction_id"], row["id_token"]) for row in rows) == [
        ("after", longest),
        ("before", "A" * 36),
    ]
    if database.backend == "postgresql":
        (column,) = await database.rows(
            "SELECT character_maximum_length AS n FROM information_schema.columns WHERE "
            "table_schema = :schema AND table_name = 'charger_usage_log' "
            "AND column_name = 'id_token'",
            schema=database.schema,
        )
        assert column["n"] == 255
