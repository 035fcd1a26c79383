"""``python -m loadgen.reconcile`` against a real csms_stub process (its HTTP API and its
database, SQLite and PostgreSQL) and a real Redis ledger: a clean run, then a run with a
missing, an unclosed, a duplicated and a mismatched transaction, then unreachable sources;
real stations whose acknowledged event is lost or whose worker dies; and compare() on
plain data for each finding."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from csms_stub.store import transaction_event
from loadgen import coordination, seqnos
from loadgen import fleet as fleets
from loadgen.coordination import LedgerEntry, RedisCoordinator, new_run_id
from loadgen.physics import ScaledClock
from loadgen.protocols import OCPP16, OCPP201, Version, v201
from loadgen.reconcile import CsmsRow, LedgerSource, compare
from loadgen.runner import StationRunner
from loadgen.station import Station, StationConfig, Transaction
from tests.aio_client import OcppClient
from tests.conftest import REDIS_URL, Database, StubProcess, free_port, start_stub_process
from tests.fake_csms import wait_for
from tests.scripted import SessionRecord, boot, session_16, session_201

pytestmark = pytest.mark.seconds(50)  # conftest.py: the start order

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def runs() -> Iterator[Any]:
    """``make()``: a RedisCoordinator on a fresh run id; keys deleted at the end."""
    made: list[RedisCoordinator] = []
    fleet = fleets.load(fleets.SEED_FLEET)

    def make() -> RedisCoordinator:
        coordinator = RedisCoordinator(REDIS_URL, f"test-{new_run_id()}", fleet.chargers)
        made.append(coordinator)
        return coordinator

    yield make
    for coordinator in made:
        coordinator.close()
        coordinator.cleanup()


@pytest.fixture
def csms(database: Database, tmp_path: Path) -> Iterator[StubProcess]:
    """csms_stub in its own process, storing into ``database`` (SQLite or PostgreSQL)."""
    args = ["--database-url", database.url]
    if database.schema:
        args += ["--database-schema", database.schema]
    stub = start_stub_process(tmp_path, *args)
    yield stub
    stub.stop()


def reconcile(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadgen.reconcile", "--redis-url", REDIS_URL, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def counts(output: str) -> dict[str, int]:
    found = {}
    for line in output.splitlines():
        name, _, value = line.partition(": ")
        if name in ("matched", "missing", "duplicated", "energy mismatches"):
            found[name] = int(value)
    return found


def entry(charger_id: str, record: SessionRecord, version: str, **changes: Any) -> LedgerEntry:
    values: dict[str, Any] = {
        "charger_id": charger_id,
        "transaction_id": record.transaction_id,
        "ocpp_version": version,
        "start": record.start_time,
        "end": record.end_time,
        "energy_wh": record.stop_wh - record.start_wh,
        "messages": len(record.power_samples) + 2,  # start, one per sample, end
    }
    values.update(changes)
    return LedgerEntry(**values)


async def charge_201(
    csms: StubProcess, charger: fleets.Charger, transaction_id: str, power_w: list[float]
) -> SessionRecord:
    async with await OcppClient.connect(f"{csms.ws_url}/{charger.id}", "ocpp2.0.1") as client:
        await boot(client, charger)
        return await session_201(client, transaction_id, power_w, start_wh=1000.0)


async def charge_16(csms: StubProcess, charger: fleets.Charger, power_w: list[float]) -> Any:
    async with await OcppClient.connect(f"{csms.ws_url}/{charger.id}", "ocpp1.6") as client:
        await boot(client, charger, "1.6")
        return await session_16(client, power_w, start_wh=500.0)


async def start_only(csms: StubProcess, charger: fleets.Charger, transaction_id: str) -> None:
    """A transaction the CSMS saw start but never end."""
    now = time.time()
    async with await OcppClient.connect(f"{csms.ws_url}/{charger.id}", "ocpp2.0.1") as client:
        await boot(client, charger)
        await client.call(
            *v201.transaction_event(
                "Started",
                transaction_id,
                0,
                now,
                "Authorized",
                charging_state="Charging",
                evse_id=1,
                connector_id=1,
                token=v201.id_token("token_user_009"),
                meter_values=[v201.meter_value(now, v201.sampled_values(0, 7000))],
            )
        )


async def test_reconcile_finds_every_kind_of_loss(
    csms: StubProcess, database: Database, runs: Any
) -> None:
    fleet = fleets.load(fleets.SEED_FLEET)
    a, b, c, d, e = list(fleet.chargers.values())[:5]
    good = runs()
    record_a = await charge_201(csms, a, good.next_transaction_id(), [7000, 11000, 9000])
    record_b = await charge_201(csms, b, good.next_transaction_id(), [50_000])
    record_c = await charge_16(csms, c, [22_000, 22_000])
    await start_only(csms, e, "never-ended")
    ledger = [
        entry(a.id, record_a, "2.0.1"),
        entry(b.id, record_b, "2.0.1"),
        entry(c.id, record_c, "1.6", local_id="placeholder-1"),
    ]
    for item in ledger:
        good.record_transaction(item)

    # Everything the load generator ended is at the CSMS: exit 0, through both sources.
    # (The API reads after the stub's batch writer has flushed, so the database is current.)
    db_args = ["--database-url", database.url]
    if database.schema:
        db_args += ["--database-schema", database.schema]
    for source in (["--csms-api", csms.api_url], db_args):
        result = reconcile("--run", good.run_id, *source)
        assert result.returncode == 0, result.stdout + result.stderr
        assert counts(result.stdout) == {
            "matched": 3,
            "missing": 0,
            "duplicated": 0,
            "energy mismatches": 0,
        }
        assert "result: OK" in result.stdout
        assert "message counts differ" not in result.stdout  # our counts match the stub's

    # A run with one of each problem.
    bad = runs()
    for item in (
        ledger[0],  # fine
        ledger[1],  # recorded twice
        ledger[1],
        entry(c.id, record_c, "1.6", energy_wh=ledger[2].energy_wh + 10),  # 10 Wh off
        LedgerEntry(d.id, "lost-in-transit", "2.0.1", 1.0, 2.0, 100.0, 3),  # never arrived
        LedgerEntry(e.id, "never-ended", "2.0.1", 1.0, 2.0, 0.0, 2),  # not closed
    ):
        bad.record_transaction(item)
    for source in (["--csms-api", csms.api_url], db_args):
        result = reconcile("--run", bad.run_id, *source)
        assert result.returncode == 1, result.stdout + result.stderr
        assert counts(result.stdout) == {
            "matched": 2,
            "missing": 2,
            "duplicated": 1,
            "energy mismatches": 1,
        }
        assert f"missing {d.id} lost-in-transit: not at the CSMS" in result.stdout
        assert f"missing {e.id} never-ended: not closed at the CSMS" in result.stdout
        assert f"duplicated {b.id} {record_b.transaction_id}: 2 ledger entries" in result.stdout
        assert f"energy mismatch {c.id} {record_c.transaction_id}" in result.stdout
        assert "result: LOSS" in result.stdout

    report = json.loads(reconcile("--run", bad.run_id, "--csms-api", csms.api_url, "--json").stdout)
    assert report["matched"] == 2 and report["lost"] is True
    assert report["energy_mismatches"][0]["csms_wh"] == pytest.approx(ledger[2].energy_wh)
    # Within the tolerance an energy difference is not a loss.
    loose = reconcile("--run", bad.run_id, "--csms-api", csms.api_url, "--tolerance-wh", "20")
    assert counts(loose.stdout)["energy mismatches"] == 0


def test_duplicate_rows_at_the_csms_count(tmp_path: Path, runs: Any) -> None:
    """Another CSMS's table, without csms_stub's primary key, with one transaction twice."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE charger_usage_log (charger_id TEXT, transaction_id TEXT, "
            "end_time TIMESTAMP, energy_consumed REAL, event_count INTEGER)"
        )
        db.executemany(
            "INSERT INTO charger_usage_log VALUES (?, ?, ?, ?, ?)",
            [
                ("emart_jeju_01", "t-1", "2026-01-01 10:00:00.000000", 1.5, 3),
                ("emart_jeju_01", "t-1", "2026-01-01 10:00:00.000000", 1.5, 3),
                ("emart_jeju_02", "t-2", "2026-01-01 10:00:00.000000", 0.25, 3),
            ],
        )
    run = runs()
    run.record_transaction(LedgerEntry("emart_jeju_01", "t-1", "2.0.1", 1, 2, 1500.0, 3))
    run.record_transaction(LedgerEntry("emart_jeju_02", "t-2", "2.0.1", 1, 2, 250.4, 3))
    result = reconcile("--run", run.run_id, "--database-url", f"sqlite:///{path}")
    assert result.returncode == 1
    assert counts(result.stdout) == {
        "matched": 2,
        "missing": 0,
        "duplicated": 1,
        "energy mismatches": 0,
    }
    assert "duplicated emart_jeju_01 t-1: 2 rows at the CSMS" in result.stdout


def test_unreadable_sources_exit_2_with_one_line(runs: Any, tmp_path: Path) -> None:
    run = runs()
    run.record_transaction(LedgerEntry("emart_jeju_01", "t-1", "2.0.1", 1, 2, 1500.0, 3))
    closed = free_port()
    cases = {
        "cannot read the CSMS API": ["--csms-api", f"http://127.0.0.1:{closed}"],
        "cannot read charger_usage_log": [
            "--database-url",
            f"postgresql://postgres@127.0.0.1:{closed}/test",
        ],
        "no such table": ["--database-url", f"sqlite:///{tmp_path / 'empty.db'}"],
    }
    for message, source in cases.items():
        result = reconcile("--run", run.run_id, *source)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and result.stderr.count("\n") == 1
        assert result.stdout == ""
    no_redis = f"redis://127.0.0.1:{closed}/0"
    result = reconcile("--redis-url", no_redis, "--run", run.run_id, "--csms-api", "http://x")
    assert result.returncode == 2 and "cannot read Redis" in result.stderr
    unknown = reconcile("--run", "no-such-run", "--csms-api", "http://127.0.0.1:1")
    assert unknown.returncode == 2 and "no ledger entries" in unknown.stderr


def test_retried_appends_are_not_duplicates(runs: Any) -> None:
    """A ledger append retried after a dropped connection lands twice with one entry_id."""
    run = runs()
    item = LedgerEntry("emart_jeju_01", "t-1", "2.0.1", 1, 2, 1500.0, 3)
    run.record_transaction(item)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        _, fields = client.xrange(coordination.ledger_key(run.run_id))[0]
        client.xadd(coordination.ledger_key(run.run_id), fields)  # the same append again
        source = LedgerSource(REDIS_URL, run.run_id)
        assert source.entries() == [item]
        assert source.retried == 1
    finally:
        client.close()


# -- compare() on plain data: what each finding is -------------------------------------------


class Rows:
    """What a CSMS stored, as plain data (compare() only calls ``fetch``)."""

    description = "rows in memory"

    def __init__(self, *rows: CsmsRow) -> None:
        self.rows = list(rows)

    def fetch(self, keys: Any) -> list[CsmsRow]:
        return [row for row in self.rows if row.key in set(keys)]


def ledger_pair(charger: str, tid: str, acked: int, version: str = "2.0.1") -> list[LedgerEntry]:
    """A transaction's start and end entries, with ``acked`` messages acknowledged."""
    seq = version == "2.0.1"
    return [
        LedgerEntry(
            charger,
            tid,
            version,
            1.0,
            None,
            0.0,
            1,
            kind="start",
            acknowledged=1,
            seq_nos=((0, 0),) if seq else None,
        ),
        LedgerEntry(
            charger,
            tid,
            version,
            1.0,
            9.0,
            500.0,
            acked,
            acknowledged=acked,
            seq_nos=((0, acked - 1),) if seq else None,
        ),
    ]


def test_seqno_ranges() -> None:
    assert seqnos.from_numbers([5, 0, 1, 2, 2, 7, 6]) == [(0, 2), (5, 7)]
    ranges: seqnos.Ranges = []
    for number in (0, 1, 2, 4, 3, 9, 1):
        seqnos.add(ranges, number)
    assert ranges == [(0, 4), (9, 9)]
    assert seqnos.missing([(0, 9)], [(0, 2), (4, 4), (8, 20)]) == [(3, 3), (5, 7)]
    assert seqnos.missing([(0, 3), (6, 6)], []) == [(0, 3), (6, 6)]
    assert seqnos.missing([(0, 3)], [(0, 3)]) == []
    assert seqnos.count([(0, 3), (6, 6)]) == 5
    assert seqnos.render([(3, 3), (5, 7)]) == "3, 5-7"
    assert seqnos.normalize([[4, 5], [0, 3]]) == [(0, 5)]


def test_compare_fails_on_a_seqno_gap_and_on_transactions_never_ended() -> None:
    ledger = [
        *ledger_pair("c1", "ok", 4),
        *ledger_pair("c2", "gap", 5),
        *ledger_pair("c3", "16-gap", 4, "1.6"),
        *ledger_pair("c4", "16-more", 3, "1.6"),
        ledger_pair("c5", "dead-open", 2)[0],  # a dead worker's: start only
        ledger_pair("c6", "dead-closed", 2)[0],
        ledger_pair("c7", "dead-lost", 2)[0],
    ]
    csms = Rows(
        CsmsRow("c1", "ok", True, 500.0, 4, ((0, 3),)),
        CsmsRow("c2", "gap", True, 500.0, 4, ((0, 2), (4, 4))),  # seqNo 3 lost
        CsmsRow("c3", "16-gap", True, 500.0, 3, ((0, 2),)),  # 1.6: one of four lost
        CsmsRow("c4", "16-more", True, 500.0, 4, ((0, 3),)),  # a repeated MeterValues: fine
        CsmsRow("c5", "dead-open", False, 0.0, 3, ((0, 2),)),
        CsmsRow("c6", "dead-closed", True, 0.0, 3, ((0, 2),)),
    )
    report = compare("r", ledger, csms)
    assert report.matched == [("c1", "ok"), ("c2", "gap"), ("c3", "16-gap"), ("c4", "16-more")]
    assert report.seq_gaps == [
        (("c2", "gap"), "acknowledged seqNo 3 not at the CSMS"),
        (("c3", "16-gap"), "1 of 4 acknowledged transaction messages not at the CSMS"),
    ]
    assert report.never_ended == [
        (("c5", "dead-open"), "started by the fleet, never ended; open at the CSMS"),
        (("c6", "dead-closed"), "started by the fleet, never ended; closed at the CSMS"),
        (("c7", "dead-lost"), "started by the fleet, never ended; not at the CSMS"),
    ]
    assert (report.checked_seq_nos, report.checked_counts, report.unchecked) == (4, 2, 0)
    assert report.lost and report.transactions == 7
    text = report.render()
    assert "acknowledged events missing c2 gap: acknowledged seqNo 3 not at the CSMS" in text
    assert "never ended c5 dead-open: started by the fleet, never ended; open at the CSMS" in text
    assert "information only" not in text and text.endswith("result: LOSS")
    data = report.to_json()
    assert data["seq_gaps"][0] == {"key": ["c2", "gap"], "reason": report.seq_gaps[0][1]}
    assert [item["key"] for item in data["never_ended"]] == [
        ["c5", "dead-open"],
        ["c6", "dead-closed"],
        ["c7", "dead-lost"],
    ]
    assert data["acknowledged_checked"] == {"by_seq_no": 4, "by_count": 2, "information_only": 0}

    # Everything acknowledged is stored and everything started ended: OK.
    fine = compare("r", ledger[:2], csms)
    assert not fine.lost and fine.matched == [("c1", "ok")] and fine.render().endswith("OK")


def test_without_seqnos_from_the_csms_counts_are_information_only() -> None:
    """Another CSMS (no transaction_event): a gap cannot be seen, and the report says so."""
    report = compare("r", ledger_pair("c2", "gap", 5), Rows(CsmsRow("c2", "gap", True, 500.0, 4)))
    assert report.seq_gaps == [] and not report.lost
    assert report.message_count_differs == [(("c2", "gap"), 5, 4)]
    assert report.unchecked == 1
    text = report.render()
    assert "not checked: 1 transactions (no seqNos from the CSMS or the ledger)" in text
    assert "message counts differ (information only): 1" in text


# -- end to end: real stations on gevent, the real stub, a real Redis ledger -----------------


def ledger_listener(coordinator: RedisCoordinator, charger_id: str, version: Version) -> Any:
    def record(kind: str, detail: dict[str, Any]) -> None:
        entry = LedgerEntry.from_station_event(charger_id, version.name, kind, detail)
        if entry is not None:
            coordinator.record_transaction(entry)

    return record


def run_stations(
    csms: StubProcess, coordinator: RedisCoordinator, chargers: dict[fleets.Charger, Version]
) -> dict[str, tuple[StationRunner, Transaction]]:
    """Each charger boots, starts one transaction and sends meter values for a moment; the
    ledger gets what :class:`~loadgen.locust.user.ChargerUser` would give it."""
    clock = ScaledClock(20)
    running: dict[str, tuple[StationRunner, Transaction]] = {}
    for charger, version in chargers.items():
        station = Station(
            charger,
            version,
            clock,
            StationConfig(meter_interval=2),
            new_transaction_id=coordinator.next_transaction_id,
            listener=ledger_listener(coordinator, charger.id, version),
        )
        runner = StationRunner(station, csms.ws_url, clock=clock, call_timeout=5)
        runner.start()
        wait_for(lambda station=station: station.accepted, timeout=10)
        transaction = station.start_session(1, f"token_{charger.id}"[:20])
        assert transaction is not None
        runner.wake()
        running[charger.id] = (runner, transaction)
    # Started, then a few periodic meter values each, all acknowledged.
    wait_for(lambda: all(t.acknowledged >= 3 for _, t in running.values()), timeout=15)
    return running


async def test_reconcile_sees_lost_events_and_unended_transactions_end_to_end(
    csms: StubProcess, database: Database, runs: Any
) -> None:
    fleet = list(fleets.load(fleets.SEED_FLEET).chargers.values())
    db_args = ["--database-url", database.url]
    if database.schema:
        db_args += ["--database-schema", database.schema]
    sources = (["--csms-api", csms.api_url], db_args)

    # (c) A normal run: every transaction started and ended, everything stored: OK.
    good = runs()
    chargers = {fleet[0]: OCPP201, fleet[1]: OCPP201, fleet[2]: OCPP16}
    for runner, _ in run_stations(csms, good, chargers).values():
        runner.stop(timeout=10)
    good.flush()
    for source in sources:
        result = reconcile("--run", good.run_id, *source)
        assert result.returncode == 0, result.stdout + result.stderr
        assert counts(result.stdout)["matched"] == 3
        assert "acknowledged events checked: 2 transactions by seqNo, 1 by count" in result.stdout
        assert "result: OK" in result.stdout

    # (a) One acknowledged TransactionEvent row gone from the database, as a SIGKILL
    # inside the stub's write window loses it: a seqNo gap, exit 1.
    lost = next(e for e in read_entries(good.run_id) if e.charger_id == fleet[1].id)
    events = transaction_event.c
    engine = database.engine()
    try:
        async with engine.begin() as connection:
            deleted = await connection.execute(
                sa.delete(transaction_event).where(
                    events.charger_id == lost.charger_id,
                    events.transaction_id == lost.transaction_id,
                    events.seq_no == 1,
                )
            )
            assert deleted.rowcount == 1
    finally:
        await engine.dispose()
    for source in sources:
        result = reconcile("--run", good.run_id, *source)
        assert result.returncode == 1, result.stdout + result.stderr
        assert (
            f"acknowledged events missing {lost.charger_id} {lost.transaction_id}: "
            "acknowledged seqNo 1 not at the CSMS"
        ) in result.stdout
        assert "acknowledged events missing: 1" in result.stdout
        assert "result: LOSS" in result.stdout
    report = json.loads(reconcile("--run", good.run_id, "--json", *sources[0]).stdout)
    assert report["lost"] is True
    assert report["seq_gaps"] == [
        {
            "key": [lost.charger_id, lost.transaction_id],
            "reason": "acknowledged seqNo 1 not at the CSMS",
        }
    ]

    # (b) A worker dies mid-transaction: its stations drop the link without ending anything.
    dead = runs()
    running = run_stations(csms, dead, {fleet[3]: OCPP201, fleet[4]: OCPP16})
    for runner, _ in running.values():
        runner.stop(timeout=0, end_transactions=False)
    dead.flush()
    for source in sources:
        result = reconcile("--run", dead.run_id, *source)
        assert result.returncode == 1, result.stdout + result.stderr
        for runner, transaction in running.values():
            assert (
                f"never ended {runner.station.charger.id} {transaction.transaction_id}: "
                "started by the fleet, never ended; open at the CSMS"
            ) in result.stdout
        assert "never ended: 2" in result.stdout and "result: LOSS" in result.stdout


def read_entries(run_id: str) -> list[LedgerEntry]:
    return LedgerSource(REDIS_URL, run_id).entries()
