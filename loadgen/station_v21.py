"""What a 2.1 station answers to the CSMS-initiated actions 2.1 adds to 2.0.1's.

Tariffs are kept and price transactions (:mod:`loadgen.tariffs`); the rest is answered per
its schema with the state a plain AC/DC charger has: no DER inverter (NotSupported), no
battery-swap station (Rejected), no periodic event streams opened (the station opens them,
with OpenPeriodicEventStream, and it opens none), priority charging and dynamic schedules
only for what the station holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loadgen.tariffs import Tariff

if TYPE_CHECKING:
    from loadgen.station import Station

Handler = Callable[["Station", dict[str, Any]], dict[str, Any]]


def _status(status: str, reason: str | None = None, detail: str | None = None) -> dict[str, Any]:
    """A reply with a status and, for a refusal, the StatusInfoType saying why."""
    reply: dict[str, Any] = {"status": status}
    if reason is not None:
        info = {"reasonCode": reason}
        if detail:
            info["additionalInfo"] = detail[:1024]
        reply["statusInfo"] = info
    return reply


def _read_tariff(payload: dict[str, Any]) -> Tariff | dict[str, Any]:
    try:
        return Tariff.from_ocpp(payload["tariff"])
    except (ValueError, KeyError, TypeError) as exc:
        return _status("Rejected", "InvalidValue", f"tariff: {exc}")


def _set_default_tariff(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    evse_id = payload["evseId"]
    if evse_id and evse_id not in station.evses:
        return _status("Rejected", "UnknownEvse")
    tariff = _read_tariff(payload)
    if isinstance(tariff, dict):
        return tariff
    status = station.tariffs.set_default(evse_id, tariff)
    return _status(status) if status == "Accepted" else _status(status, "DuplicateTariffId")


def _get_tariffs(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    evse_id = payload["evseId"]
    if evse_id and evse_id not in station.evses:
        return _status("Rejected", "UnknownEvse")
    assignments = station.tariffs.assignments(evse_id) if station._tariffs else []
    # a transaction's own tariff (ChangeTransactionTariff, Authorize) is a driver tariff
    for transaction in station.transactions:
        tariff = transaction.tariff
        if (
            tariff is not None
            and evse_id in (0, transaction.evse_id)
            and all(a["tariffId"] != tariff.id for a in assignments)
        ):
            assignments.append(
                {
                    "tariffId": tariff.id,
                    "tariffKind": "DriverTariff",
                    "evseIds": [transaction.evse_id],
                    "idTokens": [transaction.token],
                }
            )
    if not assignments:
        return {"status": "NoTariff"}
    return {"status": "Accepted", "tariffAssignments": assignments}


def _clear_tariffs(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "clearTariffsResult": station.tariffs.clear(payload.get("tariffIds"), payload.get("evseId"))
    }


def _change_transaction_tariff(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    transaction = station.transaction_by_id(payload["transactionId"])
    if transaction is None or transaction.stopping:
        return _status("TxNotFound", "TxNotFound")
    tariff = _read_tariff(payload)
    if isinstance(tariff, dict):
        return tariff
    if transaction.tariff is not None and transaction.tariff.currency != tariff.currency:
        return _status("NoCurrencyChange", "InvalidValue", "the currency cannot change")
    # The cost so far is re-priced with the new tariff: a simplification (one period).
    transaction.tariff = tariff
    evse = station.evses[transaction.evse_id]
    station._meter_update(evse, "TariffChanged")
    return _status("Accepted")


def _no_stream(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return _status("Rejected", "NotFound", "no periodic event stream is open")


# HOOK(SEND): a station that opened a stream (OpenPeriodicEventStream, a CALL) would send
# its NotifyPeriodicEventStream as a 2.1 SEND frame (MessageTypeId 6, no reply), which the
# station's queue cannot carry (every OutgoingCall awaits a CALLRESULT). When the link can
# send a SEND, give Station a ``send_unconfirmed(action, payload)`` for the runtime to
# drain, and open streams for the monitors that ask for one (SetMonitoringData's
# periodicEventStream). Until then no stream is opened, so Get/Adjust find none.


def _get_periodic_event_stream(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return {}  # the station opens no streams (OpenPeriodicEventStream is its to send)


def _der_not_supported(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return _status("NotSupported", "UnsupportedRequest", "no DER inverter")


def _afrr_signal(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return _status("Rejected", "UnsupportedRequest", "no aFRR participation")


def _request_battery_swap(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return _status("Rejected", "UnsupportedRequest", "not a battery swap station")


def _use_priority_charging(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    transaction = station.transaction_by_id(payload["transactionId"])
    if transaction is None:
        return _status("Rejected", "TxNotFound")
    return _status("NoProfile", "NoProfile", "no PriorityCharging profile")


def _update_dynamic_schedule(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    profile_id = payload["chargingProfileId"]
    if station._smart_charging is None or not any(
        p.id == profile_id for p in station.smart_charging.profiles
    ):
        return _status("Rejected", "UnknownProfile")
    return _status("Rejected", "UnsupportedRequest", "the profile is not Dynamic")


def _notify_allowed_energy_transfer(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    transaction = station.transaction_by_id(payload["transactionId"])
    if transaction is None:
        return _status("Rejected", "TxNotFound")
    # A charge-only charger: accepted while charging stays allowed.
    if "AC_single_phase" in payload["allowedEnergyTransfer"] or any(
        mode.startswith(("AC_", "DC")) and "BPT" not in mode
        for mode in payload["allowedEnergyTransfer"]
    ):
        return _status("Accepted")
    return _status("Rejected", "UnsupportedParam", "the charger only charges")


def _notify_web_payment_started(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return {}  # nothing to show: a load tester's station has no display


HANDLERS_21: dict[str, Handler] = {
    "SetDefaultTariff": _set_default_tariff,
    "GetTariffs": _get_tariffs,
    "ClearTariffs": _clear_tariffs,
    "ChangeTransactionTariff": _change_transaction_tariff,
    "AdjustPeriodicEventStream": _no_stream,
    "GetPeriodicEventStream": _get_periodic_event_stream,
    "SetDERControl": _der_not_supported,
    "GetDERControl": _der_not_supported,
    "ClearDERControl": _der_not_supported,
    "AFRRSignal": _afrr_signal,
    "RequestBatterySwap": _request_battery_swap,
    "UsePriorityCharging": _use_priority_charging,
    "UpdateDynamicSchedule": _update_dynamic_schedule,
    "NotifyAllowedEnergyTransfer": _notify_allowed_energy_transfer,
    "NotifyWebPaymentStarted": _notify_web_payment_started,
}
