"""Shared fixtures: a real csms_stub on real sockets, on SQLite and on the real PostgreSQL.

PostgreSQL is the machine's (127.0.0.1:5432, trust auth, database ``test``); each stub gets
a fresh schema, dropped afterwards. Override with ``TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import create_async_engine

from csms_stub.app import Stub, StubConfig
from loadgen import fleet as fleets
from loadgen.protocols import OCPP201, Version, schemas, v201
from tests.aio_client import OcppClient

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


class Database:
    """Where one stub keeps its tables: a URL and, on PostgreSQL, a schema."""

    def __init__(self, backend: str, url: str, schema: str | None) -> None:
        self.backend = backend
        self.url = url
        self.schema = schema

    def engine(self) -> Any:
        engine = create_async_engine(self.url)
        if self.schema:
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        return engine

    def stub_args(self) -> list[str]:
        """``python -m csms_stub`` options that put its tables here (plain URL schemes)."""
        url = self.url.replace("+aiosqlite", "").replace("+asyncpg", "")
        return ["--database-url", url, *(["--database-schema", self.schema] if self.schema else [])]

    async def rows(self, query: str | sa.Executable, **params: Any) -> list[dict[str, Any]]:
        """Run a query against the stub's tables (schema-qualified on PostgreSQL)."""
        engine = self.engine()
        try:
            async with engine.connect() as connection:
                if isinstance(query, str):
                    if self.schema:
                        await connection.exec_driver_sql(f'SET search_path TO "{self.schema}"')
                    result = await connection.execute(sa.text(query), params)
                else:
                    result = await connection.execute(query)
                return [dict(row._mapping) for row in result]
        finally:
            await engine.dispose()

    async def execute(self, statement: str) -> None:
        """Run one statement against the stub's tables (schema-qualified on PostgreSQL)."""
        engine = self.engine()
        try:
            async with engine.begin() as connection:
                if self.schema:
                    await connection.exec_driver_sql(f'SET search_path TO "{self.schema}"')
                await connection.exec_driver_sql(statement)
        finally:
            await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'csms.db'}", None)
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield Database("postgresql", POSTGRES_URL, schema)
    engine = create_async_engine(POSTGRES_URL)
    async with engine.begin() as connection:
        await connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await engine.dispose()


@pytest.fixture
def seed_fleet() -> fleets.Fleet:
    return fleets.load(fleets.SEED_FLEET)


StubFactory = Callable[..., Awaitable[Stub]]


@pytest.fixture
async def make_stub(database: Database, seed_fleet: fleets.Fleet) -> AsyncIterator[StubFactory]:
    """Start stubs on free loopback ports against ``database``; all stopped at the end."""
    started: list[Stub] = []

    async def make(**overrides: Any) -> Stub:
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "api_host": "127.0.0.1",
            "api_port": 0,
            "database_url": database.url,
            "database_schema": database.schema,
            "fleet": seed_fleet,
            "flush_interval": 0.02,
        }
        settings.update(overrides)
        stub = Stub(StubConfig(**settings))
        await stub.start()
        started.append(stub)
        return stub

    yield make
    for stub in reversed(started):
        await stub.stop()


@pytest.fixture
async def stub(make_stub: StubFactory) -> Stub:
    return await make_stub()


ClientFactory = Callable[..., Awaitable[OcppClient]]


@pytest.fixture
async def connect(stub: Stub) -> AsyncIterator[ClientFactory]:
    """``await connect("emart_jeju_01", "ocpp1.6")``: a raw OCPP-J client to the stub."""
    clients: list[OcppClient] = []

    async def make(
        charger_id: str = "emart_jeju_01", subprotocol: str = "ocpp2.0.1", **kwargs: Any
    ) -> OcppClient:
        url = kwargs.pop("url", stub.url)
        client = await OcppClient.connect(f"{url}/{charger_id}", subprotocol, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


# -- helpers for tests that talk to a stub of their own (make_stub) ----------------------

Dial = Callable[..., Awaitable[OcppClient]]


@pytest.fixture
async def dial() -> AsyncIterator[Dial]:
    """``await dial(stub, charger_id, subprotocol, **kw)``: a client to a stub of our own."""
    clients: list[OcppClient] = []

    async def make(
        stub: Stub,
        charger_id: str = "emart_jeju_01",
        subprotocol: str | None = "ocpp2.0.1",
        **kwargs: Any,
    ) -> OcppClient:
        client = await OcppClient.connect(f"{stub.url}/{charger_id}", subprotocol, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def metrics_text(stub: Stub) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{stub.api_url}/metrics")
    assert response.status_code == 200
    return response.text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition ``text`` (0 when it is absent)."""
    for family in text_string_to_metric_families(text):
        for metric in family.samples:
            if metric.name == name and all(metric.labels.get(k) == v for k, v in labels.items()):
                return metric.value
    return 0.0


async def closed(client: OcppClient, timeout: float = 5.0) -> tuple[int | None, str | None]:
    """Wait until the server has closed ``client``; its close code and reason."""
    await asyncio.wait_for(client.ws.wait_closed(), timeout)
    return client.ws.close_code, client.ws.close_reason


async def heartbeat_ok(client: OcppClient, version: Version = OCPP201) -> None:
    reply = await client.call("Heartbeat", {})
    schemas.validate(version, "Heartbeat", reply, response=True)


# -- csms_stub as a separate process (tests of the gevent side: tests/test_link.py) -------------

_STUB_READY = re.compile(r"OCPP on (ws://[^/\s]+)/<charger id>.*HTTP API on (http://[^;\s]+)")


class StubProcess:
    """A csms_stub in its own process, as a load test meets it; stderr goes to a log file."""

    def __init__(
        self, process: subprocess.Popen[bytes], ws_url: str, api_url: str, log_path: Path
    ) -> None:
        self.process = process
        self.ws_url = ws_url
        self.api_url = api_url
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.process)


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful stop: the stub flushes its writes), SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def transaction_burst(
    transaction_id: str, count: int, start: float, *, meter_values: bool = False
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``count`` TransactionEvent CALLs of one transaction (Started, then Updated), a second
    apart from ``start``; with ``meter_values`` each carries an energy and power reading."""
    for seq_no in range(count):
        at = start + seq_no
        readings = [v201.meter_value(at, v201.sampled_values(seq_no * 10, 7000))]
        yield v201.transaction_event(
            "Started" if seq_no == 0 else "Updated",
            transaction_id,
            seq_no,
            at,
            "Authorized" if seq_no == 0 else "MeterValuePeriodic",
            evse_id=1,
            meter_values=readings if meter_values else None,
        )


def start_stub_process(
    directory: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30.0
) -> StubProcess:
    """Start ``python -m csms_stub`` on free loopback ports; return once it listens."""
    log_path = directory / "csms_stub.log"
    command = [
        sys.executable,
        "-m",
        "csms_stub",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--api-host",
        "127.0.0.1",
        "--api-port",
        "0",
        "--database-url",
        f"sqlite:///{directory / 'x.db'}",
        *args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, **(env or {})},
            cwd=Path(__file__).resolve().parent.parent,
        )
    deadline = time.monotonic() + timeout
    while True:
        match = _STUB_READY.search(log_path.read_text(errors="replace"))
        if match:
            return StubProcess(process, match.group(1), match.group(2), log_path)
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(10)
            raise RuntimeError(f"csms_stub did not start:\n{log_path.read_text()}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def stub_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubProcess]:
    """One csms_stub process for the session (SQLite); killed at the end."""
    stub = start_stub_process(tmp_path_factory.mktemp("csms_stub"))
    yield stub
    stub.stop()


@pytest.fixture
def capped_stub(tmp_path: Path) -> Iterator[StubProcess]:
    """A csms_stub process with two known ceilings for the capacity searches: 30 connections,
    and 10 BootNotifications answered a second (a step's hold waits for its chargers to be
    booted, whatever the spawn rate)."""
    process = start_stub_process(tmp_path, "--max-connections", "30", "--max-boot-rate", "10")
    yield process
    process.stop()


# -- the order test files start in (scripts/test.sh: two xdist workers, a file each) -----------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "seconds(n): this file's tests take about n seconds in all (end-to-end runs that wait "
        "on timers); such files start after the unmarked ones, longest first",
    )
    config.addinivalue_line(
        "markers",
        "load_sensitive: this file judges timings that other end-to-end runs on the same two "
        "cores move (a master and its worker finding a connect rate within 5 %): it starts "
        "first, beside the unit tests, not beside another end-to-end file",
    )


def start_order(item: pytest.Item) -> tuple[int, float]:
    """When ``item``'s file starts: the load-sensitive files first; then the files without
    a ``seconds`` mark (mostly unit tests: one core, beside those); then the marked ones,
    longest first, so the last to start are short and both workers end together."""
    if item.get_closest_marker("load_sensitive"):
        return (0, 0.0)
    seconds = item.get_closest_marker("seconds")
    return (1, 0.0) if seconds is None else (2, -float(seconds.args[0]))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``--dist loadfile`` hands the files out in this order (xdist's own, by number of
    tests, is switched off in scripts/test.sh: it started the one-test master search last,
    to run on alone). The sort is stable: a file's tests keep their order."""
    items.sort(key=start_order)


# -- Redis: the machine's, and test-owned servers that a test may stop and restart -----------

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` of the test's own on a free loopback port, without persistence
    (as the machine's runs), so a restart comes back empty like a real crash would."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started test-owned Redis; stopped at the end whatever the test did to it."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
