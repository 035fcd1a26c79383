"""OCPP 2.1 handlers: 2.0.1's where the payloads agree, and what 2.1 adds.

What the stub reads of a 2.1 message is unchanged from 2.0.1 (checked against
``ocpp/v21/schemas``): BootNotification, Heartbeat, StatusNotification, Authorize, MeterValues
and TransactionEvent keep their fields; 2.1 adds optional ones. TransactionEvent's new
fields (costDetails, evseSleep, preconditioningStatus; transactionInfo's operationMode,
tariffId, transactionLimit) have no column in the tables and are not stored. The tables keep
an idToken of 2.1's 255 characters (the schema refuses longer ones; were the column narrower,
a TransactionEvent would be refused with PropertyConstraintViolation before anything
changes). idToken types are free strings (at most 20 characters) that ``--strict-id-tokens``
judges like 2.0.1's Local (an identifierString). The answers (totalCost from ``--tariff`` on
Updated and Ended) are 2.0.1's, which 2.1's schemas accept; an accepted Authorize also
gives the driver's tariff, ``--tariff`` per kWh as a 2.1 TariffType, so that 2.1 stations
report the running cost (costDetails) as they would to a 2.1 CSMS that prices sessions.
"""

from __future__ import annotations

import time
from typing import Any

from csms_stub import store as tables
from csms_stub.handlers import v201
from csms_stub.service import Service
from csms_stub.store import Unstorable
from loadgen.protocols import iso_timestamp, v21

#: the tariffId of the stub's one tariff (--tariff per kWh, in KRW like the seed's)
TARIFF_ID = "csms_stub"

#: the longest idToken the tables keep (2.1's limit)
STORED_ID_TOKEN_LENGTH: int = tables.charger_usage_log.c.id_token.type.length or 255


def transaction_event(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    token = payload.get("idToken")
    if token is not None and len(token["idToken"]) > STORED_ID_TOKEN_LENGTH:
        # Refused before anything changes: the row could not be stored afterwards.
        raise Unstorable(
            f"idToken is longer than the {STORED_ID_TOKEN_LENGTH} characters this CSMS stores"
        )
    return v201.transaction_event(service, charger_id, payload)


def authorize(service: Service, charger_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    reply = v201.authorize(service, charger_id, payload)
    if reply["idTokenInfo"]["status"] == "Accepted":
        reply["tariff"] = v21.tariff(TARIFF_ID, "KRW", price_kwh=service.tariff)
    return reply


def notify_periodic_event_stream(
    service: Service, charger_id: str, payload: dict[str, Any]
) -> dict[str, Any]:
    # A SEND, a stream of samples: counted (csms_stub_messages_total), not stored, not answered.
    return {}


def vat_number_validation(
    service: Service, charger_id: str, payload: dict[str, Any]
) -> dict[str, Any]:
    # The stub knows no VAT register: every number is unknown.
    service.log_event(charger_id, "notification", "VatNumberValidation", payload)
    return {"vatNumber": payload["vatNumber"], "status": "Rejected"}


def certificate_chain_status(
    service: Service, charger_id: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """Each certificate asked about is of unknown status: csms_stub checks no revocation
    (no OCSP responder, no CRL), and says so per certificate, as the schema asks."""
    service.log_event(charger_id, "notification", "GetCertificateChainStatus", payload)
    now = iso_timestamp(time.time())
    return {
        "certificateStatus": [
            {"source": asked["source"], "status": "Unknown", "nextUpdate": now,
             "certificateHashData": asked["certificateHashData"]}
            for asked in payload["certificateStatusRequests"]
        ]
    }  # fmt: skip


HANDLERS = {
    **v201.HANDLERS,
    "TransactionEvent": transaction_event,
    "Authorize": authorize,
    "NotifyPeriodicEventStream": notify_periodic_event_stream,
    "NotifySettlement": v201.logged("NotifySettlement"),
    "NotifyPriorityCharging": v201.logged("NotifyPriorityCharging"),
    "NotifyDERAlarm": v201.logged("NotifyDERAlarm"),
    "NotifyDERStartStop": v201.logged("NotifyDERStartStop"),
    "ReportDERControl": v201.logged("ReportDERControl"),
    "BatterySwap": v201.logged("BatterySwap"),
    "OpenPeriodicEventStream": v201.answer("OpenPeriodicEventStream", {"status": "Accepted"}),
    "ClosePeriodicEventStream": v201.logged("ClosePeriodicEventStream"),
    # No dynamic schedule is kept for anyone: nothing to pull.
    "PullDynamicScheduleUpdate": v201.answer("PullDynamicScheduleUpdate", {"status": "Rejected"}),
    "VatNumberValidation": vat_number_validation,
    "GetCertificateChainStatus": certificate_chain_status,
}
