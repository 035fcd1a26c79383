"""csms_stub in OCPP 2.1 end to end over real sockets: the handlers, SEND and CALLRESULTERROR
both ways, strictness, and which subprotocol the stub takes of a charger's offer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from csms_stub.app import Stub
from csms_stub.handlers import HANDLERS
from csms_stub.service import RemoteCallFailed
from loadgen import ocppj
from loadgen.ocppj import ErrorCode
from loadgen.protocols import OCPP21, iso_timestamp, schemas, v201
from tests import scripted
from tests.aio_client import CallErrorReply
from tests.conftest import (
    ClientFactory,
    Dial,
    StubFactory,
    heartbeat_ok,
    metrics_text,
    sample,
)
from tests.test_stub_station_actions import SAMPLED_ONLY

STREAM = {
    "id": 1,
    "pending": 0,
    "basetime": "2026-12-03T12:00:00.000Z",
    "data": [{"t": 0, "v": "1"}],
}


async def test_every_21_handler_answers_a_valid_call_result(
    stub: Stub, connect: ClientFactory
) -> None:
    client = await connect("emart_jeju_21", "ocpp2.1")
    now = time.time()
    at = iso_timestamp(now)
    # a 2.1 idToken type is a free string; 2.1 TransactionEvent fields the tables do not keep
    token = {"idToken": "WVWZZZ1JZXW000001", "type": "VIN"}
    # up to 255 characters in 2.1, as the tables keep (test_a_255_character_idtoken_...)
    long_token = {"idToken": "0123456789ABCDEF" * 4, "type": "Central"}
    requests: list[tuple[str, dict[str, Any]]] = [
        v201.boot_notification("ABB", "ABB Terra 184", "SN-21", "2.1.0"),
        v201.heartbeat(),
        v201.status_notification(1, 1, "Occupied", now),
        ("Authorize", {"idToken": token}),
        ("Authorize", {"idToken": long_token}),
        v201.meter_values(1, [v201.meter_value(now, v201.sampled_values(2_000, 60_000))]),
        v201.notify_event(
            0, now, [{"eventId": 1, "timestamp": at, "trigger": "Delta",
                      "actualValue": "Occupied", "component": {"name": "Connector"},
                      "variable": {"name": "AvailabilityState"},
                      "eventNotificationType": "HardWiredNotification"}],
        ),
        v201.data_transfer("com.example.vendor", "Ping", {"seq": 1}),
        ("NotifySettlement", {"pspRef": "psp-1", "status": "Settled",
                              "settlementAmount": 12.5, "settlementTime": at}),
        ("NotifyPriorityCharging", {"transactionId": "tx-21-a", "activated": True}),
        ("NotifyDERAlarm", {"controlType": "FreqDroop", "timestamp": at}),
        ("NotifyDERStartStop", {"controlId": "der-1", "started": True, "timestamp": at}),
        ("ReportDERControl", {"requestId": 3}),
        ("BatterySwap", {"eventType": "BatteryIn", "requestId": 4, "idToken": token,
                         "batteryData": [{"evseId": 1, "serialNumber": "B-1", "soC": 80.0,
                                          "soH": 95.0}]}),
        ("OpenPeriodicEventStream", {"constantStreamData": {
            "id": 1, "variableMonitoringId": 2, "params": {}}}),
        ("ClosePeriodicEventStream", {"id": 1}),
        ("PullDynamicScheduleUpdate", {"chargingProfileId": 7}),
        ("VatNumberValidation", {"vatNumber": "KR1234567890"}),
        ("TransactionEvent", {
            "eventType": "Started", "timestamp": at, "triggerReason": "Authorized",
            "seqNo": 0, "idToken": token, "evse": {"id": 1, "connectorId": 1},
            "transactionInfo": {"transactionId": "tx-21-a", "chargingState": "Charging",
                                "operationMode": "ChargingOnly", "tariffId": "t-1"},
            "meterValue": [v201.meter_value(now, v201.sampled_values(0, 50_000))],
        }),
        ("TransactionEvent", {
            "eventType": "Updated", "timestamp": iso_timestamp(now + 60),
            "triggerReason": "RunningCost", "seqNo": 1, "evseSleep": False,
            "costDetails": {"totalCost": {"currency": "KRW", "typeOfCost": "NormalCost",
                                          "total": {"exclTax": 300.0}},
                            "totalUsage": {"energy": 2000.0, "chargingTime": 60,
                                           "idleTime": 0}},
            "transactionInfo": {"transactionId": "tx-21-a"},
            "meterValue": [v201.meter_value(now + 60, v201.sampled_values(2_000, 60_000))],
        }),
        ("TransactionEvent", {
            "eventType": "Ended", "timestamp": iso_timestamp(now + 120),
            "triggerReason": "StopAuthorized", "seqNo": 2, "idToken": token,
            "transactionInfo": {"transactionId": "tx-21-a", "stoppedReason": "Local"},
            "meterValue": [v201.meter_value(now + 120, v201.sampled_values(10_000))],
        }),
    ]  # fmt: skip
    replies: dict[str, list[dict[str, Any]]] = {}
    for action, payload in requests:
        schemas.validate(OCPP21, action, payload)  # the test's own requests are 2.1
        reply = await client.call(action, payload)
        schemas.validate(OCPP21, action, reply, response=True)
        replies.setdefault(action, []).append(reply)

    missing = set(HANDLERS["2.1"]) - set(replies) - {"NotifyPeriodicEventStream"}
    # the 2.0.1 notifications 2.1 keeps are exercised by the 2.0.1 test, the same functions
    assert missing <= set(HANDLERS["2.0.1"]) | SAMPLED_ONLY, missing
    # the driver's tariff: --tariff per kWh, so that a 2.1 station reports the running cost
    tariff = {
        "tariffId": "csms_stub",
        "currency": "KRW",
        "energy": {"prices": [{"priceKwh": 150.0}]},
    }
    assert replies["Authorize"] == [{"idTokenInfo": {"status": "Accepted"}, "tariff": tariff}] * 2
    started, updated, ended = replies["TransactionEvent"]
    assert "totalCost" not in started
    assert updated["totalCost"] == pytest.approx(2 * 150)  # the --tariff, as in 2.0.1
    assert ended["totalCost"] == pytest.approx(10 * 150)
    # the CSMS sends NotifyAllowedEnergyTransfer (2.1's "CSMSs -> Charging Stations"): a
    # charger sending it gets what any CSMS-side action gets
    with pytest.raises(CallErrorReply) as refused:
        await client.call(
            "NotifyAllowedEnergyTransfer",
            {"transactionId": "tx-21-a", "allowedEnergyTransfer": ["AC_three_phase"]},
        )
    assert refused.value.error_code == ErrorCode.NOT_SUPPORTED
    assert replies["VatNumberValidation"] == [{"vatNumber": "KR1234567890", "status": "Rejected"}]
    transaction = stub.service.find_transaction("emart_jeju_21", "tx-21-a")
    assert transaction is not None and transaction.ocpp_version == "2.1"
    assert transaction.id_token == token["idToken"] and transaction.stop_reason == "Local"
    assert transaction.energy_consumed == pytest.approx(10.0)  # kWh


async def test_a_255_character_idtoken_is_stored_and_read_back(
    stub: Stub, connect: ClientFactory
) -> None:
    """2.1's longest idToken, of a custom type, is kept whole in the tables (on both
    backends: ``stub`` runs on each); one beyond the schema's limit is refused, never half
    stored."""
    client = await connect("emart_jeju_26", "ocpp2.1")
    await client.call(*v201.boot_notification("ABB", "X"))
    longest = ("0123456789ABCDEF" * 16)[:255]
    record = await scripted.session_201(client, "tx-21-255", [7_000], token=longest)
    assert len(longest) == 255 and record.replies[-1]["totalCost"] > 0
    async with httpx.AsyncClient(base_url=stub.api_url, timeout=10) as http:
        rows = (await http.get("/transactions", params={"charger_id": "emart_jeju_26"})).json()
    assert [(row["transaction_id"], row["id_token"]) for row in rows] == [("tx-21-255", longest)]
    too_long = v201.transaction_event(
        "Started", "tx-21-256", 0, time.time(), "Authorized", evse_id=2, connector_id=1,
        token={"idToken": longest + "X", "type": "VIN"},
    )  # fmt: skip
    with pytest.raises(CallErrorReply) as caught:
        await client.call(*too_long)
    assert caught.value.error_code == ErrorCode.TYPE_CONSTRAINT_VIOLATION  # the schema's maxLength
    assert stub.service.find_transaction("emart_jeju_26", "tx-21-256") is None


async def test_a_connectors_availability_state_is_its_status(
    stub: Stub, connect: ClientFactory
) -> None:
    """2.1 reports connector status with NotifyEvent (AvailabilityState, StatusNotification
    being deprecated): the stub keeps it as it keeps a StatusNotification's; an event about
    anything else (the EVSE's state, no connector named) is only logged."""
    client = await connect("emart_jeju_27", "ocpp2.1")
    await client.call(*v201.boot_notification("ABB", "X"))
    now = time.time()
    occupied = v201.availability_event(1, now, 1, 1, "Occupied")
    faulted = v201.availability_event(2, now, 2, 1, "Faulted")
    evse_state = {**v201.availability_event(3, now, 1, 1, "Unavailable"), "component": {
        "name": "EVSE", "evse": {"id": 1}}}  # fmt: skip
    reply = await client.call(*v201.notify_event(0, now, [occupied, evse_state, faulted]))
    assert reply == {}
    charger = stub.service.chargers["emart_jeju_27"]
    assert charger.connectors == {(1, 1): "Occupied", (2, 1): "Faulted"}
    await client.call(
        *v201.notify_event(0, now, [v201.availability_event(4, now, 1, 1, "Available")])
    )
    assert charger.connectors[(1, 1)] == "Available"


async def test_a_send_is_handled_and_never_answered(stub: Stub, connect: ClientFactory) -> None:
    client = await connect("emart_jeju_22", "ocpp2.1")
    await client.call(*v201.boot_notification("ABB", "X"))
    await client.send("NotifyPeriodicEventStream", STREAM)
    await client.send("NotifyPeriodicEventStream", dict(STREAM, id="one"))  # invalid: no answer
    await client.send("FlyToTheMoon", {})  # unknown: not answered
    await client.send_raw('[6, "s-broken", "NotifyPeriodicEventStream"]')  # broken: the same
    await heartbeat_ok(client, OCPP21)  # replies come in order: nothing came before this
    assert client.unmatched.empty()
    text = await metrics_text(stub)
    outcome = {"version": "2.1", "action": "NotifyPeriodicEventStream"}
    assert sample(text, "csms_stub_messages_total", **outcome, outcome="result") == 1
    assert sample(text, "csms_stub_messages_total", **outcome, outcome="FormatViolation") == 0
    assert sample(text, "csms_stub_messages_total", **outcome, outcome="TypeConstraintViolation")
    assert sample(text, "csms_stub_protocol_errors_total", kind="malformed_frame") == 1
    # nothing was sent back, so no CALLERROR was counted either
    assert sample(text, "csms_stub_call_errors_total", error_code="NotImplemented") == 0
    assert client.ws.close_code is None


async def test_a_chargers_callresulterror_is_counted_and_logged(
    stub: Stub, connect: ClientFactory
) -> None:
    client = await connect("emart_jeju_23", "ocpp2.1")
    boot_id = "boot-23"
    await client.send_raw(ocppj.Call(boot_id, *v201.boot_notification("ABB", "X")).encode())
    await client.next_unmatched()  # the BootNotification's CALLRESULT
    await client.send_raw(ocppj.CallResultError(boot_id, "FormatViolation", "no").encode())
    await client.send_raw('[5, "boot-23", "FormatViolation"]')  # broken: never answered
    await heartbeat_ok(client, OCPP21)
    assert client.unmatched.empty()
    text = await metrics_text(stub)
    assert sample(text, "csms_stub_protocol_errors_total", kind="callresulterror") == 1
    assert sample(text, "csms_stub_protocol_errors_total", kind="malformed_frame") == 1


async def test_a_chargers_callresult_the_stub_cannot_accept_gets_a_callresulterror(
    stub: Stub, connect: ClientFactory
) -> None:
    replies = iter([{"status": "Maybe"}, {"status": "Accepted"}])
    client = await connect("emart_jeju_24", "ocpp2.1", on_call=lambda a, p: next(replies))
    await client.call(*v201.boot_notification("ABB", "X"))
    connection = stub.service.connections["emart_jeju_24"]
    with pytest.raises(RemoteCallFailed) as caught:
        await connection.call("Reset", {"type": "Immediate"}, 5)
    assert caught.value.reason == "invalid_response"
    error = await client.next_unmatched()
    call = await client.received_calls.get()
    assert isinstance(error, ocppj.CallResultError)
    assert error.message_id == call.message_id
    assert error.error_code == ErrorCode.PROPERTY_CONSTRAINT_VIOLATION  # an enum value
    assert await connection.call("Reset", {"type": "Immediate"}, 5) == {"status": "Accepted"}


async def test_a_chargers_unreadable_callresult_fails_the_call_at_once(
    stub: Stub, connect: ClientFactory
) -> None:
    release = asyncio.Event()

    async def late(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"status": "Accepted"}

    client = await connect("emart_jeju_25", "ocpp2.1", on_call=late)
    await client.call(*v201.boot_notification("ABB", "X"))
    connection = stub.service.connections["emart_jeju_25"]
    pending = asyncio.ensure_future(connection.call("Reset", {"type": "Immediate"}, 30))
    call = await client.received_calls.get()
    await client.send_raw(f'[3, "{call.message_id}", "not an object"]')
    started = time.monotonic()
    with pytest.raises(RemoteCallFailed) as caught:
        await pending
    assert caught.value.reason == "invalid_response" and time.monotonic() - started < 5
    release.set()  # the client's reader goes on: the CALLRESULTERROR is next
    error = await client.next_unmatched()
    assert isinstance(error, ocppj.CallResultError)
    assert (error.message_id, error.error_code) == (call.message_id, "FormatViolation")


async def test_2_0_1_keeps_5_and_6_unknown_and_sends_no_callresulterror(
    stub: Stub, connect: ClientFactory
) -> None:
    client = await connect("emart_jeju_26", "ocpp2.0.1", on_call=lambda a, p: {"status": "No"})
    await client.call(*v201.boot_notification("ABB", "X"))
    await client.send_raw(ocppj.Send("s-1", "Heartbeat", {}).encode())
    error = await client.next_unmatched()
    assert isinstance(error, ocppj.CallError)
    assert (error.message_id, error.error_code) == ("s-1", ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED)
    connection = stub.service.connections["emart_jeju_26"]
    with pytest.raises(RemoteCallFailed):
        await connection.call("Reset", {"type": "Immediate"}, 5)
    await heartbeat_ok(client)
    assert client.unmatched.empty()


async def test_strict_id_tokens_in_2_1(make_stub: StubFactory, dial: Dial) -> None:
    stub = await make_stub(strict_id_tokens=True)
    client = await dial(stub, "emart_jeju_27", "ocpp2.1")
    await client.call(*v201.boot_notification("ABB", "X"))
    # a type 2.0.1 does not know, its value well-formed: judged like any identifier
    assert await client.call("Authorize", {"idToken": {"idToken": "WVW-ZZZ-1", "type": "VIN"}})
    with pytest.raises(CallErrorReply) as caught:
        await client.call("Authorize", {"idToken": {"idToken": "12 34", "type": "ISO14443"}})
    assert caught.value.error_code == ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
    with pytest.raises(CallErrorReply) as caught:  # the schema: a type of at most 20
        await client.call("Authorize", {"idToken": {"idToken": "A", "type": "T" * 21}})
    assert caught.value.error_code == ErrorCode.TYPE_CONSTRAINT_VIOLATION


@pytest.mark.parametrize(
    ("offer", "spoken"),
    [
        (("ocpp2.1", "ocpp2.0.1", "ocpp1.6"), "ocpp2.1"),
        (("ocpp2.0.1", "ocpp2.1"), "ocpp2.0.1"),
        (("ocpp9.9", "ocpp1.6", "ocpp2.1"), "ocpp1.6"),
    ],
)
async def test_the_stub_takes_the_first_subprotocol_it_speaks_of_the_offer(
    stub: Stub, connect: ClientFactory, offer: tuple[str, ...], spoken: str
) -> None:
    client = await connect("emart_jeju_28", offer)
    assert client.ws.subprotocol == spoken
    assert stub.service.connections["emart_jeju_28"].version.subprotocol == spoken
