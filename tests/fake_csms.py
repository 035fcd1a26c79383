"""A scriptable, possibly hostile CSMS for tests of the load generator's I/O.

A ``websockets`` asyncio server in a background thread: it can send what no sane CSMS
would (garbage, wrong ids, binary frames, bad close codes) and it watches the wire, e.g.
how many of the client's CALLs are outstanding at once. The client side runs on gevent in
the test's own thread, so waiting uses :func:`wait_for`, which keeps the hub running.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import gevent
import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def wait_for(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``check`` from a greenlet (the hub keeps running) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        gevent.sleep(0.005)


Respond = Callable[["FakeCsms", ServerConnection, list[Any]], Awaitable[None]]


async def echo(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
    await csms.answer(ws, call, {"echo": call[3]})


async def silent(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
    pass


class FakeCsms:
    """A scriptable CSMS: ``respond`` decides what each CALL of ours gets (default: echo).

    Frames from the link land in ``received``; ``push`` sends anything to the link.
    ``max_outstanding`` is the most CALLs of ours it ever saw unanswered at once.
    """

    def __init__(
        self,
        respond: Respond = echo,
        *,
        ssl_context: ssl.SSLContext | None = None,
        subprotocols: tuple[str, ...] = ("ocpp2.0.1", "ocpp1.6"),
        select_subprotocol: Callable[..., Any] | None = None,
    ) -> None:
        self.respond = respond
        self.ssl_context = ssl_context
        self.subprotocols = subprotocols
        self.select_subprotocol = select_subprotocol
        self.received: list[str | bytes] = []
        self.connections: list[ServerConnection] = []
        self.request_headers: list[Any] = []
        self.peer_certs: list[Any] = []
        self.open_calls: set[str] = set()
        self.max_outstanding = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/cp-1"

    def __enter__(self) -> FakeCsms:
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(ready),), daemon=True)
        self._thread.start()
        assert ready.wait(10), "fake CSMS did not start"
        return self

    def __exit__(self, *exc_info: Any) -> None:
        assert self._loop is not None and self._stop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        # Let the hub run meanwhile: our links must be able to answer the closing handshake.
        wait_for(lambda: not self._thread.is_alive(), timeout=10)

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        options: dict[str, Any] = {}
        if self.select_subprotocol is not None:
            options["select_subprotocol"] = self.select_subprotocol
        async with serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=list(self.subprotocols),
            ssl=self.ssl_context,
            compression=None,
            ping_interval=None,
            close_timeout=1,
            process_request=self._process_request,
            **options,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stop.wait()

    def _process_request(self, ws: ServerConnection, request: Any) -> None:
        self.request_headers.append(request.headers)

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        self.peer_certs.append(ws.transport.get_extra_info("peercert"))
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for frame in ws:
                self.received.append(frame)
                try:
                    message = json.loads(frame)
                except ValueError:
                    continue
                if isinstance(message, list) and message and message[0] == 2:
                    self.open_calls.add(message[1])
                    self.max_outstanding = max(self.max_outstanding, len(self.open_calls))
                    task = asyncio.create_task(self.respond(self, ws, message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except ConnectionClosed:
            pass

    async def answer(self, ws: ServerConnection, call: list[Any], payload: Any) -> None:
        self.open_calls.discard(call[1])
        await ws.send(orjson.dumps([3, call[1], payload]).decode())

    async def error(self, ws: ServerConnection, call: list[Any], code: str, text: str) -> None:
        self.open_calls.discard(call[1])
        await ws.send(orjson.dumps([4, call[1], code, text, {"hint": "x"}]).decode())

    # Driving the server from the test (main) thread.

    def _latest(self) -> ServerConnection:
        # connect() returns as soon as the link has the 101; the handler may start later
        return wait_for(lambda: self.connections and self.connections[-1])

    def push(self, frame: str | bytes | list[str]) -> None:
        """Send a frame (a list of strings: one fragmented text message) to the link."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._latest().send(frame), self._loop)

    def write_raw(self, data: bytes) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._latest().transport.write, data)

    def close_with(self, code: int, reason: str = "") -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._latest().close(code, reason), self._loop)

    def frames(self) -> list[list[Any]]:
        """What the link sent, parsed (text frames only)."""
        return [json.loads(frame) for frame in self.received if isinstance(frame, str)]


def csms_call(message_id: str, action: str, payload: dict[str, Any]) -> str:
    return orjson.dumps([2, message_id, action, payload]).decode()
