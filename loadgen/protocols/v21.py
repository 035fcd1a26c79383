"""OCPP 2.1 message builders.

2.1 keeps most of 2.0.1's messages as they were: those builders are :mod:`.v201`'s,
re-exported here (``tests/test_protocols.py`` validates each against the 2.1 schemas). Only
what differs is built here: the idToken (``type`` a free string of up to 20 characters,
``idToken`` up to 255), TransactionEvent's 2.1 fields (costDetails, transactionLimit,
tariffId, operationMode...) and the 2.1-only CSMS → station messages (tariffs).
"""

from __future__ import annotations

from typing import Any

from loadgen.protocols import OCPP21, Request, compact, timestamp_text, v201
from loadgen.protocols.v201 import (
    ENERGY_REGISTER,
    POWER,
    SOC,
    authorize,
    availability_event,
    availability_states,
    boot_notification,
    charging_profile,
    clear_charging_profile,
    composite_schedule,
    data_transfer,
    firmware_status_notification,
    get_charging_profiles,
    get_composite_schedule,
    heartbeat,
    id_token,
    log_status_notification,
    meter_value,
    meter_values,
    notify_customer_information,
    notify_display_messages,
    notify_event,
    notify_monitoring_report,
    notify_report,
    report_charging_profiles,
    request_start_transaction,
    request_stop_transaction,
    reservation_status_update,
    sampled_values,
    security_event_notification,
    set_charging_profile,
    status_notification,
)
from loadgen.smart_charging import ChargingProfile, ProfileRejected

__all__ = [
    "ENERGY_REGISTER",
    "ID_TOKEN_MAX_LENGTH",
    "POWER",
    "SOC",
    "VERSION",
    "authorize",
    "availability_event",
    "availability_states",
    "boot_notification",
    "change_transaction_tariff",
    "charging_profile",
    "charging_profile_from",
    "clear_charging_profile",
    "clear_tariffs",
    "composite_schedule",
    "cost_details",
    "data_transfer",
    "firmware_status_notification",
    "get_charging_profiles",
    "get_composite_schedule",
    "get_tariffs",
    "heartbeat",
    "id_token",
    "log_status_notification",
    "meter_value",
    "meter_values",
    "notify_customer_information",
    "notify_display_messages",
    "notify_event",
    "notify_monitoring_report",
    "notify_report",
    "report_charging_profiles",
    "request_start_transaction",
    "request_stop_transaction",
    "reservation_status_update",
    "sampled_values",
    "security_event_notification",
    "set_charging_profile",
    "set_default_tariff",
    "status_notification",
    "tariff",
    "transaction_event",
    "transaction_limit",
]  # fmt: skip

VERSION = OCPP21
#: IdTokenType.idToken is string[255] in 2.1 (36 in 2.0.1); its type a string[20]
ID_TOKEN_MAX_LENGTH = 255


def transaction_event(
    event_type: str,
    transaction_id: str,
    seq_no: int,
    timestamp: float | str,
    trigger_reason: str,
    *,
    cost_details: dict[str, Any] | None = None,
    transaction_limit: dict[str, Any] | None = None,
    tariff_id: str | None = None,
    operation_mode: str | None = None,
    **fields: Any,
) -> Request:
    """2.0.1's TransactionEvent (same keyword fields) plus 2.1's: ``cost_details``
    (:func:`cost_details`), ``transaction_limit`` (:func:`transaction_limit`), the
    ``tariff_id`` in use and the ``operation_mode`` (ChargingOnly for a plain charger)."""
    action, payload = v201.transaction_event(
        event_type, transaction_id, seq_no, timestamp, trigger_reason, **fields
    )
    payload["transactionInfo"].update(
        compact(
            {
                "operationMode": operation_mode,
                "tariffId": tariff_id,
                "transactionLimit": transaction_limit or None,
            }
        )
    )
    if cost_details is not None:
        payload["costDetails"] = cost_details
    return action, payload


def transaction_limit(
    max_energy: float | None = None,
    max_time: int | None = None,
    max_cost: float | None = None,
    max_soc: int | None = None,
) -> dict[str, Any]:
    """A TransactionLimitType: Wh, seconds, the tariff's currency, percent."""
    return compact(
        {"maxEnergy": max_energy, "maxTime": max_time, "maxCost": max_cost, "maxSoC": max_soc}
    )


def cost_details(
    currency: str,
    total: float,
    energy_wh: float,
    charging_s: float,
    idle_s: float = 0.0,
    *,
    tariff_id: str | None = None,
    period_start: float | str | None = None,
) -> dict[str, Any]:
    """A CostDetailsType: the running (or final) cost, excluding tax, and the usage it
    prices; with ``period_start`` one charging period of the tariff ``tariff_id``."""
    details: dict[str, Any] = {
        "totalCost": {
            "currency": currency,
            "typeOfCost": "NormalCost",
            "total": {"exclTax": total},
        },
        "totalUsage": {
            "energy": round(energy_wh, 3),
            "chargingTime": int(charging_s),
            "idleTime": int(idle_s),
        },
    }
    if period_start is not None:
        details["chargingPeriods"] = [
            compact(
                {
                    "startPeriod": timestamp_text(period_start),
                    "tariffId": tariff_id,
                    "dimensions": [
                        {"type": "Energy", "volume": round(energy_wh, 3)},
                        {"type": "ChargingTime", "volume": int(charging_s)},
                    ],
                }
            )
        ]
    return details


#: 2.1 profile purposes and kinds a charge-only station does not run
_UNSUPPORTED_PURPOSES = ("PriorityCharging", "LocalGeneration")


def charging_profile_from(profile: dict[str, Any], evse_id: int) -> ChargingProfile:
    """2.0.1's reading of a ChargingProfileType, for the profiles a charge-only station
    runs: 2.1's PriorityCharging / LocalGeneration purposes, Dynamic kind and periods
    without a ``limit`` (setpoints, discharging: V2X) raise
    :class:`~loadgen.smart_charging.ProfileRejected`."""
    purpose = profile["chargingProfilePurpose"]
    if purpose in _UNSUPPORTED_PURPOSES:
        raise ProfileRejected("UnsupportedPurpose", f"{purpose} profiles are not supported")
    if profile["chargingProfileKind"] == "Dynamic":
        raise ProfileRejected("UnsupportedKind", "Dynamic profiles are not supported")
    for schedule in profile["chargingSchedule"]:
        if any("limit" not in period for period in schedule["chargingSchedulePeriod"]):
            raise ProfileRejected("UnsupportedParam", "a period without a limit (V2X)")
    return v201.charging_profile_from(profile, evse_id)


# CSMS -> station: tariffs


def tariff(
    tariff_id: str,
    currency: str = "EUR",
    *,
    price_kwh: float | None = None,
    price_minute: float | None = None,
    idle_price_minute: float | None = None,
    fixed_fee: float | None = None,
    valid_from: float | str | None = None,
) -> dict[str, Any]:
    """A TariffType with (at most) one price per component."""
    return compact(
        {
            "tariffId": tariff_id,
            "currency": currency,
            "energy": None if price_kwh is None else {"prices": [{"priceKwh": price_kwh}]},
            "chargingTime": (
                None if price_minute is None else {"prices": [{"priceMinute": price_minute}]}
            ),
            "idleTime": (
                None
                if idle_price_minute is None
                else {"prices": [{"priceMinute": idle_price_minute}]}
            ),
            "fixedFee": None if fixed_fee is None else {"prices": [{"priceFixed": fixed_fee}]},
            "validFrom": None if valid_from is None else timestamp_text(valid_from),
        }
    )


def set_default_tariff(evse_id: int, tariff_type: dict[str, Any]) -> Request:
    return "SetDefaultTariff", {"evseId": evse_id, "tariff": tariff_type}


def change_transaction_tariff(transaction_id: str, tariff_type: dict[str, Any]) -> Request:
    return "ChangeTransactionTariff", {"transactionId": transaction_id, "tariff": tariff_type}


def get_tariffs(evse_id: int = 0) -> Request:
    return "GetTariffs", {"evseId": evse_id}


def clear_tariffs(tariff_ids: list[str] | None = None, evse_id: int | None = None) -> Request:
    return "ClearTariffs", compact({"tariffIds": tariff_ids, "evseId": evse_id})
