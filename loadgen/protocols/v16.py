"""OCPP 1.6 message builders.

Each builder returns ``(action, payload)`` valid against the ``ocpp`` package's 1.6 schemas.
In 1.6 the CSMS assigns the (integer) transaction id in the StartTransaction reply and
energy travels as ``meterStart`` / ``meterStop`` (Wh) plus MeterValues.
"""

from __future__ import annotations

from typing import Any

from loadgen.protocols import (
    ENERGY_REGISTER,
    OCPP16,
    POWER,
    SOC,
    Request,
    compact,
    timestamp_text,
)
from loadgen.smart_charging import STATION_MAX, ChargingProfile, Period, parse_time

VERSION = OCPP16
#: idTag is CiString20 in 1.6
ID_TOKEN_MAX_LENGTH = 20


def boot_notification(
    vendor: str,
    model: str,
    serial_number: str | None = None,
    firmware_version: str | None = None,
) -> Request:
    return "BootNotification", compact(
        {
            "chargePointVendor": vendor,
            "chargePointModel": model,
            "chargePointSerialNumber": serial_number,
            "firmwareVersion": firmware_version,
        }
    )


def heartbeat() -> Request:
    return "Heartbeat", {}


def status_notification(
    connector_id: int,
    status: str,
    timestamp: float | str | None = None,
    error_code: str = "NoError",
) -> Request:
    return "StatusNotification", compact(
        {
            "connectorId": connector_id,
            "errorCode": error_code,
            "status": status,
            "timestamp": None if timestamp is None else timestamp_text(timestamp),
        }
    )


def authorize(id_tag: str) -> Request:
    return "Authorize", {"idTag": id_tag}


def start_transaction(
    connector_id: int,
    id_tag: str,
    meter_start_wh: int,
    timestamp: float | str,
    reservation_id: int | None = None,
) -> Request:
    return "StartTransaction", compact(
        {
            "connectorId": connector_id,
            "idTag": id_tag,
            "meterStart": int(meter_start_wh),
            "timestamp": timestamp_text(timestamp),
            "reservationId": reservation_id,
        }
    )


def sampled_values(
    energy_wh: float | None = None,
    power_w: float | None = None,
    soc_percent: float | None = None,
    context: str | None = None,
) -> list[dict[str, Any]]:
    """The sampledValue list for one reading; 1.6 carries values as strings."""
    values = []
    for value, measurand, unit in (
        (energy_wh, ENERGY_REGISTER, "Wh"),
        (power_w, POWER, "W"),
        (soc_percent, SOC, "Percent"),
    ):
        if value is not None:
            sample = {"value": f"{float(value):.3f}", "measurand": measurand, "unit": unit}
            if context:
                sample["context"] = context
            values.append(sample)
    return values


def meter_value(timestamp: float | str, sampled: list[dict[str, Any]]) -> dict[str, Any]:
    return {"timestamp": timestamp_text(timestamp), "sampledValue": sampled}


def meter_values(
    connector_id: int, values: list[dict[str, Any]], transaction_id: int | None = None
) -> Request:
    return "MeterValues", compact(
        {"connectorId": connector_id, "transactionId": transaction_id, "meterValue": values}
    )


def stop_transaction(
    transaction_id: int,
    meter_stop_wh: int,
    timestamp: float | str,
    reason: str | None = None,
    id_tag: str | None = None,
    transaction_data: list[dict[str, Any]] | None = None,
) -> Request:
    return "StopTransaction", compact(
        {
            "transactionId": transaction_id,
            "meterStop": int(meter_stop_wh),
            "timestamp": timestamp_text(timestamp),
            "reason": reason,
            "idTag": id_tag,
            "transactionData": transaction_data,
        }
    )


def firmware_status_notification(status: str) -> Request:
    return "FirmwareStatusNotification", {"status": status}


def diagnostics_status_notification(status: str) -> Request:
    return "DiagnosticsStatusNotification", {"status": status}


# The security extension's (OCPP 1.6 Security Whitepaper) notifications.


def signed_firmware_status_notification(status: str, request_id: int | None = None) -> Request:
    return "SignedFirmwareStatusNotification", compact({"status": status, "requestId": request_id})


def log_status_notification(status: str, request_id: int | None = None) -> Request:
    return "LogStatusNotification", compact({"status": status, "requestId": request_id})


def data_transfer(
    vendor_id: str, message_id: str | None = None, data: str | None = None
) -> Request:
    return "DataTransfer", compact({"vendorId": vendor_id, "messageId": message_id, "data": data})


# CSMS -> charge point


def remote_start_transaction(
    id_tag: str, connector_id: int | None = None, charging_profile: dict[str, Any] | None = None
) -> Request:
    return "RemoteStartTransaction", compact(
        {"idTag": id_tag, "connectorId": connector_id, "chargingProfile": charging_profile}
    )


def remote_stop_transaction(transaction_id: int) -> Request:
    return "RemoteStopTransaction", {"transactionId": transaction_id}


# Smart charging (1.6 §3.13): CSMS -> charge point requests and parsing. 1.6 calls the
# station-wide profile ChargePointMaxProfile; the station holds it as 2.0.1's
# ChargingStationMaxProfile.

_PURPOSE_16 = {"ChargePointMaxProfile": STATION_MAX}
_PURPOSE_FROM_201 = {value: key for key, value in _PURPOSE_16.items()}


def purpose_from_16(purpose: str) -> str:
    """A 1.6 chargingProfilePurpose in 2.0.1's words."""
    return _PURPOSE_16.get(purpose, purpose)


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
    transaction_id: int | None = None,
) -> dict[str, Any]:
    """A csChargingProfiles object; ``periods`` are ``(startPeriod, limit)`` pairs (1.6
    limits are multiples of 0.1)."""
    schedule = compact(
        {
            "duration": duration,
            "startSchedule": None if start_schedule is None else timestamp_text(start_schedule),
            "chargingRateUnit": rate_unit,
            "chargingSchedulePeriod": [
                {"startPeriod": start, "limit": round(limit, 1)} for start, limit in periods
            ],
        }
    )
    return compact(
        {
            "chargingProfileId": profile_id,
            "transactionId": transaction_id,
            "stackLevel": stack_level,
            "chargingProfilePurpose": _PURPOSE_FROM_201.get(purpose, purpose),
            "chargingProfileKind": kind,
            "recurrencyKind": recurrency,
            "validFrom": None if valid_from is None else timestamp_text(valid_from),
            "validTo": None if valid_to is None else timestamp_text(valid_to),
            "chargingSchedule": schedule,
        }
    )


def charging_profile_from(profile: dict[str, Any], connector_id: int) -> ChargingProfile:
    """A schema-valid csChargingProfiles as the station holds it; raises
    :class:`~loadgen.smart_charging.ProfileRejected` for a bad dateTime."""
    schedule = profile["chargingSchedule"]
    transaction_id = profile.get("transactionId")
    return ChargingProfile(
        id=profile["chargingProfileId"],
        stack_level=profile["stackLevel"],
        purpose=purpose_from_16(profile["chargingProfilePurpose"]),
        kind=profile["chargingProfileKind"],
        rate_unit=schedule["chargingRateUnit"],
        periods=[
            Period(p["startPeriod"], float(p["limit"]), p.get("numberPhases"))
            for p in schedule["chargingSchedulePeriod"]
        ],
        evse_id=connector_id,
        recurrency=profile.get("recurrencyKind"),
        valid_from=parse_time(profile.get("validFrom")),
        valid_to=parse_time(profile.get("validTo")),
        start_schedule=parse_time(schedule.get("startSchedule")),
        duration=schedule.get("duration"),
        transaction_id=None if transaction_id is None else str(transaction_id),
        raw=profile,
    )


def set_charging_profile(connector_id: int, profile: dict[str, Any]) -> Request:
    return "SetChargingProfile", {"connectorId": connector_id, "csChargingProfiles": profile}


def clear_charging_profile(
    profile_id: int | None = None,
    connector_id: int | None = None,
    purpose: str | None = None,
    stack_level: int | None = None,
) -> Request:
    return "ClearChargingProfile", compact(
        {
            "id": profile_id,
            "connectorId": connector_id,
            "chargingProfilePurpose": _PURPOSE_FROM_201.get(purpose or "", purpose),
            "stackLevel": stack_level,
        }
    )


def get_composite_schedule(
    connector_id: int, duration: int, rate_unit: str | None = None
) -> Request:
    return "GetCompositeSchedule", compact(
        {"connectorId": connector_id, "duration": duration, "chargingRateUnit": rate_unit}
    )


def composite_schedule(
    connector_id: int,
    duration: int,
    start: float | str,
    rate_unit: str,
    periods: list[tuple[int, float]],
) -> dict[str, Any]:
    """An Accepted GetCompositeSchedule reply; ``periods`` are ``(startPeriod, limit)``."""
    return {
        "status": "Accepted",
        "connectorId": connector_id,
        "scheduleStart": timestamp_text(start),
        "chargingSchedule": {
            "duration": duration,
            "startSchedule": timestamp_text(start),
            "chargingRateUnit": rate_unit,
            "chargingSchedulePeriod": [
                {"startPeriod": offset, "limit": round(limit, 1)} for offset, limit in periods
            ],
        },
    }
