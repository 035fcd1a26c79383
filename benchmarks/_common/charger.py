"""The lean OCPP-J charger the load clients run, a bounded connection ramp, and freezing
the garbage collector's view of the connections."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import SUBPROTOCOL
from loadgen import ocppj


class CallFailed(Exception):
    """A CALL answered with a CALLERROR or not at all."""


class Charger:
    """One OCPP-J connection with one outstanding CALL at a time, as OCPP requires.

    Leaner than the tests' asyncio client, ``tests/aio_client.py`` (no reader task, no
    futures): send the CALL, read frames until its reply. The stub sends no CALL of its own
    during the benchmarks; one that arrives anyway is answered NotImplemented.
    """

    __slots__ = ("charger_id", "ids", "ws")

    def __init__(self, ws: Any, charger_id: str) -> None:
        self.ws = ws
        self.charger_id = charger_id
        self.ids = ocppj.MessageIds("")

    @classmethod
    async def connect(
        cls, url: str, charger_id: str, timeout: float = 30.0, subprotocol: str = SUBPROTOCOL
    ) -> Charger:
        from websockets.asyncio.client import connect

        ws = await connect(
            f"{url}/{charger_id}",
            subprotocols=[subprotocol],  # type: ignore[list-item]
            compression=None,
            ping_interval=None,
            open_timeout=timeout,
            close_timeout=2,
            max_queue=4,
        )
        return cls(ws, charger_id)

    async def call(self, action: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        message_id = self.ids()
        await self.ws.send(ocppj.Call(message_id, action, payload).encode())
        async with asyncio.timeout(timeout):
            while True:
                message = ocppj.parse(await self.ws.recv())
                if isinstance(message, ocppj.Call):
                    error = ocppj.CallError(message.message_id, ocppj.ErrorCode.NOT_IMPLEMENTED)
                    await self.ws.send(error.encode())
                elif message.message_id == message_id:
                    if isinstance(message, ocppj.CallError):
                        raise CallFailed(
                            f"{action}: {message.error_code} {message.error_description}"
                        )
                    return message.payload

    async def close(self) -> None:
        await self.ws.close()


async def ramp(
    count: int,
    rate: float,
    start: Callable[[int], Awaitable[Any]],
    *,
    concurrency: int = 200,
) -> list[Any]:
    """Run ``start(i)`` for i in range(count), at most ``rate`` starts per second and at most
    ``concurrency`` unfinished at once; returns their results (exceptions included)."""
    gate = asyncio.Semaphore(concurrency)
    began = time.monotonic()

    async def one(i: int) -> Any:
        try:
            return await start(i)
        finally:
            gate.release()

    tasks = []
    for i in range(count):
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        tasks.append(asyncio.ensure_future(one(i)))
    return await asyncio.gather(*tasks, return_exceptions=True)


def freeze_gc() -> None:
    """Stop the collector from walking the long-lived connections on every full collection.

    A client process holding thousands of connections otherwise pauses for 100-500 ms per
    full collection, and those pauses would show up as the server's latency. Called once
    the connections are up; what is allocated afterwards is still collected.
    """
    gc.collect()
    gc.freeze()
