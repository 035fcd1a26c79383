"""The station state machine, without sockets, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen import fleet as fleets
from loadgen import stations
from loadgen.backoff import RetryBackOff
from loadgen.ocppj import CallErrorReply
from loadgen.physics import EV, FakeClock
from loadgen.protocols import OCPP16, OCPP21, OCPP201, Version, schemas
from loadgen.station import NO_TRANSACTION_ID, Station, StationConfig
from tests.station_driver import (
    STATUS_MESSAGE,
    MemoryCsms,
    SlowWallClock,
    drive,
    run_for,
    station_times,
)

CHARGER = fleets.load(fleets.SEED_FLEET).chargers["emart_jeju_01"]
#: 2.1 does everything 2.0.1 does: the 2.0.1 tests run in both
V2 = [OCPP201, OCPP21]


def make(version: Version = OCPP201, **config) -> tuple[Station, MemoryCsms, FakeClock]:
    clock = FakeClock()
    station = Station(CHARGER, version, clock, StationConfig(**config))
    return station, MemoryCsms(version), clock


def boot(station: Station, csms: MemoryCsms) -> None:
    station.on_connected()
    drive(station, csms)
    assert station.accepted


@pytest.mark.parametrize("version", V2)
def test_boot_identity_and_first_status(version: Version) -> None:
    station, csms, _ = make(version)
    boot(station, csms)
    (boot_payload,) = csms.of("BootNotification")
    assert boot_payload == {
        "chargingStation": {
            "vendorName": "ABB",
            "model": "ABB Terra 53",
            "serialNumber": "SN-emart_jeju_01-001",
            "firmwareVersion": "1.0.0",
        },
        "reason": "PowerUp",
    }
    (status,) = csms.statuses()
    assert status["connectorStatus"] == "Available" and status["evseId"] == 1


def test_16_boot_reports_connector_0_then_each_connector() -> None:
    """A 1.6 charger reports connector 0 (the charge point itself) after every boot, first,
    as Unavailable once every connector was made inoperative."""
    station, csms, _ = make(OCPP16)
    boot(station, csms)
    statuses = [(p["connectorId"], p["status"]) for p in csms.statuses()]
    connectors = range(1, CHARGER.evse_count + 1)
    assert statuses == [(0, "Available")] + [(c, "Available") for c in connectors]
    station.handle_csms_call("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"})
    station.on_disconnected()
    csms.received.clear()
    boot(station, csms)
    statuses = [(p["connectorId"], p["status"]) for p in csms.statuses()]
    assert statuses == [(0, "Unavailable")] + [(c, "Unavailable") for c in connectors]


def test_16_connector_0_is_reported_on_change_and_when_triggered() -> None:
    """Connector 0 is the charge point itself: a ChangeAvailability of connector 0 that
    changes its status reports it (not only the next boot), and TriggerMessage
    StatusNotification for connector 0, or for no connector, brings it too."""
    station, csms, _ = make(OCPP16)
    boot(station, csms)
    connectors = list(range(1, CHARGER.evse_count + 1))

    def statuses_after(action: str, payload: dict) -> list[tuple[int, str]]:
        before = len(csms.received)
        station.handle_csms_call(action, payload)
        drive(station, csms)
        return [(p["connectorId"], p["status"]) for a, p in csms.received[before:]
                if a == "StatusNotification"]  # fmt: skip

    inoperative = {"connectorId": 0, "type": "Inoperative"}
    assert statuses_after("ChangeAvailability", inoperative) == [
        *((c, "Unavailable") for c in connectors),
        (0, "Unavailable"),
    ]
    assert statuses_after("ChangeAvailability", inoperative) == []  # nothing changed
    trigger = {"requestedMessage": "StatusNotification"}
    assert statuses_after("TriggerMessage", {**trigger, "connectorId": 0}) == [(0, "Unavailable")]
    assert statuses_after("TriggerMessage", trigger) == [
        (0, "Unavailable"),
        *((c, "Unavailable") for c in connectors),
    ]
    assert statuses_after("ChangeAvailability", {**inoperative, "type": "Operative"}) == [
        *((c, "Available") for c in connectors),
        (0, "Available"),
    ]


@pytest.mark.parametrize("version", V2)
def test_2_x_boot_reports_no_connector_0(version: Version) -> None:
    station, csms, _ = make(version)
    boot(station, csms)
    assert [(p["evseId"], p["connectorId"]) for p in csms.statuses()] == [
        (evse, 1) for evse in range(1, CHARGER.evse_count + 1)
    ]


def test_2_1_reports_connector_availability_state_with_notify_event() -> None:
    """2.1 deprecates StatusNotification (G01): the Connector's AvailabilityState goes in a
    NotifyEvent, one event per report, each with an eventId of its own; a TriggerMessage
    for StatusNotification still gets one."""
    station, csms, clock = make(OCPP21)
    boot(station, csms)
    assert "StatusNotification" not in csms.actions()
    station.start_session(1, "tokA")
    run_for(station, csms, clock, 5)
    station.stop_session(1)
    run_for(station, csms, clock, 5)
    reports = csms.of("NotifyEvent")
    assert all(r["seqNo"] == 0 and not r.get("tbc") and len(r["eventData"]) == 1 for r in reports)
    events = [r["eventData"][0] for r in reports]
    assert [(e["component"]["evse"]["id"], e["actualValue"]) for e in events] == [
        *((evse, "Available") for evse in range(1, CHARGER.evse_count + 1)),
        (1, "Occupied"),
        (1, "Available"),
    ]
    assert [e["eventId"] for e in events] == list(range(1, len(events) + 1))
    assert {(e["trigger"], e["eventNotificationType"]) for e in events} == {
        ("Delta", "HardWiredNotification")
    }
    trigger = {"requestedMessage": "StatusNotification"}
    assert station.handle_csms_call("TriggerMessage", trigger) == {"status": "Accepted"}
    drive(station, csms)
    assert [p["connectorStatus"] for p in csms.of("StatusNotification")] == ["Available"] * (
        CHARGER.evse_count
    )


@pytest.mark.parametrize(
    ("version", "configured", "sent"),
    [
        (OCPP21, "StatusNotification", "StatusNotification"),  # a CSMS that reads only that
        (OCPP201, "NotifyEvent", "NotifyEvent"),  # 2.0.1's alternative
        (OCPP16, "NotifyEvent", "StatusNotification"),  # 1.6 has no NotifyEvent
    ],
)
def test_connector_status_message_is_configurable(
    version: Version, configured: str, sent: str
) -> None:
    station, csms, _ = make(version, connector_status=configured)
    boot(station, csms)
    assert set(csms.actions()) == {"BootNotification", sent}
    assert {p.get("connectorStatus", p.get("status")) for p in csms.statuses()} == {"Available"}


def test_the_station_core_has_no_version_branches() -> None:
    """What differs between the versions is in loadgen.stations: the core names none."""
    import re
    from pathlib import Path

    import loadgen.station

    source = Path(loadgen.station.__file__).read_text()
    code = "\n".join(line.split("#")[0] for line in source.splitlines())
    assert not re.findall(r"\bis16\b|\bis21\b|\bOCPP(16|201|21)\b|\bv(16|201|21)\b", code)


@pytest.mark.parametrize("version", [OCPP16, OCPP201, OCPP21])
def test_each_version_has_its_rules_and_2_1_answers_all_of_2_0_1(version: Version) -> None:
    station, _, _ = make(version)
    assert station.rules is stations.rules_for(version)
    v201 = stations.rules_for(OCPP201).handlers
    assert v201.keys() < stations.rules_for(OCPP21).handlers.keys()
    assert not {"RemoteStartTransaction", "GetConfiguration"} & v201.keys()
    assert {"RemoteStartTransaction", "GetConfiguration"} < stations.rules_for(
        OCPP16
    ).handlers.keys()


@pytest.mark.parametrize("version", V2)
@pytest.mark.parametrize("status", ["Pending", "Rejected"])
def test_boot_not_accepted_retries_after_the_interval(version: Version, status: str) -> None:
    station, csms, clock = make(version)
    csms.boot_status, csms.interval = status, 20
    station.on_connected()
    drive(station, csms)
    assert station.boot_status == status
    assert station.next_call() is None  # nothing but a boot may go out
    assert station.next_deadline() == pytest.approx(clock.now() + 20)
    run_for(station, csms, clock, 19)
    assert csms.actions() == ["BootNotification"]
    csms.boot_status = "Accepted"
    run_for(station, csms, clock, 2)
    assert csms.actions()[:2] == ["BootNotification", "BootNotification"]
    assert station.accepted and csms.statuses()


@pytest.mark.parametrize("version", V2)
def test_failed_boot_is_retried(version: Version) -> None:
    station, _, clock = make(version, boot_retry_interval=7)
    station.on_connected()
    call = station.next_call()
    assert call is not None and call.action == "BootNotification"
    station.on_call_failed(call, "timeout")
    assert station.next_call() is None
    clock.advance(7)
    assert station.next_call().action == "BootNotification"


@pytest.mark.parametrize("version", V2)
def test_heartbeats_follow_the_interval_the_csms_returns(version: Version) -> None:
    station, csms, clock = make(version)
    csms.interval = 45
    boot(station, csms)
    run_for(station, csms, clock, 45 * 4 + 1)
    assert csms.actions().count("Heartbeat") == 4
    overridden, csms2, clock2 = make(version, heartbeat_interval=10)
    boot(overridden, csms2)
    run_for(overridden, csms2, clock2, 31)
    assert csms2.actions().count("Heartbeat") == 3


@pytest.mark.parametrize("version", V2)
def test_201_session_events(version: Version) -> None:
    station, csms, clock = make(version, meter_interval=5)
    boot(station, csms)
    transaction = station.start_session(
        1, "token_user_001", EV(capacity_wh=60_000, soc=0.5, max_power_w=150_000), authorize=True
    )
    assert transaction is not None
    run_for(station, csms, clock, 30)
    station.stop_session(1, "Local")
    drive(station, csms)
    events = csms.of("TransactionEvent")
    assert [e["eventType"] for e in events] == ["Started"] + ["Updated"] * 6 + ["Ended"]
    assert [e["seqNo"] for e in events] == list(range(8))
    assert {e["transactionInfo"]["transactionId"] for e in events} == {transaction.local_id}
    started, ended = events[0], events[-1]
    assert started["triggerReason"] == "Authorized"
    assert started["idToken"] == {"idToken": "token_user_001", "type": "ISO14443"}
    assert started["evse"] == {"id": 1, "connectorId": 1}
    assert ended["triggerReason"] == "StopAuthorized"
    assert ended["transactionInfo"]["stoppedReason"] == "Local"
    assert all(e["triggerReason"] == "MeterValuePeriodic" for e in events[1:-1])
    registers = [e["meterValue"][0]["sampledValue"][0]["value"] for e in events]
    assert registers == sorted(registers)
    # 30 s at 100 kW (the charger's rating caps the car's 150 kW) = 0.833 kWh
    assert registers[-1] - registers[0] == pytest.approx(100_000 * 30 / 3600, rel=1e-3)
    powers = [e["meterValue"][0]["sampledValue"][1]["value"] for e in events[1:-1]]
    assert powers == [100_000] * 6
    assert transaction.energy_wh == pytest.approx(registers[-1] - registers[0], abs=0.01)
    statuses = [p["connectorStatus"] for p in csms.statuses()]
    assert statuses == ["Available", "Occupied", "Available"]
    assert csms.actions().index("Authorize") < csms.actions().index("TransactionEvent")


@pytest.mark.parametrize("version", [OCPP16, *V2])
def test_late_ticks_keep_the_meter_cadence(version: Version) -> None:
    """A busy process ticks late: each periodic meter value goes out late, but the next is
    still due on the interval's grid (it does not drift by every lateness), and periods
    missed altogether are skipped rather than sent in a burst."""
    station, csms, clock = make(version, meter_interval=5, heartbeat_interval=1000)
    boot(station, csms)
    start = clock.now()
    transaction = station.start_session(1, "token_user_001", EV(60_000, soc=0.5))
    assert transaction is not None
    drive(station, csms)
    periodic = "MeterValues" if version is OCPP16 else "TransactionEvent"
    sent = len(csms.of(periodic))
    for late in (5.9, 10.9, 15.9, 20.9, 25.9):  # 0.9 s late each time
        clock.set(start + late)
        station.tick()
        drive(station, csms)
        assert transaction.next_meter_at - start == pytest.approx(late + 4.1)
    assert len(csms.of(periodic)) == sent + 5
    clock.set(start + 47.0)  # 30, 35, 40, 45 were missed: one goes out, due again at 50
    station.tick()
    drive(station, csms)
    assert len(csms.of(periodic)) == sent + 6
    assert transaction.next_meter_at - start == pytest.approx(50.0)


@pytest.mark.parametrize("version", V2)
def test_full_ev_changes_charging_state_once(version: Version) -> None:
    station, csms, clock = make(version, meter_interval=60)
    boot(station, csms)
    station.start_session(1, "t", EV(capacity_wh=10_000, soc=0.95, max_power_w=50_000))
    run_for(station, csms, clock, 3600)
    updates = [e for e in csms.of("TransactionEvent") if e["eventType"] == "Updated"]
    changes = [e for e in updates if e["triggerReason"] == "ChargingStateChanged"]
    assert len(changes) == 1
    assert changes[0]["transactionInfo"]["chargingState"] == "SuspendedEV"


@pytest.mark.parametrize("version", V2)
def test_offline_events_are_queued_marked_and_replayed_in_order(version: Version) -> None:
    station, csms, clock = make(
        version, meter_interval=10, offline_replay_rate=2, heartbeat_interval=1000
    )
    boot(station, csms)
    transaction = station.start_session(1, "t")
    run_for(station, csms, clock, 21)
    # The link drops while an Updated is on the wire.
    run_for(station, None, clock, 9)  # the next meter value comes due
    in_flight = station.next_call()
    assert in_flight is not None and in_flight.action == "TransactionEvent"
    station.on_disconnected()
    station.on_call_failed(in_flight, "disconnected")
    run_for(station, None, clock, 60)  # offline for a minute: six more meter values
    station.stop_session(1)
    assert station.queue_depth == 8
    before = len(csms.of("TransactionEvent"))

    seen = len(csms.received)
    station.on_connected()
    drive(station, csms)
    # Boot and status first; then the retried message and the first offline one at once,
    # the other offline ones paced at offline_replay_rate (2/s).
    assert csms.actions()[seen:] == [
        "BootNotification",
        STATUS_MESSAGE[version.name],
        "TransactionEvent",
        "TransactionEvent",
    ]
    run_for(station, csms, clock, 1.0)
    assert len(csms.of("TransactionEvent")[before:]) == 4
    run_for(station, csms, clock, 10)
    replayed = csms.of("TransactionEvent")[before:]
    assert len(replayed) == 8 and station.queue_depth == 0
    assert replayed[0] == in_flight.payload  # the one lost on the wire, unchanged
    assert not replayed[0].get("offline")
    assert all(e.get("offline") is True for e in replayed[1:])
    seq_nos = [e["seqNo"] for e in csms.of("TransactionEvent")]
    assert seq_nos == sorted(seq_nos) and len(set(seq_nos)) == len(seq_nos)
    assert replayed[-1]["eventType"] == "Ended"
    assert transaction.offline_messages == 7


@pytest.mark.parametrize("version", V2)
def test_transaction_messages_are_retried_then_dropped_after_call_errors(version: Version) -> None:
    dropped = []
    station, csms, _ = make(version, max_attempts=2)
    station.listener = lambda kind, detail: dropped.append(detail) if kind == "dropped" else None
    boot(station, csms)
    station.start_session(1, "t")
    first = station.next_call()
    while first.action != "TransactionEvent":
        station.on_call_result(first, csms.reply(first.action, first.payload))
        first = station.next_call()
    station.on_call_failed(first, "error", "InternalError")
    second = station.next_call()
    assert second is first and second.attempts == 2
    station.on_call_failed(second, "error", "InternalError")
    assert dropped and dropped[0]["error_code"] == "InternalError"
    assert all(call is not first for call in station._queue)


def test_16_session_uses_the_csms_transaction_id_even_when_started_offline() -> None:
    station, csms, clock = make(OCPP16, meter_interval=10)
    boot(station, csms)
    station.on_disconnected()
    station.start_session(1, "token_16")
    run_for(station, None, clock, 25)
    station.stop_session(1)
    station.on_connected()
    run_for(station, csms, clock, 30)
    start = csms.of("StartTransaction")[0]
    meter_values = csms.of("MeterValues")
    stop = csms.of("StopTransaction")[0]
    assert len(meter_values) == 2
    assert {m["transactionId"] for m in meter_values} == {1} == {stop["transactionId"]}
    assert start["idTag"] == "token_16"
    assert stop["meterStop"] >= start["meterStart"]
    assert stop["reason"] == "Local"
    statuses = [p["status"] for p in csms.statuses()]
    assert statuses[0] == "Available" and statuses[-1] == "Available"


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_remote_start_and_stop(version: Version) -> None:
    station, csms, clock = make(version)
    boot(station, csms)
    if version is OCPP16:
        reply = station.handle_csms_call(
            "RemoteStartTransaction", {"idTag": "token_user_003", "connectorId": 1}
        )
    else:
        reply = station.handle_csms_call(
            "RequestStartTransaction",
            {
                "remoteStartId": 7,
                "evseId": 1,
                "idToken": {"idToken": "token_user_003", "type": "Central"},
            },
        )
    assert reply == {"status": "Accepted"}
    drive(station, csms)
    (transaction,) = station.transactions
    busy = station.handle_csms_call(
        "RemoteStartTransaction" if version is OCPP16 else "RequestStartTransaction",
        {"idTag": "x", "connectorId": 1}
        if version is OCPP16
        else {"remoteStartId": 8, "evseId": 1, "idToken": {"idToken": "x", "type": "Central"}},
    )
    assert busy == {"status": "Rejected"}
    run_for(station, csms, clock, 10)
    stop_action = "RemoteStopTransaction" if version is OCPP16 else "RequestStopTransaction"
    tid = int(transaction.transaction_id) if version is OCPP16 else transaction.transaction_id
    assert station.handle_csms_call(stop_action, {"transactionId": tid}) == {"status": "Accepted"}
    assert station.handle_csms_call(stop_action, {"transactionId": tid}) == {"status": "Rejected"}
    drive(station, csms)
    if version is not OCPP16:
        events = csms.of("TransactionEvent")
        assert events[0]["triggerReason"] == "RemoteStart"
        assert events[0]["transactionInfo"]["remoteStartId"] == 7
        assert events[-1]["triggerReason"] == "RemoteStop"
        assert events[-1]["transactionInfo"]["stoppedReason"] == "Remote"
    else:
        assert csms.of("StopTransaction")[0]["reason"] == "Remote"


CSMS_CALLS_201 = [
    ("Reset", {"type": "Immediate"}),
    ("ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 1}}),
    ("ChangeAvailability", {"operationalStatus": "Operative"}),
    ("TriggerMessage", {"requestedMessage": "Heartbeat"}),
    ("TriggerMessage", {"requestedMessage": "StatusNotification"}),
    ("TriggerMessage", {"requestedMessage": "LogStatusNotification"}),
    (
        "GetVariables",
        {
            "getVariableData": [
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "Nope"}},
                {"component": {"name": "Nope"}, "variable": {"name": "Nope"}},
            ]
        },
    ),
    (
        "SetVariables",
        {
            "setVariableData": [
                {
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "HeartbeatInterval"},
                    "attributeValue": "120",
                },
                {
                    "component": {"name": "SecurityCtrlr"},
                    "variable": {"name": "Identity"},
                    "attributeValue": "x",
                },
            ]
        },
    ),
    ("UnlockConnector", {"evseId": 1, "connectorId": 1}),
    ("ClearCache", {}),
    ("DataTransfer", {"vendorId": "acme"}),
]
CSMS_CALLS_16 = [
    ("Reset", {"type": "Soft"}),
    ("ChangeAvailability", {"connectorId": 1, "type": "Inoperative"}),
    ("TriggerMessage", {"requestedMessage": "Heartbeat"}),
    ("GetConfiguration", {}),
    ("GetConfiguration", {"key": ["HeartbeatInterval", "Nope"]}),
    ("ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "15"}),
    ("ChangeConfiguration", {"key": "Nope", "value": "1"}),
    ("UnlockConnector", {"connectorId": 1}),
    ("ClearCache", {}),
    ("DataTransfer", {"vendorId": "acme"}),
]


@pytest.mark.parametrize(
    ("version", "action", "payload"),
    [(v, a, p) for v in V2 for a, p in CSMS_CALLS_201] + [(OCPP16, a, p) for a, p in CSMS_CALLS_16],
)
def test_csms_calls_get_valid_answers(version: Version, action: str, payload: dict) -> None:
    station, csms, _ = make(version)
    boot(station, csms)
    schemas.validate(version, action, payload)
    reply = station.handle_csms_call(action, payload)
    schemas.validate(version, action, reply, response=True)
    drive(station, csms)  # whatever it queued is valid too


@pytest.mark.parametrize("version", V2)
def test_csms_call_effects(version: Version) -> None:
    station, csms, _ = make(version)
    boot(station, csms)
    station.handle_csms_call(
        "SetVariables",
        {
            "setVariableData": [
                {
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "HeartbeatInterval"},
                    "attributeValue": "120",
                }
            ]
        },
    )
    assert station.heartbeat_interval == 120
    station.handle_csms_call("ChangeAvailability", {"operationalStatus": "Inoperative"})
    drive(station, csms)
    assert csms.statuses()[-1]["connectorStatus"] == "Unavailable"
    assert station.free_evse() is None
    station.handle_csms_call("Reset", {"type": "Immediate"})
    assert station.reset_requested == "RemoteReset"
    station.on_disconnected()
    station.on_connected()
    drive(station, csms)
    assert csms.of("BootNotification")[-1]["reason"] == "RemoteReset"


@pytest.mark.parametrize(
    ("version", "action"),
    [(OCPP201, "RemoteStartTransaction"), (OCPP21, "StartTransaction"), (OCPP16, "GetBaseReport")],
)
def test_an_action_the_version_does_not_define_is_not_implemented(
    version: Version, action: str
) -> None:
    station, _, _ = make(version)
    with pytest.raises(CallErrorReply) as raised:
        station.handle_csms_call(action, {"idTag": "x", "requestId": 1})
    assert raised.value.error_code == "NotImplemented"


@settings(max_examples=40, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from(["wait", "drop", "reconnect", "start", "stop"]),
            st.floats(min_value=0, max_value=120),
        ),
        min_size=1,
        max_size=30,
    ),
    version=st.sampled_from([OCPP201, OCPP21, OCPP16]),
)
def test_any_history_keeps_seq_nos_and_registers_in_order(plan, version: Version) -> None:
    """Whatever happens to the link, every transaction reaches the CSMS complete and in
    order: seqNo 0, 1, 2, ... (2.0.1) and registers that never go backwards."""
    station, csms, clock = make(version, meter_interval=15, offline_replay_rate=1000)
    boot(station, csms)
    for step, seconds in plan:
        if step == "wait":
            run_for(station, csms if station.online else None, clock, seconds)
        elif step == "drop" and station.online:
            call = station.next_call()
            station.on_disconnected()
            if call is not None:
                station.on_call_failed(call, "disconnected")
        elif step == "reconnect" and not station.online:
            station.on_connected()
            drive(station, csms)
        elif step == "start" and station.free_evse() is not None:
            station.start_session(1, "t")
        elif step == "stop":
            station.stop_session(1)
    station.stop_session(1)
    if not station.online:
        station.on_connected()
    run_for(station, csms, clock, 600)
    assert station.queue_depth == 0
    if version is not OCPP16:
        by_transaction: dict[str, list[dict]] = {}
        for event in csms.of("TransactionEvent"):
            by_transaction.setdefault(event["transactionInfo"]["transactionId"], []).append(event)
        assert len(by_transaction) == len(station.completed)
        for events in by_transaction.values():
            assert [e["seqNo"] for e in events] == list(range(len(events)))
            assert events[0]["eventType"] == "Started" and events[-1]["eventType"] == "Ended"
            registers = [e["meterValue"][0]["sampledValue"][0]["value"] for e in events]
            assert registers == sorted(registers)
    else:
        assert len(csms.of("StartTransaction")) == len(station.completed)
        assert len(csms.of("StopTransaction")) == len(station.completed)
        starts = [p["meterStart"] for p in csms.of("StartTransaction")]
        assert starts == sorted(starts)


@pytest.mark.parametrize(("version", "limit"), [(OCPP16, 20), (OCPP201, 36), (OCPP21, 255)])
def test_id_tokens_longer_than_the_version_allows_are_refused(version: Version, limit: int) -> None:
    station, csms, _ = make(version)
    boot(station, csms)
    with pytest.raises(ValueError, match=f"1 to {limit} characters"):
        station.start_session(1, "t" * (limit + 1))
    assert station.start_session(1, "t" * limit) is not None
    drive(station, csms)  # the longest allowed token validates


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_acknowledged_once_the_csms_has_the_whole_transaction(version: Version) -> None:
    events: list[str] = []
    station, csms, clock = make(version)
    station.listener = lambda kind, detail: events.append(kind)
    boot(station, csms)
    station.on_disconnected()
    station.start_session(1, "t")
    run_for(station, None, clock, 30)
    station.stop_session(1)
    assert "acknowledged" not in events  # offline: nothing is acknowledged yet
    station.on_connected()
    run_for(station, csms, clock, 60)
    assert events.count("acknowledged") == 1
    assert events.index("acknowledged") > events.index("stopped")


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_the_start_is_acknowledged_once_and_each_acknowledged_message_counts(
    version: Version,
) -> None:
    """What the run ledger records: the start when the CSMS answered it, and which
    transaction messages it answered (2.0.1: their seqNos, a dropped one leaving a gap)."""
    events: list[tuple[str, int]] = []
    station, csms, clock = make(version, meter_interval=10, max_attempts=1)
    station.listener = lambda kind, detail: (
        events.append((kind, detail["transaction"].acknowledged))
        if kind in ("start_acknowledged", "acknowledged")
        else None
    )
    boot(station, csms)
    transaction = station.start_session(1, "t")
    assert transaction is not None
    run_for(station, csms, clock, 25)  # start, two periodic meter values
    assert events == [("start_acknowledged", 1)]
    clock.advance(10)
    station.tick()  # a third meter value, refused by the CSMS: not acknowledged
    call = station.next_call()
    while call.action in ("StatusNotification", "NotifyEvent", "Heartbeat"):
        station.on_call_result(call, csms.reply(call.action, call.payload))
        call = station.next_call()
    assert call.action in ("TransactionEvent", "MeterValues")
    station.on_call_failed(call, "error", "InternalError")
    station.stop_session(1)
    run_for(station, csms, clock, 5)
    assert events == [("start_acknowledged", 1), ("acknowledged", 4)]
    assert transaction.messages == 5 and transaction.acknowledged == 4
    if version is not OCPP16:
        assert transaction.acknowledged_seq_nos == [(0, 2), (4, 4)]
    else:
        assert transaction.acknowledged_seq_nos == []  # 1.6 has no seqNo


# -- bug classes benchmarks/fuzz_csms.py found ----------------------------------------------


@pytest.mark.parametrize("interval", [-(2**40), 0, 2**40])
def test_a_boot_interval_out_of_range_gives_the_default_heartbeat(interval: int) -> None:
    """A negative interval had the station send Heartbeats back to back; a huge one never."""
    station, csms, _ = make()
    csms.interval = interval
    boot(station, csms)
    assert station.heartbeat_interval == 60.0


def test_a_boot_reply_that_is_no_number_fails_without_changing_the_station() -> None:
    """Without --ocpp-validate a broken reply reaches the station; it raises before it
    changes anything, so the runner can fail the CALL and the boot is retried."""
    station, _, _ = make()
    station.on_connected()
    call = station.next_call()
    assert call is not None and call.action == "BootNotification"
    with pytest.raises(ValueError):
        station.on_call_result(call, {"status": "Accepted", "interval": "soon", "currentTime": 7})
    assert not station.accepted
    station.on_call_failed(call, "error", "FormatViolation")
    assert not station.accepted and station.next_deadline() is not None


@pytest.mark.parametrize("value", ["0", "-1", "1e-9", "nan", "inf", "1e400", "9" * 20, "x"])
def test_absurd_heartbeat_intervals_are_rejected(value: str) -> None:
    """float("nan") / "inf" were accepted (then int() failed in GetVariables), "1e-9" made
    the station heartbeat as fast as it could."""
    station, csms, _ = make()
    boot(station, csms)
    data = [
        {
            "component": {"name": "OCPPCommCtrlr"},
            "variable": {"name": "HeartbeatInterval"},
            "attributeValue": value,
        }
    ]
    reply = station.handle_csms_call("SetVariables", {"setVariableData": data})
    assert reply["setVariableResult"][0]["attributeStatus"] == "Rejected"
    assert station.heartbeat_interval == 30
    get = [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]
    got = station.handle_csms_call("GetVariables", {"getVariableData": get})
    assert got["getVariableResult"][0]["attributeValue"] == "30"


@pytest.mark.parametrize("version", V2)
def test_change_availability_and_reset_of_an_evse_we_do_not_have_are_rejected(
    version: Version,
) -> None:
    """ChangeAvailability for EVSE 2**31 used to switch every EVSE; Reset of it rebooted."""
    station, csms, _ = make(version)
    boot(station, csms)
    payload = {"operationalStatus": "Inoperative", "evse": {"id": 2**31}}
    assert station.handle_csms_call("ChangeAvailability", payload) == {"status": "Rejected"}
    assert all(evse.operative for evse in station.evses.values())
    reset = station.handle_csms_call("Reset", {"type": "Immediate", "evseId": 2**31})
    assert reset == {"status": "Rejected"} and station.reset_requested is None


def _backoff_data(**values: str) -> list[dict]:
    return [
        {
            "component": {"name": "OCPPCommCtrlr"},
            "variable": {"name": name},
            "attributeValue": value,
        }
        for name, value in values.items()
    ]


@pytest.mark.parametrize("version", V2)
def test_csms_sets_and_reads_the_retry_backoff_201(version: Version) -> None:
    """OCPPCommCtrlr.RetryBackOff*: the runtime follows what the CSMS set at the next
    disconnect; absurd values are Rejected and change nothing."""
    station, csms, _ = make(version, retry_backoff=RetryBackOff(5, 30, 3))
    boot(station, csms)
    data = _backoff_data(
        RetryBackOffWaitMinimum="2", RetryBackOffRandomRange="0", RetryBackOffRepeatTimes="7"
    )
    reply = station.handle_csms_call("SetVariables", {"setVariableData": data})
    schemas.validate(version, "SetVariables", reply, response=True)
    assert [r["attributeStatus"] for r in reply["setVariableResult"]] == ["Accepted"] * 3
    assert station.retry_backoff == RetryBackOff(2, 0, 7)
    for value in ("-1", "nan", "1e400", "x"):
        data = _backoff_data(RetryBackOffWaitMinimum=value)
        reply = station.handle_csms_call("SetVariables", {"setVariableData": data})
        assert reply["setVariableResult"][0]["attributeStatus"] == "Rejected", value
    assert station.retry_backoff.wait_minimum == 2
    get = [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": name}}
        for name in (
            "RetryBackOffWaitMinimum",
            "RetryBackOffRandomRange",
            "RetryBackOffRepeatTimes",
        )
    ]
    got = station.handle_csms_call("GetVariables", {"getVariableData": get})
    assert [r["attributeValue"] for r in got["getVariableResult"]] == ["2", "0", "7"]


def test_csms_sets_the_retry_backoff_as_16_vendor_keys() -> None:
    station, csms, _ = make(OCPP16)
    boot(station, csms)
    payload = {"key": "RetryBackOffRandomRange", "value": "90"}
    assert station.handle_csms_call("ChangeConfiguration", payload) == {"status": "Accepted"}
    assert station.retry_backoff.random_range == 90
    got = station.handle_csms_call("GetConfiguration", {"key": ["RetryBackOffRandomRange"]})
    schemas.validate(OCPP16, "GetConfiguration", got, response=True)
    assert got["configurationKey"][0]["value"] == "90"


@pytest.mark.parametrize("version", V2)
def test_the_token_type_reaches_the_wire(version: Version) -> None:
    """Authorize and TransactionEvent carry the session's token type; a remote start keeps
    the type the CSMS gave."""
    station, csms, _ = make(version)
    boot(station, csms)
    station.start_session(1, "KRLGNC00000001", authorize=True, token_type="eMAID")
    drive(station, csms)
    (authorize,) = csms.of("Authorize")
    assert authorize["idToken"] == {"idToken": "KRLGNC00000001", "type": "eMAID"}
    started = csms.of("TransactionEvent")[0]
    assert started["idToken"] == {"idToken": "KRLGNC00000001", "type": "eMAID"}
    station.stop_session(1)
    drive(station, csms)
    request = {"remoteStartId": 3, "idToken": {"idToken": "app-user-7", "type": "Central"}}
    assert station.handle_csms_call("RequestStartTransaction", request) == {"status": "Accepted"}
    drive(station, csms)
    assert csms.of("TransactionEvent")[-1]["idToken"] == request["idToken"]


# -- the CSMS's verdicts on idTokens are honoured ------------------------------------------


def _verdict(version: Version, status: str) -> dict:
    return {"idTagInfo" if version is OCPP16 else "idTokenInfo": {"status": status}}


def _listen(station: Station) -> list[tuple[str, dict]]:
    events: list[tuple[str, dict]] = []
    station.listener = lambda kind, detail: events.append((kind, detail))
    return events


def _authorizations(events: list[tuple[str, dict]]) -> list[tuple[str, str]]:
    return [(d["message"], d["status"]) for kind, d in events if kind == "authorization"]


def _connector_statuses(version: Version, csms: MemoryCsms) -> list[str]:
    key = "status" if version is OCPP16 else "connectorStatus"
    return [payload[key] for payload in csms.statuses()]


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
@pytest.mark.parametrize("status", ["Invalid", "Blocked", "Expired"])
def test_a_rejected_authorize_starts_no_transaction(version: Version, status: str) -> None:
    station, csms, clock = make(version, meter_interval=10)
    events = _listen(station)
    csms.responders["Authorize"] = lambda payload: _verdict(version, status)
    boot(station, csms)
    pending = station.start_session(1, "tok_rejected", EV(), authorize=True)
    assert pending is not None and station.transactions == []  # no transaction before Accepted
    run_for(station, csms, clock, 300)
    assert csms.actions().count("Authorize") == 1
    assert not {"TransactionEvent", "StartTransaction", "MeterValues"} & set(csms.actions())
    assert pending.rejected == status and station.transactions == []
    assert _connector_statuses(version, csms)[-1] == "Available"
    assert station.free_evse() is not None  # the next driver may try
    assert _authorizations(events) == [("Authorize", status)]
    assert "started" not in [kind for kind, _ in events]
    assert station.stop_session(1) is None  # the driver leaving ends nothing


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_an_accepted_authorize_starts_the_transaction_only_then(version: Version) -> None:
    station, csms, _ = make(version)
    events = _listen(station)
    boot(station, csms)
    station.start_session(1, "tok_ok", authorize=True)
    assert station.transactions == [] and station.free_evse() is None
    drive(station, csms)
    assert len(station.transactions) == 1
    start = "StartTransaction" if version is OCPP16 else "TransactionEvent"
    assert csms.actions().index("Authorize") < csms.actions().index(start)
    assert _authorizations(events)[0] == ("Authorize", "Accepted")


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_an_authorize_without_a_verdict_starts_nothing(version: Version) -> None:
    """A CALLERROR, a timeout or a dropped link is no Accepted either."""
    station, csms, clock = make(version)
    boot(station, csms)
    station.start_session(1, "tok_err", authorize=True)
    call = station.next_call()
    while call is not None and call.action in ("StatusNotification", "NotifyEvent"):
        station.on_call_result(call, csms.reply(call.action, call.payload))
        call = station.next_call()
    assert call is not None and call.action == "Authorize"
    station.on_call_failed(call, "error", "PropertyConstraintViolation")
    run_for(station, csms, clock, 120)
    assert station.transactions == [] and station.free_evse() is not None
    station.start_session(1, "tok_err", authorize=True)
    station.on_disconnected()  # the queued Authorize goes with the link
    assert station.free_evse() is not None and station.queue_depth == 0


@pytest.mark.parametrize("version", V2)
@pytest.mark.parametrize("remote", [False, True])
def test_201_a_transaction_event_with_a_rejected_token_ends_the_transaction(
    version: Version, remote: bool
) -> None:
    station, csms, clock = make(version, meter_interval=10)
    events = _listen(station)
    csms.responders["TransactionEvent"] = lambda payload: (
        {"idTokenInfo": {"status": "Blocked"}} if "idToken" in payload else {}
    )
    boot(station, csms)
    if remote:
        token = {"idToken": "tok_remote", "type": "Central"}
        reply = station.handle_csms_call(
            "RequestStartTransaction", {"remoteStartId": 3, "evseId": 1, "idToken": token}
        )
        assert reply == {"status": "Accepted"}
    else:
        station.start_session(1, "tok_blocked")
    run_for(station, csms, clock, 600)
    events_sent = csms.of("TransactionEvent")
    assert [e["eventType"] for e in events_sent] == ["Started", "Ended"]
    ended = events_sent[-1]
    assert ended["triggerReason"] == "Deauthorized"
    assert ended["transactionInfo"]["stoppedReason"] == "DeAuthorized"
    assert _connector_statuses(version, csms)[-1] == "Available"
    assert station.transactions == [] and station.completed[0].rejected == "Blocked"
    assert _authorizations(events) == [("TransactionEvent", "Blocked")]
    # the CSMS has the whole (short) transaction: the run ledger gets both ends
    kinds = [kind for kind, _ in events]
    assert kinds.count("start_acknowledged") == 1 and kinds.count("acknowledged") == 1


@pytest.mark.parametrize("version", V2)
def test_201_a_token_withdrawn_in_an_updated_answer_ends_the_transaction(version: Version) -> None:
    """A CSMS may answer any TransactionEvent with idTokenInfo: accepted at the start, the
    token blocked later (an Updated event's answer) ends the transaction there."""
    station, csms, clock = make(version, meter_interval=10)
    events = _listen(station)
    csms.responders["TransactionEvent"] = lambda payload: (
        {"idTokenInfo": {"status": "Blocked" if payload["seqNo"] >= 3 else "Accepted"}}
        if payload["eventType"] != "Ended"
        else {}
    )
    boot(station, csms)
    station.start_session(1, "tok_later_blocked")
    run_for(station, csms, clock, 600)
    sent = csms.of("TransactionEvent")
    assert [(e["eventType"], e["seqNo"]) for e in sent] == [
        ("Started", 0), ("Updated", 1), ("Updated", 2), ("Updated", 3), ("Ended", 4)
    ]  # fmt: skip
    assert sent[-1]["triggerReason"] == "Deauthorized"
    assert sent[-1]["transactionInfo"]["stoppedReason"] == "DeAuthorized"
    assert station.transactions == [] and station.completed[0].rejected == "Blocked"
    assert _authorizations(events)[-1] == ("TransactionEvent", "Blocked")
    assert _connector_statuses(version, csms)[-1] == "Available"


@pytest.mark.parametrize("remote", [False, True])
def test_16_a_start_transaction_with_a_rejected_id_tag_stops_deauthorized(remote: bool) -> None:
    station, csms, clock = make(OCPP16, meter_interval=10)
    events = _listen(station)
    csms.responders["StartTransaction"] = lambda payload: {
        "transactionId": 41,
        "idTagInfo": {"status": "Invalid"},
    }
    boot(station, csms)
    if remote:
        reply = station.handle_csms_call(
            "RemoteStartTransaction", {"idTag": "tok_remote", "connectorId": 1}
        )
        assert reply == {"status": "Accepted"}
    else:
        station.start_session(1, "tok_invalid")
    run_for(station, csms, clock, 600)
    (stop,) = csms.of("StopTransaction")
    assert stop["transactionId"] == 41 and stop["reason"] == "DeAuthorized"
    assert "MeterValues" not in csms.actions()
    assert _connector_statuses(OCPP16, csms)[-1] == "Available"
    assert _authorizations(events) == [("StartTransaction", "Invalid")]


@pytest.mark.parametrize(("transaction_id", "status"), [(0, "Invalid"), (-5, "Accepted")])
@pytest.mark.parametrize("offline", [False, True])
def test_16_a_transaction_id_the_csms_did_not_assign_is_never_used(
    transaction_id: int, status: str, offline: bool
) -> None:
    station, csms, clock = make(OCPP16, meter_interval=10)
    events = _listen(station)
    csms.responders["StartTransaction"] = lambda payload: {
        "transactionId": transaction_id,
        "idTagInfo": {"status": status},
    }
    boot(station, csms)
    if offline:  # started, metered and stopped before the StartTransaction got through
        station.on_disconnected()
        station.start_session(1, "tok_zero")
        run_for(station, None, clock, 35)
        station.stop_session(1)
        station.on_connected()
    else:
        station.start_session(1, "tok_zero")
    run_for(station, csms, clock, 600)
    assert csms.actions().count("StartTransaction") == 1
    assert not {"MeterValues", "StopTransaction"} & set(csms.actions())
    assert station.transactions == [] and station.settled
    assert _connector_statuses(OCPP16, csms)[-1] == "Available"
    kinds = [kind for kind, _ in events]
    # nothing for the run ledger: the CSMS holds no such transaction to reconcile with
    assert "start_acknowledged" not in kinds and "acknowledged" not in kinds
    assert kinds.count("rejected") == 1
    (rejected,) = [d for kind, d in events if kind == "rejected"]
    expected = status if status != "Accepted" else NO_TRANSACTION_ID
    assert rejected["status"] == expected
    # one verdict, and no acceptance: an Accepted without an id is counted as what it is
    assert _authorizations(events) == [("StartTransaction", expected)]


# -- timestamps are wall-clock time ----------------------------------------------------------


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_timestamps_are_wall_clock_time_whatever_the_time_scale(version: Version) -> None:
    from loadgen.protocols import iso_timestamp, parse_timestamp

    clock = FakeClock(start=1_780_000_000.0)
    wall = SlowWallClock(clock, 10.0, start=1_700_000_000.0)
    station = Station(CHARGER, version, clock, StationConfig(meter_interval=60), wall_clock=wall)
    csms = MemoryCsms(version)
    boot(station, csms)
    station.start_session(1, "tok_wall", EV(capacity_wh=200_000, soc=0.1, max_power_w=50_000))
    run_for(station, csms, clock, 1200)  # 20 simulated minutes online
    station.on_disconnected()
    run_for(station, None, clock, 1200)  # 20 offline: meter values queued
    offline_until = wall.now()
    station.on_connected()
    run_for(station, csms, clock, 1200)
    station.stop_session(1)
    drive(station, csms)
    stamps = [t for _, p in csms.received for t in station_times(p)]
    assert stamps and max(stamps) <= wall.now() + 1e-3  # never in the future
    assert min(stamps) >= 1_700_000_000.0
    # an hour simulated is 6 minutes on the wall...
    assert max(stamps) - min(stamps) == pytest.approx(3600 / 10, abs=1)
    # ...with the energy of that hour: 50 kW for 1 h
    transaction = station.completed[0]
    assert transaction.energy_wh == pytest.approx(50_000, rel=0.01)
    assert transaction.started_stamp == pytest.approx(1_700_000_000.0)
    assert transaction.ended_stamp == pytest.approx(wall.now())
    # the queued messages keep the (wall) time they happened, not the time they were sent
    offline = [p for a, p in csms.received if p.get("offline")] if version is not OCPP16 else []
    for payload in offline:
        assert parse_timestamp(payload["timestamp"]).timestamp() <= offline_until
    if version is not OCPP16:  # 20 minutes offline, a reading a minute, 2 wall minutes
        assert len(offline) == 20
        first = parse_timestamp(offline[0]["timestamp"]).timestamp()
        assert offline_until - first == pytest.approx(1140 / 10, abs=1)
    assert iso_timestamp(min(stamps)).startswith("2023-11-14")  # not the simulated 2026


def test_a_scaled_clock_stamps_real_time() -> None:
    import time

    from loadgen.physics import ScaledClock

    clock = ScaledClock(1000.0)
    station = Station(CHARGER, OCPP201, clock)
    time.sleep(0.05)  # 50 simulated seconds
    assert clock.now() - time.time() > 40
    assert abs(station.wall_clock.now() - time.time()) < 1


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_a_verdict_that_comes_after_the_driver_left_starts_nothing(version: Version) -> None:
    """Stopping (the user's stop, a Reset) while Authorize is on the wire: the late Accepted
    must not start a transaction nobody would end."""
    station, csms, _ = make(version)
    boot(station, csms)
    station.start_session(1, "tok_late", authorize=True)
    call = station.next_call()
    while call is not None and call.action != "Authorize":
        station.on_call_result(call, csms.reply(call.action, call.payload))
        call = station.next_call()
    assert call is not None
    station.stop_session(1)  # what StationRunner.stop does for every EVSE
    station.on_call_result(call, csms.reply(call.action, call.payload))
    drive(station, csms)
    assert station.transactions == [] and station.free_evse() is not None
    assert not {"TransactionEvent", "StartTransaction"} & set(csms.actions())


@pytest.mark.parametrize("version", [*V2, OCPP16])
def test_a_station_winding_down_sends_only_what_ends_its_transaction(version: Version) -> None:
    """The load test is stopping: no heartbeats, meter values or new sessions from then on,
    but the running transaction still ends at the CSMS (the summary counts it all)."""
    station, csms, clock = make(version, heartbeat_interval=10, meter_interval=30)
    boot(station, csms)
    assert station.start_session(1, "token_user_001") is not None
    run_for(station, csms, clock, 32)
    assert {"Heartbeat", "MeterValues" if version is OCPP16 else "TransactionEvent"} <= set(
        csms.actions()
    )
    clock.advance(8)  # 40 s: a heartbeat is due (the next meter value at 60 s) ...
    station.tick()
    station.wind_down()  # ... and the stop begins before it went out: it never does
    before = len(csms.actions())
    run_for(station, csms, clock, 120)
    assert csms.actions()[before:] == []  # nothing periodic, not even what was queued
    assert station.next_deadline() is None  # nothing left to wake up for
    station.stop_session(1, "Local")
    drive(station, csms)
    after = csms.actions()[before:]
    if version is OCPP16:
        assert after == ["StopTransaction", "StatusNotification", "StatusNotification"]
    else:
        assert after == ["TransactionEvent", STATUS_MESSAGE[version.name]]
        assert csms.of("TransactionEvent")[-1]["eventType"] == "Ended"
    assert station.start_session(1, "token_user_002") is None  # free now, still no session
    assert station.settled
