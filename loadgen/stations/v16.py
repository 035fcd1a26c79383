"""An OCPP 1.6 station: its messages, its connector statuses and the CALLs it answers.

1.6 differs from 2.0.1 in what the core asks of it: a transaction is StartTransaction,
MeterValues and StopTransaction, known to the CSMS by the number the CSMS assigns (so the
later messages are built only at send time, once that number is known); the connector
status follows the session (Preparing, Charging / SuspendedEV, Finishing); connector 0 is
the charge point itself, reported after every boot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loadgen import commands, smart_charging_station
from loadgen.protocols import v16
from loadgen.stations.base import (
    ACCEPTED,
    NO_TRANSACTION_ID,
    Readings,
    Rules,
    reading_context,
    verdict,
)

if TYPE_CHECKING:
    from loadgen.station import Evse, Station, Transaction


class Rules16(Rules):
    plugged_status = "Preparing"
    finishing_status = "Finishing"
    verdict_field = "idTagInfo"
    replace_same_stack_level = True
    reports_rate_change = False  # no ChargingRateChanged: the next MeterValues tells

    def charging_status(self, charging: bool) -> str | None:
        return "Charging" if charging else "SuspendedEV"

    def boot_notification(self, station: Station) -> dict[str, Any]:
        c = station.charger
        return v16.boot_notification(c.vendor, c.model, c.serial_number or None, c.firmware)[1]

    def status_notification(
        self, station: Station, evse_id: int, connector_id: int, status: str, timestamp: float
    ) -> dict[str, Any]:
        # Each EVSE is a 1.6 connector; 2.0.1's Occupied is 1.6's Preparing.
        status = {"Occupied": "Preparing"}.get(status, status)
        return v16.status_notification(evse_id, status, timestamp)[1]

    def station_statuses(self, station: Station) -> list[tuple[int, int, str]]:
        # Connector 0: the charge point as a whole, Unavailable only when every
        # connector was made inoperative (ChangeAvailability of connector 0).
        operative = any(evse.operative for evse in station.evses.values())
        return [(0, 0, "Available" if operative else "Unavailable")]

    def authorize(self, station: Station, transaction: Transaction) -> dict[str, Any]:
        return v16.authorize(transaction.token)[1]

    def unknown_to_csms(self, transaction: Transaction) -> bool:
        return transaction.csms_id is None

    def queue_start(
        self, station: Station, evse: Evse, transaction: Transaction, readings: Readings
    ) -> None:
        now = transaction.started_stamp
        assert now is not None  # set when the transaction began
        energy = readings[0]
        _, payload = v16.start_transaction(evse.id, transaction.token, round(energy), now)

        def started(reply: dict[str, Any]) -> None:
            csms_id = reply["transactionId"]
            status = verdict(reply, "idTagInfo")
            if isinstance(csms_id, bool) or not isinstance(csms_id, int) or csms_id <= 0:
                # Not an id the CSMS assigned (CitrineOS answers Invalid with 0): never
                # used, no MeterValues or StopTransaction for it, and not in the run
                # ledger (the CSMS holds no such transaction to reconcile with). An
                # Accepted without an id is no acceptance: counted and reported as such.
                if status == ACCEPTED:
                    status = NO_TRANSACTION_ID
                station.report_authorization("StartTransaction", transaction, status)
                station.deauthorize(transaction, status)
                return
            station.report_authorization("StartTransaction", transaction, status)
            transaction.csms_id = csms_id
            station.emit("transaction_id", {"transaction": transaction, "status": status})
            station.emit("start_acknowledged", {"transaction": transaction, "reply": reply})
            if status != ACCEPTED:
                station.deauthorize(transaction, status)

        station.queue_transactional("StartTransaction", transaction, lambda: payload, started)

    def queue_update(
        self,
        station: Station,
        evse: Evse,
        transaction: Transaction,
        trigger: str,
        readings: Readings,
    ) -> None:
        energy, power, soc = readings
        sampled = v16.sampled_values(round(energy, 1), power, soc, reading_context(trigger))
        values = [v16.meter_value(station.wall_clock.now(), sampled)]

        def build() -> dict[str, Any] | None:
            if transaction.csms_id is None:
                return None  # StartTransaction never got through: nothing to attach to
            return v16.meter_values(evse.id, values, transaction.csms_id)[1]

        station.queue_transactional("MeterValues", transaction, build)

    def queue_end(
        self, station: Station, evse: Evse, transaction: Transaction, trigger: str
    ) -> None:
        if transaction.rejected is not None and transaction.csms_id is None:
            return  # an id the CSMS did not assign: nothing to stop at the CSMS
        assert evse.physics is not None
        now = transaction.ended_stamp if transaction.ended_stamp is not None else 0.0
        energy = evse.register.wh
        soc = round(evse.physics.ev.soc * 100, 1)
        reason = transaction.stop_reason or "Local"
        data = [
            v16.meter_value(now, v16.sampled_values(round(energy, 1), 0.0, soc, "Transaction.End"))
        ]

        def build() -> dict[str, Any] | None:
            # Built at send time: the CSMS's transactionId arrives with StartTransaction's
            # answer, which may come after the transaction ended (offline, replayed).
            if transaction.csms_id is None:
                return None
            return v16.stop_transaction(
                transaction.csms_id,
                round(energy),
                now,
                reason=reason,
                id_tag=transaction.token,
                transaction_data=data,
            )[1]

        station.queue_transactional(
            "StopTransaction", transaction, build, station.end_acknowledged(transaction)
        )

    def trigger(self, station: Station, message: str) -> bool:
        state = station.commands
        if message == "FirmwareStatusNotification":
            status = state.firmware_status
            if status in ("Installed", "DownloadScheduled"):
                status = "Idle"  # 1.6 has no DownloadScheduled
            station.notify(*v16.firmware_status_notification(status))
            return True
        if message == "DiagnosticsStatusNotification":
            status = "Uploading" if state.log_status == "Uploading" else "Idle"
            station.notify(*v16.diagnostics_status_notification(status))
            return True
        return False

    def trigger_readings(self, station: Station, evse: Evse, message: str) -> None:
        transaction = evse.transaction
        if transaction is not None and not transaction.stopping:
            station.meter_update(evse, "Trigger")  # with the transaction's id
            return
        energy, power, soc = station.readings_now(evse)
        sampled = v16.sampled_values(round(energy, 1), power, soc, "Trigger")
        values = [v16.meter_value(station.now_wall(), sampled)]
        station.notify(*v16.meter_values(evse.id, values))  # no transaction: no id


RULES = Rules16()


# -- what the CSMS asks ----------------------------------------------------------------


def remote_start(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    profile = smart_charging_station.remote_start_profile(
        station, payload, v16.charging_profile_from, with_info=False
    )
    if isinstance(profile, dict):
        return profile  # Rejected
    transaction = station.remote_start(payload["idTag"], payload.get("connectorId"), None)
    if transaction is not None and profile is not None:
        smart_charging_station.adopt_remote_start_profile(station, profile, transaction)
    return {"status": "Accepted" if transaction is not None else "Rejected"}


def remote_stop(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    transaction = station.transaction_by_id(str(payload["transactionId"]))
    if transaction is None:
        return {"status": "Rejected"}
    station.stop_session(transaction.evse_id, "Remote", trigger="RemoteStop")
    return {"status": "Accepted"}


def reset(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    # 1.6 has no OnIdle: both types end the transactions at once (Soft: gracefully).
    hard = payload["type"] == "Hard"
    station.reset(True, "HardReset" if hard else "SoftReset")
    return {"status": "Accepted"}


def change_availability(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    connector = payload["connectorId"] or None  # 0: the whole charge point
    return {"status": station.change_availability(connector, payload["type"] == "Operative")}


def trigger_message(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": station.trigger_message(payload["requestedMessage"], payload.get("connectorId"))
    }


def extended_trigger_message(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    """The 1.6 security extension's TriggerMessage; LogStatusNotification is its own."""
    message = payload["requestedMessage"]
    if message == "LogStatusNotification":
        state = station.commands
        status = "Uploading" if state.log_status == "Uploading" else "Idle"
        request = state.log_request if status != "Idle" else None
        station.notify(*v16.log_status_notification(status, request))
        return {"status": "Accepted"}
    if message == "SignChargePointCertificate":
        return {"status": "Rejected"}  # no key pair to have signed (see certificates)
    status = station.trigger_message(message, payload.get("connectorId"))
    return {"status": "Accepted" if status == "Accepted" else "Rejected"}


def get_configuration(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    keys = station.device_model.keys_16()
    requested = payload.get("key") or list(keys)
    found = [
        {"key": key, "readonly": keys[key].write is None, "value": keys[key].read()[:500]}
        for key in requested
        if key in keys
    ]
    unknown = [key for key in requested if key not in keys]
    result: dict[str, Any] = {"configurationKey": found}
    if unknown:
        result["unknownKey"] = unknown
    return result


def change_configuration(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    variable = station.device_model.keys_16().get(payload["key"])
    if variable is None:
        return {"status": "NotSupported"}
    if variable.write is None:
        return {"status": "Rejected"}  # read-only
    return {"status": variable.write(payload["value"])}


def unlock_connector(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    evse = station.evses.get(payload["connectorId"])
    if evse is None:
        return {"status": "NotSupported"}
    return {"status": "Unlocked" if evse.transaction is None else "UnlockFailed"}


def send_local_list(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    items = [
        (entry["idTag"], entry.get("idTagInfo"))
        for entry in payload.get("localAuthorizationList", ())
    ]
    status = commands.send_local_list(station, payload["listVersion"], payload["updateType"], items)
    return {"status": status}


def get_local_list_version(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return {"listVersion": station.commands.local_list.version}


def reserve_now(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    if payload["connectorId"] == 0:
        return {"status": "Rejected"}  # ReserveConnectorZeroSupported: false
    status = commands.reserve(
        station,
        payload["reservationId"],
        payload["connectorId"],
        payload["idTag"],
        payload["expiryDate"],
        payload.get("parentIdTag"),
    )
    return {"status": status}


def cancel_reservation(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return commands.cancel_reservation(station, payload["reservationId"])


def update_firmware(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    commands.update_firmware(
        station, None, payload["retrieveDate"], None, v16.firmware_status_notification
    )
    return {}


def signed_update_firmware(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    """The security extension's: 2.0.1's UpdateFirmware, with its own status message."""
    request_id = payload["requestId"]
    return commands.update_firmware_request(
        station,
        payload,
        lambda status: v16.signed_firmware_status_notification(status, request_id),
    )


def get_diagnostics(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    commands.upload_log(station, None, v16.diagnostics_status_notification, "UploadFailed")
    return {"fileName": f"{station.charger.id}-diagnostics.log"[:255]}


def get_log(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    """The security extension's GetLog: 2.0.1's, with 1.6's LogStatusNotification."""
    return commands.get_log(station, payload, v16.log_status_notification)


Rules16.handlers = {
    **smart_charging_station.HANDLERS_16,
    "RemoteStartTransaction": remote_start,
    "RemoteStopTransaction": remote_stop,
    "Reset": reset,
    "ChangeAvailability": change_availability,
    "TriggerMessage": trigger_message,
    "GetConfiguration": get_configuration,
    "ChangeConfiguration": change_configuration,
    "UnlockConnector": unlock_connector,
    "ClearCache": commands.clear_cache,
    "DataTransfer": commands.data_transfer,
    "SendLocalList": send_local_list,
    "GetLocalListVersion": get_local_list_version,
    "ReserveNow": reserve_now,
    "CancelReservation": cancel_reservation,
    "UpdateFirmware": update_firmware,
    "GetDiagnostics": get_diagnostics,
    # The security extension (the ``ocpp`` package ships its schemas with 1.6).
    "SignedUpdateFirmware": signed_update_firmware,
    "GetLog": get_log,
    "ExtendedTriggerMessage": extended_trigger_message,
    **commands.NO_CERTIFICATE_STORE,
}
