"""OCPP 2.0.1 message builders.

Each builder returns ``(action, payload)`` with a payload that validates against the
``ocpp`` package's 2.0.1 schemas; optional fields are left out when ``None``. Station →
CSMS requests first, then the CSMS → station requests ``csms_stub`` sends.
"""

from __future__ import annotations

from typing import Any

from loadgen.protocols import (
    ENERGY_REGISTER,
    OCPP201,
    POWER,
    SOC,
    Request,
    compact,
    timestamp_text,
)
from loadgen.smart_charging import ChargingProfile, Period, parse_time

VERSION = OCPP201
#: IdTokenType.idToken is string[36] in 2.0.1
ID_TOKEN_MAX_LENGTH = 36


def boot_notification(
    vendor: str,
    model: str,
    serial_number: str | None = None,
    firmware_version: str | None = None,
    reason: str = "PowerUp",
) -> Request:
    station = compact(
        {
            "vendorName": vendor,
            "model": model,
            "serialNumber": serial_number,
            "firmwareVersion": firmware_version,
        }
    )
    return "BootNotification", {"chargingStation": station, "reason": reason}


def heartbeat() -> Request:
    return "Heartbeat", {}


def status_notification(
    evse_id: int, connector_id: int, status: str, timestamp: float | str
) -> Request:
    return "StatusNotification", {
        "timestamp": timestamp_text(timestamp),
        "connectorStatus": status,
        "evseId": evse_id,
        "connectorId": connector_id,
    }


def id_token(token: str, token_type: str = "ISO14443") -> dict[str, str]:
    return {"idToken": token, "type": token_type}


def authorize(token: str, token_type: str = "ISO14443") -> Request:
    return "Authorize", {"idToken": id_token(token, token_type)}


def sampled_values(
    energy_wh: float | None = None,
    power_w: float | None = None,
    soc_percent: float | None = None,
    context: str | None = None,
) -> list[dict[str, Any]]:
    """The sampledValue list for one meter reading: register (Wh), power (W), SoC (%)."""
    values = []
    for value, measurand, unit in (
        (energy_wh, ENERGY_REGISTER, "Wh"),
        (power_w, POWER, "W"),
        (soc_percent, SOC, "Percent"),
    ):
        if value is not None:
            sample: dict[str, Any] = {
                "value": round(float(value), 3),
                "measurand": measurand,
                "unitOfMeasure": {"unit": unit},
            }
            if context:
                sample["context"] = context
            values.append(sample)
    return values


def meter_value(timestamp: float | str, sampled: list[dict[str, Any]]) -> dict[str, Any]:
    return {"timestamp": timestamp_text(timestamp), "sampledValue": sampled}


def transaction_event(
    event_type: str,
    transaction_id: str,
    seq_no: int,
    timestamp: float | str,
    trigger_reason: str,
    *,
    charging_state: str | None = None,
    stopped_reason: str | None = None,
    remote_start_id: int | None = None,
    reservation_id: int | None = None,
    evse_id: int | None = None,
    connector_id: int | None = None,
    token: dict[str, str] | None = None,
    meter_values: list[dict[str, Any]] | None = None,
    offline: bool = False,
) -> Request:
    transaction_info = compact(
        {
            "transactionId": transaction_id,
            "chargingState": charging_state,
            "stoppedReason": stopped_reason,
            "remoteStartId": remote_start_id,
        }
    )
    payload: dict[str, Any] = {
        "eventType": event_type,
        "timestamp": timestamp_text(timestamp),
        "triggerReason": trigger_reason,
        "seqNo": seq_no,
        "transactionInfo": transaction_info,
    }
    if offline:
        payload["offline"] = True
    if evse_id is not None:
        evse: dict[str, int] = {"id": evse_id}
        if connector_id is not None:
            evse["connectorId"] = connector_id
        payload["evse"] = evse
    if token is not None:
        payload["idToken"] = token
    if reservation_id is not None:
        payload["reservationId"] = reservation_id
    if meter_values:
        payload["meterValue"] = meter_values
    return "TransactionEvent", payload


def meter_values(evse_id: int, values: list[dict[str, Any]]) -> Request:
    return "MeterValues", {"evseId": evse_id, "meterValue": values}


def notify_event(
    seq_no: int, timestamp: float | str, events: list[dict[str, Any]], tbc: bool = False
) -> Request:
    payload: dict[str, Any] = {
        "generatedAt": timestamp_text(timestamp),
        "seqNo": seq_no,
        "eventData": events,
    }
    if tbc:
        payload["tbc"] = True
    return "NotifyEvent", payload


def availability_event(
    event_id: int, timestamp: float | str, evse_id: int, connector_id: int, status: str
) -> dict[str, Any]:
    """An EventDataType reporting a connector's AvailabilityState: what NotifyEvent carries
    instead of a StatusNotification (2.0.1's alternative, 2.1's way: use case G01)."""
    return {
        "eventId": event_id,
        "timestamp": timestamp_text(timestamp),
        "trigger": "Delta",
        "actualValue": status,
        "eventNotificationType": "HardWiredNotification",
        "component": {"name": "Connector", "evse": {"id": evse_id, "connectorId": connector_id}},
        "variable": {"name": "AvailabilityState"},
    }


#: ConnectorStatusEnumType: the AvailabilityState values that are a connector status
CONNECTOR_STATUSES = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")


def availability_states(payload: dict[str, Any]) -> list[tuple[int, int, str, str]]:
    """What a NotifyEvent says about connector status, as a CSMS reads it: (evseId,
    connectorId, status, timestamp) of each Connector AvailabilityState event whose value
    is a connector status; the other events say nothing about it."""
    states = []
    for event in payload.get("eventData") or ():
        component = event.get("component") or {}
        evse = component.get("evse") or {}
        if (
            component.get("name") == "Connector"
            and (event.get("variable") or {}).get("name") == "AvailabilityState"
            and event.get("actualValue") in CONNECTOR_STATUSES
            and isinstance(evse.get("id"), int)
            and isinstance(evse.get("connectorId"), int)
        ):
            states.append(
                (evse["id"], evse["connectorId"], event["actualValue"], event["timestamp"])
            )
    return states


def _report_part(
    request_id: int,
    seq_no: int,
    timestamp: float | str,
    key: str,
    items: list[dict[str, Any]] | None,
    tbc: bool,
) -> dict[str, Any]:
    """One part of a multi-part report (NotifyReport, NotifyMonitoringReport): seqNo from
    0, ``tbc`` on every part but the last, no empty item list."""
    payload: dict[str, Any] = {
        "requestId": request_id,
        "generatedAt": timestamp_text(timestamp),
        "seqNo": seq_no,
    }
    if items:
        payload[key] = items
    if tbc:
        payload["tbc"] = True
    return payload


def notify_report(
    request_id: int,
    seq_no: int,
    timestamp: float | str,
    report_data: list[dict[str, Any]] | None = None,
    tbc: bool = False,
) -> Request:
    return "NotifyReport", _report_part(
        request_id, seq_no, timestamp, "reportData", report_data, tbc
    )


def security_event_notification(
    event_type: str, timestamp: float | str, tech_info: str | None = None
) -> Request:
    return "SecurityEventNotification", compact(
        {"type": event_type, "timestamp": timestamp_text(timestamp), "techInfo": tech_info}
    )


def firmware_status_notification(status: str, request_id: int | None = None) -> Request:
    return "FirmwareStatusNotification", compact({"status": status, "requestId": request_id})


def log_status_notification(status: str, request_id: int | None = None) -> Request:
    return "LogStatusNotification", compact({"status": status, "requestId": request_id})


def reservation_status_update(reservation_id: int, status: str) -> Request:
    return "ReservationStatusUpdate", {
        "reservationId": reservation_id,
        "reservationUpdateStatus": status,
    }


def notify_monitoring_report(
    request_id: int,
    seq_no: int,
    timestamp: float | str,
    monitor: list[dict[str, Any]] | None = None,
    tbc: bool = False,
) -> Request:
    part = _report_part(request_id, seq_no, timestamp, "monitor", monitor, tbc)
    return "NotifyMonitoringReport", part


def notify_display_messages(
    request_id: int, message_info: list[dict[str, Any]] | None = None, tbc: bool = False
) -> Request:
    payload: dict[str, Any] = {"requestId": request_id}
    if message_info:
        payload["messageInfo"] = message_info
    if tbc:
        payload["tbc"] = True
    return "NotifyDisplayMessages", payload


def notify_customer_information(
    request_id: int, seq_no: int, timestamp: float | str, data: str, tbc: bool = False
) -> Request:
    payload: dict[str, Any] = {
        "data": data,
        "seqNo": seq_no,
        "generatedAt": timestamp_text(timestamp),
        "requestId": request_id,
    }
    if tbc:
        payload["tbc"] = True
    return "NotifyCustomerInformation", payload


def data_transfer(vendor_id: str, message_id: str | None = None, data: Any = None) -> Request:
    return "DataTransfer", compact({"vendorId": vendor_id, "messageId": message_id, "data": data})


# CSMS -> station


def request_start_transaction(
    remote_start_id: int,
    token: dict[str, str],
    evse_id: int | None = None,
    charging_profile: dict[str, Any] | None = None,
) -> Request:
    return "RequestStartTransaction", compact(
        {
            "remoteStartId": remote_start_id,
            "idToken": token,
            "evseId": evse_id,
            "chargingProfile": charging_profile,
        }
    )


def request_stop_transaction(transaction_id: str) -> Request:
    return "RequestStopTransaction", {"transactionId": transaction_id}


# Smart charging (K01-K10): CSMS -> station requests, the station's report, and parsing.


def charging_profile(
    profile_id: int,
    stack_level: int,
    purpose: str,
    periods: list[tuple[int, float]],
    *,
    kind: str = "Absolute",
    rate_unit: str = "W",
    start_schedule: float | str | None = None,
    duration: int | None = None,
    recurrency: str | None = None,
    valid_from: float | str | None = None,
    valid_to: float | str | None = None,
    transaction_id: str | None = None,
    schedule_id: int | None = None,
) -> dict[str, Any]:
    """A ChargingProfileType; ``periods`` are ``(startPeriod, limit)`` pairs."""
    schedule = compact(
        {
            "id": profile_id if schedule_id is None else schedule_id,
            "startSchedule": None if start_schedule is None else timestamp_text(start_schedule),
            "duration": duration,
            "chargingRateUnit": rate_unit,
            "chargingSchedulePeriod": [
                {"startPeriod": start, "limit": limit} for start, limit in periods
            ],
        }
    )
    return compact(
        {
            "id": profile_id,
            "stackLevel": stack_level,
            "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind,
            "recurrencyKind": recurrency,
            "validFrom": None if valid_from is None else timestamp_text(valid_from),
            "validTo": None if valid_to is None else timestamp_text(valid_to),
            "transactionId": transaction_id,
            "chargingSchedule": [schedule],
        }
    )


def charging_profile_from(profile: dict[str, Any], evse_id: int) -> ChargingProfile:
    """A schema-valid ChargingProfileType as the station holds it (its first schedule);
    raises :class:`~loadgen.smart_charging.ProfileRejected` for a bad dateTime."""
    schedule = profile["chargingSchedule"][0]
    return ChargingProfile(
        id=profile["id"],
        stack_level=profile["stackLevel"],
        purpose=profile["chargingProfilePurpose"],
        kind=profile["chargingProfileKind"],
        rate_unit=schedule["chargingRateUnit"],
        periods=[
            Period(p["startPeriod"], float(p["limit"]), p.get("numberPhases"))
            for p in schedule["chargingSchedulePeriod"]
        ],
        evse_id=evse_id,
        recurrency=profile.get("recurrencyKind"),
        valid_from=parse_time(profile.get("validFrom")),
        valid_to=parse_time(profile.get("validTo")),
        start_schedule=parse_time(schedule.get("startSchedule")),
        duration=schedule.get("duration"),
        transaction_id=profile.get("transactionId"),
        raw=profile,
    )


def set_charging_profile(evse_id: int, profile: dict[str, Any]) -> Request:
    return "SetChargingProfile", {"evseId": evse_id, "chargingProfile": profile}


def get_charging_profiles(
    request_id: int,
    evse_id: int | None = None,
    purpose: str | None = None,
    stack_level: int | None = None,
    profile_ids: list[int] | None = None,
) -> Request:
    criterion = compact(
        {
            "chargingProfilePurpose": purpose,
            "stackLevel": stack_level,
            "chargingProfileId": profile_ids,
        }
    )
    return "GetChargingProfiles", compact(
        {"requestId": request_id, "evseId": evse_id, "chargingProfile": criterion}
    )


def clear_charging_profile(
    profile_id: int | None = None,
    evse_id: int | None = None,
    purpose: str | None = None,
    stack_level: int | None = None,
) -> Request:
    criteria = compact(
        {"evseId": evse_id, "chargingProfilePurpose": purpose, "stackLevel": stack_level}
    )
    return "ClearChargingProfile", compact(
        {"chargingProfileId": profile_id, "chargingProfileCriteria": criteria or None}
    )


def get_composite_schedule(duration: int, evse_id: int, rate_unit: str | None = None) -> Request:
    return "GetCompositeSchedule", compact(
        {"duration": duration, "evseId": evse_id, "chargingRateUnit": rate_unit}
    )


def report_charging_profiles(
    request_id: int,
    evse_id: int,
    profiles: list[dict[str, Any]],
    source: str = "CSO",
    tbc: bool = False,
) -> Request:
    payload: dict[str, Any] = {
        "requestId": request_id,
        "chargingLimitSource": source,
        "evseId": evse_id,
        "chargingProfile": profiles,
    }
    if tbc:
        payload["tbc"] = True
    return "ReportChargingProfiles", payload


def composite_schedule(
    evse_id: int,
    duration: int,
    start: float | str,
    rate_unit: str,
    periods: list[tuple[int, float]],
) -> dict[str, Any]:
    """A CompositeScheduleType; ``periods`` are ``(startPeriod, limit)`` in ``rate_unit``."""
    return {
        "evseId": evse_id,
        "duration": duration,
        "scheduleStart": timestamp_text(start),
        "chargingRateUnit": rate_unit,
        "chargingSchedulePeriod": [
            {"startPeriod": offset, "limit": limit} for offset, limit in periods
        ],
    }
