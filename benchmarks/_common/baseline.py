"""The baseline: a raw websockets server that answers every CALL with ``{}`` (or the smallest
schema-valid reply).

Run it as ``python -m _common.baseline --port N`` from ``benchmarks/`` (``--replies ocpp``
makes it answer with schema-valid OCPP replies, so real stations can boot against it);
:func:`_common.servers.baseline_process` starts it that way.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from _common import HOST
from _common.machine import raise_nofile


def ocpp_reply(heartbeat_interval: int = 300) -> Callable[[str, str], dict[str, Any]]:
    """``reply(subprotocol, action)``: the smallest schema-valid CALLRESULT payload.

    BootNotification is Accepted with ``heartbeat_interval``; actions whose response has
    required fields get them (currentTime is cached per second); everything else, including
    TransactionEvent, StatusNotification and MeterValues, gets ``{}``.
    """
    from loadgen.protocols import iso_timestamp

    clock = [0, ""]  # whole second, its OCPP dateTime

    def now() -> str:
        second = int(time.time())
        if second != clock[0]:
            clock[0], clock[1] = second, iso_timestamp(second)
        return clock[1]

    accepted_201 = {"idTokenInfo": {"status": "Accepted"}}
    accepted_16 = {"idTagInfo": {"status": "Accepted"}}
    empty: dict[str, Any] = {}
    transaction_ids = iter(range(1, 1 << 62))

    def reply(subprotocol: str, action: str) -> dict[str, Any]:
        if action == "BootNotification":
            return {"currentTime": now(), "interval": heartbeat_interval, "status": "Accepted"}
        if action == "Heartbeat":
            return {"currentTime": now()}
        if subprotocol == "ocpp1.6":
            if action == "Authorize" or action == "StopTransaction":
                return accepted_16
            if action == "StartTransaction":
                return {**accepted_16, "transactionId": next(transaction_ids)}
        elif action == "Authorize":
            return accepted_201
        if action == "DataTransfer":
            return {"status": "Accepted"}
        return empty

    return reply


async def serve_baseline(port: int, replies: str = "empty", heartbeat_interval: int = 300) -> None:
    """The floor the stub is compared with: same library and settings, no OCPP work.

    Each text frame is parsed just enough to find the message id and action, and every CALL
    is answered with an empty CALLRESULT (``replies="empty"``) or with the smallest
    schema-valid one (``replies="ocpp"``, see :func:`ocpp_reply`). No validation, no state,
    no database, no metrics.
    """
    from websockets.asyncio.server import serve

    dumps, loads = orjson.dumps, orjson.loads
    reply = ocpp_reply(heartbeat_interval) if replies == "ocpp" else None

    async def handle(ws: Any) -> None:
        subprotocol = ws.subprotocol or ""
        async for frame in ws:
            try:
                message = loads(frame)
            except orjson.JSONDecodeError:
                continue
            if type(message) is list and len(message) == 4 and message[0] == 2:
                payload = reply(subprotocol, message[2]) if reply is not None else {}
                await ws.send(dumps([3, message[1], payload]).decode())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(
        handle,
        HOST,
        port,
        subprotocols=["ocpp2.1", "ocpp2.0.1", "ocpp1.6"],
        compression=None,
        ping_interval=None,
        max_size=256 * 1024,
        max_queue=4,
        backlog=4096,  # thousands of clients connecting at once
    ) as server:
        await stop.wait()
        server.close(close_connections=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m _common.baseline", description="the raw websockets baseline server"
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--replies",
        choices=("empty", "ocpp"),
        default="empty",
        help="CALLRESULT payloads: {} for every CALL, or the smallest schema-valid ones",
    )
    parser.add_argument("--heartbeat-interval", type=int, default=300)
    args = parser.parse_args(argv)
    raise_nofile()
    asyncio.run(serve_baseline(args.port, args.replies, args.heartbeat_interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
