"""The CSMS's commands beyond the core ones, answered by a pure station on a fake clock.

Every message goes through :mod:`tests.station_driver`'s in-memory CSMS, which validates
both ways against the ``ocpp`` package's schemas.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen import fleet as fleets
from loadgen.ocppj import CallErrorReply
from loadgen.physics import FakeClock
from loadgen.protocols import (
    OCPP16,
    OCPP21,
    OCPP201,
    STATION_ACTIONS,
    Version,
    iso_timestamp,
    schemas,
)
from loadgen.station import Station, StationConfig
from tests.station_driver import MemoryCsms, SlowWallClock, drive, run_for, station_times

CHARGER = fleets.load(fleets.SEED_FLEET).chargers["emart_jeju_01"]
#: 2.1 does everything 2.0.1 does: the 2.0.1 tests run in both
V2 = [OCPP201, OCPP21]
TWO_EVSES = dataclasses.replace(CHARGER, evse_count=2)


def make(
    version: Version = OCPP201, charger: fleets.Charger = CHARGER, **config: Any
) -> tuple[Station, MemoryCsms, FakeClock]:
    clock = FakeClock()
    station = Station(charger, version, clock, StationConfig(**config))
    csms = MemoryCsms(version)
    station.on_connected()
    drive(station, csms)
    assert station.accepted
    return station, csms, clock


def ask(station: Station, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A CSMS call, both ways through the schemas."""
    schemas.validate(station.version, action, payload)
    reply = station.handle_csms_call(action, payload)
    schemas.validate(station.version, action, reply, response=True)
    return reply


#: a variable monitor on EVSE 1's power (SetVariableMonitoring)
POWER_MONITOR = {
    "value": 5000,
    "type": "UpperThreshold",
    "severity": 4,
    "component": {"name": "EVSE", "evse": {"id": 1}},
    "variable": {"name": "Power"},
}


def settle(station: Station, csms: MemoryCsms, clock: FakeClock) -> None:
    """Two minutes of what follows a CSMS's call, and a reboot when it asked for one."""
    run_for(station, csms, clock, 120)
    if station.reset_requested:
        station.on_disconnected()
        station.reset_requested = None
        station.on_connected()
        run_for(station, csms, clock, 10)


def later(clock: FakeClock, seconds: float) -> str:
    return iso_timestamp(clock.now() + seconds)


# -- every CSMS-initiated action of each version -----------------------------------------


def csms_actions(version: Version) -> list[str]:
    """Every other action of a version is the CSMS's to send: a new one in the schemas is
    caught below until the station answers it."""
    return [a for a in schemas.actions(version) if a not in STATION_ACTIONS[version.name]]


@functools.cache
def _schema(version: Version, action: str) -> dict[str, Any]:
    return json.loads(schemas.schema_path(version, action).read_text(encoding="utf-8"))


def sample(version: Version, action: str, everything: bool, when: str) -> dict[str, Any]:
    """A valid request built from the schema alone: the required fields (or every field),
    the first value of each enum, 1 for numbers, timestamps at ``when``."""
    root = _schema(version, action)

    def build(node: dict[str, Any]) -> Any:
        if "$ref" in node:
            return build(root["definitions"][node["$ref"].rsplit("/", 1)[-1]])
        if "enum" in node:
            return node["enum"][0]
        kind = node.get("type")
        if kind == "object":
            names = node.get("properties", {}) if everything else node.get("required", [])
            return {name: build(node["properties"][name]) for name in names}
        if kind == "array":
            return [build(node["items"])]
        if kind in ("integer", "number"):
            value = 1 if kind == "integer" else 1.5
            # inside the bounds (2.1's dischargeLimit is at most 0)
            return min(max(value, node.get("minimum", value)), node.get("maximum", value))
        if kind == "boolean":
            return False
        if node.get("format") == "date-time":
            return when
        if node.get("format") == "uri":
            return "https://csms.example/upload"
        return "x"

    return build(root)


@pytest.mark.parametrize("everything", [False, True], ids=["required", "all-fields"])
@pytest.mark.parametrize(
    ("version", "action"),
    [(v, a) for v in (OCPP201, OCPP21, OCPP16) for a in csms_actions(v)],
)
def test_every_csms_action_gets_a_valid_answer(
    version: Version, action: str, everything: bool
) -> None:
    """No action a version defines for the CSMS gets NotImplemented; each reply, and what
    the station sends after it (reports, status notifications, a reboot's boot), validates."""
    station, csms, clock = make(version, TWO_EVSES, report_items_per_message=4)
    station.start_session(2, "tokA")
    drive(station, csms)
    payload = sample(version, action, everything, later(clock, 3600))
    try:
        reply = ask(station, action, payload)
    except CallErrorReply as exc:  # only a reasoned refusal, never "not implemented"
        assert exc.error_code != "NotImplemented", exc
        return
    run_for(station, csms, clock, 120)
    if station.reset_requested:  # a reset or a firmware update: the reboot validates too
        station.on_disconnected()
        station.reset_requested = None
        station.on_connected()
        run_for(station, csms, clock, 10)
    assert isinstance(reply, dict)


#: strings a random request is made of: names the device model knows, and others
_WORDS = ["x", "0", "-1", "tokA", "EVSE", "Connector", "Power", "ChargingStation",
          "OCPPCommCtrlr", "HeartbeatInterval", "TxCtrlr", "AuthCtrlr", "Actual"]  # fmt: skip


def _requests(version: Version, action: str, now: float) -> st.SearchStrategy[dict[str, Any]]:
    """Schema-valid requests of ``action``, drawn at random: any enum value, optional
    fields or not, numbers across their range (huge ones too), dateTimes from the past,
    now, the far future and the epoch."""
    root = _schema(version, action)

    def strategy(node: dict[str, Any]) -> st.SearchStrategy[Any]:
        if "$ref" in node:
            return strategy(root["definitions"][node["$ref"].rsplit("/", 1)[-1]])
        if "enum" in node:
            return st.sampled_from(node["enum"])
        kind = node.get("type")
        if kind == "object":
            properties = {k: v for k, v in node.get("properties", {}).items() if k != "customData"}
            required = set(node.get("required", []))
            return st.fixed_dictionaries(
                {k: strategy(v) for k, v in properties.items() if k in required},
                optional={k: strategy(v) for k, v in properties.items() if k not in required},
            )
        if kind == "array":
            low = node.get("minItems", 0)
            return st.lists(strategy(node["items"]), min_size=low, max_size=max(low, 3))
        if kind == "integer":
            return st.integers(node.get("minimum", -(10**6)), node.get("maximum", 10**9))
        if kind == "number":
            low, high = node.get("minimum", -1e6), node.get("maximum", 1e9)
            return st.floats(low, high, allow_nan=False, allow_infinity=False)
        if kind == "boolean":
            return st.booleans()
        if node.get("format") == "date-time":
            moments = st.floats(now - 4e7, now + 4e7).map(iso_timestamp)
            return moments | st.sampled_from(["1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
        if node.get("format") == "uri":
            return st.just("https://csms.example/upload")
        limit = node.get("maxLength", 20)
        return st.sampled_from([word[:limit] for word in _WORDS])

    return strategy(root)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_valid_request_of_any_csms_action_gets_a_valid_answer(data: st.DataObject) -> None:
    """Beyond the fixed samples above: random schema-valid requests. No exception escapes
    (the link would answer InternalError), no NotImplemented, every answer and follow-up
    validates, and the station still reports and charges afterwards."""
    version, action = data.draw(
        st.sampled_from([(v, a) for v in (OCPP201, OCPP21, OCPP16) for a in csms_actions(v)])
    )
    station, csms, clock = make(version, TWO_EVSES, report_items_per_message=4)
    station.start_session(2, "tokA")
    drive(station, csms)
    payload = data.draw(_requests(version, action, clock.now()).filter(_valid(version, action)))
    try:
        ask(station, action, payload)
    except CallErrorReply as exc:
        assert exc.error_code != "NotImplemented", exc
    settle(station, csms, clock)
    # still a working station: it reads its model and ends what it charges
    if version is OCPP16:
        assert ask(station, "GetConfiguration", {})["configurationKey"]
    else:
        reply = ask(station, "GetBaseReport", {"requestId": 99, "reportBase": "FullInventory"})
        assert reply == {"status": "Accepted"}
    for evse_id in station.evses:
        station.stop_session(evse_id)
    run_for(station, csms, clock, 30)
    assert station.transactions == []


def _valid(version: Version, action: str) -> Callable[[dict[str, Any]], bool]:
    """The schemas say more than the strategy does (patterns, lengths of lists)."""

    def valid(payload: dict[str, Any]) -> bool:
        try:
            schemas.validate(version, action, payload)
        except schemas.PayloadError:
            return False
        return True

    return valid


#: the CSMS's clock: years behind the simulated one and 10 times slower (--time-scale 10)
WALL_START = 1_700_000_000.0


def _on_wall_clock(version: Version) -> tuple[Station, MemoryCsms, FakeClock, SlowWallClock]:
    clock = FakeClock(start=1_780_000_000.0)
    wall = SlowWallClock(clock, 10.0, start=WALL_START)
    config = StationConfig(report_items_per_message=4)
    station = Station(TWO_EVSES, version, clock, config, wall_clock=wall)
    csms = MemoryCsms(version)
    station.on_connected()
    drive(station, csms)
    assert station.accepted
    station.start_session(2, "tokA")
    drive(station, csms)
    return station, csms, clock, wall


def _assert_wall_clock_times(csms: MemoryCsms, wall: SlowWallClock, *replies: Any) -> None:
    """Every time the station stamped on what it sent (and on its answers) is the CSMS's
    wall clock, never the simulated clock, which runs years ahead."""
    times = [t for _, payload in csms.received for t in station_times(payload)]
    times += [t for reply in replies for t in station_times(reply)]
    assert times
    assert all(WALL_START <= t <= wall.now() + 1e-3 for t in times), [
        (iso_timestamp(t), action)
        for action, payload in csms.received
        for t in station_times(payload)
        if not WALL_START <= t <= wall.now() + 1e-3
    ]


@pytest.mark.parametrize(
    ("version", "action"),
    [(v, a) for v in (OCPP201, OCPP21, OCPP16) for a in csms_actions(v)],
)
def test_what_follows_any_csms_action_carries_wall_clock_time(
    version: Version, action: str
) -> None:
    """--time-scale compresses the waits, not the clock: whatever a command brings (status
    notifications, meter values, a reboot's messages), the times on it are real time."""
    station, csms, clock, wall = _on_wall_clock(version)
    payload = sample(version, action, True, iso_timestamp(wall.now() + 60))
    reply: dict[str, Any] = {}
    with contextlib.suppress(CallErrorReply):
        reply = ask(station, action, payload)
    answered_at = wall.now()
    assert all(t <= answered_at for t in station_times(reply))  # GetCompositeSchedule's
    settle(station, csms, clock)
    _assert_wall_clock_times(csms, wall)


@pytest.mark.parametrize("version", V2)
def test_reports_are_generated_at_wall_clock_time(version: Version) -> None:
    """NotifyReport, NotifyMonitoringReport and NotifyCustomerInformation say when they were
    generated, and a composite schedule when it starts: the CSMS's time, not the station's
    simulated time (it was 27 minutes ahead after 3 minutes of a --time-scale 10 run)."""
    station, csms, clock, wall = _on_wall_clock(version)
    run_for(station, csms, clock, 600)  # the simulated clock pulls further ahead
    monitor = copy.deepcopy(POWER_MONITOR)
    ask(station, "SetVariableMonitoring", {"setMonitoringData": [monitor]})
    asked = [
        ("GetBaseReport", {"requestId": 1, "reportBase": "FullInventory"}),
        ("GetMonitoringReport", {"requestId": 2}),
        (
            "CustomerInformation",
            {
                "requestId": 3,
                "report": True,
                "clear": False,
                "idToken": {"idToken": "tokA", "type": "ISO14443"},
            },
        ),
    ]
    for action, payload in asked:
        assert ask(station, action, payload)["status"] == "Accepted", action
    composite = ask(station, "GetCompositeSchedule", {"evseId": 2, "duration": 600})
    assert station_times(composite)  # its scheduleStart
    drive(station, csms)
    for notify in ("NotifyReport", "NotifyMonitoringReport", "NotifyCustomerInformation"):
        assert csms.of(notify), notify
    _assert_wall_clock_times(csms, wall, composite)


def test_the_station_to_csms_list_is_the_schemas() -> None:
    for version in (OCPP201, OCPP21, OCPP16):
        assert STATION_ACTIONS[version.name] <= set(schemas.actions(version))


# -- TriggerMessage for readings --------------------------------------------------------


def _sampled(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [value for reading in payload["meterValue"] for value in reading["sampledValue"]]


@pytest.mark.parametrize("version", [*V2, OCPP16])
def test_trigger_message_meter_values_reads_every_evse_asked_for(version: Version) -> None:
    """F06: TriggerMessage MeterValues brings a MeterValues message of each EVSE asked for,
    charging or not (2.0.1: a MeterValuesRequest, not a transaction event; 1.6: with the
    transactionId only while one runs), every reading in context Trigger."""
    station, csms, clock = make(version, TWO_EVSES)
    station.start_session(2, "tokA")
    run_for(station, csms, clock, 30)
    where = "connectorId" if version is OCPP16 else "evseId"
    before = len(csms.received)
    reply = ask(station, "TriggerMessage", {"requestedMessage": "MeterValues"})
    assert reply == {"status": "Accepted"}
    drive(station, csms)
    sent = csms.received[before:]
    assert [action for action, _ in sent] == ["MeterValues", "MeterValues"]
    idle, charging = sorted((payload for _, payload in sent), key=lambda p: p[where])
    assert (idle[where], charging[where]) == (1, 2)
    for payload in (idle, charging):
        assert {value["context"] for value in _sampled(payload)} == {"Trigger"}
    power = {p[where]: float(v["value"]) for p in (idle, charging) for v in _sampled(p)
             if v["measurand"] == "Power.Active.Import"}  # fmt: skip
    assert power[1] == 0 and power[2] > 0
    if version is OCPP16:
        assert "transactionId" not in idle and charging["transactionId"] > 0
    # one EVSE: only its reading
    evse = {"connectorId": 1} if version is OCPP16 else {"evse": {"id": 1}}
    before = len(csms.received)
    ask(station, "TriggerMessage", {"requestedMessage": "MeterValues", **evse})
    drive(station, csms)
    assert [(a, p[where]) for a, p in csms.received[before:]] == [("MeterValues", 1)]


@pytest.mark.parametrize("version", [*V2, OCPP16])
@pytest.mark.parametrize("message", ["MeterValues", "StatusNotification"])
def test_trigger_message_for_an_evse_the_station_lacks_is_rejected(
    version: Version, message: str
) -> None:
    station, csms, _ = make(version, TWO_EVSES)
    before = len(csms.received)
    evse = {"connectorId": 3} if version is OCPP16 else {"evse": {"id": 3}}
    reply = ask(station, "TriggerMessage", {"requestedMessage": message, **evse})
    assert reply == {"status": "Rejected"}
    drive(station, csms)
    assert csms.received[before:] == []


@pytest.mark.parametrize("version", V2)
def test_trigger_message_transaction_event_updates_the_running_transaction(
    version: Version,
) -> None:
    """TriggerMessage TransactionEvent: an Updated event of the running transaction with
    triggerReason Trigger and readings in context Trigger; nothing for an idle EVSE."""
    station, csms, clock = make(version, TWO_EVSES)
    station.start_session(2, "tokA")
    run_for(station, csms, clock, 30)
    for evse, expected in ((1, 0), (2, 1)):
        before = len(csms.received)
        payload = {"requestedMessage": "TransactionEvent", "evse": {"id": evse}}
        assert ask(station, "TriggerMessage", payload) == {"status": "Accepted"}
        drive(station, csms)
        sent = csms.received[before:]
        assert len(sent) == expected
    ((action, event),) = sent
    assert action == "TransactionEvent" and event["eventType"] == "Updated"
    assert event["triggerReason"] == "Trigger"
    assert {value["context"] for value in _sampled(event)} == {"Trigger"}


# -- reports: one device model -----------------------------------------------------------


@pytest.mark.parametrize("version", V2)
def test_get_base_report_is_multi_part_and_agrees_with_get_variables(version: Version) -> None:
    station, csms, _ = make(version, TWO_EVSES, report_items_per_message=7)
    ask(
        station,
        "SetVariables",
        {
            "setVariableData": [
                {
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "HeartbeatInterval"},
                    "attributeValue": "77",
                }
            ]
        },
    )
    reply = ask(station, "GetBaseReport", {"requestId": 42, "reportBase": "FullInventory"})
    assert reply == {"status": "Accepted"}
    drive(station, csms)
    parts = csms.of("NotifyReport")
    assert len(parts) > 2 and all(p["requestId"] == 42 for p in parts)
    assert [p["seqNo"] for p in parts] == list(range(len(parts)))
    assert [p.get("tbc", False) for p in parts] == [True] * (len(parts) - 1) + [False]
    assert all(len(p["reportData"]) <= 7 for p in parts)
    data = [item for p in parts for item in p["reportData"]]
    assert len(data) == len(station.device_model.variables)
    components = {(d["component"]["name"], json.dumps(d["component"].get("evse"))) for d in data}
    for name in ("ChargingStation", "OCPPCommCtrlr", "TxCtrlr", "AuthCtrlr", "SecurityCtrlr"):
        assert (name, "null") in components
    assert ("EVSE", '{"id": 2}') in components
    assert ("Connector", '{"id": 2, "connectorId": 1}') in components
    # Every reported value is what GetVariables reads, variable by variable.
    asked = [{"component": d["component"], "variable": d["variable"]} for d in data]
    got = ask(station, "GetVariables", {"getVariableData": asked})["getVariableResult"]
    assert [g["attributeValue"] for g in got] == [d["variableAttribute"][0]["value"] for d in data]
    heartbeat = next(d for d in data if d["variable"]["name"] == "HeartbeatInterval")
    attribute = heartbeat["variableAttribute"][0]
    assert (attribute["value"], attribute["mutability"]) == ("77", "ReadWrite")


@pytest.mark.parametrize("version", V2)
def test_get_report_by_criteria_and_component(version: Version) -> None:
    station, csms, _ = make(version, TWO_EVSES)
    config = ask(station, "GetBaseReport", {"requestId": 1, "reportBase": "ConfigurationInventory"})
    assert config == {"status": "Accepted"}
    drive(station, csms)
    (part,) = csms.of("NotifyReport")
    assert {d["variableAttribute"][0]["mutability"] for d in part["reportData"]} == {"ReadWrite"}
    enabled = ask(station, "GetReport", {"requestId": 2, "componentCriteria": ["Enabled"]})
    assert enabled == {"status": "Accepted"}
    drive(station, csms)
    names = {d["component"]["name"] for p in csms.of("NotifyReport")[1:] for d in p["reportData"]}
    assert {"AuthCtrlr", "LocalAuthListCtrlr", "ReservationCtrlr"} <= names
    assert "EVSE" not in names and "OCPPCommCtrlr" not in names
    problem = ask(station, "GetReport", {"requestId": 3, "componentCriteria": ["Problem"]})
    assert problem == {"status": "EmptyResultSet"}
    evse2 = {"component": {"name": "EVSE", "evse": {"id": 2}}}
    reply = ask(station, "GetReport", {"requestId": 4, "componentVariable": [evse2]})
    assert reply == {"status": "Accepted"}
    drive(station, csms)
    last = csms.of("NotifyReport")[-1]
    assert last["requestId"] == 4
    assert {json.dumps(d["component"]) for d in last["reportData"]} == {
        json.dumps({"name": "EVSE", "evse": {"id": 2}})
    }


def test_get_configuration_16_reads_the_same_model() -> None:
    station, _, _ = make(OCPP16)
    assert ask(
        station, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "15"}
    ) == {"status": "Accepted"}
    reply = ask(station, "GetConfiguration", {})
    keys = {k["key"]: k for k in reply["configurationKey"]}
    assert keys["MeterValueSampleInterval"] == {
        "key": "MeterValueSampleInterval",
        "readonly": False,
        "value": "15",
    }
    assert keys["StopTransactionOnInvalidId"]["readonly"] is True
    assert (
        ask(station, "ChangeConfiguration", {"key": "StopTransactionOnInvalidId", "value": "0"})[
            "status"
        ]
        == "Rejected"
    )
    for key, entry in keys.items():
        assert station.device_model.keys_16()[key].read() == entry["value"]


# -- transactions ------------------------------------------------------------------------


@pytest.mark.parametrize("version", V2)
def test_get_transaction_status_and_cost_updated(version: Version) -> None:
    station, csms, _ = make(version)
    transaction = station.start_session(1, "tokA")
    assert transaction is not None
    tid = transaction.transaction_id
    status = ask(station, "GetTransactionStatus", {"transactionId": tid})
    assert status == {"messagesInQueue": True, "ongoingIndicator": True}
    drive(station, csms)
    assert ask(station, "GetTransactionStatus", {"transactionId": tid}) == {
        "messagesInQueue": False,
        "ongoingIndicator": True,
    }
    assert ask(station, "CostUpdated", {"totalCost": 1234.5, "transactionId": tid}) == {}
    assert transaction.cost == 1234.5
    station.stop_session(1)
    assert ask(station, "GetTransactionStatus", {}) == {"messagesInQueue": True}
    drive(station, csms)
    assert ask(station, "GetTransactionStatus", {"transactionId": tid}) == {
        "messagesInQueue": False,
        "ongoingIndicator": False,
    }


# -- local authorisation list ------------------------------------------------------------


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_local_list_full_differential_and_version_mismatch(version: Version) -> None:
    station, _, _ = make(version)
    is16 = version is OCPP16

    def send(number: int, kind: str, entries: dict[str, str | None]) -> str:
        if is16:
            items = [
                {"idTag": t, **({"idTagInfo": {"status": s}} if s else {})}
                for t, s in entries.items()
            ]
            payload = {"listVersion": number, "updateType": kind, "localAuthorizationList": items}
        else:
            items = [
                {
                    "idToken": {"idToken": t, "type": "ISO14443"},
                    **({"idTokenInfo": {"status": s}} if s else {}),
                }
                for t, s in entries.items()
            ]
            payload = {
                "versionNumber": number,
                "updateType": kind,
                "localAuthorizationList": items,
            }
        return ask(station, "SendLocalList", payload)["status"]

    def version_number() -> int:
        reply = ask(station, "GetLocalListVersion", {})
        return reply["listVersion" if is16 else "versionNumber"]

    assert version_number() == 0
    assert send(3, "Full", {"A": "Accepted", "B": "Blocked"}) == "Accepted"
    assert version_number() == 3
    assert send(4, "Differential", {"C": "Accepted", "A": None}) == "Accepted"
    assert set(station.commands.local_list.entries) == {"B", "C"}
    assert send(4, "Differential", {"D": "Accepted"}) == "VersionMismatch"
    assert send(2, "Differential", {"D": "Accepted"}) == "VersionMismatch"
    assert version_number() == 4 and "D" not in station.commands.local_list.entries
    assert send(1, "Full", {"E": "Accepted"}) == "Accepted"  # a full list replaces all
    assert set(station.commands.local_list.entries) == {"E"} and version_number() == 1


# -- reservations ------------------------------------------------------------------------


@pytest.mark.parametrize("version", V2)
def test_reserve_now_holds_the_evse_for_its_token_until_used(version: Version) -> None:
    station, csms, clock = make(version, TWO_EVSES)
    reserve = {
        "id": 7,
        "expiryDateTime": later(clock, 600),
        "idToken": {"idToken": "tokR", "type": "ISO14443"},
        "evseId": 1,
    }
    assert ask(station, "ReserveNow", reserve) == {"status": "Accepted"}
    drive(station, csms)
    assert csms.statuses()[-1]["connectorStatus"] == "Reserved"
    assert station.free_evse() is station.evses[2]  # the profile leaves it alone
    assert station.start_session(1, "someone-else") is None
    start = {"idToken": {"idToken": "other", "type": "ISO14443"}, "remoteStartId": 1, "evseId": 1}
    assert ask(station, "RequestStartTransaction", start) == {"status": "Rejected"}
    again = {**reserve, "id": 8}
    assert ask(station, "ReserveNow", again) == {"status": "Occupied"}
    transaction = station.start_session(1, "tokR")
    assert transaction is not None and transaction.reservation_id == 7
    drive(station, csms)
    assert csms.of("TransactionEvent")[-1]["reservationId"] == 7
    assert station.commands.reservations == {}
    assert ask(station, "ReserveNow", again) == {"status": "Occupied"}  # charging now
    assert ask(station, "CancelReservation", {"reservationId": 7}) == {"status": "Rejected"}


@pytest.mark.parametrize("version", V2)
def test_reservation_expires_and_can_be_cancelled(version: Version) -> None:
    station, csms, clock = make(version)
    token = {"idToken": "tokR", "type": "ISO14443"}
    payload = {"id": 1, "expiryDateTime": later(clock, 300), "idToken": token, "evseId": 1}
    assert ask(station, "ReserveNow", payload) == {"status": "Accepted"}
    run_for(station, csms, clock, 299)
    assert csms.statuses()[-1]["connectorStatus"] == "Reserved"
    run_for(station, csms, clock, 2)
    assert csms.of("ReservationStatusUpdate") == [
        {"reservationId": 1, "reservationUpdateStatus": "Expired"}
    ]
    assert csms.statuses()[-1]["connectorStatus"] == "Available"
    payload = {"id": 2, "expiryDateTime": later(clock, 300), "idToken": token}  # any EVSE
    assert ask(station, "ReserveNow", payload) == {"status": "Accepted"}
    assert ask(station, "CancelReservation", {"reservationId": 2}) == {"status": "Accepted"}
    run_for(station, csms, clock, 600)
    assert len(csms.of("ReservationStatusUpdate")) == 1  # a cancelled one does not expire
    assert csms.statuses()[-1]["connectorStatus"] == "Available"
    past = {"id": 3, "expiryDateTime": later(clock, -1), "idToken": token, "evseId": 1}
    assert ask(station, "ReserveNow", past) == {"status": "Rejected"}
    station.handle_csms_call("ChangeAvailability", {"operationalStatus": "Inoperative"})
    payload = {"id": 4, "expiryDateTime": later(clock, 300), "idToken": token, "evseId": 1}
    assert ask(station, "ReserveNow", payload) == {"status": "Unavailable"}


def test_reserve_now_16() -> None:
    station, csms, clock = make(OCPP16)
    payload = {
        "connectorId": 1,
        "expiryDate": later(clock, 60),
        "idTag": "tagR",
        "reservationId": 5,
    }
    assert ask(station, "ReserveNow", payload) == {"status": "Accepted"}
    drive(station, csms)
    assert csms.statuses()[-1]["status"] == "Reserved"
    assert station.start_session(1, "other") is None
    assert ask(station, "ReserveNow", {**payload, "connectorId": 0}) == {"status": "Rejected"}
    assert ask(station, "CancelReservation", {"reservationId": 5}) == {"status": "Accepted"}
    drive(station, csms)
    assert csms.statuses()[-1]["status"] == "Available"


# -- firmware and logs -------------------------------------------------------------------


def _firmware_201(clock: FakeClock, request_id: int) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "firmware": {"location": "https://fw.example/1.1", "retrieveDateTime": later(clock, 0)},
    }


@pytest.mark.parametrize("version", V2)
def test_update_firmware_waits_for_the_transaction_then_reboots_201(version: Version) -> None:
    station, csms, clock = make(version)
    station.start_session(1, "tokA")
    assert ask(station, "UpdateFirmware", _firmware_201(clock, 9)) == {"status": "Accepted"}
    run_for(station, csms, clock, 60)
    statuses = [(p["status"], p.get("requestId")) for p in csms.of("FirmwareStatusNotification")]
    assert statuses == [("Downloading", 9), ("Downloaded", 9)]  # not while charging
    assert station.reset_requested is None
    ask(station, "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    drive(station, csms)
    assert csms.of("FirmwareStatusNotification")[-1] == {"status": "Downloaded", "requestId": 9}
    station.stop_session(1)
    run_for(station, csms, clock, 30)
    assert csms.of("FirmwareStatusNotification")[-1]["status"] == "Installing"
    assert station.reset_requested == "FirmwareUpdate"
    station.on_disconnected()
    station.reset_requested = None  # what the runtime does after the reboot delay
    station.on_connected()
    drive(station, csms)
    assert csms.of("BootNotification")[-1]["reason"] == "FirmwareUpdate"
    assert csms.of("FirmwareStatusNotification")[-1] == {"status": "Installed", "requestId": 9}
    assert ask(station, "UpdateFirmware", _firmware_201(clock, 10)) == {"status": "Accepted"}
    assert ask(station, "UpdateFirmware", _firmware_201(clock, 11)) == {
        "status": "AcceptedCanceled"
    }


def test_update_firmware_16() -> None:
    station, csms, clock = make(OCPP16)
    payload = {"location": "ftp://fw.example/1.1", "retrieveDate": later(clock, 30)}
    assert ask(station, "UpdateFirmware", payload) == {}
    run_for(station, csms, clock, 29)
    assert csms.of("FirmwareStatusNotification") == []
    run_for(station, csms, clock, 60)
    assert [p["status"] for p in csms.of("FirmwareStatusNotification")] == [
        "Downloading",
        "Downloaded",
        "Installing",
    ]
    assert station.reset_requested == "FirmwareUpdate"
    station.on_disconnected()
    station.reset_requested = None
    station.on_connected()
    drive(station, csms)
    assert csms.of("FirmwareStatusNotification")[-1] == {"status": "Installed"}


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_get_log_uploads_and_fails(version: Version) -> None:
    station, csms, clock = make(version)
    payload = {"logType": "DiagnosticsLog", "requestId": 3, "log": {"remoteLocation": "x"}}
    reply = ask(station, "GetLog", payload)
    assert reply["status"] == "Accepted" and reply["filename"].endswith(".log")
    run_for(station, csms, clock, 10)
    assert csms.of("LogStatusNotification") == [
        {"status": "Uploading", "requestId": 3},
        {"status": "UploadFailure", "requestId": 3},
    ]


def test_get_diagnostics_16() -> None:
    station, csms, clock = make(OCPP16)
    reply = ask(station, "GetDiagnostics", {"location": "ftp://logs.example/"})
    assert reply["fileName"].startswith(CHARGER.id)
    run_for(station, csms, clock, 10)
    assert [p["status"] for p in csms.of("DiagnosticsStatusNotification")] == [
        "Uploading",
        "UploadFailed",
    ]


# -- monitoring, display messages, customer information ----------------------------------


@pytest.mark.parametrize("version", V2)
def test_variable_monitors_are_kept_reported_and_cleared(version: Version) -> None:
    station, csms, _ = make(version)
    monitor = copy.deepcopy(POWER_MONITOR)
    unknown = {**monitor, "component": {"name": "Nope"}}
    reply = ask(station, "SetVariableMonitoring", {"setMonitoringData": [monitor, unknown]})
    first, second = reply["setMonitoringResult"]
    assert first["status"] == "Accepted" and second["status"] == "UnknownComponent"
    report = {"requestId": 6, "monitoringCriteria": ["ThresholdMonitoring"]}
    assert ask(station, "GetMonitoringReport", report) == {"status": "Accepted"}
    drive(station, csms)
    (notify,) = csms.of("NotifyMonitoringReport")
    assert notify["monitor"][0]["variableMonitoring"][0]["id"] == first["id"]
    evse = {"requestId": 9, "componentVariable": [{"component": {"name": "EVSE"}}]}
    assert ask(station, "GetMonitoringReport", evse) == {"status": "Accepted"}
    other = {"requestId": 10, "componentVariable": [{"component": {"name": "TxCtrlr"}}]}
    assert ask(station, "GetMonitoringReport", other) == {"status": "EmptyResultSet"}
    delta = {"requestId": 7, "monitoringCriteria": ["DeltaMonitoring"]}
    assert ask(station, "GetMonitoringReport", delta) == {"status": "EmptyResultSet"}
    clear = ask(station, "ClearVariableMonitoring", {"id": [first["id"], 999]})
    assert [r["status"] for r in clear["clearMonitoringResult"]] == ["Accepted", "NotFound"]
    assert ask(station, "GetMonitoringReport", {"requestId": 8}) == {"status": "EmptyResultSet"}


@pytest.mark.parametrize("version", V2)
def test_display_messages_are_kept(version: Version) -> None:
    station, csms, _ = make(version)
    message = {"id": 3, "priority": "InFront", "message": {"format": "UTF8", "content": "Hi"}}
    assert ask(station, "SetDisplayMessage", {"message": message}) == {"status": "Accepted"}
    unknown = {**message, "id": 4, "transactionId": "nope"}
    assert ask(station, "SetDisplayMessage", {"message": unknown}) == {
        "status": "UnknownTransaction"
    }
    assert ask(station, "GetDisplayMessages", {"requestId": 1}) == {"status": "Accepted"}
    drive(station, csms)
    (notify,) = csms.of("NotifyDisplayMessages")
    assert (notify["requestId"], notify["messageInfo"]) == (1, [message])
    assert ask(station, "ClearDisplayMessage", {"id": 3}) == {"status": "Accepted"}
    assert ask(station, "ClearDisplayMessage", {"id": 3}) == {"status": "Unknown"}
    assert ask(station, "GetDisplayMessages", {"requestId": 2}) == {"status": "Unknown"}


@pytest.mark.parametrize("version", V2)
def test_customer_information_reports_and_clears_the_local_list_entry(version: Version) -> None:
    station, csms, _ = make(version)
    entry = {
        "idToken": {"idToken": "C1", "type": "ISO14443"},
        "idTokenInfo": {"status": "Accepted"},
    }
    ask(
        station,
        "SendLocalList",
        {"versionNumber": 1, "updateType": "Full", "localAuthorizationList": [entry]},
    )
    payload = {"requestId": 4, "report": True, "clear": True, "idToken": entry["idToken"]}
    assert ask(station, "CustomerInformation", payload) == {"status": "Accepted"}
    drive(station, csms)
    (notify,) = csms.of("NotifyCustomerInformation")
    assert "C1" in notify["data"] and notify["requestId"] == 4
    assert station.commands.local_list.entries == {}
    nobody = {"requestId": 5, "report": True, "clear": False}
    assert ask(station, "CustomerInformation", nobody) == {"status": "Invalid"}


# -- Reset and ChangeAvailability (issue 15's defects) -----------------------------------


@pytest.mark.parametrize("version", V2)
def test_reset_on_idle_waits_for_the_transactions_to_end(version: Version) -> None:
    station, csms, _ = make(version, TWO_EVSES)
    station.start_session(1, "tokA")
    assert ask(station, "Reset", {"type": "OnIdle"}) == {"status": "Scheduled"}
    assert station.reset_requested is None and station.transactions
    assert station.free_evse() is None and station.start_session(2, "tokB") is None
    station.stop_session(1)
    assert station.reset_requested == "RemoteReset"
    drive(station, csms)
    assert csms.of("TransactionEvent")[-1]["transactionInfo"]["stoppedReason"] == "Local"


@pytest.mark.parametrize("version", V2)
def test_reset_immediate_ends_transactions_with_immediate_reset(version: Version) -> None:
    station, csms, _ = make(version, TWO_EVSES)
    station.start_session(1, "tokA")
    station.start_session(2, "tokB")
    assert ask(station, "Reset", {"type": "Immediate"}) == {"status": "Accepted"}
    drive(station, csms)
    ended = [e for e in csms.of("TransactionEvent") if e["eventType"] == "Ended"]
    assert [e["transactionInfo"]["stoppedReason"] for e in ended] == ["ImmediateReset"] * 2
    assert {e["triggerReason"] for e in ended} == {"ResetCommand"}
    assert station.reset_requested == "RemoteReset"


@pytest.mark.parametrize("version", V2)
def test_reset_of_one_evse_resets_only_that_evse(version: Version) -> None:
    station, csms, _ = make(version, TWO_EVSES)
    station.start_session(1, "tokA")
    station.start_session(2, "tokB")
    assert ask(station, "Reset", {"type": "OnIdle", "evseId": 2}) == {"status": "Scheduled"}
    assert len(station.transactions) == 2
    assert ask(station, "Reset", {"type": "Immediate", "evseId": 2}) == {"status": "Accepted"}
    assert [t.evse_id for t in station.transactions] == [1]
    assert station.reset_requested is None  # the station does not reboot
    drive(station, csms)
    assert csms.of("TransactionEvent")[-1]["transactionInfo"]["stoppedReason"] == "ImmediateReset"


def test_reset_16_ends_transactions_with_its_reason() -> None:
    station, csms, _ = make(OCPP16)
    station.start_session(1, "tagA")
    drive(station, csms)
    assert ask(station, "Reset", {"type": "Hard"}) == {"status": "Accepted"}
    drive(station, csms)
    assert csms.of("StopTransaction")[-1]["reason"] == "HardReset"
    assert station.reset_requested == "RemoteReset"


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_inoperative_during_a_transaction_reports_unavailable_when_it_ends(
    version: Version,
) -> None:
    station, csms, _ = make(version)
    station.start_session(1, "tokA")
    drive(station, csms)
    if version is OCPP16:
        payload = {"connectorId": 1, "type": "Inoperative"}
    else:
        payload = {"operationalStatus": "Inoperative", "evse": {"id": 1}}
    assert ask(station, "ChangeAvailability", payload) == {"status": "Scheduled"}
    station.stop_session(1)
    drive(station, csms)
    last = csms.statuses()[-1]
    assert last["status" if version is OCPP16 else "connectorStatus"] == "Unavailable"
    assert station.free_evse() is None
