"""A minimal asyncio OCPP-J client, for the tests.

This is deliberately not the load generator's station (that runs on gevent inside Locust):
it is the thinnest correct client over ``websockets``' asyncio API, so tests can script a
charger message by message (including broken frames).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from loadgen import ocppj
from loadgen.ocppj import CallErrorReply

__all__ = ["CallErrorReply", "CallHandler", "OcppClient"]

#: answers a CSMS-initiated CALL: (action, payload) -> reply payload, or raise CallErrorReply
CallHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]


class OcppClient:
    """One OCPP-J connection: ``await client.call(action, payload)`` returns the reply."""

    def __init__(self, ws: ClientConnection, on_call: CallHandler | None = None) -> None:
        self.ws = ws
        self.on_call = on_call
        self.received_calls: asyncio.Queue[ocppj.Call] = asyncio.Queue()
        self.unmatched: asyncio.Queue[ocppj.Message] = asyncio.Queue()
        self._ids = ocppj.MessageIds()
        self._pending: dict[str, asyncio.Future[ocppj.Message]] = {}
        self._lock = asyncio.Lock()  # one outstanding CALL per direction
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        url: str,
        subprotocol: str | tuple[str, ...] | None = "ocpp2.0.1",
        *,
        on_call: CallHandler | None = None,
        basic_auth: tuple[str, str] | None = None,
        **kwargs: Any,
    ) -> OcppClient:
        headers = dict(kwargs.pop("additional_headers", {}) or {})
        if basic_auth:
            token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        kwargs.setdefault("compression", None)
        kwargs.setdefault("ping_interval", None)
        # one subprotocol, or several in order of preference; None or "" offers none
        offer = [subprotocol] if isinstance(subprotocol, str) else list(subprotocol or ())
        ws = await connect(
            url,
            subprotocols=[p for p in offer if p] or None,
            additional_headers=headers,
            **kwargs,
        )
        return cls(ws, on_call)

    async def call(
        self, action: str, payload: dict[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send a CALL; return the CALLRESULT payload or raise :class:`CallErrorReply`."""
        async with self._lock:
            message_id = self._ids()
            future: asyncio.Future[ocppj.Message] = asyncio.get_running_loop().create_future()
            self._pending[message_id] = future
            try:
                await self.ws.send(ocppj.Call(message_id, action, payload).encode())
                reply = await asyncio.wait_for(future, timeout)
            finally:
                self._pending.pop(message_id, None)
        if isinstance(reply, ocppj.CallError):
            raise CallErrorReply(reply.error_code, reply.error_description, reply.error_details)
        assert isinstance(reply, ocppj.CallResult)
        return reply.payload

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def send(self, action: str, payload: dict[str, Any]) -> None:
        """Send a SEND (OCPP 2.1): no reply comes."""
        await self.ws.send(ocppj.Send(self._ids(), action, payload).encode())

    async def next_unmatched(self, timeout: float = 5.0) -> ocppj.Message:
        """The next reply that answered no CALL of ours (e.g. a CALLERROR to a raw frame)."""
        return await asyncio.wait_for(self.unmatched.get(), timeout)

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()

    async def __aenter__(self) -> OcppClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def _read(self) -> None:
        try:
            extended = self.ws.subprotocol == "ocpp2.1"  # SEND and CALLRESULTERROR exist
            async for frame in self.ws:
                try:
                    message = ocppj.parse(frame, extended=extended)
                except ocppj.FrameError as exc:
                    if exc.message_type == ocppj.CALL:
                        await self.ws.send(exc.to_call_error().encode())
                    continue
                if isinstance(message, ocppj.Call):
                    await self._answer(message)
                elif isinstance(message, ocppj.Send):
                    self.received_calls.put_nowait(
                        ocppj.Call(message.message_id, message.action, message.payload)
                    )
                else:
                    future = self._pending.get(message.message_id)
                    if future is not None and not future.done():
                        future.set_result(message)
                    else:
                        self.unmatched.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))

    async def _answer(self, call: ocppj.Call) -> None:
        self.received_calls.put_nowait(call)
        if self.on_call is None:
            reply: ocppj.Message = ocppj.CallError(
                call.message_id, ocppj.ErrorCode.NOT_IMPLEMENTED, f"{call.action} not scripted"
            )
        else:
            try:
                result = self.on_call(call.action, call.payload)
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    result = await result
                reply = ocppj.CallResult(call.message_id, result)
            except CallErrorReply as exc:
                reply = ocppj.CallError(
                    call.message_id, exc.error_code, exc.description, exc.details
                )
        await self.ws.send(reply.encode())
