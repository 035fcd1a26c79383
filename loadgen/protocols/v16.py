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

VERSION = OCPP16


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


def remote_start_transaction(id_tag: str, connector_id: int | None = None) -> Request:
    return "RemoteStartTransaction", compact({"idTag": id_tag, "connectorId": connector_id})


def remote_stop_transaction(transaction_id: int) -> Request:
    return "RemoteStopTransaction", {"transactionId": transaction_id}
