"""Reconciliation with another CSMS's database, through a mapping file: SteVe-like and
CitrineOS-like schemas in the real PostgreSQL (a fresh schema each), the mappings shipped in
docs/mappings/, a real Redis ledger and ``python -m loadgen.reconcile``; then bad mappings,
each one line and exit 2, and the mapping file's checks on plain files."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import textwrap
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from loadgen import fleet as fleets
from loadgen.coordination import LedgerEntry, RedisCoordinator, new_run_id
from loadgen.reconcile import CsmsRow, Mapping, MappingError, compare
from tests.conftest import POSTGRES_URL, REDIS_URL, start_stub_process
from tests.test_reconcile import Rows, counts, reconcile

pytestmark = pytest.mark.seconds(27)  # conftest.py: the start order

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "docs" / "mappings"
# trust auth ignores it; it must never be printed
SECRET_URL = POSTGRES_URL.replace("postgres@", "postgres:s3cret-pw@")


@pytest.fixture
def ledger() -> Iterator[Any]:
    """``make(*entries)``: a run id whose Redis ledger holds these entries; deleted after."""
    made: list[RedisCoordinator] = []
    fleet = fleets.load(fleets.SEED_FLEET)

    def make(*entries: LedgerEntry) -> str:
        coordinator = RedisCoordinator(REDIS_URL, f"test-{new_run_id()}", fleet.chargers)
        made.append(coordinator)
        for entry in entries:
            coordinator.record_transaction(entry)
        coordinator.flush()
        return coordinator.run_id

    yield make
    for coordinator in made:
        coordinator.close()
        coordinator.cleanup()


@pytest.fixture
async def foreign() -> AsyncIterator[Any]:
    """``run(*statements)`` in a fresh PostgreSQL schema (the search path); its name is
    ``run.schema``. Dropped at the end."""
    schema = f"csms_{uuid.uuid4().hex[:12]}"
    engine = create_async_engine(POSTGRES_URL)

    async def run(*statements: str, **params: Any) -> None:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f'SET search_path TO "{schema}"')
            for statement in statements:
                await connection.execute(sa.text(statement), params)

    async with engine.begin() as connection:
        await connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    run.schema = schema  # type: ignore[attr-defined]
    yield run
    async with engine.begin() as connection:
        await connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await engine.dispose()


def utc(seconds: float) -> dt.datetime:
    """Naive UTC, as SteVe stores its timestamps."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).replace(tzinfo=None)


def entry16(charger: str, tid: str, start: float, energy_wh: float) -> LedgerEntry:
    return LedgerEntry(charger, tid, "1.6", start, start + 600, energy_wh, 3, local_id="l-" + tid)


async def test_steve_schema_through_a_query(foreign: Any, ledger: Any, tmp_path: Path) -> None:
    """SteVe's split tables, meter readings as strings, the latest of two stop rows."""
    await foreign(
        "CREATE TABLE connector (connector_pk SERIAL PRIMARY KEY,"
        " charge_box_id VARCHAR(255) NOT NULL, connector_id INT NOT NULL)",
        "CREATE TABLE transaction_start (transaction_pk SERIAL PRIMARY KEY,"
        " connector_pk INT NOT NULL REFERENCES connector, id_tag VARCHAR(255),"
        " start_timestamp TIMESTAMP(6), start_value VARCHAR(255))",
        "CREATE TABLE transaction_stop (transaction_pk INT NOT NULL REFERENCES"
        " transaction_start, event_timestamp TIMESTAMP(6) NOT NULL, event_actor VARCHAR(16),"
        " stop_timestamp TIMESTAMP(6) NOT NULL, stop_value VARCHAR(255) NOT NULL,"
        " stop_reason VARCHAR(255), PRIMARY KEY (transaction_pk, event_timestamp))",
        "INSERT INTO connector (connector_pk, charge_box_id, connector_id) VALUES"
        " (1, 'CP000001', 1), (2, 'CP000002', 1), (3, 'CP000003', 1), (4, 'OTHER', 1)",
    )
    now = dt.datetime.now(dt.UTC).timestamp()
    old = now - 86_400  # an earlier run's transaction: not extra
    starts = [  # pk, connector, start, start value
        (101, 1, now - 900, "1000"),  # matches: 2500 - 1000 = 1500 Wh
        (102, 1, now - 800, "5000"),  # the CSMS stored 900 Wh, the fleet 1000
        (104, 2, now - 700, "0"),  # never stopped at the CSMS
        (105, 2, now - 600, "10"),  # the fleet never made it: extra
        (90, 2, old, "0"),  # a day old
        (106, 3, now - 600, "0"),  # another charger, not the run's
    ]
    for pk, connector, start, value in starts:
        await foreign(
            "INSERT INTO transaction_start VALUES (:pk, :connector, 'TAG', :start, :value)",
            pk=pk,
            connector=connector,
            start=utc(start),
            value=value,
        )
    stops = [  # pk, event time, stop value; 101 stopped twice, the station's stop last
        (101, now - 400, "2000"),
        (101, now - 300, "2500"),
        (102, now - 300, "5900"),
        (105, now - 300, "20"),
        (90, old + 60, "1"),
    ]
    for pk, at, value in stops:
        await foreign(
            "INSERT INTO transaction_stop VALUES (:pk, :at, 'station', :at, :value, 'Local')",
            pk=pk,
            at=utc(at),
            value=value,
        )
    run = ledger(
        entry16("CP000001", "101", now - 900, 1500.0),
        entry16("CP000001", "102", now - 800, 1000.0),
        entry16("CP000002", "103", now - 750, 300.0),  # never reached the CSMS
        entry16("CP000002", "104", now - 700, 200.0),
    )
    args = ["--run", run, "--database-url", SECRET_URL, "--database-schema", foreign.schema]
    result = reconcile(*args, "--mapping", str(MAPPINGS / "steve.toml"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert counts(result.stdout) == {
        "matched": 1,
        "missing": 2,
        "duplicated": 0,
        "energy mismatches": 1,
    }
    out = result.stdout
    assert "missing CP000002 103: not at the CSMS" in out
    assert "missing CP000002 104: not closed at the CSMS" in out
    assert "energy mismatch CP000001 102: ledger 1000.0 Wh, CSMS 900.0 Wh" in out
    assert "at the CSMS, not in the ledger (information only): 1" in out
    assert (
        "  - extra CP000002 105" in out and "extra CP000002 90" not in out and "CP000003" not in out
    )
    assert "times in the future" not in out
    assert "through mapping" in out and "s3cret-pw" not in out + result.stderr
    assert "postgres:***@" in out

    data = json.loads(reconcile(*args, "--mapping", str(MAPPINGS / "steve.toml"), "--json").stdout)
    assert data["matched"] == 1 and data["extra"] == [["CP000002", "105"]] and data["lost"]
    assert "s3cret-pw" not in json.dumps(data)

    # The same tables, a table/column mapping with a wrong column: one line, exit 2.
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[transactions]\ntable = "transaction_start"\n[transactions.columns]\n'
        'charger_id = "charge_box_id"\ntransaction_id = "transaction_pk"\n'
        'meter_start = "start_value"\nmeter_stop = "start_value"\n'
        'stop_time = "start_timestamp"\n'
    )
    result = reconcile(*args, "--mapping", str(bad))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1
    assert "column transaction_start.charge_box_id does not exist" in result.stderr
    assert "s3cret-pw" not in result.stderr and f"mapping {bad}" in result.stderr


async def test_citrineos_schema_kwh_and_seqnos(foreign: Any, ledger: Any) -> None:
    """CitrineOS's Transactions (kWh, isActive) and TransactionEvents (seqNo)."""
    await foreign(
        'CREATE TABLE "Transactions" (id SERIAL PRIMARY KEY, "stationId" VARCHAR(255),'
        ' "transactionId" VARCHAR(255), "isActive" BOOLEAN, "totalKwh" DECIMAL,'
        ' "createdAt" TIMESTAMPTZ NOT NULL, "updatedAt" TIMESTAMPTZ NOT NULL)',
        'CREATE TABLE "TransactionEvents" (id SERIAL PRIMARY KEY, "stationId" VARCHAR(255),'
        ' "eventType" VARCHAR(255), "seqNo" INT,'
        ' "transactionDatabaseId" INT REFERENCES "Transactions")',
    )
    now = dt.datetime.now(dt.UTC)
    ahead = now + dt.timedelta(minutes=27)  # a run on simulated time, as in the issue
    rows = [  # id, station, transaction, active, kWh, created, seqNos stored
        (1, "CP1", "t-ok", False, "1.5", now, [0, 1, 2, 3]),
        (2, "CP1", "t-gap", False, "0.25", now, [0, 1, 3]),  # seqNo 2 lost
        (3, "CP2", "t-open", True, None, now, [0, 1]),
        (4, "CP2", "t-future", False, "2.0", ahead, [0, 1, 2]),
    ]
    for pk, station, tid, active, kwh, created, seq in rows:
        await foreign(
            'INSERT INTO "Transactions" VALUES (:pk, :station, :tid, :active, :kwh, :at, :at)',
            pk=pk,
            station=station,
            tid=tid,
            active=active,
            kwh=kwh,
            at=created,
        )
        for number in seq:
            await foreign(
                'INSERT INTO "TransactionEvents" ("stationId", "eventType", "seqNo",'
                " \"transactionDatabaseId\") VALUES (:station, 'Updated', :seq, :pk)",
                station=station,
                seq=number,
                pk=pk,
            )
    start = now.timestamp() - 600

    def ended(charger: str, tid: str, wh: float, acked: int) -> LedgerEntry:
        return LedgerEntry(
            charger,
            tid,
            "2.0.1",
            start,
            start + 60,
            wh,
            acked,
            acknowledged=acked,
            seq_nos=((0, acked - 1),),
        )

    run = ledger(
        ended("CP1", "t-ok", 1500.0, 4),
        ended("CP1", "t-gap", 250.0, 4),
        ended("CP2", "t-open", 800.0, 3),
        ended("CP2", "t-future", 2000.0, 3),
    )
    result = reconcile(
        *("--run", run, "--database-url", POSTGRES_URL, "--database-schema", foreign.schema),
        *("--mapping", str(MAPPINGS / "citrineos.toml")),
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert counts(out) == {"matched": 3, "missing": 1, "duplicated": 0, "energy mismatches": 0}
    assert "missing CP2 t-open: not closed at the CSMS" in out
    assert "acknowledged events missing CP1 t-gap: acknowledged seqNo 2 not at the CSMS" in out
    assert "acknowledged events checked: 4 transactions by seqNo" in out
    assert "times in the future at the CSMS (information only): 1 transactions" in out
    assert "not in the ledger" not in out


def test_bad_mappings_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    cases = {
        "": "a [transactions] section is required",
        "[transactions]\n": "needs either query or table",
        '[transactions]\nquery = "x"\ntable = "y"\n': "needs either query or table",
        '[transactions]\ntable = "t"\n': "table needs [transactions.columns]",
        '[transactions]\ntable = "t"\n[transactions.columns]\ncharger = "a"\n': "unknown name",
        '[transactions]\ntable = "t"\n[transactions.columns]\ncharger_id = "a"\n'
        'transaction_id = "b"\nstop_time = "c"\n': "needs energy, or meter_start and meter_stop",
        '[transactions]\ntable = "t"\n[transactions.columns]\ncharger_id = "a"\n'
        'transaction_id = "b"\nenergy = "c"\n': "needs stop_time, closed or active",
        '[transactions]\nquery = "q"\nenergy_scale = 0\n': "energy_scale must be a positive",
        'timezone = "Mars/Olympus"\n[transactions]\nquery = "q"\n': "unknown timezone",
        '[transactions]\nquery = "q"\n[events]\ntable = "e"\n[events.columns]\n'
        'charger_id = "a"\ntransaction_id = "b"\n': "[events.columns] needs seq_no",
        'tables = 1\n[transactions]\nquery = "q"\n': "unknown key 'tables'",
        "[transactions\n": "not TOML",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(MappingError) as caught:
            Mapping.load(path)
        assert message in str(caught.value) and "\n" not in str(caught.value), text
        assert str(caught.value).startswith(f"mapping {path}: ")
    with pytest.raises(MappingError, match="No such file"):
        Mapping.load(tmp_path / "absent.toml")
    for shipped in MAPPINGS.glob("*.toml"):
        assert Mapping.load(shipped).transactions is not None
    # Through the command: exit 2, one line, nothing on stdout.
    path.write_text("[transactions]\n")
    result = reconcile("--run", "x", "--database-url", "sqlite://", "--mapping", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"reconcile: mapping {path}: [transactions] needs either")
    assert result.stderr.count("\n") == 1


async def test_a_query_without_a_needed_column_says_which(tmp_path: Path, ledger: Any) -> None:
    """SQLite this time; a query that yields no energy is named as such."""
    db = tmp_path / "csms.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE tx (cp TEXT, id TEXT, wh REAL, stopped TEXT)")
        connection.execute("INSERT INTO tx VALUES ('CP1', 't-1', 1500, '2026-01-01 10:00:00')")
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        '[transactions]\nquery = "SELECT cp AS charger_id, id AS transaction_id, '
        'stopped AS stop_time FROM tx"\n'
    )
    run = ledger(LedgerEntry("CP1", "t-1", "2.0.1", 1.0, 2.0, 1500.0, 3))
    args = ["--run", run, "--database-url", f"sqlite:///{db}", "--mapping", str(mapping)]
    result = reconcile(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the [transactions] query yields no column named energy" in result.stderr
    assert result.stderr.count("\n") == 1
    mapping.write_text(mapping.read_text().replace("stopped AS", "wh AS energy, stopped AS"))
    result = reconcile(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert counts(result.stdout)["matched"] == 1
    # no seqNos from this CSMS: said so, counts information only
    assert "not checked: 1 transactions" in result.stdout


def test_the_docs_show_the_shipped_steve_mapping() -> None:
    """docs/testing-your-csms.md quotes docs/mappings/steve.toml: the two stay the same."""
    page = (ROOT / "docs" / "testing-your-csms.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", page, re.DOTALL)
    assert blocks, "no TOML example in the page"
    quoted = tomllib.loads(textwrap.dedent(blocks[0]))
    assert quoted == tomllib.loads((MAPPINGS / "steve.toml").read_text())


def test_compare_without_stored_energy_is_a_mismatch() -> None:
    """A closed transaction whose energy the CSMS did not store (NULL) is not a match."""
    ledger = [LedgerEntry("c1", "t", "2.0.1", 1.0, 2.0, 0.0, 2)]
    report = compare("r", ledger, Rows(CsmsRow("c1", "t", True, float("nan"))))
    assert report.energy_mismatches and report.lost
    assert "CSMS no energy" in report.render()
    assert report.to_json()["energy_mismatches"][0]["csms_wh"] is None


# -- the locust command: --reconcile-db-url / --reconcile-mapping ----------------------------


def test_the_locust_command_reconciles_through_a_mapping(tmp_path: Path, foreign: Any) -> None:
    """A run against csms_stub on PostgreSQL, reconciled at the end by reading the stub's
    tables through docs/mappings/csms_stub.toml; a mapping with a wrong column, a database
    without the stub's tables, options that do not go together stop the next runs at their
    start with one line."""
    from tests.test_locust import FAST, reconciliation, run_locust

    plain_url = POSTGRES_URL.replace("+asyncpg", "")
    stub = start_stub_process(
        tmp_path, "--database-url", plain_url, "--database-schema", foreign.schema
    )
    mapping = tmp_path / "stub.toml"
    shipped = (MAPPINGS / "csms_stub.toml").read_text()
    mapping.write_text(f'schema = "{foreign.schema}"\n' + shipped)
    try:
        code, output = run_locust(
            tmp_path / "locust.log",
            *("--host", stub.ws_url, "--users", "20", "--spawn-rate", "20"),
            *("--run-time", "6s", "--fleet-size", "40", "--only-summary", *FAST),
            *("--reconcile-db-url", SECRET_URL, "--reconcile-mapping", str(mapping)),
        )
    finally:
        stub.stop()
    assert code == 0, output[-3000:]
    assert reconciliation(output) > 0
    assert f"through mapping {mapping} (schema {foreign.schema})" in output
    assert "acknowledged events checked: " in output and "s3cret-pw" not in output

    mapping.write_text(mapping.read_text().replace('"energy_consumed"', '"energy_kwh"'))
    code, output = run_locust(
        tmp_path / "bad.log",
        *("--host", "ws://127.0.0.1:9", "--users", "1", "--run-time", "5s", *FAST),
        *("--reconcile-db-url", SECRET_URL, "--reconcile-mapping", str(mapping)),
        timeout=30,
    )
    assert code == 2, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("loadgen: ")]
    assert len(lines) == 1 and "energy_kwh does not exist" in lines[0], output[-3000:]
    assert "Traceback" not in output and "s3cret-pw" not in output
    for options, message in (
        (["--csms-api", "http://127.0.0.1:9", "--reconcile-db-url", "sqlite://"], "not both"),
        (["--reconcile-mapping", str(mapping)], "give --reconcile-db-url"),
        # csms_stub's tables (no mapping) are looked for at the start too
        (["--reconcile-db-url", f"sqlite:///{tmp_path / 'empty.db'}"], "no such table"),
    ):
        code, output = run_locust(
            tmp_path / "options.log",
            *("--host", "ws://127.0.0.1:9", "--users", "1", "--run-time", "5s", *FAST),
            *options,
            timeout=30,
        )
        assert code == 2, output[-3000:]
        lines = [line for line in output.splitlines() if line.startswith("loadgen: ")]
        assert len(lines) == 1 and message in lines[0], output[-3000:]
