"""Storage: SQLAlchemy 2 Core on SQLite (default) or PostgreSQL, written in batches.

The message path never waits for the database. Handlers call :meth:`Store.put` (a
non-blocking append) before they acknowledge a message; one writer task drains the queue
every ``flush_interval`` seconds (or sooner when ``batch_size`` rows wait) and writes each
batch in one database transaction: row inserts with ``executemany``, and the newest state of
each charger / transaction as one upsert per key. :meth:`Store.close` drains everything, so
a graceful stop loses nothing that was acknowledged.

Nothing a charger sends may stop the writer: :func:`check_row` refuses, before a row is
queued, any value its column cannot hold (so the charger gets a CALLERROR instead of an
acknowledgement), and a batch that still fails on its data is bisected so that only the
offending rows are left out (logged and counted) while every other row is written. A
database that is down is different: the whole batch waits and is retried, nothing dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from loadgen.logutil import RateLimitedLog
from loadgen.ocppj import ErrorCode

log = logging.getLogger(__name__)

#: what an ``Integer`` column holds on PostgreSQL (SQLite holds more): 32-bit signed, which is
#: also OCPP's ``integer``. Every integer a charger sends ends up in such a column or in JSON.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


class Unstorable(ValueError):
    """A value the database cannot hold; ``error_code`` is the OCPP-J code to refuse it with.

    PropertyConstraintViolation: the payload is well formed and typed, but a field holds a
    value outside what this CSMS accepts (OCPP-J 2.0.1 part 4, 4.3).
    """

    def __init__(
        self, description: str, error_code: str = ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description


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
    sa.Column("id_token", sa.String(255)),  # OCPP 2.1's limit (2.0.1: 36, 1.6: 20)
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
#: the columns that identify a row in a log line (never a whole row: no payloads in logs)
_ROW_KEYS = ("charger_id", "transaction_id", "seq_no", "kind", "action")


def _column_limits(table: sa.Table) -> tuple[dict[str, int], tuple[str, ...], tuple[str, ...]]:
    """From a table's definition: string lengths, 32-bit integer and float columns."""
    lengths: dict[str, int] = {}
    integers: list[str] = []
    floats: list[str] = []
    for column in table.columns:
        kind = column.type
        if isinstance(kind, sa.String) and kind.length:
            lengths[column.name] = kind.length
        elif isinstance(kind, sa.Integer) and not isinstance(kind, sa.BigInteger):
            integers.append(column.name)
        elif isinstance(kind, sa.Float):
            floats.append(column.name)
    return lengths, tuple(integers), tuple(floats)


_LIMITS = {name: _column_limits(table) for name, table in metadata.tables.items()}


def check_text(text: str, where: str, length: int | None = None) -> None:
    """Raise :class:`Unstorable` for text a ``String(length)`` column cannot hold.

    PostgreSQL's text types cannot hold NUL, and it enforces the length (SQLite does not, but
    the same rule on both keeps the stub's behaviour independent of its database)."""
    if "\x00" in text:
        raise Unstorable(f"{where} contains a NUL character")
    if length is not None and len(text) > length:
        raise Unstorable(f"{where} is longer than the {length} characters this CSMS stores")


def check_row(table: sa.Table, row: dict[str, Any]) -> None:
    """Raise :class:`Unstorable` unless every value of ``row`` fits its column.

    Derived from the table definitions, so a new column is checked without a hand-kept list;
    datetimes need no check here (an aware datetime always converts to UTC once parsed,
    see :func:`csms_stub.service.timestamp`) and JSON columns are checked by
    :func:`check_payload` before a handler runs."""
    lengths, integers, floats = _LIMITS[table.name]
    for name, length in lengths.items():
        value = row.get(name)
        if type(value) is str:
            check_text(value, f"{table.name}.{name}", length)
    for name in integers:
        value = row.get(name)
        if value is not None and not INT_MIN <= value <= INT_MAX:
            raise Unstorable(f"{table.name}.{name} {value} is outside the 32-bit integer range")
    for name in floats:
        value = row.get(name)
        if value is not None and not math.isfinite(value):
            raise Unstorable(f"{table.name}.{name} is not a finite number")


def check_payload(value: Any, path: str = "payload") -> None:
    """Raise :class:`Unstorable` for a value anywhere in a payload the database cannot hold.

    Schemas leave integers unbounded and allow NUL in strings; payloads are stored as JSON
    (event_log.detail) and their fields in typed columns. Runs before the handler, so a
    refused message changes no state. Floats need no check: orjson refuses NaN and infinity.
    """
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            raise Unstorable(f"{path} contains a NUL character")
    elif kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise Unstorable(f"{path} {value} is outside the 32-bit integer range")
    elif kind is dict:
        for key, item in value.items():
            if "\x00" in key:
                raise Unstorable(f"{path} has a key with a NUL character")
            check_payload(item, f"{path}.{key}")
    elif kind is list:
        for index, item in enumerate(value):
            check_payload(item, f"{path}[{index}]")


def charger_id_problem(charger_id: str) -> str | None:
    """Why a charger id cannot be stored (refused at the handshake), or None."""
    try:
        check_text(charger_id, "the charger id", charger_info.c.charger_id.type.length)
    except Unstorable as exc:
        return exc.description
    return None


DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///csms_stub.db"


def _describe(exc: BaseException) -> str:
    """One short line for a log: the driver's error class and first line, no parameters."""
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line[:200]}"


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


class StoreUnavailable(Exception):
    """The store could not confirm a write in time: the database is down or behind, or the
    store is stopping. The rows stay queued (or are reported as unwritten at the stop)."""


#: SQLSTATE classes about the rows: 22 data exception (a value too long for its column, out
#: of range ...), 23 integrity constraint violation
_ROW_SQLSTATE_CLASSES = ("22", "23")


def _sqlstate_class(exc: sa.exc.DBAPIError) -> str | None:
    """The SQLSTATE class of a driver error. asyncpg's are wrapped as plain DBAPI errors
    except for integrity violations: a value too long for its column (22001) is not a
    ``DataError`` there, and retrying its batch for ever would stall every write behind it."""
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return sqlstate[:2] if isinstance(sqlstate, str) and len(sqlstate) == 5 else None


@dataclass
class WriteStats:
    batches: int = 0
    rows: int = 0
    last_batch_seconds: float = 0.0
    #: write attempts that failed and were retried (the database was unavailable)
    failures: int = 0
    #: rows the database refused and that were left out, by table
    dropped: dict[str, int] = field(default_factory=dict)


#: one queued write: the table's name, whether it is an upsert, the row
_Op = tuple[str, bool, dict[str, Any]]


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
        on_write_failure: Callable[[str], None] | None = None,
        log_interval: float = 10.0,
    ) -> None:
        self.url = normalize_url(url)
        self.schema = schema
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.on_batch = on_batch
        #: called with the table's name for each row the database refused
        self.on_write_failure = on_write_failure
        self.stats = WriteStats()
        self.engine: AsyncEngine | None = None
        self._inserts: dict[str, list[dict[str, Any]]] = {}
        self._upserts: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        self._pending = 0
        self._in_flight: list[_Op] = []
        self._wake = asyncio.Event()
        self._flushed: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._flushing = False
        self._consecutive_failures = 0
        self._quiet = RateLimitedLog(log, log_interval)
        self._gather: asyncio.TimerHandle | None = None

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
            await connection.run_sync(self._widen_columns)
        self.engine = engine
        self._writer = asyncio.create_task(self._write_loop(), name="csms-store-writer")

    def _widen_columns(self, connection: sa.Connection) -> None:
        """Bring a database made by an earlier version up to the tables' text lengths.

        ``create_all`` leaves existing tables alone, so a ``charger_usage_log`` made when
        ``id_token`` held 36 characters would refuse a 2.1 idToken of up to 255. Widening a
        ``varchar`` keeps every row (PostgreSQL rewrites nothing). SQLite ignores declared
        lengths, so its old tables already hold the longer text."""
        if self.dialect == "sqlite":
            return
        inspector = sa.inspect(connection)
        for table in metadata.sorted_tables:
            existing = {
                column["name"]: column["type"]
                for column in inspector.get_columns(table.name, schema=self.schema)
            }
            for column in table.columns:
                have = existing.get(column.name)
                want = column.type.length if isinstance(column.type, sa.String) else None
                length = getattr(have, "length", None)
                if want and length and length < want:
                    name = f'"{self.schema}".{table.name}' if self.schema else table.name
                    log.info("widening %s.%s to %d characters", table.name, column.name, want)
                    connection.exec_driver_sql(
                        f"ALTER TABLE {name} ALTER COLUMN {column.name} TYPE VARCHAR({want})"
                    )

    async def close(self, timeout: float | None = None) -> dict[str, int]:
        """Write everything queued, then release the database.

        Gives up after ``timeout`` s (a database that is down must not keep a stopping
        process alive) and returns what could not be written: rows by table, empty when
        everything was."""
        if self.engine is None:
            return {}
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), timeout)
            except TimeoutError:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer
        unwritten = self.unwritten()
        for waiter in self._flushed:
            if not waiter.done():
                waiter.set_exception(StoreUnavailable("the store stopped before writing"))
        self._flushed = []
        with contextlib.suppress(Exception):
            # asyncpg says goodbye to each connection: bounded in case the server is gone.
            await asyncio.wait_for(self.engine.dispose(), 5.0)
        self.engine = None
        return unwritten

    def unwritten(self) -> dict[str, int]:
        """Rows queued or being written, by table."""
        counts: dict[str, int] = {}
        for name, batch in self._inserts.items():
            counts[name] = counts.get(name, 0) + len(batch)
        for name, states in self._upserts.items():
            counts[name] = counts.get(name, 0) + len(states)
        for name, _, _ in self._in_flight:
            counts[name] = counts.get(name, 0) + 1
        return {name: count for name, count in counts.items() if count}

    # -- writes (never block) ------------------------------------------------------------

    def insert(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Queue one row for insertion (duplicates ignored where the table has a key).

        Raises :class:`Unstorable` for a row the database could not hold."""
        check_row(table, row)
        self._inserts.setdefault(table.name, []).append(row)
        self._queued()

    def upsert(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Queue the newest full state of one row; later calls for the same key win."""
        check_row(table, row)
        key = tuple(row[column] for column in _UPSERT_KEYS[table.name])
        self._upserts.setdefault(table.name, {})[key] = row
        self._queued()

    def _queued(self) -> None:
        self._pending += 1
        if self._pending >= self.batch_size:
            self._wake.set()

    async def flush(self, timeout: float | None = None, *, within: float = 0.0) -> None:
        """Wait until everything queued so far is in the database.

        Raises :class:`StoreUnavailable` after ``timeout`` s (the rows stay queued) or when
        the store stops first. ``within``: the write may wait that long for company.
        ``--durable`` waits here before each acknowledgement with a few milliseconds, so that
        every connection acknowledging meanwhile shares one commit (group commit): a commit
        per message costs a transaction's round trips each, and waiting for the regular
        ``flush_interval`` made every acknowledgement 50 ms late."""
        if self._pending == 0 and not self._flushing:
            return
        if self._closing and self._writer is not None and self._writer.done():
            raise StoreUnavailable("the store has stopped")
        # Everyone waiting for the next commit shares one future (and no task per waiter:
        # --durable waits here once per message).
        if self._flushed and not self._flushed[-1].done():
            future = self._flushed[-1]
        else:
            future = asyncio.get_running_loop().create_future()
            # Nobody may be left awaiting it (a timed-out reader): never warn about its outcome.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._flushed.append(future)
        if within <= 0:
            self._wake.set()
        elif self._gather is None:
            self._gather = asyncio.get_running_loop().call_later(within, self._gathered)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(future)
        except TimeoutError:
            raise StoreUnavailable(
                f"database writes did not complete within {timeout:g} s "
                f"({self._pending} rows queued)"
            ) from None

    def _gathered(self) -> None:
        self._gather = None
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            waiters, self._flushed = self._flushed, []
            if self._pending and not await self._write_batch():
                # The database is unavailable and the batch went back in the queue: the
                # waiters keep waiting (bounded by their own timeouts).
                self._flushed = waiters + self._flushed
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if self._closing and not self._pending:
                return

    def _take(self) -> list[_Op]:
        """Empty the queue into one batch: parents before children (state, then rows)."""
        inserts, self._inserts = self._inserts, {}
        upserts, self._upserts = self._upserts, {}
        self._pending = 0
        ops: list[_Op] = []
        for name in ("charger_info", "charger_usage_log"):
            ops.extend((name, True, row) for row in upserts.pop(name, {}).values())
        for name, batch in inserts.items():
            ops.extend((name, False, row) for row in batch)
        return ops

    def _requeue(self, ops: list[_Op]) -> None:
        """Put a batch back in front of what arrived meanwhile (newer upserts win)."""
        inserts: dict[str, list[dict[str, Any]]] = {}
        upserts: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        for name, is_upsert, row in ops:
            if is_upsert:
                key = tuple(row[column] for column in _UPSERT_KEYS[name])
                upserts.setdefault(name, {})[key] = row
            else:
                inserts.setdefault(name, []).append(row)
        for name, batch in inserts.items():
            self._inserts[name] = batch + self._inserts.get(name, [])
        for name, states in upserts.items():
            self._upserts[name] = {**states, **self._upserts.get(name, {})}
        self._pending += len(ops)

    async def _write_batch(self) -> bool:
        """Write the queue; False when the database is unavailable (the batch is requeued)."""
        ops = self._take()
        self._in_flight = ops
        self._flushing = True
        started = time.perf_counter()
        try:
            try:
                await self._write(ops)
            except Exception as exc:
                if not await self._is_data_error(exc):
                    await self._unavailable(exc)
                    return False
                self._quiet.warning(
                    "bisect",
                    f"a batch of {len(ops)} rows failed on its data; writing it in parts to "
                    "leave out only the rows the database refuses",
                    _describe(exc),
                )
                if not await self._isolate(ops):
                    return False
        except asyncio.CancelledError:
            # Stopping mid-write: the transaction rolled back, so the rows are still unwritten.
            self._requeue(self._in_flight)
            self._in_flight = []
            raise
        finally:
            self._flushing = False
        self._in_flight = []
        if self._consecutive_failures:
            log.info("database writes resumed after %d failed attempts", self._consecutive_failures)
        self._consecutive_failures = 0
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.rows += len(ops)
        self.stats.last_batch_seconds = elapsed
        if self.on_batch:
            self.on_batch(len(ops), elapsed)
        return True

    async def _isolate(self, ops: list[_Op]) -> bool:
        """Bisect a batch that failed on its data: write every part the database accepts,
        leave out (log, count) each single row it refuses. False when the database became
        unavailable meanwhile (what is left is requeued)."""
        middle = len(ops) // 2
        parts = [ops[middle:], ops[:middle]]  # a stack: the first half is written first
        while parts:
            part = parts.pop()
            self._in_flight = [op for rest in (part, *parts) for op in rest]
            if not part:
                continue
            try:
                await self._write(part)
            except Exception as exc:
                if not await self._is_data_error(exc):
                    await self._unavailable(exc)
                    return False
                if len(part) == 1:
                    self._refused(part[0], exc)
                    continue
                middle = len(part) // 2
                parts += [part[middle:], part[:middle]]
        return True

    async def _unavailable(self, exc: BaseException) -> None:
        """The database could not take the batch: keep every row and retry after a pause."""
        self.stats.failures += 1
        self._consecutive_failures += 1
        self._requeue(self._in_flight)
        self._in_flight = []
        self._quiet.warning(
            "retry",
            f"database write failed ({self._pending} rows kept queued, retrying)",
            _describe(exc),
        )
        await asyncio.sleep(min(5.0, 0.2 * self._consecutive_failures))

    def _refused(self, op: _Op, exc: BaseException) -> None:
        name, _, row = op
        self.stats.dropped[name] = self.stats.dropped.get(name, 0) + 1
        if self.on_write_failure:
            self.on_write_failure(name)
        key = {column: row[column] for column in _ROW_KEYS if column in row}
        self._quiet.error(
            f"refused:{name}",
            f"left out a {name} row the database refused {key}",
            _describe(exc),
        )

    async def _is_data_error(self, exc: BaseException) -> bool:
        """True when the rows are at fault, not the database: only then is a row left out.

        Anything that may be the connection keeps the whole batch, and even a data error
        counts only when the database still answers, so a database going away can never
        be mistaken for bad rows (and rows dropped)."""
        if isinstance(exc, sa.exc.DBAPIError):
            if exc.connection_invalidated or not (
                isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError)
                or _sqlstate_class(exc) in _ROW_SQLSTATE_CLASSES
            ):
                return False
        elif isinstance(exc, sa.exc.StatementError):
            pass  # binding the rows' values failed: about the rows whatever the cause
        elif not isinstance(exc, ValueError | TypeError | OverflowError):
            return False
        return await self._reachable()

    async def _reachable(self) -> bool:
        assert self.engine is not None
        try:
            async with asyncio.timeout(5.0), self.engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

    async def _write(self, ops: list[_Op]) -> None:
        """One database transaction: consecutive rows of one table and kind together."""
        assert self.engine is not None
        async with self.engine.begin() as connection:
            for (name, is_upsert), group in itertools.groupby(ops, key=lambda op: op[:2]):
                table = metadata.tables[name]
                rows = [row for _, _, row in group]
                if is_upsert:
                    await self._upsert(connection, table, rows)
                elif name in _INSERT_IGNORE:
                    await connection.execute(self._insert_ignore(table), rows)
                else:
                    await connection.execute(table.insert(), rows)

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

    async def fetch(
        self, query: sa.Executable, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Rows of ``query``; :class:`StoreUnavailable` when it takes over ``timeout`` s."""
        if self.engine is None:
            raise StoreUnavailable("the store is not running")
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as connection:
                result = await connection.execute(query)
                return [dict(row._mapping) for row in result]
        except TimeoutError:
            raise StoreUnavailable(f"the database did not answer within {timeout:g} s") from None
