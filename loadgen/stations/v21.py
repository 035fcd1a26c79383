"""An OCPP 2.1 station: 2.0.1's (:mod:`.v201`, with the 2.1 builders) plus running cost,
transaction limits, tariffs and the answers to the CSMS-initiated actions 2.1 adds.

A transaction is priced with the CSMS's tariff (the driver's, from Authorize, else the
default tariff in force at its start) and every TransactionEvent carries the cost so far
(costDetails); a transactionLimit in a TransactionEventResponse is confirmed (LimitSet) and
ends the transaction once reached. Tariffs are kept (:mod:`loadgen.tariffs`); the rest of
2.1's CSMS calls is answered per its schema with the state a plain AC/DC charger has: no
DER inverter (NotSupported), no battery-swap station (Rejected), no periodic event streams
opened (the station opens them, with OpenPeriodicEventStream, and it opens none), priority
charging and dynamic schedules only for what the station holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loadgen.stations import v201
from loadgen.tariffs import Tariff

if TYPE_CHECKING:
    from loadgen.station import Evse, Station, Transaction

#: the TransactionLimitType fields a station honours
LIMIT_KEYS = ("maxEnergy", "maxTime", "maxCost", "maxSoC")


def _tariff_or_none(raw: dict[str, Any]) -> Tariff | None:
    """A CSMS's TariffType, or None when its validFrom is no dateTime."""
    try:
        return Tariff.from_ocpp(raw)
    except (ValueError, KeyError, TypeError):
        return None


def _usage(station: Station, transaction: Transaction, evse: Evse) -> tuple[float, float]:
    """Energy (Wh) and time (s, station clock) of the transaction so far."""
    if transaction.ended_at is not None:
        return transaction.energy_wh, transaction.ended_at - transaction.started_at
    return (
        evse.register.wh - transaction.start_wh,
        station.clock.now() - transaction.started_at,
    )


def running_cost(station: Station, transaction: Transaction, evse: Evse) -> float | None:
    """The cost so far under the transaction's tariff (None without one)."""
    if transaction.tariff is None:
        return None
    return transaction.tariff.cost(*_usage(station, transaction, evse))


class Rules21(v201.Rules201):
    #: 2.1 requires it: the CSMS's own monitors are CustomMonitor
    monitor_fields = {"eventNotificationType": "CustomMonitor"}
    #: 2.1 deprecates StatusNotification: connector status is a NotifyEvent reporting the
    #: Connector's AvailabilityState (use case G01, "Report Connector AvailabilityState")
    connector_status_message = "NotifyEvent"

    def authorized(self, transaction: Transaction, reply: dict[str, Any]) -> None:
        if isinstance(reply.get("tariff"), dict):
            transaction.tariff = _tariff_or_none(reply["tariff"])  # the driver's

    def transaction_fields(
        self,
        station: Station,
        transaction: Transaction,
        evse: Evse,
        *,
        start: bool = False,
        limit_set: bool = False,
    ) -> dict[str, Any]:
        """The tariff and its running cost (when the CSMS gave a tariff), the limit just
        accepted (LimitSet), the operation mode at the start."""
        fields: dict[str, Any] = {}
        if start:
            fields["operation_mode"] = "ChargingOnly"
            if transaction.tariff is None:
                # the default tariff in force at the start prices the whole transaction
                tariffs = station.default_tariffs  # made only when the CSMS sets one (memory)
                if tariffs is not None:
                    transaction.tariff = tariffs.for_evse(evse.id, station.now_wall())
        if limit_set and transaction.limit:
            fields["transaction_limit"] = transaction.limit
        tariff = transaction.tariff
        if tariff is not None:
            energy, seconds = _usage(station, transaction, evse)
            cost = tariff.cost(energy, seconds)
            failed = not math.isfinite(cost)  # absurd prices: say so, send no Infinity
            details = station.messages.cost_details(
                tariff.currency,
                0.0 if failed else cost,
                energy,
                seconds,
                tariff_id=tariff.id,
                period_start=transaction.started_stamp,
            )
            if failed:
                details["failureToCalculate"] = True
                details["failureReason"] = "the tariff's prices give no finite cost"
            fields["tariff_id"] = tariff.id
            fields["cost_details"] = details
        return fields

    def read_limit(self, station: Station, transaction: Transaction, reply: dict[str, Any]) -> None:
        """A TransactionEventResponse's transactionLimit replaces the one in force; the
        station confirms it (LimitSet) and ends the transaction when it is reached."""
        limit = reply.get("transactionLimit")
        if not isinstance(limit, dict):
            return
        limit = {k: v for k, v in limit.items() if k in LIMIT_KEYS} or None  # {}: none
        evse = station.evses.get(transaction.evse_id)
        if (
            limit == transaction.limit
            or transaction.stopping
            or evse is None
            or evse.transaction is not transaction
        ):
            return
        transaction.limit = limit
        station.emit("limit", {"transaction": transaction, "limit": limit})
        station.meter_update(evse, "LimitSet")  # checks the new limit at once
        if not transaction.limit:
            transaction.limit_due = None

    def updated(
        self, station: Station, transaction: Transaction
    ) -> Callable[[dict[str, Any]], None] | None:
        verdict = super().updated(station, transaction)

        def read(reply: dict[str, Any]) -> None:
            if verdict is not None:
                verdict(reply)
            if not transaction.stopping:  # not deauthorized just now
                self.read_limit(station, transaction, reply)

        return read

    def queue_update(
        self,
        station: Station,
        evse: Evse,
        transaction: Transaction,
        trigger: str,
        readings: tuple[float, float, float | None],
    ) -> None:
        super().queue_update(station, evse, transaction, trigger, readings)
        if transaction.limit:
            self.check_limits(station, evse)

    def check_limits(self, station: Station, evse: Evse) -> None:
        """End the transaction once a limit is reached; else note when one may be."""
        transaction = evse.transaction
        if transaction is None or transaction.stopping or not transaction.limit:
            return
        assert evse.physics is not None
        now = station.clock.now()
        evse.physics.advance(now)
        limit = transaction.limit
        energy, seconds = _usage(station, transaction, evse)
        soc = evse.physics.ev.soc * 100
        cost = running_cost(station, transaction, evse)
        reached = None
        if limit.get("maxEnergy") is not None and energy >= limit["maxEnergy"]:
            reached = ("EnergyLimitReached", "EnergyLimitReached")
        elif limit.get("maxTime") is not None and seconds >= limit["maxTime"]:
            reached = ("TimeLimitReached", "TimeLimitReached")
        elif limit.get("maxSoC") is not None and soc >= limit["maxSoC"]:
            reached = ("SOCLimitReached", "SoCLimitReached")
        elif limit.get("maxCost") is not None and cost is not None and cost >= limit["maxCost"]:
            # ReasonEnumType has no cost limit: the trigger says which limit it was
            reached = ("Other", "CostLimitReached")
        if reached is not None:
            transaction.limit_due = None
            station.stop_session(evse.id, reached[0], trigger=reached[1])
            return
        # When the nearest limit falls at today's power (it tapers: then look again).
        power = evse.physics.power_w
        waits = [station.meter_interval]
        if limit.get("maxTime") is not None:
            waits.append(limit["maxTime"] - seconds)
        if limit.get("maxEnergy") is not None and power > 0:
            waits.append((limit["maxEnergy"] - energy) * 3600.0 / power)
        if limit.get("maxCost") is not None and cost is not None and transaction.tariff:
            tariff = transaction.tariff
            per_second = tariff.price_kwh * power / 3.6e6 + tariff.price_minute / 60.0
            if per_second > 0:
                waits.append((limit["maxCost"] - cost) / per_second)
        transaction.limit_due = now + max(min(waits), 0.001)


RULES = Rules21()


# -- what the CSMS asks that 2.0.1's did not ---------------------------------------------


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
    tariffs = station.default_tariffs
    assignments = tariffs.assignments(evse_id) if tariffs is not None else []
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
    station.meter_update(evse, "TariffChanged")
    return _status("Accepted")


def _no_stream(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return _status("Rejected", "NotFound", "no periodic event stream is open")


# HOOK(SEND): a station that opened a stream (OpenPeriodicEventStream, a CALL) would send
# its NotifyPeriodicEventStream as a 2.1 SEND frame (MessageTypeId 6, no reply). The link
# sends one (``Link.send``), but the station's queue cannot carry it (every OutgoingCall
# awaits a CALLRESULT): give Station a ``send_unconfirmed(action, payload)`` for the runtime
# to drain, and open streams for the monitors that ask for one (SetMonitoringData's
# periodicEventStream). Until then no stream is opened, so Get/Adjust find none: monitors
# never fire here anyway (see .v201), and a basic session sends no stream.


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
    if not station.has_charging_profiles or not any(
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


Rules21.handlers = {
    **v201.Rules201.handlers,
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
