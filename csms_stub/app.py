"""The stub as one object: store, service, OCPP server and HTTP API on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from csms_stub.metrics import StubMetrics
from csms_stub.server import OcppServer
from csms_stub.service import DEFAULT_TARIFF_PER_KWH, Service
from csms_stub.store import DEFAULT_DATABASE_URL, Store
from loadgen.fleet import Fleet
from loadgen.idtokens import IdToken

log = logging.getLogger(__name__)


@dataclass
class StubConfig:
    host: str = "0.0.0.0"
    port: int = 9000
    api_host: str = "0.0.0.0"
    api_port: int = 8080
    database_url: str = DEFAULT_DATABASE_URL
    database_schema: str | None = None
    fleet: Fleet | None = None
    strict: bool = False
    heartbeat_interval: int = 30
    tariff: float = DEFAULT_TARIFF_PER_KWH
    on_duplicate: str = "replace"  # or "reject"
    require_auth: bool = False
    #: used for chargers the fleet gives no password; never logged
    auth_password: str | None = field(default=None, repr=False)
    blocked_tokens: tuple[str, ...] = ()
    #: the only idTokens the stub knows (others are Invalid); None: every token is Accepted
    id_tokens: tuple[IdToken, ...] | None = None
    #: answer a token malformed for its type with CALLERROR PropertyConstraintViolation
    strict_id_tokens: bool = False
    max_message_size: int = 256 * 1024
    call_timeout: float = 30.0
    ping_interval: float = 0.0
    flush_interval: float = 0.05
    #: acknowledge a transaction message only once its rows are committed (survives SIGKILL)
    durable: bool = False
    #: longest wait on the database for an API read or a --durable acknowledgement, in s
    store_timeout: float = 10.0
    #: longest a stop may take writing what is queued, in s; what is left is reported
    shutdown_timeout: float = 10.0
    # A known capacity ceiling, for testing a capacity search against the stub:
    #: refuse handshakes (HTTP 503) while this many chargers are connected; 0: no limit
    max_connections: int = 0
    #: delay every reply by (connected - slow_above) * slow_ms_per_charger ms, at most
    #: slow_max_ms; off while slow_ms_per_charger is 0
    slow_above: int = 0
    slow_ms_per_charger: float = 0.0
    slow_max_ms: float = 60_000.0
    #: answer at most this many BootNotifications per second overall, the rest in arrival
    #: order (a registration bottleneck); 0: no limit
    max_boot_rate: float = 0.0
    #: while more than errors_above chargers are connected, answer this share (0..1) of the
    #: chargers' CALLs with a CALLERROR InternalError instead of handling them; 0: off
    error_ratio: float = 0.0
    errors_above: int = 0
    #: seeds the draw of which CALLs get that error (tests); None: unpredictable
    error_seed: int | None = None


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the stub owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Stub:
    """``async with Stub(config) as stub:`` serves until the block ends, then flushes."""

    def __init__(self, config: StubConfig) -> None:
        self.config = config
        self.metrics = StubMetrics()
        #: draws the CALLs that --error-ratio answers with a CALLERROR
        self.random = random.Random(config.error_seed)
        self.store = Store(
            config.database_url,
            schema=config.database_schema,
            flush_interval=config.flush_interval,
            on_batch=self.metrics.batch_written,
            on_write_failure=self.metrics.write_failed,
        )
        self.service = Service(
            self.store,
            fleet=config.fleet,
            strict=config.strict,
            heartbeat_interval=config.heartbeat_interval,
            tariff=config.tariff,
            blocked_tokens=config.blocked_tokens,
            call_timeout=config.call_timeout,
            id_tokens=config.id_tokens,
            strict_id_tokens=config.strict_id_tokens,
            on_authorize=self.metrics.authorized,
        )
        self.ocpp = OcppServer(self)
        self._api: _EmbeddedUvicorn | None = None
        self._api_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.ocpp.port

    @property
    def api_port(self) -> int:
        assert self._api is not None and self._api.servers
        return self._api.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def start(self) -> None:
        from csms_stub.api import create_app

        await self.store.start()
        await self.service.load()
        await self.ocpp.start(self.config.host, self.config.port)
        if self.config.api_port >= 0:
            api_config = uvicorn.Config(
                create_app(self),
                host=self.config.api_host,
                port=self.config.api_port,
                log_level="warning",
                lifespan="off",
                access_log=False,
            )
            self._api = _EmbeddedUvicorn(api_config)
            self._api_task = asyncio.create_task(self._api.serve())
            while not self._api.started:
                if self._api_task.done():
                    await self._api_task  # raises why it could not start
                    raise RuntimeError("HTTP API stopped during start-up")
                await asyncio.sleep(0.01)

    async def stop(self) -> dict[str, int]:
        """Close connections (1001 going away), stop the API, write everything queued.

        Takes at most about ``shutdown_timeout`` s whatever the database does; returns the
        rows that could not be written, by table (empty when everything was)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout
        # Connections waiting on a --durable commit end when the store closes, if not before.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ocpp.stop(), self.config.shutdown_timeout / 2)
        if self._api is not None and self._api_task is not None:
            self._api.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._api_task, max(0.1, deadline - loop.time()) / 2)
        return await self.store.close(max(0.1, deadline - loop.time()))

    async def __aenter__(self) -> Stub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()
