"""Per-version message builders against the ``ocpp`` package's JSON schemas (pure)."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen import ocppj
from loadgen.ocppj import ErrorCode
from loadgen.protocols import (
    OCPP16,
    OCPP21,
    OCPP201,
    Version,
    get_version,
    iso_timestamp,
    parse_timestamp,
    schemas,
    v16,
    v21,
    v201,
)
from loadgen.smart_charging import ProfileRejected

# -- schema helpers ----------------------------------------------------------------------


@functools.cache
def _schema(version: Version, action: str, response: bool = False) -> dict[str, Any]:
    path = schemas.schema_path(version, action, response)
    return json.loads(path.read_text(encoding="utf-8"))


def enum(version: Version, action: str, *path: str) -> list[str]:
    """The enum of the property at ``path`` in an action's request schema ($refs followed)."""
    root = _schema(version, action)
    node: dict[str, Any] = root

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while True:
            if "$ref" in node:
                node = root["definitions"][node["$ref"].rsplit("/", 1)[-1]]
            elif node.get("type") == "array":
                node = node["items"]
            else:
                return node

    for key in path:
        node = resolve(resolve(node)["properties"][key])
    values = resolve(node)["enum"]
    assert values, path
    return values


def enum_of(version: Version, action: str, *path: str) -> st.SearchStrategy[str]:
    return st.sampled_from(enum(version, action, *path))


def check(version: Version, request: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """Validate a builder's (action, payload); also check it survives OCPP-J framing."""
    action, payload = request
    schemas.validate(version, action, payload)
    framed = ocppj.parse(ocppj.Call("1", action, payload).encode())
    assert isinstance(framed, ocppj.Call)
    assert framed.action == action and framed.payload == payload
    return payload


#: 2.1 reuses 2.0.1's builders where the shapes agree: each 2.0.1 test runs on both
V2 = pytest.mark.parametrize(
    ("version", "m"), [(OCPP201, v201), (OCPP21, v21)], ids=["2.0.1", "2.1"]
)

# -- strategies --------------------------------------------------------------------------

#: The first example of each test compiles its schema (up to ~40 ms, more on a busy machine):
#: with a deadline hypothesis would call that flaky timing.
no_deadline = settings(deadline=None)


def text(max_size: int, min_size: int = 1) -> st.SearchStrategy[str]:
    return st.text(min_size=min_size, max_size=max_size)


#: epoch seconds between 1970 and 2100, and aware / naive datetimes in that range
epochs = st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False)
datetimes = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 31)
) | st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2099, 12, 31),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=9)), timezone(-timedelta(hours=5))]),
)
timestamps = epochs | st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 31)
).map(lambda when: iso_timestamp(when))
readings = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
optional_readings = st.none() | readings
contexts_201 = st.none() | enum_of(OCPP201, "MeterValues", "meterValue", "sampledValue", "context")
contexts_16 = st.none() | enum_of(OCPP16, "MeterValues", "meterValue", "sampledValue", "context")
seq_nos = st.integers(min_value=0, max_value=2**31 - 1)
small_ints = st.integers(min_value=0, max_value=100)


@st.composite
def sampled_201(draw: st.DrawFn) -> list[dict[str, Any]]:
    energy, power, soc = draw(optional_readings), draw(optional_readings), draw(optional_readings)
    if energy is power is soc is None:
        energy = draw(readings)
    return v201.sampled_values(energy, power, soc, draw(contexts_201))


@st.composite
def sampled_16(draw: st.DrawFn) -> list[dict[str, Any]]:
    energy, power, soc = draw(optional_readings), draw(optional_readings), draw(optional_readings)
    if energy is power is soc is None:
        energy = draw(readings)
    return v16.sampled_values(energy, power, soc, draw(contexts_16))


# -- OCPP 2.0.1 builders -----------------------------------------------------------------


@V2
@no_deadline
@given(
    vendor=text(50),
    model=text(20),
    serial=st.none() | text(25),
    firmware=st.none() | text(50),
    reason=enum_of(OCPP201, "BootNotification", "reason"),
)
def test_v201_boot_notification(
    version: Version,
    m: Any,
    vendor: str,
    model: str,
    serial: str | None,
    firmware: str | None,
    reason: str,
) -> None:
    payload = check(version, m.boot_notification(vendor, model, serial, firmware, reason))
    assert payload["chargingStation"]["vendorName"] == vendor
    assert ("serialNumber" in payload["chargingStation"]) == (serial is not None)
    assert payload["reason"] == reason


@V2
def test_v201_boot_notification_defaults_to_power_up(version: Version, m: Any) -> None:
    payload = check(version, m.boot_notification("ABB", "Terra 53"))
    assert payload == {
        "chargingStation": {"vendorName": "ABB", "model": "Terra 53"},
        "reason": "PowerUp",
    }


@V2
def test_v201_heartbeat(version: Version, m: Any) -> None:
    assert check(version, m.heartbeat()) == {}


@V2
@no_deadline
@given(
    evse=small_ints,
    connector=small_ints,
    status=enum_of(OCPP201, "StatusNotification", "connectorStatus"),
    when=timestamps,
)
def test_v201_status_notification(
    version: Version, m: Any, evse: int, connector: int, status: str, when: Any
) -> None:
    payload = check(version, m.status_notification(evse, connector, status, when))
    assert payload["connectorStatus"] == status
    assert parse_timestamp(payload["timestamp"]).tzinfo is UTC


@V2
@no_deadline
@given(token=text(36), token_type=enum_of(OCPP201, "Authorize", "idToken", "type"))
def test_v201_authorize(version: Version, m: Any, token: str, token_type: str) -> None:
    payload = check(version, m.authorize(token, token_type))
    assert payload == {"idToken": {"idToken": token, "type": token_type}}


@V2
@no_deadline
@given(
    event_type=enum_of(OCPP201, "TransactionEvent", "eventType"),
    transaction_id=text(36),
    seq_no=seq_nos,
    when=timestamps,
    trigger=enum_of(OCPP201, "TransactionEvent", "triggerReason"),
    charging_state=st.none()
    | enum_of(OCPP201, "TransactionEvent", "transactionInfo", "chargingState"),
    stopped_reason=st.none()
    | enum_of(OCPP201, "TransactionEvent", "transactionInfo", "stoppedReason"),
    remote_start_id=st.none() | st.integers(min_value=-(2**31), max_value=2**31 - 1),
    evse=st.none() | small_ints,
    connector=st.none() | small_ints,
    token=st.none() | st.builds(v201.id_token, text(36)),
    meter=st.lists(st.tuples(timestamps, sampled_201()), max_size=3),
    offline=st.booleans(),
)
def test_v201_transaction_event(
    version: Version,
    m: Any,
    event_type: str,
    transaction_id: str,
    seq_no: int,
    when: Any,
    trigger: str,
    charging_state: str | None,
    stopped_reason: str | None,
    remote_start_id: int | None,
    evse: int | None,
    connector: int | None,
    token: dict[str, str] | None,
    meter: list[tuple[Any, list[dict[str, Any]]]],
    offline: bool,
) -> None:
    payload = check(
        version,
        m.transaction_event(
            event_type,
            transaction_id,
            seq_no,
            when,
            trigger,
            charging_state=charging_state,
            stopped_reason=stopped_reason,
            remote_start_id=remote_start_id,
            evse_id=evse,
            connector_id=connector,
            token=token,
            meter_values=[m.meter_value(t, sampled) for t, sampled in meter],
            offline=offline,
        ),
    )
    assert payload["seqNo"] == seq_no
    assert payload["transactionInfo"]["transactionId"] == transaction_id
    assert payload.get("offline", False) is offline
    assert ("evse" in payload) == (evse is not None)
    assert ("meterValue" in payload) == bool(meter)


@V2
@no_deadline
@given(evse=small_ints, meter=st.lists(st.tuples(timestamps, sampled_201()), min_size=1))
def test_v201_meter_values(
    version: Version, m: Any, evse: int, meter: list[tuple[Any, list[dict[str, Any]]]]
) -> None:
    payload = check(version, m.meter_values(evse, [m.meter_value(t, s) for t, s in meter]))
    assert len(payload["meterValue"]) == len(meter)


@V2
def test_v201_sampled_values_units_and_rounding(version: Version, m: Any) -> None:
    values = m.sampled_values(energy_wh=1234.56789, power_w=7000, soc_percent=None)
    assert values == [
        {"value": 1234.568, "measurand": m.ENERGY_REGISTER, "unitOfMeasure": {"unit": "Wh"}},
        {"value": 7000.0, "measurand": m.POWER, "unitOfMeasure": {"unit": "W"}},
    ]
    assert m.sampled_values() == []


@V2
@no_deadline
@given(
    seq_no=seq_nos,
    when=timestamps,
    events=st.lists(
        st.fixed_dictionaries(
            {
                "eventId": st.integers(min_value=0, max_value=2**31 - 1),
                "timestamp": timestamps.map(
                    lambda t: t if isinstance(t, str) else iso_timestamp(t)
                ),
                "trigger": enum_of(OCPP201, "NotifyEvent", "eventData", "trigger"),
                "actualValue": text(2500, min_size=0),
                "eventNotificationType": enum_of(
                    OCPP201, "NotifyEvent", "eventData", "eventNotificationType"
                ),
                "component": st.fixed_dictionaries({"name": text(50)}),
                "variable": st.fixed_dictionaries({"name": text(50)}),
            }
        ),
        min_size=1,
        max_size=3,
    ),
    tbc=st.booleans(),
)
def test_v201_notify_event(
    version: Version, m: Any, seq_no: int, when: Any, events: list[dict[str, Any]], tbc: bool
) -> None:
    payload = check(version, m.notify_event(seq_no, when, events, tbc))
    assert payload["eventData"] == events
    assert payload.get("tbc", False) is tbc


@V2
@no_deadline
@given(
    event_id=st.integers(min_value=0, max_value=2**31 - 1),
    when=timestamps,
    evse_id=st.integers(min_value=1, max_value=2**31 - 1),
    connector_id=st.integers(min_value=1, max_value=2**31 - 1),
    status=enum_of(OCPP201, "StatusNotification", "connectorStatus"),
)
def test_v201_availability_event(
    version: Version, m: Any, event_id: int, when: Any, evse_id: int, connector_id: int, status: str
) -> None:
    """A connector's AvailabilityState in a NotifyEvent: valid, and read back as the
    StatusNotification it stands for."""
    event = m.availability_event(event_id, when, evse_id, connector_id, status)
    payload = check(version, m.notify_event(0, when, [event]))
    assert [state[:3] for state in m.availability_states(payload)] == [
        (evse_id, connector_id, status)
    ]


@V2
def test_v201_availability_states(version: Version, m: Any) -> None:
    """Only a Connector's AvailabilityState with a connector status and both ids is one."""
    good = m.availability_event(1, "2026-01-01T00:00:00.000Z", 2, 1, "Faulted")
    others = [
        {**good, "component": {"name": "EVSE", "evse": {"id": 2}}},  # the EVSE's own state
        {**good, "variable": {"name": "Problem"}},
        {**good, "actualValue": "Sleeping"},  # no ConnectorStatusEnumType value
        {**good, "component": {"name": "Connector"}},  # no EVSE: which connector?
        {**good, "component": {"name": "Connector", "evse": {"id": 2}}},
    ]
    payload = check(version, m.notify_event(0, "2026-01-01T00:00:00.000Z", [*others, good]))
    assert m.availability_states(payload) == [(2, 1, "Faulted", good["timestamp"])]
    assert m.availability_states({}) == []


@V2
@no_deadline
@given(
    request_id=st.integers(min_value=0, max_value=2**31 - 1),
    seq_no=seq_nos,
    when=timestamps,
    report=st.none()
    | st.lists(
        st.fixed_dictionaries(
            {
                "component": st.fixed_dictionaries({"name": text(50)}),
                "variable": st.fixed_dictionaries({"name": text(50)}),
                "variableAttribute": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "value": text(2500, min_size=0),
                            "mutability": enum_of(
                                OCPP201,
                                "NotifyReport",
                                "reportData",
                                "variableAttribute",
                                "mutability",
                            ),
                        },
                    ),
                    min_size=1,
                    max_size=4,
                ),
            }
        ),
        min_size=1,
        max_size=3,
    ),
    tbc=st.booleans(),
)
def test_v201_notify_report(
    version: Version,
    m: Any,
    request_id: int,
    seq_no: int,
    when: Any,
    report: list[dict[str, Any]] | None,
    tbc: bool,
) -> None:
    payload = check(version, m.notify_report(request_id, seq_no, when, report, tbc))
    assert payload["requestId"] == request_id
    assert payload.get("reportData") == report


@V2
@no_deadline
@given(event_type=text(50), when=timestamps, tech_info=st.none() | text(255))
def test_v201_security_event_notification(
    version: Version, m: Any, event_type: str, when: Any, tech_info: Any
) -> None:
    payload = check(version, m.security_event_notification(event_type, when, tech_info))
    assert payload["type"] == event_type
    assert ("techInfo" in payload) == (tech_info is not None)


@V2
@no_deadline
@given(
    status=enum_of(OCPP201, "FirmwareStatusNotification", "status"),
    request_id=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
)
def test_v201_firmware_status_notification(
    version: Version, m: Any, status: str, request_id: int | None
) -> None:
    payload = check(version, m.firmware_status_notification(status, request_id))
    assert payload["status"] == status


@V2
@no_deadline
@given(
    status=enum_of(OCPP201, "LogStatusNotification", "status"),
    request_id=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
)
def test_v201_log_status_notification(
    version: Version, m: Any, status: str, request_id: int | None
) -> None:
    payload = check(version, m.log_status_notification(status, request_id))
    assert payload["status"] == status and payload.get("requestId") == request_id


@V2
@no_deadline
@given(
    reservation_id=st.integers(min_value=0, max_value=2**31 - 1),
    status=enum_of(OCPP201, "ReservationStatusUpdate", "reservationUpdateStatus"),
)
def test_v201_reservation_status_update(
    version: Version, m: Any, reservation_id: int, status: str
) -> None:
    payload = check(version, m.reservation_status_update(reservation_id, status))
    assert payload == {"reservationId": reservation_id, "reservationUpdateStatus": status}


@V2
@no_deadline
@given(
    seq_no=st.integers(min_value=0, max_value=1000),
    when=timestamps,
    kind=enum_of(OCPP201, "NotifyMonitoringReport", "monitor", "variableMonitoring", "type"),
    tbc=st.booleans(),
    empty=st.booleans(),
)
def test_v201_notify_monitoring_report(
    version: Version, m: Any, seq_no: int, when: Any, kind: str, tbc: bool, empty: bool
) -> None:
    monitor = [
        {
            "component": {"name": "EVSE", "evse": {"id": 1}},
            "variable": {"name": "Power"},
            "variableMonitoring": [
                {"id": 1, "transaction": False, "value": 1.5, "type": kind, "severity": 3}
            ],
        }
    ]
    if version is OCPP21:  # required in 2.1
        monitor[0]["variableMonitoring"][0]["eventNotificationType"] = "CustomMonitor"
    payload = check(
        version, m.notify_monitoring_report(7, seq_no, when, None if empty else monitor, tbc)
    )
    assert payload.get("monitor") == (None if empty else monitor)
    assert payload.get("tbc", False) == tbc


@V2
@no_deadline
@given(
    priority=enum_of(OCPP201, "NotifyDisplayMessages", "messageInfo", "priority"),
    content=text(512),
    tbc=st.booleans(),
)
def test_v201_notify_display_messages(
    version: Version, m: Any, priority: str, content: str, tbc: bool
) -> None:
    info = [{"id": 1, "priority": priority, "message": {"format": "UTF8", "content": content}}]
    payload = check(version, m.notify_display_messages(3, info, tbc))
    assert payload["messageInfo"] == info and payload.get("tbc", False) == tbc


@V2
@no_deadline
@given(data=text(512), seq_no=st.integers(min_value=0, max_value=100), when=timestamps)
def test_v201_notify_customer_information(
    version: Version, m: Any, data: str, seq_no: int, when: Any
) -> None:
    payload = check(version, m.notify_customer_information(5, seq_no, when, data))
    assert payload["data"] == data and payload["requestId"] == 5


@V2
@no_deadline
@given(
    vendor_id=text(255),
    message_id=st.none() | text(50),
    data=st.none()
    | st.text()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what orjson can write
    | st.dictionaries(st.text(), st.text()),
)
def test_v201_data_transfer(
    version: Version, m: Any, vendor_id: str, message_id: str | None, data: Any
) -> None:
    payload = check(version, m.data_transfer(vendor_id, message_id, data))
    assert payload["vendorId"] == vendor_id


@V2
@no_deadline
@given(
    remote_start_id=st.integers(min_value=0, max_value=2**31 - 1),
    token=st.builds(
        v201.id_token, text(36), enum_of(OCPP201, "RequestStartTransaction", "idToken", "type")
    ),
    evse=st.none() | st.integers(min_value=1, max_value=10),
)
def test_v201_request_start_transaction(
    version: Version, m: Any, remote_start_id: int, token: dict[str, str], evse: int | None
) -> None:
    payload = check(version, m.request_start_transaction(remote_start_id, token, evse))
    assert payload["idToken"] == token


@V2
@no_deadline
@given(transaction_id=text(36))
def test_v201_request_stop_transaction(version: Version, m: Any, transaction_id: str) -> None:
    assert check(version, m.request_stop_transaction(transaction_id)) == {
        "transactionId": transaction_id
    }


# -- OCPP 1.6 builders -------------------------------------------------------------------


@no_deadline
@given(vendor=text(20), model=text(20), serial=st.none() | text(25), firmware=st.none() | text(50))
def test_v16_boot_notification(
    vendor: str, model: str, serial: str | None, firmware: str | None
) -> None:
    payload = check(OCPP16, v16.boot_notification(vendor, model, serial, firmware))
    assert payload["chargePointVendor"] == vendor
    assert ("chargePointSerialNumber" in payload) == (serial is not None)


def test_v16_heartbeat() -> None:
    assert check(OCPP16, v16.heartbeat()) == {}


@no_deadline
@given(
    connector=small_ints,
    status=enum_of(OCPP16, "StatusNotification", "status"),
    when=st.none() | timestamps,
    error_code=enum_of(OCPP16, "StatusNotification", "errorCode"),
)
def test_v16_status_notification(connector: int, status: str, when: Any, error_code: str) -> None:
    payload = check(OCPP16, v16.status_notification(connector, status, when, error_code))
    assert payload["status"] == status
    assert ("timestamp" in payload) == (when is not None)


@no_deadline
@given(id_tag=text(20))
def test_v16_authorize(id_tag: str) -> None:
    assert check(OCPP16, v16.authorize(id_tag)) == {"idTag": id_tag}


@no_deadline
@given(
    connector=small_ints,
    id_tag=text(20),
    meter_start=st.floats(min_value=0, max_value=1e12, allow_nan=False),
    when=timestamps,
    reservation=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
)
def test_v16_start_transaction(
    connector: int, id_tag: str, meter_start: float, when: Any, reservation: int | None
) -> None:
    payload = check(
        OCPP16, v16.start_transaction(connector, id_tag, meter_start, when, reservation)
    )
    assert payload["meterStart"] == int(meter_start)


@no_deadline
@given(
    connector=small_ints,
    meter=st.lists(st.tuples(timestamps, sampled_16()), min_size=1, max_size=3),
    transaction_id=st.none() | st.integers(min_value=1, max_value=2**31 - 1),
)
def test_v16_meter_values(
    connector: int, meter: list[tuple[Any, list[dict[str, Any]]]], transaction_id: int | None
) -> None:
    values = [v16.meter_value(t, s) for t, s in meter]
    payload = check(OCPP16, v16.meter_values(connector, values, transaction_id))
    assert ("transactionId" in payload) == (transaction_id is not None)
    for meter_value in payload["meterValue"]:
        for sample in meter_value["sampledValue"]:
            float(sample["value"])  # 1.6 carries numbers as strings


def test_v16_sampled_values_are_strings_with_units() -> None:
    assert v16.sampled_values(energy_wh=12.3456, soc_percent=80, context="Sample.Periodic") == [
        {
            "value": "12.346",
            "measurand": v16.ENERGY_REGISTER,
            "unit": "Wh",
            "context": "Sample.Periodic",
        },
        {"value": "80.000", "measurand": v16.SOC, "unit": "Percent", "context": "Sample.Periodic"},
    ]


@no_deadline
@given(
    transaction_id=st.integers(min_value=1, max_value=2**31 - 1),
    meter_stop=st.integers(min_value=0, max_value=10**12),
    when=timestamps,
    reason=st.none() | enum_of(OCPP16, "StopTransaction", "reason"),
    id_tag=st.none() | text(20),
    data=st.none() | st.lists(st.tuples(timestamps, sampled_16()), min_size=1, max_size=3),
)
def test_v16_stop_transaction(
    transaction_id: int,
    meter_stop: int,
    when: Any,
    reason: str | None,
    id_tag: str | None,
    data: list[tuple[Any, list[dict[str, Any]]]] | None,
) -> None:
    transaction_data = None if data is None else [v16.meter_value(t, s) for t, s in data]
    payload = check(
        OCPP16,
        v16.stop_transaction(transaction_id, meter_stop, when, reason, id_tag, transaction_data),
    )
    assert payload["transactionId"] == transaction_id
    assert payload.get("reason") == reason


@no_deadline
@given(status=enum_of(OCPP16, "FirmwareStatusNotification", "status"))
def test_v16_firmware_status_notification(status: str) -> None:
    assert check(OCPP16, v16.firmware_status_notification(status)) == {"status": status}


@no_deadline
@given(status=enum_of(OCPP16, "DiagnosticsStatusNotification", "status"))
def test_v16_diagnostics_status_notification(status: str) -> None:
    assert check(OCPP16, v16.diagnostics_status_notification(status)) == {"status": status}


@no_deadline
@given(
    status=enum_of(OCPP16, "SignedFirmwareStatusNotification", "status"),
    request_id=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
)
def test_v16_signed_firmware_status_notification(status: str, request_id: int | None) -> None:
    payload = check(OCPP16, v16.signed_firmware_status_notification(status, request_id))
    assert payload["status"] == status and payload.get("requestId") == request_id


@no_deadline
@given(
    status=enum_of(OCPP16, "LogStatusNotification", "status"),
    request_id=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
)
def test_v16_log_status_notification(status: str, request_id: int | None) -> None:
    payload = check(OCPP16, v16.log_status_notification(status, request_id))
    assert payload["status"] == status and payload.get("requestId") == request_id


@no_deadline
@given(vendor_id=text(255), message_id=st.none() | text(50), data=st.none() | st.text())
def test_v16_data_transfer(vendor_id: str, message_id: str | None, data: str | None) -> None:
    payload = check(OCPP16, v16.data_transfer(vendor_id, message_id, data))
    assert payload["vendorId"] == vendor_id


@no_deadline
@given(id_tag=text(20), connector=st.none() | st.integers(min_value=1, max_value=10))
def test_v16_remote_start_transaction(id_tag: str, connector: int | None) -> None:
    payload = check(OCPP16, v16.remote_start_transaction(id_tag, connector))
    assert payload["idTag"] == id_tag


@no_deadline
@given(transaction_id=st.integers(min_value=1, max_value=2**31 - 1))
def test_v16_remote_stop_transaction(transaction_id: int) -> None:
    assert check(OCPP16, v16.remote_stop_transaction(transaction_id)) == {
        "transactionId": transaction_id
    }


# -- smart charging ----------------------------------------------------------------------

PURPOSES = ["ChargingStationMaxProfile", "TxDefaultProfile", "TxProfile"]


@st.composite
def profiles(draw: st.DrawFn, version: Version) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments for ``charging_profile`` and what they should read back as."""
    offsets = sorted(set(draw(st.lists(st.integers(1, 7 * 86_400), max_size=4))))
    limits = draw(
        st.lists(st.integers(0, 5_000_000), min_size=len(offsets) + 1, max_size=len(offsets) + 1)
    )
    kind = draw(st.sampled_from(["Absolute", "Recurring", "Relative"]))
    args: dict[str, Any] = {
        "profile_id": draw(st.integers(1, 2**31 - 1)),
        "stack_level": draw(small_ints),
        "purpose": draw(st.sampled_from(PURPOSES)),
        "periods": [(o, n / 10) for o, n in zip([0, *offsets], limits, strict=True)],
        "kind": kind,
        "rate_unit": draw(st.sampled_from(["W", "A"])),
        "start_schedule": draw(st.none() | epochs.map(round)),
        "duration": draw(st.none() | st.integers(1, 10**7)),
        "recurrency": draw(st.sampled_from(["Daily", "Weekly"])) if kind == "Recurring" else None,
        "valid_from": draw(st.none() | epochs.map(round)),
        "valid_to": draw(st.none() | epochs.map(round)),
    }
    if args["purpose"] == "TxProfile" and draw(st.booleans()):
        args["transaction_id"] = draw(st.integers(1, 2**31 - 1))
        if version is OCPP201:
            args["transaction_id"] = f"tx-{args['transaction_id']}"
    return args, {
        "id": args["profile_id"],
        "stack_level": args["stack_level"],
        "purpose": args["purpose"],
        "kind": kind,
        "rate_unit": args["rate_unit"],
        "start_schedule": args["start_schedule"],
        "duration": args["duration"],
        "valid_from": args["valid_from"],
        "valid_to": args["valid_to"],
        "recurrency": args["recurrency"],
    }


def _read_back(profile: Any, expected: dict[str, Any], args: dict[str, Any]) -> None:
    for name, value in expected.items():
        assert getattr(profile, name) == value, name
    assert [(p.start, p.limit) for p in profile.periods] == [
        (start, pytest.approx(limit)) for start, limit in args["periods"]
    ]
    transaction_id = args.get("transaction_id")
    assert profile.transaction_id == (None if transaction_id is None else str(transaction_id))


@V2
@no_deadline
@given(profile=profiles(OCPP201), evse=small_ints)
def test_v201_charging_profile(
    version: Version, m: Any, profile: tuple[dict[str, Any], dict[str, Any]], evse: int
) -> None:
    args, _ = profile
    payload = check(version, m.set_charging_profile(evse, m.charging_profile(**args)))
    assert payload["evseId"] == evse
    assert (
        payload["chargingProfile"]["chargingSchedule"][0]["chargingRateUnit"] == args["rate_unit"]
    )
    raw = payload["chargingProfile"]
    check(version, m.request_start_transaction(1, m.id_token("t"), evse or None, raw))


@V2
@no_deadline
@given(profile=profiles(OCPP201), evse=small_ints)
def test_v201_charging_profile_from(
    version: Version, m: Any, profile: tuple[dict[str, Any], dict[str, Any]], evse: int
) -> None:
    args, expected = profile
    raw = m.charging_profile(**args)
    parsed = m.charging_profile_from(raw, evse)
    _read_back(parsed, expected, args)
    assert parsed.evse_id == evse and parsed.raw is raw


@V2
def test_v201_set_charging_profile(version: Version, m: Any) -> None:
    profile = m.charging_profile(1, 0, "TxDefaultProfile", [(0, 7000.0)], kind="Relative")
    assert check(version, m.set_charging_profile(1, profile)) == {
        "evseId": 1,
        "chargingProfile": profile,
    }


@V2
@no_deadline
@given(
    request_id=st.integers(0, 2**31 - 1),
    evse=st.none() | small_ints,
    purpose=st.none() | st.sampled_from(PURPOSES),
    stack_level=st.none() | small_ints,
    ids=st.none() | st.lists(small_ints, min_size=1, max_size=3),
)
def test_v201_get_charging_profiles(
    version: Version,
    m: Any,
    request_id: int,
    evse: int | None,
    purpose: str | None,
    stack_level: int | None,
    ids: list[int] | None,
) -> None:
    payload = check(version, m.get_charging_profiles(request_id, evse, purpose, stack_level, ids))
    assert payload["requestId"] == request_id and ("evseId" in payload) == (evse is not None)


@V2
@no_deadline
@given(
    profile_id=st.none() | small_ints,
    evse=st.none() | small_ints,
    purpose=st.none() | st.sampled_from(PURPOSES),
    stack_level=st.none() | small_ints,
)
def test_v201_clear_charging_profile(
    version: Version,
    m: Any,
    profile_id: int | None,
    evse: int | None,
    purpose: str | None,
    stack_level: int | None,
) -> None:
    payload = check(version, m.clear_charging_profile(profile_id, evse, purpose, stack_level))
    assert payload.get("chargingProfileId") == profile_id
    assert ("chargingProfileCriteria" in payload) == any(
        v is not None for v in (evse, purpose, stack_level)
    )


@V2
@no_deadline
@given(duration=st.integers(1, 10**6), evse=small_ints, unit=st.none() | st.sampled_from("WA"))
def test_v201_get_composite_schedule(
    version: Version, m: Any, duration: int, evse: int, unit: str | None
) -> None:
    payload = check(version, m.get_composite_schedule(duration, evse, unit))
    assert payload.get("chargingRateUnit") == unit


@V2
@no_deadline
@given(profile=profiles(OCPP201), evse=small_ints, tbc=st.booleans())
def test_v201_report_charging_profiles(
    version: Version, m: Any, profile: tuple[dict[str, Any], dict[str, Any]], evse: int, tbc: bool
) -> None:
    raw = m.charging_profile(**profile[0])
    payload = check(version, m.report_charging_profiles(7, evse, [raw], tbc=tbc))
    assert payload["chargingProfile"] == [raw] and payload.get("tbc", False) == tbc


@V2
@no_deadline
@given(
    evse=small_ints,
    when=timestamps,
    unit=st.sampled_from("WA"),
    limits=st.lists(st.floats(0, 1e6), min_size=1, max_size=5),
)
def test_v201_composite_schedule(
    version: Version, m: Any, evse: int, when: Any, unit: str, limits: list[float]
) -> None:
    periods = [(60 * n, limit) for n, limit in enumerate(limits)]
    schedule = m.composite_schedule(evse, 3600, when, unit, periods)
    reply = {"status": "Accepted", "schedule": schedule}
    schemas.validate(version, "GetCompositeSchedule", reply, response=True)
    assert [p["limit"] for p in schedule["chargingSchedulePeriod"]] == limits


@no_deadline
@given(profile=profiles(OCPP16), connector=small_ints)
def test_v16_charging_profile(
    profile: tuple[dict[str, Any], dict[str, Any]], connector: int
) -> None:
    args, _ = profile
    raw = v16.charging_profile(**args)
    payload = check(OCPP16, v16.set_charging_profile(connector, raw))
    assert payload["connectorId"] == connector
    if args["purpose"] == "ChargingStationMaxProfile":  # 1.6's words on the wire
        assert raw["chargingProfilePurpose"] == "ChargePointMaxProfile"
    check(OCPP16, v16.remote_start_transaction("tag", connector or None, raw))


@no_deadline
@given(profile=profiles(OCPP16), connector=small_ints)
def test_v16_charging_profile_from(
    profile: tuple[dict[str, Any], dict[str, Any]], connector: int
) -> None:
    args, expected = profile
    parsed = v16.charging_profile_from(v16.charging_profile(**args), connector)
    _read_back(parsed, expected, args)
    assert parsed.evse_id == connector


def test_v16_purpose_from_16() -> None:
    assert v16.purpose_from_16("ChargePointMaxProfile") == "ChargingStationMaxProfile"
    assert v16.purpose_from_16("TxProfile") == "TxProfile"


def test_v16_set_charging_profile() -> None:
    profile = v16.charging_profile(3, 1, "ChargingStationMaxProfile", [(0, 32.0)], rate_unit="A")
    assert check(OCPP16, v16.set_charging_profile(0, profile))["connectorId"] == 0


@no_deadline
@given(
    profile_id=st.none() | small_ints,
    connector=st.none() | small_ints,
    purpose=st.none() | st.sampled_from(PURPOSES),
    stack_level=st.none() | small_ints,
)
def test_v16_clear_charging_profile(
    profile_id: int | None, connector: int | None, purpose: str | None, stack_level: int | None
) -> None:
    payload = check(OCPP16, v16.clear_charging_profile(profile_id, connector, purpose, stack_level))
    assert payload.get("id") == profile_id
    assert payload.get("chargingProfilePurpose") in (
        None,
        *enum(OCPP16, "ClearChargingProfile", "chargingProfilePurpose"),
    )


@no_deadline
@given(connector=small_ints, duration=st.integers(1, 10**6), unit=st.none() | st.sampled_from("WA"))
def test_v16_get_composite_schedule(connector: int, duration: int, unit: str | None) -> None:
    payload = check(OCPP16, v16.get_composite_schedule(connector, duration, unit))
    assert payload["duration"] == duration


@no_deadline
@given(
    connector=small_ints,
    when=timestamps,
    unit=st.sampled_from("WA"),
    limits=st.lists(st.floats(0, 1e6), min_size=1, max_size=5),
)
def test_v16_composite_schedule(connector: int, when: Any, unit: str, limits: list[float]) -> None:
    periods = [(60 * n, limit) for n, limit in enumerate(limits)]
    reply = v16.composite_schedule(connector, 3600, when, unit, periods)
    schemas.validate(OCPP16, "GetCompositeSchedule", reply, response=True)  # multiples of 0.1
    sent = [p["limit"] for p in reply["chargingSchedule"]["chargingSchedulePeriod"]]
    assert sent == [round(limit, 1) for limit in limits]  # the nearest multiple of 0.1


# -- OCPP 2.1: what differs from 2.0.1 ----------------------------------------------------


def test_v21_reuses_every_v201_builder_it_does_not_redefine() -> None:
    """One home per concept: a 2.1 message of 2.0.1's shape is built by v201's builder."""
    public = {
        n
        for n, f in vars(v201).items()
        if callable(f) and not n.startswith("_") and f.__module__ == v201.__name__
    }
    own = {n for n, f in vars(v21).items() if getattr(f, "__module__", None) == v21.__name__}
    assert own >= {"transaction_event", "charging_profile_from"}
    for name in public - own:
        assert getattr(v21, name) is getattr(v201, name), name


@no_deadline
@given(
    token=text(255),
    token_type=text(20),
    trigger=enum_of(OCPP21, "TransactionEvent", "triggerReason"),
    stopped=st.none() | enum_of(OCPP21, "TransactionEvent", "transactionInfo", "stoppedReason"),
    total=st.floats(0, 1e6),
    energy=st.floats(0, 1e9),
    seconds=st.integers(0, 10**7),
    limit=st.builds(
        v21.transaction_limit,
        st.none() | st.floats(0, 1e9),
        st.none() | st.integers(0, 10**7),
        st.none() | st.floats(0, 1e6),
        st.none() | st.integers(0, 100),
    ),
    mode=st.none() | enum_of(OCPP21, "TransactionEvent", "transactionInfo", "operationMode"),
)
def test_v21_transaction_event(
    token: str,
    token_type: str,
    trigger: str,
    stopped: str | None,
    total: float,
    energy: float,
    seconds: int,
    limit: dict[str, Any],
    mode: str | None,
) -> None:
    """2.1's idToken (255 characters, a free type) and its new TransactionEvent fields."""
    cost = v21.cost_details("EUR", total, energy, seconds, tariff_id="t1", period_start=0.0)
    payload = check(
        OCPP21,
        v21.transaction_event(
            "Updated",
            "tx-1",
            3,
            0.0,
            trigger,
            stopped_reason=stopped,
            token=v21.id_token(token, token_type),
            cost_details=cost,
            transaction_limit=limit,
            tariff_id="t1",
            operation_mode=mode,
        ),
    )
    assert payload["costDetails"]["totalCost"]["total"] == {"exclTax": total}
    assert payload["transactionInfo"].get("transactionLimit") == (limit or None)
    assert payload["transactionInfo"].get("operationMode") == mode
    assert payload["idToken"] == {"idToken": token, "type": token_type}


def test_v21_transaction_event_without_2_1_fields_is_2_0_1s() -> None:
    args = ("Started", "tx-1", 0, 0.0, "Authorized")
    assert v21.transaction_event(*args) == v201.transaction_event(*args)


def test_v21_cost_details() -> None:
    details = v21.cost_details("KRW", 1234.5, 7000.0, 600)
    assert details == {
        "totalCost": {"currency": "KRW", "typeOfCost": "NormalCost", "total": {"exclTax": 1234.5}},
        "totalUsage": {"energy": 7000.0, "chargingTime": 600, "idleTime": 0},
    }
    check(OCPP21, v21.transaction_event("Ended", "t", 9, 0.0, "EVDeparted", cost_details=details))


def test_v21_transaction_limit() -> None:
    assert v21.transaction_limit(max_energy=5000.0, max_soc=80) == {
        "maxEnergy": 5000.0,
        "maxSoC": 80,
    }
    assert v21.transaction_limit() == {}


@no_deadline
@given(
    tariff_id=text(60),
    currency=text(3),
    price_kwh=st.none() | st.floats(0, 100),
    price_minute=st.none() | st.floats(0, 100),
    idle=st.none() | st.floats(0, 100),
    fixed=st.none() | st.floats(0, 100),
    valid_from=st.none() | timestamps,
    evse=small_ints,
)
def test_v21_tariff(
    tariff_id: str,
    currency: str,
    price_kwh: float | None,
    price_minute: float | None,
    idle: float | None,
    fixed: float | None,
    valid_from: Any,
    evse: int,
) -> None:
    tariff = v21.tariff(
        tariff_id,
        currency,
        price_kwh=price_kwh,
        price_minute=price_minute,
        idle_price_minute=idle,
        fixed_fee=fixed,
        valid_from=valid_from,
    )
    assert check(OCPP21, v21.set_default_tariff(evse, tariff))["tariff"] == tariff
    check(OCPP21, v21.change_transaction_tariff("tx-1", tariff))


def test_v21_set_default_tariff() -> None:
    payload = check(OCPP21, v21.set_default_tariff(0, v21.tariff("t", price_kwh=0.3)))
    assert payload == {
        "evseId": 0,
        "tariff": {"tariffId": "t", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.3}]}},
    }


def test_v21_change_transaction_tariff() -> None:
    payload = check(OCPP21, v21.change_transaction_tariff("tx-9", v21.tariff("t2")))
    assert payload["transactionId"] == "tx-9"


def test_v21_get_tariffs() -> None:
    assert check(OCPP21, v21.get_tariffs()) == {"evseId": 0}
    assert check(OCPP21, v21.get_tariffs(2)) == {"evseId": 2}


def test_v21_clear_tariffs() -> None:
    assert check(OCPP21, v21.clear_tariffs()) == {}
    assert check(OCPP21, v21.clear_tariffs(["a", "b"], 1)) == {"tariffIds": ["a", "b"], "evseId": 1}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"chargingProfilePurpose": "PriorityCharging"}, "UnsupportedPurpose"),
        ({"chargingProfileKind": "Dynamic"}, "UnsupportedKind"),
        ({"chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
          "chargingSchedulePeriod": [{"startPeriod": 0, "setpoint": 3.0}]}]}, "UnsupportedParam"),
    ],
)  # fmt: skip
def test_v21_charging_profile_from(change: dict[str, Any], reason: str) -> None:
    """2.1's V2X and dynamic profiles are refused with a reason; the rest read as 2.0.1's."""
    plain = v21.charging_profile(5, 1, "TxDefaultProfile", [(0, 11000.0)])
    schemas.validate(OCPP21, "SetChargingProfile", {"evseId": 1, "chargingProfile": plain})
    assert v21.charging_profile_from(plain, 1).periods[0].limit == 11000.0
    profile = {**plain, **change}
    schemas.validate(OCPP21, "SetChargingProfile", {"evseId": 1, "chargingProfile": profile})
    with pytest.raises(ProfileRejected) as caught:
        v21.charging_profile_from(profile, 1)
    assert caught.value.reason_code == reason


def test_every_builder_is_covered() -> None:
    """A new builder must get a test here: compare the modules' public functions."""
    tested = set(globals())
    for module, prefix in ((v201, "test_v201_"), (v21, "test_v21_"), (v16, "test_v16_")):
        builders = {
            name
            for name, value in vars(module).items()
            if callable(value)
            and not name.startswith("_")
            and getattr(value, "__module__", None) == module.__name__
        }
        helpers = {"id_token", "sampled_values", "meter_value"}  # exercised inside other tests
        missing = {name for name in builders - helpers if f"{prefix}{name}" not in tested}
        assert not missing, f"{module.__name__}: builders without a test: {sorted(missing)}"


# -- schema violations -> OCPP-J error codes ---------------------------------------------

OCC_201 = ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION
OCC_16 = ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION_16
TYPE = ErrorCode.TYPE_CONSTRAINT_VIOLATION
PROPERTY = ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
FORMAT = ErrorCode.FORMAT_VIOLATION

BOOT_201 = {"chargingStation": {"vendorName": "ABB", "model": "T53"}, "reason": "PowerUp"}
BOOT_16 = {"chargePointVendor": "ABB", "chargePointModel": "T53"}
TX_201 = v201.transaction_event("Started", "tx-1", 0, 0.0, "Authorized")[1]

VIOLATIONS = [
    # (version, action, payload, error code, path)
    pytest.param(OCPP201, "BootNotification", {"reason": "PowerUp"}, OCC_201, "",
                 id="201-missing-field"),
    pytest.param(OCPP201, "BootNotification",
                 {**BOOT_201, "chargingStation": {"vendorName": "ABB"}}, OCC_201,
                 "chargingStation", id="201-missing-nested-field"),
    pytest.param(OCPP16, "BootNotification", {"chargePointVendor": "ABB"}, OCC_16, "",
                 id="16-missing-field"),
    pytest.param(OCPP201, "MeterValues", {"evseId": 1, "meterValue": []}, OCC_201, "meterValue",
                 id="201-min-items"),
    pytest.param(OCPP201, "BootNotification", {**BOOT_201, "reason": 5}, TYPE, "reason",
                 id="201-wrong-type"),
    pytest.param(OCPP201, "TransactionEvent", {**TX_201, "seqNo": "1"}, TYPE, "seqNo",
                 id="201-string-for-integer"),
    pytest.param(OCPP16, "Heartbeat", [], TYPE, "", id="16-array-payload"),
    pytest.param(OCPP16, "StartTransaction",
                 {"connectorId": 1, "idTag": "T", "meterStart": 1.5,
                  "timestamp": "2024-01-01T00:00:00Z"}, TYPE, "meterStart",
                 id="16-float-for-integer"),
    pytest.param(OCPP16, "Authorize", {"idTag": "x" * 21}, TYPE, "idTag", id="16-too-long"),
    pytest.param(OCPP201, "TransactionEvent", {**TX_201, "timestamp": "yesterday"}, TYPE,
                 "timestamp", id="201-bad-date-time"),
    pytest.param(OCPP201, "BootNotification", {**BOOT_201, "reason": "Bored"}, PROPERTY,
                 "reason", id="201-enum"),
    pytest.param(OCPP16, "StatusNotification",
                 {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}, PROPERTY,
                 "status", id="16-enum"),
    pytest.param(OCPP201, "Heartbeat", {"extra": 1}, FORMAT, "", id="201-extra-property"),
    pytest.param(OCPP201, "BootNotification", {**BOOT_201, "color": "red"}, FORMAT, "",
                 id="201-extra-top-level"),
    pytest.param(OCPP16, "BootNotification", {**BOOT_16, "colour": "red"}, FORMAT, "",
                 id="16-extra-property"),
]  # fmt: skip


@pytest.mark.parametrize(("version", "action", "payload", "code", "path"), VIOLATIONS)
def test_schema_violations_map_to_ocppj_error_codes(
    version: Version, action: str, payload: Any, code: str, path: str
) -> None:
    with pytest.raises(schemas.PayloadError) as caught:
        schemas.validate(version, action, payload)
    assert caught.value.error_code == code
    assert caught.value.path == path
    assert caught.value.description.startswith(f"{action} request: payload")
    assert str(caught.value) == caught.value.description


def test_response_violations_are_described_as_responses() -> None:
    schemas.validate(OCPP201, "Heartbeat", {"currentTime": "2024-01-01T00:00:00.000Z"}, True)
    with pytest.raises(schemas.PayloadError) as caught:
        schemas.validate(OCPP201, "Heartbeat", {}, response=True)
    assert caught.value.error_code == OCC_201
    assert caught.value.description.startswith("Heartbeat response: ")
    with pytest.raises(schemas.PayloadError) as caught:
        schemas.validate(OCPP16, "BootNotification", {"status": "Accepted"}, response=True)
    assert caught.value.error_code == OCC_16


@pytest.mark.parametrize("version", [OCPP16, OCPP201], ids=lambda v: v.name)
def test_unknown_action_raises_unknown_action(version: Version) -> None:
    with pytest.raises(schemas.UnknownAction, match="NoSuchAction"):
        schemas.validate(version, "NoSuchAction", {})
    with pytest.raises(schemas.UnknownAction):
        schemas.validator(version, "NoSuchAction", response=True)
    # A peer's action name is looked up, never turned into a path.
    for hostile in ("A" * 1000, "./Heartbeat", "../v16/schemas/Heartbeat", "Heartbeat\x00"):
        with pytest.raises(schemas.UnknownAction):
            schemas.validate(version, hostile, {})


def test_actions_lists_each_versions_requests() -> None:
    actions_16 = schemas.actions(OCPP16)
    actions_201 = schemas.actions(OCPP201)
    assert {"BootNotification", "StartTransaction", "StopTransaction", "Reset"} <= set(actions_16)
    assert "TransactionEvent" not in actions_16
    assert {"BootNotification", "TransactionEvent", "NotifyReport", "Reset"} <= set(actions_201)
    assert "StartTransaction" not in actions_201
    assert not any(name.endswith(("Request", "Response")) for name in actions_16 + actions_201)
    assert actions_201 == sorted(actions_201)


def test_validators_are_compiled_once() -> None:
    first = schemas.validator(OCPP201, "TransactionEvent")
    assert schemas.validator(OCPP201, "TransactionEvent") is first
    assert schemas.validator(OCPP201, "TransactionEvent", response=True) is not first


# -- versions ----------------------------------------------------------------------------


def test_get_version_by_name_and_subprotocol() -> None:
    assert get_version("1.6") is OCPP16
    assert get_version("ocpp1.6") is OCPP16
    assert get_version("2.0.1") is OCPP201
    assert get_version("ocpp2.0.1") is OCPP201
    assert OCPP201.subprotocol == "ocpp2.0.1" and OCPP16.subprotocol == "ocpp1.6"


@pytest.mark.parametrize("name", ["1.5", "ocpp1.5", "2.0", "", "OCPP1.6"])
def test_get_version_rejects_unknown_versions(name: str) -> None:
    with pytest.raises(ValueError, match="unknown OCPP version") as caught:
        get_version(name)
    assert "1.6" in str(caught.value) and "2.0.1" in str(caught.value)


def test_error_code_spelling_per_version() -> None:
    assert OCPP16.error_code(ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION) == OCC_16
    assert OCPP16.error_code(ErrorCode.RPC_FRAMEWORK_ERROR) == ErrorCode.PROTOCOL_ERROR
    assert OCPP16.error_code(ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED) == ErrorCode.PROTOCOL_ERROR
    assert OCPP16.error_code(ErrorCode.FORMAT_VIOLATION) == FORMAT
    assert OCPP201.error_code(ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION) == OCC_201
    assert OCPP201.error_code(ErrorCode.RPC_FRAMEWORK_ERROR) == ErrorCode.RPC_FRAMEWORK_ERROR


# -- timestamps --------------------------------------------------------------------------


@no_deadline
@given(datetimes)
def test_iso_timestamp_round_trip_of_datetimes(when: datetime) -> None:
    text = iso_timestamp(when)
    assert len(text) == len("2024-01-01T00:00:00.000Z") and text.endswith("Z")
    parsed = parse_timestamp(text)
    assert parsed.tzinfo is UTC
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    # Millisecond precision, truncated.
    assert timedelta(0) <= aware - parsed < timedelta(milliseconds=1)
    assert iso_timestamp(parsed) == text
    schemas.validate(OCPP201, "Heartbeat", {"currentTime": text}, response=True)


@no_deadline
@given(epochs)
def test_iso_timestamp_round_trip_of_epoch_seconds(epoch: float) -> None:
    text = iso_timestamp(epoch)
    parsed = parse_timestamp(text)
    assert abs(parsed.timestamp() - epoch) < 0.001 + 1e-6
    assert iso_timestamp(parsed) == text


def test_iso_timestamp_examples() -> None:
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert iso_timestamp(1_700_000_000.1239) == "2023-11-14T22:13:20.123Z"
    seoul = datetime(2024, 5, 1, 9, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=9)))
    assert iso_timestamp(seoul) == "2024-05-01T00:00:00.999Z"
    assert iso_timestamp(datetime(2024, 5, 1, 12, 30)) == "2024-05-01T12:30:00.000Z"


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01T12:30:00Z",
        "2024-05-01T12:30:00z",
        "2024-05-01T12:30:00.000Z",
        "2024-05-01T12:30:00+00:00",
        "2024-05-01T21:30:00+09:00",
        "2024-05-01T07:30:00-05:00",
        "2024-05-01T12:30:00",  # no offset: taken as UTC
    ],
)
def test_parse_timestamp_accepts_rfc3339_forms(text: str) -> None:
    assert parse_timestamp(text) == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert parse_timestamp(text).tzinfo is UTC


def test_parse_timestamp_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")
