"""Reconcile a run's ledger with what the CSMS recorded: did the CSMS lose anything?

``python -m loadgen.reconcile --redis-url redis://... --run <id> --csms-api http://...``
(or ``--database-url ...``) reads the run ledger in Redis (see :mod:`loadgen.coordination`:
an entry when the CSMS acknowledged a transaction's start, one when it acknowledged its end,
each with the transaction messages acknowledged so far), looks each transaction up at the
CSMS and reports, by transaction:

- matched; missing (absent, or not closed); duplicated (twice in the ledger or twice at the
  CSMS); energy mismatches beyond ``--tolerance-wh``;
- acknowledged events missing: seqNos the CSMS acknowledged but did not store (2.0.1; 1.6 has
  no seqNo, so fewer stored messages than acknowledged). A source that cannot give seqNos
  (no ``transaction_event`` table) is said so, and counts are compared as information only;
- never ended: started by the fleet but never ended by it (a dead worker's, or a stop that
  timed out), whether the CSMS still has it open, closed it, or never stored it. The
  reconciliation runs after the run: run mid-run, transactions still charging show up here.

Exit status: 0 when nothing was lost, 1 on any finding above but "matched", 2 when a source
cannot be read.

The CSMS side sits behind :class:`CsmsRecords`: csms_stub's HTTP API, a database with
csms_stub's ``charger_usage_log`` (and optionally ``transaction_event``) tables, and any
other CSMS's database read through a mapping file (``--mapping FILE``, see
:class:`Mapping`): a query or table/column names that yield charger id, transaction id,
energy, start and stop time, and optionally each stored event's seqNo.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
import sqlalchemy as sa

from csms_stub.store import charger_usage_log, normalize_url, seq_no_ranges, transaction_event
from loadgen import seqnos
from loadgen.coordination import LedgerEntry, read_ledger

Key = tuple[str, str]  # (charger id, transaction id): how a CSMS identifies a transaction


class SourceUnavailable(RuntimeError):
    """A source (Redis, the CSMS API, the database) cannot be read; one-line message."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass(frozen=True)
class CsmsRow:
    charger_id: str
    transaction_id: str
    closed: bool
    energy_wh: float
    event_count: int | None = None
    #: the stored seqNos as ranges; None when the source cannot tell (counts only)
    seq_nos: tuple[tuple[int, int], ...] | None = None
    #: when the CSMS says the transaction started / stopped (epoch s), where it tells
    start_time: float | None = None
    stop_time: float | None = None

    @property
    def key(self) -> Key:
        return (self.charger_id, self.transaction_id)


class CsmsRecords(Protocol):
    """What a CSMS recorded for a set of transactions."""

    description: str

    def fetch(self, keys: Collection[Key]) -> list[CsmsRow]:
        """Every row the CSMS has for these (charger, transaction) keys, duplicates included.

        A source may also return the other rows of the same chargers: those that started
        during the run (by their ``start_time``) are listed as extra at the CSMS."""


# -- the ledger ------------------------------------------------------------------------------


class LedgerSource:
    """A run's ledger stream in Redis.

    Entries repeated with the same ``entry_id`` are one append retried after a dropped
    connection, not two transactions: they are dropped (and counted in ``retried``).
    """

    def __init__(self, redis_url: str, run_id: str) -> None:
        self.redis_url = redis_url
        self.run_id = run_id
        self.retried = 0

    def entries(self) -> list[LedgerEntry]:
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=5, socket_timeout=30)
        seen: set[str] = set()
        entries: list[LedgerEntry] = []
        try:
            for data in read_ledger(client, self.run_id):
                entry_id = data.get("entry_id")
                if entry_id is not None:
                    if entry_id in seen:
                        self.retried += 1
                        continue
                    seen.add(entry_id)
                entries.append(LedgerEntry.from_dict(data))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise SourceUnavailable(
                f"cannot read Redis at {self.redis_url}: {_one_line(exc)}"
            ) from exc
        finally:
            client.close()
        return entries


# -- the CSMS: csms_stub's HTTP API ----------------------------------------------------------


class StubApiRecords:
    """csms_stub's ``GET /transactions``: one request, or one per charger for big runs."""

    LIMIT = 100_000  # the API's largest page

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.description = f"csms_stub API at {self.base_url}"

    def _get(self, **params: Any) -> list[dict[str, Any]]:
        url = f"{self.base_url}/transactions?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise SourceUnavailable(f"{url} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceUnavailable(
                f"cannot read the CSMS API at {self.base_url}: {_one_line(reason)}"
            ) from exc

    def fetch(self, keys: Collection[Key]) -> list[CsmsRow]:
        rows = self._get(limit=self.LIMIT, seq_nos="true")
        if len(rows) >= self.LIMIT:  # maybe truncated: ask charger by charger
            rows = []
            for charger_id in sorted({charger for charger, _ in keys}):
                rows += self._get(charger_id=charger_id, limit=self.LIMIT, seq_nos="true")
        wanted = set(keys)
        found = [
            CsmsRow(
                str(row["charger_id"]),
                str(row["transaction_id"]),
                row.get("end_time") is not None,
                float(row.get("energy_consumed") or 0.0) * 1000,
                row.get("event_count"),
                # an older stub (or another CSMS's API) without the field: counts only
                None if row.get("seq_nos") is None else tuple(seqnos.normalize(row["seq_nos"])),
            )
            for row in rows
        ]
        return [row for row in found if row.key in wanted]


# -- the CSMS: a database with csms_stub's charger_usage_log ---------------------------------

# csms_stub's own table definition and URL rules: one home for the schema. Only the
# columns compared are read, so any CSMS with such a table can be reconciled.
_usage = charger_usage_log
_events = transaction_event
_COMPARED = (
    _usage.c.charger_id,
    _usage.c.transaction_id,
    _usage.c.end_time,
    _usage.c.energy_consumed,
    _usage.c.event_count,
)


class DatabaseRecords:
    """``charger_usage_log`` read with SQLAlchemy (asyncpg / aiosqlite), optionally in a schema."""

    CHUNK = 500  # chargers per query

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = normalize_url(url)
        self.schema = schema
        shown = sa.engine.make_url(self.url).render_as_string(hide_password=True)
        self.description = f"database {shown}" + (f" (schema {schema})" if schema else "")

    def fetch(self, keys: Collection[Key]) -> list[CsmsRow]:
        try:
            rows = asyncio.run(self._fetch(sorted({charger for charger, _ in keys})))
        except (TimeoutError, sa.exc.SQLAlchemyError, OSError) as exc:
            raise SourceUnavailable(
                f"cannot read charger_usage_log from {self.description}: {_one_line(exc)}"
            ) from exc
        wanted = set(keys)
        return [row for row in rows if row.key in wanted]

    def check(self) -> None:
        """Read for one charger that does not exist: a missing table or an unreachable
        database is one line of :class:`SourceUnavailable` before a run, not after it."""
        self.fetch([("", "")])

    async def _fetch(self, chargers: list[str]) -> list[CsmsRow]:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(self.url)
        if self.schema:
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        rows: list[CsmsRow] = []
        try:
            async with engine.connect() as connection:
                # Another CSMS's database may have no seqNos: then counts, information only.
                has_events = await connection.run_sync(
                    lambda sync: sa.inspect(sync).has_table(_events.name, schema=self.schema)
                )
                for start in range(0, len(chargers), self.CHUNK):
                    chunk = chargers[start : start + self.CHUNK]
                    runs: dict[Key, list[tuple[int, int]]] | None = None
                    if has_events:
                        runs = defaultdict(list)
                        query = seq_no_ranges(_events.c.charger_id.in_(chunk))
                        for run in await connection.execute(query):
                            key = (str(run.charger_id), str(run.transaction_id))
                            runs[key].append((int(run.first), int(run.last)))
                    query = sa.select(*_COMPARED).where(_usage.c.charger_id.in_(chunk))
                    for row in await connection.execute(query):
                        key = (str(row.charger_id), str(row.transaction_id))
                        rows.append(
                            CsmsRow(
                                *key,
                                row.end_time is not None,
                                float(row.energy_consumed or 0.0) * 1000,
                                row.event_count,
                                None if runs is None else tuple(runs.get(key, ())),
                            )
                        )
        finally:
            await engine.dispose()
        return rows


# -- the CSMS: any database, through a mapping -----------------------------------------------


class MappingError(ValueError):
    """A mapping file that cannot work; the message is one line naming the file."""


#: what the [transactions] section yields, by our name; one of each group is needed
_TRANSACTION_FIELDS = (
    "charger_id",
    "transaction_id",
    "energy",
    "meter_start",
    "meter_stop",
    "start_time",
    "stop_time",
    "closed",
    "active",
    "event_count",
)
_EVENT_FIELDS = ("charger_id", "transaction_id", "seq_no")
_SECTION_KEYS = {"query", "table", "columns", "energy_scale"}
_TOP_KEYS = {"schema", "timezone", "transactions", "events"}


@dataclass(frozen=True)
class Relation:
    """Where one kind of record comes from: a SQL query whose columns carry our names, or a
    table and which of its columns holds each of our names."""

    section: str
    query: str | None = None
    table: str | None = None
    #: our name -> the table's column (table form only)
    columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Mapping:
    """How to read a CSMS's own tables: a TOML file.

    ``[transactions]`` (required) and ``[events]`` (optional) each give either ``query``, a
    SQL query whose columns are named as below, or ``table`` plus ``[<section>.columns]``,
    our name = the table's column. A transaction row needs ``charger_id``,
    ``transaction_id``, the energy (``energy``, or ``meter_start`` and ``meter_stop``: the
    meter readings, subtracted here, so readings stored as strings need no SQL cast) and
    whether it ended (``stop_time`` not null, or a boolean ``closed`` or ``active``);
    ``start_time`` and ``event_count`` are optional. ``energy_scale`` converts the energy
    to Wh (1000 for kWh; default 1). An event row is one stored transaction message:
    ``charger_id``, ``transaction_id``, ``seq_no`` (OCPP 2.0.1); with it, acknowledged
    seqNos the CSMS did not store are found. Top level: ``schema``, the PostgreSQL schema of
    the tables (the search path for queries), and ``timezone``, the zone of timestamps
    stored without one (default UTC).
    """

    path: str
    transactions: Relation
    events: Relation | None = None
    energy_scale: float = 1.0
    schema: str | None = None
    timezone: dt.tzinfo = dt.UTC

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Mapping:
        """Read and check a mapping file; :class:`MappingError` with one line if it cannot work."""
        name = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise MappingError(f"mapping {name}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise MappingError(f"mapping {name}: not TOML: {_one_line(exc)}") from None

        def fail(message: str) -> MappingError:
            return MappingError(f"mapping {name}: {message}")

        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise fail(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})")
        schema = data.get("schema")
        if schema is not None and (not isinstance(schema, str) or not schema):
            raise fail("schema must be a non-empty string")
        zone: dt.tzinfo = dt.UTC
        if "timezone" in data:
            try:
                zone = ZoneInfo(str(data["timezone"]))
            except (ZoneInfoNotFoundError, ValueError):
                raise fail(f"unknown timezone {data['timezone']!r}") from None
        if not isinstance(data.get("transactions"), dict):
            raise fail("a [transactions] section is required")
        transactions = _relation(data["transactions"], "transactions", _TRANSACTION_FIELDS, fail)
        given = set(transactions.columns)
        if transactions.table is not None:
            for needed in ("charger_id", "transaction_id"):
                if needed not in given:
                    raise fail(f"[transactions.columns] needs {needed}")
            if "energy" not in given and not {"meter_start", "meter_stop"} <= given:
                raise fail("[transactions.columns] needs energy, or meter_start and meter_stop")
            if not given & {"stop_time", "closed", "active"}:
                raise fail("[transactions.columns] needs stop_time, closed or active")
        scale = data["transactions"].get("energy_scale", 1)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
            raise fail(f"[transactions] energy_scale must be a positive number, not {scale!r}")
        events = None
        if "events" in data:
            if not isinstance(data["events"], dict):
                raise fail("[events] must be a section")
            events = _relation(data["events"], "events", _EVENT_FIELDS, fail)
            if "energy_scale" in data["events"]:
                raise fail("energy_scale belongs in [transactions]")
            missing = [n for n in _EVENT_FIELDS if events.table and n not in events.columns]
            if missing:
                raise fail(f"[events.columns] needs {missing[0]}")
        return cls(name, transactions, events, float(scale), schema, zone)


def _relation(section: dict[str, Any], name: str, fields: tuple[str, ...], fail: Any) -> Relation:
    unknown = sorted(set(section) - _SECTION_KEYS)
    if unknown:
        raise fail(f"[{name}] has an unknown key {unknown[0]!r} (known: query, table, columns)")
    query, table = section.get("query"), section.get("table")
    if (query is None) == (table is None):
        raise fail(f"[{name}] needs either query or table (with [{name}.columns])")
    if query is not None:
        if not isinstance(query, str) or not query.strip():
            raise fail(f"[{name}] query must be a non-empty string")
        if "columns" in section:
            raise fail(f"[{name}] query names its columns itself (AS charger_id, ...): no columns")
        return Relation(name, query=query.strip().rstrip(";"))
    columns = section.get("columns")
    if not isinstance(table, str) or not table:
        raise fail(f"[{name}] table must be a non-empty string")
    if not isinstance(columns, dict):
        raise fail(f"[{name}] table needs [{name}.columns]: our name = its column")
    for ours, theirs in columns.items():
        if ours not in fields:
            raise fail(f"[{name}.columns] unknown name {ours!r} (known: {', '.join(fields)})")
        if not isinstance(theirs, str) or not theirs:
            raise fail(f"[{name}.columns] {ours} must name a column")
    return Relation(name, table=table, columns=dict(columns))


def _number(value: Any) -> float | None:
    """A stored number (int, Decimal, float, or a string such as SteVe's meter values)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value) if isinstance(value, int | float | Decimal | str) else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _epoch(value: Any, zone: dt.tzinfo) -> float | None:
    """A stored timestamp as epoch seconds; naive ones are in ``zone``."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=zone)).timestamp()
    return _number(value)  # epoch seconds already


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "t", "true", "y", "yes")
    return bool(value)


class MappedRecords:
    """Any CSMS's database, read through a :class:`Mapping` (SQLAlchemy, async drivers:
    ``postgresql://`` and ``sqlite://`` as they are, e.g. ``mysql+aiomysql://`` for others).

    The mapping's query (or table) is filtered by charger here, a chunk of chargers at a
    time, so it may select the whole history: only the run's chargers are read.
    """

    CHUNK = 500

    def __init__(self, url: str, mapping: Mapping, schema: str | None = None) -> None:
        self.url = normalize_url(url)
        self.mapping = mapping
        self.schema = schema or mapping.schema
        shown = sa.engine.make_url(self.url).render_as_string(hide_password=True)
        self.description = f"database {shown} through mapping {mapping.path}" + (
            f" (schema {self.schema})" if self.schema else ""
        )

    def fetch(self, keys: Collection[Key]) -> list[CsmsRow]:
        # Every row of the run's chargers: the comparison finds the extra ones among them.
        return self._run(sorted({charger for charger, _ in keys}))

    def check(self) -> None:
        """Run each of the mapping's queries for no charger: a wrong table or column name, an
        unreachable database, is one line of :class:`SourceUnavailable` before a run, not
        after it."""
        self._run([], probe=True)

    def _run(self, chargers: list[str], probe: bool = False) -> list[CsmsRow]:
        try:
            return asyncio.run(self._fetch(chargers, probe))
        except (TimeoutError, sa.exc.SQLAlchemyError, OSError) as exc:
            raise SourceUnavailable(f"cannot read {self.description}: {_db_error(exc)}") from exc

    def _select(self, relation: Relation, chargers: list[str] | None) -> sa.Select[Any]:
        """The relation's rows, our names as column names, for these chargers (None: none)."""
        if relation.query is not None:
            source = sa.text(relation.query).columns(sa.column("charger_id")).subquery("mapped")
            query = sa.select(sa.literal_column("*")).select_from(source)
            charger = source.c.charger_id
        else:
            table = sa.table(
                relation.table or "",
                *(sa.column(name) for name in set(relation.columns.values())),
                schema=self.schema,
            )
            query = sa.select(*(table.c[col].label(ours) for ours, col in relation.columns.items()))
            charger = table.c[relation.columns["charger_id"]]
        if chargers is None:
            return query.where(sa.false())
        return query.where(charger.in_(chargers))

    async def _fetch(self, chargers: list[str], probe: bool) -> list[CsmsRow]:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(self.url)
        mapping, rows = self.mapping, []
        try:
            async with engine.connect() as connection:
                if self.schema and engine.dialect.name == "postgresql":
                    # Queries name tables plainly; the schema is where they are looked up.
                    quoted = engine.dialect.identifier_preparer.quote(self.schema)
                    await connection.exec_driver_sql(f"SET search_path TO {quoted}")
                chunks = (
                    [None]
                    if probe
                    else [chargers[i : i + self.CHUNK] for i in range(0, len(chargers), self.CHUNK)]
                )
                for chunk in chunks:
                    seq: dict[Key, list[int]] | None = None
                    if mapping.events is not None:
                        seq = defaultdict(list)
                        result = await self._execute(connection, mapping.events, chunk)
                        for event in result:
                            key = (str(event["charger_id"]), str(event["transaction_id"]))
                            number = _number(event["seq_no"])
                            if number is not None:
                                seq[key].append(int(number))
                    result = await self._execute(connection, mapping.transactions, chunk)
                    rows += [self._row(row, seq) for row in result]
        finally:
            await engine.dispose()
        return rows

    async def _execute(
        self, connection: Any, relation: Relation, chunk: list[str] | None
    ) -> list[dict[str, Any]]:
        result = await connection.execute(self._select(relation, chunk))
        names = set(result.keys())
        fields = _EVENT_FIELDS if relation.section == "events" else ("charger_id", "transaction_id")
        lacking = [name for name in fields if name not in names]
        if relation.section == "transactions":
            if "energy" not in names and not {"meter_start", "meter_stop"} <= names:
                lacking.append("energy (or meter_start and meter_stop)")
            if not names & {"stop_time", "closed", "active"}:
                lacking.append("stop_time (or closed, or active)")
        if lacking:
            raise SourceUnavailable(
                f"mapping {self.mapping.path}: the [{relation.section}] query yields no column "
                f"named {lacking[0]} (it yields {', '.join(sorted(names))})"
            )
        return [dict(row._mapping) for row in result]

    def _row(self, row: dict[str, Any], seq: dict[Key, list[int]] | None) -> CsmsRow:
        zone = self.mapping.timezone
        if "closed" in row:
            closed = _flag(row["closed"])
        elif "active" in row:
            closed = not _flag(row["active"])
        else:
            closed = row.get("stop_time") is not None
        if "energy" in row:
            energy = _number(row["energy"])
        else:
            start, stop = _number(row["meter_start"]), _number(row["meter_stop"])
            energy = None if start is None or stop is None else stop - start
        key = (str(row["charger_id"]), str(row["transaction_id"]))
        count = _number(row.get("event_count"))
        return CsmsRow(
            *key,
            closed,
            math.nan if energy is None else energy * self.mapping.energy_scale,
            None if count is None else int(count),
            None if seq is None else tuple(seqnos.from_numbers(seq.get(key, ()))),
            _epoch(row.get("start_time"), zone),
            _epoch(row.get("stop_time"), zone),
        )


def _db_error(exc: BaseException) -> str:
    """The database's own words (``column "x" does not exist``), not SQLAlchemy's wrapping."""
    cause = getattr(exc, "orig", None)
    cause = getattr(cause, "__cause__", None) or cause  # asyncpg's error under the adapter's
    return _one_line(cause if cause is not None else exc)


# -- the comparison --------------------------------------------------------------------------


@dataclass
class Report:
    run_id: str
    csms: str
    ledger_entries: int = 0
    retried_appends: int = 0
    matched: list[Key] = field(default_factory=list)
    missing: list[tuple[Key, str]] = field(default_factory=list)
    duplicated: list[tuple[Key, str]] = field(default_factory=list)
    energy_mismatches: list[tuple[Key, float, float]] = field(default_factory=list)
    #: acknowledged transaction messages the CSMS does not have (seqNos, or 1.6 counts)
    seq_gaps: list[tuple[Key, str]] = field(default_factory=list)
    #: started by the fleet (the CSMS acknowledged the start), never ended by it
    never_ended: list[tuple[Key, str]] = field(default_factory=list)
    #: transactions whose acknowledged messages were checked by seqNo / by count (1.6)
    checked_seq_nos: int = 0
    checked_counts: int = 0
    #: information only: no seqNos from the CSMS (or an old ledger): counts compared
    message_count_differs: list[tuple[Key, int, int]] = field(default_factory=list)
    unchecked: int = 0
    #: information only: transactions of the run's chargers at the CSMS that the ledger does
    #: not have, started during the run (sources that give start times)
    extra: list[Key] = field(default_factory=list)
    #: information only: start / stop times the CSMS stored later than the reconciliation
    #: (the stations sent simulated time, or the CSMS's clock is ahead)
    future_times: list[tuple[Key, float]] = field(default_factory=list)

    @property
    def transactions(self) -> int:
        return (
            len(self.matched)
            + len(self.missing)
            + len(self.energy_mismatches)
            + len(self.never_ended)
        )

    @property
    def lost(self) -> bool:
        return bool(
            self.missing
            or self.duplicated
            or self.energy_mismatches
            or self.seq_gaps
            or self.never_ended
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "csms": self.csms,
            "ledger_entries": self.ledger_entries,
            "transactions": self.transactions,
            "retried_appends": self.retried_appends,
            "matched": len(self.matched),
            "missing": [{"key": list(k), "reason": r} for k, r in self.missing],
            "duplicated": [{"key": list(k), "reason": r} for k, r in self.duplicated],
            "energy_mismatches": [
                {"key": list(k), "ledger_wh": a, "csms_wh": b if math.isfinite(b) else None}
                for k, a, b in self.energy_mismatches
            ],
            "seq_gaps": [{"key": list(k), "reason": r} for k, r in self.seq_gaps],
            "never_ended": [{"key": list(k), "reason": r} for k, r in self.never_ended],
            "acknowledged_checked": {
                "by_seq_no": self.checked_seq_nos,
                "by_count": self.checked_counts,
                "information_only": self.unchecked,
            },
            "message_count_differs": len(self.message_count_differs),
            "extra": [list(k) for k in self.extra],
            "future_times": [
                {"key": list(k), "seconds_ahead": round(ahead, 1)} for k, ahead in self.future_times
            ],
            "lost": self.lost,
        }

    def render(self, details: int = 20) -> str:
        lines = [
            f"run {self.run_id}: {self.ledger_entries} ledger entries, "
            f"{self.transactions} transactions; CSMS: {self.csms}",
            f"matched: {len(self.matched)}",
            f"missing: {len(self.missing)}",
            f"duplicated: {len(self.duplicated)}",
            f"energy mismatches: {len(self.energy_mismatches)}",
            f"acknowledged events missing: {len(self.seq_gaps)}",
            f"never ended: {len(self.never_ended)}",
        ]
        for (charger, tid), reason in self.missing[:details]:
            lines.append(f"  - missing {charger} {tid}: {reason}")
        for (charger, tid), reason in self.duplicated[:details]:
            lines.append(f"  - duplicated {charger} {tid}: {reason}")
        for (charger, tid), ledger_wh, csms_wh in self.energy_mismatches[:details]:
            stored = f"{csms_wh:.1f} Wh" if math.isfinite(csms_wh) else "no energy"
            lines.append(
                f"  - energy mismatch {charger} {tid}: ledger {ledger_wh:.1f} Wh, CSMS {stored}"
            )
        for (charger, tid), reason in self.seq_gaps[:details]:
            lines.append(f"  - acknowledged events missing {charger} {tid}: {reason}")
        for (charger, tid), reason in self.never_ended[:details]:
            lines.append(f"  - never ended {charger} {tid}: {reason}")
        checked = f"acknowledged events checked: {self.checked_seq_nos} transactions by seqNo"
        if self.checked_counts:
            checked += f", {self.checked_counts} by count (1.6)"
        lines.append(checked)
        if self.unchecked:
            lines.append(
                f"not checked: {self.unchecked} transactions (no seqNos from the CSMS or the "
                "ledger); message counts compared instead, information only"
            )
        if self.message_count_differs:
            lines.append(
                f"message counts differ (information only): {len(self.message_count_differs)}"
            )
        if self.extra:
            lines.append(f"at the CSMS, not in the ledger (information only): {len(self.extra)}")
            lines += [f"  - extra {charger} {tid}" for charger, tid in self.extra[:details]]
        if self.future_times:
            ahead = max(seconds for _, seconds in self.future_times)
            lines.append(
                f"times in the future at the CSMS (information only): {len(self.future_times)} "
                f"transactions, up to {ahead:.0f} s ahead of this machine's clock"
            )
        if self.retried_appends:
            lines.append(f"retried ledger appends ignored: {self.retried_appends}")
        lines.append("result: LOSS" if self.lost else "result: OK")
        return "\n".join(lines)


#: clock skew between this machine and the CSMS's allowed before a time counts as future
FUTURE_TOLERANCE_S = 60.0


def compare(
    run_id: str,
    entries: Iterable[LedgerEntry],
    csms: CsmsRecords,
    tolerance_wh: float = 1.0,
    retried_appends: int = 0,
    now: float | None = None,
) -> Report:
    """Classify each ledger transaction once; duplicates and acknowledged events the CSMS
    lacks are counted besides that.

    A transaction with a start entry and no end entry was never ended by the fleet: after a
    run that is a dead worker's (or a stop that timed out), so it fails the reconciliation.
    Run mid-run, the transactions still charging show up the same way. Information only:
    start and stop times the CSMS stored later than ``now`` (default: the clock), and
    transactions of the run's chargers that the CSMS started during the run and the ledger
    does not have (extra).
    """
    entries = list(entries)
    report = Report(run_id, csms.description, len(entries), retried_appends)
    starts: dict[Key, list[LedgerEntry]] = defaultdict(list)
    ends: dict[Key, list[LedgerEntry]] = defaultdict(list)
    for entry in entries:
        kinds = starts if entry.kind == "start" else ends
        kinds[(entry.charger_id, entry.transaction_id)].append(entry)
    rows: dict[Key, list[CsmsRow]] = defaultdict(list)
    # One fetch for every key: a source reads by charger (a chunk at a time), so asking per
    # transaction would be a query each, and rows of the same key must be seen together.
    for row in csms.fetch(starts.keys() | ends.keys()):
        rows[row.key].append(row)
    limit = (time.time() if now is None else now) + FUTURE_TOLERANCE_S
    known = starts.keys() | ends.keys()
    # The run began no later than its first transaction (the stations' clock runs at the
    # wall clock's pace or faster); a row that started before that is an earlier run's.
    began = min((entry.start for entry in entries), default=0.0) - FUTURE_TOLERANCE_S
    for key, found in sorted(rows.items()):
        times = [t for row in found for t in (row.start_time, row.stop_time) if t is not None]
        if times and max(times) > limit:
            report.future_times.append((key, max(times) - limit + FUTURE_TOLERANCE_S))
        if key not in known and any(
            row.start_time is not None and row.start_time >= began for row in found
        ):
            report.extra.append(key)
    # An end entry means the CSMS acknowledged the end: from then on it owes us a closed
    # row with the energy sent. Each such transaction lands in exactly one of matched,
    # missing or energy_mismatches, so the totals add up to the ledger's transactions.
    for key, ledger in ends.items():
        found = rows.get(key, [])
        # Duplicates are reported besides that class, not instead of it: the transaction is
        # still judged on its first entry and first closed row.
        if len(ledger) > 1:
            report.duplicated.append((key, f"{len(ledger)} ledger entries"))
        if len(found) > 1:
            report.duplicated.append((key, f"{len(found)} rows at the CSMS"))
        closed = [row for row in found if row.closed]
        if not found:
            report.missing.append((key, "not at the CSMS"))
            continue
        # Checked before "closed?": a transaction left open may have lost messages too, and
        # both findings help whoever reads the report.
        _check_acknowledged(report, key, ledger[0], (closed or found)[0])
        if not closed:
            report.missing.append((key, "not closed at the CSMS"))
            continue
        entry, row = ledger[0], closed[0]
        if not abs(entry.energy_wh - row.energy_wh) <= tolerance_wh:  # NaN: none stored
            report.energy_mismatches.append((key, entry.energy_wh, row.energy_wh))
        else:
            report.matched.append(key)
    # Started but never ended by the fleet: whatever the CSMS did with it, the run did not
    # finish it, so it is a finding. Where it stands at the CSMS says what to look at: open
    # (a dead worker, a stop never sent), closed (the end arrived, its acknowledgement did
    # not), absent (the CSMS lost a start it acknowledged).
    for key in starts.keys() - ends.keys():
        found = rows.get(key, [])
        if not found:
            where = "not at the CSMS"
        elif any(not row.closed for row in found):
            where = "open at the CSMS"
        else:
            where = "closed at the CSMS"
        report.never_ended.append((key, f"started by the fleet, never ended; {where}"))
        if found:
            _check_acknowledged(report, key, starts[key][-1], found[0])
    report.never_ended.sort()
    return report


def _check_acknowledged(report: Report, key: Key, entry: LedgerEntry, row: CsmsRow) -> None:
    """Is every transaction message the CSMS acknowledged stored? By seqNo (2.0.1), by
    count (1.6: the stub numbers a transaction's messages itself, and cannot tell a repeated
    MeterValues from a new one, so it may store more but never fewer), else information only.
    """
    # Only what the CSMS acknowledged counts (a CALL it never answered may rightly be
    # missing): the ledger's seqNos are those of CALLRESULTs, the CSMS's those it stored.
    if entry.seq_nos is not None and row.seq_nos is not None:
        report.checked_seq_nos += 1
        gap = seqnos.missing(seqnos.normalize(entry.seq_nos), seqnos.normalize(row.seq_nos))
        if gap:
            plural = "s" if seqnos.count(gap) > 1 else ""
            report.seq_gaps.append(
                (key, f"acknowledged seqNo{plural} {seqnos.render(gap)} not at the CSMS")
            )
        return
    if entry.seq_nos is None and entry.acknowledged is not None and row.seq_nos is not None:
        report.checked_counts += 1
        stored = seqnos.count(seqnos.normalize(row.seq_nos))
        if stored < entry.acknowledged:
            report.seq_gaps.append(
                (
                    key,
                    f"{entry.acknowledged - stored} of {entry.acknowledged} acknowledged "
                    "transaction messages not at the CSMS",
                )
            )
        return
    # Nothing to check by: a mismatch of counts is said, but cannot fail the run (a CSMS
    # may count a transaction's messages its own way).
    report.unchecked += 1
    expected = entry.acknowledged if entry.acknowledged is not None else entry.messages
    if row.event_count is not None and row.event_count != expected:
        report.message_count_differs.append((key, expected, row.event_count))


def reconcile(redis_url: str, run_id: str, csms: CsmsRecords, tolerance_wh: float = 1.0) -> Report:
    ledger = LedgerSource(redis_url, run_id)
    entries = ledger.entries()
    if not entries:
        raise SourceUnavailable(f"run {run_id} has no ledger entries in Redis at {redis_url}")
    return compare(run_id, entries, csms, tolerance_wh, ledger.retried)


def records(
    csms_api: str | None = None,
    database_url: str | None = None,
    schema: str | None = None,
    mapping: str | Mapping | None = None,
) -> CsmsRecords:
    """The CSMS source the options name: csms_stub's API, csms_stub's tables, or another
    CSMS's database through a mapping (a path, loaded here: :class:`MappingError`)."""
    if csms_api:
        return StubApiRecords(csms_api)
    if not database_url:
        raise ValueError("a CSMS source needs an API URL or a database URL")
    if mapping is None:
        return DatabaseRecords(database_url, schema)
    if not isinstance(mapping, Mapping):
        mapping = Mapping.load(mapping)
    return MappedRecords(database_url, mapping, schema)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadgen.reconcile",
        description="Compare a run's ledger (Redis) with what the CSMS recorded, transaction "
        "by transaction: missing or not closed, duplicated, energy mismatches, acknowledged "
        "events the CSMS does not have (seqNos; counts for 1.6), and transactions the fleet "
        "started but never ended (a dead worker's; open at the CSMS). Run it after the run: "
        "transactions still charging count as never ended. Exit 0: nothing lost; 1: any of "
        "those findings; 2: a source is unreadable.",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis of the run (default: $REDIS_URL or redis://127.0.0.1:6379/0)",
    )
    parser.add_argument("--run", required=True, help="the run id the master created")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csms-api", help="csms_stub's HTTP API, e.g. http://127.0.0.1:8080")
    source.add_argument(
        "--database-url",
        help="the CSMS database, SQLAlchemy URL: csms_stub's tables (charger_usage_log; "
        "transaction_event for seqNos), or another CSMS's through --mapping",
    )
    parser.add_argument("--database-schema", help="PostgreSQL schema of the tables")
    parser.add_argument(
        "--mapping",
        metavar="FILE",
        help="read another CSMS's tables: a TOML file naming the query or table and columns "
        "that give charger id, transaction id, energy, start and stop (see docs/"
        "testing-your-csms.md)",
    )
    parser.add_argument(
        "--tolerance-wh", type=float, default=1.0, help="energy difference allowed (1 Wh)"
    )
    parser.add_argument("--details", type=int, default=20, help="problems listed per kind (20)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mapping and not args.database_url:
        parser.error("--mapping reads a database: give --database-url")
    try:
        csms = records(args.csms_api, args.database_url, args.database_schema, args.mapping)
    except MappingError as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return 2
    try:
        report = reconcile(args.redis_url, args.run, csms, args.tolerance_wh)
    except SourceUnavailable as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render(args.details))
    return 1 if report.lost else 0


if __name__ == "__main__":
    sys.exit(main())
