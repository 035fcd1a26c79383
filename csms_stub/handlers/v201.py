"""OCPP 2.0.1 handlers."""

from __future__ import annotations

import copy
from typing import Any

from csms_stub.service import Service, readings_from_meter_values, storable_timestamp, utcnow
from loadgen.protocols import iso_timestamp, v201


def boot_notification(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    station = payload["chargingStation"]
    identity = {
        "vendor": station["vendorName"],
        "model": station["model"],
        "serial_number": station.get("serialNumber"),
        "firmware_version": station.get("firmwareVersion"),
    }
    status = service.boot(charger_id, identity, payload["reason"])
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
    service.connector_status(
        charger_id,
        payload["evseId"],
        payload["connectorId"],
        payload["connectorStatus"],
        {"timestamp": payload["timestamp"]},
    )
    return {}


def notify_event(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Stored in the event log; a Connector's AvailabilityState is its status, as a
    StatusNotification's (2.0.1's alternative, 2.1's way to report it)."""
    service.log_event(charger_id, "notification", "NotifyEvent", payload)
    for evse_id, connector_id, status, timestamp in v201.availability_states(payload):
        service.connector_status(
            charger_id, evse_id, connector_id, status, {"timestamp": timestamp}, "NotifyEvent"
        )
    return {}


def authorize(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    token = payload["idToken"]
    return {"idTokenInfo": {"status": service.authorize(token["idToken"], token["type"])}}


def transaction_event(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    info = payload["transactionInfo"]
    evse = payload.get("evse") or {}
    token = payload.get("idToken")
    # judged before anything is stored: a malformed token (--strict-id-tokens) stores nothing
    status = service.authorize(token["idToken"], token["type"]) if token else None
    transaction = service.transaction_event(
        charger_id,
        info["transactionId"],
        event_type=payload["eventType"],
        seq_no=payload["seqNo"],
        timestamp=storable_timestamp(payload["timestamp"]),
        trigger_reason=payload["triggerReason"],
        offline=payload.get("offline", False),
        evse_id=evse.get("id"),
        connector_id=evse.get("connectorId"),
        id_token=token["idToken"] if token else None,
        charging_state=info.get("chargingState"),
        stopped_reason=info.get("stoppedReason"),
        remote_start_id=info.get("remoteStartId"),
        readings=readings_from_meter_values(payload.get("meterValue", ())),
    )
    response: dict[str, Any] = {}
    if payload["eventType"] != "Started":
        # Running cost on Updated, final cost on Ended (2.0.1 TransactionEventResponse).
        response["totalCost"] = transaction.cost
    if status is not None:
        response["idTokenInfo"] = {"status": status}
    return response


def meter_values(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    # Outside a transaction: kept in power_consumption without a transaction id.
    service.meter_values_outside_transaction(
        charger_id, readings_from_meter_values(payload["meterValue"])
    )
    return {}


def answer(action: str, response: dict[str, Any]) -> Any:
    """A handler that stores the message in the event log and answers ``response``."""

    def handler(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        service.log_event(charger_id, "notification", action, payload)
        return copy.deepcopy(response)

    handler.__name__ = action
    return handler


def logged(action: str) -> Any:
    """A handler that stores the notification in the event log and answers ``{}``."""
    return answer(action, {})


def declined(action: str, status: str, reason: str, why: str) -> Any:
    """A handler for what the stub has no service behind (a certificate authority, an OCSP
    responder, ISO 15118 schedules): logged, and answered ``status`` with the reason, as a
    CSMS without that service answers, never NotSupported (the action is a CSMS's)."""
    return answer(
        action, {"status": status, "statusInfo": {"reasonCode": reason, "additionalInfo": why}}
    )


def data_transfer(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    service.log_event(charger_id, "notification", "DataTransfer", payload)
    # No vendor extensions are known to the stub (2.0.1 DataTransferStatusEnumType).
    return {"status": "UnknownVendorId"}


HANDLERS = {
    "BootNotification": boot_notification,
    "Heartbeat": heartbeat,
    "StatusNotification": status_notification,
    "Authorize": authorize,
    "TransactionEvent": transaction_event,
    "MeterValues": meter_values,
    "NotifyReport": logged("NotifyReport"),
    "NotifyEvent": notify_event,
    "SecurityEventNotification": logged("SecurityEventNotification"),
    "FirmwareStatusNotification": logged("FirmwareStatusNotification"),
    # What a station sends after the CSMS's commands (GetLog, ReserveNow, ...).
    "LogStatusNotification": logged("LogStatusNotification"),
    "ReservationStatusUpdate": logged("ReservationStatusUpdate"),
    "NotifyMonitoringReport": logged("NotifyMonitoringReport"),
    "NotifyDisplayMessages": logged("NotifyDisplayMessages"),
    "NotifyCustomerInformation": logged("NotifyCustomerInformation"),
    # what a station holds, after the CSMS's GetChargingProfiles
    "ReportChargingProfiles": logged("ReportChargingProfiles"),
    "DataTransfer": data_transfer,
    # Limits set on the station's side (a local controller, the grid), firmware it publishes
    "NotifyChargingLimit": logged("NotifyChargingLimit"),
    "ClearedChargingLimit": logged("ClearedChargingLimit"),
    "PublishFirmwareStatusNotification": logged("PublishFirmwareStatusNotification"),
    # The EV's schedule is noted; its charging needs get no schedule computed for them
    "NotifyEVChargingSchedule": answer("NotifyEVChargingSchedule", {"status": "Accepted"}),
    "NotifyEVChargingNeeds": declined(
        "NotifyEVChargingNeeds", "Rejected", "NoSmartCharging", "no ISO 15118 schedules"
    ),
    # No certificate authority, OCSP responder or contract certificate pool
    "SignCertificate": declined(
        "SignCertificate", "Rejected", "NoCA", "csms_stub signs no certificates"
    ),
    "GetCertificateStatus": declined(
        "GetCertificateStatus", "Failed", "NoOCSP", "csms_stub has no OCSP responder"
    ),
    "Get15118EVCertificate": answer(
        "Get15118EVCertificate",
        {
            "status": "Failed",
            "exiResponse": "",
            "statusInfo": {
                "reasonCode": "NoContractCA",
                "additionalInfo": "csms_stub installs no contract certificates",
            },
        },
    ),
}
