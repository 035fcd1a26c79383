"""Storage: SQLAlchemy 2 Core on SQLite (default) or PostgreSQL, written in batches.

The message path never waits for the database. Handlers call :meth:`Store.put` (a
non-blocking append) before they acknowledge a message; one writer task drains the queue
every ``flush_interval`` seconds (or sooner when ``batch_size`` rows wait) and writes each
batch in one database transaction: row inserts with ``executemany``, and the newest state of
each charger / transaction as one upsert per key. :meth:`Store.close` drains everything, so
a graceful stop loses nothing that was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger(__name__)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite would hand back naive datetimes)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None:
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else (value.astimezone(UTC))
        return value


metadata = sa.MetaData()

charger_info = sa.Table(
    "charger_info",
    metadata,
    sa.Column("charger_id", sa.String(48), primary_key=True),
    sa.Column("station_id", sa.String(64)),  # the site, as in the seed's queries
    sa.Column("site_name", sa.String(128)),
    sa.Column("lat", sa.Float),
    sa.Column("lon", sa.Float),
    sa.Column("rated_power_kw", sa.Float),
    sa.Column("vendor", sa.String(50)),
    sa.Column("model", sa.String(50)),
    sa.Column("serial_number", sa.String(50)),
    sa.Column("firmware_version", sa.String(50)),
    sa.Column("ocpp_version", sa.String(8)),
    sa.Column("status", sa.String(32)),
    sa.Column("connected", sa.Boolean, nullable=False, default=False),
    sa.Column("last_boot_at", UtcDateTime()),
    sa.Column("last_heartbeat_at", UtcDateTime()),
    sa.Column("boot_count", sa.Integer, nullable=False, default=0),
    sa.Column("session_count", sa.Integer, nullable=False, default=0),
    sa.Column("energy_total_kwh", sa.Float, nullable=False, default=0.0),
    sa.Column("cost_total", sa.Float, nullable=False, default=0.0),
    sa.Column("created_at", UtcDateTime()),
    sa.Column("updated_at", UtcDateTime()),
)

charger_usage_log = sa.Table(
    "charger_usage_log",
    metadata,
    sa.Column("charger_id", sa.String(48), primary_key=True),
    sa.Column("transaction_id", sa.String(36), primary_key=True),
    sa.Column("station_id", sa.String(64)),
    sa.Column("ocpp_version", sa.String(8)),
    sa.Column("evse_id", sa.Integer),
    sa.Column("connector_id", sa.Integer),
    sa.Column("id_token", sa.String(36)),
    sa.Column("start_time", UtcDateTime()),
    sa.Column("end_time", UtcDateTime()),
    sa.Column("meter_start_wh", sa.Float),
    sa.Column("meter_stop_wh", sa.Float),
    sa.Column("energy_consumed", sa.Float, nullable=False, default=0.0),  # kWh
    sa.Column("cost", sa.Float, nullable=False, default=0.0),
    sa.Column("stop_reason", sa.String(32)),
    sa.Column("event_count", sa.Integer, nullable=False, default=0),
    sa.Column("offline_event_count", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", UtcDateTime()),
    sa.Column("updated_at", UtcDateTime()),
)

power_consumption = sa.Table(
    "power_consumption",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("charger_id", sa.String(48), nullable=False),
    sa.Column("transaction_id", sa.String(36)),
    sa.Column("timestamp", UtcDateTime(), nullable=False),
    sa.Column("power_reading", sa.Float),  # W
    sa.Column("energy_register_wh", sa.Float),
    sa.Column("soc", sa.Float),
    sa.Index("ix_power_consumption_timestamp", "timestamp"),
    sa.Index("ix_power_consumption_charger", "charger_id", "transaction_id"),
)

# Every TransactionEvent (and 1.6 Start/Stop/MeterValues of a transaction) once: the key
# makes a replayed or duplicated seqNo a no-op even across a stub restart.
transaction_event = sa.Table(
    "transaction_event",
    metadata,
    sa.Column("charger_id", sa.String(48), primary_key=True),
    sa.Column("transaction_id", sa.String(36), primary_key=True),
    sa.Column("seq_no", sa.Integer, primary_key=True),
    sa.Column("event_type", sa.String(16), nullable=False),
    sa.Column("trigger_reason", sa.String(32)),
    sa.Column("timestamp", UtcDateTime()),
    sa.Column("offline", sa.Boolean, nullable=False, default=False),
    sa.Column("received_at", UtcDateTime()),
)


def seq_no_ranges(*where: Any) -> sa.Select[Any]:
    """Each transaction's stored seqNos as runs ``(charger_id, transaction_id, first, last)``.

    Reconciliation checks that every seqNo a station saw acknowledged is stored; reading
    runs instead of events keeps that to about one row per transaction. Gaps and islands:
    along a run, ``seq_no`` minus its rank in the transaction is constant.
    """
    events = transaction_event
    rank = sa.func.row_number().over(
        partition_by=(events.c.charger_id, events.c.transaction_id), order_by=events.c.seq_no
    )
    numbered = sa.select(
        events.c.charger_id,
        events.c.transaction_id,
        events.c.seq_no,
        (events.c.seq_no - rank).label("island"),
    )
    runs = numbered.where(*where).subquery()
    first = sa.func.min(runs.c.seq_no)
    return (
        sa.select(runs.c.charger_id, runs.c.transaction_id, first.label("first"))
        .add_columns(sa.func.max(runs.c.seq_no).label("last"))
        .group_by(runs.c.charger_id, runs.c.transaction_id, runs.c.island)
        .order_by(runs.c.charger_id, runs.c.transaction_id, first)
    )


# Boots, heartbeats, status changes, connects and errors: the raw event log.
event_log = sa.Table(
    "event_log",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("charger_id", sa.String(48)),
    sa.Column("timestamp", UtcDateTime(), nullable=False),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("action", sa.String(48)),
    sa.Column("detail", sa.JSON),
    sa.Index("ix_event_log_charger", "charger_id", "kind"),
)

_UPSERT_KEYS = {
    "charger_info": ("charger_id",),
    "charger_usage_log": ("charger_id", "transaction_id"),
}
_INSERT_IGNORE = {"transaction_event"}

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///csms_stub.db"


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` and ``sqlite://`` URLs and pick the async driver."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


@dataclass
class WriteStats:
    batches: int = 0
    rows: int = 0
    last_batch_seconds: float = 0.0
    failures: int = 0


class Store:
    """Tables, the batching writer and the few reads the stub needs."""

    def __init__(
        self,
        url: str = DEFAULT_DATABASE_URL,
        *,
        schema: str | None = None,
        flush_interval: float = 0.05,
        batch_size: int = 2000,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.url = normalize_url(url)
        self.schema = schema
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.stats = WriteStats()
        self.engine: AsyncEngine | None = None
        self._inserts: dict[str, list[dict[str, Any]]] = {}
        self._upserts: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        self._pending = 0
        self._wake = asyncio.Event()
        self._flushed: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def dialect(self) -> str:
        return sa.engine.make_url(self.url).get_backend_name()

    @property
    def queue_depth(self) -> int:
        return self._pending

    async def start(self) -> None:
        options: dict[str, Any] = {}
        if self.dialect == "sqlite":
            options["connect_args"] = {"timeout": 30}
        else:
            options["pool_size"] = 5
        engine = create_async_engine(self.url, **options)
        if self.schema and self.dialect != "sqlite":
            async with engine.begin() as connection:
                await connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        if self.dialect == "sqlite":
            # WAL lets the API and other processes read while the writer writes.
            async with engine.begin() as connection:
                await connection.exec_driver_sql("PRAGMA journal_mode=WAL")
                await connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        self.engine = engine
        self._writer = asyncio.create_task(self._write_loop(), name="csms-store-writer")

    async def close(self) -> None:
        """Write everything queued, then release the database."""
        if self.engine is None:
            return
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
        await self.engine.dispose()
        self.engine = None

    # -- writes (never block) ------------------------------------------------------------

    def insert(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Queue one row for insertion (duplicates ignored where the table has a key)."""
        self._inserts.setdefault(table.name, []).append(row)
        self._queued()

    def upsert(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Queue the newest full state of one row; later calls for the same key win."""
        key = tuple(row[column] for column in _UPSERT_KEYS[table.name])
        self._upserts.setdefault(table.name, {})[key] = row
        self._queued()

    def _queued(self) -> None:
        self._pending += 1
        if self._pending >= self.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Wait until everything queued so far is in the database."""
        if self._pending == 0 and not self._flushing:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushed.append(future)
        self._wake.set()
        await future

    _flushing = False
    _consecutive_failures = 0

    async def _write_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            waiters, self._flushed = self._flushed, []
            if self._pending:
                await self._write_batch()
            if self._pending and waiters:
                # The batch failed and went back in the queue: the waiters keep waiting.
                self._flushed = waiters + self._flushed
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if self._closing and not self._pending:
                return
            if self._closing and self._consecutive_failures >= 10:
                log.error("giving up: %d rows could not be written before stopping", self._pending)
                for waiter in self._flushed:
                    waiter.set_exception(RuntimeError("database unavailable"))
                return

    async def _write_batch(self) -> None:
        inserts, self._inserts = self._inserts, {}
        upserts, self._upserts = self._upserts, {}
        rows, self._pending = self._pending, 0
        self._flushing = True
        started = time.perf_counter()
        assert self.engine is not None
        try:
            async with self.engine.begin() as connection:
                # Parents before children: upsert state, then append rows.
                for name in ("charger_info", "charger_usage_log"):
                    if name in upserts:
                        await self._upsert(
                            connection, metadata.tables[name], list(upserts[name].values())
                        )
                for name, batch in inserts.items():
                    table = metadata.tables[name]
                    if name in _INSERT_IGNORE:
                        await connection.execute(self._insert_ignore(table), batch)
                    else:
                        await connection.execute(table.insert(), batch)
        except Exception:
            # Never drop acknowledged data: put the batch back in front of what arrived
            # meanwhile (newer upserts win) and try again after a pause.
            self.stats.failures += 1
            self._consecutive_failures += 1
            log.exception("database write of %d rows failed; will retry", rows)
            for name, batch in inserts.items():
                self._inserts[name] = batch + self._inserts.get(name, [])
            for name, states in upserts.items():
                self._upserts[name] = {**states, **self._upserts.get(name, {})}
            self._pending += rows
            await asyncio.sleep(min(5.0, 0.2 * self._consecutive_failures))
            return
        finally:
            self._flushing = False
        self._consecutive_failures = 0
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.last_batch_seconds = elapsed
        if self.on_batch:
            self.on_batch(rows, elapsed)

    def _dialect_insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def _insert_ignore(self, table: sa.Table) -> Any:
        return self._dialect_insert(table).on_conflict_do_nothing()

    async def _upsert(self, connection: Any, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        keys = _UPSERT_KEYS[table.name]
        # executemany needs one statement shape: group rows by their column sets.
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            shapes.setdefault(tuple(sorted(row)), []).append(row)
        for columns, group in shapes.items():
            statement = self._dialect_insert(table)
            updates = {c: statement.excluded[c] for c in columns if c not in keys}
            if updates:
                statement = statement.on_conflict_do_update(index_elements=list(keys), set_=updates)
            else:
                statement = statement.on_conflict_do_nothing()
            await connection.execute(statement, group)

    # -- reads ---------------------------------------------------------------------------

    async def fetch(self, query: sa.Executable) -> list[dict[str, Any]]:
        assert self.engine is not None
        async with self.engine.connect() as connection:
            result = await connection.execute(query)
            return [dict(row._mapping) for row in result]
