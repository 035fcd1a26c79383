"""The stub as one object: store, service, OCPP server and HTTP API on one event loop.

This module only assembles: it builds each part, hands it what it needs (settings, the
service, the store, the metrics) and starts and stops them in order. No part imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import uvicorn

from csms_stub.api import create_app
from csms_stub.config import StubConfig
from csms_stub.metrics import StubMetrics
from csms_stub.server import OcppServer
from csms_stub.service import Service
from csms_stub.store import Store

__all__ = ["Stub", "StubConfig"]

log = logging.getLogger(__name__)


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
        self.ocpp = OcppServer(config, self.service, self.store, self.metrics)
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
        await self.store.start()
        await self.service.load()
        await self.ocpp.start(self.config.host, self.config.port)
        if self.config.api_port >= 0:
            api_config = uvicorn.Config(
                create_app(
                    self.service, self.store, self.metrics, store_timeout=self.config.store_timeout
                ),
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
