"""Fresh databases for one stub: a SQLite file in a temporary folder, or a PostgreSQL schema
dropped afterwards."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from typing import Any

from _common import DEFAULT_POSTGRES_URL
from _common.machine import check_local_url


class Database:
    """A fresh database for one stub: a SQLite file in a temporary folder, or a PostgreSQL
    schema ``bench_<random>`` that is dropped afterwards."""

    def __init__(self, kind: str, postgres_url: str = DEFAULT_POSTGRES_URL) -> None:
        self.kind = kind
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if kind == "sqlite":
            self._tmp = tempfile.TemporaryDirectory(prefix="bench-sqlite-")
            self.url = f"sqlite:///{self._tmp.name}/csms.db"
            self.schema: str | None = None
        elif kind == "postgresql":
            self.url = check_local_url(postgres_url)
            self.schema = f"bench_{uuid.uuid4().hex[:12]}"
        else:
            raise ValueError(kind)

    def count(self, table: str) -> int:
        return asyncio.run(self._count(table))

    async def _count(self, table: str) -> int:
        rows = await self._execute(f"SELECT count(*) FROM {self.qualified(table)}")
        return int(rows[0][0])

    def rows(self, sql: str) -> list[Any]:
        """Rows of a query (name tables with :meth:`qualified`)."""
        return asyncio.run(self._execute(sql))

    def qualified(self, table: str) -> str:
        return f'"{self.schema}"."{table}"' if self.schema else f'"{table}"'

    async def _execute(self, sql: str) -> list[Any]:
        import sqlalchemy as sa
        from sqlalchemy.ext.asyncio import create_async_engine

        from csms_stub.store import normalize_url

        engine = create_async_engine(normalize_url(self.url))
        try:
            async with engine.begin() as connection:
                result = await connection.execute(sa.text(sql))
                return list(result) if result.returns_rows else []
        finally:
            await engine.dispose()

    def drop(self) -> None:
        if self.schema:
            asyncio.run(self._execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.drop()


def wait_for_count(
    database: Database, table: str, expected: int, timeout: float
) -> tuple[int, float]:
    """Poll until ``table`` holds ``expected`` rows; returns (rows, seconds waited)."""
    started = time.monotonic()
    rows = database.count(table)
    while rows < expected and time.monotonic() - started < timeout:
        time.sleep(0.1)
        rows = database.count(table)
    return rows, time.monotonic() - started
