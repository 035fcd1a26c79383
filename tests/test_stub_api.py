"""csms_stub's HTTP API against scripted chargers over real sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from csms_stub import store as tables
from loadgen import fleet as fleets
from loadgen.physics import FakeClock
from loadgen.protocols import OCPP16, OCPP201, schemas, v16, v201
from loadgen.station import Station, StationConfig
from tests.aio_client import CallErrorReply, OcppClient
from tests.conftest import eventually


@pytest.fixture
async def http(stub):
    async with httpx.AsyncClient(base_url=stub.api_url, timeout=10) as client:
        yield client


class AcceptingCharger201:
    """A scripted 2.0.1 station that accepts remote start/stop and runs the transaction."""

    def __init__(self) -> None:
        self.client: OcppClient | None = None
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.seq_no = 0

    async def on_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        schemas.validate(OCPP201, action, payload)  # what the stub sends is valid 2.0.1
        self.requests.append((action, payload))
        if action == "RequestStartTransaction":
            self._later(self._start(payload))
            return {"status": "Accepted"}
        if action == "RequestStopTransaction":
            self._later(self._stop(payload["transactionId"]))
            return {"status": "Accepted"}
        raise CallErrorReply("NotImplemented", action)

    def _later(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _start(self, request: dict[str, Any]) -> None:
        assert self.client is not None
        now = time.time()
        await self.client.call(
            *v201.transaction_event(
                "Started",
                "remote-tx-1",
                0,
                now,
                "RemoteStart",
                charging_state="Charging",
                remote_start_id=request["remoteStartId"],
                evse_id=request.get("evseId", 1),
                connector_id=1,
                token=request["idToken"],
                meter_values=[v201.meter_value(now, v201.sampled_values(0, 0))],
            )
        )

    async def _stop(self, transaction_id: str) -> None:
        assert self.client is not None
        now = time.time()
        await self.client.call(
            *v201.transaction_event(
                "Ended",
                transaction_id,
                1,
                now,
                "RemoteStop",
                stopped_reason="Remote",
                meter_values=[v201.meter_value(now, v201.sampled_values(2500, 0))],
            )
        )


async def test_remote_start_and_stop_round_trip_201(stub, connect, http) -> None:
    charger = AcceptingCharger201()
    charger.client = await connect("emart_jeju_01", on_call=charger.on_call)
    started = await http.post(
        "/chargers/emart_jeju_01/start",
        json={"evse_id": 1, "connector_id": 1, "id_token": "token_user_003"},
    )
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["status"] == "success"
    assert body["transaction_id"] == "remote-tx-1"
    action, request = charger.requests[0]
    assert action == "RequestStartTransaction"
    assert request["idToken"] == {"idToken": "token_user_003", "type": "Central"}
    assert request["evseId"] == 1

    stopped = await http.post(
        "/chargers/emart_jeju_01/stop", json={"transaction_id": "remote-tx-1"}
    )
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "success"
    assert charger.requests[1] == ("RequestStopTransaction", {"transactionId": "remote-tx-1"})

    async def closed() -> list[dict[str, Any]]:
        return (await http.get("/transactions", params={"state": "closed"})).json()

    (row,) = await eventually(closed)
    assert row["transaction_id"] == "remote-tx-1"
    assert row["stop_reason"] == "Remote"
    assert row["energy_consumed"] == pytest.approx(2.5)
    assert row["cost"] == pytest.approx(375.0)


async def test_remote_start_and_stop_round_trip_16(stub, connect, http) -> None:
    client: OcppClient | None = None
    requests: list[tuple[str, dict[str, Any]]] = []
    tasks: set[asyncio.Task[Any]] = set()

    async def start(id_tag: str, connector_id: int) -> None:
        assert client is not None
        await client.call(*v16.start_transaction(connector_id, id_tag, 100, time.time()))

    async def stop(transaction_id: int) -> None:
        assert client is not None
        await client.call(*v16.stop_transaction(transaction_id, 1100, time.time(), "Remote"))

    async def on_call(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        schemas.validate(OCPP16, action, payload)
        requests.append((action, payload))
        job = (
            start(payload["idTag"], payload["connectorId"])
            if action == "RemoteStartTransaction"
            else stop(payload["transactionId"])
        )
        task = asyncio.create_task(job)
        tasks.add(task)
        return {"status": "Accepted"}

    client = await connect("emart_shinjeju_02", "ocpp1.6", on_call=on_call)
    started = await http.post("/chargers/emart_shinjeju_02/start", json={"connector_id": 1})
    assert started.status_code == 200, started.text
    transaction_id = started.json()["transaction_id"]
    assert transaction_id is not None and transaction_id.isdigit()
    assert requests[0][0] == "RemoteStartTransaction" and requests[0][1]["connectorId"] == 1
    stopped = await http.post(
        "/chargers/emart_shinjeju_02/stop", json={"transaction_id": transaction_id}
    )
    assert stopped.status_code == 200, stopped.text
    assert requests[1] == ("RemoteStopTransaction", {"transactionId": int(transaction_id)})

    async def closed() -> list[dict[str, Any]]:
        return (
            await http.get(
                "/transactions", params={"state": "closed", "charger_id": "emart_shinjeju_02"}
            )
        ).json()

    (row,) = await eventually(closed)
    assert row["energy_consumed"] == pytest.approx(1.0)
    assert row["stop_reason"] == "Remote"


@pytest.mark.parametrize(
    ("behaviour", "status", "error"),
    [
        ("reject", 422, "rejected"),
        ("call_error", 502, "call_error"),
        ("garbage", 502, "invalid_response"),
        ("silent", 504, "timeout"),
    ],
)
async def test_remote_start_failures_have_distinct_statuses(
    make_stub, behaviour: str, status: int, error: str
) -> None:
    stub = await make_stub(call_timeout=0.5)

    async def on_call(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if behaviour == "reject":
            return {"status": "Rejected"}
        if behaviour == "call_error":
            raise CallErrorReply("InternalError", "boom")
        if behaviour == "garbage":
            return {"status": "Maybe"}
        await asyncio.sleep(5)
        return {"status": "Accepted"}

    async with (
        await OcppClient.connect(f"{stub.url}/emart_jeju_02", "ocpp2.0.1", on_call=on_call),
        httpx.AsyncClient(base_url=stub.api_url) as http,
    ):
        response = await http.post("/chargers/emart_jeju_02/start", json={})
    assert response.status_code == status
    assert response.json()["status"] == "error"
    assert response.json()["error"] == error


async def test_unknown_offline_and_bad_requests(stub, connect, http) -> None:
    response = await http.post("/chargers/nobody/start", json={})
    assert (response.status_code, response.json()["error"]) == (404, "unknown_charger")
    response = await http.post("/chargers/emart_jeju_01/start", json={})  # in fleet, offline
    assert (response.status_code, response.json()["error"]) == (409, "charger_offline")
    await connect("emart_jeju_01")
    response = await http.post("/chargers/emart_jeju_01/stop", json={"transaction_id": "zz"})
    assert (response.status_code, response.json()["error"]) == (404, "unknown_transaction")
    response = await http.post("/chargers/emart_jeju_01/start", json={"evse_id": 0})
    assert response.status_code == 422  # validation error from the request model
    response = await http.post("/chargers/emart_jeju_01/stop", json={})
    assert response.status_code == 422


async def test_read_endpoints(stub, connect, http) -> None:
    client = await connect("emart_jeju_01")
    await client.call(
        *v201.boot_notification("ABB", "ABB Terra 53", "SN-emart_jeju_01-001", "1.0.0")
    )
    await client.call(*v201.status_notification(1, 1, "Available", time.time()))
    chargers = (await http.get("/chargers")).json()
    assert {c["charger_id"] for c in chargers} == {
        "emart_jeju_01",
        "emart_jeju_02",
        "emart_jeju_03",
        "emart_shinjeju_01",
        "emart_shinjeju_02",
    }
    one = (await http.get("/chargers/emart_jeju_01")).json()
    assert one["connected"] is True and one["status"] == "Available"
    assert one["station_id"] == "emart_jeju_main"
    assert one["lat"] == pytest.approx(33.5115) and one["lon"] == pytest.approx(126.522)
    assert one["connectors"] == [{"evse_id": 1, "connector_id": 1, "status": "Available"}]
    assert (await http.get("/chargers/nobody")).status_code == 404
    stats = (await http.get("/stats")).json()
    assert stats["chargers_connected"] == 1 and stats["chargers_known"] == 5
    health = (await http.get("/healthz")).json()
    assert health["status"] == "ok"
    metrics = (await http.get("/metrics")).text
    assert (
        'csms_stub_messages_total{action="BootNotification",outcome="result",'
        'version="2.0.1"} 1.0' in metrics
    )
    assert "csms_stub_chargers_connected 1.0" in metrics
    assert "csms_stub_handler_duration_seconds_bucket" in metrics
    assert "csms_stub_db_queue_depth" in metrics
    spec = (await http.get("/openapi.json")).json()
    assert {
        "/chargers/{charger_id}/start",
        "/chargers/{charger_id}/stop",
        "/chargers",
        "/transactions",
        "/stats",
        "/metrics",
        "/healthz",
    } <= set(spec["paths"])
    assert (await http.get("/transactions", params={"state": "bogus"})).status_code == 422


async def test_transactions_with_their_stored_seq_nos_as_runs(connect, http) -> None:
    """What reconciliation checks acknowledged events against: stored seqNos, as runs."""
    client = await connect("emart_jeju_01")
    await client.call(*v201.boot_notification("Vendor", "Model", None, "1.0", "PowerUp"))
    now = time.time()
    for seq_no, event_type in ((0, "Started"), (1, "Updated"), (3, "Updated"), (4, "Updated")):
        await client.call(
            *v201.transaction_event(
                event_type, "tx-runs", seq_no, now, "Authorized", charging_state="Charging"
            )
        )
    await client.call(*v201.transaction_event("Updated", "tx-runs", 1, now, "Trigger"))  # a repeat
    plain = (await http.get("/transactions")).json()
    assert [row["transaction_id"] for row in plain] == ["tx-runs"] and "seq_nos" not in plain[0]
    for params in ({}, {"charger_id": "emart_jeju_01"}):
        rows = (await http.get("/transactions", params={**params, "seq_nos": "true"})).json()
        assert [row["seq_nos"] for row in rows] == [[[0, 1], [3, 4]]]
    rows = (await http.get("/transactions", params={"charger_id": "nobody", "seq_nos": 1})).json()
    assert rows == []


# -- POST /chargers/{id}/call: any CSMS-initiated CALL ------------------------------------


async def _drive(station: Station, client: OcppClient) -> list[tuple[str, dict[str, Any]]]:
    """Send what a pure station has queued to the stub, as its runtime would."""
    sent = []
    while (call := station.next_call()) is not None:
        assert call.payload is not None
        station.on_call_result(call, await client.call(call.action, call.payload))
        sent.append((call.action, call.payload))
    return sent


async def test_any_csms_call_reaches_the_station_and_its_reply_comes_back(
    make_stub, connect
) -> None:
    """GetBaseReport through the API: the station's CALLRESULT is the answer, and its
    multi-part NotifyReport reaches the stub. Then every way such a call can fail."""
    stub = await make_stub(call_timeout=0.5)
    charger = fleets.load(fleets.SEED_FLEET).chargers["emart_jeju_01"]
    station = Station(charger, OCPP201, FakeClock(), StationConfig(report_items_per_message=8))
    slow = asyncio.Event()

    async def on_call(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if slow.is_set():
            await asyncio.sleep(1.0)  # past the stub's call timeout
        return station.handle_csms_call(action, payload)

    client = await connect("emart_jeju_01", on_call=on_call, url=stub.url)
    station.on_connected()
    await _drive(station, client)  # the boot and its status notifications
    assert station.accepted
    async with httpx.AsyncClient(base_url=stub.api_url, timeout=10) as http:
        call = {
            "action": "GetBaseReport",
            "payload": {"requestId": 5, "reportBase": "FullInventory"},
        }
        response = await http.post("/chargers/emart_jeju_01/call", json=call)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["action"], body["reply"]) == ("GetBaseReport", {"status": "Accepted"})
        sent = await _drive(station, client)
        parts = [payload for action, payload in sent if action == "NotifyReport"]
        assert len(parts) == -(-len(station.device_model.variables) // 8) > 1
        assert [p["seqNo"] for p in parts] == list(range(len(parts)))
        assert [p.get("tbc", False) for p in parts] == [True] * (len(parts) - 1) + [False]
        await stub.store.flush(5)
        stored = await stub.store.fetch(
            sa.select(tables.event_log.c.detail).where(tables.event_log.c.action == "NotifyReport"),
            5,
        )
        assert sorted(row["detail"]["seqNo"] for row in stored) == list(range(len(parts)))

        async def post(action: str, payload: dict[str, Any], charger_id: str = "emart_jeju_01"):
            response = await http.post(
                f"/chargers/{charger_id}/call", json={"action": action, "payload": payload}
            )
            return response.status_code, response.json().get("error")

        assert await post("GetLocalListVersion", {}) == (200, None)
        assert await post("Nope", {}) == (400, "unknown_action")
        assert await post("RemoteStartTransaction", {"idTag": "x"}) == (400, "unknown_action")
        assert await post("Heartbeat", {}) == (400, "unknown_action")  # a charger's to send
        assert await post("GetBaseReport", {"requestId": 1}) == (400, "invalid_request")
        assert await post("GetLocalListVersion", {}, "nobody") == (404, "unknown_charger")
        assert await post("GetLocalListVersion", {}, "emart_jeju_02") == (409, "charger_offline")
        slow.set()
        assert await post("GetLocalListVersion", {}) == (504, "timeout")
