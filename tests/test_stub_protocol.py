"""csms_stub end to end over real sockets: every handler and every error path, 2.0.1 and 1.6.

Each test runs against SQLite and the machine's PostgreSQL (the ``database`` fixture).
Frames are sent raw where the point is a broken frame; the stub's replies come back in
order on one connection, so "no reply" is checked by a Heartbeat round trip afterwards.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from csms_stub.app import Stub
from csms_stub.handlers import HANDLERS
from loadgen import fleet as fleets
from loadgen import ocppj
from loadgen.ocppj import ErrorCode
from loadgen.protocols import OCPP16, OCPP201, Version, iso_timestamp, schemas, v16, v201
from tests.aio_client import CallErrorReply
from tests.conftest import (
    ClientFactory,
    Dial,
    StubFactory,
    closed,
    eventually,
    heartbeat_ok,
    metrics_text,
    sample,
)
from tests.test_stub_station_actions import SAMPLED_ONLY

VERSIONS = pytest.mark.parametrize("version", [OCPP201, OCPP16], ids=["2.0.1", "1.6"])

# -- every handler answers a valid CALLRESULT --------------------------------------------


async def test_every_201_handler_answers_a_valid_call_result(
    stub: Stub, connect: ClientFactory
) -> None:
    client = await connect("emart_jeju_01", "ocpp2.0.1")
    now = time.time()
    token = v201.id_token("TOKEN-201")
    component, variable = {"name": "EVSE"}, {"name": "AvailabilityState"}
    requests = [
        v201.boot_notification("ABB", "ABB Terra 53", "SN-emart_jeju_01-001", "1.0.0"),
        v201.heartbeat(),
        v201.status_notification(1, 1, "Occupied", now),
        v201.authorize("TOKEN-201"),
        v201.transaction_event(
            "Started", "tx-201-a", 0, now, "Authorized", charging_state="Charging",
            evse_id=1, connector_id=1, token=token,
            meter_values=[v201.meter_value(now, v201.sampled_values(0, 50_000, 20))],
        ),
        v201.transaction_event(
            "Updated", "tx-201-a", 1, now + 60, "MeterValuePeriodic",
            meter_values=[v201.meter_value(now + 60, v201.sampled_values(2_000, 60_000))],
        ),
        v201.meter_values(1, [v201.meter_value(now, v201.sampled_values(2_000, 60_000))]),
        v201.notify_report(
            7, 0, now, [{"component": component, "variable": variable,
                         "variableAttribute": [{"value": "Available"}]}],
        ),
        v201.notify_event(
            0, now, [{"eventId": 1, "timestamp": iso_timestamp(now), "trigger": "Delta",
                      "actualValue": "Unavailable", "component": component, "variable": variable,
                      "eventNotificationType": "HardWiredNotification"}],
        ),
        v201.security_event_notification("StartupOfTheDevice", now, "power on"),
        v201.firmware_status_notification("Installed", 3),
        v201.log_status_notification("UploadFailure", 4),
        v201.reservation_status_update(5, "Expired"),
        v201.notify_monitoring_report(
            6, 0, now, [{"component": component, "variable": variable, "variableMonitoring": [
                {"id": 1, "transaction": False, "value": 1, "type": "Delta", "severity": 5}]}],
        ),
        v201.notify_display_messages(
            8, [{"id": 1, "priority": "NormalCycle",
                 "message": {"format": "UTF8", "content": "hello"}}],
        ),
        v201.notify_customer_information(9, 0, now, "No data"),
        v201.report_charging_profiles(
            5, 0, [v201.charging_profile(1, 0, "ChargingStationMaxProfile", [(0, 50_000.0)])],
        ),
        v201.data_transfer("com.example.vendor", "Ping", {"seq": 1}),
        v201.transaction_event(
            "Ended", "tx-201-a", 2, now + 120, "StopAuthorized", stopped_reason="Local",
            token=token,
            meter_values=[v201.meter_value(now + 120, v201.sampled_values(10_000))],
        ),
    ]  # fmt: skip
    replies: dict[str, list[dict[str, Any]]] = {}
    for action, payload in requests:
        reply = await client.call(action, payload)
        schemas.validate(OCPP201, action, reply, response=True)
        replies.setdefault(action, []).append(reply)

    unexercised = set(HANDLERS["2.0.1"]) - set(replies)
    assert unexercised <= SAMPLED_ONLY, f"a 2.0.1 handler was not exercised: {unexercised}"
    boot = replies["BootNotification"][0]
    assert boot["status"] == "Accepted" and boot["interval"] == stub.config.heartbeat_interval
    assert replies["Authorize"][0] == {"idTokenInfo": {"status": "Accepted"}}
    started, updated, ended = replies["TransactionEvent"]
    assert "totalCost" not in started and started["idTokenInfo"]["status"] == "Accepted"
    assert updated["totalCost"] == pytest.approx(2 * 150)  # 2 kWh at 150 KRW/kWh
    assert ended["totalCost"] == pytest.approx(10 * 150)
    assert replies["DataTransfer"] == [{"status": "UnknownVendorId"}]
    for action in (
        "StatusNotification",
        "MeterValues",
        "NotifyReport",
        "NotifyEvent",
        "SecurityEventNotification",
        "FirmwareStatusNotification",
        "LogStatusNotification",
        "ReservationStatusUpdate",
        "NotifyMonitoringReport",
        "NotifyDisplayMessages",
        "NotifyCustomerInformation",
        "ReportChargingProfiles",
    ):
        assert replies[action] == [{}]


async def test_every_16_handler_answers_a_valid_call_result(
    stub: Stub, connect: ClientFactory
) -> None:
    client = await connect("emart_shinjeju_01", "ocpp1.6")
    now = time.time()

    async def call(request: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        reply = await client.call(*request)
        schemas.validate(OCPP16, request[0], reply, response=True)
        exercised.add(request[0])
        return reply

    exercised: set[str] = set()
    boot = await call(v16.boot_notification("ABB", "ABB Terra 53", "SN-1", "1.0.0"))
    assert boot["status"] == "Accepted" and boot["interval"] == stub.config.heartbeat_interval
    assert (await call(v16.heartbeat()))["currentTime"].endswith("Z")
    assert await call(v16.status_notification(0, "Available", now)) == {}
    assert await call(v16.status_notification(1, "Preparing")) == {}
    assert await call(v16.authorize("TAG-16")) == {"idTagInfo": {"status": "Accepted"}}
    start = await call(v16.start_transaction(1, "TAG-16", 1_000, now))
    transaction_id = start["transactionId"]
    assert isinstance(transaction_id, int) and start["idTagInfo"]["status"] == "Accepted"
    sampled = v16.sampled_values(3_000, 50_000, 40, "Sample.Periodic")
    assert (
        await call(v16.meter_values(1, [v16.meter_value(now + 60, sampled)], transaction_id)) == {}
    )
    assert await call(v16.meter_values(2, [v16.meter_value(now, v16.sampled_values(5))])) == {}
    stop = await call(
        v16.stop_transaction(
            transaction_id,
            11_000,
            now + 120,
            "Local",
            "TAG-16",
            [v16.meter_value(now + 90, v16.sampled_values(8_000))],
        )
    )
    assert stop == {"idTagInfo": {"status": "Accepted"}}
    assert await call(v16.stop_transaction(transaction_id, 11_000, now + 121)) == {}  # a retry
    assert await call(v16.data_transfer("com.example.vendor", "Ping", "1")) == {
        "status": "UnknownVendorId"
    }
    second = await call(v16.start_transaction(1, "TAG-16", 11_000, now + 200))
    assert second["transactionId"] > transaction_id  # the CSMS assigns fresh ids
    for notification in (
        v16.firmware_status_notification("Downloading"),
        v16.diagnostics_status_notification("Uploading"),
        v16.signed_firmware_status_notification("Installed", 2),
        v16.log_status_notification("UploadFailure", 3),
        (
            "SecurityEventNotification",
            {"type": "StartupOfTheDevice", "timestamp": "2026-01-01T00:00:00Z"},
        ),
    ):
        assert await call(notification) == {}
    unexercised = set(HANDLERS["1.6"]) - exercised
    assert unexercised <= SAMPLED_ONLY, f"a 1.6 handler was not exercised: {unexercised}"


# -- error paths ---------------------------------------------------------------------------

RESET = {OCPP201.name: {"type": "Immediate"}, OCPP16.name: {"type": "Hard"}}

#: schema violations per version: (action, payload, error code before 1.6 spelling)
VIOLATIONS = {
    OCPP201.name: [
        ("BootNotification", {"reason": "PowerUp"}, ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION),
        ("StatusNotification",
         {"timestamp": "2024-01-01T00:00:00Z", "connectorStatus": "Available", "evseId": "1",
          "connectorId": 1}, ErrorCode.TYPE_CONSTRAINT_VIOLATION),
        ("BootNotification",
         {"chargingStation": {"vendorName": "ABB", "model": "T"}, "reason": "Bored"},
         ErrorCode.PROPERTY_CONSTRAINT_VIOLATION),
        ("Heartbeat", {"extra": 1}, ErrorCode.FORMAT_VIOLATION),
    ],
    OCPP16.name: [
        ("BootNotification", {"chargePointVendor": "ABB"},
         ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION),
        ("StatusNotification", {"connectorId": "1", "errorCode": "NoError", "status": "Available"},
         ErrorCode.TYPE_CONSTRAINT_VIOLATION),
        ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"},
         ErrorCode.PROPERTY_CONSTRAINT_VIOLATION),
        ("Heartbeat", {"extra": 1}, ErrorCode.FORMAT_VIOLATION),
    ],
}  # fmt: skip


def bad_frames(version: Version) -> list[tuple[str, str | bytes, tuple[str, str] | None]]:
    """(name, frame, expected (message id, error code) or None for no reply)."""
    rpc = ErrorCode.RPC_FRAMEWORK_ERROR
    cases: list[tuple[str, str | bytes, tuple[str, str] | None]] = [
        ("non-JSON text", "this is not JSON", ("-1", rpc)),
        ("JSON object", '{"not": "an array"}', ("-1", rpc)),
        ("empty array", "[]", ("-1", rpc)),
        ("37-character id", f'[2, "{"x" * 37}", "Heartbeat", {{}}]', ("-1", rpc)),
        ("CALL without payload", '[2, "bad-1", "Heartbeat"]', ("bad-1", rpc)),
        ("CALL with list payload", '[2, "bad-2", "Heartbeat", []]',
         ("bad-2", ErrorCode.FORMAT_VIOLATION)),
        ("message type 5", '[5, "bad-3", {}]', ("bad-3", ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED)),
        ("unknown action", '[2, "bad-4", "FlyToTheMoon", {}]',
         ("bad-4", ErrorCode.NOT_IMPLEMENTED)),
        # action names never reach the file system (a long one raised "File name too long")
        ("1,000-character action", f'[2, "bad-7", "{"A" * 1000}", {{}}]',
         ("bad-7", ErrorCode.NOT_IMPLEMENTED)),
        ("action with a path", '[2, "bad-8", "../v16/schemas/Heartbeat", {}]',
         ("bad-8", ErrorCode.NOT_IMPLEMENTED)),
        ("CSMS-side action", ocppj.Call("bad-5", "Reset", RESET[version.name]).encode(),
         ("bad-5", ErrorCode.NOT_SUPPORTED)),
        ("binary frame", b'[2, "bad-6", "Heartbeat", {}]', ("-1", rpc)),
        ("stray CALLRESULT", '[3, "nobody-1", {"status": "Accepted"}]', None),
        ("stray CALLERROR", '[4, "nobody-2", "GenericError", "", {}]', None),
        ("broken CALLRESULT", '[3, "nobody-3"]', None),
        ("broken CALLERROR", '[4, "nobody-4", "GenericError"]', None),
    ]  # fmt: skip
    for index, (action, payload, code) in enumerate(VIOLATIONS[version.name]):
        frame = ocppj.Call(f"schema-{index}", action, payload).encode()
        cases.append((f"schema {code}", frame, (f"schema-{index}", code)))
    return cases


@VERSIONS
async def test_bad_frames_get_the_right_reply_and_the_connection_survives(
    version: Version, stub: Stub, connect: ClientFactory
) -> None:
    client = await connect("emart_jeju_02", version.subprotocol)
    for name, frame, expected in bad_frames(version):
        await client.send_raw(frame)
        # Replies come in order: whatever the bad frame got arrives before this one's.
        await heartbeat_ok(client, version)
        replies = []
        while not client.unmatched.empty():
            replies.append(client.unmatched.get_nowait())
        if expected is None:
            assert replies == [], f"{name}: a reply was answered: {replies}"
            continue
        message_id, code = expected
        assert len(replies) == 1, f"{name}: expected one CALLERROR, got {replies}"
        reply = replies[0]
        assert isinstance(reply, ocppj.CallError), name
        assert reply.message_id == message_id, name
        assert reply.error_code == version.error_code(code), name
        assert reply.error_description and len(reply.error_description) <= 255, name
        assert reply.error_details == {}
    assert client.ws.close_code is None  # still open after all of that
    assert stub.service.connections["emart_jeju_02"].version_name == version.name


async def test_16_spells_its_own_error_codes(stub: Stub, connect: ClientFactory) -> None:
    """1.6 has no RpcFrameworkError / MessageTypeNotSupported and one "r" in Occurence."""
    client = await connect("emart_jeju_03", "ocpp1.6")
    for frame in ("nope", '[5, "t5", {}]', '[2, "b1", "BootNotification", {}]'):
        await client.send_raw(frame)
    replies = [await client.next_unmatched() for _ in range(3)]
    codes = [reply.error_code if isinstance(reply, ocppj.CallError) else reply for reply in replies]
    assert codes == ["ProtocolError", "ProtocolError", "OccurenceConstraintViolation"]


async def test_oversized_frame_closes_with_1009(make_stub: StubFactory, dial: Dial) -> None:
    stub = await make_stub(max_message_size=1024)
    client = await dial(stub, "emart_jeju_01")
    # Just under the limit is fine.
    await client.call(*v201.data_transfer("com.example", "small", "x" * 900))
    await client.send_raw(
        ocppj.Call("big", "DataTransfer", {"vendorId": "v", "data": "x" * 2000}).encode()
    )
    code, _ = await closed(client)
    assert code == 1009
    again = await dial(stub, "emart_jeju_01")
    await heartbeat_ok(again)

    async def counted() -> bool:
        text = await metrics_text(stub)
        return sample(text, "csms_stub_protocol_errors_total", kind="message_too_big") == 1

    await eventually(counted)


@pytest.mark.parametrize("offered", ["ocpp1.5", None], ids=["ocpp1.5", "none"])
async def test_handshake_without_a_supported_subprotocol_is_closed_1002(
    offered: str | None, stub: Stub, dial: Dial
) -> None:
    client = await dial(stub, "emart_jeju_01", offered)
    assert client.ws.subprotocol is None  # the handshake itself completed
    code, reason = await closed(client)
    assert code == 1002
    assert reason and "ocpp2.0.1" in reason and "ocpp1.6" in reason
    if offered:
        assert offered in reason
    assert "emart_jeju_01" not in stub.service.connections
    assert (
        sample(await metrics_text(stub), "csms_stub_connections_total", outcome="no_subprotocol")
        == 1
    )
    # The same charger connects fine when it offers a version the stub speaks.
    await heartbeat_ok(await dial(stub, "emart_jeju_01", "ocpp1.6"), OCPP16)


async def test_basic_auth(
    make_stub: StubFactory, dial: Dial, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Corr3ct-Horse-Battery-Staple"
    stub = await make_stub(require_auth=True, auth_password=password)
    good = await dial(stub, "emart_jeju_01", basic_auth=("emart_jeju_01", password))
    await heartbeat_ok(good)

    refusals = {
        "wrong password": {"basic_auth": ("emart_jeju_02", password + "x")},
        "no credentials": {},
        "another charger's identity": {"basic_auth": ("emart_jeju_01", password)},
        "not Basic": {"additional_headers": {"Authorization": "Bearer " + password}},
        "garbage": {"additional_headers": {"Authorization": "Basic !!!"}},
    }
    for name, kwargs in refusals.items():
        with pytest.raises(InvalidStatus) as caught:
            await dial(stub, "emart_jeju_02", **kwargs)
        response = caught.value.response
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"].startswith("Basic"), name
        assert password.encode() not in (response.body or b""), name
    assert "emart_jeju_02" not in stub.service.connections

    text = await metrics_text(stub)
    assert sample(text, "csms_stub_connections_total", outcome="unauthorized") == len(refusals)
    assert password not in text
    assert password not in repr(stub.config)
    # The stub's logs (its own, websockets' server side, uvicorn), at DEBUG, never show it,
    # not even base64-encoded in an echoed Authorization header.
    secrets = {
        password,
        base64.b64encode(f"emart_jeju_01:{password}".encode()).decode(),
        base64.b64encode(f"emart_jeju_02:{password}x".encode()).decode(),
    }
    stub_records = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    assert any(r.name == "csms_stub.server" for r in stub_records)  # refusals were logged
    echoed = [r.getMessage() for r in stub_records if r.name == "websockets.server"]
    assert "< Authorization: [redacted]" in echoed  # headers were echoed, minus credentials
    for record in stub_records:
        logged = record.getMessage() + (record.exc_text or "")
        for secret in secrets:
            assert secret not in logged, f"{record.name} logged a credential: {logged!r}"


async def test_basic_auth_with_per_charger_fleet_passwords(
    make_stub: StubFactory, dial: Dial
) -> None:
    fleet = fleets.parse(
        '[[sites]]\nid = "s"\nlat = 33.5\nlon = 126.5\n'
        '[[chargers]]\nsite = "s"\nids = ["own"]\nrated_power_kw = 7\npassword = "own-pass"\n'
        '[[chargers]]\nsite = "s"\nids = ["shared"]\nrated_power_kw = 7\n'
    )
    stub = await make_stub(fleet=fleet, require_auth=True, auth_password="shared-pass")
    await heartbeat_ok(await dial(stub, "own", basic_auth=("own", "own-pass")))
    await heartbeat_ok(await dial(stub, "shared", basic_auth=("shared", "shared-pass")))
    for charger_id, secret in (("own", "shared-pass"), ("shared", "own-pass")):
        with pytest.raises(InvalidStatus) as caught:
            await dial(stub, charger_id, basic_auth=(charger_id, secret))
        assert caught.value.response.status_code == 401


async def test_duplicate_connection_replaces_the_first(stub: Stub, connect: ClientFactory) -> None:
    first = await connect("emart_shinjeju_02", "ocpp2.0.1")
    await heartbeat_ok(first)
    second = await connect("emart_shinjeju_02", "ocpp1.6")
    code, reason = await closed(first)
    assert code == 4000 and reason
    await heartbeat_ok(second, OCPP16)
    live = stub.service.connections["emart_shinjeju_02"]
    assert live.version_name == "1.6"
    assert stub.service.chargers["emart_shinjeju_02"].connected
    assert sample(await metrics_text(stub), "csms_stub_connections_total", outcome="replaced") == 1


async def test_duplicate_connection_rejected_with_409(make_stub: StubFactory, dial: Dial) -> None:
    stub = await make_stub(on_duplicate="reject")
    first = await dial(stub, "emart_jeju_01")
    with pytest.raises(InvalidStatus) as caught:
        await dial(stub, "emart_jeju_01", "ocpp1.6")
    assert caught.value.response.status_code == 409
    await heartbeat_ok(first)  # the first one is untouched
    assert first.ws.close_code is None
    await first.close()
    # Once the first has gone, the charger may connect again.
    await eventually(lambda: "emart_jeju_01" not in stub.service.connections)
    await heartbeat_ok(await dial(stub, "emart_jeju_01"))


async def test_strict_mode_rejects_chargers_outside_the_fleet(
    make_stub: StubFactory, dial: Dial
) -> None:
    stub = await make_stub(strict=True)
    for version, module, known in (
        (OCPP201, v201, "emart_jeju_02"),
        (OCPP16, v16, "emart_jeju_03"),
    ):
        intruder = await dial(stub, f"intruder_{version.name}", version.subprotocol)
        boot = await intruder.call(*module.boot_notification("Evil", "X1"))
        schemas.validate(version, "BootNotification", boot, response=True)
        assert boot["status"] == "Rejected"
        with pytest.raises(CallErrorReply) as caught:
            await intruder.call("Heartbeat", {})
        assert caught.value.error_code == ErrorCode.SECURITY_ERROR
        with pytest.raises(CallErrorReply) as caught:
            await intruder.call(*module.authorize("T"))
        assert caught.value.error_code == ErrorCode.SECURITY_ERROR
        # A new boot is still answered (and still rejected).
        assert (await intruder.call(*module.boot_notification("Evil", "X1")))["status"] == (
            "Rejected"
        )

        member = await dial(stub, known, version.subprotocol)
        boot = await member.call(*module.boot_notification("ABB", "ABB Terra 53"))
        assert boot["status"] == "Accepted"
        await heartbeat_ok(member, version)
    assert not stub.service.chargers["intruder_2.0.1"].known
    # An unknown charger that skips the boot gets nothing answered either.
    silent = await dial(stub, "intruder_silent")
    with pytest.raises(CallErrorReply) as caught:
        await silent.call("Heartbeat", {})
    assert caught.value.error_code == ErrorCode.SECURITY_ERROR


async def test_metrics_count_call_errors_and_protocol_errors(
    stub: Stub, connect: ClientFactory
) -> None:
    c201 = await connect("emart_jeju_01", "ocpp2.0.1")
    for frame in (
        "not json",  # RpcFrameworkError, malformed_frame
        b"\x00binary",  # RpcFrameworkError, binary_frame
        '[2, "e1", "FlyToTheMoon", {}]',  # NotImplemented
        '[2, "e2", "Reset", {"type": "Immediate"}]',  # NotSupported
        '[2, "e3", "Heartbeat", {"x": 1}]',  # FormatViolation
        '[3, "nobody", {}]',  # unexpected_reply
        '[4, "nobody", "GenericError", "", {}]',  # unexpected_reply
        '[3, "broken"]',  # malformed_frame, no reply
    ):
        await c201.send_raw(frame)
    await heartbeat_ok(c201)
    c16 = await connect("emart_jeju_02", "ocpp1.6")
    for frame in ("{", '[2, "e4", "BootNotification", {}]', '[7, "e5"]'):
        await c16.send_raw(frame)
    await heartbeat_ok(c16, OCPP16)

    text = await metrics_text(stub)
    errors = {
        "RpcFrameworkError": 2,
        "NotImplemented": 1,
        "NotSupported": 1,
        "FormatViolation": 1,
        "ProtocolError": 2,  # 1.6 spelling of RpcFrameworkError and MessageTypeNotSupported
        "OccurenceConstraintViolation": 1,
    }
    for code, count in errors.items():
        assert sample(text, "csms_stub_call_errors_total", error_code=code) == count, code
    assert sample(text, "csms_stub_call_errors_total", error_code="MessageTypeNotSupported") == 0
    protocol = {"malformed_frame": 4, "binary_frame": 1, "unexpected_reply": 2}
    for kind, count in protocol.items():
        assert sample(text, "csms_stub_protocol_errors_total", kind=kind) == count, kind
    assert (
        sample(
            text, "csms_stub_messages_total", version="2.0.1", action="Heartbeat", outcome="result"
        )
        == 1
    )
    assert (
        sample(
            text,
            "csms_stub_messages_total",
            version="2.0.1",
            action="unknown",
            outcome="NotImplemented",
        )
        == 1
    )
    assert sample(text, "csms_stub_chargers_connected") == 2


@VERSIONS
async def test_reject_future_timestamps(
    make_stub: StubFactory, dial: Dial, version: Version
) -> None:
    """A timestamp beyond the tolerance, at any depth, gets PropertyConstraintViolation and
    is not stored; one within it, or in the past, is handled as usual."""
    stub = await make_stub(reject_future_timestamps=5.0)
    module = v16 if version is OCPP16 else v201
    client = await dial(stub, "emart_jeju_04", version.subprotocol)
    assert (await client.call(*module.boot_notification("ABB", "X")))["status"] == "Accepted"
    now = time.time()

    def status(at: float) -> tuple[str, dict[str, Any]]:
        if version is OCPP16:
            return v16.status_notification(1, "Available", at)
        return v201.status_notification(1, 1, "Available", at)

    assert await client.call(*status(now + 2)) == {}
    assert await client.call(*status(now - 3600)) == {}
    with pytest.raises(CallErrorReply) as caught:
        await client.call(*status(now + 27 * 60))
    assert caught.value.error_code == ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
    # a meter value's timestamp deep inside counts as much as the message's own
    if version is OCPP16:
        late = v16.meter_value(now + 600, v16.sampled_values(1000.0))
        request = v16.meter_values(1, [late])
    else:
        late = v201.meter_value(now + 600, v201.sampled_values(1000.0))
        request = v201.meter_values(1, [late])
    with pytest.raises(CallErrorReply) as caught:
        await client.call(*request)
    assert caught.value.error_code == ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
    text = await metrics_text(stub)
    assert sample(text, "csms_stub_future_timestamps_total", action="StatusNotification") == 1
    assert sample(text, "csms_stub_future_timestamps_total", action="MeterValues") == 1
