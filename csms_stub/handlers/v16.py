"""OCPP 1.6 handlers: the CSMS assigns integer transaction ids."""

from __future__ import annotations

from typing import Any

from csms_stub.handlers.v201 import answer, logged
from csms_stub.service import (
    MeterReading,
    Service,
    readings_from_meter_values,
    storable_timestamp,
    utcnow,
)
from loadgen.protocols import iso_timestamp


def boot_notification(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    identity = {
        "vendor": payload["chargePointVendor"],
        "model": payload["chargePointModel"],
        "serial_number": payload.get("chargePointSerialNumber"),
        "firmware_version": payload.get("firmwareVersion"),
    }
    status = service.boot(charger_id, identity, None)
    return {
        "currentTime": iso_timestamp(utcnow()),
        "interval": service.heartbeat_interval,
        "status": status,
    }


def heartbeat(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"currentTime": iso_timestamp(service.heartbeat(charger_id))}


def status_notification(
    service: Service, charger_id: str, payload: dict[str, Any]
) -> dict[str, Any]:
    # 1.6 connector 0 is the charge point itself; model each connector as EVSE n, connector 1.
    connector = payload["connectorId"]
    service.connector_status(
        charger_id,
        connector,
        1 if connector else 0,
        payload["status"],
        {"error_code": payload["errorCode"]},
    )
    return {}


def authorize(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"idTagInfo": {"status": service.authorize(payload["idTag"])}}


def start_transaction(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    timestamp = storable_timestamp(payload["timestamp"])
    # judged before anything is stored: a malformed idTag (--strict-id-tokens) stores nothing
    status = service.authorize(payload["idTag"])
    transaction_id = service.new_transaction_id_16()
    service.transaction_event(
        charger_id,
        transaction_id,
        event_type="Started",
        seq_no=None,
        timestamp=timestamp,
        trigger_reason="Authorized",
        evse_id=payload["connectorId"],
        connector_id=1,
        id_token=payload["idTag"],
        charging_state="Charging",
        readings=[MeterReading(timestamp, energy_wh=float(payload["meterStart"]))],
    )
    return {
        "transactionId": int(transaction_id),
        "idTagInfo": {"status": status},
    }


def meter_values(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    readings = readings_from_meter_values(payload["meterValue"])
    transaction_id = payload.get("transactionId")
    if transaction_id is None or service.find_transaction(charger_id, str(transaction_id)) is None:
        service.meter_values_outside_transaction(charger_id, readings)
    else:
        service.transaction_event(
            charger_id,
            str(transaction_id),
            event_type="Updated",
            seq_no=None,
            timestamp=readings[-1].timestamp if readings else utcnow(),
            trigger_reason="MeterValuePeriodic",
            readings=readings,
        )
    return {}


def stop_transaction(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    timestamp = storable_timestamp(payload["timestamp"])
    status = service.authorize(payload["idTag"]) if "idTag" in payload else None
    readings = readings_from_meter_values(payload.get("transactionData", ()))
    readings.append(MeterReading(timestamp, energy_wh=float(payload["meterStop"])))
    service.transaction_event(
        charger_id,
        str(payload["transactionId"]),
        event_type="Ended",
        seq_no=None,
        timestamp=timestamp,
        trigger_reason="StopAuthorized",
        stopped_reason=payload.get("reason", "Local"),
        readings=readings,
    )
    response: dict[str, Any] = {}
    if status is not None:
        response["idTagInfo"] = {"status": status}
    return response


def data_transfer(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    service.log_event(charger_id, "notification", "DataTransfer", payload)
    return {"status": "UnknownVendorId"}


HANDLERS = {
    "BootNotification": boot_notification,
    "Heartbeat": heartbeat,
    "StatusNotification": status_notification,
    "Authorize": authorize,
    "StartTransaction": start_transaction,
    "MeterValues": meter_values,
    "StopTransaction": stop_transaction,
    "DataTransfer": data_transfer,
    # What a charge point sends after the CSMS's commands (UpdateFirmware, GetDiagnostics,
    # and the security extension's).
    "FirmwareStatusNotification": logged("FirmwareStatusNotification"),
    "DiagnosticsStatusNotification": logged("DiagnosticsStatusNotification"),
    "SignedFirmwareStatusNotification": logged("SignedFirmwareStatusNotification"),
    "LogStatusNotification": logged("LogStatusNotification"),
    "SecurityEventNotification": logged("SecurityEventNotification"),
    # the security extension's CSR: csms_stub has no certificate authority to sign it
    "SignCertificate": answer("SignCertificate", {"status": "Rejected"}),
}
