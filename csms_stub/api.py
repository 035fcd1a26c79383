"""The stub's HTTP API (FastAPI): remote start/stop, any CSMS call, live state, statistics,
metrics.

It runs on the same event loop as the OCPP server, so a remote start is one ``await`` on the
charger's connection. Reads of stored transactions wait for the batch writer first, so what
the API returns includes every message already acknowledged; that wait and the read are
bounded (``--store-timeout``): past it the answer is 503 with the reason, never a hang.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from csms_stub import store as tables
from csms_stub.metrics import StubMetrics
from csms_stub.service import RemoteCallFailed, Service
from csms_stub.store import Store, StoreUnavailable

#: HTTP status for each way a remote start/stop can fail
ERROR_STATUS = {
    "unknown_charger": 404,
    "unknown_transaction": 404,
    "charger_offline": 409,
    "rejected": 422,
    "call_error": 502,
    "invalid_response": 502,
    "timeout": 504,
    "unknown_action": 400,
    "invalid_request": 400,
}


class StartRequest(BaseModel):
    evse_id: int = Field(1, ge=1)
    connector_id: int = Field(1, ge=1)
    id_token: str = Field("csms_remote", min_length=1, max_length=36)


class StopRequest(BaseModel):
    transaction_id: str = Field(min_length=1, max_length=36)


class CallRequest(BaseModel):
    action: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict)


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def create_app(
    service: Service, store: Store, metrics: StubMetrics, *, store_timeout: float
) -> FastAPI:
    """The API over ``service`` (chargers, remote calls), ``store`` (stored transactions,
    waited for at most ``store_timeout`` s) and ``metrics`` (``/metrics``)."""
    app = FastAPI(
        title="csms_stub",
        description="A small OCPP 1.6 / 2.0.1 / 2.1 CSMS for load tests and integration scenarios.",
        version="0.1.0",
    )

    def charger_view(charger_id: str) -> dict[str, Any]:
        charger = service.chargers[charger_id]
        row = {key: _iso(value) for key, value in charger.row().items()}
        row["connectors"] = [
            {"evse_id": evse, "connector_id": connector, "status": status}
            for (evse, connector), status in sorted(charger.connectors.items())
        ]
        row["open_transactions"] = service.open_transaction_ids(charger_id)
        return row

    async def remote(operation: Any) -> JSONResponse:
        try:
            result = await operation
        except RemoteCallFailed as exc:
            return JSONResponse(
                {"status": "error", "error": exc.reason, "detail": exc.detail},
                status_code=ERROR_STATUS.get(exc.reason, 500),
            )
        return JSONResponse(result)

    @app.post("/chargers/{charger_id}/start")
    async def start(charger_id: str, request: StartRequest) -> JSONResponse:
        """Send RequestStartTransaction (1.6: RemoteStartTransaction) to the charger."""
        return await remote(
            service.remote_start(
                charger_id, request.evse_id, request.connector_id, request.id_token
            )
        )

    @app.post("/chargers/{charger_id}/stop")
    async def stop(charger_id: str, request: StopRequest) -> JSONResponse:
        """Send RequestStopTransaction (1.6: RemoteStopTransaction) to the charger."""
        return await remote(service.remote_stop(charger_id, request.transaction_id))

    @app.post("/chargers/{charger_id}/call")
    async def call(charger_id: str, request: CallRequest) -> JSONResponse:
        """Send any CSMS-initiated CALL of the charger's OCPP version (validated against its
        schema first: 400 if it is not one) and return the charger's CALLRESULT as
        ``reply``; 502 for a CALLERROR, 504 when no reply came in time."""
        return await remote(service.remote_call(charger_id, request.action, request.payload))

    @app.get("/chargers")
    async def chargers() -> list[dict[str, Any]]:
        return [
            charger_view(charger_id)
            for charger_id, charger in sorted(service.chargers.items())
            if charger.known or charger.connected
        ]

    @app.get("/chargers/{charger_id}")
    async def charger(charger_id: str) -> dict[str, Any]:
        if charger_id not in service.chargers:
            raise HTTPException(404, detail=f"no charger {charger_id!r}")
        return charger_view(charger_id)

    @app.get("/transactions")
    async def transactions(
        charger_id: str | None = None,
        state: str | None = Query(None, pattern="^(open|closed)$"),
        limit: int = Query(1000, ge=1, le=100_000),
        seq_nos: bool = False,
    ) -> Any:
        """Stored transactions; ``seq_nos=true`` adds each one's stored seqNos as
        ``[first, last]`` runs (what reconciliation checks acknowledged events against)."""
        timeout = store_timeout
        usage = tables.charger_usage_log
        query = sa.select(usage).order_by(usage.c.start_time, usage.c.transaction_id).limit(limit)
        if charger_id is not None:
            query = query.where(usage.c.charger_id == charger_id)
        if state == "open":
            query = query.where(usage.c.end_time.is_(None))
        elif state == "closed":
            query = query.where(usage.c.end_time.is_not(None))
        try:
            await store.flush(timeout)
            rows = [
                {key: _iso(value) for key, value in row.items()}
                for row in await store.fetch(query, timeout)
            ]
            if seq_nos:
                await add_seq_nos(rows, charger_id, timeout)
        except StoreUnavailable as exc:
            return JSONResponse(
                {"status": "error", "error": "database_unavailable", "detail": str(exc)},
                status_code=503,
            )
        return rows

    async def add_seq_nos(
        rows: list[dict[str, Any]], charger_id: str | None, timeout: float
    ) -> None:
        where = [] if charger_id is None else [tables.transaction_event.c.charger_id == charger_id]
        runs: dict[tuple[str, str], list[list[int]]] = {}
        for run in await store.fetch(tables.seq_no_ranges(*where), timeout):
            key = (run["charger_id"], run["transaction_id"])
            runs.setdefault(key, []).append([run["first"], run["last"]])
        for row in rows:
            row["seq_nos"] = runs.get((row["charger_id"], row["transaction_id"]), [])

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {**service.stats(), "db_queue_depth": store.queue_depth}

    @app.get("/metrics", name="metrics")  # the name the OpenAPI schema has always given it
    async def prometheus() -> Response:
        metrics.db_queue_depth.set(store.queue_depth)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "chargers_connected": len(service.connections),
            "database": store.dialect,
        }

    return app
